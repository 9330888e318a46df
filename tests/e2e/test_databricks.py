"""Databricks workspaces as source and destination, through the built component, against the
Databricks emulator (tests/databricks_emulator: the documented REST contract, tracking data in a
real `mlflow server`, artifacts in moto's S3 server behind presigned URLs). Everything is checked
with MLflow's own Python client, which talks to the emulator as it would to a workspace.

Workspace 1 serves artifacts through the Files API and is reached with a personal access token;
workspace 2 is reached with OAuth M2M tokens that live one second, so the copy refreshes them,
and has the Files API off while the component writes to it (signed URLs only). MLflow's own
client reads it back with the Files API on: its fallback path for logged models is not what is
under test."""
import os
import sys

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

import seed
from compare import assert_run_copied, workspace_env
from conftest import copy_run_args, copy_version_args, run_cli, unique
from databricks_profiles import EXPERIMENT_ROOT, copy, signed_urls_only, workspace_profiles

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from databricks_emulator import Emulator  # noqa: E402

X = np.array([[0.0, 1.0], [1.0, 0.0], [0.3, 0.3], [0.9, 0.2]])


@pytest.fixture(scope="module")
def workspaces():
    # Like production (tests/databricks_emulator/README.md).
    ws1 = Emulator(name="ws1", like_production=True, extra_users=["bob@example.com"])
    ws2 = Emulator(name="ws2", like_production=True, oauth_token_ttl=1, extra_users=["bob@example.com"])
    Emulator.start_all(ws1, ws2)
    try:
        with workspace_profiles(ws1, ws2, oauth=(ws2,)) as cfg_dir:
            yield ws1, ws2, cfg_dir
    finally:
        ws1.stop()
        ws2.stop()


@pytest.fixture(scope="module")
def oss_run(src):
    run_id = seed.seed_rich_run(src.uri, unique("dbx-source"), big_bytes=2 * 1024 * 1024)
    # A tag a workspace refuses to have set (the emulator answers INVALID_PARAMETER_VALUE).
    MlflowClient(src.uri).set_tag(run_id, "mlflow.rootRunId", run_id)
    return run_id


@pytest.fixture(scope="module")
def ws1_copy(src, oss_run, workspaces):
    ws1, _, cfg_dir = workspaces
    exp = f"{EXPERIMENT_ROOT}/{unique('from-oss')}"
    result = copy(cfg_dir, copy_run_args(oss_run, exp, src.uri, "databricks://ws1"))
    assert result.code == 0, result
    return result.report, exp


def test_oss_to_workspace_is_faithful(src, oss_run, ws1_copy, workspaces):
    ws1, _, _ = workspaces
    report, exp = ws1_copy
    assert report["outcome"] == "created" and report["logged_models"] == 1
    assert_run_copied(src.uri, oss_run, "databricks://ws1", report["dst_run_id"], exp, databricks_dst=True)
    # The run's artifacts went through the Files API, with the workspace token (same host).
    paths = [r["path"] for r in ws1.requests if r["method"] == "PUT"]
    assert any(p.startswith("/api/2.0/fs/files/WorkspaceInternal/Mlflow/Artifacts/") for p in paths), paths
    # The parent folder of the experiment was created; the copy's user is the token's.
    run = MlflowClient("databricks://ws1").get_run(report["dst_run_id"])
    assert run.info.user_id == ws1.user
    assert run.data.tags.get("mlflow.rootRunId") != oss_run, "a refused tag is left out, not a failure"
    assert run.data.tags["mlflow_exim.run_info.user_id"] == MlflowClient(src.uri).get_run(oss_run).info.user_id
    # The same command again finds the copy.
    again = copy(workspaces[2], copy_run_args(oss_run, exp, src.uri, "databricks://ws1"))
    assert again.code == 0 and again.report["outcome"] == "existing", again


