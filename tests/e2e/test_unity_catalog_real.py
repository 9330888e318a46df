"""Unity Catalog as real workspaces behave where that differs from the emulator's defaults
(shared/reference/databricks-real-behaviour.md items 7, 8 and 9), through the built component.

Both metastores run with the emulator's switches on (tests/databricks_emulator/README.md):
short error codes (`NOT_FOUND`, `ALREADY_EXISTS`), dependencies answered on get, and a
`model_id` unknown in the workspace refused at create, so that a client sending a foreign one
fails. `other-env` is switched to an R2 metastore for one test."""
import hashlib
import os

import pytest
import requests

import seed
from compare import WORKSPACE_ENV
from conftest import copy_version_args, run_cli, unique
from databricks_profiles import pat_profile, profiles_file
from test_unity_catalog import CATALOG, download, predictions, uc_client

import sys
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from databricks_emulator import Emulator  # noqa: E402

REAL, OTHER = "databricks-uc://real-env", "databricks-uc://other-env"
PROBE = "/api/2.0/mlflow/unity-catalog/registered-models:is-databricks-sdk-models-artifact-repository-enabled"
SWITCHES = dict(uc_short_error_codes=True, uc_foreign_model_id="refuse", uc_return_dependencies=True)
DEPS = [{"type": "DATABRICKS_TABLE", "name": "main.default.features"},
        {"type": "DATABRICKS_MODEL_ENDPOINT", "name": "embeddings"}]


@pytest.fixture(scope="module")
def stores():
    real = Emulator(name="real-env", **SWITCHES)
    other = Emulator(name="other-env", **SWITCHES)
    Emulator.start_all(real, other)
    for uri, emu in ((REAL, real), (OTHER, other)):
        env = {**emu.pat_env(), "DATABRICKS_AUTH_TYPE": "pat", "MLFLOW_S3_ENDPOINT_URL": emu.s3_endpoint}
        WORKSPACE_ENV[uri] = env
        WORKSPACE_ENV[uri.replace("databricks-uc", "databricks")] = env
    try:
        with profiles_file({"real-env": pat_profile(real), "other-env": pat_profile(other)}) as cfg_dir:
            yield real, other, cfg_dir
    finally:
        real.stop()
        other.stop()


def copy(stores, args, env=None):
    real, other, cfg_dir = stores
    full_env = {"DATABRICKS_CONFIG_FILE": "/cfg/.databrickscfg", **(env or {})}
    for flag, side in (("--src-registry-uri", "SRC"), ("--dst-registry-uri", "DST")):
        uri = args[args.index(flag) + 1] if flag in args else ""
        emu = real if "real-env" in uri else other if "other-env" in uri else None
        if emu:
            full_env[f"MLFLOW_{side}_S3_ENDPOINT_URL"] = emu.s3_endpoint
    return run_cli(args, env=full_env, wasmtime_args=("--dir", f"{cfg_dir}::/cfg"))


def created(emu, model):
    """The model-versions/create bodies the emulator received for a model."""
    return [b for b in emu.uc.create_requests if (b.get("name") or "").lower() == model.lower()]


def stored(emu, model, version):
    return emu.uc.versions[model.lower()][int(version)]


@pytest.fixture(scope="module")
def oss_version(src):
    name = unique("wine")
    seed.seed_registered_version(src.uri, name)
    return name


@pytest.fixture(scope="module")
def real_copy(src, oss_version, stores):
    """OSS -> real-env, deep, into a model that does not exist yet (UC answers NOT_FOUND)."""
    real, _, _ = stores
    dst_model = f"{CATALOG}.{unique('wine_real')}"
    args = copy_version_args(oss_version, "1", dst_model, src.uri, REAL,
                             "--dst-experiment-name", f"/Users/alice@example.com/{unique('r')}")
    result = copy(stores, args)
    assert result.code == 0, result
    return dst_model.lower(), result, args


