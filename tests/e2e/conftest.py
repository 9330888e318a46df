"""Fixtures for the end-to-end tests: real `mlflow server` processes on 127.0.0.1, the built
component run by the `wasmtime` CLI (as a command and under `wasmtime serve`) and by the example
embedding host, and a fault-injecting proxy (fault_proxy.py).

Environment (set by scripts/test.sh):
  MLFLOW_COPY_WASM   path of the built mlflow_copy.wasm
  MLFLOW_COPY_HOST   path of the built embedding host (hosts/rust/target/release/mlflow-copy-host)
"""
import json
import os
import subprocess
import sys
import time
import uuid

import pytest
import requests

sys.path.insert(0, os.path.dirname(__file__))
# MLflow's telemetry client, racing its own set-up on a loaded machine, has failed client calls
# here with KeyError('_MLFLOW_TELEMETRY_SESSION_ID'); these tests have no use for it.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from fault_proxy import FaultProxy  # noqa: E402
import seed  # noqa: E402
import seed_genai  # noqa: E402
from trace_views import client_for  # noqa: E402
import servers as _servers  # noqa: E402
from servers import MlflowServer, free_port  # noqa: E402

ADMIN_PASSWORD = _servers.ADMIN_PASSWORD  # for the test modules

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WASM = os.environ.get("MLFLOW_COPY_WASM", os.path.join(ROOT, "target/wasm32-wasip2/release/mlflow_copy.wasm"))
HOST = os.environ.get("MLFLOW_COPY_HOST", os.path.join(ROOT, "hosts/rust/target/release/mlflow-copy-host"))


def _uses_emulators(session):
    """Whether a selected test's module starts Databricks emulators."""
    return any(getattr(getattr(item, "module", None), "Emulator", None) is not None for item in session.items)


@pytest.fixture(scope="session")
def servers(request):
    src, dst = MlflowServer("src"), MlflowServer("dst")
    try:
        src.wait()
        dst.wait()
        emulator = sys.modules.get("databricks_emulator")  # imported by the modules using it
        if emulator is not None and _uses_emulators(request.session):
            # The emulator modules start ~17 emulators one after the other: their backing mlflow
            # servers boot ahead, while earlier tests mostly wait on copies (see
            # tests/databricks_emulator/__init__.py). Each emulator still starts fresh.
            emulator.for_test_session(spares=2)
            emulator.Backend.replenish()
        yield src, dst
    finally:
        src.stop()
        dst.stop()


@pytest.fixture(scope="session")
def src(servers):
    return servers[0]


@pytest.fixture(scope="session")
def dst(servers):
    return servers[1]


@pytest.fixture(scope="session")
def auth_server():
    server = MlflowServer("auth", basic_auth=True)
    try:
        yield server.wait()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def genai(src, dst):
    """An evaluation run (mlflow.genai.evaluate), an agent run with a logged model whose traces
    have nested spans, an exception and a human feedback, and a prompt linked to them."""
    exp = unique("genai-source")
    prompt = unique("qa_prompt").replace("-", "_")
    # Seeded in a process of its own (see seed_genai.py: MLflow's fluent state would leak).
    seeded = subprocess.run([sys.executable, seed_genai.__file__, src.uri, exp, prompt],
                            capture_output=True, text=True, timeout=600, check=True)
    ids = json.loads(seeded.stdout.strip().splitlines()[-1])
    eval_run, agent_run, model_id = ids["eval_run"], ids["agent_run"], ids["model_id"]
    # The destination already has a different version 1 of the prompt: the copy becomes
    # version 2, and every link must be rewritten to it.
    client_for(dst.uri).register_prompt(name=prompt, template="something else {{x}}")
    return {"eval_run": eval_run, "agent_run": agent_run, "model_id": model_id, "prompt": prompt}


@pytest.fixture(scope="session")
def rich_run(src):
    """A run with everything: 24 MiB binary, NaN metrics, dataset, MLflow 3 logged model."""
    return seed.seed_rich_run(src.uri, "fidelity-source", big_bytes=24 * 1024 * 1024)


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Result:
    def __init__(self, proc):
        self.code = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    @property
    def report(self):
        return json.loads(self.stdout)

    def __repr__(self):
        return f"exit {self.code}\nstdout: {self.stdout}\nstderr: {self.stderr}"


def _env(env):
    merged = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    merged.update(env or {})
    return merged


def cli_command(args, env=None, wasmtime_args=()):
    """The command line and process environment of `wasmtime run -S http [WASMTIME_ARGS]
    mlflow_copy.wasm ARGS`, with `env` passed through to the guest."""
    env = env or {}
    cmd = ["wasmtime", "run", "-S", "http", *wasmtime_args]
    for name in env:
        cmd += ["--env", name]
    return cmd + [WASM] + list(args), _env(env)


def run_cli(args, env=None, timeout=600, wasmtime_args=()):
    cmd, full_env = cli_command(args, env, wasmtime_args)
    return Result(subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout))


def copy_run_args(run_id, experiment, src_uri, dst_uri, *extra):
    return ["copy-run", "--run-id", run_id, "--experiment-name", experiment,
            "--src-mlflow-uri", src_uri, "--dst-mlflow-uri", dst_uri, *extra]


def run_host(function, request, env=None, timeout=600):
    """The example embedding host calling an export as a typed function."""
    proc = subprocess.run([HOST, WASM, function, json.dumps(request)], capture_output=True, text=True,
                          env=_env(env), timeout=timeout)
    return Result(proc)


def _proxy_to(server):
    p = FaultProxy(server.port)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def proxy(dst):
    """A faulty proxy in front of the destination server."""
    yield from _proxy_to(dst)


@pytest.fixture
def src_proxy(src):
    """A faulty proxy in front of the source server."""
    yield from _proxy_to(src)


def copy_version_args(src_model, version, dst_model, src_uri, dst_uri, *extra):
    return ["copy-model-version", "--src-model", src_model, "--src-version", version,
            "--dst-model", dst_model, "--src-registry-uri", src_uri, "--dst-registry-uri", dst_uri, *extra]


def wait_for_health(url, timeout):
    """Whether `url` answers 200 within `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return True
        except requests.ConnectionError:
            time.sleep(0.2)
    return False


class Served:
    """The component as an HTTP function under `wasmtime serve -S cli`, with `env` passed to it.
    The function refuses every copy until its operator lists the hosts it may reach: unless `env`
    sets the list (or the opt-out), it gets `allowed_hosts` (every port of 127.0.0.1, where the
    test servers listen; None: no list)."""

    def __init__(self, env, allowed_hosts="127.0.0.1"):
        env = dict(env)
        if allowed_hosts and not {"MLFLOW_COPY_ALLOWED_HOSTS", "MLFLOW_COPY_ALLOW_ANY_HOST"} & set(env):
            env["MLFLOW_COPY_ALLOWED_HOSTS"] = allowed_hosts
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = ["wasmtime", "serve", "-S", "cli", "--addr", f"127.0.0.1:{self.port}"]
        for name in env:
            cmd += ["--env", name]
        cmd.append(WASM)
        full_env = _env(env)
        self.log_path = os.path.join(ROOT, ".work", f"serve-{self.port}.log")
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, env=full_env, stdout=self.log, stderr=subprocess.STDOUT)
        if not wait_for_health(self.url + "/healthz", 60):
            raise RuntimeError("wasmtime serve did not start")

    def logs(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
