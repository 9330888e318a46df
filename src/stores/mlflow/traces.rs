//! MLflow 3 trace routes of the MLflow REST API (MLflow 3.17.2, `protos/service_pb2.py`;
//! facts in `shared/reference/mlflow-genai-objects.md` §3-§4): search, info, link-to-run and
//! link-prompts are the same on every server; where the spans are kept is the server's
//! `TraceStorage` (its `Flavor` says which). An open-source server keeps them in its tracking
//! store: read with `traces/get`, written by OTLP span ingest, then the info by StartTraceV3.

use super::rest::MlflowRest;
use super::span_json;
use crate::api::CopyError;
use crate::stores::{Call, FullTrace, TracePage, Traces, TRACE_PAGE};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize, Default)]
#[serde(default)]
struct SearchAnswer {
    traces: Vec<Value>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct GetAnswer {
    trace: TraceBody,
}

#[derive(Deserialize)]
struct TraceBody {
    trace_info: Value,
    #[serde(default)]
    spans: Vec<Value>,
}

/// Trace tag saying where the spans are; `TRACKING_STORE`: rows of the server's database, which
/// `traces/get` reads. Otherwise they are a `traces.json` artifact (older clients, file stores),
/// which `traces/get` refuses ("Trace data not stored in tracking store").
const SPANS_LOCATION: &str = "mlflow.trace.spansLocation";
const TRACKING_STORE: &str = "TRACKING_STORE";

#[derive(Deserialize)]
struct SpanFile {
    spans: Vec<Value>,
}

/// Where a server keeps a trace's spans, and so how a trace is read and written whole.
pub trait TraceStorage {
    /// See `Traces::get_traces`.
    fn get_traces(&self, rest: &MlflowRest, listed: &[Value]) -> Vec<Result<FullTrace, CopyError>>;
    /// See `Traces::begin_traces`.
    fn begin_traces(
        &self,
        rest: &MlflowRest,
        traces: &[(Value, Vec<Value>)],
    ) -> Vec<Result<String, CopyError>>;
    /// See `Traces::complete_traces`.
    fn complete_traces(&self, rest: &MlflowRest, infos: &[Value]) -> Vec<Result<(), CopyError>>;
    /// See `Traces::trace_infos`: GetTraceInfoV3 of each, several in flight.
    fn trace_infos(
        &self,
        rest: &MlflowRest,
        ids: &[String],
    ) -> Vec<Result<Option<Value>, CopyError>> {
        rest.trace_infos_one_by_one(ids)
    }
}

/// Trace requests in flight at once (reads of spans, span and info writes). Each is one small
/// request; the server handles them in parallel (two workers by default).
const IN_FLIGHT: usize = 8;

/// An open-source server's: span rows in its tracking store (or, for traces older clients
/// wrote, a `traces.json` file the server reads for us).
pub struct TrackingStoreSpans;

/// Most ids one `batchGet` takes: what MLflow's client sends (`environment_variables.py:
/// MLFLOW_SEARCH_TRACES_MAX_BATCH_SIZE`).
const BATCH_GET: usize = 10;

#[derive(Deserialize, Default)]
#[serde(default)]
struct BatchAnswer {
    traces: Vec<TraceBody>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct InfosAnswer {
    trace_infos: Vec<Value>,
}

impl TrackingStoreSpans {
    /// Up to `BATCH_GET` traces with their spans in one request (`traces/batchGet`).
    fn batch_call<'s>(&self, rest: &'s MlflowRest, ids: &[&str]) -> Call<'s, Vec<FullTrace>> {
        let query: Vec<(&str, &str)> = ids.iter().map(|id| ("trace_ids", *id)).collect();
        let request = rest.get_request("/api/3.0/mlflow/traces/batchGet", &query);
        rest.prepare::<BatchAnswer>(request).map(|answer| {
            let full = |t: TraceBody| FullTrace {
                info: t.trace_info,
                spans: t.spans,
            };
            answer.traces.into_iter().map(full).collect()
        })
    }

