"""A loopback HTTP proxy in front of a real server that injects faults on a fixed schedule.

The only fake part of the OpenAI-backend tests: every answer still comes from the real server. Each
POST to a faulted path takes the next fault from the schedule until it is used up, then requests
pass through untouched, so every run ends by itself. Faults:

``timeout``    the request reaches the server, which answers; the proxy withholds the answer until
               the client gives up (bounded by ``hang_s``) - a retry must not duplicate the answer.
``drop``       the request reaches the server; the proxy closes the connection without a response.
``429``        rate limited with ``Retry-After`` (not forwarded).
``500``        server error (not forwarded).
``malformed``  the server's 200 answer cut in half: not JSON.
"""

from __future__ import annotations

import http.client
import select
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("timeout", "drop", "429", "500", "malformed")


@dataclass
class ProxyRecord:
    method: str
    path: str
    fault: str | None
    upstream_status: int | None  # None: not forwarded


@dataclass
class FaultProxy:
    upstream_port: int
    schedule: list[str]
    paths: tuple[str, ...] = ("/v1/", "/tokenize")
    retry_after_s: int = 1
    hang_s: float = 30.0
    records: list[ProxyRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        unknown = [f for f in self.schedule if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown faults {unknown}; known: {FAULTS}")
        self._pending = list(self.schedule)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def injected(self) -> list[str]:
        with self._lock:
            return [r.fault for r in self.records if r.fault]

    def remaining(self) -> list[str]:
        with self._lock:
            return list(self._pending)

    def count(self, path_prefix: str, faults: Iterable[str | None] | None = None) -> int:
        with self._lock:
            wanted = None if faults is None else set(faults)
            return sum(
                1
                for r in self.records
                if r.path.startswith(path_prefix) and (wanted is None or r.fault in wanted)
            )

    def _next_fault(self, method: str, path: str) -> str | None:
        if method != "POST" or not path.startswith(self.paths):
            return None
        with self._lock:
            return self._pending.pop(0) if self._pending else None

    def _record(self, record: ProxyRecord) -> None:
        with self._lock:
            self.records.append(record)


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects

        def log_message(self, format: str, *args: object) -> None:  # quiet test output
            pass

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            fault = proxy._next_fault(method, self.path)
            if fault in ("429", "500"):
                proxy._record(ProxyRecord(method, self.path, fault, None))
                extra = {"Retry-After": str(proxy.retry_after_s)} if fault == "429" else {}
                message = b"rate limited" if fault == "429" else b"injected server error"
                payload = b'{"error": {"message": "' + message + b'", "type": "fault_proxy"}}'
                self._reply(int(fault), payload, "application/json", extra)
                return
            status, content_type, answer = self._forward(method, body)
            proxy._record(ProxyRecord(method, self.path, fault, status))
            if fault == "timeout":
                self._hang()
            elif fault == "drop":
                self._drop()
            elif fault == "malformed":
                self._reply(200, answer[: len(answer) // 2], "application/json", {})
            else:
                self._reply(status, answer, content_type, {})

        def _forward(self, method: str, body: bytes) -> tuple[int, str, bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=600)
            try:
                headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
                conn.request(method, self.path, body=body if method == "POST" else None, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.getheader("Content-Type", "application/json"), resp.read()
            finally:
                conn.close()

        def _reply(self, status: int, payload: bytes, content_type: str, extra: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()

        def _hang(self) -> None:
            """Say nothing until the client hangs up, the proxy stops, or ``hang_s`` passes."""
            deadline = time.monotonic() + proxy.hang_s
            sock = self.connection
            while time.monotonic() < deadline and not proxy._stopping.is_set():
                readable, _, _ = select.select([sock], [], [], 0.1)
                if readable:
                    try:
                        if not sock.recv(1, socket.MSG_PEEK):
                            break  # the client closed its end: it timed out
                    except OSError:
                        break
            self._drop()

        def _drop(self) -> None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    return Handler
