#!/usr/bin/env bash
# GPU check in one command: synthesis slices/s (fp32/fp16/bf16, contiguous/channels_last, eager/CUDA graph,
# torch.compile), achieved TFLOP/s beside the bf16 matmul peak, GPU memory per batch size, the engine on a
# cine series, training samples/s (Trainer and bare loop) and an upsample-batch cohort run.
#
#   bash bench/device_check.sh                         # one H100/H200: under 5 minutes (--budget-s 270)
#   bash bench/device_check.sh --smoke --device cpu    # tiny sizes on the CPU (the tests run this)
#
# Needs torch and numpy only (no SimpleITK). Writes $OUT/device-check.json (default ./device-check) and
# $OUT/device-check.log (this output). Options: python bench/device_check.py --help; PYTHON picks the interpreter.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${OUT:-$here/device-check}"
mkdir -p "$out"
python="${PYTHON:-$(command -v python3 || command -v python)}"
export PYTHONPATH="$here/SemanticInterpolation${PYTHONPATH:+:$PYTHONPATH}"
export OUT="$out"
"$python" -u "$here/bench/device_check.py" --out "$out" "$@" 2>&1 | tee "$out/device-check.log"
exit "${PIPESTATUS[0]}"
