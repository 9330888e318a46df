"""A deterministic, rule-driven loopback HTTP proxy in front of a real MLflow server.

Every request is recorded (`proxy.traffic`: method, path, host header, Authorization present and
how many times, the action taken). Rules decide what happens to a request:

    rule = proxy.add(method="POST", path="/runs/delete-tag", drop_answer=True)

Matching: `method` (None: any), `path` (a substring of the path with its query, or a compiled
regular expression searched in it), `body` (bytes the request body must contain; only bodies
under 1 MiB are looked at), `min_body` (content-length at least this), `min_response` (the
server's answer has at least this many bytes: checked once the answer arrives), `after` (another
rule that must have completed its action once before). A rule fires on its `nth` match and at most
`times` times after that (None: on every later match), or with `every=K` on every K-th match.
The first rule that fires on a request acts; a rule without an action only counts (`done`).

Actions:
  drop_before           close the connection without forwarding
  drop_answer           forward, let the server act and answer, then close without answering
  hang                  accept and never answer (until the rule is released or the proxy closes)
  stall_body_after=N    answer with the headers and N body bytes, then stall
  cut_body_after=N      answer with the headers (full length) and N body bytes, then close
  stop_reading_upload=N read N bytes of the request body, then stop reading (and never answer)
  cut_upload_after=N    read N bytes of the request body, then close
  throttle=B            forward, moving request and answer bodies at B bytes per second
  status=S              answer S (with Retry-After: retry_after, and the body `answer` if given)
                        without forwarding
  rewrite=(old, new)    forward, replace bytes in the answer
  delay=T               wait T seconds, then forward

Each rule records `matched`, `fired`, `done`, and an event `hit` set when it first fires.

The attributes of the older faulty proxy (`fail_artifact_puts_after`, `flaky_every`, `rewrite`,
`delay_uploads`, `cut_upload_after`, `truncate_download_after`, `injected`) still work; each
installs a rule.
"""
import http.client
import http.server
import re
import socket
import threading
import time

ARTIFACTS = "/mlflow-artifacts/artifacts/"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "host"}
SMALL_BODY = 1 << 20
CHUNK = 64 * 1024
ACTIONS = ("drop_before", "drop_answer", "hang", "stall_body_after", "cut_body_after",
           "stop_reading_upload", "cut_upload_after", "throttle", "status", "rewrite", "delay")


class Record:
    """One request as a server saw it."""

    def __init__(self, method, path, headers):
        self.method = method
        self.path = path
        self.host = headers.get("host")
        self.auth_count = len(headers.get_all("authorization") or [])
        self.auth = self.auth_count > 0
        self.action = None
        self.time = time.monotonic()

    def __repr__(self):
        return f"{self.method} {self.path} (host {self.host}, auth {self.auth_count}, {self.action})"


class Traffic:
    """Thread-safe list of the requests a server received."""

    def __init__(self):
        self.lock = threading.Lock()
        self.records = []

    def add(self, method, path, headers):
        record = Record(method, path, headers)
        with self.lock:
            self.records.append(record)
        return record

    def matching(self, method=None, path=""):
        with self.lock:
            return [r for r in self.records if _matches(r.method, r.path, method, path)]

    def __len__(self):
        with self.lock:
            return len(self.records)


def _matches(method, path, want_method, want_path):
    if want_method and method != want_method:
        return False
    if isinstance(want_path, re.Pattern):
        return bool(want_path.search(path))
    return want_path in path


class Rule:
    def __init__(self, method=None, path="", *, nth=1, times=1, every=None, body=None, min_body=None,
                 min_response=None, after=None, retry_after="0", answer=None, name=None, **action):
        unknown = set(action) - set(ACTIONS)
        if unknown or len(action) > 1:
            raise ValueError(f"one action of {ACTIONS}, got {sorted(action)}")
        self.method, self.path, self.nth, self.times, self.every = method, path, nth, times, every
        self.body, self.min_body, self.min_response, self.after = body, min_body, min_response, after
        self.retry_after, self.answer, self.name = retry_after, answer, name
        self.action, self.arg = next(iter(action.items()), (None, None))
        self.matched = self.fired = self.done = 0
        self.hit = threading.Event()
        self.release = threading.Event()

    def _applies(self, method, path, body, length):
        if not _matches(method, path, self.method, self.path):
            return False
        if self.body is not None and (body is None or self.body not in body):
            return False
        return self.min_body is None or (length or 0) >= self.min_body

    def _may_fire(self):
        if self.after is not None and self.after.done == 0:
            return False
        if self.every is not None:
            return self.matched % self.every == 0
        return self.matched >= self.nth and (self.times is None or self.fired < self.times)

    def __repr__(self):
        return (f"Rule({self.method} {self.path!r} {self.action}={self.arg!r}: matched {self.matched}, "
                f"fired {self.fired}, done {self.done})")


class QuietServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that does not print the connections its clients drop."""
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass


class FaultProxy:
    def __init__(self, target_port, target_host="127.0.0.1"):
        self.target = (target_host, target_port)
        self.rules = []
        self.traffic = Traffic()
        self.injected = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.connections = set()
        # Connections accepted so far (a client that reuses them opens few).
        self.accepted = 0
        self._legacy = {}
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                with proxy.lock:
                    proxy.connections.add(self.connection)
                    proxy.accepted += 1

            def finish(self):
                with proxy.lock:
                    proxy.connections.discard(self.connection)
                try:
                    super().finish()
                except OSError:
                    pass

            def _handle(self):
                try:
                    proxy._serve(self)
                except (ConnectionError, socket.timeout, OSError):
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        class Server(QuietServer):

            def server_bind(self):
                # A small receive window, so that a proxy that stops reading an upload stops the
                # sender soon (loopback windows otherwise grow to tens of MiB).
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
                super().server_bind()

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    # Rules

    def add(self, method=None, path="", **kwargs):
        rule = Rule(method, path, **kwargs)
        with self.lock:
            self.rules.append(rule)
        return rule

    def remove(self, rule):
        with self.lock:
            if rule in self.rules:
                self.rules.remove(rule)
        rule.release.set()

    def clear(self):
        """Removes every rule and lets every hung request go."""
        with self.lock:
            rules, self.rules = self.rules, []
        for rule in rules:
            rule.release.set()

    def _select(self, method, path, body, length, response_length=None):
        """The rule that acts on this request (or, with response_length, on its answer)."""
        with self.lock:
            chosen = None
            for rule in self.rules:
                if (rule.min_response is None) != (response_length is None):
                    continue
                if not rule._applies(method, path, body, length):
                    continue
                if response_length is not None and response_length < rule.min_response:
                    continue
                rule.matched += 1
                if chosen is None and rule._may_fire():
                    chosen = rule
            if chosen is not None:
                chosen.fired += 1
                self.injected += 1
        if chosen is not None:
            chosen.hit.set()
        return chosen

    def _done(self, rule):
        if rule is not None:
            with self.lock:
                rule.done += 1

    # Serving

    def _wait(self, rule):
        while not (self.stopping.is_set() or rule.release.is_set()):
            time.sleep(0.05)

    def _serve(self, h):
        length = h.headers.get("content-length")
        length = int(length) if length is not None else None
        body = h.rfile.read(length) if length is not None and length <= SMALL_BODY else None
        record = self.traffic.add(h.command, h.path, h.headers)
        rule = self._select(h.command, h.path, body, length)
        action, arg = (rule.action, rule.arg) if rule else (None, None)
        record.action = action
        if action == "drop_before":
            return self._drop(h, rule)
        if action == "hang":
            self._wait(rule)
            return self._drop(h, rule)
        if action == "status":
            for _ in self._request_body(h, body, length):
                pass
            message = rule.answer or b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "injected by the fault proxy"}'
            self._done(rule)
            return self._reply(h, arg, message, [("retry-after", str(rule.retry_after)),
                                                 ("content-type", "application/json")])
        if action in ("stop_reading_upload", "cut_upload_after"):
            remaining = arg
            for chunk in self._request_body(h, body, length, limit=arg):
                remaining -= len(chunk)
            if action == "stop_reading_upload":
                self._done(rule)
                self._wait(rule)
            return self._drop(h, rule)
        if action == "delay":
            time.sleep(arg)
        throttle = arg if action == "throttle" else None
        conn = http.client.HTTPConnection(*self.target, timeout=600)
        try:
            headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP}
            chunked = h.headers.get("transfer-encoding", "").lower() == "chunked"
            if body is not None or (length is None and not chunked):
                conn.request(h.command, h.path, body=body, headers=headers)
            else:
                conn.request(h.command, h.path, body=self._request_body(h, None, length, throttle=throttle),
                             headers=headers, encode_chunked=length is None)
            resp = conn.getresponse()
            self._answer(h, rule, resp, record)
        finally:
            conn.close()

    def _answer(self, h, rule, resp, record):
        action, arg = (rule.action, rule.arg) if rule else (None, None)
        kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP | {"content-length"}]
        declared = resp.getheader("content-length")
        whole = None
        if declared is None or action in ("drop_answer", "rewrite"):
            whole = resp.read()
        size = len(whole) if whole is not None else int(declared)
        if rule is None:
            rule = self._select(h.command, h.path, None, None, response_length=size)
            action, arg = (rule.action, rule.arg) if rule else (None, None)
            record.action = action
        if action == "drop_answer":
            return self._drop(h, rule)
        if action == "rewrite":
            whole = whole.replace(*arg)
            size = len(whole)
        h.send_response(resp.status)
        for k, v in kept:
            h.send_header(k, v)
        h.send_header("content-length", str(size))
        h.end_headers()
        sent = 0
        limit = arg if action in ("stall_body_after", "cut_body_after") else None
        rate = arg if action == "throttle" else None
        chunks = [whole] if whole is not None else iter(lambda: resp.read(CHUNK), b"")
        for chunk in chunks:
            for piece in _paced(chunk, rate):
                if limit is not None and sent + len(piece) >= limit:
                    h.wfile.write(piece[:limit - sent])
                    h.wfile.flush()
                    if action == "stall_body_after":
                        self._done(rule)
                        self._wait(rule)
                    return self._drop(h, rule)
                h.wfile.write(piece)
                sent += len(piece)
        h.wfile.flush()
        self._done(rule)

    def _request_body(self, h, body, length, limit=None, throttle=None):
        """The request body in chunks (at most `limit` bytes of it, paced at `throttle`)."""
        def raw():
            if body is not None:
                yield body
            elif length is not None:
                remaining = length
                while remaining:
                    chunk = h.rfile.read(min(remaining, CHUNK))
                    if not chunk:
                        return
                    remaining -= len(chunk)
                    yield chunk
            elif h.headers.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    size = int(h.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        h.rfile.readline()
                        return
                    yield h.rfile.read(size)
                    h.rfile.readline()
        taken = 0
        for chunk in raw():
            if limit is not None and taken + len(chunk) >= limit:
                yield chunk[:limit - taken]
                return
            taken += len(chunk)
            yield from _paced(chunk, throttle)

    def _reply(self, h, status, body, headers):
        h.send_response(status)
        for k, v in headers:
            h.send_header(k, v)
        h.send_header("content-length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _drop(self, h, rule):
        h.close_connection = True
        try:
            h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if rule is not None and rule.action not in ("stall_body_after", "stop_reading_upload"):
            self._done(rule)

    def close(self):
        self.stopping.set()
        self.server.shutdown()
        with self.lock:
            connections = list(self.connections)
        for c in connections:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server.server_close()


def _paced(chunk, rate):
    """Splits a chunk into tenth-of-a-second pieces at `rate` bytes per second (None: at once)."""
    if not rate:
        yield chunk
        return
    step = max(1, rate // 10)
    for i in range(0, len(chunk), step):
        piece = chunk[i:i + step]
        time.sleep(len(piece) / rate)
        yield piece


# The older faulty proxy's knobs, each as a rule.
_LEGACY = {
    "fail_artifact_puts_after": lambda n: dict(method="PUT", path=ARTIFACTS, nth=n + 1, times=None, status=503),
    "flaky_every": lambda k: dict(every=k, status=503),
    "rewrite": lambda t: dict(path=t[0], times=None, rewrite=(t[1], t[2])),
    "delay_uploads": lambda s: dict(method="PUT", path=ARTIFACTS, times=None, delay=s),
    "cut_upload_after": lambda n: dict(method="PUT", path=ARTIFACTS, min_body=n + 1, cut_upload_after=n),
    "truncate_download_after": lambda n: dict(method="GET", path=ARTIFACTS, min_response=n + 1, cut_body_after=n),
}


def _legacy_knob(name):
    def get(self):
        return self._legacy.get(name, (None, None))[0]

    def set_(self, value):
        old = self._legacy.pop(name, None)
        if old:
            self.remove(old[1])
        if value:
            self._legacy[name] = (value, self.add(**_LEGACY[name](value)))
    return property(get, set_)


for _name in _LEGACY:
    setattr(FaultProxy, _name, _legacy_knob(_name))
