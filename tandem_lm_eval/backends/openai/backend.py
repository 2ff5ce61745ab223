"""OpenAI-compatible server backend, for either role: ``vllm serve`` (our scale-out path) or a hosted API.

What the server can do decides how each operation is carried out, never the caller:

* ``server="vllm"`` (detected through ``GET /version``): prompts are rendered to token ids by the
  server's ``/tokenize`` (its own chat template) or a local ``tokenizer=``; generations return token
  ids (``return_token_ids``), so a continuation resends ``prompt ids + previous output ids`` and is
  token-exact; the intern scores prompts through ``prompt_logprobs`` (top-k keyed by token id plus
  the actual token); chat continuations prefill the assistant message (``continue_final_message``).
* ``server="openai"`` (any other OpenAI-compatible API): only standard fields are sent. The
  completions endpoint continues by resending ``prompt + previous text``; the chat endpoint of an
  API without assistant prefill cannot continue a message, so a continuation regenerates the whole
  answer with the larger budget (a warning says so): the regenerated part is ``regenerated_tokens``,
  billed in ``tandem_usd`` and counted in ``tandem_tflops``, not in L_L (cost/flops.py).
  Scoring uses ``echo`` + ``logprobs`` on the completions endpoint where the API still offers it.

Entropies from a server are top-k estimates: the exact entropy needs the full distribution, which no
server returns at a practical cost. ``entropy.topk_entropy`` gives the estimate and provable lower/upper
bounds; the actual-token log-probability is exact.

Every request goes through ``transport.ServerClient`` (retries, concurrency, the probe, the key);
request bodies and response fields are in ``messages.py``.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

import numpy as np

from tandem_lm_eval.backends.base import (
    Backend,
    BackendError,
    Generation,
    GenerationRequest,
    HiddenRequest,
    Prompt,
    PromptScores,
)
from tandem_lm_eval.backends.entropy import topk_entropy
from tandem_lm_eval.backends.openai.messages import (
    as_str,
    chat_messages,
    finish_kind,
    ids_or_none,
    join_reasoning,
    sampling_fields,
    unchanged_generation,
    usage_of,
)
from tandem_lm_eval.backends.openai.transport import (
    ServerClient,
    ServerFleet,
    ServerKind,
    Usage,
    parse_base_urls,
)
from tandem_lm_eval.backends.rendering import render_prompt_ids, resolve_model_path, segment_spans
from tandem_lm_eval.common.options import as_choice, as_count, as_float, as_int, converted
from tandem_lm_eval.common.question_hash import prompt_question_hash
from tandem_lm_eval.common.redaction import redact_urls

logger = logging.getLogger(__name__)

# A server's completions and chat endpoints return tokens and log-probabilities, never hidden states.
HIDDEN_REFUSAL = (
    "an OpenAI-compatible server gives no hidden states, which this judge reads: run the intern locally "
    "(intern_backend=hf or vllm, hidden states from the same weights), or use a tandem-v2 classifier"
)

Endpoint = Literal["completions", "chat"]

#: Token id recorded when neither the server nor a local tokenizer can tell the ids; the count is right.
UNKNOWN_TOKEN_ID = -1
_RENDER_CACHE_SIZE = 4096


class OpenAIBackend(Backend):
    """A model behind an OpenAI-compatible HTTP API.

    ``model`` is the served model id. Options (strings from ``model_args`` are accepted):

    ``base_url``        the API root including ``/v1``, e.g. ``http://127.0.0.1:8000/v1``; several
                        servers of the same model (a fleet): ``[url1,url2,...]`` or ``url1|url2``, each
                        question's requests on one of them, ``concurrency`` in flight per server.
    ``api_key_env``     name of the environment variable that holds the key. Unset on a loopback
                        ``base_url``: a placeholder key is used; unset elsewhere: an error.
    ``endpoint``        ``completions`` (default; token-exact continuation on vLLM) or ``chat``.
    ``server``          ``auto`` (probe ``/version``), ``vllm`` or ``openai`` (standard fields only).
    ``concurrency``     requests in flight at once (default 8).
    ``timeout``         seconds to wait for one response (default 600: a retry regenerates everything).
    ``max_retries``     retries per request after the first attempt (default 5), with exponential
                        backoff from ``retry_backoff`` seconds (default 1), honouring Retry-After.
    ``topk``            top-k log-probabilities per position for the entropy estimate (default 20,
                        vLLM's default ``--max-logprobs``; 50 is tighter where the server allows).
    ``score_mode``      ``auto``, ``prompt_logprobs`` (vLLM) or ``echo`` (legacy completions API).
    ``num_parameters``  |θ| for Eq. 12 (active parameters for MoE models): ``32e9`` or ``32B``.
    ``tokenizer``       local tokenizer (folder, ``.gguf`` or hub id) for servers that cannot tokenize.
    ``max_context``     context length, when the server does not report ``max_model_len``.
    ``vocab_size``      vocabulary size for the entropy upper bound (default: the local tokenizer's;
                        unknown: the upper bound is +inf).
    """

    name = "openai"
    #: what ``score`` gives; a sufficiency classifier must have been trained on the same kind
    entropy_method = "topk"

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key_env: str = "OPENAI_API_KEY",
        endpoint: Endpoint | str = "completions",
        server: str = "auto",
        concurrency: int | str = 8,
        timeout: float | str = 600.0,
        max_retries: int | str = 5,
        retry_backoff: float | str = 1.0,
        topk: int | str = 20,
        score_mode: str = "auto",
        num_parameters: int | float | str | None = None,
        tokenizer: str | None = None,
        max_context: int | str | None = None,
        vocab_size: int | str | None = None,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise BackendError("the openai backend needs a model name (the id the server serves)")
        self._model = model.strip()
        self._base_urls = parse_base_urls(base_url)
        self._base_url = self._base_urls[0] if len(self._base_urls) == 1 else "|".join(self._base_urls)
        self._endpoint: Endpoint = _option(as_choice, "endpoint", endpoint, ("completions", "chat"))  # type: ignore[assignment]
        self._server_option = _option(as_choice, "server", server, ("auto", "vllm", "openai"))
        self._concurrency = _option(as_int, "concurrency", concurrency, minimum=1)
        self._timeout = _option(as_float, "timeout", timeout, minimum=0.001)
        self._max_retries = _option(as_int, "max_retries", max_retries, minimum=0)
        self._retry_backoff = _option(as_float, "retry_backoff", retry_backoff, minimum=0.0)
        self._topk = _option(as_int, "topk", topk, minimum=1)
        self._score_mode = _option(as_choice, "score_mode", score_mode, ("auto", "prompt_logprobs", "echo"))
        self._num_parameters = (
            None if num_parameters in (None, "") else _option(as_count, "num_parameters", num_parameters)
        )
        self._max_context_option = (
            None if max_context in (None, "") else _option(as_int, "max_context", max_context, minimum=1)
        )
        self._tokenizer = _load_tokenizer(tokenizer) if tokenizer not in (None, "") else None
        if vocab_size not in (None, ""):
            self._vocab_size: int | None = _option(as_int, "vocab_size", vocab_size, minimum=2)
        else:
            self._vocab_size = len(self._tokenizer) if self._tokenizer is not None else None

        clients = [
            ServerClient(
                self._model,
                url,
                api_key_env,
                server=self._server_option,
                concurrency=self._concurrency,
                timeout=self._timeout,
                max_retries=self._max_retries,
                retry_backoff=self._retry_backoff,
            )
            for url in self._base_urls
        ]
        self.server = clients[0] if len(clients) == 1 else ServerFleet(clients, self._concurrency)
        self._lock = threading.Lock()  # the render cache
        self._render_cache: OrderedDict[Prompt, list[int]] = OrderedDict()

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self._model!r}, base_url={redact_urls(self._base_url)!r}, endpoint={self._endpoint!r})"

    # --- identity -----------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self._model

    @property
    def num_parameters(self) -> int:
        if self._num_parameters is None:
            raise BackendError(
                f"the parameter count of the remote model {self._model!r} is unknown: pass it in model_args "
                "as mentor_num_params= or intern_num_params= (e.g. 32e9; active parameters for MoE models)"
            )
        return self._num_parameters

    @property
    def max_context(self) -> int:
        if self._max_context_option is not None:
            return self._max_context_option
        info = self.server.server_info(None)
        if info.max_model_len:
            return info.max_model_len
        limit = getattr(self._tokenizer, "model_max_length", None)
        if isinstance(limit, int) and 0 < limit < 10_000_000:  # tokenizers without a limit report ~1e30
            return limit
        raise BackendError(
            f"{self.server.where}: the server does not report its context length; pass max_context= "
            "(mentor_max_context= or intern_max_context= in model_args)"
        )

    @property
    def usage(self) -> Usage:
        """Totals of the ``usage`` fields of every answered call, for pricing a whole run."""
        return self.server.usage

    @property
    def server_kind(self) -> ServerKind:
        """``vllm`` or ``openai``: which request extras this server gets (probed once)."""
        return self.server.server_info(None).kind

    def count_tokens(self, prompt: Prompt) -> int:
        ids = self._prompt_ids(prompt, None)
        if ids is None:
            raise BackendError(
                f"{self.server.where}: this server cannot tokenize; pass tokenizer= (a local copy of the "
                "model's tokenizer) to count prompt tokens"
            )
        return len(ids)

    # --- generation ---------------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        one = self._generate_chat if self._endpoint == "chat" else self._generate_completion
        return self.server.run_all(one, requests, key=lambda r: _affinity(r.prompt))

    def _generate_completion(self, req: GenerationRequest, abort: threading.Event | None) -> Generation:
        if req.max_new_tokens == 0:
            return unchanged_generation(req)
        info = self.server.server_info(abort)
        prefix = req.prefix
        prompt_ids = self._prompt_ids(req.prompt, abort)
        prefix_ids = list(prefix.token_ids) if prefix else []
        if prefix and UNKNOWN_TOKEN_ID in prefix_ids:
            prefix_ids = self._encode(prefix.text) if self._tokenizer is not None else None  # type: ignore[assignment]
        # forced text (GenerationRequest.forced_text): context after the prefix, in this model's tokens
        forced_ids = self._text_ids(req.forced_text, abort) if req.forced_text else []
        earlier = (prefix.text if prefix else "") + req.forced_text
        if prompt_ids is not None and prefix_ids is not None and forced_ids is not None:
            # Token ids, not re-tokenized text: the continuation sees exactly the tokens it produced.
            payload: list[int] | str = prompt_ids + prefix_ids + forced_ids
        else:
            payload = self._prompt_text(req.prompt) + earlier
        body: dict[str, Any] = {"model": self._model, "prompt": payload, "max_tokens": req.max_new_tokens}
        body.update(sampling_fields(req))
        if info.kind == "vllm":
            body["return_token_ids"] = True

        def parse(data: dict) -> tuple[str, list[int] | None, str, dict]:
            choice = data["choices"][0]
            return (
                as_str(choice["text"]),
                ids_or_none(choice.get("token_ids")),
                choice.get("finish_reason"),
                usage_of(data),
            )

        text, new_ids, finish, usage = self.server.request("POST", "/completions", body, parse, abort)
        return self._generation(prefix, earlier + text, new_ids, text, finish, usage, forced_ids or ())

    def _generate_chat(self, req: GenerationRequest, abort: threading.Event | None) -> Generation:
        if req.max_new_tokens == 0:
            return unchanged_generation(req)
        info = self.server.server_info(abort)
        prefix = req.prefix
        messages = chat_messages(req.prompt)
        budget = req.max_new_tokens
        body: dict[str, Any] = {"model": self._model}
        regenerate = False
        earlier = (prefix.text if prefix else "") + req.forced_text
        if prefix is not None:
            if info.kind == "vllm":
                # Prefill: the server renders the assistant message unterminated and continues it
                # (after the forced text, if any: GenerationRequest.forced_text).
                messages.append({"role": "assistant", "content": earlier})
                body.update(continue_final_message=True, add_generation_prompt=False)
            elif req.forced_text:
                raise BackendError(
                    f"{self.server.where}: this API cannot continue an assistant message, so it cannot put "
                    "forced text in the model's context; use a vLLM server or endpoint=completions"
                )
            else:
                regenerate = True
                budget += len(prefix.token_ids)
                self.server.warn_once(
                    "regenerate",
                    f"{self.server.where}: the API cannot continue an assistant message; each continuation "
                    "regenerates the whole answer with the larger budget (billed again). Use a vLLM "
                    "server or endpoint=completions for exact continuations.",
                )
        body.update(messages=messages, max_completion_tokens=budget)
        body.update(sampling_fields(req))
        if info.kind == "vllm":
            body["return_token_ids"] = True
            if req.prompt.thinking is not None:
                body["chat_template_kwargs"] = {"enable_thinking": req.prompt.thinking}

        def parse(data: dict) -> tuple[str, str, list[int] | None, str, dict]:
            choice = data["choices"][0]
            message = choice["message"]
            reasoning = message.get("reasoning") or message.get("reasoning_content") or ""
            content = message.get("content") or ""
            return (
                as_str(reasoning),
                as_str(content),
                ids_or_none(choice.get("token_ids")),
                choice.get("finish_reason"),
                usage_of(data),
            )

        reasoning, content, new_ids, finish, usage = self.server.request(
            "POST", "/chat/completions", body, parse, abort
        )
        finish_reason = finish_kind(finish)
        closed = bool(content) or finish_reason == "stop"
        if not regenerate:
            text = join_reasoning(earlier, reasoning, content, closed=closed)
            new_text = text[len(earlier) :]
            forced_ids = (self._text_ids(req.forced_text, abort) or ()) if req.forced_text else ()
            return self._generation(prefix, text, new_ids, new_text, finish, usage, forced_ids)
        # The whole answer came again. Keep the Generation's contract (prefix tokens + new tokens) by
        # counting as new only what goes beyond the earlier length; the rest was generated again:
        # ``regenerated_tokens``, which the ledger bills and counts in TFLOPs (cost/flops.py).
        assert prefix is not None
        whole = join_reasoning("", reasoning, content, closed=closed)
        fresh = self._generation(None, whole, new_ids, whole, finish, usage)
        before = len(prefix.token_ids)
        if not fresh.text.startswith(prefix.text):
            logger.debug(
                "%s: the regenerated answer differs from the earlier stage's text", self.server.where
            )
        return replace(
            fresh,
            token_ids=prefix.token_ids + fresh.token_ids[before:],
            new_tokens=max(0, len(fresh.token_ids) - before),
            regenerated_tokens=min(before, len(fresh.token_ids)),
        )

    def _generation(
        self,
        prefix: Generation | None,
        text: str,
        new_ids: list[int] | None,
        new_text: str,
        finish: str | None,
        usage: dict,
        forced_ids: Sequence[int] = (),
    ) -> Generation:
        """``forced_ids``: the tokens of a request's forced text, between the prefix and the new ones
        (empty when this server cannot tokenize: the text still holds the forced text)."""
        billed_out = usage.get("completion_tokens")
        if new_ids is None:
            # The server did not say which tokens: the billed count, as placeholder ids, is exact for
            # cost (hidden reasoning included); a local tokenization only when there is no count.
            if isinstance(billed_out, int):
                new_ids = [UNKNOWN_TOKEN_ID] * billed_out
            elif self._tokenizer is not None:
                new_ids = self._encode(new_text)
            else:
                raise BackendError(
                    f"{self.server.where}: the server returned neither token ids nor usage counts"
                )
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        prompt_tokens = usage.get("prompt_tokens")
        return Generation(
            text=text,
            token_ids=tuple((prefix.token_ids if prefix else ()) + tuple(forced_ids) + tuple(new_ids)),
            new_tokens=len(new_ids),
            finish_reason=finish_kind(finish),
            cached_prompt_tokens=cached if isinstance(cached, int) else None,
            prompt_tokens=prompt_tokens if isinstance(prompt_tokens, int) else None,
        )

    # --- scoring ------------------------------------------------------------------------------------
    def score(self, prompts: Sequence[Prompt], hidden: HiddenRequest | None = None) -> list[PromptScores]:
        if hidden is not None:
            raise BackendError(HIDDEN_REFUSAL)
        return self.server.run_all(self._score_one, prompts, key=_affinity)

    def _score_one(self, prompt: Prompt, abort: threading.Event | None) -> PromptScores:
        info = self.server.server_info(abort)
        mode = (
            self._score_mode
            if self._score_mode != "auto"
            else ("prompt_logprobs" if info.kind == "vllm" else "echo")
        )
        ids = self._prompt_ids(prompt, abort)
        payload: list[int] | str = ids if ids is not None else self._prompt_text(prompt)
        body: dict[str, Any] = {"model": self._model, "prompt": payload, "max_tokens": 1, "temperature": 0.0}
        k = self._topk
        if mode == "prompt_logprobs":
            if ids is None:
                raise BackendError(
                    f"{self.server.where}: score_mode=prompt_logprobs needs token ids (a vLLM server)"
                )
            body["prompt_logprobs"] = k

            def parse(data: dict) -> tuple[list[float], list[list[float]], list[bool]]:
                rows = data["choices"][0]["prompt_logprobs"]
                if len(rows) != len(ids):
                    raise ValueError(f"{len(rows)} prompt positions for a prompt of {len(ids)} tokens")
                actual, listed = [], []
                for pos in range(1, len(ids)):
                    row = rows[pos]
                    actual.append(float(row[str(ids[pos])]["logprob"]))
                    listed.append([float(e["logprob"]) for e in row.values()])
                return actual, listed, [True] * len(actual)

        else:
            body.update(echo=True, logprobs=k)

            def parse(data: dict) -> tuple[list[float], list[list[float]], list[bool]]:
                logprobs = data["choices"][0]["logprobs"]
                n = len(ids) if ids is not None else int(data["usage"]["prompt_tokens"])
                tokens, top = logprobs["token_logprobs"], logprobs["top_logprobs"]
                if len(tokens) < n or len(top) < n:
                    raise ValueError(f"{len(tokens)} echoed positions for a prompt of {n} tokens")
                actual = [float(v) for v in tokens[1:n]]
                listed = [[float(v) for v in (top[pos] or {}).values()] for pos in range(1, n)]
                # Keyed by token *string*: distinct ids that decode alike collapse into one entry, so a
                # top-k token may be missing. The list is surely the top-k when it has k+1 entries (the
                # actual token ranked below k), or k entries with the actual token not the smallest (it
                # is then inside the top-k, so there is no room for a collapse).
                complete = [
                    len(values) > k or (len(values) == k and lp > min(values))
                    for lp, values in zip(actual, listed)
                ]
                return actual, listed, complete

        actual, listed, complete = self.server.request("POST", "/completions", body, parse, abort)
        estimate, lower, upper = (np.zeros(len(actual)) for _ in range(3))
        for pos, values in enumerate(listed):
            estimate[pos], lower[pos], upper[pos] = topk_entropy(
                values, k=k, vocab_size=self._vocab_size, complete=complete[pos]
            )
        spans = None
        if ids is not None and prompt.segments:
            spans = segment_spans(lambda p: self._prompt_ids(p, abort) or [], prompt, ids)
        return PromptScores(
            token_logprobs=np.asarray(actual, dtype=np.float64),
            entropies=estimate,
            num_tokens=len(actual) + 1,
            entropy_method="topk",
            entropy_bounds=(lower, upper),
            spans=spans,
        )

    def close(self) -> None:
        self.server.close()

    # --- plumbing -----------------------------------------------------------------------------------

    def _prompt_ids(self, prompt: Prompt, abort: threading.Event | None) -> list[int] | None:
        """The prompt as the model sees it, or None when neither we nor the server can tokenize."""
        if self._tokenizer is not None:
            return render_prompt_ids(self._tokenizer, prompt)
        if self.server.server_info(abort).kind != "vllm":
            return None
        with self._lock:
            cached = self._render_cache.get(prompt)
        if cached is not None:
            return list(cached)
        if prompt.raw_text is not None:
            body: dict[str, Any] = {
                "model": self._model,
                "prompt": prompt.raw_text,
                "add_special_tokens": True,
            }
        else:
            body = {"model": self._model, "messages": chat_messages(prompt), "add_generation_prompt": True}
            if prompt.thinking is not None:
                body["chat_template_kwargs"] = {"enable_thinking": prompt.thinking}
        ids = self.server.request(
            "POST", f"{self.server.root}/tokenize", body, lambda d: ids_or_none(d["tokens"]), abort
        )
        if not ids:
            raise BackendError(f"{self.server.where}: empty prompt")
        with self._lock:
            self._render_cache[prompt] = ids
            while len(self._render_cache) > _RENDER_CACHE_SIZE:
                self._render_cache.popitem(last=False)
        return list(ids)

    def _text_ids(self, text: str, abort: threading.Event | None) -> list[int] | None:
        """Token ids of a piece of raw text (no special tokens): the local tokenizer's, or the vLLM
        server's ``/tokenize``; None when neither can tokenize."""
        if self._tokenizer is not None:
            return self._encode(text)
        if self.server.server_info(abort).kind != "vllm":
            return None
        body = {"model": self._model, "prompt": text, "add_special_tokens": False}
        return self.server.request(
            "POST", f"{self.server.root}/tokenize", body, lambda d: ids_or_none(d["tokens"]), abort
        )

    def _prompt_text(self, prompt: Prompt) -> str:
        if prompt.raw_text is not None:
            return prompt.raw_text
        raise BackendError(
            f"{self.server.where}: endpoint=completions cannot apply the chat template on this server; pass "
            "tokenizer= (a local copy of the model's tokenizer) or use endpoint=chat"
        )

    def _encode(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=False).input_ids)  # type: ignore[misc]


def _load_tokenizer(spec: str):
    from transformers import AutoTokenizer

    path, gguf_file = resolve_model_path(str(spec))
    try:
        return AutoTokenizer.from_pretrained(path, **({"gguf_file": gguf_file} if gguf_file else {}))
    except (OSError, ValueError) as exc:
        raise BackendError(f"could not load tokenizer {spec!r}: {str(exc).splitlines()[0]}") from exc


# the shared converters (common/options.py), reporting as this backend
_option = functools.partial(converted, BackendError, "openai backend: ")


def _affinity(prompt: Prompt) -> str:
    """Which server of a fleet gets a request: the question it is about (the ``question`` segment of an
    intern prompt, else the prompt's question), so a question's stages and its answer meet one server's
    prefix cache."""
    for seg in prompt.segments:
        if seg.name == "question":
            return prompt.segment_source(seg)[seg.start : seg.end]
    return prompt_question_hash(prompt)
