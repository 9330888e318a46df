//! Files larger than one Files API PUT may carry, written through the Files API's multipart
//! upload as databricks-sdk 0.162 does it (`databricks/sdk/mixins/files.py`,
//! `_PresignedEndpointClient` and `_PresignedMultipartSession`):
//!
//! 1. `POST /api/2.0/fs/files<path>?action=initiate-upload&overwrite=true` answers
//!    `{multipart_upload: {session_token}}`;
//! 2. `POST /api/2.0/fs/create-upload-part-urls {path, session_token, start_part_number, count,
//!    expire_time}` answers `{upload_part_urls: [{part_number, url, headers}]}`: presigned
//!    cloud-storage URLs, each part a PUT there (no credentials of ours) answering an ETag;
//! 3. `POST /api/2.0/fs/files<path>?action=complete-upload&upload_type=multipart&session_token=…`
//!    with `{parts: [{part_number, etag}]}` commits them;
//! 4. `POST …?action=abort-upload&upload_type=multipart&session_token=…` discards them (sent
//!    once, best effort, as the SDK does).
//!
//! The SDK goes multipart above `files_ext_multipart_upload_min_stream_size` (a `Config`
//! attribute, 50 MiB, with no environment variable); the workspace's Files API refuses a single
//! body over 5 GiB (`_WORKSPACE_MAX_SINGLE_SHOT_SIZE`). Ours sends one PUT up to
//! `FILES_API_MAX_PUT_VAR` bytes (default and most 5 GiB) and parts above it, so that a
//! workspace whose multipart routes differ still takes every file it took in one PUT.

use super::parts::{header, with_headers, with_query, Target};
use super::Header;
use crate::api::CopyError;
use crate::transport::{Method, Multipart, Request, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};
use url::Url;

/// The largest body the workspace's Files API takes in one request.
pub const FILES_API_MAX_SINGLE_PUT: u64 = 5 << 30;
/// Lowers the size above which a file goes through the Files API in parts (tests use MiB).
pub const FILES_API_MAX_PUT_VAR: &str = "MLFLOW_COPY_FILES_API_MAX_PUT";
/// Part URLs asked for in one `create-upload-part-urls` call. The SDK asks for one at a time
/// (`files_ext_multipart_upload_batch_url_count`); the transport plans a file's remaining parts
/// together, so ours asks for a few at a time. The service's own limit on `count` is UNKNOWN.
const PART_URL_BATCH: usize = 10;
/// How long a part URL is asked to live (`files_ext_multipart_upload_url_expiration_duration`).
const PART_URL_LIFETIME: Duration = Duration::from_secs(3600);

