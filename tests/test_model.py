"""TandemLM in-process with the tiny real model, and classifier loading checks."""

import json

import pytest
from fakes import ScriptedBackend

from tandem_lm_eval.cascade.prompts import question_from_request
from tandem_lm_eval.harness.assembly import DEMO_CLASSIFIER, load_classifier
from tandem_lm_eval.harness.config import ConfigError, TandemConfig
from tandem_lm_eval.harness.lm import TandemLM
from tandem_lm_eval.harness.reporting import TandemResponse
from tandem_lm_eval.judgment.errors import ClassifierError


class Req:
    def __init__(self, context, gen_kwargs, task_name="t", doc_id=0):
        self.args = (context, gen_kwargs)
        self.task_name, self.doc_id = task_name, doc_id


def cfg(**kw):
    return TandemConfig.from_model_args(kw)


def test_classifier_for_another_intern_is_refused(tiny_classifier_dir):
    c = cfg(mentor="/m", intern="/models/Qwen3-8B", classifier=str(tiny_classifier_dir), budgets="8/16")
    intern = ScriptedBackend(model_name="/models/Qwen3-8B")
    with pytest.raises(ClassifierError, match="trained for intern 'tiny-llama'"):
        load_classifier(c, intern)
    lenient = cfg(
        mentor="/m",
        intern="/models/Qwen3-8B",
        classifier=str(tiny_classifier_dir),
        budgets="8/16",
        classifier_strict=False,
    )
    clf, thresholds = load_classifier(lenient, intern)
    assert clf is not None and thresholds == (0.5, 0.5, 0.5)


def test_entropy_method_mismatch_is_refused(tiny_classifier_dir, tiny_model_dir):
    intern = ScriptedBackend(model_name=str(tiny_model_dir), entropy_method="topk")
    c = cfg(mentor="/m", intern=str(tiny_model_dir), classifier=str(tiny_classifier_dir), budgets="8/16")
    with pytest.raises(ClassifierError, match="'exact' entropy, the intern backend gives 'topk'"):
        load_classifier(c, intern)


def test_stage_count_mismatch_needs_thresholds(tiny_classifier_dir, tiny_model_dir):
    intern = ScriptedBackend(model_name=str(tiny_model_dir))
    c = cfg(
        mentor="/m", intern=str(tiny_model_dir), classifier=str(tiny_classifier_dir), budgets="[100,500,1000]"
    )  # 3 budgets -> 4 stages; the classifier has 3 thresholds (budgets [8, 16])
    with pytest.raises(ConfigError, match="3 thresholds but budgets \\[100, 500, 1000\\] make 4 stages"):
        load_classifier(c, intern)
    ok = cfg(
        mentor="/m",
        intern=str(tiny_model_dir),
        classifier=str(tiny_classifier_dir),
        budgets="[100,500,1000]",
        thresholds="[.1,.2,.3,.4]",
    )
    assert load_classifier(ok, intern)[1] == (0.1, 0.2, 0.3, 0.4)


def test_budgets_default_to_the_classifiers(tiny_classifier_dir, tiny_model_dir):
    from tandem_lm_eval.harness.plan import plan_run

    c = cfg(mentor="/m", intern=str(tiny_model_dir), classifier=str(tiny_classifier_dir))
    assert c.budgets == (100, 500, 1000)
    plan = plan_run(c)  # the plan settles the budgets once: the card's, as no budgets were given
    _, thresholds = load_classifier(plan, ScriptedBackend(model_name=str(tiny_model_dir)))
    assert plan.budgets == (8, 16) and thresholds == (0.5, 0.5, 0.5)
    assert c.budgets == (100, 500, 1000)  # what model_args said is never rewritten


def test_missing_classifier_messages(tmp_path):
    with pytest.raises(ConfigError, match="needs a sufficiency classifier trained for your intern"):
        load_classifier(cfg(mentor="/m", intern="/i"), ScriptedBackend())
    with pytest.raises(ClassifierError, match="classifier 'nope' not found"):
        load_classifier(cfg(mentor="/m", intern="/i", classifier="nope"), ScriptedBackend())
    assert load_classifier(cfg(mentor="/m", intern="/i", mode="fixed:1"), ScriptedBackend()) == (None, None)


