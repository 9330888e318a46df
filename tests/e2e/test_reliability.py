"""Reliability and security under faults and hostile servers (issue 10), through the built
component in `wasmtime run` and under `wasmtime serve`, against real MLflow servers, a
rule-driven fault proxy (fault_proxy.py) and a hostile fake source (hostile_server.py).

Every command here runs with short HTTP timeouts and few retries (MLFLOW_HTTP_REQUEST_TIMEOUT,
MLFLOW_HTTP_REQUEST_MAX_RETRIES) and is killed after KILL_S seconds or when its memory passes
GUARD_MB, so a component that hangs or balloons fails these tests instead of stalling them.
"""
import base64
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import types

import mlflow
import pytest
import requests
from mlflow import MlflowClient

import seed
from compare import assert_run_copied, runs_in
from conftest import ADMIN_PASSWORD, Result, Served, cli_command, copy_run_args, copy_version_args, unique
from fault_proxy import ARTIFACTS, FaultProxy
from hostile_server import HostileSource, RecordingServer

FAST = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "2", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}
CALM = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "20", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"}
BOUND_S = 60        # a copy that fails on a fault must have failed within this
KILL_S = 90         # no command here may run longer
RSS_MB = 200        # peak RSS of wasmtime whatever a server answers
GUARD_MB = 700      # a command is killed past this (to protect the machine)
INCOMPLETE = "mlflow_exim.copy_incomplete"
OUTCOMES = ("created", "resumed", "existing")
TOKEN = "reliability-api-token-51c2"
SECRET = "src-secret-token-9d1e"
PASSWORD = "src-password-77b3"


# Running the component

