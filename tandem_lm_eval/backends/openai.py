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
  answer with the larger budget (a warning says so; the whole output is billed again and counted).
  Scoring uses ``echo`` + ``logprobs`` on the completions endpoint where the API still offers it.

Entropies from a server are top-k estimates: the exact entropy needs the full distribution, which no
server returns at a practical cost. ``entropy.topk_entropy`` gives the estimate and provable lower/upper
bounds; the actual-token log-probability is exact.

Retries are ours (the SDK's are switched off) so that every failure mode (timeouts, 429 with
Retry-After, 5xx, dropped connections, malformed JSON) is retried the same bounded way, and a request
that still fails ends the whole batch with one ``BackendError``. Each request fills exactly one
result slot, so a retry can never lose or duplicate an answer. The API key is read from an
environment variable and kept inside the HTTP client: it is never logged, put in ``repr`` or in an
error message.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import numpy as np

from ..entropy import topk_entropy
from ..options import as_choice, as_count, as_float, as_int, converted
from ..thinking import THINK_CLOSE, THINK_OPEN
from .base import Backend, BackendError, Generation, GenerationRequest, Prompt, PromptScores
from .rendering import render_prompt_ids, resolve_model_path, segment_spans

logger = logging.getLogger(__name__)

Endpoint = Literal["completions", "chat"]
ServerKind = Literal["vllm", "openai"]

#: Token id recorded when neither the server nor a local tokenizer can tell the ids; the count is right.
UNKNOWN_TOKEN_ID = -1
# Local servers (vllm serve without --api-key) accept any key, but the SDK insists on one.
_PLACEHOLDER_KEY = "EMPTY"
_RETRY_STATUSES = frozenset({408, 409, 425, 429})
_MAX_BACKOFF_S = 30.0
# A Retry-After beyond this is a server asking us to stop for a long time: honour it only up to here.
_MAX_RETRY_AFTER_S = 300.0
_RENDER_CACHE_SIZE = 4096

T = TypeVar("T")


