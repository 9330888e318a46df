//! copy-experiment: the runs of one experiment (all, filtered, listed or the most recent N)
//! into another, parents before children so that nesting is re-linked, with the experiment's
//! description and tags.
//!
//! Each run is a copy-run of its own (idempotent and resumable), so the plan needs no local
//! state: the destination's lineage tags tell which runs are copied, incomplete or missing,
//! and any machine can resume a migration another one started.

use super::copy_run;
use super::item_executor::{Done, ItemExecutor, Items, Job};
use super::migration::{self, Migration};
use super::nested_queue::{NestedQueue, Next};
use super::verify;
use super::Copier;
use crate::api::{
    CopyError, CopyExperimentRequest, CopyRunRequest, ErrorKind, ItemStatus, MigrationItem,
    MigrationReport,
};
use crate::stores::model::{Experiment, KeyValue, Run};
use anyhow::Context;
use std::collections::{HashMap, HashSet};

/// Experiment tags a server sets itself (Databricks: owner, type, source notebook): not
/// copied, the destination has its own.
pub(super) const SERVER_MANAGED_TAGS: [&str; 4] = [
    "mlflow.ownerId",
    "mlflow.ownerEmail",
    "mlflow.experimentType",
    "mlflow.experiment.source",
];

/// Most runs one experiment copy lists (pages of 1,000): a bound on a listing that never
/// ends, far beyond any experiment MLflow's UI can show.
const MAX_RUNS_LISTED: usize = 1_000_000;

/// What is kept of each source run between listing and copying: a few ids, so that a
/// migration of a huge experiment stays small in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    pub run_id: String,
    pub parent_id: Option<String>,
    pub start_time: i64,
}

impl RunSummary {
    fn of(run: &Run) -> RunSummary {
        RunSummary {
            run_id: run.info.run_id.clone(),
            parent_id: run
                .data
                .tag(super::lineage::PARENT_RUN_ID)
                .map(str::to_string),
            start_time: run.info.start_time.unwrap_or(0),
        }
    }
}

pub fn copy_experiment(
    c: &mut Copier,
    request: &CopyExperimentRequest,
    executor: &mut dyn ItemExecutor,
) -> anyhow::Result<MigrationReport> {
    c.dst
        .tracking
        .check_experiment_name(&request.dst_experiment_name)?;
    let source = source_experiment(c, request)?;
    let runs = parents_first(select_runs(c, request, &source)?);
    let dst_name = request.dst_experiment_name.as_str();
    let dst = match request.dry_run {
        true => copy_run::existing_experiment(c, dst_name)?,
        false => {
            let id = copy_run::destination_experiment(c, dst_name)?;
            copy_experiment_tags(c, &source, &id)?;
            Some(id)
        }
    };
    c.phase(format!(
        "{} runs of experiment {} ({:?}) to copy into {dst_name:?} on {}",
        runs.len(),
        source.experiment_id,
        source.name,
        c.dst.tracking.server()
    ));
    let mut migration = Migration::new(
        source.experiment_id.clone(),
        dst.clone(),
        request.dry_run,
        runs.len(),
    )
    .with_parents(parents_among(&runs));
    match &dst {
        Some(dst) if !request.dry_run => {
            let mut items = RunItems {
                queue: NestedQueue::new(runs),
                migration: &mut migration,
                request,
                dst_experiment_id: dst,
            };
            executor.run(c, &mut items)?;
        }
        _ => plan(c, runs, dst.as_deref(), &mut migration),
    }
    Ok(migration.finish())
}

/// The runs of a copy, handed to the executor as they may start (see `NestedQueue`).
struct RunItems<'a> {
    queue: NestedQueue,
    migration: &'a mut Migration,
    request: &'a CopyExperimentRequest,
    dst_experiment_id: &'a str,
}

impl Items for RunItems<'_> {
    fn next(&mut self, c: &mut Copier) -> Option<(usize, Job)> {
        loop {
            match self.queue.next_step() {
                Next::Start(i) => {
                    let run_id = self.queue.run(i).run_id.clone();
                    if self.migration.begin(c, &run_id) {
                        return Some((i, self.job(&run_id)));
                    }
                    self.queue.finished(i, false);
                }
                Next::Blocked(i, parent) => {
                    let run_id = &self.queue.run(i).run_id;
                    self.migration
                        .record(c, migration::failed(run_id, &parent_failed(&parent)));
                }
                Next::Wait | Next::Empty => return None,
            }
        }
    }

    fn done(&mut self, c: &mut Copier, key: usize, result: anyhow::Result<Done>) {
        let run_id = self.queue.run(key).run_id.clone();
        let result = result.and_then(|done| copied_item(c, &run_id, done, self.request.verify));
        let copied = result.is_ok();
        self.migration.end(c, &run_id, result);
        self.queue.finished(key, copied);
    }

    fn exhausted(&self) -> bool {
        self.queue.exhausted()
    }
}

