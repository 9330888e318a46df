//! verify-run: a copy compared with its source, field by field.

use super::{
    require_non_empty, require_version_number, CopyError, CopyExperimentRequest,
    CopyModelVersionRequest,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRunRequest {
    pub src_run_id: String,
    pub dst_run_id: String,
    pub src_mlflow_uri: String,
    pub dst_mlflow_uri: String,
}

impl VerifyRunRequest {
    pub fn validate(&self) -> Result<(), CopyError> {
        require_non_empty("src_run_id", &self.src_run_id)?;
        require_non_empty("dst_run_id", &self.dst_run_id)?;
        require_non_empty("src_mlflow_uri", &self.src_mlflow_uri)?;
        require_non_empty("dst_mlflow_uri", &self.dst_mlflow_uri)
    }
}

/// What was compared, and every difference found (none: the copy is faithful).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub src_run_id: String,
    pub dst_run_id: String,
    pub params: u32,
    pub tags: u32,
    pub metric_points: u64,
    pub dataset_inputs: u32,
    pub logged_models: u32,
    pub artifact_files: u64,
    pub artifact_bytes: u64,
    /// MLflow 3 traces of the run and its logged models, each compared with its copy.
    pub traces: u32,
    /// One line per difference, naming the field (at most `MAX_DIFFERENCES`).
    pub differences: Vec<String>,
}

/// Differences listed at most (a copy of the wrong run differs everywhere).
pub const MAX_DIFFERENCES: usize = 1000;

impl VerifyReport {
    /// A copy that differs from its source fails verification as a conflict.
    pub fn failure(&self) -> Option<CopyError> {
        let first = self.differences.first()?;
        Some(CopyError::conflict(format!(
            "run {} differs from its source {} ({} differences); first: {first}",
            self.dst_run_id,
            self.src_run_id,
            self.differences.len()
        )))
    }
}

/// verify-experiment: what copy-experiment copied with this request (the same selection of
/// runs) compared with its source: each run's copy as verify-run compares one, and the
/// experiment's description and tags. `dry_run`, `verify` and `concurrency` do not matter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VerifyExperimentRequest(pub CopyExperimentRequest);

impl VerifyExperimentRequest {
    pub fn validate(&self) -> Result<(), CopyError> {
        self.0.validate()
    }
}

/// An experiment's copy compared with its source: every selected run's copy, field by field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentVerifyReport {
    pub src_experiment_id: String,
    pub dst_experiment_id: String,
    /// Runs whose complete copy was found and compared.
    pub runs_compared: u32,
    /// Of those, the runs whose copy differs.
    pub runs_differing: u32,
    /// Selected source runs without a complete copy in the destination experiment.
    pub missing: Vec<String>,
    pub metric_points: u64,
    pub artifact_bytes: u64,
    /// One line per difference: `run <src> (copy <dst>): <field>: …`, or of the experiment
    /// itself (at most `MAX_DIFFERENCES`).
    pub differences: Vec<String>,
}

impl ExperimentVerifyReport {
    /// A missing or differing copy fails verification as a conflict.
    pub fn failure(&self) -> Option<CopyError> {
        let first = match self.missing.first() {
            Some(run) => format!("run {run} has no complete copy"),
            None => self.differences.first()?.clone(),
        };
        Some(CopyError::conflict(format!(
            "experiment {} differs from its source {}: {} runs missing, {} runs differ ({} differences); first: {first}",
            self.dst_experiment_id,
            self.src_experiment_id,
            self.missing.len(),
            self.runs_differing,
            self.differences.len()
        )))
    }
}

/// verify-model-version: a copied version compared with its source, as copy-model-version
/// (with the same flags) made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyModelVersionRequest {
    pub src_model: String,
    pub src_version: String,
    pub dst_model: String,
    pub src_registry_uri: String,
    pub dst_registry_uri: String,
    /// The copy; without it, the version of `dst_model` whose source points where the copy's
    /// would (as copy-model-version finds an earlier copy).
    #[serde(default)]
    pub dst_version: Option<String>,
    /// The copy was deep, into this experiment: its run is compared too.
    #[serde(default)]
    pub dst_experiment_name: Option<String>,
    /// The copy carries the source's stage and aliases.
    #[serde(default)]
    pub copy_stages_and_aliases: bool,
    /// The copy carries the lineage tags.
    #[serde(default)]
    pub copy_lineage_tags: bool,
}

impl VerifyModelVersionRequest {
    /// The verification of a copy just made as `dst_version`.
    pub fn of_copy(copied: &CopyModelVersionRequest, dst_version: &str) -> Self {
        VerifyModelVersionRequest {
            src_model: copied.src_model.clone(),
            src_version: copied.src_version.clone(),
            dst_model: copied.dst_model.clone(),
            src_registry_uri: copied.src_registry_uri.clone(),
            dst_registry_uri: copied.dst_registry_uri.clone(),
            dst_version: Some(dst_version.to_string()),
            dst_experiment_name: copied.dst_experiment_name.clone(),
            copy_stages_and_aliases: copied.copy_stages_and_aliases,
            copy_lineage_tags: copied.copy_lineage_tags,
        }
    }

    /// The copy whose result this verifies.
    pub fn as_copy(&self) -> CopyModelVersionRequest {
        CopyModelVersionRequest {
            src_model: self.src_model.clone(),
            src_version: self.src_version.clone(),
            dst_model: self.dst_model.clone(),
            src_registry_uri: self.src_registry_uri.clone(),
            dst_registry_uri: self.dst_registry_uri.clone(),
            dst_experiment_name: self.dst_experiment_name.clone(),
            copy_permissions: false,
            copy_stages_and_aliases: self.copy_stages_and_aliases,
            copy_lineage_tags: self.copy_lineage_tags,
            concurrency: super::DEFAULT_CONCURRENCY,
        }
    }

    pub fn validate(&self) -> Result<(), CopyError> {
        if let Some(version) = &self.dst_version {
            require_version_number("dst_version", version)?;
        }
        self.as_copy().validate()
    }
}

/// A copied version compared with its source: source, description, tags, status, stage and
/// aliases (when copied), and for a deep copy its run as verify-run compares it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersionVerifyReport {
    pub src_model: String,
    pub src_version: String,
    pub dst_model: String,
    pub dst_version: String,
    /// The deep copy's run compared with the source version's run.
    pub run: Option<VerifyReport>,
    /// One line per difference, naming the field; the run's prefixed `run: ` (at most
    /// `MAX_DIFFERENCES`).
    pub differences: Vec<String>,
}

impl ModelVersionVerifyReport {
    pub fn failure(&self) -> Option<CopyError> {
        let first = self.differences.first()?;
        Some(CopyError::conflict(format!(
            "version {}/{} differs from its source {}/{} ({} differences); first: {first}",
            self.dst_model,
            self.dst_version,
            self.src_model,
            self.src_version,
            self.differences.len()
        )))
    }
}
