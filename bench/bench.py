"""Benchmark: mlflow-copy (`wasmtime run`) against mlflow-export-import's copy-run and
copy-model-version, workload by workload, and against curl moving the same artifact bytes.

Starts two local MLflow servers, seeds each workload once on the source, then for each workload
runs the two tools alternately (`--repeat` times each, 3 by default), each copy into a fresh
destination experiment, and reports the median wall time, the ratio, peak RSS (GNU time) and
peak temporary disk (TMPDIR pointed at a watched directory). Also measures the component's cold
start (`--help`) with and without a precompiled artifact. Writes bench/results.md: the
figures, then bench/notes.md (written by hand: the profile, what each change bought).

    scripts/bench.sh [--scale 0.25] [--repeat 3] [--workloads 1,2,3,4,5]

`--scale` shrinks every workload (file size, file count, metric steps) for a quicker run.
The Python tool lives in its own venv (.work/bench-venv, made by scripts/bench.sh). Not a test:
timings belong here.
"""
import argparse
import concurrent.futures
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))

from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402

import seed  # noqa: E402
from fault_proxy import FaultProxy  # noqa: E402
from link_proxy import LinkProxy  # noqa: E402
from servers import MlflowServer  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
WASM = os.environ.get("MLFLOW_COPY_WASM", os.path.join(ROOT, "target/wasm32-wasip2/release/mlflow_copy.wasm"))
PY_BIN = os.path.join(ROOT, ".work/bench-venv/bin")
HOST = os.environ.get("MLFLOW_COPY_HOST", os.path.join(ROOT, "hosts/rust/target/release/mlflow-copy-host"))
TIME = "/usr/bin/time"
START = 1_600_000_000_000
# bench/migration.py's section of results.md, kept when this script rewrites the file.
MIGRATION_BEGIN, MIGRATION_END = "<!-- migration: bench/migration.py -->", "<!-- /migration -->"


def migration_section(text):
    """The migration section (markers included) of a results file's text, or ""."""
    if MIGRATION_BEGIN not in text or MIGRATION_END not in text:
        return ""
    return text[text.index(MIGRATION_BEGIN):text.index(MIGRATION_END) + len(MIGRATION_END)]


# ---------------------------------------------------------------- seeding

def new_run(client, experiment):
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    return client.create_run(exp_id, start_time=START, run_name=experiment).info.run_id


def log_in_parallel(client, run_id, batches):
    """Seeds with four log-batch requests in flight (seeding is not what is measured)."""
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda b: client.log_batch(run_id, **b), batches))


def seed_big_file(client, run_id, mib):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "big.bin")
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(1 << 20))
        client.log_artifact(run_id, path, "big")


def seed_small_files(client, run_id, count):
    with tempfile.TemporaryDirectory() as d:
        for i in range(count):
            path = os.path.join(d, f"dir{i % 20:02d}", f"file{i:05d}.bin")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(os.urandom(8192))
        client.log_artifacts(run_id, d, "small")


def seed_metrics(client, run_id, keys, steps, params, tags):
    batches = [{"params": [Param(f"p{i:04d}", f"value-{i}") for i in range(j, min(j + 100, params))]}
               for j in range(0, params, 100)]
    batches += [{"tags": [RunTag(f"t{i:04d}", f"tag-{i}") for i in range(j, min(j + 100, tags))]}
                for j in range(0, tags, 100)]
    points = (Metric(f"m{k:03d}", math.sin(i / 50.0), START + i, i) for k in range(keys) for i in range(steps))
    chunk = []
    for p in points:
        chunk.append(p)
        if len(chunk) == 1000:
            batches.append({"metrics": chunk})
            chunk = []
    if chunk:
        batches.append({"metrics": chunk})
    log_in_parallel(client, run_id, batches)


def seed_workloads(uri, wanted, scale):
    """Each workload's source: (kind, id or (model, version), artifact files to move)."""
    client = MlflowClient(uri, registry_uri=uri)
    big_mib = max(1, int(1024 * scale))
    small = max(1, int(2000 * scale))
    keys, steps = 100, max(1, int(10_000 * scale))
    out = {}
    for n in wanted:
        print(f"seeding workload {n}", flush=True)
        if n == 4:
            run_id, version = seed.seed_registered_version(uri, "bench-model")
            out[n] = ("version", ("bench-model", version))
            continue
        run_id = new_run(client, f"bench-w{n}")
        if n in (1, 5):
            seed_big_file(client, run_id, big_mib)
        if n in (2, 5):
            seed_small_files(client, run_id, small)
        if n in (3, 5):
            seed_metrics(client, run_id, keys, steps, 500, 200)
        client.set_terminated(run_id, "FINISHED", end_time=START + 3_600_000)
        out[n] = ("run", run_id)
    sizes = {"big_mib": big_mib, "small_files": small, "metric_keys": keys, "metric_steps": steps}
    return out, sizes