def test_not_found_means_missing_and_the_copy_creates_the_model(src, oss_version, stores, real_copy):
    real, _, _ = stores
    dst_model, result, args = real_copy
    # The switch is on: a missing model is NOT_FOUND, not RESOURCE_DOES_NOT_EXIST.
    missing = requests.get(f"{real.host}/api/2.0/mlflow/unity-catalog/registered-models/get",
                           params={"name": f"{CATALOG}.{unique('absent')}"},
                           headers={"Authorization": f"Bearer {real.token}"})
    assert missing.status_code == 404 and missing.json()["error_code"] == "NOT_FOUND", missing.text
    gets = [r for r in real.requests if r["path"].endswith("/unity-catalog/registered-models/get")]
    assert any(r["status"] == 404 for r in gets), gets
    assert result.report["registered_model_created"] and result.report["outcome"] == "created"
    version = uc_client(REAL).get_model_version(dst_model, result.report["dst_version"])
    assert version.status == "READY"
    assert predictions(REAL, f"models:/{dst_model}/{version.version}") == \
        predictions(src.uri, f"models:/{oss_version}/1")
    # The same command again finds the version (NOT_FOUND never mistaken for an error).
    again = copy(stores, args)
    assert again.code == 0 and again.report["outcome"] == "existing", again


def test_already_exists_means_someone_else_created_the_model(src, oss_version, stores, real_copy):
    """The model looks missing (one injected NOT_FOUND) but exists: create answers ALREADY_EXISTS
    (409), which the copy takes as "created meanwhile" and goes on."""
    real, _, _ = stores
    dst_model, first, _ = real_copy
    real.inject_api_error(r"/unity-catalog/registered-models/get$", status=404, error_code="NOT_FOUND",
                          message="Registered model does not exist.", times=1)
    result = copy(stores, copy_version_args(oss_version, "1", dst_model, src.uri, REAL))
    assert result.code == 0, result
    creates = [r for r in real.requests if r["path"].endswith("/registered-models/create")]
    assert creates[-1]["status"] == 409, creates
    assert result.report["dst_version"] != first.report["dst_version"]
    assert uc_client(REAL).get_model_version(dst_model, result.report["dst_version"]).status == "READY"


def test_create_sends_the_run_workspace_and_a_local_model_id(stores, real_copy):
    real, _, _ = stores
    dst_model, result, args = real_copy
    [body] = created(real, dst_model)[:1]
    # GetRun in the destination workspace answered x-databricks-org-id: the run is there.
    assert body["run_tracking_server_id"] == real.workspace_id, body
    assert body["run_id"] == result.report["dst_run_id"]
    # The model id is the destination's copy of the logged model (the emulator refuses others).
    real.ws.get_logged_model(body["model_id"])
    assert stored(real, dst_model, result.report["dst_version"])["run_tracking_server_id"] == real.workspace_id


def test_uc_to_uc_copies_dependencies_and_never_sends_a_foreign_model_id(stores, real_copy):
    real, other, _ = stores
    src_model, first, _ = real_copy
    src_version = first.report["dst_version"]
    # A source version with dependencies (as a model logged with Databricks resources has).
    source = stored(real, src_model, src_version)
    source["feature_deps"], source["model_version_dependencies"] = "main.default.features", DEPS
    foreign_id = source["model_id"]
    assert foreign_id

    deep_model = f"{CATALOG}.{unique('other_deep')}"
    deep = copy(stores, copy_version_args(src_model, src_version, deep_model, REAL, OTHER,
                                          "--dst-experiment-name", f"/Shared/{unique('deep')}"))
    assert deep.code == 0, deep
    [body] = created(other, deep_model)
    assert body["feature_deps"] == "main.default.features" and body["model_version_dependencies"] == DEPS
    assert body["run_tracking_server_id"] == other.workspace_id, body
    assert body["model_id"] != foreign_id
    other.ws.get_logged_model(body["model_id"])

    shallow_model = f"{CATALOG}.{unique('other_shallow')}"
    shallow = copy(stores, copy_version_args(src_model, src_version, shallow_model, REAL, OTHER))
    assert shallow.code == 0, shallow
    [body] = created(other, shallow_model)
    # The source's logged model is not in other-env: its id is dropped (MLflow's cross-workspace
    # rule), and with it the dependencies; the run is another workspace's, so no server id.
    assert "model_id" not in body and "model_version_dependencies" not in body, body
    assert "run_tracking_server_id" not in body, body
    assert not any(b.get("model_id") == foreign_id for b in other.uc.create_requests)
    expected = predictions(REAL, f"models:/{src_model}/{src_version}")
    for model, result in ((deep_model, deep), (shallow_model, shallow)):
        version = uc_client(OTHER).get_model_version(model.lower(), result.report["dst_version"])
        assert version.status == "READY"
        assert predictions(OTHER, f"models:/{model.lower()}/{version.version}") == expected


