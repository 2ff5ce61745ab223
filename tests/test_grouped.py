"""Per-group classifiers in the live cascade, and the leakage guard of ``lm_eval --model tandem``."""

from __future__ import annotations

import types

import numpy as np
import pytest
from fakes import ScriptedBackend

from tandem_lm_eval.backends.base import Message
from tandem_lm_eval.cascade.policies import TandemPolicy, make_policy
from tandem_lm_eval.cascade.prompts import Question
from tandem_lm_eval.cascade.roles import Role
from tandem_lm_eval.cascade.stages import Cascade
from tandem_lm_eval.common.question_hash import question_hash
from tandem_lm_eval.harness.assembly import group_policies, load_classifier
from tandem_lm_eval.harness.config import TandemConfig
from tandem_lm_eval.harness.lm import TandemLM
from tandem_lm_eval.judgment.features import FEATURE_NAMES, NUM_FEATURES
from tandem_lm_eval.judgment.grouped import GroupedClassifier
from tandem_lm_eval.judgment.loading import load_classifier_folder, make_classifier

BUDGETS = [24, 48, 96]
ENT = FEATURE_NAMES.index("entropy_mean")
TAU = {"a": [0.0] * 4, "b": [1.0] * 4, "fallback": [1.0, 0.0, 1.0, 1.0]}


def _member(labels_from: str, thresholds, training_questions=(), seed=0):
    """A tiny logistic classifier on synthetic features; ``labels_from`` picks what it learns."""
    rng = np.random.default_rng(seed)
    X = np.abs(rng.normal(2.0, 1.0, (120, NUM_FEATURES)))
    X[:, -1] = rng.integers(5, 200, 120)
    if labels_from == "low_entropy":
        y = (X[:, ENT] < 2.0).astype(int)
    elif labels_from == "high_entropy":
        y = (X[:, ENT] > 2.0).astype(int)
    else:  # long prompts
        y = (X[:, -1] > 100).astype(int)
    clf = make_classifier("logistic").fit(X, y)
    clf.card.budgets = list(BUDGETS)
    clf.card.intern_model = "demo-intern"
    clf.card.thresholds = list(thresholds)
    clf.card.training_questions = frozenset(training_questions)
    return clf


@pytest.fixture(scope="module")
def grouped():
    members = {
        "a": _member("low_entropy", TAU["a"], {question_hash("trained in a")}, seed=1),
        "b": _member("high_entropy", TAU["b"], {question_hash("trained in b")}, seed=2),
    }
    fallback = _member("length", TAU["fallback"], {question_hash("trained in the fallback")}, seed=3)
    return GroupedClassifier(members, fallback, "task")


def q(text: str, group: str | None) -> Question:
    return Question(messages=(Message("user", text),), group=group)


def tandem_config(**extra) -> TandemConfig:
    return TandemConfig.from_model_args(
        {"mentor": "/m", "intern": "demo-intern", "budgets": "[24,48,96]", **extra}
    )


def run_cascade(classifier, policies, questions, default=TAU["fallback"]):
    mentor = ScriptedBackend(params=32)
    intern = ScriptedBackend(default_len=7, params=7, model_name="demo-intern")
    cascade = Cascade(
        Role(mentor, params=32),
        Role(intern, params=7),
        make_policy("tandem", default),
        BUDGETS,
        classifier,
        progress=False,
        group_policies=policies,
    )
    return cascade.run(questions), mentor


# --- group policies -------------------------------------------------------------------------------------------
def plan_with(classifier, folder, **extra):
    """The run plan of a run with ``classifier`` (saved to ``folder``, read back by the plan)."""
    from tandem_lm_eval.harness.plan import plan_run

    classifier.save(folder)
    return plan_run(tandem_config(classifier=str(folder), **extra))


def test_group_policies_take_each_members_thresholds(grouped, tmp_path):
    policies = group_policies(plan_with(grouped, tmp_path / "g"))
    assert set(policies) == {"a", "b"}
    assert all(isinstance(p, TandemPolicy) for p in policies.values())
    assert policies["a"].thresholds == (0.0,) * 4 and policies["b"].thresholds == (1.0,) * 4
    # thresholds in model_args hold for every group; baseline modes and plain classifiers have none
    assert group_policies(plan_with(grouped, tmp_path / "g", thresholds="[.5,.5,.5,.5]")) == {}
    assert group_policies(plan_with(grouped, tmp_path / "g", mode="fixed:1")) == {}
    assert group_policies(plan_with(grouped.fallback, tmp_path / "f")) == {}


