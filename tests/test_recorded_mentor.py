"""The recorded mentor (backends/recorded.py) with the real demo tokenizer: recorded outputs cut at
each budget exactly as the mentor's tokenizer counts them, continuations, errors, and a cascade."""

from __future__ import annotations

import pytest
from fakes import ScriptedBackend

from tandem_lm_eval.backends.base import BackendError, GenerationRequest, Message, Prompt
from tandem_lm_eval.backends.recorded_mentor import RecordedBackend
from tandem_lm_eval.cascade.policies import FixedStagePolicy
from tandem_lm_eval.cascade.prompts import Question, mentor_prompt
from tandem_lm_eval.cascade.roles import Role
from tandem_lm_eval.cascade.stages import Cascade
from tandem_lm_eval.data.records import MentorOutput, QuestionRecord, write_records
from tandem_lm_eval.harness.config import ConfigError, TandemConfig

Q_TEXT = "Ella got 4 of 40 wrong; Marion got 6 more than half of Ella's score. What is Marion's score?"
SOLUTION = (
    "Goal: find Marion's score.\nPlanning: Ella got 40 - 4 = 36 correct; half of that is 18, "
    "plus 6 is 24.\nAction: Marion's score is 24."
)
Q2_TEXT = "What is 7 times 6?"
Q2_IDS_TEXT = "Multiply seven by six: seven sixes are forty-two, so the product is 42."


def question(text: str) -> Question:
    return Question(messages=(Message("user", text),))


@pytest.fixture(scope="module")
def tokenizer(demo_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(demo_model_dir))


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


@pytest.fixture(scope="module")
def records_file(tmp_path_factory, tokenizer):
    """Q: text only, finished. Q2: token ids that are NOT the text's (the ids must win), unfinished."""
    path = tmp_path_factory.mktemp("recorded") / "mentor.jsonl"
    q, q2 = question(Q_TEXT), question(Q2_TEXT)
    write_records(
        path,
        [
            QuestionRecord(
                q.key,
                Q_TEXT,
                stages=[],
                kind="oracle",
                mentor=MentorOutput(text=SOLUTION, finished=True, model="oracle:answer", num_params=32e9),
            ),
            QuestionRecord(
                q2.key,
                Q2_TEXT,
                stages=[],
                mentor=MentorOutput(
                    text="(the ids below are what counts)",
                    token_ids=encode(tokenizer, Q2_IDS_TEXT),
                    finished=False,
                    model="oracle:answer",
                    num_params=32e9,
                ),
            ),
        ],
    )
    return path


@pytest.fixture(scope="module")
def backend(records_file, demo_model_dir):
    return RecordedBackend(str(records_file), tokenizer=str(demo_model_dir))


def request(text: str, budget: int, prefix=None) -> GenerationRequest:
    return GenerationRequest(prompt=mentor_prompt(question(text), None), max_new_tokens=budget, prefix=prefix)


def test_first_tokens_of_the_recording(backend, tokenizer):
    ids = encode(tokenizer, SOLUTION)
    assert len(ids) > 40  # the cuts below fall inside the recording
    assert len(backend) == 2
    assert backend.model_name == "recorded:oracle:answer"
    for budget in (1, 8, 17):
        (gen,) = backend.generate([request(Q_TEXT, budget)])
        assert gen.token_ids == tuple(ids[:budget])
        assert gen.text == tokenizer.decode(ids[:budget], skip_special_tokens=True)
        assert gen.new_tokens == budget
        assert gen.finish_reason == "length" and not gen.finished
        assert gen.prompt_tokens == 0


def test_continuation_adds_only_new_tokens(backend, tokenizer):
    ids = encode(tokenizer, SOLUTION)
    (first,) = backend.generate([request(Q_TEXT, 8)])
    (second,) = backend.generate([request(Q_TEXT, 8, prefix=first)])
    assert second.token_ids == tuple(ids[:16])
    assert second.token_ids[:8] == first.token_ids
    assert second.new_tokens == 8
    assert second.text == tokenizer.decode(ids[:16], skip_special_tokens=True)
    # a budget past the end of a finished recording: the rest of it, and "stop"
    (last,) = backend.generate([request(Q_TEXT, 1000, prefix=second)])
    assert last.token_ids == tuple(ids)
    assert last.new_tokens == len(ids) - 16
    assert last.finish_reason == "stop" and last.finished
    assert last.text == tokenizer.decode(ids, skip_special_tokens=True) == SOLUTION


