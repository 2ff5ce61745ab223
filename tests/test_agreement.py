"""``mode=agreement``: the stop rule without a classifier. Live in the cascade (an answer per visited
stage, each in the cost), replayed from collect records, and replay == live on real GSM8K questions
with the demo intern and the recorded oracle mentor."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from fakes import ScriptedBackend

from tandem_lm_eval.backends.base import Generation, Message
from tandem_lm_eval.calibration.replay import StageTable, StageTokens, agreement
from tandem_lm_eval.cascade.policies import AgreementPolicy, make_policy
from tandem_lm_eval.cascade.prompts import Question
from tandem_lm_eval.cascade.stages import Cascade
from tandem_lm_eval.cost.flops import tflops
from tandem_lm_eval.cascade.roles import Role


class StagedIntern(ScriptedBackend):
    """Answers "<question> <k>" where k is what ``answers`` says for how many insight words it read."""

    def __init__(self, answers):
        super().__init__(params=7)
        self.answers = answers  # question -> {insight words read: answer}

    def generate(self, requests):
        self.generate_calls.append(list(requests))
        out = []
        for req in requests:
            user = [m for m in req.prompt.messages if m.role == "user"][-1].content
            question = user.split("\n\n")[0]
            words = (
                len(user.split("\n\n[Thinking Insights]\n")[1].split("\n\n")[0].split())
                if "[Thinking" in user
                else 0
            )
            text = f"the answer is {self.answers[question][words]}"
            n = 3 + words // 10  # answers grow with the insights, so the sum of every answer shows
            out.append(Generation(text, tuple(range(n)), n, "stop", prompt_tokens=11))
        return out


def q(text):
    return Question(messages=(Message("user", text),))


def test_agreement_stops_at_the_first_repeated_answer_and_pays_every_answer():
    # budgets 10, 20, 30: stage t reads 10·t insight words
    intern = StagedIntern(
        {
            "early": {0: "1", 10: "2", 20: "2", 30: "9"},  # stages 1 and 2 agree: stop at 2
            "never": {0: "1", 10: "2", 20: "3", 30: "4"},  # no two in a row: the last stage
            "first": {0: "5", 10: "5", 20: "6", 30: "7"},  # stage 1 agrees with stage 0
        }
    )
    mentor = ScriptedBackend(params=32)
    cascade = Cascade(Role(mentor, params=32), Role(intern, params=7), AgreementPolicy(), (10, 20, 30), None, progress=False)
    cascade.answer_key = lambda question, text: text.split()[-1]
    early, never, first = cascade.run([q("early"), q("never"), q("first")])
    assert [r.cost.stop_stage for r in (early, never, first)] == [2, 3, 1]
    assert [r.answer for r in (early, never, first)] == [
        "the answer is 2",
        "the answer is 4",
        "the answer is 5",
    ]
    assert early.cost.stopped_early and not never.cost.stopped_early
    # every visited stage answered once (answer tokens 3, 4, 5, 6 at stages 0..3), all in L_S
    assert early.cost.intern_tokens == 3 + 4 + 5 and early.cost.intern_discarded_tokens == 3 + 4
    assert never.cost.intern_tokens == 3 + 4 + 5 + 6 and first.cost.intern_tokens == 3 + 4
    assert (
        early.cost.mentor_tokens == 20 and never.cost.mentor_tokens == 30 and first.cost.mentor_tokens == 10
    )
    assert early.cost.tflops == pytest.approx(tflops(32, 7, 20, 12))
    # all passes: the mentor's two calls (5 prompt tokens each) and three answer prefills of 11
    assert early.cost.full_pass_tflops == pytest.approx(2e-12 * (32 * (5 + 5 + 20) + 7 * (3 * 11 + 12)))
    assert early.cost.intern_scored_tokens == 0  # no classifier: nothing is scored
    # one batched answer call per stage over the questions still running
    assert [len(c) for c in intern.generate_calls] == [3, 3, 2, 1]


def test_a_stage_that_adds_nothing_reuses_the_answer_and_agrees():
    # the mentor ends after 10 tokens: stage 2 has the same prompt as stage 1, its answer is not
    # generated again (as collect records it) and agrees
    intern = StagedIntern({"done": {0: "1", 10: "2"}})
    mentor = ScriptedBackend(script_len={"done": 10}, params=32)
    cascade = Cascade(
        Role(mentor, params=32), Role(intern, params=7), make_policy("agreement"), (10, 20), None, progress=False
    )
    cascade.answer_key = lambda question, text: text.split()[-1]
    (res,) = cascade.run([q("done")])
    assert res.cost.stop_stage == 2 and res.cost.intern_tokens == 3 + 4
    assert [len(c) for c in intern.generate_calls] == [1, 1]


def test_agreement_needs_a_mentor_budget():
    with pytest.raises(ValueError, match="at least one mentor budget"):
        AgreementPolicy().last_stage(1)


def test_agreement_refuses_replicas_before_any_model_loads():
    from tandem_lm_eval.harness.lm import TandemLM

    # the answers are keyed by the tasks' filters, which live in the lm_eval process
    with pytest.raises(SystemExit, match="mode=agreement runs in one replica per process"):
        TandemLM(mode="agreement", data_parallel_size="2")


def test_agreement_replay_on_a_hand_made_table():
    nan = np.nan
    table = StageTable(
        scores=np.zeros((4, 3)) + np.array([[0, 0, 0], [0, 0, 0], [0, 0, 0], [0, nan, 0]]),
        correct=[[0, 1, 1], [0, 0, 1], [1, 1, 0], [0, 0, 1]],
        mentor_tokens=[[0, 10, 20], [0, 10, 20], [0, 10, 10], [0, 10, 20]],
        intern_tokens=[[3, 4, 5], [3, 4, 5], [3, 4, 4], [3, 0, 5]],
        mentor_params=32.0,
        intern_params=7.0,
        tokens=StageTokens(
            prompt=np.full((4, 3), 11.0),
            mentor_prompt=[[0, 5, 5]] * 4,
            mentor_cached=np.zeros((4, 3)),
            mentor_regenerated=np.zeros((4, 3)),
            censored=np.zeros((4, 3), dtype=bool),
            repeat=[[0, 0, 0], [0, 0, 0], [0, 0, 1], [0, 0, 0]],
        ),
    )
    keys = np.array(
        [
            ["1", "2", "2"],  # stages 1 and 2 agree: stop at 2
            ["1", "2", "3"],  # never: the last stage
            ["5", "5", "5"],  # stage 1 agrees with 0; stage 2 repeats stage 1 (not reached)
            ["1", None, "1"],  # stage 1 unusable: stage 2 has no answer before it to agree with
        ],
        dtype=object,
    )
    r = agreement(table, keys)
    assert r.stage.tolist() == [2, 2, 1, 2] and r.early.tolist() == [True, False, True, False]
    assert r.correct.tolist() == [True, True, True, True]
    assert r.mentor_paid.tolist() == [20, 20, 10, 20]
    assert r.intern_tokens.tolist() == [3 + 4 + 5, 3 + 4 + 5, 3 + 4, 3 + 5]  # every answer generated
    assert r.tflops.tolist() == pytest.approx(
        [tflops(32, 7, 20, 12)] * 2 + [tflops(32, 7, 10, 7), tflops(32, 7, 20, 8)]
    )
    assert r.full_pass_tflops[2] == pytest.approx(2e-12 * (32 * (5 + 10) + 7 * (2 * 11 + 7)))
    with pytest.raises(ValueError, match="keys has shape"):
        agreement(table, keys[:, :2])


# --- replay == live on real questions ------------------------------------------------------------------
def live_samples(out, pattern: str) -> list[dict]:
    """A compare run's per-sample file of one live row, by document."""
    (path,) = (out / "live").glob(pattern)
    return sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda s: s["doc_id"])


