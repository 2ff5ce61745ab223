"""Several processes, one evaluation: the rank and world size a launcher gives (``torchrun``,
``accelerate launch``, or any launcher that sets torch's environment variables), the collectives
lm-eval's evaluator calls on a distributed model, and each process's share of the node's GPUs.

The launcher's environment is torch's: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT`` (``accelerate launch`` runs torch's launcher
underneath and sets the same). lm-eval's evaluator shards the documents by ``lm.rank`` /
``lm.world_size`` and gathers samples and metrics with ``lm.gather_object``; the model only needs
collectives for a few small objects (instance counts, the run summary, trace file names).

Why not torch's default process group: a vLLM engine inside the process initializes (or joins) the
default group itself and insists that its world is its tensor-parallel group; a group of N
evaluation processes there makes every engine refuse to start. So the collectives here go through
the launcher's key-value store (torch's ``TCPStore``, reached by the same ``env://`` rendezvous the
default group would use, under a prefix of its own) and leave the default group to the engines. When
the caller already made a default group (its own script), that group is used instead.

What goes through the launcher's store is JSON (``harness/rank_codec.py``), never pickle: the store
takes writes from any process that reaches ``MASTER_ADDR:MASTER_PORT``, without authentication, and
unpickling what it holds would run a writer's code in every rank. (A default group the caller made
is torch's own ``gather_object``, which pickles: its trust is the caller's.)

Every collective is called by all ranks in the same order (as lm-eval's are); each carries a
sequence number and a tag, so a rank that calls another collective than the others waits and fails
by the timeout instead of mixing data.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from tandem_lm_eval.common.errors import TandemError
from tandem_lm_eval.harness import rank_codec

logger = logging.getLogger(__name__)

# How long a rank waits for the others at a collective: ranks finish their shares at different times
# (hours apart on a long run), so this is long, as lm-eval's own (52 weeks for the hf model). A rank
# that dies is noticed by the launcher (torchrun stops the others), not by this timeout.
DEFAULT_TIMEOUT_S = 7 * 24 * 3600.0
_PREFIX = "tandem-lm-eval/"
# What a launcher tells each of its processes (torch's elastic launcher; accelerate launch sets the same).
# A process that is no rank of the run (a data_parallel_size replica, harness/replicas.py) starts without
# them, so no engine inside it takes it for a member of the launcher's world.
LAUNCHER_ENV = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
)


class RankError(TandemError, ValueError):
    """The launcher's environment or the GPUs do not allow the run as asked (one line)."""


@dataclass(frozen=True)
class LaunchInfo:
    """This process's place in the run, from the launcher's environment."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def nodes(self) -> int:
        """Nodes in the run (equal numbers of processes per node, as torchrun starts them)."""
        return max(1, self.world_size // max(self.local_world_size, 1))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LaunchInfo:
        env = os.environ if environ is None else environ

        def read(name: str, default: int) -> int:
            text = env.get(name)
            if text is None or not str(text).strip():
                return default
            try:
                return int(text)
            except ValueError:
                raise RankError(f"the launcher set {name}={text!r}, not an integer") from None

        world = read("WORLD_SIZE", 1)
        rank = read("RANK", 0)
        local_rank = read("LOCAL_RANK", rank if world > 1 else 0)
        local_world = read("LOCAL_WORLD_SIZE", world)
        if world < 1 or not 0 <= rank < world:
            raise RankError(f"the launcher set RANK={rank}, WORLD_SIZE={world}: need 0 <= RANK < WORLD_SIZE")
        if local_world < 1 or not 0 <= local_rank < local_world:
            raise RankError(
                f"the launcher set LOCAL_RANK={local_rank}, LOCAL_WORLD_SIZE={local_world}: need "
                "0 <= LOCAL_RANK < LOCAL_WORLD_SIZE"
            )
        return cls(rank, world, local_rank, local_world)


class RankGroup:
    """The collectives of one run's processes. A single process (no launcher) is a group of one:
    every collective returns at once."""

    def __init__(self, info: LaunchInfo, store=None, *, torch_group: bool = False) -> None:
        self.info = info
        self._store = store
        self._torch_group = torch_group
        self._seq = 0

    @property
    def rank(self) -> int:
        return self.info.rank

    @property
    def world_size(self) -> int:
        return self.info.world_size

    @classmethod
    def from_env(cls, timeout_s: float = DEFAULT_TIMEOUT_S) -> RankGroup:
        info = LaunchInfo.from_env()
        if not info.distributed:
            return cls(info)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            if dist.get_world_size() != info.world_size or dist.get_rank() != info.rank:
                raise RankError(
                    f"torch's process group has rank {dist.get_rank()} of {dist.get_world_size()}, the "
                    f"launcher's environment says {info.rank} of {info.world_size}"
                )
            return cls(info, torch_group=True)
        missing = [n for n in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(n)]
        if missing:
            raise RankError(
                f"WORLD_SIZE={info.world_size} but {' and '.join(missing)} not set: start the processes "
                "with torchrun or accelerate launch (they set the rendezvous address)"
            )
        timeout = timedelta(seconds=timeout_s)
        try:
            store, _, _ = next(
                dist.rendezvous("env://", rank=info.rank, world_size=info.world_size, timeout=timeout)
            )
        except (RuntimeError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise RankError(
                f"rank {info.rank} of {info.world_size} could not reach the launcher's store at "
                f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}: {first}"
            ) from None
        store.set_timeout(timeout)
        return cls(info, dist.PrefixStore(_PREFIX, store))

    # --- collectives ----------------------------------------------------------------------------------
    def _next(self, tag: str) -> str:
        self._seq += 1
        return f"{self._seq}:{tag}"

    def gather_object(self, obj: Any, dst: int = 0, tag: str = "gather") -> list[Any] | None:
        """Every rank's ``obj`` on rank ``dst`` (in rank order); None on the others."""
        if not self.info.distributed:
            return [obj]
        if self._torch_group:
            import torch.distributed as dist

            out = [None] * self.world_size if self.rank == dst else None
            dist.gather_object(obj, out, dst=dst)
            return out
        name = self._next(tag)
        self._store.set(f"{name}/{self.rank}", rank_codec.encode(obj))
        if self.rank != dst:
            return None
        keys = [f"{name}/{r}" for r in range(self.world_size)]
        self._store.wait(keys)
        out = [rank_codec.decode(self._store.get(k)) for k in keys]
        for k in keys:  # the store holds them in memory: free them once read
            self._store.delete_key(k)
        return out

    def all_gather_object(self, obj: Any, tag: str = "all_gather") -> list[Any]:
        """Every rank's ``obj`` on every rank, in rank order."""
        if not self.info.distributed:
            return [obj]
        if self._torch_group:
            import torch.distributed as dist

            out = [None] * self.world_size
            dist.all_gather_object(out, obj)
            return out
        name = self._next(tag)
        self._store.set(f"{name}/{self.rank}", rank_codec.encode(obj))
        keys = [f"{name}/{r}" for r in range(self.world_size)]
        self._store.wait(keys)
        out = [rank_codec.decode(self._store.get(k)) for k in keys]
        # the last rank to have read them frees them
        if self._store.add(f"{name}/read", 1) == self.world_size:
            for k in keys:
                self._store.delete_key(k)
        return out

    def barrier(self, tag: str = "barrier") -> None:
        if not self.info.distributed:
            return
        if self._torch_group:
            import torch.distributed as dist

            dist.barrier()
            return
        name = self._next(tag)
        if self._store.add(f"{name}/arrived", 1) == self.world_size:
            self._store.set(f"{name}/go", b"1")
        self._store.wait([f"{name}/go"])