def rss_mb(pid):
    """The current RSS of the wasmtime process that `/usr/bin/time` (pid) runs."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            child = f.read().split()[0]
        with open(f"/proc/{child}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, IndexError):
        pass
    return 0


def cli(args, env=None, limit=KILL_S):
    """`wasmtime run` of the component; the Result also has `seconds`, `peak_mb` (wasmtime's peak
    RSS as `/usr/bin/time` measures it: wait4 on this process would count the pages of pytest
    that a child has before it execs) and `killed` (why the guard killed it, or None)."""
    cmd, full_env = cli_command(args, env)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(mode="r") as usage:
        started = time.monotonic()
        proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", usage.name, *cmd], env=full_env,
                                stdout=out, stderr=err, start_new_session=True)
        killed, finished = [], threading.Event()

        def guard():
            while not finished.wait(0.2):
                if time.monotonic() - started > limit:
                    killed.append(f"still running after {limit} s")
                elif rss_mb(proc.pid) > GUARD_MB:
                    killed.append(f"RSS over {GUARD_MB} MB")
                else:
                    continue
                os.killpg(proc.pid, signal.SIGKILL)
                return
        threading.Thread(target=guard, daemon=True).start()
        proc.wait()
        finished.set()
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        result = Result(types.SimpleNamespace(returncode=proc.returncode, stdout=out.read().decode(errors="replace"),
                                              stderr=err.read().decode(errors="replace")))
        peak_kb = usage.read().split()
    result.seconds, result.peak_mb = seconds, int(peak_kb[-1]) / 1024 if peak_kb else 0
    result.killed = killed[0] if killed else None
    return result


def kill_when(rule, args, env=None):
    """Starts the command and `kill -9`s it as soon as `rule` fires."""
    cmd, full_env = cli_command(args, env)
    proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        reached = rule.hit.wait(KILL_S)
    finally:
        proc.kill()
        proc.wait()
    assert reached, f"the copy never reached {rule}"


def error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.startswith("mlflow-copy: error")]
    assert result.code == 1 and lines, result
    return lines[-1]


def settle(first, args, env=CALM):
    """The command after a fault either succeeded, or one re-run of it succeeds."""
    final = first if first.code == 0 else cli(args, env)
    assert final.code == 0, f"first: {first}\nre-run: {final}"
    assert final.report["outcome"] in OUTCOMES, final
    return final


# Checking the destination

def assert_one_complete_copy(src_uri, src_run_id, dst_uri, experiment):
    """Exactly one active run in the experiment, complete and faithful. Returns its id."""
    active = runs_in(dst_uri, experiment, view=1)
    assert len(active) == 1, [(r.info.run_id, r.info.status, r.data.tags.get(INCOMPLETE)) for r in active]
    run = active[0]
    assert INCOMPLETE not in run.data.tags, (run.info.status, run.data.tags)
    assert_run_copied(src_uri, src_run_id, dst_uri, run.info.run_id, experiment)
    return run.info.run_id


def assert_no_complete_copy(dst_uri, experiment):
    complete = [r.info.run_id for r in runs_in(dst_uri, experiment) if INCOMPLETE not in r.data.tags]
    assert complete == [], f"runs that look complete: {complete}"


def assert_marked_failed(dst_uri, experiment):
    runs = runs_in(dst_uri, experiment)
    assert len(runs) == 1, runs
    assert runs[0].info.status == "FAILED" and runs[0].data.tags.get(INCOMPLETE) == "true", runs[0]
    return runs[0].info.run_id


def assert_one_version_copy(src, dst, version, dst_model, experiment, final):
    """Exactly one version of dst_model, READY, pointing at the one complete copy of the run, with
    the source's description, tags, stage and aliases; the registered model as the source's."""
    name, number, run_id = version
    s, d = MlflowClient(src.uri, registry_uri=src.uri), MlflowClient(dst.uri, registry_uri=dst.uri)
    versions = d.search_model_versions(f"name='{dst_model}'")
    assert len(versions) == 1, [(v.version, v.current_stage, v.aliases) for v in versions]
    sv, dv = s.get_model_version(name, number), d.get_model_version(dst_model, versions[0].version)
    assert final.report["dst_version"] == dv.version
    assert dv.status == "READY"
    assert dv.current_stage == sv.current_stage == "Staging"
    assert dv.aliases == ["champion"]
    assert dv.tags == sv.tags and dv.description == sv.description
    copied_run = assert_one_complete_copy(src.uri, run_id, dst.uri, experiment)
    assert dv.run_id == copied_run
    assert dv.source == f"models:/{d.get_run(copied_run).outputs.model_outputs[0].model_id}"
    srm, drm = s.get_registered_model(name), d.get_registered_model(dst_model)
    assert drm.description == srm.description and drm.tags == srm.tags


# Sources

@pytest.fixture(scope="module")
def small_run(src):
    """Params over two batches, tags, metrics, a dataset, an MLflow 3 logged model, small files."""
    return seed.seed_rich_run(src.uri, "reliability-source", metric_points=30, with_model=True)


def _run_with_files(uri, files):
    client = MlflowClient(uri, registry_uri=uri)
    exp = client.get_experiment_by_name("reliability-files") or client.get_experiment(
        client.create_experiment("reliability-files"))
    run = client.create_run(exp.experiment_id, start_time=1_650_000_000_000, run_name="files")
    client.log_param(run.info.run_id, "kind", "files")
    with tempfile.TemporaryDirectory() as d:
        for name, data in files.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        client.log_artifacts(run.info.run_id, d)
    client.set_terminated(run.info.run_id, end_time=1_650_000_100_000)
    return run.info.run_id


@pytest.fixture(scope="module")
def big_run(src):
    """An 8 MiB file (more than loopback buffers hold behind a proxy that stops reading)."""
    return _run_with_files(src.uri, {"blob.bin": os.urandom(8 << 20), "small.txt": b"small"})


@pytest.fixture(scope="module")
def slow_run(src):
    return _run_with_files(src.uri, {"a_slow.bin": os.urandom(160 << 10), "b_next.txt": b"next",
                                     "c_more.txt": b"more"})


@pytest.fixture(scope="module")
def version(src):
    name = unique("reliable")
    run_id, number = seed.seed_registered_version(src.uri, name)
    return name, number, run_id


def deep_copy_args(version, dst_model, src_uri, dst_uri, experiment, *extra):
    name, number, _ = version
    return copy_version_args(name, number, dst_model, src_uri, dst_uri, "--dst-experiment-name", experiment,
                             "--copy-stages-and-aliases", "true", *extra)


# 1. Lost answers: every write is safe to repeat or is checked.

RUN_WRITES = [
    ("runs-create", "POST", "/mlflow/runs/create", {}),
    ("log-batch-params", "POST", "/mlflow/runs/log-batch", {"body": b"value-0"}),
    ("log-batch-tags", "POST", "/mlflow/runs/log-batch", {"body": b"ml-platform"}),
    ("log-batch-metrics", "POST", "/mlflow/runs/log-batch", {"body": b"acc/train"}),
    ("log-inputs", "POST", "/mlflow/runs/log-inputs", {}),
    ("logged-model-create", "POST", re.compile(r"/mlflow/logged-models$"), {}),
    ("logged-model-finalize", "PATCH", "/mlflow/logged-models/", {}),
    ("run-outputs", "POST", "/mlflow/runs/outputs", {}),
    ("artifact-put", "PUT", ARTIFACTS, {}),
    ("mlmodel-put", "PUT", re.compile(r"/MLmodel$"), {}),
    ("runs-update", "POST", "/mlflow/runs/update", {}),
    ("delete-tag-incomplete", "POST", "/mlflow/runs/delete-tag", {"body": INCOMPLETE.encode()}),
]


@pytest.mark.parametrize("method,path,match", [w[1:] for w in RUN_WRITES], ids=[w[0] for w in RUN_WRITES])
def test_lost_answer_to_a_run_write_ends_in_one_complete_copy(src, dst, small_run, proxy, method, path, match):
    exp = unique("lost")
    rule = proxy.add(method, path, drop_answer=True, **match)
    args = copy_run_args(small_run, exp, src.uri, proxy.uri)
    first = cli(args, CALM)
    assert rule.fired == 1, f"the copy sent no {method} {path}: {first}"
    proxy.clear()
    final = settle(first, args)
    copied = assert_one_complete_copy(src.uri, small_run, dst.uri, exp)
    assert final.report["dst_run_id"] == copied


def test_lost_answer_to_a_marker_write_while_resuming(src, dst, small_run, proxy):
    exp = unique("lost-resume")
    args = copy_run_args(small_run, exp, src.uri, proxy.uri)
    proxy.add("PUT", ARTIFACTS, times=None, status=503)
    broken = cli(args, CALM)
    assert broken.code == 1, broken
    assert_marked_failed(dst.uri, exp)
    proxy.clear()
    # Resuming sets or removes the incomplete marker: its answer is lost.
    rule = proxy.add("POST", re.compile(r"/mlflow/runs/(set-tag|delete-tag|log-batch)"), body=INCOMPLETE.encode(),
                     drop_answer=True)
    first = cli(args, CALM)
    assert rule.fired == 1, first
    proxy.clear()
    final = settle(first, args)
    assert final.report["outcome"] in ("resumed", "existing")
    assert assert_one_complete_copy(src.uri, small_run, dst.uri, exp) == final.report["dst_run_id"]


VERSION_WRITES = [
    ("registered-model-create", "/mlflow/registered-models/create"),
    ("version-create", "/mlflow/model-versions/create"),
    ("transition-stage", "/mlflow/model-versions/transition-stage"),
    ("alias", "/mlflow/registered-models/alias"),
]


@pytest.mark.parametrize("path", [w[1] for w in VERSION_WRITES], ids=[w[0] for w in VERSION_WRITES])
def test_lost_answer_to_a_registry_write_ends_in_one_complete_version(src, dst, version, proxy, path):
    dst_model, exp = unique("lost-version"), unique("lost-version")
    rule = proxy.add("POST", path, drop_answer=True)
    args = deep_copy_args(version, dst_model, src.uri, proxy.uri, exp)
    first = cli(args, CALM)
    assert rule.fired == 1, f"the copy sent no POST {path}: {first}"
    proxy.clear()
    final = settle(first, args)
    assert_one_version_copy(src, dst, version, dst_model, exp, final)


def test_lost_answer_to_a_permission_grant(auth_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    name, number, grants = seed.seed_guarded_version(auth_server.uri, ADMIN_PASSWORD)
    dst_model = unique("guarded-lost")
    env = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD, **CALM}
    proxy = FaultProxy(auth_server.port)
    try:
        rule = proxy.add("POST", "/users/permissions/grant", drop_answer=True)
        args = copy_version_args(name, number, dst_model, proxy.uri, proxy.uri, "--copy-permissions", "true")
        first = cli(args, env)
        assert rule.fired == 1, first
        proxy.clear()
        settle(first, args, env)
    finally:
        proxy.close()
    assert len(MlflowClient(auth_server.uri, registry_uri=auth_server.uri).search_model_versions(
        f"name='{dst_model}'")) == 1
    for user, permission in grants.items():
        assert seed.model_permission(auth_server.uri, ADMIN_PASSWORD, user, dst_model) == permission, user


# 2. Timeouts: connect, first byte and idle time, in both directions, per request.

STALLS = [
    ("hung-download", "src", dict(method="GET", path=ARTIFACTS, hang=True, times=None)),
    ("stalled-download", "src", dict(method="GET", path="blob.bin", stall_body_after=1 << 20, times=None)),
    ("stalled-upload", "dst", dict(method="PUT", path="blob.bin", stop_reading_upload=256 << 10, times=None)),
]


@pytest.mark.parametrize("side,rule", [s[1:] for s in STALLS], ids=[s[0] for s in STALLS])
def test_a_stall_times_out_and_the_rerun_resumes(src, dst, big_run, proxy, src_proxy, side, rule):
    stalled = (src_proxy if side == "src" else proxy)
    fault = stalled.add(**rule)
    exp = unique("stall")
    args = copy_run_args(big_run, exp, src_proxy.uri, proxy.uri)
    failed = cli(args, FAST)
    assert fault.fired >= 1, failed
    assert failed.killed is None and failed.seconds < BOUND_S, f"{failed.seconds:.0f} s: {failed}"
    line = error_line(failed)
    assert "[upstream]" in line and "timed out" in line and f"127.0.0.1:{stalled.port}" in line, line
    assert_marked_failed(dst.uri, exp)
    src_proxy.clear()
    proxy.clear()
    again = cli(args, FAST)
    assert again.code == 0 and again.report["outcome"] == "resumed", again
    assert assert_one_complete_copy(src_proxy.uri, big_run, dst.uri, exp) == again.report["dst_run_id"]


def test_a_stall_once_is_retried_like_a_transient_failure(src, dst, big_run, src_proxy):
    fault = src_proxy.add("GET", "blob.bin", stall_body_after=1 << 20)
    exp = unique("stall-once")
    result = cli(copy_run_args(big_run, exp, src_proxy.uri, dst.uri), FAST)
    assert fault.fired == 1
    assert result.code == 0 and result.seconds < BOUND_S, result
    assert_one_complete_copy(src_proxy.uri, big_run, dst.uri, exp)


def test_http_function_does_not_hold_its_caller_on_a_hung_source(src, dst, small_run, src_proxy):
    src_proxy.add("GET", "/mlflow/runs/get", hang=True, times=None)
    served = Served({"MLFLOW_COPY_API_TOKEN": TOKEN, **FAST})
    body = {"run_id": small_run, "experiment_name": unique("http-hang"), "src_mlflow_uri": src_proxy.uri,
            "dst_mlflow_uri": dst.uri}
    try:
        started = time.monotonic()
        try:
            r = requests.post(served.url + "/copy-run", json=body, headers={"Authorization": f"Bearer {TOKEN}"},
                              timeout=KILL_S)
        except requests.Timeout:
            pytest.fail(f"the HTTP function held its caller over {KILL_S} s")
        assert time.monotonic() - started < BOUND_S
        assert r.status_code == 502, r.text
        assert r.json()["error"]["code"] == "upstream" and "timed out" in r.json()["error"]["message"]
    finally:
        served.stop()


@pytest.fixture
def never_accepting():
    """A loopback address whose listen queue is full: connecting to it hangs (no SYN answered)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname())
    yield "http://127.0.0.1:%d" % listener.getsockname()[1]
    filler.close()
    listener.close()


