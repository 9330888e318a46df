//! The in-memory server's MLflow 3 traces: enough of the open-source behaviour for the
//! engine's unit tests (search by run or model, upserts keyed by trace id — a StartTraceV3 with
//! an id from another experiment moves that trace, as on a real server).

use super::fake::FakeServer;
use super::{FullTrace, TracePage, Traces};
use crate::api::CopyError;
use base64::Engine as _;
use serde_json::{json, Value};

/// Infos per search page: small, so that tests walk several pages.
const PAGE: usize = 2;

#[derive(Debug, Clone, Default)]
pub struct FakeTrace {
    pub info: Value,
    pub spans: Vec<Value>,
    /// Runs the trace is associated with (link-to-run).
    pub runs: Vec<String>,
}

impl FakeTrace {
    pub fn id(&self) -> &str {
        self.info["trace_id"].as_str().unwrap_or_default()
    }

    fn experiment(&self) -> &str {
        self.info["trace_location"]["mlflow_experiment"]["experiment_id"]
            .as_str()
            .unwrap_or_default()
    }

    /// The two filters the engine sends: `trace.run_id = '…'`, ``metadata.`k` = '…'``.
    fn matches(&self, filter: &str) -> bool {
        let value = filter.rsplit('\'').nth(1).unwrap_or_default();
        if filter.starts_with("trace.run_id") {
            self.info["trace_metadata"]["mlflow.sourceRun"] == value
                || self.runs.iter().any(|r| r == value)
        } else {
            let key = filter.split('`').nth(1).unwrap_or_default();
            self.info["trace_metadata"][key] == value
        }
    }
}

/// `tr-<hex>` of an OTLP span's base64 trace id.
fn trace_id_of(span: &Value) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(span["trace_id"].as_str().unwrap_or_default())
        .unwrap_or_default();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("tr-{hex}")
}

impl FakeServer {
    fn upsert(&self, id: &str, update: impl FnOnce(&mut FakeTrace)) {
        let mut state = self.state.borrow_mut();
        let at = match state.traces.iter().position(|t| t.id() == id) {
            Some(at) => at,
            None => {
                let info = json!({ "trace_id": id, "tags": {}, "trace_metadata": {} });
                state.traces.push(FakeTrace {
                    info,
                    ..FakeTrace::default()
                });
                state.traces.len() - 1
            }
        };
        update(&mut state.traces[at]);
    }

    // One trace at a time, as the batch calls of `Traces` take them.

    fn get_one(&self, info: &Value) -> Result<FullTrace, CopyError> {
        self.check("get_trace")?;
        let trace_id = info["trace_id"].as_str().unwrap_or_default();
        let state = self.state.borrow();
        let trace = state.traces.iter().find(|t| t.id() == trace_id);
        let trace = trace.ok_or_else(|| CopyError::not_found(format!("trace {trace_id}")))?;
        Ok(FullTrace {
            info: trace.info.clone(),
            spans: trace.spans.clone(),
        })
    }

    /// As an open-source server: the spans alone (a row without metadata), op "log_spans";
    /// as a workspace (`traces_info_first`): the pending info with the spans.
    fn begin_one(&self, pending: &Value, spans: &[Value]) -> Result<String, CopyError> {
        self.write("log_spans")?;
        let location = pending["trace_location"].clone();
        for span in spans {
            self.upsert(&trace_id_of(span), |t| {
                t.info["trace_location"] = location.clone();
                t.spans.retain(|s| s["span_id"] != span["span_id"]);
                t.spans.push(span.clone());
            });
        }
        let id = pending["trace_id"].as_str().unwrap_or_default().to_string();
        if self.traces_info_first.get() {
            self.upsert(&id, |t| t.info = pending.clone());
        }
        Ok(id)
    }

    /// StartTraceV3: an upsert of the whole info, op "start_trace".
    fn complete_one(&self, info: &Value) -> Result<(), CopyError> {
        self.write("start_trace")?;
        let id = info["trace_id"].as_str().unwrap_or_default().to_string();
        self.upsert(&id, |t| t.info = info.clone());
        Ok(())
    }
}

impl Traces for FakeServer {
    fn search_traces(
        &self,
        experiment_id: &str,
        filter: &str,
        token: Option<&str>,
    ) -> Result<TracePage, CopyError> {
        self.check("search_traces")?;
        let start: usize = token.map_or(0, |t| t.parse().unwrap_or(0));
        let state = self.state.borrow();
        let found: Vec<&FakeTrace> = state
            .traces
            .iter()
            .filter(|t| t.experiment() == experiment_id && t.matches(filter))
            .collect();
        let end = (start + PAGE).min(found.len());
        Ok(TracePage {
            infos: found[start.min(end)..end]
                .iter()
                .map(|t| t.info.clone())
                .collect(),
            next_token: (end < found.len()).then(|| end.to_string()),
        })
    }

    fn get_traces(&self, listed: &[Value]) -> Vec<Result<FullTrace, CopyError>> {
        listed.iter().map(|info| self.get_one(info)).collect()
    }

    fn trace_infos(&self, ids: &[String]) -> Vec<Result<Option<Value>, CopyError>> {
        let state = self.state.borrow();
        let info = |id: &String| {
            state
                .traces
                .iter()
                .find(|t| t.id() == id)
                .map(|t| t.info.clone())
        };
        ids.iter().map(|id| Ok(info(id))).collect()
    }

    fn begin_traces(&self, traces: &[(Value, Vec<Value>)]) -> Vec<Result<String, CopyError>> {
        traces
            .iter()
            .map(|(pending, spans)| self.begin_one(pending, spans))
            .collect()
    }

    fn complete_traces(&self, infos: &[Value]) -> Vec<Result<(), CopyError>> {
        infos.iter().map(|info| self.complete_one(info)).collect()
    }

    fn link_traces_to_run(&self, run_id: &str, trace_ids: &[String]) -> Result<(), CopyError> {
        self.write("link_traces_to_run")?;
        for id in trace_ids {
            self.upsert(id, |t| {
                if !t.runs.iter().any(|r| r == run_id) {
                    t.runs.push(run_id.to_string());
                }
            });
        }
        Ok(())
    }

    fn link_prompts(
        &self,
        _trace_id: &str,
        _versions: &[(String, String)],
    ) -> Result<(), CopyError> {
        self.write("link_prompts")
    }
}
