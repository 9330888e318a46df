"""The component in the hosts MLflow users live in: the Python package (hosts/python, PyPI
`wasmtime`) and the Node.js package (hosts/node, jco + preview2-shim), each called the way a
user's program calls it. Same fidelity checks as through `wasmtime run` and the Rust host."""
import os

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

import hosts
import seed
from compare import assert_run_copied
from conftest import WASM, run_host, unique

HOSTS = ["python", "node"]
X = np.array([[0.0, 1.0], [1.0, 0.0], [0.3, 0.3], [0.9, 0.2]])


def call(host, function, request, env=None):
    return hosts.run(host, function, request, WASM, env)


def predictions(uri, model_uri):
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return list(mlflow.pyfunc.load_model(model_uri).predict(X))


@pytest.fixture(scope="module")
def registered_version(src):
    name = unique("wine-hosts")
    run_id, version = seed.seed_registered_version(src.uri, name)
    return name, version, run_id


@pytest.mark.parametrize("host", HOSTS)
def test_copy_run_is_faithful(host, src, dst, rich_run):
    exp = unique(f"{host}-copy")
    code, out, stderr = call(host, "copy-run", {
        "run_id": rich_run, "experiment_name": exp, "src_mlflow_uri": src.uri, "dst_mlflow_uri": dst.uri,
        "copy_children": None, "concurrency": 4})
    assert code == 0, (out, stderr)
    report = out["ok"]
    assert report["outcome"] == "created" and report["src_run_id"] == rich_run
    counts = assert_run_copied(src.uri, rich_run, dst.uri, report["dst_run_id"], exp)
    source = MlflowClient(src.uri, registry_uri=src.uri).get_run(rich_run)
    assert report["params"] == len(source.data.params) == 131
    assert report["metric_points"] == counts["metric_points"] > 1000
    assert report["logged_models"] == 1 and report["dataset_inputs"] == 1
    assert report["artifact_bytes"] > 24 * 1024 * 1024
    assert report["child_run_ids"] == []
    assert report["dst_experiment_id"] == MlflowClient(dst.uri, registry_uri=dst.uri).get_experiment_by_name(exp).experiment_id
    if host == "node":
        # The copy ran in a worker thread: the caller's event loop kept ticking all along.
        assert out["ticks"] >= out["ms"] / 10 / 4, out
    # The same call again finds the complete copy.
    code, again, stderr = call(host, "copy-run", {
        "run_id": rich_run, "experiment_name": exp, "src_mlflow_uri": src.uri, "dst_mlflow_uri": dst.uri})
    assert code == 0, (again, stderr)
    assert again["ok"]["outcome"] == "existing" and again["ok"]["dst_run_id"] == report["dst_run_id"]


@pytest.mark.parametrize("host", HOSTS)
def test_copy_model_version_is_faithful(host, src, dst, registered_version):
    name, version, run_id = registered_version
    dst_model, exp = unique(f"wine-{host}"), unique(f"{host}-deep")
    code, out, stderr = call(host, "copy-model-version", {
        "src_model": name, "src_version": version, "dst_model": dst_model,
        "src_registry_uri": src.uri, "dst_registry_uri": dst.uri, "dst_experiment_name": exp,
        "copy_stages_and_aliases": True, "copy_lineage_tags": True})
    assert code == 0, (out, stderr)
    report = out["ok"]
    assert report["deep"] and report["outcome"] == "created" and report["registered_model_created"]
    assert report["run"]["outcome"] == "created" and report["run"]["logged_models"] == 1
    s, d = MlflowClient(src.uri, registry_uri=src.uri), MlflowClient(dst.uri, registry_uri=dst.uri)
    sv, dv = s.get_model_version(name, version), d.get_model_version(dst_model, report["dst_version"])
    assert dv.status == "READY"
    assert dv.description == sv.description
    assert dv.current_stage == sv.current_stage == "Staging"
    assert dv.aliases == ["champion"] and report["aliases"] == ["champion"]
    assert {k: v for k, v in dv.tags.items() if not k.startswith("mlflow_exim.")} == sv.tags
    assert dv.tags["mlflow_exim.src_version.name"] == name and dv.tags["mlflow_exim.src_version.version"] == version
    copied_run = report["run"]["dst_run_id"]
    assert dv.run_id == copied_run == report["dst_run_id"]
    dst_model_id = d.get_run(copied_run).outputs.model_outputs[0].model_id
    assert dv.source == f"models:/{dst_model_id}" == report["dst_source"]
    assert_run_copied(src.uri, run_id, dst.uri, copied_run, exp)
    srm, drm = s.get_registered_model(name), d.get_registered_model(dst_model)
    assert drm.description == srm.description and drm.tags == srm.tags
    assert predictions(dst.uri, f"models:/{dst_model}@champion") == predictions(src.uri, f"models:/{name}/{version}")


