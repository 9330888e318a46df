"""Benchmark, migration workload: a whole experiment (tests/e2e/seed_migration.py's, 200 runs by
default: nested, failed, deleted, mixed sizes, logged models) copied between two local MLflow
servers by mlflow-copy's `copy-experiment` and by mlflow-export-import's `export-experiment` +
`import-experiment` (and its threaded bulk pair `export-experiments` / `import-experiments
--use-threads`, when they can be loaded). Wall time, runs per second, peak RSS of the whole
process tree (sampled from /proc), peak temporary disk (TMPDIR and the tool's export folder),
and the CPU both servers spent. Writes its table into bench/results.md as a section of its own
(bench.py keeps it when it rewrites that file).

    .venv/bin/python bench/migration.py [--runs 200] [--repeat 1]

The Python tool lives in .work/bench-venv (scripts/bench.sh makes it). Not a test.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import bench  # noqa: E402  (also puts tests/e2e on the path)
from bench import MIGRATION_BEGIN, MIGRATION_END, PY_BIN, ROOT, WASM, dir_size, machine, servers_cpu  # noqa: E402

from mlflow import MlflowClient  # noqa: E402

import seed_migration  # noqa: E402
from servers import MlflowServer  # noqa: E402

SOURCE = "bench-migration"
RESULTS = os.path.join(ROOT, "bench", "results.md")


# ---------------------------------------------------------------- measuring a process tree

def tree_pids(pid):
    """The pid and every descendant's."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except OSError:
        return [pid]
    return [pid] + [p for child in children for p in tree_pids(child)]


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
    except OSError:
        return 0


def run_measured(cmd, env, disk_dirs):
    """Runs cmd, sampling every 50 ms the RSS summed over its process tree and the size of
    `disk_dirs`. Returns (seconds, peak RSS MiB, peak disk MiB, stdout); raises on failure."""
    peak = {"rss": 0, "disk": 0}
    done = threading.Event()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def sample():
        while not done.is_set():
            peak["rss"] = max(peak["rss"], sum(rss_kib(p) for p in tree_pids(proc.pid)))
            peak["disk"] = max(peak["disk"], sum(dir_size(d) for d in disk_dirs))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    start = time.monotonic()
    sampler.start()
    out, err = proc.communicate()
    elapsed = time.monotonic() - start
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed (exit {proc.returncode}):\n{err[-3000:]}")
    return elapsed, peak["rss"] / 1024, peak["disk"] / (1 << 20), out


# ---------------------------------------------------------------- the tools

def ours(src, dst, label):
    return [["wasmtime", "run", "-S", "http", WASM, "copy-experiment", "--src-experiment-name", SOURCE,
             "--dst-experiment-name", label, "--src-mlflow-uri", src, "--dst-mlflow-uri", dst]]


def python_tool(src, dst, label, folder):
    """export-experiment then import-experiment (one experiment, one run at a time)."""
    return [[f"{PY_BIN}/export-experiment", "--experiment", SOURCE, "--output-dir", folder],
            [f"{PY_BIN}/import-experiment", "--experiment-name", label, "--input-dir", folder]]


def python_tool_threads(src, dst, label, folder):
    """The bulk pair with --use-threads, the experiment renamed on import."""
    rename = os.path.join(os.path.dirname(folder), "rename.csv")
    with open(rename, "w") as f:
        f.write(f"{SOURCE},{label}\n")
    return [[f"{PY_BIN}/export-experiments", "--experiments", SOURCE, "--output-dir", folder,
             "--use-threads", "True"],
            [f"{PY_BIN}/import-experiments", "--input-dir", folder, "--use-threads", "True",
             "--experiment-rename-file", rename]]


