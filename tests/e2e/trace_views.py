"""What MLflow's own client shows of a run's traces (info, metadata, tags, assessments, span
trees), with run and model ids replaced by their roles, so that a source and its copy on another
server compare equal field by field."""
import json

import requests
from mlflow import MlflowClient

# Tags and metadata a server sets for itself, and the copy's lineage tag.
SERVER_KEYS = {"mlflow.artifactLocation", "mlflow.trace.spansLocation", "mlflow_exim.src_trace.trace_id"}
# Metadata an open-source server adds once a trace's info follows its spans (the sqlalchemy
# store's own mark); a workspace, which takes the info first, has no such step.
SERVER_METADATA = {"mlflow.trace.infoFinalized"}
LINKED = "mlflow.linkedPrompts"
ID_KEYS = ("mlflow.sourceRun", "mlflow.modelId", "mlflow.assessment.sourceRunId")


def client_for(uri):
    # The registry too: the seeding set the process-wide registry URI to the source.
    return MlflowClient(uri, registry_uri=uri)


def prompt_versions(uri, name):
    """The prompt's version numbers, by REST (plain searches hide prompts)."""
    r = requests.get(uri + "/api/2.0/mlflow/model-versions/search", timeout=30, params={
        "filter": f"name='{name}' AND tags.`mlflow.prompt.is_prompt` = 'true'"})
    r.raise_for_status()
    return sorted(v["version"] for v in r.json().get("model_versions", []))


def prompt_texts(client, links):
    """Linked prompt versions (a JSON string or a list) as (name, template) on that side."""
    links = json.loads(links) if isinstance(links, str) else links
    return sorted((p["name"], client.load_prompt(p["name"], version=p["version"]).template) for p in links)


def _ids(mapping, ids):
    """Metadata with run/model ids replaced by their role (RUN, MODEL), comparable across copies."""
    return {k: ids.get(v, v) if k in ID_KEYS else v for k, v in mapping.items()}


def _assessment(a, ids):
    return (a.name, repr(a.value), a.source.source_type, a.source.source_id, a.rationale,
            _ids(a.metadata or {}, ids), a.create_time_ms, a.last_update_time_ms, a.span_id,
            repr(a.error), a.valid)


def _span(span, names, client):
    events = [(e.name, e.timestamp, e.attributes) for e in span.events]
    attributes = {k: v for k, v in span.attributes.items() if k != "mlflow.traceRequestId"}
    if LINKED in attributes:
        attributes[LINKED] = prompt_texts(client, attributes[LINKED])
    return (span.name, span.span_type, span.start_time_ns, span.end_time_ns, names.get(span.parent_id),
            span.status.status_code, span.status.description, span.inputs, span.outputs,
            attributes, events)


def _trace(t, ids, client):
    info = t.info
    names = {s.span_id: s.name for s in t.data.spans}
    tags = {k: v for k, v in info.tags.items() if k not in SERVER_KEYS}
    if LINKED in tags:
        tags[LINKED] = prompt_texts(client, tags[LINKED])
    return {
        "info": (info.request_time, info.execution_duration, info.state, info.request_preview,
                 info.response_preview, info.client_request_id),
        "metadata": _ids({k: v for k, v in info.trace_metadata.items() if k not in SERVER_METADATA}, ids),
        "tags": tags,
        "assessments": sorted(_assessment(a, ids) for a in info.assessments),
        "spans": sorted((_span(s, names, client) for s in t.data.spans), key=repr),
    }


def traces_of(uri, run_id, model_id=None):
    """What MLflow's client shows for the run's (or model's) traces, ids replaced by roles."""
    client = client_for(uri)
    run = client.get_run(run_id)
    ids = {run_id: "RUN"}
    if model_id:
        ids[model_id] = "MODEL"
        found = client.search_traces(locations=[run.info.experiment_id], model_id=model_id)
    else:
        found = client.search_traces(locations=[run.info.experiment_id], run_id=run_id)
    views = sorted((_trace(t, ids, client) for t in found), key=lambda v: repr(v["info"]))
    return views, [t.info.trace_id for t in found]


def assert_same_traces(copied, source):
    """Trace by trace, field by field: a difference names the field."""
    assert len(copied) == len(source)
    for c, s in zip(copied, source):
        for field in s:
            assert c[field] == s[field], f"{field}: copy {c[field]!r} != source {s[field]!r}"


def copied_model(uri, run_id):
    client = client_for(uri)
    experiment = client.get_run(run_id).info.experiment_id
    [model] = client.search_logged_models(experiment_ids=[experiment],
                                          filter_string=f"source_run_id = '{run_id}'")
    return model.model_id
