#!/usr/bin/env bash
# The demo: sets everything up, starts two local MLflow servers (sqlite, artifacts served by the
# servers, 127.0.0.1 only), seeds a demo run with metrics, artifacts and a logged model on the
# first, copies it to the second with the component, and prints the report and where to look.
#   scripts/demo.sh          run the demo (servers keep running so you can look at the copy)
#   scripts/demo.sh stop     stop the demo servers
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=.work/demo
SRC_PORT=${DEMO_SRC_PORT:-5000}
DST_PORT=${DEMO_DST_PORT:-5001}

stop() {
    for pid in "$DEMO"/*.pid; do
        [ -e "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
        rm -f "$pid"
    done
}
if [ "${1:-}" = "stop" ]; then stop; echo "demo servers stopped"; exit 0; fi

scripts/setup.sh
export PATH="$PWD/.venv/bin:$HOME/.cargo/bin:$PATH"
stop
mkdir -p "$DEMO/src" "$DEMO/dst"

start() { # name port
    (cd "$DEMO/$1" && exec ../../../.venv/bin/mlflow server --host 127.0.0.1 --port "$2" --workers 2 \
        >server.log 2>&1) &
    echo $! >"$DEMO/$1.pid"
}
wait_up() {
    for _ in $(seq 1 180); do
        curl -sf "http://127.0.0.1:$1/health" >/dev/null && return 0
        sleep 1
    done
    echo "MLflow server on port $1 did not start; see $DEMO/*/server.log" >&2
    exit 1
}
printf '\n==> Starting MLflow servers on 127.0.0.1:%s (source) and :%s (destination)\n' "$SRC_PORT" "$DST_PORT"
start src "$SRC_PORT"
start dst "$DST_PORT"
wait_up "$SRC_PORT"
wait_up "$DST_PORT"

printf '\n==> Seeding a demo run (metrics, dataset, artifacts, MLflow 3 logged model)\n'
RUN_ID=$(SEED_BIG_BYTES=$((8 * 1024 * 1024)) .venv/bin/python tests/e2e/seed.py "http://127.0.0.1:$SRC_PORT" demo-source 2>/dev/null | tail -n 1)
echo "source run: $RUN_ID"

printf '\n==> wasmtime run -S http mlflow_copy.wasm copy-run ...\n'
wasmtime run -S http target/wasm32-wasip2/release/mlflow_copy.wasm copy-run \
    --run-id "$RUN_ID" --experiment-name demo-copy \
    --src-mlflow-uri "http://127.0.0.1:$SRC_PORT" --dst-mlflow-uri "http://127.0.0.1:$DST_PORT" \
    | tee "$DEMO/report.json"

DST_RUN=$(.venv/bin/python -c "import json; print(json.load(open('$DEMO/report.json'))['dst_run_id'])")
DST_EXP=$(.venv/bin/python -c "import json; print(json.load(open('$DEMO/report.json'))['dst_experiment_id'])")
cat <<INFO

Source run:  http://127.0.0.1:$SRC_PORT/#/experiments/1/runs/$RUN_ID
Copied run:  http://127.0.0.1:$DST_PORT/#/experiments/$DST_EXP/runs/$DST_RUN
Run it again: the same command reports the existing copy ("outcome": "existing").
Stop the servers with: scripts/demo.sh stop
INFO
