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
