"""A scripted OpenAI-compatible chat server on 127.0.0.1 for end-to-end tests: each
``POST /v1/chat/completions`` is answered with the first scripted response whose key occurs in the
request's last user message (a HumanEval entry point, say), else with ``default``. Nothing is
generated; ``stop()`` ends it."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class ScriptedChatServer:
    script: dict[str, str]
    default: str = "I cannot answer that."
    served: list = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def answer(self, prompt: str) -> str:
        return next((text for key, text in self.script.items() if key in prompt), self.default)

    def start(self) -> ScriptedChatServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _send(self, code: int, data: dict) -> None:
                payload = json.dumps(data).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                if self.path.endswith("/models"):
                    self._send(200, {"data": [{"id": "scripted"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if not self.path.endswith("/chat/completions"):
                    self._send(404, {"error": {"message": "not found"}})
                    return
                prompt = str(body.get("messages", [{}])[-1].get("content", ""))
                text = fake.answer(prompt)
                fake.served.append(prompt)
                message = {"role": "assistant", "content": text}
                usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split())}
                self._send(200, {"choices": [{"message": message, "finish_reason": "stop"}], "usage": usage})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
