//! Unity Catalog as a model registry (`databricks-uc[://PROFILE]`): the MLflow-shaped API under
//! `/api/2.0/mlflow/unity-catalog`, with what sets UC apart:
//!
//! - three-level names (`catalog.schema.model`), checked before anything is written;
//! - tag keys without `. , - = / :` (translated, see [`uc_tag_key`]);
//! - no stages (aliases only); grants instead of ACLs;
//! - each version keeps its own files: created pending, files written to its storage
//!   (see `uc_files`, which uses this registry; this module knows nothing of files), then
//!   finalized;
//! - a version needs an `MLmodel` with a full signature (checked by the client, as MLflow does),
//!   unless `MLFLOW_SKIP_SIGNATURE_CHECK_FOR_UC_REGISTRY_MIGRATION` says otherwise.

use crate::api::CopyError;
use crate::stores::mlflow::{MlflowRest, RegistryApi};
use crate::stores::model::{
    Grant, KeyValue, LoggedModel, ModelVersion, NewVersion, RegisteredModel,
};
use crate::stores::Registry;
use serde::Deserialize;
use serde_json::{json, Value};

/// MLflow's switch for migrations of models logged without a signature.
pub const SKIP_SIGNATURE_CHECK_VAR: &str = "MLFLOW_SKIP_SIGNATURE_CHECK_FOR_UC_REGISTRY_MIGRATION";

const UC_REGISTRY: &str = "/api/2.0/mlflow/unity-catalog";
/// Characters Unity Catalog refuses in tag keys.
const RESERVED_TAG_CHARS: [char; 6] = ['.', ',', '-', '=', '/', ':'];

/// The header in which a workspace names its id (MLflow's UC store reads it from the GetRun
/// answer: `_DATABRICKS_ORG_ID_HEADER` in `mlflow/store/_unity_catalog/registry/rest_store.py`).
const ORG_ID_HEADER: &str = "x-databricks-org-id";

pub struct UnityCatalog {
    pub(super) rest: MlflowRest,
    skip_signature_check: bool,
}

