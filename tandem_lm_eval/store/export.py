"""A run store's mentor insights as a recorded-mentor file (``tandem-lm-eval store export``, and a store
given directly as ``mentor_backend=recorded,mentor=STORE``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tandem_lm_eval.backends.base import (
    Generation,
)
from tandem_lm_eval.backends.recorded_mentor import RecordedBackend
from tandem_lm_eval.store.codec import decode_generation
from tandem_lm_eval.store.run_store import RunStore, StoreEntry, StoreError


# --- export ---------------------------------------------------------------------------------------
def mentor_fingerprints(store: RunStore) -> dict[str, dict[str, Any]]:
    """fingerprint digest -> {model, entries} of the stored mentor insight generations."""
    out: dict[str, dict[str, Any]] = {}
    for group in store.stats()["groups"]:
        if group["role"] == "mentor" and group["kind"] == "generation":
            slot = out.setdefault(group["fingerprint"], {"model": group["model"], "entries": 0})
            slot["entries"] += group["entries"]
    return out


def export_recorded_mentor(store: RunStore, out: str | Path, model: str | None = None) -> int:
    """Write the store's mentor insights as a recorded-mentor file (``data/records.py``) that
    ``mentor_backend=recorded,mentor=FILE`` replays: per question, the mentor's longest generation.

    ``model`` picks the mentor (its name or fingerprint, or a prefix of 8+ characters) when the store
    holds several; generations of different mentors (or decodings) are never mixed. Returns how many
    questions were written.
    """
    from tandem_lm_eval.data.records import MentorOutput, QuestionRecord, write_records

    fps = mentor_fingerprints(store)
    if model is not None:
        fps = {
            fp: v
            for fp, v in fps.items()
            if v["model"] == model or fp == model or (len(model) >= 8 and fp.startswith(model))
        }
    if not fps:
        raise StoreError(
            f"run store {store.path} has no mentor generations" + (f" of model {model!r}" if model else "")
        )
    if len(fps) > 1:
        listing = "; ".join(
            f"{v['model']} (fingerprint {fp[:12]}, {v['entries']} entries)" for fp, v in fps.items()
        )
        raise StoreError(
            f"run store {store.path} holds generations of {len(fps)} mentors (or decodings): {listing}; "
            "pick one with --model NAME or --model FINGERPRINT"
        )
    (fp,) = fps
    best: dict[str, tuple[Generation, StoreEntry]] = {}
    for entry in store.iter_entries(kind="generation", role="mentor", fingerprint=fp):
        if not entry.meta.get("insights") or not entry.meta.get("q"):
            continue
        try:
            gen = decode_generation(entry.value)
        except ValueError as exc:
            store.discard(entry.key, str(exc))
            continue
        q = entry.meta["q"]
        known = best.get(q)
        if known is None or len(gen.token_ids) > len(known[0].token_ids):
            best[q] = (gen, entry)
    if not best:
        raise StoreError(f"run store {store.path}: the mentor {fps[fp]['model']} has no stored insights")
    records = [
        QuestionRecord(
            question_hash=q,
            question="",  # the store keeps hashes, not question texts
            stages=[],
            kind="store",
            mentor=MentorOutput(
                text=gen.text,
                token_ids=list(gen.token_ids),
                finished=gen.finish_reason == "stop",
                model=entry.model,
                num_params=entry.meta.get("num_params"),
            ),
        )
        for q, (gen, entry) in sorted(best.items())
    ]
    out = Path(out)
    partial = out.with_name(out.name + ".partial")  # replaced in one step: never a half file
    partial.unlink(missing_ok=True)
    n = write_records(partial, records)
    partial.replace(out)
    return n


# --- a store as a recorded mentor -----------------------------------------------------------------
def is_run_store(path: Path) -> bool:
    """A run store (SQLite) rather than a records file: a store someone else filled is a recorded mentor."""
    with path.open("rb") as fh:
        return fh.read(16) == b"SQLite format 3\x00"


def store_records(path: Path) -> list:
    """The mentor insights a run store holds, as records (what ``tandem-lm-eval store export`` writes)."""
    import tempfile

    from tandem_lm_eval.data.records import load_records

    store = RunStore(path, create=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "mentor.jsonl"
            export_recorded_mentor(store, out)
            return load_records([out])
    finally:
        store.close()


class StoreRecordedBackend(RecordedBackend):
    """``mentor_backend=recorded,mentor=STORE``: a recorded mentor whose recordings are a run store's
    mentor insights (the harness picks it when the recorded mentor's file is a store)."""

    def read_recordings(self, path: Path) -> list:
        return store_records(path)