def test_a_connect_that_hangs_times_out(dst, never_accepting):
    exp = unique("connect-hang")
    result = cli(copy_run_args("c" * 32, exp, never_accepting, dst.uri), FAST)
    assert result.killed is None and result.seconds < BOUND_S, f"{result.killed}, {result.seconds:.0f} s"
    line = error_line(result)
    assert "[upstream]" in line and "timed out" in line and never_accepting in line, line
    assert runs_in(dst.uri, exp) == []


def test_a_tls_failure_is_not_retried_as_transient(src, dst):
    # An https:// URI on a plain-HTTP port: the handshake fails, and will fail again.
    exp = unique("tls")
    not_tls = f"https://127.0.0.1:{src.port}"
    result = cli(copy_run_args("b" * 32, exp, not_tls, dst.uri), CALM)
    line = error_line(result)
    assert "[upstream]" in line and f"127.0.0.1:{src.port}" in line, line
    assert not re.search(r"after [2-9]\d* attempts", line), line
    assert runs_in(dst.uri, exp) == []


def test_a_caller_that_disconnects_leaves_no_half_copy_marked_complete(src, dst, slow_run, src_proxy):
    slow = src_proxy.add("GET", "a_slow.bin", throttle=10 << 10)   # 16 s
    served = Served({"MLFLOW_COPY_API_TOKEN": TOKEN, **CALM})
    exp = unique("disconnect")
    payload = json.dumps({"run_id": slow_run, "experiment_name": exp, "src_mlflow_uri": src_proxy.uri,
                          "dst_mlflow_uri": dst.uri}).encode()
    try:
        caller = socket.create_connection(("127.0.0.1", served.port))
        caller.sendall(b"POST /copy-run HTTP/1.1\r\nHost: fn\r\nAuthorization: Bearer %s\r\n"
                       b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                       % (TOKEN.encode(), len(payload), payload))
        assert slow.hit.wait(KILL_S), "the copy reached the slow file"
        caller.close()
        # The copy either stops with its caller or goes on to the end (the slow file takes 16 s).
        deadline, idle_since = time.monotonic() + 45, None
        while time.monotonic() < deadline:
            runs = runs_in(dst.uri, exp)
            if runs and all(INCOMPLETE not in r.data.tags for r in runs):
                break
            idle_since = (idle_since or time.monotonic()) if not src_proxy.connections else None
            if idle_since and time.monotonic() - idle_since > 3:
                break
            time.sleep(1)
    finally:
        served.stop()
    runs = runs_in(dst.uri, exp)
    assert runs, "the copy had started"
    for run in runs:
        if INCOMPLETE not in run.data.tags:
            assert_run_copied(src_proxy.uri, slow_run, dst.uri, run.info.run_id, exp)


