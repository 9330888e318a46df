//! Large and cloud-specific uploads of workspace artifacts, as MLflow's client writes them
//! (`databricks_artifact_repo.py`, `azure/client.py`): the protocols behind
//! `transport::Multipart`.
//!
//! - S3 (`AWS_PRESIGNED_URL`) above `MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE`: the workspace's
//!   `create-multipart-upload` gives one presigned URL per part, `get-presigned-upload-part-url`
//!   a fresh one, `complete-multipart-upload` commits the parts by their ETags, and the
//!   presigned `abort` URL discards them.
//! - Azure Blob (`AZURE_SAS_URI`), every file: Put Block per part, then Put Block List.
//!   Uncommitted blocks need no abort: Azure drops them after a week.
//! - ADLS Gen2 (`AZURE_ADLS_GEN2_SAS_URI`), every file: create, an append per part, flush.
//!   An aborted file stays as it was created (empty): a retried copy overwrites it.
//!
//! Only the headers the workspace returned that Azure accepts for an operation go along
//! (MLflow's lists), so that a header meant for another operation never fails one.

use super::{credential_infos, signed_request, CredentialInfo, Direction};
use crate::api::CopyError;
use crate::stores::mlflow::MlflowRest;
use crate::stores::model::ArtifactRoot;
use crate::transport::{storage_refusal, Method, Multipart, Request, Response};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;
use url::Url;

const MIB: u64 = 1 << 20;
/// What S3 allows a part (except the last, which may be smaller) and a multipart upload.
const S3_MIN_PART: u64 = 5 * MIB;
const S3_MAX_PART: u64 = 5 << 30;
const S3_MAX_PARTS: u64 = 10_000;
/// The largest single S3 PUT; larger files must go in parts.
pub(in crate::stores::databricks) const S3_MAX_PUT: u64 = 5 << 30;
/// What Azure allows a block, and blocks in a blob.
const AZURE_MAX_BLOCK: u64 = 4000 * MIB;
const AZURE_MAX_BLOCKS: u64 = 50_000;

pub const MINIMUM_FILE_SIZE_VAR: &str = "MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE";
pub const CHUNK_SIZE_VAR: &str = "MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE";

/// When and how finely files are cut, from MLflow's own variables.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::stores::databricks) struct PartSizes {
    /// Files larger than this go to S3 in parts.
    pub threshold: u64,
    /// The size of each part (but the last).
    pub chunk: u64,
}

impl PartSizes {
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<PartSizes, CopyError> {
        let bytes = |name: &str, default: u64| match env(name).filter(|v| !v.trim().is_empty()) {
            None => Ok(default),
            Some(raw) => match raw.trim().parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(CopyError::bad_input(format!(
                    "{name}={raw:?} is not a positive number of bytes"
                ))),
            },
        };
        Ok(PartSizes {
            threshold: bytes(MINIMUM_FILE_SIZE_VAR, 500 * MIB)?,
            chunk: bytes(CHUNK_SIZE_VAR, 10 * MIB)?,
        })
    }

    /// Whether a run artifact of `size` bytes goes to S3 in parts: above MLflow's threshold,
    /// and always above what one PUT may carry.
    pub fn s3_in_parts(&self, size: u64) -> bool {
        size > self.threshold.min(S3_MAX_PUT)
    }

    /// The parts of an S3 upload: the chunk size, grown when the file would need more than
    /// 10,000 parts. A chunk size S3 does not allow is refused, as MLflow does.
    pub fn s3(&self, size: u64) -> Result<Vec<u64>, CopyError> {
        if !(S3_MIN_PART..=S3_MAX_PART).contains(&self.chunk) {
            return Err(CopyError::bad_input(format!(
                "{CHUNK_SIZE_VAR}={} must be from 5 MiB to 5 GiB for S3 multipart uploads",
                self.chunk
            )));
        }
        Ok(cut(size, self.chunk.max(size.div_ceil(S3_MAX_PARTS))))
    }

    /// The blocks of an Azure blob: the chunk size, within what a block and a blob allow.
    pub fn azure_blocks(&self, size: u64) -> Vec<u64> {
        let chunk = self.chunk.max(size.div_ceil(AZURE_MAX_BLOCKS));
        cut(size, chunk.min(AZURE_MAX_BLOCK))
    }

    /// The appends of an ADLS file (an append may be as large as a block).
    pub fn adls_appends(&self, size: u64) -> Vec<u64> {
        cut(size, self.chunk.min(AZURE_MAX_BLOCK))
    }
}

