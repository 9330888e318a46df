"""Unity Catalog as registry source and destination, through the built component, against the
Databricks emulator (tests/databricks_emulator: UC registry in memory, version files in moto's S3
server behind STS temporary credentials checked with SigV4 and session tokens, presigned URLs
for default storage, the Files API at /Models). Copies are read back, loaded and run with MLflow's
own client.

Metastore `test-env` (personal access token) stores version files on S3 with temporary
credentials; `prod-env` (OAuth M2M) switches between Databricks default storage and the Files
API per test. Each has its own S3 server: the component gets one endpoint per side
(`MLFLOW_SRC_S3_ENDPOINT_URL` / `MLFLOW_DST_S3_ENDPOINT_URL`), MLflow's client the one of the
metastore it reads."""
import contextlib
import os
import sys
import tempfile
import urllib.parse

import mlflow
import numpy as np
import pytest
import requests
from mlflow import MlflowClient

import seed
from compare import WORKSPACE_ENV, workspace_env
from conftest import copy_version_args, run_cli, unique
from databricks_profiles import oauth_profile, pat_profile, profiles_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from databricks_emulator import Emulator  # noqa: E402

X = np.array([[0.0, 1.0], [1.0, 0.0], [0.3, 0.3], [0.9, 0.2]])
TEST, PROD = "databricks-uc://test-env", "databricks-uc://prod-env"
CATALOG = "main.default"


@pytest.fixture(scope="module")
def metastores():
    test = Emulator(name="test-env", like_production=True, extra_users=["bob@example.com"], temp_credentials_ttl=900)
    prod = Emulator(name="prod-env", like_production=True, extra_users=["bob@example.com"],
                    uc_storage_mode="DEFAULT_STORAGE")
    Emulator.start_all(test, prod)
    for uri, emu in ((TEST, test), (PROD, prod)):
        env = {**emu.pat_env(), "DATABRICKS_AUTH_TYPE": "pat", "MLFLOW_S3_ENDPOINT_URL": emu.s3_endpoint}
        WORKSPACE_ENV[uri] = env
        WORKSPACE_ENV[uri.replace("databricks-uc", "databricks")] = env
    try:
        with profiles_file({"test-env": pat_profile(test), "prod-env": oauth_profile(prod)}) as cfg_dir:
            yield test, prod, cfg_dir
    finally:
        test.stop()
        prod.stop()


def copy(metastores, args, env=None, wasmtime_args=()):
    test, prod, cfg_dir = metastores
    full_env = {"DATABRICKS_CONFIG_FILE": "/cfg/.databrickscfg", **endpoints(args, test, prod), **(env or {})}
    return run_cli(args, env=full_env, wasmtime_args=("--dir", f"{cfg_dir}::/cfg", *wasmtime_args))


def endpoints(args, test, prod):
    """The S3 endpoint of each side's metastore (test-only: real S3 needs none)."""
    env = {}
    for flag, side in (("--src-registry-uri", "SRC"), ("--dst-registry-uri", "DST")):
        if flag in args:
            uri = args[args.index(flag) + 1]
            emu = test if "test-env" in uri else prod if "prod-env" in uri else None
            if emu:
                env[f"MLFLOW_{side}_S3_ENDPOINT_URL"] = emu.s3_endpoint
    return env


def uc_client(uri):
    return MlflowClient(tracking_uri=uri.replace("databricks-uc", "databricks"), registry_uri=uri)


def predictions(registry_uri, model_uri):
    """Loads a model with MLflow's client and predicts X."""
    tracking = registry_uri.replace("databricks-uc", "databricks")
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry_uri)
    with workspace_env(registry_uri):
        return list(mlflow.pyfunc.load_model(model_uri).predict(X))


def download(registry_uri, model_uri):
    """Downloads a model's files with MLflow's client; the local folder."""
    mlflow.set_tracking_uri(registry_uri.replace("databricks-uc", "databricks"))
    mlflow.set_registry_uri(registry_uri)
    with workspace_env(registry_uri):
        return mlflow.artifacts.download_artifacts(model_uri)


