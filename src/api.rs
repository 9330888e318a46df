//! The request, report and error types shared by the three entry points (WIT export, command
//! line, HTTP function). Each entry point only translates its own wire format to and from these.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

mod migration;
mod verify;
pub use migration::*;
pub use verify::*;

/// Default upper bound on the artifact files in flight at once. The number in flight adapts
/// (`limits::AdaptiveLimit`, from 8); 32 lets it cover a 50-100 ms link (at 50 ms a file of
/// a few KiB is about 3 round trips: 32 in flight move 200 files a second) while each slot holds
/// at most a 1 MiB chunk, so a copy's buffers stay within 32 MiB (issue 21: peak RSS < 64 MiB).
pub const DEFAULT_CONCURRENCY: u32 = 32;
/// Upper bound on `concurrency`: beyond this the servers, not the copier, are the bottleneck.
pub const MAX_CONCURRENCY: u32 = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyRunRequest {
    pub run_id: String,
    pub experiment_name: String,
    pub src_mlflow_uri: String,
    pub dst_mlflow_uri: String,
    #[serde(default)]
    pub copy_children: bool,
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
}

pub(crate) fn default_concurrency() -> u32 {
    DEFAULT_CONCURRENCY
}

impl CopyRunRequest {
    /// Checks what can be checked without talking to a server.
    pub fn validate(&self) -> Result<(), CopyError> {
        require_non_empty("run_id", &self.run_id)?;
        require_non_empty("experiment_name", &self.experiment_name)?;
        require_non_empty("src_mlflow_uri", &self.src_mlflow_uri)?;
        require_non_empty("dst_mlflow_uri", &self.dst_mlflow_uri)?;
        if !self
            .run_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(CopyError::bad_input(format!(
                "run id {:?} is not a valid MLflow run id",
                self.run_id
            )));
        }
        validate_concurrency(self.concurrency)
    }
}

pub fn validate_concurrency(concurrency: u32) -> Result<(), CopyError> {
    if concurrency == 0 || concurrency > MAX_CONCURRENCY {
        return Err(CopyError::bad_input(format!(
            "concurrency must be between 1 and {MAX_CONCURRENCY}, got {concurrency}"
        )));
    }
    Ok(())
}

/// What a version copy and a model copy both name: the models, the registries and, for a
/// deep copy, the experiment.
pub(crate) fn validate_model_copy(
    [src_model, dst_model]: [&str; 2],
    [src_registry_uri, dst_registry_uri]: [&str; 2],
    dst_experiment_name: Option<&str>,
) -> Result<(), CopyError> {
    require_non_empty("src_model", src_model)?;
    require_non_empty("dst_model", dst_model)?;
    require_non_empty("src_registry_uri", src_registry_uri)?;
    require_non_empty("dst_registry_uri", dst_registry_uri)?;
    match dst_experiment_name {
        Some(exp) => require_non_empty("dst_experiment_name", exp),
        None => Ok(()),
    }
}

pub(crate) fn require_non_empty(field: &str, value: &str) -> Result<(), CopyError> {
    if value.trim().is_empty() {
        return Err(CopyError::bad_input(format!("{field} must not be empty")));
    }
    Ok(())
}

