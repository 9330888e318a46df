"""MLflow 3 traces (spans, assessments) travel with copy-run: the built component in `wasmtime run`
and the embedding host against real MLflow servers, compared through MLflow's own client."""
import base64
import json
import re
import subprocess
import uuid

import mlflow
import pytest
import requests

import seed_genai
from conftest import Served, cli_command, copy_run_args, run_cli, run_host, unique
from trace_views import (LINKED, assert_same_traces, client_for, copied_model, prompt_texts, prompt_versions,
                         traces_of)

def test_evaluation_run_traces_copy_faithfully_and_rerun_writes_nothing(src, dst, genai):
    exp = unique("genai-cli")
    run_id = genai["eval_run"]
    result = run_cli(copy_run_args(run_id, exp, src.uri, dst.uri))
    assert result.code == 0, result
    report = result.report
    source, src_ids = traces_of(src.uri, run_id)
    copied, dst_ids = traces_of(dst.uri, report["dst_run_id"])
    assert len(source) == len(seed_genai.QUESTIONS)
    assert report["traces"] == len(source)
    # Two scorers' feedback plus one expectation per row.
    assert report["assessments"] == 3 * len(source) == sum(len(v["assessments"]) for v in copied)
    assert_same_traces(copied, source)
    assert sorted(dst_ids) == sorted(src_ids), "ids are kept across servers"
    # The linked prompt: copied as version 2 (the destination had its own 1), every link says 2.
    prompt = genai["prompt"]
    assert report["prompts"] == 1 and prompt_versions(dst.uri, prompt) == ["1", "2"]
    dst_client, src_client = client_for(dst.uri), client_for(src.uri)
    copied_run = dst_client.get_run(report["dst_run_id"])
    assert json.loads(copied_run.data.tags[LINKED]) == [{"name": prompt, "version": "2"}]
    assert prompt_texts(dst_client, copied_run.data.tags[LINKED]) == \
        prompt_texts(src_client, src_client.get_run(run_id).data.tags[LINKED])
    assert dst_client.load_prompt(f"prompts:/{prompt}@production").version == 2
    assert len(dst_client.search_traces(locations=[copied_run.info.experiment_id],
                                        filter_string=f"prompt = '{prompt}/2'")) == len(source)
    # verify-run compares every trace with its copy (info, metadata, tags, assessments, spans).
    check = run_cli(["verify-run", "--src-run-id", run_id, "--dst-run-id", report["dst_run_id"],
                     "--src-mlflow-uri", src.uri, "--dst-mlflow-uri", dst.uri])
    assert check.code == 0 and check.report["differences"] == [], check
    assert check.report["traces"] == len(source)
    again = run_cli(copy_run_args(run_id, exp, src.uri, dst.uri))
    assert again.code == 0, again
    assert (again.report["outcome"], again.report["traces"]) == ("existing", 0)
    assert traces_of(dst.uri, report["dst_run_id"])[0] == source
    assert prompt_versions(dst.uri, prompt) == ["1", "2"]


def _copy_by_host(request):
    result = run_host("copy-run", request)
    assert result.code == 0, result
    return result.report["ok"]


