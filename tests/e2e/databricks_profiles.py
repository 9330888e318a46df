"""A `.databrickscfg` for the tests: written to a temporary folder (which the component gets with
`--dir <folder>::/cfg`) and named in `DATABRICKS_CONFIG_FILE` for MLflow's client in this process
while the block runs; and running the component with the profiles of such a file."""
import contextlib
import os
import tempfile

from compare import WORKSPACE_ENV
from conftest import run_cli


def pat_profile(emu):
    return {"host": emu.host, "token": emu.token}


def oauth_profile(emu):
    return {"host": emu.host, "client_id": emu.client_id, "client_secret": emu.client_secret}


@contextlib.contextmanager
def profiles_file(profiles):
    """`profiles`: {name: {field: value}}. Yields the folder holding `.databrickscfg`."""
    cfg_dir = tempfile.mkdtemp(prefix="databrickscfg-")
    with open(os.path.join(cfg_dir, ".databrickscfg"), "w") as f:
        for name, fields in profiles.items():
            f.write(f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in fields.items()) + "\n")
    old = os.environ.get("DATABRICKS_CONFIG_FILE")
    os.environ["DATABRICKS_CONFIG_FILE"] = os.path.join(cfg_dir, ".databrickscfg")
    try:
        yield cfg_dir
    finally:
        if old is None:
            os.environ.pop("DATABRICKS_CONFIG_FILE", None)
        else:
            os.environ["DATABRICKS_CONFIG_FILE"] = old


# ---- workspaces: their profiles, and the component run with them ------------------------------

EXPERIMENT_ROOT = "/Users/alice@example.com/mlflow-copy"
# Where the guest finds the config file (`with_profiles` maps the folder there).
CFG_ENV = {"DATABRICKS_CONFIG_FILE": "/cfg/.databrickscfg"}


@contextlib.contextmanager
def workspace_profiles(*workspaces, oauth=()):
    """One profile per emulator, named after it: its personal access token, or OAuth M2M for
    those in `oauth`. Yields the config folder; meanwhile MLflow's client in this process reads
    artifacts with each workspace's token (it takes them from the environment only)."""
    profiles = {ws.name: (oauth_profile if ws in oauth else pat_profile)(ws) for ws in workspaces}
    WORKSPACE_ENV.update({f"databricks://{ws.name}": {**ws.pat_env(), "DATABRICKS_AUTH_TYPE": "pat"}
                          for ws in workspaces})
    with profiles_file(profiles) as cfg_dir:
        yield cfg_dir


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
