"""Copy MLflow runs and model versions between servers from Python, by calling the
`mlflow:copy/copier` interface of `mlflow_copy.wasm` in-process with the `wasmtime` package.

    import mlflow_copy
    report = mlflow_copy.copy_run(run_id="c62c…", experiment_name="My_Experiment",
                                  src_mlflow_uri="http://localhost:5000",
                                  dst_mlflow_uri="http://localhost:5001")
    print(report["dst_run_id"], report["outcome"])

The component is found at `$MLFLOW_COPY_WASM` when set, else at the `wasm=` path given to a
call (or to `load`), else inside this package (the wheel carries it), else at the repository's
release build (`target/wasm32-wasip2/release/mlflow_copy.wasm`). It is compiled once per process, and the
compiled code is cached on disk (keyed by the wasm's sha256 and the wasmtime version), so later
processes start in milliseconds.

The guest sees only the environment variables named by `passed_to_guest` (its credentials),
never the rest of the host's environment. Failures raise a subclass of `CopyError`, one per
`copy-error` case of the WIT interface.

The console scripts `copy-run` and `copy-model-version` (`mlflow_copy.cli`) run the
component's own command line, with mlflow-export-import's flags.
"""
import hashlib
import os
import tempfile
import threading
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import wasmtime
from wasmtime import component as wc

from .fan_out import copy_experiment_in_instances

__all__ = ["copy_run", "copy_model_version", "copy_experiment", "copy_model", "verify_run", "verify_experiment",
           "verify_model_version", "load", "Copier", "passed_to_guest", "CopyError",
           "BadInput", "NotFound", "Unauthorized", "Conflict", "Upstream"]

INTERFACE = "mlflow:copy/copier@0.2.0"
RELEASE_BUILD = os.path.join("target", "wasm32-wasip2", "release", "mlflow_copy.wasm")
# The file name inside the package: what the wheel carries (hatch_build.py puts it there).
PACKAGED_WASM = "mlflow_copy.wasm"
# The command-line export (the component's clap parser, --help and error line).
CLI_INTERFACE = "wasi:cli/run@0.2.2"

# The host variables the guest may see: the credentials and HTTP settings MLflow clients read.
# One list for the whole module; the Rust and Node.js hosts apply the same rule.
GUEST_ENV_EXACT = ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                   "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER",
                   "MLFLOW_COPY_FILES_API_MAX_PUT", "MLFLOW_COPY_ALLOWED_HOSTS",
                   "MLFLOW_COPY_VIA_TOKEN", "MLFLOW_COPY_VIA_TIMEOUT",
                   "MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE", "MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE",
                   "MLFLOW_SKIP_SIGNATURE_CHECK_FOR_UC_REGISTRY_MIGRATION",
                   "MLFLOW_USE_DATABRICKS_SDK_MODEL_ARTIFACTS_REPO_FOR_UC",
                   "MLFLOW_DISABLE_DATABRICKS_SDK_FOR_RUN_ARTIFACTS", "AWS_REGION", "AWS_DEFAULT_REGION")
GUEST_ENV_PREFIXES = ("DATABRICKS_",)


def passed_to_guest(name: str) -> bool:
    """`MLFLOW_*TRACKING_*` (e.g. `MLFLOW_TRACKING_TOKEN`, `MLFLOW_DST_TRACKING_PASSWORD`),
    `MLFLOW_*S3_ENDPOINT_URL`, `GUEST_ENV_EXACT` and `DATABRICKS_*`."""
    if name in GUEST_ENV_EXACT or name.startswith(GUEST_ENV_PREFIXES):
        return True
    rest = name[len("MLFLOW_"):]
    return name.startswith("MLFLOW_") and ("TRACKING_" in rest or rest.endswith("S3_ENDPOINT_URL"))


