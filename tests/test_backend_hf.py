"""transformers backend against the real demo model (SmolLM2-135M-Instruct) and the tiny one."""

import numpy as np
import pytest
import torch

from tandem_lm_eval.backends import BackendError, GenerationRequest, Prompt, make_backend


@pytest.fixture(scope="module")
def demo():
    return make_backend("hf", "demo", dtype="float32", batch_size=4)


QUESTION = Prompt.chat(("user", "What is 12 times 7? Answer with a number."))


def test_continuation_equals_one_generation_and_never_regenerates(demo):
    first = demo.generate([GenerationRequest(QUESTION, 6)])[0]
    second = demo.generate([GenerationRequest(QUESTION, 6, prefix=first)])[0]
    whole = demo.generate([GenerationRequest(QUESTION, 12)])[0]
    assert first.new_tokens == 6 and first.finish_reason == "length"
    assert second.token_ids[:6] == first.token_ids and second.new_tokens == len(second.token_ids) - 6
    assert second.token_ids == whole.token_ids and second.text == whole.text


def test_eos_is_counted_and_ends_the_generation(demo):
    from tandem_lm_eval.backends.hf import _eos_ids

    g = demo.generate([GenerationRequest(QUESTION, 200)])[0]
    assert g.finished and g.token_ids[-1] in _eos_ids(demo.model, demo.tokenizer)
    assert g.new_tokens == len(g.token_ids) < 200
    assert demo.tokenizer.eos_token not in g.text


def test_batched_generation_matches_single(demo):
    prompts = [Prompt.chat(("user", f"Count to {n}.")) for n in (3, 12)]
    batched = demo.generate([GenerationRequest(p, 10) for p in prompts])
    single = [demo.generate([GenerationRequest(p, 10)])[0] for p in prompts]
    assert [b.token_ids for b in batched] == [s.token_ids for s in single]


def test_stop_strings_cut_the_text(demo):
    g = demo.generate([GenerationRequest(QUESTION, 40, stop=("4",))])[0]
    assert "4" not in g.text


def test_scores_are_exact_log_softmax_and_entropy(demo):
    (s,) = demo.score([QUESTION])
    ids = torch.tensor(
        [
            demo.tokenizer.apply_chat_template(
                [{"role": "user", "content": QUESTION.messages[0].content}],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
            )["input_ids"]
        ]
    )
    with torch.no_grad():
        logp = torch.log_softmax(demo.model(ids).logits[0].double(), -1)
    expected_lp = logp[:-1].gather(1, ids[0, 1:, None])[:, 0].numpy()
    expected_h = -(logp.exp() * logp).sum(-1)[:-1].numpy()
    assert s.num_tokens == ids.shape[1] and s.token_logprobs.shape == (ids.shape[1] - 1,)
    np.testing.assert_allclose(s.token_logprobs, expected_lp, atol=1e-4)
    np.testing.assert_allclose(s.entropies, expected_h, atol=1e-4)
    assert s.entropy_method == "exact" and (s.entropies >= 0).all() and (s.token_logprobs <= 0).all()


def test_batched_scoring_matches_single(demo):
    prompts = [QUESTION, Prompt.chat(("user", "A much longer question about apples, pears and other fruit?"))]
    both = demo.score(prompts)
    for p, b in zip(prompts, both):
        (one,) = demo.score([p])
        np.testing.assert_allclose(b.token_logprobs, one.token_logprobs, atol=1e-4)


def test_loglikelihood_prefers_the_right_continuation(demo):
    (good, _), (bad, _) = demo.loglikelihood(
        [("The capital of France is", " Paris"), ("The capital of France is", " banana")]
    )
    assert good > bad


def test_parameter_count_and_context(demo):
    assert demo.num_parameters == 134_515_008  # SmolLM2-135M, tied embeddings counted once
    assert demo.max_context == 8192


def test_errors_are_clear(tiny_model_dir):
    with pytest.raises(BackendError, match="does not exist"):
        make_backend("hf", "/no/such/model")
    with pytest.raises(BackendError, match="unknown dtype"):
        make_backend("hf", str(tiny_model_dir), dtype="float8x")
    tiny = make_backend("hf", str(tiny_model_dir), max_length=32)
    with pytest.raises(BackendError, match="exceeds the context of 32 tokens"):
        tiny.generate([GenerationRequest(Prompt.chat(("user", "word " * 40)), 4)])


# DeepSeek-R1-Distill's template opens the reasoning block in the prompt (same as test_backend_vllm's)
R1_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '<｜User｜>' + m['content'] }}"
    "{% elif m['role'] == 'assistant' %}{{ '<｜Assistant｜>' + m['content'] }}{% else %}{{ m['content'] }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<｜Assistant｜><think>\\n' }}{% endif %}"
)


def test_a_template_that_opens_think_gives_the_same_text_shape_as_other_backends(demo):
    from tandem_lm_eval.common.thinking import split_thinking

    saved = demo.tokenizer.chat_template
    demo.tokenizer.chat_template = R1_TEMPLATE
    try:
        question = Prompt.chat(("user", "What is 2 + 3?"))
        gen = demo.generate([GenerationRequest(question, 8)])[0]
        more = demo.generate([GenerationRequest(question, 8, prefix=gen)])[0]
    finally:
        demo.tokenizer.chat_template = saved
    assert gen.text.startswith("<think>\n") and len(gen.token_ids) == 8
    parts = split_thinking(gen.text)
    assert parts.reasoning and not parts.completed and parts.answer == ""
    assert more.text.startswith("<think>\n") and more.text.count("<think>") == 1
    # without the template's opening the plain demo template leaves the text as generated
    plain = demo.generate([GenerationRequest(question, 8)])[0]
    assert not plain.text.startswith("<think>")


def test_stop_strings_are_searched_only_in_the_new_text(demo):
    first = demo.generate([GenerationRequest(QUESTION, 12)])[0]
    stop = first.text.strip()[:2]  # a string the earlier text already contains
    more = demo.generate([GenerationRequest(QUESTION, 4, stop=(stop,), prefix=first)])[0]
    assert more.text.startswith(first.text)  # the earlier text is context, never cut
