//! The MLflow 3 traces of a copied run and of its copied logged models, with their spans and
//! assessments (facts: `shared/reference/mlflow-genai-objects.md` §5).
//!
//! Per trace: read it with its spans, send the spans by OTLP to the destination experiment,
//! link it to the copied run when the source linked it to the run, then write its info
//! (StartTraceV3) with every id that names the source re-pointed at the copies. The info is
//! written last and carries the lineage tag `SRC_TRACE_ID`: a trace with that tag is complete,
//! and a resumed copy skips it.
//!
//! Ids: kept when source and destination are different servers and the id is free there;
//! otherwise (same server: StartTraceV3 with an existing id would MOVE the source trace) a new
//! id derived from the source id and the destination run, so that a repeated attempt writes
//! the same trace again instead of a duplicate. Assessment ids (a table's primary key) follow
//! the same rule.

use super::models::ModelCopy;
use super::prompts::{self, PromptCopier, LINKED_PROMPTS};
use super::Copier;
use crate::stores::mlflow::span_json::plain_value;
use crate::stores::model::Run;
use crate::stores::Traces;
use anyhow::Context;
use base64::Engine as _;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Trace tag on a copied trace: the source trace's id.
pub const SRC_TRACE_ID: &str = "mlflow_exim.src_trace.trace_id";
/// The lineage tag's value on a copy begun and not yet complete (where a store writes the
/// info before the spans): a resumed copy finishes it instead of skipping it.
const INCOMPLETE: &str = "incomplete copy of ";

fn incomplete_mark(src_id: &str) -> String {
    format!("{INCOMPLETE}{src_id}")
}

/// Most search pages read per filter: 100,000 traces at `TRACE_PAGE` each, then a clear error.
const MAX_PAGES: usize = 1000;

/// Metadata keys (trace and assessment) whose value is a run or logged-model id.
const ID_KEYS: [&str; 3] = [
    "mlflow.sourceRun",
    "mlflow.modelId",
    "mlflow.assessment.sourceRunId",
];
/// Metadata every client-logged trace has (`tracing/constant.py:TraceMetadataKey.SCHEMA_VERSION`)
/// and a row made by OTLP span ingest alone lacks.
const SCHEMA_VERSION: &str = "mlflow.trace_schema.version";
/// Tags the destination server sets for itself (where it keeps the trace's data).
pub(super) const SERVER_TAGS: [&str; 2] = ["mlflow.artifactLocation", "mlflow.trace.spansLocation"];

#[derive(Default, Debug, PartialEq)]
pub struct TraceCounts {
    pub traces: u32,
    pub assessments: u32,
    /// Source trace id to its copy's, for the copies (of this invocation or an earlier one)
    /// whose id differs from the source's.
    pub new_ids: BTreeMap<String, String>,
}

/// How one source trace becomes its copy.
pub struct Rewrite<'a> {
    pub trace_id: String,
    pub experiment_id: &'a str,
    /// Source run and logged-model ids to the copies' ids.
    pub ids: &'a BTreeMap<String, String>,
    /// New assessment ids (same server), derived from the source ones.
    pub new_assessment_ids: bool,
}

