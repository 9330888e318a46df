"""What the end-to-end tests against Databricks emulators share: profiles in a config file that
both this process's MLflow client and the component read, and running the component with them."""
import contextlib
import os
import sys
import tempfile

from compare import WORKSPACE_ENV
from conftest import run_cli

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from databricks_emulator import Emulator  # noqa: E402,F401  (re-exported for the tests)

EXPERIMENT_ROOT = "/Users/alice@example.com/mlflow-copy"
# Where the guest finds the config file (`with_profiles` maps the folder there).
CFG_ENV = {"DATABRICKS_CONFIG_FILE": "/cfg/.databrickscfg"}


@contextlib.contextmanager
def profiles(*workspaces, oauth=()):
    """A `.databrickscfg` with one profile per emulator, named after it: its personal access
    token, or OAuth M2M for those in `oauth`. Yields the config folder; meanwhile MLflow's client
    in this process reads the same file, and reads artifacts with each workspace's token."""
    cfg_dir = tempfile.mkdtemp(prefix="databrickscfg-")
    with open(os.path.join(cfg_dir, ".databrickscfg"), "w") as f:
        for ws in workspaces:
            if ws in oauth:
                f.write(f"[{ws.name}]\nhost = {ws.host}\nclient_id = {ws.client_id}\n"
                        f"client_secret = {ws.client_secret}\n\n")
            else:
                f.write(f"[{ws.name}]\nhost = {ws.host}\ntoken = {ws.token}\n\n")
    old = os.environ.get("DATABRICKS_CONFIG_FILE")
    os.environ["DATABRICKS_CONFIG_FILE"] = os.path.join(cfg_dir, ".databrickscfg")
    # MLflow's artifact client for workspace artifacts reads credentials from the environment.
    WORKSPACE_ENV.update({f"databricks://{ws.name}": {**ws.pat_env(), "DATABRICKS_AUTH_TYPE": "pat"}
                          for ws in workspaces})
    try:
        yield cfg_dir
    finally:
        if old is None:
            os.environ.pop("DATABRICKS_CONFIG_FILE", None)
        else:
            os.environ["DATABRICKS_CONFIG_FILE"] = old


@contextlib.contextmanager
def signed_urls_only(ws):
    ws.files_api = False
    try:
        yield
    finally:
        ws.files_api = True


def with_profiles(cfg_dir):
    """wasmtime flags that give the guest the config file."""
    return ("--dir", f"{cfg_dir}::/cfg")


def copy(cfg_dir, args, env=None):
    """The component's command line with the profiles of `cfg_dir` (and `env` for the guest)."""
    return run_cli(args, env={**CFG_ENV, **(env or {})}, wasmtime_args=with_profiles(cfg_dir))
