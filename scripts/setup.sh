#!/usr/bin/env bash
# Installs what mlflow-copy needs on a fresh machine and builds the component (idempotent):
#   - the wasm32-wasip2 Rust target
#   - the wasmtime CLI (cargo install --locked) if absent
#   - MLflow (with the basic-auth extra), scikit-learn, pytest, moto[server] and azure-storage-blob
#     (S3 and Azure Blob behind the Databricks emulator, tests/databricks_emulator) and wasmtime
#     (PyPI) in a project-local venv (.venv), and the Python host hosts/python (editable) into it
#   - azurite (npm, the Azure Blob server of the emulator's cloud="azure" mode) under .work/azurite
#   - target/wasm32-wasip2/release/mlflow_copy.wasm
#   - the Node.js host's packages (jco, preview2-shim) in hosts/node, and its transpiled component
# With --with-host it also builds the example embedding host (hosts/rust/), which the tests use.
set -euo pipefail
cd "$(dirname "$0")/.."

WASMTIME_VERSION=48.0.8
MLFLOW_VERSION=3.17.2
WASMTIME_PY_VERSION=50.0.1
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf '\n==> %s\n' "$*" >&2; }

say "Rust target wasm32-wasip2"
rustup target add wasm32-wasip2 >/dev/null

if ! wasmtime --version 2>/dev/null | grep -q "$WASMTIME_VERSION"; then
    say "Installing wasmtime CLI $WASMTIME_VERSION (one-time, ~15 minutes on 2 cores)"
    cargo install --locked wasmtime-cli --version "$WASMTIME_VERSION"
fi

if [ ! -x .venv/bin/python ]; then
    say "Creating .venv"
    python3 -m venv .venv
fi
if ! .venv/bin/python -c "import mlflow, sklearn, pytest, pytest_timeout, flask_wtf, moto, boto3, werkzeug, azure.storage.blob, wasmtime; assert mlflow.__version__ == '$MLFLOW_VERSION'; from importlib.metadata import version; assert version('wasmtime') == '$WASMTIME_PY_VERSION'" 2>/dev/null; then
    say "Installing MLflow $MLFLOW_VERSION into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check "mlflow[auth]==$MLFLOW_VERSION" scikit-learn pytest pytest-timeout "moto[server]" azure-storage-blob "wasmtime==$WASMTIME_PY_VERSION"
fi
if ! .venv/bin/python -c "import os, mlflow_copy; assert os.path.samefile(os.path.dirname(mlflow_copy.__file__), 'hosts/python')" 2>/dev/null; then
    say "Installing the Python host (hosts/python) into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check --no-deps -e ./hosts/python
fi

AZURITE_VERSION=3.37.0
if [ ! -x .work/azurite/node_modules/.bin/azurite-blob ]; then
    say "Installing azurite $AZURITE_VERSION (npm) into .work/azurite"
    mkdir -p .work/azurite
    (cd .work/azurite && npm install --no-audit --no-fund --silent "azurite@$AZURITE_VERSION")
fi

say "Building mlflow_copy.wasm"
cargo build --quiet --target wasm32-wasip2 --release
ls -l target/wasm32-wasip2/release/mlflow_copy.wasm >&2

if [ ! -d hosts/node/node_modules/@bytecodealliance/jco ] || [ hosts/node/package-lock.json -nt hosts/node/node_modules/.package-lock.json ]; then
    say "Installing the Node.js host's packages (hosts/node: jco, preview2-shim)"
    (cd hosts/node && npm ci --no-audit --no-fund --loglevel=error)
fi
say "Transpiling mlflow_copy.wasm for Node.js (hosts/node/dist)"
(cd hosts/node && node build.js "$PWD/../../target/wasm32-wasip2/release/mlflow_copy.wasm")

if [ "${1:-}" = "--with-host" ]; then
    say "Building the example embedding host (hosts/rust/)"
    (cd hosts/rust && cargo build --quiet --release)
fi
