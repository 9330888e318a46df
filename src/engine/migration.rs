//! What the bulk commands share: items copied one after another, each one's failure recorded
//! without stopping the others, counts, and progress with an ETA.
//!
//! Items run one at a time in one component instance: a copy's requests are already many in
//! flight (files, metric pages), and the engine is single-threaded (WASI 0.2 has no threads),
//! so runs are not interleaved here. With `--via` the items run elsewhere, several in flight
//! (`item_executor`), and end in the order they finish.

use super::progress::Event;
use super::Copier;
use crate::api::{CopyError, ErrorKind, ItemError, ItemStatus, MigrationItem, MigrationReport};
use std::collections::HashMap;
use std::time::Instant;

/// Failures in a row, of a kind that says the servers rather than the items are failing,
/// after which the remaining items are not attempted (each would spend its whole retry
/// budget against a server that is down or refuses the credentials).
pub const MAX_FAILURES_IN_A_ROW: u32 = 5;

pub struct Migration {
    report: MigrationReport,
    total: usize,
    /// Items begun so far.
    started: usize,
    began_at: Instant,
    failures_in_a_row: u32,
    /// The parent item of each item that has one (copy-experiment), given to its report line.
    parents: HashMap<String, String>,
}

impl Migration {
    pub fn new(src: String, dst: Option<String>, dry_run: bool, total: usize) -> Migration {
        Migration {
            report: MigrationReport {
                src,
                dst,
                dry_run,
                items: Vec::with_capacity(total),
                created: 0,
                resumed: 0,
                existing: 0,
                failed: 0,
                artifact_bytes: 0,
                metric_points: 0,
                elapsed_seconds: 0.0,
            },
            total,
            started: 0,
            began_at: Instant::now(),
            failures_in_a_row: 0,
            parents: HashMap::new(),
        }
    }

    /// With the parent item of each item that has one (`src_parent_id` of its report line).
    pub fn with_parents(self, parents: HashMap<String, String>) -> Migration {
        Migration { parents, ..self }
    }

    /// Runs one item, recording its result or its failure.
    pub fn item(
        &mut self,
        c: &mut Copier,
        src_id: &str,
        copy: impl FnOnce(&mut Copier) -> anyhow::Result<MigrationItem>,
    ) {
        if self.begin(c, src_id) {
            let result = copy(c);
            self.end(c, src_id, result);
        }
    }

    /// Whether an item may start: not once enough items failed in a row (it is then recorded
    /// as not attempted). Announces it. Items may be in flight several at once (`--via`).
    pub fn begin(&mut self, c: &mut Copier, src_id: &str) -> bool {
        if let Some(reason) = self.giving_up() {
            self.record(c, failed(src_id, &reason));
            return false;
        }
        self.started += 1;
        c.phase(format!("item {}/{}: {src_id}", self.started, self.total));
        true
    }

    /// Records how an item begun earlier ended.
    pub fn end(&mut self, c: &mut Copier, src_id: &str, result: anyhow::Result<MigrationItem>) {
        let item = match result {
            Ok(item) => item,
            Err(e) => failed(src_id, &CopyError::from_chain(&e)),
        };
        self.record(c, item);
    }

    /// Why the remaining items are not attempted, once enough failed in a row.
    fn giving_up(&self) -> Option<CopyError> {
        if self.failures_in_a_row < MAX_FAILURES_IN_A_ROW {
            return None;
        }
        let last = self.report.items.last()?.error.as_ref()?;
        Some(CopyError::new(
            last.kind,
            format!(
                "not attempted: the {MAX_FAILURES_IN_A_ROW} items before it failed in a row \
                 ({}); the last: {}",
                last.kind.as_str(),
                last.message
            ),
        ))
    }

    pub fn record(&mut self, c: &mut Copier, mut item: MigrationItem) {
        item.src_parent_id = self.parents.get(&item.src_id).cloned();
        let r = &mut self.report;
        match item.status {
            ItemStatus::Created => r.created += 1,
            ItemStatus::Resumed | ItemStatus::WouldResume => r.resumed += 1,
            ItemStatus::Existing => r.existing += 1,
            ItemStatus::Failed => r.failed += 1,
            ItemStatus::WouldCreate => r.created += 1,
        }
        let server_trouble = item
            .error
            .as_ref()
            .is_some_and(|e| matches!(e.kind, ErrorKind::Unauthorized | ErrorKind::Upstream));
        self.failures_in_a_row = match server_trouble {
            true => self.failures_in_a_row + 1,
            false => 0,
        };
        r.artifact_bytes += item.artifact_bytes;
        r.metric_points += item.metric_points;
        r.items.push(item.clone());
        let done = r.items.len();
        let elapsed = self.began_at.elapsed().as_secs_f64();
        let eta = (done < self.total).then(|| elapsed / done as f64 * (self.total - done) as f64);
        c.progress.event(Event::Item {
            done: done as u64,
            total: self.total as u64,
            item,
            bytes_done: r.artifact_bytes,
            points_done: r.metric_points,
            eta_seconds: eta,
        });
    }

    pub fn last_failed(&self) -> bool {
        self.report
            .items
            .last()
            .is_some_and(|i| i.status == ItemStatus::Failed)
    }

    /// Marks an item recorded earlier as failed after all (a step the bulk copy takes once
    /// every item is done, such as moving aliases, failed for it).
    pub fn fail_item(&mut self, src_id: &str, error: &CopyError) {
        let r = &mut self.report;
        let Some(item) = r.items.iter_mut().find(|i| i.src_id == src_id) else {
            return;
        };
        match item.status {
            ItemStatus::Created => r.created -= 1,
            ItemStatus::Resumed => r.resumed -= 1,
            ItemStatus::Existing => r.existing -= 1,
            _ => return,
        }
        r.failed += 1;
        item.status = ItemStatus::Failed;
        item.error = Some(ItemError::from(error));
    }

    pub fn finish(mut self) -> MigrationReport {
        self.report.elapsed_seconds = self.began_at.elapsed().as_secs_f64();
        self.report
    }
}

pub fn failed(src_id: &str, error: &CopyError) -> MigrationItem {
    MigrationItem {
        error: Some(ItemError::from(error)),
        ..item(src_id, ItemStatus::Failed)
    }
}

/// An item with nothing but its source id and status.
pub fn item(src_id: &str, status: ItemStatus) -> MigrationItem {
    MigrationItem {
        src_id: src_id.to_string(),
        dst_id: None,
        status,
        detail: None,
        src_parent_id: None,
        error: None,
        artifact_bytes: 0,
        metric_points: 0,
    }
}
