//! The copy engine: plans and executes copies against store clients. It decides what to copy
//! and in which order; the stores know the wire.

pub mod artifacts;
pub mod copy_experiment;
pub mod copy_model;
pub mod copy_model_version;
pub mod copy_run;
pub mod create_once;
pub mod item_executor;
pub mod lineage;
pub mod metric_pipeline;
pub mod metrics;
pub mod migration;
pub mod mlmodel;
pub mod models;
pub mod nested_queue;
pub mod progress;
pub mod prompts;
pub mod trace_rewrite;
pub mod traces;
pub mod verify;
pub mod verify_artifacts;
pub mod verify_experiment;
pub mod verify_model_version;
pub mod verify_models;
pub mod verify_traces;
pub mod version_source;

#[cfg(test)]
mod fan_out_tests;
#[cfg(test)]
mod migration_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod verify_tests;

use crate::stores::{Scheduler, Stores};
use progress::{Event, Progress};

/// Both ends of a copy, and where progress goes.
pub struct Copier<'p> {
    pub src: Stores,
    pub dst: Stores,
    /// Carries out the stores' calls and streams artifact files between their downloads and
    /// uploads.
    pub scheduler: Scheduler,
    pub progress: &'p mut dyn Progress,
    pub concurrency: usize,
    /// How long an incomplete copy is watched for changes before it is taken for abandoned
    /// and resumed (see `copy_run::wait_while_alive`).
    pub alive_poll: std::time::Duration,
}

/// Long enough for a live copy to log something between two looks.
pub const ALIVE_POLL: std::time::Duration = std::time::Duration::from_secs(3);

impl Copier<'_> {
    pub fn phase(&mut self, phase: impl Into<String>) {
        self.progress.event(Event::Phase {
            phase: phase.into(),
        });
    }

    pub fn warn(&mut self, message: impl Into<String>) {
        self.progress.event(Event::Warning {
            message: message.into(),
        });
    }
}
