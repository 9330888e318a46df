//! Databricks workspaces: the MLflow tracking API and workspace registry behind unified auth
//! (personal access tokens, OAuth machine-to-machine), with artifacts behind the Files API or
//! signed cloud-storage URLs.

mod artifacts;
mod auth;
pub mod config;
mod workspace;

use crate::api::CopyError;
use crate::credentials::Side;
use crate::stores::mlflow::MlflowRest;
use crate::stores::Stores;
use crate::transport::Transport;
use crate::uri::ServerUri;
use std::rc::Rc;

pub use workspace::SKIPPED_TAGS;

/// The stores of the workspace a `databricks[://PROFILE]` URI names.
pub fn connect(
    profile: Option<&str>,
    side: Side,
    env: &dyn Fn(&str) -> Option<String>,
    transport: Rc<Transport>,
) -> Result<Stores, CopyError> {
    let read_file = |path: &str| std::fs::read_to_string(path).ok();
    let found = config::resolve(profile, env, &read_file).map_err(|e| CopyError {
        message: format!(
            "{} URI databricks{}: {}",
            side.label(),
            profile.map(|p| format!("://{p}")).unwrap_or_default(),
            e.message
        ),
        ..e
    })?;
    let ServerUri::Http(base) = ServerUri::parse(found.host.as_str())? else {
        unreachable!("a normalized host is an http(s) URL");
    };
    let auth = auth::WorkspaceAuth::new(found, transport.clone());
    let rest = MlflowRest::new(base, side, Rc::new(auth), transport);
    Ok(Stores::all_in_one(workspace::DatabricksWorkspace {
        rest,
        files: artifacts::ArtifactAccess::new(env),
    }))
}
