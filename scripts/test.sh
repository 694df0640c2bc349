#!/usr/bin/env bash
# The test command: set up ./.venv from a fresh clone, then run the whole test suite (CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
exec "$VENV/bin/python" -m pytest -q --durations=15 "$@"
