#!/usr/bin/env bash
# Benchmark mlflow-copy against mlflow-export-import (copy-run, copy-model-version) and against
# curl, workload by workload (see bench/bench.py). Results: bench/results.md.
# Not part of the test suite: timings belong here, not in tests.
#   scripts/bench.sh [--scale 0.25] [--repeat 3] [--workloads 1,2,3,4,5] [--no-python]
#   scripts/bench.sh migration [--runs 200] [--repeat 1]   (a whole experiment: bench/migration.py)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$HOME/.cargo/bin:$PATH"
cargo build --release --target wasm32-wasip2
if [ ! -x .work/bench-venv/bin/copy-run ]; then
    printf '\n==> Installing mlflow-export-import into its own venv, .work/bench-venv\n'
    python3 -m venv .work/bench-venv
    .work/bench-venv/bin/pip install --quiet --disable-pip-version-check mlflow-export-import-v2==1.2.0
fi
if [ "${1:-}" = migration ]; then
    shift
    exec .venv/bin/python bench/migration.py "$@"
fi
.venv/bin/python bench/bench.py "$@"
