"""Paper Table 8 from a ``compare`` leaderboard: each row's accuracy per task (the group) and
overall with its mean TFLOPs, and for every judge (a replayed tandem/route row) its AUC over all
question-stage rows and per stage. The rows' judged scores come from the replay (``JudgedRows``),
passed in, never kept between runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tandem_lm_eval.workflows.compare_config import CompareConfig
from tandem_lm_eval.workflows.leaderboard import BoardEntry


@dataclass(frozen=True)
class JudgedRows:
    """What a replayed tandem/route row's judge said about each question-stage row: the label, the
    stage and the score, for Table 8's AUCs."""

    feature_set: str
    y: np.ndarray
    stage: np.ndarray
    score: np.ndarray
    question: np.ndarray | None = (
        None  # each row's question (its index in the task): AUC intervals resample questions
    )


def judges_by_task(
    config: CompareConfig, entries: list[BoardEntry], judged_rows: dict[tuple[str, str], JudgedRows]
) -> dict:
    """Paper Table 8 from the leaderboard: each row's accuracy per task (the group) and overall, mean
    TFLOPs, and for every judge (a replayed tandem/route row; ``judged_rows`` by (row name, task)) its
    AUC over all rows and per stage."""
    from tandem_lm_eval.calibration.analysis import bootstrap_auc
    from tandem_lm_eval.calibration.judges_table import stage_aucs

    rows, aucs = {}, {}
    for row in config.rows:
        mine = [e for e in entries if e.name == row.name]
        if not mine:
            continue
        judged = [judged_rows[(row.name, t)] for t in config.tasks if (row.name, t) in judged_rows]
        rows[row.name] = {
            "mode": row.mode,
            "judge_input": judged[0].feature_set if judged else "",
            "accuracy": {**{e.task: e.accuracy for e in mine}, "all": _weighted(mine, "accuracy")},
            "mean_tflops": _weighted(mine, "mean_tflops"),
        }
        if judged:  # every task's rows of this judge together
            y, stage, score = (
                np.concatenate([getattr(j, f) for j in judged]) for f in ("y", "stage", "score")
            )
            question = None
            if all(j.question is not None for j in judged):  # one id per (task, question)
                question = np.concatenate([[f"{i}:{q}" for q in j.question] for i, j in enumerate(judged)])
            aucs[row.name] = stage_aucs(y, stage, score, bootstrap_auc, question)
    return {"groups": list(config.tasks), "rows": rows, "auc": aucs}


def _weighted(entries: list[BoardEntry], field_name: str) -> float:
    n = sum(e.questions for e in entries)
    return float(sum(getattr(e, field_name) * e.questions for e in entries) / max(n, 1))


def table8_markdown(table8: dict) -> str:
    from tandem_lm_eval.calibration.judges_table import judges_markdown

    rows = {name: {"kind": v["judge_input"] or "baseline", **v} for name, v in table8["rows"].items()}
    return judges_markdown({**table8, "rows": rows}, mentor_note=False)