def test_workspace_to_workspace_with_token_and_oauth_over_signed_urls(ws1_copy, workspaces):
    ws1, ws2, cfg_dir = workspaces
    report, _ = ws1_copy
    exp = f"/Shared/{unique('ws-to-ws')}"
    # The first upload is refused as an expired presigned URL is: the file is opened again with a
    # fresh URL and the copy completes.
    ws2.inject_storage_error(r"\.txt", status=403, code="AccessDenied", message="Request has expired", method="PUT")
    # MLflow's switch skips the Files API (its fallback is test_databricks_artifacts_real.py's):
    # every request to ws2 is then on the signed-URL route this test counts.
    skip_files_api = {"MLFLOW_DISABLE_DATABRICKS_SDK_FOR_RUN_ARTIFACTS": "true"}
    with signed_urls_only(ws2):
        result = copy(cfg_dir, copy_run_args(report["dst_run_id"], exp, "databricks://ws1", "databricks://ws2"),
                      env=skip_files_api)
    assert result.code == 0, result
    assert_run_copied("databricks://ws1", report["dst_run_id"], "databricks://ws2", result.report["dst_run_id"],
                      exp, databricks_dst=True, src_server=ws1.host)
    storage = ws2.storage_requests()
    assert storage and not any(r["has_bearer"] for r in storage), "no token ever reaches storage"
    assert any(r["status"] == 403 for r in storage), "the expired URL was refused once"
    tokens = [r for r in ws2.requests if r["path"] == "/oidc/v1/token"]
    assert len(tokens) >= 2, "one-second OAuth tokens were fetched again during the copy"
    assert not any(r["status"] == 401 for r in ws2.requests if r["path"] != "/oidc/v1/token")
    for secret in (ws1.token, ws2.client_secret):
        assert secret not in result.stdout + result.stderr


def test_workspace_to_oss_is_faithful(dst, ws1_copy, workspaces):
    report, _ = ws1_copy
    exp = unique("from-ws")
    result = copy(workspaces[2], copy_run_args(report["dst_run_id"], exp, "databricks://ws1", dst.uri))
    assert result.code == 0, result
    assert_run_copied("databricks://ws1", report["dst_run_id"], dst.uri, result.report["dst_run_id"], exp,
                      src_server=workspaces[0].host)


@pytest.fixture(scope="module")
def ws1_version(src, workspaces):
    """An MLflow 3 version registered on an OSS server, deep-copied into workspace 1."""
    name = unique("wine")
    seed.seed_registered_version(src.uri, name)
    dst_model = unique("wine-ws")
    result = copy(workspaces[2], copy_version_args(
        name, "1", dst_model, src.uri, "databricks://ws1", "--dst-experiment-name",
        f"{EXPERIMENT_ROOT}/{unique('versions')}", "--copy-stages-and-aliases", "true",
        "--copy-lineage-tags", "true"))
    assert result.code == 0, result
    assert "not copied" in result.stderr and "champion" in result.stderr, "aliases: a workspace has none"
    return name, dst_model, result.report


def predictions(uri, model_uri):
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with workspace_env(uri):
        return list(mlflow.pyfunc.load_model(model_uri).predict(X))


def test_version_into_a_workspace_loads_and_predicts(src, ws1_version):
    name, dst_model, report = ws1_version
    version = MlflowClient("databricks://ws1", registry_uri="databricks://ws1").get_model_version(
        dst_model, report["dst_version"])
    assert version.status == "READY" and version.current_stage == "Staging"
    assert version.source.startswith("dbfs:/databricks/mlflow-tracking/"), version.source
    assert version.tags["mlflow_exim.src_version.name"] == name
    assert predictions("databricks://ws1", f"models:/{dst_model}/{report['dst_version']}") == \
        predictions(src.uri, f"models:/{name}/1")


def test_shallow_version_copy_within_a_workspace(ws1_version, workspaces):
    _, ws1_model, ws1_report = ws1_version
    dst_model = unique("wine-shallow")
    result = copy(workspaces[2], copy_version_args(ws1_model, ws1_report["dst_version"], dst_model,
                                                   "databricks://ws1", "databricks://ws1",
                                                   "--copy-stages-and-aliases", "true"))
    assert result.code == 0, result
    assert not result.report["deep"] and result.report["outcome"] == "created"
    client = MlflowClient("databricks://ws1", registry_uri="databricks://ws1")
    src = client.get_model_version(ws1_model, ws1_report["dst_version"])
    copy_ = client.get_model_version(dst_model, result.report["dst_version"])
    assert copy_.source == src.source and copy_.run_id == src.run_id
    assert copy_.status == "READY" and copy_.current_stage == src.current_stage == "Staging"
    # Across workspaces a shallow copy could not reach the source's run: refused, nothing made.
    refused = copy(workspaces[2], copy_version_args(ws1_model, ws1_report["dst_version"], unique("x"),
                                                    "databricks://ws1", "databricks://ws2"))
    assert refused.code == 1 and "[bad_input]" in refused.stderr and "--dst-experiment-name" in refused.stderr