DESCRIPTIONS = {
    1: "one {big_mib} MiB artifact",
    2: "{small_files} files of 8 KiB",
    3: "{metric_keys} metrics x {metric_steps} steps + 500 params + 200 tags",
    4: "MLflow 3 model version, deep copy (copy-model-version)",
    5: "(1) + (2) + (3) in one run",
}


# ---------------------------------------------------------------- measuring

def dir_size(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def tree_cpu(pid):
    """CPU seconds (user + system) a process and all its descendants have used so far."""
    total = 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = f.read().split()
    except OSError:
        return total
    return total + sum(tree_cpu(int(child)) for child in children)


def servers_cpu(servers):
    return sum(tree_cpu(s.proc.pid) for s in servers)


def measure(cmd, env=None):
    """Runs cmd under GNU time: (seconds, peak RSS MiB, peak temp MiB, stdout, stderr)."""
    tmp = tempfile.mkdtemp(prefix="bench-tmp-")
    env = {**(env or os.environ), "TMPDIR": tmp}
    peak, done = [0], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], dir_size(tmp))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.monotonic()
    proc = subprocess.run([TIME, "-v", *cmd], capture_output=True, text=True, env=env)
    elapsed = time.monotonic() - start
    done.set()
    watcher.join()
    shutil.rmtree(tmp, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return elapsed, rss_kib / 1024, peak[0] / (1 << 20), proc.stdout, proc.stderr


def process_cpu(time_stderr):
    """CPU seconds (user + system) of the command GNU time measured."""
    def seconds(what):
        return float(re.search(rf"{what} time \(seconds\): ([0-9.]+)", time_stderr).group(1))
    return seconds("User") + seconds("System")


def settled_limits(stderr):
    """The in-flight limits a copy settled on, from its phase lines ("files: limit settled at
    24", "metrics: reads: ...; writes: ...")."""
    return [line.split("] ", 1)[-1] for line in stderr.splitlines() if "limit settled" in line]


def ours(kind, src, dst, source, label, wasm):
    cmd = ["wasmtime", "run", "-S", "http", wasm]
    if kind == "run":
        cmd += ["copy-run", "--run-id", source, "--experiment-name", label]
        cmd += ["--src-mlflow-uri", src, "--dst-mlflow-uri", dst]
    else:
        model, version = source
        cmd += ["copy-model-version", "--src-model", model, "--src-version", version,
                "--dst-model", label, "--dst-experiment-name", label,
                "--src-registry-uri", src, "--dst-registry-uri", dst]
    return cmd


def ours_in_host(kind, src, dst, source, label, wasm):
    """The same copy through the Rust embedding host (its pooled outgoing connections)."""
    if kind == "run":
        function, request = "copy-run", {"run_id": source, "experiment_name": label,
                                          "src_mlflow_uri": src, "dst_mlflow_uri": dst}
    else:
        model, version = source
        function, request = "copy-model-version", {
            "src_model": model, "src_version": version, "dst_model": label, "dst_experiment_name": label,
            "src_registry_uri": src, "dst_registry_uri": dst}
    return [HOST, wasm, function, json.dumps(request)]


def python_tool(kind, src, dst, source, label):
    if kind == "run":
        return [f"{PY_BIN}/copy-run", "--run-id", source, "--experiment-name", label,
                "--src-mlflow-uri", src, "--dst-mlflow-uri", dst]
    model, version = source
    return [f"{PY_BIN}/copy-model-version", "--src-model", model, "--src-version", version,
            "--dst-model", label, "--dst-experiment-name", label,
            "--src-registry-uri", src, "--dst-registry-uri", dst]


def artifact_files(client, run_id, path=None):
    out = []
    for f in client.list_artifacts(run_id, path):
        out.extend(artifact_files(client, run_id, f.path) if f.is_dir else [(f.path, f.file_size)])
    return out


def curl_floor(src, dst, run_id, files, label):
    """curl moving the same bytes GET -> PUT between the servers, 8 files at once."""
    client = MlflowClient(src)
    root = client.get_run(run_id).info.artifact_uri.split("mlflow-artifacts:/", 1)[1]

    def move(item):
        path, size = item
        quoted = urllib.parse.quote(path)
        get = f"{src}/api/2.0/mlflow-artifacts/artifacts/{root}/{quoted}"
        put = f"{dst}/api/2.0/mlflow-artifacts/artifacts/curl-floor/{label}/{quoted}"
        script = (f'curl -sSf "{get}" | curl -sSf -X PUT -H "Content-Length: {size}" '
                  f'-H "Content-Type: application/octet-stream" -T - "{put}" -o /dev/null')
        subprocess.run(["bash", "-o", "pipefail", "-c", script], check=True)

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(move, files))
    return time.monotonic() - start


