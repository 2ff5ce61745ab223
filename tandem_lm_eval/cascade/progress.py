"""The progress bar of a cascade run (tqdm), shared by the stage loop, the mentor-answer modes and the
parent of data_parallel_size replicas (one bar over every replica's questions)."""

from __future__ import annotations


def progress_bar(total: int, enabled: bool, *, unit: str = "step", desc: str = "Tandem cascade"):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled)