# 3. Retry budgets per file, never one clock for a whole transfer.

def test_long_throttled_download_then_a_503_on_the_next_file(src, dst, slow_run, src_proxy):
    slow = src_proxy.add("GET", "a_slow.bin", throttle=10 << 10)   # 160 KiB: 16 s
    unavailable = src_proxy.add("GET", ARTIFACTS, after=slow, status=503, retry_after="1")
    exp = unique("slow")
    env = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "3", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}
    result = cli(copy_run_args(slow_run, exp, src_proxy.uri, dst.uri, "--concurrency", "1"), env, limit=120)
    assert slow.done == 1 and unavailable.fired == 1, f"{slow}, {unavailable}: {result}"
    assert result.code == 0, result
    assert result.seconds > 15, "the slow file took its time"
    assert_one_complete_copy(src_proxy.uri, slow_run, dst.uri, exp)


# 4. Credentials go to the configured server only.

THIRD_HOST_URIS = ["mlflow-artifacts://{host}/1/r/artifacts", "http://{host}/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts"]


@pytest.fixture
def third_host():
    third = RecordingServer()
    yield third
    third.close()


@pytest.fixture
def hostile_factory():
    made = []

    def make(**kwargs):
        made.append(HostileSource(**kwargs))
        return made[-1]
    yield make
    for server in made:
        server.close()


