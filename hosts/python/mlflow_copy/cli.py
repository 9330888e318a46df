"""The console scripts `copy-run` and `copy-model-version` (drop-ins for mlflow-export-import's
commands of those names) and the bulk `copy-experiment` and `copy-model`.

They run the component's own command line (its `wasi:cli/run` export) in-process, so the flags,
the `--help` text, the validation messages and the JSON report are the component's, by
construction: there is no second parser here to drift from `src/entry/cli.rs`.

WASI 0.2 lets the guest exit only with success or failure, so the kind of a failure is read from
the line the command line documents as its last on stderr, `mlflow-copy: error [KIND]: MESSAGE`.
Stderr still streams live (progress); only its last line is remembered.
"""
import os
import re
import sys
from typing import List, Optional, Sequence

import wasmtime

from . import load

PROGRAM = "mlflow-copy"

# Exit codes. 2 is a usage error, as click (the Python tool) and clap both use it; the copy
# errors follow, one per `copy-error` case of the WIT interface. 1 is anything else (the
# component not found, a trap).
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CODES = {"bad_input": 3, "not_found": 4, "unauthorized": 5, "conflict": 6, "upstream": 7}

_ERROR_LINE = re.compile(rb"^mlflow-copy: error \[([a-z_]+)\]: ")
# Enough for the error line (one line, a message naming a server and an object).
_TAIL_BYTES = 64 * 1024


class _StderrTee:
    """Passes the guest's stderr through as it comes and keeps its tail, for the last line."""

    def __init__(self, out=None):
        self.out = out if out is not None else sys.stderr
        self.tail = b""

    def __call__(self, data: bytes) -> None:
        buffer = getattr(self.out, "buffer", None)
        if buffer is not None:
            buffer.write(data)
        else:
            self.out.write(data.decode("utf-8", "replace"))
        self.out.flush()
        self.tail = (self.tail + data)[-_TAIL_BYTES:]

    def last_line(self) -> bytes:
        lines = self.tail.rstrip(b"\n").splitlines()
        return lines[-1] if lines else b""


def exit_code(succeeded: bool, last_stderr_line: bytes) -> int:
    """The exit status for a finished command: 0, the code of the error kind its last stderr
    line names, or a usage error (the component's parser printed something else and failed)."""
    if succeeded:
        return EXIT_OK
    match = _ERROR_LINE.match(last_stderr_line)
    if match:
        return EXIT_CODES.get(match.group(1).decode(), EXIT_FAILURE)
    return EXIT_USAGE


def report_file(args: Sequence[str]) -> "tuple[List[str], List[str]]":
    """The arguments with a `--report FILE` made absolute, and the folder the guest must be
    able to write it in (the bulk commands' id map)."""
    args = list(args)
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name != "--report":
            continue
        if not eq and i + 1 < len(args):
            value = args[i + 1]
        path = os.path.abspath(value)
        if eq:
            args[i] = f"--report={path}"
        elif i + 1 < len(args):
            args[i + 1] = path
        return args, [os.path.dirname(path)]
    return args, []


def run(command: str, args: Sequence[str]) -> int:
    """Runs `mlflow-copy COMMAND ARGS…` in the component; returns the exit status."""
    tee = _StderrTee()
    args, folders = report_file(args)
    try:
        succeeded = load().run_command([PROGRAM, command, *args], stderr=tee, writable_dirs=folders)
    except (FileNotFoundError, wasmtime.WasmtimeError) as e:  # Trap is a WasmtimeError
        print(f"{PROGRAM}: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    return exit_code(succeeded, tee.last_line())


def _exit(code: int) -> None:
    """Exits without interpreter shutdown. wasmtime calls the stderr callback (and releases
    it) on its own worker threads; one that enters Python while the interpreter finalizes is
    killed mid-Rust-frame and prints a panic. Nothing is left to clean up: flush and go."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def copy_run(argv: Optional[List[str]] = None) -> None:
    """`copy-run`: the console script."""
    _exit(run("copy-run", sys.argv[1:] if argv is None else argv))


def copy_model_version(argv: Optional[List[str]] = None) -> None:
    """`copy-model-version`: the console script."""
    _exit(run("copy-model-version", sys.argv[1:] if argv is None else argv))


def copy_experiment(argv: Optional[List[str]] = None) -> None:
    """`copy-experiment`: the console script."""
    _exit(run("copy-experiment", sys.argv[1:] if argv is None else argv))


def copy_model(argv: Optional[List[str]] = None) -> None:
    """`copy-model`: the console script."""
    _exit(run("copy-model", sys.argv[1:] if argv is None else argv))


def main(argv: Optional[List[str]] = None) -> None:
    """`python -m mlflow_copy COMMAND ARGS…`: the component's whole command line."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        args = ["--help"]
    _exit(run(args[0], args[1:]))
