//! The three ways in — WIT export, command line, HTTP function — are thin shells over
//! `execute_*`, which they share: same request, same report, same errors.

pub mod cli;
#[cfg(target_arch = "wasm32")]
mod component;
pub mod http_api;
#[cfg(target_arch = "wasm32")]
mod http_handler;
pub mod settings_source;

use crate::api::{
    CopyError, CopyExperimentRequest, CopyModelRequest, CopyModelVersionReport,
    CopyModelVersionRequest, CopyRunReport, CopyRunRequest, ExperimentVerifyReport,
    MigrationReport, ModelVersionVerifyReport, VerifyExperimentRequest, VerifyModelVersionRequest,
    VerifyReport, VerifyRunRequest,
};
use crate::credentials::Auth;
use crate::credentials::Side;
use crate::engine::item_executor::{ItemExecutor, Local};
use crate::engine::progress::{Event, Progress};
use crate::engine::{
    copy_experiment, copy_model, copy_model_version, copy_run, verify, verify_experiment,
    verify_model_version, Copier,
};
use crate::stores::{self, copy_function, Scheduler};
use crate::transport::{Caller, Http, Settings, Transport};
use std::rc::Rc;

/// How an entry point reaches the outside world: the host's HTTP (bounded by the settings)
/// and environment, and who named the servers (which decides the hosts a copy may reach).
pub struct Host<'a> {
    pub http: fn(&Settings) -> Box<dyn Http>,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub caller: Caller,
}

#[cfg(target_arch = "wasm32")]
pub fn wasi_host(caller: Caller) -> Host<'static> {
    fn env(name: &str) -> Option<String> {
        settings_source::setting(name)
    }
    fn http(settings: &Settings) -> Box<dyn Http> {
        Box::new(crate::transport::wasi_http::WasiHttp {
            timeout: settings.timeout,
            hosts: settings.hosts.clone(),
        })
    }
    Host {
        http,
        env: &env,
        caller,
    }
}

/// What the entry points need to know of a request: which servers it names, how to check it,
/// and which copy it runs. One implementation per exported function.
pub trait CopyRequest: serde::de::DeserializeOwned {
    type Report: serde::Serialize;
    /// Source and destination URIs.
    fn ends(&self) -> (&str, &str);
    fn concurrency(&self) -> u32;
    fn validate(&self) -> Result<(), CopyError>;
    /// A bulk copy's `via` URL and items in flight over it: where its items run.
    fn via(&self) -> Option<(&str, u32)> {
        None
    }
    /// Runs the copy; a bulk copy's items go to `items`.
    fn copy(
        &self,
        copier: &mut Copier,
        items: &mut dyn ItemExecutor,
    ) -> anyhow::Result<Self::Report>;
    /// The failure a report stands for although the copy ran (a bulk copy with failed
    /// items): the command exits non-zero, the HTTP function answers with its status.
    fn failure(_report: &Self::Report) -> Option<CopyError> {
        None
    }
    /// Removes secrets from the messages a report carries (a bulk copy's item errors).
    fn scrub(_report: &mut Self::Report, _secrets: &[String]) {}
}

/// The verify commands: read only, one report listing every difference.
macro_rules! verify_request {
    ($request:ty, $report:ty, |$r:ident| $ends:expr, $verify:path) => {
        impl CopyRequest for $request {
            type Report = $report;
            fn ends(&self) -> (&str, &str) {
                let $r = self;
                $ends
            }
            fn concurrency(&self) -> u32 {
                crate::api::DEFAULT_CONCURRENCY
            }
            fn validate(&self) -> Result<(), CopyError> {
                <$request>::validate(self)
            }
            fn copy(
                &self,
                copier: &mut Copier,
                _: &mut dyn ItemExecutor,
            ) -> anyhow::Result<$report> {
                $verify(copier, self)
            }
            fn failure(report: &$report) -> Option<CopyError> {
                report.failure()
            }
            fn scrub(report: &mut $report, secrets: &[String]) {
                for line in &mut report.differences {
                    *line = scrub_text(line, secrets);
                }
            }
        }
    };
}

