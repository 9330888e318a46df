//! Model registry API calls (OSS registry; the Databricks workspace registry speaks the same,
//! and Unity Catalog the same under its own prefix).

use super::rest::{all_pages, filter_literal, MlflowRest};
use crate::api::CopyError;
use crate::stores::model::{Grant, KeyValue, ModelVersion, NewVersion, RegisteredModel};
use crate::stores::Registry;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct RegisteredModelEnvelope {
    registered_model: RegisteredModel,
}

#[derive(Deserialize)]
struct VersionEnvelope {
    model_version: ModelVersion,
}

/// The registry calls of an MLflow-shaped registry API under `prefix`: `/api/2.0/mlflow` on an
/// MLflow server or a Databricks workspace, `/api/2.0/mlflow/unity-catalog` for Unity Catalog.
pub struct RegistryApi<'a> {
    pub rest: &'a MlflowRest,
    pub prefix: &'static str,
}

/// An MLflow server's (or a workspace's) registry API.
pub const MLFLOW_REGISTRY: &str = "/api/2.0/mlflow";

impl RegistryApi<'_> {
    fn path(&self, call: &str) -> String {
        format!("{}/{call}", self.prefix)
    }

    pub fn registered_model(&self, name: &str) -> Result<Option<RegisteredModel>, CopyError> {
        let path = self.path("registered-models/get");
        match self
            .rest
            .get::<RegisteredModelEnvelope>(&path, &[("name", name)])
        {
            Ok(e) => Ok(Some(e.registered_model)),
            Err(e) if e.has_code("RESOURCE_DOES_NOT_EXIST") => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn create_registered_model(
        &self,
        name: &str,
        description: Option<&str>,
        tags: &[KeyValue],
    ) -> Result<(), CopyError> {
        let mut body = json!({ "name": name, "tags": tags });
        if let Some(d) = description.filter(|d| !d.is_empty()) {
            body["description"] = json!(d);
        }
        self.rest
            .create::<Value>(&self.path("registered-models/create"), &body)
            .map(drop)
    }

    pub fn model_version(&self, name: &str, version: &str) -> Result<ModelVersion, CopyError> {
        let query = [("name", name), ("version", version)];
        self.rest
            .get::<VersionEnvelope>(&self.path("model-versions/get"), &query)
            .map(|e| e.model_version)
    }

    pub fn create_model_version(
        &self,
        name: &str,
        new: &NewVersion,
    ) -> Result<ModelVersion, CopyError> {
        let mut body = json!({ "name": name, "source": new.source, "tags": new.tags });
        if let Some(run) = &new.run_id {
            body["run_id"] = json!(run);
        }
        if let Some(model) = &new.model_id {
            body["model_id"] = json!(model);
        }
        if let Some(d) = new.description.as_deref().filter(|d| !d.is_empty()) {
            body["description"] = json!(d);
        }
        self.rest
            .create::<VersionEnvelope>(&self.path("model-versions/create"), &body)
            .map(|e| e.model_version)
    }

    /// Every version of the model (a filter on the name alone: all Unity Catalog accepts).
    pub fn versions(&self, name: &str) -> Result<Vec<ModelVersion>, CopyError> {
        self.versions_where(&format!("name={}", filter_literal(name)))
    }

    /// Every version matching a search filter.
    pub fn versions_where(&self, filter: &str) -> Result<Vec<ModelVersion>, CopyError> {
        let path = self.path("model-versions/search");
        all_pages(|token| {
            let mut query = vec![("filter", filter), ("max_results", "1000")];
            query.extend(token.map(|t| ("page_token", t)));
            self.rest.get(&path, &query)
        })
    }

    pub fn set_version_tag(
        &self,
        name: &str,
        version: &str,
        key: &str,
        value: &str,
    ) -> Result<(), CopyError> {
        let body = json!({ "name": name, "version": version, "key": key, "value": value });
        self.rest
            .post::<Value>(&self.path("model-versions/set-tag"), &body)
            .map(drop)
    }

    pub fn transition_stage(
        &self,
        name: &str,
        version: &str,
        stage: &str,
    ) -> Result<(), CopyError> {
        let body = json!({ "name": name, "version": version, "stage": stage, "archive_existing_versions": false });
        self.rest
            .post::<Value>(&self.path("model-versions/transition-stage"), &body)
            .map(drop)
    }

    pub fn set_alias(&self, name: &str, alias: &str, version: &str) -> Result<(), CopyError> {
        let body = json!({ "name": name, "alias": alias, "version": version });
        self.rest
            .post::<Value>(&self.path("registered-models/alias"), &body)
            .map(drop)
    }
}

impl MlflowRest {
    fn registry_api(&self) -> RegistryApi<'_> {
        RegistryApi {
            rest: self,
            prefix: MLFLOW_REGISTRY,
        }
    }
}

