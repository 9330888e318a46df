//! Model registry API calls (OSS registry; the Databricks workspace registry speaks the same).

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

impl Registry for MlflowRest {
    fn server(&self) -> String {
        self.base_display()
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
        match self.get::<RegisteredModelEnvelope>(
            "/api/2.0/mlflow/registered-models/get",
            &[("name", name)],
        ) {
            Ok(e) => Ok(Some(e.registered_model)),
            Err(e) if e.has_code("RESOURCE_DOES_NOT_EXIST") => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn create_registered_model(
        &self,
        name: &str,
        description: Option<&str>,
        tags: &[KeyValue],
    ) -> Result<(), CopyError> {
        let mut body = json!({ "name": name, "tags": tags });
        if let Some(d) = description.filter(|d| !d.is_empty()) {
            body["description"] = json!(d);
        }
        self.create::<Value>("/api/2.0/mlflow/registered-models/create", &body)
            .map(drop)
    }

    fn model_version(&self, name: &str, version: &str) -> Result<ModelVersion, CopyError> {
        let query = [("name", name), ("version", version)];
        self.get::<VersionEnvelope>("/api/2.0/mlflow/model-versions/get", &query)
            .map(|e| e.model_version)
    }

    fn create_model_version(
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
        self.create::<VersionEnvelope>("/api/2.0/mlflow/model-versions/create", &body)
            .map(|e| e.model_version)
    }

    fn versions(&self, name: &str) -> Result<Vec<ModelVersion>, CopyError> {
        let filter = format!("name = {}", filter_literal(name));
        all_pages(|token| {
            let mut query = vec![("filter", filter.as_str()), ("max_results", "1000")];
            query.extend(token.map(|t| ("page_token", t)));
            self.get("/api/2.0/mlflow/model-versions/search", &query)
        })
    }

    fn set_version_tag(
        &self,
        name: &str,
        version: &str,
        key: &str,
        value: &str,
    ) -> Result<(), CopyError> {
        let body = json!({ "name": name, "version": version, "key": key, "value": value });
        self.post::<Value>("/api/2.0/mlflow/model-versions/set-tag", &body)
            .map(drop)
    }

    fn transition_stage(&self, name: &str, version: &str, stage: &str) -> Result<(), CopyError> {
        let body = json!({ "name": name, "version": version, "stage": stage, "archive_existing_versions": false });
        self.post::<Value>("/api/2.0/mlflow/model-versions/transition-stage", &body)
            .map(drop)
    }

    fn set_alias(&self, name: &str, alias: &str, version: &str) -> Result<(), CopyError> {
        let body = json!({ "name": name, "alias": alias, "version": version });
        self.post::<Value>("/api/2.0/mlflow/registered-models/alias", &body)
            .map(drop)
    }

    fn model_grants(&self, name: &str) -> Result<Option<Vec<Grant>>, CopyError> {
        self.basic_auth_model_grants(name)
    }

    fn grant_model_permission(&self, name: &str, grant: &Grant) -> Result<(), CopyError> {
        self.basic_auth_grant(name, grant)
    }
}
