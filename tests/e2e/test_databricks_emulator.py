"""The Databricks emulator (tests/databricks_emulator) checked against MLflow's own Python client
and against the strictness its contract promises. This is the evidence that the emulator speaks the
Databricks APIs the way MLflow expects them.

Run: .venv/bin/python -m pytest tests/e2e/test_databricks_emulator.py -x -q -p no:cacheprovider
"""
import base64
import json
import os
import subprocess
import sys
import time
import uuid

import boto3
import pytest
import requests
from botocore.config import Config

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from databricks_emulator import Emulator  # noqa: E402

SCENARIOS = os.path.join(HERE, "dbx_client_scenarios.py")
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def emulators():
    """The main emulator (AWS) and an Azure one, their backing mlflow servers booting in parallel,
    and an MLflow-client worker with the main emulator's PAT, importing MLflow meanwhile."""
    main = Emulator(oauth_token_ttl=3600, presign_ttl=120, credentials_page_size=3, list_page_size=4,
                    extra_users=["bob@example.com"], groups=["data-scientists"],
                    catalogs={"main": ["default", "staging"]})
    azure = Emulator(cloud="azure", files_api=False, name="az", presign_ttl=120)
    # MLflow-client workers, one per set of credentials (host and credentials are known before start)
    workers = {"pat": Worker(main, main.pat_env()), "oauth": Worker(main, main.oauth_env()),
               "azure": Worker(azure, azure.pat_env())}
    try:
        Emulator.start_all(main, azure)
        try:
            yield main, azure, workers
        finally:
            main.stop()
            azure.stop()
    finally:
        for w in workers.values():
            w.close()


@pytest.fixture(scope="module")
def emu(emulators):
    return emulators[0]


@pytest.fixture(scope="module")
def azure_emu(emulators):
    return emulators[1]


@pytest.fixture(scope="module")
def pat_client(emulators):
    """MLflow's client with the PAT, shared by the PAT scenarios of the main emulator."""
    return emulators[2]["pat"]


@pytest.fixture(scope="module")
def oauth_client(emulators):
    """MLflow's client with the main emulator's OAuth service principal."""
    return emulators[2]["oauth"]


@pytest.fixture(scope="module")
def azure_client(emulators):
    """MLflow's client with the Azure emulator's PAT."""
    return emulators[2]["azure"]


def uid():
    return uuid.uuid4().hex[:8]


def api(emu, method, path, token=None, **kw):
    headers = kw.pop("headers", {})
    if token is not False:
        headers["Authorization"] = f"Bearer {token or emu.token}"
    return requests.request(method, emu.host + path, headers=headers, timeout=60, **kw)


def ok(resp):
    assert resp.status_code == 200, resp.text
    return resp.json()


