"""``data_parallel_size=N``: N replicas of the whole cascade, each a mentor and an intern of its own in a
worker process of its own, the questions of every ``generate_until`` call split among them.

lm-eval's ``vllm`` model takes the same option and starts Ray actors that load the model anew on every
call; the cascade makes several engine calls per chunk of questions, so here each replica is a
long-lived worker, started once (``spawn``: a CUDA process must never fork) and loaded once:

- **Placement.** Before a worker starts, its share of this process's GPUs is put in its
  ``CUDA_VISIBLE_DEVICES`` (the visible GPUs split evenly in order, the rule ``gpu_group`` applies to
  a launcher's processes, harness/ranks.py), so every engine it builds (transformers on ``cuda``, vLLM
  with tensor parallelism) sees exactly its GPUs. Under a launcher each rank splits its own group.
- **Work.** A call's questions are dealt round-robin (question i to replica i mod N, as lm-eval's
  ``distribute`` does, so long and short questions spread evenly); each replica runs its share through
  its cascade in chunks of ``chunk_size`` and sends each chunk's results back as it finishes. A
  question's stages never leave its replica; the caller puts results back in the original order.
- **The store.** Each replica opens the same run store file (SQLite in WAL mode, safe across processes
  of one node): a resume with any N, or in one process, finds every entry.
- **Failures.** The parent waits on every worker's pipe and process handle at once, so a worker that
  dies (kill -9, out of memory) ends the call at once with one line naming it; its stored work stays.
  Ctrl-C reaches the whole process group: workers ignore it and the parent stops them. A worker whose
  parent dies (its lifeline pipe closes) exits.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from multiprocessing import get_context, resource_tracker
from multiprocessing.connection import Connection, wait
from typing import Any

from tandem_lm_eval.backends.base import BackendError
from tandem_lm_eval.cascade.outcomes import CascadeResult
from tandem_lm_eval.cascade.progress import progress_bar
from tandem_lm_eval.cascade.prompts import Question
from tandem_lm_eval.common.errors import TandemError
from tandem_lm_eval.common.options import as_int
from tandem_lm_eval.harness.assembly import Replica, build_replica
from tandem_lm_eval.harness.plan import RunPlan
from tandem_lm_eval.harness.ranks import LAUNCHER_ENV, RankError, gpu_group, visible_gpus
from tandem_lm_eval.judgment.errors import ClassifierError
from tandem_lm_eval.store.run_store import StoreError

logger = logging.getLogger(__name__)

# The environment variable a worker finds its place in (for its logs, and for tools that look for it).
REPLICA_ENV = "TANDEM_REPLICA"
# How long the parent waits for data before it looks at the workers again. Death is noticed at once
# (a process handle is part of every wait); this only bounds each wait.
POLL_S = 30.0
# How long a worker gets to leave after "stop" (or SIGTERM) before it is killed.
STOP_GRACE_S = 30.0


# The backends that run a model on this machine's GPUs (the others reach a server or read records).
GPU_BACKENDS = ("hf", "vllm")


class ReplicaError(TandemError, RuntimeError):
    """A replica failed or died; the message is one line naming it."""


@dataclass(frozen=True)
class ReplicaInfo:
    """What a worker reports once its replica is loaded."""

    index: int
    pid: int
    visible_devices: str | None  # CUDA_VISIBLE_DEVICES as the worker saw it (None: not set)
    mentor_params: float
    intern_params: float
    entropy_method: str


# --- placement ---------------------------------------------------------------------------------------------
def replica_gpu_groups(plan: RunPlan, environ: Mapping[str, str] | None = None) -> list[list[str] | None]:
    """Each replica's GPUs (``None`` for every replica on a machine without GPUs, or when no role runs a
    model here: nothing to pin),
    checked before any worker starts: N larger than the GPUs, GPUs that do not split evenly, or a role's
    tensor parallelism wider than a replica's share is one line."""
    n = plan.data_parallel_size
    visible = visible_gpus(environ)
    if not visible or not any(getattr(plan, role).backend in GPU_BACKENDS for role in ("mentor", "intern")):
        return [None] * n  # nothing to pin: no GPU here, or both roles behind servers / recorded outputs
    if len(visible) % n:
        raise RankError(
            f"data_parallel_size={n} and {len(visible)} visible GPUs ({','.join(visible)}): each replica "
            f"needs an equal share of at least one GPU; give data_parallel_size a divisor of {len(visible)} "
            "(or set CUDA_VISIBLE_DEVICES to the GPUs to use)"
        )
    groups = [gpu_group(visible, k, n, "auto") for k in range(n)]
    per = len(groups[0])
    for role in ("mentor", "intern"):
        rc = getattr(plan, role)
        if rc.backend != "vllm":
            continue
        width = 1
        for option in ("tensor_parallel_size", "pipeline_parallel_size"):
            if option in rc.options:
                width *= as_int(f"{role}_{option}", rc.options[option], minimum=1)
        if width > per:
            raise RankError(
                f"data_parallel_size={n} over {len(visible)} visible GPUs gives each replica {per}, but the "
                f"{role} needs {width} ({role}_tensor_parallel_size x {role}_pipeline_parallel_size): "
                f"give data_parallel_size={max(1, len(visible) // width)} or a smaller parallel size"
            )
    return groups


