#!/usr/bin/env bash
# Builds the Spin artefact, target/wasm32-wasip2/release/mlflow_copy_spin.wasm: the component
# with the cargo feature `spin` (settings and secrets from Spin variables first, through
# wasi:config/store). Its own target dir (target/spin), so that it never replaces the normal
# build, which wasmtime serve/run need without that import. `spin build` runs this (spin.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --target wasm32-wasip2 --release --features spin --target-dir target/spin
mkdir -p target/wasm32-wasip2/release
cp target/spin/wasm32-wasip2/release/mlflow_copy.wasm target/wasm32-wasip2/release/mlflow_copy_spin.wasm
echo "target/wasm32-wasip2/release/mlflow_copy_spin.wasm"
