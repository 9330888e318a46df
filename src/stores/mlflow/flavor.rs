//! What a server of the MLflow REST API does differently from an open-source `mlflow server`,
//! where the engine's writes and the registry's extras are concerned. Each hook's default is
//! the open-source behaviour, so that another kind of server (a Databricks workspace:
//! `stores::databricks::workspace`) writes out only what differs, and the REST calls
//! themselves stay in one place.

use super::traces::{TraceStorage, TrackingStoreSpans};
use super::MlflowRest;
use crate::api::CopyError;
use crate::stores::model::{Grant, KeyValue};

pub trait Flavor {
    /// Whether the server would accept this experiment name: checked before a copy writes
    /// anything.
    fn check_experiment_name(&self, _rest: &MlflowRest, _name: &str) -> Result<(), CopyError> {
        Ok(())
    }

    /// Done before an experiment is created.
    fn before_create_experiment(&self, _rest: &MlflowRest, _name: &str) -> Result<(), CopyError> {
        Ok(())
    }

    /// Of these tags, the ones the server lets a client write.
    fn writable_tags(&self, tags: &[KeyValue]) -> Vec<KeyValue> {
        tags.to_vec()
    }

    /// Whether a run's user is taken from the create request (else from the credentials).
    fn takes_run_user(&self) -> bool {
        true
    }

    /// See `Registry::permission_scheme`.
    fn permission_scheme(&self) -> &'static str {
        "mlflow-basic-auth"
    }

    /// See `Registry::accepts_models_uri`.
    fn accepts_models_uri(&self) -> bool {
        true
    }

    /// Where the server keeps traces' spans: in its tracking store, as an open-source server.
    fn trace_storage(&self) -> &dyn TraceStorage {
        &TrackingStoreSpans
    }

    /// Whether prompts are registered models tagged as prompts (`Registry::prompts`).
    fn registers_prompts(&self) -> bool {
        true
    }

    /// See `Registry::supports_aliases`.
    fn supports_aliases(&self) -> bool {
        true
    }

    /// See `Registry::model_grants`: the basic-auth app's permissions.
    fn model_grants(&self, rest: &MlflowRest, name: &str) -> Result<Option<Vec<Grant>>, CopyError> {
        rest.basic_auth_model_grants(name)
    }

    /// See `Registry::grant_model_permission`.
    fn grant_model_permission(
        &self,
        rest: &MlflowRest,
        name: &str,
        grant: &Grant,
    ) -> Result<(), CopyError> {
        rest.basic_auth_grant(name, grant)
    }
}

/// An open-source `mlflow server`.
pub struct OpenSource;

impl Flavor for OpenSource {}
