"""MLflow 3 experiment traces to and from a Databricks workspace, through the built component,
against the Databricks emulator (tests/databricks_emulator/traces.py: the trace routes MLflow's
own client uses on a `databricks` URI; spans as a `traces.json` file behind signed URLs, no OTLP).
Both sides are read back with MLflow's own client: on the workspace it reads the info, then
`traces.json` through `credentials-for-data-download`, as it would on a real workspace.

What a real workspace does beyond MLflow's client code is not known here (see the README): these
tests show the copy speaks the routes as MLflow's client does, not that a workspace agrees."""
import os
import sys

import pytest

from compare import workspace_env
from conftest import copy_run_args, unique
from databricks_profiles import EXPERIMENT_ROOT, copy, workspace_profiles
from test_databricks_emulator import Worker
from trace_views import assert_same_traces, client_for, copied_model, traces_of

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from databricks_emulator import Emulator  # noqa: E402

WS = "databricks://wst"
UPLOAD = "credentials-for-data-upload"


@pytest.fixture(scope="module")
def workspace():
    """A workspace like production, its profile, and an MLflow-client process logging to it."""
    ws = Emulator(name="wst", like_production=True)
    worker = Worker(ws, ws.pat_env())
    try:
        ws.start()
        with workspace_profiles(ws) as cfg_dir:
            yield ws, cfg_dir, worker
    finally:
        worker.close()
        ws.stop()


def ws_traces(run_id, model_id=None):
    with workspace_env(WS):
        return traces_of(WS, run_id, model_id)


def calls_since(ws, start):
    return [(r["method"], r["path"], r["status"]) for r in ws.requests[start:]]


@pytest.fixture(scope="module")
def ws_copy(src, genai, workspace):
    """The agent run (a logged model whose traces have nested spans, an exception event and a
    human feedback) copied from an open-source server into the workspace."""
    ws, cfg_dir, _ = workspace
    exp = f"{EXPERIMENT_ROOT}/{unique('traces-in')}"
    start, storage_start = len(ws.requests), len(ws.storage_requests())
    result = copy(cfg_dir, copy_run_args(genai["agent_run"], exp, src.uri, WS))
    assert result.code == 0, result
    return result, exp, calls_since(ws, start), ws.storage_requests()[storage_start:]


def test_oss_traces_into_a_workspace_are_faithful_and_rerun_writes_nothing(src, genai, workspace, ws_copy):
    ws, cfg_dir, _ = workspace
    result, exp, calls, storage = ws_copy
    report = result.report
    assert (report["traces"], report["assessments"]) == (3, 1), report
    assert report["new_trace_ids"] == {}, "the workspace took the source's trace ids"
    source, src_ids = traces_of(src.uri, genai["agent_run"], genai["model_id"])
    with workspace_env(WS):
        dst_model = copied_model(WS, report["dst_run_id"])
    copied, dst_ids = ws_traces(report["dst_run_id"], dst_model)
    assert_same_traces(copied, source)
    assert sorted(dst_ids) == sorted(src_ids)
    # As MLflow's client writes a workspace's traces: StartTraceV3, traces.json through a signed
    # URL, assessments by their own route; never OTLP, never a bearer token at storage.
    assert sum(1 for c in calls if c[:2] == ("POST", "/api/3.0/mlflow/traces") and c[2] == 200) == 3
    assert sum(1 for c in calls if c[1].endswith(UPLOAD) and c[2] == 200) == 3
    assert not [c for c in calls if "otel" in c[1] or c[1].endswith("/v1/traces")], "no OTLP span logging"
    assert any(c[1].endswith("/assessments") for c in calls)
    puts = [s for s in storage if s["method"] == "PUT" and s["path"].endswith("/traces.json")]
    assert len(puts) == 3 and all(s["auth"] == "presigned" for s in puts), puts
    assert not any(s["has_bearer"] for s in storage)
    assert ws.token not in result.stdout + result.stderr
    # verify-run reads both sides' traces (the copy's through traces.json) and finds them equal.
    check = copy(cfg_dir, ["verify-run", "--src-run-id", genai["agent_run"], "--dst-run-id", report["dst_run_id"],
                           "--src-mlflow-uri", src.uri, "--dst-mlflow-uri", WS])
    assert check.code == 0 and check.report["differences"] == [], check.report["differences"]
    assert check.report["traces"] == 3, check.report
    # The same command again writes nothing.
    start = len(ws.requests)
    again = copy(cfg_dir, copy_run_args(genai["agent_run"], exp, src.uri, WS))
    assert again.code == 0 and (again.report["outcome"], again.report["traces"]) == ("existing", 0), again
    assert not [c for c in calls_since(ws, start) if c[0] in ("POST", "PATCH", "PUT") and "/traces" in c[1]]


