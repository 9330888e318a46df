//! copy-run: one run (and optionally its child runs) from one tracking server to another.
//!
//! Order matters:
//! 1. Read and list everything on the source first, so that a bad run id, a deleted run or a
//!    refused credential fails before anything is written.
//! 2. Find the destination experiment and any earlier copy of this run (lineage tags). A complete
//!    copy is reported as it is; an incomplete one is resumed.
//! 3. Create the run marked incomplete, copy params, tags, datasets, logged models, metrics,
//!    outputs and artifacts, set the source's status and end time, and remove the mark last.
//!    If anything fails, the run is marked FAILED and keeps the mark, so a re-run resumes it.

use super::artifacts::{self, ArtifactStats, TreeCopy};
use super::create_once::create_once;
use super::lineage;
use super::metric_pipeline::{Entities, MetricPipeline};
use super::metrics::{ModelLinks, MAX_PARAMS_TAGS_PER_BATCH};
use super::mlmodel::IdMap;
use super::models::{self, ModelCopy};
use super::prompts::{self, PromptCopier};
use super::traces;
use super::Copier;
use crate::api::{CopyError, CopyRunReport, CopyRunRequest, ItemStatus, Outcome};
use crate::stores::model::{ArtifactRoot, KeyValue, LoggedModel, NewRun, Owner, Run, RunInfo};
use crate::stores::Tracking;
use anyhow::Context;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// How long a copy that lost a race waits for the winner.
const RACE_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);

