//! The files of Unity Catalog model versions (`Owner::Version` roots), reached the ways MLflow's
//! client reaches them, in its order:
//!
//! 1. the Files API at `/Models/<catalog>/<schema>/<model>/<version>/…`, when the workspace
//!    says its SDK models repository is enabled (or `MLFLOW_USE_DATABRICKS_SDK_MODEL_ARTIFACTS_REPO_FOR_UC`
//!    says so; set to false, the workspace is not asked);
//! 2. otherwise `generate-temporary-credentials` for the version, which names the storage:
//!    - Databricks default storage: presigned URLs from `fs/create-upload-url` /
//!      `fs/create-download-url`, listing through `fs/directories`;
//!    - S3: requests to the version's `storage_location` signed with the temporary credentials
//!      (SigV4 with the session token, encryption headers when asked for);
//!    - GCS: the same object and listing protocol (GCS's XML API) with the OAuth token.
//!    - Cloudflare R2: S3's protocol against the account endpoint of the `r2://` location.
//!
//! Credentials are fetched per version and direction, kept until shortly before they expire,
//! and fetched again after that (a file retried after its URL or token was refused gets fresh
//! ones). The workspace token goes to the workspace only; storage gets signed requests.

use super::artifacts::parts::{AdlsAppends, FreshCredentials, PartSizes, Target};
use super::artifacts::{file_url, files_put, send_signed, CredentialInfo};
use super::s3::{self, Encryption, Endpoint, Location, TempCredentials};
use super::unity_catalog::UnityCatalog;
use super::workspace::WorkspaceArtifacts;
use crate::api::CopyError;
use crate::credentials::Side;
use crate::stores::mlflow::{push_path, walk, MlflowRest, Page};
use crate::stores::model::{ArtifactRoot, FileEntry, FileInfo, Owner};
use crate::stores::{Artifacts, Registry};
use crate::transport::{
    error_refuses_credentials, storage_refusal, Download, Method, Multipart, Request, Upload,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, SystemTime};
use url::Url;

/// MLflow's switch to use the Files API for Unity Catalog model files.
pub const FILES_API_VAR: &str = "MLFLOW_USE_DATABRICKS_SDK_MODEL_ARTIFACTS_REPO_FOR_UC";
/// Most pages one listing may have (a server whose pages never end must not hold the copy).
const MAX_PAGES: usize = 10_000;

/// A workspace's artifacts plus its Unity Catalog version files: one `Artifacts` for a
/// `databricks-uc` side, dispatching on the root's owner.
pub struct UcArtifacts {
    pub workspace: Rc<WorkspaceArtifacts>,
    pub uc: Rc<UnityCatalog>,
    pub files: Rc<VersionFiles>,
}

/// How one version's files are reached in one direction.
#[derive(Clone)]
enum Access {
    FilesApi,
    DefaultStorage,
    Bucket(Box<BucketAccess>),
    Adls(Box<AdlsAccess>),
}

/// A version's ADLS Gen2 location (`abfss://<filesystem>@<account>.dfs.core.windows.net/<path>`)
/// with the user-delegation SAS UC hands out for it.
#[derive(Clone)]
struct AdlsAccess {
    /// `https://<account>.dfs.core.windows.net/<filesystem>`
    filesystem: Url,
    prefix: String,
    sas: String,
}

impl AdlsAccess {
    fn parse(uri: &str, sas: &str) -> Option<AdlsAccess> {
        let rest = uri.strip_prefix("abfss://")?;
        let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let (filesystem, account_host) = authority.split_once('@')?;
        let mut url = Url::parse(&format!("https://{account_host}")).ok()?;
        push_path(&mut url, filesystem);
        Some(AdlsAccess {
            filesystem: url,
            prefix: prefix.trim_matches('/').to_string(),
            sas: sas.trim_start_matches('?').to_string(),
        })
    }

    fn with_sas(&self, mut url: Url, pairs: &[(&str, &str)]) -> Url {
        url.query_pairs_mut().extend_pairs(pairs);
        let query = match url.query().filter(|q| !q.is_empty()) {
            Some(q) => format!("{q}&{}", self.sas),
            None => self.sas.clone(),
        };
        url.set_query(Some(&query));
        url
    }

    /// A file's URL, with the SAS.
    fn file_url(&self, path: &str) -> Url {
        let mut url = self.filesystem.clone();
        push_path(&mut url, &self.prefix);
        push_path(&mut url, path);
        self.with_sas(url, &[])
    }

    /// One page of the recursive listing below the prefix, with the SAS.
    fn list_url(&self, continuation: Option<&str>) -> Url {
        let mut pairs = vec![
            ("resource", "filesystem"),
            ("directory", self.prefix.as_str()),
            ("recursive", "true"),
        ];
        pairs.extend(continuation.map(|c| ("continuation", c)));
        self.with_sas(self.filesystem.clone(), &pairs)
    }

