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

FIXTURE_TASKS = Path(__file__).parent / "fixtures" / "tasks"


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
]


@pytest.mark.parametrize("row, extra, pattern", MODEL_ARGS_ROWS, ids=[r[0] for r in MODEL_ARGS_ROWS])
def test_model_args_are_refused_before_any_model_loads(row, extra, pattern, monkeypatch):
    # any model load would fail loudly here: the check must come first
    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded before model_args were checked")

    monkeypatch.setattr("tandem_lm_eval.harness.lm.build_backends", no_load)
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

    monkeypatch.setattr("tandem_lm_eval.harness.lm.build_backends", no_load)
    models = {"mentor": "/nonexistent/m", "intern": "/nonexistent/i"}
    assert "classifier 'nope' not found" in lm_error(**models, classifier="nope")
    (tmp_path / "classifier.json").write_text(json.dumps({"feature_set": "tandem-v1", "format_version": 1}))
    assert "retrain it" in lm_error(**models, classifier=str(tmp_path))
