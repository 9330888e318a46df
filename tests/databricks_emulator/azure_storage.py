"""Azure Blob storage for workspace artifacts (`Emulator(cloud="azure")`): azurite's blob server
(npm package `azurite`, installed by scripts/setup.sh under .work/azurite) with a per-emulator
account and key, behind a small strict proxy.

Signed URLs are blob service SAS URLs (`type: AZURE_SAS_URI`); azurite itself checks the SAS
signature, permissions and expiry. The proxy records every request and refuses what the emulator
must refuse whatever azurite does: a bearer token (403 AuthenticationFailed), a chunked body or an
upload without Content-Length (411 MissingContentLengthHeader), a request without a SAS (401
NoAuthenticationInformation).

ADLS Gen2 (the DFS endpoint behind `AZURE_ADLS_GEN2_SAS_URI` and UC's abfss storage) is not
emulated: azurite does not serve it."""
import base64
import datetime
import http.client
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qsl, quote, urlsplit

from .storage import HOP_BY_HOP, _ProxyHandler, free_port

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
AZURITE_BIN = os.environ.get("AZURITE_BLOB_BIN", os.path.join(ROOT, ".work", "azurite", "node_modules", ".bin",
                                                              "azurite-blob"))


def azure_error(code, message, status):
    body = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{message}\n'
            f"RequestId:{uuid.uuid4()}\nTime:{datetime.datetime.utcnow().isoformat()}Z</Message></Error>").encode()
    return status, body


class _AzureProxyHandler(_ProxyHandler):
    server_version = "Windows-Azure-Blob/1.0"

    def _handle(self):
        st = self.server.storage
        url = urlsplit(self.path)
        pairs = parse_qsl(url.query, keep_blank_values=True)
        q = dict(pairs)
        authz = self.headers.get("Authorization") or ""
        sas = "sig" in q
        kind = "bearer" if authz.lower().startswith("bearer") else ("other" if authz else ("sas" if sas else "none"))
        entry = {"time": time.time(), "method": self.command, "path": url.path,
                 "query": sorted(k for k, _ in pairs if k not in ("sig", "se", "st", "sp", "sv", "sr", "spr", "skoid",
                                                                   "sktid", "skt", "ske", "sks", "skv", "sip")),
                 "auth": kind, "authorization_scheme": authz.split(" ", 1)[0] if authz else None,
                 "has_bearer": kind == "bearer", "status": None}
        st._record(entry)

        def fail(status_body, close=False):
            entry["status"] = status_body[0]
            self._reply(status_body[0], status_body[1], close=close)

        fault = st._take_fault(self.command, url.path)
        if fault is not None:
            entry["injected"] = True
            length = self.headers.get("Content-Length")
            if length:
                self.rfile.read(int(length))
            return fail(azure_error(fault["code"], fault["message"], fault["status"]), close=not length)
        if kind == "bearer":
            return fail(azure_error("AuthenticationFailed", "Server failed to authenticate the request. Make sure "
                                    "the value of Authorization header is formed correctly including the "
                                    "signature.", 403), close=True)
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return fail(azure_error("MissingContentLengthHeader", "Content-Length HTTP header is missing.", 411),
                        close=True)
        length = self.headers.get("Content-Length")
        if self.command in ("PUT", "POST", "PATCH") and length is None:
            return fail(azure_error("MissingContentLengthHeader", "Content-Length HTTP header is missing.", 411),
                        close=True)
        body = self.rfile.read(int(length)) if length else b""
        entry["bytes"] = len(body)
        if kind not in ("sas",):
            return fail(azure_error("NoAuthenticationInformation", "Server failed to authenticate the request. "
                                    "Please refer to the information in the www-authenticate header.", 401))
        conn = http.client.HTTPConnection("127.0.0.1", st.azurite_port, timeout=120)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                if k.lower() in HOP_BY_HOP or k.lower() in ("content-length", "host"):
                    continue
                conn.putheader(k, v)
            conn.putheader("Host", f"127.0.0.1:{st.azurite_port}")
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
            data = resp.read()
            entry["status"] = resp.status
            self._reply(resp.status, data, resp.getheaders())
        finally:
            conn.close()


