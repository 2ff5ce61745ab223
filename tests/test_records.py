"""records.py: the JSONL question records that collect, trace_path and oracle-mentor write."""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pytest

from tandem_lm_eval.data.records import (
    FORMAT,
    MentorOutput,
    QuestionRecord,
    RecordError,
    StageEntry,
    doc_hash,
    iter_records,
    load_records,
    write_records,
)

# GSM8K train has a question with U+2028 LINE SEPARATOR in it (written raw with ensure_ascii=False)
LINE_SEP_TEXT = "Clive opens a box full of different colored balls.  \u2028The box contains 6 blue balls."


def make_record(i: int, question: str = "What is 2 + 3?") -> QuestionRecord:
    return QuestionRecord(
        question_hash=f"{i:016x}",
        question=question,
        stages=[
            StageEntry(
                stage=0,
                mentor_tokens=0,
                score=0.25,
                prompt_tokens=40,
                spans={"question": [[5, 17]]},
                features={"prompt": [float(x) for x in range(17)]},
                answer="5",
                intern_tokens=3,
                finish_reason="stop",
                label=1,
                metric="exact_match",
                metric_value=1.0,
            ),
            StageEntry(
                stage=1,
                mentor_tokens=8,
                insights="Add 2 and 3. \u00e9\u4e2d",
                spans={"question": [[5, 17]], "insights": [[20, 28]]},
                label=0,
                metric="exact_match",
                metric_value=0.0,
            ),
        ],
        task="tandem_gsm8k",
        group="tandem_gsm8k",
        doc_id=i,
        doc_hash="ab" * 32,
        split="test",
        budgets=[8, 16],
        mentor=MentorOutput(
            text="Add 2 and 3.", token_ids=[1, 2, 3], finished=True, model="m", num_params=32e9
        ),
        intern_model="tiny",
        intern_num_params=1e6,
        entropy_method="exact",
        mode="explore",
    )


def test_round_trip(tmp_path):
    path = tmp_path / "sub" / "records.jsonl"
    records = [make_record(0), make_record(1, question="Another one?")]
    assert write_records(path, records) == 2
    assert write_records(path, [make_record(2)]) == 1  # appends
    assert len(path.read_text(encoding="utf-8").split("\n")) == 4  # 3 lines + final newline
    back = list(iter_records(path))
    assert back == [*records, make_record(2)]
    assert back[0].stages[1].insights == "Add 2 and 3. \u00e9\u4e2d"
    assert back[0].mentor == MentorOutput("Add 2 and 3.", [1, 2, 3], True, "m", 32e9)
    assert back[0].stages[0].features["prompt"] == [float(x) for x in range(17)]
    assert back[0].format == FORMAT
    # load_records concatenates files in order
    other = tmp_path / "other.jsonl"
    write_records(other, [make_record(9)])
    assert [r.doc_id for r in load_records([path, other])] == [0, 1, 2, 9]


def test_non_ascii_written_raw(tmp_path):
    path = tmp_path / "r.jsonl"
    write_records(path, [make_record(0)])
    text = path.read_text(encoding="utf-8")
    assert "\u4e2d" in text and "\\u4e2d" not in text  # ensure_ascii=False, as lm-eval logs docs


def test_line_separator_survives(tmp_path):
    path = tmp_path / "r.jsonl"
    records = [make_record(0, LINE_SEP_TEXT), make_record(1, "second")]
    write_records(path, records)
    raw = path.read_text(encoding="utf-8")
    assert "\u2028" in raw  # written raw: a reader splitting on it would tear the line
    assert len(raw.splitlines()) == 3  # what str.splitlines makes of it
    back = list(iter_records(path))
    assert [r.question for r in back] == [LINE_SEP_TEXT, "second"]