class CopyError(Exception):
    """A copy failed. `kind` is the WIT case in snake_case (`not_found`, …); `message` names
    the server and object and never contains credentials."""

    kind = "copy_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadInput(CopyError):
    """The request is wrong: a malformed or unsupported URI, a bad field, a shallow copy the
    destination cannot reach."""
    kind = "bad_input"


class NotFound(CopyError):
    """The source run, model or version does not exist or is deleted."""
    kind = "not_found"


class Unauthorized(CopyError):
    """A server refused the credentials (HTTP 401/403)."""
    kind = "unauthorized"


class Conflict(CopyError):
    """The destination holds something that conflicts, e.g. a deleted experiment of that name."""
    kind = "conflict"


class Upstream(CopyError):
    """A server was unreachable or failed (after retries), or answered something unexpected."""
    kind = "upstream"


_ERRORS = {"bad-input": BadInput, "not-found": NotFound, "unauthorized": Unauthorized,
           "conflict": Conflict, "upstream": Upstream}


def find_wasm(wasm: Optional[str] = None) -> str:
    """`$MLFLOW_COPY_WASM`, else `wasm`, else the component this package carries (an installed
    wheel), else the repository's release build: next to this package's checkout (an editable
    install or the source tree), or in the current directory or one of its parents."""
    if os.environ.get("MLFLOW_COPY_WASM"):
        return os.path.abspath(os.environ["MLFLOW_COPY_WASM"])
    if wasm:
        return os.path.abspath(wasm)
    packaged = _packaged_wasm()
    if packaged:
        return packaged
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.path.join(here, "..", "..", "..", RELEASE_BUILD)]
    d = os.getcwd()
    while True:
        candidates.append(os.path.join(d, RELEASE_BUILD))
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    for c in candidates:
        if os.path.isfile(c):
            return os.path.abspath(c)
    raise FileNotFoundError(
        "mlflow_copy.wasm not found: set MLFLOW_COPY_WASM, pass wasm=PATH, or build it in the "
        "repository with `cargo build --target wasm32-wasip2 --release`")


def _packaged_wasm() -> Optional[str]:
    """The wheel's own copy (`mlflow_copy/mlflow_copy.wasm`), as a file path: the compiled-code
    cache and wasmtime need a real file, which an installed (unzipped) wheel always has."""
    try:
        from importlib.resources import files
        candidate = files(__name__) / PACKAGED_WASM
    except (ImportError, ModuleNotFoundError, TypeError):  # pragma: no cover - odd loaders
        return None
    path = str(candidate)
    return os.path.abspath(path) if os.path.isfile(path) else None


def _cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get("MLFLOW_COPY_CACHE_DIR") or os.path.join(base, "mlflow-copy")


def _wasmtime_version() -> str:
    try:
        from importlib.metadata import version
        return version("wasmtime")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        return "unknown"


