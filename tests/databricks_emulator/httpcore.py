"""A small HTTP layer: request parsing, a route table, JSON answers, and request recording."""
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from .errors import ApiError, no_endpoint


class Request:
    def __init__(self, handler):
        self.method = handler.command
        url = urlsplit(handler.path)
        self.raw_path = url.path
        self.path = unquote(url.path)
        self.query_string = url.query
        self.query = parse_qs(url.query, keep_blank_values=True)
        self.headers = handler.headers
        self.body = b""
        self.principal = None
        self.match = None
        self.host = handler.headers.get("Host", "")
        self._handler = handler
        self._json = None

    def read_body(self):
        h = self._handler
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            chunks = []
            while True:
                size = int(h.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(h.rfile.read(size))
                h.rfile.readline()
            self.body = b"".join(chunks)
        else:
            n = int(self.headers.get("Content-Length") or 0)
            self.body = h.rfile.read(n) if n else b""

    def arg(self, name, default=None):
        """A request field from the query string (GET) or the JSON body (other methods)."""
        if name in self.query:
            return self.query[name][0]
        j = self.json
        if isinstance(j, dict) and name in j:
            return j[name]
        return default

    def args(self, name):
        if name in self.query:
            return self.query[name]
        j = self.json
        v = j.get(name) if isinstance(j, dict) else None
        if v is None:
            return []
        return v if isinstance(v, list) else [v]

    @property
    def json(self):
        if self._json is None:
            if not self.body:
                self._json = {}
            else:
                try:
                    self._json = json.loads(self.body)
                except ValueError:
                    raise ApiError("MALFORMED_REQUEST", "Invalid JSON given in the body of the request")
        return self._json


class Response:
    def __init__(self, status=200, body=None, headers=None, raw=None, content_type="application/json"):
        self.status = status
        self.headers = dict(headers or {})
        if raw is not None:
            self.data = raw
            self.content_type = content_type
        else:
            self.data = json.dumps(body if body is not None else {}).encode()
            self.content_type = "application/json"


class Router:
    def __init__(self):
        self.routes = []

    def add(self, methods, pattern, fn, auth=True):
        self.routes.append((set(methods.split("|")), re.compile("^" + pattern + "$"), fn, auth))

    def find(self, method, path):
        path_matched = False
        for methods, rx, fn, auth in self.routes:
            m = rx.match(path)
            if m:
                path_matched = True
                if method in methods:
                    return fn, auth, m
        return None, path_matched, None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "databricks-emulator"
    sys_version = ""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.app.dispatch(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def send(self, resp):
        self.send_response(resp.status)
        for k, v in resp.headers.items():
            self.send_header(k, v)
        if resp.data or resp.status not in (204, 304):
            self.send_header("Content-Type", resp.content_type)
        length = getattr(resp, "head_length", None) if self.command == "HEAD" else None
        self.send_header("Content-Length", str(length if length is not None else len(resp.data)))
        self.end_headers()
        if self.command != "HEAD" and resp.data:
            self.wfile.write(resp.data)


class HttpApp:
    """Dispatches to a Router, authenticates, records requests, and turns ApiError into JSON."""

    def __init__(self, router, authenticate, extra_headers=None):
        self.router = router
        self.authenticate = authenticate
        self.extra_headers = extra_headers or {}
        self.requests = []
        self._lock = threading.Lock()
        self.server = None
        # [{"method", "rx", "status", "body", "headers", "times", "seconds", "performed"}]: `times`
        # requests answer the error, or (`seconds`) every request for that long from the first
        # one; a `performed` fault lets the request take effect and answers the error after.
        self.faults = []

    def take_fault(self, method, path):
        now = time.time()
        with self._lock:
            for f in self.faults:
                if not ((f["method"] in (None, method)) and f["rx"].search(path)):
                    continue
                if f.get("seconds") is not None:
                    f.setdefault("until", now + f["seconds"])
                    if now < f["until"]:
                        f["hits"] = f.get("hits", 0) + 1
                        return f
                elif f["times"] > 0:
                    f["times"] -= 1
                    return f
        return None

    def dispatch(self, h):
        req = Request(h)
        entry = {"time": time.time(), "method": req.method, "path": req.path, "auth": None, "user": None,
                 "status": None}
        with self._lock:
            self.requests.append(entry)
        try:
            req.read_body()
            fn, auth, m = self.router.find(req.method, req.path)
            if fn is None:
                raise no_endpoint(req.method, req.path)
            req.match = m
            fault = self.take_fault(req.method, req.path)
            if fault is not None and not fault.get("performed"):
                entry["injected"] = True
                raise ApiError(fault["body"]["error_code"], fault["body"]["message"], status=fault["status"],
                               headers=fault["headers"])
            if auth:
                authz = req.headers.get("Authorization") or ""
                entry["auth"] = authz.split(" ", 1)[0].lower() if authz else "none"
                req.principal = self.authenticate(req.headers)
                entry["auth"] = req.principal.kind
                entry["user"] = req.principal.name
            resp = fn(req)
            if fault is not None:  # performed: the answer is lost, an error goes back instead
                entry["injected"] = True
                raise ApiError(fault["body"]["error_code"], fault["body"]["message"], status=fault["status"],
                               headers=fault["headers"])
        except ApiError as e:
            resp = Response(e.status, e.body(), headers=e.headers)
        except Exception as e:  # an emulator bug: answer 500 like a server would, and keep the trace
            import traceback
            traceback.print_exc()
            resp = Response(500, {"error_code": "INTERNAL_ERROR", "message": f"emulator error: {e!r}"})
        for k, v in self.extra_headers.items():
            resp.headers.setdefault(k, v)
        entry["status"] = resp.status
        h.send(resp)

    def serve(self, port):
        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
        self.server = Server(("127.0.0.1", port), _Handler)
        self.server.app = self
        # shutdown() waits for the loop's next poll: 0.05 s rather than the default 0.5 s per stop.
        t = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        t.start()
        return self.server.server_address[1]

    def shutdown(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
