//! Tags that tie a copy to its source, named as mlflow-export-import names its lineage tags
//! (prefix `mlflow_exim.`), so that tools and queries that know one know the other.

/// The prefix of every lineage tag.
pub const PREFIX: &str = "mlflow_exim.";

/// Whether a tag is a lineage tag. A copy's lineage describes its immediate source only: the
/// source's own lineage tags (when it is itself a copy) are replaced, never carried over.
pub fn is_lineage(key: &str) -> bool {
    // `mlflow_exim_…`: the same tags where a registry refuses dots in keys (Unity Catalog).
    key.starts_with(PREFIX) || key.starts_with("mlflow_exim_")
}

/// On a copied run: the source run's id.
pub const SRC_RUN_ID: &str = "mlflow_exim.run_info.run_id";
/// On a copied run: the source run's experiment id.
pub const SRC_EXPERIMENT_ID: &str = "mlflow_exim.run_info.experiment_id";
/// On a copied run: the source run's user (a Databricks workspace sets `user_id` itself).
pub const SRC_USER_ID: &str = "mlflow_exim.run_info.user_id";
/// On a copied run: the source tracking URI, without credentials.
pub const SRC_TRACKING_URI: &str = "mlflow_exim.src_client.tracking_uri";
/// On a copied run while the copy is incomplete (removed as the last step of a copy). A run
/// with this tag is resumed, never reported as a finished copy.
pub const INCOMPLETE: &str = "mlflow_exim.copy_incomplete";
/// On a copied logged model: the source model's id (how a resumed copy finds it again).
pub const SRC_MODEL_ID: &str = "mlflow_exim.src_model.model_id";

/// Source-side tags a copy never carries over verbatim.
pub const PARENT_RUN_ID: &str = "mlflow.parentRunId";
/// Logged-model tag the destination registry maintains itself.
pub const MODEL_VERSIONS: &str = "mlflow.modelVersions";
/// Run tag (MLflow 2 models) holding JSON with the run's id inside.
pub const LOG_MODEL_HISTORY: &str = "mlflow.log-model.history";