def digests(folder):
    """{relative path: sha256} of a downloaded model (without the `registered_model_meta` MLflow's
    download adds)."""
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            if f == "registered_model_meta":
                continue
            path = os.path.join(root, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def r2_digests(emu, prefix):
    """{relative path: sha256} of a version's objects, read from moto directly."""
    objects, _ = emu.storage.list(emu.uc_bucket, prefix + "/")
    return {o["Key"][len(prefix) + 1:]: hashlib.sha256(emu.storage.get(emu.uc_bucket, o["Key"])["Body"].read())
            .hexdigest() for o in objects}


def test_a_version_on_r2_is_written_and_read_back_equal(src, oss_version, stores, real_copy):
    real, other, _ = stores
    src_model, first, _ = real_copy
    other.uc_r2 = True
    try:
        # Deep, so that the version's run is in other-env (a shallow UC -> UC copy reads the
        # source version's run in the source workspace).
        r2_model = f"{CATALOG}.{unique('on_r2')}"
        to_r2 = copy(stores, copy_version_args(src_model, first.report["dst_version"], r2_model, REAL, OTHER,
                                               "--dst-experiment-name", f"/Shared/{unique('r2')}"))
        assert to_r2.code == 0, to_r2
        r2_version = stored(other, r2_model, to_r2.report["dst_version"])
        assert r2_version["storage_location"].startswith(f"r2://{other.uc_bucket}@"), r2_version
        assert r2_version["status"] == "READY"
        prefix = f"/{other.uc_bucket}/{r2_version['prefix']}/"
        puts = [r for r in other.storage_requests() if r["method"] == "PUT" and r["path"].startswith(prefix)]
        assert puts and all(r["auth"] == "sigv4" and r["status"] == 200 for r in puts), puts
        # Read back from R2 by the component (R2 -> real-env's S3).
        back = f"{CATALOG}.{unique('from_r2')}"
        to_real = copy(stores, copy_version_args(r2_model, to_r2.report["dst_version"], back, OTHER, REAL))
        assert to_real.code == 0, to_real
        gets = [r for r in other.storage_requests() if r["method"] == "GET" and r["path"].startswith(prefix)]
        assert gets and all(r["auth"] == "sigv4" for r in gets), gets
    finally:
        other.uc_r2 = False
    on_r2 = r2_digests(other, r2_version["prefix"])
    assert "MLmodel" in on_r2
    assert digests(download(REAL, f"models:/{back.lower()}/{to_real.report['dst_version']}")) == on_r2
    # Everything but the MLmodel (whose ids name the copied run) is the source's.
    source_files = digests(download(REAL, f"models:/{src_model}/{first.report['dst_version']}"))
    assert {k: v for k, v in on_r2.items() if k != "MLmodel"} == \
        {k: v for k, v in source_files.items() if k != "MLmodel"}


def test_files_api_variable_false_skips_the_probe(src, oss_version, stores):
    real, _, _ = stores
    real.uc_sdk_models_repo = True  # asked, the workspace would say "use the Files API"
    try:
        start = len(real.requests)
        dst_model = f"{CATALOG}.{unique('no_probe')}"
        result = copy(stores, copy_version_args(oss_version, "1", dst_model, src.uri, REAL),
                      env={"MLFLOW_USE_DATABRICKS_SDK_MODEL_ARTIFACTS_REPO_FOR_UC": "false"})
        assert result.code == 0, result
        during = real.requests[start:]
        assert not any(r["path"] == PROBE for r in during), [r["path"] for r in during]
        assert not any(r["path"].startswith("/api/2.0/fs/files/Models/") for r in during)
        assert any(r["path"].endswith("/generate-temporary-credentials") for r in during)
        # Without the variable the workspace is asked (the assertion above can fail).
        probed = copy(stores, copy_version_args(oss_version, "1", f"{CATALOG}.{unique('probe')}", src.uri, REAL))
        assert probed.code == 0, probed
        assert any(r["path"] == PROBE for r in real.requests[start + len(during):])
    finally:
        real.uc_sdk_models_repo = False