def test_stop_only_when_the_whole_finished_output_is_returned(backend, tokenizer):
    n = len(encode(tokenizer, SOLUTION))
    gens = backend.generate([request(Q_TEXT, n - 1), request(Q_TEXT, n), request(Q_TEXT, n + 5)])
    assert [g.finish_reason for g in gens] == ["length", "stop", "stop"]
    assert [len(g.token_ids) for g in gens] == [n - 1, n, n]
    assert [g.new_tokens for g in gens] == [n - 1, n, n]


def test_recorded_token_ids_are_served(backend, tokenizer):
    ids = encode(tokenizer, Q2_IDS_TEXT)
    (gen,) = backend.generate([request(Q2_TEXT, 5)])
    assert gen.token_ids == tuple(ids[:5])
    assert gen.text == tokenizer.decode(ids[:5], skip_special_tokens=True)
    # exactly the recorded length is fine, though unfinished: "length"
    (whole,) = backend.generate([request(Q2_TEXT, len(ids) - 5, prefix=gen)])
    assert whole.token_ids == tuple(ids) and whole.finish_reason == "length"
    assert whole.new_tokens == len(ids) - 5
    assert whole.text == Q2_IDS_TEXT


def test_unfinished_recording_asked_beyond_its_length(backend, tokenizer):
    n = len(encode(tokenizer, Q2_IDS_TEXT))
    (gen,) = backend.generate([request(Q2_TEXT, 4)])
    with pytest.raises(BackendError) as info:
        backend.generate([request(Q2_TEXT, n, prefix=gen)])  # needs n + 4 tokens
    message = str(info.value)
    assert f"stops after {n} tokens without finishing" in message
    assert f"a budget of {n + 4} needs more" in message
    assert question(Q2_TEXT).key in message


def test_unknown_question(backend, records_file):
    other = question("How many legs do three spiders have?")
    with pytest.raises(BackendError) as info:
        backend.generate([request(Q_TEXT, 4), request("How many legs do three spiders have?", 4)])
    message = str(info.value)
    assert str(records_file) in message and "2 questions" in message
    assert other.key in message and "How many legs" in message


def test_question_hash_ignores_system_prompt_and_whitespace(backend, tokenizer):
    ids = encode(tokenizer, SOLUTION)
    spaced = Prompt(
        messages=(Message("system", "Another system prompt."), Message("user", "  " + Q_TEXT.upper() + "\n"))
    )
    (gen,) = backend.generate([GenerationRequest(prompt=spaced, max_new_tokens=3)])
    assert gen.token_ids == tuple(ids[:3])


def test_count_tokens_and_score(backend, tokenizer):
    prompt = Prompt(raw_text=Q_TEXT)
    assert backend.count_tokens(prompt) == len(encode(tokenizer, Q_TEXT))
    with pytest.raises(BackendError, match="cannot score"):
        backend.score([prompt])


def test_num_parameters(backend, tmp_path, demo_model_dir):
    assert backend.num_parameters == 32_000_000_000
    path = tmp_path / "unsized.jsonl"
    write_records(
        path,
        [
            QuestionRecord("a" * 16, "q1", [], mentor=MentorOutput("one", num_params=32e9)),
            QuestionRecord("b" * 16, "q2", [], mentor=MentorOutput("two", num_params=None)),
        ],
    )
    unsized = RecordedBackend(str(path), tokenizer=str(demo_model_dir))
    with pytest.raises(BackendError, match=r"give mentor_num_params="):
        unsized.num_parameters  # noqa: B018
    mixed = tmp_path / "mixed.jsonl"
    write_records(
        mixed,
        [
            QuestionRecord("a" * 16, "q1", [], mentor=MentorOutput("one", num_params=32e9)),
            QuestionRecord("b" * 16, "q2", [], mentor=MentorOutput("two", num_params=7e9)),
        ],
    )
    with pytest.raises(BackendError, match="mentor_num_params"):
        RecordedBackend(str(mixed), tokenizer=str(demo_model_dir)).num_parameters  # noqa: B018


