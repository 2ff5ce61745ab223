"""``tandem-lm-eval compare`` end to end on the tiny model: every mode, replayed and live rows, the
leaderboard recomputed from the per-sample records, replay == live (accuracy, tokens, TFLOPs and, on a
ticking clock, latency), and a rerun without model calls."""

import json

import numpy as np
import pytest
from test_e2e_cli import FIXTURE_TASKS
from test_latency import GENERATE_TICK, SCORE_TICK, TickingClock

from tandem_lm_eval.cli.commands import run_subcommand
from tandem_lm_eval.cost.flops import tflops
from tandem_lm_eval.data.records import load_records

TASK = "tandem_test_arith"


def config_head(tiny_model_dir, limit: int = 3) -> str:
    """The shared part of a compare config on the tiny model and the fixture task."""
    return f'''
output = "out"
tasks = ["{TASK}"]
include_path = "{FIXTURE_TASKS}"
limit = {limit}
max_gen_toks = 6
chunk = 2
model_args = "mentor={tiny_model_dir},intern={tiny_model_dir},budgets=[8,16],mentor_num_params=2e9,dtype=float32,progress=false"
'''


def write_config(tmp_path, tiny_model_dir, tiny_classifier_dir) -> str:
    config = tmp_path / "compare.toml"
    config.write_text(
        config_head(tiny_model_dir)
        + f"""

[[rows]]
name = "Intern"
mode = "intern_only"
[[rows]]
name = "Mentor"
mode = "mentor_only"
[[rows]]
name = "Low"
mode = "fixed:low"
[[rows]]
name = "High"
mode = "fixed:2"
[[rows]]
name = "High (live)"
mode = "fixed:2"
live = true
[[rows]]
name = "Forcing"
mode = "budget_forcing:4"
[[rows]]
name = "Tandem"
mode = "tandem"
model_args = "classifier={tiny_classifier_dir}"
[[rows]]
name = "Tandem (live)"
mode = "tandem"
model_args = "classifier={tiny_classifier_dir}"
live = true
[[rows]]
name = "Route"
mode = "route"
model_args = "classifier={tiny_classifier_dir},thresholds=[0.99]"
[[rows]]
name = "Oracle"
mode = "oracle"
"""
    )
    return str(config)


def ticking_hf_backend(monkeypatch) -> TickingClock:
    """Phase times from a clock that advances a fixed amount per request inside the real backend's
    calls (wall time is not reproducible; this makes every share exact)."""
    from tandem_lm_eval.backends.hf import HFBackend

    clock = TickingClock()
    monkeypatch.setattr("tandem_lm_eval.cost.ledger.clock", clock)
    generate, score = HFBackend.generate, HFBackend.score

    def ticking_generate(self, requests):
        out = generate(self, requests)
        clock.tick(len(requests), GENERATE_TICK)
        return out

    def ticking_score(self, prompts):
        out = score(self, prompts)
        clock.tick(len(prompts), SCORE_TICK)
        return out

    monkeypatch.setattr(HFBackend, "generate", ticking_generate)
    monkeypatch.setattr(HFBackend, "score", ticking_score)
    return clock


