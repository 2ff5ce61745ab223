"""lm-eval's ``--use_cache`` and the tandem configuration.

lm-eval's ``CachingLM`` keys each cached response on the method and the request's arguments only
(``hash_args("generate_until", (context, gen_kwargs))``): a cache filled by a run with other
model_args (another mentor, mode, budgets, classifier or thresholds) would serve that run's answers and
costs as this run's. The cache file cannot key on more, so the tandem model records the configuration
its answers came from in the cache (one entry under a name no request hash can take) and refuses a cache
another configuration filled, in one line naming the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tandem_lm_eval.harness.config import ConfigError, TandemConfig
from tandem_lm_eval.store.keys import fingerprint, fingerprint_digest

# The cache's own keys are sha256 hex digests: this name is none of them.
CONFIG_ENTRY = "tandem:configuration"

# model_args that change neither an answer nor its cost (where records go, progress bars, how the work
# is split): a cache stays valid across them.
NOT_IN_ANSWERS = frozenset(
    {"trace_path", "progress", "store", "chunk_size", "gpus_per_rank", "data_parallel_size", "is_demo"}
)


class AnswerCacheError(ConfigError):
    """A ``--use_cache`` file holding the answers of another tandem configuration."""


def configuration_fingerprint(cfg: TandemConfig, classifier_folder: Path | None) -> dict[str, Any]:
    """What decides a tandem run's answers and costs: every model_arg but ``NOT_IN_ANSWERS``, each
    role's model fingerprint (the run store's: weights, engine, options that change outputs) and the
    bytes of the classifier's files (a refit classifier in the same folder answers differently)."""
    public = cfg.public_dict()
    out: dict[str, Any] = {k: v for k, v in sorted(public.items()) if k not in NOT_IN_ANSWERS}
    for role in ("mentor", "intern"):
        rc = getattr(cfg, role)
        # the fingerprint's digest: an option may hold a secret, and the cache file keeps this entry
        # ``loads`` follows from the mode (which is compared itself): not a difference of its own
        role_dict = {k: v for k, v in public[role].items() if k != "loads"}
        out[role] = {**role_dict, "options": None, "fingerprint": fingerprint_digest(fingerprint(rc))}
    out["classifier_files"] = None if classifier_folder is None else folder_bytes_digest(classifier_folder)
    return json.loads(json.dumps(out, sort_keys=True, default=str))


def folder_bytes_digest(folder: Path) -> str | None:
    """sha256 over every file under a (small) classifier folder, names and bytes."""
    if not folder.is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(folder)}\n".encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def check_answer_cache(cache: Any, cache_file: str, configuration: dict[str, Any]) -> None:
    """Record ``configuration`` in an empty cache; refuse a cache another configuration filled.

    ``cache`` is the mapping lm-eval's ``CachingLM`` reads and writes (its ``SqliteDict``)."""
    recorded = cache.get(CONFIG_ENTRY) if CONFIG_ENTRY in cache else None
    if recorded is None:
        if len(cache) > 0:
            raise AnswerCacheError(
                f"--use_cache {cache_file} holds answers from a run that did not record its tandem "
                "configuration, which lm-eval's cache does not key on: give another --use_cache path, or "
                "delete the file"
            )
        cache[CONFIG_ENTRY] = configuration
        if hasattr(cache, "commit"):
            cache.commit()
        return
    if recorded != configuration:
        changed = sorted(k for k in {*recorded, *configuration} if recorded.get(k) != configuration.get(k))
        raise AnswerCacheError(
            f"--use_cache {cache_file} holds the answers and costs of another tandem configuration "
            f"(different: {', '.join(changed)}), and lm-eval's cache keys only on the request: give "
            "another --use_cache path for this model_args, or delete the file"
        )
