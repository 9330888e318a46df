"""Experiment traces on a Databricks workspace, as MLflow 3.17.2's client uses them with a
`databricks` tracking URI (`mlflow/store/tracking/databricks_rest_store.py`,
`DatabricksTracingRestStore`, which falls back to `RestStore` in `rest_store.py` for traces whose
ids carry no UC location):

- `POST /api/3.0/mlflow/traces` (StartTraceV3, body `{"trace": {"trace_info": ...}}`):
  `RestStore.start_trace` (called by `DatabricksTracingRestStore.start_trace` for experiment
  traces). The exporter (`mlflow/tracing/export/mlflow_v3.py`, `MlflowV3SpanExporter`) sends no
  OTLP spans to a Databricks URI (`_export_spans_incrementally`: "Databricks tracking server only
  supports logging spans to UC table, skipping span exporting"); it calls StartTraceV3 once the
  root span ends, then `TracingClient._upload_trace_data` writes `traces.json` to the trace's
  artifact location. Forwarded to the backing OSS server.
- `GET /api/3.0/mlflow/traces/{trace_id}` (GetTraceInfoV3): `RestStore.get_trace_info`. Forwarded.
- `POST /api/4.0/mlflow/traces/search-long-running`: `DatabricksTracingRestStore.search_traces`
  tries it first and falls back to `RestStore._search_traces` (`POST /api/3.0/mlflow/traces/search`,
  SearchTracesV3) on `ENDPOINT_NOT_FOUND`. The emulator answers 404 `ENDPOINT_NOT_FOUND` and
  forwards the V3 search.
- `GET /api/3.0/mlflow/traces/get` (GetTrace with spans): never called for a Databricks URI
  (`DatabricksTracingRestStore.get_trace` raises `MlflowNotImplementedException`;
  `TracingClient.get_trace` in `mlflow/tracing/client.py` downloads the spans from the artifact
  repository unless the `mlflow.trace.spansLocation` tag says TRACKING_STORE). Answered 404
  `ENDPOINT_NOT_FOUND` (the OSS server would serve it).
- `POST /api/3.0/mlflow/traces/{trace_id}/assessments` (CreateAssessment):
  `RestStore.create_assessment` (via `DatabricksTracingRestStore.create_assessment`); and
  `GET|PATCH|DELETE /api/3.0/mlflow/traces/{trace_id}/assessments/{assessment_id}`
  (`get_assessment`, `update_assessment`, `delete_assessment`, `get_single_assessment_endpoint` in
  `mlflow/utils/rest_utils.py`). Forwarded.
- `GET /api/2.0/mlflow/traces/{request_id}/credentials-for-data-upload` / `-download`
  (`mlflow/protos/databricks_artifacts.proto`, GetCredentialsForTraceDataUpload / Download):
  `mlflow/store/artifact/databricks_artifact_repo.py` (`_extract_resource`: an artifact URI
  `dbfs:/databricks/mlflow-tracking/<exp>/<tr-...>/artifacts`, parts[3] starting with `tr-`, is a
  `_Trace` resource) and `databricks_artifact_repo_resources.py` (`_Trace.get_credentials`: one
  `{"credential_info": {signed_uri, type, headers}}`); `upload_trace_data` PUTs and
  `download_trace_data_to_file` GETs `traces.json` at the signed URL (AWS presigned URL or Azure
  SAS). The emulator signs `<trace's backend artifact location>/traces.json` in the workspace
  bucket; a missing trace → 404 `RESOURCE_DOES_NOT_EXIST`; an upload for a trace of a deleted
  experiment → 400 `INVALID_PARAMETER_VALUE`.
- OTLP (`POST /v1/traces`, `POST /api/2.0/otel/v1/traces`): 404 `ENDPOINT_NOT_FOUND`. Experiment
  traces on a workspace take no OTLP (`DatabricksTracingRestStore.log_spans` sends
  `/api/2.0/otel/v1/traces` only with a UC table header, for UC trace locations).
- `PATCH /api/2.0/mlflow/traces/{id}/tags` (`RestStore.set_trace_tag`, `get_trace_tag_endpoint`)
  and `POST /api/2.0/mlflow/traces/link-to-run` (`RestStore.link_traces_to_run`) reach the backing
  server through the generic `/api/2.0/mlflow/...` passthrough.

Shapes: the backing OSS server gives a trace the artifact location
`<experiment artifact location>/traces/<trace_id>/artifacts`; every forwarded answer is translated
(`workspace.translate`) to Databricks' `dbfs:/databricks/mlflow-tracking/<exp>/<trace_id>/artifacts`,
the form `_extract_resource` takes. The OSS server's own bookkeeping metadata
`mlflow.trace.infoFinalized` is dropped from trace answers.

UNKNOWN (no source settles it; the emulator's choice in brackets): whether real workspaces serve
the V4 `search-long-running` for experiment locations [no: the client falls back to V3]; whether
`GET /api/3.0/mlflow/traces/get` exists on workspaces [no]; whether StartTraceV3 keeps the
client's trace id, `request_time`, `execution_duration` and the assessments sent with the trace
info as given [kept, as the OSS server does]; where in the workspace bucket `traces.json` lives
[under the backend location, `databricks/mlflow-tracking/<exp>/traces/<tr>/artifacts/traces.json`];
the message of a credential request for a trace of a deleted experiment.
"""
import json