# --- GPUs per process ---------------------------------------------------------------------------------
def visible_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (indices or UUIDs). Counted
    without initializing CUDA (torch asks NVML), so CUDA_VISIBLE_DEVICES can still be narrowed."""
    env = os.environ if environ is None else environ
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:  # pragma: no cover - torch is a dependency
        count = 0
    return [str(i) for i in range(count)]


def gpu_group(visible: list[str], local_rank: int, local_world_size: int, gpus_per_rank: str) -> list[str]:
    """This process's GPUs: the node's visible GPUs split evenly among its processes, in order
    (local rank r gets the r-th group of ``len(visible) // local_world_size``), so one process's
    mentor (tensor parallel over its group) and intern share its group and no other process's.

    ``gpus_per_rank``: ``auto`` (split evenly), ``all`` (the launcher already gave each process its
    own GPUs: use every visible one) or a number of GPUs per process."""
    if not visible or local_world_size <= 1 and gpus_per_rank == "auto":
        return list(visible)
    if gpus_per_rank == "all":
        return list(visible)
    if gpus_per_rank == "auto":
        if len(visible) % local_world_size:
            raise RankError(
                f"{local_world_size} processes on this node and {len(visible)} visible GPUs: the GPUs do "
                "not split evenly; start as many processes as GPU groups, give gpus_per_rank=N, or "
                "gpus_per_rank=all when the launcher already gives each process its own GPUs"
            )
        per = len(visible) // local_world_size
    else:
        per = int(gpus_per_rank)
        if per < 1 or per * local_world_size > len(visible):
            raise RankError(
                f"gpus_per_rank={gpus_per_rank}: {local_world_size} processes x {per} GPUs do not fit the "
                f"{len(visible)} visible GPUs of this node"
            )
    return list(visible[local_rank * per : (local_rank + 1) * per])


def claim_gpus(info: LaunchInfo, gpus_per_rank: str = "auto") -> list[str] | None:
    """Narrow CUDA_VISIBLE_DEVICES to this process's GPU group before any engine starts, so every
    engine of the process (transformers on ``cuda``, vLLM with tensor parallelism) sees exactly its
    group. Returns the group ([] on a machine without GPUs; None for a single process left as it is)."""
    if info.local_world_size <= 1 and gpus_per_rank == "auto":
        return None  # one process on its node: every visible GPU is its own
    visible = visible_gpus()
    group = gpu_group(visible, info.local_rank, info.local_world_size, gpus_per_rank)
    if not visible or group == visible:
        return group
    try:
        import torch

        initialized = torch.cuda.is_initialized()
    except ImportError:  # pragma: no cover
        initialized = False
    if initialized:
        raise RankError(
            "CUDA was initialized before the tandem model was built, so this process's GPUs can no longer "
            f"be narrowed to its group {group}; set CUDA_VISIBLE_DEVICES per process in the launcher"
        )
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(group)
    logger.info(
        "tandem: rank %d (local %d of %d) uses GPUs %s",
        info.rank,
        info.local_rank,
        info.local_world_size,
        group,
    )
    return group