def test_longest_recording_of_a_question_is_kept(tmp_path, demo_model_dir, tokenizer):
    key = question(Q_TEXT).key
    path = tmp_path / "dup.jsonl"
    short, long = "Goal: find it.", SOLUTION
    write_records(
        path,
        [
            QuestionRecord(key, Q_TEXT, [], mentor=MentorOutput(short, finished=True)),
            QuestionRecord(key, Q_TEXT, [], mentor=MentorOutput(long, finished=True)),
            QuestionRecord(key, Q_TEXT, [], mentor=MentorOutput(short, finished=True)),
        ],
    )
    rec = RecordedBackend(str(path), tokenizer=str(demo_model_dir))
    assert len(rec) == 1
    (gen,) = rec.generate([request(Q_TEXT, 10_000)])
    assert gen.token_ids == tuple(encode(tokenizer, SOLUTION))


def test_construction_errors(tmp_path, records_file, demo_model_dir):
    with pytest.raises(BackendError, match="needs the mentor's tokenizer.*mentor_tokenizer="):
        RecordedBackend(str(records_file), tokenizer=None)
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(BackendError, match=rf"recorded mentor file '{missing}' does not exist"):
        RecordedBackend(str(missing), tokenizer=str(demo_model_dir))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(BackendError, match="holds no mentor outputs"):
        RecordedBackend(str(empty), tokenizer=str(demo_model_dir))
    no_mentor = tmp_path / "no_mentor.jsonl"
    write_records(no_mentor, [QuestionRecord("a" * 16, "q", [])])
    with pytest.raises(BackendError, match="holds no mentor outputs"):
        RecordedBackend(str(no_mentor), tokenizer=str(demo_model_dir))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"not": "a record"}\n' + '{"x": 1}\n')
    with pytest.raises(BackendError, match=rf"recorded mentor: {broken}:1: not a record"):
        RecordedBackend(str(broken), tokenizer=str(demo_model_dir))
    with pytest.raises(BackendError, match="does not exist"):
        RecordedBackend(str(records_file), tokenizer=str(tmp_path / "no-such-tokenizer"))
    not_a_model = tmp_path / "not_a_model"
    not_a_model.mkdir()
    (not_a_model / "config.json").write_text("{}")
    with pytest.raises(BackendError, match="could not load the mentor tokenizer"):
        RecordedBackend(str(records_file), tokenizer=str(not_a_model))


def test_config_recorded_is_mentor_only(records_file, demo_model_dir):
    cfg = TandemConfig.from_model_args(
        {
            "mentor": str(records_file),
            "mentor_backend": "recorded",
            "mentor_tokenizer": str(demo_model_dir),
            "mentor_num_params": "32e9",
            "intern": "some/intern",
            "intern_backend": "hf",
            "dtype": "float32",
        }
    )
    assert cfg.mentor.backend == "recorded"
    assert cfg.mentor.options == {"tokenizer": str(demo_model_dir)}  # dtype does not reach it
    assert cfg.mentor.num_params == 32e9
    assert cfg.intern.options["dtype"] == "float32"
    with pytest.raises(ConfigError, match="intern_backend=recorded: a recorded model can only be the mentor"):
        TandemConfig.from_model_args(
            {"mentor": "m", "intern": str(records_file), "intern_backend": "recorded"}
        )
    with pytest.raises(ConfigError, match="mentor_temperature"):
        TandemConfig.from_model_args(
            {"mentor": "m", "mentor_backend": "recorded", "mentor_temperature": "0.5", "intern": "i"}
        )


