//! copy-experiment with `parallel` N and no `via`: N component instances at once in this
//! process. The component itself copies its items one at a time (WASI 0.2 gives a guest no
//! threads); a host can run several instances of it instead.
//!
//! One instance plans the copy (a dry run: it writes nothing, and each item says which item is
//! its parent). The items then go in waves by nesting depth, so that every parent's copy is
//! there before its children are copied and nested under it: each wave's runs are dealt out
//! to N instances, each copying its share as a copy-experiment of those `run_ids` (each run a
//! copy-run: idempotent, so a re-run or a race finds the copy). A child whose parent failed is
//! not attempted, as the component does it. The shares' reports merge into one.

use crate::exports::mlflow::copy::copier::{
    CopyError, CopyExperimentRequest, ItemStatus, MigrationItem, MigrationReport,
};
use crate::Guest;
use anyhow::Result;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// How many instances a request asks for: `parallel` above 1 without `via` (with `via` the
/// component sends its items to the HTTP function itself).
pub fn instances_wanted(request: &CopyExperimentRequest) -> Option<usize> {
    let n = request.parallel.unwrap_or(1) as usize;
    (request.via.is_none() && n > 1).then_some(n)
}

pub async fn copy_experiment(
    guest: &Guest,
    request: CopyExperimentRequest,
    instances: usize,
) -> Result<Result<MigrationReport, CopyError>> {
    let started = Instant::now();
    let request = CopyExperimentRequest {
        parallel: None,
        ..request
    };
    let plan = match call(guest, dry_run(&request)).await? {
        Ok(plan) if request.dry_run != Some(true) => plan,
        done => return Ok(done),
    };
    // The plan's source and destination; its items and counts are replaced by the copies'.
    let mut report = plan.clone();
    report.dry_run = false;
    report.items.clear();
    (
        report.created,
        report.resumed,
        report.existing,
        report.failed,
    ) = (0, 0, 0, 0);
    (report.artifact_bytes, report.metric_points) = (0, 0);
    let mut failed: HashSet<String> = HashSet::new();
    // A share's report cannot name parents outside the share: the plan's are kept.
    let parents: HashMap<&str, &Option<String>> = plan
        .items
        .iter()
        .map(|i| (i.src_id.as_str(), &i.src_parent_id))
        .collect();
    for wave in waves(&plan.items) {
        let (blocked, ready): (Vec<&MigrationItem>, Vec<&MigrationItem>) = wave
            .into_iter()
            .partition(|i| i.src_parent_id.as_ref().is_some_and(|p| failed.contains(p)));
        for item in blocked {
            add(&mut report, not_attempted(item), &mut failed);
        }
        let shares = deal(&ready, instances);
        let calls = shares.into_iter().map(|ids| {
            let share = CopyExperimentRequest {
                run_ids: ids,
                filter: None,
                max_runs: None,
                ..request.clone()
            };
            call(guest, share)
        });
        for outcome in join_all(calls).await {
            let share = match outcome? {
                Ok(share) => share,
                Err(e) => return Ok(Err(e)),
            };
            report.dst = report.dst.or(share.dst);
            for mut item in share.items {
                item.src_parent_id = parents.get(item.src_id.as_str()).and_then(|p| (*p).clone());
                add(&mut report, item, &mut failed);
            }
        }
    }
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    Ok(Ok(report))
}

/// Runs `calls` at once on this thread: each guest yields while it waits on the network.
async fn join_all<F: std::future::Future>(calls: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = calls.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        match pending {
            true => std::task::Poll::Pending,
            false => std::task::Poll::Ready(()),
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every call finished"))
        .collect()
}

/// One copy-experiment in an instance of its own.
async fn call(
    guest: &Guest,
    request: CopyExperimentRequest,
) -> Result<Result<MigrationReport, CopyError>> {
    let (mut store, plugin) = guest.instance().await?;
    let outcome = plugin
        .mlflow_copy_copier()
        .call_copy_experiment(&mut store, &request)
        .await?;
    Ok(outcome)
}

fn dry_run(request: &CopyExperimentRequest) -> CopyExperimentRequest {
    CopyExperimentRequest {
        dry_run: Some(true),
        verify: None,
        ..request.clone()
    }
}

/// The plan's items by nesting depth: the plan lists parents before children, so each item's
/// parent (`src_parent_id`, set when the parent is an item too) has its depth already.
fn waves(items: &[MigrationItem]) -> Vec<Vec<&MigrationItem>> {
    let mut depth: HashMap<&str, usize> = HashMap::new();
    let mut waves: Vec<Vec<&MigrationItem>> = Vec::new();
    for item in items {
        let parent = item.src_parent_id.as_deref();
        let d = parent.and_then(|p| depth.get(p)).map_or(0, |d| d + 1);
        depth.insert(&item.src_id, d);
        if waves.len() <= d {
            waves.resize_with(d + 1, Vec::new);
        }
        waves[d].push(item);
    }
    waves
}

/// The runs dealt round robin into at most `instances` shares.
fn deal(items: &[&MigrationItem], instances: usize) -> Vec<Vec<String>> {
    let mut shares: Vec<Vec<String>> = vec![Vec::new(); instances.min(items.len())];
    for (i, item) in items.iter().enumerate() {
        shares[i % instances].push(item.src_id.clone());
    }
    shares
}

fn not_attempted(item: &MigrationItem) -> MigrationItem {
    let parent = item.src_parent_id.clone().unwrap_or_default();
    MigrationItem {
        dst_id: None,
        status: ItemStatus::Failed,
        detail: None,
        error: Some(CopyError::Upstream(format!(
            "not attempted: its parent run {parent} failed (a re-run copies both, nested)"
        ))),
        artifact_bytes: 0,
        metric_points: 0,
        ..item.clone()
    }
}

fn add(report: &mut MigrationReport, item: MigrationItem, failed: &mut HashSet<String>) {
    match item.status {
        ItemStatus::Created | ItemStatus::WouldCreate => report.created += 1,
        ItemStatus::Resumed | ItemStatus::WouldResume => report.resumed += 1,
        ItemStatus::Existing => report.existing += 1,
        ItemStatus::Failed => {
            report.failed += 1;
            failed.insert(item.src_id.clone());
        }
    }
    report.artifact_bytes += item.artifact_bytes;
    report.metric_points += item.metric_points;
    report.items.push(item);
}
