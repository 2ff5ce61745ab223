"""StoredBackend: what a rerun reuses (everything), what another intern reuses (every mentor entry), what
another mentor decoding reuses (nothing); stored results equal the real backend's bit for bit; the
fingerprint; TandemLM's chunks, store wiring and Ctrl-C line with the tiny real model."""

import json
import logging

import numpy as np
import pytest
from fakes import LengthClassifier, ScriptedBackend

from tandem_lm_eval.backends import make_backend
from tandem_lm_eval.backends.base import GenerationRequest, Message, Prompt
from tandem_lm_eval.cascade.policies import make_policy
from tandem_lm_eval.cascade.prompts import Question, intern_prompt, mentor_prompt
from tandem_lm_eval.cascade.roles import Role
from tandem_lm_eval.cascade.stages import Cascade
from tandem_lm_eval.harness.config import RoleConfig
from tandem_lm_eval.store.keys import (
    PERFORMANCE_ONLY_OPTIONS,
    fingerprint,
    fingerprint_digest,
    generation_key,
)
from tandem_lm_eval.store.run_store import RunStore
from tandem_lm_eval.store.stored_backend import StoredBackend

BUDGETS = (8, 16)
# question text -> how many tokens the scripted mentor writes before it stops by itself
SCRIPT = {"q0": 5, "q1": 12, "q2": 40, "q3": 40}


def q(text):
    return Question(messages=(Message("system", "Be brief."), Message("user", text)), max_gen_toks=7)


QUESTIONS = [q(t) for t in SCRIPT]


def fp(name, **options):
    return {"model": {"path": name}, "backend": "scripted", "dtype": "float32", "options": options}


def stored_pair(store, mentor_fp=None, intern_fp=None, intern_len=7):
    m_inner = ScriptedBackend(script_len=dict(SCRIPT), params=32, model_name="mentor")
    i_inner = ScriptedBackend(default_len=intern_len, params=7, model_name="intern")
    mentor = StoredBackend(m_inner, store, "mentor", mentor_fp or fp("mentor"), num_params=32)
    intern = StoredBackend(i_inner, store, "intern", intern_fp or fp("intern"), num_params=7)
    return mentor, intern, m_inner, i_inner


def run_cascade(mentor, intern, mode="fixed:2", classifier=None):
    thresholds = (0.5, 0.9, 0.5) if mode == "tandem" else None
    cascade = Cascade(
        Role(mentor, params=32),
        Role(intern, params=7),
        make_policy(mode, thresholds),
        BUDGETS,
        classifier,
        progress=False,
    )
    return cascade.run(QUESTIONS)


def outcome(results):
    """Everything a result holds except wall-clock times."""
    out = []
    for r in results:
        cost = r.cost.as_dict()
        cost.pop("times", None)
        cost = {k: v for k, v in cost.items() if not k.startswith("seconds") and "time" not in k}
        out.append(
            (
                r.answer,
                r.answer_finish_reason,
                json.dumps(cost, sort_keys=True),
                json.dumps([{**s.to_json(), "seconds": None} for s in r.stages], sort_keys=True),
                r.mentor,
            )
        )
    return out


def inner_calls(backend):
    return len(backend.generate_calls) + len(backend.score_calls)


@pytest.mark.parametrize("mode", ["fixed:2", "tandem"])
def test_second_identical_run_makes_no_inner_call_and_gives_identical_results(tmp_path, mode):
    clf = LengthClassifier(60) if mode == "tandem" else None
    store = RunStore(tmp_path / "s.sqlite")
    mentor, intern, m_inner, i_inner = stored_pair(store)
    first = run_cascade(mentor, intern, mode, clf)
    assert inner_calls(m_inner) > 0 and inner_calls(i_inner) > 0
    if mode == "tandem":
        assert i_inner.score_calls  # the scores path is exercised too
    assert mentor.counts.computed > 0 and mentor.counts.served == 0

    # a new process: a new store object on the same file, new engines
    again = RunStore(tmp_path / "s.sqlite")
    mentor2, intern2, m_inner2, i_inner2 = stored_pair(again)
    second = run_cascade(mentor2, intern2, mode, clf)
    assert inner_calls(m_inner2) == 0 and inner_calls(i_inner2) == 0
    assert mentor2.counts.computed == intern2.counts.computed == 0
    assert mentor2.counts.served == mentor.counts.computed
    assert intern2.counts.served == intern.counts.computed
    assert outcome(second) == outcome(first)
    # and both equal a run without a store
    plain = run_cascade(
        ScriptedBackend(script_len=dict(SCRIPT), params=32),
        ScriptedBackend(default_len=7, params=7),
        mode,
        clf,
    )
    assert outcome(plain) == outcome(first)