class Copier:
    """One loaded component: the compiled code and the linker, shared by every call. Each call
    runs in a fresh instance (own store, own environment), so calls are independent and may run
    in several threads at once (the copy itself runs outside the GIL)."""

    def __init__(self, wasm: Optional[str] = None):
        self.path = find_wasm(wasm)
        with open(self.path, "rb") as f:
            data = f.read()
        self.engine = wasmtime.Engine()
        self.component = self._compile(data)
        self.linker = wc.Linker(self.engine)
        self.linker.add_wasip2()
        self.linker.add_wasi_http()

    def _compile(self, data: bytes) -> "wc.Component":
        key = hashlib.sha256(data + b"\0wasmtime " + _wasmtime_version().encode()).hexdigest()
        cached = os.path.join(_cache_dir(), f"{key}.cwasm")
        if os.path.isfile(cached):
            try:
                return wc.Component.deserialize_file(self.engine, cached)
            except wasmtime.WasmtimeError:
                pass  # stale or corrupt: compile again and overwrite
        component = wc.Component(self.engine, data)
        try:
            os.makedirs(os.path.dirname(cached), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(cached), suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(component.serialize())
            os.replace(tmp, cached)
        except OSError:
            pass  # a read-only home only costs the compile next time
        return component

    def call(self, function: str, request: Dict[str, Any], env: Optional[Mapping[str, str]] = None) -> dict:
        """Calls `function` of the interface with a request whose keys are the WIT field names
        in snake_case; returns the report as a dict, or raises a `CopyError` subclass."""
        wasi = _guest_wasi(env)
        wasi.inherit_stderr()
        store, func = self._instantiate(wasi, INTERFACE, function)
        record = wc.Record()
        for key, value in request.items():
            setattr(record, key.replace("_", "-"), value)
        result = func(store, record)
        if isinstance(result, wc.Variant):
            raise _ERRORS[result.tag](result.payload)
        return _to_python(result)

    def run_command(self, argv: Sequence[str], env: Optional[Mapping[str, str]] = None,
                    stderr: Optional[Callable[[bytes], None]] = None,
                    writable_dirs: Sequence[str] = ()) -> bool:
        """Runs the component's own command line (`wasi:cli/run`) with `argv` (argv[0] is the
        program name) and this process's stdout; stderr goes to `stderr` when given, else to
        this process's stderr. The guest may write in `writable_dirs` (absolute paths, seen
        under the same paths), nowhere else. Returns whether the command succeeded."""
        wasi = _guest_wasi(env)
        wasi.argv = list(argv)
        for folder in writable_dirs:
            wasi.preopen_dir(folder, folder, fs_mutable=True)
        wasi.inherit_stdout()
        if stderr is None:
            wasi.inherit_stderr()
        else:
            wasi.stderr_custom = stderr
        store, func = self._instantiate(wasi, CLI_INTERFACE, "run")
        result = func(store)
        # `run` returns result<_, _>: wasmtime-py lifts both cases as a tagged Variant.
        return isinstance(result, wc.Variant) and result.tag == "ok"

    def _instantiate(self, wasi: "wasmtime.WasiConfig", interface: str, function: str):
        """A fresh store (WASI as configured, WASI HTTP) and instance; the export's function."""
        store = wasmtime.Store(self.engine)
        store.set_wasi(wasi)
        store.set_wasi_http()
        instance = self.linker.instantiate(store, self.component)
        iface = instance.get_export_index(store, interface)
        index = instance.get_export_index(store, function, iface) if iface else None
        func = instance.get_func(store, index) if index else None
        if func is None:
            raise RuntimeError(f"{self.path} does not export {interface}#{function}")
        return store, func


def _guest_wasi(env: Optional[Mapping[str, str]]) -> "wasmtime.WasiConfig":
    """WASI with only the variables `passed_to_guest` allows (of `env`, else os.environ)."""
    source = os.environ if env is None else env
    wasi = wasmtime.WasiConfig()
    wasi.env = [(k, v) for k, v in source.items() if passed_to_guest(k)]
    return wasi


def _to_python(value: Any) -> Any:
    if isinstance(value, wc.Variant):  # an item's copy-error, as the command line shows it
        return {"kind": value.tag.replace("-", "_"), "message": value.payload}
    if isinstance(value, wc.Record):
        return {k.replace("-", "_"): _to_python(v) for k, v in vars(value).items()}
    if isinstance(value, list):
        return [_to_python(v) for v in value]
    return value


_loaded: Dict[str, Copier] = {}
_lock = threading.Lock()


def load(wasm: Optional[str] = None) -> Copier:
    """The `Copier` for the component found by `find_wasm(wasm)`, loaded once per process."""
    path = find_wasm(wasm)
    with _lock:
        if path not in _loaded:
            _loaded[path] = Copier(path)
        return _loaded[path]


def copy_run(*, run_id: str, experiment_name: str, src_mlflow_uri: str, dst_mlflow_uri: str,
             copy_children: Optional[bool] = None, concurrency: Optional[int] = None,
             wasm: Optional[str] = None) -> dict:
    """Copies a run (with `copy_children`, its child runs too) into the destination experiment
    `experiment_name`. Returns the report: `src_run_id`, `dst_run_id`, `dst_experiment_id`,
    `outcome` (`created`, `resumed` or `existing`), counts, `child_run_ids`, `elapsed_seconds`."""
    return load(wasm).call("copy-run", {
        "run_id": run_id, "experiment_name": experiment_name,
        "src_mlflow_uri": src_mlflow_uri, "dst_mlflow_uri": dst_mlflow_uri,
        "copy_children": copy_children, "concurrency": concurrency})


def copy_model_version(*, src_model: str, src_version: str, dst_model: str, src_registry_uri: str,
                       dst_registry_uri: str, dst_experiment_name: Optional[str] = None,
                       copy_permissions: Optional[bool] = None,
                       copy_stages_and_aliases: Optional[bool] = None,
                       copy_lineage_tags: Optional[bool] = None, concurrency: Optional[int] = None,
                       wasm: Optional[str] = None) -> dict:
    """Copies a registered model version (deep when `dst_experiment_name` is given: its run is
    copied there too). Returns the report: `dst_model`, `dst_version`, `dst_run_id`,
    `dst_source`, `deep`, `outcome`, `registered_model_created`, `tags`, `stage`, `aliases`,
    `permissions`, `run` (the copy-run report of a deep copy), `elapsed_seconds`."""
    return load(wasm).call("copy-model-version", {
        "src_model": src_model, "src_version": str(src_version), "dst_model": dst_model,
        "src_registry_uri": src_registry_uri, "dst_registry_uri": dst_registry_uri,
        "dst_experiment_name": dst_experiment_name, "copy_permissions": copy_permissions,
        "copy_stages_and_aliases": copy_stages_and_aliases,
        "copy_lineage_tags": copy_lineage_tags, "concurrency": concurrency})


def copy_experiment(*, dst_experiment_name: str, src_mlflow_uri: str, dst_mlflow_uri: str,
                    src_experiment_name: Optional[str] = None, src_experiment_id: Optional[str] = None,
                    filter: Optional[str] = None, run_ids: Sequence[str] = (),
                    max_runs: Optional[int] = None, dry_run: Optional[bool] = None,
                    verify: Optional[bool] = None, via: Optional[str] = None,
                    parallel: Optional[int] = None, concurrency: Optional[int] = None,
                    wasm: Optional[str] = None) -> dict:
    """Copies the runs of an experiment (all, `filter`ed, `run_ids` or the newest `max_runs`),
    parents before children. Returns the migration report: `src`, `dst`, `dry_run`, `items`
    (each `src_id`, `dst_id`, `status`, `detail`, `error`), counts, `elapsed_seconds`. Failed
    items are in the report (`failed` > 0), not raised: run the same call again. With `via`
    (the URL of mlflow-copy's HTTP function; its token in `MLFLOW_COPY_VIA_TOKEN`) each run is
    one request to it, `parallel` at once; without `via`, `parallel` instances of the component
    run here at once (`fan_out.py`), parents' runs before their children's."""
    request = {
        "src_experiment_name": src_experiment_name, "src_experiment_id": src_experiment_id,
        "dst_experiment_name": dst_experiment_name, "src_mlflow_uri": src_mlflow_uri,
        "dst_mlflow_uri": dst_mlflow_uri, "filter": filter, "run_ids": list(run_ids),
        "max_runs": max_runs, "dry_run": dry_run, "verify": verify, "via": via, "parallel": parallel,
        "concurrency": concurrency}
    if (parallel or 1) > 1 and not via:  # N instances of the component at once, here
        return copy_experiment_in_instances(load(wasm), request, parallel)
    return load(wasm).call("copy-experiment", request)


def copy_model(*, src_model: str, dst_model: str, src_registry_uri: str, dst_registry_uri: str,
               dst_experiment_name: Optional[str] = None, versions: Sequence[str] = (),
               stages: Sequence[str] = (), aliases: Sequence[str] = (),
               copy_permissions: Optional[bool] = None, copy_stages_and_aliases: Optional[bool] = None,
               copy_lineage_tags: Optional[bool] = None, dry_run: Optional[bool] = None,
               verify: Optional[bool] = None, via: Optional[str] = None,
               parallel: Optional[int] = None, concurrency: Optional[int] = None,
               wasm: Optional[str] = None) -> dict:
    """Copies versions of a registered model (all, or those listed / in `stages` / holding
    `aliases`) in ascending order, each as `copy_model_version` does. Returns the migration
    report (see `copy_experiment`)."""
    return load(wasm).call("copy-model", {
        "src_model": src_model, "dst_model": dst_model, "src_registry_uri": src_registry_uri,
        "dst_registry_uri": dst_registry_uri, "dst_experiment_name": dst_experiment_name,
        "versions": [str(v) for v in versions], "stages": list(stages), "aliases": list(aliases),
        "copy_permissions": copy_permissions, "copy_stages_and_aliases": copy_stages_and_aliases,
        "copy_lineage_tags": copy_lineage_tags, "dry_run": dry_run, "verify": verify,
        "via": via, "parallel": parallel, "concurrency": concurrency})


def verify_run(*, src_run_id: str, dst_run_id: str, src_mlflow_uri: str, dst_mlflow_uri: str,
               wasm: Optional[str] = None) -> dict:
    """Compares a copied run with its source. Returns the report: what was compared and
    `differences` (empty: the copy is faithful)."""
    return load(wasm).call("verify-run", {
        "src_run_id": src_run_id, "dst_run_id": dst_run_id,
        "src_mlflow_uri": src_mlflow_uri, "dst_mlflow_uri": dst_mlflow_uri})


def verify_experiment(*, dst_experiment_name: str, src_mlflow_uri: str, dst_mlflow_uri: str,
                      src_experiment_name: Optional[str] = None, src_experiment_id: Optional[str] = None,
                      filter: Optional[str] = None, run_ids: Sequence[str] = (),
                      max_runs: Optional[int] = None, wasm: Optional[str] = None) -> dict:
    """Compares what `copy_experiment` copied with these arguments (the same selection of runs)
    with its source. Returns `runs_compared`, `runs_differing`, `missing` (runs without a complete
    copy) and `differences` (both empty: every copy is faithful)."""
    return load(wasm).call("verify-experiment", {
        "src_experiment_name": src_experiment_name, "src_experiment_id": src_experiment_id,
        "dst_experiment_name": dst_experiment_name, "src_mlflow_uri": src_mlflow_uri,
        "dst_mlflow_uri": dst_mlflow_uri, "filter": filter, "run_ids": list(run_ids),
        "max_runs": max_runs, "dry_run": None, "verify": None, "via": None, "parallel": None,
        "concurrency": None})


def verify_model_version(*, src_model: str, src_version: str, dst_model: str, src_registry_uri: str,
                         dst_registry_uri: str, dst_version: Optional[str] = None,
                         dst_experiment_name: Optional[str] = None,
                         copy_stages_and_aliases: Optional[bool] = None,
                         copy_lineage_tags: Optional[bool] = None, wasm: Optional[str] = None) -> dict:
    """Compares a copied model version (`dst_version`, or the copy found by its source) with its
    source, as `copy_model_version` made it with these flags. Returns `dst_version`, `run` (a
    deep copy's run compared) and `differences` (empty: the copy is faithful)."""
    return load(wasm).call("verify-model-version", {
        "src_model": src_model, "src_version": str(src_version), "dst_model": dst_model,
        "src_registry_uri": src_registry_uri, "dst_registry_uri": dst_registry_uri,
        "dst_version": None if dst_version is None else str(dst_version),
        "dst_experiment_name": dst_experiment_name, "copy_stages_and_aliases": copy_stages_and_aliases,
        "copy_lineage_tags": copy_lineage_tags})