class _StatusError(BackendError):
    """A non-retryable HTTP status (4xx): the request itself is wrong, repeating it cannot help."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Aborted(Exception):
    """Another request of the same batch failed for good: stop retrying, the batch is lost anyway."""


@dataclass(frozen=True)
class Usage:
    """Token counts the server reported over a backend's life: what a hosted API bills.

    Covers every answered call (generation and scoring, regenerations included). A call whose answer
    was lost to a fault and retried may have been billed too; no server reports that.
    """

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0


@dataclass(frozen=True)
class _ServerInfo:
    kind: ServerKind
    max_model_len: int | None


class OpenAIBackend(Backend):
    """A model behind an OpenAI-compatible HTTP API.

    ``model`` is the served model id. Options (strings from ``model_args`` are accepted):

    ``base_url``        the API root including ``/v1``, e.g. ``http://127.0.0.1:8000/v1``.
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
        import openai

        if not isinstance(model, str) or not model.strip():
            raise BackendError("the openai backend needs a model name (the id the server serves)")
        self._model = model.strip()
        self._base_url = _check_base_url(base_url)
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

        api_key_env = str(api_key_env or "").strip()
        if not api_key_env:
            raise BackendError("api_key_env must name an environment variable")
        key = os.environ.get(api_key_env)
        if not key:
            if not _is_loopback(self._base_url):
                raise BackendError(
                    f"the environment variable {api_key_env} is not set; it must hold the API key for "
                    f"{self._base_url} (api_key_env=NAME reads another variable)"
                )
            key = _PLACEHOLDER_KEY
        # Remembered only to scrub it from error text a server might echo back; never printed.
        self._secret = key if key != _PLACEHOLDER_KEY else None
        self._client = openai.OpenAI(
            base_url=self._base_url, api_key=key, timeout=self._timeout, max_retries=0
        )
        self._openai = openai
        # /tokenize and /version live at the server root, beside /v1.
        self._root = self._base_url[: -len("/v1")] if self._base_url.endswith("/v1") else self._base_url
        self._lock = threading.Lock()
        self._probe_lock = threading.Lock()  # one probe, however many workers ask first
        self._info: _ServerInfo | None = None
        self._render_cache: OrderedDict[Prompt, list[int]] = OrderedDict()
        self._warned: set[str] = set()
        self._usage = Usage()

    def __repr__(self) -> str:
        return (
            f"OpenAIBackend(model={self._model!r}, base_url={self._base_url!r}, endpoint={self._endpoint!r})"
        )

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
        info = self._server_info(None)
        if info.max_model_len:
            return info.max_model_len
        limit = getattr(self._tokenizer, "model_max_length", None)
        if isinstance(limit, int) and 0 < limit < 10_000_000:  # tokenizers without a limit report ~1e30
            return limit
        raise BackendError(
            f"{self._where}: the server does not report its context length; pass max_context= "
            "(mentor_max_context= or intern_max_context= in model_args)"
        )

    @property
    def usage(self) -> Usage:
        """Totals of the ``usage`` fields of every answered call, for pricing a whole run."""
        with self._lock:
            return self._usage

    @property
    def server_kind(self) -> ServerKind:
        """``vllm`` or ``openai``: which request extras this server gets (probed once)."""
        return self._server_info(None).kind

    def count_tokens(self, prompt: Prompt) -> int:
        ids = self._prompt_ids(prompt, None)
        if ids is None:
            raise BackendError(
                f"{self._where}: this server cannot tokenize; pass tokenizer= (a local copy of the "
                "model's tokenizer) to count prompt tokens"
            )
        return len(ids)

    # --- generation ---------------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        one = self._generate_chat if self._endpoint == "chat" else self._generate_completion
        return self._run_all(one, requests)

    def _generate_completion(self, req: GenerationRequest, abort: threading.Event | None) -> Generation:
        if req.max_new_tokens == 0:
            return _unchanged(req)
        info = self._server_info(abort)
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
        body.update(_sampling(req))
        if info.kind == "vllm":
            body["return_token_ids"] = True

        def parse(data: dict) -> tuple[str, list[int] | None, str, dict]:
            choice = data["choices"][0]
            return (
                _as_str(choice["text"]),
                _ids_or_none(choice.get("token_ids")),
                choice.get("finish_reason"),
                _usage(data),
            )

        text, new_ids, finish, usage = self._request("POST", "/completions", body, parse, abort)
        return self._generation(prefix, earlier + text, new_ids, text, finish, usage, forced_ids or ())

    def _generate_chat(self, req: GenerationRequest, abort: threading.Event | None) -> Generation:
        if req.max_new_tokens == 0:
            return _unchanged(req)
        info = self._server_info(abort)
        prefix = req.prefix
        messages = _chat_messages(req.prompt)
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
                    f"{self._where}: this API cannot continue an assistant message, so it cannot put "
                    "forced text in the model's context; use a vLLM server or endpoint=completions"
                )
            else:
                regenerate = True
                budget += len(prefix.token_ids)
                self._warn_once(
                    "regenerate",
                    f"{self._where}: the API cannot continue an assistant message; each continuation "
                    "regenerates the whole answer with the larger budget (billed again). Use a vLLM "
                    "server or endpoint=completions for exact continuations.",
                )
        body.update(messages=messages, max_completion_tokens=budget)
        body.update(_sampling(req))
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
                _as_str(reasoning),
                _as_str(content),
                _ids_or_none(choice.get("token_ids")),
                choice.get("finish_reason"),
                _usage(data),
            )

        reasoning, content, new_ids, finish, usage = self._request(
            "POST", "/chat/completions", body, parse, abort
        )
        finish_reason = _finish(finish)
        closed = bool(content) or finish_reason == "stop"
        if not regenerate:
            text = join_reasoning(earlier, reasoning, content, closed=closed)
            new_text = text[len(earlier) :]
            forced_ids = (self._text_ids(req.forced_text, abort) or ()) if req.forced_text else ()
            return self._generation(prefix, text, new_ids, new_text, finish, usage, forced_ids)
        # The whole answer came again. Keep the Generation's contract (prefix tokens + new tokens) by
        # counting as new only what goes beyond the earlier length; the billed total is in ``usage``.
        assert prefix is not None
        whole = join_reasoning("", reasoning, content, closed=closed)
        fresh = self._generation(None, whole, new_ids, whole, finish, usage)
        before = len(prefix.token_ids)
        if not fresh.text.startswith(prefix.text):
            logger.debug("%s: the regenerated answer differs from the earlier stage's text", self._where)
        return replace(
            fresh,
            token_ids=prefix.token_ids + fresh.token_ids[before:],
            new_tokens=max(0, len(fresh.token_ids) - before),
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
                raise BackendError(f"{self._where}: the server returned neither token ids nor usage counts")
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        prompt_tokens = usage.get("prompt_tokens")
        return Generation(
            text=text,
            token_ids=tuple((prefix.token_ids if prefix else ()) + tuple(forced_ids) + tuple(new_ids)),
            new_tokens=len(new_ids),
            finish_reason=_finish(finish),
            cached_prompt_tokens=cached if isinstance(cached, int) else None,
            prompt_tokens=prompt_tokens if isinstance(prompt_tokens, int) else None,
        )

    # --- scoring ------------------------------------------------------------------------------------
    def score(self, prompts: Sequence[Prompt]) -> list[PromptScores]:
        return self._run_all(self._score_one, prompts)

    def _score_one(self, prompt: Prompt, abort: threading.Event | None) -> PromptScores:
        info = self._server_info(abort)
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
                    f"{self._where}: score_mode=prompt_logprobs needs token ids (a vLLM server)"
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

        actual, listed, complete = self._request("POST", "/completions", body, parse, abort)
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
        self._client.close()

    # --- plumbing -----------------------------------------------------------------------------------
    @property
    def _where(self) -> str:
        return f"openai backend ({self._model} at {self._base_url})"

    def _warn_once(self, key: str, message: str) -> None:
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        logger.warning(message)

    def _run_all(self, one: Callable[[Any, threading.Event | None], T], items: Sequence[Any]) -> list[T]:
        """``one(item)`` for every item, ``concurrency`` at a time; results in item order.

        The first request that fails for good aborts the others (no further retries) and is the one
        error raised: a batch ends with every answer or with exactly one BackendError.
        """
        if not items:
            return []
        abort = threading.Event()
        workers = min(self._concurrency, len(items))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai-backend") as pool:
            futures = [pool.submit(one, item, abort) for item in items]
            _, pending = wait(futures, return_when=FIRST_EXCEPTION)
            if pending:  # something failed: stop the rest before they spend retries
                abort.set()
                for future in pending:
                    future.cancel()
                wait(pending)
            for future in futures:  # the failure of the earliest request, for a reproducible message
                exc = None if future.cancelled() else future.exception()
                if exc is not None and not isinstance(exc, _Aborted):
                    raise exc
            return [future.result() for future in futures]

    def _request(
        self,
        method: Literal["GET", "POST"],
        path: str,
        body: dict | None,
        parse: Callable[[Any], T],
        abort: threading.Event | None,
        *,
        retry_malformed: bool = True,
    ) -> T:
        """One logical request: retried on timeouts, 408/409/429/5xx, dropped connections and
        responses that are not the JSON we expect; other HTTP errors fail at once.

        ``retry_malformed=False``: an unexpected body is an answer (a probe), raised as a status error.
        """
        openai = self._openai
        attempts = self._max_retries + 1
        last = ""
        for attempt in range(attempts):
            if abort is not None and abort.is_set():
                raise _Aborted
            retry_after: float | None = None
            try:
                if method == "GET":
                    text = self._client.get(path, cast_to=str)
                else:
                    # cast_to=str: the SDK hands back the body unparsed, so malformed JSON is ours to catch.
                    text = self._client.post(path, cast_to=str, body=body)
                data = json.loads(text)
                result = parse(data)
                if isinstance(data, dict) and isinstance(data.get("usage"), dict):
                    self._count_usage(data["usage"])  # once per answered call, after it parsed
                return result
            except openai.APIStatusError as exc:
                status = exc.status_code
                message = self._scrub(_server_message(exc))
                if status < 500 and status not in _RETRY_STATUSES:
                    raise _StatusError(
                        f"{self._where}: {path} answered HTTP {status}: {message}", status
                    ) from None
                last = f"HTTP {status}: {message}"
                retry_after = _retry_after_seconds(exc.response.headers)
            except openai.APITimeoutError:
                last = f"no response within timeout={self._timeout:g} s"
            except openai.APIConnectionError as exc:
                last = f"connection failed ({self._scrub(str(exc.__cause__ or exc))})"
            except (
                ValueError,
                KeyError,
                TypeError,
                IndexError,
                AttributeError,
            ) as exc:  # JSONDecodeError is a ValueError
                last = f"malformed response ({type(exc).__name__}: {self._scrub(str(exc))[:200]})"
                if not retry_malformed:
                    raise _StatusError(f"{self._where}: {path}: {last}", 200) from None
            if attempt + 1 == attempts:
                break
            delay = min(_MAX_BACKOFF_S, self._retry_backoff * 2**attempt) * random.uniform(0.5, 1.0)
            if retry_after is not None:
                delay = max(delay, min(retry_after, _MAX_RETRY_AFTER_S))
            logger.warning(
                "%s: %s %s: %s; retry %d/%d in %.1f s",
                self._where, method, path, last, attempt + 1, self._max_retries, delay,
            )  # fmt: skip
            if abort is not None:
                if abort.wait(delay):
                    raise _Aborted
            else:
                time.sleep(delay)
        raise BackendError(
            f"{self._where}: {method} {path} failed after {attempts} attempts; last error: {last}"
        )

    def _count_usage(self, usage: dict) -> None:
        def tokens(value: Any) -> int:
            return value if isinstance(value, int) else 0

        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        with self._lock:
            u = self._usage
            self._usage = Usage(
                calls=u.calls + 1,
                prompt_tokens=u.prompt_tokens + tokens(usage.get("prompt_tokens")),
                completion_tokens=u.completion_tokens + tokens(usage.get("completion_tokens")),
                cached_prompt_tokens=u.cached_prompt_tokens + tokens(cached),
            )

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _server_info(self, abort: threading.Event | None) -> _ServerInfo:
        if self._info is None:
            with self._probe_lock:
                if self._info is None:
                    self._info = self._probe(abort)
        return self._info

    def _probe(self, abort: threading.Event | None) -> _ServerInfo:
        """What the server is (vLLM or another OpenAI-compatible API) and, for vLLM, its context."""
        kind = self._server_option
        if kind == "auto":
            try:
                version = self._request(
                    "GET", f"{self._root}/version", None, lambda d: d["version"], abort, retry_malformed=False
                )
                kind = "vllm" if isinstance(version, str) else "openai"
            except _StatusError:  # no /version (or not vLLM's): use standard fields only
                kind = "openai"
        max_len = None
        if kind == "vllm":
            served = self._request("GET", "/models", None, lambda d: list(d["data"]), abort)
            entry = next((m for m in served if m.get("id") == self._model), None)
            if entry is None:
                names = ", ".join(repr(m.get("id")) for m in served)
                raise BackendError(
                    f"{self._where}: the server does not serve {self._model!r}; it serves {names}"
                )
            max_len = entry.get("max_model_len") if isinstance(entry.get("max_model_len"), int) else None
        return _ServerInfo(kind=kind, max_model_len=max_len)  # type: ignore[arg-type]

    def _prompt_ids(self, prompt: Prompt, abort: threading.Event | None) -> list[int] | None:
        """The prompt as the model sees it, or None when neither we nor the server can tokenize."""
        if self._tokenizer is not None:
            return render_prompt_ids(self._tokenizer, prompt)
        if self._server_info(abort).kind != "vllm":
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
            body = {"model": self._model, "messages": _chat_messages(prompt), "add_generation_prompt": True}
            if prompt.thinking is not None:
                body["chat_template_kwargs"] = {"enable_thinking": prompt.thinking}
        ids = self._request(
            "POST", f"{self._root}/tokenize", body, lambda d: _ids_or_none(d["tokens"]), abort
        )
        if not ids:
            raise BackendError(f"{self._where}: empty prompt")
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
        if self._server_info(abort).kind != "vllm":
            return None
        body = {"model": self._model, "prompt": text, "add_special_tokens": False}
        return self._request(
            "POST", f"{self._root}/tokenize", body, lambda d: _ids_or_none(d["tokens"]), abort
        )

    def _prompt_text(self, prompt: Prompt) -> str:
        if prompt.raw_text is not None:
            return prompt.raw_text
        raise BackendError(
            f"{self._where}: endpoint=completions cannot apply the chat template on this server; pass "
            "tokenizer= (a local copy of the model's tokenizer) or use endpoint=chat"
        )

    def _encode(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=False).input_ids)  # type: ignore[misc]


