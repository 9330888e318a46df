"""A loopback HTTP proxy in front of a real MLflow server that fails on purpose.

Request bodies are streamed through (artifact uploads can be large); responses, which are small
on the destination side, are read whole. Faults:
  fail_artifact_puts_after = N  after N artifact uploads went through, answer every further
                                upload with 503 (a destination that stays broken)
  flaky_every = K               answer every K-th request with 503 + Retry-After: 0 (transient)
  delay_uploads = seconds       hold each artifact upload that long before forwarding it
  cut_upload_after = N          once: drop the connection after N bytes of an artifact upload
                                larger than N
  truncate_download_after = N   once: send the full length header of an artifact download, then
                                only N bytes, then drop the connection
  rewrite = (path_part, old, new)  replace bytes in the answers to requests whose path contains
                                path_part (to show the copier a state a real server rarely has)
"""
import http.client
import http.server
import socket
import threading
import time

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "host"}


class FaultyProxy:
    def __init__(self, target_port):
        """Forwards to the server on 127.0.0.1:target_port."""
        self.target_port = target_port
        self.fail_artifact_puts_after = None
        self.flaky_every = None
        self.rewrite = None
        self.delay_uploads = 0
        self.cut_upload_after = None
        self.truncate_download_after = None
        self.requests = 0
        self.artifact_puts = 0
        self.injected = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _body(self):
                length = self.headers.get("content-length")
                if length is not None:
                    remaining = int(length)
                    while remaining:
                        chunk = self.rfile.read(min(remaining, 1 << 20))
                        if not chunk:
                            return
                        remaining -= len(chunk)
                        yield chunk
                elif self.headers.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return
                        yield self.rfile.read(size)
                        self.rfile.readline()

            def _reply(self, status, body=b"", headers=()):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _drop(self):
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def _handle(self):
                is_upload = self.command == "PUT" and "/mlflow-artifacts/artifacts/" in self.path
                with proxy.lock:
                    proxy.requests += 1
                    n = proxy.requests
                    fail = proxy.flaky_every and n % proxy.flaky_every == 0
                    if is_upload and not fail:
                        if proxy.fail_artifact_puts_after is not None and proxy.artifact_puts >= proxy.fail_artifact_puts_after:
                            fail = True
                        else:
                            proxy.artifact_puts += 1
                    if fail:
                        proxy.injected += 1
                if fail:
                    for _ in self._body():
                        pass
                    self._reply(503, b"injected failure", [("retry-after", "0"), ("content-type", "text/plain")])
                    return
                length = int(self.headers.get("content-length") or 0)
                if is_upload and proxy.cut_upload_after is not None and length > proxy.cut_upload_after:
                    with proxy.lock:
                        cut, proxy.cut_upload_after = proxy.cut_upload_after, None
                        proxy.injected += 1
                    self.rfile.read(cut)
                    self._drop()
                    return
                if is_upload and proxy.delay_uploads:
                    time.sleep(proxy.delay_uploads)
                conn = http.client.HTTPConnection("127.0.0.1", proxy.target_port, timeout=300)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                chunked = self.headers.get("content-length") is None and self.command in ("POST", "PUT", "PATCH", "DELETE")
                conn.request(self.command, self.path, body=self._body(), headers=headers, encode_chunked=chunked)
                resp = conn.getresponse()
                body = resp.read()
                conn.close()
                if proxy.rewrite and proxy.rewrite[0] in self.path:
                    body = body.replace(proxy.rewrite[1], proxy.rewrite[2])
                kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP | {"content-length"}]
                is_download = self.command == "GET" and "/mlflow-artifacts/artifacts/" in self.path
                if is_download and proxy.truncate_download_after is not None and len(body) > proxy.truncate_download_after:
                    with proxy.lock:
                        keep, proxy.truncate_download_after = proxy.truncate_download_after, None
                        proxy.injected += 1
                    self.send_response(resp.status)
                    for k, v in kept:
                        self.send_header(k, v)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[:keep])
                    self.wfile.flush()
                    self._drop()
                    return
                self._reply(resp.status, body, kept)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
