"""Bad inputs, one row each: every one ends in one clear message, never a bare traceback or a silently
wrong number. The table in docs/bad-inputs.md lists the same rows (ids match).

Entry points as a user meets them: ``TandemLM(**model_args)`` is what ``lm_eval --model tandem
--model_args ...`` builds (a SystemExit with a "tandem: ..." line); the ``tandem-lm-eval`` subcommands
exit 2 with one "tandem-lm-eval <command>: ..." line on stderr.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tandem_lm_eval.cli.commands import run_subcommand
from tandem_lm_eval.data.records import MentorOutput, QuestionRecord, write_records

HERE = Path(__file__).parent
FIXTURE_TASKS = HERE / "fixtures" / "tasks"


def lm_error(**model_args) -> str:
    """The line `lm_eval --model tandem` ends with for these model_args."""
    from tandem_lm_eval.harness.lm import TandemLM

    with pytest.raises(SystemExit) as info:
        TandemLM(**model_args)
    message = str(info.value)
    assert message.startswith("tandem: "), message
    assert "Traceback" not in message and "\n" not in message.strip(), message
    return message


def command_error(capsys, *argv: str) -> str:
    """The line a `tandem-lm-eval` subcommand ends with (exit status 2)."""
    assert run_subcommand(list(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith(f"tandem-lm-eval {argv[0]}: "), err
    assert not any(line.startswith("Traceback") for line in err), err
    return err[-1]


@pytest.fixture
def tiny(tiny_model_dir):
    return {
        "mentor": str(tiny_model_dir),
        "intern": str(tiny_model_dir),
        "dtype": "float32",
        "progress": "false",
    }


# --- model_args -----------------------------------------------------------------------------------------
MODEL_ARGS_ROWS = [
    ("unknown-key", {"mentr": "x"}, r"unknown model_args key 'mentr'; valid keys: .*intern"),
    ("one-role-only", {"mentor": "/m"}, r"names one role but not 'intern'"),
    ("budgets-decreasing", {"budgets": "[500,100]"}, r"budgets must be increasing"),
    ("budgets-not-numbers", {"budgets": "[a,b]"}, r"budgets"),
    ("thresholds-count", {"thresholds": "[0.5,0.5]"}, r"thresholds has 2 values; 4 are needed"),
    ("threshold-out-of-range", {"thresholds": "[1.5,0.5,0.5,0.5]"}, r"thresholds"),
    ("unknown-mode", {"mode": "oracle"}, r"unknown mode 'oracle'"),
    ("bad-fixed-stage", {"mode": "fixed:x"}, r"fixed:<stage number>"),
    ("fixed-beyond-budgets", {"mode": "fixed:5"}, r"fixed:5 needs 5 budgets, only 3 given"),
    ("unknown-backend", {"mentor_backend": "tpu"}, r"mentor_backend='tpu' is not a backend"),
    (
        "unknown-backend-option",
        {"intern_backend": "hf", "intern_foo": "1"},
        r"unknown model_args key 'intern_foo'",
    ),
    ("bad-num-params", {"mentor_num_params": "big"}, r"mentor_num_params"),
    ("half-a-price", {"mentor_price_in": "1"}, r"give both mentor_price_in and mentor_price_out"),
    ("recorded-intern", {"intern_backend": "recorded"}, r"can only be the mentor"),
    ("bad-bool", {"progress": "maybe"}, r"progress"),
    ("bad-max-gen-toks", {"max_gen_toks": "0"}, r"max_gen_toks"),
    ("chunk-size-zero", {"chunk_size": "0"}, r"chunk_size must be >= 1"),
    # accepted and never applied until 0.1: now refused, naming the per-role option that does exist
    (
        "chat-template",
        {"chat_template": "false"},
        r"chat_template is not a tandem model_arg.*intern_chat_template",
    ),
    # paths: a folder where a file is written used to fail after the whole run's work was done
    ("trace-path-is-a-folder", {"trace_path": str(HERE)}, r"trace_path .* is a folder: give a file path"),
    (
        "trace-path-under-a-file",
        {"trace_path": str(HERE / "conftest.py" / "t.jsonl")},
        r"trace_path .*conftest.py is a file, so the file cannot be made there",
    ),
    ("store-is-a-folder", {"store": str(HERE)}, r"store .* is a folder: give a file path"),
    ("data-parallel-size-zero", {"data_parallel_size": "0"}, r"data_parallel_size must be >= 1, got '0'"),
    (
        "data-parallel-size-not-a-number",
        {"data_parallel_size": "two"},
        r"data_parallel_size must be an integer",
    ),
    (
        "role-data-parallel-size",
        {"intern_backend": "hf", "intern_data_parallel_size": "2"},
        r"intern_data_parallel_size=2: replicas are of the whole cascade.*give data_parallel_size=2",
    ),
]


# GPUs a replica cannot get: refused before any worker starts or model loads
GPU_ROWS = [
    (
        "more-replicas-than-gpus",
        "0,1",
        {"data_parallel_size": "4"},
        r"data_parallel_size=4 and 2 visible GPUs",
    ),
    ("gpus-do-not-split", "0,1,2", {"data_parallel_size": "2"}, r"a divisor of 3"),
    (
        "tensor-parallel-wider-than-a-replica",
        "0,1,2,3",
        {"data_parallel_size": "4", "mentor_backend": "vllm", "mentor_tensor_parallel_size": "2"},
        r"gives each replica 1, but the mentor needs 2 .*give data_parallel_size=2",
    ),
]


@pytest.mark.parametrize("row, gpus, extra, pattern", GPU_ROWS, ids=[r[0] for r in GPU_ROWS])
def test_replicas_the_gpus_cannot_hold_are_refused_before_any_model_loads(
    row, gpus, extra, pattern, monkeypatch
):
    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded (or a replica started) before the GPUs were checked")

    monkeypatch.setattr("tandem_lm_eval.harness.assembly.build_backends", no_load)
    monkeypatch.setattr("tandem_lm_eval.harness.lm.ReplicaPool", no_load)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", gpus)
    # a baseline mode: the plan (made first) would otherwise refuse the missing classifier before this
    models = {"mentor": "/nonexistent/m", "intern": "/nonexistent/i", "mode": "fixed:1"}
    assert re.search(pattern, lm_error(**models, **extra)), row


@pytest.mark.parametrize("row, extra, pattern", MODEL_ARGS_ROWS, ids=[r[0] for r in MODEL_ARGS_ROWS])
def test_model_args_are_refused_before_any_model_loads(row, extra, pattern, monkeypatch):
    # any model load would fail loudly here: the check must come first
    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded before model_args were checked")

    monkeypatch.setattr("tandem_lm_eval.harness.assembly.build_backends", no_load)
    monkeypatch.setattr("tandem_lm_eval.harness.lm.ReplicaPool", no_load)  # no replica starts either
    args = {"mentor": "/nonexistent/m", "intern": "/nonexistent/i", **extra}
    if row == "one-role-only":
        args.pop("intern")
    assert re.search(pattern, lm_error(**args)), row


# --- models and classifiers -----------------------------------------------------------------------------
def test_model_path_that_does_not_exist():
    assert "model path '/no/such/model' does not exist" in lm_error(
        mentor="/no/such/model", intern="/no/such/model", mode="intern_only"
    )


def test_model_folder_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    folder = str(tmp_path / "empty")
    assert "has no config.json" in lm_error(mentor=folder, intern=folder, mode="intern_only")


def test_truncated_safetensors_model_file(tmp_path, tiny_model_dir):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert "could not load" in lm_error(
        mentor=str(broken), intern=str(broken), dtype="float32", mode="intern_only"
    )


def test_classifier_name_not_found(tiny):
    assert "classifier 'nope' not found" in lm_error(**tiny, classifier="nope")


def test_classifier_folder_without_its_json(tiny, tmp_path):
    assert "not a classifier folder" in lm_error(**tiny, classifier=str(tmp_path))


def test_classifier_json_is_not_json(tiny, tmp_path):
    (tmp_path / "classifier.json").write_text("{nope")
    assert "invalid JSON" in lm_error(**tiny, classifier=str(tmp_path))


def test_v1_classifier_must_be_retrained(tiny, tmp_path):
    (tmp_path / "classifier.json").write_text(json.dumps({"feature_set": "tandem-v1", "format_version": 1}))
    assert "retrain it" in lm_error(**tiny, classifier=str(tmp_path))


def test_truncated_classifier_weights(tiny, tmp_path, tiny_classifier_dir):
    import shutil

    broken = tmp_path / "clf"
    shutil.copytree(tiny_classifier_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert "malformed classifier" in lm_error(**tiny, classifier=str(broken))


def test_classifier_for_another_intern(tmp_path, tiny_classifier_dir, tiny_model_dir):
    import shutil

    other = tmp_path / "other-intern"
    shutil.copytree(tiny_model_dir, other)
    message = lm_error(
        mentor=str(other), intern=str(other), dtype="float32", classifier=str(tiny_classifier_dir)
    )
    assert "trained for intern 'tiny-llama'" in message and "classifier_strict=false" in message


def test_classifier_for_another_entropy_method(tiny, tmp_path, tiny_classifier_dir):
    import shutil

    other = tmp_path / "topk"
    shutil.copytree(tiny_classifier_dir, other)
    meta = json.loads((other / "classifier.json").read_text())
    meta["entropy_method"] = "topk"
    (other / "classifier.json").write_text(json.dumps(meta))
    assert "used 'topk' entropy" in lm_error(**tiny, classifier=str(other))


def test_classifier_thresholds_for_other_stages(tiny, tiny_classifier_dir):
    assert "3 thresholds but budgets [100, 500, 1000] make 4 stages" in lm_error(
        **tiny, classifier=str(tiny_classifier_dir), budgets="[100,500,1000]"
    )


# --- recorded mentors and record files ------------------------------------------------------------------
def test_recorded_mentor_file_missing(tiny):
    message = lm_error(
        **{
            **tiny,
            "mentor": "/no/file.jsonl",
            "mentor_backend": "recorded",
            "mentor_tokenizer": "demo",
            "mode": "fixed:1",
        }
    )
    assert "recorded mentor file '/no/file.jsonl' does not exist" in message


def test_recorded_mentor_without_tokenizer(tiny, tmp_path):
    path = tmp_path / "m.jsonl"
    write_records(path, [QuestionRecord("h", "Q", [], mentor=MentorOutput("x"))])
    message = lm_error(
        **{
            **tiny,
            "mentor": str(path),
            "mentor_backend": "recorded",
            "mentor_num_params": "1e9",
            "mode": "fixed:1",
        }
    )
    assert "give mentor_tokenizer=" in message


def test_record_file_with_a_bad_line_in_the_middle(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    write_records(path, [QuestionRecord("a", "Q", []), QuestionRecord("b", "Q", [])])
    lines = path.read_text().split("\n")
    path.write_text("\n".join([lines[0], "{torn", lines[1], ""]))
    assert f"{path}:2: not a record" in command_error(capsys, "analyze", "--records", str(path))


def test_record_file_not_utf8(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"format": "tandem-record/1", "question": "\xff\xfe"}\n')
    assert "not UTF-8" in command_error(capsys, "analyze", "--records", str(path))


def test_labelled_records_need_a_classifier(tmp_path, capsys):
    from tandem_lm_eval.data.records import StageEntry

    path = tmp_path / "r.jsonl"
    write_records(path, [QuestionRecord("a", "Q", [StageEntry(0, 0, label=1)])])
    assert "need --classifier" in command_error(capsys, "analyze", "--records", str(path))


def test_fit_on_test_split_records(tmp_path, capsys):
    from tandem_lm_eval.data.records import StageEntry

    path = tmp_path / "r.jsonl"
    write_records(path, [QuestionRecord("a", "Q", [StageEntry(0, 0, label=1)], task="t", split="test")])
    message = command_error(capsys, "fit", "--records", str(path), "--out", str(tmp_path / "c"))
    assert "come from a test split" in message


def test_fit_on_an_empty_records_file(tmp_path, capsys, no_model):
    path = tmp_path / "r.jsonl"
    path.write_text("")
    message = command_error(capsys, "fit", "--records", str(path), "--out", str(tmp_path / "c"))
    assert f"--records {path}: no records to fit on" in message


def test_analyze_with_a_classifier_made_for_another_intern(tmp_path, capsys, tiny_classifier_dir, no_model):
    from tandem_lm_eval.data.records import StageEntry

    path = tmp_path / "r.jsonl"
    stages = [StageEntry(0, 0, label=1)]
    write_records(path, [QuestionRecord("a", "Q", stages, intern_model="Qwen3-1.7B", entropy_method="exact")])
    message = command_error(
        capsys, "analyze", "--records", str(path), "--classifier", str(tiny_classifier_dir)
    )
    assert "it was trained for intern 'tiny-llama', this run's intern is 'qwen3-1.7b'" in message
    assert "--no-classifier-strict" in message


def test_classifier_folder_copied_without_its_training_questions(tmp_path, capsys, no_model):
    import shutil

    copy = tmp_path / "copied"
    shipped = HERE.parent / "classifiers" / "smollm2-135m-gsm8k"
    shutil.copytree(shipped, copy, ignore=shutil.ignore_patterns("training_questions.txt"))
    path = tmp_path / "r.jsonl"
    write_records(path, [QuestionRecord("a", "Q", [])])
    message = command_error(capsys, "analyze", "--records", str(path), "--classifier", str(copy))
    assert f"classifier {copy}: no training_questions.txt, though it was fit on 480 questions" in message


def test_hidden_side_file_of_other_prompts(tmp_path, capsys, no_model):
    import numpy as np

    from tandem_lm_eval.data.hidden_file import HiddenFile, HiddenRow, hidden_path_for
    from tandem_lm_eval.data.records import StageEntry

    path = tmp_path / "r.jsonl"
    stages = [StageEntry(0, 0, label=1, prompt_tokens=12), StageEntry(1, 8, label=0, prompt_tokens=20)]
    write_records(path, [QuestionRecord("a", "Q", stages, task="t", split="train")])
    with HiddenFile(hidden_path_for(path), create=True) as side:  # an earlier collect's vectors
        side.set_meta(intern_model="tiny-llama", num_layers=2, hidden_size=4)
        side.put_many(HiddenRow("a", t, "layer2@prompt_end", n, np.ones(4)) for t, n in ((0, 12), (1, 23)))
    argv = ["fit", "--records", str(path), "--features", "hidden", "--hidden-layer", "last"]
    message = command_error(capsys, *argv, "--out", str(tmp_path / "c"))
    assert (
        f"{hidden_path_for(path)}: 1 layer2@prompt_end vectors were made from prompts of another length"
        in message
    )


# --- tasks and data -------------------------------------------------------------------------------------
def test_unknown_task_in_collect(capsys):
    assert "could not load tasks" in command_error(
        capsys, "oracle-mentor", "--tasks", "no_such_task", "--solution-field", "x", "--out", "/tmp/x.jsonl"
    )


def test_missing_dataset_file(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TANDEM_DATA_DIR", str(tmp_path))
    message = command_error(
        capsys,
        "oracle-mentor",
        "--tasks",
        "tandem_gsm8k",
        "--solution-field",
        "answer",
        "--out",
        str(tmp_path / "o.jsonl"),
    )
    assert "gsm8k" in message.lower()


def test_code_task_without_confirmation(capsys, shared_data):
    message = command_error(
        capsys,
        "oracle-mentor",
        "--tasks",
        "tandem_humaneval",
        "--solution-field",
        "x",
        "--out",
        "/tmp/x.jsonl",
    )
    assert "--confirm_run_unsafe_code" in message


def test_empty_question(tiny):
    from tandem_lm_eval.harness.lm import TandemLM

    lm = TandemLM(**tiny, mode="intern_only")

    class Req:
        args = ("   ", {"until": []})
        task_name, doc_id = "t", 0

    with pytest.raises(SystemExit, match="empty prompt"):
        lm.generate_until([Req()])


def test_store_that_is_not_a_store(tiny, tmp_path):
    path = tmp_path / "store.sqlite"
    path.write_bytes(bytes(range(256)) * 20)
    message = lm_error(**tiny, mode="intern_only", store=str(path))
    assert "is not a usable tandem-lm-eval run store" in message and str(path) in message


def test_classifier_problems_are_found_before_any_model_loads(tmp_path, monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded before the classifier was checked")

    monkeypatch.setattr("tandem_lm_eval.harness.assembly.build_backends", no_load)
    models = {"mentor": "/nonexistent/m", "intern": "/nonexistent/i"}
    assert "classifier 'nope' not found" in lm_error(**models, classifier="nope")
    (tmp_path / "classifier.json").write_text(json.dumps({"feature_set": "tandem-v1", "format_version": 1}))
    assert "retrain it" in lm_error(**models, classifier=str(tmp_path))


# --- every path and count a subcommand takes, before it does any work ------------------------------------
@pytest.fixture
def no_model(monkeypatch):
    """Any model load fails the test: the checks must come first."""

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr("tandem_lm_eval.workflows.collect.make_explorer", no_load)
    monkeypatch.setattr("tandem_lm_eval.harness.assembly.build_backends", no_load)
    monkeypatch.setattr("tandem_lm_eval.harness.lm.TandemLM", no_load)


COLLECT = ["collect", "--tasks", "tandem_test_arith", "--include_path", str(FIXTURE_TASKS)]
MODELS = ["--model_args", "mentor=/nonexistent/m,intern=/nonexistent/i"]


def test_collect_out_is_a_folder(capsys, tmp_path, no_model):
    message = command_error(capsys, *COLLECT, *MODELS, "--out", str(tmp_path))
    assert f"--out {tmp_path} is a folder: give a file path" in message


def test_collect_chunk_zero(capsys, tmp_path, no_model):
    message = command_error(capsys, *COLLECT, *MODELS, "--out", str(tmp_path / "r.jsonl"), "--chunk", "0")
    assert "--chunk must be >= 1, got 0" in message


def test_collect_store_is_a_folder(capsys, tmp_path, no_model):
    models = ["--model_args", f"mentor=/nonexistent/m,intern=/nonexistent/i,store={tmp_path}"]
    message = command_error(capsys, *COLLECT, *models, "--out", str(tmp_path / "r.jsonl"))
    assert "store" in message and "is a folder" in message


def test_fit_out_is_a_file(capsys, tmp_path):
    records, out = tmp_path / "r.jsonl", tmp_path / "clf"
    write_records(records, [QuestionRecord("a", "Q", [])])
    out.write_text("not a folder")
    message = command_error(capsys, "fit", "--records", str(records), "--out", str(out))
    assert f"--out {out} is a file: give a folder path" in message


def test_records_that_are_a_folder(capsys, tmp_path):
    message = command_error(capsys, "analyze", "--records", str(tmp_path))
    assert f"--records {tmp_path} is a folder: give the file inside it" in message


def test_store_export_out_is_a_folder(capsys, tmp_path):
    from tandem_lm_eval.store.run_store import RunStore

    with RunStore(tmp_path / "s.sqlite"):
        pass
    message = command_error(
        capsys,
        "store",
        "export",
        "--store",
        str(tmp_path / "s.sqlite"),
        "--role",
        "mentor",
        "--out",
        str(tmp_path),
    )
    assert "is a folder: give a file path" in message


# --- compare: the whole config before any model loads ----------------------------------------------------
def compare_error(capsys, tmp_path, rows: str, shared: str = "", **top) -> str:
    config = tmp_path / "compare.toml"
    head = {
        "output": f'"{tmp_path / "out"}"',
        "tasks": '["tandem_test_arith"]',
        "include_path": f'"{FIXTURE_TASKS}"',
        "limit": "2",
        **top,
    }
    config.write_text(
        "\n".join(f"{k} = {v}" for k, v in head.items())
        + f'\nmodel_args = "mentor=/nonexistent/m,intern=/nonexistent/i{shared}"\n'
        + rows
    )
    return command_error(capsys, "compare", str(config))


def test_compare_classifier_for_other_budgets(capsys, tmp_path, no_model, tiny_classifier_dir):
    rows = f'[[rows]]\nname = "Tandem"\nmode = "tandem"\nmodel_args = "classifier={tiny_classifier_dir}"\n'
    message = compare_error(capsys, tmp_path, rows)
    assert "rows[0] 'Tandem': classifier" in message
    assert "was made for budgets [8, 16], the collect runs [100, 500, 1000]" in message
    assert "give budgets=[8, 16] in the shared model_args" in message


def test_compare_replayed_row_with_its_own_budgets(capsys, tmp_path, no_model):
    rows = '[[rows]]\nname = "Low"\nmode = "fixed:1"\nmodel_args = "budgets=[4,8]"\n'
    message = compare_error(capsys, tmp_path, rows)
    assert "rows[0] 'Low' is replayed from the shared collect" in message and "live = true" in message


def test_compare_row_model_args_checked_as_tandem_lm_does(capsys, tmp_path, no_model):
    rows = '[[rows]]\nname = "Mentor"\nmode = "mentor_only"\nmodel_args = "mentr=x"\n'
    assert "rows[0] 'Mentor': unknown model_args key 'mentr'" in compare_error(capsys, tmp_path, rows)
    rows = '[[rows]]\nname = "Tandem"\nmode = "tandem"\nlive = true\nmodel_args = "classifier=nope"\n'
    assert "rows[0] 'Tandem': classifier 'nope' not found" in compare_error(capsys, tmp_path, rows)


def test_compare_output_is_a_file(capsys, tmp_path, no_model):
    (tmp_path / "out").write_text("a file")
    rows = '[[rows]]\nname = "Intern"\nmode = "intern_only"\n'
    assert f"output {tmp_path / 'out'} is a file: give a folder path" in compare_error(capsys, tmp_path, rows)


def test_compare_without_matplotlib_says_so_before_any_work(capsys, tmp_path, no_model, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a)
    )
    rows = '[[rows]]\nname = "Intern"\nmode = "intern_only"\n'
    message = compare_error(capsys, tmp_path, rows)
    assert "matplotlib, which is not installed: pip install 'tandem-lm-eval[plot]'" in message
    assert not (tmp_path / "out").exists()  # no work was done


def test_compare_tandem_row_on_its_classifiers_training_questions(
    capsys, tmp_path, no_model, tiny_classifier_dir
):
    import shutil

    from tandem_lm_eval.harness.task_questions import load_task_questions

    questions, _ = load_task_questions(
        ["tandem_test_arith"], include_path=str(FIXTURE_TASKS), limit=2, sampling="first"
    )
    trained = tmp_path / "clf"
    shutil.copytree(tiny_classifier_dir, trained)
    (trained / "training_questions.txt").write_text(questions[1].question.key + "\n")
    rows = f'[[rows]]\nname = "Tandem"\nmode = "tandem"\nmodel_args = "classifier={trained}"\n'
    message = compare_error(capsys, tmp_path, rows, shared=",budgets=[8,16]")
    assert (
        "row 'Tandem': 1 of 2 questions of tandem_test_arith are among its classifier's training" in message
    )


def test_collect_metric_or_filter_the_task_does_not_have(capsys, tmp_path, no_model):
    out = ["--out", str(tmp_path / "r.jsonl")]
    message = command_error(capsys, *COLLECT, *MODELS, *out, "--metric", "nope")
    assert "task 'tandem_test_arith' has no metric 'nope'; it lists ['exact_match']" in message
    message = command_error(capsys, *COLLECT, *MODELS, *out, "--filter", "nope")
    assert "task 'tandem_test_arith' has no filter 'nope'" in message


def test_compare_config_numbers_and_switches(capsys, tmp_path, no_model):
    rows = '[[rows]]\nname = "Intern"\nmode = "intern_only"\n'
    # chunk = 0 collected nothing and ended in a KeyError after the run
    assert "chunk must be >= 1, got 0" in compare_error(capsys, tmp_path, rows, chunk="0")
    assert "limit must be" in compare_error(capsys, tmp_path, rows, limit='"all"')
    message = compare_error(capsys, tmp_path, rows, confirm_run_unsafe_code='"maybe"')
    assert "confirm_run_unsafe_code must be true or false" in message


def test_collect_and_a_replayed_compare_refuse_replicas(capsys, tmp_path, no_model):
    """collect runs its models in its own process: data_parallel_size there is refused, not ignored."""
    args = ["--model_args", "mentor=/nonexistent/m,intern=/nonexistent/i,data_parallel_size=2"]
    message = command_error(capsys, *COLLECT, *args, "--out", str(tmp_path / "r.jsonl"))
    assert "data_parallel_size=2: collect runs its models in this process" in message
    rows = '[[rows]]\nname = "Intern"\nmode = "intern_only"\n'
    message = compare_error(capsys, tmp_path, rows, shared=",data_parallel_size=2")
    assert "model_args: data_parallel_size=2: collect runs its models in this process" in message


# --- the run plan's checks (harness/plan.py CHECKS): one test per kind, each a row of docs/bad-inputs.md ---
PLAN_CASES = {}


def plan_case(kind: str):
    def register(fn):
        PLAN_CASES[kind] = fn
        return fn

    return register


@pytest.fixture
def model_loads(monkeypatch):
    """Every model load, through the one factory (harness/assembly.py is its only caller): a load fails
    the test, so a refusal the plan makes is proven to come before any model loads."""
    loads: list[tuple] = []

    def spy(*args, **kwargs):
        loads.append(args)
        raise AssertionError(f"a model was loaded ({args}) before the plan refused the input")

    monkeypatch.setattr("tandem_lm_eval.harness.assembly.make_backend", spy)
    return loads


NO_MODELS = {"mentor": "/nonexistent/m", "intern": "/nonexistent/i"}


def plan_refusal(kind: str, **model_args) -> Exception:
    """The error the plan raises for these model_args: tagged with ``kind``, one line, and the same line
    `lm_eval --model tandem` ends with."""
    from tandem_lm_eval.harness.plan import plan_run

    args = {**NO_MODELS, **model_args}
    with pytest.raises(Exception) as info:
        plan_run(args)
    assert getattr(info.value, "check", None) == kind, (kind, info.value)
    assert "\n" not in str(info.value)
    assert str(info.value) in lm_error(**args)
    return info.value


@plan_case("model-args")
def case_model_args(tmp_path, capsys):
    assert "unknown model_args key 'mentr'" in str(plan_refusal("model-args", mentr="x"))


@plan_case("model-args-string")
def case_model_args_string(tmp_path, capsys, monkeypatch):
    """lm_eval.simple_evaluate(model="tandem", model_args="budgets=[8,16,32]") splits the string on every
    comma; the model splits it as the command line does: accepted, and right."""
    import lm_eval.api.registry

    import tandem_lm_eval.harness.lm as lm_module

    made = []
    real = lm_module.plan_run
    monkeypatch.setattr(lm_module, "plan_run", lambda args: made.append(real(args)) or made[-1])
    monkeypatch.setattr(lm_module, "LocalReplica", lambda plan: (_ for _ in ()).throw(SystemExit("stop")))
    cls = lm_eval.api.registry.get_model("tandem")
    with pytest.raises(SystemExit, match="stop"):
        cls.create_from_arg_string(
            "mentor=/nonexistent/m,intern=/nonexistent/i,budgets=[8,16,32],mode=fixed:2"
        )
    assert made[0].budgets == (8, 16, 32) and made[0].mode == "fixed:2"
    with pytest.raises(SystemExit, match="'budgets' is not key=value"):
        cls.create_from_arg_string("mentor=/m,intern=/i,budgets")


@plan_case("mode-options")
def case_mode_options(tmp_path, capsys, caplog):
    from tandem_lm_eval.harness.plan import plan_run

    message = str(plan_refusal("mode-options", budget_forcing_close="x", mode="fixed:1"))
    assert "budget_forcing_close applies to mode=budget_forcing:<B> only (mode=fixed:1)" in message
    # the classifier's options given to a mode that reads none: a warning, and not in the plan
    plan = plan_run({**NO_MODELS, "mode": "fixed:1", "thresholds": "[.5,.5,.5,.5]", "classifier": "x"})
    assert plan.unread_options == ("classifier", "thresholds") and plan.thresholds is None
    assert plan.classifier is None and plan.public_dict()["thresholds"] is None
    assert "reads no classifier: classifier, thresholds ignored" in caplog.text


@plan_case("classifier")
def case_classifier(tmp_path, capsys):
    assert "classifier 'nope' not found" in str(plan_refusal("classifier", classifier="nope"))


@plan_case("classifier-stages")
def case_classifier_stages(tmp_path, capsys, tiny_classifier_dir):
    message = str(
        plan_refusal("classifier-stages", classifier=str(tiny_classifier_dir), budgets="[100,500,1000]")
    )
    assert f"classifier card {tiny_classifier_dir / 'classifier.json'} has 3 thresholds" in message


@plan_case("recorded-mentor")
def case_recorded_mentor(tmp_path, capsys):
    args = {"mentor_backend": "recorded", "mode": "fixed:1"}
    message = str(plan_refusal("recorded-mentor", **{**args, "mentor": "/no/file.jsonl"}))
    assert "recorded mentor file '/no/file.jsonl' does not exist" in message
    path = tmp_path / "m.jsonl"
    write_records(path, [QuestionRecord("h", "Q", [], mentor=MentorOutput("x"))])
    assert "give mentor_tokenizer=" in str(plan_refusal("recorded-mentor", **{**args, "mentor": str(path)}))


@plan_case("recorded-questions")
def case_recorded_questions(tmp_path, capsys, tiny_model_dir, monkeypatch):
    """A question the recorded mentor's file does not hold: refused before the first model call (it was
    found by the mentor's first generate, after the intern had scored stage 0)."""
    from tandem_lm_eval.cascade.stages import Cascade
    from tandem_lm_eval.harness.lm import TandemLM

    path = tmp_path / "m.jsonl"
    write_records(path, [QuestionRecord("0123456789abcdef", "Q", [], mentor=MentorOutput("x"))])
    lm = TandemLM(
        mentor=str(path),
        mentor_backend="recorded",
        mentor_tokenizer=str(tiny_model_dir),
        mentor_num_params="1e9",
        intern=str(tiny_model_dir),
        dtype="float32",
        mode="fixed:1",
        progress="false",
    )
    monkeypatch.setattr(Cascade, "run", lambda *a: pytest.fail("the cascade ran before the check"))

    class Req:
        args = ("What is 2 + 2?", {"until": []})
        task_name, doc_id = "t", 0

    with pytest.raises(
        SystemExit, match=r"1 of 1 questions \(first: t doc 0\) are not in the recorded mentor"
    ):
        lm.generate_until([Req()])


