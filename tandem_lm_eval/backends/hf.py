"""transformers backend: any causal LM that ``AutoModelForCausalLM`` loads, on CPU or one GPU.

The fallback engine where vLLM is absent, and the reference the other backends are tested
against: prompt log-probabilities and full-vocabulary entropies are computed exactly in fp32.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from tandem_lm_eval.backends.base import (
    Backend,
    BackendError,
    Generation,
    GenerationRequest,
    HiddenRequest,
    Prompt,
    PromptScores,
    hidden_positions,
)
from tandem_lm_eval.backends.rendering import (
    cut_at_stop,
    loglikelihood_ids,
    looks_like_local_path,
    render_prompt_ids,
    resolve_model_path,
    segment_spans,
    think_opening,
)

logger = logging.getLogger(__name__)

# Positions per chunk when turning logits into log-softmax: bounds memory to chunk x vocabulary floats
# (a 152k vocabulary x 512 positions x 4 bytes = 300 MB) however long the prompt is.
_SCORE_CHUNK = 512


class HFBackend(Backend):
    name = "hf"

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        device: str = "cpu",
        batch_size: int = 8,
        max_length: int | None = None,
        trust_remote_code: bool = False,
        revision: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._name = model
        path, gguf_file = resolve_model_path(model)
        self._device = _resolve_device(device)
        self._batch_size = int(batch_size)
        if self._batch_size < 1:
            raise BackendError(f"batch_size must be >= 1, got {batch_size}")
        torch_dtype = _resolve_dtype(dtype, self._device)
        load_kwargs = {"trust_remote_code": trust_remote_code, "revision": revision}
        if gguf_file:
            load_kwargs["gguf_file"] = gguf_file
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, **load_kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, **load_kwargs)
        except Exception as exc:  # noqa: BLE001 - OSError, ValueError, a truncated file's SafetensorError...
            where = "local path" if looks_like_local_path(model) else "model id (offline? set a local path)"
            first = (str(exc).splitlines() or [""])[0]
            raise BackendError(f"could not load {where} {model!r}: {type(exc).__name__}: {first}") from exc
        self.model.to(self._device).eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._num_parameters = sum(p.numel() for p in self.model.parameters())
        self._peft = None  # the model wrapped by peft once a LoRA adapter is loaded (hidden_lora judges)
        self._adapters: dict[str, str] = {}  # adapter_id -> peft adapter name
        config_max = getattr(self.model.config, "max_position_embeddings", None) or 2048
        self._max_context = int(max_length) if max_length else int(config_max)
        self._torch = torch

    # --- identity -----------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self._name

    @property
    def num_parameters(self) -> int:
        return self._num_parameters

    @property
    def max_context(self) -> int:
        return self._max_context

    def count_tokens(self, prompt: Prompt) -> int:
        return len(self._render(prompt))

    def _render(self, prompt: Prompt) -> list[int]:
        return render_prompt_ids(self.tokenizer, prompt)

    def hidden_shape(self) -> tuple[int, int]:
        config = self.model.config
        config = getattr(config, "get_text_config", lambda: config)()
        return int(config.num_hidden_layers), int(config.hidden_size)

    # --- LoRA adapters (hidden_lora judges): applied for scoring passes that ask, never for answers ----
    def _with_adapter(self, hidden: HiddenRequest | None):
        """A context in which forward passes run with ``hidden.adapter`` (or the base model)."""
        import contextlib

        if hidden is None or hidden.adapter is None:
            return self._base_model()
        name = self._load_adapter(hidden.adapter, hidden.adapter_id)
        self._peft.set_adapter(name)
        return contextlib.nullcontext()

    def _base_model(self):
        """Forward passes of the model without any loaded adapter (answers, statistics-only scoring)."""
        import contextlib

        return self._peft.disable_adapter() if self._peft is not None else contextlib.nullcontext()

    def _load_adapter(self, folder: str, adapter_id: str) -> str:
        name = self._adapters.get(adapter_id)
        if name is not None:
            return name
        try:
            from peft import PeftModel
        except ImportError as exc:
            raise BackendError(f"a hidden_lora judge needs the peft package ({exc})") from exc
        name = f"judge_{adapter_id[:12]}"
        try:
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(self.model, folder, adapter_name=name)
                self._peft.eval()
            else:
                self._peft.load_adapter(folder, adapter_name=name)
        except Exception as exc:  # noqa: BLE001 - a shape mismatch, a missing file, a peft error
            first = (str(exc).splitlines() or [""])[0]
            raise BackendError(f"{self._name}: cannot load the LoRA adapter {folder}: {first}") from exc
        self._adapters[adapter_id] = name
        return name

    # --- generation ---------------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        results: list[Generation | None] = [None] * len(requests)
        inputs = []
        for req in requests:
            prompt_ids = self._render(req.prompt)
            prefix_ids = list(req.prefix.token_ids) if req.prefix else []
            # forced text: context after the prefix, never generated (GenerationRequest.forced_text)
            prefix_ids += self._forced_ids(req.forced_text)
            inputs.append((prompt_ids, prefix_ids))
        # Group requests of equal settings, longest first, so padding is small and sampling params agree.
        order = sorted(range(len(requests)), key=lambda i: -(len(inputs[i][0]) + len(inputs[i][1])))
        groups: dict[tuple, list[int]] = {}
        for i in order:
            r = requests[i]
            groups.setdefault((r.max_new_tokens, r.stop, r.temperature, r.top_p, r.seed), []).append(i)
        for (max_new, stop, temperature, top_p, seed), idxs in groups.items():
            for start in range(0, len(idxs), self._batch_size):
                batch = idxs[start : start + self._batch_size]
                outs = self._generate_batch(
                    [inputs[i][0] + inputs[i][1] for i in batch], max_new, stop, temperature, top_p, seed
                )
                for i, (new_ids, hit_stop) in zip(batch, outs):
                    prompt_ids, prefix_ids = inputs[i]
                    all_ids = tuple(prefix_ids + new_ids)
                    body = self.tokenizer.decode(list(all_ids), skip_special_tokens=True)
                    cut = False
                    if stop:  # the earlier text is context: search only the new part
                        earlier = (
                            len(self.tokenizer.decode(prefix_ids, skip_special_tokens=True))
                            if prefix_ids
                            else 0
                        )
                        body, cut = cut_at_stop(body, stop, earlier)
                    # a template that opens <think> in the prompt (R1-Distill): give the output the
                    # same <think>reasoning</think>answer shape as every other backend
                    opening = think_opening(self.tokenizer, prompt_ids)
                    results[i] = Generation(
                        text=opening + body,
                        token_ids=all_ids,
                        new_tokens=len(new_ids),
                        finish_reason="stop" if (hit_stop or cut) else "length",
                        cached_prompt_tokens=None,
                        prompt_tokens=len(prompt_ids) + len(prefix_ids),
                    )
        return results  # type: ignore[return-value]

    def _forced_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False).input_ids) if text else []

    def _generate_batch(
        self,
        sequences: list[list[int]],
        max_new: int,
        stop: tuple[str, ...],
        temperature: float,
        top_p: float,
        seed: int | None,
    ) -> list[tuple[list[int], bool]]:
        torch = self._torch
        if max_new == 0:
            return [([], False) for _ in sequences]
        for seq in sequences:
            if len(seq) + max_new > self._max_context:
                raise BackendError(
                    f"{self._name}: prompt of {len(seq)} tokens + {max_new} new tokens exceeds the "
                    f"context of {self._max_context} tokens"
                )
        pad = self.tokenizer.pad_token_id
        width = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), width), pad, dtype=torch.long)
        attention = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):  # left padding: generation appends on the right
            input_ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            attention[row, width - len(seq) :] = 1
        kwargs = {
            "max_new_tokens": max_new,
            "pad_token_id": pad,
            "do_sample": temperature > 0,
        }
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=top_p)
            if seed is not None:
                torch.manual_seed(seed)
        else:  # explicit greedy: model generation configs often default to sampling
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if stop:
            kwargs.update(stop_strings=list(stop), tokenizer=self.tokenizer)
        with torch.inference_mode(), self._base_model():
            out = self.model.generate(
                input_ids=input_ids.to(self._device), attention_mask=attention.to(self._device), **kwargs
            )
        eos_ids = _eos_ids(self.model, self.tokenizer)
        results = []
        for row in out[:, width:].tolist():
            new_ids: list[int] = []
            hit_eos = False
            for tok in row:
                new_ids.append(tok)
                if tok in eos_ids:
                    # The EOS token was generated (and costs compute): it counts, as on vLLM and servers.
                    hit_eos = True
                    break
            results.append((new_ids, hit_eos))
        return results

    # --- scoring ------------------------------------------------------------------------------------
    def score(self, prompts: Sequence[Prompt], hidden: HiddenRequest | None = None) -> list[PromptScores]:
        """Log-probabilities and entropies; with ``hidden``, the hidden vectors of the SAME forward pass
        (``output_hidden_states``), read at each prompt's positions before the batch is freed."""
        torch = self._torch
        if hidden is not None:
            num_layers, _ = self.hidden_shape()
            if max(hidden.layers) > num_layers:
                raise BackendError(
                    f"{self._name}: hidden layer {max(hidden.layers)} asked, the model has {num_layers}"
                )
        rendered = [self._render(p) for p in prompts]
        results: list[PromptScores | None] = [None] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: -len(rendered[i]))
        for start in range(0, len(order), self._batch_size):
            batch = order[start : start + self._batch_size]
            seqs = [rendered[i] for i in batch]
            for seq in seqs:
                if len(seq) > self._max_context:
                    raise BackendError(
                        f"{self._name}: prompt of {len(seq)} tokens exceeds the context of {self._max_context} tokens"
                    )
            width = max(len(s) for s in seqs)
            pad = self.tokenizer.pad_token_id
            input_ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            attention = torch.zeros((len(seqs), width), dtype=torch.long)
            for row, seq in enumerate(seqs):  # right padding: positions stay aligned with the tokens
                input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                attention[row, : len(seq)] = 1
            statistics = hidden is None or hidden.statistics
            extra = {} if statistics else {"logits_to_keep": 1}  # hidden vectors only: no vocabulary pass
            with torch.inference_mode(), self._with_adapter(hidden):
                out = self.model(
                    input_ids=input_ids.to(self._device),
                    attention_mask=attention.to(self._device),
                    output_hidden_states=hidden is not None,
                    **extra,
                )
                logits = out.logits
                for row, (i, seq) in enumerate(zip(batch, seqs)):
                    if statistics:
                        logprobs, entropies = _token_logprobs_and_entropy(torch, logits[row, : len(seq)], seq)
                    else:
                        logprobs, entropies = np.zeros(0), np.zeros(0)
                    spans = segment_spans(self._render, prompts[i], seq) if prompts[i].segments else None
                    vectors = None
                    if hidden is not None:
                        vectors = {
                            hidden.key(layer, position): out.hidden_states[layer][row, index]
                            .float()
                            .cpu()
                            .numpy()
                            for layer in hidden.layers
                            for position, index in hidden_positions(len(seq), spans).items()
                        }
                    results[i] = PromptScores(
                        token_logprobs=logprobs,
                        entropies=entropies,
                        num_tokens=len(seq),
                        entropy_method="exact",
                        spans=spans,
                        hidden=vectors,
                    )
                del out, logits
        return results  # type: ignore[return-value]

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        torch = self._torch
        out = []
        for context, continuation in pairs:
            whole, n_ctx = loglikelihood_ids(self.tokenizer, context, continuation, self._max_context)
            with torch.inference_mode(), self._base_model():
                logits = self.model(input_ids=torch.tensor([whole], device=self._device)).logits[0]
            logp = torch.log_softmax(logits[n_ctx - 1 : -1].float(), dim=-1)
            target = torch.tensor(whole[n_ctx:], device=logp.device)
            total = float(logp.gather(1, target[:, None]).sum())
            greedy = bool((logp.argmax(-1) == target).all())
            out.append((total, greedy))
        return out

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
        self._peft = None


