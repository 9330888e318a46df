"""The real `mlflow server` that keeps the emulator's tracking and workspace-registry data.

It runs with a sqlite store and `--default-artifact-root dbfs:/databricks/mlflow-tracking
--no-serve-artifacts`, so experiments, runs and logged models get Databricks-shaped artifact
locations (`dbfs:/databricks/mlflow-tracking/<exp>/<run>/artifacts`) without the server ever
touching artifacts itself: the emulator serves them from S3.
"""
import http.client
import json
import os
import atexit
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from urllib.parse import urlencode

from .errors import ApiError
from .storage import free_port

ARTIFACT_ROOT = "dbfs:/databricks/mlflow-tracking"


def _template_db(mlflow):
    """A migrated, empty sqlite store, made once per machine and MLflow version and copied for each
    backing server (running the migrations is about half of a server's start-up time)."""
    from importlib.metadata import version

    path = os.path.join(tempfile.gettempdir(), f"dbx-emulator-mlflow-{version('mlflow')}-template.db")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.{time.time_ns()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABRICKS_"))}
        subprocess.run([mlflow, "db", "upgrade", f"sqlite:///{tmp}"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.replace(tmp, path)
    return path


class Backend:
    """One backing `mlflow server`. `Backend()` starts a new one; `Backend.take()` hands out a spare
    started earlier when `keep_spares` asked for some (a test session that boots many emulators)."""

    # Seconds between SIGTERM and SIGKILL in stop(). Its data is thrown away with it: a test
    # session that stops many emulators sets 0.
    stop_grace = 3
    _spares = []
    _spares_wanted = 0
    _spare_lock = threading.Lock()

    @classmethod
    def keep_spares(cls, n):
        """From now on `replenish` keeps `n` servers started ahead, so that an emulator's start
        takes one instead of waiting for a server to boot (~10 s on 2 cores). With 0, no more are
        started (those waiting stay until taken or stopped with the process)."""
        cls._spares_wanted = int(n)

    @classmethod
    def take(cls):
        """A started backend: a live spare if there is one, else a new one."""
        with cls._spare_lock:
            while cls._spares:
                b = cls._spares.pop(0)
                if b.proc is not None and b.proc.poll() is None:
                    return b
                b.stop(grace=0)
        return cls()

    @classmethod
    def replenish(cls):
        """Starts spares up to the number kept (without waiting for them to answer)."""
        with cls._spare_lock:
            while len(cls._spares) < cls._spares_wanted:
                cls._spares.append(cls())

    def __init__(self, workdir=None):
        self.dir = workdir or tempfile.mkdtemp(prefix="dbx-emulator-mlflow-")
        self._own_dir = workdir is None
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
        shutil.copyfile(_template_db(mlflow), os.path.join(self.dir, "mlflow.db"))
        cmd = [mlflow, "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{self.dir}/mlflow.db",
               "--default-artifact-root", ARTIFACT_ROOT, "--no-serve-artifacts"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABRICKS_"))}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job-runner process: nothing here uses jobs
        env["MLFLOW_DISABLE_TELEMETRY"] = "true"  # nothing leaves the machine
        self.log = open(os.path.join(self.dir, "server.log"), "wb")
        # Its own process group: `mlflow server` runs uvicorn as a child, and stop() must end both.
        self.proc = subprocess.Popen(cmd, cwd=self.dir, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        atexit.register(self.stop)

    def wait(self, timeout=180):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"backing mlflow server exited; see {self.log.name}")
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"backing mlflow server did not start; see {self.log.name}")

    def stop(self, grace=None):
        """Ends the server's process group: SIGTERM, `grace` seconds (default `stop_grace`), then
        SIGKILL (a test server; grace=0: SIGKILL at once)."""
        if self.proc is None:
            return
        grace = self.stop_grace if grace is None else grace
        pgid = self.proc.pid

        def group_alive():
            try:
                os.killpg(pgid, 0)
                return True
            except ProcessLookupError:
                return False

        try:
            os.killpg(pgid, signal.SIGTERM if grace else signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.time() + grace  # a test server: a short grace, then SIGKILL
        while time.time() < deadline:
            self.proc.poll()
            if not group_alive():
                break
            time.sleep(0.2)
        else:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None
        self.log.close()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ---- raw forwarding ---------------------------------------------------------------------------
    def raw(self, method, path, query="", body=b""):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            headers = {"Content-Type": "application/json"} if method != "GET" else {}
            conn.request(method, path + (("?" + query) if query else ""), body=body or None, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def call(self, method, path, params=None, body=None):
        """A JSON call to the backing server; errors become ApiError (Databricks shape)."""
        query = urlencode(params or {}, doseq=True)
        status, data = self.raw(method, "/api/2.0/mlflow/" + path, query,
                                json.dumps(body).encode() if body is not None else b"")
        try:
            obj = json.loads(data) if data else {}
        except ValueError:
            obj = None
        if status != 200:
            if isinstance(obj, dict) and "error_code" in obj:
                raise ApiError(obj["error_code"], obj.get("message", ""), status=status)
            raise ApiError("INTERNAL_ERROR", f"backing server answered {status}", status=500)
        return obj