def cold_start(wasm, repeat=10):
    """Median seconds of `--help`: from the .wasm (compiled on every start) and precompiled."""
    cwasm = os.path.join(tempfile.mkdtemp(prefix="bench-cwasm-"), "mlflow_copy.cwasm")
    subprocess.run(["wasmtime", "compile", wasm, "-o", cwasm], check=True)

    def median_of(cmd):
        times = []
        for _ in range(repeat):
            start = time.monotonic()
            subprocess.run(cmd, check=True, capture_output=True)
            times.append(time.monotonic() - start)
        return statistics.median(times)

    plain = median_of(["wasmtime", "run", "-S", "http", wasm, "--help"])
    pre = median_of(["wasmtime", "run", "-S", "http", "--allow-precompiled", cwasm, "--help"])
    return plain, pre


def free_destination(dst_server):
    """Removes the destination's copied artifact bytes (the disk is not what is measured)."""
    arts = os.path.join(dst_server.dir, "mlartifacts")
    for entry in os.listdir(arts) if os.path.isdir(arts) else []:
        shutil.rmtree(os.path.join(arts, entry), ignore_errors=True)


# ---------------------------------------------------------------- the run

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0, help="shrink every workload (0.25: a quarter)")
    parser.add_argument("--repeat", type=int, default=3, help="copies per tool and workload")
    parser.add_argument("--workloads", default="1,2,3,4,5")
    parser.add_argument("--no-python", action="store_true", help="measure mlflow-copy (and curl) only")
    parser.add_argument("--extra", action="append", default=[],
                        help="LABEL=PATH: another build of the component to measure too (before/after)")
    parser.add_argument("--host", action="store_true",
                        help="also measure mlflow-copy in the Rust embedding host (pooled connections)")
    parser.add_argument("--link", type=float, default=0,
                        help="MS: both servers behind a delaying proxy, MS each way (link mode)")
    parser.add_argument("--throttle", action="store_true",
                        help="with --link: the destination answers 429 (Retry-After: 1) to every 10th write")
    parser.add_argument("--out", default=None,
                        help="default bench/results.md, in link mode bench/results-link.md")
    args = parser.parse_args()
    if args.out is None:
        args.out = os.path.join(ROOT, "bench", "results-link.md" if args.link else "results.md")
    wanted = [int(w) for w in args.workloads.split(",")]
    if not os.path.exists(TIME):
        sys.exit(f"{TIME} (GNU time) is needed for peak RSS: apt-get install time")
    if not args.no_python and not os.path.exists(f"{PY_BIN}/copy-run"):
        sys.exit("run scripts/bench.sh: it installs mlflow-export-import into .work/bench-venv")
    tools = {"mlflow-copy": WASM}
    tools.update(dict(e.split("=", 1) for e in args.extra))
    in_host = {"mlflow-copy (Rust host)": WASM} if args.host else {}
    tools.update(in_host)

    # wasmtime caches what it compiled: fill the cache first, so that no copy pays for the
    # compile (users run the same component again and again; cold start is measured below).
    for wasm in tools.values():
        subprocess.run(["wasmtime", "run", "-S", "http", wasm, "--help"], check=True, capture_output=True)
    src, dst = MlflowServer("bench-src"), MlflowServer("bench-dst")
    rows, links = [], []
    try:
        src.wait(), dst.wait()
        sources, sizes = seed_workloads(src.uri, wanted, args.scale)
        src_uri, dst_uri = src.uri, dst.uri
        if args.link:
            src_uri, dst_uri, links = far_away(src, dst, args.link / 1000, args.throttle)
        src_client = MlflowClient(src.uri)
        for n in wanted:
            kind, source = sources[n]
            times = {name: [] for name in [*tools, "mlflow-export-import"]}
            rss, tmp = dict.fromkeys(times, 0.0), dict.fromkeys(times, 0.0)
            server_cpu = {name: [] for name in times}
            # Every CPU second the copy cost the machine: both servers, the copying process,
            # and this process (the link proxies' threads); over the cores, the CPU floor.
            all_cpu = {name: [] for name in times}
            limits = {}
            failed = {}
            for i in range(args.repeat):
                order = list(tools.items()) + ([] if args.no_python else [("mlflow-export-import", None)])
                for name, wasm in order:
                    label = re.sub(r"[^A-Za-z0-9-]+", "-", f"w{n}-{name}-{i}").strip("-")
                    run = ours_in_host if name in in_host else ours
                    cmd = (python_tool(kind, src_uri, dst_uri, source, label) if wasm is None
                           else run(kind, src_uri, dst_uri, source, label, wasm))
                    # The Python tool insists on MLFLOW_TRACKING_URI being an HTTP URI.
                    env = {**os.environ, "MLFLOW_TRACKING_URI": src_uri}
                    connections_before = sum(p.connections for p in links if isinstance(p, LinkProxy))
                    throttled_before = throttling(links)
                    cpu_before = servers_cpu((src, dst))
                    own_before = time.process_time()
                    try:
                        t, r, d, _, err = measure(cmd, env)
                    except RuntimeError as e:
                        # Reported, not hidden: a tool that fails a workload gets no time.
                        print(f"  workload {n} {name} #{i + 1} FAILED: {str(e)[-600:]}", flush=True)
                        failed[name] = str(e).strip().splitlines()[-1][:200]
                        continue
                    finally:
                        free_destination(dst)
                    connections = sum(p.connections for p in links if isinstance(p, LinkProxy)) - connections_before
                    (requests, refused) = [a - b for a, b in zip(throttling(links), throttled_before)]
                    print(f"  workload {n} {name} #{i + 1}: {t:.1f} s, {r:.0f} MiB RSS, {d:.0f} MiB temp"
                          + (f", {connections} connections" if links else "")
                          + (f", {requests} requests to the destination, {refused} answered 429"
                             if args.throttle else "")
                          + "".join(f"\n      {limit}" for limit in settled_limits(err)), flush=True)
                    times[name].append(t)
                    server_cpu[name].append(servers_cpu((src, dst)) - cpu_before)
                    all_cpu[name].append(server_cpu[name][-1] + process_cpu(err)
                                         + time.process_time() - own_before)
                    limits[name] = "; ".join(settled_limits(err))
                    rss[name], tmp[name] = max(rss[name], r), max(tmp[name], d)
            floor = None
            if kind == "run" and n in (1, 2, 5) and not args.link:
                files = artifact_files(src_client, source)
                floor = curl_floor(src.uri, dst.uri, source, files, f"w{n}")
                free_destination(dst)
            rows.append((n, times, rss, tmp, floor, failed, server_cpu, all_cpu, limits))
        plain, pre = cold_start(WASM)
    finally:
        for proxy in links:
            proxy.close()
        src.stop()
        dst.stop()
    write_results(args, sizes, rows, (plain, pre), list(tools))


