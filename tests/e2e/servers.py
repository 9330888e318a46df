"""Real `mlflow server` processes on 127.0.0.1 for tests, the demo and the benchmark."""
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

MLFLOW = os.path.join(os.path.dirname(sys.executable), "mlflow")
ADMIN_PASSWORD = "admin-password-for-tests-1234"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """One `mlflow server` with its own sqlite store and artifact directory."""

    def __init__(self, name, basic_auth=False):
        self.dir = tempfile.mkdtemp(prefix=f"mlflow-{name}-")
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.basic_auth = basic_auth
        # One worker for the basic-auth server: its user store is a sqlite file that concurrent
        # workers lock each other out of (500s on registry writes, seen here).
        workers = "1" if basic_auth else "2"
        cmd = [MLFLOW, "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", workers,
               "--backend-store-uri", f"sqlite:///{self.dir}/mlflow.db",
               "--artifacts-destination", f"{self.dir}/mlartifacts"]
        env = dict(os.environ)
        # The server's background job runner (a dozen huey consumer processes) serves no test
        # and starves a 2-core machine.
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        if basic_auth:
            cmd += ["--app-name", "basic-auth"]
            env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = uuid.uuid4().hex
            env["MLFLOW_AUTH_ADMIN_PASSWORD"] = ADMIN_PASSWORD
        self.log = open(os.path.join(self.dir, "server.log"), "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.dir, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait(self, timeout=180):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited; see {self.log.name}")
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"mlflow server on {self.uri} did not start; see {self.log.name}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