verify_request!(
    VerifyRunRequest,
    VerifyReport,
    |r| (&r.src_mlflow_uri, &r.dst_mlflow_uri),
    verify::verify_run
);
verify_request!(
    VerifyExperimentRequest,
    ExperimentVerifyReport,
    |r| (&r.0.src_mlflow_uri, &r.0.dst_mlflow_uri),
    verify_experiment::verify_experiment
);
verify_request!(
    VerifyModelVersionRequest,
    ModelVersionVerifyReport,
    |r| (&r.src_registry_uri, &r.dst_registry_uri),
    verify_model_version::verify_model_version
);

/// The bulk commands: many copies, one report of items.
macro_rules! migration_request {
    ($request:ty, $src:ident, $dst:ident, $copy:path) => {
        impl CopyRequest for $request {
            type Report = MigrationReport;
            fn ends(&self) -> (&str, &str) {
                (&self.$src, &self.$dst)
            }
            fn concurrency(&self) -> u32 {
                self.concurrency
            }
            fn validate(&self) -> Result<(), CopyError> {
                <$request>::validate(self)
            }
            fn via(&self) -> Option<(&str, u32)> {
                let parallel = self.parallel.unwrap_or(crate::api::DEFAULT_PARALLEL);
                self.via.as_deref().map(|url| (url, parallel))
            }
            fn copy(
                &self,
                copier: &mut Copier,
                items: &mut dyn ItemExecutor,
            ) -> anyhow::Result<MigrationReport> {
                $copy(copier, self, items)
            }
            fn failure(report: &MigrationReport) -> Option<CopyError> {
                report.failure()
            }
            fn scrub(report: &mut MigrationReport, secrets: &[String]) {
                for item in &mut report.items {
                    scrub_item(item, secrets);
                }
            }
        }
    };
}

migration_request!(
    CopyExperimentRequest,
    src_mlflow_uri,
    dst_mlflow_uri,
    copy_experiment::copy_experiment
);
migration_request!(
    CopyModelRequest,
    src_registry_uri,
    dst_registry_uri,
    copy_model::copy_model
);

fn scrub_item(item: &mut crate::api::MigrationItem, secrets: &[String]) {
    if let Some(error) = &mut item.error {
        error.message = scrub_text(&error.message, secrets);
    }
    if let Some(detail) = &mut item.detail {
        *detail = scrub_text(detail, secrets);
    }
}

impl CopyRequest for CopyRunRequest {
    type Report = CopyRunReport;
    fn ends(&self) -> (&str, &str) {
        (&self.src_mlflow_uri, &self.dst_mlflow_uri)
    }
    fn concurrency(&self) -> u32 {
        self.concurrency
    }
    fn validate(&self) -> Result<(), CopyError> {
        CopyRunRequest::validate(self)
    }
    fn copy(&self, copier: &mut Copier, _: &mut dyn ItemExecutor) -> anyhow::Result<CopyRunReport> {
        copy_run::copy_run(copier, self)
    }
}

impl CopyRequest for CopyModelVersionRequest {
    type Report = CopyModelVersionReport;
    fn ends(&self) -> (&str, &str) {
        (&self.src_registry_uri, &self.dst_registry_uri)
    }
    fn concurrency(&self) -> u32 {
        self.concurrency
    }
    fn validate(&self) -> Result<(), CopyError> {
        CopyModelVersionRequest::validate(self)
    }
    fn copy(
        &self,
        copier: &mut Copier,
        _: &mut dyn ItemExecutor,
    ) -> anyhow::Result<CopyModelVersionReport> {
        copy_model_version::copy_model_version(copier, self)
    }
}

/// Validates, connects both ends, copies, and flattens any failure into one classified,
/// secret-free error. Every entry point goes through here.
pub fn execute<R: CopyRequest>(
    host: Host,
    request: &R,
    progress: &mut dyn Progress,
) -> Result<R::Report, CopyError> {
    let secrets = secrets(host.env);
    let mut progress = Scrubbed {
        inner: progress,
        secrets: &secrets,
    };
    let mut run = || -> Result<R::Report, CopyError> {
        request.validate()?;
        let settings = Settings::from_env(host.env, host.caller)?;
        let mut items = executor(&host, &settings, request.via())?;
        let transport = Rc::new(Transport::new((host.http)(&settings), settings.policy));
        let (src, dst) = request.ends();
        let mut copier = Copier {
            src: stores::connect(src, Side::Src, host.env, transport.clone())?,
            dst: stores::connect(dst, Side::Dst, host.env, transport.clone())?,
            scheduler: Scheduler::new(transport),
            progress: &mut progress,
            concurrency: request.concurrency() as usize,
            alive_poll: crate::engine::ALIVE_POLL,
        };
        request
            .copy(&mut copier, items.as_mut())
            .map_err(|e| CopyError::from_chain(&e))
    };
    let mut report = run().map_err(|e| scrub(e, &secrets))?;
    R::scrub(&mut report, &secrets);
    Ok(report)
}