    /// What the shared ADLS upload protocol takes: the file's SAS URL.
    fn credential(&self, path: &str) -> CredentialInfo {
        CredentialInfo {
            path: path.to_string(),
            signed_uri: self.file_url(path).to_string(),
            headers: Vec::new(),
            kind: json!("AZURE_ADLS_GEN2_SAS_URI"),
        }
    }
}

/// The version's storage location in a bucket, with the temporary credentials for it.
#[derive(Clone)]
struct BucketAccess {
    endpoint: Endpoint,
    location: Location,
    auth: BucketAuth,
}

#[derive(Clone)]
enum BucketAuth {
    /// AWS credentials: every request signed (SigV4, session token); writes encrypted as asked.
    S3 {
        credentials: TempCredentials,
        encryption: Option<Encryption>,
    },
    /// A GCP OAuth token for GCS, sent as a bearer token to GCS only.
    Gcs { token: String },
}

impl BucketAccess {
    /// Adds the credentials to a request for this bucket: a SigV4 signature (S3) or the OAuth
    /// token (GCS).
    fn authorize(&self, request: Request) -> Result<Request, CopyError> {
        match &self.auth {
            BucketAuth::S3 { credentials, .. } => s3::sign_request(
                request,
                credentials,
                &self.endpoint.region,
                SystemTime::now(),
            ),
            BucketAuth::Gcs { token } => {
                Ok(request.header("authorization", format!("Bearer {token}")))
            }
        }
    }

    /// The request for one object (`GET`/`PUT`); S3 writes carry the encryption asked for.
    fn object(&self, method: Method, key: &str) -> Result<Request, CopyError> {
        let (endpoint, location) = (&self.endpoint, &self.location);
        self.authorize(s3::object(
            method,
            endpoint,
            location,
            key,
            self.encryption(),
        ))
    }

    fn encryption(&self) -> Option<&Encryption> {
        match &self.auth {
            BucketAuth::S3 { encryption, .. } => encryption.as_ref(),
            BucketAuth::Gcs { .. } => None,
        }
    }

    /// The request for one page of the listing below the location.
    fn list_page(&self, continuation: Option<&str>) -> Result<Request, CopyError> {
        let url = s3::list_url(&self.endpoint, &self.location, continuation);
        self.authorize(Request::to_issued(Method::Get, url))
    }
}

struct Granted {
    access: Access,
    renew_at: SystemTime,
}

