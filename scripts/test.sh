#!/usr/bin/env bash
# The test command: set up ./.venv from a fresh clone, then run the whole test suite (CPU).
# Tests run in TEST_WORKERS pytest-xdist processes (default: the CPU count, at most 4), each single-threaded
# (OMP_NUM_THREADS=1) so that the workers share the cores instead of oversubscribing them; tests that share a
# module's trained model or dataset carry an xdist_group mark and run on one worker (--dist loadgroup).
# TEST_WORKERS=0 (or 1) runs serially without xdist, with OMP_NUM_THREADS defaulting to 2.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
cores=$(nproc)
workers=${TEST_WORKERS:-$((cores < 4 ? cores : 4))}
if [ "$workers" -gt 1 ]; then
  export OMP_NUM_THREADS=1
  exec "$VENV/bin/python" -m pytest -q --durations=15 -n "$workers" --dist loadgroup "$@"
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
exec "$VENV/bin/python" -m pytest -q --durations=15 "$@"