pub fn copy_run(c: &mut Copier, request: &CopyRunRequest) -> anyhow::Result<CopyRunReport> {
    let started = Instant::now();
    c.dst
        .tracking
        .check_experiment_name(&request.experiment_name)?;
    // The source is read in full before the destination is touched: a bad run id, a deleted
    // run or a refused credential must leave nothing behind.
    let source = read_source(c, &request.run_id)?;
    let dst_experiment_id = destination_experiment(c, &request.experiment_name)?;
    let mut report = copy_one(c, &source, &dst_experiment_id, None)?;
    if request.copy_children {
        let mut children = Vec::new();
        copy_children(
            c,
            &source.run.info,
            &report.dst_run_id,
            &dst_experiment_id,
            &mut children,
        )?;
        report.child_run_ids = children;
    }
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn copy_children(
    c: &mut Copier,
    src_parent: &RunInfo,
    dst_parent: &str,
    dst_experiment_id: &str,
    out: &mut Vec<String>,
) -> anyhow::Result<()> {
    let children = c
        .src
        .tracking
        .runs_with_tags(
            &src_parent.experiment_id,
            &[(lineage::PARENT_RUN_ID, &src_parent.run_id)],
        )
        .with_context(|| format!("finding the child runs of source run {}", src_parent.run_id))?;
    for child in children {
        c.phase(format!("child run {}", child.info.run_id));
        let source = read_source(c, &child.info.run_id)?;
        let report = copy_one(c, &source, dst_experiment_id, Some(dst_parent))?;
        out.push(report.dst_run_id.clone());
        copy_children(
            c,
            &source.run.info,
            &report.dst_run_id,
            dst_experiment_id,
            out,
        )?;
    }
    Ok(())
}

/// The id of the destination experiment of that name, created if missing.
pub(super) fn destination_experiment(c: &Copier, name: &str) -> anyhow::Result<String> {
    if let Some(id) = existing_experiment(c, name)? {
        return Ok(id);
    }
    let dst = c.dst.tracking.as_ref();
    match create_once(
        c,
        || dst.create_experiment(name),
        || Ok(dst.experiment_by_name(name)?.map(|e| e.experiment_id)),
    ) {
        Ok(id) => Ok(id),
        // Someone created it in the meantime.
        Err(e) if e.has_code("RESOURCE_ALREADY_EXISTS") => {
            existing_experiment(c, name)?.ok_or_else(|| anyhow::Error::new(e))
        }
        Err(e) => {
            Err(anyhow::Error::new(e).context(format!("creating destination experiment {name:?}")))
        }
    }
}

/// The id of the destination experiment of that name if there is one; a deleted one is a
/// conflict (it is never restored silently).
pub(super) fn existing_experiment(c: &Copier, name: &str) -> anyhow::Result<Option<String>> {
    let dst = c.dst.tracking.as_ref();
    let Some(found) = dst.experiment_by_name(name)? else {
        return Ok(None);
    };
    if found.lifecycle_stage == "deleted" {
        return Err(CopyError::conflict(format!(
            "destination experiment {name:?} (id {}) on {} is deleted; restore it or choose another name",
            found.experiment_id,
            dst.server()
        ))
        .into());
    }
    Ok(Some(found.experiment_id))
}

/// Copies one run into an existing destination experiment, nested under the copy of its
/// parent when there is one: one item of a bulk copy (parents are copied first).
pub(super) fn copy_into(
    c: &mut Copier,
    run_id: &str,
    dst_experiment_id: &str,
) -> anyhow::Result<CopyRunReport> {
    let started = Instant::now();
    let source = read_source(c, run_id)?;
    let mut report = copy_one(c, &source, dst_experiment_id, None)?;
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// What copying `src` into the destination experiment would do, and the copy it would
/// complete or find (a dry run: nothing is written).
pub(super) fn planned(
    c: &Copier,
    src: &Run,
    dst_experiment_id: &str,
) -> Result<(ItemStatus, Option<String>), CopyError> {
    let earlier = earlier_copies(c, dst_experiment_id, &src.info.run_id)?;
    if let Some(done) = earlier.iter().find(|r| is_complete_copy(r, src)) {
        return Ok((ItemStatus::Existing, Some(done.info.run_id.clone())));
    }
    Ok(match earlier.into_iter().map(|r| r.info.run_id).min() {
        Some(incomplete) => (ItemStatus::WouldResume, Some(incomplete)),
        None => (ItemStatus::WouldCreate, None),
    })
}

/// Everything read from the source before writing starts.
struct Source {
    run: Run,
    models: Vec<LoggedModel>,
    run_files: artifacts::Listed,
    model_files: Vec<artifacts::Listed>,
}

fn read_source(c: &mut Copier, run_id: &str) -> anyhow::Result<Source> {
    c.phase(format!(
        "reading source run {run_id} from {}",
        c.src.tracking.server()
    ));
    let run = c.src.tracking.get_run(run_id).map_err(|e| {
        if e.kind == crate::api::ErrorKind::NotFound {
            CopyError::not_found(format!(
                "source run {run_id} not found on {}",
                c.src.tracking.server()
            ))
        } else {
            e
        }
    })?;
    if run.info.is_deleted() {
        return Err(CopyError::not_found(format!(
            "source run {run_id} on {} is deleted; restore it to copy it",
            c.src.tracking.server()
        ))
        .into());
    }
    let models = models::discover(c.src.tracking.as_ref(), &run)?;
    let run_root = ArtifactRoot {
        owner: Owner::Run(run_id.to_string()),
        uri: run.info.artifact_uri.clone(),
    };
    let run_files = artifacts::list(c, run_root)?;
    let model_files = models
        .iter()
        .map(|m| {
            let root = ArtifactRoot {
                owner: Owner::Model(m.info.model_id.clone()),
                uri: m.info.artifact_uri.clone(),
            };
            artifacts::list(c, root)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Source {
        run,
        models,
        run_files,
        model_files,
    })
}

/// Earlier copies of `src_run_id` from this source server in the experiment.
fn earlier_copies(
    c: &Copier,
    dst_experiment_id: &str,
    src_run_id: &str,
) -> Result<Vec<Run>, CopyError> {
    let src_server = c.src.tracking.server();
    c.dst.tracking.runs_with_tags(
        dst_experiment_id,
        &[
            (lineage::SRC_RUN_ID, src_run_id),
            (lineage::SRC_TRACKING_URI, &src_server),
        ],
    )
}

fn copy_one(
    c: &mut Copier,
    source: &Source,
    dst_experiment_id: &str,
    dst_parent: Option<&str>,
) -> anyhow::Result<CopyRunReport> {
    let src_run_id = source.run.info.run_id.as_str();
    let earlier = earlier_copies(c, dst_experiment_id, src_run_id)?;
    let complete = earlier.iter().find(|r| is_complete_copy(r, &source.run));
    let mut report = empty_report(src_run_id, dst_experiment_id);
    if let Some(done) = complete {
        c.phase(format!(
            "run {src_run_id} was already copied to {} as run {}",
            c.dst.tracking.server(),
            done.info.run_id
        ));
        report.dst_run_id = done.info.run_id.clone();
        report.outcome = Outcome::Existing;
        return Ok(report);
    }
    let dst_parent = match dst_parent {
        Some(p) => Some(p.to_string()),
        None => parent_copy(c, &source.run, dst_experiment_id)?,
    };
    // Of several incomplete copies (identical commands racing), the one every racer keeps.
    let preferred = earlier
        .into_iter()
        .min_by(|a, b| a.info.run_id.cmp(&b.info.run_id));
    let (dst_run, resuming) = match preferred {
        Some(incomplete) => {
            match wait_while_alive(c, &source.run, &incomplete)? {
                Watched::Completed(done) => {
                    report.dst_run_id = done;
                    report.outcome = Outcome::Existing;
                    return Ok(report);
                }
                // Its writer stepped aside for another copy: look again.
                Watched::Deleted => {
                    return copy_one(c, source, dst_experiment_id, dst_parent.as_deref())
                }
                Watched::Resumable => {}
            }
            c.phase(format!(
                "resuming the incomplete copy {} of run {src_run_id}",
                incomplete.info.run_id
            ));
            (incomplete, true)
        }
        None => {
            let created = create_run(c, &source.run, dst_experiment_id)?;
            match step_aside_early(c, &source.run, created)? {
                Race::Won(mine) => (mine, false),
                Race::Lost(Some(winner)) => {
                    report.dst_run_id = winner.info.run_id;
                    report.outcome = Outcome::Existing;
                    return Ok(report);
                }
                Race::Lost(None) => {
                    // The winner failed: its copy is resumed here, by the same command.
                    return copy_one(c, source, dst_experiment_id, dst_parent.as_deref());
                }
            }
        }
    };
    report.dst_run_id = dst_run.info.run_id.clone();
    report.outcome = if resuming {
        Outcome::Resumed
    } else {
        Outcome::Created
    };
    match fill_run(
        c,
        source,
        &dst_run,
        dst_parent.as_deref(),
        resuming,
        &mut report,
    ) {
        Ok(Race::Won(_)) => Ok(report),
        Ok(Race::Lost(Some(winner))) => {
            report.dst_run_id = winner.info.run_id;
            report.outcome = Outcome::Existing;
            Ok(report)
        }
        Ok(Race::Lost(None)) => copy_one(c, source, dst_experiment_id, dst_parent.as_deref()),
        // The copy this command resumed was deleted under it by its first writer, stepping
        // aside for an identical copy: look the copies up again.
        Err(_) if resuming && was_deleted(c, &dst_run.info.run_id) => {
            copy_one(c, source, dst_experiment_id, dst_parent.as_deref())
        }
        Err(err) => {
            // Leave an unmistakably unfinished run: FAILED and still tagged incomplete.
            let _ = c
                .dst
                .tracking
                .update_run(&dst_run.info.run_id, "FAILED", None);
            Err(err.context(format!(
                "copy of run {src_run_id} into destination run {} on {} is incomplete (marked FAILED); \
                 re-run the same command to resume it",
                dst_run.info.run_id,
                c.dst.tracking.server()
            )))
        }
    }
}

fn was_deleted(c: &Copier, run_id: &str) -> bool {
    matches!(c.dst.tracking.get_run(run_id), Ok(run) if run.info.is_deleted())
}

/// How a fresh copy fared against identical copies started at the same moment.
enum Race {
    /// This copy goes on.
    Won(Run),
    /// Another copy goes on; this one was deleted. `Some`: the winner completed (its run);
    /// `None`: the winner failed and is left to be resumed.
    Lost(Option<Run>),
}

/// Identical commands started together each create a copy before they can see the others'.
/// Every one of them keeps the same copy: a complete one if there is one, else the one with
/// the lowest run id; the others delete their own run and wait for it to finish. This first
/// look, right after the create, spares most of a racing command's work; `finish_run` looks
/// again before anything is marked complete, when every racing create has long landed.
fn step_aside_early(c: &mut Copier, src: &Run, mine: Run) -> anyhow::Result<Race> {
    let Some(winner) = preferred_copy(c, src, &mine)? else {
        return Ok(Race::Won(mine));
    };
    defer_to(c, src, &mine, &winner)
}

/// The identical copy every racing command agrees to keep, when it is not `mine`: a complete
/// copy of `src` (a racer whose create landed late may have finished first), else the active
/// copy with the lowest run id below mine. Run ids are random, so "lowest" is only a rule
/// every racer applies alike.
fn preferred_copy(c: &Copier, src: &Run, mine: &Run) -> anyhow::Result<Option<String>> {
    let mine_id = mine.info.run_id.as_str();
    let others: Vec<Run> = earlier_copies(c, &mine.info.experiment_id, &src.info.run_id)?
        .into_iter()
        .filter(|r| r.info.run_id != mine_id)
        .collect();
    if let Some(complete) = others.iter().find(|r| is_complete_copy(r, src)) {
        return Ok(Some(complete.info.run_id.clone()));
    }
    Ok(others
        .into_iter()
        .map(|r| r.info.run_id)
        .filter(|id| id.as_str() < mine_id)
        .min())
}

/// Leaves the copy to the identical one `winner`: deletes this one (`mine`, with any logged
/// models it made) and waits until the winner is complete (`Lost(Some)`) or has failed
/// (`Lost(None)`, to be resumed).
fn defer_to(c: &mut Copier, src: &Run, mine: &Run, winner: &str) -> anyhow::Result<Race> {
    c.phase(format!(
        "an identical copy of run {} is under way as run {winner}; waiting for it",
        src.info.run_id
    ));
    let mine_id = mine.info.run_id.as_str();
    let models = c
        .dst
        .tracking
        .logged_models_of_run(&mine.info.experiment_id, mine_id)
        .context("finding the logged models this copy made")?;
    for model in models {
        c.dst
            .tracking
            .delete_logged_model(&model.info.model_id)
            .with_context(|| {
                format!(
                    "removing logged model {} of this copy in favour of the identical one under way",
                    model.info.model_id
                )
            })?;
    }
    c.dst
        .tracking
        .delete_run(mine_id)
        .context("removing this copy in favour of the identical one under way")?;
    let started = std::time::Instant::now();
    loop {
        let run = c.dst.tracking.get_run(winner)?;
        if is_complete_copy(&run, src) {
            return Ok(Race::Lost(Some(run)));
        }
        if run.info.status.as_deref() == Some("FAILED") || run.info.is_deleted() {
            return Ok(Race::Lost(None));
        }
        if started.elapsed() > RACE_WAIT {
            return Err(CopyError::conflict(format!(
                "an identical copy of run {} is still under way as run {winner} on {} after {} s; \
                 re-run the command when it is done",
                src.info.run_id,
                c.dst.tracking.server(),
                RACE_WAIT.as_secs()
            ))
            .into());
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// What became of an incomplete copy while this command watched it.
enum Watched {
    /// Its writer completed it (this run id): that is the answer.
    Completed(String),
    /// Its writer deleted it, stepping aside for an identical copy: the copies are looked up
    /// again.
    Deleted,
    /// It failed or stands still: it is resumed here.
    Resumable,
}

/// An incomplete copy may be one another command is still writing (started a little earlier),
/// or one a stopped command left. While it keeps changing, it is left to its writer.
fn wait_while_alive(c: &mut Copier, src: &Run, copy: &Run) -> anyhow::Result<Watched> {
    if copy.info.status.as_deref() != Some("RUNNING") {
        return Ok(Watched::Resumable);
    }
    let fingerprint = |run: &Run| {
        let mut metrics: Vec<(String, i64, i64)> = run
            .data
            .metrics
            .iter()
            .map(|m| (m.key.clone(), m.step, m.timestamp))
            .collect();
        metrics.sort();
        (run.data.params.len(), run.data.tags.len(), metrics)
    };
    let mut seen = fingerprint(copy);
    let started = std::time::Instant::now();
    loop {
        std::thread::sleep(c.alive_poll);
        let now = c.dst.tracking.get_run(&copy.info.run_id)?;
        if is_complete_copy(&now, src) {
            return Ok(Watched::Completed(now.info.run_id));
        }
        if now.info.is_deleted() {
            return Ok(Watched::Deleted);
        }
        let current = fingerprint(&now);
        if now.info.status.as_deref() != Some("RUNNING") || current == seen {
            return Ok(Watched::Resumable);
        }
        if started.elapsed() > RACE_WAIT {
            return Ok(Watched::Resumable);
        }
        c.phase(format!(
            "the copy {} of run {} is being written by another command; waiting for it",
            copy.info.run_id, src.info.run_id
        ));
        seen = current;
    }
}

/// A complete copy has no incomplete mark and the source's status and end time (the last things
/// a copy sets). Anything less is resumed, never reported as done.
fn is_complete_copy(copy: &Run, src: &Run) -> bool {
    let (status, end_time) = final_state(src);
    copy.data.tag(lineage::INCOMPLETE).is_none()
        && copy.info.status.as_deref() == Some(status)
        && (end_time.is_none() || copy.info.end_time == end_time)
}

/// The status and end time a copy of `src` ends with: a running run stays running.
fn final_state(src: &Run) -> (&str, Option<i64>) {
    let status = src.info.status.as_deref().unwrap_or("FINISHED");
    let end_time = if status == "RUNNING" {
        None
    } else {
        src.info.end_time
    };
    (status, end_time)
}

fn empty_report(src_run_id: &str, dst_experiment_id: &str) -> CopyRunReport {
    CopyRunReport {
        src_run_id: src_run_id.to_string(),
        dst_run_id: String::new(),
        dst_experiment_id: dst_experiment_id.to_string(),
        outcome: Outcome::Created,
        params: 0,
        tags: 0,
        metric_points: 0,
        dataset_inputs: 0,
        logged_models: 0,
        artifact_files: 0,
        artifact_bytes: 0,
        artifact_files_skipped: 0,
        traces: 0,
        assessments: 0,
        prompts: 0,
        new_trace_ids: BTreeMap::new(),
        child_run_ids: Vec::new(),
        elapsed_seconds: 0.0,
    }
}

/// When the source run is a child whose parent was copied earlier, the copy of the parent.
fn parent_copy(
    c: &mut Copier,
    run: &Run,
    dst_experiment_id: &str,
) -> anyhow::Result<Option<String>> {
    let Some(parent) = run.data.tag(lineage::PARENT_RUN_ID) else {
        return Ok(None);
    };
    let copies = earlier_copies(c, dst_experiment_id, parent)?;
    match copies
        .iter()
        .find(|r| r.data.tag(lineage::INCOMPLETE).is_none())
    {
        Some(p) => Ok(Some(p.info.run_id.clone())),
        None => {
            c.warn(format!(
                "run {} is a child of run {parent}, which has no copy in the destination experiment; \
                 the copy is not nested (copy the parent with --copy-children to keep the nesting)",
                run.info.run_id
            ));
            Ok(None)
        }
    }
}

fn create_run(c: &mut Copier, src: &Run, dst_experiment_id: &str) -> anyhow::Result<Run> {
    let mut tags = vec![
        KeyValue::new(lineage::SRC_RUN_ID, &src.info.run_id),
        KeyValue::new(lineage::SRC_EXPERIMENT_ID, &src.info.experiment_id),
        KeyValue::new(lineage::SRC_TRACKING_URI, c.src.tracking.server()),
        KeyValue::new(lineage::INCOMPLETE, "true"),
    ];
    // Kept where a destination sets the user itself (a Databricks workspace).
    if let Some(user) = src.info.user_id.as_deref().filter(|u| !u.is_empty()) {
        tags.push(KeyValue::new(lineage::SRC_USER_ID, user));
    }
    let new = NewRun {
        run_name: src.info.run_name.clone().filter(|n| !n.is_empty()),
        start_time: src.info.start_time,
        user_id: src.info.user_id.clone().filter(|u| !u.is_empty()),
        tags,
    };
    // A create whose answer was lost may have made the run: it is found by its lineage tags
    // (racing copies are sorted out after the create, whichever run this is).
    let found = || {
        let copies = earlier_copies(c, dst_experiment_id, &src.info.run_id)?;
        Ok(copies
            .into_iter()
            .map(|r| r.info)
            .min_by(|a, b| a.run_id.cmp(&b.run_id)))
    };
    let info = create_once(
        c,
        || c.dst.tracking.create_run(dst_experiment_id, &new),
        found,
    )
    .with_context(|| format!("creating the destination run in experiment {dst_experiment_id}"))?;
    c.phase(format!(
        "created destination run {} on {}",
        info.run_id,
        c.dst.tracking.server()
    ));
    Ok(Run {
        info,
        ..Run::default()
    })
}

/// Copies everything into an existing (new or resumed) destination run.
fn fill_run(
    c: &mut Copier,
    src: &Source,
    dst: &Run,
    dst_parent: Option<&str>,
    resuming: bool,
    report: &mut CopyRunReport,
) -> anyhow::Result<Race> {
    let src_run = &src.run;
    let dst_id = dst.info.run_id.as_str();
    // A resumed run is re-read: what it already has decides what is skipped.
    let dst_state = if resuming {
        c.dst.tracking.get_run(dst_id)?
    } else {
        dst.clone()
    };

    // Prompts first: the copies' links name the destination's prompt versions.
    let mut prompts = PromptCopier::default();
    let linked = src_run.data.tag(prompts::LINKED_PROMPTS).into_iter();
    let model_links = src
        .models
        .iter()
        .filter_map(|m| m.info.tag(prompts::LINKED_PROMPTS));
    for value in linked.chain(model_links) {
        prompts.ensure_linked(c, value)?;
    }
    // Params and tags are written with the metrics (below).
    let entities = entities(src_run, dst_id, dst_parent, &prompts.map);
    report.params = src_run.data.params.len() as u32;
    report.tags = entities.iter().map(|e| e.tags.len()).sum::<usize>() as u32;

    let datasets = &src_run.inputs.dataset_inputs;
    if !datasets.is_empty() {
        c.phase(format!("dataset inputs: {}", datasets.len()));
        for chunk in datasets.chunks(MAX_PARAMS_TAGS_PER_BATCH) {
            c.dst
                .tracking
                .log_inputs(dst_id, chunk)
                .context("copying dataset inputs")?;
        }
    }
    report.dataset_inputs = datasets.len() as u32;

    if !src.models.is_empty() {
        c.phase(format!("logged models: {}", src.models.len()));
    }
    let dst_experiment_id = report.dst_experiment_id.clone();
    let mut src_models = src.models.clone();
    for model in &mut src_models {
        prompts::relink_tags(&mut model.info.tags, &prompts.map);
    }
    let copies = models::create_copies(
        c,
        src_models,
        &src_run.info.run_id,
        &dst_experiment_id,
        dst_id,
        resuming,
    )?;
    report.logged_models = copies.len() as u32;

    models::link_outputs(c, src_run, &copies, &dst_state)?;
    models::link_inputs(c, src_run, &dst_state, &dst_experiment_id)?;

    let (points, stats) = copy_metrics_and_artifacts(c, src, dst, &copies, resuming, entities)?;
    report.metric_points = points;
    report.artifact_files = stats.files;
    report.artifact_bytes = stats.bytes;
    report.artifact_files_skipped = stats.skipped;

    models::finalize(c, &copies)?;
    // Before the run is marked complete: a copy whose traces failed is resumed.
    let traces = traces::copy_traces(
        c,
        src_run,
        dst_id,
        &dst_experiment_id,
        &copies,
        &mut prompts,
    )?;
    report.traces = traces.traces;
    report.assessments = traces.assessments;
    report.prompts = prompts.count;
    report.new_trace_ids = traces.new_ids;
    finish_run(c, src_run, dst)
}

/// The source's tags as the copy carries them: the parent link re-pointed at the parent's copy
/// (or left out when there is none), and the old run id inside the MLflow 2 model history
/// replaced by the new one.
fn run_tags(
    src: &Run,
    dst_run_id: &str,
    dst_parent: Option<&str>,
    prompt_versions: &prompts::PromptMap,
) -> Vec<KeyValue> {
    let mut tags: Vec<KeyValue> = src
        .data
        .tags
        .iter()
        .filter(|t| t.key != lineage::PARENT_RUN_ID && !lineage::is_lineage(&t.key))
        .map(|t| {
            if t.key == lineage::LOG_MODEL_HISTORY {
                KeyValue::new(&t.key, t.value.replace(&src.info.run_id, dst_run_id))
            } else {
                t.clone()
            }
        })
        .collect();
    if let Some(parent) = dst_parent {
        tags.push(KeyValue::new(lineage::PARENT_RUN_ID, parent));
    }
    prompts::relink_tags(&mut tags, prompt_versions);
    tags
}

/// The run's params and tags as log-batch requests.
fn entities(
    src: &Run,
    dst_run_id: &str,
    dst_parent: Option<&str>,
    prompt_versions: &prompts::PromptMap,
) -> Vec<Entities> {
    let params = src
        .data
        .params
        .chunks(MAX_PARAMS_TAGS_PER_BATCH)
        .map(|chunk| Entities {
            params: chunk.to_vec(),
            tags: Vec::new(),
            what: "params",
        });
    let tags = run_tags(src, dst_run_id, dst_parent, prompt_versions);
    let tags = tags
        .chunks(MAX_PARAMS_TAGS_PER_BATCH)
        .map(|chunk| Entities {
            params: Vec::new(),
            tags: chunk.to_vec(),
            what: "tags",
        });
    params.chain(tags).collect()
}

/// Copies params, tags, the full history of every metric and every artifact file together:
/// the pipeline's requests go out in the loop that streams the files, so nothing waits for
/// anything else. Points that belong to a logged model carry the copied model's id. Returns
/// the number of source points and what the artifact copy did.
fn copy_metrics_and_artifacts(
    c: &mut Copier,
    src: &Source,
    dst: &Run,
    copies: &[ModelCopy],
    resuming: bool,
    entities: Vec<Entities>,
) -> anyhow::Result<(u64, ArtifactStats)> {
    let src_run = &src.run;
    let keys: BTreeSet<&str> = src_run
        .data
        .metrics
        .iter()
        .map(|m| m.key.as_str())
        .collect();
    c.phase(format!(
        "params, tags and {} metric keys, alongside the artifacts",
        keys.len()
    ));
    let links = ModelLinks::new(models::model_metrics(copies, &src_run.info.run_id));
    let (src_tracking, dst_tracking) = (c.src.tracking.clone(), c.dst.tracking.clone());
    let mut metrics = MetricPipeline::new(
        (src_tracking.as_ref(), &src_run.info.run_id),
        (dst_tracking.as_ref(), &dst.info.run_id),
        keys.into_iter().map(str::to_string).collect(),
        links,
        resuming,
    )
    .with_entities(entities);
    let stats = copy_artifacts(c, src, dst, copies, resuming, &mut metrics)?;
    let copied = metrics.finish()?;
    if let Some(limits) = &copied.limits {
        c.phase(format!("metrics: {limits}"));
    }
    if copied.unmatched_links > 0 {
        c.warn(format!(
            "{} logged-model metric(s) matched no point of the run's history and were not linked",
            copied.unmatched_links
        ));
    }
    Ok((copied.points, stats))
}

fn copy_artifacts(
    c: &mut Copier,
    src: &Source,
    dst: &Run,
    copies: &[ModelCopy],
    resuming: bool,
    metrics: &mut MetricPipeline<dyn Tracking>,
) -> anyhow::Result<ArtifactStats> {
    let mut run_ids = IdMap::default();
    run_ids.add(&src.run.info.run_id, &dst.info.run_id);
    let mut trees = vec![TreeCopy {
        src: &src.run_files,
        dst: ArtifactRoot {
            owner: Owner::Run(dst.info.run_id.clone()),
            uri: dst.info.artifact_uri.clone(),
        },
        ids: run_ids.clone(),
    }];
    for (copy, listed) in copies.iter().zip(&src.model_files) {
        let mut ids = run_ids.clone();
        ids.add(&copy.src.info.model_id, &copy.dst_id);
        ids.add(&copy.src.info.artifact_uri, &copy.dst_artifact_uri);
        trees.push(TreeCopy {
            src: listed,
            dst: copy.dst_root(),
            ids,
        });
    }
    artifacts::copy_trees(c, &trees, resuming, metrics)
}

/// Gives the copy the source's status and end time, then removes the incomplete mark — unless
/// an identical copy that every racer prefers appeared meanwhile (a command started together
/// with this one, whose run this one could not see yet): then that one is kept.
fn finish_run(c: &mut Copier, src: &Run, dst: &Run) -> anyhow::Result<Race> {
    let dst_id = dst.info.run_id.as_str();
    if let Some(winner) = preferred_copy(c, src, dst)? {
        return defer_to(c, src, dst, &winner);
    }
    let (status, end_time) = final_state(src);
    c.dst
        .tracking
        .update_run(dst_id, status, end_time)
        .context("setting the run's status and end time")?;
    c.dst
        .tracking
        .delete_tag(dst_id, lineage::INCOMPLETE)
        .context("marking the copy complete")?;
    c.phase(format!(
        "run {} copied to {} as run {dst_id}",
        src.info.run_id,
        c.dst.tracking.server()
    ));
    Ok(Race::Won(dst.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_remap_parent_and_model_history() {
        let mut src = Run::default();
        src.info.run_id = "old".into();
        src.data.tags = vec![
            KeyValue::new("mlflow.parentRunId", "p-old"),
            KeyValue::new(
                "mlflow.log-model.history",
                r#"[{"run_id": "old", "artifact_path": "model"}]"#,
            ),
            KeyValue::new("team", "x"),
        ];
        let tags = run_tags(&src, "new", Some("p-new"), &Default::default());
        assert_eq!(
            tags,
            vec![
                KeyValue::new(
                    "mlflow.log-model.history",
                    r#"[{"run_id": "new", "artifact_path": "model"}]"#
                ),
                KeyValue::new("team", "x"),
                KeyValue::new("mlflow.parentRunId", "p-new"),
            ]
        );
        assert!(run_tags(&src, "new", None, &Default::default())
            .iter()
            .all(|t| t.key != "mlflow.parentRunId"));
    }
}
