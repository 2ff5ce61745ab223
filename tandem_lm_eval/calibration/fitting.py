"""``tandem-lm-eval fit``: a sufficiency classifier and its thresholds from collected records.

1. Rows: one per usable (question, stage) of ``collect`` records, features over the chosen span
   (``question_insights`` by default), label = the task's metric said the answer was correct.
2. Split by question (all stages of a question on one side), stratified 70/30 with seed 42 (§3.1).
3. Fit the estimator (the paper's MLP, or logistic regression / gradient boosting) on the training
   questions; the MLP stops early on the validation questions.
4. Thresholds by an explicit objective (replay.Objective), chosen by replaying the cascade exactly
   as it runs on rows its classifier did not learn from. The paper says both "τ_t optimized per
   effort level on a held-out validation set" (§2.3) and "grid search ... on the training set"
   (§3.1): ``--threshold-rows validation`` follows §2.3, ``--threshold-rows train`` §3.1 (scores of
   the rows the classifier was fit on, which flatter it). The default, ``--threshold-rows cv``,
   chooses them on every training question (train and validation) scored out of fold: K
   classifiers, each fit on the other folds' questions, score the questions they did not see
   (``out_of_fold_scores``), so the search sees ~3x as many questions as on the validation part
   alone, none of them scored by a classifier that learnt from it; the classifier saved is still
   the one fit in step 3. On repeated splits of the demo's training questions it transferred best
   to held-out questions (docs/judgment-study.md). The whole accuracy-TFLOPs front of the grid is
   saved with the classifier.
5. ``--per-group``: one classifier per group (a MATH subject) plus a unified fallback, one folder.
6. ``--policy route``: a router for ``mode=route`` (FrugalGPT-style, paper Table 6) instead: fit on the
   stage-0 rows only (will the intern alone be right?), τ_0 by the same objectives replaying the
   routing rule (intern alone if s_0 > τ_0, else the last stage).
7. ``--policy router``: a router for ``mode=router`` (the intern alone or the mentor alone, decided
   before any generation): stage-0 rows labelled 1 where the intern alone is right or the mentor alone
   is wrong (sending the question to the mentor would not help), from records with the mentor's own
   answers (``collect --mentor-answers``); τ_0 by the same objectives replaying ``replay.router``.

Training rows from a test split are refused (``--allow-test-rows`` to override), and the hashes of
every question used are saved, so ``lm_eval --model tandem`` refuses to evaluate on them. Records whose
task calls its split "train" but whose questions come from a test split (``source_split``: the offline
MATH train pool is MATH test problems outside MATH-500) are accepted with one warning line saying so and
where the classifier may then be evaluated; the report and model card keep it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from tandem_lm_eval.calibration.front import pareto_front
from tandem_lm_eval.calibration.objectives import (
    Objective,
    ThresholdChoice,
    choose_route_threshold,
    choose_thresholds,
)
from tandem_lm_eval.calibration.replay import fixed_stage, oracle, route, router
from tandem_lm_eval.calibration.tables import (
    HiddenVectors,
    RowTable,
    TableError,
    mentor_answers,
    row_table,
    stage_table,
)
from tandem_lm_eval.calibration.threshold_grid import threshold_grid
from tandem_lm_eval.data.records import QuestionRecord
from tandem_lm_eval.judgment.features import DEFAULT_SPAN, FEATURE_SPANS
from tandem_lm_eval.judgment.grouped import GroupedClassifier
from tandem_lm_eval.judgment.judges import JudgeSpec, needs_adapter
from tandem_lm_eval.judgment.loading import make_classifier
from tandem_lm_eval.judgment.training_guard import QuestionIdentity, training_entries

logger = logging.getLogger(__name__)

KINDS = ("mlp", "logistic", "gradient_boosting")
#: Rows the thresholds are chosen on: held-out validation (§2.3), training (§3.1), or every training
#: question scored out of fold (cross-validated).
THRESHOLD_ROWS = ("validation", "train", "cv")


@dataclass
class FitSettings:
    span: str = DEFAULT_SPAN
    kind: str = "mlp"
    params: dict | None = None  # estimator constructor parameters
    objective: Objective = Objective("max_accuracy")
    validation_fraction: float = 0.3
    seed: int = 42
    # "cv" (every training question out of fold; the default: docs/judgment-study.md), "validation"
    # (§2.3) or "train" (§3.1)
    threshold_rows: str = "cv"
    cv_folds: int = 5  # threshold_rows="cv": folds of the training questions
    policy: str = "tandem"  # "tandem", "route" or "router"
    per_group: bool = False
    min_group_questions: int = 30
    mentor_params: float | None = None
    intern_params: float | None = None
    # What the classifier reads (judges.py; default tandem-v2 over ``span``) and, for a hidden-state
    # judge, the vectors of the records by (question hash, stage) (tables.hidden_vectors).
    judge: JudgeSpec | None = None
    hidden: HiddenVectors | None = None

    @property
    def spec(self) -> JudgeSpec:
        return self.judge or JudgeSpec(span=self.span)

    def rows(self, records: Sequence[QuestionRecord]) -> RowTable:
        return row_table(records, self.span, self.spec, self.hidden)


def router_rows(rows: RowTable, records: Sequence[QuestionRecord]) -> RowTable:
    """The stage-0 rows of ``rows`` (over ``records``) labelled for ``mode=router``: 1 where the intern
    alone suffices, i.e. it is right or the mentor alone is wrong too (routing to the mentor would not
    help); 0 where only the mentor is right."""
    first = rows.subset(rows.stage == 0)
    mentor_right = mentor_answers(records).correct[first.question]
    return replace(first, y=(first.y.astype(bool) | ~mentor_right).astype(int))


def split_questions(records: Sequence[QuestionRecord], fraction: float, seed: int) -> np.ndarray:
    """Boolean mask over records: True = validation. Stratified on (group, any stage correct) so
    both sides see solvable and unsolvable questions of every group; coarser strata when a
    stratum is too small to split."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(records))
    solvable = [str(any(s.label for s in r.stages if s.usable)) for r in records]
    for strata in ([f"{r.group}|{a}" for r, a in zip(records, solvable)], solvable, None):
        if strata is not None and min(np.unique(strata, return_counts=True)[1]) < 2:
            continue
        try:
            _, val = train_test_split(index, test_size=fraction, random_state=seed, stratify=strata)
            break
        except ValueError:  # a stratum too small for the requested fraction
            continue
    mask = np.zeros(len(records), dtype=bool)
    mask[val] = True
    return mask