/// Copies every trace linked to the source run (by metadata or association) or to one of the
/// copied logged models. Returns what this invocation wrote.
pub fn copy_traces(
    c: &mut Copier,
    src_run: &Run,
    dst_run_id: &str,
    dst_experiment_id: &str,
    copies: &[ModelCopy],
    prompts: &mut PromptCopier,
) -> anyhow::Result<TraceCounts> {
    let (src_tracking, dst_tracking) = (c.src.tracking.clone(), c.dst.tracking.clone());
    let src_run_id = &src_run.info.run_id;
    let Some(src) = src_tracking.traces() else {
        c.warn(format!(
            "traces of run {src_run_id} are not copied: {} does not serve traces through the \
             open-source MLflow routes",
            src_tracking.server()
        ));
        return Ok(TraceCounts::default());
    };
    let groups = source_groups(src_run, copies);
    // A server without the MLflow 3 trace routes (MLflow 2.x) has no traces to copy.
    if let Some(missing) =
        without_trace_routes(src.search_traces(&groups[0].experiment_id, &groups[0].filter, None))?
    {
        c.warn(format!(
            "traces of run {src_run_id} are not copied: {} has no trace routes ({missing})",
            src_tracking.server()
        ));
        return Ok(TraceCounts::default());
    }
    let Some(dst) = dst_tracking.traces() else {
        let found = count_source(src, &groups)?;
        if found > 0 {
            c.warn(format!(
                "{found} trace(s) of run {src_run_id} are not copied: {} does not take traces \
                 through the open-source MLflow routes",
                dst_tracking.server()
            ));
        }
        return Ok(TraceCounts::default());
    };
    let mut ids = BTreeMap::from([(src_run_id.clone(), dst_run_id.to_string())]);
    for copy in copies {
        ids.insert(copy.src.info.model_id.clone(), copy.dst_id.clone());
    }
    let dst_filters: Vec<String> = std::iter::once(run_filter(dst_run_id))
        .chain(copies.iter().map(|m| model_filter(&m.dst_id)))
        .collect();
    if let Some(missing) =
        without_trace_routes(dst.search_traces(dst_experiment_id, &dst_filters[0], None))?
    {
        let found = count_source(src, &groups)?;
        if found > 0 {
            c.warn(format!(
                "{found} trace(s) of run {src_run_id} are not copied: {} has no trace routes \
                 ({missing})",
                dst_tracking.server()
            ));
        }
        return Ok(TraceCounts::default());
    }
    let done = copied_already(dst, dst_experiment_id, &dst_filters)?;
    let same_server = src_tracking.server() == dst_tracking.server();
    let mut job = Job {
        src,
        dst,
        dst_run_id,
        dst_experiment_id,
        ids: &ids,
        same_server,
        done,
        seen: BTreeSet::new(),
        counts: TraceCounts::default(),
    };
    for group in &groups {
        job.copy_group(c, prompts, group)
            .with_context(|| format!("copying the traces matching {:?}", group.filter))?;
    }
    let renamed = job.done.iter().filter(|(src, dst)| src != dst);
    let renamed: Vec<_> = renamed.map(|(s, d)| (s.clone(), d.clone())).collect();
    job.counts.new_ids.extend(renamed);
    if job.counts.traces > 0 || !job.done.is_empty() {
        c.phase(format!(
            "traces: {} copied ({} assessments), {} already there",
            job.counts.traces,
            job.counts.assessments,
            job.done.len()
        ));
    }
    Ok(job.counts)
}

/// The source traces to copy: those of the run (linked to the run copy too), then those of each
/// copied logged model.
struct Group {
    experiment_id: String,
    filter: String,
    link_to_run: bool,
}

fn source_groups(src_run: &Run, copies: &[ModelCopy]) -> Vec<Group> {
    let run = Group {
        experiment_id: src_run.info.experiment_id.clone(),
        filter: run_filter(&src_run.info.run_id),
        link_to_run: true,
    };
    let models = copies.iter().map(|m| Group {
        experiment_id: m.src.info.experiment_id.clone(),
        filter: model_filter(&m.src.info.model_id),
        link_to_run: false,
    });
    std::iter::once(run).chain(models).collect()
}

/// Metadata `mlflow.sourceRun` or an association with the run (MLflow's `trace.run_id`).
pub(super) fn run_filter(run_id: &str) -> String {
    format!("trace.run_id = '{run_id}'")
}

pub(super) fn model_filter(model_id: &str) -> String {
    format!("metadata.`mlflow.modelId` = '{model_id}'")
}

