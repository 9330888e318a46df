"""Puts the built component into the wheel (and the sdist) as `mlflow_copy/mlflow_copy.wasm`.

The component is a build output, never committed: it is taken from `$MLFLOW_COPY_WASM`, else
from an unpacked sdist (which carries it), else from the repository's release build
(`cargo build --target wasm32-wasip2 --release`). An editable install carries none: it finds
the checkout's build at run time.
"""
import os

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

INSIDE = "mlflow_copy/mlflow_copy.wasm"
RELEASE_BUILD = os.path.join("..", "..", "target", "wasm32-wasip2", "release", "mlflow_copy.wasm")


class WasmHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version, build_data):
        if self.target_name == "wheel" and version == "editable":
            return
        wasm = self._find()
        if os.path.abspath(wasm) == os.path.abspath(os.path.join(self.root, INSIDE)):
            return  # an unpacked sdist: the file is already in the package
        build_data.setdefault("force_include", {})[wasm] = INSIDE

    def _find(self) -> str:
        candidates = [os.environ.get("MLFLOW_COPY_WASM", ""),
                      os.path.join(self.root, INSIDE),
                      os.path.join(self.root, RELEASE_BUILD)]
        for path in candidates:
            if path and os.path.isfile(path):
                return os.path.abspath(path)
        raise FileNotFoundError(
            "mlflow_copy.wasm not found: build it first (cargo build --target wasm32-wasip2 "
            "--release in the repository) or set MLFLOW_COPY_WASM")
