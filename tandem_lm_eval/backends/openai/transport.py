"""HTTP transport to an OpenAI-compatible server, shared by every request of a backend.

Retries are ours (the SDK's are switched off) so that every failure mode (timeouts, 429 with
Retry-After, 5xx, dropped connections, malformed JSON) is retried the same bounded way, and a request
that still fails ends the whole batch with one ``BackendError``. Each request fills exactly one
result slot, so a retry can never lose or duplicate an answer. The API key is read from an
environment variable and kept inside the HTTP client: it is never logged, put in ``repr`` or in an
error message."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from tandem_lm_eval.backends.base import (
    BackendError,
)
from tandem_lm_eval.common.errors import TandemError
from tandem_lm_eval.common.redaction import redact_urls

# Local servers (vllm serve without --api-key) accept any key, but the SDK insists on one.
logger = logging.getLogger(__name__)

ServerKind = Literal["vllm", "openai"]

_PLACEHOLDER_KEY = "EMPTY"


_RETRY_STATUSES = frozenset({408, 409, 425, 429})


_MAX_BACKOFF_S = 30.0


# A Retry-After beyond this is a server asking us to stop for a long time: honour it only up to here.
_MAX_RETRY_AFTER_S = 300.0


T = TypeVar("T")


class StatusError(BackendError):
    """A non-retryable HTTP status (4xx): the request itself is wrong, repeating it cannot help."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Aborted(TandemError):
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
class ServerInfo:
    kind: ServerKind
    max_model_len: int | None


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


