"""Secrets never copied (issue 21 item 6): a URL's userinfo and query string are redacted in every place
a run echoes them: lm-eval's results (config, task configs), ``get_model_info``, the results folder's
name, the trace, the run store's keys, log lines and error lines. End to end through the stock
``lm_eval`` command with a scripted OpenAI-compatible server as the mentor (``mode=mentor_only``)."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from test_e2e_cli import arith_args, lm_eval, results_and_samples

from tandem_lm_eval.backends.openai.transport import check_base_url, parse_base_urls
from tandem_lm_eval.common.redaction import install_log_redaction, redact, redact_urls
from tandem_lm_eval.store.keys import fingerprint, fingerprint_digest

SECRETS = ("secret", "token=abc", "user:", "hunter2")


def test_redact_urls_strips_userinfo_and_query_strings():
    text = "base_url=http://user:secret@127.0.0.1:8000/v1?token=abc,other=1"
    assert redact_urls(text) == "base_url=http://***@127.0.0.1:8000/v1?***,other=1"
    assert redact_urls("{'base_url': 'https://k@h/v1?a=1&b=2'}") == "{'base_url': 'https://***@h/v1?***'}"
    assert redact_urls("[http://a:b@h1/v1|http://h2/v1?x=y]") == "[http://***@h1/v1|http://h2/v1?***]"
    assert redact_urls("http://127.0.0.1:8000/v1 and no secrets") == "http://127.0.0.1:8000/v1 and no secrets"
    assert redact({"a": ("x", ["ws://u:p@h/?t=1"]), "n": 3}) == {"a": ("x", ["ws://***@h/?***"]), "n": 3}


def test_error_lines_and_store_keys_hold_no_url_secret():
    with pytest.raises(Exception) as info:
        parse_base_urls("http://u:hunter2@h/v1|http://u:hunter2@h/v1")
    assert "hunter2" not in str(info.value) and "http://***@h/v1" in str(info.value)
    with pytest.raises(Exception) as info:
        check_base_url("ftp://u:hunter2@h/v1")
    assert "hunter2" not in str(info.value)

    class Role:
        model, backend, thinking = "served", "openai", None
        options = {"base_url": "http://u:hunter2@h/v1?token=abc"}

    fp = fingerprint(Role())
    assert "hunter2" not in json.dumps(fp) and "token=abc" not in json.dumps(fp)
    Role.options = {"base_url": "http://other:rotated@h/v1?token=new"}
    assert fingerprint_digest(fingerprint(Role())) == fingerprint_digest(fp)  # a rotated key keeps entries


def test_log_records_of_every_logger_are_redacted(caplog):
    install_log_redaction()
    with caplog.at_level(logging.INFO):
        logging.getLogger("lm_eval.evaluator").info(
            "Initializing %s model, with arguments: %s",
            "tandem",
            {"base_url": "http://u:hunter2@h/v1?token=abc"},
        )
    assert "hunter2" not in caplog.text and "token=abc" not in caplog.text
    assert "http://***@h/v1?***" in caplog.text


# --- end to end ---------------------------------------------------------------------------------------
class ScriptedChat(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat server that answers every question with the same text."""

    answer = "The answer is 4."
    seen: list[str] = []

    def log_message(self, *args):  # quiet
        pass

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.seen.append(self.path)
        if self.path.startswith("/v1/models"):
            return self._json(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
        return self._json(404, {"error": {"message": "not found"}})

    def do_POST(self):
        self.seen.append(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if "/chat/completions" not in self.path:
            return self._json(404, {"error": {"message": "not found"}})
        words = self.answer.split()
        return self._json(
            200,
            {
                "id": "chat-1",
                "object": "chat.completion",
                "created": 0,
                "model": "scripted",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": self.answer},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": 20,
                    "completion_tokens": len(words),
                    "total_tokens": 20 + len(words),
                },
            },
        )


@pytest.fixture
def chat_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedChat)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_a_base_url_with_credentials_appears_in_no_output_file_and_no_log_line(
    tmp_path, chat_server, tiny_model_dir
):
    url = f"http://user:secret@127.0.0.1:{chat_server}/v1?token=abc"
    trace = tmp_path / "out" / "trace.jsonl"
    model_args = (
        f"mentor=scripted,mentor_backend=openai,mentor_base_url={url},mentor_server=openai,mentor_endpoint=chat,mentor_tokenizer={tiny_model_dir},mentor_max_context=2048,"
        f"mentor_num_params=2e9,intern={tiny_model_dir},mode=mentor_only,progress=false,"
        f"trace_path={trace},store={tmp_path / 'out' / 'store.sqlite'}"
    )
    proc = lm_eval(arith_args(model_args, limit=2) + ["--verbosity", "DEBUG"], tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert any("/chat/completions" in p for p in ScriptedChat.seen)  # the mentor was the scripted server
    data, samples = results_and_samples(tmp_path)
    assert len(samples["tandem_test_arith"]) == 2
    assert data["config"]["tandem"]["config"]["mentor"]["options"]["base_url"].startswith(
        "http://***@127.0.0.1:"
    )
    assert trace.is_file() and (tmp_path / "out" / "store.sqlite").is_file()

    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(files) >= 4  # results, samples, trace, store (and its WAL side files)
    for path in files:
        blob = path.read_bytes()
        for secret in SECRETS:
            assert secret.encode() not in blob, (path, secret)
        assert "secret" not in str(path)
    for secret in SECRETS:
        assert secret not in proc.stderr, secret
        assert secret not in proc.stdout, secret
    assert "http://***@127.0.0.1" in proc.stderr  # the log line is there, redacted