def test_workspace_traces_copy_back_to_an_open_source_server(src, dst, genai, workspace, ws_copy):
    _, cfg_dir, _ = workspace
    ws_run = ws_copy[0].report["dst_run_id"]
    result = copy(cfg_dir, copy_run_args(ws_run, unique("traces-back"), WS, dst.uri))
    assert result.code == 0, result
    assert result.report["traces"] == 3, result.report
    source, _ = traces_of(src.uri, genai["agent_run"], genai["model_id"])
    back, _ = traces_of(dst.uri, result.report["dst_run_id"], copied_model(dst.uri, result.report["dst_run_id"]))
    assert_same_traces(back, source)


def test_traces_mlflow_logged_on_a_workspace_are_copied(dst, workspace):
    """Traces written by MLflow's own client on the workspace (its traces.json, its assessments)
    read by the copy and compared through MLflow's client on both sides."""
    ws, cfg_dir, worker = workspace
    logged = worker.run("log_traces", {"experiment": f"/Users/{ws.user}/{unique('logged')}"})
    result = copy(cfg_dir, copy_run_args(logged["run_id"], unique("logged-copy"), WS, dst.uri))
    assert result.code == 0, result
    assert (result.report["traces"], result.report["assessments"]) == (2, 2), result.report
    source, src_ids = ws_traces(logged["run_id"])
    copied, dst_ids = traces_of(dst.uri, result.report["dst_run_id"])
    assert sorted(src_ids) == sorted(logged["trace_ids"]) == sorted(dst_ids)
    assert_same_traces(copied, source)
    spans = [s for view in copied for s in view["spans"]]
    assert any(s[0] == "flaky_tool" and s[5] == "ERROR" and s[10][0][0] == "exception" for s in spans)


def test_a_copy_into_a_workspace_stopped_mid_trace_resumes_without_duplicates(src, genai, workspace, ws_copy):
    ws, cfg_dir, _ = workspace
    exp = f"{EXPERIMENT_ROOT}/{unique('traces-resume')}"
    # The first trace's lineage tag is refused: it is left with its info and spans, marked
    # incomplete, and the copy stops.
    ws.inject_api_error(r"^/api/2\.0/mlflow/traces/[^/]+/tags$", 400, "INVALID_PARAMETER_VALUE", method="PATCH")
    failed = copy(cfg_dir, copy_run_args(genai["agent_run"], exp, src.uri, WS))
    assert failed.code != 0 and "copying trace" in failed.stderr, failed
    resumed = copy(cfg_dir, copy_run_args(genai["agent_run"], exp, src.uri, WS))
    assert resumed.code == 0 and resumed.report["outcome"] == "resumed", resumed
    source, src_ids = traces_of(src.uri, genai["agent_run"], genai["model_id"])
    with workspace_env(WS):
        dst_model = copied_model(WS, resumed.report["dst_run_id"])
        experiment = client_for(WS).get_experiment_by_name(exp).experiment_id
        in_experiment = client_for(WS).search_traces(locations=[experiment])
    copied, dst_ids = ws_traces(resumed.report["dst_run_id"], dst_model)
    assert_same_traces(copied, source)
    # The source ids are taken in this workspace (ws_copy holds them): the copy's ids are new,
    # the same on both attempts, and all in the report.
    renamed = resumed.report["new_trace_ids"]
    assert sorted(renamed) == sorted(src_ids) and sorted(renamed.values()) == sorted(dst_ids), renamed
    assert len(in_experiment) == 3, "no duplicate, no trace left behind"
