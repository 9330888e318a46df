//! verify-run: compares a copy with its source field by field (run info, params, tags, full
//! metric histories, datasets, the logged models with their files, traces, the artifact tree with
//! sizes and contents) and lists every difference. Reads only; like `rclone check`, the proof
//! before the old server goes.

use super::lineage;
use super::mlmodel::IdMap;
use super::prompts::{linked_names, LINKED_PROMPTS};
use super::verify_artifacts::{compare_tree, Trees};
use super::verify_models;
use super::verify_traces;
use super::Copier;
use crate::api::{VerifyReport, VerifyRunRequest, MAX_DIFFERENCES};
use crate::stores::model::{ArtifactRoot, Metric, Owner, Run};
use crate::stores::{Scheduler, Stores};
use anyhow::Context;
use std::collections::BTreeMap;
use std::fmt::Debug;

/// Run tags a workspace manages on the runs it holds (it sets its own, and refuses
/// `mlflow.rootRunId` from clients): not the copy's to match. `mlflow.user` is checked with the
/// run's user.
const SERVER_SET_TAGS: [&str; 5] = [
    "mlflow.databricks.workspaceURL",
    "mlflow.databricks.webappURL",
    "mlflow.databricks.workspaceID",
    "mlflow.rootRunId",
    USER_TAG,
];

const USER_TAG: &str = "mlflow.user";

/// Most history pages read for one metric (pages of up to 10,000 points).
const MAX_HISTORY_PAGES: usize = 100_000;

pub fn verify_run(c: &mut Copier, request: &VerifyRunRequest) -> anyhow::Result<VerifyReport> {
    compare_runs(c, &request.src_run_id, &request.dst_run_id)
}

/// A bulk copy's `--verify`: the copy `dst_id` of run `src_id`, just made, must not differ
/// from it (a difference is the item's `conflict`).
pub fn check_copy(c: &mut Copier, src_id: &str, dst_id: &str) -> anyhow::Result<()> {
    match compare_runs(c, src_id, dst_id)?.failure() {
        Some(failure) => Err(failure.into()),
        None => Ok(()),
    }
}

fn compare_runs(c: &mut Copier, src_id: &str, dst_id: &str) -> anyhow::Result<VerifyReport> {
    let src = c
        .src
        .tracking
        .get_run(src_id)
        .context("reading the source run")?;
    compare_with_copy(c, &src, dst_id)
}

/// The source run `src` (already read) against its copy `dst_id`.
pub(super) fn compare_with_copy(
    c: &mut Copier,
    src: &Run,
    dst_id: &str,
) -> anyhow::Result<VerifyReport> {
    let src_id = src.info.run_id.as_str();
    let dst = c.dst.tracking.get_run(dst_id).context("reading the copy")?;
    let mut diff = Differences::default();
    compare_info(src, &dst, &mut diff);
    diff.maps("param", &pairs(&src.data.params), &pairs(&dst.data.params));
    let (src_tags, dst_tags) = (comparable_tags(src), comparable_tags(&dst));
    diff.maps("tag", &src_tags, &dst_tags);
    compare_parent(c, src, &dst, &mut diff)?;
    let points = compare_metrics(c, src, &dst, &mut diff)?;
    diff.lists(
        "dataset inputs",
        &src.inputs.dataset_inputs,
        &dst.inputs.dataset_inputs,
    );
    let steps = |run: &Run| -> Vec<i64> {
        let mut steps: Vec<i64> = run.outputs.model_outputs.iter().map(|o| o.step).collect();
        steps.sort();
        steps
    };
    diff.lists("logged-model output steps", &steps(src), &steps(&dst));
    let run_tree = Trees {
        src: root_of(src),
        dst: root_of(&dst),
        ids: run_ids(src, &dst),
        prefix: String::new(),
    };
    let run_files = compare_tree(c, &run_tree, &mut diff)?;
    let model_files = verify_models::compare_logged_models(c, [src, &dst], &mut diff)?;
    let traces = verify_traces::compare_traces(c, [src, &dst], &model_files.copies, &mut diff)?;
    c.phase(format!(
        "verified run {dst_id} against {src_id}: {} differences",
        diff.0.len()
    ));
    Ok(VerifyReport {
        src_run_id: src_id.to_string(),
        dst_run_id: dst_id.to_string(),
        params: src.data.params.len() as u32,
        tags: src_tags.len() as u32,
        metric_points: points,
        dataset_inputs: src.inputs.dataset_inputs.len() as u32,
        logged_models: model_files.models,
        artifact_files: run_files.files + model_files.files,
        artifact_bytes: run_files.bytes + model_files.bytes,
        traces,
        differences: diff.0,
    })
}