def measure_tool(name, make, src, dst, label):
    """One migration by one tool: each phase measured; the destination's runs counted. The
    Python tool reads each phase's server from MLFLOW_TRACKING_URI: the source to export, the
    destination to import. mlflow-copy's command is then run a second time: a re-run finds
    every run copied (what resuming a finished migration costs)."""
    work = tempfile.mkdtemp(prefix="bench-migration-")
    tmp, folder = os.path.join(work, "tmp"), os.path.join(work, "export")
    os.makedirs(tmp)
    phases, rerun = [], None
    try:
        commands = make(src.uri, dst.uri, label, folder)
        for cmd, uri in zip(commands, (src.uri, dst.uri) if len(commands) > 1 else (dst.uri,)):
            env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "TMPDIR": tmp}
            phases.append(measure_phase(cmd, env, src, dst, (tmp, folder)))
            print(f"  {name} {phases[-1]['phase']}: {phases[-1]['seconds']:.1f} s", flush=True)
        if len(commands) == 1:
            rerun = measure_phase(commands[0], env, src, dst, (tmp,))
            print(f"  {name} re-run: {rerun['seconds']:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        bench.free_destination(dst)
    return phases, copied_runs(dst.uri, label), rerun


def measure_phase(cmd, env, src, dst, disk_dirs):
    cpu = servers_cpu((src, dst))
    seconds, rss, disk, _ = run_measured(cmd, env, disk_dirs)
    return {"phase": "copy-experiment" if cmd[0] == "wasmtime" else os.path.basename(cmd[0]),
            "seconds": seconds, "rss": rss, "disk": disk, "server_cpu": servers_cpu((src, dst)) - cpu}


def copied_runs(uri, name):
    """(runs, nested runs) in the destination experiment."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return 0, 0
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return len(runs), sum("mlflow.parentRunId" in r.data.tags for r in runs)


# ---------------------------------------------------------------- the run

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=1, help="migrations per tool")
    parser.add_argument("--no-python", action="store_true")
    args = parser.parse_args()
    tools = {"mlflow-copy": lambda s, d, label, folder: ours(s, d, label)}
    if not args.no_python:
        if not os.path.exists(f"{PY_BIN}/export-experiment"):
            sys.exit("run scripts/bench.sh: it installs mlflow-export-import into .work/bench-venv")
        tools["mlflow-export-import"] = python_tool
        tools["mlflow-export-import --use-threads"] = python_tool_threads
    subprocess.run(["wasmtime", "run", "-S", "http", WASM, "--help"], check=True, capture_output=True)
    src, dst = MlflowServer("bench-mig-src"), MlflowServer("bench-mig-dst")
    results, failed = {}, {}
    try:
        src.wait(), dst.wait()
        started = time.monotonic()
        seeded = seed_migration.seed_experiment(src.uri, SOURCE, args.runs)
        seeding = time.monotonic() - started
        print(f"seeded {args.runs} runs ({len(seeded.active)} active) in {seeding:.1f} s", flush=True)
        for i in range(args.repeat):
            for name, make in tools.items():
                label = f"mig-{name.split()[0]}-{'threads-' if 'threads' in name else ''}{i}"
                try:
                    results.setdefault(name, []).append(measure_tool(name, make, src, dst, label))
                except RuntimeError as e:
                    print(f"  {name} FAILED: {str(e)[-800:]}", flush=True)
                    failed[name] = str(e).strip().splitlines()[-1][:200]
    finally:
        src.stop()
        dst.stop()
    write_section(args, seeded, seeding, results, failed)


def table(active, results, failed):
    lines = ["| tool | phase | wall s | runs copied (nested) | runs/s | peak RSS MiB (tree) | temp disk MiB | server CPU s |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    for name, attempts in results.items():
        for phases, (runs, nested), rerun in attempts:
            total = sum(p["seconds"] for p in phases)
            for p in phases if len(phases) > 1 else []:
                lines.append(f"| {name} | {p['phase']} | {p['seconds']:.1f} | | | {p['rss']:.0f} | "
                             f"{p['disk']:.0f} | {p['server_cpu']:.1f} |")
            lines.append(f"| {name} | **whole migration** | **{total:.1f}** | {runs} of {active} ({nested}) | "
                         f"**{runs / total:.2f}** | {max(p['rss'] for p in phases):.0f} | "
                         f"{max(p['disk'] for p in phases):.0f} | {sum(p['server_cpu'] for p in phases):.1f} |")
            if rerun:
                lines.append(f"| {name} | the same command again (all `existing`) | {rerun['seconds']:.1f} | 0 new | "
                             f"{runs / rerun['seconds']:.2f} checked | {rerun['rss']:.0f} | {rerun['disk']:.0f} | "
                             f"{rerun['server_cpu']:.1f} |")
    for name, error in failed.items():
        lines.append(f"| {name} | failed | | | | | | `{error}` |")
    return lines


def write_section(args, seeded, seeding, results, failed):
    load = os.getloadavg()
    files = sum(r.files for r in seeded.active)
    points = sum(r.metric_points for r in seeded.active)
    lines = [
        MIGRATION_BEGIN,
        "## Migration: a whole experiment (bench/migration.py)",
        "",
        f"Generated by `bench/migration.py --runs {args.runs} --repeat {args.repeat}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average after the run "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min). Machine: {machine()}.",
        "",
        f"Source: tests/e2e/seed_migration.py's experiment of {args.runs} runs, {len(seeded.active)} of them "
        f"active (the deleted ones are not copied by either tool), nested two levels, some FAILED, "
        f"{points:,} metric points and {files} artifact files in all, "
        f"{sum(r.logged_model for r in seeded.runs)} logged models; seeded in {seeding:.0f} s. "
        "Each migration goes into a fresh destination experiment. Peak RSS: the sum over the "
        "command's whole process tree, sampled every 50 ms; temp disk: TMPDIR plus the Python tool's "
        "export folder, sampled likewise; server CPU: what both MLflow servers spent.",
        "",
        *table(len(seeded.active), results, failed),
        "",
        MIGRATION_END,
    ]
    replace_section(RESULTS, "\n".join(lines))
    print("\n".join(lines))


def replace_section(path, block):
    """Puts `block` into the file, in place of an earlier migration section or at its end."""
    text = open(path).read() if os.path.exists(path) else ""
    earlier = bench.migration_section(text)
    text = text.replace(earlier, block) if earlier else text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
