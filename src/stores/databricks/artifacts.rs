//! How a workspace's run and logged-model artifacts travel (as MLflow 3's client does it):
//!
//! 1. the Files API on the workspace's internal artifact path
//!    (`/api/2.0/fs/files/WorkspaceInternal/Mlflow/Artifacts/<exp>/Runs/<run>/…`), with the
//!    workspace's credentials, when the workspace allows it;
//! 2. otherwise signed cloud-storage URLs from `credentials-for-read` / `credentials-for-write`
//!    (runs) and `credentials-for-download` / `credentials-for-upload` (logged models), asked
//!    for in one call per batch of files. A signed URL never carries the workspace's token.
//!
//! Listing goes through the tracking API as on any MLflow server. Large files, and every file
//! on Azure, are written in parts (`parts`).

pub(super) mod parts;

use crate::api::CopyError;
use crate::stores::mlflow::{push_path, MlflowRest};
use crate::stores::model::{ArtifactRoot, FileEntry, Owner};
use crate::transport::{storage_refusal, Download, Method, Multipart, Request, Upload};
use parts::{AdlsAppends, BlobBlocks, PartSizes, S3Parts, Target};
use serde::Deserialize;
use serde_json::{json, Value};
use std::cell::Cell;
use std::collections::HashMap;
use url::Url;

/// MLflow's own switch to skip the Files API for run artifacts.
pub const DISABLE_FILES_API_VAR: &str = "MLFLOW_DISABLE_DATABRICKS_SDK_FOR_RUN_ARTIFACTS";