def test_workspace_to_workspace_version_with_permissions(ws1_version, workspaces):
    ws1, ws2, cfg_dir = workspaces
    _, ws1_model, ws1_report = ws1_version
    client = MlflowClient("databricks://ws1", registry_uri="databricks://ws1")
    client.update_registered_model(ws1_model, description="copied twice")
    # Grant bob on the workspace-1 model, through the permissions API.
    import requests
    model_id = requests.get(f"{ws1.host}/api/2.0/mlflow/databricks/registered-models/get",
                            params={"name": ws1_model}, headers={"Authorization": f"Bearer {ws1.token}"}
                            ).json()["registered_model_databricks"]["id"]
    granted = requests.patch(f"{ws1.host}/api/2.0/permissions/registered-models/{model_id}",
                             json={"access_control_list": [{"user_name": "bob@example.com",
                                                            "permission_level": "CAN_MANAGE_STAGING_VERSIONS"}]},
                             headers={"Authorization": f"Bearer {ws1.token}"})
    assert granted.status_code == 200, granted.text
    dst_model = unique("wine-prod")
    args = copy_version_args(ws1_model, ws1_report["dst_version"], dst_model, "databricks://ws1",
                             "databricks://ws2", "--dst-experiment-name", f"/Shared/{unique('deep')}",
                             "--copy-stages-and-aliases", "true", "--copy-permissions", "true")
    with signed_urls_only(ws2):
        result = copy(cfg_dir, args)
    assert result.code == 0, result
    assert result.report["permissions"] >= 1
    v = MlflowClient("databricks://ws2", registry_uri="databricks://ws2").get_model_version(
        dst_model, result.report["dst_version"])
    assert v.status == "READY" and v.current_stage == "Staging"
    assert MlflowClient("databricks://ws2", registry_uri="databricks://ws2").get_registered_model(
        dst_model).description == "copied twice"
    acl = requests.get(f"{ws2.host}/api/2.0/permissions/registered-models/"
                       + requests.get(f"{ws2.host}/api/2.0/mlflow/databricks/registered-models/get",
                                      params={"name": dst_model},
                                      headers={"Authorization": f"Bearer {ws2.token}"}
                                      ).json()["registered_model_databricks"]["id"],
                       headers={"Authorization": f"Bearer {ws2.token}"}).json()
    bob = [e for e in acl["access_control_list"] if e.get("user_name") == "bob@example.com"]
    assert bob and any(p["permission_level"] == "CAN_MANAGE_STAGING_VERSIONS" for p in bob[0]["all_permissions"])
    assert predictions("databricks://ws2", f"models:/{dst_model}/{result.report['dst_version']}") == \
        predictions("databricks://ws1", f"models:/{ws1_model}/{ws1_report['dst_version']}")
    again = copy(cfg_dir, args)
    assert again.code == 0 and again.report["outcome"] == "existing", again