    /// The spans alone, every trace's in one request: OTLP ingest makes rows without metadata,
    /// which a resumed copy recognises as its own (`engine::traces`); StartTraceV3 then writes
    /// each info.
    fn begin_call<'s>(&self, rest: &'s MlflowRest, traces: &[(Value, Vec<Value>)]) -> Call<'s, ()> {
        // One experiment per call (the header): a wave's traces all go to one.
        let experiment_id = &traces[0].0["trace_location"]["mlflow_experiment"]["experiment_id"];
        // Proto field names with base64 ids: the shape `traces/get` returns, accepted as is.
        let spans: Vec<&Value> = traces.iter().flat_map(|(_, spans)| spans).collect();
        let body = json!({ "resource_spans": [{ "scope_spans": [{ "spans": spans }] }] });
        let request = rest.post_request("/v1/traces", &body).header(
            "x-mlflow-experiment-id",
            experiment_id.as_str().unwrap_or_default(),
        );
        // The answer is an empty protobuf message, not JSON.
        rest.prepare_with(request, |_, _| Ok(()))
    }

    /// StartTraceV3 with the whole info, assessments inside (an upsert keyed by the trace id).
    fn complete_call<'s>(&self, rest: &'s MlflowRest, info: &Value) -> Call<'s, ()> {
        let body = json!({ "trace": { "trace_info": info } });
        let request = rest.post_request("/api/3.0/mlflow/traces", &body);
        rest.prepare::<Value>(request).map(drop)
    }
}

impl TraceStorage for TrackingStoreSpans {
    /// Traces whose spans are rows are read `BATCH_GET` at a time (one trace without rows
    /// would fail a whole batch); a span file is read on its own.
    fn get_traces(&self, rest: &MlflowRest, listed: &[Value]) -> Vec<Result<FullTrace, CopyError>> {
        let id = |info: &Value| info["trace_id"].as_str().unwrap_or_default().to_string();
        let in_rows = |info: &&Value| info["tags"][SPANS_LOCATION] == TRACKING_STORE;
        let ids: Vec<String> = listed.iter().filter(in_rows).map(id).collect();
        let chunks: Vec<Vec<&str>> = ids
            .chunks(BATCH_GET)
            .map(|chunk| chunk.iter().map(String::as_str).collect())
            .collect();
        let calls = chunks.iter().map(|chunk| self.batch_call(rest, chunk));
        let mut found = std::collections::HashMap::new();
        let mut failed = None;
        for answer in rest.run_together(calls.collect(), IN_FLIGHT) {
            match answer {
                Ok(traces) => found.extend(traces.into_iter().map(|t| (id(&t.info), t))),
                Err(e) => failed = Some(e),
            }
        }
        let read = |info: &Value| {
            let trace_id = id(info);
            if !in_rows(&info) {
                return rest.trace_from_file(&trace_id);
            }
            if let Some(e) = &failed {
                return Err(e.clone());
            }
            found.remove(&trace_id).ok_or_else(|| {
                CopyError::not_found(format!(
                    "{}: trace {trace_id} is missing from the batchGet answer",
                    rest.base_display()
                ))
            })
        };
        listed.iter().map(read).collect()
    }

    fn begin_traces(
        &self,
        rest: &MlflowRest,
        traces: &[(Value, Vec<Value>)],
    ) -> Vec<Result<String, CopyError>> {
        if traces.is_empty() {
            return Vec::new();
        }
        let sent = self.begin_call(rest, traces).run_alone(rest.transport());
        let id = |(info, _): &(Value, Vec<Value>)| {
            let trace_id = info["trace_id"].as_str().unwrap_or_default().to_string();
            sent.clone().map(|()| trace_id)
        };
        traces.iter().map(id).collect()
    }

    fn complete_traces(&self, rest: &MlflowRest, infos: &[Value]) -> Vec<Result<(), CopyError>> {
        let calls = infos.iter().map(|info| self.complete_call(rest, info));
        rest.run_together(calls.collect(), IN_FLIGHT)
    }

    /// One `batchGetInfos` request per wave; the server leaves out the ids it has not got.
    fn trace_infos(
        &self,
        rest: &MlflowRest,
        ids: &[String],
    ) -> Vec<Result<Option<Value>, CopyError>> {
        let request = rest.post_request(
            "/api/3.0/mlflow/traces/batchGetInfos",
            &json!({ "trace_ids": ids }),
        );
        match rest
            .prepare::<InfosAnswer>(request)
            .run_alone(rest.transport())
        {
            Ok(answer) => {
                let mut found: std::collections::HashMap<String, Value> = answer
                    .trace_infos
                    .into_iter()
                    .map(|info| {
                        (
                            info["trace_id"].as_str().unwrap_or_default().to_string(),
                            info,
                        )
                    })
                    .collect();
                ids.iter().map(|id| Ok(found.remove(id))).collect()
            }
            Err(e) => ids.iter().map(|_| Err(e.clone())).collect(),
        }
    }
}