@pytest.mark.parametrize("form", THIRD_HOST_URIS, ids=["mlflow-artifacts-authority", "http-url"])
def test_artifacts_on_a_third_host_are_refused(dst, third_host, hostile_factory, form):
    hostile = hostile_factory(artifact_uri=form.format(host=third_host.authority), files={"model.txt": b"hello"})
    exp = unique("third-host")
    result = cli(copy_run_args(hostile.run_id, exp, hostile.uri, dst.uri), {"MLFLOW_SRC_TRACKING_TOKEN": SECRET, **CALM})
    line = error_line(result)
    assert "[upstream]" in line and ("different host" in line or "not the configured server" in line), line
    assert [r for r in third_host.traffic.matching() if r.auth] == []
    assert SECRET not in result.stdout + result.stderr
    assert_no_complete_copy(dst.uri, exp)


def test_http_function_allow_list_covers_artifact_hosts(dst, third_host, hostile_factory):
    hostile = hostile_factory(artifact_uri=THIRD_HOST_URIS[0].format(host=third_host.authority),
                              files={"model.txt": b"hello"})
    served = Served({"MLFLOW_COPY_API_TOKEN": TOKEN, "MLFLOW_SRC_TRACKING_TOKEN": SECRET,
                     "MLFLOW_COPY_ALLOWED_HOSTS": f"127.0.0.1:{hostile.port},127.0.0.1:{dst.port}", **CALM})
    try:
        r = requests.post(served.url + "/copy-run", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=KILL_S,
                          json={"run_id": hostile.run_id, "experiment_name": unique("http-third"),
                                "src_mlflow_uri": hostile.uri, "dst_mlflow_uri": dst.uri})
    finally:
        served.stop()
    assert r.status_code in (403, 502), r.text
    assert len(third_host.traffic) == 0, third_host.traffic.matching()
    assert SECRET not in r.text


def test_secrets_a_hostile_server_echoes_are_scrubbed(dst, hostile_factory):
    hostile = hostile_factory(echo_auth=True)
    basic = base64.b64encode(f"mallory:{PASSWORD}".encode()).decode()
    for env in ({"MLFLOW_SRC_TRACKING_USERNAME": "mallory", "MLFLOW_SRC_TRACKING_PASSWORD": PASSWORD},
                {"MLFLOW_SRC_TRACKING_TOKEN": SECRET}):
        result = cli(copy_run_args(hostile.run_id, unique("echo"), hostile.uri, dst.uri), {**env, **CALM})
        assert result.code == 1, result
        output = result.stdout + result.stderr
        for secret in (PASSWORD, basic, SECRET):
            assert secret not in output, f"{secret} in {output}"
    assert all(r.auth for r in hostile.traffic.matching("GET", "/runs/get")), "the credentials were sent (and echoed)"


def test_secrets_a_server_echoes_into_a_warning_are_scrubbed(version, src_proxy):
    name, number, _ = version
    basic = base64.b64encode(f"mallory:{PASSWORD}".encode()).decode()
    echo = {"error_code": "ENDPOINT_NOT_FOUND", "message": f"no route for Authorization: Basic {basic} ({PASSWORD})"}
    src_proxy.add("GET", "/mlflow/users/list", times=None, status=404, answer=json.dumps(echo).encode())
    env = {"MLFLOW_TRACKING_USERNAME": "mallory", "MLFLOW_TRACKING_PASSWORD": PASSWORD, **CALM}
    result = cli(copy_version_args(name, number, unique("scrub"), src_proxy.uri, src_proxy.uri,
                                   "--copy-permissions", "true"), env)
    assert src_proxy.traffic.matching("GET", "/users/list"), f"the permissions API was not asked: {result}"
    output = result.stdout + result.stderr
    assert PASSWORD not in output and basic not in output, output


