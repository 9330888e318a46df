//! The three ways in — WIT export, command line, HTTP function — are thin shells over
//! `execute_*`, which they share: same request, same report, same errors.

pub mod cli;
#[cfg(target_arch = "wasm32")]
mod component;
pub mod http_api;
#[cfg(target_arch = "wasm32")]
mod http_handler;

use crate::api::{
    CopyError, CopyModelVersionReport, CopyModelVersionRequest, CopyRunReport, CopyRunRequest,
};
use crate::engine::progress::Progress;
use crate::engine::{copy_model_version, copy_run, Copier};
use crate::transport::retry::RetryPolicy;
use crate::transport::{Http, Transport};
use std::rc::Rc;

/// How an entry point reaches the outside world: the host's HTTP and environment.
pub struct Host<'a> {
    pub http: Box<dyn Http>,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

#[cfg(target_arch = "wasm32")]
pub fn wasi_host() -> Host<'static> {
    fn env(name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    Host {
        http: Box::new(crate::transport::wasi_http::WasiHttp),
        env: &env,
    }
}

pub fn execute_copy_run(
    host: Host,
    request: &CopyRunRequest,
    progress: &mut dyn Progress,
) -> Result<CopyRunReport, CopyError> {
    let ends = (
        request.src_mlflow_uri.as_str(),
        request.dst_mlflow_uri.as_str(),
    );
    execute(
        host,
        ends,
        request.concurrency,
        request.validate(),
        progress,
        |copier| copy_run::copy_run(copier, request),
    )
}

pub fn execute_copy_model_version(
    host: Host,
    request: &CopyModelVersionRequest,
    progress: &mut dyn Progress,
) -> Result<CopyModelVersionReport, CopyError> {
    let ends = (
        request.src_registry_uri.as_str(),
        request.dst_registry_uri.as_str(),
    );
    execute(
        host,
        ends,
        request.concurrency,
        request.validate(),
        progress,
        |copier| copy_model_version::copy_model_version(copier, request),
    )
}

/// Validates, connects both ends, runs `copy`, and flattens any failure into one classified,
/// secret-free error.
fn execute<R>(
    host: Host,
    (src_uri, dst_uri): (&str, &str),
    concurrency: u32,
    validated: Result<(), CopyError>,
    progress: &mut dyn Progress,
    copy: impl FnOnce(&mut Copier) -> anyhow::Result<R>,
) -> Result<R, CopyError> {
    let secrets = secrets(host.env);
    let run = || -> Result<R, CopyError> {
        validated?;
        let transport = Rc::new(Transport::new(host.http, RetryPolicy::default()));
        let mut copier = Copier::new(src_uri, dst_uri, transport, host.env, progress, concurrency)?;
        copy(&mut copier).map_err(|e| CopyError::from_chain(&e))
    };
    run().map_err(|e| scrub(e, &secrets))
}

/// Every credential value in the environment, so that no message can ever show one, whatever
/// path it took (a server echoing a header back, say).
fn secrets(env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let mut names = Vec::new();
    for side in ["", "SRC_", "DST_"] {
        names.push(format!("MLFLOW_{side}TRACKING_TOKEN"));
        names.push(format!("MLFLOW_{side}TRACKING_PASSWORD"));
    }
    names.push("MLFLOW_COPY_API_TOKEN".into());
    names
        .iter()
        .filter_map(|n| env(n))
        .filter(|v| v.len() >= 4)
        .collect()
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
    }
}
