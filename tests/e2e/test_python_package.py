"""`pip install mlflow-copy` is the whole install: the wheel built from hosts/python carries the
component, installs into a fresh venv with nothing but PyPI's wasmtime 50.0.1 beside it, and
its console scripts `copy-run` and `copy-model-version` take mlflow-export-import's command
lines, run from a directory outside the checkout with no checkout on the path."""
import json
import os
import re
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

import seed
from compare import assert_command_copies_a_run
from conftest import ROOT, WASM, unique

WASMTIME_PY = "wasmtime==50.0.1"
# The wasmtime wheel is downloaded once per machine, not once per test run.
WHEELS_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "mlflow-copy", "wheels")
# The exit codes documented in the README ("Use it from Python").
EXIT_USAGE, EXIT_NOT_FOUND = 2, 4


def _pip(*args, python=sys.executable, timeout=300):
    subprocess.run([python, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                   check=True, timeout=timeout)


def _build_wheel(out_dir):
    """The wheel, built from this checkout's hosts/python with the component under test."""
    env = dict(os.environ, MLFLOW_COPY_WASM=WASM)
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "wheel",
                    "--no-deps", "-w", out_dir, os.path.join(ROOT, "hosts", "python")],
                   check=True, env=env, timeout=300)
    [wheel] = [f for f in os.listdir(out_dir) if f.startswith("mlflow_copy-")]
    return os.path.join(out_dir, wheel)


def _wasmtime_wheel_dir():
    os.makedirs(WHEELS_CACHE, exist_ok=True)
    if not any(f.startswith("wasmtime-50.0.1-") for f in os.listdir(WHEELS_CACHE)):
        _pip("download", WASMTIME_PY, "--no-deps", "-d", WHEELS_CACHE)
    return WHEELS_CACHE


class Venv:
    """A fresh venv holding only the wheel and wasmtime; commands run in `cwd`, outside the
    checkout, with no checkout on PYTHONPATH and no MLFLOW_COPY_WASM (the packaged component
    must be the one found)."""

    def __init__(self, root):
        self.root = root
        self.bin = os.path.join(root, "venv", "bin")
        self.cwd = os.path.join(root, "work")
        self.cache = os.path.join(root, "compiled")
        os.makedirs(self.cwd)

    def env(self):
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "MLFLOW_COPY_WASM", "VIRTUAL_ENV", "PYTHONHOME")}
        env["PATH"] = self.bin + os.pathsep + env.get("PATH", "")
        env["MLFLOW_COPY_CACHE_DIR"] = self.cache
        return env

    def run(self, *argv, timeout=300):
        return subprocess.run(list(argv), cwd=self.cwd, env=self.env(), capture_output=True,
                              text=True, timeout=timeout)


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("pkg"))
    wheels = os.path.join(root, "wheels")
    wheel = _build_wheel(wheels)
    v = Venv(root)
    subprocess.run([sys.executable, "-m", "venv", os.path.join(root, "venv")], check=True,
                   timeout=120)
    _pip("install", "--no-index", "--find-links", wheels, "--find-links", _wasmtime_wheel_dir(),
         wheel, python=os.path.join(v.bin, "python"))
    v.wheel = wheel
    return v


def test_wheel_carries_the_component_and_installs_alone(venv):
    import zipfile
    with zipfile.ZipFile(venv.wheel) as z:
        names = z.namelist()
        metadata = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "mlflow_copy/mlflow_copy.wasm" in names
    assert re.findall(r"^Requires-Dist: (.*)$", metadata, re.M) == [WASMTIME_PY]
    # Installed: the packaged component is the one found, and no checkout is importable.
    probe = venv.run(os.path.join(venv.bin, "python"), "-c",
                     "import sys, mlflow_copy; print(mlflow_copy.find_wasm()); print(sys.path)")
    assert probe.returncode == 0, probe.stderr
    found, path = probe.stdout.splitlines()
    assert found.startswith(venv.root) and found.endswith("mlflow_copy/mlflow_copy.wasm")
    assert ROOT not in path
    pip_list = venv.run(os.path.join(venv.bin, "python"), "-m", "pip", "list", "--format=json")
    # Nothing else came along (pip and the setuptools some Pythons seed into a venv aside).
    installed = {p["name"] for p in json.loads(pip_list.stdout)} - {"pip", "setuptools"}
    assert installed == {"mlflow-copy", "wasmtime"}


