#!/usr/bin/env bash
# Set everything up (venv, torch, the project with its evaluation extras) and run the main job:
# upsample the bundled real brain MRI (6.5 mm slices) and write the result plus a PNG of coronal and
# sagittal views before and after, beside cubic B-spline. No download beyond the Python package index.
# Usage: bash scripts/run_demo.sh [--output DIR] [--factor K] [--checkpoint MODEL.pt]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup_env.sh eval
exec .venv/bin/python Resources/Scripts/demo.py "$@"
