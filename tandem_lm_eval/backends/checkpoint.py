"""A model's parameter count |θ| (Eq. 12) from its checkpoint's safetensors headers, without loading it."""

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