def test_another_intern_reuses_every_mentor_entry(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    mentor, intern, m_inner, _ = stored_pair(store)
    first = run_cascade(mentor, intern, "tandem", LengthClassifier(60))
    mentor_requests = sum(len(c) for c in m_inner.generate_calls)
    assert mentor_requests > 0

    # another intern model (another fingerprint, another output length), and another classifier
    mentor2, intern2, m_inner2, i_inner2 = stored_pair(store, intern_fp=fp("other-intern"), intern_len=3)
    second = run_cascade(mentor2, intern2, "tandem", LengthClassifier(90))
    assert m_inner2.generate_calls == [] and mentor2.counts.computed == 0
    assert i_inner2.generate_calls and i_inner2.score_calls and intern2.counts.served == 0
    # the same mentor insights reach the new intern
    assert [r.stages[1].insights for r in second] == [r.stages[1].insights for r in first]


@pytest.mark.parametrize(
    "mentor_fp",
    [
        fp("mentor", temperature="0.7"),  # the mentor's decoding options
        fp("mentor", seed="1"),
        fp("mentor-v2"),  # other weights
        {**fp("mentor"), "dtype": "bfloat16"},
    ],
)
def test_a_changed_mentor_reuses_nothing(tmp_path, mentor_fp):
    store = RunStore(tmp_path / "s.sqlite")
    mentor, intern, _, _ = stored_pair(store)
    run_cascade(mentor, intern)
    mentor2, intern2, m_inner2, i_inner2 = stored_pair(store, mentor_fp=mentor_fp)
    run_cascade(mentor2, intern2)
    assert mentor2.counts.served == 0
    assert mentor2.counts.computed == mentor.counts.computed > 0


def test_request_sampling_and_prefix_ids_are_in_the_key(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    inner = ScriptedBackend()
    b = StoredBackend(inner, store, "mentor", fp("m"))
    prompt = mentor_prompt(QUESTIONS[2], None)
    base = GenerationRequest(prompt, 8)
    (g,) = b.generate([base])
    variants = [
        GenerationRequest(prompt, 8, temperature=0.7),
        GenerationRequest(prompt, 8, seed=3),
        GenerationRequest(prompt, 8, top_p=0.9),
        GenerationRequest(prompt, 8, stop=("\n",)),
        GenerationRequest(prompt, 9),
        GenerationRequest(mentor_prompt(QUESTIONS[2], True), 8),  # thinking
    ]
    b.generate(variants)
    assert b.counts.generations_computed == 1 + len(variants) and b.counts.generations_served == 0
    # a continuation is keyed by its prefix's token ids, not its text
    (c1,) = b.generate([GenerationRequest(prompt, 4, prefix=g)])
    retexted = type(g)("other text", g.token_ids, g.new_tokens, g.finish_reason)
    (c2,) = b.generate([GenerationRequest(prompt, 4, prefix=retexted)])
    assert c1 == c2 and b.counts.generations_served == 1
    other_ids = type(g)(g.text, g.token_ids[:-1] + (999,), g.new_tokens, g.finish_reason)
    k1 = generation_key(b.fingerprint_digest, "mentor", GenerationRequest(prompt, 4, prefix=g))
    k2 = generation_key(b.fingerprint_digest, "mentor", GenerationRequest(prompt, 4, prefix=other_ids))
    assert k1 != k2


def test_missing_requests_go_in_one_inner_call_in_order(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    inner = ScriptedBackend()
    b = StoredBackend(inner, store, "mentor", fp("m"))
    prompts = [mentor_prompt(x, None) for x in QUESTIONS]
    b.generate([GenerationRequest(prompts[1], 8), GenerationRequest(prompts[3], 8)])
    inner.generate_calls.clear()
    batch = [GenerationRequest(p, 8) for p in prompts] + [GenerationRequest(prompts[0], 8)]
    out = b.generate(batch)
    # one call with the two missing distinct requests, in request order; the duplicate computed once
    assert len(inner.generate_calls) == 1
    assert [r.prompt for r in inner.generate_calls[0]] == [prompts[0], prompts[2]]
    assert out == ScriptedBackend().generate(batch)
    assert out[0] == out[-1]


def test_an_undecodable_entry_is_recomputed_and_reported(tmp_path, caplog):
    store = RunStore(tmp_path / "s.sqlite")
    b = StoredBackend(ScriptedBackend(), store, "intern", fp("i"))
    prompt = intern_prompt(QUESTIONS[1], "some insight", None)
    (good,) = b.score([prompt])
    (key,) = [e.key for e in store.iter_entries(kind="scores")]
    # sound bytes (checksum matches) that are not a scores value: e.g. written by a foreign program
    store.prune()
    from tandem_lm_eval.store.run_store import StoreEntry

    store.put_many([StoreEntry(key, "scores", "intern", "i", b.fingerprint_digest, b"not scores")])
    b2 = StoredBackend(ScriptedBackend(), store, "intern", fp("i"))
    with caplog.at_level(logging.WARNING):
        (again,) = b2.score([prompt])
    assert b2.counts.scores_computed == 1
    assert [r for r in caplog.records if key in r.getMessage() and str(store.path) in r.getMessage()]
    np.testing.assert_array_equal(again.token_logprobs, good.token_logprobs)
    (third,) = StoredBackend(ScriptedBackend(), store, "intern", fp("i")).score([prompt])
    assert third.spans == good.spans  # the recomputed value was stored in its place


def test_everything_else_is_the_inner_backends(tmp_path):
    inner = ScriptedBackend(model_name="x", entropy_method="topk", params=123)
    b = StoredBackend(inner, RunStore(tmp_path / "s.sqlite"), "intern", fp("x"))
    p = Prompt.chat(("user", "a b c"))
    assert b.name == "scripted" and b.model_name == "x" and b.num_parameters == 123
    assert b.max_context == inner.max_context and b.count_tokens(p) == inner.count_tokens(p)
    assert b.entropy_method == "topk" and b.script_len is inner.script_len
    with pytest.raises(AttributeError):
        b.no_such_attribute  # noqa: B018


# --- the real tiny model -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hf(tiny_model_dir):
    return make_backend("hf", str(tiny_model_dir), dtype="float32")


def test_stored_results_equal_the_real_backend_bit_for_bit(tmp_path, hf, tiny_model_dir):
    rc = RoleConfig(model=str(tiny_model_dir), backend="hf", options={"dtype": "float32"})
    mprompts = [mentor_prompt(x, None) for x in QUESTIONS[:3]]
    first = [GenerationRequest(p, 6) for p in mprompts]
    direct1 = hf.generate(first)
    direct2 = hf.generate([GenerationRequest(p, 5, prefix=g) for p, g in zip(mprompts, direct1)])
    iprompts = [intern_prompt(x, g.text, None) for x, g in zip(QUESTIONS, direct2)]
    direct_scores = hf.score(iprompts)

    for attempt in ("computed", "served"):
        store = RunStore(tmp_path / "s.sqlite")  # a fresh object each time: served values come from disk
        b = StoredBackend(hf, store, "mentor", fingerprint(rc, hf))
        g1 = b.generate(first)
        g2 = b.generate([GenerationRequest(p, 5, prefix=g) for p, g in zip(mprompts, g1)])
        sc = b.score(iprompts)
        if attempt == "served":
            assert b.counts.computed == 0 and b.counts.served == 9
        else:
            assert b.counts.served == 0 and b.counts.computed == 9
        assert g1 == direct1 and g2 == direct2
        assert [g.token_ids for g in g2] == [g.token_ids for g in direct2]
        for got, want in zip(sc, direct_scores):
            assert got.token_logprobs.dtype == want.token_logprobs.dtype
            assert got.token_logprobs.tobytes() == want.token_logprobs.tobytes()
            assert got.entropies.tobytes() == want.entropies.tobytes()
            assert got.num_tokens == want.num_tokens and got.entropy_method == want.entropy_method
            assert got.spans == want.spans and got.spans is not None
            assert (got.entropy_bounds is None) == (want.entropy_bounds is None)
        store.close()


# --- the fingerprint -----------------------------------------------------------------------------
def fake_model(folder, weights=100):
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"hidden_size": 64}))
    (folder / "tokenizer_config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\0" * weights)
    (folder / "README.md").write_text("notes")
    return folder