def fit_member(rows_train: RowTable, rows_val: RowTable | None, settings: FitSettings):
    """The estimator fit on ``rows_train``; ``rows_val`` (None: the estimator holds out its own)
    drives early stopping."""
    if len(np.unique(rows_train.y)) < 2:
        raise TableError(
            f"the training rows have one label only ({int(rows_train.y.sum())} sufficient of {len(rows_train)}): "
            "nothing to learn; collect more questions"
        )
    clf = make_classifier(settings.kind, settings.spec, **(settings.params or {}))
    if rows_val is None:
        clf.fit(rows_train.X, rows_train.y)
    else:
        clf.fit(rows_train.X, rows_train.y, rows_val.X, rows_val.y)
    return clf


def fold_of_questions(records: Sequence[QuestionRecord], folds: int, seed: int) -> np.ndarray:
    """The fold (0..folds-1) of each record: by question, stratified on "any stage correct" (as
    ``split_questions``), so every fold sees solvable and unsolvable questions."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if folds < 2:
        raise TableError(f"cross-validation needs at least 2 folds, got {folds}")
    if len(records) < folds:
        raise TableError(f"{len(records)} questions cannot make {folds} folds")
    solvable = np.array([any(s.label for s in r.stages if s.usable) for r in records])
    index = np.arange(len(records))
    counts = np.bincount(solvable.astype(int), minlength=2)
    splitter = (
        StratifiedKFold(folds, shuffle=True, random_state=seed)
        if counts.min() >= folds
        else KFold(folds, shuffle=True, random_state=seed)
    )
    fold = np.zeros(len(records), dtype=int)
    for k, (_, held) in enumerate(splitter.split(index, solvable)):
        fold[held] = k
    return fold


def out_of_fold_scores(
    records: Sequence[QuestionRecord], rows: RowTable, settings: FitSettings
) -> np.ndarray:
    """s for every row of ``rows`` (over ``records``) from a classifier that never saw its question:
    one classifier per fold, fit on the other folds' questions (the estimator holds out its own
    early-stopping rows), as ``settings`` says (route: stage-0 rows only)."""
    fold = fold_of_questions(records, settings.cv_folds, settings.seed)[rows.question]
    scores = np.full(len(rows), np.nan)
    for k in range(settings.cv_folds):
        train = rows.subset(fold != k)
        if settings.policy == "route":
            train = train.subset(train.stage == 0)
        elif settings.policy == "router":
            train = router_rows(train, records)
        member = fit_member(train, None, settings)
        held = fold == k
        scores[held] = member.sufficiency(rows.X[held])
    return scores


def threshold_tuning(
    train_records: Sequence[QuestionRecord], val_records: Sequence[QuestionRecord], settings: FitSettings
) -> tuple[list[QuestionRecord], RowTable, Callable[[RowTable], np.ndarray] | None]:
    """The questions thresholds are chosen on (``settings.threshold_rows``), their rows, and their
    scores when not the fitted classifier's own (cv: out of fold)."""
    if settings.threshold_rows == "validation":
        return list(val_records), settings.rows(val_records), None
    if settings.threshold_rows == "train":
        return list(train_records), settings.rows(train_records), None
    tune = [*train_records, *val_records]  # cv: every training question, scored out of fold
    rows = settings.rows(tune)
    oof = out_of_fold_scores(tune, rows, settings)
    return tune, rows, lambda r: oof