pub struct ArtifactAccess {
    /// Whether the workspace serves its internal artifact path through the Files API (probed
    /// once; `Some(false)` when the environment turns it off).
    files_api: Cell<Option<bool>>,
    /// When and how finely files are cut into parts (an error names a bad variable when an
    /// upload needs them).
    sizes: Result<PartSizes, CopyError>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub(in crate::stores::databricks) struct CredentialInfo {
    pub(in crate::stores::databricks) path: String,
    pub(in crate::stores::databricks) signed_uri: String,
    pub(in crate::stores::databricks) headers: Vec<Header>,
    #[serde(rename = "type")]
    pub(in crate::stores::databricks) kind: Value,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub(in crate::stores::databricks) struct Header {
    pub(in crate::stores::databricks) name: String,
    pub(in crate::stores::databricks) value: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RunCredentials {
    credential_infos: Vec<CredentialInfo>,
    next_page_token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ModelCredentials {
    credentials: Vec<ModelCredential>,
    next_page_token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ModelCredential {
    credential_info: CredentialInfo,
}

#[derive(Clone, Copy, PartialEq)]
enum Direction {
    Read,
    Write,
}

/// Where a root lives in the workspace's internal artifact tree, e.g.
/// `/WorkspaceInternal/Mlflow/Artifacts/3/Runs/abc/artifacts`.
fn internal_path(root: &ArtifactRoot) -> Option<String> {
    let rest = root.uri.strip_prefix("dbfs:/databricks/mlflow-tracking/")?;
    let experiment = rest.split('/').next().filter(|e| !e.is_empty())?;
    let base = "/WorkspaceInternal/Mlflow/Artifacts";
    Some(match &root.owner {
        Owner::Run(run) => format!("{base}/{experiment}/Runs/{run}/artifacts"),
        Owner::Model(model) => format!("{base}/{experiment}/LoggedModels/{model}/artifacts"),
        Owner::Version { .. } => return None,
    })
}

fn storage_type(kind: &Value) -> String {
    match kind {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_u64() {
            Some(1) => "AZURE_SAS_URI".into(),
            Some(2) => "AWS_PRESIGNED_URL".into(),
            Some(3) => "GCP_SIGNED_URL".into(),
            Some(4) => "AZURE_ADLS_GEN2_SAS_URI".into(),
            _ => n.to_string(),
        },
        _ => "AWS_PRESIGNED_URL".into(),
    }
}

impl ArtifactAccess {
    pub fn new(env: &dyn Fn(&str) -> Option<String>) -> ArtifactAccess {
        let disabled = env(DISABLE_FILES_API_VAR).is_some_and(|v| v == "true" || v == "1");
        ArtifactAccess {
            files_api: Cell::new(disabled.then_some(false)),
            sizes: PartSizes::from_env(env),
        }
    }

    /// The Files API URL of the root, when the workspace serves it through the Files API
    /// (probed once per store).
    fn files_root(&self, rest: &MlflowRest, root: &ArtifactRoot) -> Option<Url> {
        let internal = internal_path(root)?;
        if self.files_api.get().is_none() {
            self.files_api.set(Some(probe(rest, &internal)));
        }
        if self.files_api.get() != Some(true) {
            return None;
        }
        let mut url = rest.url("/api/2.0/fs/files");
        push_path(&mut url, &internal);
        Some(url)
    }

    pub fn downloads(
        &self,
        rest: &MlflowRest,
        root: &ArtifactRoot,
        paths: &[&str],
    ) -> Result<Vec<Download>, CopyError> {
        if let Some(base) = self.files_root(rest, root) {
            return paths
                .iter()
                .map(|path| {
                    let get = Request::new(Method::Get, file_url(&base, path));
                    Ok(Download::get(rest.authorize(get)?))
                })
                .collect();
        }
        let infos = credential_infos(rest, root, paths, Direction::Read)?;
        infos
            .iter()
            .map(|info| {
                Ok(Download::signed(signed_request(
                    rest,
                    root,
                    info,
                    Direction::Read,
                )?))
            })
            .collect()
    }

    pub fn uploads(
        &self,
        rest: &MlflowRest,
        root: &ArtifactRoot,
        files: &[&FileEntry],
    ) -> Result<Vec<Upload>, CopyError> {
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        if let Some(base) = self.files_root(rest, root) {
            return paths
                .iter()
                .map(|path| Ok(Upload::put(rest.authorize(files_put(&base, path))?)))
                .collect();
        }
        let infos = credential_infos(rest, root, &paths, Direction::Write)?;
        files
            .iter()
            .zip(infos)
            .map(|(file, info)| self.upload(rest, root, file, info))
            .collect()
    }

    /// How one file is written with its write credentials: in parts where the storage needs
    /// them (Azure always, S3 above the threshold), else one signed PUT.
    fn upload(
        &self,
        rest: &MlflowRest,
        root: &ArtifactRoot,
        file: &FileEntry,
        info: CredentialInfo,
    ) -> Result<Upload, CopyError> {
        let sizes = self.sizes.as_ref().map_err(Clone::clone)?;
        if let Some(parted) = azure_parts(rest, root, &file.path, file.size, sizes, &info) {
            return Ok(Upload::parts(parted));
        }
        let s3 = storage_type(&info.kind) == "AWS_PRESIGNED_URL";
        if s3 && sizes.s3_in_parts(file.size) {
            match &root.owner {
                Owner::Run(run_id) => {
                    let target = target(rest, root, &file.path);
                    let parts = S3Parts::new(target, run_id.clone(), sizes.s3(file.size)?);
                    return Ok(Upload::parts(Box::new(parts)));
                }
                // Logged-model artifacts have no multipart route: one PUT, as far as S3 allows.
                _ if file.size > parts::S3_MAX_PUT => {
                    return Err(CopyError::upstream(format!(
                        "{}: {} artifact {:?} has {} bytes, more than one S3 upload may carry \
                         ({} bytes), and logged-model artifacts have no multipart upload",
                        rest.base_display(),
                        root.describe(),
                        file.path,
                        file.size,
                        parts::S3_MAX_PUT
                    )))
                }
                _ => {}
            }
        }
        Ok(Upload::signed(signed_request(
            rest,
            root,
            &info,
            Direction::Write,
        )?))
    }

    pub fn read_small(
        &self,
        rest: &MlflowRest,
        root: &ArtifactRoot,
        path: &str,
    ) -> Result<Vec<u8>, CopyError> {
        if let Some(base) = self.files_root(rest, root) {
            let get = Request::new(Method::Get, file_url(&base, path));
            return Ok(rest.send(get, true)?.body);
        }
        let info = credential_infos(rest, root, &[path], Direction::Read)?.remove(0);
        let request = signed_request(rest, root, &info, Direction::Read)?;
        send_signed(rest, &request, path)
    }

    pub fn write_small(
        &self,
        rest: &MlflowRest,
        root: &ArtifactRoot,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(), CopyError> {
        if let Some(base) = self.files_root(rest, root) {
            let mut request = files_put(&base, path);
            request.body = body;
            return rest.send(request, true).map(drop);
        }
        let info = credential_infos(rest, root, &[path], Direction::Write)?.remove(0);
        let sizes = self.sizes.as_ref().map_err(Clone::clone)?;
        let size = body.len() as u64;
        if let Some(mut parted) = azure_parts(rest, root, path, size, sizes, &info) {
            return rest.transport().send_parts(parted.as_mut(), &body);
        }
        let mut request = signed_request(rest, root, &info, Direction::Write)?;
        request.body = body;
        send_signed(rest, &request, path).map(drop)
    }
}

pub(super) fn file_url(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    push_path(&mut url, path);
    url
}

/// The Files API upload of one file (overwriting: a retried file replaces its partial self).
pub(super) fn files_put(base: &Url, path: &str) -> Request {
    let mut url = file_url(base, path);
    url.query_pairs_mut().append_pair("overwrite", "true");
    Request::new(Method::Put, url).header("content-type", "application/octet-stream")
}

/// Whether the Files API serves the internal artifact tree: a workspace without it answers
/// `FEATURE_DISABLED`, 403 or 501, or has no such route; one with it lists the folder or says
/// it does not exist (yet).
fn probe(rest: &MlflowRest, internal_root: &str) -> bool {
    let mut url = rest.url("/api/2.0/fs/directories");
    push_path(&mut url, internal_root);
    match rest.send(Request::new(Method::Get, url), true) {
        Ok(_) => true,
        Err(e) => e.has_code("RESOURCE_DOES_NOT_EXIST") || e.has_code("NOT_FOUND"),
    }
}

/// The azure upload of a file, when its credentials are for Azure: blocks on Blob storage,
/// appends on ADLS Gen2 (as MLflow writes every file there).
fn azure_parts(
    rest: &MlflowRest,
    root: &ArtifactRoot,
    path: &str,
    size: u64,
    sizes: &PartSizes,
    info: &CredentialInfo,
) -> Option<Box<dyn Multipart>> {
    let target = target(rest, root, path);
    let info = info.clone();
    match storage_type(&info.kind).as_str() {
        "AZURE_SAS_URI" => Some(Box::new(BlobBlocks {
            target,
            info,
            lengths: sizes.azure_blocks(size),
        })),
        "AZURE_ADLS_GEN2_SAS_URI" => Some(Box::new(AdlsAppends {
            target,
            info,
            lengths: sizes.adls_appends(size),
        })),
        _ => None,
    }
}

fn target(rest: &MlflowRest, root: &ArtifactRoot, path: &str) -> Target {
    Target {
        rest: rest.clone(),
        root: root.clone(),
        path: path.to_string(),
        fresh: None,
    }
}

/// Signed-URL credentials for these files, in order, from the workspace's credential API (one
/// call per page).
fn credential_infos(
    rest: &MlflowRest,
    root: &ArtifactRoot,
    paths: &[&str],
    direction: Direction,
) -> Result<Vec<CredentialInfo>, CopyError> {
    let mut by_path: HashMap<String, CredentialInfo> = HashMap::new();
    let mut token: Option<String> = None;
    loop {
        let (infos, next) = match &root.owner {
            Owner::Run(run_id) => {
                let route = match direction {
                    Direction::Read => "credentials-for-read",
                    Direction::Write => "credentials-for-write",
                };
                let mut body = json!({ "run_id": run_id, "path": paths });
                if let Some(t) = &token {
                    body["page_token"] = json!(t);
                }
                let page: RunCredentials =
                    rest.post(&format!("/api/2.0/mlflow/artifacts/{route}"), &body)?;
                (page.credential_infos, page.next_page_token)
            }
            Owner::Model(model_id) => {
                let route = match direction {
                    Direction::Read => "credentials-for-download",
                    Direction::Write => "credentials-for-upload",
                };
                let mut body = json!({ "paths": paths });
                if let Some(t) = &token {
                    body["page_token"] = json!(t);
                }
                let page: ModelCredentials = rest.post(
                    &format!("/api/2.0/mlflow/logged-models/{model_id}/artifacts/{route}"),
                    &body,
                )?;
                let infos = page.credentials.into_iter().map(|c| c.credential_info);
                (infos.collect(), page.next_page_token)
            }
            Owner::Version { .. } => {
                return Err(CopyError::upstream(format!(
                    "{}: a workspace registry keeps no files of its own for {}",
                    rest.base_display(),
                    root.describe()
                )))
            }
        };
        let before = by_path.len();
        by_path.extend(infos.into_iter().map(|i| (i.path.clone(), i)));
        match next.filter(|t| !t.is_empty() && by_path.len() > before) {
            Some(next) if by_path.len() < paths.len() => token = Some(next),
            _ => break,
        }
    }
    paths
        .iter()
        .map(|path| {
            by_path.get(*path).cloned().ok_or_else(|| {
                CopyError::upstream(format!(
                    "{}: no signed URL for {} artifact {path:?}",
                    rest.base_display(),
                    root.describe()
                ))
            })
        })
        .collect()
}

fn signed_request(
    rest: &MlflowRest,
    root: &ArtifactRoot,
    info: &CredentialInfo,
    direction: Direction,
) -> Result<Request, CopyError> {
    let url = Url::parse(&info.signed_uri).map_err(|e| {
        CopyError::upstream(format!(
            "{}: the signed URL for {} artifact {:?} is not a URL ({e})",
            rest.base_display(),
            root.describe(),
            info.path
        ))
    })?;
    let method = match direction {
        Direction::Read => Method::Get,
        Direction::Write => Method::Put,
    };
    let mut request = Request::to_issued(method, url);
    for header in &info.headers {
        request = request.header(&header.name.to_ascii_lowercase(), header.value.clone());
    }
    Ok(request)
}

/// Sends a small signed request (no credentials of ours), for an `MLmodel`.
pub(super) fn send_signed(
    rest: &MlflowRest,
    request: &Request,
    path: &str,
) -> Result<Vec<u8>, CopyError> {
    let response = rest
        .transport()
        .send(request, true)
        .map_err(CopyError::from)?;
    if !response.is_success() {
        let what = format!("for artifact {path:?}");
        return Err(storage_refusal(request, &response, &what));
    }
    Ok(response.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_paths_of_runs_and_models() {
        let run = ArtifactRoot {
            owner: Owner::Run("abc".into()),
            uri: "dbfs:/databricks/mlflow-tracking/3/abc/artifacts".into(),
        };
        assert_eq!(
            internal_path(&run).unwrap(),
            "/WorkspaceInternal/Mlflow/Artifacts/3/Runs/abc/artifacts"
        );
        let model = ArtifactRoot {
            owner: Owner::Model("m-1".into()),
            uri: "dbfs:/databricks/mlflow-tracking/3/logged_models/m-1/artifacts".into(),
        };
        assert_eq!(
            internal_path(&model).unwrap(),
            "/WorkspaceInternal/Mlflow/Artifacts/3/LoggedModels/m-1/artifacts"
        );
        let elsewhere = ArtifactRoot {
            owner: Owner::Run("abc".into()),
            uri: "s3://bucket/x".into(),
        };
        assert_eq!(internal_path(&elsewhere), None);
    }

    #[test]
    fn storage_types_by_name_or_number() {
        assert_eq!(
            storage_type(&json!("AWS_PRESIGNED_URL")),
            "AWS_PRESIGNED_URL"
        );
        assert_eq!(storage_type(&json!(4)), "AZURE_ADLS_GEN2_SAS_URI");
    }
}
