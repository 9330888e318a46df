//! A Databricks workspace's tracking server and registry. They speak the MLflow REST API, so
//! they are `MlflowRest` with the workspace's `Flavor`: what differs is here, and only that:
//!
//! - experiment names are absolute workspace paths, whose parent folders are created;
//! - tags the workspace sets itself or refuses are never written (`SKIPPED_TAGS`);
//! - registered-model permissions are the workspace's access-control lists;
//! - a version's source is the logged model's artifact location, not `models:/<id>`.

use super::artifacts::ArtifactAccess;
use super::workspace_traces::SpanFiles;
use crate::api::CopyError;
use crate::stores::mlflow::{Flavor, MlflowRest, TraceStorage};
use crate::stores::model::*;
use crate::stores::Artifacts;
use serde::Deserialize;
use serde_json::{json, Value};

/// Tags a workspace manages itself or refuses to have set (as mlflow-export-import drops
/// them): `mlflow.user` is the token's user; the source user is kept in the lineage tag
/// `mlflow_exim.run_info.user_id`.
pub const SKIPPED_TAGS: [&str; 5] = [
    "mlflow.user",
    "mlflow.log-model.history",
    "mlflow.rootRunId",
    "mlflow.experiment.sourceType",
    "mlflow.experiment.sourceId",
];

/// The workspace's differences from an open-source server.
pub struct WorkspaceFlavor {
    pub span_files: SpanFiles,
}

fn writable(tags: &[KeyValue]) -> Vec<KeyValue> {
    tags.iter()
        .filter(|t| !SKIPPED_TAGS.contains(&t.key.as_str()))
        .cloned()
        .collect()
}

impl Flavor for WorkspaceFlavor {
    fn check_experiment_name(&self, rest: &MlflowRest, name: &str) -> Result<(), CopyError> {
        if !name.starts_with('/') || name.ends_with('/') || name.contains("//") {
            return Err(CopyError::bad_input(format!(
                "experiment name {name:?}: on a Databricks workspace ({}) experiments are \
                 workspace paths such as /Users/<user>/<name> or /Shared/<name>",
                rest.base_display()
            )));
        }
        Ok(())
    }

    /// A workspace refuses an experiment whose parent folder is missing.
    fn before_create_experiment(&self, rest: &MlflowRest, name: &str) -> Result<(), CopyError> {
        if let Some((parent, _)) = name.rsplit_once('/').filter(|(p, _)| !p.is_empty()) {
            rest.post::<Value>("/api/2.0/workspace/mkdirs", &json!({ "path": parent }))?;
        }
        Ok(())
    }

    fn writable_tags(&self, tags: &[KeyValue]) -> Vec<KeyValue> {
        writable(tags)
    }

    fn trace_storage(&self) -> &dyn TraceStorage {
        &self.span_files
    }

    /// A workspace's prompts live in Unity Catalog, under routes of their own.
    fn registers_prompts(&self) -> bool {
        false
    }

    /// The workspace sets the user from the credentials.
    fn takes_run_user(&self) -> bool {
        false
    }

    fn permission_scheme(&self) -> &'static str {
        "databricks-acl"
    }

    /// "not supported by WSMR" (`mlflow/tracking/client.py`): a version's source is the logged
    /// model's artifact location.
    fn accepts_models_uri(&self) -> bool {
        false
    }

    fn supports_aliases(&self) -> bool {
        false
    }

    fn model_grants(&self, rest: &MlflowRest, name: &str) -> Result<Option<Vec<Grant>>, CopyError> {
        model_acl(rest, name)
    }

    fn grant_model_permission(
        &self,
        rest: &MlflowRest,
        name: &str,
        grant: &Grant,
    ) -> Result<(), CopyError> {
        grant_on_model(rest, name, grant)
    }
}

#[derive(Deserialize)]
struct DatabricksModel {
    registered_model_databricks: DatabricksModelInfo,
}

