"""``fit --features hidden_lora``: the LoRA adapter of a Hidden w/ LoRA judge, and its hidden vectors.

1. The records are split by question exactly as ``fit`` splits them (70/30, seed 42); the adapter is
   trained on the training questions' rows only (workflows/lora_training.py: sufficiency classification).
2. The hidden vectors of the adapted intern are computed for every record (training and validation
   questions) into the records' side file (complete_hidden.py, under the adapter's name), so the
   classifier and its thresholds are fit exactly as for a Hidden judge.
3. The adapter goes into the classifier folder (``adapter/``) and its identity into the card.

The intern's prompts are rebuilt from the records: the question as one user message (what the
package's tasks send; its hash and every stage's prompt length are checked against the record, so a
task whose questions carry a system prompt or few-shot turns is refused, not misread), and I_t.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tandem_lm_eval.backends.base import Message
from tandem_lm_eval.calibration.fitting import split_questions
from tandem_lm_eval.cascade.prompts import Question, intern_prompt
from tandem_lm_eval.data.records import RecordError
from tandem_lm_eval.judgment.card import ADAPTER_FOLDER, ADAPTER_WEIGHTS
from tandem_lm_eval.judgment.judges import layer_of
from tandem_lm_eval.judgment.loading import file_sha256

logger = logging.getLogger(__name__)


@dataclass
class RebuiltQuestion:
    """What complete_hidden needs of a task question: the Question."""

    question: Question


def question_of(record) -> Question:
    question = Question(messages=(Message("user", record.question),))
    if question.key != record.question_hash:
        raise RecordError(
            f"record {record.task} doc {record.doc_id}: its question is not one user message (hash differs); "
            "hidden_lora training rebuilds prompts from records of such tasks only"
        )
    return question


def train_adapter_for_fit(records, settings, args) -> tuple[Path, dict]:
    """(adapter folder, adapter dict for the card) for ``fit --features hidden_lora``."""
    from tandem_lm_eval.common.options import parse_model_args
    from tandem_lm_eval.workflows.complete_hidden import complete_hidden, intern_for, intern_plan
    from tandem_lm_eval.workflows.lora_training import LoraSettings, train_lora_judge

    # training needs torch; the plan first: its checks come before the records' questions are rebuilt
    plan = intern_plan({**parse_model_args(args.model_args), "intern_backend": "hf"})
    questions = {(r.task, r.doc_hash): RebuiltQuestion(question_of(r)) for r in records}
    val = split_questions(records, settings.validation_fraction, settings.seed)
    train = [r for r, v in zip(records, val) if not v]
    intern, identity, thinking = intern_for(plan)
    try:
        num_layers, hidden_size = intern.hidden_shape()
        layer = layer_of(args.hidden_layer, num_layers)
        prompts, labels = [], []
        for r in train:
            q = questions[(r.task, r.doc_hash)].question
            for t, s in enumerate(r.stages):
                if not s.usable or (t and r.stages[t - 1].usable and s.insights == r.stages[t - 1].insights):
                    continue  # the same x_t as the previous stage is one training row, not two
                prompts.append(intern_prompt(q, s.insights, thinking))
                labels.append(int(s.label))
        if args.lora_max_rows and len(prompts) > args.lora_max_rows:
            keep = np.sort(
                np.random.default_rng(settings.seed).permutation(len(prompts))[: args.lora_max_rows]
            )
            prompts, labels = [prompts[i] for i in keep], [labels[i] for i in keep]
        lora = LoraSettings(
            rank=args.lora_rank,
            alpha=args.lora_alpha,
            target_modules=tuple(t.strip() for t in args.lora_targets.split(",") if t.strip()),
            epochs=args.lora_epochs,
            learning_rate=args.lora_learning_rate,
            seed=settings.seed,
            layer=layer,
            position=args.hidden_position,
        )
        folder = Path(tempfile.mkdtemp(prefix="tandem-lora-"))
        logger.info(
            "hidden_lora: training a LoRA adapter on %d rows of %d training questions",
            len(prompts),
            len(train),
        )
        result = train_lora_judge(intern, prompts, labels, lora, folder)
        digest = file_sha256(folder / ADAPTER_WEIGHTS)
        adapter = {"sha256": digest, "base_model": identity, "hidden_size": hidden_size, **result.describe()}
        complete_hidden(
            records,
            questions,
            args.records[0],
            intern,
            identity,
            str(layer),
            thinking=thinking,
            adapter=(str(folder), digest),
        )
    finally:
        intern.close()
    return folder, adapter


def place_adapter(adapter_dir: Path, classifier_folder: Path) -> Path:
    """Move the trained adapter into the classifier folder (``adapter/``)."""
    target = Path(classifier_folder) / ADAPTER_FOLDER
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(adapter_dir, target)
    shutil.rmtree(adapter_dir, ignore_errors=True)
    return target