# --- reasoning fields -------------------------------------------------------------------------------
def join_reasoning(prefix_text: str, reasoning: str, content: str, *, closed: bool) -> str:
    """Append a chat response to earlier text, the reasoning wrapped as ``<think>...</think>``.

    Servers with a reasoning parser return the thinking in ``message.reasoning`` (older vLLM:
    ``reasoning_content``) and the answer in ``content``; downstream ``thinking.split_thinking``
    expects one text. A prefix that stopped inside ``<think>`` continues without a second opening tag.
    ``closed``: the thinking ended (an answer follows, or the model stopped by itself).
    """
    text = prefix_text
    in_think = text.rfind(THINK_OPEN) > text.rfind(THINK_CLOSE)
    if reasoning:
        if not in_think:
            text += THINK_OPEN
        text += reasoning
        if closed:
            text += THINK_CLOSE
    return text + content


# --- small helpers ----------------------------------------------------------------------------------
def _unchanged(req: GenerationRequest) -> Generation:
    """A zero-token request: nothing is sent and nothing billed."""
    prefix = req.prefix
    return Generation(
        text=prefix.text if prefix else "",
        token_ids=prefix.token_ids if prefix else (),
        new_tokens=0,
        finish_reason="length",
        prompt_tokens=0,
    )


def _sampling(req: GenerationRequest) -> dict[str, Any]:
    out: dict[str, Any] = {"temperature": req.temperature}
    if req.temperature > 0 and req.top_p < 1:
        out["top_p"] = req.top_p
    if req.stop:
        out["stop"] = list(req.stop)
    if req.seed is not None:
        out["seed"] = req.seed
    return out


