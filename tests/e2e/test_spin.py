"""The Spin build and its manifest, without Spin (it cannot be installed here).

- `spin.toml` is checked against the rules of Spin 4.0.2's manifest schema
  (`crates/manifest/src/schema/v2.rs` and `common.rs`: every table refuses unknown fields; the
  loader, `crates/loader/src/local.rs`, wants each variable `required` or with a `default`).
- `mlflow_copy_spin.wasm` (cargo feature `spin`) imports `wasi:config/store`, the normal build
  does not (wasmtime serve/run cannot provide it).
- The Spin build serves a real copy in the Rust host's `serve` mode, which runs it as Spin
  4.0.2 does: wasmtime 44.0.0, the WASI p2 and wasi-http linkers, Spin variables through
  `wasi:config/store`, no host environment for the guest. The API token and the destination's
  credentials reach the component only as variables.
"""
import json
import os
import re
import subprocess
import time
import tomllib

import pytest
import requests

import seed
from compare import assert_run_copied
from conftest import HOST, ROOT, WASM, Served, unique
from servers import ADMIN_PASSWORD, free_port

SPIN_WASM = os.environ.get("MLFLOW_COPY_SPIN_WASM",
                           os.path.join(ROOT, "target/wasm32-wasip2/release/mlflow_copy_spin.wasm"))
CONFIG_IMPORT = b"wasi:config/store@0.2.0-draft-2024-09-27"

# The fields each table of a v2 manifest accepts (Spin v4.0.2, crates/manifest/src/schema/v2.rs
# AppManifest, AppDetails, Trigger (flattened `config` aside), Component; common.rs Variable,
# ComponentBuildConfig). Spin refuses any other (`deny_unknown_fields`).
TOP = {"spin_manifest_version", "application", "variables", "trigger", "component"}
APPLICATION = {"name", "version", "description", "authors", "targets", "trigger", "tool"}
VARIABLE = {"description", "required", "default", "secret"}
COMPONENT = {"source", "description", "variables", "environment", "files", "exclude_files",
             "allowed_http_hosts", "allowed_outbound_hosts", "key_value_stores",
             "sqlite_databases", "ai_models", "targets", "build", "tool",
             "dependencies_inherit_configuration", "dependencies", "profile"}
BUILD = {"command", "workdir", "watch"}
HTTP_TRIGGER = {"id", "component", "components", "route", "executor", "static_response"}
# Spin's Key::new (spin-expressions): lower_snake.
LOWER_SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
# An allowed_outbound_hosts entry (outbound-networking-config): scheme://host[:port], or a
# template to be resolved at load.
OUTBOUND = re.compile(r"^(\{\{ *[a-z0-9_]+ *\}\}|(\*|[a-z][a-z0-9+.-]*)://(\*|(\*\.)?[a-z0-9.-]+)(:(\*|\d+(\.\.\d+)?))?)$")
TEMPLATE = re.compile(r"^\{\{ *([a-z0-9_]+) *\}\}$")

# Environment names the component reads that are no Spin variables, and why.
NOT_SPIN_SETTINGS = {
    "DATABRICKS_CONFIG_FILE": "a file: Spin mounts files read-only into the image (no tokens there)",
    "DATABRICKS_CONFIG_PROFILE": "selects a profile of that file",
    "DATABRICKS_USERNAME": "unsupported auth kind, named only to refuse it",
    "DATABRICKS_PASSWORD": "unsupported auth kind, named only to refuse it",
    "DATABRICKS_GOOGLE_SERVICE_ACCOUNT": "unsupported auth kind, named only to refuse it",
    "DATABRICKS_AZURE_RESOURCE_ID": "unsupported auth kind, named only to refuse it",
    "DATABRICKS_TABLE": "not an environment name (a Databricks securable type)",
    "AWS_PRESIGNED_URL": "not an environment name (a UC credential kind)",
    "AWS_SSE_KMS": "not an environment name (an S3 encryption kind)",
    "AWS_SSE_S3": "not an environment name (an S3 encryption kind)",
    "MLFLOW_COPY_MAYBE_CREATED": "not an environment name (a marker tag)",
    "MLFLOW_EXPERIMENT": "not an environment name (a trace location type)",
}


@pytest.fixture(scope="module")
def manifest():
    with open(os.path.join(ROOT, "spin.toml"), "rb") as f:
        return tomllib.load(f)