def test_every_request_carries_one_authorization_header(src, dst, small_run, src_proxy, proxy):
    exp = unique("one-auth")
    result = cli(copy_run_args(small_run, exp, src_proxy.uri, proxy.uri), {"MLFLOW_TRACKING_TOKEN": "tok-once", **CALM})
    assert result.code == 0, result
    traffic = src_proxy.traffic.matching() + proxy.traffic.matching()
    assert any("MLmodel" in r.path for r in traffic), "MLmodel files were read and written"
    assert [r for r in traffic if r.auth_count != 1] == []


# 5. Bounded: listings, answers, memory.

LISTINGS = {
    # Directory `a` lists `a/a`, which lists `a/a/a`, ... forever.
    "chain": lambda d: [{"path": f"{d}/a" if d else "a", "is_dir": True}],
    # Every directory lists itself again, besides a file.
    "self": lambda d: [{"path": d or "a", "is_dir": True}, {"path": f"{d}/f.txt" if d else "f.txt", "is_dir": False,
                                                           "file_size": 1}],
    # Every directory has eight subdirectories and fifty files.
    "fan": lambda d: [{"path": f"{d}/d{i}" if d else f"d{i}", "is_dir": True} for i in range(8)] +
                     [{"path": f"{d}/f{i}.txt" if d else f"f{i}.txt", "is_dir": False, "file_size": 1} for i in range(50)],
}


@pytest.mark.parametrize("shape", sorted(LISTINGS))
def test_an_endless_listing_fails_with_flat_memory(dst, hostile_factory, shape):
    hostile = hostile_factory(listing=LISTINGS[shape])
    exp = unique("endless")
    result = cli(copy_run_args(hostile.run_id, exp, hostile.uri, dst.uri), CALM)
    assert result.killed is None and result.seconds < BOUND_S, f"{result.killed}, {result.seconds:.0f} s"
    line = error_line(result)
    assert "[upstream]" in line and "list" in line.lower(), line
    assert re.search(r"depth|deep|entries|cycle|too many|nest", line), line
    assert result.peak_mb < RSS_MB, f"peak RSS {result.peak_mb:.0f} MB"
    assert runs_in(dst.uri, exp) == [], "nothing is written before the source is read"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_500_mb_answer_is_refused_with_flat_memory(dst, hostile_factory, chunked):
    hostile = hostile_factory(huge_run=500 << 20, huge_chunked=chunked)
    exp = unique("huge")
    result = cli(copy_run_args(hostile.run_id, exp, hostile.uri, dst.uri), CALM)
    assert result.killed is None and result.seconds < BOUND_S, f"{result.killed}, {result.seconds:.0f} s"
    line = error_line(result)
    assert "[upstream]" in line and "larger than" in line, line
    assert result.peak_mb < RSS_MB, f"peak RSS {result.peak_mb:.0f} MB"
    assert runs_in(dst.uri, exp) == []


# 6. Hostile artifact paths are refused, never renamed.

UNSAFE_PATHS = ["../escape.txt", "/abs.txt", "a//b.txt", "a\\b.txt", "ctl\x01.txt", "./dot.txt", "dir/../../up.txt",
                "dir/.", "trailing/"]


def _spellings(path):
    """The ways an error line may quote a path."""
    return {path, path.encode("unicode_escape").decode(), json.dumps(path)[1:-1], path.replace("\x01", "\\u{1}")}


@pytest.mark.parametrize("path", UNSAFE_PATHS, ids=[p.encode("unicode_escape").decode() for p in UNSAFE_PATHS])
def test_unsafe_artifact_paths_are_refused(dst, hostile_factory, path):
    hostile = hostile_factory(files={"fine.txt": b"fine", path: b"pwned"})
    exp = unique("unsafe")
    result = cli(copy_run_args(hostile.run_id, exp, hostile.uri, dst.uri), CALM)
    line = error_line(result)
    assert "unsafe artifact path" in line and any(s in line for s in _spellings(path)), line
    assert runs_in(dst.uri, exp) == [], "the listing is checked before anything is written"


def test_an_unsafe_directory_is_refused(dst, hostile_factory):
    hostile = hostile_factory(listing={"": [{"path": "..", "is_dir": True}],
                                       "..": [{"path": "../x.txt", "is_dir": False, "file_size": 1}]},
                              files={"x.txt": b"x"})
    exp = unique("unsafe-dir")
    result = cli(copy_run_args(hostile.run_id, exp, hostile.uri, dst.uri), CALM)
    line = error_line(result)
    assert "unsafe artifact path" in line and ".." in line, line
    assert runs_in(dst.uri, exp) == []


# 7. Upload sizes are verified: no silent empty or short files.