@contextlib.contextmanager
def storage_mode(emu, mode=None, files_api=None):
    old = (emu.uc_storage_mode, emu.uc_sdk_models_repo)
    emu.uc_storage_mode = mode or old[0]
    emu.uc_sdk_models_repo = old[1] if files_api is None else files_api
    try:
        yield
    finally:
        emu.uc_storage_mode, emu.uc_sdk_models_repo = old


def clear_storage_faults(emu):
    for storage in (emu.storage, emu.ws_storage):
        storage.faults.clear()


@pytest.fixture(scope="module")
def oss_version(src):
    name = unique("wine")
    seed.seed_registered_version(src.uri, name)
    return name


@pytest.fixture(scope="module")
def test_env_copy(src, oss_version, metastores):
    """OSS registry -> UC test-env, deep, with aliases, a stage and lineage tags."""
    dst_model = f"{CATALOG}.{unique('wine_uc')}"
    args = copy_version_args(oss_version, "1", dst_model, src.uri, TEST,
                             "--dst-experiment-name", f"/Users/alice@example.com/{unique('uc')}",
                             "--copy-stages-and-aliases", "true", "--copy-lineage-tags", "true")
    result = copy(metastores, args)
    assert result.code == 0, result.stderr
    return dst_model.lower(), result, args


def test_oss_to_uc_is_ready_loads_and_predicts(src, oss_version, test_env_copy, metastores):
    test, _, _ = metastores
    dst_model, result, args = test_env_copy
    report = result.report
    assert report["outcome"] == "created" and report["deep"] and report["registered_model_created"]
    client = uc_client(TEST)
    version = client.get_model_version(dst_model, report["dst_version"])
    assert version.status == "READY"
    # The stage is skipped (UC has none), with a warning; the alias moved to the copy.
    assert "Unity Catalog" in result.stderr and "Staging" in result.stderr
    assert report["aliases"] == ["champion"]
    assert client.get_model_version_by_alias(dst_model, "champion").version == report["dst_version"]
    # Tags and lineage tags, under keys UC accepts.
    assert version.tags["validated"] == "true" and version.tags["dataset_version"] == "2026-11"
    assert version.tags["mlflow_exim_src_version_name"] == oss_version
    assert version.description == "Trained on the **train** split."
    model = client.get_registered_model(dst_model)
    assert model.description == "Predicts the class of a point." and model.tags["owner"] == "ml-platform"
    # The version's source is the copied logged model, in the workspace of the profile.
    assert version.source.startswith("dbfs:/databricks/mlflow-tracking/"), version.source
    # Files went to S3 signed with the temporary credentials (SigV4 + session token), no token.
    storage = test.storage_requests()
    uc_puts = [r for r in storage if r["method"] == "PUT" and r["path"].startswith(f"/{test.uc_bucket}/")]
    assert uc_puts and all(r["auth"] == "sigv4" for r in uc_puts), uc_puts
    assert not any(r["has_bearer"] for r in storage)
    expected = predictions(src.uri, f"models:/{oss_version}/1")
    assert predictions(TEST, f"models:/{dst_model}/{report['dst_version']}") == expected
    assert predictions(TEST, f"models:/{dst_model}@champion") == expected
    # The MLmodel in UC names the copied run, not the source's.
    local = download(TEST, f"models:/{dst_model}/{report['dst_version']}")
    mlmodel = open(os.path.join(local, "MLmodel")).read()
    assert report["dst_run_id"] in mlmodel
    # The same command again: the same version, nothing new.
    again = copy(metastores, args)
    assert again.code == 0 and again.report["outcome"] == "existing", again
    assert again.report["dst_version"] == report["dst_version"]
    assert len(client.search_model_versions(f"name='{dst_model}'")) == 1


