//! The MLflow 3 traces of a copied run and of its copied logged models, with their spans and
//! assessments (facts: `shared/reference/mlflow-genai-objects.md` §5).
//!
//! Traces travel in waves (a few at a time, bounded by count and size, so memory stays flat
//! whatever the run has): read the wave's traces with their spans, make the prompt versions
//! they link exist at the destination, *begin* each copy (the store writes the spans, and a
//! workspace the info first, marked incomplete), link the copies to the copied run where the
//! source linked them to the run, then *complete* them (their info with every id that names
//! the source re-pointed at the copies, and the lineage tag `SRC_TRACE_ID`). A trace whose
//! copy has that tag is complete, and a resumed copy skips it; every earlier write may be
//! repeated. How a store writes and reads is its own (`stores::Traces`); how a trace's info
//! and spans change is `trace_rewrite`.
//!
//! Ids: kept when source and destination are different servers and the id is free there;
//! otherwise (same server: StartTraceV3 with an existing id would MOVE the source trace) a new
//! id derived from the source id and the destination run, so that a repeated attempt writes
//! the same trace again instead of a duplicate. Assessment ids (a table's primary key) follow
//! the same rule.

use super::models::ModelCopy;
use super::prompts::{self, PromptCopier, LINKED_PROMPTS};
use super::trace_rewrite::{
    derived_trace_id, otel_id, prompt_links, relink_trace, rewrite_info, rewrite_spans, Rewrite,
};
use super::Copier;
use crate::stores::model::Run;
use crate::stores::Traces;
use anyhow::Context;
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

/// Metadata every client-logged trace has (`tracing/constant.py:TraceMetadataKey.SCHEMA_VERSION`)
/// and a row made by OTLP span ingest alone lacks.
const SCHEMA_VERSION: &str = "mlflow.trace_schema.version";

#[derive(Default, Debug, PartialEq)]
pub struct TraceCounts {
    pub traces: u32,
    pub assessments: u32,
    /// Source trace id to its copy's, for the copies (of this invocation or an earlier one)
    /// whose id differs from the source's.
    pub new_ids: BTreeMap<String, String>,
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
    let probe = src.search_traces(&groups[0].experiment_id, &groups[0].filter, None);
    let run_has_traces = matches!(&probe, Ok(page) if !page.is_empty());
    if let Some(missing) = without_trace_routes(probe)? {
        c.warn(format!(
            "traces of run {src_run_id} are not copied: {} has no trace routes ({missing})",
            src_tracking.server()
        ));
        return Ok(TraceCounts::default());
    }
    // Most runs have no traces: a search per group says so, and the destination is not asked
    // (over a 50 ms link, each search skipped is a round trip).
    if !run_has_traces && !any_traces(src, &groups[1..])? {
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
    job.counts
        .new_ids
        .extend(renamed.map(|(s, d)| (s.clone(), d.clone())));
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

/// Whether any of these groups has a trace at the source (a first page that is not empty).
fn any_traces(src: &dyn Traces, groups: &[Group]) -> anyhow::Result<bool> {
    for g in groups {
        if !src
            .search_traces(&g.experiment_id, &g.filter, None)?
            .is_empty()
        {
            return Ok(true);
        }
    }
    Ok(false)
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

pub(super) fn str_at<'v>(v: &'v Value, key: &str) -> &'v str {
    v[key].as_str().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