@plan_case("store")
def case_store(tmp_path, capsys):
    path = tmp_path / "store.sqlite"
    path.write_bytes(bytes(range(256)) * 20)
    assert "is not a usable tandem-lm-eval run store" in str(
        plan_refusal("store", store=str(path), mode="fixed:1")
    )


@plan_case("output-path")
def case_output_path(tmp_path, capsys):
    """A folder where no file can be created, though os.access says yes (root, /proc): refused now, not
    after the whole run; what the proof makes is removed again."""
    import os

    assert os.access("/proc", os.W_OK | os.X_OK)  # what the old check asked, and believed
    message = str(plan_refusal("output-path", trace_path="/proc/tandem-trace.jsonl", mode="fixed:1"))
    assert "trace_path /proc/tandem-trace.jsonl cannot be written" in message
    assert "give a path you can write to" in message
    ok = tmp_path / "a" / "t.jsonl"
    from tandem_lm_eval.harness.plan import plan_run

    assert plan_run({**NO_MODELS, "trace_path": str(ok), "mode": "fixed:1"}).trace_path == str(ok)
    assert not ok.exists() and not ok.parent.exists()


@plan_case("store-is-trace")
def case_store_is_trace(tmp_path, capsys):
    path = str(tmp_path / "run.sqlite")
    message = str(plan_refusal("store-is-trace", store=path, trace_path=path, mode="fixed:1"))
    assert "store and trace_path both name" in message
    assert not Path(path).exists()  # refused before the store was created


