//! Where the items of a bulk copy run. The bulk copies (`copy_experiment`, `copy_model`) plan
//! the items, decide which may start (parents before children, versions in order) and record
//! what became of each; an executor only runs them: here, one after another (`Local`), or as
//! requests to the copy function deployed elsewhere (`stores::copy_function::Via`, `--via`),
//! several at once. The engine never learns which.

use super::copy_model_version::{self, Aliases};
use super::{copy_run, Copier};
use crate::api::{CopyModelVersionReport, CopyModelVersionRequest, CopyRunReport, CopyRunRequest};

/// One item to run.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    /// One run, without its children (the bulk copy sends them as items of their own), into
    /// the destination experiment: found by its id here, by its name (`request`) elsewhere.
    Run {
        request: CopyRunRequest,
        dst_experiment_id: String,
    },
    /// One model version. Run here, its aliases are left for the bulk copy to move last.
    Version(CopyModelVersionRequest),
}

/// What running a job reported.
#[derive(Debug, Clone, PartialEq)]
pub enum Done {
    Run(CopyRunReport),
    Version(Box<CopyModelVersionReport>),
}

/// The bulk copy's side of the work: the items that may start, handed out one by one, and
/// their results taken back (in whatever order they finish).
pub trait Items {
    /// The next item that may start now, with the key its result comes back with; `None`
    /// while every item left waits for one in flight, or when none is left.
    fn next(&mut self, c: &mut Copier) -> Option<(usize, Job)>;
    /// What became of the item handed out with `key`.
    fn done(&mut self, c: &mut Copier, key: usize, result: anyhow::Result<Done>);
    /// Whether every item was handed out or settled: `next` will give no more.
    fn exhausted(&self) -> bool;
}

/// Runs the items a bulk copy hands out until none is left.
pub trait ItemExecutor {
    /// `Err` only when the executor cannot go on at all (the copy function refuses the token):
    /// each item's own failure goes to `Items::done`.
    fn run(&mut self, c: &mut Copier, items: &mut dyn Items) -> anyhow::Result<()>;
}

/// Each item copied in this component instance, one after another: a copy already keeps many
/// requests in flight (files, metric pages), and WASI 0.2 gives the guest no threads.
pub struct Local;

impl ItemExecutor for Local {
    fn run(&mut self, c: &mut Copier, items: &mut dyn Items) -> anyhow::Result<()> {
        while let Some((key, job)) = items.next(c) {
            let result = run_here(c, &job);
            items.done(c, key, result);
        }
        Ok(())
    }
}

/// Runs one job in this component instance.
pub fn run_here(c: &mut Copier, job: &Job) -> anyhow::Result<Done> {
    match job {
        Job::Run {
            request,
            dst_experiment_id,
        } => copy_run::copy_into(c, &request.run_id, dst_experiment_id).map(Done::Run),
        Job::Version(one) => copy_model_version::copy_version(c, one, Aliases::Later)
            .map(|r| Done::Version(Box::new(r))),
    }
}