impl MlflowRest {
    /// The info, and the spans from the trace's span file, read by the server wherever it keeps
    /// it (`server/handlers.py:get_trace_artifact_handler`; only under `/ajax-api`).
    /// The trace's info; a trace the server has not got is a `not_found` error.
    pub fn existing_trace_info(&self, trace_id: &str) -> Result<Value, CopyError> {
        self.trace_info(trace_id)?.ok_or_else(|| {
            CopyError::not_found(format!(
                "trace {trace_id} not found on {}",
                self.base_display()
            ))
        })
    }

    fn trace_from_file(&self, trace_id: &str) -> Result<FullTrace, CopyError> {
        let info = self.existing_trace_info(trace_id)?;
        let file: SpanFile = self.get(
            "/ajax-api/2.0/mlflow/get-trace-artifact",
            &[("request_id", trace_id)],
        )?;
        let spans = file.spans.into_iter().map(span_json::to_otlp).collect();
        Ok(FullTrace { info, spans })
    }
}

/// Where a trace lives, as TraceInfoV3 and the search request name it.
pub fn experiment_location(experiment_id: &str) -> Value {
    json!({ "type": "MLFLOW_EXPERIMENT", "mlflow_experiment": { "experiment_id": experiment_id } })
}

impl MlflowRest {
    /// GetTraceInfoV3 of each trace, several in flight; `None` for a trace the server has not.
    fn trace_infos_one_by_one(&self, ids: &[String]) -> Vec<Result<Option<Value>, CopyError>> {
        let calls = ids.iter().map(|id| {
            let request = self.get_request(&format!("/api/3.0/mlflow/traces/{id}"), &[]);
            self.prepare::<GetAnswer>(request)
        });
        let answers = self.run_together(calls.collect(), IN_FLIGHT);
        let found = |answer: Result<GetAnswer, CopyError>| match answer {
            Ok(answer) => Ok(Some(answer.trace.trace_info)),
            Err(e) if e.has_code("RESOURCE_DOES_NOT_EXIST") || e.has_code("NOT_FOUND") => Ok(None),
            Err(e) => Err(e),
        };
        answers.into_iter().map(found).collect()
    }
}

impl Traces for MlflowRest {
    fn search_traces(
        &self,
        experiment_id: &str,
        filter: &str,
        token: Option<&str>,
    ) -> Result<TracePage, CopyError> {
        let mut body = json!({
            "locations": [experiment_location(experiment_id)],
            "filter": filter,
            "max_results": TRACE_PAGE,
            "order_by": ["timestamp_ms ASC"],
        });
        if let Some(t) = token {
            body["page_token"] = json!(t);
        }
        let answer: SearchAnswer = self.post("/api/3.0/mlflow/traces/search", &body)?;
        Ok(TracePage {
            infos: answer.traces,
            next_token: answer.next_page_token.filter(|t| !t.is_empty()),
        })
    }

    fn trace_infos(&self, ids: &[String]) -> Vec<Result<Option<Value>, CopyError>> {
        self.flavor().trace_storage().trace_infos(self, ids)
    }

    fn get_traces(&self, listed: &[Value]) -> Vec<Result<FullTrace, CopyError>> {
        self.flavor().trace_storage().get_traces(self, listed)
    }

    fn begin_traces(&self, traces: &[(Value, Vec<Value>)]) -> Vec<Result<String, CopyError>> {
        self.flavor().trace_storage().begin_traces(self, traces)
    }

    fn complete_traces(&self, infos: &[Value]) -> Vec<Result<(), CopyError>> {
        self.flavor().trace_storage().complete_traces(self, infos)
    }

    fn link_traces_to_run(&self, run_id: &str, trace_ids: &[String]) -> Result<(), CopyError> {
        let body = json!({ "trace_ids": trace_ids, "run_id": run_id });
        self.post::<Value>("/api/2.0/mlflow/traces/link-to-run", &body)
            .map(drop)
    }

    fn link_prompts(&self, trace_id: &str, versions: &[(String, String)]) -> Result<(), CopyError> {
        let versions: Vec<Value> = versions
            .iter()
            .map(|(name, version)| json!({ "name": name, "version": version }))
            .collect();
        let body = json!({ "trace_id": trace_id, "prompt_versions": versions });
        self.post::<Value>("/api/2.0/mlflow/traces/link-prompts", &body)
            .map(drop)
    }
}
