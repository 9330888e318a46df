"""Real `mlflow server` processes on 127.0.0.1 for tests, the demo and the benchmark."""
import os
import shutil
import signal
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


def template_db():
    """A migrated, empty sqlite tracking store, made once per machine and MLflow version: each
    server starts on a copy of it instead of running every migration itself."""
    from importlib.metadata import version

    path = os.path.join(tempfile.gettempdir(), f"mlflow-server-{version('mlflow')}-template.db")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.{time.time_ns()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        subprocess.run([MLFLOW, "db", "upgrade", f"sqlite:///{tmp}"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.replace(tmp, path)
    return path


class MlflowServer:
    """One `mlflow server` with its own sqlite store and artifact directory."""

    def __init__(self, name, basic_auth=False):
        self.dir = tempfile.mkdtemp(prefix=f"mlflow-{name}-")
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.basic_auth = basic_auth
        shutil.copyfile(template_db(), os.path.join(self.dir, "mlflow.db"))
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

    def stop(self, grace=5):
        """SIGTERM, then SIGKILL to the server and its worker processes after `grace` seconds
        (uvicorn otherwise waits for every open connection to close, e.g. an upload a test's
        stalled client left open: 20 s and more at the end of a session)."""
        self.proc.terminate()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            stuck = _descendants(self.proc.pid)
            self.proc.kill()
            self.proc.wait()
            for pid in stuck:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _descendants(pid):
    """The ids of the processes below `pid` (Linux /proc): `mlflow server` runs uvicorn, which
    runs the workers."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    found, frontier = [], [pid]
    while frontier:
        below = [p for p, parent in parents.items() if parent in frontier]
        found += below
        frontier = below
    return found