class AzureBlobStorage:
    """Same interface as storage.S3Storage for what the workspace uses (presign, list, head, get, put,
    delete, copy_prefix); `bucket` is the container."""

    credential_type = "AZURE_SAS_URI"

    def __init__(self, presign_ttl=300.0, name="ws"):
        from azure.storage.blob import BlobServiceClient

        if not os.path.exists(AZURITE_BIN):
            raise RuntimeError(f"azurite is not installed at {AZURITE_BIN} (scripts/setup.sh installs it)")
        self.presign_ttl = float(presign_ttl)
        self.account = f"dbx{name.lower()}{secrets.token_hex(3)}"[:24]
        self.key = base64.b64encode(secrets.token_bytes(64)).decode()
        self.azurite_port = free_port()
        self.dir = tempfile.mkdtemp(prefix="dbx-emulator-azurite-")
        env = dict(os.environ, AZURITE_ACCOUNTS=f"{self.account}:{self.key}")
        self.log = open(os.path.join(self.dir, "azurite.log"), "wb")
        self.proc = subprocess.Popen([AZURITE_BIN, "--blobHost", "127.0.0.1", "--blobPort", str(self.azurite_port),
                                      "--location", self.dir, "--silent",
                                      "--disableProductStyleUrl", "--disableTelemetry", "--skipApiVersionCheck"],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.requests = []
        self.faults = []
        self._rec_lock = threading.Lock()
        self.bucket = f"root-{secrets.token_hex(4)}"
        self._port = free_port()
        self.endpoint = f"http://127.0.0.1:{self._port}"
        direct = f"http://127.0.0.1:{self.azurite_port}/{self.account}"
        self.client = BlobServiceClient(account_url=direct, credential={"account_name": self.account,
                                                                        "account_key": self.key})
        deadline = time.time() + 60
        while True:
            try:
                self.client.create_container(self.bucket)
                break
            except Exception:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.close()
                    raise RuntimeError(f"azurite did not start; see {self.log.name}")
                time.sleep(0.3)
        self._proxy = ThreadingHTTPServer(("127.0.0.1", self._port), _AzureProxyHandler)
        self._proxy.daemon_threads = True
        self._proxy.storage = self
        threading.Thread(target=self._proxy.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        if getattr(self, "_proxy", None):
            self._proxy.shutdown()
            self._proxy.server_close()
            self._proxy = None
        if self.proc:
            try:
                os.killpg(self.proc.pid, 15)
                self.proc.wait(2)  # a test server: a short grace, then SIGKILL
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, 9)
                except ProcessLookupError:
                    pass
            self.proc = None
            self.log.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def _record(self, entry):
        with self._rec_lock:
            self.requests.append(entry)

    def _take_fault(self, method, path):
        with self._rec_lock:
            for f in self.faults:
                if f["times"] > 0 and f["method"] in (None, method) and f["rx"].search(path):
                    f["times"] -= 1
                    return f
        return None

    def storage_requests(self):
        with self._rec_lock:
            return list(self.requests)

    # ---- SAS URLs -----------------------------------------------------------------------------------
    def presign(self, op, bucket, key, ttl=None, **params):
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        if params:
            raise ValueError("Azure SAS URLs take no extra parameters (no S3 multipart on Azure)")
        write = op in ("put_object", "write")
        perm = BlobSasPermissions(read=True) if not write else BlobSasPermissions(create=True, write=True, add=True)
        expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
            seconds=max(1, int(round(ttl or self.presign_ttl))))
        sas = generate_blob_sas(self.account, bucket, key, account_key=self.key, permission=perm, expiry=expiry,
                                protocol="https,http")
        return f"{self.endpoint}/{self.account}/{bucket}/{quote(key)}?{sas}"

    # ---- object helpers (S3-shaped answers) -----------------------------------------------------------
    def list(self, bucket, prefix, delimiter=None):
        cc = self.client.get_container_client(bucket)
        objs, dirs = [], []
        items = cc.walk_blobs(name_starts_with=prefix, delimiter=delimiter) if delimiter else \
            cc.list_blobs(name_starts_with=prefix)
        for b in items:
            if hasattr(b, "prefix") and not hasattr(b, "size"):
                dirs.append(b.prefix)
            elif getattr(b, "size", None) is None and b.name.endswith("/"):
                dirs.append(b.name)
            else:
                objs.append({"Key": b.name, "Size": b.size, "LastModified": b.last_modified})
        return objs, dirs

    def head(self, bucket, key):
        try:
            p = self.client.get_blob_client(bucket, key).get_blob_properties()
        except Exception:
            return None
        return {"ContentLength": p.size, "LastModified": p.last_modified}

    def put(self, bucket, key, data):
        self.client.get_blob_client(bucket, key).upload_blob(data, overwrite=True)

    def get(self, bucket, key, range_header=None):
        import io

        bc = self.client.get_blob_client(bucket, key)
        if range_header and range_header.startswith("bytes="):
            start_s, _, end_s = range_header[6:].partition("-")
            start = int(start_s or 0)
            length = (int(end_s) - start + 1) if end_s else None
            data = bc.download_blob(offset=start, length=length).readall()
            size = bc.get_blob_properties().size
            return {"Body": io.BytesIO(data), "ContentRange": f"bytes {start}-{start + len(data) - 1}/{size}"}
        return {"Body": io.BytesIO(bc.download_blob().readall())}

    def delete(self, bucket, key):
        self.client.get_blob_client(bucket, key).delete_blob()

    def copy_prefix(self, src_bucket, src_prefix, dst_bucket, dst_prefix):
        objs, _ = self.list(src_bucket, src_prefix)
        for o in objs:
            data = self.client.get_blob_client(src_bucket, o["Key"]).download_blob().readall()
            self.put(dst_bucket, dst_prefix + o["Key"][len(src_prefix):], data)
        return len(objs)
