"""Token spans of Q and I_t in the rendered intern prompt: the features of tandem-v2 read exactly these.

segment_spans must find, in whatever a backend renders (chat template, raw text, a server's
/tokenize), the tokens of each marked piece of text and nothing of the template around it.
"""

import json

import pytest

from tandem_lm_eval.backends.base import Message, Prompt, Segment
from tandem_lm_eval.backends.rendering import render_prompt_ids, segment_spans
from tandem_lm_eval.cascade.prompts import INSIGHTS_FOOTER, INSIGHTS_HEADER, Question, intern_prompt


def char_render(prompt: Prompt) -> list[str]:
    """One token per character, with a multi-token 'template' around each message."""
    if prompt.raw_text is not None:
        return ["<bos>", *prompt.raw_text]
    out = ["<bos>"]
    for m in prompt.messages:
        out += ["<start>", m.role, "\n", *m.content, "<end>"]
    return [*out, "<start>", "assistant", "\n"]


def test_character_tokens_give_the_exact_spans():
    q = Question((Message("system", "Be brief."), Message("user", "What is 2+3?")))
    p = intern_prompt(q, "Goal: add.", None)
    tokens = char_render(p)
    spans = segment_spans(char_render, p, tokens)
    (qa, qb), (ia, ib) = spans["question"][0], spans["insights"][0]
    assert "".join(tokens[qa:qb]) == "What is 2+3?"
    assert "".join(tokens[ia:ib]) == "Goal: add."
    # nothing of the system turn, the header or the footer is inside
    between = "".join(tokens[qb:ia])
    assert INSIGHTS_HEADER in between and INSIGHTS_FOOTER not in "".join(tokens[ia:ib])


def test_every_non_system_turn_is_part_of_q_and_stage_zero_has_no_insights():
    q = Question(
        (
            Message("system", "S"),
            Message("user", "Q1?"),
            Message("assistant", "A1."),
            Message("user", "Q2?"),
        )
    )
    p = intern_prompt(q, "", None)
    tokens = char_render(p)
    spans = segment_spans(char_render, p, tokens)
    assert [("".join(tokens[a:b])) for a, b in spans["question"]] == ["Q1?", "A1.", "Q2?"]
    assert "insights" not in spans


def test_raw_text_prompts_and_empty_segments():
    p = Prompt(
        raw_text="abc DEF ghi", segments=(Segment("question", -1, 4, 7), Segment("insights", -1, 8, 8))
    )
    tokens = char_render(p)
    spans = segment_spans(char_render, p, tokens)
    assert "".join(tokens[slice(*spans["question"][0])]) == "DEF" and spans["insights"] == ()
    with pytest.raises(ValueError, match="ends at character"):
        Prompt(raw_text="abc", segments=(Segment("question", -1, 0, 9),))
    with pytest.raises(ValueError, match="refers to message 3"):
        Prompt(messages=(Message("user", "x"),), segments=(Segment("question", 3, 0, 1),))


@pytest.fixture(scope="module")
def tokenizer(demo_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(demo_model_dir))


def gsm8k_questions(shared_data, n=8):
    from tandem_lm_eval.scoring.prompts import math_prompt

    rows = [json.loads(line) for line in (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()[:n]]
    return [(math_prompt(r["question"]), r["answer"].split("####")[0]) for r in rows]


def test_real_chat_template_spans_decode_to_the_segment_text(tokenizer, shared_data):
    """On SmolLM2's ChatML template: the span decodes to the segment's own text (no template, header,
    footer), for whole solutions and for cuts in the middle of a word (a budget cut)."""
    render = lambda p: render_prompt_ids(tokenizer, p)  # noqa: E731
    checked = 0
    for question, solution in gsm8k_questions(shared_data):
        for insights in ("", solution[:37], solution):
            p = intern_prompt(Question((Message("user", question),)), insights.strip(), None)
            ids = render(p)
            spans = segment_spans(render, p, ids)
            (qa, qb) = spans["question"][0]
            assert tokenizer.decode(ids[qa:qb]).strip() == question.strip()
            assert "<|im_start|>" not in tokenizer.decode(ids[qa:qb])
            if insights.strip():
                (ia, ib) = spans["insights"][0]
                decoded = tokenizer.decode(ids[ia:ib])
                # a token that straddles the end of a cut (" \n") may be inside; never more than that
                assert insights.strip() in decoded and len(decoded) - len(insights.strip()) <= 2
                assert INSIGHTS_HEADER not in decoded and "Use these insights" not in decoded
            checked += 1
    assert checked == 24


def test_transformers_backend_reports_the_spans(tiny_model_dir, shared_data):
    from tandem_lm_eval.backends.hf import HFBackend

    backend = HFBackend(str(tiny_model_dir), dtype="float32")
    (question, solution), *_ = gsm8k_questions(shared_data, 1)
    prompts = [intern_prompt(Question((Message("user", question),)), ins, None) for ins in ("", solution)]
    for p, scores in zip(prompts, backend.score(prompts)):
        ids = render_prompt_ids(backend.tokenizer, p)
        assert scores.spans == segment_spans(lambda x: render_prompt_ids(backend.tokenizer, x), p, ids)
        assert set(scores.spans) == (
            {"question"} if p.segments[-1].name == "question" else {"question", "insights"}
        )
    # an unmarked prompt has no spans
    assert backend.score([Prompt.chat(("user", "hi"))])[0].spans is None