@pytest.mark.slow
def test_compare_end_to_end(tmp_path, tiny_model_dir, tiny_classifier_dir, monkeypatch):
    config = write_config(tmp_path, tiny_model_dir, tiny_classifier_dir)
    clock = ticking_hf_backend(monkeypatch)
    assert run_subcommand(["compare", config]) == 0
    assert clock.now > 0  # the real backend ran under the ticking clock
    out = tmp_path / "out"
    board = {r["name"]: r for r in json.loads((out / "leaderboard.json").read_text())["rows"]}
    assert list(board) == [
        "Intern",
        "Mentor",
        "Low",
        "High",
        "High (live)",
        "Forcing",
        "Tandem",
        "Tandem (live)",
        "Route",
        "Oracle",
    ]
    assert {r["source"] for r in board.values()} == {"replay", "live"}
    assert board["Mentor"]["source"] == board["Forcing"]["source"] == board["High (live)"]["source"] == "live"

    # replayed rows, recomputed from the collect records (3 questions x 3 stages)
    (records_file,) = (out / "records").glob(f"{TASK}-*.jsonl")
    records = load_records([records_file])
    assert len(records) == 3 and all(len(r.stages) == 3 for r in records)
    mentor_params, intern_params = records[0].mentor.num_params, records[0].intern_num_params

    def expected(stage):
        mentor = [r.stages[stage].mentor_tokens for r in records]
        intern = [r.stages[stage].intern_tokens for r in records]
        acc = np.mean([r.stages[stage].label for r in records])
        cost = np.mean([tflops(mentor_params, intern_params, m, i) for m, i in zip(mentor, intern)])
        return acc, np.mean(mentor), np.mean(intern), cost

    for name, stage in (("Intern", 0), ("Low", 1), ("High", 2)):
        acc, mentor, intern, cost = expected(stage)
        row = board[name]
        assert row["accuracy"] == pytest.approx(acc) and row["mean_mentor_tokens"] == pytest.approx(mentor)
        assert row["mean_intern_tokens"] == pytest.approx(intern) and row["mean_tflops"] == pytest.approx(
            cost
        )
        assert row["mean_length"] == pytest.approx(mentor + intern)
    # route with tau_0 = 0.99 sends every question through the mentor: the same as the last stage
    assert board["Route"]["mean_tflops"] == pytest.approx(board["High"]["mean_tflops"])

    # live rows, recomputed from their per-sample files
    for name, mode in (("Mentor", "mentor_only"), ("Forcing", "budget_forcing_4")):
        (samples_file,) = (out / "live").glob(f"{TASK}-{mode}-*.jsonl")
        samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
        assert len(samples) == 3
        assert board[name]["mean_tflops"] == pytest.approx(np.mean([s["tflops"] for s in samples]))
        assert board[name]["mean_intern_tokens"] == 0  # the mentor answers itself
        # no intern term: 2e-12 * |θL| * L_L
        for s in samples:
            assert s["tflops"] == pytest.approx(2e-12 * 2e9 * s["mentor_tokens"])
    assert board["Forcing"]["mean_mentor_tokens"] <= 4 + 6  # reasoning cut at 4, then at most 6 answer tokens
    assert board["Mentor"]["delta_tflops_vs_mentor_pct"] == pytest.approx(0.0)

    # replay and live agree on the same questions: same accuracy, tokens, cost and latency
    for replayed, live in (("High", "High (live)"), ("Tandem", "Tandem (live)")):
        for key in ("accuracy", "mean_mentor_tokens", "mean_intern_tokens", "mean_tflops", "mean_latency_s"):
            assert board[replayed][key] == pytest.approx(board[live][key], rel=1e-9), (replayed, key)
    assert board["Tandem"]["mean_judgment_s"] == pytest.approx(board["Tandem (live)"]["mean_judgment_s"])

    # every row has a latency per question and a speed-up against the mentor-only row
    mentor_latency = board["Mentor"]["mean_latency_s"]
    assert mentor_latency > 0 and board["Mentor"]["speedup_vs_mentor"] == 1.0
    for name, row in board.items():
        assert row["mean_latency_s"] > 0, name
        assert row["speedup_vs_mentor"] == pytest.approx(mentor_latency / row["mean_latency_s"]), name
    # on the ticking clock each phase a question ran is one tick: intern only = one answer; the
    # mentor alone = one generation call; fixed:2 = two mentor stages and an answer, no judgment
    assert board["Intern"]["mean_latency_s"] == GENERATE_TICK
    assert board["Mentor"]["mean_latency_s"] == GENERATE_TICK
    assert board["High"]["mean_latency_s"] <= 3 * GENERATE_TICK and board["High"]["mean_judgment_s"] is None
    assert board["Tandem"]["judgment_share"] == pytest.approx(
        board["Tandem"]["mean_judgment_s"] / board["Tandem"]["mean_latency_s"]
    )
    # the records carry each stage's own seconds
    assert all(
        set(s.seconds) == {"mentor_generate", "intern_score", "classify", "intern_generate"}
        for r in records
        for s in r.stages
    )

    # intervals, paired comparisons, the frontier and the audit (issue 20)
    data = json.loads((out / "leaderboard.json").read_text())
    for name, row in board.items():
        for key in ("accuracy", "mean_tflops"):
            lo, hi = row[f"{key}_ci95"]
            assert lo - 1e-12 <= row[key] <= hi + 1e-12, (name, key)
    pairs = {(c["row"], c["vs"]) for c in data["comparisons"]}
    assert ("Intern", "Tandem") in pairs and ("Intern", "High") not in pairs  # fixed:2 is not named high
    # a replayed row and its live twin answer the same questions the same way: told apart by nothing
    twin = next(c for c in data["comparisons"] if c["row"] == "Tandem (live)" and c["vs"] == "Tandem")
    assert twin["delta_accuracy_ci95"] == [0.0, 0.0] and twin["verdict"] == "cannot be told apart"
    assert set(data["frontier"]) == {TASK} and 0.0 <= data["frontier"][TASK]["aiq"] <= 1.0
    audit = {a["row"]: a for a in data["audit"]}
    # the tiny classifier records no training questions: nothing to check, and the audit says so
    assert audit["Tandem"]["training_questions"] == 0 and audit["Tandem"]["check"].startswith("not checked")
    assert audit["High"]["check"] == "not applicable"
    assert "given in the config" in audit["Route"]["chosen_on"]

    # the plot's points are the table's
    drawn = json.loads((out / f"{TASK}.points.json").read_text())
    assert [(p["name"], p["mean_tflops"]) for p in drawn["points"]] == [
        (name, row["mean_tflops"]) for name, row in board.items()
    ]
    assert (out / f"{TASK}.png").stat().st_size > 0 and (out / "leaderboard.csv").is_file()
    md = (out / "leaderboard.md").read_text()

    # nothing changed: a second run calls no model
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded on a rerun with nothing changed")

    monkeypatch.setattr("tandem_lm_eval.workflows.collect.make_explorer", no_model)
    monkeypatch.setattr("tandem_lm_eval.model.TandemLM", no_model)
    assert run_subcommand(["compare", config]) == 0
    assert (out / "leaderboard.md").read_text() == md


