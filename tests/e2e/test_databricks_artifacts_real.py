"""Run and logged-model artifacts as real workspaces serve them (issue 17, items 3, 4 and 7),
through the built component, against the Databricks emulator with its switches for behaviours
taken from MLflow's and databricks-sdk's client code (tests/databricks_emulator/README.md, "Real
behaviours modelled"):

- a Files API that lists nothing (404) and refuses file reads and writes (403): the copy falls
  back to the signed-URL routes per operation, as MLflow's tracking artifact repository does;
- logged-model credentials without `credential_info.path`: matched by position;
- a file above the Files API's single-PUT limit (lowered to a few MiB): its multipart upload;
- a source run whose artifact root is its experiment's own `s3://` location: refused up front.

The switches are on while the component runs and off while MLflow's own client checks the
copy (a Files API listing that answers 404 reads as empty to MLflow: it would compare nothing)."""
import contextlib
import os
import sys

import pytest
import requests
from mlflow import MlflowClient

import seed
from compare import assert_run_copied
from conftest import copy_run_args, unique
from databricks_profiles import EXPERIMENT_ROOT, copy, workspace_profiles

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from databricks_emulator import Emulator  # noqa: E402

MiB = 1 << 20
WSI = "/api/2.0/fs/files/WorkspaceInternal/Mlflow/Artifacts/"


@pytest.fixture(scope="module")
def real():
    emu = Emulator(name="realws")
    emu.start()
    try:
        with workspace_profiles(emu) as cfg_dir:
            yield emu, cfg_dir
    finally:
        emu.stop()


@pytest.fixture(scope="module")
def small_run(src):
    """A run with a handful of small files and an MLflow 3 logged model (its MLmodel is read
    and written whole, outside the streamed transfer)."""
    return seed.seed_rich_run(src.uri, unique("real-source"), metric_points=10, with_model=True)


