"""The GPU check's bundle logic (benchmarks/gpu_check/): what the device lacks, the GGUF split and
reassembled, the wheel picked for this Python. The whole bundle is built and run by hand
(benchmarks/gpu_check/README.md): it downloads from the registry."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check"))
import build_bundle  # noqa: E402
import install  # noqa: E402


def test_what_the_device_lacks_is_lm_eval_and_this_package_not_torch():
    pytest.importorskip("lm_eval")
    names = {name for name, _ in build_bundle.missing_distributions()}
    assert {"lm-eval", "tandem-lm-eval", "datasets", "gguf"} <= names
    assert not names & {"torch", "transformers", "numpy", "pandas", "pyarrow"}


def test_a_split_file_reassembles_to_the_same_bytes(tmp_path):
    source = tmp_path / "model.gguf"
    source.write_bytes(bytes(range(256)) * 1000)
    digest = build_bundle.split_file(source, tmp_path / "a", tmp_path / "b", 100_001)
    assert (tmp_path / "a").stat().st_size == 100_001
    joined = (tmp_path / "a").read_bytes() + (tmp_path / "b").read_bytes()
    assert hashlib.sha256(joined).hexdigest() == digest == hashlib.sha256(source.read_bytes()).hexdigest()


def test_the_wheel_for_this_python_is_picked(tmp_path):
    me = f"py{sys.version_info.major}{sys.version_info.minor}"
    for name in (
        f"multiprocess-0.70.19-{me}-none-any.whl",
        "multiprocess-0.70.19-py39-none-any.whl",
        "dill-0.4.1-py3-none-any.whl",
        "foo-1.0-cp30-cp30-win32.whl",
    ):
        (tmp_path / name).write_bytes(b"")
    picked = sorted(p.name for p in install.pick_wheels(tmp_path))
    assert picked == ["dill-0.4.1-py3-none-any.whl", f"multiprocess-0.70.19-{me}-none-any.whl"]


def test_a_run_is_compared_question_by_question_with_the_reference(tmp_path):
    import compare

    row = {
        "tandem_mentor_tokens": 24,
        "tandem_intern_tokens": 30,
        "tandem_length": 54,
        "tandem_stop_stage": 1,
    }
    ref = {"0": {**row, "answer": "72"}, "1": {**row, "answer": "5"}}
    run = {"0": {**row, "answer": "72"}, "1": {**row, "tandem_intern_tokens": 31, "answer": "6"}}
    result = compare.compare(run, ref)
    assert (result["same_tokens"], result["same_answer"]) == (1, 1)
    assert result["rows"][1]["tandem_intern_tokens"] == [30, 31]
    assert compare.compare({}, ref)["rows"][0] == {"doc_id": "0", "missing": True}