def test_cascade_routes_each_group_to_its_member_and_thresholds(grouped, tmp_path):
    questions = [
        q("alpha beta gamma", "a"),
        q("delta epsilon", "b"),
        q("zeta eta theta iota", "c"),  # no member: the fallback and its thresholds
        q("kappa", None),
        q("lambda mu", "a"),
    ]
    results, mentor = run_cascade(grouped, group_policies(plan_with(grouped, tmp_path / "g")), questions)
    a, b, c, none, a2 = results

    # each stage's score is its group's member's s_t of the recorded features
    owner = {
        "a": grouped.members["a"],
        "b": grouped.members["b"],
        "c": grouped.fallback,
        None: grouped.fallback,
    }
    for question, r in zip(questions, results):
        for rec in r.stages:
            mine = owner[question.group].sufficiency(rec.features[None])[0]
            assert rec.score == pytest.approx(mine, abs=1e-12)
            for other in {id(m): m for m in owner.values() if m is not owner[question.group]}.values():
                assert abs(other.sufficiency(rec.features[None])[0] - rec.score) > 1e-6

    # group a, tau = 0: stops at stage 0 on its own score, no mentor token paid
    for r in (a, a2):
        assert r.cost.stage_scores[0] > 0.0
        assert r.cost.stop_stage == 0 and r.cost.stopped_early and r.cost.mentor_tokens == 0
        assert len(r.stages) == 1
    # group b, tau = 1: nothing passes, every stage written, argmax fallback
    assert not b.cost.stopped_early and b.cost.mentor_tokens == BUDGETS[-1]
    assert len(b.cost.stage_scores) == 4
    assert b.cost.stop_stage == int(np.argmax(b.cost.stage_scores))
    # other groups: the default policy (1, 0, 1, 1): stage 0 never passes, stage 1 does
    for r in (c, none):
        assert r.cost.stop_stage == 1 and r.cost.stopped_early and r.cost.mentor_tokens == BUDGETS[0]
    # the mentor was asked for stage 1 by b, c, None; for stages 2 and 3 by b alone
    assert [len(call) for call in mentor.generate_calls] == [3, 1, 1]


def test_without_group_policies_every_group_follows_the_default(grouped):
    questions = [q("alpha beta gamma", "a"), q("delta epsilon", "b")]
    results, _ = run_cascade(grouped, {}, questions, default=[1.0, 1.0, 1.0, 0.0])
    for r in results:  # a would stop at 0 and b never with their own thresholds
        assert r.cost.stop_stage == 3 and r.cost.stopped_early and r.cost.mentor_tokens == BUDGETS[-1]


def test_saved_grouped_classifier_loads_for_a_run(grouped, tmp_path):
    from tandem_lm_eval.harness.plan import plan_run

    folder = grouped.save(tmp_path / "grouped")
    intern = ScriptedBackend(model_name="demo-intern")
    clf, thresholds = load_classifier(tandem_config(classifier=str(folder)), intern)
    assert isinstance(clf, GroupedClassifier) and set(clf.members) == {"a", "b"}
    assert thresholds == tuple(TAU["fallback"])  # the fallback's, for requests of other groups
    policies = group_policies(plan_run(tandem_config(classifier=str(folder))))
    assert policies["a"].thresholds == (0.0,) * 4 and policies["b"].thresholds == (1.0,) * 4
    X = np.abs(np.random.default_rng(5).normal(2.0, 1.0, (6, NUM_FEATURES)))
    groups = ["a", "b", "c", None, "b", "a"]
    np.testing.assert_array_equal(clf.sufficiency(X, groups), grouped.sufficiency(X, groups))
    assert load_classifier_folder(folder).card.training_questions == grouped.card.training_questions


# --- the leakage guard ----------------------------------------------------------------------------------------
def _guard(classifier, allow=False):
    return types.SimpleNamespace(
        classifier=classifier, config=types.SimpleNamespace(allow_training_overlap=allow)
    )


def _requests(n, task="gsm8k_test"):
    return [types.SimpleNamespace(task_name=task, doc_id=i) for i in range(n)]


def test_training_questions_cover_every_member(grouped):
    seen = grouped.card.training_questions
    assert seen == {question_hash(t) for t in ("trained in a", "trained in b", "trained in the fallback")}
    assert q("trained in b", "b").key in seen


def test_guard_refuses_questions_the_classifier_was_trained_on(grouped):
    questions = [
        q("a fresh question", "a"),
        q("trained in b", "b"),  # a member's training question
        q("another fresh one", "a"),
        q("  Trained   in the FALLBACK ", None),  # whitespace and case do not hide it
    ]
    with pytest.raises(SystemExit) as info:
        TandemLM._refuse_training_questions(_guard(grouped), _requests(4), questions)
    message = str(info.value)
    assert "2 of 4 questions (first: gsm8k_test doc 1)" in message
    assert "allow_training_overlap=true" in message


def test_guard_lets_fresh_questions_and_explicit_overlap_through(grouped):
    fresh = [q("a fresh question", "a"), q("another fresh one", "b")]
    assert TandemLM._refuse_training_questions(_guard(grouped), _requests(2), fresh) is None
    trained = [q("trained in a", "a")]
    assert TandemLM._refuse_training_questions(_guard(grouped, allow=True), _requests(1), trained) is None
    # no classifier (baseline modes), or one without recorded hashes: nothing to guard
    assert TandemLM._refuse_training_questions(_guard(None), _requests(1), trained) is None
    bare = types.SimpleNamespace(card=types.SimpleNamespace(training_questions=frozenset()))
    assert TandemLM._refuse_training_questions(_guard(bare), _requests(1), trained) is None
    # but a plain classifier with hashes refuses as well
    with pytest.raises(SystemExit, match="1 of 1 questions"):
        TandemLM._refuse_training_questions(_guard(grouped.members["a"]), _requests(1), trained)
