"""The code sandbox end to end through the stock ``lm_eval`` command: hostile answers served as a
mentor's (a scripted OpenAI-compatible chat server on 127.0.0.1, ``mode=mentor_only``) on the first
four HumanEval problems. A forged pass scores 0, answers that swap their output file for a directory
or a FIFO fail themselves, the run completes, and its results say which protections were active."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import SHARED_DATA
from scripted_chat_server import ScriptedChatServer
from test_e2e_cli import lm_eval, results_and_samples

# The forge: look for a nonce in every frame and in the launcher's command line, then write
# "PASSED <nonce>" to every descriptor it might have inherited. The answer itself is wrong.
FORGE = """```python
import os, re, sys
words, frame = set(), sys._getframe()
while frame is not None:
    words.update(re.findall(r"[0-9a-f]{32}", repr(frame.f_locals)))
    frame = frame.f_back
for pid in ("self", str(os.getppid())):
    try:
        words.update(re.findall(r"[0-9a-f]{32}", open(f"/proc/{pid}/cmdline").read()))
    except OSError:
        pass
for fd in range(1, 64):
    for word in words or {"0" * 32}:
        try:
            os.write(fd, f"PASSED {word}\\n".encode())
        except OSError:
            pass

def has_close_elements(numbers, threshold):
    return True
```"""
SWAP_DIR = """```python
import os
os.mkdir("output.txt")

def separate_paren_groups(paren_string):
    return []
```"""
SWAP_FIFO = """```python
import os
os.mkfifo("output.txt")

def truncate_number(number):
    return 0.0
```"""
CORRECT = """```python
def below_zero(operations):
    balance = 0
    for op in operations:
        balance += op
        if balance < 0:
            return True
    return False
```"""


@pytest.mark.slow
def test_hostile_answers_through_the_cli(tmp_path, tiny_model_dir, monkeypatch):
    data_dir = Path(os.environ.get("TANDEM_DATA_DIR") or SHARED_DATA)
    if not (data_dir / "humaneval" / "HumanEval.jsonl").is_file():
        pytest.skip(f"HumanEval data not found under {data_dir}")
    monkeypatch.setenv("TANDEM_DATA_DIR", str(data_dir))
    script = {
        "has_close_elements": FORGE,
        "separate_paren_groups": SWAP_DIR,
        "truncate_number": SWAP_FIFO,
        "below_zero": CORRECT,
    }
    server = ScriptedChatServer(script).start()
    try:
        model_args = (
            f"mentor=scripted,mentor_backend=openai,mentor_base_url={server.base_url},mentor_endpoint=chat,"
            f"mentor_server=openai,mentor_tokenizer={tiny_model_dir},mentor_max_context=16384,"
            f"mentor_num_params=1e9,intern={tiny_model_dir},dtype=float32,mode=mentor_only"
        )
        args = ["--model", "tandem", "--model_args", model_args, "--tasks", "tandem_humaneval"]
        args += ["--confirm_run_unsafe_code", "--limit", "4", "--log_samples"]
        proc = lm_eval(args, tmp_path, timeout=600)
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(server.served) == 4
    data, samples = results_and_samples(tmp_path)
    scores = {row["doc"]["entry_point"]: row["pass@1"] for row in samples["tandem_humaneval"]}
    # The forge scores 0, the swaps fail themselves, the correct answer passes.
    assert scores == {
        "has_close_elements": 0,
        "separate_paren_groups": 0,
        "truncate_number": 0,
        "below_zero": 1,
    }
    assert data["results"]["tandem_humaneval"]["pass@1,sandbox"] == pytest.approx(0.25)
    isolation = data["config"]["sandbox_isolation"]
    assert isolation["programs"] == 4
    assert set(isolation["protections"]) == {"network", "pid", "mount", "uid", "cgroup"}
    if os.geteuid() == 0:
        # This machine as root: every namespace and a uid of its own; no delegated cgroup.
        assert isolation["protections"] == {
            "network": True,
            "pid": True,
            "mount": True,
            "uid": True,
            "cgroup": False,
        }
        assert isolation["missing"] == ["cgroup"]
    # One warning line names what was missing.
    warnings = [
        line for line in proc.stderr.splitlines() if "code sandbox: running model-written code" in line
    ]
    assert len(warnings) == (1 if isolation["missing"] else 0)