/// A model version number, as registries number them.
pub(crate) fn require_version_number(field: &str, value: &str) -> Result<(), CopyError> {
    if value.parse::<u64>().is_err() {
        return Err(CopyError::bad_input(format!(
            "{field} must be a version number, got {value:?}"
        )));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyModelVersionRequest {
    pub src_model: String,
    pub src_version: String,
    pub dst_model: String,
    pub src_registry_uri: String,
    pub dst_registry_uri: String,
    /// Deep copy into this experiment; without it, a shallow copy.
    #[serde(default)]
    pub dst_experiment_name: Option<String>,
    #[serde(default)]
    pub copy_permissions: bool,
    #[serde(default)]
    pub copy_stages_and_aliases: bool,
    #[serde(default)]
    pub copy_lineage_tags: bool,
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
}

impl CopyModelVersionRequest {
    pub fn validate(&self) -> Result<(), CopyError> {
        require_non_empty("src_version", &self.src_version)?;
        validate_model_copy(
            [&self.src_model, &self.dst_model],
            [&self.src_registry_uri, &self.dst_registry_uri],
            self.dst_experiment_name.as_deref(),
        )?;
        require_version_number("src_version", &self.src_version)?;
        validate_concurrency(self.concurrency)
    }

    pub fn is_deep(&self) -> bool {
        self.dst_experiment_name.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CopyModelVersionReport {
    pub src_model: String,
    pub src_version: String,
    pub dst_model: String,
    pub dst_version: String,
    /// The run the new version points at: the copied run (deep) or the source's run (shallow).
    pub dst_run_id: Option<String>,
    /// The new version's `source`.
    pub dst_source: String,
    pub deep: bool,
    /// `created`, or `existing` when an earlier copy was found (nothing was written).
    pub outcome: Outcome,
    pub registered_model_created: bool,
    pub tags: u32,
    pub stage: Option<String>,
    pub aliases: Vec<String>,
    pub permissions: u32,
    /// The copy of the version's run (deep copies).
    pub run: Option<CopyRunReport>,
    pub elapsed_seconds: f64,
}

/// What happened to the destination run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A new run was created and completed.
    Created,
    /// An incomplete copy left by an earlier failed attempt was found and completed.
    Resumed,
    /// A complete copy already existed; nothing was written.
    Existing,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Resumed => "resumed",
            Outcome::Existing => "existing",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CopyRunReport {
    pub src_run_id: String,
    pub dst_run_id: String,
    pub dst_experiment_id: String,
    pub outcome: Outcome,
    pub params: u32,
    pub tags: u32,
    pub metric_points: u64,
    pub dataset_inputs: u32,
    pub logged_models: u32,
    pub artifact_files: u64,
    pub artifact_bytes: u64,
    pub artifact_files_skipped: u64,
    /// MLflow 3 traces of the run and its logged models written by this invocation.
    pub traces: u32,
    /// Assessments (feedback, expectations) on those traces.
    pub assessments: u32,
    /// Linked prompt versions created or found (identical) at the destination.
    pub prompts: u32,
    /// Source trace id to its copy's, for the traces whose copy got a new id (a copy on the
    /// same server, or an id taken at the destination); the others kept theirs.
    #[serde(default)]
    pub new_trace_ids: BTreeMap<String, String>,
    pub child_run_ids: Vec<String>,
    pub elapsed_seconds: f64,
}

/// The kinds of failure a caller can tell apart (mirrors the WIT `copy-error` variant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    BadInput,
    NotFound,
    Unauthorized,
    Conflict,
    Upstream,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadInput => "bad_input",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Upstream => "upstream",
        }
    }
}

/// A classified failure with a one-line message. Used as the root cause inside `anyhow` chains
/// so that context added on the way up keeps the classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyError {
    pub kind: ErrorKind,
    pub message: String,
    /// The server's own error code (e.g. `RESOURCE_ALREADY_EXISTS`) when a server answered,
    /// or [`MAYBE_CREATED`].
    pub code: Option<String>,
}

/// The `code` of a failed create that the server may nevertheless have carried out: its answer
/// was lost, or was a 500, 502 or 504 (MLflow's client retries those, and a workspace may have
/// created the run before failing). Look for the object before sending the create again.
pub const MAYBE_CREATED: &str = "MLFLOW_COPY_MAYBE_CREATED";

impl CopyError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        CopyError {
            kind,
            message: message.into(),
            code: None,
        }
    }
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadInput, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }
    pub fn upstream(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Upstream, message)
    }

    /// The error, marked as that of a create the server may have carried out.
    pub fn maybe_created(self) -> CopyError {
        CopyError {
            code: Some(MAYBE_CREATED.to_string()),
            ..self
        }
    }

    /// Whether a server answered with this MLflow error code, or with the short code newer
    /// Databricks services (Unity Catalog) answer for it, which MLflow's client takes alike:
    /// `NOT_FOUND` for `RESOURCE_DOES_NOT_EXIST` (`mlflow/tracking/client.py`),
    /// `ALREADY_EXISTS` for `RESOURCE_ALREADY_EXISTS` (`mlflow/tracking/_model_registry/fluent.py`).
    pub fn has_code(&self, code: &str) -> bool {
        let Some(own) = self.code.as_deref() else {
            return false;
        };
        let long = match own {
            "NOT_FOUND" => "RESOURCE_DOES_NOT_EXIST",
            "ALREADY_EXISTS" => "RESOURCE_ALREADY_EXISTS",
            other => other,
        };
        own == code || long == code
    }

    /// The kind a server's HTTP error status stands for.
    pub fn kind_for_status(status: u16) -> ErrorKind {
        match status {
            401 | 403 => ErrorKind::Unauthorized,
            404 => ErrorKind::NotFound,
            409 => ErrorKind::Conflict,
            400 | 413 | 422 => ErrorKind::BadInput,
            _ => ErrorKind::Upstream,
        }
    }

    /// Flattens an error chain into one classified error. The kind comes from the innermost
    /// `CopyError`; the message joins every context layer ("copying run X: listing ...: HTTP 503").
    pub fn from_chain(err: &anyhow::Error) -> CopyError {
        let kind = err
            .chain()
            .filter_map(|cause| cause.downcast_ref::<CopyError>())
            .last()
            .map(|e| e.kind)
            .unwrap_or(ErrorKind::Upstream);
        CopyError {
            kind,
            message: format!("{err:#}"),
            code: None,
        }
    }
}

