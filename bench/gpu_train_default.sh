#!/usr/bin/env bash
# One command: train the default model's network on one GPU (H100/H200) within a time budget.
#
#   bash bench/gpu_train_default.sh [--minutes 9] [--batch-size 256] [--patch-size 96] [--init CHECKPOINT] [...]
#
# It trains what Resources/Models/default-model.pt is: pair-unet-24-48-96 with the B-spline anchor and the
# slice-profile inputs, L1, noise std 0.06, thick-slice probability 0.5 (train_default_model.py stage 4),
# from scratch or widened from --init; bf16 autocast, batch 256, batches drawn on the GPU.
# Before: python Resources/Scripts/pack_training_data.py  (here, with SimpleITK and the data cache)
# writes shared/gpu-training-data.npz (18 MiB), which travels with the working tree.
# On the GPU machine only torch and numpy are needed. Output goes to $OUT (default ./gpu-run):
# pair-unet-gpu.pt (resumable: --resume), pair-unet-gpu.best.pt, default-candidate.pt (the best epoch as a
# model the engine loads like the default), pair-unet-gpu.log.jsonl, summary.json, train.log.
# Options are those of Resources/Scripts/gpu_train_default.py (--help); PYTHON picks the interpreter.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${OUT:-$here/gpu-run}"
mkdir -p "$out"
python="${PYTHON:-$(command -v python3 || command -v python)}"
export PYTHONPATH="$here/SemanticInterpolation${PYTHONPATH:+:$PYTHONPATH}"
"$python" -u "$here/Resources/Scripts/gpu_train_default.py" --out "$out" "$@" 2>&1 | tee "$out/train.log"
exit "${PIPESTATUS[0]}"
