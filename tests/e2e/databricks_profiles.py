"""A `.databrickscfg` for the tests: written to a temporary folder (which the component gets with
`--dir <folder>::/cfg`) and named in `DATABRICKS_CONFIG_FILE` for MLflow's client in this process
while the block runs."""
import contextlib
import os
import tempfile


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
