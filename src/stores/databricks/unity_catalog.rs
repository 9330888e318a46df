//! Unity Catalog as a model registry (`databricks-uc[://PROFILE]`): the MLflow-shaped API under
//! `/api/2.0/mlflow/unity-catalog`, with what sets UC apart:
//!
//! - three-level names (`catalog.schema.model`), checked before anything is written;
//! - tag keys without `. , - = / :` (translated, see [`uc_tag_key`]);
//! - no stages (aliases only); grants instead of ACLs;
//! - each version keeps its own files: created pending, files written to its storage
//!   (see `uc_files`), then finalized;
//! - a version needs an `MLmodel` with a full signature (checked by the client, as MLflow does),
//!   unless `MLFLOW_SKIP_SIGNATURE_CHECK_FOR_UC_REGISTRY_MIGRATION` says otherwise.

use super::uc_files::VersionFiles;
use crate::api::CopyError;
use crate::stores::mlflow::{MlflowRest, RegistryApi};
use crate::stores::model::{Grant, KeyValue, ModelVersion, NewVersion, RegisteredModel};
use crate::stores::Registry;
use serde::Deserialize;
use serde_json::{json, Value};

/// MLflow's switch for migrations of models logged without a signature.
pub const SKIP_SIGNATURE_CHECK_VAR: &str = "MLFLOW_SKIP_SIGNATURE_CHECK_FOR_UC_REGISTRY_MIGRATION";

const UC_REGISTRY: &str = "/api/2.0/mlflow/unity-catalog";
/// Characters Unity Catalog refuses in tag keys.
const RESERVED_TAG_CHARS: [char; 6] = ['.', ',', '-', '=', '/', ':'];

pub struct UnityCatalog {
    pub(super) rest: MlflowRest,
    pub(super) files: VersionFiles,
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

impl UnityCatalog {
    pub fn new(
        rest: MlflowRest,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<UnityCatalog, CopyError> {
        let skip = env(SKIP_SIGNATURE_CHECK_VAR).is_some_and(|v| v == "true" || v == "1");
        Ok(UnityCatalog {
            files: VersionFiles::new(rest.side(), env)?,
            rest,
            skip_signature_check: skip,
        })
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
        self.api().create_model_version(name, new)
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
