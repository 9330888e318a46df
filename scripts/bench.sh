#!/usr/bin/env bash
# Benchmark mlflow-copy against mlflow-export-import's copy-run on the same run, side by side
# (speed, peak memory, temp disk, what each copy kept). Results: bench/results.md.
# Not part of the test suite: timings belong here, not in tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
if [ ! -x .work/exim-venv/bin/copy-run ]; then
    printf '\n==> Installing mlflow-export-import into .work/exim-venv\n'
    python3 -m venv .work/exim-venv
    .work/exim-venv/bin/pip install --quiet --disable-pip-version-check mlflow-export-import-v2==1.2.0
fi
.venv/bin/python bench/bench.py