@contextlib.contextmanager
def switched(emu, **switches):
    """The emulator's switches on for the block, restored after it."""
    saved = {name: getattr(emu, name) for name in switches}
    for name, value in switches.items():
        setattr(emu, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(emu, name, value)


def traffic(emu, action):
    """Runs `action()`; its result, and the API and storage requests the emulator saw meanwhile."""
    api_before, storage_before = len(emu.requests), len(emu.storage_requests())
    result = action()
    return result, emu.requests[api_before:], emu.storage_requests()[storage_before:]


REFUSING = {"files_api_list_404": True, "files_api_files_403": True}


def test_oss_to_workspace_falls_back_to_signed_urls_when_the_files_api_refuses(src, small_run, real):
    emu, cfg_dir = real
    exp = f"{EXPERIMENT_ROOT}/{unique('refusing')}"
    with switched(emu, **REFUSING):
        result, api, storage = traffic(emu, lambda: copy(
            cfg_dir, copy_run_args(small_run, exp, src.uri, f"databricks://{emu.name}")))
    assert result.code == 0, result
    refused = [r for r in api if r["path"].startswith(WSI) and r["method"] == "PUT"]
    assert refused and all(r["status"] == 403 for r in refused), "the Files API was tried and refused"
    paths = [r["path"] for r in api]
    assert "/api/2.0/mlflow/artifacts/credentials-for-write" in paths
    assert any(p.endswith("/artifacts/credentials-for-upload") for p in paths), "logged model: signed URLs"
    puts = [r for r in storage if r["method"] == "PUT" and r["status"] == 200]
    assert any(r["path"].endswith("/README.txt") for r in puts), "run files went to storage"
    assert any(r["path"].endswith("/MLmodel") for r in puts), "MLmodel went to storage"
    assert not any(r["has_bearer"] for r in storage)
    assert_run_copied(src.uri, small_run, f"databricks://{emu.name}", result.report["dst_run_id"], exp,
                      databricks_dst=True)


def test_workspace_to_oss_falls_back_to_signed_urls_when_the_files_api_refuses(src, dst, small_run, real):
    emu, cfg_dir = real
    ws_exp = f"{EXPERIMENT_ROOT}/{unique('refusing-src')}"
    seeded = copy(cfg_dir, copy_run_args(small_run, ws_exp, src.uri, f"databricks://{emu.name}"))
    assert seeded.code == 0, seeded
    ws_run = seeded.report["dst_run_id"]
    exp = unique("from-refusing")
    with switched(emu, **REFUSING):
        result, api, storage = traffic(emu, lambda: copy(
            cfg_dir, copy_run_args(ws_run, exp, f"databricks://{emu.name}", dst.uri)))
    assert result.code == 0, result
    refused = [r for r in api if r["path"].startswith(WSI) and r["method"] == "GET"]
    assert refused and all(r["status"] == 403 for r in refused), "the Files API was tried and refused"
    paths = [r["path"] for r in api]
    assert "/api/2.0/mlflow/artifacts/credentials-for-read" in paths
    assert any(p.endswith("/artifacts/credentials-for-download") for p in paths)
    gets = [r for r in storage if r["method"] == "GET" and r["status"] in (200, 206)]
    assert any(r["path"].endswith("/README.txt") for r in gets) and any(r["path"].endswith("/MLmodel") for r in gets)
    assert_run_copied(f"databricks://{emu.name}", ws_run, dst.uri, result.report["dst_run_id"], exp,
                      src_server=emu.host)


def test_logged_model_credentials_without_path_are_matched_by_position(src, dst, small_run, real):
    emu, cfg_dir = real
    ws_exp = f"{EXPERIMENT_ROOT}/{unique('no-path')}"
    with switched(emu, files_api=False, model_credentials_without_path=True):
        into, api_in, _ = traffic(emu, lambda: copy(
            cfg_dir, copy_run_args(small_run, ws_exp, src.uri, f"databricks://{emu.name}")))
        assert into.code == 0, into
        ws_run = into.report["dst_run_id"]
        back_exp = unique("no-path-back")
        back, api_out, _ = traffic(emu, lambda: copy(
            cfg_dir, copy_run_args(ws_run, back_exp, f"databricks://{emu.name}", dst.uri)))
    assert back.code == 0, back
    assert any(r["path"].endswith("/credentials-for-upload") for r in api_in)
    assert any(r["path"].endswith("/credentials-for-download") for r in api_out)
    # The emulator did leave the path out (the switch is what is under test).
    model_id = MlflowClient(f"databricks://{emu.name}").search_logged_models(
        experiment_ids=[MlflowClient(f"databricks://{emu.name}").get_run(ws_run).info.experiment_id])[0].model_id
    with switched(emu, model_credentials_without_path=True):
        answer = requests.post(f"{emu.host}/api/2.0/mlflow/logged-models/{model_id}/artifacts/credentials-for-download",
                               json={"paths": ["MLmodel"]}, headers={"Authorization": f"Bearer {emu.token}"},
                               timeout=30).json()
    assert "path" not in answer["credentials"][0]["credential_info"], answer
    assert_run_copied(src.uri, small_run, f"databricks://{emu.name}", ws_run, ws_exp, databricks_dst=True)
    assert_run_copied(f"databricks://{emu.name}", ws_run, dst.uri, back.report["dst_run_id"], back_exp,
                      src_server=emu.host)


BIG = "big/blob.bin"
# The Files API takes 6 MiB in one PUT here; the 11 MiB file goes in parts of 5, 5 and 1 MiB.
FILES_PARTS = {"MLFLOW_COPY_FILES_API_MAX_PUT": str(6 * MiB), "MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE": str(5 * MiB)}


def test_a_file_above_the_files_api_single_put_limit_goes_in_parts(src, real):
    emu, cfg_dir = real
    run_id = seed.seed_rich_run(src.uri, unique("files-parts"), big_bytes=11 * MiB, metric_points=10,
                                with_model=False)
    exp = f"{EXPERIMENT_ROOT}/{unique('files-parts')}"
    log_before = len(emu.ws.fs_multipart_log)
    with switched(emu, files_api_max_put=6 * MiB):
        result, api, storage = traffic(emu, lambda: copy(
            cfg_dir, copy_run_args(run_id, exp, src.uri, f"databricks://{emu.name}"), env=FILES_PARTS))
    assert result.code == 0, result
    steps = [step for step, path in emu.ws.fs_multipart_log[log_before:] if path.endswith("/" + BIG)]
    assert steps[0] == "initiate" and steps[-1] == "complete" and "part-urls" in steps, steps
    parts = [r for r in storage if r["method"] == "PUT" and r["path"].endswith(BIG)]
    assert len(parts) == 3 and all({"partNumber", "uploadId"} <= set(r["query"]) for r in parts), parts
    assert all(r["status"] == 200 for r in parts)
    whole = [r for r in api if r["method"] == "PUT" and r["path"].startswith(WSI)]
    assert whole and not any(r["path"].endswith(BIG) for r in whole), "small files in one Files API PUT"
    assert all(r["status"] == 204 for r in whole)
    assert not any(r["has_bearer"] for r in storage)
    # Equal bytes: the comparison hashes every file on both sides.
    assert_run_copied(src.uri, run_id, f"databricks://{emu.name}", result.report["dst_run_id"], exp,
                      databricks_dst=True)


def test_a_source_run_outside_the_managed_artifact_store_is_refused_before_any_write(dst, real):
    emu, cfg_dir = real
    auth = {"Authorization": f"Bearer {emu.token}"}
    location = f"s3://customer-bucket/{unique('own-location')}"

    def post(route, body):
        answer = requests.post(f"{emu.host}/api/2.0/mlflow/{route}", json=body, headers=auth, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()

    with switched(emu, external_artifact_locations=True):
        exp_id = post("experiments/create", {"name": f"{EXPERIMENT_ROOT}/{unique('s3-exp')}",
                                             "artifact_location": location})["experiment_id"]
    run = post("runs/create", {"experiment_id": exp_id, "start_time": 1_600_000_000_000})["run"]
    assert run["info"]["artifact_uri"].startswith(location), run
    post("runs/log-batch", {"run_id": run["info"]["run_id"], "params": [{"key": "p", "value": "1"}]})
    exp = unique("from-s3-root")
    result = copy(cfg_dir, copy_run_args(run["info"]["run_id"], exp, f"databricks://{emu.name}", dst.uri))
    assert result.code == 1 and "[bad_input]" in result.stderr, result
    assert run["info"]["artifact_uri"] in result.stderr and "managed artifact store" in result.stderr, result
    assert MlflowClient(dst.uri).get_experiment_by_name(exp) is None, "nothing written at the destination"