def test_help_shows_the_python_tools_flags_and_the_cache_works(venv):
    started = time.monotonic()
    cold = venv.run("copy-run", "--help")
    cold_s = time.monotonic() - started
    assert cold.returncode == 0, cold.stderr
    for flag in ("--run-id", "--experiment-name", "--src-mlflow-uri", "--dst-mlflow-uri",
                 "--copy-children", "--concurrency"):
        assert flag in cold.stdout
    # The compiled code was cached: a second start loads it instead of compiling.
    assert [f for f in os.listdir(venv.cache) if f.endswith(".cwasm")]
    started = time.monotonic()
    warm = venv.run("copy-run", "--help")
    warm_s = time.monotonic() - started
    assert warm.returncode == 0 and warm.stdout == cold.stdout
    print(f"copy-run --help: cold {cold_s:.2f} s, warm {warm_s:.2f} s")
    assert warm_s < cold_s
    help_mv = venv.run("copy-model-version", "--help")
    for flag in ("--src-model", "--src-version", "--dst-model", "--src-registry-uri",
                 "--dst-registry-uri", "--dst-experiment-name", "--copy-permissions",
                 "--copy-stages-and-aliases", "--copy-lineage-tags"):
        assert flag in help_mv.stdout
    # A usage error is click's (and clap's) exit code 2, with the parser's message.
    typo = venv.run("copy-run", "--run-idd", "x")
    assert typo.returncode == EXIT_USAGE and "--run-id" in typo.stderr and typo.stdout == ""


def test_copy_run_between_two_servers(venv, src, dst):
    assert_command_copies_a_run(venv.run, src.uri, dst.uri, "pkg")


def test_unknown_run_exits_with_not_found(venv, src, dst):
    done = venv.run("copy-run", "--run-id", "f" * 32, "--experiment-name", unique("pkg-none"),
                    "--src-mlflow-uri", src.uri, "--dst-mlflow-uri", dst.uri)
    assert done.returncode == EXIT_NOT_FOUND, done.stderr
    assert done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if line.startswith("mlflow-copy: error")]
    assert len(errors) == 1 and errors[0].startswith("mlflow-copy: error [not_found]: ")
    assert done.stderr.rstrip("\n").splitlines()[-1] == errors[0]
    assert "panicked" not in done.stderr


def test_copy_model_version_shallow_within_one_server(venv, src):
    name = unique("pkg-wine")
    _run_id, version = seed.seed_registered_version(src.uri, name)
    dst_model = unique("pkg-wine-shallow")
    done = venv.run("copy-model-version", "--src-model", name, "--src-version", version,
                    "--dst-model", dst_model, "--src-registry-uri", src.uri,
                    "--dst-registry-uri", src.uri)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["dst_model"] == dst_model and report["deep"] is False
    assert report["outcome"] == "created"
    client = MlflowClient(src.uri, registry_uri=src.uri)
    copied = client.get_model_version(dst_model, report["dst_version"])
    assert copied.source == client.get_model_version(name, version).source


def test_copy_model_writes_its_id_map_where_asked(venv, src, tmp_path):
    name = unique("pkg-bulk")
    seed.seed_small_version(src.uri, name)
    dst_model = unique("pkg-bulk-copy")
    id_map = tmp_path / "ids.jsonl"
    done = venv.run("copy-model", "--src-model", name, "--dst-model", dst_model,
                    "--src-registry-uri", src.uri, "--dst-registry-uri", src.uri,
                    "--report", str(id_map))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [(i["src_id"], i["dst_id"], i["status"]) for i in report["items"]] == [("1", "1", "created")]
    assert [json.loads(line) for line in id_map.read_text().splitlines()] == report["items"]
    # A version that is not there is not_found (exit 4), before anything is written.
    missing = venv.run("copy-model", "--src-model", name, "--dst-model", unique("pkg-none"),
                       "--src-registry-uri", src.uri, "--dst-registry-uri", src.uri, "--versions", "7")
    assert missing.returncode == EXIT_NOT_FOUND, missing.stderr