# --- the parent's side ----------------------------------------------------------------------------------
class LocalReplica:
    """This process's own replica (``data_parallel_size=1``) behind ``ReplicaPool``'s interface, so
    ``TandemLM`` drives one replica here and N in workers the same way."""

    parallel = False  # no worker processes: no per-replica parts or counts to report

    def __init__(self, plan: RunPlan) -> None:
        self.replica = build_replica(plan)
        self.size, self.chunk_size = 1, plan.chunk_size
        r = self.replica
        self.infos = [
            ReplicaInfo(
                0,
                os.getpid(),
                os.environ.get("CUDA_VISIBLE_DEVICES"),
                r.mentor_params,
                r.intern_params,
                r.entropy_method,
            )
        ]

    def run(
        self, questions: Sequence[Question], *, keep_records: bool = False, progress: bool = False
    ) -> Iterator[tuple[int, list[int], list[CascadeResult]]]:
        """(0, positions, results) chunk by chunk, in order (the cascade keeps its records either way)."""
        self.replica.cascade.progress = progress
        for start in range(0, len(questions), self.chunk_size):
            positions = list(range(start, min(start + self.chunk_size, len(questions))))
            yield 0, positions, self.replica.cascade.run([questions[i] for i in positions])

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        return self.replica.loglikelihood(pairs)

    def store_counts(self) -> dict[str, dict[str, int]]:
        return self.replica.store_counts()

    def stop(self) -> None:
        """Nothing runs outside this process: a Ctrl-C has already stopped it."""

    def close(self) -> None:
        self.replica.close()


