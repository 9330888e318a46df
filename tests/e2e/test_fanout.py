"""copy-experiment --via: a migration fanned out over three `wasmtime serve` replicas of the
built component behind a real load balancer (HAProxy from Debian: round robin, health checks on
/healthz), one replica killed (SIGKILL) while items are in flight. Every source run must be
copied exactly once, nested as in the source, each replica must have been sent items, and the
copies must verify. Also: a wrong token and an unreachable URL fail clearly, and a dry run
never contacts the function."""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest
import requests

import seed
from compare import runs_in
import hosts
from conftest import WASM, Result, Served, cli_command, free_port, run_cli, run_host, unique, wait_for_health

TOKEN = "fanout-token-5c2e91d7"
SRC_LINEAGE = "mlflow_exim.run_info.run_id"
PARENT = "mlflow.parentRunId"
REPLICAS = 3
# Quick retries: a lost replica's items are sent again within a second or two.
FAST_RETRIES = {"MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0.2", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.2"}



class Balancer:
    """HAProxy on a free 127.0.0.1 port in front of the replicas: round robin, a health check
    on /healthz every half second, and a stats page (CSV) to see what each replica was sent."""

    def __init__(self, replicas):
        self.port, self.stats_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = tempfile.mkdtemp(prefix="haproxy-")
        servers = "\n".join(f"    server r{i} 127.0.0.1:{r.port} check inter 500ms fall 1 rise 1"
                            for i, r in enumerate(replicas))
        config = f"""
global
    maxconn 256
defaults
    mode http
    timeout connect 2s
    timeout client 300s
    timeout server 300s
    retries 2
    option redispatch
frontend copy
    bind 127.0.0.1:{self.port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk
    # wasmtime serve refuses a request without an authority (HTTP/1.0, no Host header).
    http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host 127.0.0.1
    http-check expect status 200
{servers}
listen stats
    bind 127.0.0.1:{self.stats_port}
    stats enable
    stats uri /stats
"""
        path = os.path.join(self.dir, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(config)
        self.log = open(os.path.join(self.dir, "haproxy.log"), "wb")
        # Not a skip: a fan-out test that does not run proves nothing (scripts/setup.sh installs it).
        haproxy = shutil.which("haproxy") or pytest.fail("haproxy is not installed: run scripts/setup.sh")
        self.proc = subprocess.Popen([haproxy, "-db", "-f", path], stdout=self.log, stderr=subprocess.STDOUT)
        if not wait_for_health(self.url + "/healthz", 20):
            raise RuntimeError(f"haproxy did not start; see {self.log.name}")

    def sessions(self):
        """Requests sent to each replica so far (HAProxy's `stot`; health checks aside)."""
        lines = requests.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=5).text.splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","))) for line in lines[1:] if line]
        return {r["svname"]: int(r["stot"]) for r in rows if r["pxname"] == "replicas" and r["svname"].startswith("r")}

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def fleet(src, dst):
    """Three replicas with the token and the two servers on their allow-list, behind HAProxy."""
    env = {"MLFLOW_COPY_API_TOKEN": TOKEN}
    replicas = [Served(env, allowed_hosts=f"127.0.0.1:{src.port},127.0.0.1:{dst.port}") for _ in range(REPLICAS)]
    balancer = Balancer(replicas)
    try:
        yield balancer, replicas
    finally:
        balancer.stop()
        for r in replicas:
            if r.proc.poll() is None:
                r.stop()


@pytest.fixture(scope="module")
def experiment(src):
    """12 runs: 6 roots, 4 children (of the first two roots), 2 grandchildren. Returns the
    experiment name and {run id: parent run id or None}."""
    name = unique("fanout")
    parents = {}

    def add(parent=None):
        run_id = seed.seed_rich_run(src.uri, name, metric_points=300, with_model=False,
                                    parent_run_id=parent, big_bytes=256 * 1024, run_name=f"run-{len(parents)}")
        parents[run_id] = parent
        return run_id

    roots = [add() for _ in range(6)]
    children = [add(roots[i % 2]) for i in range(4)]
    for child in children[:2]:
        add(child)
    return name, parents


def args(name, dst_name, src, dst, *extra):
    return ["copy-experiment", "--src-experiment-name", name, "--dst-experiment-name", dst_name,
            "--src-mlflow-uri", src.uri, "--dst-mlflow-uri", dst.uri, *extra]


def test_a_wrong_token_is_refused_clearly_and_never_shown(fleet, src, dst, experiment):
    balancer, _ = fleet
    name, _ = experiment
    wrong = "wrong-token-0d9e8f7a"
    result = run_cli(args(name, unique("fanout-refused"), src, dst, "--via", balancer.url, "--max-runs", "2"),
                     env={"MLFLOW_COPY_VIA_TOKEN": wrong, **FAST_RETRIES}, timeout=120)
    assert result.code != 0, result
    assert "error [unauthorized]" in result.stderr and "MLFLOW_COPY_VIA_TOKEN" in result.stderr, result
    assert wrong not in result.stdout + result.stderr and TOKEN not in result.stdout + result.stderr