def digest(model, backend="hf", thinking=None, **options):
    return fingerprint_digest(
        fingerprint(RoleConfig(model=str(model), backend=backend, thinking=thinking, options=options))
    )


def test_fingerprint_follows_config_and_weight_files_not_performance_options(tmp_path):
    m = fake_model(tmp_path / "m")
    base = digest(m, dtype="float32", batch_size=8)
    assert digest(m, dtype="float32", batch_size=8) == base
    assert digest(m, dtype="float32", batch_size=1) == base  # performance only
    assert digest(m, dtype="float32") == base
    assert digest(m, dtype="bfloat16", batch_size=8) != base
    assert digest(m, dtype="float32", thinking=True) != base
    assert digest(m, "vllm", dtype="float32") != base
    # weight files: by name and size, not bytes (a 65 GB checkpoint is not read)
    (m / "model.safetensors").write_bytes(b"\1" * 100)
    assert digest(m, dtype="float32") == base
    (m / "model.safetensors").write_bytes(b"\0" * 101)
    assert digest(m, dtype="float32") != base
    fake_model(m)
    assert digest(m, dtype="float32") == base
    (m / "README.md").write_text("other notes")  # not a file that shapes outputs
    assert digest(m, dtype="float32") == base
    (m / "config.json").write_text(json.dumps({"hidden_size": 65}))
    assert digest(m, dtype="float32") != base
    fake_model(m)
    (m / "tokenizer_config.json").write_text('{"chat_template": "x"}')
    assert digest(m, dtype="float32") != base


