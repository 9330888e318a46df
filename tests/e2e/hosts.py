"""Drivers for the Python host (hosts/python, package `mlflow_copy`) and the Node.js host
(hosts/node, package `mlflow-copy`): each call runs in its own process, with exactly the
environment given, the way a user's program would call the packages. Shared by the tests and
by bench/hosts.py.

Both print one JSON line: {"ok": report} (exit 0) or {"err": {"kind", "class", "message"}}
(exit 1). The Node driver also reports how many 10 ms timer ticks its event loop ran while the
copy was in flight ("ticks", "ms").
"""
import json
import os
import re
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NODE_DIR = os.path.join(ROOT, "hosts", "node")

PYTHON_DRIVER = r"""
import json, sys
import mlflow_copy
function, request = sys.argv[1], json.loads(sys.argv[2])
try:
    report = getattr(mlflow_copy, function.replace("-", "_"))(**request)
except mlflow_copy.CopyError as e:
    print(json.dumps({"err": {"kind": e.kind, "class": type(e).__name__, "message": str(e)}}))
    sys.exit(1)
print(json.dumps({"ok": report}))
"""

NODE_DRIVER = r"""
import * as mlflowCopy from 'mlflow-copy';
const [fn, request] = [process.argv[1], JSON.parse(process.argv[2])];
let ticks = 0;
const timer = setInterval(() => ticks++, 10);
const started = Date.now();
try {
  const report = await mlflowCopy[fn](request);
  console.log(JSON.stringify({ ok: report, ticks, ms: Date.now() - started }));
} catch (e) {
  if (!(e instanceof mlflowCopy.CopyError)) throw e;
  console.log(JSON.stringify({ err: { kind: e.kind, class: e.constructor.name, message: e.message } }));
  process.exitCode = 1;
} finally {
  clearInterval(timer);
}
"""


def camel(name):
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)


def snake(name):
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def snake_keys(value):
    if isinstance(value, dict):
        return {snake(k): snake_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [snake_keys(v) for v in value]
    return value


def base_env(wasm, env):
    """The driver's environment: the machine's, without any MLFLOW_ variable, plus `env`;
    the component is named by MLFLOW_COPY_WASM."""
    merged = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    merged["MLFLOW_COPY_WASM"] = wasm
    merged.update(env or {})
    return merged


def python_command(function, request):
    """`function` is `copy-run` or `copy-model-version`; `request` has the snake_case keywords."""
    return [sys.executable, "-c", PYTHON_DRIVER, function, json.dumps(request)]


def node_command(function, request):
    """The same call through `import … from 'mlflow-copy'`: camelCase keys and function names."""
    fn = camel(function.replace("-", "_"))
    return ["node", "--input-type=module", "-e", NODE_DRIVER, fn,
            json.dumps({camel(k): v for k, v in request.items() if v is not None})]


def run(host, function, request, wasm, env=None, timeout=600):
    """Runs one call through `host` ("python" or "node"); returns (exit code, parsed output,
    stderr). Node reports are given snake_case keys, like the Python ones."""
    cmd = (python_command if host == "python" else node_command)(function, request)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=base_env(wasm, env), timeout=timeout,
                          cwd=NODE_DIR if host == "node" else ROOT)
    lines = proc.stdout.strip().splitlines()
    try:
        out = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise AssertionError(f"{host} host: exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    if host == "node" and "ok" in out:
        out["ok"] = snake_keys(out["ok"])
    return proc.returncode, out, proc.stderr
