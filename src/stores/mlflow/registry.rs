//! Model registry API calls (OSS registry; the Databricks workspace registry speaks the same).

use super::rest::{all_pages, MlflowRest};
use super::types::KeyValue;
use crate::api::CopyError;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RegisteredModel {
    pub name: String,
    pub description: Option<String>,
    pub tags: Vec<KeyValue>,
    pub aliases: Vec<RegisteredModelAlias>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RegisteredModelAlias {
    pub alias: String,
    pub version: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ModelVersion {
    pub name: String,
    pub version: String,
    pub source: String,
    pub run_id: Option<String>,
    pub run_link: Option<String>,
    pub model_id: Option<String>,
    pub status: Option<String>,
    pub status_message: Option<String>,
    pub description: Option<String>,
    pub current_stage: Option<String>,
    pub tags: Vec<KeyValue>,
    pub aliases: Vec<String>,
}

impl ModelVersion {
    pub fn is_ready(&self) -> bool {
        self.status.as_deref().is_none_or(|s| s == "READY")
    }
}

/// What a new model version is created from.
#[derive(Debug, Clone, Default)]
pub struct NewVersion {
    pub source: String,
    pub run_id: Option<String>,
    pub model_id: Option<String>,
    pub description: Option<String>,
    pub tags: Vec<KeyValue>,
}

#[derive(Deserialize)]
struct RegisteredModelEnvelope {
    registered_model: RegisteredModel,
}

#[derive(Deserialize)]
struct VersionEnvelope {
    model_version: ModelVersion,
}

impl MlflowRest {
    pub fn registered_model(&self, name: &str) -> Result<Option<RegisteredModel>, CopyError> {
        match self.get::<RegisteredModelEnvelope>(
            "/api/2.0/mlflow/registered-models/get",
            &[("name", name)],
        ) {
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
        self.create::<Value>("/api/2.0/mlflow/registered-models/create", &body)
            .map(drop)
    }

    pub fn model_version(&self, name: &str, version: &str) -> Result<ModelVersion, CopyError> {
        let query = [("name", name), ("version", version)];
        self.get::<VersionEnvelope>("/api/2.0/mlflow/model-versions/get", &query)
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
        self.create::<VersionEnvelope>("/api/2.0/mlflow/model-versions/create", &body)
            .map(|e| e.model_version)
    }

    /// All versions matching a registry search filter.
    pub fn search_model_versions(&self, filter: &str) -> Result<Vec<ModelVersion>, CopyError> {
        all_pages(|token| {
            let mut query = vec![("filter", filter), ("max_results", "1000")];
            query.extend(token.map(|t| ("page_token", t)));
            self.get("/api/2.0/mlflow/model-versions/search", &query)
        })
    }

    pub fn set_model_version_tag(
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

    pub fn transition_stage(
        &self,
        name: &str,
        version: &str,
        stage: &str,
    ) -> Result<(), CopyError> {
        let body = json!({ "name": name, "version": version, "stage": stage, "archive_existing_versions": false });
        self.post::<Value>("/api/2.0/mlflow/model-versions/transition-stage", &body)
            .map(drop)
    }

    pub fn set_alias(&self, name: &str, alias: &str, version: &str) -> Result<(), CopyError> {
        let body = json!({ "name": name, "alias": alias, "version": version });
        self.post::<Value>("/api/2.0/mlflow/registered-models/alias", &body)
            .map(drop)
    }
}
