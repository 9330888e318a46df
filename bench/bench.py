"""Side-by-side benchmark: mlflow-copy (wasmtime run) vs mlflow-export-import's copy-run.

Starts two MLflow servers on 127.0.0.1, seeds one run (large and many small artifacts, long
metric histories, an MLflow 3 logged model), copies it with each tool into its own experiment,
and measures wall time, peak RSS of the copying process (GNU time), and peak temporary-disk use
(the Python tool stages artifacts in a temp dir; TMPDIR is pointed at a watched directory).
Then it checks what each copy kept. Writes bench/results.md.

Run with scripts/bench.sh (which installs the Python tool into its own venv).
"""
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric  # noqa: E402

import seed  # noqa: E402
from servers import MlflowServer  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
WASM = os.path.join(ROOT, "target/wasm32-wasip2/release/mlflow_copy.wasm")
EXIM_COPY_RUN = os.path.join(ROOT, ".work/exim-venv/bin/copy-run")
BIG_MIB = int(os.environ.get("BENCH_BIG_MIB", "256"))
SMALL_FILES = int(os.environ.get("BENCH_SMALL_FILES", "300"))
METRIC_KEYS, POINTS_PER_KEY = 20, 5000


def seed_bench_run(uri):
    run_id = seed.seed_rich_run(uri, "bench-source", big_bytes=BIG_MIB * 1024 * 1024, metric_points=10)
    client = MlflowClient(uri, registry_uri=uri)
    points = [Metric(f"m{k:02d}", math.sin(i / 100.0), 1_600_000_000_000 + i, i)
              for k in range(METRIC_KEYS) for i in range(POINTS_PER_KEY)]
    for i in range(0, len(points), 1000):
        client.log_batch(run_id, metrics=points[i:i + 1000])
    with tempfile.TemporaryDirectory() as d:
        for i in range(SMALL_FILES):
            path = os.path.join(d, "many", f"dir{i % 10}", f"file{i:04d}.txt")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(os.urandom(4096))
        client.log_artifacts(run_id, d)
    return run_id


def dir_size(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def measure(cmd, env):
    """Runs cmd under GNU time; returns (seconds, max RSS MiB, peak temp MiB, stdout)."""
    tmp = tempfile.mkdtemp(prefix="bench-tmp-")
    env = {**env, "TMPDIR": tmp}
    peak = [0]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], dir_size(tmp))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.monotonic()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    elapsed = time.monotonic() - start
    done.set()
    watcher.join()
    shutil.rmtree(tmp, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed:\n{proc.stdout}\n{proc.stderr[-3000:]}")
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return elapsed, rss_kib / 1024, peak[0] / (1024 * 1024), proc.stdout


def fidelity(src_uri, src_run_id, dst_uri, dst_run_id):
    s, d = MlflowClient(src_uri, registry_uri=src_uri), MlflowClient(dst_uri, registry_uri=dst_uri)
    sr, dr = s.get_run(src_run_id), d.get_run(dst_run_id)
    checks = {
        "start_time kept": sr.info.start_time == dr.info.start_time,
        "end_time kept": sr.info.end_time == dr.info.end_time,
        "user_id kept": sr.info.user_id == dr.info.user_id,
        "params": len(dr.data.params) == len(sr.data.params),
        "full metric histories": all(
            len(d.get_metric_history(dst_run_id, k)) == len(s.get_metric_history(src_run_id, k))
            for k in sr.data.metrics),
        "logged models copied": len(dr.outputs.model_outputs) == len(sr.outputs.model_outputs),
        "run artifacts (count)": len(list_all(d, dst_run_id)) == len(list_all(s, src_run_id)),
    }
    return checks


def list_all(client, run_id, path=None):
    out = []
    for f in client.list_artifacts(run_id, path):
        out.extend(list_all(client, run_id, f.path) if f.is_dir else [f.path])
    return out


def main():
    if not os.path.exists(EXIM_COPY_RUN):
        sys.exit("run scripts/bench.sh: it installs mlflow-export-import into .work/exim-venv")
    src, dst = MlflowServer("bench-src"), MlflowServer("bench-dst")
    try:
        src.wait(), dst.wait()
        print(f"seeding: {BIG_MIB} MiB file + {SMALL_FILES} small files + {METRIC_KEYS * POINTS_PER_KEY} metric points", flush=True)
        run_id = seed_bench_run(src.uri)
        listed = list_all(MlflowClient(src.uri), run_id)
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        rows = {}
        # The Python tool insists on MLFLOW_TRACKING_URI being an HTTP URI.
        exim_env = {**base_env, "MLFLOW_TRACKING_URI": src.uri}
        print("copy-run (mlflow-export-import)...", flush=True)
        t, rss, tmp, _ = measure([EXIM_COPY_RUN, "--run-id", run_id, "--experiment-name", "bench-exim",
                                  "--src-mlflow-uri", src.uri, "--dst-mlflow-uri", dst.uri], exim_env)
        exim_run = MlflowClient(dst.uri).search_runs(
            [MlflowClient(dst.uri).get_experiment_by_name("bench-exim").experiment_id])[0].info.run_id
        rows["mlflow-export-import copy-run"] = (t, rss, tmp, fidelity(src.uri, run_id, dst.uri, exim_run))
        print("mlflow-copy (wasmtime run)...", flush=True)
        t, rss, tmp, out = measure(["wasmtime", "run", "-S", "http", WASM, "copy-run", "--run-id", run_id,
                                    "--experiment-name", "bench-wasm", "--src-mlflow-uri", src.uri,
                                    "--dst-mlflow-uri", dst.uri], base_env)
        report = json.loads(out)
        rows["mlflow-copy (wasmtime run)"] = (t, rss, tmp, fidelity(src.uri, run_id, dst.uri, report["dst_run_id"]))
        write_results(rows, report, len(listed))
    finally:
        src.stop()
        dst.stop()


def write_results(rows, report, run_files):
    total_mib = report["artifact_bytes"] / (1024 * 1024)
    lines = [
        "# Benchmark: mlflow-copy vs mlflow-export-import copy-run",
        "",
        f"One run: {BIG_MIB} MiB binary + {SMALL_FILES} files of 4 KiB + a few others ({run_files} run files), "
        f"{METRIC_KEYS * POINTS_PER_KEY + 1254} metric points, 131 params, a dataset, an MLflow 3 sklearn logged model. "
        f"{total_mib:.0f} MiB of artifacts in all (run + model). Two MLflow 3.17.2 servers on 127.0.0.1 "
        "(sqlite, local artifacts), 2-core machine. Wall time of the whole command (process start included); "
        "peak RSS of the copying process (GNU time); peak size of the temp dir (TMPDIR).",
        "",
        "| tool | wall s | peak RSS MiB | peak temp disk MiB |",
        "|---|---:|---:|---:|",
    ]
    for name, (t, rss, tmp, _) in rows.items():
        lines.append(f"| {name} | {t:.1f} | {rss:.0f} | {tmp:.0f} |")
    lines += ["", "| kept by the copy | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
    checks = list(next(iter(rows.values()))[3])
    for check in checks:
        lines.append(f"| {check} | " + " | ".join("yes" if r[3][check] else "**no**" for r in rows.values()) + " |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(ROOT, "bench", "results.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