def throttling(links):
    """(requests the destination's limiter saw, how many it answered 429), so far."""
    limiters = [p for p in links if isinstance(p, FaultProxy)]
    return (sum(len(p.traffic) for p in limiters),
            sum(rule.fired for p in limiters for rule in p.rules))


def far_away(src, dst, delay, throttle):
    """Both servers behind a delaying proxy (`delay` s each way); with `throttle`, the destination
    answers every 10th write (POST, PUT) with 429 and Retry-After: 1, as a loaded server does.
    Returns the URIs the tools use and the proxies."""
    proxies = [LinkProxy(src.port, delay)]
    dst_port = dst.port
    if throttle:
        limiter = FaultProxy(dst.port)
        for method in ("POST", "PUT"):
            limiter.add(method, "", every=10, status=429, retry_after="1")
        proxies.append(limiter)
        dst_port = limiter.port
    proxies.append(LinkProxy(dst_port, delay))
    return proxies[0].uri, proxies[-1].uri, proxies


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / (1 << 20)
    wasmtime = subprocess.run(["wasmtime", "--version"], capture_output=True, text=True).stdout.strip()
    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()} {platform.release()}, "
            f"{wasmtime}, MLflow 3.17.2 servers with 2 workers each (sqlite, local artifacts) on 127.0.0.1")