pub struct VersionFiles {
    /// When files go to S3 in parts, and how large the parts are (MLflow's variables).
    part_sizes: PartSizes,
    /// `MLFLOW_S3_ENDPOINT_URL`: an S3-compatible endpoint instead of AWS.
    s3_endpoint: Option<Url>,
    /// `AWS_REGION` / `AWS_DEFAULT_REGION`, else discovered per bucket.
    region: Option<String>,
    files_api: Cell<Option<bool>>,
    granted: RefCell<HashMap<(String, String, bool), Granted>>,
    regions: RefCell<HashMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CredentialsAnswer {
    credentials: Credentials,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Credentials {
    aws_temp_credentials: Option<AwsCredentials>,
    azure_user_delegation_sas: Option<AzureSas>,
    gcp_oauth_token: Option<GcpToken>,
    /// Cloudflare R2: the same three fields as AWS's (`R2Credentials` in MLflow's protos).
    r2_temp_credentials: Option<AwsCredentials>,
    expiration_time: Option<i64>,
    storage_mode: Value,
    encryption_details: EncryptionDetails,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AwsCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AzureSas {
    sas_token: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GcpToken {
    oauth_token: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct EncryptionDetails {
    sse_encryption_details: Option<SseDetails>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SseDetails {
    algorithm: Value,
    aws_kms_key_arn: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PresignedUrl {
    url: String,
    headers: Vec<NameValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct NameValue {
    name: String,
    value: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DirectoryEntry {
    path: String,
    is_directory: bool,
    file_size: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SdkRepoAnswer {
    is_databricks_sdk_models_artifact_repository_enabled: bool,
}

/// `MLFLOW_USE_DATABRICKS_SDK_MODEL_ARTIFACTS_REPO_FOR_UC` read as MLflow reads its boolean
/// variables (`true`/`false`/`1`/`0`, any case; anything else refused).
fn files_api_choice(value: &str) -> Result<bool, CopyError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(CopyError::bad_input(format!(
            "{FILES_API_VAR}={value:?}: expected true or false"
        ))),
    }
}

fn is_default_storage(mode: &Value) -> bool {
    mode == "DEFAULT_STORAGE" || mode.as_u64() == Some(2)
}

fn encryption(details: &EncryptionDetails) -> Option<Encryption> {
    let sse = details.sse_encryption_details.as_ref()?;
    match (&sse.algorithm, sse.algorithm.as_u64()) {
        (Value::String(a), _) if a == "AWS_SSE_KMS" => Some(Encryption::Kms {
            key_arn: sse.aws_kms_key_arn.clone(),
        }),
        (_, Some(2)) => Some(Encryption::Kms {
            key_arn: sse.aws_kms_key_arn.clone(),
        }),
        (Value::String(a), _) if a == "AWS_SSE_S3" => Some(Encryption::S3Managed),
        (_, Some(1)) => Some(Encryption::S3Managed),
        _ => None,
    }
}

fn temp_credentials(keys: AwsCredentials) -> TempCredentials {
    TempCredentials {
        access_key_id: keys.access_key_id,
        secret_access_key: keys.secret_access_key,
        session_token: keys.session_token,
    }
}

/// When to fetch credentials again: a quarter of their life (at most a minute) before they
/// expire, so that a batch of files signed with them still gets through.
fn renew_at(now: SystemTime, expires_ms: Option<i64>) -> SystemTime {
    let Some(ms) = expires_ms.filter(|ms| *ms > 0) else {
        return now + Duration::from_secs(300);
    };
    let expires = SystemTime::UNIX_EPOCH + Duration::from_millis(ms as u64);
    let life = expires.duration_since(now).unwrap_or_default();
    expires - (life / 4).min(Duration::from_secs(60))
}

/// `/Models/<catalog>/<schema>/<model>/<version>`, the version's Files API path.
fn models_path(model: &str, version: &str) -> String {
    format!("/Models/{}/{version}", model.replace('.', "/"))
}

fn version_of(root: &ArtifactRoot) -> (&str, &str) {
    match &root.owner {
        Owner::Version { model, version } => (model, version),
        _ => unreachable!("UcArtifacts dispatches only version roots here"),
    }
}

impl VersionFiles {
    pub fn new(
        side: Side,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<VersionFiles, CopyError> {
        let forced = env(FILES_API_VAR)
            .map(|v| files_api_choice(&v))
            .transpose()?;
        // `MLFLOW_SRC_S3_ENDPOINT_URL` / `MLFLOW_DST_S3_ENDPOINT_URL` for one side only (two
        // S3-compatible stores in one copy).
        let endpoint = env(&format!("MLFLOW_{}S3_ENDPOINT_URL", side.env_infix()))
            .or_else(|| env(s3::ENDPOINT_VAR));
        Ok(VersionFiles {
            part_sizes: PartSizes::from_env(env)?,
            s3_endpoint: endpoint.and_then(|u| Url::parse(&u).ok()),
            region: env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")),
            // Set either way, the variable decides and the workspace is not asked (as in
            // `is_databricks_sdk_models_artifact_repository_enabled`, `_unity_catalog_utils.py`).
            files_api: Cell::new(forced),
            granted: RefCell::new(HashMap::new()),
            regions: RefCell::new(HashMap::new()),
        })
    }

    /// How to reach the version's files for reading or writing (cached until renewal).
    fn access(
        &self,
        uc: &UnityCatalog,
        root: &ArtifactRoot,
        write: bool,
    ) -> Result<Access, CopyError> {
        let (model, version) = version_of(root);
        let key = (model.to_string(), version.to_string(), write);
        let now = SystemTime::now();
        if let Some(granted) = self.granted.borrow().get(&key) {
            if now < granted.renew_at {
                return Ok(granted.access.clone());
            }
        }
        let (access, renew_at) = if self.files_api_enabled(&uc.rest) {
            (Access::FilesApi, now + Duration::from_secs(24 * 3600))
        } else {
            self.temporary_access(uc, model, version, write, now)?
        };
        let granted = Granted {
            access: access.clone(),
            renew_at,
        };
        self.granted.borrow_mut().insert(key, granted);
        Ok(access)
    }

    /// Drops the credentials of a version (storage refused them): the next use fetches more.
    fn forget(&self, root: &ArtifactRoot, write: bool) {
        let (model, version) = version_of(root);
        let key = (model.to_string(), version.to_string(), write);
        self.granted.borrow_mut().remove(&key);
    }

    fn files_api_enabled(&self, rest: &MlflowRest) -> bool {
        if let Some(known) = self.files_api.get() {
            return known;
        }
        let path = "/api/2.0/mlflow/unity-catalog/registered-models:is-databricks-sdk-models-artifact-repository-enabled";
        // An older workspace without the route does not have the repository either.
        let enabled = rest
            .get::<SdkRepoAnswer>(path, &[])
            .map(|a| a.is_databricks_sdk_models_artifact_repository_enabled)
            .unwrap_or(false);
        self.files_api.set(Some(enabled));
        enabled
    }

    fn temporary_access(
        &self,
        uc: &UnityCatalog,
        model: &str,
        version: &str,
        write: bool,
        now: SystemTime,
    ) -> Result<(Access, SystemTime), CopyError> {
        let operation = if write {
            "MODEL_VERSION_OPERATION_READ_WRITE"
        } else {
            "MODEL_VERSION_OPERATION_READ"
        };
        let body = json!({ "name": model, "version": version, "operation": operation });
        let answer: CredentialsAnswer = uc.rest.post(
            "/api/2.0/mlflow/unity-catalog/model-versions/generate-temporary-credentials",
            &body,
        )?;
        let c = answer.credentials;
        let renew = renew_at(now, c.expiration_time);
        if is_default_storage(&c.storage_mode) {
            return Ok((Access::DefaultStorage, renew));
        }
        let stored = uc.model_version(model, version)?;
        let uri = stored.storage_location.unwrap_or_default();
        if let Some(r2) = c.r2_temp_credentials {
            let access = self.r2_access(uc, model, version, &uri, r2)?;
            return Ok((Access::Bucket(Box::new(access)), renew));
        }
        if let Some(sas) = c.azure_user_delegation_sas {
            let adls = AdlsAccess::parse(&uri, &sas.sas_token).ok_or_else(|| {
                CopyError::upstream(format!(
                    "{}: model version {model}/{version} has an Azure SAS but its storage \
                     location {uri:?} is not an abfss:// URI",
                    uc.server()
                ))
            })?;
            return Ok((Access::Adls(Box::new(adls)), renew));
        }
        let location = Location::parse(&uri);
        let access = match (c.aws_temp_credentials, c.gcp_oauth_token, location) {
            (Some(aws), _, Some(location)) if uri.starts_with("s3") => {
                let credentials = temp_credentials(aws);
                BucketAccess {
                    endpoint: self.endpoint(uc, &location, &credentials)?,
                    location,
                    auth: BucketAuth::S3 {
                        credentials,
                        encryption: encryption(&c.encryption_details),
                    },
                }
            }
            (_, Some(gcp), Some(location)) if uri.starts_with("gs://") => BucketAccess {
                endpoint: Endpoint::gcs(),
                location,
                auth: BucketAuth::Gcs {
                    token: gcp.oauth_token,
                },
            },
            _ => {
                return Err(CopyError::upstream(format!(
                    "{}: no usable temporary credentials for model version {model}/{version} \
                     stored at {uri:?}",
                    uc.server()
                )))
            }
        };
        Ok((Access::Bucket(Box::new(access)), renew))
    }

    /// A version on Cloudflare R2: S3's protocol (SigV4 with the session token) against the
    /// account endpoint its `r2://` location names (or the configured S3 endpoint, which tests
    /// point at an S3 emulator). R2's region is `auto` (Cloudflare's documentation; MLflow asks
    /// `GetBucketLocation` instead) unless `AWS_REGION` says otherwise.
    fn r2_access(
        &self,
        uc: &UnityCatalog,
        model: &str,
        version: &str,
        uri: &str,
        r2: AwsCredentials,
    ) -> Result<BucketAccess, CopyError> {
        let (location, derived) = Location::parse_r2(uri).ok_or_else(|| {
            CopyError::upstream(format!(
                "{}: model version {model}/{version} has R2 credentials but its storage location \
                 {uri:?} is not an r2://<bucket>@<account host>/<path> URI",
                uc.server()
            ))
        })?;
        Ok(BucketAccess {
            endpoint: Endpoint {
                custom: Some(self.s3_endpoint.clone().unwrap_or(derived)),
                region: self.region.clone().unwrap_or_else(|| "auto".into()),
            },
            location,
            auth: BucketAuth::S3 {
                credentials: temp_credentials(r2),
                // MLflow asks R2 for no server-side encryption headers.
                encryption: None,
            },
        })
    }

    /// The endpoint of a bucket, with its region: configured, or asked of S3 once per bucket
    /// (S3 names a bucket's region in `x-amz-bucket-region`, even when it refuses the request).
    fn endpoint(
        &self,
        uc: &UnityCatalog,
        location: &Location,
        credentials: &TempCredentials,
    ) -> Result<Endpoint, CopyError> {
        let guess = self.region.clone().unwrap_or_else(|| "us-east-1".into());
        let mut endpoint = Endpoint {
            custom: self.s3_endpoint.clone(),
            region: guess,
        };
        if self.region.is_some() {
            return Ok(endpoint);
        }
        if let Some(known) = self.regions.borrow().get(&location.bucket) {
            endpoint.region = known.clone();
            return Ok(endpoint);
        }
        let mut probe = endpoint.clone();
        if probe.custom.is_none() {
            probe.custom = Url::parse("https://s3.amazonaws.com").ok();
        }
        let head = s3::object_request(Method::Head, &probe, location, "", None, credentials)?;
        let answer = uc
            .rest
            .transport()
            .send(&head, true)
            .map_err(CopyError::from)?;
        if let Some(region) = answer.header("x-amz-bucket-region") {
            endpoint.region = region.to_string();
        }
        self.regions
            .borrow_mut()
            .insert(location.bucket.clone(), endpoint.region.clone());
        Ok(endpoint)
    }

    fn list(&self, uc: &UnityCatalog, root: &ArtifactRoot) -> Result<Vec<FileEntry>, CopyError> {
        match self.access(uc, root, false)? {
            Access::FilesApi | Access::DefaultStorage => list_files_api(&uc.rest, root),
            Access::Bucket(bucket) => list_bucket(uc, root, &bucket),
            Access::Adls(adls) => list_adls(uc, root, &adls),
        }
    }

    fn request(
        &self,
        uc: &UnityCatalog,
        root: &ArtifactRoot,
        path: &str,
        write: bool,
    ) -> Result<(Request, bool), CopyError> {
        let (model, version) = version_of(root);
        let files_path = format!("{}/{path}", models_path(model, version));
        let method = if write { Method::Put } else { Method::Get };
        Ok(match self.access(uc, root, write)? {
            Access::FilesApi => {
                let mut base = uc.rest.url("/api/2.0/fs/files");
                push_path(&mut base, &models_path(model, version));
                let request = if write {
                    files_put(&base, path)
                } else {
                    Request::new(Method::Get, file_url(&base, path))
                };
                (uc.rest.authorize(request), false)
            }
            Access::DefaultStorage => {
                let route = if write {
                    "create-upload-url"
                } else {
                    "create-download-url"
                };
                let answer: PresignedUrl = uc.rest.post(
                    &format!("/api/2.0/fs/{route}"),
                    &json!({ "path": files_path }),
                )?;
                let url = Url::parse(&answer.url).map_err(|e| {
                    CopyError::upstream(format!(
                        "{}: the presigned URL for {} file {path:?} is not a URL ({e})",
                        uc.server(),
                        root.describe()
                    ))
                })?;
                let mut request = Request::to_issued(method, url);
                for header in answer.headers {
                    request = request.header(&header.name.to_ascii_lowercase(), header.value);
                }
                (request, true)
            }
            Access::Bucket(bucket) => (bucket.object(method, &bucket.location.key(path))?, true),
            // ADLS files are written by create, appends and flush (`adls_appends`).
            Access::Adls(adls) => (Request::to_issued(method, adls.file_url(path)), true),
        })
    }
}

/// Lists a version through `fs/directories` (Files API and default storage alike).
fn list_files_api(rest: &MlflowRest, root: &ArtifactRoot) -> Result<Vec<FileEntry>, CopyError> {
    let (model, version) = version_of(root);
    let base = models_path(model, version);
    // One folder at a time (the run listings' `list_dirs` sends them together).
    let list_dir = |dir: &str| {
        let mut url = rest.url("/api/2.0/fs/directories");
        push_path(&mut url, &base);
        push_path(&mut url, dir);
        let mut entries = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut page_url = url.clone();
            if let Some(t) = &token {
                page_url.query_pairs_mut().append_pair("page_token", t);
            }
            let answer = match rest.send(Request::new(Method::Get, page_url), true) {
                Ok(answer) => answer,
                // A version with no files yet has no folder yet.
                Err(e) if dir.is_empty() && is_missing(&e) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            let page: Page<DirectoryEntry> = serde_json::from_slice(&answer.body).map_err(|e| {
                CopyError::upstream(format!(
                    "{}: listing {}: unexpected answer ({e})",
                    rest.base_display(),
                    root.describe()
                ))
            })?;
            entries.extend(page.items.into_iter().map(|e| {
                FileInfo {
                    path: e
                        .path
                        .strip_prefix(&format!("{base}/"))
                        .unwrap_or(&e.path)
                        .to_string(),
                    is_dir: e.is_directory,
                    file_size: e.file_size,
                }
            }));
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(next) if token.as_deref() != Some(next.as_str()) => token = Some(next),
                _ => return Ok(entries),
            }
        }
        Err(CopyError::upstream(format!(
            "{}: the listing of {} never ends",
            rest.base_display(),
            root.describe()
        )))
    };
    walk(&rest.base_display(), root, |dirs| {
        dirs.iter().map(|dir| list_dir(dir)).collect()
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AdlsListing {
    paths: Vec<AdlsPath>,
}

/// ADLS answers numbers and booleans as strings.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct AdlsPath {
    name: String,
    content_length: Value,
    is_directory: Value,
}

fn list_adls(
    uc: &UnityCatalog,
    root: &ArtifactRoot,
    adls: &AdlsAccess,
) -> Result<Vec<FileEntry>, CopyError> {
    let prefix = format!("{}/", adls.prefix);
    let mut files = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let request = Request::to_issued(Method::Get, adls.list_url(token.as_deref()));
        let answer = uc.rest.transport().send(&request, true)?;
        if !answer.is_success() {
            return Err(storage_refusal(
                &request,
                &answer,
                &format!("to list {}", root.describe()),
            ));
        }
        let page: AdlsListing = serde_json::from_slice(&answer.body).map_err(|e| {
            CopyError::upstream(format!(
                "{}: listing {} in ADLS: unexpected answer ({e})",
                uc.server(),
                root.describe()
            ))
        })?;
        for entry in page.paths {
            let is_dir = entry.is_directory == "true" || entry.is_directory == true;
            let size = match &entry.content_length {
                Value::String(s) => s.parse().unwrap_or(0),
                other => other.as_u64().unwrap_or(0),
            };
            match entry.name.strip_prefix(&prefix) {
                Some(path) if !is_dir && !path.is_empty() => files.push(FileEntry {
                    path: path.to_string(),
                    size,
                }),
                _ => {}
            }
        }
        let next = answer.header("x-ms-continuation").map(str::to_string);
        match next.filter(|n| !n.is_empty()) {
            Some(next) if token.as_deref() != Some(next.as_str()) => token = Some(next),
            _ => {
                files.sort_by(|a, b| a.path.cmp(&b.path));
                return Ok(files);
            }
        }
    }
    Err(CopyError::upstream(format!(
        "{}: the ADLS listing of {} never ends",
        uc.server(),
        root.describe()
    )))
}

fn is_missing(e: &CopyError) -> bool {
    e.has_code("NOT_FOUND") || e.has_code("RESOURCE_DOES_NOT_EXIST")
}

fn list_bucket(
    uc: &UnityCatalog,
    root: &ArtifactRoot,
    bucket: &BucketAccess,
) -> Result<Vec<FileEntry>, CopyError> {
    let location = &bucket.location;
    let prefix = format!("{}/", location.prefix);
    let mut files = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let request = bucket.list_page(token.as_deref())?;
        let body = send_signed(&uc.rest, &request, "(listing)")?;
        let page = s3::parse_listing(&body).map_err(|e| {
            CopyError::upstream(format!(
                "{}: listing {} in s3://{}/{prefix}: {e}",
                uc.server(),
                root.describe(),
                location.bucket
            ))
        })?;
        for (key, size) in page.objects {
            if let Some(path) = key.strip_prefix(&prefix).filter(|p| !p.is_empty()) {
                files.push(FileEntry {
                    path: path.to_string(),
                    size,
                });
            }
        }
        match page.next {
            Some(next) if token.as_deref() != Some(next.as_str()) => token = Some(next),
            _ => {
                files.sort_by(|a, b| a.path.cmp(&b.path));
                return Ok(files);
            }
        }
    }
    Err(CopyError::upstream(format!(
        "{}: the storage listing of {} never ends",
        uc.server(),
        root.describe()
    )))
}

/// One version file written to S3 as a multipart upload, each step signed with the version's
/// temporary credentials (fresh ones after a refusal).
struct VersionFileParts {
    uc: Rc<UnityCatalog>,
    files: Rc<VersionFiles>,
    root: ArtifactRoot,
    key: String,
    bucket: BucketAccess,
    lengths: Vec<u64>,
    upload_id: String,
}

impl VersionFileParts {
    fn url(&self) -> Url {
        self.bucket
            .endpoint
            .url(&self.bucket.location.bucket, &self.key)
    }

    fn refresh(&mut self) -> Result<(), CopyError> {
        self.files.forget(&self.root, true);
        if let Access::Bucket(bucket) = self.files.access(&self.uc, &self.root, true)? {
            self.bucket = *bucket;
        }
        Ok(())
    }

    fn send(&self, step: s3::MultipartStep) -> Result<Vec<u8>, CopyError> {
        let request = self
            .bucket
            .authorize(s3::multipart_request(self.url(), step))?;
        send_signed(&self.uc.rest, &request, &self.key)
    }
}

impl Multipart for VersionFileParts {
    fn begin(&mut self) -> Result<Vec<u64>, CopyError> {
        let created = self.send(s3::MultipartStep::Create(self.bucket.encryption()))?;
        self.upload_id = s3::parse_upload_id(&created).map_err(|e| {
            CopyError::upstream(format!(
                "{}: starting the multipart upload of {} file {:?}: {e}",
                self.uc.server(),
                self.root.describe(),
                self.key
            ))
        })?;
        Ok(self.lengths.clone())
    }

    fn part(&mut self, index: usize, refresh: bool) -> Result<Request, CopyError> {
        if refresh {
            self.refresh()?;
        }
        let step = s3::MultipartStep::Part {
            number: index + 1,
            upload_id: &self.upload_id,
        };
        self.bucket
            .authorize(s3::multipart_request(self.url(), step))
    }

    fn complete(&mut self, answers: &[Vec<(String, String)>]) -> Result<(), CopyError> {
        let etags = answers
            .iter()
            .enumerate()
            .map(|(index, headers)| {
                let etag = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("etag"));
                etag.map(|(_, v)| v.clone()).ok_or_else(|| {
                    CopyError::upstream(format!(
                        "{}: S3 gave no ETag for part {} of {:?}",
                        self.uc.server(),
                        index + 1,
                        self.key
                    ))
                })
            })
            .collect::<Result<Vec<String>, CopyError>>()?;
        let upload_id = self.upload_id.clone();
        let step = || s3::MultipartStep::Complete {
            upload_id: &upload_id,
            etags: &etags,
        };
        match self.send(step()) {
            // The credentials may have expired since the last part.
            Err(e) if error_refuses_credentials(&e) => {
                self.refresh()?;
                self.send(step()).map(drop)
            }
            other => other.map(drop),
        }
    }

    fn abort(&mut self) {
        if self.upload_id.is_empty() {
            return;
        }
        // Best effort: the error that ended the file is the one to report.
        let step = s3::MultipartStep::Abort {
            upload_id: &self.upload_id,
        };
        let _ = self.send(step);
    }
}

fn is_version(root: &ArtifactRoot) -> bool {
    matches!(root.owner, Owner::Version { .. })
}

impl Artifacts for UcArtifacts {
    fn list(&self, root: &ArtifactRoot) -> Result<Vec<FileEntry>, CopyError> {
        if !is_version(root) {
            return self.workspace.list(root);
        }
        self.files.list(&self.uc, root)
    }

    fn downloads(&self, root: &ArtifactRoot, paths: &[&str]) -> Result<Vec<Download>, CopyError> {
        if !is_version(root) {
            return self.workspace.downloads(root, paths);
        }
        paths
            .iter()
            .map(|path| {
                let (request, signed) = self.files.request(&self.uc, root, path, false)?;
                Ok(if signed {
                    Download::signed(request)
                } else {
                    Download::get(request)
                })
            })
            .collect()
    }

    fn uploads(&self, root: &ArtifactRoot, files: &[&FileEntry]) -> Result<Vec<Upload>, CopyError> {
        if !is_version(root) {
            return self.workspace.uploads(root, files);
        }
        files
            .iter()
            .map(|file| {
                if let Some(parts) = self.s3_parts(root, file)? {
                    return Ok(Upload::parts(Box::new(parts)));
                }
                if let Some(appends) = self.adls_appends(root, &file.path, file.size)? {
                    return Ok(Upload::parts(Box::new(appends)));
                }
                let (request, signed) = self.files.request(&self.uc, root, &file.path, true)?;
                Ok(if signed {
                    Upload::signed(request)
                } else {
                    Upload::put(request)
                })
            })
            .collect()
    }

    fn read_small(&self, root: &ArtifactRoot, path: &str) -> Result<Vec<u8>, CopyError> {
        if !is_version(root) {
            return self.workspace.read_small(root, path);
        }
        self.once_more_if_refused(root, false, || {
            let (request, signed) = self.files.request(&self.uc, root, path, false)?;
            match signed {
                true => send_signed(&self.uc.rest, &request, path),
                false => Ok(self.uc.rest.send(request, true)?.body),
            }
        })
    }

    fn write_small(&self, root: &ArtifactRoot, path: &str, body: Vec<u8>) -> Result<(), CopyError> {
        if !is_version(root) {
            return self.workspace.write_small(root, path, body);
        }
        if let Some(mut appends) = self.adls_appends(root, path, body.len() as u64)? {
            return self.uc.rest.transport().send_parts(&mut appends, &body);
        }
        self.once_more_if_refused(root, true, || {
            let (mut request, signed) = self.files.request(&self.uc, root, path, true)?;
            // The signature covers the headers, not the body (UNSIGNED-PAYLOAD).
            request.body = body.clone();
            match signed {
                true => send_signed(&self.uc.rest, &request, path).map(drop),
                false => self.uc.rest.send(request, true).map(drop),
            }
        })
    }
}

impl UcArtifacts {
    /// A file too large for one S3 PUT (or above MLflow's multipart threshold) on S3 storage:
    /// written as a multipart upload signed with the version's credentials.
    fn s3_parts(
        &self,
        root: &ArtifactRoot,
        file: &FileEntry,
    ) -> Result<Option<VersionFileParts>, CopyError> {
        let sizes = &self.files.part_sizes;
        if !sizes.s3_in_parts(file.size) {
            return Ok(None);
        }
        let Access::Bucket(bucket) = self.files.access(&self.uc, root, true)? else {
            return Ok(None);
        };
        if !matches!(bucket.auth, BucketAuth::S3 { .. }) {
            return Ok(None);
        }
        Ok(Some(VersionFileParts {
            uc: self.uc.clone(),
            files: self.files.clone(),
            root: root.clone(),
            key: bucket.location.key(&file.path),
            bucket: *bucket,
            lengths: sizes.s3(file.size)?,
            upload_id: String::new(),
        }))
    }

    /// A file for ADLS Gen2 storage: created, appended to part by part, flushed (the protocol
    /// workspace artifacts on ADLS use), with the version's SAS, fetched again when refused.
    fn adls_appends(
        &self,
        root: &ArtifactRoot,
        path: &str,
        size: u64,
    ) -> Result<Option<AdlsAppends>, CopyError> {
        let Access::Adls(adls) = self.files.access(&self.uc, root, true)? else {
            return Ok(None);
        };
        let (uc, files) = (self.uc.clone(), self.files.clone());
        let (fresh_root, fresh_path) = (root.clone(), path.to_string());
        let fresh: FreshCredentials = Rc::new(move || {
            files.forget(&fresh_root, true);
            match files.access(&uc, &fresh_root, true)? {
                Access::Adls(adls) => Ok(adls.credential(&fresh_path)),
                _ => Err(CopyError::upstream(format!(
                    "{}: {} moved off ADLS during the copy",
                    uc.server(),
                    fresh_root.describe()
                ))),
            }
        });
        Ok(Some(AdlsAppends {
            target: Target {
                rest: self.uc.rest.clone(),
                root: root.clone(),
                path: path.to_string(),
                fresh: Some(fresh),
            },
            info: adls.credential(path),
            lengths: self.files.part_sizes.adls_appends(size),
        }))
    }

    /// Runs a small transfer again with fresh credentials when storage refused the ones it
    /// had (expired URL or session token), as streamed files are.
    fn once_more_if_refused<T>(
        &self,
        root: &ArtifactRoot,
        write: bool,
        transfer: impl Fn() -> Result<T, CopyError>,
    ) -> Result<T, CopyError> {
        match transfer() {
            Err(e) if error_refuses_credentials(&e) => {
                self.files.forget(root, write);
                transfer()
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_api_variable_decides_both_ways() {
        assert!(files_api_choice("TRUE").unwrap() && files_api_choice("1").unwrap());
        assert!(!files_api_choice("false").unwrap() && !files_api_choice("0").unwrap());
        assert!(files_api_choice("yes").is_err());
        let files = |value: &'static str| {
            VersionFiles::new(Side::Dst, &move |k| {
                (k == FILES_API_VAR).then(|| value.into())
            })
        };
        assert_eq!(files("false").unwrap().files_api.get(), Some(false));
        assert_eq!(files("true").unwrap().files_api.get(), Some(true));
    }

    #[test]
    fn credentials_are_renewed_before_they_expire() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        // An hour: renewed a minute before.
        let hour = renew_at(now, Some(1_000_000 + 3_600_000));
        assert_eq!(hour, now + Duration::from_secs(3_540));
        // Four seconds: renewed after three.
        let short = renew_at(now, Some(1_004_000));
        assert_eq!(short, now + Duration::from_secs(3));
        // Unknown expiry: five minutes.
        assert_eq!(renew_at(now, None), now + Duration::from_secs(300));
    }

    // Not verified against ADLS itself (azurite has no DFS endpoint): the URLs built.
    #[test]
    fn adls_locations_become_dfs_urls_with_the_sas() {
        let uri = "abfss://models@acct.dfs.core.windows.net/metastore/models/a/versions/b";
        let adls = AdlsAccess::parse(uri, "?sv=2024&sig=abc%3D").unwrap();
        assert_eq!(
            adls.file_url("data/model pkl").as_str(),
            "https://acct.dfs.core.windows.net/models/metastore/models/a/versions/b/data/model%20pkl?sv=2024&sig=abc%3D"
        );
        assert_eq!(
            adls.list_url(Some("c1")).as_str(),
            "https://acct.dfs.core.windows.net/models?resource=filesystem&directory=metastore%2Fmodels%2Fa%2Fversions%2Fb&recursive=true&continuation=c1&sv=2024&sig=abc%3D"
        );
        assert!(AdlsAccess::parse("s3://b/k", "sig").is_none());
        assert!(AdlsAccess::parse("abfss://no-account/x", "sig").is_none());
    }

    // Not verified against GCS itself (no emulator): the request shapes of its XML API.
    #[test]
    fn gcs_requests_carry_the_oauth_token_to_gcs_only() {
        let bucket = BucketAccess {
            endpoint: Endpoint::gcs(),
            location: Location::parse("gs://uc-bucket/models/a/versions/b").unwrap(),
            auth: BucketAuth::Gcs {
                token: "ya29.token".into(),
            },
        };
        let put = bucket
            .object(Method::Put, &bucket.location.key("data/model.pkl"))
            .unwrap();
        assert_eq!(
            put.url.as_str(),
            "https://storage.googleapis.com/uc-bucket/models/a/versions/b/data/model.pkl"
        );
        assert!(put
            .headers
            .contains(&("authorization".into(), "Bearer ya29.token".into())));
        let list = bucket.list_page(Some("next")).unwrap();
        assert_eq!(
            list.url.as_str(),
            "https://storage.googleapis.com/uc-bucket/?list-type=2&prefix=models%2Fa%2Fversions%2Fb%2F&continuation-token=next"
        );
    }

    #[test]
    fn versions_have_files_api_paths_and_encryption_by_name_or_number() {
        assert_eq!(
            models_path("main.default.m", "3"),
            "/Models/main/default/m/3"
        );
        let kms: EncryptionDetails = serde_json::from_value(json!({"sse_encryption_details":
            {"algorithm": "AWS_SSE_KMS", "aws_kms_key_arn": "arn:k"}}))
        .unwrap();
        assert_eq!(
            encryption(&kms),
            Some(Encryption::Kms {
                key_arn: Some("arn:k".into())
            })
        );
        let s3: EncryptionDetails =
            serde_json::from_value(json!({"sse_encryption_details": {"algorithm": 1}})).unwrap();
        assert_eq!(encryption(&s3), Some(Encryption::S3Managed));
        assert_eq!(encryption(&EncryptionDetails::default()), None);
        assert!(is_default_storage(&json!("DEFAULT_STORAGE")) && is_default_storage(&json!(2)));
    }
}