def check_base_url(base_url: Any) -> str:
    url = str(base_url or "").strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BackendError(
            f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {redact_urls(str(base_url))!r}"
        )
    return url


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServerClient:
    """One OpenAI-compatible server as a backend talks to it: the HTTP client holding the key, the
    retry policy, the probe of what the server is, and the usage it reported.

    ``model`` is the served model id (for messages and the probe); ``server`` is ``auto`` (probe
    ``/version``), ``vllm`` or ``openai``. Values come checked by the backend.
    """

    def __init__(
        self,
        model: str,
        base_url: str,
        api_key_env: str,
        *,
        server: str,
        concurrency: int,
        timeout: float,
        max_retries: int,
        retry_backoff: float,
    ) -> None:
        import openai

        self._model = model
        self.base_url = check_base_url(base_url)
        self._server_option = server
        self._concurrency = concurrency
        self._timeout = timeout
        self._max_retries = max_retries
        self._retry_backoff = retry_backoff
        api_key_env = str(api_key_env or "").strip()
        if not api_key_env:
            raise BackendError("api_key_env must name an environment variable")
        key = os.environ.get(api_key_env)
        if not key:
            if not is_loopback(self.base_url):
                raise BackendError(
                    f"the environment variable {api_key_env} is not set; it must hold the API key for "
                    f"{redact_urls(self.base_url)} (api_key_env=NAME reads another variable)"
                )
            key = _PLACEHOLDER_KEY
        # Remembered only to scrub it from error text a server might echo back; never printed.
        self._secret = key if key != _PLACEHOLDER_KEY else None
        # A query string (``?api-version=...``, a token) goes with every request as the client's default
        # query: glued to the base URL, the client would append the endpoint's path to the query itself.
        parts = urlsplit(self.base_url)
        endpoint_url = urlunsplit(parts._replace(query="", fragment="")).rstrip("/")
        self.client = openai.OpenAI(
            base_url=endpoint_url,
            api_key=key,
            timeout=timeout,
            max_retries=0,
            default_query=dict(parse_qsl(parts.query, keep_blank_values=True)) or None,
        )
        self.openai = openai
        # /tokenize and /version live at the server root, beside /v1.
        self.root = endpoint_url[: -len("/v1")] if endpoint_url.endswith("/v1") else endpoint_url
        self._lock = threading.Lock()
        self._probe_lock = threading.Lock()  # one probe, however many workers ask first
        self.info: ServerInfo | None = None
        self._warned: set[str] = set()
        self._usage = Usage()

    def close(self) -> None:
        self.client.close()

    @property
    def where(self) -> str:
        return f"openai backend ({self._model} at {redact_urls(self.base_url)})"

    def warn_once(self, key: str, message: str) -> None:
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        logger.warning(message)

    def run_all(
        self,
        one: Callable[[Any, threading.Event | None], T],
        items: Sequence[Any],
        key: Callable[[Any], str] | None = None,
        *,
        workers: int | None = None,
    ) -> list[T]:
        """``one(item)`` for every item, ``concurrency`` at a time (or ``workers``); results in item order.
        ``key`` (the affinity of an item) matters to a fleet only.

        The first request that fails for good aborts the others (no further retries) and is the one
        error raised: a batch ends with every answer or with exactly one BackendError.
        """
        if not items:
            return []
        abort = threading.Event()
        workers = min(workers or self._concurrency, len(items))
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
                if exc is not None and not isinstance(exc, Aborted):
                    raise exc
            return [future.result() for future in futures]

    def request(
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
        openai = self.openai
        attempts = self._max_retries + 1
        last = ""
        for attempt in range(attempts):
            if abort is not None and abort.is_set():
                raise Aborted
            retry_after: float | None = None
            try:
                if method == "GET":
                    text = self.client.get(path, cast_to=str)
                else:
                    # cast_to=str: the SDK hands back the body unparsed, so malformed JSON is ours to catch.
                    text = self.client.post(path, cast_to=str, body=body)
                data = json.loads(text)
                result = parse(data)
                if isinstance(data, dict) and isinstance(data.get("usage"), dict):
                    self._count_usage(data["usage"])  # once per answered call, after it parsed
                return result
            except openai.APIStatusError as exc:
                status = exc.status_code
                message = self.scrub(_server_message(exc))
                if status < 500 and status not in _RETRY_STATUSES:
                    raise StatusError(
                        f"{self.where}: {path} answered HTTP {status}: {message}", status
                    ) from None
                last = f"HTTP {status}: {message}"
                retry_after = _retry_after_seconds(exc.response.headers)
            except openai.APITimeoutError:
                last = f"no response within timeout={self._timeout:g} s"
            except openai.APIConnectionError as exc:
                last = f"connection failed ({self.scrub(str(exc.__cause__ or exc))})"
            except (
                ValueError,
                KeyError,
                TypeError,
                IndexError,
                AttributeError,
            ) as exc:  # JSONDecodeError is a ValueError
                last = f"malformed response ({type(exc).__name__}: {self.scrub(str(exc))[:200]})"
                if not retry_malformed:
                    raise StatusError(f"{self.where}: {path}: {last}", 200) from None
            if attempt + 1 == attempts:
                break
            delay = min(_MAX_BACKOFF_S, self._retry_backoff * 2**attempt) * random.uniform(0.5, 1.0)
            if retry_after is not None:
                delay = max(delay, min(retry_after, _MAX_RETRY_AFTER_S))
            logger.warning(
                "%s: %s %s: %s; retry %d/%d in %.1f s",
                self.where, method, path, last, attempt + 1, self._max_retries, delay,
            )  # fmt: skip
            if abort is not None:
                if abort.wait(delay):
                    raise Aborted
            else:
                time.sleep(delay)
        raise BackendError(
            f"{self.where}: {method} {path} failed after {attempts} attempts; last error: {last}"
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

    def scrub(self, text: str) -> str:
        text = redact_urls(text)  # a server or the HTTP client may echo the URL, credentials and all
        return text.replace(self._secret, "***") if self._secret else text

    def server_info(self, abort: threading.Event | None) -> ServerInfo:
        if self.info is None:
            with self._probe_lock:
                if self.info is None:
                    self.info = self._probe(abort)
        return self.info

    def _probe(self, abort: threading.Event | None) -> ServerInfo:
        """What the server is (vLLM or another OpenAI-compatible API) and, for vLLM, its context."""
        kind = self._server_option
        if kind == "auto":
            try:
                version = self.request(
                    "GET", f"{self.root}/version", None, lambda d: d["version"], abort, retry_malformed=False
                )
                kind = "vllm" if isinstance(version, str) else "openai"
            except StatusError:  # no /version (or not vLLM's): use standard fields only
                kind = "openai"
        max_len = None
        if kind == "vllm":
            served = self.request("GET", "/models", None, lambda d: list(d["data"]), abort)
            entry = next((m for m in served if m.get("id") == self._model), None)
            if entry is None:
                names = ", ".join(repr(m.get("id")) for m in served)
                raise BackendError(
                    f"{self.where}: the server does not serve {self._model!r}; it serves {names}"
                )
            max_len = entry.get("max_model_len") if isinstance(entry.get("max_model_len"), int) else None
        return ServerInfo(kind=kind, max_model_len=max_len)  # type: ignore[arg-type]

    @property
    def usage(self) -> Usage:
        """Totals of the ``usage`` fields of every answered call, for pricing a whole run."""
        with self._lock:
            return self._usage


def parse_base_urls(value: Any) -> list[str]:
    """One base URL, or several for a fleet of servers of the same model: ``[url1,url2]`` (the CLI keeps
    bracketed commas together), ``url1|url2`` or a list. Each is checked; duplicates are refused."""
    if isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
    else:
        text = str(value or "").strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        items = [part for chunk in text.split("|") for part in chunk.split(",")]
    urls = [check_base_url(u) for u in items if u.strip()]
    if not urls:
        raise BackendError(
            f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {redact_urls(str(value))!r}"
        )
    if len(set(urls)) != len(urls):
        raise BackendError(f"base_url lists a server twice: {redact_urls(', '.join(urls))}")
    return urls


class ServerFleet:
    """Several servers of the same model behind one ``ServerClient`` face: each item of ``run_all`` goes
    to one member (chosen by its affinity key, so every request of one question meets the same server
    and its prefix cache), at most ``concurrency`` in flight per server; calls outside ``run_all``
    (probes, tokenizing a prompt to count it) go to the first server. Usage adds up over the members.
    A member that fails for good ends the batch with its one error, as a single server does."""

    def __init__(self, members: Sequence[ServerClient], concurrency: int) -> None:
        self.members = list(members)
        self._concurrency = concurrency
        self._local = threading.local()
        self._slots = [threading.BoundedSemaphore(concurrency) for _ in self.members]
        self.base_url = self.members[0].base_url

    def _member(self) -> ServerClient:
        return self.members[getattr(self._local, "index", 0)]

    @property
    def where(self) -> str:
        return self._member().where

    @property
    def root(self) -> str:
        """The server root (for /tokenize) of the member this thread works for."""
        return self._member().root

    @property
    def info(self) -> ServerInfo | None:
        return self.members[0].info

    def warn_once(self, key: str, message: str) -> None:
        self.members[0].warn_once(key, message)

    def request(self, *args: Any, **kwargs: Any) -> Any:
        return self._member().request(*args, **kwargs)

    def server_info(self, abort: threading.Event | None) -> ServerInfo:
        return self._member().server_info(abort)

    def scrub(self, text: str) -> str:
        return self.members[0].scrub(text)

    @property
    def usage(self) -> Usage:
        parts = [m.usage for m in self.members]
        return Usage(
            calls=sum(u.calls for u in parts),
            prompt_tokens=sum(u.prompt_tokens for u in parts),
            completion_tokens=sum(u.completion_tokens for u in parts),
            cached_prompt_tokens=sum(u.cached_prompt_tokens for u in parts),
        )

    def close(self) -> None:
        for m in self.members:
            m.close()

    def run_all(
        self,
        one: Callable[[Any, threading.Event | None], T],
        items: Sequence[Any],
        key: Callable[[Any], str] | None = None,
    ) -> list[T]:
        """As ``ServerClient.run_all``, over every member: item i goes to member hash(key(item)) mod N
        (round robin without a key)."""
        if not items:
            return []
        n = len(self.members)
        homes = [
            (int(hashlib.sha256(key(item).encode()).hexdigest()[:8], 16) % n) if key else i % n
            for i, item in enumerate(items)
        ]

        def on_member(pair: tuple[int, Any], abort: threading.Event | None) -> T:
            index, item = pair
            self._local.index = index
            with self._slots[index]:
                return one(item, abort)

        # the pool is the members' concurrency together; each member's own slots cap it per server
        return self.members[0].run_all(on_member, list(zip(homes, items)), workers=self._concurrency * n)
