"""MLflow's own Python client against the Databricks emulator, in a process of its own (so it runs
with a clean environment: DATABRICKS_* variables, and MLflow's cached credentials and SDK clients,
which are keyed by host and would keep the first auth method).

    python dbx_client_scenarios.py SCENARIO '{"json": "args"}'    one scenario
    python dbx_client_scenarios.py --serve                         scenarios read from stdin, one JSON
                                                                  line {"scenario", "args", "env"} each

print one `RESULT {json}` line per scenario with what it observed (or `ERROR {traceback}`); the test
asserts on it and on the emulator's request logs. --serve lets several scenarios with the same
credentials share one process (importing MLflow and scikit-learn is most of a scenario's time)."""
import json
import os
import sys
import tempfile
import time


def _model():
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    return LogisticRegression().fit(X, y), X


def full(args):
    """Log a run with params, metrics, artifacts and an MLflow 3 sklearn model; read it back;
    register it in the workspace registry and in Unity Catalog; load it back and predict."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature
    from seed import sklearn_requirements  # this file's folder: the e2e helpers

    out = {}
    mlflow.set_tracking_uri("databricks")
    mlflow.set_registry_uri("databricks")
    exp = mlflow.set_experiment(args["experiment"])
    out["experiment_id"] = exp.experiment_id
    out["experiment_artifact_location"] = exp.artifact_location
    clf, X = _model()
    expected = clf.predict(X).tolist()
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(os.path.join(d, "sub"))
        with open(os.path.join(d, "sub", "data.bin"), "wb") as f:
            f.write(os.urandom(3000))
        with open(os.path.join(d, "empty.txt"), "wb"):
            pass
        with mlflow.start_run(run_name="emulated") as run:
            mlflow.log_params({"alpha": "0.5", "solver": "lbfgs"})
            for step in range(3):
                mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
            mlflow.log_text("hello databricks", "notes/hello.txt")
            mlflow.log_artifacts(d, "files")
            info = mlflow.sklearn.log_model(clf, name="model", signature=infer_signature(X, clf.predict(X)),
                                        pip_requirements=sklearn_requirements())
        run_id = run.info.run_id
    client = MlflowClient()
    r = client.get_run(run_id)
    out["run_id"] = run_id
    out["artifact_uri"] = r.info.artifact_uri
    out["user_id"] = r.info.user_id
    out["params"] = r.data.params
    out["metrics"] = r.data.metrics
    out["tags"] = r.data.tags
    out["loss_history"] = [m.value for m in client.get_metric_history(run_id, "loss")]
    out["artifacts"] = sorted(a.path for a in client.list_artifacts(run_id))
    out["sub_artifacts"] = sorted((a.path, a.file_size) for a in client.list_artifacts(run_id, "files/sub"))
    out["hello"] = mlflow.artifacts.load_text(f"runs:/{run_id}/notes/hello.txt")
    lm = mlflow.get_logged_model(info.model_id)
    out["model_id"] = info.model_id
    out["model_artifact_location"] = lm.artifact_location
    out["logged_model_predict"] = mlflow.pyfunc.load_model(info.model_uri).predict(X).tolist() == expected

    # workspace registry
    ws_name = args["ws_model"]
    mv = mlflow.register_model(info.model_uri, ws_name)
    out["ws_version"] = mv.version
    out["ws_status"] = client.get_model_version(ws_name, mv.version).status
    out["ws_source"] = client.get_model_version(ws_name, mv.version).source
    out["ws_download_uri"] = client.get_model_version_download_uri(ws_name, mv.version)
    loaded = mlflow.pyfunc.load_model(f"models:/{ws_name}/{mv.version}")
    out["ws_predict"] = loaded.predict(X).tolist() == expected

    # Unity Catalog
    mlflow.set_registry_uri("databricks-uc")
    uc_name = args["uc_model"]
    uc_mv = mlflow.register_model(info.model_uri, uc_name)
    uc_client = MlflowClient(registry_uri="databricks-uc")
    uc_client.set_registered_model_alias(uc_name, "champion", uc_mv.version)
    got = uc_client.get_model_version(uc_name, uc_mv.version)
    out["uc_version"] = uc_mv.version
    out["uc_status"] = got.status
    out["uc_source"] = got.source
    out["uc_predict_version"] = mlflow.pyfunc.load_model(f"models:/{uc_name}/{uc_mv.version}").predict(X).tolist() == expected
    out["uc_predict_alias"] = mlflow.pyfunc.load_model(f"models:/{uc_name}@champion").predict(X).tolist() == expected
    out["uc_alias_version"] = uc_client.get_model_version_by_alias(uc_name, "champion").version
    return out


def artifacts(args):
    """Run artifacts through signed URLs (Files API off): a multipart upload, paging, read back."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri("databricks")
    mlflow.set_experiment(args["experiment"])
    big = os.urandom(args["big_bytes"])
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "big.bin")
        with open(p, "wb") as f:
            f.write(big)
        for i in range(5):
            with open(os.path.join(d, f"small{i}.txt"), "w") as f:
                f.write(f"file {i}")
        with mlflow.start_run() as run:
            mlflow.log_artifacts(d, "data")
    client = MlflowClient()
    listed = sorted((a.path, a.file_size) for a in client.list_artifacts(run.info.run_id, "data"))
    with tempfile.TemporaryDirectory() as d:
        local = mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/data", dst_path=d)
        same = open(os.path.join(local, "big.bin"), "rb").read() == big
        smalls = sorted(open(os.path.join(local, f"small{i}.txt")).read() for i in range(5))
    out = {"run_id": run.info.run_id, "listed": listed, "big_roundtrip": same, "smalls": smalls}
    if args.get("uc_model"):
        out.update(_uc_roundtrip(args["uc_model"]))
    return out


