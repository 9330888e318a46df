//! The copy engine: plans and executes copies against store clients. It decides what to copy
//! and in which order; the stores know the wire.

pub mod artifacts;
pub mod copy_model_version;
pub mod copy_run;
pub mod lineage;
pub mod metrics;
pub mod mlmodel;
pub mod models;
pub mod progress;
pub mod version_source;

use crate::credentials::{Auth, Side};
use crate::stores::mlflow::MlflowRest;
use crate::transport::Transport;
use crate::uri::ServerUri;
use progress::{Event, Progress};
use std::rc::Rc;

/// Both ends of a copy, and where progress goes.
pub struct Copier<'p> {
    pub src: MlflowRest,
    pub dst: MlflowRest,
    pub transport: Rc<Transport>,
    pub progress: &'p mut dyn Progress,
    pub concurrency: usize,
}

impl<'p> Copier<'p> {
    /// Connects the two sides; credentials come from `env` (see `credentials`).
    pub fn new(
        src_uri: &str,
        dst_uri: &str,
        transport: Rc<Transport>,
        env: &dyn Fn(&str) -> Option<String>,
        progress: &'p mut dyn Progress,
        concurrency: u32,
    ) -> Result<Copier<'p>, crate::api::CopyError> {
        let src_uri = ServerUri::parse(src_uri)?;
        let dst_uri = ServerUri::parse(dst_uri)?;
        let src = MlflowRest::new(
            &src_uri,
            Side::Src,
            Auth::from_env(Side::Src, env),
            transport.clone(),
        )?;
        let dst = MlflowRest::new(
            &dst_uri,
            Side::Dst,
            Auth::from_env(Side::Dst, env),
            transport.clone(),
        )?;
        Ok(Copier {
            src,
            dst,
            transport,
            progress,
            concurrency: concurrency as usize,
        })
    }

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