impl RunItems<'_> {
    /// The run alone (its children are items of their own, sent once it is copied).
    fn job(&self, run_id: &str) -> Job {
        let r = self.request;
        Job::Run {
            request: CopyRunRequest {
                run_id: run_id.to_string(),
                experiment_name: r.dst_experiment_name.clone(),
                src_mlflow_uri: r.src_mlflow_uri.clone(),
                dst_mlflow_uri: r.dst_mlflow_uri.clone(),
                copy_children: false,
                concurrency: r.concurrency,
            },
            dst_experiment_id: self.dst_experiment_id.to_string(),
        }
    }
}

/// A dry run: each run planned here from the destination's lineage tags, one after another,
/// nothing sent anywhere (`--via` included).
fn plan(c: &mut Copier, runs: Vec<RunSummary>, dst: Option<&str>, migration: &mut Migration) {
    let mut queue = NestedQueue::new(runs);
    loop {
        match queue.next_step() {
            Next::Start(i) => {
                let run_id = queue.run(i).run_id.clone();
                migration.item(c, &run_id, |c| plan_item(c, &run_id, dst));
                queue.finished(i, !migration.last_failed());
            }
            Next::Blocked(i, parent) => migration.record(
                c,
                migration::failed(&queue.run(i).run_id, &parent_failed(&parent)),
            ),
            Next::Wait | Next::Empty => return,
        }
    }
}

/// Why a child is not attempted: copied now, it could not be nested.
fn parent_failed(parent: &str) -> CopyError {
    CopyError::upstream(format!(
        "not attempted: its parent run {parent} failed (a re-run copies both, nested)"
    ))
}

/// The item of a copied run, compared with its source first when asked to (locally, wherever
/// the copy ran).
fn copied_item(
    c: &mut Copier,
    run_id: &str,
    done: Done,
    verify: bool,
) -> anyhow::Result<MigrationItem> {
    let Done::Run(report) = done else {
        anyhow::bail!("run {run_id}: the executor reported a model version, not a run");
    };
    if verify {
        verify::check_copy(c, run_id, &report.dst_run_id)?;
    }
    Ok(MigrationItem {
        dst_id: Some(report.dst_run_id),
        artifact_bytes: report.artifact_bytes,
        metric_points: report.metric_points,
        ..migration::item(run_id, ItemStatus::from(report.outcome))
    })
}

/// A dry run's item: what the destination's lineage tags say about this run.
fn plan_item(c: &mut Copier, run_id: &str, dst: Option<&str>) -> anyhow::Result<MigrationItem> {
    let Some(dst) = dst else {
        return Ok(MigrationItem {
            detail: Some("the destination experiment does not exist yet".into()),
            ..migration::item(run_id, ItemStatus::WouldCreate)
        });
    };
    let run = c.src.tracking.get_run(run_id)?;
    let (status, dst_id) = copy_run::planned(c, &run, dst)?;
    let detail = match status {
        ItemStatus::Existing => "a complete copy is in the destination experiment",
        ItemStatus::WouldResume => "an incomplete copy would be completed",
        _ => "no copy in the destination experiment",
    };
    Ok(MigrationItem {
        dst_id,
        detail: Some(detail.into()),
        ..migration::item(run_id, status)
    })
}

pub(super) fn source_experiment(
    c: &Copier,
    request: &CopyExperimentRequest,
) -> anyhow::Result<Experiment> {
    let src = c.src.tracking.as_ref();
    let found = match (&request.src_experiment_name, &request.src_experiment_id) {
        (Some(name), _) => src.experiment_by_name(name)?,
        (None, Some(id)) => match src.experiment_by_id(id) {
            Ok(e) => Some(e),
            Err(e) if e.kind == ErrorKind::NotFound || e.has_code("RESOURCE_DOES_NOT_EXIST") => {
                None
            }
            Err(e) => return Err(e.into()),
        },
        (None, None) => None,
    };
    let named = || match (&request.src_experiment_name, &request.src_experiment_id) {
        (Some(name), _) => format!("{name:?}"),
        (None, id) => format!("id {}", id.as_deref().unwrap_or_default()),
    };
    match found {
        Some(e) if e.lifecycle_stage != "deleted" => Ok(e),
        Some(_) => Err(CopyError::not_found(format!(
            "source experiment {} on {} is deleted; restore it to copy it",
            named(),
            src.server()
        ))
        .into()),
        None => Err(CopyError::not_found(format!(
            "source experiment {} not found on {}",
            named(),
            src.server()
        ))
        .into()),
    }
}

