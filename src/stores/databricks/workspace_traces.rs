//! Where a Databricks workspace keeps an experiment trace's spans: a `traces.json` file (MLflow
//! span JSON) reached through signed URLs, not span rows behind OTLP ingest. This follows
//! MLflow's own client for a `databricks` tracking URI (MLflow 3.17.2):
//!
//! - writing (`tracing/export/mlflow_v3.py`: no OTLP for Databricks): StartTraceV3 first, with
//!   the info; the server answers the trace's info with its artifact location; then
//!   `traces.json` is uploaded with `GET /api/2.0/mlflow/traces/{id}/credentials-for-data-upload`
//!   (`store/artifact/databricks_artifact_repo.py:upload_trace_data`,
//!   `databricks_artifact_repo_resources.py:_Trace`); assessments are created one by one
//!   (`store/tracking/rest_store.py:create_assessment`, `POST /api/3.0/mlflow/traces/{id}/assessments`);
//! - reading (`tracing/client.py:get_trace`: the store's `get_trace` is not implemented for
//!   Databricks): the info, then `traces.json` through `credentials-for-data-download`.
//!
//! Because the info is written before the spans, the copy's lineage tag says "incomplete"
//! until `complete_traces` sets it (`PATCH /api/2.0/mlflow/traces/{id}/tags`, `set_trace_tag`).
//!
//! Traces kept in Unity Catalog tables (ids `trace:/<catalog>.<schema>/…`, routes under
//! `/api/4.0/mlflow/traces/…` that need a SQL warehouse) are not handled here: see the README.

use super::artifacts::ArtifactAccess;
use crate::api::CopyError;
use crate::stores::mlflow::span_json;
use crate::stores::mlflow::{MlflowRest, TraceStorage};
use crate::stores::model::{ArtifactRoot, Owner};
use crate::stores::{FullTrace, Traces};
use serde::Deserialize;
use serde_json::{json, Value};

/// The span file's name (`tracing/constant.py:TRACE_DATA_FILE_NAME`).
const TRACE_DATA_FILE: &str = "traces.json";
/// The tag naming where a trace's files are (`utils/mlflow_tags.py:MLFLOW_ARTIFACT_LOCATION`).
const ARTIFACT_LOCATION: &str = "mlflow.artifactLocation";

pub struct SpanFiles {
    pub files: ArtifactAccess,
}

#[derive(Deserialize)]
struct TraceAnswer {
    trace: TraceInfoBody,
}

#[derive(Deserialize)]
struct TraceInfoBody {
    trace_info: Value,
}

#[derive(Deserialize)]
struct SpanFile {
    #[serde(default)]
    spans: Vec<Value>,
}

fn trace_id_of(info: &Value) -> &str {
    info["trace_id"].as_str().unwrap_or_default()
}

/// The trace's span file, as an artifact root the workspace's credentials route serves.
fn span_root(rest: &MlflowRest, info: &Value) -> Result<ArtifactRoot, CopyError> {
    let trace_id = trace_id_of(info);
    let uri = info["tags"][ARTIFACT_LOCATION].as_str().ok_or_else(|| {
        CopyError::upstream(format!(
            "{}: trace {trace_id} has no {ARTIFACT_LOCATION} tag: the workspace did not say \
             where its spans are kept",
            rest.base_display()
        ))
    })?;
    Ok(ArtifactRoot {
        owner: Owner::Trace(trace_id.to_string()),
        uri: uri.to_string(),
    })
}

/// `info` without what StartTraceV3 should not be given: its assessments, which are created
/// through their own route (the trace's assessments are rows of their own on the server).
fn without_assessments(info: &Value) -> Value {
    let mut info = info.clone();
    if let Some(fields) = info.as_object_mut() {
        fields.remove("assessments");
    }
    info
}

/// The same assessment: its name, source and creation time (the server gives a created
/// assessment an id of its own).
fn same_assessment(a: &Value, b: &Value) -> bool {
    let time = |v: &Value| v["create_time"].as_str().map(timestamp_key);
    a["assessment_name"] == b["assessment_name"] && a["source"] == b["source"] && time(a) == time(b)
}

/// An RFC 3339 time without the fraction's trailing zeros (`…:00.500Z` and `…:00.5Z`, `…:00Z`
/// and `…:00.000Z` are the same time; servers write either).
fn timestamp_key(time: &str) -> String {
    let Some((whole, rest)) = time.split_once('.') else {
        return time.to_string();
    };
    let zone_at = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (fraction, zone) = rest.split_at(zone_at);
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        format!("{whole}{zone}")
    } else {
        format!("{whole}.{fraction}{zone}")
    }
}

impl SpanFiles {
    fn start_trace(&self, rest: &MlflowRest, pending: &Value) -> Result<Value, CopyError> {
        let body = json!({ "trace": { "trace_info": without_assessments(pending) } });
        let answer: TraceAnswer = rest.post("/api/3.0/mlflow/traces", &body)?;
        Ok(answer.trace.trace_info)
    }