impl Registry for MlflowRest {
    fn server(&self) -> String {
        self.base_display()
    }

    fn prompt_versions(&self, name: &str) -> Result<Option<Vec<ModelVersion>>, CopyError> {
        if !self.flavor().registers_prompts() {
            return Ok(None);
        }
        // Searches leave prompts out unless the filter names the prompt tag (MLflow
        // `store/model_registry/sqlalchemy_store.py:_update_query_to_exclude_prompts`).
        let filter = format!(
            "name={} AND tags.`mlflow.prompt.is_prompt` = 'true'",
            filter_literal(name)
        );
        self.registry_api().versions_where(&filter).map(Some)
    }

    /// MLflow's own rule: no `/` or `:`, and nothing a path normalisation would change.
    fn check_model_name(&self, name: &str) -> Result<(), CopyError> {
        let bad = name.trim().is_empty()
            || name.contains(['/', ':'])
            || name == "."
            || name.starts_with("..");
        if bad {
            return Err(CopyError::bad_input(format!(
                "{name:?} is not a valid registered model name on {} (it must not be empty, \
                 contain '/' or ':', or be '.' or start with '..')",
                self.base_display()
            )));
        }
        Ok(())
    }

    fn registered_model(&self, name: &str) -> Result<Option<RegisteredModel>, CopyError> {
        self.registry_api().registered_model(name)
    }

    fn create_registered_model(
        &self,
        name: &str,
        description: Option<&str>,
        tags: &[KeyValue],
    ) -> Result<(), CopyError> {
        self.registry_api()
            .create_registered_model(name, description, tags)
    }

    fn model_version(&self, name: &str, version: &str) -> Result<ModelVersion, CopyError> {
        self.registry_api().model_version(name, version)
    }

    fn create_model_version(
        &self,
        name: &str,
        new: &NewVersion,
    ) -> Result<ModelVersion, CopyError> {
        self.registry_api().create_model_version(name, new)
    }

    fn versions(&self, name: &str) -> Result<Vec<ModelVersion>, CopyError> {
        self.registry_api().versions(name)
    }

    fn set_version_tag(
        &self,
        name: &str,
        version: &str,
        key: &str,
        value: &str,
    ) -> Result<(), CopyError> {
        self.registry_api()
            .set_version_tag(name, version, key, value)
    }

    fn transition_stage(&self, name: &str, version: &str, stage: &str) -> Result<(), CopyError> {
        self.registry_api().transition_stage(name, version, stage)
    }

    fn set_alias(&self, name: &str, alias: &str, version: &str) -> Result<(), CopyError> {
        self.registry_api().set_alias(name, alias, version)
    }

    fn permission_scheme(&self) -> &'static str {
        self.flavor().permission_scheme()
    }

    fn accepts_models_uri(&self) -> bool {
        self.flavor().accepts_models_uri()
    }

    fn supports_aliases(&self) -> bool {
        self.flavor().supports_aliases()
    }

    fn model_grants(&self, name: &str) -> Result<Option<Vec<Grant>>, CopyError> {
        self.flavor().model_grants(self, name)
    }

    fn grant_model_permission(&self, name: &str, grant: &Grant) -> Result<(), CopyError> {
        self.flavor().grant_model_permission(self, name, grant)
    }
}
