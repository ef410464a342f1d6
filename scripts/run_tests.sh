#!/usr/bin/env bash
# Set everything up (venv, torch, the project with its test extras) and run the test suite.
# Usage: bash scripts/run_tests.sh [pytest arguments]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup_env.sh test
exec .venv/bin/python -m pytest Testing/Python "$@"