from .errors import ApiError, invalid, no_endpoint, not_found
from .httpcore import Response
from .workspace import dbfs_key

TRACE_DATA_FILE = "traces.json"  # mlflow/tracing/constant.py TRACE_DATA_FILE_NAME (via the artifact repo)
_OSS_ONLY_METADATA = ("mlflow.trace.infoFinalized",)  # TraceMetadataKey.TRACE_INFO_FINALIZED


def _strip_oss_metadata(obj):
    """Drop the OSS store's bookkeeping keys from every trace_metadata / request_metadata map."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("trace_metadata", "request_metadata") and isinstance(v, dict):
                for key in _OSS_ONLY_METADATA:
                    v.pop(key, None)
            else:
                _strip_oss_metadata(v)
    elif isinstance(obj, list):
        for v in obj:
            _strip_oss_metadata(v)
    return obj


def add_routes(r, ws):
    """Register the trace routes on Router `r` for Workspace `ws` (before the catch-alls)."""
    V3 = r"/api/3\.0/mlflow/traces"

    def forward(req):
        return Response(200, _strip_oss_metadata(ws.forward(req)))

    def refuse(req):
        raise no_endpoint(req.method, req.path)

    def backend_trace_info(trace_id):
        """The trace info as the backing server keeps it (artifact location untranslated)."""
        status, data = ws.backend.raw("GET", f"/api/3.0/mlflow/traces/{trace_id}")
        try:
            obj = json.loads(data) if data else {}
        except ValueError:
            obj = {}
        if status != 200:
            if status == 404 or obj.get("error_code") == "RESOURCE_DOES_NOT_EXIST":
                raise not_found(f"Trace with ID {trace_id} not found.")
            raise ApiError(obj.get("error_code", "INTERNAL_ERROR"), obj.get("message", ""), status=status)
        return obj["trace"]["trace_info"]

    def credentials(req, write):
        trace_id = req.match.group("id")
        info = backend_trace_info(trace_id)
        location = (info.get("tags") or {}).get("mlflow.artifactLocation")
        if not location:
            raise invalid(f"Trace {trace_id} has no artifact location.")
        if write:
            exp_id = ((info.get("trace_location") or {}).get("mlflow_experiment") or {}).get("experiment_id")
            if exp_id:
                exp = ws.backend.call("GET", "experiments/get", {"experiment_id": exp_id})["experiment"]
                if exp.get("lifecycle_stage") == "deleted":
                    raise invalid(f"The experiment {exp_id} of trace {trace_id} must be in the 'active' "
                                  "state. Current state is deleted.")
        key = f"{dbfs_key(location)}/{TRACE_DATA_FILE}"
        return Response(200, {"credential_info": ws._cred_info(key, write, {})})

    # StartTraceV3, SearchTracesV3, GetTraceInfoV3, assessments: forwarded (Databricks error shapes)
    r.add("POST", V3, forward)
    r.add("POST", V3 + r"/search", forward)
    r.add("GET", V3 + r"/get", refuse)  # GetTrace with spans: not a workspace route (see above)
    r.add("GET", V3 + r"/(?P<id>tr-[^/]+)", forward)
    r.add("POST", V3 + r"/(?P<id>[^/]+)/assessments", forward)
    r.add("GET|PATCH|DELETE", V3 + r"/(?P<id>[^/]+)/assessments/(?P<aid>[^/]+)", forward)
    # the V4 long-running search: not served, the client falls back to V3
    r.add("POST", r"/api/4\.0/mlflow/traces/search-long-running", refuse)
    # trace data (traces.json) through signed URLs
    r.add("GET", r"/api/2\.0/mlflow/traces/(?P<id>[^/]+)/credentials-for-data-upload",
          lambda q: credentials(q, True))
    r.add("GET", r"/api/2\.0/mlflow/traces/(?P<id>[^/]+)/credentials-for-data-download",
          lambda q: credentials(q, False))
    # OTLP span ingest: not for experiment traces on a workspace
    r.add("POST", r"/v1/traces", refuse)
    r.add("POST", r"/api/2\.0/otel/v1/traces", refuse)