def test_cascade_with_recorded_mentor(backend, tokenizer):
    ids = encode(tokenizer, SOLUTION)
    n = len(ids)
    assert 16 < n < 64
    budgets = (8, 16, n + 10)  # the last stage asks for more than was recorded (finished: fine)
    intern = ScriptedBackend(params=1000)
    cascade = Cascade(Role(backend, params=32e9), intern, FixedStagePolicy(3), budgets, progress=False)
    (result,) = cascade.run([question(Q_TEXT)])
    assert [s.stage for s in result.stages] == [0, 1, 2, 3]
    expected_tokens = [0, 8, 16, n]
    assert [s.mentor_tokens for s in result.stages] == expected_tokens
    assert result.stages[0].insights == ""
    for stage, k in zip(result.stages[1:], expected_tokens[1:]):
        assert stage.insights == tokenizer.decode(ids[:k], skip_special_tokens=True).strip()
    assert result.cost.mentor_tokens == n and result.cost.stop_stage == 3
    assert result.mentor.finished and result.mentor.token_ids == tuple(ids)
    # the intern answered from x_3, which holds the whole solution
    (answer_request,) = intern.generate_calls[-1]
    assert SOLUTION in answer_request.prompt.messages[-1].content


def test_cascade_explore_budgets_8_16_32(backend, tokenizer):
    ids = encode(tokenizer, SOLUTION)
    cascade = Cascade(backend, ScriptedBackend(), FixedStagePolicy(3), (8, 16, 32), progress=False)
    (exploration,) = cascade.explore([question(Q_TEXT)])
    tokens = [o.mentor_tokens for o in exploration.stages]
    assert tokens == [0, min(8, len(ids)), min(16, len(ids)), min(32, len(ids))]
    for o in exploration.stages[1:]:
        assert o.record.insights == tokenizer.decode(ids[: o.mentor_tokens], skip_special_tokens=True).strip()
    assert exploration.mentor.token_ids == tuple(ids[:32])
    assert exploration.mentor.finish_reason == "length"


def test_cascade_unfinished_recording_too_short(backend, tokenizer):
    n = len(encode(tokenizer, Q2_IDS_TEXT))
    assert n < 32
    cascade = Cascade(backend, ScriptedBackend(), FixedStagePolicy(3), (8, 16, 32), progress=False)
    with pytest.raises(BackendError, match=f"stops after {n} tokens without finishing; a budget of 32"):
        cascade.run([question(Q2_TEXT)])


def test_the_longer_of_two_recordings_wins_with_or_without_token_ids(tmp_path, tokenizer, demo_model_dir):
    from tandem_lm_eval.common.question_hash import question_hash

    long_text = "Step one: add the numbers. " * 10
    short_text = "x" * 78  # more characters than tokens of the long one, fewer characters
    path = tmp_path / "two.jsonl"
    write_records(
        path,
        [
            QuestionRecord(
                question_hash("Q"),
                "Q",
                [],
                mentor=MentorOutput(long_text, encode(tokenizer, long_text), True),
            ),
            QuestionRecord(question_hash("Q"), "Q", [], mentor=MentorOutput(short_text, None, True)),
        ],
    )
    gen = RecordedBackend(str(path), tokenizer=str(demo_model_dir)).generate(
        [GenerationRequest(Prompt(raw_text="Q"), 1000)]
    )[0]
    assert list(gen.token_ids) == encode(tokenizer, long_text)


def test_traces_where_the_mentor_answered_are_not_served_as_insights(tmp_path, demo_model_dir):
    path = tmp_path / "answers.jsonl"
    write_records(
        path,
        [
            QuestionRecord(
                "h1", "Q", [], kind="trace", mode="mentor_only", mentor=MentorOutput("The answer is 4.")
            ),
            QuestionRecord("h2", "Q2", [], kind="trace", mode="budget_forcing:8", mentor=MentorOutput("x")),
        ],
    )
    with pytest.raises(BackendError, match="2 are traces of a mode where the mentor answered itself"):
        RecordedBackend(str(path), tokenizer=str(demo_model_dir))