/// `Some(the server's answer)` when a search failed because the server has no such route (an
/// MLflow server before 3.0 answers `ENDPOINT_NOT_FOUND`); other failures are errors.
pub(super) fn without_trace_routes<T>(
    search: Result<T, crate::api::CopyError>,
) -> Result<Option<String>, crate::api::CopyError> {
    match search {
        Ok(_) => Ok(None),
        // A bare 404 (no MLflow error code) is a route the server lacks too.
        Err(e)
            if e.has_code("ENDPOINT_NOT_FOUND")
                || (e.kind == crate::api::ErrorKind::NotFound && e.code.is_none()) =>
        {
            Ok(Some(e.message))
        }
        Err(e) => Err(e),
    }
}

/// Walks the pages of one search, bounded by `MAX_PAGES`.
pub(super) fn for_each_trace(
    store: &dyn Traces,
    experiment_id: &str,
    filter: &str,
    mut each: impl FnMut(Value) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let page = store.search_traces(experiment_id, filter, token.as_deref())?;
        for info in page.infos {
            each(info)?;
        }
        match page.next_token {
            Some(next) if token.as_deref() != Some(next.as_str()) => token = Some(next),
            _ => return Ok(()),
        }
    }
    anyhow::bail!(
        "more than {MAX_PAGES} pages of traces in experiment {experiment_id} match {filter:?}"
    )
}

fn count_source(src: &dyn Traces, groups: &[Group]) -> anyhow::Result<usize> {
    let mut found = BTreeSet::new();
    for g in groups {
        for_each_trace(src, &g.experiment_id, &g.filter, |info| {
            found.insert(str_at(&info, "trace_id").to_string());
            Ok(())
        })?;
    }
    Ok(found.len())
}

/// Source trace id to destination trace id, of the traces an earlier attempt completed.
fn copied_already(
    dst: &dyn Traces,
    experiment_id: &str,
    filters: &[String],
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut done = BTreeMap::new();
    for filter in filters {
        for_each_trace(dst, experiment_id, filter, |info| {
            let lineage = info["tags"][SRC_TRACE_ID].as_str();
            if let Some(src_id) = lineage.filter(|id| !id.starts_with(INCOMPLETE)) {
                done.insert(src_id.to_string(), str_at(&info, "trace_id").to_string());
            }
            Ok(())
        })?;
    }
    Ok(done)
}

struct Job<'a> {
    src: &'a dyn Traces,
    dst: &'a dyn Traces,
    dst_run_id: &'a str,
    dst_experiment_id: &'a str,
    ids: &'a BTreeMap<String, String>,
    same_server: bool,
    done: BTreeMap<String, String>,
    /// Source traces already handled by an earlier group (a trace of the run and its model).
    seen: BTreeSet<String>,
    counts: TraceCounts,
}

/// Traces copied together: read together, then each step's writes sent together (several
/// requests in flight), up to `WAVE` traces or `WAVE_BYTES` of them by their size metadata, so
/// that memory holds a few traces whatever the run has.
const WAVE: usize = 16;
// A wave's traces are linked to the run in one call.
const _: () = assert!(WAVE <= crate::stores::MAX_TRACE_LINKS);
const WAVE_BYTES: u64 = 8 << 20;
/// The size assumed for a trace whose info does not say (`mlflow.trace.sizeBytes`).
const UNKNOWN_SIZE: u64 = 256 << 10;

#[derive(Default)]
struct Wave {
    listed: Vec<Value>,
    bytes: u64,
}

impl Wave {
    fn push(&mut self, info: Value) {
        let size = info["trace_metadata"]["mlflow.trace.sizeBytes"].as_str();
        self.bytes += size.and_then(|s| s.parse().ok()).unwrap_or(UNKNOWN_SIZE);
        self.listed.push(info);
    }

    fn full(&self) -> bool {
        self.listed.len() >= WAVE || self.bytes >= WAVE_BYTES
    }

    fn take(&mut self) -> Vec<Value> {
        self.bytes = 0;
        std::mem::take(&mut self.listed)
    }
}

/// Every result, or the first failure named after its trace.
fn each_ok<T>(
    results: Vec<Result<T, crate::api::CopyError>>,
    ids: &[String],
) -> anyhow::Result<Vec<T>> {
    let mut all = Vec::with_capacity(results.len());
    for (result, id) in results.into_iter().zip(ids) {
        all.push(result.with_context(|| format!("copying trace {id}"))?);
    }
    Ok(all)
}