def _copy_by_http_function(request):
    served = Served({"MLFLOW_COPY_API_TOKEN": "genai-token"})
    try:
        r = requests.post(served.url + "/copy-run", json=request,
                          headers={"Authorization": "Bearer genai-token"}, timeout=600)
    finally:
        served.stop()
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("runner", [
    pytest.param(_copy_by_host, id="embedding-host"),  # setup.sh --with-host builds it
    pytest.param(_copy_by_http_function, id="http-function"),
])
def test_model_traces_with_exception_and_feedback_are_copied(src, dst, genai, runner):
    report = runner({"run_id": genai["agent_run"], "experiment_name": unique("genai-agent"),
                     "src_mlflow_uri": src.uri, "dst_mlflow_uri": dst.uri})
    dst_model = copied_model(dst.uri, report["dst_run_id"])
    source, _ = traces_of(src.uri, genai["agent_run"], genai["model_id"])
    copied, _ = traces_of(dst.uri, report["dst_run_id"], dst_model)
    assert len(source) == 3 and report["traces"] == 3 and report["assessments"] == 1
    assert_same_traces(copied, source)
    spans = [s for v in copied for s in v["spans"]]
    assert any(s[0] == "flaky_tool" and s[5] == "ERROR" and s[10][0][0] == "exception" for s in spans)
    assert any(a[0] == "helpfulness" and a[2] == "HUMAN" for v in copied for a in v["assessments"])
    # A trace's copy damaged: verify-run names it (here a tag changed on the copy).
    copied_id = traces_of(dst.uri, report["dst_run_id"], dst_model)[1][0]
    client_for(dst.uri).set_trace_tag(copied_id, "mlflow.traceName", "renamed")
    check = run_cli(["verify-run", "--src-run-id", genai["agent_run"], "--dst-run-id", report["dst_run_id"],
                     "--src-mlflow-uri", src.uri, "--dst-mlflow-uri", dst.uri])
    assert check.code != 0 and check.report["traces"] == 3, check
    [difference] = check.report["differences"]
    assert difference.split(": ")[0].endswith(f'(copy {copied_id}) tag "mlflow.traceName"'), difference


def test_same_server_copy_leaves_the_source_traces_alone(src, genai):
    run_id = genai["eval_run"]
    before, before_ids = traces_of(src.uri, run_id)
    exp = unique("genai-same")
    result = run_cli(copy_run_args(run_id, exp, src.uri, src.uri))
    assert result.code == 0, result
    after, after_ids = traces_of(src.uri, run_id)
    assert (after, sorted(after_ids)) == (before, sorted(before_ids))
    copied, copy_ids = traces_of(src.uri, result.report["dst_run_id"])
    assert_same_traces(copied, before)
    assert not set(copy_ids) & set(before_ids), "new trace ids on the same server"
    assert prompt_versions(src.uri, genai["prompt"]) == ["1"], "the identical version is reused"


def test_copy_interrupted_mid_traces_resumes_without_duplicates(src, dst, genai, proxy):
    exp = unique("genai-resume")
    run_id = genai["eval_run"]
    # The third StartTraceV3 is refused: that trace has spans only, the others are complete.
    proxy.add("POST", re.compile(r"^/api/3\.0/mlflow/traces(\?|$)"), nth=3, times=1, status=400,
              answer=b'{"error_code": "INVALID_PARAMETER_VALUE", "message": "injected"}')
    failed = run_cli(copy_run_args(run_id, exp, src.uri, proxy.uri))
    assert failed.code != 0, failed
    assert "copying trace" in failed.stderr
    resumed = run_cli(copy_run_args(run_id, exp, src.uri, dst.uri))
    assert resumed.code == 0, resumed
    assert resumed.report["outcome"] == "resumed"
    # The traces' writes go out together: only the trace whose info was refused is left.
    assert resumed.report["traces"] == 1
    source, _ = traces_of(src.uri, run_id)
    copied, _ = traces_of(dst.uri, resumed.report["dst_run_id"])
    assert_same_traces(copied, source)
    experiment = client_for(dst.uri).get_experiment_by_name(exp).experiment_id
    assert len(client_for(dst.uri).search_traces(locations=[experiment])) == len(source)
    assert prompt_versions(dst.uri, genai["prompt"]) == ["1", "2"]


