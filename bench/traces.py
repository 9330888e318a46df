"""Benchmark: copy-run of a run with many small MLflow 3 traces (issue 19: "10,000 small traces
within flat memory"), through `wasmtime run`, between two local MLflow servers.

Seeds one run per size with N traces (a root span and a child, an assessment each, linked to the
run by `mlflow.sourceRun`), written straight to the source's REST API (OTLP spans in batches, then
StartTraceV3 per trace, several at once) so that seeding takes seconds, not the tracing SDK's
minutes. Then copies each run once under GNU time and checks the destination has every trace.
Reports wall time, traces per second, peak RSS and the servers' CPU. mlflow-export-import's
copy-run copies no traces (its README: traces only per experiment), so there is no Python row.

Run: .venv/bin/python bench/traces.py [--sizes 1000,10000] [--out bench/results-traces.md]
"""
import argparse
import base64
import concurrent.futures
import json
import os
import subprocess
import sys
import time
import uuid

import requests

sys.path.insert(0, os.path.dirname(__file__))
from bench import WASM, machine, measure, ours, servers_cpu  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from servers import MlflowServer  # noqa: E402

START_NS = 1_796_000_000_000_000_000


def otlp_span(trace_hex, span_id, parent, name, start_ns, attributes):
    span = {"trace_id": base64.b64encode(bytes.fromhex(trace_hex)).decode(),
            "span_id": base64.b64encode(span_id.to_bytes(8, "big")).decode(),
            "name": name, "start_time_unix_nano": start_ns, "end_time_unix_nano": start_ns + 5_000_000,
            "status": {"code": "STATUS_CODE_OK"},
            "attributes": [{"key": k, "value": {"string_value": json.dumps(v)}} for k, v in attributes.items()]}
    if parent:
        span["parent_span_id"] = base64.b64encode(parent.to_bytes(8, "big")).decode()
    return span


def trace_info(trace_id, experiment_id, run_id, n):
    at = START_NS + n * 10_000_000
    return {"trace_id": trace_id,
            "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}},
            "request_time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at // 10**9)) + ".000Z",
            "execution_duration": "0.005s", "state": "OK",
            "request_preview": json.dumps({"question": f"q{n}"}), "response_preview": json.dumps({"answer": n}),
            "trace_metadata": {"mlflow.sourceRun": run_id, "mlflow.trace_schema.version": "3",
                               "mlflow.trace.sizeBytes": "900"},
            "tags": {"mlflow.traceName": "agent"},
            "assessments": [{"assessment_id": f"a-{uuid.uuid4().hex}", "trace_id": trace_id,
                             "assessment_name": "helpful", "feedback": {"value": n % 2 == 0},
                             "source": {"source_type": "HUMAN", "source_id": "bench"},
                             "create_time": "2026-12-01T00:00:00Z", "last_update_time": "2026-12-01T00:00:00Z"}]}


def seed_traces(uri, experiment_id, run_id, count, batch=100):
    """`count` traces of the run: OTLP spans `batch` traces at a time, then their infos."""
    session = requests.Session()

    def write(first):
        spans, infos = [], []
        for n in range(first, min(first + batch, count)):
            hexid = uuid.uuid4().hex
            at = START_NS + n * 10_000_000
            spans.append(otlp_span(hexid, 1, None, "agent", at, {"mlflow.spanType": "AGENT", "mlflow.spanInputs": {"q": n}}))
            spans.append(otlp_span(hexid, 2, 1, "retrieve", at + 1000, {"mlflow.spanType": "RETRIEVER", "top_k": 2}))
            infos.append(trace_info(f"tr-{hexid}", experiment_id, run_id, n))
        body = {"resource_spans": [{"scope_spans": [{"spans": spans}]}]}
        session.post(uri + "/v1/traces", json=body, headers={"x-mlflow-experiment-id": experiment_id},
                     timeout=120).raise_for_status()
        for info in infos:
            session.post(uri + "/api/3.0/mlflow/traces", json={"trace": {"trace_info": info}},
                         timeout=120).raise_for_status()

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(0, count, batch)))


def count_traces(uri, experiment_id, run_id):
    found, token = 0, None
    while True:
        body = {"locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}}],
                "filter": f"trace.run_id = '{run_id}'", "max_results": 500}
        if token:
            body["page_token"] = token
        page = requests.post(uri + "/api/3.0/mlflow/traces/search", json=body, timeout=120).json()
        found += len(page.get("traces", []))
        token = page.get("next_page_token")
        if not token:
            return found


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000", help="traces per run, one copy each")
    parser.add_argument("--out", default=None, help="write the results as Markdown here")
    args = parser.parse_args()
    src, dst = MlflowServer("bench-traces-src"), MlflowServer("bench-traces-dst")
    try:
        src.wait(), dst.wait()
        client = MlflowClient(src.uri)
        # wasmtime caches what it compiled: fill the cache first, so that no copy pays for it.
        subprocess.run(["wasmtime", "run", "-S", "http", WASM, "--help"], check=True, capture_output=True)
        rows = []
        for size in [int(s) for s in args.sizes.split(",")]:
            experiment = client.create_experiment(f"traces-{size}-{uuid.uuid4().hex[:6]}")
            run_id = client.create_run(experiment).info.run_id
            started = time.monotonic()
            seed_traces(src.uri, experiment, run_id, size)
            print(f"seeded {size} traces in {time.monotonic() - started:.1f} s", file=sys.stderr)
            cpu_before = servers_cpu([src, dst])
            seconds, rss, temp, out = measure(ours("run", src.uri, dst.uri, run_id, f"copy-{size}", WASM))
            cpu = servers_cpu([src, dst]) - cpu_before
            report = json.loads(out)
            copied = count_traces(dst.uri, report["dst_experiment_id"], report["dst_run_id"])
            assert report["traces"] == size == copied, (report["traces"], size, copied)
            rows.append((size, seconds, size / seconds, rss, temp, cpu, report["assessments"]))
            print(f"{size} traces: {seconds:.1f} s, {rss:.0f} MiB", file=sys.stderr)
    finally:
        src.stop()
        dst.stop()
    lines = ["# Benchmark: a run with many small traces (bench/traces.py)", "",
             f"Generated by `bench/traces.py --sizes {args.sizes}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
             "", f"Machine: {machine()}", "",
             "Each trace: two spans, one assessment, ~0.9 KB. One copy per size, `wasmtime run`; every trace "
             "checked at the destination.", "",
             "| traces | wall s | traces/s | peak RSS MiB | temp MiB | server CPU s | assessments |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {n:,} | {s:.1f} | {r:.0f} | {m:.0f} | {t:.0f} | {c:.1f} | {a:,} |" for n, s, r, m, t, c, a in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