/// `size` bytes in parts of `chunk` bytes, the last one shorter (none for an empty file).
fn cut(size: u64, chunk: u64) -> Vec<u64> {
    let full = size / chunk;
    let mut parts = vec![chunk; full as usize];
    if !size.is_multiple_of(chunk) {
        parts.push(size % chunk);
    }
    parts
}

/// One artifact being written, for requests and messages.
pub(in crate::stores::databricks) struct Target {
    pub rest: MlflowRest,
    pub root: ArtifactRoot,
    pub path: String,
    /// Where fresh credentials come from, when not from the workspace's credential API (a
    /// Unity Catalog version's temporary credentials).
    pub fresh: Option<FreshCredentials>,
}

/// Fetches fresh credentials for one file.
pub type FreshCredentials = std::rc::Rc<dyn Fn() -> Result<CredentialInfo, CopyError>>;

impl Target {
    pub(super) fn describe(&self) -> String {
        format!(
            "{}: {} artifact {:?}",
            self.rest.base_display(),
            self.root.describe(),
            self.path
        )
    }

    /// Fresh write credentials for the file (its signed URL expired).
    fn fresh_credentials(&self) -> Result<CredentialInfo, CopyError> {
        if let Some(fresh) = &self.fresh {
            return fresh();
        }
        let mut infos = credential_infos(&self.rest, &self.root, &[&self.path], Direction::Write)?;
        Ok(infos.remove(0))
    }