    /// Creates, in order, the assessments the trace lacks; an assessment that overrides an
    /// earlier one names the earlier one's new id.
    fn create_assessments(
        &self,
        rest: &MlflowRest,
        info: &Value,
        written: &Value,
    ) -> Result<(), CopyError> {
        let trace_id = trace_id_of(info);
        let existing = written["assessments"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut new_ids = std::collections::BTreeMap::new();
        for wanted in info["assessments"].as_array().into_iter().flatten() {
            let old_id = wanted["assessment_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if let Some(found) = existing.iter().find(|e| same_assessment(e, wanted)) {
                new_ids.insert(old_id, found["assessment_id"].clone());
                continue;
            }
            let mut assessment = wanted.clone();
            assessment["trace_id"] = json!(trace_id);
            if let Some(fields) = assessment.as_object_mut() {
                fields.remove("assessment_id");
            }
            if let Some(overridden) = wanted["overrides"].as_str() {
                assessment["overrides"] = new_ids.get(overridden).cloned().unwrap_or_default();
            }
            let path = format!("/api/3.0/mlflow/traces/{trace_id}/assessments");
            let created: Value = rest.post(&path, &json!({ "assessment": assessment }))?;
            new_ids.insert(old_id, created["assessment"]["assessment_id"].clone());
        }
        Ok(())
    }

    fn read_one(&self, rest: &MlflowRest, listed: &Value) -> Result<FullTrace, CopyError> {
        let trace_id = trace_id_of(listed);
        let info = rest.existing_trace_info(trace_id)?;
        let bytes = self
            .files
            .read_small(rest, &span_root(rest, &info)?, TRACE_DATA_FILE)?;
        let file: SpanFile = serde_json::from_slice(&bytes).map_err(|e| {
            CopyError::upstream(format!(
                "{}: the span file of trace {trace_id} is not MLflow span JSON ({e})",
                rest.base_display()
            ))
        })?;
        let spans = file.spans.into_iter().map(span_json::to_otlp).collect();
        Ok(FullTrace { info, spans })
    }

    /// The info (unless an earlier attempt wrote it), then the span file, in the trace id the
    /// workspace answered with.
    fn begin_one(
        &self,
        rest: &MlflowRest,
        pending: &Value,
        spans: &[Value],
    ) -> Result<String, CopyError> {
        let info = match rest.trace_info(trace_id_of(pending))? {
            Some(info) => info,
            None => self.start_trace(rest, pending)?,
        };
        let trace_id = trace_id_of(&info).to_string();
        let spans: Vec<Value> = spans
            .iter()
            .map(|s| span_json::to_mlflow(s, &trace_id))
            .collect();
        let body = serde_json::to_vec(&json!({ "spans": spans })).expect("JSON values serialize");
        self.files
            .write_small(rest, &span_root(rest, &info)?, TRACE_DATA_FILE, body)?;
        Ok(trace_id)
    }

    /// The assessments, then the tags the trace has not got yet (the lineage tag, which
    /// `begin_one` wrote as "incomplete").
    fn complete_one(&self, rest: &MlflowRest, info: &Value) -> Result<(), CopyError> {
        let trace_id = trace_id_of(info);
        let written = rest.existing_trace_info(trace_id)?;
        self.create_assessments(rest, info, &written)?;
        let tags = info["tags"].as_object().into_iter().flatten();
        let path = format!("/api/2.0/mlflow/traces/{trace_id}/tags");
        for (key, value) in tags.filter(|(k, v)| written["tags"][k.as_str()] != **v) {
            rest.patch::<Value>(&path, &json!({ "key": key, "value": value }))?;
        }
        Ok(())
    }
}

/// A trace at a time: each step of a workspace trace waits on the one before (its info says
/// where its span file goes).
impl TraceStorage for SpanFiles {
    fn get_traces(&self, rest: &MlflowRest, listed: &[Value]) -> Vec<Result<FullTrace, CopyError>> {
        listed
            .iter()
            .map(|info| self.read_one(rest, info))
            .collect()
    }

    fn begin_traces(
        &self,
        rest: &MlflowRest,
        traces: &[(Value, Vec<Value>)],
    ) -> Vec<Result<String, CopyError>> {
        let begin = |(pending, spans): &(Value, Vec<Value>)| self.begin_one(rest, pending, spans);
        traces.iter().map(begin).collect()
    }

    fn complete_traces(&self, rest: &MlflowRest, infos: &[Value]) -> Vec<Result<(), CopyError>> {
        infos
            .iter()
            .map(|info| self.complete_one(rest, info))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assessments_match_by_name_source_and_time_however_written() {
        let source = json!({"source_type": "HUMAN", "source_id": "bob"});
        let a = json!({"assessment_name": "helpful", "source": source, "create_time": "2026-12-01T10:00:00.500Z"});
        let b = json!({"assessment_name": "helpful", "source": source, "create_time": "2026-12-01T10:00:00.5Z"});
        assert!(same_assessment(&a, &b));
        let later = json!({"assessment_name": "helpful", "source": source, "create_time": "2026-12-01T10:00:01Z"});
        assert!(!same_assessment(&a, &later));
        assert_eq!(
            timestamp_key("2026-12-01T10:00:00.000Z"),
            "2026-12-01T10:00:00Z"
        );
        assert_eq!(
            timestamp_key("2026-12-01T10:00:00Z"),
            "2026-12-01T10:00:00Z"
        );
        assert_eq!(
            timestamp_key("2026-12-01T10:00:00.120+01:00"),
            "2026-12-01T10:00:00.12+01:00"
        );
    }
}
