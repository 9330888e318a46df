//! Databricks workspaces: the MLflow tracking API and workspace registry behind unified auth
//! (personal access tokens, OAuth machine-to-machine), with artifacts behind the Files API or
//! signed cloud-storage URLs.

mod artifacts;
mod auth;
pub mod config;
mod s3;
mod uc_files;
pub mod unity_catalog;
mod workspace;
mod workspace_traces;

use crate::api::CopyError;
use crate::credentials::Side;
use crate::stores::mlflow::MlflowRest;
use crate::stores::Stores;
use crate::transport::Transport;
use crate::uri::ServerUri;
use std::rc::Rc;

pub use workspace::SKIPPED_TAGS;

fn read_config_file(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The host of the workspace a `databricks[-uc][://PROFILE]` URI names, resolved as `connect`
/// resolves it (the HTTP function checks it against its allow-list before any request).
pub fn workspace_host(
    profile: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<url::Url, CopyError> {
    config::resolve(profile, env, &read_config_file).map(|workspace| workspace.host)
}

/// The stores of the workspace a `databricks[://PROFILE]` URI names, or with `unity_catalog`
/// (`databricks-uc[://PROFILE]`) its tracking with the Unity Catalog registry.
pub fn connect(
    profile: Option<&str>,
    unity_catalog: bool,
    side: Side,
    env: &dyn Fn(&str) -> Option<String>,
    transport: Rc<Transport>,
) -> Result<Stores, CopyError> {
    let scheme = if unity_catalog {
        "databricks-uc"
    } else {
        "databricks"
    };
    let found = config::resolve(profile, env, &read_config_file).map_err(|e| CopyError {
        message: format!(
            "{} URI {scheme}{}: {}",
            side.label(),
            profile.map(|p| format!("://{p}")).unwrap_or_default(),
            e.message
        ),
        ..e
    })?;
    let ServerUri::Http(base) = ServerUri::parse(found.host.as_str())? else {
        unreachable!("a normalized host is an http(s) URL");
    };
    let auth: Rc<auth::WorkspaceAuth> = Rc::new(auth::WorkspaceAuth::new(found, transport.clone()));
    let rest = MlflowRest::new(base.clone(), side, auth.clone(), transport.clone()).with_flavor(
        Rc::new(workspace::WorkspaceFlavor {
            span_files: workspace_traces::SpanFiles {
                files: artifacts::ArtifactAccess::new(env),
            },
        }),
    );
    let tracking = Rc::new(rest.clone());
    let artifacts = Rc::new(workspace::WorkspaceArtifacts {
        rest: rest.clone(),
        files: artifacts::ArtifactAccess::new(env),
    });
    if !unity_catalog {
        return Ok(Stores {
            tracking,
            registry: Rc::new(rest),
            artifacts,
        });
    }
    // One token (and one OAuth refresh) for the workspace's tracking and its catalog.
    let uc_rest = MlflowRest::new(base, side, auth, transport);
    let files = Rc::new(uc_files::VersionFiles::new(side, env)?);
    let uc = Rc::new(unity_catalog::UnityCatalog::new(uc_rest, env)?);
    Ok(Stores {
        tracking,
        registry: uc.clone(),
        artifacts: Rc::new(uc_files::UcArtifacts {
            workspace: artifacts,
            uc,
            files,
        }),
    })
}