def choose_for(
    clf,
    records: Sequence[QuestionRecord],
    rows: RowTable,
    settings: FitSettings,
    scores: Callable[[RowTable], np.ndarray] | None = None,
) -> tuple[ThresholdChoice, list[dict], dict]:
    """Thresholds for ``clf`` by the objective, replayed on ``records``; the front; baselines.
    ``scores``: s of the rows when not ``clf``'s own (out-of-fold scores)."""
    table = stage_table(
        records,
        scores or (lambda r: clf.sufficiency(r.X)),
        rows,
        settings.mentor_params,
        settings.intern_params,
    )
    if settings.policy in ("route", "router"):
        rule = route
        if settings.policy == "router":
            answers = mentor_answers(records)

            def rule(t, tau):
                return router(t, answers, tau)

        choice = choose_route_threshold(table, settings.objective, rule=rule)
        front = [
            {
                "thresholds": [tau],
                "accuracy": r.accuracy,
                "mean_tflops": r.mean_tflops,
                "mean_mentor_tokens": r.mean_mentor_tokens,
            }
            for tau, r in ((tau, rule(table, tau)) for tau in choice.grid)
        ]
    else:
        grid = threshold_grid(table, stage0=settings.objective.stage0)
        choice = choose_thresholds(table, settings.objective, grid_result=grid)
        front = [p.to_dict() for p in pareto_front(grid)] if settings.objective.kind != "per_stage" else []
    baselines = {f"fixed:{t}": fixed_stage(table, t).summary() for t in range(table.num_stages)}
    baselines["oracle"] = oracle(table).summary()
    return choice, front, baselines


def fit_records(records: Sequence[QuestionRecord], settings: FitSettings, allow_test_rows: bool = False):
    """(classifier, report) from labelled ``collect`` records."""
    if settings.span not in FEATURE_SPANS:
        raise TableError(f"unknown span {settings.span!r}; valid: {', '.join(FEATURE_SPANS)}")
    if settings.threshold_rows not in THRESHOLD_ROWS:
        raise TableError(
            f"unknown threshold rows {settings.threshold_rows!r}; valid: {', '.join(THRESHOLD_ROWS)}"
        )
    if settings.threshold_rows == "cv" and needs_adapter(settings.spec.feature_set):
        raise TableError(
            "--threshold-rows cv does not suit a hidden_lora judge: its adapter learnt from the training "
            "questions' labels, so their vectors are not out of sample in any fold; use validation (its "
            "default) or train"
        )
    test_rows = sorted({r.task for r in records if (r.split or "").lower() == "test"})
    if test_rows and not allow_test_rows:
        raise TableError(
            f"records of {', '.join(test_rows)} come from a test split: a classifier fit on them must not "
            "be evaluated there. Collect from a train split (e.g. tandem_gsm8k_train), or pass "
            "--allow-test-rows if you know these questions are never evaluated"
        )
    records = list(records)
    note = split_origin_note(records)
    if note:
        logger.warning("fit: %s", note)
    val_mask = split_questions(records, settings.validation_fraction, settings.seed)
    train_records = [r for r, v in zip(records, val_mask) if not v]
    val_records = [r for r, v in zip(records, val_mask) if v]
    unified, report = _fit_one(train_records, val_records, settings)
    clf = unified
    if settings.per_group:
        members, skipped = {}, {}
        for group in sorted({r.group for r in records}, key=str):
            g_train = [r for r in train_records if r.group == group]
            g_val = [r for r in val_records if r.group == group]
            n = len(g_train) + len(g_val)
            if group is None or n < settings.min_group_questions or not g_val:
                skipped[str(group)] = (
                    f"{n} questions (< {settings.min_group_questions}): uses the unified one"
                )
                continue
            try:
                member, member_report = _fit_one(g_train, g_val, settings)
            except TableError as exc:
                skipped[str(group)] = f"{exc}: uses the unified one"
                continue
            members[group] = member
            report.setdefault("groups", {})[group] = member_report
        group_by = _group_by(records)
        clf = GroupedClassifier(members, unified, group_by)
        report["groups_using_fallback"] = skipped or {}
        report["group_by"] = group_by
    if note:
        report["test_split_origin"] = note
    return clf, report


