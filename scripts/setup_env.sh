#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment .venv and install the project into it.
# Usage: bash scripts/setup_env.sh [EXTRAS]      e.g. EXTRAS=test or EXTRAS=test,lpips
# Environment: PYTHON (interpreter to create the venv with, default python3),
#              TORCH_SPEC (torch requirement installed first, default torch==2.13.0).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
extras="${1:-}"
python="${PYTHON:-python3}"
torch_spec="${TORCH_SPEC:-torch==2.13.0}"

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating virtual environment .venv with $($python --version 2>&1)"
  "$python" -m venv .venv
fi
py=.venv/bin/python
# torch first and pinned: an unpinned torch pulls several GB of CUDA packages on CPU-only machines
if ! "$py" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing $torch_spec"
  "$py" -m pip install --quiet "$torch_spec"
fi
target="."
[ -n "$extras" ] && target=".[${extras}]"
echo "[setup] installing SemanticInterpolation ${target}"
"$py" -m pip install --quiet -e "$target"
"$py" -c "import torch, SemanticInterpolationLib as s; print(f'[setup] SemanticInterpolation {s.__version__}, torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}')"