/// Every difference found, one line each, at most `MAX_DIFFERENCES`.
#[derive(Default)]
pub struct Differences(pub Vec<String>);

impl Differences {
    pub fn add(&mut self, line: String) {
        if self.0.len() < MAX_DIFFERENCES {
            self.0.push(line);
        }
    }

    pub fn field<T: PartialEq + Debug>(&mut self, name: &str, src: T, dst: T) {
        if src != dst {
            self.add(format!("{name}: source {src:?}, copy {dst:?}"));
        }
    }

    /// Keys missing from either side, and values that differ.
    pub fn maps<V: PartialEq + Debug>(
        &mut self,
        what: &str,
        src: &BTreeMap<String, V>,
        dst: &BTreeMap<String, V>,
    ) {
        for (key, value) in src {
            match dst.get(key) {
                None => self.add(format!("{what} {key:?}: missing from the copy")),
                Some(copied) if copied != value => {
                    self.add(format!("{what} {key:?}: source {value:?}, copy {copied:?}"))
                }
                Some(_) => {}
            }
        }
        for key in dst.keys().filter(|k| !src.contains_key(*k)) {
            self.add(format!("{what} {key:?}: only in the copy"));
        }
    }

    fn lists<T: PartialEq + Debug>(&mut self, what: &str, src: &[T], dst: &[T]) {
        if src != dst {
            self.add(format!("{what}: source {src:?}, copy {dst:?}"));
        }
    }
}

fn compare_info(src: &Run, dst: &Run, diff: &mut Differences) {
    let (s, d) = (&src.info, &dst.info);
    diff.field("run name", &s.run_name, &d.run_name);
    diff.field("status", &s.status, &d.status);
    diff.field("start time", s.start_time, d.start_time);
    diff.field("end time", s.end_time, d.end_time);
    compare_user(
        "user",
        s.user_id.as_deref(),
        d.user_id.as_deref(),
        dst,
        diff,
    );
    let tag = |run: &Run| run.data.tag(USER_TAG).map(str::to_string);
    compare_user(
        "tag \"mlflow.user\"",
        tag(src).as_deref(),
        tag(dst).as_deref(),
        dst,
        diff,
    );
}

/// A workspace sets the user of the runs it makes: a copy there keeps the source's user in a
/// lineage tag, which then counts as the same user; a source without a user leaves the
/// destination's own.
fn compare_user(
    what: &str,
    src: Option<&str>,
    dst: Option<&str>,
    copy: &Run,
    diff: &mut Differences,
) {
    let Some(src) = src.filter(|u| !u.is_empty()) else {
        return;
    };
    if dst != Some(src) && copy.data.tag(lineage::SRC_USER_ID) != Some(src) {
        diff.field(what, Some(src), dst);
    }
}

pub(super) fn pairs(items: &[crate::stores::model::KeyValue]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect()
}

/// The tags a copy must have as its source has them: lineage, the parent link (checked on
/// its own) and server-set tags aside; linked prompts by name (the copy links the
/// destination registry's versions of them).
fn comparable_tags(run: &Run) -> BTreeMap<String, String> {
    let mut tags = pairs(&run.data.tags);
    tags.retain(|key, _| {
        !lineage::is_lineage(key)
            && key != lineage::PARENT_RUN_ID
            && key != lineage::LOG_MODEL_HISTORY
            && !SERVER_SET_TAGS.contains(&key.as_str())
    });
    if let Some(links) = tags.get_mut(LINKED_PROMPTS) {
        *links = format!("prompts {:?}", linked_names(links));
    }
    tags
}