def _chat_messages(prompt: Prompt) -> list[dict[str, str]]:
    if prompt.raw_text is not None:  # an already-rendered context: the user's turn on a chat API
        return [{"role": "user", "content": prompt.raw_text}]
    return [{"role": m.role, "content": m.content} for m in prompt.messages]


def _finish(reason: Any) -> Literal["stop", "length"]:
    # "stop", "eos", "abort", "content_filter": the model did not run into the token budget.
    return "length" if reason == "length" else "stop"


def _usage(data: dict) -> dict:
    usage = data.get("usage")
    return usage if isinstance(usage, dict) else {}


def _as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _ids_or_none(value: Any) -> list[int] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
        raise TypeError("token ids are not a list of integers")
    return list(value)


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)  # the SDK already unwraps {"error": {...}} where it can
    if isinstance(body, dict):
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else body.get("message")
        if message:
            return str(message)[:500]
    return str(getattr(exc, "message", exc))[:500]


def _retry_after_seconds(headers: Any) -> float | None:
    """Seconds from ``Retry-After`` (seconds or HTTP date) or ``retry-after-ms``; None if absent."""
    try:
        if headers.get("retry-after-ms") is not None:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


def _check_base_url(base_url: Any) -> str:
    url = str(base_url or "").strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BackendError(
            f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}"
        )
    return url


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _load_tokenizer(spec: str):
    from transformers import AutoTokenizer

    path, gguf_file = resolve_model_path(str(spec))
    try:
        return AutoTokenizer.from_pretrained(path, **({"gguf_file": gguf_file} if gguf_file else {}))
    except (OSError, ValueError) as exc:
        raise BackendError(f"could not load tokenizer {spec!r}: {str(exc).splitlines()[0]}") from exc


# the shared converters (options.py), reporting as this backend
_option = functools.partial(converted, BackendError, "openai backend: ")