impl Job<'_> {
    fn copy_group(
        &mut self,
        c: &mut Copier,
        prompts: &mut PromptCopier,
        group: &Group,
    ) -> anyhow::Result<()> {
        let src = self.src;
        let mut wave = Wave::default();
        for_each_trace(src, &group.experiment_id, &group.filter, |info| {
            let id = str_at(&info, "trace_id").to_string();
            if !self.seen.insert(id.clone()) || self.done.contains_key(&id) {
                return Ok(());
            }
            wave.push(info);
            if wave.full() {
                self.copy_wave(c, prompts, wave.take(), group.link_to_run)?;
            }
            Ok(())
        })?;
        if !wave.listed.is_empty() {
            self.copy_wave(c, prompts, wave.take(), group.link_to_run)?;
        }
        Ok(())
    }

    /// Per wave: read the traces, make their linked prompts exist, begin every copy (spans),
    /// link them to the run, then complete them (info, lineage tag): a complete trace is
    /// skipped by a resumed copy, so every write before it may be repeated.
    fn copy_wave(
        &mut self,
        c: &mut Copier,
        prompts: &mut PromptCopier,
        listed: Vec<Value>,
        link_to_run: bool,
    ) -> anyhow::Result<()> {
        let src_ids: Vec<String> = listed
            .iter()
            .map(|i| str_at(i, "trace_id").to_string())
            .collect();
        let mut traces = each_ok(self.src.get_traces(&listed), &src_ids)?;
        drop(listed);
        for trace in &mut traces {
            // Prompts first: the copy's links name the destination's versions.
            for value in prompt_links(&trace.info, &trace.spans) {
                prompts.ensure_linked(c, &value)?;
            }
            relink_trace(&mut trace.info, &mut trace.spans, &prompts.map);
        }
        let wanted = self.destination_ids(&src_ids)?;
        let mut begun = Vec::with_capacity(traces.len());
        for ((trace, src_id), wanted) in traces.iter_mut().zip(&src_ids).zip(&wanted) {
            let spans = rewrite_spans(std::mem::take(&mut trace.spans), wanted)?;
            let mut pending = rewrite_info(&trace.info, src_id, &self.rewrite(wanted));
            pending["tags"][SRC_TRACE_ID] = json!(incomplete_mark(src_id));
            begun.push((pending, spans));
        }
        let ids = each_ok(self.dst.begin_traces(&begun), &src_ids)?;
        drop(begun);
        let infos: Vec<Value> = traces
            .iter()
            .zip(&src_ids)
            .zip(&ids)
            .map(|((trace, src_id), id)| rewrite_info(&trace.info, src_id, &self.rewrite(id)))
            .collect();
        if link_to_run {
            self.dst.link_traces_to_run(self.dst_run_id, &ids)?;
        }
        for (info, id) in infos.iter().zip(&ids) {
            let linked = prompts::linked(info["tags"][LINKED_PROMPTS].as_str().unwrap_or_default());
            if !linked.is_empty() && prompts.reach_destination() {
                self.dst.link_prompts(id, &linked)?;
            }
        }
        each_ok(self.dst.complete_traces(&infos), &src_ids)?;
        for ((info, src_id), id) in infos.iter().zip(src_ids).zip(ids) {
            self.counts.traces += 1;
            self.counts.assessments += info["assessments"].as_array().map_or(0, Vec::len) as u32;
            if id != src_id {
                self.counts.new_ids.insert(src_id, id);
            }
        }
        Ok(())
    }

    fn rewrite(&self, trace_id: &str) -> Rewrite<'_> {
        Rewrite {
            trace_id: trace_id.to_string(),
            experiment_id: self.dst_experiment_id,
            ids: self.ids,
            new_assessment_ids: self.same_server,
        }
    }

    /// Per source id: the source id where the destination is another server and the id is
    /// free there, or already this copy's (its lineage tag, complete or not, or the spans-only
    /// row an attempt that stopped halfway left: OTLP ingest writes no metadata). Else a
    /// derived one: a trace with that id elsewhere would be moved by StartTraceV3, and one
    /// that is the source itself (the same server under another name) changed.
    fn destination_ids(&self, src_ids: &[String]) -> anyhow::Result<Vec<String>> {
        let derived = |id: &String| derived_trace_id(id, self.dst_run_id);
        if self.same_server {
            return Ok(src_ids.iter().map(derived).collect());
        }
        let found = each_ok(self.dst.trace_infos(src_ids), src_ids)?;
        let pick = |(src_id, found): (&String, Option<Value>)| {
            let free = match found {
                _ if otel_id(src_id).is_none() => false,
                None => true,
                Some(info) => {
                    let experiment = &info["trace_location"]["mlflow_experiment"]["experiment_id"];
                    let lineage = &info["tags"][SRC_TRACE_ID];
                    let ours = *lineage == **src_id
                        || *lineage == incomplete_mark(src_id)
                        || info["trace_metadata"].get(SCHEMA_VERSION).is_none();
                    experiment.as_str() == Some(self.dst_experiment_id) && ours
                }
            };
            if free {
                src_id.clone()
            } else {
                derived(src_id)
            }
        };
        Ok(src_ids.iter().zip(found).map(pick).collect())
    }
}

