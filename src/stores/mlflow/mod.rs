//! Client of an MLflow tracking server's REST API (open-source `mlflow server`; Databricks
//! speaks the same tracking API with other authentication and artifact storage).

pub mod artifacts;
pub mod permissions;
pub mod registry;
pub mod rest;
pub mod tracking;
pub mod types;

pub use artifacts::{ArtifactRoot, FileEntry, Owner};
pub use rest::MlflowRest;