def write_results(args, sizes, rows, cold, ours_names):
    med = statistics.median
    lines = [
        "# Benchmark: mlflow-copy vs mlflow-export-import",
        "",
        f"Generated by `bench/bench.py --scale {args.scale} --repeat {args.repeat} --workloads {args.workloads}"
        + (f" --link {args.link:g}" if args.link else "") + (" --throttle" if args.throttle else "")
        + f"` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        *([f"Link mode: each server behind a delaying proxy (bench/link_proxy.py), {args.link:g} ms each "
           f"way ({2 * args.link:g} ms per round trip, one more for each new connection)"
           + ("; the destination answers every 10th write with 429, Retry-After: 1" if args.throttle else "")
           + ". The floor here is the round trips (requests one after another x the round trip, "
           "files x their round trips / files in flight) or the CPU floor, whichever is higher."] if args.link else []),
        "",
        f"Machine: {machine()}.",
        "",
        "Median wall time of the whole command (process start included) over the copies of each tool, "
        "run alternately; peak RSS of the copying process (GNU time, worst copy); peak size of its "
        "temp dir (TMPDIR). Floor: curl moving the same artifact files GET -> PUT between the "
        "servers, 8 at once. Server CPU: the CPU seconds both MLflow servers (every worker) spent "
        "serving one copy (median). All CPU: those, the copying process's and the bench process's "
        f"(the link proxies run in it); on {os.cpu_count()} cores, no copy can take less wall time "
        f"than that divided by {os.cpu_count()}: the CPU floor. Limits: the in-flight limits the "
        "copy settled on (its phase lines).",
        "",
        "| workload | tool | median s | runs s | ratio (Python / this) | peak RSS MiB | temp MiB "
        "| server CPU s | all CPU s | CPU floor s | wall / floor | limits settled |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    cores = os.cpu_count()
    for n, times, rss, tmp, floor, failed, server_cpu, all_cpu, limits in rows:
        desc = DESCRIPTIONS[n].format(**sizes)
        py = times.get("mlflow-export-import") or []
        for name in [*ours_names, "mlflow-export-import"]:
            if name in failed:
                lines.append(f"| {n}: {desc} | {name} | failed | `{failed[name]}` | | | | | | | | |")
            if not times.get(name):
                continue
            ratio = f"{med(py) / med(times[name]):.1f}x" if py and name != "mlflow-export-import" else ""
            runs = ", ".join(f"{t:.1f}" for t in times[name])
            cpu_floor = med(all_cpu[name]) / cores
            lines.append(f"| {n}: {desc} | {name} | {med(times[name]):.1f} | {runs} | {ratio} | "
                         f"{rss[name]:.0f} | {tmp[name]:.0f} | {med(server_cpu[name]):.1f} | "
                         f"{med(all_cpu[name]):.1f} | {cpu_floor:.1f} | {med(times[name]) / cpu_floor:.2f}x | "
                         f"{limits.get(name, '')} |")
        if floor is not None:
            ratio = med(times["mlflow-copy"]) / floor
            lines.append(f"| {n}: {desc} | curl GET -> PUT (floor) | {floor:.1f} | | mlflow-copy at {ratio:.2f}x the floor | | | | | | | |")
    plain, pre = cold
    lines += [
        "",
        f"Cold start, `wasmtime run -S http mlflow_copy.wasm --help` (median of 10): {plain * 1000:.0f} ms; "
        f"precompiled (`wasmtime compile mlflow_copy.wasm -o mlflow_copy.cwasm`, then "
        f"`wasmtime run -S http --allow-precompiled mlflow_copy.cwasm --help`): {pre * 1000:.0f} ms.",
        "",
    ]
    text = "\n".join(lines)
    notes = os.path.join(ROOT, "bench", "notes.md")
    # The hand-written notes go with the main results only, not with extra runs (--out).
    if os.path.exists(notes) and os.path.abspath(args.out) == os.path.join(ROOT, "bench", "results.md"):
        with open(notes) as f:
            text += "\n" + f.read()
    if os.path.exists(args.out):
        with open(args.out) as f:
            kept = migration_section(f.read())
        text += "\n" + kept + "\n" if kept else ""
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