/// Every `mlflow.linkedPrompts` value of a trace: its tag and its spans' attributes.
fn prompt_links(info: &Value, spans: &[Value]) -> Vec<String> {
    let tag = info["tags"][LINKED_PROMPTS].as_str().map(str::to_string);
    let attributes = spans
        .iter()
        .filter_map(|s| s["attributes"].as_array())
        .flatten()
        .filter(|a| a["key"] == LINKED_PROMPTS)
        .map(|a| match a["value"]["string_value"].as_str() {
            Some(raw) => unwrap_attribute(raw),
            None => plain_value(&a["value"]).to_string(),
        });
    tag.into_iter().chain(attributes).collect()
}

/// Rewrites the `version` of each `{name, version}` kvlist in an `array_value` attribute.
fn relink_any(any: &mut Value, map: &prompts::PromptMap) {
    let Some(values) = any["array_value"]["values"].as_array_mut() else {
        return;
    };
    for link in values {
        let plain = plain_value(link);
        let (Some(name), Some(version)) = (plain["name"].as_str(), plain["version"].as_str())
        else {
            continue;
        };
        let Some(new) = map.get(&(name.to_string(), version.to_string())) else {
            continue;
        };
        let pairs = link["kvlist_value"]["values"].as_array_mut();
        for kv in pairs
            .into_iter()
            .flatten()
            .filter(|kv| kv["key"] == "version")
        {
            kv["value"] = json!({ "string_value": new });
        }
    }
}

/// MLflow keeps span attribute values JSON-encoded: a list becomes the string of its JSON.
fn unwrap_attribute(raw: &str) -> String {
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::String(inner)) => inner,
        _ => raw.to_string(),
    }
}

/// The trace tag and span attributes `mlflow.linkedPrompts` with destination versions.
pub fn relink_trace(info: &mut Value, spans: &mut [Value], map: &prompts::PromptMap) {
    if let Some(tag) = info["tags"][LINKED_PROMPTS].as_str() {
        info["tags"][LINKED_PROMPTS] = json!(prompts::relink(tag, map));
    }
    let attributes = spans
        .iter_mut()
        .filter_map(|s| s["attributes"].as_array_mut())
        .flatten()
        .filter(|a| a["key"] == LINKED_PROMPTS);
    for attribute in attributes {
        let Some(raw) = attribute["value"]["string_value"].as_str() else {
            relink_any(&mut attribute["value"], map);
            continue;
        };
        let inner = unwrap_attribute(raw);
        let relinked = prompts::relink(&inner, map);
        if relinked != inner {
            // Encoded as it came: a JSON string of the JSON list, or the list itself.
            let encoded = if inner == raw {
                relinked
            } else {
                json!(relinked).to_string()
            };
            attribute["value"]["string_value"] = json!(encoded);
        }
    }
}

