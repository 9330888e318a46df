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

mod files_api;
pub(super) mod parts;

use crate::api::CopyError;
use crate::stores::mlflow::{push_path, MlflowRest};
use crate::stores::model::{ArtifactRoot, FileEntry, Owner};
use crate::transport::{storage_refusal, Download, Fallback, Method, Multipart, Request, Upload};
use parts::{AdlsAppends, BlobBlocks, PartSizes, S3Parts, Target};
use serde::Deserialize;
use serde_json::{json, Value};
use url::Url;

/// MLflow's own switch to skip the Files API for run artifacts.
pub const DISABLE_FILES_API_VAR: &str = "MLFLOW_DISABLE_DATABRICKS_SDK_FOR_RUN_ARTIFACTS";

pub struct ArtifactAccess {
    /// The Files API for reading and for writing: tried first, and given up for the signed-URL
    /// routes once refused (`DISABLE_FILES_API_VAR` refuses both from the start).
    files_read: Fallback,
    files_write: Fallback,
    /// When and how finely files are cut into parts (an error names a bad variable when an
    /// upload needs them).
    sizes: Result<PartSizes, CopyError>,
    /// The largest file the Files API takes in one PUT; larger ones go in its parts.
    files_max_put: Result<u64, CopyError>,
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

#[derive(Deserialize, Default)]
#[serde(default)]
struct TraceCredential {
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
        Owner::Version { .. } | Owner::Trace(_) => return None,
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

/// Whether a root is in the workspace's managed artifact store, whose files the credential and
/// Files APIs serve. An experiment created with its own location (`s3://…`) keeps its runs'
/// files there: MLflow reads those with the cloud's own SDK and the machine's cloud
/// credentials, which a copy through the workspace has not got.
fn check_managed(rest: &MlflowRest, root: &ArtifactRoot) -> Result<(), CopyError> {
    // A version's and a trace's credentials are asked for by their id, wherever they are kept.
    let by_id = matches!(root.owner, Owner::Version { .. } | Owner::Trace(_));
    let managed = by_id || internal_path(root).is_some();
    if managed {
        return Ok(());
    }
    Err(CopyError::bad_input(format!(
        "{}: {} keeps its artifacts at {:?}, outside the workspace's managed artifact store \
         (dbfs:/databricks/mlflow-tracking/...): the workspace hands out no credentials for it \
         (MLflow reads such an experiment's own artifact location with the cloud's SDK and \
         local cloud credentials), so its artifacts cannot be copied through the workspace",
        rest.base_display(),
        root.describe(),
        root.uri
    )))
}

impl ArtifactAccess {
    pub fn new(env: &dyn Fn(&str) -> Option<String>) -> ArtifactAccess {
        let access = ArtifactAccess {
            files_read: Fallback::default(),
            files_write: Fallback::default(),
            sizes: PartSizes::from_env(env),
            files_max_put: files_api::max_put(env),
        };
        if env(DISABLE_FILES_API_VAR).is_some_and(|v| v == "true" || v == "1") {
            access.files_read.refuse();
            access.files_write.refuse();
        }
        access
    }

    /// The Files API URL of the root, unless the workspace refused the operation there.
    fn files_root(&self, rest: &MlflowRest, root: &ArtifactRoot, op: &Fallback) -> Option<Url> {
        if op.refused() {
            return None;
        }
        let mut url = rest.url("/api/2.0/fs/files");
        push_path(&mut url, &internal_path(root)?);
        Some(url)
    }

    /// The root's files, listed through the tracking API (`artifacts/list`, logged-model
    /// `directories`): what MLflow falls back to, and served by every workspace. The Files
    /// API's listing is not used: MLflow reads its 404 as an empty folder, which a workspace
    /// without the Files API may answer as well.
    pub fn list(
        &self,
        rest: &MlflowRest,
        root: &ArtifactRoot,
    ) -> Result<Vec<FileEntry>, CopyError> {
        check_managed(rest, root)?;
        crate::stores::Artifacts::list(rest, root)
    }