class ReplicaPool:
    """N worker processes, each one replica; started and loaded by the constructor, stopped by
    ``close`` (and at interpreter exit)."""

    parallel = True

    def __init__(self, plan: RunPlan, gpu_groups: Sequence[list[str] | None]) -> None:
        self.size = len(gpu_groups)
        self.gpu_groups = list(gpu_groups)
        self.counts: list[dict[str, dict[str, int]]] = [{} for _ in gpu_groups]  # store counts per replica
        self.infos: list[ReplicaInfo] = []
        self._procs: list[Any] = []
        self._conns: list[Connection] = []
        self._lifelines: list[Connection] = []  # the parent's ends: they close when the parent dies
        self._call = 0
        self._closed = False
        atexit.register(self.close)
        ctx = get_context("spawn")  # never fork: a forked CUDA context is unusable
        # spawn starts multiprocessing's resource tracker with the first worker; start it now, so it does
        # not inherit the first worker's environment (its GPUs, TANDEM_REPLICA=0)
        resource_tracker.ensure_running()
        level = logging.getLogger("tandem_lm_eval").getEffectiveLevel()
        try:
            for k, gpus in enumerate(self.gpu_groups):
                parent, child = ctx.Pipe()
                lifeline_read, lifeline_write = ctx.Pipe(duplex=False)
                proc = ctx.Process(
                    target=_replica_main,
                    args=(k, self.size, plan, child, lifeline_read, level),
                    name=f"tandem-replica-{k}",
                )
                # The worker's environment is the parent's at start: set its GPUs there, so they are in
                # place before the worker imports anything (an engine may read them at import).
                # No launcher variables: a replica is one process of its own, not a rank of the launcher.
                env = {name: None for name in LAUNCHER_ENV}
                env.update({REPLICA_ENV: str(k), **({} if gpus is None else _gpu_env(gpus))})
                with _environment(env):
                    proc.start()
                child.close()
                lifeline_read.close()
                self._procs.append(proc)
                self._conns.append(parent)
                self._lifelines.append(lifeline_write)
            self.infos = [None] * self.size  # type: ignore[list-item]
            waiting = set(range(self.size))
            while waiting:
                for k, msg in self._receive(waiting, "while loading its models"):
                    if msg[0] == "ready":
                        self.infos[k] = msg[1]
                        waiting.discard(k)
                    elif msg[0] == "error":
                        raise ReplicaError(f"replica {k} of {self.size}: {msg[-1]}")
        except BaseException:
            self.stop()
            raise
        for info in self.infos:
            gpus = self.gpu_groups[info.index]
            logger.info(
                "tandem: replica %d of %d loaded (pid %d%s)",
                info.index,
                self.size,
                info.pid,
                "" if gpus is None else f", GPUs {','.join(gpus)}",
            )

    # --- work -----------------------------------------------------------------------------------------
    def run(
        self, questions: Sequence[Question], *, keep_records: bool, progress: bool
    ) -> Iterator[tuple[int, list[int], list[CascadeResult]]]:
        """(replica, positions in ``questions``, their results) chunk by chunk, as the replicas finish
        them. ``keep_records``: results carry their stages and the mentor's output (for a trace); else
        only the answer and cost cross the pipe."""
        self._usable("this call")
        self._call += 1
        call = self._call
        shares = {k: list(range(k, len(questions), self.size)) for k in range(self.size)}
        shares = {k: share for k, share in shares.items() if share}
        finished = False
        bar = progress_bar(len(questions), progress, unit="question", desc="Tandem replicas")
        try:
            for k, share in shares.items():
                self._send(
                    k, ("run", call, [questions[i] for i in share], keep_records), "at the start of a call"
                )
            busy = set(shares)
            while busy:
                for k, msg in self._receive(busy, "during this call"):
                    if msg[0] == "chunk":
                        _, _, start, results, counts = msg
                        self.counts[k] = counts
                        bar.update(len(results))
                        yield k, shares[k][start : start + len(results)], results
                    elif msg[0] == "done":
                        self.counts[k] = msg[2]
                        busy.discard(k)
                    elif msg[0] == "error":
                        raise ReplicaError(f"replica {k} of {self.size}: {msg[-1]}")
            finished = True
        finally:
            bar.close()
            if not finished:  # an error, a dead replica, Ctrl-C, or the caller gave up: stop them all
                self.stop()

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        """Multiple-choice requests, dealt round-robin like questions, answered in the original order."""
        self._usable("this call")
        self._call += 1
        call = self._call
        shares = {k: list(range(k, len(pairs), self.size)) for k in range(self.size)}
        shares = {k: share for k, share in shares.items() if share}
        out: list[tuple[float, bool] | None] = [None] * len(pairs)
        finished = False
        try:
            for k, share in shares.items():
                self._send(k, ("loglikelihood", call, [pairs[i] for i in share]), "at the start of a call")
            busy = set(shares)
            while busy:
                for k, msg in self._receive(busy, "during a loglikelihood call"):
                    if msg[0] == "loglikelihood":
                        for i, value in zip(shares[k], msg[2]):
                            out[i] = value
                        busy.discard(k)
                    elif msg[0] == "error":
                        raise ReplicaError(f"replica {k} of {self.size}: {msg[-1]}")
            finished = True
        finally:
            if not finished:
                self.stop()
        return out  # type: ignore[return-value]

    def store_counts(self) -> dict[str, dict[str, int]]:
        """Store counts summed over the replicas (as of each one's last finished chunk)."""
        return sum_counts(self.counts)

    # --- lifecycle --------------------------------------------------------------------------------------
    def alive(self) -> list[bool]:
        """Whether each worker process is still running."""
        return [proc.is_alive() for proc in self._procs]

    def close(self) -> None:
        """Ask every worker to leave (it frees its engines), then make sure it is gone."""
        if self._closed:
            return
        self._closed = True
        for conn in self._conns:
            try:
                conn.send(("stop",))
            except (OSError, ValueError):
                pass
        self._reap()

    def stop(self) -> None:
        """Stop every worker now (SIGTERM, then SIGKILL): after an error, a death or Ctrl-C."""
        if self._closed:
            return
        self._closed = True
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
        self._reap()

    def _reap(self) -> None:
        for proc in self._procs:
            proc.join(STOP_GRACE_S)
            if proc.is_alive():
                proc.kill()
                proc.join(STOP_GRACE_S)
        for conn in (*self._conns, *self._lifelines):
            conn.close()

    # --- plumbing ---------------------------------------------------------------------------------------
    def _usable(self, when: str) -> None:
        if self._closed:
            raise ReplicaError(
                f"the {self.size} replicas were stopped by an earlier failure; start the run again"
            )
        for k, proc in enumerate(self._procs):
            if not proc.is_alive():
                raise self._death(k, f"before {when}")

    def _send(self, k: int, msg: tuple, when: str) -> None:
        try:
            self._conns[k].send(msg)
        except (BrokenPipeError, ConnectionResetError, EOFError):
            raise self._death(k, when) from None

    def _receive(self, busy: set[int], when: str) -> list[tuple[int, tuple]]:
        """The next messages of the busy replicas (waiting until there is one); a replica that died is
        a ReplicaError, after whatever it sent before dying was read."""
        conns = {self._conns[k]: k for k in busy}
        sentinels = {self._procs[k].sentinel: k for k in busy}
        while True:
            ready = wait([*conns, *sentinels], timeout=POLL_S)
            got, dead = [], []
            for obj in ready:
                k = conns.get(obj) if obj in conns else sentinels[obj]
                conn = self._conns[k]
                try:
                    while conn.poll():
                        got.append((k, conn.recv()))
                except (EOFError, OSError):
                    dead.append(k)
                    continue
                if obj not in conns and not self._procs[k].is_alive():
                    dead.append(k)
            if got:
                return got  # read everything first; a death is raised at the next wait
            if dead:
                raise self._death(dead[0], when)

    def _death(self, k: int, when: str) -> ReplicaError:
        proc = self._procs[k]
        proc.join(5)
        code = proc.exitcode
        if code is None:
            how = "stopped answering (its pipe closed)"
        elif code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            how = f"was killed by {name}" + (
                " (out of memory, or killed by hand)" if -code == signal.SIGKILL else ""
            )
        else:
            how = f"exited with status {code} (its log lines are above)"
        gpus = self.gpu_groups[k]
        where = f"pid {proc.pid}" + ("" if gpus is None else f", GPUs {','.join(gpus)}")
        hint = ""
        if when == "while loading its models" and code == 1:
            hint = (
                "; if lm_eval runs from your own script, put the call under if __name__ == '__main__': "
                "(spawned workers import the main module)"
            )
        return ReplicaError(f"replica {k} of {self.size} ({where}) {how} {when}{hint}")


