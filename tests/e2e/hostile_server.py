"""A fake source MLflow server (stdlib http.server) that answers the reads of a copy with hostile
data, and a plain recording server to stand for a third host.

    HostileSource(artifact_uri=..., listing=..., files=..., huge_run=..., echo_auth=...)

answers `runs/get` (one finished run, `run_id`), `metrics/get-history` (empty),
`logged-models/search` and `runs/search` (none), `experiments/get`, `artifacts/list` (from
`listing`: a function of the directory, or a dict) and artifact downloads (from `files`:
path -> bytes, or (bytes, how) with how one of "normal", "no_length" (chunked, no
content-length), "no_length:N" (only N bytes of it, chunked) or "short:N" (N bytes with
content-length N); the listing gives every file its full size).
`huge_run=N` makes `runs/get` answer N bytes of valid-looking JSON, generated lazily (never held
in memory), with a content-length or (`huge_chunked=True`) chunked. `echo_auth=True` makes
`runs/get` fail with a message that quotes the request's Authorization header back.
Every request is recorded in `.traffic`.
"""
import http.server
import json
import threading
import urllib.parse
import uuid

from fault_proxy import QuietServer, Traffic

ARTIFACTS_ROUTE = "/api/2.0/mlflow-artifacts/artifacts/"


class RecordingServer:
    """Answers every request with 200 `{}` and records it (a third host)."""

    def __init__(self):
        self.traffic = Traffic()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                owner.traffic.add(self.command, self.path, self.headers)
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                owner.route(self, urllib.parse.urlsplit(self.path))

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.authority = f"127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def route(self, h, url):
        reply_json(h, 200, {})

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def reply_json(h, status, value):
    body = json.dumps(value).encode()
    h.send_response(status)
    h.send_header("content-type", "application/json")
    h.send_header("content-length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def not_found(h, what):
    reply_json(h, 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"{what} not found"})


class HostileSource(RecordingServer):
    def __init__(self, *, artifact_uri=None, listing=None, files=None, huge_run=None, huge_chunked=False,
                 echo_auth=False):
        self.run_id = uuid.uuid4().hex
        self.artifact_uri = artifact_uri or f"mlflow-artifacts:/1/{self.run_id}/artifacts"
        self.files = {path: (v if isinstance(v, tuple) else (v, "normal")) for path, v in (files or {}).items()}
        if listing is None:
            listing = {"": [{"path": p, "is_dir": False, "file_size": len(d)} for p, (d, _) in self.files.items()]}
        self.listing = listing
        self.huge_run, self.huge_chunked, self.echo_auth = huge_run, huge_chunked, echo_auth
        super().__init__()

    def run(self):
        return {"info": {"run_id": self.run_id, "run_uuid": self.run_id, "experiment_id": "1",
                         "run_name": "hostile", "user_id": "mallory", "status": "FINISHED",
                         "start_time": 1_600_000_000_000, "end_time": 1_600_000_060_000,
                         "artifact_uri": self.artifact_uri, "lifecycle_stage": "active"},
                "data": {"params": [{"key": "p", "value": "1"}], "tags": [{"key": "team", "value": "red"}]},
                "inputs": {}, "outputs": {}}

    def route(self, h, url):
        path, query = url.path, dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        if path.endswith("/mlflow/runs/get"):
            if self.echo_auth:
                return reply_json(h, 400, {"error_code": "INVALID_PARAMETER_VALUE",
                                           "message": f"refused credentials {h.headers.get('authorization')!s}"})
            if self.huge_run:
                return self._huge(h)
            if query.get("run_id") != self.run_id:
                return not_found(h, f"run {query.get('run_id')}")
            return reply_json(h, 200, {"run": self.run()})
        if path.endswith("/mlflow/experiments/get"):
            return reply_json(h, 200, {"experiment": {"experiment_id": "1", "name": "hostile",
                                                      "lifecycle_stage": "active"}})
        if path.endswith("/mlflow/metrics/get-history"):
            return reply_json(h, 200, {"metrics": []})
        if path.endswith("/mlflow/logged-models/search"):
            return reply_json(h, 200, {"models": []})
        if path.endswith("/mlflow/runs/search"):
            return reply_json(h, 200, {"runs": []})
        if path.endswith("/mlflow/artifacts/list"):
            directory = query.get("path", "")
            entries = self.listing(directory) if callable(self.listing) else self.listing.get(directory, [])
            return reply_json(h, 200, {"root_uri": self.artifact_uri, "files": entries})
        if ARTIFACTS_ROUTE in path or path.endswith("/get-artifact"):
            wanted = query.get("path") if path.endswith("/get-artifact") else urllib.parse.unquote(path)
            return self._file(h, wanted)
        return reply_json(h, 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"no route {path}"})

    def _file(self, h, wanted):
        for name, (data, how) in self.files.items():
            if wanted == name or wanted.endswith("/" + name):
                break
        else:
            return not_found(h, f"artifact {wanted}")
        h.send_response(200)
        h.send_header("content-type", "application/octet-stream")
        if how.startswith("no_length"):
            data = data[:int(how.split(":")[1])] if ":" in how else data
            h.send_header("transfer-encoding", "chunked")
            h.end_headers()
            for i in range(0, len(data), 4096):
                piece = data[i:i + 4096]
                h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            h.wfile.write(b"0\r\n\r\n")
            return
        if how.startswith("short:"):
            data = data[:int(how.split(":")[1])]
        h.send_header("content-length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _huge(self, h):
        """`{"run": {...finished run..., "data": {"tags": [<N bytes of tags>]}}}`, made on the fly."""
        prefix = b'{"run": {"info": ' + json.dumps(self.run()["info"]).encode() + b', "data": {"tags": ['
        suffix = b'{"key": "end", "value": "end"}]}}}'
        entry = b'{"key": "padding", "value": "' + b"x" * 990 + b'"}, '
        chunk = entry * 1024
        count = max(1, (self.huge_run - len(prefix) - len(suffix)) // len(chunk))
        h.send_response(200)
        h.send_header("content-type", "application/json")
        if self.huge_chunked:
            h.send_header("transfer-encoding", "chunked")
        else:
            h.send_header("content-length", str(len(prefix) + count * len(chunk) + len(suffix)))
        h.end_headers()
        try:
            for piece in [prefix] + [chunk] * count + [suffix]:
                h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if self.huge_chunked else piece)
            if self.huge_chunked:
                h.wfile.write(b"0\r\n\r\n")
        except OSError:
            h.close_connection = True
