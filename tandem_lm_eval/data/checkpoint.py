"""A model's parameter count |θ| (Eq. 12) from its checkpoint's safetensors headers, and its hidden-state
shape from its config.json, without loading it."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path


# --- parameter counting -----------------------------------------------------------------------------
def local_model_folder(path: str, revision: str | None) -> Path | None:
    p = Path(path)
    if p.is_dir():
        return p
    if p.is_file():
        return None  # a GGUF file: no safetensors headers to read
    try:  # a hub id: vLLM downloaded it into the Hugging Face cache
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(path, revision=revision, local_files_only=True, allow_patterns=["*.json"])
        )
    except Exception:
        return None


def safetensors_parameter_count(folder: Path) -> int:
    """Sum of tensor sizes over the checkpoint's safetensors headers (the index names the shards)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        names = set(json.loads(index.read_text())["weight_map"].values())
        files = [folder / name for name in names]
    else:
        files = sorted(folder.glob("*.safetensors"))
    total = 0
    for file in files:
        if not file.is_file():
            return 0
        with file.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        total += sum(math.prod(v["shape"]) for key, v in header.items() if key != "__metadata__")
    return total


def configured_hidden_shape(model: str, revision: str | None = None) -> tuple[int, int] | None:
    """(number of layers, hidden size) from a model's config.json, without loading it: a local folder,
    the converted demo, or a hub id already in the cache; None when it cannot be known yet."""
    if model == "demo":
        from tandem_lm_eval.data.demo_model import DEMO_FOLDER, cache_dir

        folder: Path | None = cache_dir() / DEMO_FOLDER
    else:
        folder = local_model_folder(str(Path(model).expanduser()), revision)
    config = folder / "config.json" if folder is not None else None
    if config is None or not config.is_file():
        return None
    try:
        data = json.loads(config.read_text())
        data = data.get("text_config", data)  # multimodal configs nest the language model's
        return int(data["num_hidden_layers"]), int(data["hidden_size"])
    except (ValueError, KeyError, TypeError):
        return None
