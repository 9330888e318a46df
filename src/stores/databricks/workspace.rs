//! A Databricks workspace's tracking server and registry. They speak the MLflow REST API (the
//! MLflow client does most of the work); what differs is here:
//!
//! - experiment names are absolute workspace paths, whose parent folders are created;
//! - tags the workspace sets itself or refuses are never written (`SKIPPED_TAGS`);
//! - registered-model permissions are the workspace's access-control lists;
//! - a version's source is the logged model's artifact location, not `models:/<id>`.

use super::artifacts::ArtifactAccess;
use crate::api::CopyError;
use crate::stores::mlflow::MlflowRest;
use crate::stores::model::*;
use crate::stores::{Artifacts, Call, HistoryPage, Registry, Tracking};
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

pub struct DatabricksWorkspace {
    pub(super) rest: MlflowRest,
    pub(super) files: ArtifactAccess,
}

fn writable(tags: &[KeyValue]) -> Vec<KeyValue> {
    tags.iter()
        .filter(|t| !SKIPPED_TAGS.contains(&t.key.as_str()))
        .cloned()
        .collect()
}

impl Tracking for DatabricksWorkspace {
    fn server(&self) -> String {
        self.rest.base_display()
    }

    fn check_experiment_name(&self, name: &str) -> Result<(), CopyError> {
        if !name.starts_with('/') || name.ends_with('/') || name.contains("//") {
            return Err(CopyError::bad_input(format!(
                "experiment name {name:?}: on a Databricks workspace ({}) experiments are \
                 workspace paths such as /Users/<user>/<name> or /Shared/<name>",
                self.rest.base_display()
            )));
        }
        Ok(())
    }

    fn get_run(&self, run_id: &str) -> Result<Run, CopyError> {
        self.rest.get_run(run_id)
    }

    fn runs_with_tags(
        &self,
        experiment_id: &str,
        tags: &[(&str, &str)],
    ) -> Result<Vec<Run>, CopyError> {
        self.rest.runs_with_tags(experiment_id, tags)
    }

    fn create_run(&self, experiment_id: &str, run: &NewRun) -> Result<RunInfo, CopyError> {
        let run = NewRun {
            // The workspace sets the user from the credentials.
            user_id: None,
            tags: writable(&run.tags),
            ..run.clone()
        };
        self.rest.create_run(experiment_id, &run)
    }

    fn update_run(
        &self,
        run_id: &str,
        status: &str,
        end_time: Option<i64>,
    ) -> Result<(), CopyError> {
        self.rest.update_run(run_id, status, end_time)
    }

    fn delete_tag(&self, run_id: &str, key: &str) -> Result<(), CopyError> {
        self.rest.delete_tag(run_id, key)
    }

    fn delete_run(&self, run_id: &str) -> Result<(), CopyError> {
        self.rest.delete_run(run_id)
    }