/// The copy's info: new id and location, run and model ids re-pointed, server-managed tags
/// dropped, the lineage tag added, assessments re-pointed at the new trace.
pub fn rewrite_info(src: &Value, src_id: &str, rewrite: &Rewrite) -> Value {
    let mut info = src.clone();
    info["trace_id"] = json!(rewrite.trace_id);
    info["trace_location"] = crate::stores::mlflow::experiment_location(rewrite.experiment_id);
    repoint(&mut info["trace_metadata"], rewrite.ids);
    if let Some(tags) = info["tags"].as_object_mut() {
        for key in SERVER_TAGS {
            tags.remove(key);
        }
    }
    info["tags"][SRC_TRACE_ID] = json!(src_id);
    if let Some(assessments) = info["assessments"].as_array_mut() {
        for a in assessments {
            a["trace_id"] = json!(rewrite.trace_id);
            repoint(&mut a["metadata"], rewrite.ids);
            if rewrite.new_assessment_ids {
                for key in ["assessment_id", "overrides"] {
                    if let Some(old) = a[key].as_str().filter(|s| !s.is_empty()) {
                        a[key] = json!(derived_assessment_id(old, &rewrite.trace_id));
                    }
                }
            }
        }
    }
    info
}

/// Replaces run and model ids in a metadata map's id-valued keys.
pub(super) fn repoint(map: &mut Value, ids: &BTreeMap<String, String>) {
    let Some(map) = map.as_object_mut() else {
        return;
    };
    for key in ID_KEYS {
        if let Some(new) = map
            .get(key)
            .and_then(Value::as_str)
            .and_then(|v| ids.get(v))
        {
            map.insert(key.to_string(), json!(new));
        }
    }
}

/// The spans with the copy's OTel trace id (base64, as OTLP proto JSON has it).
pub fn rewrite_spans(mut spans: Vec<Value>, trace_id: &str) -> anyhow::Result<Vec<Value>> {
    let otel = otel_id(trace_id)
        .with_context(|| format!("trace id {trace_id:?} is not tr-<32 hex digits>"))?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(otel);
    for span in &mut spans {
        span["trace_id"] = json!(encoded);
    }
    Ok(spans)
}

/// The 16 bytes of an OSS trace id `tr-<32 lowercase hex>`.
fn otel_id(trace_id: &str) -> Option<[u8; 16]> {
    let hex = trace_id.strip_prefix("tr-")?;
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(bytes)
}

/// `tr-` and 32 hex digits from the source id and the destination run: the same on every
/// attempt of one copy, different for copies into different runs.
pub fn derived_trace_id(src_id: &str, dst_run_id: &str) -> String {
    format!("tr-{:032x}", hash128(&format!("{src_id}\n{dst_run_id}")))
}

fn derived_assessment_id(src_id: &str, dst_trace_id: &str) -> String {
    format!("a-{:032x}", hash128(&format!("{src_id}\n{dst_trace_id}")))
}