    pub fn downloads(
        &self,
        rest: &MlflowRest,
        root: &ArtifactRoot,
        paths: &[&str],
    ) -> Result<Vec<Download>, CopyError> {
        check_managed(rest, root)?;
        if let Some(base) = self.files_root(rest, root, &self.files_read) {
            return paths
                .iter()
                .map(|path| {
                    let get = rest.authorize(Request::new(Method::Get, file_url(&base, path)));
                    Ok(Download::with_fallback(get, self.files_read.clone()))
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
        check_managed(rest, root)?;
        if let Some(base) = self.files_root(rest, root, &self.files_write) {
            return files
                .iter()
                .map(|file| {
                    let upload = self.files_api_upload(rest, root, &base, file)?;
                    Ok(upload.with_fallback(self.files_write.clone()))
                })
                .collect();
        }
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        let infos = credential_infos(rest, root, &paths, Direction::Write)?;
        files
            .iter()
            .zip(infos)
            .map(|(file, info)| self.upload(rest, root, file, info))
            .collect()
    }

    /// How one file is written through the Files API: one PUT, or its multipart upload above
    /// what one PUT may carry.
    fn files_api_upload(
        &self,
        rest: &MlflowRest,
        root: &ArtifactRoot,
        base: &Url,
        file: &FileEntry,
    ) -> Result<Upload, CopyError> {
        let max_put = *self.files_max_put.as_ref().map_err(Clone::clone)?;
        if file.size <= max_put {
            return Ok(Upload::put(rest.authorize(files_put(base, &file.path))));
        }
        let sizes = self.sizes.as_ref().map_err(Clone::clone)?;
        let internal = format!("{}/{}", internal_path(root).unwrap_or_default(), file.path);
        let parts = files_api::FilesApiParts::new(
            target(rest, root, &file.path),
            internal,
            file_url(base, &file.path),
            sizes.s3(file.size)?,
        );
        Ok(Upload::parts(Box::new(parts)))
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

    /// Reads a small file whole (an `MLmodel`): through the Files API, else (refused) its
    /// signed URL.
    pub fn read_small(
        &self,
        rest: &MlflowRest,
        root: &ArtifactRoot,
        path: &str,
    ) -> Result<Vec<u8>, CopyError> {
        check_managed(rest, root)?;
        if let Some(base) = self.files_root(rest, root, &self.files_read) {
            let get = Request::new(Method::Get, file_url(&base, path));
            match rest.send(get, true) {
                Ok(response) => return Ok(response.body),
                // As MLflow, any failure of the Files API falls back to the signed URLs.
                Err(_) => self.files_read.refuse(),
            }
        }
        let info = credential_infos(rest, root, &[path], Direction::Read)?.remove(0);
        let request = signed_request(rest, root, &info, Direction::Read)?;
        send_signed(rest, &request, path)
    }

    /// Writes a small file whole: through the Files API, else (refused) its signed URL.
    pub fn write_small(
        &self,
        rest: &MlflowRest,
        root: &ArtifactRoot,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(), CopyError> {
        check_managed(rest, root)?;
        if let Some(base) = self.files_root(rest, root, &self.files_write) {
            let mut request = files_put(&base, path);
            request.body = body.clone();
            match rest.send(request, true) {
                Ok(_) => return Ok(()),
                Err(_) => self.files_write.refuse(),
            }
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

/// How many paths MLflow asks credentials for in one request (`_MAX_CREDENTIALS_REQUEST_SIZE`
/// in `databricks_artifact_repo.py`); longer lists go in several requests.
const MAX_CREDENTIALS_REQUEST: usize = 2000;

/// Signed-URL credentials for these files, in order, from the workspace's credential API (one
/// call per page, per chunk of paths).
///
/// The answer's credentials are matched to the paths by position, as MLflow does: it never
/// reads `credential_info.path`, and the logged-model routes need not echo it.
fn credential_infos(
    rest: &MlflowRest,
    root: &ArtifactRoot,
    paths: &[&str],
    direction: Direction,
) -> Result<Vec<CredentialInfo>, CopyError> {
    let mut infos = Vec::with_capacity(paths.len());
    for chunk in paths.chunks(MAX_CREDENTIALS_REQUEST) {
        let mut token: Option<String> = None;
        let mut got = Vec::with_capacity(chunk.len());
        loop {
            let (page, next) = credential_page(rest, root, chunk, direction, token.as_deref())?;
            let empty = page.is_empty();
            got.extend(page);
            match next.filter(|t| !t.is_empty()) {
                Some(next) if !empty && got.len() < chunk.len() => token = Some(next),
                _ => break,
            }
        }
        infos.extend(matched_by_position(rest, root, chunk, got)?);
    }
    Ok(infos)
}

/// The credentials of `paths`, taken in the order the workspace gave them: as many as there are
/// paths (a shorter answer is an error naming the first file left without one).
fn matched_by_position(
    rest: &MlflowRest,
    root: &ArtifactRoot,
    paths: &[&str],
    mut infos: Vec<CredentialInfo>,
) -> Result<Vec<CredentialInfo>, CopyError> {
    if let Some(missing) = paths.get(infos.len()) {
        return Err(CopyError::upstream(format!(
            "{}: asked for {} signed URLs for {} artifacts, got {}: none for {missing:?}",
            rest.base_display(),
            paths.len(),
            root.describe(),
            infos.len()
        )));
    }
    infos.truncate(paths.len());
    for (info, path) in infos.iter_mut().zip(paths) {
        // Only for messages: the position says which file a credential is for.
        info.path = path.to_string();
    }
    Ok(infos)
}

/// One page of credentials and the next page's token.
fn credential_page(
    rest: &MlflowRest,
    root: &ArtifactRoot,
    paths: &[&str],
    direction: Direction,
    token: Option<&str>,
) -> Result<(Vec<CredentialInfo>, Option<String>), CopyError> {
    match &root.owner {
        Owner::Run(run_id) => {
            let route = match direction {
                Direction::Read => "credentials-for-read",
                Direction::Write => "credentials-for-write",
            };
            let mut body = json!({ "run_id": run_id, "path": paths });
            if let Some(t) = token {
                body["page_token"] = json!(t);
            }
            let page: RunCredentials =
                rest.post(&format!("/api/2.0/mlflow/artifacts/{route}"), &body)?;
            Ok((page.credential_infos, page.next_page_token))
        }
        Owner::Model(model_id) => {
            let route = match direction {
                Direction::Read => "credentials-for-download",
                Direction::Write => "credentials-for-upload",
            };
            let mut body = json!({ "paths": paths });
            if let Some(t) = token {
                body["page_token"] = json!(t);
            }
            let page: ModelCredentials = rest.post(
                &format!("/api/2.0/mlflow/logged-models/{model_id}/artifacts/{route}"),
                &body,
            )?;
            let infos = page.credentials.into_iter().map(|c| c.credential_info);
            Ok((infos.collect(), page.next_page_token))
        }
        // One file per trace (`traces.json`), its path implied (MLflow
        // `store/artifact/databricks_artifact_repo_resources.py:_Trace`).
        Owner::Trace(trace_id) => {
            let route = match direction {
                Direction::Read => "credentials-for-data-download",
                Direction::Write => "credentials-for-data-upload",
            };
            let answer: TraceCredential =
                rest.get(&format!("/api/2.0/mlflow/traces/{trace_id}/{route}"), &[])?;
            Ok((vec![answer.credential_info], None))
        }
        Owner::Version { .. } => Err(CopyError::upstream(format!(
            "{}: a workspace registry keeps no files of its own for {}",
            rest.base_display(),
            root.describe()
        ))),
    }
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

    fn model_root() -> ArtifactRoot {
        ArtifactRoot {
            owner: Owner::Model("m-1".into()),
            uri: "dbfs:/databricks/mlflow-tracking/1/logged_models/m-1/artifacts".into(),
        }
    }

    #[test]
    fn signed_urls_are_matched_to_paths_by_position_across_pages() {
        // Logged-model credentials without `path`, two per page.
        let (target, sent) = parts::tests::target(Box::new(|r: &Request| {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            let body = if body.get("page_token").is_none() {
                r#"{"credentials": [{"credential_info": {"signed_uri": "https://s/0"}},
                    {"credential_info": {"signed_uri": "https://s/1"}}], "next_page_token": "2"}"#
            } else {
                r#"{"credentials": [{"credential_info": {"signed_uri": "https://s/2"}}]}"#
            };
            (200, body.into())
        }));
        let paths = ["b.txt", "a/MLmodel", "c.bin"];
        let infos = credential_infos(&target.rest, &model_root(), &paths, Direction::Read).unwrap();
        let got: Vec<(&str, &str)> = infos
            .iter()
            .map(|i| (i.path.as_str(), i.signed_uri.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("b.txt", "https://s/0"),
                ("a/MLmodel", "https://s/1"),
                ("c.bin", "https://s/2")
            ]
        );
        let sent = sent.borrow();
        assert_eq!(sent.len(), 2);
        assert!(sent[0]
            .url
            .path()
            .ends_with("/logged-models/m-1/artifacts/credentials-for-download"));
    }

    #[test]
    fn a_short_credential_answer_names_the_file_left_without_a_url() {
        let (target, _) = parts::tests::target(Box::new(|_| {
            (
                200,
                r#"{"credential_infos": [{"signed_uri": "https://s/0", "path": "zzz"}]}"#.into(),
            )
        }));
        let Err(err) = credential_infos(&target.rest, &target.root, &["x", "y"], Direction::Write)
        else {
            panic!("one URL for two files");
        };
        assert!(
            err.message.contains("\"y\"") && err.message.contains("got 1"),
            "{}",
            err.message
        );
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