@pytest.mark.parametrize("host", HOSTS)
def test_errors_are_typed_exceptions(host, src, dst, registered_version):
    missing = "0" * 32
    code, out, _ = call(host, "copy-run", {
        "run_id": missing, "experiment_name": unique("x"), "src_mlflow_uri": src.uri, "dst_mlflow_uri": dst.uri})
    assert code == 1 and out["err"]["class"] == "NotFound" and out["err"]["kind"] == "not_found", out
    assert missing in out["err"]["message"] and src.uri in out["err"]["message"]
    # A shallow copy across servers is refused, and nothing is created.
    name, version, _ = registered_version
    dst_model = unique("shallow")
    code, out, _ = call(host, "copy-model-version", {
        "src_model": name, "src_version": version, "dst_model": dst_model,
        "src_registry_uri": src.uri, "dst_registry_uri": dst.uri})
    assert code == 1 and out["err"]["class"] == "BadInput" and out["err"]["kind"] == "bad_input", out
    assert MlflowClient(dst.uri, registry_uri=dst.uri).search_registered_models(f"name='{dst_model}'") == []


@pytest.mark.parametrize("host", HOSTS + ["rust"])
def test_guest_sees_only_the_credential_variables(host, src, dst):
    """The guest scrubs every value of the secret variables it can see (the trackers' tokens and
    passwords, and the HTTP function's MLFLOW_COPY_API_TOKEN) from its error messages. So a
    host variable's value that is also the (unknown) run id shows whether the guest saw it: the
    run id is masked as *** in the not-found message exactly when the variable reached it."""
    marker = os.urandom(16).hex()
    request = {"run_id": marker, "experiment_name": unique("env"), "src_mlflow_uri": src.uri,
               "dst_mlflow_uri": dst.uri}

    def message(env):
        if host == "rust":
            result = run_host("copy-run", request, env=env)
            assert result.code == 1, result
            err = result.report["err"]
        else:
            code, out, _ = call(host, "copy-run", request, env=env)
            assert code == 1, out
            err = out["err"]
        assert err["kind"] == "not_found", err
        return err["message"]

    # Control: a variable the host passes (a token, which a plain server ignores) reaches the
    # guest, and its value is masked.
    shown = message({"MLFLOW_TRACKING_TOKEN": marker})
    assert marker not in shown and "***" in shown, shown
    # The HTTP function's token is a secret of the host that a copy has no use for: not passed.
    hidden = message({"MLFLOW_COPY_API_TOKEN": marker, "SECRET_NOT_FOR_GUEST": marker})
    assert marker in hidden and "***" not in hidden, hidden


def test_the_rust_host_and_node_reuse_connections_where_wasmtime_opens_one_per_request(src, dst, proxy):
    """Round trips: wasmtime's default outgoing handler (`wasmtime run`, `wasmtime serve`, the
    Python package) opens a connection per request; the Rust host's pooled handler and Node keep
    them open."""
    from conftest import copy_run_args, run_cli
    client = MlflowClient(src.uri)
    experiment = client.create_experiment(unique("connections"))
    run = client.create_run(experiment).info.run_id
    for i in range(12):
        client.log_text(run, f"file {i}\n", f"files/{i}.txt")
    client.log_batch(run, params=[mlflow.entities.Param(f"p{i}", "v") for i in range(5)])
    client.set_terminated(run)

    cli = run_cli(copy_run_args(run, unique("conn-cli"), src.uri, proxy.uri))
    assert cli.code == 0, cli
    requests, connections = len(proxy.traffic), proxy.accepted
    assert requests > 20 and connections == requests, (requests, connections)

    before_requests, before_connections = len(proxy.traffic), proxy.accepted
    host = run_host("copy-run", {"run_id": run, "experiment_name": unique("conn-host"),
                                 "src_mlflow_uri": src.uri, "dst_mlflow_uri": proxy.uri})
    assert host.code == 0, host
    requests = len(proxy.traffic) - before_requests
    connections = proxy.accepted - before_connections
    # At most one per request in flight at once (8 files, 4 metric writes), not one per request.
    assert requests > 20 and connections <= 12, (requests, connections)
    # The packages: wasmtime-py's handler is wasmtime's default; jco's shim (Node's http agent)
    # keeps connections alive. What the README says of each host.
    for package, pooled in (("python", False), ("node", True)):
        before_requests, before_connections = len(proxy.traffic), proxy.accepted
        code, out, err = hosts.run(package, "copy-run", {
            "run_id": run, "experiment_name": unique(f"conn-{package}"),
            "src_mlflow_uri": src.uri, "dst_mlflow_uri": proxy.uri}, WASM)
        assert code == 0, err
        requests = len(proxy.traffic) - before_requests
        connections = proxy.accepted - before_connections
        assert requests > 20 and (connections <= 12 if pooled else connections == requests), \
            (package, requests, connections)