def split_origin_note(records: Sequence[QuestionRecord]) -> str | None:
    """One line when records of a task that is not a test split hold questions from a test split."""
    hidden = [
        r for r in records if (r.split or "").lower() != "test" and (r.source_split or "").lower() == "test"
    ]
    if not hidden:
        return None
    counts: dict[str, int] = {}
    for r in hidden:
        counts[str(r.task)] = counts.get(str(r.task), 0) + 1
    tasks = ", ".join(f"{task} ({n})" for task, n in sorted(counts.items()))
    splits = "/".join(sorted({str(r.split) for r in hidden}))
    where = (
        "the offline MATH train pool is the MATH test problems outside MATH-500: evaluate on "
        "tandem_math500, not tandem_math"
        if all(task.startswith("tandem_math") for task in counts)
        else "evaluate it on other questions of that test split only"
    )
    return (
        f"{len(hidden)} questions of {tasks} come from a test split although their task calls its split "
        f"'{splits}' ({where}; lm_eval refuses the classifier's training questions)"
    )


def _group_by(records: Sequence[QuestionRecord]) -> str:
    """The group rule the records were collected with (``collect --group-by``)."""
    rules = {r.group_by for r in records}
    if len(rules) != 1:
        raise TableError(f"records were grouped by different rules: {sorted(map(str, rules))}")
    return rules.pop()


def _fit_one(train_records, val_records, settings: FitSettings):
    rows_train = settings.rows(train_records)
    rows_val = settings.rows(val_records)
    if settings.policy == "route":  # a router judges the question alone: stage-0 rows only
        clf = fit_member(
            rows_train.subset(rows_train.stage == 0), rows_val.subset(rows_val.stage == 0), settings
        )
    elif settings.policy == "router":  # stage 0, labelled by whether the mentor alone would help
        clf = fit_member(router_rows(rows_train, train_records), router_rows(rows_val, val_records), settings)
    else:
        clf = fit_member(rows_train, rows_val, settings)
    tune_records, tune_rows, scores = threshold_tuning(train_records, val_records, settings)
    choice, front, baselines = choose_for(clf, tune_records, tune_rows, settings, scores)
    first = (train_records or val_records)[0]
    card = clf.card
    card.feature_set = settings.spec.feature_set
    card.feature_span = settings.span
    card.hidden = settings.spec.hidden
    card.intern_model = first.intern_model
    card.entropy_method = first.entropy_method
    card.budgets = list(first.budgets)
    card.thresholds = list(choice.thresholds)
    card.policy = settings.policy
    card.threshold_objective = {**settings.objective.to_dict(), "rows": settings.threshold_rows}
    if settings.threshold_rows == "cv":
        card.threshold_objective["folds"] = settings.cv_folds
    card.threshold_front = front
    card.training_questions = training_entries(
        [QuestionIdentity.of_record(r) for r in [*train_records, *val_records]]
    )
    val_scores = clf.sufficiency(rows_val.X)
    report = {
        "kind": settings.kind,
        "policy": settings.policy,
        "feature_set": settings.spec.feature_set,
        "span": settings.span,
        **({"hidden": settings.spec.hidden.to_dict()} if settings.spec.hidden is not None else {}),
        "questions": {"train": len(train_records), "validation": len(val_records)},
        "rows": {"train": len(rows_train), "validation": len(rows_val)},
        "positive_rate": {"train": _rate(rows_train.y), "validation": _rate(rows_val.y)},
        "validation_auc": _auc(rows_val.y, val_scores),
        "validation_auc_by_stage": {
            str(t): _auc(rows_val.y[rows_val.stage == t], val_scores[rows_val.stage == t])
            for t in sorted(set(rows_val.stage.tolist()))
        },
        "thresholds": list(choice.thresholds),
        "threshold_choice": choice.to_dict(),
        "front_points": len(front),
        f"baselines_on_{settings.threshold_rows}": baselines,
    }
    card.training = {**card.training, "report": report}
    return clf, report


def _rate(y: np.ndarray) -> float:
    return float(np.mean(y)) if len(y) else 0.0


def _auc(y: np.ndarray, s: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else None
