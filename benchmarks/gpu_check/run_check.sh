#!/usr/bin/env bash
# The GPU check: the demo pair through `lm_eval --model tandem` on the hf backend, bf16, both roles on
# one device, compared with the CPU reference shipped in the bundle.
#   bash run_check.sh [--cpu] PART1_DIR PART2_DIR OUT_DIR
# --cpu: the same run on the CPU (how cpu_reference.json was recorded; also the bundle's own test).
set -euo pipefail
mode=gpu
if [ "${1:-}" = "--cpu" ]; then mode=cpu; shift; fi
P1=$(cd "$1" && pwd); P2=$(cd "$2" && pwd); OUTDIR=$3
PY=${PYTHON:-python3}
# "site-packages" in the path: dill (datasets' fingerprints) pickles a module by reference only when its
# file is under sys.prefix or a folder of that name; a --target folder named otherwise fails there
SITE=${TANDEM_SITE:-/tmp/tandem/site-packages}
mkdir -p "$OUTDIR"
"$PY" "$P2/install.py" --part1 "$P1" --part2 "$P2" --site "$SITE"
export TANDEM_DATA_DIR="$P2/data" TANDEM_CACHE_DIR="${TANDEM_CACHE_DIR:-/tmp/tandem_cache}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
device=cuda
if [ "$mode" = cpu ]; then device=cpu; fi
if [ "$mode" = gpu ]; then
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
fi
start=$(date +%s)
"$PY" "$P2/launch_lm_eval.py" "$SITE" --model tandem --tasks tandem_gsm8k --limit 4 \
  --gen_kwargs max_gen_toks=256 \
  --model_args "mentor_backend=hf,intern_backend=hf,dtype=bfloat16" --device "$device" \
  --output_path "$OUTDIR/$mode" --log_samples
echo "lm_eval on $device took $(( $(date +%s) - start )) s"
"$PY" "$P2/compare.py" --run "$OUTDIR/$mode" --reference "$P2/cpu_reference.json" --out "$OUTDIR/compare_$mode.json"