@pytest.mark.parametrize("how", ["short:500", "no_length:500", "no_length"])
def test_a_download_shorter_than_listed_or_without_length_is_not_copied_short(dst, hostile_factory, how):
    data = bytes(range(256)) * 4   # 1024 bytes, listed as such
    hostile = hostile_factory(files={"data.bin": (data, how)})
    exp = unique("short")
    result = cli(copy_run_args(hostile.run_id, exp, hostile.uri, dst.uri), CALM)
    if how == "no_length" and result.code == 0:
        # Without a length the copier may still copy it, if every byte arrives.
        copied = MlflowClient(dst.uri, registry_uri=dst.uri).get_run(result.report["dst_run_id"])
        with tempfile.TemporaryDirectory() as d:
            local = mlflow.artifacts.download_artifacts(artifact_uri=copied.info.artifact_uri + "/data.bin",
                                                        dst_path=d, tracking_uri=dst.uri)
            with open(local, "rb") as f:
                assert f.read() == data
        return
    line = error_line(result)
    assert "data.bin" in line, line
    assert_no_complete_copy(dst.uri, exp)


# 8. Checks before writes.

def test_an_invalid_destination_model_name_is_refused_before_any_write(src, dst, version):
    exp = unique("invalid-name")
    result = cli(deep_copy_args(version, "a/b", src.uri, dst.uri, exp), CALM)
    line = error_line(result)
    assert "[bad_input]" in line and "a/b" in line, line
    assert runs_in(dst.uri, exp) == [], "the run was copied before the name was checked"


def test_a_failing_permissions_api_is_an_error_not_nothing_to_copy(src, dst, version, src_proxy):
    src_proxy.add(None, "/mlflow/users/", times=None, status=500)
    exp = unique("perm-500")
    result = cli(deep_copy_args(version, unique("perm-500"), src_proxy.uri, dst.uri, exp, "--copy-permissions", "true"),
                 CALM)
    line = error_line(result)
    assert "[upstream]" in line, line
    assert "no permissions API" not in result.stderr


# 9. Lineage: a copy of a copy.

def test_a_copy_of_a_copy_describes_its_immediate_source(src, dst, small_run):
    first_exp, second_exp = unique("copy-1"), unique("copy-2")
    first = cli(copy_run_args(small_run, first_exp, src.uri, dst.uri), CALM)
    assert first.code == 0, first
    copy1 = first.report["dst_run_id"]
    args = copy_run_args(copy1, second_exp, dst.uri, src.uri)
    second = cli(args, CALM)
    assert second.code == 0 and second.report["outcome"] == "created", second
    copy2 = second.report["dst_run_id"]
    s, d = MlflowClient(src.uri, registry_uri=src.uri), MlflowClient(dst.uri, registry_uri=dst.uri)
    tags = s.get_run(copy2).data.tags
    assert tags["mlflow_exim.run_info.run_id"] == copy1
    assert tags["mlflow_exim.src_client.tracking_uri"] == dst.uri
    assert tags["mlflow_exim.run_info.experiment_id"] == d.get_run(copy1).info.experiment_id
    model1 = d.get_run(copy1).outputs.model_outputs[0].model_id
    model2 = s.get_run(copy2).outputs.model_outputs[0].model_id
    assert s.get_logged_model(model2).tags["mlflow_exim.src_model.model_id"] == model1
    assert_run_copied(dst.uri, copy1, src.uri, copy2, second_exp)
    again = cli(args, CALM)
    assert again.code == 0 and again.report["outcome"] == "existing" and again.report["dst_run_id"] == copy2, again
    assert [(r.info.run_id, r.info.status) for r in runs_in(src.uri, second_exp)] == [(copy2, "FINISHED")]


def test_a_copy_of_a_copied_version_describes_its_immediate_source(src, dst, version):
    model1, model2 = unique("copied-once"), unique("copied-twice")
    first = cli(deep_copy_args(version, model1, src.uri, dst.uri, unique("v-copy-1"), "--copy-lineage-tags", "true"),
                CALM)
    assert first.code == 0, first
    exp2 = unique("v-copy-2")
    args = copy_version_args(model1, first.report["dst_version"], model2, dst.uri, src.uri,
                             "--dst-experiment-name", exp2, "--copy-lineage-tags", "true")
    second = cli(args, CALM)
    assert second.code == 0, second
    s, d = MlflowClient(src.uri, registry_uri=src.uri), MlflowClient(dst.uri, registry_uri=dst.uri)
    v1 = d.get_model_version(model1, first.report["dst_version"])
    v2 = s.get_model_version(model2, second.report["dst_version"])
    assert {k: v for k, v in v2.tags.items() if k.startswith("mlflow_exim.")} == {
        "mlflow_exim.src_version.name": model1,
        "mlflow_exim.src_version.version": v1.version,
        "mlflow_exim.src_version.run_id": v1.run_id,
        "mlflow_exim.src_client.tracking_uri": dst.uri,
        "mlflow_exim.dst_client.tracking_uri": src.uri,
        "mlflow_exim.src_run.mlflow.user": "alice",
    }
    assert {k: v for k, v in v2.tags.items() if not k.startswith("mlflow_exim.")} == \
        {k: v for k, v in v1.tags.items() if not k.startswith("mlflow_exim.")}
    assert s.get_run(v2.run_id).data.tags["mlflow_exim.run_info.run_id"] == v1.run_id
    again = cli(args, CALM)
    assert again.code == 0 and again.report["outcome"] == "existing", again
    assert [r.info.status for r in runs_in(src.uri, exp2)] == ["FINISHED"]