@plan_case("gen-kwargs")
def case_gen_kwargs(tmp_path, capsys, tiny):
    """`--gen_kwargs max_gen_toks=0` arrives in each request: refused before the first model call (it
    ran every mentor stage to produce empty answers)."""
    from tandem_lm_eval.harness.lm import TandemLM
    from tandem_lm_eval.harness.plan import check_gen_kwargs

    for bad, pattern in (
        ({"max_gen_toks": 0}, "gen_kwargs max_gen_toks must be >= 1"),
        ({"temperature": -1}, "gen_kwargs temperature"),
        ({"top_p": 0}, "gen_kwargs top_p"),
        ({"do_sample": "maybe"}, "gen_kwargs do_sample"),
        ({"until": 3}, "gen_kwargs until"),
    ):
        with pytest.raises(ValueError, match=pattern) as info:
            check_gen_kwargs(bad)
        assert info.value.check == "gen-kwargs"
    lm = TandemLM(**tiny, mode="intern_only")
    lm.replicas.run = lambda *a, **k: pytest.fail("a model was called before the gen_kwargs were checked")

    class Req:
        args = ("What is 2 + 2?", {"until": [], "max_gen_toks": 0})
        task_name, doc_id = "t", 0

    with pytest.raises(SystemExit, match="request t doc 0: gen_kwargs max_gen_toks must be >= 1, got 0"):
        lm.generate_until([Req()])