def test_manifest_follows_spins_v2_schema(manifest):
    assert set(manifest) <= TOP and manifest["spin_manifest_version"] == 2
    assert set(manifest["application"]) <= APPLICATION
    for name, variable in manifest["variables"].items():
        assert LOWER_SNAKE.match(name), name
        assert set(variable) <= VARIABLE, name
        # The loader's rule: exactly one of `required` and `default`.
        assert variable.get("required", False) != ("default" in variable), name
        if variable.get("secret"):
            assert variable.get("default", "") == "", f"secret {name} has a value"
    [trigger] = manifest["trigger"]["http"]
    assert set(trigger) <= HTTP_TRIGGER and trigger["component"] in manifest["component"]
    [(name, component)] = manifest["component"].items()
    assert set(component) <= COMPONENT and set(component["build"]) <= BUILD
    for key, template in component["variables"].items():
        assert LOWER_SNAKE.match(key), key
        assert TEMPLATE.match(template).group(1) in manifest["variables"], key
    for entry in component["allowed_outbound_hosts"]:
        assert OUTBOUND.match(entry), entry
        if TEMPLATE.match(entry):
            variable = manifest["variables"][TEMPLATE.match(entry).group(1)]
            assert variable.get("required"), f"{entry}: an empty default is no valid host"
    assert component["source"] == "target/wasm32-wasip2/release/mlflow_copy_spin.wasm"
    # The function's own gates are required: no token, no list, no start.
    for gate in ("mlflow_copy_api_token", "mlflow_copy_allowed_hosts"):
        assert manifest["variables"][gate].get("required"), gate
    assert manifest["variables"]["mlflow_copy_api_token"].get("secret")


def test_every_setting_the_component_reads_is_a_spin_variable(manifest):
    names = set()
    for folder, _dirs, files in os.walk(os.path.join(ROOT, "src")):
        for file in files:
            with open(os.path.join(folder, file)) as f:
                names |= set(re.findall(r'"((?:MLFLOW|DATABRICKS|AWS)_[A-Z0-9_]+)"', f.read()))
    for side in ("", "SRC_", "DST_"):  # built with format! in credentials.rs and uc_files.rs
        names |= {f"MLFLOW_{side}TRACKING_{n}" for n in ("TOKEN", "USERNAME", "PASSWORD")}
        names.add(f"MLFLOW_{side}S3_ENDPOINT_URL")
    mapped = set(manifest["component"]["mlflow-copy"]["variables"])
    missing = {n for n in names - set(NOT_SPIN_SETTINGS) if n.lower() not in mapped}
    assert not missing


def test_only_the_spin_build_imports_the_variables_interface():
    with open(SPIN_WASM, "rb") as f:
        assert CONFIG_IMPORT in f.read()
    with open(WASM, "rb") as f:
        assert CONFIG_IMPORT not in f.read()
    # Spin's HTTP trigger wants exactly one handler export; the others are ignored.
    exports = json.loads(subprocess.run([HOST, "exports", SPIN_WASM], capture_output=True,
                                        text=True, check=True).stdout)
    assert [e for e in exports if e.startswith("wasi:http/incoming-handler@")] == \
        ["wasi:http/incoming-handler@0.2.2"]


class SpinHost(Served):
    """The Spin build served by `mlflow-copy-host serve` with Spin variables from a file (the
    logs and stop of `Served`, the wasmtime serve runner)."""

    def __init__(self, variables, folder):  # noqa: super().__init__ would start wasmtime serve
        path = os.path.join(folder, "variables.txt")
        with open(path, "w") as f:
            f.writelines(f"{k}={v}\n" for k, v in variables.items())
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log_path = os.path.join(folder, "host.log")
        self.log = open(self.log_path, "wb")
        # The guest gets no environment in this mode (as under Spin), and the host none to give.
        self.proc = subprocess.Popen(
            [HOST, "serve", SPIN_WASM, "--listen", self.url.removeprefix("http://"),
             "--spin-variables", path],
            env={"PATH": os.environ["PATH"]}, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline and self.proc.poll() is None:
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.3)
        raise RuntimeError(f"the Spin-version host did not start: {self.logs()}")


TOKEN = "spin-variable-api-token-5678"


@pytest.fixture(scope="module")
def spin_host(auth_server, tmp_path_factory):
    host = SpinHost({
        "mlflow_copy_api_token": TOKEN,
        "mlflow_copy_allowed_hosts": "127.0.0.1",
        # The destination is the basic-auth server: its credentials exist only as variables.
        "mlflow_dst_tracking_username": "admin",
        "mlflow_dst_tracking_password": ADMIN_PASSWORD,
    }, str(tmp_path_factory.mktemp("spin-host")))
    yield host
    host.stop()


def test_the_spin_build_copies_a_run_with_its_secrets_from_variables(spin_host, src, auth_server,
                                                                     monkeypatch):
    run_id = seed.seed_rich_run(src.uri, unique("spin-source"), metric_points=30, with_model=False)
    exp = unique("spin-copy")
    body = {"run_id": run_id, "experiment_name": exp, "src_mlflow_uri": src.uri,
            "dst_mlflow_uri": auth_server.uri}
    refused = requests.post(spin_host.url + "/copy-run", json=body,
                            headers={"Authorization": "Bearer wrong-token"}, timeout=60)
    assert refused.status_code == 401
    done = requests.post(spin_host.url + "/copy-run", json=body,
                         headers={"Authorization": f"Bearer {TOKEN}"}, timeout=600)
    assert done.status_code == 200, (done.text, spin_host.logs())
    report = done.json()
    assert report["src_run_id"] == run_id and report["outcome"] == "created"
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    assert_run_copied(src.uri, run_id, auth_server.uri, report["dst_run_id"], exp)
    assert ADMIN_PASSWORD not in spin_host.logs() and TOKEN not in spin_host.logs()