def test_demo_classifier_is_shipped():
    from tandem_lm_eval.data.resources import classifiers_dir

    folder = classifiers_dir() / DEMO_CLASSIFIER
    assert (folder / "classifier.json").is_file() and (folder / "README.md").is_file()
    meta = json.loads((folder / "classifier.json").read_text())
    assert meta["feature_set"] == "tandem-v2" and meta["feature_span"] == "question_insights"
    assert meta["intern_model"] == "SmolLM2-135M-Instruct" and meta["entropy_method"] == "exact"
    assert len(meta["thresholds"]) == 4 and meta["budgets"] == [24, 48, 96]
    assert meta["threshold_objective"]["kind"] == "max_accuracy" and meta["threshold_front"]
    # it loads, scores, and knows the questions it was fit on (all from GSM8K train)
    from tandem_lm_eval.data.records import load_records
    from tandem_lm_eval.judgment.loading import load_classifier_folder

    clf = load_classifier_folder(folder)
    records = load_records([folder / "training_records.jsonl.gz"])
    # by content (c:<key>) and by rendered dialogue, every question (judgment/training_guard.py)
    from tandem_lm_eval.judgment.training_guard import QuestionIdentity, training_entries

    assert all(r.question_key for r in records)
    assert clf.card.training_questions == training_entries([QuestionIdentity.of_record(r) for r in records])
    assert {r.question_hash for r in records} < clf.card.training_questions
    assert {r.task for r in records} == {"tandem_gsm8k_train"}
    router = load_classifier_folder(classifiers_dir() / "smollm2-135m-gsm8k-router")
    assert router.card.policy == "route" and router.card.thresholds[1:] == [1.0, 1.0, 1.0]


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir, tiny_classifier_dir):
    return TandemLM(
        mentor=str(tiny_model_dir),
        intern=str(tiny_model_dir),
        classifier=str(tiny_classifier_dir),
        budgets="[8,16]",
        progress=False,
        dtype="float32",
    )


def test_one_engine_serves_both_roles_and_params_are_counted(tiny_lm):
    assert tiny_lm.mentor is tiny_lm.intern
    assert tiny_lm.intern_params == sum(p.numel() for p in tiny_lm.intern.model.parameters())


def test_generate_until_returns_costed_responses_in_order(tiny_lm):
    reqs = [
        Req(f"Question: {i} plus {i}?\nAnswer:", {"until": ["Question:"], "max_gen_toks": 6}, doc_id=i)
        for i in range(3)
    ]
    out = tiny_lm.generate_until(reqs)
    assert len(out) == 3 and all(isinstance(r, TandemResponse) for r in out)
    for r in out:
        c = r.tandem
        assert c["intern_tokens"] <= 6 and c["mentor_tokens"] in (0, 8, 16)
        assert c["tflops"] == pytest.approx(
            2e-12 * tiny_lm.intern_params * (2 * c["mentor_tokens"] + c["intern_tokens"])
        )
    # pickling (lm-eval's cache) keeps the cost
    import pickle

    back = pickle.loads(pickle.dumps(out[0]))
    assert isinstance(back, TandemResponse) and back.tandem == out[0].tandem and back == out[0]
    # lm-eval builds plain strings with type(response)(x)
    assert type(type(out[0])("gold")) is str
    info = tiny_lm.get_model_info()["tandem"]
    assert info["summary"]["requests"] >= 3 and info["config"]["budgets"] == [8, 16]
    # the transformers backend gives no per-request timings: each call's seconds are shared equally
    assert info["latency_timing"] == {"mentor": "call share", "intern": "call share"}


def test_chat_history_round_trips_through_apply_chat_template(tiny_lm):
    ctx = tiny_lm.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    )
    q = question_from_request(ctx, {"until": ["\n"], "max_gen_toks": 3}, 8192)
    assert [(m.role, m.content) for m in q.messages] == [("system", "Be brief."), ("user", "Hi?")]


def test_empty_prompt_is_one_clear_error(tiny_lm):
    with pytest.raises(SystemExit, match="empty prompt"):
        tiny_lm.generate_until([Req("   ", {"until": []})])


def test_loglikelihood_is_answered_by_the_intern(tiny_lm):
    class LLReq:
        def __init__(self, a):
            self.args = a

    ((ll, greedy),) = tiny_lm.loglikelihood([LLReq(("The sky is", " blue"))])
    assert ll < 0 and isinstance(greedy, bool)
    with pytest.raises(SystemExit, match="loglikelihood_rolling"):
        tiny_lm.loglikelihood_rolling([])


def test_prompt_longer_than_intern_context_is_one_clear_error(tiny_model_dir):
    lm = TandemLM(
        mentor=str(tiny_model_dir),
        intern=str(tiny_model_dir),
        mode="fixed:1",
        budgets="[4]",
        intern_max_length=64,
        progress=False,
    )
    long_question = "Question: " + "how many apples " * 40 + "?\nAnswer:"
    with pytest.raises(
        SystemExit, match=r"the question alone is \d+ tokens, longer than the intern's context of 64"
    ):
        lm.generate_until([Req(long_question, {"until": [], "max_gen_toks": 4})])


def test_missing_model_path_is_one_clear_error():
    with pytest.raises(SystemExit, match="tandem: model path '/nope/model' does not exist"):
        TandemLM(mentor="/nope/model", intern="/nope/model", mode="fixed:1")
