"""A classifier's card and folder format: what it was trained on (feature set and span, intern, entropy
method, budgets, thresholds and the objective that chose them, training questions) and how a folder is
written. Every classifier kind saves through ``write_folder``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tandem_lm_eval.judgment.features import (
    DEFAULT_SPAN,
    FEATURE_SET,
    check_span,
)
from tandem_lm_eval.judgment.judges import HiddenReading, JudgeSpec, check_feature_set, needs_statistics
from tandem_lm_eval.judgment.training_guard import check_training_questions_file

WEIGHTS_FILE = "model.safetensors"


META_FILE = "classifier.json"


HASHES_FILE = "training_questions.txt"


# A hidden_lora classifier's LoRA adapter (peft's folder format: safetensors weights + JSON config).
ADAPTER_FOLDER = "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


# 2: tandem-v2 features with a recorded span, estimator kinds, objective and front, per-group folders.
FORMAT_VERSION = 2


@dataclass
class ClassifierCard:
    """Everything a classifier must know about the setup that produced its training features."""

    feature_set: str = FEATURE_SET
    feature_span: str = DEFAULT_SPAN
    intern_model: str = ""
    entropy_method: str = "exact"
    budgets: list[int] = field(default_factory=lambda: [100, 500, 1000])
    thresholds: list[float] = field(default_factory=list)  # one per stage: stage 0 .. len(budgets)
    # The stop rule the thresholds were chosen for: "tandem" (first s_t > τ_t, else argmax) or
    # "route" (one decision from stage 0, else the last stage; only thresholds[0] matters).
    policy: str = "tandem"
    # How the thresholds were chosen (replay.Objective.to_dict()) and the accuracy-TFLOPs front of the
    # whole threshold grid on the rows they were chosen on (replay.FrontPoint.to_dict() each).
    threshold_objective: dict = field(default_factory=dict)
    threshold_front: list[dict] = field(default_factory=list)
    training: dict = field(default_factory=dict)
    # The questions the classifier and thresholds were fit on, as training_guard.py records them: content
    # keys (``c:<key>``) and rendered-dialogue hashes (``prompts.question_hash``).
    training_questions: frozenset[str] = frozenset()
    # What a hidden-state judge reads (layer, position, hidden size, adapter); None for ``tandem-v2``.
    hidden: HiddenReading | None = None

    @property
    def spec(self) -> JudgeSpec:
        """The classifier's input (judges.py): feature set, span, hidden reading."""
        return JudgeSpec(self.feature_set, self.feature_span, self.hidden)

    def to_meta(self) -> dict:
        spec = self.spec
        names = spec.statistics_names()
        hidden = {} if self.hidden is None else {"hidden": self.hidden.to_dict(), "num_features": spec.width}
        return {
            "feature_set": self.feature_set,
            "feature_names": names,
            **hidden,
            "feature_span": self.feature_span,
            "log_scaled_features": [n for n, c in zip(names, spec.log_columns()) if c],
            "intern_model": self.intern_model,
            "entropy_method": self.entropy_method,
            "budgets": list(self.budgets),
            "thresholds": [float(t) for t in self.thresholds],
            "policy": self.policy,
            "threshold_objective": self.threshold_objective,
            "threshold_front": self.threshold_front,
            "training": self.training,
        }

    @classmethod
    def from_meta(cls, meta: dict, folder: Path) -> ClassifierCard:
        hashes = folder / HASHES_FILE
        check_training_questions_file(folder, meta, hashes.is_file())
        hidden = meta.get("hidden")
        return cls(
            feature_set=check_feature_set(meta["feature_set"]),
            hidden=None if hidden is None else HiddenReading.from_dict(hidden),
            feature_span=check_span(meta.get("feature_span", DEFAULT_SPAN)),
            intern_model=meta.get("intern_model", ""),
            entropy_method=meta.get("entropy_method", "exact"),
            budgets=list(meta.get("budgets", [])),
            thresholds=list(meta.get("thresholds", [])),
            policy=meta.get("policy", "tandem"),
            threshold_objective=meta.get("threshold_objective", {}),
            threshold_front=meta.get("threshold_front", []),
            training=meta.get("training", {}),
            training_questions=frozenset(hashes.read_text().split()) if hashes.is_file() else frozenset(),
        )


def write_folder(folder: str | Path, kind: str, card: ClassifierCard, meta: dict, write_weights) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_weights(str(folder / WEIGHTS_FILE))
    full = {"format_version": FORMAT_VERSION, "kind": kind, "estimator": kind, **card.to_meta(), **meta}
    (folder / META_FILE).write_text(json.dumps(full, indent=2) + "\n")
    if card.training_questions:
        (folder / HASHES_FILE).write_text("\n".join(sorted(card.training_questions)) + "\n")
    return folder


def normalize_model_name(name: str) -> str:
    """Compare models by their last path component: ``/models/Qwen3-8B`` and ``Qwen/Qwen3-8B`` agree."""
    return Path(name.rstrip("/")).name.lower() if name else ""


def intern_mismatch(card: ClassifierCard, intern_model: str, entropy_method: str) -> list[str]:
    """Why a classifier does not fit an intern (empty: it fits): another intern model, or features made
    with another entropy method. The one rule ``lm_eval`` (harness/assembly.py) and ``analyze`` apply:
    its scores would be read off features of another model's distribution."""
    problems = []
    want = normalize_model_name(intern_model)
    if card.intern_model and want and normalize_model_name(card.intern_model) != want:
        problems.append(f"it was trained for intern {card.intern_model!r}, this run's intern is {want!r}")
    if needs_statistics(card.feature_set) and entropy_method and card.entropy_method != entropy_method:
        problems.append(
            f"its features used {card.entropy_method!r} entropy, the intern backend gives {entropy_method!r}"
        )
    return problems
