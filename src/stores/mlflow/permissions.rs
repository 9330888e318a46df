//! Registered-model permissions on an OSS server started with `--app-name basic-auth`
//! (MLflow 3.17: per-user grants under `/api/3.0/mlflow/users/permissions/`).

use super::rest::MlflowRest;
use crate::api::CopyError;
use crate::stores::model::Grant;
use serde::Deserialize;
use serde_json::{json, Value};

const RESOURCE_TYPE: &str = "registered_model";

#[derive(Deserialize, Default)]
#[serde(default)]
struct Users {
    users: Vec<User>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct User {
    username: String,
    is_admin: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Permissions {
    permissions: Vec<PermissionRow>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PermissionRow {
    resource_type: String,
    resource_pattern: String,
    permission: String,
}

impl MlflowRest {
    /// The direct grants on a registered model, or `None` when the server has no permissions
    /// API (not a basic-auth server). Admins are left out: they need no grant.
    pub(crate) fn basic_auth_model_grants(
        &self,
        model: &str,
    ) -> Result<Option<Vec<Grant>>, CopyError> {
        let users: Users = match self.get("/api/2.0/mlflow/users/list", &[]) {
            Ok(users) => users,
            // Only a server without the route has no permissions API; a failing or unreachable
            // one is an error, never "nothing to copy".
            Err(e) if e.has_code("ENDPOINT_NOT_FOUND") => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut grants = Vec::new();
        for user in users.users.into_iter().filter(|u| !u.is_admin) {
            let rows: Permissions = self.get(
                "/api/3.0/mlflow/users/permissions/list",
                &[("username", user.username.as_str())],
            )?;
            grants.extend(
                rows.permissions
                    .into_iter()
                    .filter(|r| r.resource_type == RESOURCE_TYPE && r.resource_pattern == model)
                    .map(|r| Grant {
                        principal: user.username.clone(),
                        permission: r.permission,
                    }),
            );
        }
        Ok(Some(grants))
    }

    pub(crate) fn basic_auth_grant(&self, model: &str, grant: &Grant) -> Result<(), CopyError> {
        let body = json!({
            "username": grant.principal, "resource_type": RESOURCE_TYPE,
            "resource_id": model, "permission": grant.permission,
        });
        self.post::<Value>("/api/3.0/mlflow/users/permissions/grant", &body)
            .map(drop)
    }
}
