"""Secrets in URLs never copied: the userinfo (``user:password@``) and the query string (``?token=...``)
of every URL-shaped text the run echoes are replaced by ``***``.

Why redact rather than refuse: a query string is sometimes the API's own (``?api-version=...``), and a
run that only echoes a URL should not be refused for it; the credentials still reach the server (the
backend uses the URL as given), they just never reach a results file, a log line, an error message, the
trace or the run store's keys. Keys belong in an environment variable (``*_api_key_env``, read by the
openai backend and never echoed), not in ``model_args``, which any local process can also read from
``/proc/<pid>/cmdline`` while the run lasts (docs/backends.md).

One function (``redact_urls``) serves every path: the log records of the process
(``install_log_redaction``: lm-eval's own "Initializing ... with arguments" line included), lm-eval's
results (harness/registration.py), ``get_model_info``, the store's fingerprint and the backends' error
lines.
"""

from __future__ import annotations

import logging
import re
from typing import Any

MARK = "***"
# scheme://[userinfo@]host[/path][?query][#fragment], ended by what ends a value in model_args text, a
# repr or a log line (whitespace, quotes, a comma, closing brackets).
_URL = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)"
    r"(?:(?P<userinfo>[^\s/?#@'\",;<>\[\]{}()]*)@)?"
    r"(?P<rest>[^\s?#'\",;<>\[\]{}()|]*)"
    r"(?P<query>\?[^\s#'\",;<>\[\]{}()|]*)?"
)


def _redact_match(m: re.Match) -> str:
    out = m.group("scheme")
    if m.group("userinfo") is not None:
        out += f"{MARK}@"
    out += m.group("rest")
    if m.group("query"):
        out += f"?{MARK}"
    return out


def redact_urls(text: str) -> str:
    """``text`` with the userinfo and query string of every URL in it replaced by ``***``."""
    if "://" not in text:
        return text
    return _URL.sub(_redact_match, text)


def has_url_secret(text: str) -> bool:
    """Whether ``text`` holds a URL with userinfo or a query string."""
    return redact_urls(text) != text


def redact(value: Any) -> Any:
    """A copy of ``value`` (dicts, lists, tuples, strings, nested) with every string's URLs redacted;
    other values as they are."""
    if isinstance(value, str):
        return redact_urls(value)
    if isinstance(value, dict):
        return {redact(k): redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, tuple):
        return tuple(redact(v) for v in value)
    return value


def redact_in_place(mapping: dict) -> None:
    """Redact a dict in place (lm-eval echoes one dict object in several places: the results' config
    and its closing line)."""
    for key, value in list(mapping.items()):
        mapping[key] = redact(value)


# --- log lines -------------------------------------------------------------------------------------
def install_log_redaction() -> None:
    """Every log record of this process made with its URLs redacted (idempotent): a record factory,
    so records of every logger (lm-eval's, the openai client's, this package's) pass through it before
    any handler formats them."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_tandem_redacting", False):
        return

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a record whose arguments do not format: leave it to logging
            return record
        if "://" in message:
            redacted = redact_urls(message)
            if redacted != message:
                record.msg, record.args = redacted, None
        return record

    factory._tandem_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