class Worker:
    """One MLflow-client process (dbx_client_scenarios.py --serve) with fixed credentials, running
    several scenarios one after the other."""

    def __init__(self, emu, env):
        self.emu = emu
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABRICKS_", "AWS_"))}
        clean.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
                      "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", **env})
        self.proc = subprocess.Popen([sys.executable, SCENARIOS, "--serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=clean)

    def run(self, name, args, env=None):
        env = {"MLFLOW_S3_ENDPOINT_URL": self.emu.s3_endpoint, **(env or {})}  # known once the emulator runs
        self.proc.stdin.write(json.dumps({"scenario": name, "args": args, "env": env}) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT "):])
            if line.startswith("ERROR "):
                pytest.fail("scenario failed:\n" + json.loads(line[len("ERROR "):]))
        pytest.fail(f"the MLflow-client worker exited ({self.proc.wait()})")

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def new_run(emu):
    exp = ok(api(emu, "POST", "/api/2.0/mlflow/experiments/create",
                 json={"name": f"/Shared/strict-{uid()}"}))["experiment_id"]
    run = ok(api(emu, "POST", "/api/2.0/mlflow/runs/create", json={"experiment_id": exp}))["run"]
    return exp, run


# ------------------------------------------------------------------------------------------------
# MLflow's Python client
# ------------------------------------------------------------------------------------------------
def test_mlflow_client_logs_registers_and_loads(emu, pat_client):
    start = len(emu.requests)
    sstart = len(emu.storage_requests())
    exp_name = f"/Users/{emu.user}/emulator-{uid()}"
    uc_name = f"main.default.emu_{uid()}"
    r = pat_client.run("full", {"experiment": exp_name, "ws_model": f"emu-ws-{uid()}", "uc_model": uc_name})
    exp, run_id, model_id = r["experiment_id"], r["run_id"], r["model_id"]
    # tracking, Databricks-shaped
    assert r["experiment_artifact_location"] == f"dbfs:/databricks/mlflow-tracking/{exp}"
    assert r["artifact_uri"] == f"dbfs:/databricks/mlflow-tracking/{exp}/{run_id}/artifacts"
    assert r["model_artifact_location"] == f"dbfs:/databricks/mlflow-tracking/{exp}/logged_models/{model_id}/artifacts"
    assert r["user_id"] == emu.user and r["tags"]["mlflow.user"] == emu.user
    assert r["tags"]["mlflow.rootRunId"] == run_id
    assert r["params"] == {"alpha": "0.5", "solver": "lbfgs"}
    assert r["metrics"]["loss"] == pytest.approx(1 / 3) and r["loss_history"] == pytest.approx([1, 1 / 2, 1 / 3])
    assert {"files", "notes"} <= set(r["artifacts"])
    assert r["sub_artifacts"] == [["files/sub/data.bin", 3000]]
    assert r["hello"] == "hello databricks"
    assert r["logged_model_predict"] is True
    # workspace registry
    assert r["ws_status"] == "READY" and r["ws_predict"] is True
    assert r["ws_source"] == r["model_artifact_location"]
    assert r["ws_download_uri"].startswith("dbfs:/databricks/mlflow-registry/")
    # Unity Catalog
    assert r["uc_status"] == "READY" and r["uc_predict_version"] is True and r["uc_predict_alias"] is True
    assert r["uc_alias_version"] == r["uc_version"] == "1"
    uc_state = emu.uc.versions[uc_name.lower()][1]
    assert uc_state["run_id"] == run_id and uc_state["run_tracking_server_id"] == emu.workspace_id, \
        "MLflow read x-databricks-org-id from GetRun and sent it as run_tracking_server_id"
    # what travelled where
    reqs = emu.requests[start:]
    paths = [q["path"] for q in reqs]
    assert all(q["auth"] == "pat" and q["user"] == emu.user for q in reqs if q["path"].startswith("/api/"))
    assert any(p.startswith(f"/api/2.0/fs/files/WorkspaceInternal/Mlflow/Artifacts/{exp}/Runs/{run_id}/")
               for p in paths), "run artifacts went through the Files API"
    assert any(p.startswith(f"/api/2.0/fs/files/WorkspaceInternal/Mlflow/Artifacts/{exp}/LoggedModels/{model_id}/")
               for p in paths), "logged-model artifacts went through the Files API"
    assert "/api/2.0/mlflow/unity-catalog/model-versions/generate-temporary-credentials" in paths
    assert "/api/2.0/mlflow/unity-catalog/model-versions/finalize" in paths
    assert "/api/2.0/mlflow/model-versions/get-signed-download-uri" in paths
    sreqs = emu.storage_requests()[sstart:]
    assert not any(s["has_bearer"] for s in sreqs)
    assert any(s["auth"] == "sigv4" and s["method"] == "PUT" and s["path"].endswith("/MLmodel")
               and s["status"] == 200 for s in sreqs), "UC files written with STS credentials (SigV4)"
    assert any(s["auth"] == "presigned" and s["method"] == "GET" for s in sreqs)
    assert all(s["status"] in (200, 206, 204) for s in sreqs), [s for s in sreqs if s["status"] not in (200, 206, 204)]


def test_signed_urls_multipart_and_paging_without_files_api(emu, pat_client):
    """Files API off: MLflow falls back to credentials-for-read/write signed URLs, multipart for the
    big file, paged credentials and listings. UC in Databricks default-storage mode (presigned URLs
    from /api/2.0/fs/create-upload-url and create-download-url)."""
    emu.files_api = False
    emu.uc_storage_mode = "DEFAULT_STORAGE"
    uc_name = f"main.default.dflt_{uid()}"
    start, sstart = len(emu.requests), len(emu.storage_requests())
    try:
        r = pat_client.run("artifacts", {"experiment": f"/Shared/signed-{uid()}", "big_bytes": 11 * MiB,
                                         "uc_model": uc_name},
                           env={"MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE": str(6 * MiB),
                                "MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE": str(5 * MiB)})
    finally:
        emu.files_api = True
        emu.uc_storage_mode = "CUSTOMER_HOSTED"
    assert r["uc_status"] == "READY" and r["uc_predict"] is True
    assert r["big_roundtrip"] is True
    assert r["smalls"] == [f"file {i}" for i in range(5)]
    assert r["listed"] == [["data/big.bin", 11 * MiB]] + [[f"data/small{i}.txt", 6] for i in range(5)]
    reqs = emu.requests[start:]
    paths = [q["path"] for q in reqs]
    assert "/api/2.0/mlflow/artifacts/create-multipart-upload" in paths
    assert "/api/2.0/mlflow/artifacts/complete-multipart-upload" in paths
    fs = [q for q in reqs if "/WorkspaceInternal/" in q["path"]]
    assert fs and all(q["status"] == 403 for q in fs), "Files API refused, MLflow fell back to signed URLs"
    writes = [q for q in reqs if q["path"] == "/api/2.0/mlflow/artifacts/credentials-for-write"]
    assert len(writes) >= 2, "6 paths at 3 per page: paged"
    assert sum(q["path"] == "/api/2.0/mlflow/artifacts/list" for q in reqs) >= 2, "6 entries at 4 per page"
    sreqs = emu.storage_requests()[sstart:]
    parts = [s for s in sreqs if s["method"] == "PUT" and "partNumber" in s["query"]]
    assert len(parts) == 3 and all(s["status"] == 200 and s["auth"] == "presigned" for s in parts)
    assert not any(s["has_bearer"] for s in sreqs)
    assert "/api/2.0/fs/create-upload-url" in paths and "/api/2.0/fs/create-download-url" in paths
    assert any(s["method"] == "PUT" and s["path"].startswith(f"/{emu.uc_bucket}/models/") and s["path"].endswith(
        "/MLmodel") and s["auth"] == "presigned" and s["status"] == 200 for s in sreqs)
    assert "/api/2.0/mlflow/unity-catalog/model-versions/finalize" in paths
    assert any(p.endswith("/artifacts/credentials-for-upload") for p in paths), "logged model written via signed URLs"
    assert any(p.endswith("/artifacts/credentials-for-download") for p in paths)
    assert any(p.endswith("/artifacts/directories") for p in paths), "logged model listed via the tracking API"


def test_oauth_m2m_tokens_expire_and_refresh(emu, oauth_client):
    """OAuth M2M with 1-second tokens; UC files through the Files API at /Models/... (the
    is-databricks-sdk-models-artifact-repository-enabled switch on)."""
    emu.oauth_token_ttl = 1
    emu.uc_sdk_models_repo = True
    uc_name = f"main.default.sdk_{uid()}"
    issued = emu.auth.tokens_issued
    start = len(emu.requests)
    try:
        r = oauth_client.run("oauth", {"experiment": f"/Shared/oauth-{uid()}", "rounds": 3, "sleep": 1.1,
                                       "uc_model": uc_name})
    finally:
        emu.oauth_token_ttl = 3600
        emu.uc_sdk_models_repo = False
    assert r["params"] == ["0", "1", "2"]
    assert r["uc_status"] == "READY" and r["uc_predict"] is True
    assert any(q["method"] == "PUT" and q["path"] == f"/api/2.0/fs/files/Models/main/default/{uc_name.split('.')[-1]}/1/MLmodel"
               and q["status"] == 204 for q in emu.requests[start:])
    assert emu.auth.tokens_issued - issued >= 2, "the client fetched a new token after the first expired"
    reqs = [q for q in emu.requests[start:] if q["path"].startswith("/api/")]
    assert reqs and all(q["auth"] == "oauth" and q["user"] == emu.client_id for q in reqs if q["status"] == 200)
    assert any(q["path"] == "/oidc/v1/token" for q in emu.requests[start:])


def test_mlflow_client_traces_round_trip(emu, pat_client):
    """Experiment traces as MLflow's client writes and reads them on a workspace: StartTraceV3, then
    traces.json through a signed URL from credentials-for-data-upload (no OTLP); assessments, a tag,
    link-to-run; read back by search (V4 refused, V3 fallback) and get_trace (info + traces.json
    through credentials-for-data-download, never traces/get)."""
    start, sstart = len(emu.requests), len(emu.storage_requests())
    logged = pat_client.run("log_traces", {"experiment": f"/Users/{emu.user}/traces-{uid()}"})
    exp, run_id = logged["experiment_id"], logged["run_id"]
    in_run, outside = logged["trace_ids"]
    r = pat_client.run("read_traces", {"run_id": run_id})
    # the run's traces: one by its mlflow.sourceRun metadata, one by link-to-run
    assert set(r["got"]) == set(r["searched"]) == {in_run, outside}
    assert r["searched"] == r["got"], "search_traces and get_trace give the same traces"
    t, o = r["got"][in_run], r["got"][outside]
    for tid, view in ((in_run, t), (outside, o)):
        assert view["info"]["artifact_location"] == f"dbfs:/databricks/mlflow-tracking/{exp}/{tid}/artifacts"
        assert view["info"]["experiment_id"] == exp and view["info"]["state"] == "OK"
        assert "mlflow.trace.infoFinalized" not in view["info"]["trace_metadata"]
    info = t["info"]
    assert info["trace_metadata"]["mlflow.sourceRun"] == run_id
    assert "mlflow.sourceRun" not in o["info"]["trace_metadata"]
    assert info["tags"] == {"mlflow.traceName": "answer", "reviewed": "yes"}
    assert json.loads(info["request_preview"]) == {"question": "what is it?", "temperature": 0.5}
    assert json.loads(info["response_preview"]) == {"answer": "42 (2 docs)", "confidence": 0.9}
    assert info["request_time"] > 0 and info["execution_duration"] >= 0
    spans = {s["name"]: s for s in t["spans"]}
    assert list(spans) == ["answer", "retrieve", "flaky_tool"]
    root, child, failing = spans["answer"], spans["retrieve"], spans["flaky_tool"]
    assert root["parent_id"] is None and child["parent_id"] == failing["parent_id"] == root["span_id"]
    assert (root["span_type"], child["span_type"], failing["span_type"]) == ("CHAIN", "RETRIEVER", "TOOL")
    assert root["inputs"] == {"question": "what is it?", "temperature": 0.5}
    assert root["outputs"] == {"answer": "42 (2 docs)", "confidence": 0.9}
    assert root["attributes"]["team"] == "qa" and root["attributes"]["version"] == 3
    assert child["inputs"] == {"query": "what is it?"} and child["outputs"] == ["doc about what is it?", "another doc"]
    assert child["attributes"]["top_k"] == 2
    assert root["status"]["code"] == child["status"]["code"] == "OK"
    assert failing["status"] == {"code": "ERROR", "description": "ValueError: tool broke on 'what is it?'"}
    assert failing["outputs"] is None and failing["inputs"] == {"query": "what is it?"}
    [event] = failing["events"]
    assert event["name"] == "exception" and event["attributes"]["exception.type"] == "ValueError"
    assert event["attributes"]["exception.message"] == "tool broke on 'what is it?'"
    assert "Traceback" in event["attributes"]["exception.stacktrace"]
    for s in (child, failing):
        assert root["start_time_ns"] <= s["start_time_ns"] <= s["end_time_ns"] <= root["end_time_ns"]
    assert t["assessments"] == [
        {"name": "expected_answer", "kind": "expectation", "value": {"answer": "42"}, "rationale": None,
         "metadata": {"dataset": "golden"}, "source": {"source_type": "HUMAN", "source_id": "reviewer@example.com"}},
        {"name": "helpful", "kind": "feedback", "value": True, "rationale": "answers the question",
         "metadata": {"round": "1"}, "source": {"source_type": "HUMAN", "source_id": "reviewer@example.com"}}]
    [single] = o["spans"]
    assert (single["name"], single["span_type"], single["inputs"], single["outputs"]) == ("standalone", "LLM", {"x": 21}, 42)
    assert o["assessments"] == [] and o["info"]["tags"] == {"mlflow.traceName": "standalone"}
    # what travelled where
    reqs = emu.requests[start:]
    calls = [(q["method"], q["path"], q["status"]) for q in reqs]
    T = "/api/3.0/mlflow/traces"
    assert calls.count(("POST", T, 200)) == 2, "StartTraceV3 once per trace"
    for tid in (in_run, outside):
        assert ("GET", f"/api/2.0/mlflow/traces/{tid}/credentials-for-data-upload", 200) in calls
        assert ("GET", f"/api/2.0/mlflow/traces/{tid}/credentials-for-data-download", 200) in calls
        assert ("GET", f"{T}/{tid}", 200) in calls, "get_trace reads the info with GetTraceInfoV3"
    assert calls.count(("POST", f"{T}/{in_run}/assessments", 200)) == 2
    assert ("PATCH", f"/api/2.0/mlflow/traces/{in_run}/tags", 200) in calls
    assert ("POST", "/api/2.0/mlflow/traces/link-to-run", 200) in calls
    assert ("POST", "/api/4.0/mlflow/traces/search-long-running", 404) in calls, "V4 search refused"
    assert ("POST", f"{T}/search", 200) in calls, "... and the client fell back to V3"
    assert not [c for c in calls if "otel" in c[1] or c[1].endswith("/v1/traces")], "no OTLP span logging"
    assert not [c for c in calls if c[1] == f"{T}/get"], "no GetTrace: spans come from traces.json"
    assert all(q["auth"] == "pat" for q in reqs if q["path"].startswith("/api/"))
    sreqs = emu.storage_requests()[sstart:]
    for tid in (in_run, outside):
        key = f"/{emu.bucket}/databricks/mlflow-tracking/{exp}/traces/{tid}/artifacts/traces.json"
        assert [s["status"] for s in sreqs if s["method"] == "PUT" and s["path"] == key
                and s["auth"] == "presigned"] == [200], "traces.json PUT once through a presigned URL"
        assert any(s["method"] == "GET" and s["path"] == key and s["auth"] == "presigned" for s in sreqs)
    assert not any(s["has_bearer"] for s in sreqs)
    # refusals: no traces/get, no OTLP, unknown traces, uploads for a deleted experiment's traces
    for method, path in (("GET", f"{T}/get?trace_id={in_run}"), ("POST", "/v1/traces"),
                         ("POST", "/api/2.0/otel/v1/traces"), ("POST", "/api/4.0/mlflow/traces/search-long-running")):
        got = api(emu, method, path, data=b"{}")
        assert got.status_code == 404 and got.json()["error_code"] == "ENDPOINT_NOT_FOUND", (path, got.text)
    missing = api(emu, "GET", "/api/2.0/mlflow/traces/tr-0123456789abcdef0123456789abcdef/credentials-for-data-download")
    assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    ok(api(emu, "POST", "/api/2.0/mlflow/experiments/delete", json={"experiment_id": exp}))
    refused = api(emu, "GET", f"/api/2.0/mlflow/traces/{in_run}/credentials-for-data-upload")
    assert refused.status_code == 400 and refused.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert ok(api(emu, "GET", f"/api/2.0/mlflow/traces/{in_run}/credentials-for-data-download"))["credential_info"][
        "type"] == "AWS_PRESIGNED_URL"


# ------------------------------------------------------------------------------------------------
# Authentication
# ------------------------------------------------------------------------------------------------
def test_auth_errors_and_discovery(emu):
    assert api(emu, "GET", "/api/2.0/mlflow/experiments/search", token=False).status_code == 401
    bad = api(emu, "GET", "/api/2.0/mlflow/experiments/search", token="dapi-not-a-token")
    assert bad.status_code == 403 and bad.json()["message"] == "Invalid access token."
    cfg = requests.get(emu.host + "/.well-known/databricks-config", timeout=10).json()
    assert cfg["oidc_endpoint"] == emu.host + "/oidc" and cfg["workspace_id"] == emu.workspace_id
    meta = requests.get(cfg["oidc_endpoint"] + "/.well-known/oauth-authorization-server", timeout=10).json()
    assert meta["token_endpoint"] == emu.host + "/oidc/v1/token"
    basic = base64.b64encode(f"{emu.client_id}:wrong".encode()).decode()
    r = requests.post(meta["token_endpoint"], data={"grant_type": "client_credentials", "scope": "all-apis"},
                      headers={"Authorization": f"Basic {basic}"}, timeout=10)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    emu.oauth_token_ttl = 1
    try:
        tok = requests.post(meta["token_endpoint"], data={"grant_type": "client_credentials", "scope": "all-apis",
                                                          "client_id": emu.client_id,
                                                          "client_secret": emu.client_secret}, timeout=10).json()
    finally:
        emu.oauth_token_ttl = 3600
    assert tok["token_type"] == "Bearer" and tok["expires_in"] == 1
    assert api(emu, "GET", "/api/2.0/preview/scim/v2/Me", token=tok["access_token"]).json()["userName"] == emu.client_id
    time.sleep(1.2)
    expired = api(emu, "GET", "/api/2.0/preview/scim/v2/Me", token=tok["access_token"])
    assert expired.status_code == 401 and expired.json()["message"] == "Token is expired"
    got = api(emu, "GET", "/api/2.0/mlflow/no-such-thing")
    assert got.status_code == 404 and got.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    assert got.headers["x-databricks-org-id"] == emu.workspace_id


# ------------------------------------------------------------------------------------------------
# Workspace tracking strictness
# ------------------------------------------------------------------------------------------------
def test_experiment_paths(emu):
    r = api(emu, "POST", "/api/2.0/mlflow/experiments/create", json={"name": "relative-name"})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "absolute path" in r.json()["message"]
    folder = f"/Users/{emu.user}/folder-{uid()}"
    r = api(emu, "POST", "/api/2.0/mlflow/experiments/create", json={"name": f"{folder}/exp"})
    assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert r.json()["message"] == f"Parent directory {folder} does not exist."
    r = api(emu, "POST", "/api/2.0/workspace/mkdirs", json={"path": "/Users/nobody@example.com/x"})
    assert r.status_code == 403 and r.json()["error_code"] == "DIRECTORY_PROTECTED"
    ok(api(emu, "POST", "/api/2.0/workspace/mkdirs", json={"path": f"{folder}/deeper"}))
    assert ok(api(emu, "GET", "/api/2.0/workspace/get-status", params={"path": folder}))["object_type"] == "DIRECTORY"
    exp = ok(api(emu, "POST", "/api/2.0/mlflow/experiments/create", json={"name": f"{folder}/exp"}))["experiment_id"]
    st = ok(api(emu, "GET", "/api/2.0/workspace/get-status", params={"path": f"{folder}/exp"}))
    assert st["object_type"] == "MLFLOW_EXPERIMENT" and st["resource_id"] == exp
    r = api(emu, "POST", "/api/2.0/mlflow/experiments/create", json={"name": f"{folder}/exp"})
    assert r.status_code == 400 and r.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"


def test_refused_tags_and_user(emu):
    exp, run = new_run(emu)
    assert run["info"]["user_id"] == emu.user
    rid = run["info"]["run_id"]
    for key in ("mlflow.rootRunId", "mlflow.user", "mlflow.log-model.history"):
        r = api(emu, "POST", "/api/2.0/mlflow/runs/set-tag", json={"run_id": rid, "key": key, "value": "x"})
        assert r.status_code == 400 and r.json() == {"error_code": "INVALID_PARAMETER_VALUE",
                                                     "message": f"Cannot update tag '{key}'"}
    r = api(emu, "POST", "/api/2.0/mlflow/runs/log-batch",
            json={"run_id": rid, "tags": [{"key": "ok", "value": "1"}, {"key": "mlflow.rootRunId", "value": "x"}]})
    assert r.status_code == 400
    r = api(emu, "POST", "/api/2.0/mlflow/experiments/set-experiment-tag",
            json={"experiment_id": exp, "key": "mlflow.experiment.sourceType", "value": "REPO_NOTEBOOK"})
    assert r.status_code == 400
    r = api(emu, "POST", "/api/2.0/mlflow/runs/create",
            json={"experiment_id": exp, "user_id": "mallory@example.com",
                  "tags": [{"key": "mlflow.user", "value": "mallory@example.com"}]})
    info = ok(r)["run"]
    assert info["info"]["user_id"] == emu.user
    assert {"key": "mlflow.user", "value": emu.user} in info["data"]["tags"]
    ok(api(emu, "POST", "/api/2.0/mlflow/runs/set-tag", json={"run_id": rid, "key": "mlflow.note.content", "value": "x"}))


# ------------------------------------------------------------------------------------------------
# Storage strictness
# ------------------------------------------------------------------------------------------------
def test_storage_rejects_bearer_expired_tampered_and_chunked(emu):
    _, run = new_run(emu)
    rid = run["info"]["run_id"]
    w = ok(api(emu, "POST", "/api/2.0/mlflow/artifacts/credentials-for-write", json={"run_id": rid, "path": ["a.txt"]}))
    url = w["credential_infos"][0]["signed_uri"]
    assert w["credential_infos"][0]["type"] == "AWS_PRESIGNED_URL" and url.startswith(emu.s3_endpoint)
    r = requests.put(url, data=b"x", headers={"Authorization": f"Bearer {emu.token}"}, timeout=10)
    assert r.status_code == 400 and "<Code>InvalidArgument</Code>" in r.text
    assert emu.storage_requests()[-1]["has_bearer"] is True
    r = requests.put(url, data=iter([b"chunk"]), timeout=10)
    assert r.status_code == 501 and "Transfer-Encoding" in r.text
    tampered = url.replace("a.txt", "b.txt")
    assert requests.put(tampered, data=b"x", timeout=10).status_code == 403
    assert requests.put(url, data=b"hello", timeout=10).status_code == 200
    emu.presign_ttl = 1
    try:
        rd = ok(api(emu, "POST", "/api/2.0/mlflow/artifacts/credentials-for-read", json={"run_id": rid, "path": ["a.txt"]}))
    finally:
        emu.presign_ttl = 120
    get_url = rd["credential_infos"][0]["signed_uri"]
    assert requests.get(get_url, timeout=10).content == b"hello"
    time.sleep(2.1)
    r = requests.get(get_url, timeout=10)
    assert r.status_code == 403 and "Request has expired" in r.text
    listed = ok(api(emu, "GET", "/api/2.0/mlflow/artifacts/list", params={"run_id": rid}))
    assert listed["files"] == [{"path": "a.txt", "is_dir": False, "file_size": 5}]


def test_multipart_part_url_refresh_after_expiry(emu):
    _, run = new_run(emu)
    rid = run["info"]["run_id"]
    emu.presign_ttl = 1
    try:
        mpu = ok(api(emu, "POST", "/api/2.0/mlflow/artifacts/create-multipart-upload",
                     json={"run_id": rid, "path": "big/part.bin", "num_parts": 2}))
    finally:
        emu.presign_ttl = 120
    assert len(mpu["upload_credential_infos"]) == 2
    part1 = os.urandom(5 * MiB)
    r = requests.put(mpu["upload_credential_infos"][0]["signed_uri"], data=part1, timeout=30)
    assert r.status_code == 200
    etags = [{"part_number": 1, "etag": r.headers["ETag"]}]
    time.sleep(2.1)
    r = requests.put(mpu["upload_credential_infos"][1]["signed_uri"], data=b"tail", timeout=30)
    assert r.status_code == 403 and "Request has expired" in r.text
    fresh = ok(api(emu, "GET", "/api/2.0/mlflow/artifacts/get-presigned-upload-part-url",
                   params={"run_id": rid, "path": "big/part.bin", "upload_id": mpu["upload_id"], "part_number": 2}))
    r = requests.put(fresh["upload_credential_info"]["signed_uri"], data=b"tail", timeout=30)
    assert r.status_code == 200
    etags.append({"part_number": 2, "etag": r.headers["ETag"]})
    bad = api(emu, "POST", "/api/2.0/mlflow/artifacts/complete-multipart-upload",
              json={"run_id": rid, "path": "big/part.bin", "upload_id": mpu["upload_id"],
                    "part_etags": [{"part_number": 1, "etag": '"0"'}, etags[1]]})
    assert bad.status_code == 400
    ok(api(emu, "POST", "/api/2.0/mlflow/artifacts/complete-multipart-upload",
           json={"run_id": rid, "path": "big/part.bin", "upload_id": mpu["upload_id"], "part_etags": etags}))
    listed = ok(api(emu, "GET", "/api/2.0/mlflow/artifacts/list", params={"run_id": rid, "path": "big"}))
    assert listed["files"] == [{"path": "big/part.bin", "is_dir": False, "file_size": 5 * MiB + 4}]


# ------------------------------------------------------------------------------------------------
# Workspace registry
# ------------------------------------------------------------------------------------------------
def test_ws_registry_sources_and_permissions(emu):
    name = f"perm-{uid()}"
    ok(api(emu, "POST", "/api/2.0/mlflow/registered-models/create", json={"name": name}))
    r = api(emu, "POST", "/api/2.0/mlflow/model-versions/create", json={"name": name, "source": "models:/m-0123"})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    r = api(emu, "POST", "/api/2.0/mlflow/registered-models/alias", json={"name": name, "alias": "a", "version": "1"})
    assert r.status_code == 404 and r.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    # a source with no files fails registration asynchronously
    _, run = new_run(emu)
    mv = ok(api(emu, "POST", "/api/2.0/mlflow/model-versions/create",
                json={"name": name, "source": f"runs:/{run['info']['run_id']}/model", "run_id": run["info"]["run_id"]}))
    assert mv["model_version"]["status"] == "PENDING_REGISTRATION"
    assert mv["model_version"]["source"] == run["info"]["artifact_uri"] + "/model"
    deadline = time.time() + 10
    while time.time() < deadline:
        got = ok(api(emu, "GET", "/api/2.0/mlflow/model-versions/get", params={"name": name, "version": "1"}))
        if got["model_version"]["status"] != "PENDING_REGISTRATION":
            break
        time.sleep(0.1)
    assert got["model_version"]["status"] == "FAILED_REGISTRATION"
    rm = ok(api(emu, "GET", "/api/2.0/mlflow/databricks/registered-models/get", params={"name": name}))
    rid = rm["registered_model_databricks"]["id"]
    perms = ok(api(emu, "GET", f"/api/2.0/permissions/registered-models/{rid}"))
    assert {"user_name": emu.user, "display_name": emu.user,
            "all_permissions": [{"permission_level": "CAN_MANAGE", "inherited": False}]} in perms["access_control_list"]
    ok(api(emu, "PATCH", f"/api/2.0/permissions/registered-models/{rid}",
           json={"access_control_list": [{"user_name": "bob@example.com", "permission_level": "CAN_READ"},
                                         {"group_name": "data-scientists", "permission_level": "CAN_EDIT"},
                                         {"service_principal_name": emu.client_id, "permission_level": "CAN_MANAGE"}]}))
    acl = ok(api(emu, "GET", f"/api/2.0/permissions/registered-models/{rid}"))["access_control_list"]
    direct = {(k, e[k], e["all_permissions"][0]["permission_level"]) for e in acl
              for k in ("user_name", "group_name", "service_principal_name") if k in e
              and not e["all_permissions"][0]["inherited"]}
    assert ("user_name", "bob@example.com", "CAN_READ") in direct
    assert ("group_name", "data-scientists", "CAN_EDIT") in direct
    assert ("service_principal_name", emu.client_id, "CAN_MANAGE") in direct
    r = api(emu, "PATCH", f"/api/2.0/permissions/registered-models/{rid}",
            json={"access_control_list": [{"user_name": "nobody@example.com", "permission_level": "CAN_READ"}]})
    assert r.status_code == 400 and r.json()["message"] == "Principal: UserName(nobody@example.com) does not exist"
    r = api(emu, "PATCH", f"/api/2.0/permissions/registered-models/{rid}",
            json={"access_control_list": [{"user_name": "bob@example.com", "permission_level": "CAN_FLY"}]})
    assert r.status_code == 400


# ------------------------------------------------------------------------------------------------
# Unity Catalog strictness
# ------------------------------------------------------------------------------------------------
UC = "/api/2.0/mlflow/unity-catalog"


def test_uc_names_and_reserved_tag_characters(emu):
    for name, code in [("two.levels", "INVALID_PARAMETER_VALUE"), ("m", "INVALID_PARAMETER_VALUE"),
                       ("nocat.default.m", "CATALOG_DOES_NOT_EXIST"), ("main.noschema.m", "SCHEMA_DOES_NOT_EXIST")]:
        r = api(emu, "POST", f"{UC}/registered-models/create", json={"name": name})
        assert r.json()["error_code"] == code, (name, r.text)
    name = f"main.staging.Tagged_{uid()}"
    for key in ("mlflow.source.type", "a,b", "a-b", "a=b", "a/b", "a:b"):
        r = api(emu, "POST", f"{UC}/registered-models/create", json={"name": name, "tags": [{"key": key, "value": "v"}]})
        assert r.status_code == 400 and "reserved characters" in r.json()["message"], key
    created = ok(api(emu, "POST", f"{UC}/registered-models/create",
                     json={"name": name, "tags": [{"key": "mlflow_exim_src", "value": "v"}]}))
    assert created["registered_model"]["name"] == name.lower()
    r = api(emu, "POST", f"{UC}/registered-models/set-tag", json={"name": name, "key": "x.y", "value": "v"})
    assert r.status_code == 400
    r = api(emu, "POST", f"{UC}/model-versions/transition-stage",
            json={"name": name, "version": "1", "stage": "Production", "archive_existing_versions": False})
    assert r.status_code == 404 and r.json()["error_code"] == "ENDPOINT_NOT_FOUND"


def test_uc_finalize_needs_mlmodel_and_credentials_are_scoped(emu):
    name = f"main.default.fin_{uid()}"
    ok(api(emu, "POST", f"{UC}/registered-models/create", json={"name": name}))
    mv = ok(api(emu, "POST", f"{UC}/model-versions/create", json={"name": name, "source": "s3://elsewhere/model"}))["model_version"]
    assert mv["status"] == "PENDING_REGISTRATION"
    loc = mv["storage_location"]
    assert loc.startswith(f"s3://{emu.uc_bucket}/models/") and "/versions/" in loc
    r = api(emu, "POST", f"{UC}/model-versions/finalize", json={"name": name, "version": mv["version"]})
    assert r.status_code == 400 and "MLmodel" in r.json()["message"]
    creds = ok(api(emu, "POST", f"{UC}/model-versions/generate-temporary-credentials",
                   json={"name": name, "version": mv["version"], "operation": "MODEL_VERSION_OPERATION_READ_WRITE"}))["credentials"]
    aws = creds["aws_temp_credentials"]
    assert creds["storage_mode"] == "CUSTOMER_HOSTED" and creds["expiration_time"] > time.time() * 1000
    prefix = loc[len(f"s3://{emu.uc_bucket}/"):]

    def s3(token):
        return boto3.client("s3", endpoint_url=emu.s3_endpoint, region_name=emu.region,
                            aws_access_key_id=aws["access_key_id"], aws_secret_access_key=aws["secret_access_key"],
                            aws_session_token=token, config=Config(s3={"addressing_style": "path"},
                                                                   retries={"max_attempts": 1}))
    with pytest.raises(Exception, match="InvalidToken"):
        s3("not-the-session-token").put_object(Bucket=emu.uc_bucket, Key=f"{prefix}/MLmodel", Body=b"x")
    with pytest.raises(Exception, match="AccessDenied"):
        s3(aws["session_token"]).put_object(Bucket=emu.uc_bucket, Key="models/other/MLmodel", Body=b"x")
    s3(aws["session_token"]).put_object(Bucket=emu.uc_bucket, Key=f"{prefix}/MLmodel", Body=b"flavors: {}\n")
    done = ok(api(emu, "POST", f"{UC}/model-versions/finalize", json={"name": name, "version": mv["version"]}))
    assert done["model_version"]["status"] == "READY"
    r = api(emu, "POST", f"{UC}/model-versions/generate-temporary-credentials",
            json={"name": name, "version": mv["version"], "operation": "MODEL_VERSION_OPERATION_READ_WRITE"})
    assert r.status_code == 400
    assert ok(api(emu, "GET", f"{UC}/model-versions/get-download-uri",
                  params={"name": name, "version": mv["version"]}))["artifact_uri"] == loc


def test_uc_temporary_credentials_expire(emu):
    name = f"main.default.exp_{uid()}"
    ok(api(emu, "POST", f"{UC}/registered-models/create", json={"name": name}))
    mv = ok(api(emu, "POST", f"{UC}/model-versions/create", json={"name": name, "source": "x"}))["model_version"]
    emu.temp_credentials_ttl = 1
    try:
        aws = ok(api(emu, "POST", f"{UC}/model-versions/generate-temporary-credentials",
                     json={"name": name, "version": mv["version"], "operation": "MODEL_VERSION_OPERATION_READ_WRITE"}))["credentials"]["aws_temp_credentials"]
    finally:
        emu.temp_credentials_ttl = 900
    time.sleep(1.2)
    s3 = boto3.client("s3", endpoint_url=emu.s3_endpoint, region_name=emu.region,
                      aws_access_key_id=aws["access_key_id"], aws_secret_access_key=aws["secret_access_key"],
                      aws_session_token=aws["session_token"],
                      config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    prefix = mv["storage_location"][len(f"s3://{emu.uc_bucket}/"):]
    with pytest.raises(Exception, match="ExpiredToken"):
        s3.put_object(Bucket=emu.uc_bucket, Key=f"{prefix}/MLmodel", Body=b"x")


def test_uc_grants(emu):
    name = f"main.default.grants_{uid()}"
    ok(api(emu, "POST", f"{UC}/registered-models/create", json={"name": name}))
    G = f"/api/2.1/unity-catalog/permissions/function/{name}"
    ok(api(emu, "PATCH", G, json={"changes": [{"principal": "bob@example.com", "add": ["EXECUTE", "APPLY_TAG"]},
                                              {"principal": "data-scientists", "add": ["EXECUTE"]}]}))
    ok(api(emu, "PATCH", G, json={"changes": [{"principal": "bob@example.com", "remove": ["APPLY_TAG"]}]}))
    got = ok(api(emu, "GET", G))["privilege_assignments"]
    assert {"principal": "bob@example.com", "privileges": ["EXECUTE"]} in got
    assert {"principal": "data-scientists", "privileges": ["EXECUTE"]} in got
    r = api(emu, "PATCH", G, json={"changes": [{"principal": "ghost@example.com", "add": ["EXECUTE"]}]})
    assert r.status_code == 404 and r.json()["error_code"] == "PRINCIPAL_DOES_NOT_EXIST"
    r = api(emu, "PATCH", G, json={"changes": [{"principal": "bob@example.com", "add": ["SELECT"]}]})
    assert r.status_code == 400
    assert api(emu, "GET", G, params={"max_results": 10}).status_code == 400


def test_fault_injection(emu):
    emu.inject_api_error(r"/experiments/search$", 429, "REQUEST_LIMIT_EXCEEDED", "Too many requests",
                         headers={"Retry-After": "1"})
    r = api(emu, "GET", "/api/2.0/mlflow/experiments/search")
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    assert r.json() == {"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "Too many requests"}
    assert api(emu, "GET", "/api/2.0/mlflow/experiments/search").status_code == 200
    _, run = new_run(emu)
    url = ok(api(emu, "POST", "/api/2.0/mlflow/artifacts/credentials-for-write",
                 json={"run_id": run["info"]["run_id"], "path": ["f.txt"]}))["credential_infos"][0]["signed_uri"]
    emu.inject_storage_error(r"/f\.txt$", 403, "AccessDenied", "Access Denied", method="PUT")
    r = requests.put(url, data=b"x", timeout=10)
    assert r.status_code == 403 and "<Code>AccessDenied</Code>" in r.text
    assert requests.put(url, data=b"x", timeout=10).status_code == 200


# ------------------------------------------------------------------------------------------------
# Azure Blob (cloud="azure": azurite behind the strict proxy, SAS URLs)
# ------------------------------------------------------------------------------------------------
def test_azure_blob_sas_urls(azure_emu, azure_client):
    emu = azure_emu
    sstart = len(emu.storage_requests())
    r = azure_client.run("artifacts", {"experiment": f"/Shared/azure-{uid()}", "big_bytes": 3 * MiB},
                         env={"MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE": str(MiB)})
    assert r["big_roundtrip"] is True and r["smalls"] == [f"file {i}" for i in range(5)]
    assert r["listed"] == [["data/big.bin", 3 * MiB]] + [[f"data/small{i}.txt", 6] for i in range(5)]
    sreqs = emu.storage_requests()[sstart:]
    blocks = [s for s in sreqs if s["method"] == "PUT" and "blockid" in s["query"]]
    assert len(blocks) >= 3 + 5 and all(s["status"] == 201 and s["auth"] == "sas" for s in blocks)
    assert sum(s["method"] == "PUT" and s["query"] == ["comp"] for s in sreqs) == 6, "one block list per file"
    assert not any(s["has_bearer"] for s in sreqs)
    assert all(s["status"] in (200, 201, 206) for s in sreqs)
    # strictness, on a fresh run
    _, run = new_run(emu)
    rid = run["info"]["run_id"]
    w = ok(api(emu, "POST", "/api/2.0/mlflow/artifacts/credentials-for-write", json={"run_id": rid, "path": ["a.txt"]}))
    info = w["credential_infos"][0]
    assert info["type"] == "AZURE_SAS_URI" and info["signed_uri"].startswith(emu.ws_storage_endpoint)
    url, blob = info["signed_uri"], {"x-ms-blob-type": "BlockBlob"}
    assert requests.put(url, data=b"x", headers={**blob, "Authorization": f"Bearer {emu.token}"}, timeout=10).status_code == 403
    assert requests.put(url, data=iter([b"x"]), headers=blob, timeout=10).status_code == 411
    assert requests.put(url.replace("sig=", "sig=A"), data=b"x", headers=blob, timeout=10).status_code == 403
    assert requests.put(url, data=b"hello", headers=blob, timeout=10).status_code == 201
    emu.presign_ttl = 1
    try:
        rd = ok(api(emu, "POST", "/api/2.0/mlflow/artifacts/credentials-for-read", json={"run_id": rid, "path": ["a.txt"]}))
    finally:
        emu.presign_ttl = 120
    get_url = rd["credential_infos"][0]["signed_uri"]
    assert requests.get(get_url, timeout=10).content == b"hello"
    assert requests.put(get_url, data=b"x", headers=blob, timeout=10).status_code == 403, "a read SAS cannot write"
    time.sleep(2.1)
    assert requests.get(get_url, timeout=10).status_code == 403, "expired SAS"
    r = api(emu, "POST", "/api/2.0/mlflow/artifacts/create-multipart-upload", json={"run_id": rid, "path": "b", "num_parts": 2})
    assert r.status_code == 501 and r.json()["error_code"] == "NOT_IMPLEMENTED"