def sum_counts(parts: Sequence[Mapping[str, Mapping[str, int]]]) -> dict[str, dict[str, int]]:
    """Store counts (role -> counter -> n) summed over replicas or ranks."""
    total: dict[str, dict[str, int]] = {}
    for counts in parts:
        for role, c in counts.items():
            into = total.setdefault(role, {})
            for key, value in c.items():
                into[key] = into.get(key, 0) + value
    return total


class _environment:
    """Set (a str) or unset (None) environment variables for the duration of a block: a spawned worker
    starts with the environment of the moment."""

    def __init__(self, values: Mapping[str, str | None]) -> None:
        self.values = dict(values)
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        for key, value in self.values.items():
            self.saved[key] = os.environ.get(key)
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def __exit__(self, *exc: object) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _gpu_env(gpus: list[str]) -> dict[str, str]:
    return {"CUDA_VISIBLE_DEVICES": ",".join(gpus)}


# --- the worker's side ---------------------------------------------------------------------------------
def _replica_main(
    index: int, size: int, plan: RunPlan, conn: Connection, lifeline: Connection, log_level: int
) -> None:
    """One replica: load, report, then answer the parent's calls until it says stop (or is gone)."""
    # Ctrl-C reaches every process of the terminal's group: the parent decides, and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SIGTERM from the parent: leave through Python (the finally below closes the engines, which stop
    # their own processes); the parent kills a worker that takes longer than STOP_GRACE_S.
    signal.signal(signal.SIGTERM, _leave)
    threading.Thread(target=_exit_with_parent, args=(lifeline,), daemon=True).start()
    _plain_tqdm_lock()
    logging.basicConfig(
        level=log_level, format=f"%(asctime)s %(levelname)s [replica {index}/{size}] %(name)s: %(message)s"
    )
    try:
        replica = build_replica(plan)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        _send_quietly(conn, ("error", _one_line(exc)))
        return
    replica.cascade.progress = False  # the parent shows one bar for all replicas
    info = ReplicaInfo(
        index,
        os.getpid(),
        os.environ.get("CUDA_VISIBLE_DEVICES"),
        replica.mentor_params,
        replica.intern_params,
        replica.entropy_method,
    )
    if not _send_quietly(conn, ("ready", info)):
        return
    try:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                return
            if msg[0] == "stop":
                return
            call = msg[1]
            try:
                if msg[0] == "run":
                    _run_share(replica, conn, call, msg[2], msg[3], plan.chunk_size)
                elif msg[0] == "loglikelihood":
                    conn.send(("loglikelihood", call, replica.loglikelihood(msg[2])))
            except (BrokenPipeError, ConnectionResetError):
                return
            except Exception as exc:  # noqa: BLE001 - one line to the parent; it stops the run
                if not _send_quietly(conn, ("error", call, _one_line(exc))):
                    return
    finally:
        replica.close()