/// A tag key as Unity Catalog can store it: each reserved character becomes `_`
/// (`mlflow_exim.src_version.name` → `mlflow_exim_src_version_name`, as mlflow-export-import
/// writes them).
pub fn uc_tag_key(key: &str) -> String {
    key.chars()
        .map(|c| {
            if RESERVED_TAG_CHARS.contains(&c) {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// Whether a name is `catalog.schema.model`, each part letters, digits, `_` or `-`.
fn is_three_level(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Grants {
    privilege_assignments: Vec<PrivilegeAssignment>,
    next_page_token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PrivilegeAssignment {
    principal: String,
    privileges: Vec<String>,
}

#[derive(Deserialize)]
struct VersionEnvelope {
    model_version: ModelVersion,
}

#[derive(Deserialize)]
struct LoggedModelEnvelope {
    model: LoggedModel,
}

/// What a new version's `model_id` and `run_id` become in this workspace (see
/// [`UnityCatalog::resolve_model_id`]).
#[derive(Debug, PartialEq, Eq)]
struct Lineage {
    model_id: Option<String>,
    run_id: Option<String>,
    /// The `model_id` named a logged model this workspace does not have.
    model_id_cleared: bool,
}

/// The create body UC gets, as MLflow's UC store builds it (`_create_and_finalize_model_version`
/// in `rest_store.py`): the run's workspace id as `run_tracking_server_id`, and the source's
/// dependencies, left out with a `model_id` that was cleared (MLflow sends none then either).
fn create_body(
    name: &str,
    new: &NewVersion,
    lineage: &Lineage,
    workspace_id: Option<&str>,
) -> Value {
    let mut body = json!({ "name": name, "source": new.source, "tags": new.tags });
    let mut put = |key: &str, value: Option<&str>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            body[key] = json!(v);
        }
    };
    put("run_id", lineage.run_id.as_deref());
    put("model_id", lineage.model_id.as_deref());
    put("description", new.description.as_deref());
    put("run_tracking_server_id", workspace_id);
    put("feature_deps", new.feature_deps.as_deref());
    if !lineage.model_id_cleared && !new.model_version_dependencies.is_empty() {
        body["model_version_dependencies"] = json!(new.model_version_dependencies);
    }
    body
}

impl UnityCatalog {
    pub fn new(
        rest: MlflowRest,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<UnityCatalog, CopyError> {
        let skip = env(SKIP_SIGNATURE_CHECK_VAR).is_some_and(|v| v == "true" || v == "1");
        Ok(UnityCatalog {
            rest,
            skip_signature_check: skip,
        })
    }

    /// A `model_id` as UC may get it: a logged model of this workspace gives the version its
    /// run (its `source_run_id`); one this workspace does not know is dropped, as MLflow's UC
    /// store drops it (`_get_logged_model_from_model_id`: "model_id may be from a different
    /// workspace", e.g. during cross-workspace model copying), so that UC never gets an id it
    /// cannot resolve.
    fn resolve_model_id(&self, new: &NewVersion) -> Result<Lineage, CopyError> {
        let keep_run = || Lineage {
            model_id: None,
            run_id: new.run_id.clone(),
            model_id_cleared: new.model_id.is_some(),
        };
        let Some(model_id) = &new.model_id else {
            return Ok(keep_run());
        };
        let path = format!("/api/2.0/mlflow/logged-models/{model_id}");
        match self.rest.get::<LoggedModelEnvelope>(&path, &[]) {
            Ok(found) => Ok(Lineage {
                model_id: Some(model_id.clone()),
                run_id: found.model.info.source_run_id.or(new.run_id.clone()),
                model_id_cleared: false,
            }),
            // A cross-workspace copy: the logged model lives in the source workspace only.
            Err(e) if e.has_code("RESOURCE_DOES_NOT_EXIST") => Ok(keep_run()),
            Err(e) => Err(e),
        }
    }

    /// The id of this workspace when it holds the run, from the `x-databricks-org-id` header of
    /// its GetRun answer (how MLflow's UC store finds `run_tracking_server_id`:
    /// `_get_run_and_headers`, `_get_workspace_id`). A run it cannot read (another workspace's,
    /// deleted) or an answer without the header gives none, as MLflow records no run link then.
    fn run_workspace_id(&self, run_id: Option<&str>) -> Option<String> {
        let run_id = run_id?;
        let request = self
            .rest
            .get_request("/api/2.0/mlflow/runs/get", &[("run_id", run_id)]);
        let answer = self.rest.send(request, true).ok()?;
        answer.header(ORG_ID_HEADER).map(str::to_string)
    }

    fn api(&self) -> RegistryApi<'_> {
        RegistryApi {
            rest: &self.rest,
            prefix: UC_REGISTRY,
        }
    }

    fn grants_path(name: &str) -> String {
        format!("/api/2.1/unity-catalog/permissions/function/{name}")
    }
}

impl Registry for UnityCatalog {
    fn server(&self) -> String {
        format!("{} (Unity Catalog)", self.rest.base_display())
    }

    fn permission_scheme(&self) -> &'static str {
        "unity-catalog-grants"
    }

    /// A version's source is a location (a run's or logged model's artifacts), kept as given.
    fn accepts_models_uri(&self) -> bool {
        false
    }

    fn supports_stages(&self) -> bool {
        false
    }

    fn tag_key(&self, key: &str) -> String {
        uc_tag_key(key)
    }

    fn requires_signature(&self) -> bool {
        !self.skip_signature_check
    }

    fn keeps_version_files(&self) -> bool {
        true
    }

    fn check_model_name(&self, name: &str) -> Result<(), CopyError> {
        if is_three_level(name) {
            return Ok(());
        }
        Err(CopyError::bad_input(format!(
            "{name:?} is not a Unity Catalog model name on {}: models in Unity Catalog are named \
             <catalog>.<schema>.<model>, each part letters, digits, '_' or '-'",
            self.server()
        )))
    }

    fn registered_model(&self, name: &str) -> Result<Option<RegisteredModel>, CopyError> {
        self.api().registered_model(name)
    }

    fn create_registered_model(
        &self,
        name: &str,
        description: Option<&str>,
        tags: &[KeyValue],
    ) -> Result<(), CopyError> {
        self.api().create_registered_model(name, description, tags)
    }

    fn model_version(&self, name: &str, version: &str) -> Result<ModelVersion, CopyError> {
        self.api().model_version(name, version)
    }

    fn versions(&self, name: &str) -> Result<Vec<ModelVersion>, CopyError> {
        self.api().versions(name)
    }

    fn create_model_version(
        &self,
        name: &str,
        new: &NewVersion,
    ) -> Result<ModelVersion, CopyError> {
        let lineage = self.resolve_model_id(new)?;
        let workspace_id = self.run_workspace_id(lineage.run_id.as_deref());
        let body = create_body(name, new, &lineage, workspace_id.as_deref());
        self.rest
            .create::<VersionEnvelope>(&format!("{UC_REGISTRY}/model-versions/create"), &body)
            .map(|e| e.model_version)
            .map_err(|e| CopyError {
                message: format!("{} (model {name})", e.message),
                ..e
            })
    }

    fn finalize_version(&self, name: &str, version: &str) -> Result<ModelVersion, CopyError> {
        let body = json!({ "name": name, "version": version });
        self.rest
            .post::<VersionEnvelope>(&format!("{UC_REGISTRY}/model-versions/finalize"), &body)
            .map(|e| e.model_version)
    }

    fn set_version_tag(
        &self,
        name: &str,
        version: &str,
        key: &str,
        value: &str,
    ) -> Result<(), CopyError> {
        self.api().set_version_tag(name, version, key, value)
    }

    fn transition_stage(&self, name: &str, _version: &str, stage: &str) -> Result<(), CopyError> {
        Err(CopyError::bad_input(format!(
            "{name}: Unity Catalog has no stages (not setting {stage}); use aliases"
        )))
    }

    fn set_alias(&self, name: &str, alias: &str, version: &str) -> Result<(), CopyError> {
        self.api().set_alias(name, alias, version)
    }

    /// Direct grants on the model, one `Grant` per principal and privilege.
    fn model_grants(&self, name: &str) -> Result<Option<Vec<Grant>>, CopyError> {
        let mut grants = Vec::new();
        let mut token: Option<String> = None;
        // Paged mode (`max_results=0`); a page may be empty and still name a next one.
        for _ in 0..10_000 {
            let mut query = vec![("max_results", "0")];
            query.extend(token.as_deref().map(|t| ("page_token", t)));
            let page: Grants = self.rest.get(&Self::grants_path(name), &query)?;
            for assignment in page.privilege_assignments {
                grants.extend(assignment.privileges.into_iter().map(|p| Grant {
                    principal: assignment.principal.clone(),
                    permission: p,
                }));
            }
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(next) if token.as_deref() != Some(next.as_str()) => token = Some(next),
                _ => return Ok(Some(grants)),
            }
        }
        Err(CopyError::upstream(format!(
            "{}: the grants of {name} never end (10,000 pages)",
            self.server()
        )))
    }

    fn grant_model_permission(&self, name: &str, grant: &Grant) -> Result<(), CopyError> {
        let body = json!({ "changes": [
            { "principal": grant.principal, "add": [grant.permission] }
        ]});
        self.rest
            .patch::<Value>(&Self::grants_path(name), &body)
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_keys_lose_reserved_characters() {
        assert_eq!(
            uc_tag_key("mlflow_exim.src_version.name"),
            "mlflow_exim_src_version_name"
        );
        assert_eq!(uc_tag_key("a,b-c=d/e:f"), "a_b_c_d_e_f");
        assert_eq!(uc_tag_key("plain_key"), "plain_key");
    }

    fn new_version() -> NewVersion {
        NewVersion {
            source: "models:/m-1".into(),
            run_id: Some("run-src".into()),
            model_id: Some("m-1".into()),
            feature_deps: Some("feature_table_a".into()),
            model_version_dependencies: vec![
                json!({"type": "DATABRICKS_TABLE", "name": "main.default.t"}),
            ],
            ..NewVersion::default()
        }
    }

    #[test]
    fn create_body_carries_workspace_id_and_dependencies() {
        let new = new_version();
        let lineage = Lineage {
            model_id: Some("m-1".into()),
            run_id: Some("run-dst".into()),
            model_id_cleared: false,
        };
        let body = create_body("c.s.m", &new, &lineage, Some("123"));
        assert_eq!(body["run_id"], "run-dst");
        assert_eq!(body["model_id"], "m-1");
        assert_eq!(body["run_tracking_server_id"], "123");
        assert_eq!(body["feature_deps"], "feature_table_a");
        assert_eq!(
            body["model_version_dependencies"][0]["type"],
            "DATABRICKS_TABLE"
        );
    }

    #[test]
    fn a_cleared_model_id_sends_no_model_and_no_dependencies() {
        let new = new_version();
        let lineage = Lineage {
            model_id: None,
            run_id: Some("run-src".into()),
            model_id_cleared: true,
        };
        let body = create_body("c.s.m", &new, &lineage, None);
        for absent in [
            "model_id",
            "model_version_dependencies",
            "run_tracking_server_id",
        ] {
            assert!(body.get(absent).is_none(), "{absent} in {body}");
        }
        assert_eq!(body["run_id"], "run-src");
    }

    #[test]
    fn names_have_three_levels() {
        for ok in ["main.default.model", "cat-1.s_2.M3"] {
            assert!(is_three_level(ok), "{ok}");
        }
        for bad in [
            "model",
            "main.model",
            "a.b.c.d",
            "a..c",
            "a.b.c d",
            "a.b/c",
            "",
        ] {
            assert!(!is_three_level(bad), "{bad}");
        }
    }
}