    /// Sends a storage request (signed: no credentials of ours); a non-2xx answer is an error
    /// naming the artifact.
    fn send(&self, request: &Request, what: &str) -> Result<Response, CopyError> {
        let response = self.rest.transport().send(request, true)?;
        if response.is_success() {
            return Ok(response);
        }
        let refusal = storage_refusal(request, &response, &format!("to {what}"));
        Err(CopyError {
            message: format!("{}: {}", self.describe(), refusal.message),
            ..refusal
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CreatedUpload {
    upload_id: String,
    upload_credential_infos: Vec<CredentialInfo>,
    abort_credential_info: Option<CredentialInfo>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PartUrl {
    upload_credential_info: CredentialInfo,
}

/// A run artifact written to S3 as a multipart upload through the workspace.
pub(super) struct S3Parts {
    pub target: Target,
    pub run_id: String,
    pub lengths: Vec<u64>,
    created: CreatedUpload,
}

impl S3Parts {
    pub fn new(target: Target, run_id: String, lengths: Vec<u64>) -> S3Parts {
        S3Parts {
            target,
            run_id,
            lengths,
            created: CreatedUpload::default(),
        }
    }
}

impl Multipart for S3Parts {
    fn begin(&mut self) -> Result<Vec<u64>, CopyError> {
        let body = json!({
            "run_id": self.run_id,
            "path": self.target.path,
            "num_parts": self.lengths.len(),
        });
        // A create: not repeated when the workspace may have acted (a lost answer would leave
        // an upload nobody aborts).
        self.created = self
            .target
            .rest
            .create("/api/2.0/mlflow/artifacts/create-multipart-upload", &body)?;
        if self.created.upload_credential_infos.len() != self.lengths.len() {
            let count = self.created.upload_credential_infos.len();
            self.abort();
            return Err(CopyError::upstream(format!(
                "{}: asked for {} part URLs, the workspace gave {count}",
                self.target.describe(),
                self.lengths.len()
            )));
        }
        Ok(self.lengths.clone())
    }

    fn part(&mut self, index: usize, refresh: bool) -> Result<Request, CopyError> {
        if refresh {
            let part_number = (index + 1).to_string();
            let fresh: PartUrl = self.target.rest.get(
                "/api/2.0/mlflow/artifacts/get-presigned-upload-part-url",
                &[
                    ("run_id", self.run_id.as_str()),
                    ("path", self.target.path.as_str()),
                    ("upload_id", self.created.upload_id.as_str()),
                    ("part_number", part_number.as_str()),
                ],
            )?;
            self.created.upload_credential_infos[index] = fresh.upload_credential_info;
        }
        let info = &self.created.upload_credential_infos[index];
        signed_request(&self.target.rest, &self.target.root, info, Direction::Write)
    }

    fn complete(&mut self, answers: &[Vec<(String, String)>]) -> Result<(), CopyError> {
        let mut part_etags = Vec::with_capacity(answers.len());
        for (index, headers) in answers.iter().enumerate() {
            let etag = header(headers, "etag").ok_or_else(|| {
                CopyError::upstream(format!(
                    "{}: storage gave no ETag for part {}",
                    self.target.describe(),
                    index + 1
                ))
            })?;
            part_etags.push(json!({ "part_number": index + 1, "etag": etag }));
        }
        let body = json!({
            "run_id": self.run_id,
            "path": self.target.path,
            "upload_id": self.created.upload_id,
            "part_etags": part_etags,
        });
        let _: serde_json::Value = self
            .target
            .rest
            .post("/api/2.0/mlflow/artifacts/complete-multipart-upload", &body)?;
        Ok(())
    }

    fn abort(&mut self) {
        let Some(info) = &self.created.abort_credential_info else {
            return;
        };
        let Ok(url) = Url::parse(&info.signed_uri) else {
            return;
        };
        let request = with_headers(
            Request::to_issued(Method::Delete, url),
            &info.headers,
            |_| true,
        );
        // Best effort: the error that ended the file is the one to report.
        let _ = self.target.send(&request, "abort the multipart upload");
    }
}

/// A file written to Azure Blob storage as blocks and a block list.
pub(super) struct BlobBlocks {
    pub target: Target,
    pub info: CredentialInfo,
    pub lengths: Vec<u64>,
}

impl BlobBlocks {
    /// Block ids must all have the same length within a blob; the part's index makes a
    /// retried block replace its earlier self.
    fn block_id(index: usize) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("mlflow-copy-{index:08}"))
    }

    fn refresh(&mut self) -> Result<(), CopyError> {
        self.info = self.target.fresh_credentials()?;
        Ok(())
    }
}

impl Multipart for BlobBlocks {
    fn begin(&mut self) -> Result<Vec<u64>, CopyError> {
        Ok(self.lengths.clone())
    }

    fn part(&mut self, index: usize, refresh: bool) -> Result<Request, CopyError> {
        if refresh {
            self.refresh()?;
        }
        let url = sas_url(&self.target, &self.info)?;
        let url = with_query(
            url,
            &[("comp", "block"), ("blockid", &Self::block_id(index))],
        );
        let request = Request::to_issued(Method::Put, url).header("x-ms-blob-type", "BlockBlob");
        Ok(with_headers(
            request,
            &self.info.headers,
            is_put_block_header,
        ))
    }

    fn complete(&mut self, answers: &[Vec<(String, String)>]) -> Result<(), CopyError> {
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<BlockList>\n");
        for index in 0..answers.len() {
            xml.push_str(&format!(
                "<Uncommitted>{}</Uncommitted>\n",
                Self::block_id(index)
            ));
        }
        xml.push_str("</BlockList>");
        // The credentials may have expired since the last block.
        let body = xml.into_bytes();
        send_refreshing(
            &self.target,
            &mut self.info,
            "commit the block list",
            |t, info| {
                let url = with_query(sas_url(t, info)?, &[("comp", "blocklist")]);
                let mut request = with_headers(
                    Request::to_issued(Method::Put, url),
                    &info.headers,
                    is_put_block_list_header,
                );
                request.body = body.clone();
                Ok(request)
            },
        )
    }

    fn abort(&mut self) {}
}

/// A file written to ADLS Gen2 storage: created, appended to part by part, flushed.
pub(in crate::stores::databricks) struct AdlsAppends {
    pub target: Target,
    pub info: CredentialInfo,
    pub lengths: Vec<u64>,
}

impl Multipart for AdlsAppends {
    fn begin(&mut self) -> Result<Vec<u64>, CopyError> {
        send_refreshing(
            &self.target,
            &mut self.info,
            "create the file",
            |t, info| {
                let url = with_query(sas_url(t, info)?, &[("resource", "file")]);
                Ok(with_headers(
                    Request::to_issued(Method::Put, url),
                    &info.headers,
                    is_adls_put_header,
                ))
            },
        )?;
        Ok(self.lengths.clone())
    }

    fn part(&mut self, index: usize, refresh: bool) -> Result<Request, CopyError> {
        if refresh {
            self.info = self.target.fresh_credentials()?;
        }
        let position: u64 = self.lengths[..index].iter().sum();
        adls_patch(&self.target, &self.info, "append", position)
    }

    fn complete(&mut self, _answers: &[Vec<(String, String)>]) -> Result<(), CopyError> {
        let size: u64 = self.lengths.iter().sum();
        send_refreshing(&self.target, &mut self.info, "flush the file", |t, info| {
            adls_patch(t, info, "flush", size)
        })
    }

    fn abort(&mut self) {}
}

/// Sends a storage request built from the current credentials; refused (they expired), once
/// more with fresh ones.
fn send_refreshing(
    target: &Target,
    info: &mut CredentialInfo,
    what: &str,
    build: impl Fn(&Target, &CredentialInfo) -> Result<Request, CopyError>,
) -> Result<(), CopyError> {
    match target.send(&build(target, info)?, what) {
        Err(e) if e.kind == crate::api::ErrorKind::Unauthorized => {
            *info = target.fresh_credentials()?;
            target.send(&build(target, info)?, what).map(drop)
        }
        other => other.map(drop),
    }
}

/// An ADLS `PATCH` (`append` at a position, or `flush` at the file's size).
fn adls_patch(
    target: &Target,
    info: &CredentialInfo,
    action: &str,
    position: u64,
) -> Result<Request, CopyError> {
    let url = with_query(
        sas_url(target, info)?,
        &[("action", action), ("position", &position.to_string())],
    );
    Ok(with_headers(
        Request::to_issued(Method::Patch, url),
        &info.headers,
        is_adls_patch_header,
    ))
}

fn sas_url(target: &Target, info: &CredentialInfo) -> Result<Url, CopyError> {
    Url::parse(&info.signed_uri).map_err(|e| {
        CopyError::upstream(format!(
            "{}: the signed URL is not a URL ({e})",
            target.describe()
        ))
    })
}

/// The URL with these query parameters added (the SAS already there is kept as it is).
pub(super) fn with_query(mut url: Url, pairs: &[(&str, &str)]) -> Url {
    url.query_pairs_mut().extend_pairs(pairs);
    url
}

/// The request with the returned headers that `allowed` accepts.
pub(super) fn with_headers(
    mut request: Request,
    headers: &[super::Header],
    allowed: impl Fn(&str) -> bool,
) -> Request {
    for h in headers
        .iter()
        .filter(|h| allowed(&h.name.to_ascii_lowercase()))
    {
        request = request.header(&h.name.to_ascii_lowercase(), h.value.clone());
    }
    request
}

pub(super) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Headers Azure accepts on Put Block (MLflow's list, lower-cased).
fn is_put_block_header(name: &str) -> bool {
    [
        "authorization",
        "x-ms-date",
        "x-ms-version",
        "content-md5",
        "x-ms-content-crc64",
        "x-ms-encryption-scope",
        "x-ms-lease-id",
        "x-ms-client-request-id",
        "x-ms-encryption-key",
        "x-ms-encryption-key-sha256",
        "x-ms-encryption-algorithm",
    ]
    .contains(&name)
}

/// Headers Azure accepts on Put Block List (MLflow's list, lower-cased).
fn is_put_block_list_header(name: &str) -> bool {
    name.starts_with("x-ms-meta-")
        || [
            "authorization",
            "date",
            "x-ms-date",
            "x-ms-version",
            "content-md5",
            "x-ms-content-crc64",
            "x-ms-blob-cache-control",
            "x-ms-blob-content-type",
            "x-ms-blob-content-encoding",
            "x-ms-blob-content-language",
            "x-ms-blob-content-md5",
            "x-ms-encryption-scope",
            "x-ms-tags",
            "x-ms-lease-id",
            "x-ms-client-request-id",
            "x-ms-blob-content-disposition",
            "x-ms-access-tier",
            "if-modified-since",
            "if-unmodified-since",
            "if-match",
            "if-none-match",
        ]
        .contains(&name)
}

/// Headers ADLS accepts on a path create (MLflow's list, lower-cased).
fn is_adls_put_header(name: &str) -> bool {
    [
        "cache-control",
        "content-encoding",
        "content-language",
        "content-disposition",
        "x-ms-cache-control",
        "x-ms-content-type",
        "x-ms-content-encoding",
        "x-ms-content-language",
        "x-ms-content-disposition",
        "x-ms-rename-source",
        "x-ms-lease-id",
        "x-ms-properties",
        "x-ms-permissions",
        "x-ms-umask",
        "x-ms-owner",
        "x-ms-group",
        "x-ms-acl",
        "x-ms-proposed-lease-id",
        "x-ms-expiry-option",
        "x-ms-expiry-time",
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
        "x-ms-source-if-match",
        "x-ms-source-if-none-match",
        "x-ms-source-if-modified-since",
        "x-ms-source-if-unmodified-since",
        "x-ms-encryption-key",
        "x-ms-encryption-key-sha256",
        "x-ms-encryption-algorithm",
        "x-ms-encryption-context",
        "x-ms-client-request-id",
        "x-ms-date",
        "x-ms-version",
    ]
    .contains(&name)
}

/// Headers ADLS accepts on a path update: append, flush (MLflow's list, lower-cased).
fn is_adls_patch_header(name: &str) -> bool {
    [
        "content-md5",
        "x-ms-lease-id",
        "x-ms-cache-control",
        "x-ms-content-type",
        "x-ms-content-disposition",
        "x-ms-content-encoding",
        "x-ms-content-language",
        "x-ms-content-md5",
        "x-ms-properties",
        "x-ms-owner",
        "x-ms-group",
        "x-ms-permissions",
        "x-ms-acl",
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
        "x-ms-encryption-key",
        "x-ms-encryption-key-sha256",
        "x-ms-encryption-algorithm",
        "x-ms-encryption-context",
        "x-ms-client-request-id",
        "x-ms-date",
        "x-ms-version",
    ]
    .contains(&name)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::credentials::{Auth, Side, StaticAuth};
    use crate::stores::model::Owner;
    use crate::transport::retry::RetryPolicy;
    use crate::transport::{
        send_each, Attempts, Http, NextJob, SendError, Slots, StreamEvent, Transport,
    };
    use crate::uri::ServerUri;
    use std::cell::RefCell;
    use std::rc::Rc;

    pub(in crate::stores::databricks) type Answer = Box<dyn Fn(&Request) -> (u16, String)>;

    /// Answers every request with `answer`, and records them.
    struct Recorder {
        answer: Answer,
        sent: Rc<RefCell<Vec<Request>>>,
    }

    impl Http for Recorder {
        fn send(&self, request: &Request) -> Result<Response, SendError> {
            self.sent.borrow_mut().push(request.clone());
            let (status, body) = (self.answer)(request);
            let etag = format!("\"etag-{}\"", request.url.query().unwrap_or_default().len());
            Ok(Response {
                status,
                headers: vec![("ETag".into(), etag)],
                body: body.into_bytes(),
            })
        }
        /// Small bodies are sent whole: requests only, one after the other.
        fn stream(
            &self,
            _: NextJob,
            _: Slots,
            calls: &mut dyn Attempts,
            _: &mut dyn FnMut(StreamEvent),
        ) {
            send_each(self, calls)
        }

        fn digest(
            &self,
            _: &[(Request, u64)],
            _: usize,
        ) -> Vec<Result<crate::transport::Digest, crate::transport::StreamFailure>> {
            unreachable!("these tests read no file through")
        }
    }

    /// A run artifact's target on a scripted workspace, and the requests it was sent.
    pub(in crate::stores::databricks) fn target(
        answer: Answer,
    ) -> (Target, Rc<RefCell<Vec<Request>>>) {
        let sent = Rc::new(RefCell::new(Vec::new()));
        let http = Recorder {
            answer,
            sent: sent.clone(),
        };
        let policy = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        };
        let transport = Rc::new(Transport::new(Box::new(http), policy));
        let ServerUri::Http(base) = ServerUri::parse("https://ws.example.com").unwrap() else {
            unreachable!()
        };
        let auth = StaticAuth {
            auth: Auth::from_env(Side::Dst, |_| None),
            side: Side::Dst,
        };
        let rest = MlflowRest::new(base, Side::Dst, Rc::new(auth), transport);
        let root = ArtifactRoot {
            owner: Owner::Run("r1".into()),
            uri: "dbfs:/databricks/mlflow-tracking/1/r1/artifacts".into(),
        };
        let path = "model/big.bin".to_string();
        (
            Target {
                rest,
                root,
                path,
                fresh: None,
            },
            sent,
        )
    }

    fn info(uri: &str, headers: &[(&str, &str)]) -> CredentialInfo {
        CredentialInfo {
            path: "model/big.bin".into(),
            signed_uri: uri.into(),
            headers: headers
                .iter()
                .map(|(n, v)| super::super::Header {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            kind: json!("AZURE_SAS_URI"),
        }
    }

    /// A request as `METHOD path?query [headers] body`, for comparing sequences.
    fn line(r: &Request) -> String {
        let mut headers: Vec<String> = r.headers.iter().map(|(k, v)| format!("{k}={v}")).collect();
        headers.sort();
        format!(
            "{} {}?{} [{}] {}",
            r.method.as_str(),
            r.url.path(),
            r.url.query().unwrap_or_default(),
            headers.join(","),
            String::from_utf8_lossy(&r.body)
        )
    }

    #[test]
    fn part_sizes_follow_mlflow_variables_and_storage_limits() {
        let env = crate::transport::fixed_env;
        let default = PartSizes::from_env(&env(&[])).unwrap();
        assert_eq!((default.threshold, default.chunk), (500 * MIB, 10 * MIB));
        assert!(!default.s3_in_parts(500 * MIB) && default.s3_in_parts(500 * MIB + 1));
        assert_eq!(
            default.s3(25 * MIB).unwrap(),
            vec![10 * MIB, 10 * MIB, 5 * MIB]
        );
        // 200 GiB in 10 MiB parts would be 20,480 parts: the parts grow to stay within 10,000.
        let big = default.s3(200 << 30).unwrap();
        assert!(big.len() <= 10_000 && big[0] > 10 * MIB, "{}", big.len());
        assert_eq!(big.iter().sum::<u64>(), 200 << 30);
        assert_eq!(default.azure_blocks(0), Vec::<u64>::new());
        // Above 5 GiB S3 needs parts whatever the threshold.
        let high = PartSizes::from_env(&env(&[(MINIMUM_FILE_SIZE_VAR, "99999999999999")])).unwrap();
        assert!(high.s3_in_parts(S3_MAX_PUT + 1) && !high.s3_in_parts(S3_MAX_PUT));
        let small = PartSizes::from_env(&env(&[(CHUNK_SIZE_VAR, "1048576")])).unwrap();
        assert_eq!(small.azure_blocks(3 * MIB + 1).len(), 4);
        assert!(small
            .s3(30 * MIB)
            .unwrap_err()
            .message
            .contains("from 5 MiB to 5 GiB"));
        let bad = PartSizes::from_env(&env(&[(CHUNK_SIZE_VAR, "ten")])).unwrap_err();
        assert!(bad.message.contains(CHUNK_SIZE_VAR), "{}", bad.message);
    }

    #[test]
    fn adls_files_are_created_appended_part_by_part_and_flushed() {
        let (target, sent) = target(Box::new(|_| (201, String::new())));
        let headers = [
            ("x-ms-umask", "0022"),
            ("x-ms-encryption-key", "k"),
            ("x-ms-blob-type", "BlockBlob"),
        ];
        let uri = "https://acct.dfs.core.windows.net/fs/p/big.bin?sv=1&sig=a%2Bb";
        let mut upload = AdlsAppends {
            info: info(uri, &headers),
            lengths: vec![4, 4, 2],
            target,
        };
        let rest = upload.target.rest.clone();
        rest.transport()
            .send_parts(&mut upload, b"0123456789")
            .unwrap();
        let lines: Vec<String> = sent.borrow().iter().map(line).collect();
        assert_eq!(
            lines,
            vec![
                "PUT /fs/p/big.bin?sv=1&sig=a%2Bb&resource=file [x-ms-encryption-key=k,x-ms-umask=0022] ",
                "PATCH /fs/p/big.bin?sv=1&sig=a%2Bb&action=append&position=0 [x-ms-encryption-key=k] 0123",
                "PATCH /fs/p/big.bin?sv=1&sig=a%2Bb&action=append&position=4 [x-ms-encryption-key=k] 4567",
                "PATCH /fs/p/big.bin?sv=1&sig=a%2Bb&action=append&position=8 [x-ms-encryption-key=k] 89",
                "PATCH /fs/p/big.bin?sv=1&sig=a%2Bb&action=flush&position=10 [x-ms-encryption-key=k] ",
            ]
        );
    }

    #[test]
    fn blobs_are_blocks_and_a_block_list_committed_with_fresh_credentials_when_refused() {
        let refusals = RefCell::new(1);
        let (target, sent) = target(Box::new(move |r: &Request| {
            let query = r.url.query().unwrap_or_default();
            if r.url.path().ends_with("credentials-for-write") {
                let fresh = r#"{"credential_infos": [{"path": "model/big.bin", "type": "AZURE_SAS_URI",
                    "signed_uri": "https://acct.blob.core.windows.net/c/big.bin?sig=new"}]}"#;
                return (200, fresh.into());
            }
            if query.contains("comp=blocklist") && *refusals.borrow() > 0 {
                *refusals.borrow_mut() -= 1;
                return (403, "AuthenticationFailed".into());
            }
            (201, String::new())
        }));
        let uri = "https://acct.blob.core.windows.net/c/big.bin?sig=old";
        let mut upload = BlobBlocks {
            info: info(uri, &[("x-ms-encryption-scope", "s"), ("x-ms-meta-a", "1")]),
            lengths: vec![3, 2],
            target,
        };
        let rest = upload.target.rest.clone();
        rest.transport().send_parts(&mut upload, b"hello").unwrap();
        let sent = sent.borrow();
        let lines: Vec<String> = sent.iter().map(line).collect();
        let id0 = BlobBlocks::block_id(0);
        let id1 = BlobBlocks::block_id(1);
        assert_eq!(
            id0.len(),
            id1.len(),
            "block ids of one blob have one length"
        );
        let encoded =
            |id: &str| url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>();
        assert_eq!(
            lines[0],
            format!("PUT /c/big.bin?sig=old&comp=block&blockid={} [x-ms-blob-type=BlockBlob,x-ms-encryption-scope=s] hel", encoded(&id0))
        );
        assert!(
            lines[1].contains(&format!("blockid={}", encoded(&id1))) && lines[1].ends_with(" lo")
        );
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<BlockList>\n<Uncommitted>{id0}</Uncommitted>\n<Uncommitted>{id1}</Uncommitted>\n</BlockList>"
        );
        assert_eq!(lines[2], format!("PUT /c/big.bin?sig=old&comp=blocklist [x-ms-encryption-scope=s,x-ms-meta-a=1] {xml}"));
        // Refused: fresh credentials for this one file, then the block list again with them.
        assert!(
            lines[3].starts_with("POST /api/2.0/mlflow/artifacts/credentials-for-write"),
            "{}",
            lines[3]
        );
        assert!(String::from_utf8_lossy(&sent[3].body).contains("model/big.bin"));
        assert!(
            lines[4].starts_with("PUT /c/big.bin?sig=new&comp=blocklist"),
            "{}",
            lines[4]
        );
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn s3_parts_go_to_the_urls_of_the_created_upload_and_are_completed_by_etag() {
        let (target, sent) = target(Box::new(|r: &Request| {
            let path = r.url.path();
            let body = if path.ends_with("create-multipart-upload") {
                r#"{"upload_id": "u1", "upload_credential_infos": [
                    {"signed_uri": "https://b.s3.amazonaws.com/k?partNumber=1&uploadId=u1", "headers": [{"name": "x-amz-h", "value": "v"}]},
                    {"signed_uri": "https://b.s3.amazonaws.com/k?partNumber=2&uploadId=u1"}],
                    "abort_credential_info": {"signed_uri": "https://b.s3.amazonaws.com/k?uploadId=u1&abort"}}"#
            } else if path.ends_with("get-presigned-upload-part-url") {
                r#"{"upload_credential_info": {"signed_uri": "https://b.s3.amazonaws.com/k?partNumber=2&uploadId=u1&fresh"}}"#
            } else {
                "{}"
            };
            (200, body.to_string())
        }));
        let mut upload = S3Parts::new(target, "r1".into(), vec![3, 2]);
        assert_eq!(upload.begin().unwrap(), vec![3, 2]);
        let part1 = upload.part(0, false).unwrap();
        assert_eq!(line(&part1), "PUT /k?partNumber=1&uploadId=u1 [x-amz-h=v] ");
        let part2 = upload.part(1, true).unwrap();
        assert_eq!(part2.url.query(), Some("partNumber=2&uploadId=u1&fresh"));
        let etag = |e: &str| vec![("ETag".to_string(), e.to_string())];
        upload.complete(&[etag("\"a\""), etag("\"b\"")]).unwrap();
        upload.abort();
        let sent = sent.borrow();
        let create: serde_json::Value = serde_json::from_slice(&sent[0].body).unwrap();
        assert_eq!(
            create,
            json!({"run_id": "r1", "path": "model/big.bin", "num_parts": 2})
        );
        assert!(line(&sent[1]).starts_with(
            "GET /api/2.0/mlflow/artifacts/get-presigned-upload-part-url?run_id=r1&path=model%2Fbig.bin&upload_id=u1&part_number=2"
        ), "{}", line(&sent[1]));
        let complete: serde_json::Value = serde_json::from_slice(&sent[2].body).unwrap();
        assert_eq!(
            complete["part_etags"],
            json!([{"part_number": 1, "etag": "\"a\""}, {"part_number": 2, "etag": "\"b\""}])
        );
        assert_eq!(complete["upload_id"], "u1");
        assert_eq!(line(&sent[3]), "DELETE /k?uploadId=u1&abort [] ");
    }