def test_an_unreachable_function_fails_clearly_and_a_dry_run_never_calls_it(src, dst, experiment):
    name, parents = experiment
    nowhere = f"http://127.0.0.1:{free_port()}"
    env = {"MLFLOW_COPY_VIA_TOKEN": TOKEN, **FAST_RETRIES}
    started = time.time()
    result = run_cli(args(name, unique("fanout-nowhere"), src, dst, "--via", nowhere), env=env, timeout=120)
    assert result.code != 0, result
    assert "error [upstream]" in result.stderr and "unreachable" in result.stderr, result
    assert nowhere.split("//")[1] in result.stderr, "the message names the URL"
    assert time.time() - started < 30, "a wrong URL fails in seconds, not after every item's retries"

    plan = run_cli(args(name, unique("fanout-plan"), src, dst, "--via", nowhere, "--dry-run"), env=env)
    assert plan.code == 0, plan
    assert [i["status"] for i in plan.report["items"]] == ["would_create"] * len(parents)


def test_a_model_goes_via_the_function_version_by_version(fleet, src, dst):
    """copy-model --via: versions sent one after another (so they keep their numbers), deep
    copies verified here, stages and the alias as in the source."""
    from mlflow import MlflowClient
    from test_migrations import seed_model
    balancer, replicas = fleet
    name, dst_name = unique("fanout-wine"), unique("fanout-wine-prod")
    seed_model(src.uri, name)
    command = ["copy-model", "--src-model", name, "--dst-model", dst_name, "--src-registry-uri", src.uri,
               "--dst-registry-uri", dst.uri, "--dst-experiment-name", unique("fanout-model-runs"),
               "--copy-stages-and-aliases", "--verify", "--via", balancer.url, "--parallel", "4"]
    result = run_cli(command, env={"MLFLOW_COPY_VIA_TOKEN": TOKEN, **FAST_RETRIES})
    assert result.code == 0, result
    assert [(i["src_id"], i["dst_id"], i["status"]) for i in result.report["items"]] == [
        ("1", "1", "created"), ("2", "2", "created"), ("3", "3", "created")]
    s, d = MlflowClient(src.uri, registry_uri=src.uri), MlflowClient(dst.uri, registry_uri=dst.uri)
    for v in ("1", "2", "3"):
        assert d.get_model_version(dst_name, v).current_stage == s.get_model_version(name, v).current_stage
    assert d.get_registered_model(dst_name).aliases == {"champion": "3"}
    served = sum(len(re.findall(r"POST /copy-model-version -> 200", r.logs())) for r in replicas)
    assert served >= 3, "each version was copied by a replica"


def assert_copied_once_and_nested(dst, dst_name, parents):
    """Every source run copied exactly once (by its lineage tag), complete, nested as in the
    source. Returns {source run id: its copy's id}."""
    copies = runs_in(dst.uri, dst_name)
    sources = [r.data.tags.get(SRC_LINEAGE) for r in copies]
    assert sorted(sources) == sorted(parents), "each source run once, no duplicates"
    copy_of = {r.data.tags[SRC_LINEAGE]: r.info.run_id for r in copies}
    for r in copies:
        src_parent = parents[r.data.tags[SRC_LINEAGE]]
        assert r.data.tags.get(PARENT) == (copy_of[src_parent] if src_parent else None), "nesting"
        assert "mlflow_exim.copy_incomplete" not in r.data.tags
    return copy_of


def run_killing_a_replica(command, env, victim, after_items):
    """Runs the CLI, SIGKILLs `victim` once `after_items` items are done (read from its
    progress lines on stderr); returns the result and the progress lines."""
    cmd, full_env = cli_command(command, env)
    proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines, killed_at = [], None
    for line in proc.stderr:
        lines.append(line)
        done = re.match(r"\[mlflow-copy\] (\d+)/\d+ \S+ -> ", line)
        if done and killed_at is None and int(done.group(1)) >= after_items:
            os.kill(victim.proc.pid, signal.SIGKILL)
            killed_at = int(done.group(1))
    stdout = proc.stdout.read()
    proc.wait(300)
    assert killed_at is not None, "".join(lines)
    result = Result(subprocess.CompletedProcess(cmd, proc.returncode, stdout, "".join(lines)))
    return result, killed_at