impl fmt::Display for CopyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CopyError {}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    fn request() -> CopyRunRequest {
        CopyRunRequest {
            run_id: "0123abcd".into(),
            experiment_name: "exp".into(),
            src_mlflow_uri: "http://127.0.0.1:5000".into(),
            dst_mlflow_uri: "http://127.0.0.1:5001".into(),
            copy_children: false,
            concurrency: 8,
        }
    }

    #[test]
    fn short_databricks_codes_mean_the_long_ones() {
        let with = |code: &str| CopyError {
            code: Some(code.into()),
            ..CopyError::upstream("x")
        };
        assert!(with("NOT_FOUND").has_code("RESOURCE_DOES_NOT_EXIST"));
        assert!(with("NOT_FOUND").has_code("NOT_FOUND"));
        assert!(with("ALREADY_EXISTS").has_code("RESOURCE_ALREADY_EXISTS"));
        assert!(with("RESOURCE_DOES_NOT_EXIST").has_code("RESOURCE_DOES_NOT_EXIST"));
        // Not the other way round: a long code is not the short one.
        assert!(!with("RESOURCE_DOES_NOT_EXIST").has_code("NOT_FOUND"));
        assert!(!with("ENDPOINT_NOT_FOUND").has_code("RESOURCE_DOES_NOT_EXIST"));
        assert!(!CopyError::upstream("x").has_code("NOT_FOUND"));
    }

    #[test]
    fn validation_names_the_bad_field() {
        let mut r = request();
        r.experiment_name = " ".into();
        let err = r.validate().unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadInput);
        assert!(err.message.contains("experiment_name"), "{}", err.message);

        let mut r = request();
        r.run_id = "abc/../x".into();
        assert!(r
            .validate()
            .unwrap_err()
            .message
            .contains("not a valid MLflow run id"));

        let mut r = request();
        r.concurrency = 0;
        assert!(r.validate().unwrap_err().message.contains("concurrency"));
        assert!(request().validate().is_ok());
    }

    #[test]
    fn model_version_requests_validate_version_numbers() {
        let mut r: CopyModelVersionRequest = serde_json::from_str(
            r#"{"src_model":"m","src_version":"3","dst_model":"d","src_registry_uri":"s","dst_registry_uri":"d"}"#,
        )
        .unwrap();
        assert!(r.validate().is_ok() && !r.is_deep() && !r.copy_lineage_tags);
        r.src_version = "latest".into();
        assert!(r.validate().unwrap_err().message.contains("src_version"));
        r.src_version = "1".into();
        r.dst_experiment_name = Some("".into());
        assert!(r
            .validate()
            .unwrap_err()
            .message
            .contains("dst_experiment_name"));
    }

    #[test]
    fn json_request_rejects_unknown_fields_and_fills_defaults() {
        let ok: CopyRunRequest = serde_json::from_str(
            r#"{"run_id":"a","experiment_name":"e","src_mlflow_uri":"s","dst_mlflow_uri":"d"}"#,
        )
        .unwrap();
        assert_eq!(ok.concurrency, DEFAULT_CONCURRENCY);
        assert!(!ok.copy_children);
        let bad = serde_json::from_str::<CopyRunRequest>(
            r#"{"run_id":"a","experiment_name":"e","src_mlflow_uri":"s","dst_mlflow_uri":"d","x":1}"#,
        );
        assert!(bad.unwrap_err().to_string().contains("unknown field `x`"));
    }

    #[test]
    fn classification_survives_context_and_message_keeps_every_layer() {
        let err = anyhow::Error::new(CopyError::not_found("run r1 not found on http://h"))
            .context("reading source run");
        let flat = CopyError::from_chain(&err);
        assert_eq!(flat.kind, ErrorKind::NotFound);
        assert_eq!(
            flat.message,
            "reading source run: run r1 not found on http://h"
        );

        let plain: anyhow::Result<()> = Err(anyhow::anyhow!("socket closed")).context("listing");
        assert_eq!(
            CopyError::from_chain(&plain.unwrap_err()).kind,
            ErrorKind::Upstream
        );
    }
}