/// Where a bulk copy's items run: here, or at the copy function of `via`.
fn executor(
    host: &Host,
    settings: &Settings,
    via: Option<(&str, u32)>,
) -> Result<Box<dyn ItemExecutor>, CopyError> {
    let Some((url, parallel)) = via else {
        return Ok(Box::new(Local));
    };
    let via = copy_function::Via::new(url, parallel, host.http, host.env, settings)?;
    Ok(Box::new(via))
}

/// Every credential value in the environment, in every form it travels in (a Basic header's
/// base64 too), so that no message can ever show one, whatever path it took (a server echoing
/// a header back, say).
pub(crate) fn secrets(env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let mut names = vec![
        "MLFLOW_COPY_API_TOKEN".to_string(),
        copy_function::TOKEN_VAR.to_string(),
        "DATABRICKS_TOKEN".to_string(),
        "DATABRICKS_CLIENT_SECRET".to_string(),
        "DATABRICKS_PASSWORD".to_string(),
    ];
    for side in ["", "SRC_", "DST_"] {
        names.push(format!("MLFLOW_{side}TRACKING_TOKEN"));
        names.push(format!("MLFLOW_{side}TRACKING_PASSWORD"));
    }
    let mut values: Vec<String> = names.iter().filter_map(|n| env(n)).collect();
    for side in [Side::Src, Side::Dst] {
        values.extend(Auth::from_env(side, env).secrets());
    }
    values.retain(|v| v.len() >= 4);
    values.sort();
    values.dedup();
    values
}

/// Progress whose text is scrubbed of every secret before anyone sees it.
struct Scrubbed<'a> {
    inner: &'a mut dyn Progress,
    secrets: &'a [String],
}

impl Progress for Scrubbed<'_> {
    fn event(&mut self, mut event: Event) {
        match &mut event {
            Event::Phase { phase } => *phase = scrub_text(phase, self.secrets),
            Event::Warning { message } => *message = scrub_text(message, self.secrets),
            Event::Item { item, .. } => scrub_item(item, self.secrets),
            Event::Artifacts { .. } => {}
        }
        self.inner.event(event);
    }
}

pub fn scrub(mut error: CopyError, secrets: &[String]) -> CopyError {
    error.message = scrub_text(&error.message, secrets);
    error
}

pub fn scrub_text(text: &str, secrets: &[String]) -> String {
    secrets.iter().fold(text.to_string(), |acc, secret| {
        acc.replace(secret.as_str(), "***")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_scrubbed_from_messages() {
        let env = |k: &str| match k {
            "MLFLOW_DST_TRACKING_PASSWORD" => Some("hunter2-secret".to_string()),
            "MLFLOW_TRACKING_TOKEN" => Some("tok-12345".to_string()),
            _ => None,
        };
        let s = secrets(&env);
        let e = scrub(
            CopyError::upstream("server said: bad token tok-12345 / hunter2-secret"),
            &s,
        );
        assert_eq!(e.message, "server said: bad token *** / ***");
        // A Basic header's base64 form is a secret too.
        let basic = |k: &str| match k {
            "MLFLOW_SRC_TRACKING_USERNAME" => Some("admin".to_string()),
            "MLFLOW_SRC_TRACKING_PASSWORD" => Some("password1234".to_string()),
            _ => None,
        };
        let s = secrets(&basic);
        assert_eq!(
            scrub_text("echo: Basic YWRtaW46cGFzc3dvcmQxMjM0 / password1234", &s),
            "echo: Basic *** / ***"
        );
    }
}