def test_a_migration_fans_out_and_survives_a_lost_replica(fleet, src, dst, experiment):
    balancer, replicas = fleet
    name, parents = experiment
    dst_name = unique("fanout-copy")
    env = {"MLFLOW_COPY_VIA_TOKEN": TOKEN, **FAST_RETRIES}
    command = args(name, dst_name, src, dst, "--via", balancer.url, "--parallel", "4", "--verify")
    before = balancer.sessions()

    result, killed_at = run_killing_a_replica(command, env, replicas[1], after_items=3)
    report = result.report
    if result.code != 0:
        # An item may have failed for good; running the same command again finishes the job.
        assert report["failed"] > 0, result
        again = run_cli(command, env=env)
        assert again.code == 0, again
        report = again.report
        assert report["failed"] == 0 and report["created"] + report["resumed"] + report["existing"] == len(parents)
    else:
        assert report["failed"] == 0, result
    assert TOKEN not in result.stdout + result.stderr

    copy_of = assert_copied_once_and_nested(dst, dst_name, parents)

    # Each replica was sent items; the survivors answered some.
    sent = {k: v - before.get(k, 0) for k, v in balancer.sessions().items()}
    assert all(sent[f"r{i}"] >= 1 for i in range(REPLICAS)), sent
    for survivor in (replicas[0], replicas[2]):
        assert re.search(r"POST /copy-run -> 200", survivor.logs()), survivor.logs()[-2000:]
    statuses = [i["status"] for i in result.report["items"]]
    print(f"killed replica r1 after {killed_at} items; requests per replica {sent}; statuses {statuses}")

    # The copies verify (each was verified as it was copied; one checked again here).
    child = next(run_id for run_id, parent in parents.items() if parent and parents[parent])
    check = run_cli(["verify-run", "--src-run-id", child, "--dst-run-id", copy_of[child],
                     "--src-mlflow-uri", src.uri, "--dst-mlflow-uri", dst.uri])
    assert check.code == 0, check

    # A re-run writes nothing: every item is found copied.
    again = run_cli(command, env=env)
    assert again.code == 0, again
    assert again.report["existing"] == len(parents), again.report


@pytest.mark.parametrize("host", ["python", "node", "rust"])
def test_the_hosts_send_items_via_the_function(host, fleet, src, dst, experiment):
    """`via` and `parallel` of the WIT request records, from each embedding host: a root and
    its child copied through the balancer, nested."""
    balancer, _ = fleet
    _, parents = experiment
    child = next(run_id for run_id, parent in parents.items() if parent)
    dst_name = unique(f"fanout-{host}")
    request = {"src_experiment_name": experiment[0], "dst_experiment_name": dst_name,
               "src_mlflow_uri": src.uri, "dst_mlflow_uri": dst.uri, "run_ids": [child, parents[child]],
               "via": balancer.url, "parallel": 2}
    env = {"MLFLOW_COPY_VIA_TOKEN": TOKEN, **FAST_RETRIES}
    if host == "rust":
        result = run_host("copy-experiment", request, env=env)
        code, out = result.code, json.loads(result.stdout)
    else:
        code, out, _ = hosts.run(host, "copy-experiment", request, WASM, env=env)
    assert code == 0, out
    report = out["ok"]
    assert (report["created"], report["failed"]) == (2, 0), report
    copies = {r.data.tags[SRC_LINEAGE]: r for r in runs_in(dst.uri, dst_name)}
    assert sorted(copies) == sorted([child, parents[child]])
    assert copies[child].data.tags[PARENT] == copies[parents[child]].info.run_id


@pytest.mark.parametrize("host", ["rust", "python", "node"])
def test_the_hosts_run_instances_in_waves_without_via(host, src, dst, experiment):
    """`parallel` without `via` in a host: a dry run plans, then the items go in waves by
    nesting depth over three component instances at once."""
    name, parents = experiment
    dst_name = unique(f"fanout-instances-{host}")
    request = {"src_experiment_name": name, "dst_experiment_name": dst_name, "src_mlflow_uri": src.uri,
               "dst_mlflow_uri": dst.uri, "run_ids": [], "parallel": 3}
    started = time.time()
    if host == "rust":
        result = run_host("copy-experiment", request)
        assert result.code == 0, result
        report = result.report["ok"]
    else:
        code, out, err = hosts.run(host, "copy-experiment", request, WASM)
        assert code == 0, err
        report = out["ok"]
    assert (report["created"], report["failed"], report["dry_run"]) == (len(parents), 0, False), report
    order = [i["src_id"] for i in report["items"]]
    assert all(order.index(parent) < order.index(run) for run, parent in parents.items() if parent)
    assert all(i.get("src_parent_id") == parents[i["src_id"]] for i in report["items"])
    assert_copied_once_and_nested(dst, dst_name, parents)
    print(f"12 runs over 3 instances of the {host} host in {time.time() - started:.1f} s")
