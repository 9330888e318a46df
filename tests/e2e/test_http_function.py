"""The same component as an HTTP function under `wasmtime serve`, driven with real HTTP requests
against real MLflow servers; and the Spin manifest, checked as far as it can be without Spin."""
import json
import subprocess
import time

import pytest
import requests
from mlflow import MlflowClient

import seed
from compare import assert_run_copied
from conftest import HOST, WASM, Served, free_port, unique
from hostile_server import RecordingServer

TOKEN = "http-fn-token-7f3a9c"
UPSTREAM_SECRET = "upstream-secret-b81d"


@pytest.fixture(scope="module")
def served():
    # An upstream password is configured (unused by the open test servers) so that tests can
    # check it never leaks.
    # Two retries, not MLflow's seven: an unreachable server (a test below) fails in seconds.
    s = Served({"MLFLOW_COPY_API_TOKEN": TOKEN, "MLFLOW_SRC_TRACKING_PASSWORD": UPSTREAM_SECRET,
                "MLFLOW_SRC_TRACKING_USERNAME": "nobody", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def small_run(src):
    return seed.seed_rich_run(src.uri, "http-source", metric_points=30, with_model=True)


def auth(token=TOKEN):
    return {"Authorization": f"Bearer {token}"}


def copy_body(run_id, src, dst, **extra):
    return {"run_id": run_id, "experiment_name": unique("http"), "src_mlflow_uri": src.uri,
            "dst_mlflow_uri": dst.uri, **extra}


def test_healthz_needs_no_auth(served):
    r = requests.get(served.url + "/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


@pytest.mark.parametrize("headers", [{}, auth("wrong-token"), {"Authorization": TOKEN}])
def test_copy_requests_without_the_right_token_are_refused(served, headers, src, dst, small_run):
    r = requests.post(served.url + "/copy-run", json=copy_body(small_run, src, dst), headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert TOKEN not in r.text


def test_copy_run_over_http_is_faithful(served, src, dst, small_run):
    body = copy_body(small_run, src, dst, concurrency=4)
    r = requests.post(served.url + "/copy-run", json=body, headers=auth())
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["outcome"] == "created" and report["logged_models"] == 1
    assert_run_copied(src.uri, small_run, dst.uri, report["dst_run_id"], body["experiment_name"])
    again = requests.post(served.url + "/copy-run", json=body, headers=auth())
    assert again.status_code == 200 and again.json()["outcome"] == "existing"


def test_ndjson_streams_progress_then_the_report(served, src, dst, small_run, proxy):
    # Uploads are slowed down, so a streamed response shows progress well before its end.
    proxy.delay_uploads = 0.3
    body = copy_body(small_run, src, dst, concurrency=2)
    body["dst_mlflow_uri"] = proxy.uri
    with requests.post(served.url + "/copy-run", json=body, stream=True,
                       headers={**auth(), "Accept": "application/x-ndjson"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/x-ndjson"
        arrivals, events = [], []
        for line in r.iter_lines():
            arrivals.append(time.monotonic())
            events.append(json.loads(line))
    kinds = [e["event"] for e in events]
    assert arrivals[-1] - arrivals[0] > 0.8, "events arrive as they happen, not all at the end"
    assert kinds[0] == "phase" and kinds[-1] == "report"
    assert "artifacts" in kinds
    files = [e for e in events if e["event"] == "artifacts"]
    assert files[-1]["files_done"] == files[-1]["files_total"] == events[-1]["report"]["artifact_files"]
    assert_run_copied(src.uri, small_run, dst.uri, events[-1]["report"]["dst_run_id"], body["experiment_name"])


def test_ndjson_reports_failures_as_the_last_event(served, src, dst):
    r = requests.post(served.url + "/copy-run", json=copy_body("e" * 32, src, dst),
                      headers={**auth(), "Accept": "application/x-ndjson"})
    last = json.loads(r.text.strip().splitlines()[-1])
    assert last["event"] == "error" and last["error"]["code"] == "not_found"


def test_copy_model_version_over_http(served, src, dst):
    name = unique("http-model")
    _, version = seed.seed_registered_version(src.uri, name)
    body = {"src_model": name, "src_version": version, "dst_model": unique("http-model-copy"),
            "src_registry_uri": src.uri, "dst_registry_uri": dst.uri,
            "dst_experiment_name": unique("http-deep"), "copy_stages_and_aliases": True}
    r = requests.post(served.url + "/copy-model-version", json=body, headers=auth())
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["deep"] and report["aliases"] == ["champion"]
    dv = MlflowClient(dst.uri, registry_uri=dst.uri).get_model_version(body["dst_model"], report["dst_version"])
    assert dv.status == "READY" and dv.source == report["dst_source"]


@pytest.mark.parametrize("method,path,body,status,code", [
    ("POST", "/copy-run", b'{"run_id": "x"}', 400, "bad_input"),            # missing fields
    ("POST", "/copy-run", b'{"run_id":"a","experiment_name":"e","src_mlflow_uri":"http://h","dst_mlflow_uri":"http://h","extra":1}', 400, "bad_input"),
    ("POST", "/copy-run", b"not json", 400, "bad_input"),
    ("POST", "/copy-run", b"{" + b" " * 70000 + b"}", 413, "payload_too_large"),
    ("GET", "/copy-run", None, 405, "method_not_allowed"),
    ("POST", "/nowhere", b"{}", 404, "not_found"),
])
def test_request_errors(served, method, path, body, status, code):
    r = requests.request(method, served.url + path, data=body, headers=auth())
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_copy_errors_map_to_statuses(served, src, dst, small_run):
    not_found = requests.post(served.url + "/copy-run", json=copy_body("d" * 32, src, dst), headers=auth())
    assert not_found.status_code == 404 and not_found.json()["error"]["code"] == "not_found"
    bad_uri = requests.post(served.url + "/copy-run", json={**copy_body(small_run, src, dst), "dst_mlflow_uri": "ftp://x"}, headers=auth())
    assert bad_uri.status_code == 400
    dead = requests.post(served.url + "/copy-run",
                         json={**copy_body(small_run, src, dst), "dst_mlflow_uri": f"http://127.0.0.1:{free_port()}"},
                         headers=auth())
    assert dead.status_code == 502 and dead.json()["error"]["code"] == "upstream"
    exp = unique("deleted")
    client = MlflowClient(dst.uri, registry_uri=dst.uri)
    client.delete_experiment(client.create_experiment(exp))
    conflict = requests.post(served.url + "/copy-run", json={**copy_body(small_run, src, dst), "experiment_name": exp}, headers=auth())
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "conflict"


def test_secrets_never_appear_in_responses_or_logs(served, src, dst, small_run):
    r = requests.post(served.url + "/copy-run", json=copy_body(small_run, src, dst), headers=auth())
    assert r.status_code == 200
    logs = served.logs()
    assert "POST /copy-run -> 200" in logs
    assert TOKEN not in logs and UPSTREAM_SECRET not in logs


def test_fails_closed_without_a_token_and_opens_only_on_explicit_opt_out(src, dst, small_run):
    closed = Served({})
    try:
        r = requests.post(closed.url + "/copy-run", json=copy_body(small_run, src, dst))
        assert r.status_code == 401 and "MLFLOW_COPY_API_TOKEN" in r.json()["error"]["message"]
    finally:
        closed.stop()
    opened = Served({"MLFLOW_COPY_ALLOW_UNAUTHENTICATED": "true"})
    try:
        r = requests.post(opened.url + "/copy-run", json=copy_body(small_run, src, dst))
        assert r.status_code == 200, r.text
    finally:
        opened.stop()


def copy_from(uri, dst, run_id="a" * 32):
    return {"run_id": run_id, "experiment_name": unique("http-hosts"), "src_mlflow_uri": uri,
            "dst_mlflow_uri": dst.uri}


def test_without_an_allow_list_every_copy_is_refused_and_nothing_is_contacted(dst):
    """The operator set a token and one upstream credential, but no host list: a caller naming
    a server of its own gets 403 naming the variable to set, and that server hears nothing."""
    caller_server = RecordingServer()
    s = Served({"MLFLOW_COPY_API_TOKEN": TOKEN, "MLFLOW_TRACKING_TOKEN": UPSTREAM_SECRET}, allowed_hosts=None)
    try:
        runs = requests.post(s.url + "/copy-run", json=copy_from(caller_server.uri, dst), headers=auth())
        versions = requests.post(s.url + "/copy-model-version", headers=auth(), json={
            "src_model": "m", "src_version": "1", "dst_model": "n", "src_registry_uri": caller_server.uri,
            "dst_registry_uri": caller_server.uri})
    finally:
        s.stop()
        caller_server.close()
    for r in (runs, versions):
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "forbidden"
        assert "MLFLOW_COPY_ALLOWED_HOSTS" in r.json()["error"]["message"]
        assert UPSTREAM_SECRET not in r.text
    assert len(caller_server.traffic) == 0, caller_server.traffic.matching()


def test_an_allow_list_refuses_foreign_and_metadata_hosts_uncontacted(src, dst, small_run):
    foreign = RecordingServer()
    s = Served({"MLFLOW_COPY_API_TOKEN": TOKEN, "MLFLOW_TRACKING_TOKEN": UPSTREAM_SECRET},
               allowed_hosts=f"127.0.0.1:{src.port},127.0.0.1:{dst.port}")
    try:
        refused = {
            "foreign source": copy_from(foreign.uri, dst, small_run),
            "foreign destination": {**copy_from(src.uri, dst, small_run), "dst_mlflow_uri": foreign.uri},
            "instance metadata": copy_from("http://169.254.169.254", dst, small_run),
            "metadata as a number": copy_from("http://2852039166", dst, small_run),
            "AWS IPv6 metadata": copy_from("http://[fd00:ec2::254]", dst, small_run),
            "GCP metadata name": copy_from("http://metadata.google.internal", dst, small_run),
        }
        for what, body in refused.items():
            r = requests.post(s.url + "/copy-run", json=body, headers=auth())
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", (what, r.text)
            assert UPSTREAM_SECRET not in r.text
        allowed = copy_from(src.uri, dst, small_run)
        r = requests.post(s.url + "/copy-run", json=allowed, headers=auth())
        assert r.status_code == 200, r.text
        assert_run_copied(src.uri, small_run, dst.uri, r.json()["dst_run_id"], allowed["experiment_name"])
    finally:
        s.stop()
        foreign.close()
    assert len(foreign.traffic) == 0, foreign.traffic.matching()


def test_the_opt_out_allows_any_host_but_metadata_and_says_so(src, dst, small_run):
    s = Served({"MLFLOW_COPY_API_TOKEN": TOKEN, "MLFLOW_COPY_ALLOW_ANY_HOST": "true"}, allowed_hosts=None)
    try:
        r = requests.post(s.url + "/copy-run", json=copy_from(src.uri, dst, small_run), headers=auth())
        assert r.status_code == 200, r.text
        metadata = requests.post(s.url + "/copy-run", json=copy_from("http://169.254.169.254", dst), headers=auth())
        assert metadata.status_code == 403 and "special-purpose" in metadata.json()["error"]["message"]
        assert "MLFLOW_COPY_ALLOW_ANY_HOST=true" in s.logs(), "the opt-out is logged"
    finally:
        s.stop()


def test_component_exports_exactly_one_http_handler():
    exports = json.loads(subprocess.run([HOST, "exports", WASM], capture_output=True, text=True, check=True).stdout)
    assert [e for e in exports if e.startswith("wasi:http/incoming-handler@0.2")] == ["wasi:http/incoming-handler@0.2.2"]
    assert "mlflow:copy/copier@0.2.0" in exports and "wasi:cli/run@0.2.2" in exports