    // The metric pipeline's requests, as on an MLflow server: paged, sent along with the files.
    fn history_page_call(
        &self,
        run_id: &str,
        key: &str,
        token: Option<&str>,
    ) -> Call<'_, HistoryPage> {
        self.rest.history_page_call(run_id, key, token)
    }

    fn log_metrics_call(&self, run_id: &str, batch: &[Metric]) -> Call<'_, ()> {
        self.rest.log_metrics_call(run_id, batch)
    }

    fn log_batch_call(&self, run_id: &str, params: &[KeyValue], tags: &[KeyValue]) -> Call<'_, ()> {
        let tags = writable(tags);
        if params.is_empty() && tags.is_empty() {
            return Call::Done(Ok(()));
        }
        self.rest.log_batch_call(run_id, params, &tags)
    }

    fn log_inputs(&self, run_id: &str, datasets: &[DatasetInput]) -> Result<(), CopyError> {
        self.rest.log_inputs(run_id, datasets)
    }

    fn log_model_inputs(&self, run_id: &str, model_ids: &[String]) -> Result<(), CopyError> {
        self.rest.log_model_inputs(run_id, model_ids)
    }

    fn log_outputs(&self, run_id: &str, models: &[ModelOutput]) -> Result<(), CopyError> {
        self.rest.log_outputs(run_id, models)
    }

    fn experiment_by_name(&self, name: &str) -> Result<Option<Experiment>, CopyError> {
        self.rest.experiment_by_name(name)
    }

    /// Creates the experiment after its parent folder (a workspace refuses a missing one).
    fn create_experiment(&self, name: &str) -> Result<String, CopyError> {
        self.check_experiment_name(name)?;
        if let Some((parent, _)) = name.rsplit_once('/').filter(|(p, _)| !p.is_empty()) {
            self.rest
                .post::<Value>("/api/2.0/workspace/mkdirs", &json!({ "path": parent }))?;
        }
        self.rest.create_experiment(name)
    }

    fn get_logged_model(&self, model_id: &str) -> Result<LoggedModel, CopyError> {
        self.rest.get_logged_model(model_id)
    }

    fn logged_models_of_run(
        &self,
        experiment_id: &str,
        run_id: &str,
    ) -> Result<Vec<LoggedModel>, CopyError> {
        self.rest.logged_models_of_run(experiment_id, run_id)
    }

    fn logged_models_with_tag(
        &self,
        experiment_id: &str,
        key: &str,
        value: &str,
    ) -> Result<Vec<LoggedModel>, CopyError> {
        self.rest.logged_models_with_tag(experiment_id, key, value)
    }

    fn create_logged_model(
        &self,
        experiment_id: &str,
        model: &NewLoggedModel,
    ) -> Result<LoggedModel, CopyError> {
        let model = NewLoggedModel {
            tags: writable(&model.tags),
            ..model.clone()
        };
        self.rest.create_logged_model(experiment_id, &model)
    }

    fn finalize_logged_model(&self, model_id: &str, status: &str) -> Result<(), CopyError> {
        self.rest.finalize_logged_model(model_id, status)
    }

    fn delete_logged_model(&self, model_id: &str) -> Result<(), CopyError> {
        self.rest.delete_logged_model(model_id)
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

impl DatabricksWorkspace {
    /// The workspace's id of a registered model (its permissions are keyed on it).
    fn model_id(&self, name: &str) -> Result<String, CopyError> {
        let found: DatabricksModel = self.rest.get(
            "/api/2.0/mlflow/databricks/registered-models/get",
            &[("name", name)],
        )?;
        Ok(found.registered_model_databricks.id)
    }
}

impl Registry for DatabricksWorkspace {
    fn server(&self) -> String {
        self.rest.base_display()
    }

    fn permission_scheme(&self) -> &'static str {
        "databricks-acl"
    }

    fn accepts_models_uri(&self) -> bool {
        false
    }

    fn supports_aliases(&self) -> bool {
        false
    }

    fn check_model_name(&self, name: &str) -> Result<(), CopyError> {
        self.rest.check_model_name(name)
    }

    fn registered_model(&self, name: &str) -> Result<Option<RegisteredModel>, CopyError> {
        self.rest.registered_model(name)
    }

    fn create_registered_model(
        &self,
        name: &str,
        description: Option<&str>,
        tags: &[KeyValue],
    ) -> Result<(), CopyError> {
        self.rest.create_registered_model(name, description, tags)
    }

    fn model_version(&self, name: &str, version: &str) -> Result<ModelVersion, CopyError> {
        self.rest.model_version(name, version)
    }

    fn versions(&self, name: &str) -> Result<Vec<ModelVersion>, CopyError> {
        self.rest.versions(name)
    }

    fn create_model_version(
        &self,
        name: &str,
        new: &NewVersion,
    ) -> Result<ModelVersion, CopyError> {
        self.rest.create_model_version(name, new)
    }

    fn set_version_tag(
        &self,
        name: &str,
        version: &str,
        key: &str,
        value: &str,
    ) -> Result<(), CopyError> {
        self.rest.set_version_tag(name, version, key, value)
    }

    fn transition_stage(&self, name: &str, version: &str, stage: &str) -> Result<(), CopyError> {
        self.rest.transition_stage(name, version, stage)
    }

    fn set_alias(&self, name: &str, alias: &str, version: &str) -> Result<(), CopyError> {
        self.rest.set_alias(name, alias, version)
    }

    /// The model's own (not inherited) access-control entries.
    fn model_grants(&self, name: &str) -> Result<Option<Vec<Grant>>, CopyError> {
        let id = self.model_id(name)?;
        let acl: AccessControl = self
            .rest
            .get(&format!("/api/2.0/permissions/registered-models/{id}"), &[])?;
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

    fn grant_model_permission(&self, name: &str, grant: &Grant) -> Result<(), CopyError> {
        let id = self.model_id(name)?;
        let (kind, principal) = grant
            .principal
            .split_once(':')
            .unwrap_or(("user_name", grant.principal.as_str()));
        let body = json!({ "access_control_list": [
            { kind: principal, "permission_level": grant.permission }
        ]});
        self.rest
            .patch::<Value>(
                &format!("/api/2.0/permissions/registered-models/{id}"),
                &body,
            )
            .map(drop)
    }
}

impl Artifacts for DatabricksWorkspace {
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