# 10. Concurrent identical copies converge.

def _converged(src, dst, run_id, exp, reports):
    copied = assert_one_complete_copy(src.uri, run_id, dst.uri, exp)
    # The copies that stepped aside removed the logged models they made: the experiment's
    # models are the source run's, each once, all belonging to the one complete copy.
    d = MlflowClient(dst.uri)
    exp_id = d.get_experiment_by_name(exp).experiment_id
    models = d.search_logged_models(experiment_ids=[exp_id])
    source_models = MlflowClient(src.uri).search_logged_models(
        experiment_ids=[MlflowClient(src.uri).get_run(run_id).info.experiment_id],
        filter_string=f"source_run_id = '{run_id}'")
    assert len(source_models) >= 1
    assert sorted(m.source_run_id for m in models) == [copied] * len(source_models), \
        [(m.model_id, m.source_run_id) for m in models]
    assert [r["outcome"] in OUTCOMES for r in reports] == [True] * len(reports), reports
    named = [(r["outcome"], r["dst_run_id"]) for r in reports]
    assert [r["dst_run_id"] for r in reports] == [copied] * len(reports), \
        f"reports name runs other than the one complete copy {copied}: {named}"


def test_three_identical_commands_at_once_converge(src, dst, small_run):
    exp = unique("concurrent-cli")
    args = copy_run_args(small_run, exp, src.uri, dst.uri)
    results = [None] * 3

    def one(i):
        results[i] = cli(args, CALM)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.code for r in results] == [0, 0, 0], results
    _converged(src, dst, small_run, exp, [r.report for r in results])


def test_three_identical_requests_at_once_converge(src, dst, small_run):
    exp = unique("concurrent-http")
    body = {"run_id": small_run, "experiment_name": exp, "src_mlflow_uri": src.uri, "dst_mlflow_uri": dst.uri}
    served = Served({"MLFLOW_COPY_API_TOKEN": TOKEN, **CALM})
    answers = [None] * 3

    def one(i):
        answers[i] = requests.post(served.url + "/copy-run", json=body, timeout=KILL_S,
                                   headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        served.stop()
    assert [a.status_code for a in answers] == [200] * 3, [a.text[-600:] for a in answers]
    _converged(src, dst, small_run, exp, [a.json() for a in answers])


# 11. Kills at each phase, then a re-run.

RUN_KILLS = [
    ("after-run-created", dict(method="POST", path="/mlflow/runs/log-batch", hang=True)),
    ("mid-metrics", dict(method="POST", path="/mlflow/runs/log-batch", body=b"acc/train", hang=True)),
    ("before-model-finalized", dict(method="PATCH", path="/mlflow/logged-models/", hang=True)),
    ("mid-artifacts", dict(method="PUT", path=ARTIFACTS, nth=3, hang=True)),
    ("before-marked-complete", dict(method="POST", path="/mlflow/runs/delete-tag", hang=True)),
]


@pytest.mark.parametrize("rule", [k[1] for k in RUN_KILLS], ids=[k[0] for k in RUN_KILLS])
def test_killed_copy_run_resumes_into_one_complete_copy(src, dst, small_run, proxy, rule):
    exp = unique("kill")
    kill_when(proxy.add(**rule), copy_run_args(small_run, exp, src.uri, proxy.uri), CALM)
    proxy.clear()
    again = cli(copy_run_args(small_run, exp, src.uri, dst.uri), CALM)
    assert again.code == 0 and again.report["outcome"] == "resumed", again
    assert assert_one_complete_copy(src.uri, small_run, dst.uri, exp) == again.report["dst_run_id"]


VERSION_KILLS = {
    "during-run-copy": None,
    "after-registered-model-create": "/mlflow/registered-models/create",
    "after-version-create": "/mlflow/model-versions/create",
}


@pytest.mark.parametrize("phase", list(VERSION_KILLS))
def test_killed_copy_model_version_resumes_into_one_complete_version(src, dst, version, proxy, phase):
    dst_model, exp = unique("kill-version"), unique("kill-version")
    if VERSION_KILLS[phase] is None:
        stop = proxy.add("PUT", ARTIFACTS, nth=2, hang=True)
    else:
        stop = proxy.add(after=proxy.add("POST", VERSION_KILLS[phase]), hang=True)
    kill_when(stop, deep_copy_args(version, dst_model, src.uri, proxy.uri, exp), CALM)
    proxy.clear()
    again = cli(deep_copy_args(version, dst_model, src.uri, dst.uri, exp), CALM)
    assert again.code == 0 and again.report["outcome"] in ("created", "resumed"), again
    assert_one_version_copy(src, dst, version, dst_model, exp, again)