def _token_logprobs_and_entropy(torch, logits, seq: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Exact log P(actual next token) and entropy at positions 1..n-1 (the first token has no context)."""
    n = len(seq)
    target = torch.tensor(seq[1:], device=logits.device)
    lp_parts, ent_parts = [], []
    for start in range(0, n - 1, _SCORE_CHUNK):
        stop = min(n - 1, start + _SCORE_CHUNK)
        logp = torch.log_softmax(logits[start:stop].float(), dim=-1)
        lp_parts.append(logp.gather(1, target[start:stop, None])[:, 0])
        ent_parts.append(-(logp.exp() * logp).sum(-1))
    if not lp_parts:
        empty = np.zeros(0, dtype=np.float64)
        return empty, empty.copy()
    logprobs = torch.cat(lp_parts).double().cpu().numpy()
    entropies = torch.cat(ent_parts).double().cpu().numpy()
    return logprobs, entropies


def _eos_ids(model, tokenizer) -> set[int]:
    ids = set()
    for source in (getattr(model, "generation_config", None), model.config):
        eos = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, (list, tuple)):
            ids.update(int(e) for e in eos)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _resolve_device(device: str) -> str:
    import torch

    device = (device or "cpu").strip()
    if device.startswith("cuda") and not torch.cuda.is_available():
        # lm_eval's CLI passes device=cuda:0 by default: on a CPU machine that is seldom a user's
        # choice, so it is no warning on every run; another device name is.
        log = logger.info if device in ("cuda", "cuda:0") else logger.warning
        log("device %s requested but CUDA is not available: using cpu", device)
        return "cpu"
    return device


def _resolve_dtype(dtype: str, device: str):
    import torch

    if dtype in (None, "", "auto"):
        # fp32 on CPU (bf16 matmuls are slow there and scores must be exact); bf16 on GPUs that have it.
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        value = getattr(torch, str(dtype))
    except AttributeError:
        value = None
    if not isinstance(value, torch.dtype):
        raise BackendError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return value
