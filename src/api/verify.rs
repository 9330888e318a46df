//! verify-run: a copy compared with its source, field by field.

use super::{require_non_empty, CopyError};
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
