//! verify-experiment: every run copy-experiment would copy (the same selection), compared
//! with its copy in the destination experiment as verify-run compares one run; and the
//! experiment's description and tags. Reads only.

use super::copy_experiment::{select_runs, source_experiment, SERVER_MANAGED_TAGS};
use super::copy_run;
use super::verify::{compare_with_copy, Differences};
use super::Copier;
use crate::api::{
    CopyError, ExperimentVerifyReport, ItemStatus, VerifyExperimentRequest, MAX_DIFFERENCES,
};
use crate::stores::model::{Experiment, KeyValue, Run};
use anyhow::Context;

pub fn verify_experiment(
    c: &mut Copier,
    request: &VerifyExperimentRequest,
) -> anyhow::Result<ExperimentVerifyReport> {
    let copied = &request.0;
    let source = source_experiment(c, copied)?;
    let runs = select_runs(c, copied, &source)?;
    let name = &copied.dst_experiment_name;
    let dst_id = copy_run::existing_experiment(c, name)?.ok_or_else(|| {
        CopyError::not_found(format!(
            "destination experiment {name:?} not found on {}: nothing of {} was copied there",
            c.dst.tracking.server(),
            source.experiment_id
        ))
    })?;
    let mut report = ExperimentVerifyReport {
        src_experiment_id: source.experiment_id.clone(),
        dst_experiment_id: dst_id.clone(),
        runs_compared: 0,
        runs_differing: 0,
        missing: Vec::new(),
        metric_points: 0,
        artifact_bytes: 0,
        differences: Vec::new(),
    };
    let dst = c.dst.tracking.experiment_by_id(&dst_id)?;
    report.differences = tag_differences(&source, &dst);
    for (k, run) in runs.iter().enumerate() {
        c.phase(format!(
            "{}/{}: verifying run {}",
            k + 1,
            runs.len(),
            run.run_id
        ));
        let src_run = c.src.tracking.get_run(&run.run_id)?;
        let (status, copy) = copy_run::planned(c, &src_run, &dst_id)?;
        match copy.filter(|_| status == ItemStatus::Existing) {
            Some(copy) => compare_one(c, &src_run, &copy, &mut report)?,
            None => report.missing.push(run.run_id.clone()),
        }
    }
    Ok(report)
}

/// One run against its copy, its differences added to the report's.
fn compare_one(
    c: &mut Copier,
    src: &Run,
    dst_id: &str,
    report: &mut ExperimentVerifyReport,
) -> anyhow::Result<()> {
    let src_id = &src.info.run_id;
    let compared = compare_with_copy(c, src, dst_id)
        .with_context(|| format!("verifying the copy {dst_id} of run {src_id}"))?;
    report.runs_compared += 1;
    report.metric_points += compared.metric_points;
    report.artifact_bytes += compared.artifact_bytes;
    if !compared.differences.is_empty() {
        report.runs_differing += 1;
    }
    let room = MAX_DIFFERENCES.saturating_sub(report.differences.len());
    report.differences.extend(
        compared
            .differences
            .into_iter()
            .take(room)
            .map(|line| format!("run {src_id} (copy {dst_id}): {line}")),
    );
    Ok(())
}

/// The source's description and tags, as copy-experiment gives them to the destination
/// experiment (which may have tags of its own: a shared experiment is not the copy's alone).
fn tag_differences(source: &Experiment, dst: &Experiment) -> Vec<String> {
    let mut diff = Differences::default();
    let copied = source
        .tags
        .iter()
        .filter(|t| !SERVER_MANAGED_TAGS.iter().any(|m| t.key.starts_with(m)));
    for KeyValue { key, value } in copied {
        match dst.tags.iter().find(|t| &t.key == key) {
            None => diff.add(format!("experiment tag {key:?}: missing from the copy")),
            Some(t) if &t.value != value => diff.add(format!(
                "experiment tag {key:?}: source {value:?}, copy {:?}",
                t.value
            )),
            Some(_) => {}
        }
    }
    diff.0
}
