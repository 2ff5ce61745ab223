"""The progress bar of a cascade run (tqdm), shared by the stage loop and the mentor-answer modes."""

from __future__ import annotations


def progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="Tandem cascade", unit="step", disable=not enabled)