/// The runs to copy: those listed (each checked to be an active run of the experiment, before
/// anything is written), else those matching the filter, at most `max_runs` of them.
pub(super) fn select_runs(
    c: &Copier,
    request: &CopyExperimentRequest,
    experiment: &Experiment,
) -> anyhow::Result<Vec<RunSummary>> {
    let src = c.src.tracking.as_ref();
    let limit = request.max_runs.map_or(MAX_RUNS_LISTED, |n| n as usize);
    if !request.run_ids.is_empty() {
        let mut runs = Vec::new();
        for id in request.run_ids.iter().take(limit) {
            let run = src
                .get_run(id)
                .with_context(|| format!("reading listed run {id}"))?;
            if run.info.experiment_id != experiment.experiment_id || run.info.is_deleted() {
                return Err(CopyError::bad_input(format!(
                    "run {id} is not an active run of experiment {} on {}",
                    experiment.experiment_id,
                    src.server()
                ))
                .into());
            }
            runs.push(RunSummary::of(&run));
        }
        return Ok(runs);
    }
    let filter = request.filter.as_deref().unwrap_or("");
    let mut runs = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = src
            .runs_page(&experiment.experiment_id, filter, token.as_deref())
            .with_context(|| {
                format!(
                    "listing the runs of source experiment {}",
                    experiment.experiment_id
                )
            })?;
        runs.extend(page.runs.iter().map(RunSummary::of));
        if runs.len() >= limit {
            runs.truncate(limit);
            return Ok(runs);
        }
        match page.next_token {
            // A server that hands back the token it was given would page forever.
            Some(next) if token.as_deref() != Some(next.as_str()) => token = Some(next),
            _ => return Ok(runs),
        }
    }
}

/// The parent of each run whose parent is among the runs too.
fn parents_among(runs: &[RunSummary]) -> HashMap<String, String> {
    let selected: HashSet<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
    runs.iter()
        .filter_map(|r| {
            let parent = r.parent_id.as_ref()?;
            selected
                .contains(parent.as_str())
                .then(|| (r.run_id.clone(), parent.clone()))
        })
        .collect()
}

/// Parents before their children (so that each child finds its parent's copy and is nested
/// under it), and otherwise oldest first, as the runs were made.
pub fn parents_first(mut runs: Vec<RunSummary>) -> Vec<RunSummary> {
    let parent_of: HashMap<&str, Option<&str>> = runs
        .iter()
        .map(|r| (r.run_id.as_str(), r.parent_id.as_deref()))
        .collect();
    // Depth within the selection: a parent outside it, or a loop of parent tags, ends the walk.
    let depth = |id: &str| {
        let (mut depth, mut at) = (0usize, id);
        while let Some(Some(parent)) = parent_of.get(at) {
            if !parent_of.contains_key(parent) || depth > parent_of.len() {
                break;
            }
            depth += 1;
            at = parent;
        }
        depth
    };
    let depths: HashMap<String, usize> = runs
        .iter()
        .map(|r| (r.run_id.clone(), depth(&r.run_id)))
        .collect();
    runs.sort_by_cached_key(|r| (depths[&r.run_id], r.start_time, r.run_id.clone()));
    runs
}

/// Gives the destination experiment the source's description and tags, where they differ.
fn copy_experiment_tags(c: &mut Copier, source: &Experiment, dst_id: &str) -> anyhow::Result<()> {
    let dst = c.dst.tracking.experiment_by_id(dst_id)?;
    let missing: Vec<&KeyValue> = source
        .tags
        .iter()
        .filter(|t| !SERVER_MANAGED_TAGS.iter().any(|m| t.key.starts_with(m)))
        .filter(|t| !dst.tags.contains(t))
        .collect();
    for tag in missing {
        c.dst
            .tracking
            .set_experiment_tag(dst_id, tag)
            .with_context(|| {
                format!(
                    "setting tag {:?} of destination experiment {dst_id}",
                    tag.key
                )
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, parent: Option<&str>, start: i64) -> RunSummary {
        RunSummary {
            run_id: id.into(),
            parent_id: parent.map(str::to_string),
            start_time: start,
        }
    }

    #[test]
    fn parents_come_before_children_and_otherwise_oldest_first() {
        let runs = vec![
            run("grandchild", Some("child"), 1),
            run("child", Some("root"), 2),
            run("root", None, 9),
            run("orphan", Some("not-selected"), 0),
            run("early", None, 3),
        ];
        let order: Vec<String> = parents_first(runs).into_iter().map(|r| r.run_id).collect();
        assert_eq!(order, ["orphan", "early", "root", "child", "grandchild"]);
    }

    #[test]
    fn a_loop_of_parent_tags_does_not_hang() {
        let runs = vec![run("a", Some("b"), 1), run("b", Some("a"), 2)];
        assert_eq!(parents_first(runs).len(), 2);
    }
}
