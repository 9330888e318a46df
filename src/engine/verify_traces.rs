//! The MLflow 3 traces of a run and of its logged models, each compared with its copy (found
//! by its lineage tag among the copied run's and models' traces): request time, duration,
//! state, previews, metadata (run and model ids re-pointed), tags, assessments and spans.
//! A store that serves no traces through MLflow's routes has none to compare (the copy said so).

use super::prompts::{linked_names, LINKED_PROMPTS};
use super::trace_rewrite::{repoint, SERVER_METADATA, SERVER_TAGS};
use super::traces::{
    for_each_trace, model_filter, run_filter, str_at, without_trace_routes, SRC_TRACE_ID,
};
use super::verify::Differences;
use super::Copier;
use crate::stores::model::Run;
use crate::stores::Traces;
use anyhow::Context;
use serde_json::Value;
use std::collections::BTreeMap;

/// The info fields a copy keeps as they are.
const SAME_FIELDS: [&str; 6] = [
    "request_time",
    "execution_duration",
    "state",
    "request_preview",
    "response_preview",
    "client_request_id",
];

/// Compares the traces; returns how many the source has.
pub fn compare_traces(
    c: &Copier,
    [src, dst]: [&Run; 2],
    model_copies: &[(String, String)],
    diff: &mut Differences,
) -> anyhow::Result<u32> {
    let (Some(from), Some(to)) = (c.src.tracking.traces(), c.dst.tracking.traces()) else {
        return Ok(0);
    };
    let filters = |run: &Run, models: &mut dyn Iterator<Item = &String>| -> Vec<String> {
        std::iter::once(run_filter(&run.info.run_id))
            .chain(models.map(|m| model_filter(m)))
            .collect()
    };
    let src_filters = filters(src, &mut model_copies.iter().map(|(s, _)| s));
    let dst_filters = filters(dst, &mut model_copies.iter().map(|(_, d)| d));
    // A server without the trace routes (MLflow 2.x) has no traces.
    let probe = from.search_traces(&src.info.experiment_id, &src_filters[0], None);
    if without_trace_routes(probe)?.is_some() {
        return Ok(0);
    }
    let originals = listed(from, &src.info.experiment_id, &src_filters, |info| {
        Some(str_at(info, "trace_id").to_string())
    })?;
    if originals.is_empty() {
        return Ok(0);
    }
    let copies = listed(to, &dst.info.experiment_id, &dst_filters, |info| {
        info["tags"][SRC_TRACE_ID].as_str().map(str::to_string)
    })?;
    let ids: BTreeMap<String, String> =
        std::iter::once((src.info.run_id.clone(), dst.info.run_id.clone()))
            .chain(model_copies.iter().cloned())
            .collect();
    for (id, info) in &originals {
        match copies.get(id) {
            None => diff.add(format!("trace {id}: missing from the copy")),
            Some(copy) => compare_trace([from, to], [info, copy], &ids, diff)
                .with_context(|| format!("comparing trace {id} with its copy"))?,
        }
    }
    Ok(originals.len() as u32)
}

/// Every trace matching one of the filters, by the key `key_of` gives it (none: left out).
fn listed(
    store: &dyn Traces,
    experiment_id: &str,
    filters: &[String],
    key_of: impl Fn(&Value) -> Option<String>,
) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut found = BTreeMap::new();
    for filter in filters {
        for_each_trace(store, experiment_id, filter, |info| {
            if let Some(key) = key_of(&info) {
                found.insert(key, info);
            }
            Ok(())
        })?;
    }
    Ok(found)
}