def grouped_router(folder, tau0_by_group: dict, fallback_tau0: float):
    """A per-group router for the tiny intern, grouped by the document's answer (a document field, as
    MATH's per-subject classifiers are), each group with its own τ_0."""
    from conftest import TINY_NAME

    from tandem_lm_eval.judgment.features import NUM_FEATURES
    from tandem_lm_eval.judgment.grouped import GroupedClassifier
    from tandem_lm_eval.judgment.loading import make_classifier

    def member(tau0, seed):
        rng = np.random.default_rng(seed)
        X = np.abs(rng.normal(2.0, 1.0, (60, NUM_FEATURES)))
        clf = make_classifier("logistic").fit(X, (X[:, 7] > 2.0).astype(int))
        card = clf.card
        card.budgets, card.intern_model, card.policy = [8, 16], TINY_NAME, "route"
        card.thresholds = [tau0, 1.0, 1.0]
        return clf

    members = {group: member(tau0, seed) for seed, (group, tau0) in enumerate(tau0_by_group.items())}
    return GroupedClassifier(members, member(fallback_tau0, 9), "doc:answer").save(folder)


@pytest.mark.slow
def test_per_group_router_replays_as_it_runs(tmp_path, tiny_model_dir):
    # documents 0 and 1 (answers 5 and 17) have τ_0 = 0: the intern answers alone; document 2 (answer
    # 8) falls back to τ_0 = 1: the mentor writes every stage. One τ_0 for all, or groups by task, differ.
    router = grouped_router(tmp_path / "router", {"5": 0.0, "17": 0.0}, fallback_tau0=1.0)
    config = tmp_path / "compare.toml"
    config.write_text(
        config_head(tiny_model_dir)
        + f"""
[[rows]]
name = "Route"
mode = "route"
model_args = "classifier={router}"
[[rows]]
name = "Route (live)"
mode = "route"
model_args = "classifier={router}"
live = true
"""
    )
    assert run_subcommand(["compare", str(config)]) == 0
    board = {r["name"]: r for r in json.loads((tmp_path / "out" / "leaderboard.json").read_text())["rows"]}
    (samples_file,) = (tmp_path / "out" / "live").glob(f"{TASK}-route-*.jsonl")
    live = sorted(
        (json.loads(line) for line in samples_file.read_text().splitlines()), key=lambda s: s["doc_id"]
    )
    assert [s["mentor_tokens"] > 0 for s in live] == [False, False, True]  # the groups' own τ_0 at run time
    for key in ("accuracy", "mean_mentor_tokens", "mean_intern_tokens", "mean_tflops"):
        assert board["Route"][key] == pytest.approx(board["Route (live)"][key], rel=1e-9), key


@pytest.mark.slow
def test_compare_keeps_what_it_generates(tmp_path, tiny_model_dir, monkeypatch, capsys):
    """Every model of a comparison writes into <output>/store.sqlite: a judging step that fails after
    the collect loses nothing, and the rerun after the fix computes nothing twice."""
    from tandem_lm_eval.harness import lm as lm_module
    from tandem_lm_eval.harness.task_questions import TaskSource
    from tandem_lm_eval.workflows import collect as collect_module

    config = tmp_path / "compare.toml"
    config.write_text(
        config_head(tiny_model_dir, limit=2)
        + '[[rows]]\nname = "Intern"\nmode = "intern_only"\n[[rows]]\nname = "Mentor"\nmode = "mentor_only"\n'
    )
    explorers, lms = [], []
    real_make, real_judge, real_lm = collect_module.make_explorer, TaskSource.judge, lm_module.TandemLM

    def spy(model_args, **kwargs):
        explorers.append(real_make(model_args, **kwargs))
        return explorers[-1]

    class SpiedLM(real_lm):
        def __init__(self, **model_args):
            super().__init__(**model_args)
            lms.append(self)

    def broken(self, items, answers):  # fault injection: the task's filter raises
        raise ValueError("bad regex in filter_list")

    monkeypatch.setattr(collect_module, "make_explorer", spy)
    monkeypatch.setattr(lm_module, "TandemLM", SpiedLM)
    monkeypatch.setattr(TaskSource, "judge", broken)
    assert run_subcommand(["compare", str(config)]) == 2
    store = tmp_path / "out" / "store.sqlite"
    assert f"kept in the run store {store}" in capsys.readouterr().err
    first = explorers[0].cascade.intern.counts.computed
    assert first > 0 and store.is_file()

    monkeypatch.setattr(TaskSource, "judge", real_judge)  # the fix
    assert run_subcommand(["compare", str(config)]) == 0
    again = explorers[1].cascade
    assert again.mentor.counts.computed == 0 and again.intern.counts.computed == 0
    assert again.intern.counts.served == first
    (live,) = lms  # the live row writes into the same store
    assert live.store is not None and live.store.path == store
