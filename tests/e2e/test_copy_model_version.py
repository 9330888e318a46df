"""copy-model-version end to end, through the built component, against real MLflow servers."""
import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

import seed
from compare import assert_run_copied
from conftest import ADMIN_PASSWORD, copy_version_args, run_cli, run_host, unique

X = np.array([[0.0, 1.0], [1.0, 0.0], [0.3, 0.3], [0.9, 0.2]])


def use(uri):
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


def predictions(uri, model_uri):
    use(uri)
    return list(mlflow.pyfunc.load_model(model_uri).predict(X))


def versions_of(uri, model):
    return MlflowClient(uri, registry_uri=uri).search_model_versions(f"name='{model}'")


@pytest.fixture(scope="module")
def mlflow3_version(src):
    name = unique("wine")
    run_id, version = seed.seed_registered_version(src.uri, name)
    return name, version, run_id


def test_deep_copy_of_an_mlflow3_version_loads_and_predicts_like_the_source(src, dst, mlflow3_version):
    name, version, run_id = mlflow3_version
    dst_model, exp = unique("wine-prod"), unique("deep")
    result = run_cli(copy_version_args(name, version, dst_model, src.uri, dst.uri,
                                       "--dst-experiment-name", exp, "--copy-stages-and-aliases", "true"))
    assert result.code == 0, result
    report = result.report
    assert report["deep"] and report["outcome"] == "created" and report["registered_model_created"]
    s, d = MlflowClient(src.uri, registry_uri=src.uri), MlflowClient(dst.uri, registry_uri=dst.uri)
    sv, dv = s.get_model_version(name, version), d.get_model_version(dst_model, report["dst_version"])
    assert dv.status == "READY"
    assert dv.description == sv.description
    assert dv.tags == sv.tags
    assert dv.current_stage == sv.current_stage == "Staging"
    assert dv.aliases == ["champion"] and report["aliases"] == ["champion"]
    # The version points at the copied logged model of the copied run.
    copied_run = report["run"]["dst_run_id"]
    assert dv.run_id == copied_run == report["dst_run_id"]
    dst_model_id = d.get_run(copied_run).outputs.model_outputs[0].model_id
    assert dv.source == f"models:/{dst_model_id}" == report["dst_source"]
    assert_run_copied(src.uri, run_id, dst.uri, copied_run, exp)
    # Registered model metadata.
    srm, drm = s.get_registered_model(name), d.get_registered_model(dst_model)
    assert drm.description == srm.description and drm.tags == srm.tags
    # It loads, with its signature and input example, and predicts exactly like the source.
    use(dst.uri)
    info = mlflow.models.get_model_info(f"models:/{dst_model}/{report['dst_version']}")
    use(src.uri)
    src_info = mlflow.models.get_model_info(f"models:/{name}/{version}")
    assert info.signature == src_info.signature and info.signature is not None
    assert info.saved_input_example_info == src_info.saved_input_example_info
    assert predictions(dst.uri, f"models:/{dst_model}@champion") == predictions(src.uri, f"models:/{name}/{version}")


def test_rerun_reports_the_existing_copy(src, dst, mlflow3_version):
    name, version, _ = mlflow3_version
    dst_model, exp = unique("wine-again"), unique("deep-again")
    args = copy_version_args(name, version, dst_model, src.uri, dst.uri, "--dst-experiment-name", exp)
    first, second = run_cli(args), run_cli(args)
    assert first.code == 0 and second.code == 0, second
    assert second.report["outcome"] == "existing"
    assert second.report["dst_version"] == first.report["dst_version"]
    assert second.report["run"]["outcome"] == "existing"
    assert len(versions_of(dst.uri, dst_model)) == 1
    exp_id = MlflowClient(dst.uri, registry_uri=dst.uri).get_experiment_by_name(exp).experiment_id
    assert len(MlflowClient(dst.uri, registry_uri=dst.uri).search_runs([exp_id])) == 1


