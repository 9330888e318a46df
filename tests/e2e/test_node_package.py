"""`npm pack` of hosts/node gives an installable package: the tarball carries the transpiled
component and a `bin`, installs into a fresh directory outside the checkout with nothing but
@bytecodealliance/preview2-shim from the npm registry, and `npx mlflow-copy copy-run …` takes
the Python tool's command lines, with the Python package's exit status per error kind."""
import json
import os
import subprocess
import tarfile

import pytest

from compare import assert_command_copies_a_run
from conftest import ROOT, WASM, unique

# The exit codes of hosts/node/exit-codes.js (the same as the Python package's).
EXIT_USAGE, EXIT_NOT_FOUND = 2, 4
NODE_HOST = os.path.join(ROOT, "hosts", "node")


def _pack(out_dir):
    """The tarball, packed from this checkout's hosts/node with the component under test."""
    env = dict(os.environ, MLFLOW_COPY_WASM=WASM)
    done = subprocess.run(["npm", "pack", "--json", "--pack-destination", out_dir],
                          cwd=NODE_HOST, env=env, capture_output=True, text=True, timeout=300,
                          check=True)
    [packed] = json.loads(done.stdout)
    return os.path.join(out_dir, packed["filename"])


class Install:
    """A fresh npm project holding only the tarball; commands run in it, outside the checkout,
    without MLFLOW_COPY_WASM (the packed translation must be the one used)."""

    def __init__(self, root):
        self.root = root
        with open(os.path.join(root, "package.json"), "w") as f:
            json.dump({"name": "mlflow-copy-user", "version": "1.0.0", "private": True}, f)

    def env(self):
        return {k: v for k, v in os.environ.items() if k != "MLFLOW_COPY_WASM"}

    def run(self, *argv, timeout=300):
        return subprocess.run(list(argv), cwd=self.root, env=self.env(), capture_output=True,
                              text=True, timeout=timeout)

    def npx(self, *args):
        return self.run("npx", "--no-install", "mlflow-copy", *args)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tarball = _pack(str(tmp_path_factory.mktemp("npm-pack")))
    project = Install(str(tmp_path_factory.mktemp("npm-user")))
    done = project.run("npm", "install", "--no-audit", "--no-fund", "--prefer-offline",
                       "--loglevel=error", tarball)
    assert done.returncode == 0, done.stderr
    project.tarball = tarball
    return project


def test_tarball_carries_the_translation_and_installs_with_the_shim_alone(installed):
    with tarfile.open(installed.tarball) as t:
        names = t.getnames()
        manifest = json.load(t.extractfile("package/package.json"))
    assert "package/bin/mlflow-copy.js" in names and "package/dist/default.json" in names
    assert any(n.endswith("/mlflow_copy.js") for n in names if n.startswith("package/dist/"))
    assert not any(n.endswith(".wasm") and "dist/" not in n for n in names)
    assert manifest["dependencies"] == {"@bytecodealliance/preview2-shim": "0.26.1"}
    assert manifest["bin"] == {"mlflow-copy": "bin/mlflow-copy.js"}
    listed = installed.run("npm", "ls", "--all", "--json")
    deps = json.loads(listed.stdout)["dependencies"]
    assert set(deps) == {"mlflow-copy"}
    assert set(deps["mlflow-copy"].get("dependencies", {})) == {"@bytecodealliance/preview2-shim"}
    assert ROOT not in os.path.realpath(os.path.join(installed.root, "node_modules", "mlflow-copy"))


def test_help_lists_the_python_tools_flags_and_a_typo_is_a_usage_error(installed):
    shown = installed.npx("copy-run", "--help")
    assert shown.returncode == 0, shown.stderr
    for flag in ("--run-id", "--experiment-name", "--src-mlflow-uri", "--dst-mlflow-uri",
                 "--copy-children", "--concurrency"):
        assert flag in shown.stdout
    # copy-model-version is dispatched to the component's own subcommand too.
    shown_mv = installed.npx("copy-model-version", "--help")
    assert shown_mv.returncode == 0, shown_mv.stderr
    for flag in ("--src-model", "--src-version", "--dst-model", "--src-registry-uri",
                 "--dst-registry-uri", "--dst-experiment-name", "--copy-stages-and-aliases"):
        assert flag in shown_mv.stdout
    typo = installed.npx("copy-run", "--run-idd", "x")
    assert typo.returncode == EXIT_USAGE, typo.stderr
    assert "--run-id" in typo.stderr and typo.stdout == ""


def test_copy_run_between_two_servers(installed, src, dst):
    assert_command_copies_a_run(installed.npx, src.uri, dst.uri, "npm")


def test_unknown_run_exits_with_not_found(installed, src, dst):
    done = installed.npx("copy-run", "--run-id", "f" * 32, "--experiment-name",
                         unique("npm-none"), "--src-mlflow-uri", src.uri,
                         "--dst-mlflow-uri", dst.uri)
    assert done.returncode == EXIT_NOT_FOUND, done.stderr
    assert done.stdout == ""
    last = done.stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith("mlflow-copy: error [not_found]: ")