def _uc_roundtrip(uc_name):
    """Log a model, register it in Unity Catalog, load it back by version and predict."""
    import mlflow
    from mlflow.models import infer_signature
    from seed import sklearn_requirements

    clf, X = _model()
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(clf, name="model", signature=infer_signature(X, clf.predict(X)),
                                        pip_requirements=sklearn_requirements())
    mlflow.set_registry_uri("databricks-uc")
    mv = mlflow.register_model(info.model_uri, uc_name)
    loaded = mlflow.pyfunc.load_model(f"models:/{uc_name}/{mv.version}")
    return {"uc_status": mv.status, "uc_version": mv.version,
            "uc_predict": loaded.predict(X).tolist() == clf.predict(X).tolist()}


def oauth(args):
    """OAuth M2M: several calls spread over more than one token lifetime."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri("databricks")
    exp = mlflow.set_experiment(args["experiment"])
    client = MlflowClient()
    names = []
    for i in range(args["rounds"]):
        run = client.create_run(exp.experiment_id, run_name=f"oauth-{i}")
        client.log_param(run.info.run_id, "i", str(i))
        names.append(client.get_run(run.info.run_id).data.params["i"])
        time.sleep(args["sleep"])
    out = {"params": names}
    if args.get("uc_model"):
        out.update(_uc_roundtrip(args["uc_model"]))
    return out


def log_traces(args):
    """Experiment traces with MLflow's tracing API: a run with a traced call (a CHAIN root with a
    RETRIEVER child and a TOOL child that raises), a second trace outside the run, a human feedback
    and an expectation on the first, a trace tag, and an explicit link of the second to the run."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import AssessmentSource, AssessmentSourceType, SpanType

    mlflow.set_tracking_uri("databricks")
    exp = mlflow.set_experiment(args["experiment"])

    @mlflow.trace(name="retrieve", span_type=SpanType.RETRIEVER, attributes={"top_k": 2})
    def retrieve(query):
        return [f"doc about {query}", "another doc"]

    @mlflow.trace(name="flaky_tool", span_type=SpanType.TOOL)
    def flaky_tool(query):
        raise ValueError(f"tool broke on {query!r}")

    @mlflow.trace(name="answer", span_type=SpanType.CHAIN, attributes={"team": "qa", "version": 3})
    def answer(question, temperature=0.5):
        docs = retrieve(question)
        try:
            flaky_tool(question)
        except ValueError:
            pass
        return {"answer": f"42 ({len(docs)} docs)", "confidence": 0.9}

    @mlflow.trace(name="standalone", span_type=SpanType.LLM)
    def standalone(x):
        return x * 2

    with mlflow.start_run() as run:
        answer("what is it?")
        in_run = mlflow.get_last_active_trace_id()
    standalone(21)
    outside = mlflow.get_last_active_trace_id()
    if hasattr(mlflow, "flush_trace_async_logging"):
        mlflow.flush_trace_async_logging()  # the traces are exported by a background queue
    human = AssessmentSource(source_type=AssessmentSourceType.HUMAN, source_id="reviewer@example.com")
    mlflow.log_feedback(trace_id=in_run, name="helpful", value=True, source=human,
                        rationale="answers the question", metadata={"round": "1"})
    mlflow.log_expectation(trace_id=in_run, name="expected_answer", value={"answer": "42"}, source=human,
                           metadata={"dataset": "golden"})
    client = MlflowClient()
    client.set_trace_tag(in_run, "reviewed", "yes")  # PATCH /api/2.0/mlflow/traces/{id}/tags
    client.link_traces_to_run([outside], run.info.run_id)  # POST /api/2.0/mlflow/traces/link-to-run
    return {"experiment_id": exp.experiment_id, "run_id": run.info.run_id, "trace_ids": [in_run, outside]}