def test_deep_copy_of_classic_run_artifact_versions(src, dst):
    name = unique("classic")
    run_id, versions = seed.seed_classic_versions(src.uri, name)
    dst_model, exp = unique("classic-copy"), unique("classic-exp")
    copies = []
    for v in versions:
        result = run_cli(copy_version_args(name, v, dst_model, src.uri, dst.uri, "--dst-experiment-name", exp))
        assert result.code == 0, result
        copies.append(result.report)
    # Both versions' runs are the same source run: copied once.
    assert copies[0]["dst_run_id"] == copies[1]["dst_run_id"]
    assert copies[1]["run"]["outcome"] == "existing"
    new_run = copies[0]["dst_run_id"]
    new_root = MlflowClient(dst.uri, registry_uri=dst.uri).get_run(new_run).info.artifact_uri
    assert copies[0]["dst_source"] == f"runs:/{new_run}/model"
    assert copies[1]["dst_source"] == f"{new_root}/model"
    expected = predictions(src.uri, f"models:/{name}/{versions[0]}")
    for report in copies:
        dv = MlflowClient(dst.uri, registry_uri=dst.uri).get_model_version(dst_model, report["dst_version"])
        assert dv.run_id == new_run and dv.source == report["dst_source"]
        assert predictions(dst.uri, f"models:/{dst_model}/{report['dst_version']}") == expected
    assert_run_copied(src.uri, run_id, dst.uri, new_run, exp)


def test_shallow_copy_within_one_server(src, mlflow3_version):
    name, version, run_id = mlflow3_version
    dst_model = unique("wine-shallow")
    result = run_cli(copy_version_args(name, version, dst_model, src.uri, src.uri))
    assert result.code == 0, result
    report = result.report
    assert not report["deep"] and report["run"] is None
    s = MlflowClient(src.uri, registry_uri=src.uri)
    sv, dv = s.get_model_version(name, version), s.get_model_version(dst_model, report["dst_version"])
    assert dv.source == sv.source and dv.run_id == sv.run_id == run_id
    assert dv.tags == sv.tags and dv.description == sv.description
    assert dv.current_stage == "None" and dv.aliases == []   # not asked for
    assert predictions(src.uri, f"models:/{dst_model}/{report['dst_version']}") == predictions(src.uri, f"models:/{name}/{version}")


def test_shallow_copy_across_servers_is_refused(src, dst, mlflow3_version):
    name, version, _ = mlflow3_version
    dst_model = unique("wine-nope")
    result = run_cli(copy_version_args(name, version, dst_model, src.uri, dst.uri))
    assert result.code == 1, result
    assert "[bad_input]" in result.stderr and "--dst-experiment-name" in result.stderr
    assert MlflowClient(dst.uri, registry_uri=dst.uri).search_registered_models(f"name='{dst_model}'") == []


def test_lineage_tags(src, dst, mlflow3_version):
    name, version, run_id = mlflow3_version
    dst_model = unique("wine-lineage")
    result = run_cli(copy_version_args(name, version, dst_model, src.uri, dst.uri,
                                       "--dst-experiment-name", unique("lineage"), "--copy-lineage-tags", "true"))
    assert result.code == 0, result
    tags = MlflowClient(dst.uri, registry_uri=dst.uri).get_model_version(dst_model, result.report["dst_version"]).tags
    source_tags = MlflowClient(src.uri, registry_uri=src.uri).get_model_version(name, version).tags
    assert {k: v for k, v in tags.items() if not k.startswith("mlflow_exim.")} == source_tags
    assert {k: v for k, v in tags.items() if k.startswith("mlflow_exim.")} == {
        "mlflow_exim.src_version.name": name,
        "mlflow_exim.src_version.version": version,
        "mlflow_exim.src_version.run_id": run_id,
        "mlflow_exim.src_client.tracking_uri": src.uri,
        "mlflow_exim.dst_client.tracking_uri": dst.uri,
        "mlflow_exim.src_run.mlflow.user": "alice",
    }
    # Copied on without the flag, a version keeps every tag it has, lineage tags included.
    again = run_cli(copy_version_args(dst_model, result.report["dst_version"], unique("wine-lineage-2"), dst.uri, dst.uri))
    assert again.code == 0, again
    copied_again = MlflowClient(dst.uri, registry_uri=dst.uri).get_model_version(again.report["dst_model"], again.report["dst_version"])
    assert copied_again.tags == tags


def test_existing_registered_model_metadata_is_left_alone(src, dst, mlflow3_version):
    name, version, _ = mlflow3_version
    dst_model = unique("wine-existing")
    d = MlflowClient(dst.uri, registry_uri=dst.uri)
    d.create_registered_model(dst_model, description="theirs", tags={"keep": "me"})
    result = run_cli(copy_version_args(name, version, dst_model, src.uri, dst.uri,
                                       "--dst-experiment-name", unique("existing-rm"), "--copy-permissions", "true"))
    assert result.code == 0, result
    assert not result.report["registered_model_created"] and result.report["permissions"] == 0
    assert "already existed" in result.stderr
    rm = d.get_registered_model(dst_model)
    assert rm.description == "theirs" and rm.tags == {"keep": "me"}


