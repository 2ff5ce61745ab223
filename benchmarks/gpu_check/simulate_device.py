"""Make a stand-in for the device image here: a fresh venv (no lm-eval, no vLLM) that sees only the
packages the device image has (build_bundle.DEVICE_PACKAGES), linked from this machine's environment.

    python benchmarks/gpu_check/simulate_device.py /tmp/gpu_sim     # prints the venv's python

Then ``PYTHON=/tmp/gpu_sim/venv/bin/python bash run_check.sh --cpu PART1 PART2 OUT`` runs the bundle as
the device would, on the CPU. A package the bundle forgot fails the run here, not on the device.
"""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
import sysconfig
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_bundle import DEVICE_PACKAGES  # noqa: E402


def image_closure(names: set[str]) -> set[str]:
    """The device's packages and what they require as installed here: on the device each one's own
    requirements are there too (the versions here may need some the list does not name)."""
    out, stack = set(), list(names)
    while stack:
        name = stack.pop()
        if name in out:
            continue
        out.add(name)
        try:
            requires = md.distribution(name).requires or []
        except md.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                stack.append(canonicalize_name(req.name))
    return out


def main() -> int:
    root = Path(sys.argv[1]).resolve()
    image = root / "image" / "site-packages"  # as on the device: dill tells packages by this name
    image.mkdir(parents=True, exist_ok=True)
    device = image_closure({canonicalize_name(n) for n in DEVICE_PACKAGES})
    site = Path(sysconfig.get_paths()["purelib"])
    linked = 0
    for dist in md.distributions():
        if canonicalize_name(dist.metadata["Name"]) not in device or not dist.files:
            continue
        for top in {Path(str(f)).parts[0] for f in dist.files}:
            source = site / top
            if top.startswith("..") or top == "__pycache__" or not source.exists() or top.endswith(".pth"):
                continue
            target = image / top
            if not target.exists():
                target.symlink_to(source)
                linked += 1
    venv = root / "venv"
    if not venv.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    (Path(next(venv.glob("lib/python*/site-packages"))) / "device_image.pth").write_text(str(image) + "\n")
    print(f"{linked} entries of the device's packages linked into {image}")
    print(venv / "bin" / "python")
    return 0


if __name__ == "__main__":
    sys.exit(main())