/// A child's copy is nested under a copy of the source's parent.
fn compare_parent(c: &Copier, src: &Run, dst: &Run, diff: &mut Differences) -> anyhow::Result<()> {
    let (src_parent, dst_parent) = (
        src.data.tag(lineage::PARENT_RUN_ID),
        dst.data.tag(lineage::PARENT_RUN_ID),
    );
    match (src_parent, dst_parent) {
        (None, None) => {}
        (Some(sp), Some(dp)) => {
            let parent = c
                .dst
                .tracking
                .get_run(dp)
                .context("reading the copy's parent run")?;
            let copied_from = parent.data.tag(lineage::SRC_RUN_ID);
            if copied_from != Some(sp) {
                diff.add(format!(
                    "parent: the copy's parent {dp} is not a copy of the source's parent {sp}"
                ));
            }
        }
        (sp, dp) => diff.field("parent run", sp, dp),
    }
    Ok(())
}

/// Full histories of every metric, point by point. Returns the source's point count.
fn compare_metrics(
    c: &Copier,
    src: &Run,
    dst: &Run,
    diff: &mut Differences,
) -> anyhow::Result<u64> {
    let keys = |run: &Run| -> Vec<String> {
        let mut keys: Vec<String> = run.data.metrics.iter().map(|m| m.key.clone()).collect();
        keys.sort();
        keys.dedup();
        keys
    };
    diff.lists("metric keys", &keys(src), &keys(dst));
    let mut points = 0;
    for key in keys(src) {
        let from = history(&c.src, &c.scheduler, &src.info.run_id, &key)?;
        let to = history(&c.dst, &c.scheduler, &dst.info.run_id, &key)?;
        points += from.len() as u64;
        if from != to {
            diff.add(format!(
                "metric {key:?}: {} points in the source, {} in the copy, or different values",
                from.len(),
                to.len()
            ));
        }
    }
    Ok(points)
}

/// (step, timestamp, value bits) of every point, sorted: NaN equals NaN, as a copy keeps it.
fn history(
    stores: &Stores,
    scheduler: &Scheduler,
    run_id: &str,
    key: &str,
) -> anyhow::Result<Vec<(i64, i64, u64)>> {
    let mut points = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_HISTORY_PAGES {
        let call = stores
            .tracking
            .history_page_call(run_id, key, token.as_deref());
        let page = scheduler
            .run(call)
            .with_context(|| format!("reading the history of metric {key:?} of run {run_id}"))?;
        points.extend(page.points.iter().map(point_key));
        match page.next_token {
            Some(next) if token.as_deref() != Some(next.as_str()) => token = Some(next),
            _ => break,
        }
    }
    points.sort();
    Ok(points)
}

pub(super) fn point_key(m: &Metric) -> (i64, i64, u64) {
    let value = if m.value.is_nan() { f64::NAN } else { m.value };
    (m.step, m.timestamp, value.to_bits())
}

pub(super) fn root_of(run: &Run) -> ArtifactRoot {
    ArtifactRoot {
        owner: Owner::Run(run.info.run_id.clone()),
        uri: run.info.artifact_uri.clone(),
    }
}

/// What the copy re-points in the run's `MLmodel` files: the run id.
pub(super) fn run_ids(src: &Run, dst: &Run) -> IdMap {
    let mut ids = IdMap::default();
    ids.add(&src.info.run_id, &dst.info.run_id);
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_report_missing_extra_and_changed_entries() {
        let map = |items: &[(&str, u64)]| -> BTreeMap<String, u64> {
            items.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        let mut diff = Differences::default();
        diff.maps(
            "artifact (size)",
            &map(&[("a.txt", 3), ("b.bin", 10), ("c", 1)]),
            &map(&[("a.txt", 3), ("b.bin", 9), ("d", 1)]),
        );
        assert_eq!(
            diff.0,
            [
                "artifact (size) \"b.bin\": source 10, copy 9",
                "artifact (size) \"c\": missing from the copy",
                "artifact (size) \"d\": only in the copy",
            ]
        );
    }

    #[test]
    fn nan_points_are_equal_and_lineage_tags_are_not_compared() {
        let nan = Metric {
            value: f64::NAN,
            ..Metric::default()
        };
        assert_eq!(point_key(&nan), point_key(&nan.clone()));
        let mut run = Run::default();
        run.data.tags = vec![
            crate::stores::model::KeyValue::new(lineage::SRC_RUN_ID, "r"),
            crate::stores::model::KeyValue::new("team", "ml"),
        ];
        assert_eq!(
            comparable_tags(&run).into_keys().collect::<Vec<_>>(),
            ["team"]
        );
    }
}