def test_uc_to_uc_in_another_metastore_deep_with_grants_and_shallow(test_env_copy, metastores):
    test, prod, _ = metastores
    src_model, first, _ = test_env_copy
    version = first.report["dst_version"]
    granted = requests.patch(f"{test.host}/api/2.1/unity-catalog/permissions/function/{src_model}",
                             json={"changes": [{"principal": "bob@example.com", "add": ["EXECUTE", "APPLY_TAG"]}]},
                             headers={"Authorization": f"Bearer {test.token}"})
    assert granted.status_code == 200, granted.text
    deep_model = f"{CATALOG}.{unique('prod_deep')}"
    deep = copy(metastores, copy_version_args(src_model, version, deep_model, TEST, PROD,
                                              "--dst-experiment-name", f"/Shared/{unique('uc-deep')}",
                                              "--copy-stages-and-aliases", "true", "--copy-permissions", "true"))
    assert deep.code == 0, deep
    assert deep.report["permissions"] == 2
    grants = requests.get(f"{prod.host}/api/2.1/unity-catalog/permissions/function/{deep_model.lower()}",
                          headers={"Authorization": f"Bearer {prod.token}"}).json()["privilege_assignments"]
    assert {"principal": "bob@example.com", "privileges": ["APPLY_TAG", "EXECUTE"]} in grants, grants
    # Default storage: presigned URLs from fs/create-upload-url, no token to storage.
    assert any(r["path"] == "/api/2.0/fs/create-upload-url" for r in prod.requests)
    assert not any(r["has_bearer"] for r in prod.storage_requests())
    shallow_model = f"{CATALOG}.{unique('prod_shallow')}"
    shallow = copy(metastores, copy_version_args(src_model, version, shallow_model, TEST, PROD))
    assert shallow.code == 0, shallow
    assert not shallow.report["deep"]
    src_version = uc_client(TEST).get_model_version(src_model, version)
    copied = uc_client(PROD).get_model_version(shallow_model.lower(), shallow.report["dst_version"])
    assert copied.status == "READY" and copied.source == src_version.source
    expected = predictions(TEST, f"models:/{src_model}/{version}")
    for model, result in ((deep_model, deep), (shallow_model, shallow)):
        assert predictions(PROD, f"models:/{model.lower()}/{result.report['dst_version']}") == expected
    assert predictions(PROD, f"models:/{deep_model.lower()}@champion") == expected


def test_uc_to_uc_in_the_same_metastore_through_the_files_api(test_env_copy, metastores):
    test, _, _ = metastores
    src_model, first, _ = test_env_copy
    dst_model = f"{CATALOG}.{unique('same_metastore')}"
    with storage_mode(test, files_api=True):
        result = copy(metastores, copy_version_args(src_model, first.report["dst_version"], dst_model, TEST, TEST,
                                                    "--dst-experiment-name", f"/Shared/{unique('same')}",
                                                    "--copy-stages-and-aliases", "true"))
        assert result.code == 0, result
        puts = [r["path"] for r in test.requests if r["method"] == "PUT"]
        assert any(p.startswith(f"/api/2.0/fs/files/Models/main/default/{dst_model.split('.')[-1].lower()}/")
                   for p in puts), puts
        assert predictions(TEST, f"models:/{dst_model.lower()}/{result.report['dst_version']}") == \
            predictions(TEST, f"models:/{src_model}/{first.report['dst_version']}")


def test_workspace_registry_to_uc_and_back(src, metastores):
    """WS -> UC, then the way back the Python tool lacks: UC -> WS and UC -> OSS."""
    test, prod, _ = metastores
    # A workspace-registry version in test-env (registered there by this tool from OSS).
    name = unique("iris")
    seed.seed_registered_version(src.uri, name)
    ws_model = unique("iris-ws")
    to_ws = copy(metastores, copy_version_args(name, "1", ws_model, src.uri, "databricks://test-env",
                                               "--dst-experiment-name", f"/Shared/{unique('ws')}"))
    assert to_ws.code == 0, to_ws
    uc_model = f"{CATALOG}.{unique('iris_uc')}"
    to_uc = copy(metastores, copy_version_args(ws_model, to_ws.report["dst_version"], uc_model,
                                               "databricks://test-env", PROD,
                                               "--dst-experiment-name", f"/Shared/{unique('ws-uc')}"))
    assert to_uc.code == 0, to_uc
    back_ws = unique("iris-back")
    to_ws_again = copy(metastores, copy_version_args(uc_model, to_uc.report["dst_version"], back_ws, PROD,
                                                     "databricks://test-env",
                                                     "--dst-experiment-name", f"/Shared/{unique('uc-ws')}"))
    assert to_ws_again.code == 0, to_ws_again
    back_oss = unique("iris-oss")
    to_oss = copy(metastores, copy_version_args(uc_model, to_uc.report["dst_version"], back_oss, PROD, src.uri,
                                                "--dst-experiment-name", unique("uc-oss")))
    assert to_oss.code == 0, to_oss
    expected = predictions(src.uri, f"models:/{name}/1")
    assert predictions(PROD, f"models:/{uc_model.lower()}/{to_uc.report['dst_version']}") == expected
    assert predictions("databricks://test-env", f"models:/{back_ws}/{to_ws_again.report['dst_version']}") == expected
    assert predictions(src.uri, f"models:/{back_oss}/{to_oss.report['dst_version']}") == expected