/// The largest file sent in one Files API PUT, from the environment.
pub fn max_put(env: &dyn Fn(&str) -> Option<String>) -> Result<u64, CopyError> {
    let Some(raw) = env(FILES_API_MAX_PUT_VAR).filter(|v| !v.trim().is_empty()) else {
        return Ok(FILES_API_MAX_SINGLE_PUT);
    };
    match raw.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n.min(FILES_API_MAX_SINGLE_PUT)),
        _ => Err(CopyError::bad_input(format!(
            "{FILES_API_MAX_PUT_VAR}={raw:?} is not a positive number of bytes"
        ))),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Initiated {
    multipart_upload: Option<Session>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Session {
    session_token: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PartUrls {
    upload_part_urls: Vec<PartUrl>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
struct PartUrl {
    part_number: usize,
    url: String,
    headers: Vec<Header>,
}

/// A file written through the Files API's multipart upload.
pub(super) struct FilesApiParts {
    target: Target,
    /// The file's Files API path (`/WorkspaceInternal/…`), as the part-URL route takes it.
    path: String,
    /// The file's Files API URL.
    url: Url,
    lengths: Vec<u64>,
    session: String,
    /// Part URLs fetched so far, by part index.
    urls: Vec<Option<PartUrl>>,
}

impl FilesApiParts {
    pub fn new(target: Target, path: String, url: Url, lengths: Vec<u64>) -> FilesApiParts {
        let urls = vec![None; lengths.len()];
        FilesApiParts {
            target,
            path,
            url,
            lengths,
            session: String::new(),
            urls,
        }
    }

    /// A Files API request on the file with these query parameters (authorised when sent).
    fn action(&self, pairs: &[(&str, &str)]) -> Request {
        Request::new(Method::Post, with_query(self.url.clone(), pairs))
    }

    /// The session's query parameters with `action`.
    fn session_action(&self, action: &'static str) -> Request {
        self.action(&[
            ("action", action),
            ("upload_type", "multipart"),
            ("session_token", &self.session),
        ])
    }

    fn send(&self, request: Request, idempotent: bool, what: &str) -> Result<Response, CopyError> {
        self.target
            .rest
            .send(request, idempotent)
            .map_err(|e| CopyError {
                message: format!("{} (to {what}): {}", self.target.describe(), e.message),
                ..e
            })
    }

    /// Fetches URLs for `count` parts from part `index` on.
    fn fetch_urls(&mut self, index: usize, count: usize) -> Result<(), CopyError> {
        let body = part_urls_body(
            &self.path,
            &self.session,
            index + 1,
            count,
            SystemTime::now(),
        );
        let answer: PartUrls = self
            .target
            .rest
            .post("/api/2.0/fs/create-upload-part-urls", &body)?;
        for url in answer.upload_part_urls {
            if let Some(slot) = url
                .part_number
                .checked_sub(1)
                .and_then(|i| self.urls.get_mut(i))
            {
                *slot = Some(url);
            }
        }
        Ok(())
    }
}

/// The body of `create-upload-part-urls` (part numbers count from 1).
fn part_urls_body(path: &str, session: &str, first: usize, count: usize, now: SystemTime) -> Value {
    json!({
        "path": path,
        "session_token": session,
        "start_part_number": first,
        "count": count,
        "expire_time": rfc3339(now + PART_URL_LIFETIME),
    })
}

/// The body of `complete-upload`: each part's ETag, by part number.
fn complete_body(etags: &[&str]) -> Value {
    let parts: Vec<Value> = etags
        .iter()
        .enumerate()
        .map(|(index, etag)| json!({ "part_number": index + 1, "etag": etag }))
        .collect();
    json!({ "parts": parts })
}

impl Multipart for FilesApiParts {
    fn begin(&mut self) -> Result<Vec<u64>, CopyError> {
        let initiate = self.action(&[("action", "initiate-upload"), ("overwrite", "true")]);
        // A create: not repeated when the workspace may have acted.
        let answer = self.send(initiate, false, "initiate a multipart upload")?;
        let initiated: Initiated = serde_json::from_slice(&answer.body).unwrap_or_default();
        let session = initiated.multipart_upload.map(|s| s.session_token);
        self.session = session.filter(|t| !t.is_empty()).ok_or_else(|| {
            CopyError::upstream(format!(
                "{}: the Files API answered initiate-upload without a multipart session",
                self.target.describe()
            ))
        })?;
        Ok(self.lengths.clone())
    }

    fn part(&mut self, index: usize, refresh: bool) -> Result<Request, CopyError> {
        if refresh || self.urls[index].is_none() {
            let count = if refresh { 1 } else { PART_URL_BATCH };
            self.fetch_urls(index, count.min(self.lengths.len() - index))?;
        }
        let Some(part) = self.urls[index].clone() else {
            return Err(CopyError::upstream(format!(
                "{}: the Files API gave no URL for part {}",
                self.target.describe(),
                index + 1
            )));
        };
        let url = Url::parse(&part.url).map_err(|e| {
            CopyError::upstream(format!(
                "{}: the URL for part {} is not a URL ({e})",
                self.target.describe(),
                index + 1
            ))
        })?;
        let request =
            Request::to_issued(Method::Put, url).header("content-type", "application/octet-stream");
        Ok(with_headers(request, &part.headers, |_| true))
    }

    fn complete(&mut self, answers: &[Vec<(String, String)>]) -> Result<(), CopyError> {
        let mut etags = Vec::with_capacity(answers.len());
        for (index, headers) in answers.iter().enumerate() {
            etags.push(header(headers, "etag").ok_or_else(|| {
                CopyError::upstream(format!(
                    "{}: storage gave no ETag for part {}",
                    self.target.describe(),
                    index + 1
                ))
            })?);
        }
        let mut request = self
            .session_action("complete-upload")
            .header("content-type", "application/json");
        request.body = complete_body(&etags).to_string().into_bytes();
        self.send(request, true, "complete the multipart upload")
            .map(drop)
    }

    fn abort(&mut self) {
        if self.session.is_empty() {
            return;
        }
        // Sent once, best effort: the error that ended the file is the one to report.
        let _ = self.send(self.session_action("abort-upload"), false, "abort");
    }
}

/// `2024-05-01T12:00:00Z`: the UTC time as RFC 3339 (the SDK's `expire_time`).
fn rfc3339(at: SystemTime) -> String {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_date(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stores::databricks::artifacts::parts::tests::target;

    #[test]
    fn multipart_requests_have_the_sdk_shapes() {
        let (target, sent) = target(Box::new(|r: &Request| {
            let query = r.url.query().unwrap_or_default();
            let body = if query.contains("initiate-upload") {
                r#"{"multipart_upload": {"session_token": "tok"}}"#
            } else if r.url.path().ends_with("create-upload-part-urls") {
                r#"{"upload_part_urls": [
                    {"part_number": 1, "url": "https://b.s3/k?partNumber=1", "headers": [{"name": "x-amz-h", "value": "v"}]},
                    {"part_number": 2, "url": "https://b.s3/k?partNumber=2"}]}"#
            } else {
                "{}"
            };
            (200, body.to_string())
        }));
        let url = Url::parse("https://ws.example.com/api/2.0/fs/files/WorkspaceInternal/x/big.bin")
            .unwrap();
        let mut upload = FilesApiParts::new(
            target,
            "/WorkspaceInternal/x/big.bin".into(),
            url,
            vec![3, 2],
        );
        assert_eq!(upload.begin().unwrap(), vec![3, 2]);
        let part1 = upload.part(0, false).unwrap();
        let part2 = upload.part(1, false).unwrap();
        assert_eq!(part1.url.as_str(), "https://b.s3/k?partNumber=1");
        assert!(part1.headers.contains(&("x-amz-h".into(), "v".into())));
        assert!(part2
            .headers
            .contains(&("content-type".into(), "application/octet-stream".into())));
        let etag = |e: &str| vec![("ETag".to_string(), e.to_string())];
        upload.complete(&[etag("\"a\""), etag("\"b\"")]).unwrap();
        upload.abort();
        let sent = sent.borrow();
        let lines: Vec<String> = sent
            .iter()
            .map(|r| {
                format!(
                    "{} {}?{}",
                    r.method.as_str(),
                    r.url.path(),
                    r.url.query().unwrap_or_default()
                )
            })
            .collect();
        let file = "/api/2.0/fs/files/WorkspaceInternal/x/big.bin";
        assert_eq!(
            lines,
            vec![
                format!("POST {file}?action=initiate-upload&overwrite=true"),
                "POST /api/2.0/fs/create-upload-part-urls?".to_string(),
                format!(
                    "POST {file}?action=complete-upload&upload_type=multipart&session_token=tok"
                ),
                format!("POST {file}?action=abort-upload&upload_type=multipart&session_token=tok"),
            ]
        );
        // Both part URLs came from one call, for parts 1 and 2 of the session.
        let asked: Value = serde_json::from_slice(&sent[1].body).unwrap();
        assert_eq!(
            (
                &asked["path"],
                &asked["session_token"],
                &asked["start_part_number"],
                &asked["count"]
            ),
            (
                &json!("/WorkspaceInternal/x/big.bin"),
                &json!("tok"),
                &json!(1),
                &json!(2)
            )
        );
        assert!(asked["expire_time"].as_str().unwrap().ends_with('Z'));
        let completed: Value = serde_json::from_slice(&sent[2].body).unwrap();
        assert_eq!(
            completed,
            json!({"parts": [{"part_number": 1, "etag": "\"a\""}, {"part_number": 2, "etag": "\"b\""}]})
        );
    }

    #[test]
    fn the_single_put_limit_can_only_be_lowered() {
        let env = crate::transport::fixed_env;
        assert_eq!(max_put(&env(&[])).unwrap(), FILES_API_MAX_SINGLE_PUT);
        assert_eq!(
            max_put(&env(&[(FILES_API_MAX_PUT_VAR, "4194304")])).unwrap(),
            4 << 20
        );
        let high = env(&[(FILES_API_MAX_PUT_VAR, "99999999999999")]);
        assert_eq!(max_put(&high).unwrap(), FILES_API_MAX_SINGLE_PUT);
        assert!(max_put(&env(&[(FILES_API_MAX_PUT_VAR, "big")])).is_err());
    }

    #[test]
    fn expiry_times_are_rfc3339_utc() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_251_199);
        assert_eq!(rfc3339(at), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