def test_fingerprint_options_and_identities(tmp_path):
    m = fake_model(tmp_path / "m")
    vllm = {"dtype": "bfloat16", "entropy": "exact", "max_model_len": 4096}
    base = digest(m, "vllm", **vllm)
    for option in PERFORMANCE_ONLY_OPTIONS:
        assert digest(m, "vllm", **vllm, **{option: "7"}) == base, option
    for option, value in [
        ("entropy", "topk"),
        ("topk", 20),
        ("exact_entropy", "transformers"),
        ("chat_template", "{{x}}"),
        ("max_model_len", 2048),
        ("seed", 1),
    ]:
        assert digest(m, "vllm", **{**vllm, option: value}) != base, option
    # typed (lm-eval parsed) and textual spellings of one value are one fingerprint
    assert digest(m, "vllm", **{**vllm, "max_model_len": "4096"}) == base
    # hub ids by id and revision
    assert digest("org/model") != digest("org/model", revision="v2") != digest("org/other", revision="v2")
    demo = fingerprint(RoleConfig(model="demo", backend="hf"))
    assert demo["model"]["demo"] and "package_version" in demo["model"]
    # a folder moved elsewhere is another model (the resolved path is part of it)
    m2 = fake_model(tmp_path / "m2")
    assert digest(m2, "vllm", **vllm) != base


# --- TandemLM: store wiring, chunks, Ctrl-C ----------------------------------------------------
class Req:
    def __init__(self, context, doc_id):
        self.args = (context, {"until": ["Question:"], "max_gen_toks": 5})
        self.task_name, self.doc_id = "t", doc_id


REQS = [Req(f"Question: what is {i} plus {i + 1}?\nAnswer:", i) for i in range(5)]


