"""Run the emulator by hand:

    .venv/bin/python -m tests.databricks_emulator --port 8765 --token dapi-test --user alice@example.com

It prints the host, the token and the OAuth client, and serves until interrupted."""
import argparse
import json
import signal
import threading

from .server import Emulator


def main():
    p = argparse.ArgumentParser(prog="python -m tests.databricks_emulator")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--token", action="append", default=[], help="a PAT (repeatable; pairs with --user)")
    p.add_argument("--user", action="append", default=[], help="the user of the matching --token")
    p.add_argument("--client-id", default=None)
    p.add_argument("--client-secret", default=None)
    p.add_argument("--oauth-token-ttl", type=float, default=3600)
    p.add_argument("--presign-ttl", type=float, default=300)
    p.add_argument("--temp-credentials-ttl", type=float, default=900)
    p.add_argument("--no-files-api", action="store_true")
    p.add_argument("--catalog", action="append", default=[], help="CATALOG.SCHEMA that exists (repeatable)")
    p.add_argument("--uc-sdk-models-repo", action="store_true")
    p.add_argument("--uc-default-storage", action="store_true")
    p.add_argument("--ws-aliases", action="store_true")
    p.add_argument("--cloud", choices=["aws", "azure"], default="aws",
                   help="where workspace artifacts live (azure: azurite, SAS URLs)")
    a = p.parse_args()
    users = None
    if a.token:
        names = a.user + ["alice@example.com"] * (len(a.token) - len(a.user))
        users = dict(zip(a.token, names))
    clients = {a.client_id: a.client_secret} if a.client_id else None
    catalogs = None
    if a.catalog:
        catalogs = {}
        for cs in a.catalog:
            c, s = cs.split(".", 1)
            catalogs.setdefault(c, []).append(s)
    emu = Emulator(users=users, oauth_clients=clients, oauth_token_ttl=a.oauth_token_ttl,
                   presign_ttl=a.presign_ttl, temp_credentials_ttl=a.temp_credentials_ttl,
                   files_api=not a.no_files_api, catalogs=catalogs, uc_sdk_models_repo=a.uc_sdk_models_repo,
                   uc_storage_mode="DEFAULT_STORAGE" if a.uc_default_storage else "CUSTOMER_HOSTED",
                   ws_aliases=a.ws_aliases, port=a.port, cloud=a.cloud)
    emu.start()
    info = {"host": emu.host, "s3_endpoint": emu.s3_endpoint, "ws_storage_endpoint": emu.ws_storage_endpoint, "bucket": emu.bucket, "uc_bucket": emu.uc_bucket,
            "catalogs": emu.catalogs, "users": sorted(emu.workspace_users)}
    # Credentials given on the command line are not echoed; generated ones are printed so they can be used.
    if not a.token:
        info["generated_token"] = {"token": emu.token, "user": emu.user}
    if not a.client_id:
        info["generated_oauth_client"] = {"client_id": emu.client_id, "client_secret": emu.client_secret}
    print(json.dumps(info, indent=2), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()


if __name__ == "__main__":
    main()