def test_bad_input_writes_nothing(src, metastores):
    test, _, _ = metastores
    unsigned = unique("unsigned")
    seed.seed_small_version(src.uri, unsigned)  # its MLmodel has no signature
    dst_model = f"{CATALOG}.{unique('unsigned_uc')}"
    result = copy(metastores, copy_version_args(unsigned, "1", dst_model, src.uri, TEST))
    assert result.code == 1 and "[bad_input]" in result.stderr, result
    assert "signature" in result.stderr and "MLFLOW_SKIP_SIGNATURE_CHECK_FOR_UC_REGISTRY_MIGRATION" in result.stderr
    assert not any(r["path"].endswith("/registered-models/create") for r in test.requests
                   if dst_model.split(".")[-1] in str(r)), "nothing was created"
    with pytest.raises(Exception):
        uc_client(TEST).get_registered_model(dst_model.lower())
    # The documented opt-out copies it as it is.
    skipped = copy(metastores, copy_version_args(unsigned, "1", dst_model, src.uri, TEST),
                   env={"MLFLOW_SKIP_SIGNATURE_CHECK_FOR_UC_REGISTRY_MIGRATION": "true"})
    assert skipped.code == 0, skipped
    assert uc_client(TEST).get_model_version(dst_model.lower(), skipped.report["dst_version"]).status == "READY"
    # Two-level names are refused before anything is read or written.
    bad = copy(metastores, copy_version_args(unsigned, "1", "default.model", src.uri, TEST))
    assert bad.code == 1 and "[bad_input]" in bad.stderr and "<catalog>.<schema>.<model>" in bad.stderr, bad