def test_errors_name_what_is_wrong_and_write_nothing(src, oss_run, workspaces):
    ws1, ws2, cfg_dir = workspaces
    missing = copy(cfg_dir, copy_run_args(oss_run, f"{EXPERIMENT_ROOT}/x", src.uri, "databricks://nope"))
    assert missing.code == 1
    assert "[bad_input]" in missing.stderr and '"nope" not found in /cfg/.databrickscfg' in missing.stderr, missing
    relative = unique("relative")
    result = copy(cfg_dir, copy_run_args(oss_run, relative, src.uri, "databricks://ws1"))
    assert result.code == 1 and "[bad_input]" in result.stderr and "workspace paths" in result.stderr, result
    assert MlflowClient("databricks://ws1").get_experiment_by_name(relative) is None
    # A wrong OAuth secret: refused, named, never shown.
    wrong = {"DATABRICKS_HOST": ws2.host, "DATABRICKS_CLIENT_ID": ws2.client_id,
             "DATABRICKS_CLIENT_SECRET": "wrong-secret-value-123"}
    result = run_cli(copy_run_args(oss_run, "/Shared/x", src.uri, "databricks"), env=wrong)
    assert result.code == 1 and "[unauthorized]" in result.stderr, result
    assert "wrong-secret-value-123" not in result.stderr + result.stdout
    # Storage that keeps refusing (not an expiry): an unauthorized error naming the file.
    ws2.inject_storage_error(r"\.txt", status=403, code="AccessDenied", message="Access Denied", method="PUT",
                             times=10)
    exp = f"/Shared/{unique('denied')}"
    with signed_urls_only(ws2):
        result = copy(cfg_dir, copy_run_args(oss_run, exp, src.uri, "databricks://ws2"))
    assert result.code == 1 and "[unauthorized]" in result.stderr and ".txt" in result.stderr, result
    assert "re-run the same command" in result.stderr


def test_every_entry_point_copies_into_a_workspace(src, workspaces):
    """--invoke, the embedding host and the HTTP function, each with the workspace's variables."""
    from conftest import run_host
    from conftest import Served
    ws1 = workspaces[0]
    run_id = seed.seed_rich_run(src.uri, unique("entry-points"), metric_points=10, with_model=True)
    exps = [f"{EXPERIMENT_ROOT}/{unique(kind)}" for kind in ("invoke", "host", "http")]

    call = (f'copy-run({{run-id: "{run_id}", experiment-name: "{exps[0]}", '
            f'src-mlflow-uri: "{src.uri}", dst-mlflow-uri: "databricks"}})')
    invoked = run_cli([], env=ws1.pat_env(), wasmtime_args=["--invoke", call])
    assert invoked.code == 0 and invoked.stdout.startswith("ok(") and "outcome: created" in invoked.stdout, invoked

    hosted = run_host("copy-run", {"run_id": run_id, "experiment_name": exps[1], "src_mlflow_uri": src.uri,
                                   "dst_mlflow_uri": "databricks"}, env=ws1.pat_env())
    assert hosted.code == 0 and '"ok"' in hosted.stdout, hosted

    served = Served({"MLFLOW_COPY_ALLOW_UNAUTHENTICATED": "true", **ws1.pat_env()})
    try:
        import requests
        answer = requests.post(f"{served.url}/copy-run", timeout=600, json={
            "run_id": run_id, "experiment_name": exps[2], "src_mlflow_uri": src.uri, "dst_mlflow_uri": "databricks"})
        assert answer.status_code == 200, answer.text
        assert ws1.token not in served.logs()
    finally:
        served.stop()

    client = MlflowClient("databricks://ws1")
    for exp in exps:
        runs = client.search_runs([client.get_experiment_by_name(exp).experiment_id])
        assert len(runs) == 1
        assert_run_copied(src.uri, run_id, "databricks://ws1", runs[0].info.run_id, exp, databricks_dst=True)


def test_an_experiment_migrates_into_a_workspace_verified_and_found_copied(src, workspaces):
    from test_migrations import experiment_args, seed_experiment
    _, _, cfg_dir = workspaces
    name, dst_name = unique("dbx-bulk"), f"{EXPERIMENT_ROOT}/{unique('bulk')}"
    _, ids = seed_experiment(src.uri, name)
    result = copy(cfg_dir, experiment_args(name, dst_name, src.uri, "databricks://ws1", "--verify"))
    assert result.code == 0, result
    assert (result.report["created"], result.report["failed"]) == (4, 0), result.report
    copy_of = {i["src_id"]: i["dst_id"] for i in result.report["items"]}
    child = MlflowClient("databricks://ws1").get_run(copy_of[ids["child"]])
    assert child.data.tags["mlflow.parentRunId"] == copy_of[ids["root"]]
    again = copy(cfg_dir, experiment_args(name, dst_name, src.uri, "databricks://ws1"))
    assert [i["status"] for i in again.report["items"]] == ["existing"] * 4, again