def test_copy_killed_mid_traces_resumes_without_duplicates(src, dst, genai, proxy):
    exp = unique("genai-kill")
    run_id = genai["eval_run"]
    # The second StartTraceV3 never gets an answer; the copy is killed while it waits.
    stuck = proxy.add(method="POST", path=re.compile(r"^/api/3\.0/mlflow/traces(\?|$)"), nth=2, times=1,
                      hang=True)
    cmd, env = cli_command(copy_run_args(run_id, exp, src.uri, proxy.uri), None, ())
    copying = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert stuck.hit.wait(300), "the copy reached its traces"
    finally:
        copying.kill()
        copying.wait()
    resumed = run_cli(copy_run_args(run_id, exp, src.uri, dst.uri))
    assert resumed.code == 0 and resumed.report["outcome"] == "resumed", resumed
    assert resumed.report["traces"] >= 1, "the trace whose info never arrived is finished"
    source, _ = traces_of(src.uri, run_id)
    copied, _ = traces_of(dst.uri, resumed.report["dst_run_id"])
    assert_same_traces(copied, source)
    experiment = client_for(dst.uri).get_experiment_by_name(exp).experiment_id
    assert len(client_for(dst.uri).search_traces(locations=[experiment])) == len(source)


def _span_file_trace(uri, experiment_id, run_id):
    """A trace whose spans are a `traces.json` artifact, not database rows (as older clients and
    file stores leave them): its info by StartTraceV3, its spans in MLflow span JSON."""
    trace_id = "tr-" + uuid.uuid4().hex
    info = {"trace_id": trace_id, "state": "OK", "request_time": "2026-12-01T22:14:46.959Z",
            "execution_duration": "0.500s", "request_preview": '{"q": "x"}',
            "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}},
            "trace_metadata": {"mlflow.sourceRun": run_id, "mlflow.trace_schema.version": "3"},
            "tags": {"mlflow.traceName": "root"}}
    requests.post(uri + "/api/3.0/mlflow/traces", json={"trace": {"trace_info": info}}, timeout=30).raise_for_status()
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    tid, start = b64(bytes.fromhex(trace_id[3:])), 1796163286959085413

    def span(n, parent, name, attributes, **extra):
        return {"trace_id": tid, "span_id": b64(n.to_bytes(8, "big")), "name": name,
                "parent_span_id": b64(parent.to_bytes(8, "big")) if parent else None,
                "start_time_unix_nano": start + n, "end_time_unix_nano": start + 500_000_000 - n,
                "attributes": {k: json.dumps(v) for k, v in {"mlflow.traceRequestId": trace_id, **attributes}.items()},
                "status": {"code": "STATUS_CODE_OK", "message": ""}, "events": [], **extra}
    spans = [span(1, None, "root", {"mlflow.spanType": "CHAIN", "mlflow.spanInputs": {"q": "x"},
                                    "top_k": 2, "score": 0.25}),
             span(2, 1, "tool", {"mlflow.spanType": "TOOL", "mlflow.spanOutputs": ["a", {"id": 1}]},
                  events=[{"name": "exception", "time_unix_nano": start + 7,
                           "attributes": {"exception.message": json.dumps("boom")}}])]
    path = f"/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/traces/{trace_id}/artifacts/traces.json"
    requests.put(uri + path, data=json.dumps({"spans": spans}), timeout=30).raise_for_status()
    return trace_id


def test_a_trace_whose_spans_are_an_artifact_file_is_copied(src, dst):
    client = client_for(src.uri)
    experiment = client.create_experiment(unique("genai-file"))
    run_id = client.create_run(experiment).info.run_id
    client.set_terminated(run_id)
    _span_file_trace(src.uri, experiment, run_id)
    exp = unique("genai-file-copy")
    result = run_cli(copy_run_args(run_id, exp, src.uri, dst.uri))
    assert result.code == 0, result
    assert result.report["traces"] == 1
    # The client resolves `mlflow-artifacts:` span files against the global tracking URI.
    mlflow.set_tracking_uri(src.uri)
    source, _ = traces_of(src.uri, run_id)
    copied, _ = traces_of(dst.uri, result.report["dst_run_id"])
    assert len(source[0]["spans"]) == 2
    assert_same_traces(copied, source)