@plan_case("compare-task-twice")
def case_compare_task_twice(tmp_path, capsys):
    from tandem_lm_eval.workflows.compare import config_from_dict

    with pytest.raises(ValueError, match="tasks lists tandem_test_arith more than once") as info:
        config_from_dict(
            {
                "output": str(tmp_path),
                "tasks": ["tandem_test_arith", "tandem_test_arith"],
                "rows": [{"mode": "tandem"}],
            }
        )
    assert info.value.check == "compare-task-twice"
    assert "more than once" in compare_error(
        capsys, tmp_path, '[[rows]]\nmode = "intern_only"\n', tasks='["a", "a"]'
    )


def _doc_check_rows() -> list[str]:
    """The kinds of check docs/bad-inputs.md lists in its table of the run plan's checks."""
    text = (HERE.parent / "docs" / "bad-inputs.md").read_text()
    section = text.split("## The run plan's checks", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z-]+)` \|", section, flags=re.M)


def test_every_kind_of_check_has_one_test_and_one_doc_row():
    from tandem_lm_eval.harness.plan import CHECKS

    assert sorted(PLAN_CASES) == sorted(CHECKS), "a kind of check without a test, or a test without one"
    rows = _doc_check_rows()
    assert len(rows) == len(set(rows)) and sorted(rows) == sorted(CHECKS), "docs/bad-inputs.md vs CHECKS"


# checks of what arrives after the models have loaded (lm-eval's requests): proven to come before the
# first model call instead (their tests make the cascade fail if it runs)
AFTER_LOAD = ("recorded-questions", "gen-kwargs")


@pytest.mark.parametrize("kind", sorted(PLAN_CASES))
def test_the_plans_checks_refuse_before_any_model_loads(kind, request, tmp_path, capsys):
    import inspect

    loads = None if kind in AFTER_LOAD else request.getfixturevalue("model_loads")
    case = PLAN_CASES[kind]
    wanted = [n for n in inspect.signature(case).parameters if n not in ("tmp_path", "capsys")]
    case(tmp_path, capsys, **{n: request.getfixturevalue(n) for n in wanted})
    assert loads is None or loads == []


def test_no_model_loads_but_from_a_plan():
    """The rule, as the code holds it: harness/assembly.py is the only caller of the backend factory
    (and no engine class is built anywhere else), and what calls it takes a RunPlan."""
    import ast

    from tandem_lm_eval.harness.assembly import build_backends

    package = HERE.parent / "tandem_lm_eval"
    engines = {"make_backend", "HFBackend", "VLLMBackend", "OpenAIBackend", "RecordedBackend"}
    callers = []
    for path in package.rglob("*.py"):
        if path.relative_to(package).parts[0] == "backends":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                for call in ast.walk(node):
                    if (
                        isinstance(call, ast.Call)
                        and getattr(call.func, "id", getattr(call.func, "attr", "")) in engines
                    ):
                        callers.append((str(path.relative_to(package)), node.name))
    assert callers == [("harness/assembly.py", "_build_backend")]
    source = (package / "harness" / "assembly.py").read_text()
    users = [
        n.name
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.FunctionDef)
        and any(
            isinstance(c, ast.Call) and getattr(c.func, "id", "") == "_build_backend" for c in ast.walk(n)
        )
    ]
    assert users == ["build_backends"]
    with pytest.raises(TypeError, match="takes a RunPlan"):
        build_backends({"mentor": "m", "intern": "i"})