def lm(tiny_model_dir, **extra):
    from tandem_lm_eval.harness.lm import TandemLM

    return TandemLM(
        mentor=str(tiny_model_dir),
        intern=str(tiny_model_dir),
        mode="fixed:2",
        budgets="[8,16]",
        progress=False,
        dtype="float32",
        batch_size=1,  # one prompt per forward pass: answers do not depend on batch composition
        **extra,
    )


def answers(out):
    return [
        (str(r), {k: v for k, v in r.tandem.items() if "time" not in k and "seconds" not in k}) for r in out
    ]


def test_tandem_lm_with_store_in_chunks_equals_one_plain_call(tmp_path, tiny_model_dir):
    plain = answers(lm(tiny_model_dir).generate_until(REQS))
    path = tmp_path / "s.sqlite"
    first = lm(tiny_model_dir, store=str(path), chunk_size=2)
    assert first.mentor is not first.intern and first.mentor.inner is first.intern.inner  # one engine
    assert answers(first.generate_until(REQS)) == plain
    counts = first.get_model_info()["tandem"]["store"]["counts"]
    assert counts["mentor"]["generations_computed"] == 10  # 5 questions x 2 stages (none finished)
    assert counts["intern"]["generations_computed"] == 5 and counts["intern"]["generations_served"] == 0
    entries = RunStore(path).count()
    assert entries == 15

    second = lm(tiny_model_dir, store=str(path), chunk_size=3)
    assert answers(second.generate_until(REQS)) == plain
    counts = second.get_model_info()["tandem"]["store"]["counts"]
    assert all(c["generations_computed"] == 0 and c["scores_computed"] == 0 for c in counts.values())
    assert counts["mentor"]["generations_served"] == 10 and counts["intern"]["generations_served"] == 5