def _run_share(
    replica: Replica,
    conn: Connection,
    call: int,
    questions: list[Question],
    keep_records: bool,
    chunk_size: int,
) -> None:
    for start in range(0, len(questions), chunk_size):
        results = replica.cascade.run(questions[start : start + chunk_size])
        if not keep_records:  # the answer and cost are all the parent needs
            results = [replace(r, stages=[], mentor=None) for r in results]
        conn.send(("chunk", call, start, results, replica.store_counts()))
    conn.send(("done", call, replica.store_counts()))


def _plain_tqdm_lock() -> None:
    """tqdm guards its bars with a multiprocessing lock, a named semaphore registered with the parent's
    resource tracker; a worker killed with -9 leaves it behind and the tracker warns at the parent's
    exit, after the one line that reports the death. A worker's bars need only a thread lock."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with lm-eval
        return
    tqdm.set_lock(threading.RLock())


def _leave(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _exit_with_parent(lifeline: Connection) -> None:
    """The parent holds the other end and never writes: EOF means it is gone (even killed with -9)."""
    try:
        lifeline.recv()
    except (EOFError, OSError):
        pass
    os._exit(1)


def _send_quietly(conn: Connection, msg: tuple) -> bool:
    try:
        conn.send(msg)
        return True
    except (BrokenPipeError, ConnectionResetError, OSError):
        return False


def _one_line(exc: BaseException) -> str:
    """An error as the one line the parent reports: a known error's own message, else its type and
    first line (the worker logs the traceback)."""
    text = str(exc).strip()
    if isinstance(exc, (BackendError, ClassifierError, StoreError, ValueError)) and text:
        return text.splitlines()[0]
    logger.exception("tandem: replica failed")
    return f"{type(exc).__name__}: {(text.splitlines() or [''])[0]}"