/// Two FNV-1a 64-bit hashes with different offsets: deterministic ids, not a secret.
fn hash128(text: &str) -> u128 {
    let fnv = |offset: u64| {
        text.bytes().fold(offset, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    (u128::from(fnv(0xcbf2_9ce4_8422_2325)) << 64) | u128::from(fnv(0x6c62_272e_07bb_0142))
}

pub(super) fn str_at<'v>(v: &'v Value, key: &str) -> &'v str {
    v[key].as_str().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("run-src".to_string(), "run-dst".to_string()),
            ("m-src".to_string(), "m-dst".to_string()),
        ])
    }

    fn source_info() -> Value {
        json!({
            "trace_id": "tr-0123456789abcdef0123456789abcdef",
            "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": "1"}},
            "request_time": "2026-12-01T22:14:46.959Z",
            "trace_metadata": {"mlflow.sourceRun": "run-src", "mlflow.modelId": "m-src", "mlflow.user": "root"},
            "tags": {"mlflow.artifactLocation": "mlflow-artifacts:/1/traces/x", "mlflow.trace.spansLocation": "TRACKING_STORE", "team": "qa"},
            "assessments": [{"assessment_id": "a-1", "trace_id": "tr-0123456789abcdef0123456789abcdef",
                "metadata": {"mlflow.assessment.sourceRunId": "run-src"}, "overrides": "a-0",
                "feedback": {"value": 0.5}}]
        })
    }

    #[test]
    fn info_is_repointed_at_the_copies() {
        let ids = ids();
        let rewrite = Rewrite {
            trace_id: "tr-ffffffffffffffffffffffffffffffff".into(),
            experiment_id: "7",
            ids: &ids,
            new_assessment_ids: false,
        };
        let src = source_info();
        let info = rewrite_info(&src, "tr-0123456789abcdef0123456789abcdef", &rewrite);
        assert_eq!(info["trace_id"], "tr-ffffffffffffffffffffffffffffffff");
        assert_eq!(
            info["trace_location"]["mlflow_experiment"]["experiment_id"],
            "7"
        );
        assert_eq!(info["trace_metadata"]["mlflow.sourceRun"], "run-dst");
        assert_eq!(info["trace_metadata"]["mlflow.modelId"], "m-dst");
        assert_eq!(info["trace_metadata"]["mlflow.user"], "root");
        assert_eq!(info["tags"]["team"], "qa");
        assert!(info["tags"].get("mlflow.artifactLocation").is_none());
        assert!(info["tags"].get("mlflow.trace.spansLocation").is_none());
        assert_eq!(
            info["tags"][SRC_TRACE_ID],
            "tr-0123456789abcdef0123456789abcdef"
        );
        let a = &info["assessments"][0];
        assert_eq!(a["trace_id"], "tr-ffffffffffffffffffffffffffffffff");
        assert_eq!(a["metadata"]["mlflow.assessment.sourceRunId"], "run-dst");
        assert_eq!(
            (a["assessment_id"].as_str(), a["overrides"].as_str()),
            (Some("a-1"), Some("a-0"))
        );
        assert_eq!(a["feedback"]["value"], 0.5);
        assert_eq!(src, source_info(), "the source is left alone");
    }

    #[test]
    fn same_server_copies_get_new_assessment_ids_consistently() {
        let ids = ids();
        let rewrite = Rewrite {
            trace_id: derived_trace_id("tr-0123456789abcdef0123456789abcdef", "run-dst"),
            experiment_id: "1",
            ids: &ids,
            new_assessment_ids: true,
        };
        let info = rewrite_info(
            &source_info(),
            "tr-0123456789abcdef0123456789abcdef",
            &rewrite,
        );
        let a = &info["assessments"][0];
        assert_eq!(
            a["assessment_id"],
            json!(derived_assessment_id("a-1", &rewrite.trace_id))
        );
        assert_eq!(
            a["overrides"],
            json!(derived_assessment_id("a-0", &rewrite.trace_id))
        );
        assert_ne!(a["assessment_id"], "a-1");
        assert!(
            a["assessment_id"].as_str().unwrap().len() <= 50,
            "the server's column limit"
        );
    }

    #[test]
    fn derived_ids_are_stable_and_depend_on_the_destination_run() {
        let a = derived_trace_id("tr-1", "run-a");
        assert_eq!(a, derived_trace_id("tr-1", "run-a"));
        assert_ne!(a, derived_trace_id("tr-1", "run-b"));
        assert_ne!(a, derived_trace_id("tr-2", "run-a"));
        assert!(otel_id(&a).is_some());
    }

    #[test]
    fn spans_get_the_copy_trace_id_and_keep_exact_nanos() {
        let raw = r#"[{"trace_id":"ASNFZ4mrze8BI0VniavN7w==","span_id":"AAAAAAAAAAE=",
            "start_time_unix_nano":1796163286959085413,"name":"root"}]"#;
        let spans: Vec<Value> = serde_json::from_str(raw).unwrap();
        let out = rewrite_spans(spans, "tr-ffffffffffffffffffffffffffffffff").unwrap();
        assert_eq!(out[0]["trace_id"], "/////////////////////w==");
        assert_eq!(
            out[0]["start_time_unix_nano"].as_u64(),
            Some(1796163286959085413)
        );
        assert!(out[0].to_string().contains("1796163286959085413"));
    }

    #[test]
    fn prompt_links_in_tags_and_json_encoded_span_attributes_are_relinked() {
        let map = BTreeMap::from([(("qa".to_string(), "1".to_string()), "2".to_string())]);
        let list = r#"[{"name": "qa", "version": "1"}]"#;
        let mut info = json!({"tags": {"mlflow.linkedPrompts": list}});
        let encoded = json!(list).to_string();
        let mut spans = vec![json!({"attributes": [
            {"key": "mlflow.linkedPrompts", "value": {"string_value": encoded}},
            {"key": "other", "value": {"string_value": encoded}}]})];
        assert_eq!(
            prompt_links(&info, &spans),
            vec![list.to_string(), list.to_string()]
        );
        relink_trace(&mut info, &mut spans, &map);
        let want = r#"[{"name":"qa","version":"2"}]"#;
        assert_eq!(info["tags"]["mlflow.linkedPrompts"], want);
        let attribute = spans[0]["attributes"][0]["value"]["string_value"]
            .as_str()
            .unwrap();
        assert_eq!(serde_json::from_str::<Value>(attribute).unwrap(), want);
        assert_eq!(
            spans[0]["attributes"][1]["value"]["string_value"],
            json!(encoded)
        );
    }

    #[test]
    fn prompt_links_in_otlp_list_attributes_are_read_and_relinked() {
        let map = BTreeMap::from([(("qa".to_string(), "1".to_string()), "2".to_string())]);
        let link = |version: &str| {
            json!({"kvlist_value": {"values": [
            {"key": "name", "value": {"string_value": "qa"}},
            {"key": "version", "value": {"string_value": version}}]}})
        };
        let attribute = |version: &str| {
            json!({"key": "mlflow.linkedPrompts",
            "value": {"array_value": {"values": [link(version)]}}})
        };
        let mut spans = vec![json!({"attributes": [attribute("1")]})];
        let mut info = json!({"tags": {}});
        let links = prompt_links(&info, &spans);
        assert_eq!(prompts::linked(&links[0]), vec![("qa".into(), "1".into())]);
        relink_trace(&mut info, &mut spans, &map);
        assert_eq!(spans[0]["attributes"][0], attribute("2"));
    }

    #[test]
    fn a_wave_ends_at_its_trace_count_or_its_bytes() {
        let sized =
            |bytes: u64| json!({"trace_metadata": {"mlflow.trace.sizeBytes": bytes.to_string()}});
        let mut wave = Wave::default();
        for _ in 0..WAVE - 1 {
            wave.push(sized(10));
        }
        assert!(!wave.full());
        wave.push(sized(10));
        assert!(wave.full(), "{WAVE} traces");
        assert_eq!((wave.take().len(), wave.bytes), (WAVE, 0));
        wave.push(sized(WAVE_BYTES - 1));
        assert!(!wave.full());
        wave.push(json!({"trace_metadata": {}}));
        assert!(
            wave.full(),
            "a trace of unknown size counts as {UNKNOWN_SIZE} bytes"
        );
    }

    #[test]
    fn otel_ids_need_the_oss_form() {
        assert_eq!(
            otel_id("tr-0123456789abcdef0123456789abcdef").unwrap()[0],
            0x01
        );
        assert!(otel_id("my-own-id").is_none());
        assert!(otel_id("tr-0123").is_none());
        assert!(otel_id("tr-zz23456789abcdef0123456789abcdef").is_none());
    }
}