fn compare_trace(
    [from, to]: [&dyn Traces; 2],
    [info, copy]: [&Value; 2],
    ids: &BTreeMap<String, String>,
    diff: &mut Differences,
) -> anyhow::Result<()> {
    let prefix = format!(
        "trace {} (copy {}) ",
        str_at(info, "trace_id"),
        str_at(copy, "trace_id")
    );
    for field in SAME_FIELDS {
        diff.field(&format!("{prefix}{field}"), &info[field], &copy[field]);
    }
    let mut metadata = info["trace_metadata"].clone();
    repoint(&mut metadata, ids);
    let mut copied = copy["trace_metadata"].clone();
    for map in [&mut metadata, &mut copied]
        .into_iter()
        .filter_map(Value::as_object_mut)
    {
        map.retain(|k, _| !SERVER_METADATA.contains(&k.as_str()));
    }
    compare_entries(&format!("{prefix}metadata"), &metadata, &copied, diff);
    let mut tags = info["tags"].clone();
    if let Some(map) = tags.as_object_mut() {
        map.retain(|k, _| !SERVER_TAGS.contains(&k.as_str()));
    }
    compare_entries(&format!("{prefix}tag"), &tags, &copy["tags"], diff);
    let (original, copied) = (from.get_trace(info)?, to.get_trace(copy)?);
    let what = format!("{prefix}assessments");
    let (a, b) = (assessments(&original.info), assessments(&copied.info));
    summed_up(&what, &a, &b, "names, sources, values or rationales", diff);
    let (a, b) = (spans(&original.spans), spans(&copied.spans));
    summed_up(
        &format!("{prefix}spans"),
        &a,
        &b,
        "names, parents, times or status",
        diff,
    );
    Ok(())
}

/// A difference between two lists too long to print: their lengths, and what may differ.
fn summed_up(what: &str, src: &[String], dst: &[String], fields: &str, diff: &mut Differences) {
    if src != dst {
        diff.add(format!(
            "{what}: {} in the source, {} in the copy, or different {fields}",
            src.len(),
            dst.len()
        ));
    }
}

/// Each entry of the source's map must be in the copy's, with the same value; prompt links
/// with the same prompts (their versions are the destination registry's).
fn compare_entries(what: &str, src: &Value, dst: &Value, diff: &mut Differences) {
    let Some(map) = src.as_object() else {
        return;
    };
    for (key, value) in map {
        let same = |copied: &Value| match key.as_str() {
            LINKED_PROMPTS => {
                let names = |v: &Value| linked_names(v.as_str().unwrap_or_default());
                names(value) == names(copied)
            }
            _ => copied == value,
        };
        match dst.get(key) {
            None => diff.add(format!("{what} {key:?}: missing from the copy")),
            Some(copied) if !same(copied) => {
                diff.add(format!("{what} {key:?}: source {value}, copy {copied}"))
            }
            Some(_) => {}
        }
    }
}

/// (name, source, value, rationale) of each assessment, sorted.
fn assessments(info: &Value) -> Vec<String> {
    let mut found: Vec<String> = info["assessments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let value = if a["feedback"].is_null() {
                &a["expectation"]
            } else {
                &a["feedback"]
            };
            format!(
                "{} {} {} {}",
                a["assessment_name"], a["source"], value, a["rationale"]
            )
        })
        .collect();
    found.sort();
    found
}

/// (name, parent, start, end, status) of each span, sorted: the tree and its timing.
fn spans(spans: &[Value]) -> Vec<String> {
    // Written the same whichever JSON they came from (`traces/get`, or a span file converted):
    // a root's parent absent or empty, 64-bit times as numbers or strings, a status without
    // its defaults.
    let time = |v: &Value| match v.as_str() {
        Some(text) => text.to_string(),
        None => v.to_string(),
    };
    let mut found: Vec<String> = spans
        .iter()
        .map(|s| {
            let parent = s["parent_span_id"].as_str().unwrap_or_default();
            let status = &s["status"];
            format!(
                "{} {} {parent:?} {} {} {} {:?}",
                s["name"],
                s["span_id"],
                time(&s["start_time_unix_nano"]),
                time(&s["end_time_unix_nano"]),
                status["code"].as_str().unwrap_or("STATUS_CODE_UNSET"),
                status["message"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    found.sort();
    found
}