def test_torn_last_line_skipped_with_warning(tmp_path, caplog):
    path = tmp_path / "r.jsonl"
    write_records(path, [make_record(0), make_record(1)])
    whole = make_record(2).to_json()
    with path.open("a", encoding="utf-8") as fh:
        fh.write(whole[: len(whole) // 2])  # killed mid-write: no closing brace, no newline
    with caplog.at_level(logging.WARNING, logger="tandem_lm_eval.data.records"):
        back = list(iter_records(path))
    assert [r.doc_id for r in back] == [0, 1]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "torn last line" in warnings[0].getMessage()
    assert f"{path}:3" in warnings[0].getMessage()


def test_bad_line_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "r.jsonl"
    write_records(path, [make_record(0)])
    with path.open("a", encoding="utf-8") as fh:
        fh.write('{"question_hash": "x", "trunc\n')
    write_records(path, [make_record(2)])
    with pytest.raises(RecordError, match=rf"{path}:2: not a record \(JSONDecodeError"):
        list(iter_records(path))
    with pytest.raises(RecordError, match=rf"{path}:2:"):
        load_records([path])


def test_blank_lines_are_ignored(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(make_record(0).to_json() + "\n\n" + make_record(1).to_json() + "\n\n\n", encoding="utf-8")
    assert [r.doc_id for r in iter_records(path)] == [0, 1]


def test_wrong_format_refused(tmp_path):
    data = json.loads(make_record(0).to_json())
    with pytest.raises(RecordError, match=r"not a tandem-record/1 record \(format='tandem-record/0'\)"):
        QuestionRecord.from_dict({**data, "format": "tandem-record/0"})
    without = dict(data)
    del without["format"]
    with pytest.raises(RecordError, match="format=None"):
        QuestionRecord.from_dict(without)
    # in a file, even as the last line (it parses as JSON, so it is not a torn line)
    path = tmp_path / "r.jsonl"
    path.write_text(
        make_record(1).to_json() + "\n" + json.dumps({**data, "format": "other/9"}) + "\n", encoding="utf-8"
    )
    with pytest.raises(RecordError, match=rf"{path}:2: not a record \(RecordError: .*other/9"):
        list(iter_records(path))


def test_unknown_field_and_missing_file(tmp_path):
    data = json.loads(make_record(0).to_json())
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({**data, "surprise": 1}) + "\n" + make_record(1).to_json() + "\n")
    with pytest.raises(RecordError, match=rf"{path}:1: not a record \(TypeError"):
        list(iter_records(path))
    with pytest.raises(RecordError, match="does not exist"):
        list(iter_records(tmp_path / "missing.jsonl"))


def test_not_utf8_is_a_record_error(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(make_record(0).to_json().encode() + b"\n\xff\xfe\n")
    with pytest.raises(RecordError, match="not UTF-8"):
        load_records([path])


def test_labelled():
    rec = make_record(0)
    assert rec.labelled
    rec.stages[1].label = None
    assert not rec.labelled
    rec.stages[1].usable = False  # a stage that did not fit the intern's context has no answer
    assert rec.labelled
    rec.stages[0].label = None
    assert not rec.labelled
    assert QuestionRecord("h", "q", stages=[]).labelled  # vacuous: an oracle record


def test_doc_hash_is_lm_evals():
    from lm_eval.utils import handle_non_serializable, hash_string

    doc = {
        "question": "Ünïcode \u2028 question?",
        "answer": "x = 2 #### 2",
        "n": np.int64(3),
        "ok": np.bool_(True),
        "tags": {"a"},
    }
    expected = hash_string(json.dumps(doc, indent=2, default=handle_non_serializable, ensure_ascii=False))
    assert doc_hash(doc) == expected
    # and independently of lm-eval's helpers: sha256 of the indented, non-escaped JSON
    plain = {
        "question": "Ünïcode \u2028 question?",
        "answer": "x = 2 #### 2",
        "n": 3,
        "ok": True,
        "tags": ["a"],
    }
    text = json.dumps(plain, indent=2, ensure_ascii=False)
    assert "Ünïcode" in text
    assert doc_hash(doc) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert doc_hash({**plain, "n": 4}) != doc_hash(plain)
    assert doc_hash(None) is None


def test_append_after_a_torn_last_line(tmp_path):
    path = tmp_path / "r.jsonl"
    write_records(path, [make_record(0)])
    with path.open("a", encoding="utf-8") as fh:
        fh.write(make_record(1).to_json()[:30])  # a run killed mid-write
    write_records(path, [make_record(2)])  # the resumed run appends
    assert [r.doc_id for r in iter_records(path)] == [0, 2]


def test_records_read_from_gzip_and_a_non_gzip_gz_is_an_error(tmp_path):
    import gzip

    plain = tmp_path / "r.jsonl"
    write_records(plain, [QuestionRecord("a", "Q\u2028x", []), QuestionRecord("b", "Q", [])])
    packed = tmp_path / "r.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert [r.question for r in load_records([packed])] == ["Q\u2028x", "Q"]
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(plain.read_bytes())
    with pytest.raises(RecordError, match="not a gzip file"):
        load_records([bad])