    #[test]
    fn logged_model_files_above_the_threshold_go_whole_up_to_what_s3_allows() {
        let (target, _) = target(Box::new(|_| (200, "{}".into())));
        let env = crate::transport::fixed_env(&[(MINIMUM_FILE_SIZE_VAR, "6291456")]);
        let access = super::super::ArtifactAccess::new(&env);
        let model = ArtifactRoot {
            owner: Owner::Model("m-1".into()),
            uri: "dbfs:/databricks/mlflow-tracking/1/logged_models/m-1/artifacts".into(),
        };
        let mut s3 = info("https://b.s3.amazonaws.com/k?X-Amz-Signature=s", &[]);
        s3.kind = json!("AWS_PRESIGNED_URL");
        let file = |size| crate::stores::model::FileEntry {
            path: "model.pkl".into(),
            size,
        };
        let whole = access.upload(&target.rest, &model, &file(11 * MIB), s3.clone());
        assert!(whole.unwrap().request().is_some(), "one signed PUT");
        let run = access.upload(&target.rest, &target.root, &file(11 * MIB), s3.clone());
        assert!(
            run.unwrap().request().is_none(),
            "a run artifact goes in parts"
        );
        let huge = access.upload(&target.rest, &model, &file(S3_MAX_PUT + 1), s3);
        let message = huge.unwrap_err().message;
        assert!(
            message.contains("logged model m-1") && message.contains("model.pkl"),
            "{message}"
        );
    }
}
