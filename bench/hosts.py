"""The same copy in every host: `wasmtime run`, the Rust embedding host (hosts/rust), the Python
package (hosts/python) and the Node.js package (hosts/node). Starts two local MLflow servers,
seeds one run, copies it once through each host into its own experiment, and prints wall time
and peak RSS of each copy's process as a Markdown table.

    MLFLOW_COPY_WASM=… MLFLOW_COPY_HOST=… .venv/bin/python bench/hosts.py [BIG_MIB]

Each host first makes one failing call (unknown run), so compiled-code caches are warm (the
wasmtime CLI's, the Python package's, the Node package's transpiled module): what is measured
is a copy, not a first compile.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

import hosts  # noqa: E402
import seed  # noqa: E402
from compare import assert_run_copied  # noqa: E402
from servers import MlflowServer  # noqa: E402

WASM = os.environ.get("MLFLOW_COPY_WASM", os.path.join(ROOT, "target/wasm32-wasip2/release/mlflow_copy.wasm"))
HOST = os.environ.get("MLFLOW_COPY_HOST", os.path.join(ROOT, "hosts/rust/target/release/mlflow-copy-host"))


def measure(cmd, env, cwd=ROOT):
    """Wall seconds, peak RSS in MiB and stdout of one process. The RSS comes from GNU time
    (Debian package `time`): a child forked from this process would count this process's own
    memory (MLflow is loaded here) in its peak."""
    with tempfile.NamedTemporaryFile("r") as rss:
        started = time.monotonic()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name, *cmd], env=env, cwd=cwd,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        wall = time.monotonic() - started
        peak_kib = int(rss.read().strip().splitlines()[-1])
    return wall, peak_kib / 1024, proc.returncode, proc.stdout.decode()


def commands(request):
    """(name, command, cwd) of one copy-run call through each host."""
    r = request
    cli = ["wasmtime", "run", "-S", "http", WASM, "copy-run", "--run-id", r["run_id"],
           "--experiment-name", r["experiment_name"], "--src-mlflow-uri", r["src_mlflow_uri"],
           "--dst-mlflow-uri", r["dst_mlflow_uri"]]
    return [
        ("wasmtime run (CLI 48.0.8)", cli, ROOT),
        ("Rust host (wasmtime crates 48.0.8)", [HOST, WASM, "copy-run", json.dumps(r)], ROOT),
        ("Python (`mlflow_copy`, PyPI wasmtime 50.0.1)", hosts.python_command("copy-run", r), ROOT),
        ("Node.js 20 (`mlflow-copy`, jco 1.35 + preview2-shim 0.26)", hosts.node_command("copy-run", r), hosts.NODE_DIR),
    ]


def main():
    big = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    src, dst = MlflowServer("bench-src"), MlflowServer("bench-dst")
    try:
        src.wait(), dst.wait()
        run_id = seed.seed_rich_run(src.uri, "hosts-bench", big_bytes=big * 1024 * 1024)
        env = hosts.base_env(WASM, {})
        rows = []
        for i in range(4):
            warm = commands({"run_id": "0" * 32, "experiment_name": "warm", "src_mlflow_uri": src.uri,
                             "dst_mlflow_uri": dst.uri})[i]
            measure(warm[1], env, warm[2])
            exp = f"hosts-bench-{i}"
            name, cmd, cwd = commands({"run_id": run_id, "experiment_name": exp, "src_mlflow_uri": src.uri,
                                       "dst_mlflow_uri": dst.uri})[i]
            load = os.getloadavg()[0]
            wall, rss, code, out = measure(cmd, env, cwd)
            if code != 0:
                raise SystemExit(f"{name} failed (exit {code}): {out}")
            try:
                report = json.loads(out)  # the command's report (may span lines)
            except json.JSONDecodeError:
                report = json.loads(out.strip().splitlines()[-1])  # the drivers' last line
            report = report.get("ok", report)
            report = hosts.snake_keys(report)
            assert_run_copied(src.uri, run_id, dst.uri, report["dst_run_id"], exp)
            rows.append((name, wall, rss, report["artifact_bytes"], load))
        print(f"One copy-run of the same run ({big} MiB binary + small files + 1254 metric points + an "
              f"MLflow 3 logged model), each verified field by field afterwards:\n")
        print("| host | wall s | peak RSS MiB | artifact bytes | load avg (1 min) |")
        print("|---|---:|---:|---:|---:|")
        for name, wall, rss, size, load in rows:
            print(f"| {name} | {wall:.1f} | {rss:.0f} | {size:,} | {load:.1f} |")
    finally:
        src.stop()
        dst.stop()


if __name__ == "__main__":
    main()