#[derive(Deserialize)]
struct DatabricksModelInfo {
    id: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AccessControl {
    access_control_list: Vec<AccessEntry>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AccessEntry {
    user_name: Option<String>,
    group_name: Option<String>,
    service_principal_name: Option<String>,
    all_permissions: Vec<PermissionLevel>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PermissionLevel {
    permission_level: String,
    inherited: bool,
}

impl AccessEntry {
    /// `kind:name`, the principal as a `Grant` carries it.
    fn principal(&self) -> Option<String> {
        let (kind, name) = [
            ("user_name", &self.user_name),
            ("group_name", &self.group_name),
            ("service_principal_name", &self.service_principal_name),
        ]
        .into_iter()
        .find_map(|(kind, name)| Some((kind, name.as_ref()?)))?;
        Some(format!("{kind}:{name}"))
    }
}

/// The workspace's id of a registered model (its permissions are keyed on it).
fn model_id(rest: &MlflowRest, name: &str) -> Result<String, CopyError> {
    let found: DatabricksModel = rest.get(
        "/api/2.0/mlflow/databricks/registered-models/get",
        &[("name", name)],
    )?;
    Ok(found.registered_model_databricks.id)
}

/// The model's own (not inherited) access-control entries.
fn model_acl(rest: &MlflowRest, name: &str) -> Result<Option<Vec<Grant>>, CopyError> {
    let id = model_id(rest, name)?;
    let acl: AccessControl =
        rest.get(&format!("/api/2.0/permissions/registered-models/{id}"), &[])?;
    let grants = acl
        .access_control_list
        .iter()
        .filter_map(|entry| Some((entry.principal()?, entry)))
        .flat_map(|(principal, entry)| {
            entry
                .all_permissions
                .iter()
                .filter(|p| !p.inherited)
                .map(move |p| Grant {
                    principal: principal.clone(),
                    permission: p.permission_level.clone(),
                })
        })
        .collect();
    Ok(Some(grants))
}

fn grant_on_model(rest: &MlflowRest, name: &str, grant: &Grant) -> Result<(), CopyError> {
    let id = model_id(rest, name)?;
    let (kind, principal) = grant
        .principal
        .split_once(':')
        .unwrap_or(("user_name", grant.principal.as_str()));
    let body = json!({ "access_control_list": [
        { kind: principal, "permission_level": grant.permission }
    ]});
    rest.patch::<Value>(
        &format!("/api/2.0/permissions/registered-models/{id}"),
        &body,
    )
    .map(drop)
}

/// A workspace's run and logged-model artifacts (see `artifacts`).
pub struct WorkspaceArtifacts {
    pub(super) rest: MlflowRest,
    pub(super) files: ArtifactAccess,
}

impl Artifacts for WorkspaceArtifacts {
    fn list(&self, root: &ArtifactRoot) -> Result<Vec<FileEntry>, CopyError> {
        self.files.list(&self.rest, root)
    }

    fn downloads(
        &self,
        root: &ArtifactRoot,
        paths: &[&str],
    ) -> Result<Vec<crate::transport::Download>, CopyError> {
        self.files.downloads(&self.rest, root, paths)
    }

    fn uploads(
        &self,
        root: &ArtifactRoot,
        files: &[&FileEntry],
    ) -> Result<Vec<crate::transport::Upload>, CopyError> {
        self.files.uploads(&self.rest, root, files)
    }

    fn read_small(&self, root: &ArtifactRoot, path: &str) -> Result<Vec<u8>, CopyError> {
        self.files.read_small(&self.rest, root, path)
    }

    fn write_small(&self, root: &ArtifactRoot, path: &str, body: Vec<u8>) -> Result<(), CopyError> {
        self.files.write_small(&self.rest, root, path, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_managed_tags_are_not_written() {
        let tags = vec![
            KeyValue::new("mlflow.user", "alice"),
            KeyValue::new("mlflow.rootRunId", "r"),
            KeyValue::new("mlflow.runName", "x"),
            KeyValue::new("team", "ml"),
        ];
        let kept: Vec<String> = writable(&tags).into_iter().map(|t| t.key).collect();
        assert_eq!(kept, vec!["mlflow.runName", "team"]);
    }

    #[test]
    fn principals_keep_their_kind() {
        let entry = AccessEntry {
            group_name: Some("ml".into()),
            ..AccessEntry::default()
        };
        assert_eq!(entry.principal().as_deref(), Some("group_name:ml"));
        assert_eq!(AccessEntry::default().principal(), None);
    }
}