def _trace_view(trace):
    """A JSON-able view of an MLflow Trace: info, spans, assessments."""
    info = trace.info

    def assessment(a):
        if a.feedback is not None:
            value, kind = a.feedback.value, "feedback"
        else:
            value, kind = a.expectation.value, "expectation"
        return {"name": a.name, "kind": kind, "value": value, "rationale": a.rationale,
                "metadata": a.metadata or {},
                "source": {"source_type": a.source.source_type, "source_id": a.source.source_id}}

    def span(s):
        return {"name": s.name, "span_id": s.span_id, "parent_id": s.parent_id, "span_type": s.span_type,
                "start_time_ns": s.start_time_ns, "end_time_ns": s.end_time_ns,
                "status": {"code": s.status.status_code.value, "description": s.status.description},
                "inputs": s.inputs, "outputs": s.outputs,
                "attributes": {k: v for k, v in s.attributes.items()},
                "events": [{"name": e.name, "attributes": dict(e.attributes or {})} for e in s.events]}

    return {"trace_id": info.trace_id,
            "info": {"request_time": info.request_time, "execution_duration": info.execution_duration,
                     "state": info.state.value, "request_preview": info.request_preview,
                     "response_preview": info.response_preview, "trace_metadata": dict(info.trace_metadata),
                     "tags": {k: v for k, v in info.tags.items() if k != "mlflow.artifactLocation"},
                     "artifact_location": info.tags.get("mlflow.artifactLocation"),
                     "experiment_id": info.experiment_id},
            "spans": [span(s) for s in trace.data.spans],
            "assessments": sorted((assessment(a) for a in info.assessments), key=lambda a: a["name"])}


def read_traces(args):
    """The traces of an experiment (or of a run) through MLflow's client: search_traces, and
    get_trace for each one found."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri("databricks")
    client = MlflowClient()
    run_id = args.get("run_id")
    exp_id = args.get("experiment_id") or client.get_run(run_id).info.experiment_id
    found = mlflow.search_traces(locations=[exp_id], run_id=run_id, return_type="list")
    return {"searched": {t.info.trace_id: _trace_view(t) for t in found},
            "got": {t.info.trace_id: _trace_view(client.get_trace(t.info.trace_id)) for t in found}}


def serve():
    import importlib
    import traceback

    for module in ("mlflow", "sklearn"):  # imported once, up front
        importlib.import_module(module)

    print("READY", flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        os.environ.update(cmd.get("env") or {})
        try:
            print("RESULT " + json.dumps(globals()[cmd["scenario"]](cmd["args"])), flush=True)
        except Exception:
            print("ERROR " + json.dumps(traceback.format_exc()), flush=True)
        for k in cmd.get("env") or {}:
            os.environ.pop(k, None)


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        serve()
    else:
        scenario, raw = sys.argv[1], sys.argv[2]
        result = globals()[scenario](json.loads(raw))
        print("RESULT " + json.dumps(result))
