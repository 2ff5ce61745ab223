"""An instant stand-in for ``vllm serve`` on 127.0.0.1, for the fleet benchmark and tests.

It answers ``POST /v1/completions`` like an OpenAI-compatible server (text, finish reason, usage) after a
modelled engine time: ``per_token_s`` per requested token, with at most ``capacity`` requests decoding at
once (a batching engine: up to its batch size more requests cost no more time each; beyond it they
queue). Nothing else is computed. Bound to loopback only; ``stop()`` ends it.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class FakeServer:
    per_token_s: float = 0.001
    capacity: int = 16
    served: int = 0
    peak_in_flight: int = 0
    prompts: list = field(default_factory=list)  # every prompt served, in order
    _in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> FakeServer:
        fake = self
        slots = threading.BoundedSemaphore(self.capacity)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path != "/v1/completions":
                    self.send_error(404)
                    return
                n = int(body.get("max_tokens", 16))
                with slots:
                    with fake._lock:
                        fake._in_flight += 1
                        fake.peak_in_flight = max(fake.peak_in_flight, fake._in_flight)
                    time.sleep(n * fake.per_token_s)
                    with fake._lock:
                        fake._in_flight -= 1
                        fake.served += 1
                        fake.prompts.append(body.get("prompt"))
                prompt = body.get("prompt", "")
                data = {
                    "id": "fake",
                    "object": "text_completion",
                    "model": body.get("model"),
                    "choices": [{"index": 0, "text": " x" * n, "finish_reason": "length"}],
                    "usage": {"prompt_tokens": len(str(prompt).split()), "completion_tokens": n},
                }
                raw = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        class Server(ThreadingHTTPServer):
            request_queue_size = 1024  # many clients connect at once: the default backlog (5) resets them

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