def test_a_failed_upload_leaves_nothing_ready_and_the_same_command_finishes(src, oss_version, metastores):
    test, _, _ = metastores
    dst_model = f"{CATALOG}.{unique('interrupted')}"
    args = copy_version_args(oss_version, "1", dst_model, src.uri, TEST)
    # Storage keeps failing for one model file: the copy fails, the version stays pending.
    test.inject_storage_error(r"model\.(pkl|skops)$", status=503, code="SlowDown", method="PUT", times=50)
    failed = copy(metastores, args, env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"})
    clear_storage_faults(test)
    assert failed.code == 1 and "re-run the same command" in failed.stderr, failed
    client = uc_client(TEST)
    [pending] = client.search_model_versions(f"name='{dst_model.lower()}'")
    assert pending.status == "PENDING_REGISTRATION"
    # Credentials that expired before the next batch are fetched again (S3 answers ExpiredToken).
    test.inject_storage_error(r"MLmodel$|\.txt$|\.json$|\.yaml$", status=400, code="ExpiredToken",
                              method="PUT", times=1)
    resumed = copy(metastores, args)
    assert resumed.code == 0 and resumed.report["outcome"] == "resumed", resumed
    refused = [r for r in test.storage_requests() if r.get("injected") and r["status"] == 400]
    assert refused, "the expired-token answer was given, and the copy went on with fresh credentials"
    assert resumed.report["dst_version"] == pending.version
    [ready] = client.search_model_versions(f"name='{dst_model.lower()}'")
    assert ready.status == "READY"
    assert predictions(TEST, f"models:/{dst_model.lower()}/{ready.version}") == \
        predictions(src.uri, f"models:/{oss_version}/1")


def test_every_entry_point_copies_into_unity_catalog(src, oss_version, metastores):
    """--invoke, the embedding host and the HTTP function, with the metastore's variables."""
    from conftest import Served, run_host
    test, _, _ = metastores
    env = {**test.pat_env(), "MLFLOW_DST_S3_ENDPOINT_URL": test.s3_endpoint}
    models = [f"{CATALOG}.{unique(kind)}" for kind in ("invoke", "host", "http")]
    request = {"src_model": oss_version, "src_version": "1", "src_registry_uri": src.uri,
               "dst_registry_uri": "databricks-uc"}
    call = (f'copy-model-version({{src-model: "{oss_version}", src-version: "1", dst-model: "{models[0]}", '
            f'src-registry-uri: "{src.uri}", dst-registry-uri: "databricks-uc"}})')
    invoked = run_cli([], env=env, wasmtime_args=["--invoke", call])
    assert invoked.code == 0 and invoked.stdout.startswith("ok(") and "outcome: created" in invoked.stdout, invoked
    hosted = run_host("copy-model-version", {**request, "dst_model": models[1]}, env=env)
    assert hosted.code == 0 and '"ok"' in hosted.stdout, hosted
    # Only the source server and the workspace are listed: the S3 endpoint UC hands out
    # credentials for (moto, on its own port) is allowed for this copy as a host UC issued.
    workspace = urllib.parse.urlsplit(test.pat_env()["DATABRICKS_HOST"]).netloc
    served = Served({"MLFLOW_COPY_ALLOW_UNAUTHENTICATED": "true", **env,
                     "MLFLOW_COPY_ALLOWED_HOSTS": f"127.0.0.1:{src.port},{workspace}"})
    try:
        answer = requests.post(f"{served.url}/copy-model-version", timeout=600,
                               json={**request, "dst_model": models[2]})
        assert answer.status_code == 200, answer.text
        assert test.token not in served.logs()
    finally:
        served.stop()
    for model in models:
        [v] = uc_client(TEST).search_model_versions(f"name='{model.lower()}'")
        assert v.status == "READY"


def test_a_large_version_file_goes_to_s3_in_parts(src, metastores):
    """An 11 MiB model file with the multipart threshold lowered to 5 MiB: a multipart upload
    signed with the temporary credentials (create, three parts, complete), equal bytes in UC."""
    import hashlib
    test, _, _ = metastores
    big = os.urandom(11 * 1024 * 1024 + 123)
    client = MlflowClient(src.uri, registry_uri=src.uri)
    exp = client.get_experiment_by_name("uc-large") or client.get_experiment(client.create_experiment("uc-large"))
    run = client.create_run(exp.experiment_id)
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "MLmodel"), "w") as f:
            f.write("flavors: {}\nsignature:\n  inputs: '[{\"type\": \"double\"}]'\n"
                    "  outputs: '[{\"type\": \"long\"}]'\n")
        with open(os.path.join(d, "weights.bin"), "wb") as f:
            f.write(big)
        client.log_artifacts(run.info.run_id, d, "model")
    client.set_terminated(run.info.run_id)
    name = unique("large")
    client.create_registered_model(name)
    client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    dst_model = f"{CATALOG}.{unique('large_uc')}"
    five_mib = str(5 * 1024 * 1024)
    result = copy(metastores, copy_version_args(name, "1", dst_model, src.uri, TEST),
                  env={"MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE": five_mib,
                       "MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE": five_mib})
    assert result.code == 0, result
    uc_writes = [r for r in test.storage_requests()
                 if r["path"].startswith(f"/{test.uc_bucket}/") and r["path"].endswith("/weights.bin")
                 and r["method"] in ("POST", "PUT")]
    parts = [r for r in uc_writes if "partNumber" in r["query"]]
    assert len(parts) == 3 and all(r["auth"] == "sigv4" and r["status"] == 200 for r in parts), uc_writes
    assert [r["query"] for r in uc_writes if r["method"] == "POST"] == [["uploads"], ["uploadId"]], uc_writes
    version = uc_client(TEST).get_model_version(dst_model.lower(), result.report["dst_version"])
    assert version.status == "READY"
    local = download(TEST, f"models:/{dst_model.lower()}/{version.version}")
    with open(os.path.join(local, "weights.bin"), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == hashlib.sha256(big).hexdigest()