def assert_rows_agree(replayed: dict, live: dict, rel: float) -> None:
    """A replayed leaderboard row and its live twin: the same accuracy, tokens, costs and censoring."""
    for key in (
        "accuracy",
        "mean_mentor_tokens",
        "mean_intern_tokens",
        "mean_tflops",
        "mean_full_pass_tflops",
    ):
        assert replayed[key] == pytest.approx(live[key], rel=rel), key
    assert replayed["censored"] == live["censored"]


@pytest.mark.slow
def test_agreement_replay_equals_live_on_gsm8k(tmp_path, demo_model_dir):
    """Three GSM8K test questions, the demo intern, the recorded oracle mentor (budgets 16, 200, 400:
    the solution is whole by stage 2): the replayed row (from
    compare's collect) and the live row (lm-eval's evaluator) stop at the same stage with the same
    answer and the same cost, question by question."""
    if not (Path(os.environ.get("TANDEM_DATA_DIR", "")) / "gsm8k" / "test.jsonl").is_file():
        pytest.skip("GSM8K data not found (TANDEM_DATA_DIR)")
    from tandem_lm_eval.calibration.tables import row_table, stage_table
    from tandem_lm_eval.cli.commands import run_subcommand
    from tandem_lm_eval.data.records import load_records
    from tandem_lm_eval.workflows.compare import answer_keys, load_config, task_questions

    oracle = tmp_path / "oracle.jsonl"
    argv = ["oracle-mentor", "--tasks", "tandem_gsm8k", "--solution-field", "answer", "--out", str(oracle)]
    assert run_subcommand(argv) == 0
    config = tmp_path / "compare.toml"
    config.write_text(
        f'''
output = "{tmp_path / "out"}"
tasks = ["tandem_gsm8k"]
limit = 3
max_gen_toks = 48
chunk = 3
model_args = "mentor={oracle},mentor_backend=recorded,mentor_tokenizer={demo_model_dir},mentor_num_params=32e9,intern={demo_model_dir},intern_backend=hf,budgets=[16,200,400],progress=false"

[[rows]]
name = "Agreement"
mode = "agreement"
[[rows]]
name = "Agreement (live)"
mode = "agreement"
live = true
'''
    )
    assert run_subcommand(["compare", str(config)]) == 0
    out = tmp_path / "out"
    board = {r["name"]: r for r in json.loads((out / "leaderboard.json").read_text())["rows"]}
    (records_file,) = (out / "records").glob("tandem_gsm8k-*.jsonl")
    records = load_records([records_file])
    cfg = load_config(str(config))
    questions, source = task_questions(cfg, "tandem_gsm8k")
    table = stage_table(records, lambda r: np.zeros(len(r)), row_table(records, "prompt"))
    replayed = agreement(table, answer_keys(records, questions, source, "tandem_gsm8k"))
    live = live_samples(out, "tandem_gsm8k-agreement-*.jsonl")
    assert [s["doc_id"] for s in live] == [q.doc_id for q in questions]
    # the oracle solutions are shorter than 200 tokens: the mentor has finished by stage 2, so stage 3
    # repeats stage 2 (its answer reused, not generated again) and agrees at the latest there
    assert replayed.early.all(), replayed.stage.tolist()
    for i, s in enumerate(live):
        assert s["stop_stage"] == replayed.stage[i], i
        assert s["answer"] == records[i].stages[replayed.stage[i]].answer, i
        assert s["metric"] == float(replayed.correct[i]), i
        assert (
            s["mentor_tokens"] == replayed.mentor_paid[i] and s["intern_tokens"] == replayed.intern_tokens[i]
        ), i
        assert s["tflops"] == pytest.approx(replayed.tflops[i], rel=1e-12), i
        assert s["full_pass_tflops"] == pytest.approx(replayed.full_pass_tflops[i], rel=1e-12), i
        assert s["censored"] == float(replayed.censored[i]), i
        assert s["full_pass_tflops"] >= s["tflops"]
    assert_rows_agree(board["Agreement"], board["Agreement (live)"], rel=1e-12)
    # every question visited stages 0 and 1 (agreement needs two answers), and paid for both answers
    assert all(
        replayed.intern_tokens[i] >= table.intern_tokens[i, 0] + table.intern_tokens[i, 1] for i in range(3)
    )