def test_permissions_are_copied_on_a_basic_auth_server(auth_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    name, version, grants = seed.seed_guarded_version(auth_server.uri, ADMIN_PASSWORD)
    dst_model = unique("guarded-copy")
    env = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}
    result = run_cli(copy_version_args(name, version, dst_model, auth_server.uri, auth_server.uri,
                                       "--copy-permissions", "true"), env=env)
    assert result.code == 0, result
    assert result.report["permissions"] == 2
    assert ADMIN_PASSWORD not in result.stdout + result.stderr
    for user, permission in grants.items():
        assert seed.model_permission(auth_server.uri, ADMIN_PASSWORD, user, dst_model) == permission


def test_permissions_on_a_server_without_auth_are_reported_as_nothing_to_copy(src, dst, mlflow3_version):
    name, version, _ = mlflow3_version
    result = run_cli(copy_version_args(name, version, unique("wine-noauth"), src.uri, dst.uri,
                                       "--dst-experiment-name", unique("noauth"), "--copy-permissions", "true"))
    assert result.code == 0, result
    assert result.report["permissions"] == 0
    assert "no permissions API" in result.stderr


@pytest.mark.parametrize("model,version,needle,kind", [
    ("no-such-model", "1", "no-such-model", "not_found"),
    (None, "999", "999", "not_found"),
    (None, "latest", "src_version", "bad_input"),
])
def test_bad_source_references(src, dst, mlflow3_version, model, version, needle, kind):
    dst_model = unique("never")
    result = run_cli(copy_version_args(model or mlflow3_version[0], version, dst_model, src.uri, dst.uri,
                                       "--dst-experiment-name", unique("never")))
    assert result.code == 1, result
    assert f"[{kind}]" in result.stderr and needle in result.stderr
    assert MlflowClient(dst.uri, registry_uri=dst.uri).search_registered_models(f"name='{dst_model}'") == []


def test_unknown_registry_uri(src, mlflow3_version):
    name, version, _ = mlflow3_version
    result = run_cli(copy_version_args(name, version, "x", src.uri, "sqlite:///registry.db"))
    assert result.code == 1 and "[bad_input]" in result.stderr and "sqlite" in result.stderr, result


def test_version_not_ready_is_refused(src, dst, mlflow3_version, src_proxy):
    name, version, _ = mlflow3_version
    src_proxy.rewrite = ("/model-versions/get", b'"READY"', b'"PENDING_REGISTRATION"')
    dst_model = unique("pending")
    result = run_cli(copy_version_args(name, version, dst_model, src_proxy.uri, dst.uri,
                                       "--dst-experiment-name", unique("pending")))
    assert result.code == 1, result
    assert "[bad_input]" in result.stderr and "PENDING_REGISTRATION" in result.stderr
    assert MlflowClient(dst.uri, registry_uri=dst.uri).search_registered_models(f"name='{dst_model}'") == []


def test_embedding_host_copies_a_version_and_returns_errors_as_values(src, dst, mlflow3_version):
    name, version, _ = mlflow3_version
    dst_model = unique("wine-host")
    ok = run_host("copy-model-version", {
        "src_model": name, "src_version": version, "dst_model": dst_model,
        "src_registry_uri": src.uri, "dst_registry_uri": dst.uri,
        "dst_experiment_name": unique("host-deep"), "copy_stages_and_aliases": True})
    assert ok.code == 0, ok
    report = ok.report["ok"]
    assert report["deep"] and report["aliases"] == ["champion"] and report["run"]["logged_models"] == 1
    assert predictions(dst.uri, f"models:/{dst_model}/{report['dst_version']}") == predictions(src.uri, f"models:/{name}/{version}")
    err = run_host("copy-model-version", {
        "src_model": name, "src_version": version, "dst_model": unique("x"),
        "src_registry_uri": src.uri, "dst_registry_uri": dst.uri})
    assert err.code == 1 and err.report["err"]["kind"] == "bad_input", err


def test_failed_registration_is_a_clear_error(src, dst, mlflow3_version, proxy):
    name, version, _ = mlflow3_version
    # The destination answers the new version as FAILED_REGISTRATION (a real registry does so
    # when it cannot copy the files; OSS never does, so a proxy shows it).
    proxy.rewrite = ("/model-versions/", b'"READY"', b'"FAILED_REGISTRATION"')
    result = run_cli(copy_version_args(name, version, unique("failing"), src.uri, proxy.uri,
                                       "--dst-experiment-name", unique("failing")))
    assert result.code == 1, result
    assert "[upstream]" in result.stderr and "failed registration" in result.stderr
