#!/usr/bin/env bash
# Runs every test: native unit tests of the pure logic, then the end-to-end suite (real MLflow
# servers on 127.0.0.1, the built component in `wasmtime run` and in the embedding host).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --with-host
export PATH="$PWD/.venv/bin:$HOME/.cargo/bin:$PATH"

printf '\n==> Unit tests (cargo test)\n'
cargo test --quiet

printf '\n==> End-to-end tests (pytest tests/e2e)\n'
export MLFLOW_COPY_WASM="$PWD/target/wasm32-wasip2/release/mlflow_copy.wasm"
export MLFLOW_COPY_SPIN_WASM="$PWD/target/wasm32-wasip2/release/mlflow_copy_spin.wasm"
export MLFLOW_COPY_HOST="$PWD/hosts/rust/target/release/mlflow-copy-host"
.venv/bin/python -m pytest tests/e2e -v -p no:cacheprovider --durations=10 --timeout=600 "$@"