def test_ctrl_c_says_what_is_stored_and_how_to_resume(tmp_path, tiny_model_dir, monkeypatch):
    path = tmp_path / "s.sqlite"
    model = lm(tiny_model_dir, store=str(path), chunk_size=2)
    engine = model.intern.inner
    real, calls = engine.generate, []

    def interrupted_on_the_fourth_call(requests):  # fault injection: Ctrl-C in the second chunk
        calls.append(len(requests))
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(requests)

    monkeypatch.setattr(engine, "generate", interrupted_on_the_fourth_call)
    with pytest.raises(SystemExit) as exc:
        model.generate_until(REQS)
    message = str(exc.value)
    assert "interrupted after 2 of 5 requests" in message
    assert f"{path} holds 6 entries" in message  # chunk 1: 2 x (2 mentor stages + 1 answer)
    assert "Rerun the same command with the same store=" in message
    assert "\n" not in message
    monkeypatch.setattr(engine, "generate", real)
    resumed = lm(tiny_model_dir, store=str(path), chunk_size=2)
    resumed.generate_until(REQS)
    counts = resumed.get_model_info()["tandem"]["store"]["counts"]
    assert counts["mentor"]["generations_served"] == 4 and counts["mentor"]["generations_computed"] == 6

    plain = lm(tiny_model_dir, chunk_size=2)
    monkeypatch.setattr(plain.intern, "generate", lambda requests: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(SystemExit, match="nothing was kept \\(no store= given\\)"):
        plain.generate_until(REQS)


def test_a_failure_past_the_retries_keeps_everything_finished(tmp_path, tiny_model_dir, monkeypatch):
    from tandem_lm_eval.backends.base import BackendError

    path = tmp_path / "s.sqlite"
    model = lm(tiny_model_dir, store=str(path), chunk_size=2)
    engine = model.intern.inner
    real, calls = engine.generate, []

    def server_gives_up_on_the_fourth_call(requests):  # fault injection: an API outage past its retries
        calls.append(len(requests))
        if len(calls) == 4:
            raise BackendError("server at http://127.0.0.1:9: 503 Service Unavailable after 5 retries")
        return real(requests)

    monkeypatch.setattr(engine, "generate", server_gives_up_on_the_fourth_call)
    with pytest.raises(SystemExit) as exc:
        model.generate_until(REQS)
    assert str(exc.value) == "tandem: server at http://127.0.0.1:9: 503 Service Unavailable after 5 retries"
    assert RunStore(path).count() == 6  # the first chunk: 2 questions x (2 mentor stages + 1 answer)
    monkeypatch.setattr(engine, "generate", real)
    resumed = lm(tiny_model_dir, store=str(path), chunk_size=2)
    assert answers(resumed.generate_until(REQS)) == answers(lm(tiny_model_dir).generate_until(REQS))
    counts = resumed.get_model_info()["tandem"]["store"]["counts"]
    assert counts["mentor"]["generations_served"] == 4 and counts["intern"]["generations_served"] == 2


def test_a_store_someone_else_filled_is_a_recorded_mentor(tmp_path, tiny_model_dir):
    from tandem_lm_eval.harness.lm import TandemLM

    path = tmp_path / "s.sqlite"
    original = answers(lm(tiny_model_dir, store=str(path)).generate_until(REQS))
    replayed = TandemLM(
        mentor=str(path),  # the run store itself, no export step
        intern=str(tiny_model_dir),
        mentor_backend="recorded",
        mentor_tokenizer=str(tiny_model_dir),
        mentor_num_params="2e9",
        mode="fixed:2",
        budgets="[8,16]",
        progress=False,
        dtype="float32",
        batch_size=1,
    )
    again = answers(replayed.generate_until(REQS))
    assert [text for text, _ in again] == [text for text, _ in original]
    assert [cost["mentor_tokens"] for _, cost in again] == [cost["mentor_tokens"] for _, cost in original]


# --- sampled repeats: k draws are k entries -------------------------------------------------------
def test_each_draw_of_a_sampled_request_is_its_own_entry(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    inner = ScriptedBackend()
    b = StoredBackend(inner, store, "intern", fp("i"))
    prompt = mentor_prompt(QUESTIONS[2], None)
    draws = [GenerationRequest(prompt, 8, temperature=0.7, sample=k) for k in range(3)]
    b.generate(draws)
    assert b.counts.generations_computed == 3 and b.counts.generations_served == 0
    assert len(inner.generate_calls[-1]) == 3  # the inner backend drew three times, not once
    b.generate(draws)  # a rerun serves each draw its own stored result
    assert b.counts.generations_computed == 3 and b.counts.generations_served == 3
    # greedy: every draw is the same result, one entry serves them all
    greedy = [GenerationRequest(prompt, 8, sample=k) for k in range(3)]
    b.generate(greedy)
    assert b.counts.generations_computed == 4
    assert len({generation_key("d", "intern", r) for r in greedy}) == 1
    assert len({generation_key("d", "intern", r) for r in draws}) == 3


class RepeatedReq(Req):
    """One lm-eval Instance with ``repeats=3`` and sampling: the evaluator passes the same object 3 times."""

    def __init__(self) -> None:
        super().__init__("Question: what is 2 plus 3?\nAnswer:", 0)
        self.args = (
            self.args[0],
            {"until": ["Question:"], "max_gen_toks": 6, "do_sample": True, "temperature": 1.0},
        )
        self.repeats = 3


@pytest.mark.parametrize("with_store", [False, True])
def test_sampled_repeats_are_distinct_draws_billed_once_each(tmp_path, tiny_model_dir, with_store):
    req = RepeatedReq()
    extra = {"store": str(tmp_path / "s.sqlite")} if with_store else {}
    first = lm(tiny_model_dir, **extra)
    out = first.generate_until([req, req, req])
    texts = [str(r) for r in out]
    assert len(set(texts)) == 3, texts  # three draws (random tiny model at temperature 1), not one thrice
    assert all(r.tandem["intern_tokens"] > 0 for r in out)  # each billed its own draw
    if with_store:
        counts = first.get_model_info()["tandem"]["store"]["counts"]["intern"]
        assert counts["generations_computed"] == 3 and counts["generations_served"] == 0
        again = lm(tiny_model_dir, **extra)
        assert [str(r) for r in again.generate_until([req, req, req])] == texts  # each draw from the store
        counts = again.get_model_info()["tandem"]["store"]["counts"]["intern"]
        assert counts["generations_computed"] == 0 and counts["generations_served"] == 3
