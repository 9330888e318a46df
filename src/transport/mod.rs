//! The one way out of the component: HTTP requests with retries, and streamed file transfers
//! (a file written whole by one PUT, or in parts committed together: `multipart`).
//!
//! `Http` is the seam between pure logic and the host. On `wasm32` it is implemented over WASI
//! HTTP (`wasi_http`); the retry loops here are host-independent and unit-tested with a scripted
//! `Http`.

pub mod credential;
pub mod hosts;
pub mod multipart;
pub mod retry;
#[cfg(target_arch = "wasm32")]
pub mod wasi_http;

use crate::api::CopyError;
pub use credential::Credential;
pub use hosts::{Caller, HostPolicy, ALLOWED_HOSTS_VAR};
pub use multipart::Multipart;
use multipart::Parted;
use retry::RetryPolicy;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};
use url::Url;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether a server of the copy handed out this URL (a signed storage URL, or storage it
    /// issued temporary credentials for): it may go to a host the allow-list does not name
    /// (see `hosts::HostPolicy`), and it never carries credentials of ours.
    pub issued: bool,
    /// The server's credentials, added as a header when the request is sent (see
    /// `Request::ready_to_send`).
    pub credential: Option<Credential>,
}

impl Request {
    pub fn new(method: Method, url: Url) -> Request {
        Request {
            method,
            url,
            headers: Vec::new(),
            body: Vec::new(),
            issued: false,
            credential: None,
        }
    }

    /// The request with the server's credentials, added when it is sent.
    pub fn with_credential(mut self, credential: Credential) -> Request {
        self.credential = Some(credential);
        self
    }

    /// Marks the URL as handed out by a server of the copy (see `issued`).
    pub fn issued(mut self) -> Request {
        self.issued = true;
        self
    }

    /// A request to a URL a server of the copy handed out (see `issued`).
    pub fn to_issued(method: Method, url: Url) -> Request {
        Request::new(method, url).issued()
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Request {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// Where the request goes, for messages: method and URL without query (queries can carry
    /// signed-URL credentials).
    pub fn describe(&self) -> String {
        let mut url = self.url.clone();
        url.set_query(None);
        format!("{} {}", self.method.as_str(), url)
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The start of the body as text, for error messages.
    pub fn body_snippet(&self) -> String {
        snippet(&self.body)
    }
}

/// S3's answer to an expired session token: a 400 with this code, not a 401 or 403.
const EXPIRED_TOKEN: &str = "ExpiredToken";

/// Whether storage refused a request's credentials (an expired signed URL or session token,
/// most likely): a 401 or 403, or S3's `ExpiredToken`.
pub fn credentials_refused(status: Option<u16>, message: &str) -> bool {
    matches!(status, Some(401 | 403)) || (status == Some(400) && message.contains(EXPIRED_TOKEN))
}

/// `credentials_refused` for an error already classified (401/403 are `Unauthorized`).
pub fn error_refuses_credentials(error: &CopyError) -> bool {
    error.kind == crate::api::ErrorKind::Unauthorized || error.message.contains(EXPIRED_TOKEN)
}

/// The error for a storage answer that is not a success: the request (without its signed
/// query), the status, `what` was asked of it, and the start of the answer.
pub fn storage_refusal(request: &Request, response: &Response, what: &str) -> CopyError {
    CopyError::new(
        CopyError::kind_for_status(response.status),
        format!(
            "{}: storage answered HTTP {} {what}: {}",
            request.describe(),
            response.status,
            response.body_snippet()
        ),
    )
}

/// An environment of fixed variables, for tests of settings read from it.
#[cfg(test)]
pub(crate) fn fixed_env(
    pairs: &'static [(&'static str, &'static str)],
) -> impl Fn(&str) -> Option<String> {
    move |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    }
}

pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]);
    let text = redact_echoed_credentials(&text);
    let text: String = text.chars().take(300).collect();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Elements of storage error answers that echo credentials back: S3 repeats an expired session
/// token (`<Token-0>`) and, for a bad signature, the canonical request with the token in it.
const ECHOED_CREDENTIALS: [&str; 4] = [
    "Token-",
    "CanonicalRequest",
    "StringToSign",
    "AWSAccessKeyId",
];

/// The text with the content of those elements replaced by `***` (to the end of the text
/// when an element is cut off).
fn redact_echoed_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('<') {
        let after = &rest[at + 1..];
        let echoed = ECHOED_CREDENTIALS
            .iter()
            .any(|name| after.starts_with(name));
        let Some(close) = after.find('>').filter(|_| echoed) else {
            out.push_str(&rest[..at + 1]);
            rest = after;
            continue;
        };
        let name = &after[..close];
        out.push_str(&rest[..at + 1 + close + 1]);
        out.push_str("***");
        let content = &after[close + 1..];
        match content.find(&format!("</{name}>")) {
            Some(end) => rest = &content[end..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// A request that never reached a server answer: refused connection, DNS failure, reset,
/// timeout.
#[derive(Debug, Clone, PartialEq)]
pub struct SendError {
    pub message: String,
    /// Whether the server may not have seen the request at all (refused connection, DNS).
    pub not_sent: bool,
    /// Whether trying again may help (not for an unknown host, a TLS failure, a host the
    /// allow-list refuses, an answer over the size limit).
    pub retryable: bool,
}

/// How long one request may wait (connect, first byte, between bytes): seconds, as for MLflow.
pub const TIMEOUT_VAR: &str = "MLFLOW_HTTP_REQUEST_TIMEOUT";
/// How often a failed request is retried, as for MLflow.
pub const MAX_RETRIES_VAR: &str = "MLFLOW_HTTP_REQUEST_MAX_RETRIES";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Seconds of the backoff's base, doubled each retry, as for MLflow.
pub const BACKOFF_FACTOR_VAR: &str = "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR";
/// Seconds of random jitter at most added to each backoff, as for MLflow.
pub const BACKOFF_JITTER_VAR: &str = "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER";
/// MLflow caps its own retries at 10 too.
const MAX_RETRIES_LIMIT: u32 = 10;
/// And its backoff factor at 120 (`_MLFLOW_HTTP_REQUEST_MAX_BACKOFF_FACTOR_LIMIT`).
const MAX_BACKOFF_FACTOR: f64 = 120.0;

/// The bounds of every request, from the environment variables MLflow users know.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub timeout: Duration,
    pub policy: RetryPolicy,
    /// The hosts requests may go to; every request is checked, not only the servers a copy
    /// names.
    pub hosts: HostPolicy,
}

impl Settings {
    pub fn from_env(
        env: &dyn Fn(&str) -> Option<String>,
        caller: Caller,
    ) -> Result<Settings, CopyError> {
        let number = |name: &str| -> Result<Option<f64>, CopyError> {
            let Some(raw) = env(name).filter(|v| !v.trim().is_empty()) else {
                return Ok(None);
            };
            match raw.trim().parse::<f64>() {
                Ok(n) if n.is_finite() && n >= 0.0 => Ok(Some(n)),
                _ => Err(CopyError::bad_input(format!(
                    "{name}={raw:?} is not a number of the right kind"
                ))),
            }
        };
        let timeout = match number(TIMEOUT_VAR)? {
            Some(secs) if secs > 0.0 => Duration::from_secs_f64(secs),
            Some(_) => {
                return Err(CopyError::bad_input(format!(
                    "{TIMEOUT_VAR} must be above 0"
                )))
            }
            None => DEFAULT_TIMEOUT,
        };
        let mut policy = RetryPolicy::default();
        if let Some(retries) = number(MAX_RETRIES_VAR)? {
            if retries.fract() != 0.0 || retries > MAX_RETRIES_LIMIT as f64 {
                return Err(CopyError::bad_input(format!(
                    "{MAX_RETRIES_VAR} must be a whole number from 0 to {MAX_RETRIES_LIMIT}"
                )));
            }
            policy.max_attempts = retries as u32 + 1;
        }
        if let Some(factor) = number(BACKOFF_FACTOR_VAR)? {
            if factor > MAX_BACKOFF_FACTOR {
                return Err(CopyError::bad_input(format!(
                    "{BACKOFF_FACTOR_VAR} must be at most {MAX_BACKOFF_FACTOR}"
                )));
            }
            policy.backoff_factor = Duration::from_secs_f64(factor);
        }
        if let Some(jitter) = number(BACKOFF_JITTER_VAR)? {
            policy.backoff_jitter = Duration::from_secs_f64(jitter.min(MAX_BACKOFF_FACTOR));
        }
        Ok(Settings {
            timeout,
            policy,
            hosts: HostPolicy::from_env(env, caller),
        })
    }
}

/// Why a request or a file transfer failed after its retries. Stores turn it into a classified
/// `CopyError` that names their server.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub message: String,
    /// The HTTP status of the failing answer, if a server answered.
    pub status: Option<u16>,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<Error> for CopyError {
    fn from(error: Error) -> CopyError {
        let kind = match error.status {
            Some(401 | 403) => crate::api::ErrorKind::Unauthorized,
            _ => crate::api::ErrorKind::Upstream,
        };
        CopyError::new(kind, error.message)
    }
}

/// A route a store tries first and gives up for another when it is refused (a workspace's
/// Files API, which may be off for an operation). The store and the files it planned on the
/// route share it: a transfer refused on the route marks it, and the retried file, opened
/// again, is planned by the store on its other route.
#[derive(Debug, Clone, Default)]
pub struct Fallback(std::rc::Rc<std::cell::Cell<bool>>);

impl Fallback {
    /// Whether the route was refused (then the store plans its other route).
    pub fn refused(&self) -> bool {
        self.0.get()
    }

    pub fn refuse(&self) {
        self.0.set(true)
    }

    /// Marks the route refused (and says so).
    fn refuse_now(&self) -> bool {
        self.refuse();
        true
    }
}

/// How to read one file: a GET that its store has authorised (or signed).
#[derive(Debug, Clone)]
pub struct Download {
    request: Request,
    signed: bool,
    fallback: Option<Fallback>,
}

impl Download {
    pub fn get(request: Request) -> Download {
        Download {
            request,
            signed: false,
            fallback: None,
        }
    }

    /// A GET on a route the store gives up when it is refused (see `Fallback`).
    pub fn with_fallback(request: Request, fallback: Fallback) -> Download {
        Download {
            fallback: Some(fallback),
            ..Download::get(request)
        }
    }

    /// A GET of a signed URL: it carries no credentials of ours, and it expires (a 401 or 403
    /// is answered by opening the file again, with a fresh URL).
    pub fn signed(request: Request) -> Download {
        Download {
            request,
            signed: true,
            fallback: None,
        }
    }

    pub fn request(&self) -> &Request {
        &self.request
    }
}

/// How to write one file: a PUT that its store has authorised (or signed), whose body is the
/// file, streamed, with the source's length; or parts committed together (`Multipart`), as
/// cloud storage requires of large files.
pub struct Upload {
    kind: UploadKind,
    fallback: Option<Fallback>,
}

enum UploadKind {
    Whole { request: Request, signed: bool },
    Parts(Box<dyn Multipart>),
}

impl Upload {
    pub fn put(request: Request) -> Upload {
        Upload {
            kind: UploadKind::Whole {
                request,
                signed: false,
            },
            fallback: None,
        }
    }

    /// An upload (whole or in parts) on a route the store gives up when it is refused (see
    /// `Fallback`): a refused PUT, or a refused start of the parts, is opened again.
    pub fn with_fallback(self, fallback: Fallback) -> Upload {
        Upload {
            fallback: Some(fallback),
            ..self
        }
    }

    /// A PUT to a signed URL (see `Download::signed`).
    pub fn signed(request: Request) -> Upload {
        Upload {
            kind: UploadKind::Whole {
                request,
                signed: true,
            },
            fallback: None,
        }
    }

    /// A file written in parts. Its part requests count as signed: a refused one is asked for
    /// again (`Multipart::part` with `refresh`).
    pub fn parts(upload: Box<dyn Multipart>) -> Upload {
        Upload {
            kind: UploadKind::Parts(upload),
            fallback: None,
        }
    }

    /// The PUT of a file written whole (`None` for one written in parts).
    pub fn request(&self) -> Option<&Request> {
        match &self.kind {
            UploadKind::Whole { request, .. } => Some(request),
            UploadKind::Parts(_) => None,
        }
    }
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            UploadKind::Whole { request, .. } => write!(f, "Upload({})", request.describe()),
            UploadKind::Parts(_) => f.write_str("Upload(parts)"),
        }
    }
}

/// One file to stream from its source store to its destination store.
#[derive(Debug)]
pub struct FileJob {
    /// What the file is, for messages (e.g. `run abc artifact model/MLmodel`).
    pub label: String,
    /// Its size as listed: the upload declares it, and a source that sends another length
    /// fails the file (never a silently short or empty copy).
    pub size: u64,
    pub download: Download,
    pub upload: Upload,
}

/// What `Http::stream` moves: bytes `offset..size` of a download, written into `parts` in
/// sequence, each upload taking the next `length` bytes as its body (with that exact
/// Content-Length, streamed). A whole file is one part from offset 0.
#[derive(Debug, Clone)]
pub struct StreamJob {
    /// The GET of the whole file. From an `offset` above 0 the host asks for the rest with a
    /// `Range` header; a source that ignores it is read from its start and the first `offset`
    /// bytes are dropped (slower, never wrong).
    pub download: Request,
    pub offset: u64,
    /// The whole file's size, as listed.
    pub size: u64,
    pub parts: Vec<Part>,
}

/// One upload of a `StreamJob`.
#[derive(Debug, Clone)]
pub struct Part {
    pub request: Request,
    pub length: u64,
}

/// Why one streamed file failed.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamFailure {
    pub message: String,
    pub retryable: bool,
    pub retry_after: Option<Duration>,
    /// HTTP status of the failing side, if a server answered.
    pub status: Option<u16>,
    /// Which side answered `status`, when one did.
    pub end: Option<End>,
}

/// The two sides of a streamed file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum End {
    Source,
    Destination,
}

/// What `Http::stream` reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// `bytes` more bytes reached the destination.
    Bytes(u64),
    /// Part number `part` of the job's `parts` was accepted, with these answer headers (an S3
    /// part's ETag). Parts are reported in order, before the job's `Finished`.
    PartWritten {
        id: usize,
        part: usize,
        headers: Vec<(String, String)>,
    },
    /// The job with this id finished: the bytes it wrote, or why it failed.
    Finished {
        id: usize,
        result: Result<u64, StreamFailure>,
    },
}

/// Progress of `Transport::stream_files`.
pub enum Transferred {
    /// More bytes reached a destination (possibly of a file that will be retried).
    Bytes(u64),
    /// File number `index` is complete.
    File { index: usize, bytes: u64 },
}

/// Turns file indices into jobs (see `Transport::stream_files`).
pub type OpenFiles<'a> = &'a mut dyn FnMut(&[usize]) -> Result<Vec<FileJob>, CopyError>;

/// The next job to stream and its id, or `None` when there is none (left).
pub type NextJob<'a> = &'a mut dyn FnMut() -> Option<(usize, StreamJob)>;

/// API requests sent in the same loop as file transfers, so that both are in flight at once:
/// the component is single-threaded, so concurrency means several requests polled together.
/// The transport asks for requests each time round its loop, retries each one on its own
/// budget (as `send` does an idempotent request) and hands back its final answer.
pub trait Calls {
    /// The next request to send now, with the caller's id for it; `None` while there is nothing
    /// to send. The caller decides how many it keeps in flight (its per-server cap).
    fn next(&mut self) -> Option<(usize, Request)>;
    /// The final answer to request `id`, after its retries.
    fn answer(&mut self, id: usize, answer: Result<Response, Error>);
    /// Whether every request was answered and no more will come.
    fn done(&self) -> bool;
}

/// No API requests: a transfer of files only.
pub struct NoCalls;

impl Calls for NoCalls {
    fn next(&mut self) -> Option<(usize, Request)> {
        None
    }
    fn answer(&mut self, _: usize, _: Result<Response, Error>) {}
    fn done(&self) -> bool {
        true
    }
}

/// `Calls` as `Http::stream` sees them: one attempt per request; a request to retry comes
/// back from `next` once it is `due`.
pub trait Attempts {
    fn next(&mut self) -> Option<(usize, Request)>;
    fn answer(&mut self, id: usize, answer: Result<Response, SendError>);
    /// When the earliest request waiting to be retried is due: the loop wakes up for it.
    fn due(&self) -> Option<Instant>;
    fn done(&self) -> bool;
}

/// The host's HTTP client: one attempt per call, no retries.
pub trait Http {
    /// Sends one request with its whole body and reads the whole response.
    fn send(&self, request: &Request) -> Result<Response, SendError>;

    /// Sends several requests with at most `concurrency` in flight; answers in request order.
    fn send_all(
        &self,
        requests: &[Request],
        concurrency: usize,
    ) -> Vec<Result<Response, SendError>> {
        let mut fixed = FixedAttempts::new(requests, concurrency);
        self.stream(&mut || None, 1, &mut fixed, &mut |_| {});
        fixed.answers()
    }

    /// Streams each job's download into its parts chunk by chunk, never holding more than a
    /// chunk, with at most `concurrency` jobs in flight, while sending the requests `calls`
    /// hands out. Jobs are taken from `next` only when a slot is free. One attempt per job (a
    /// failed part ends the job) and per request. Returns once every job has ended and `calls`
    /// is done.
    fn stream(
        &self,
        next: NextJob,
        concurrency: usize,
        calls: &mut dyn Attempts,
        events: &mut dyn FnMut(StreamEvent),
    );
}

/// Sends each of `Attempts` one after the other, for an `Http` that has no concurrency of its
/// own (the test doubles): at the start of its `stream`, or in full when there are no jobs.
pub fn send_each(http: &dyn Http, calls: &mut dyn Attempts) {
    loop {
        while let Some((id, request)) = calls.next() {
            let answer = http.send(&request);
            calls.answer(id, answer);
        }
        match calls.due() {
            Some(due) if !calls.done() => sleep(due.saturating_duration_since(Instant::now())),
            _ => return,
        }
    }
}

/// A fixed list of requests, at most `cap` in flight: `Http::send_all` on the stream loop.
pub struct FixedAttempts<'a> {
    requests: &'a [Request],
    answers: Vec<Option<Result<Response, SendError>>>,
    sent: usize,
    in_flight: usize,
    cap: usize,
}

impl<'a> FixedAttempts<'a> {
    pub fn new(requests: &'a [Request], cap: usize) -> FixedAttempts<'a> {
        FixedAttempts {
            requests,
            answers: requests.iter().map(|_| None).collect(),
            sent: 0,
            in_flight: 0,
            cap: cap.max(1),
        }
    }

    /// The answers, in request order.
    pub fn answers(self) -> Vec<Result<Response, SendError>> {
        self.answers
            .into_iter()
            .map(|a| a.expect("every request answered"))
            .collect()
    }
}

impl Attempts for FixedAttempts<'_> {
    fn next(&mut self) -> Option<(usize, Request)> {
        if self.in_flight == self.cap || self.sent == self.requests.len() {
            return None;
        }
        self.sent += 1;
        self.in_flight += 1;
        Some((self.sent - 1, self.requests[self.sent - 1].clone()))
    }
    fn answer(&mut self, id: usize, answer: Result<Response, SendError>) {
        self.in_flight -= 1;
        self.answers[id] = Some(answer);
    }
    fn due(&self) -> Option<Instant> {
        None
    }
    fn done(&self) -> bool {
        self.answers.iter().all(Option::is_some)
    }
}

/// `Calls` with retries: each request keeps its own budget of attempts and time, and waits
/// out its backoff without holding up anything else in the loop.
struct Retrying<'a> {
    calls: &'a mut dyn Calls,
    policy: &'a RetryPolicy,
    /// Requests sent and not yet finally answered, by the caller's id.
    open: HashMap<usize, Attempt>,
}

struct Attempt {
    request: Request,
    attempts: u32,
    first_sent: Instant,
    /// Set while the request waits to be retried.
    due: Option<Instant>,
}

impl Attempts for Retrying<'_> {
    fn next(&mut self) -> Option<(usize, Request)> {
        loop {
            let (id, request) = self.next_attempt()?;
            match request.ready_to_send() {
                Ok(ready) => return Some((id, ready)),
                Err(error) => {
                    self.open.remove(&id);
                    self.calls.answer(id, Err(error));
                }
            }
        }
    }

    fn answer(&mut self, id: usize, answer: Result<Response, SendError>) {
        let attempt = self.open.get_mut(&id).expect("an answer to a request sent");
        attempt.attempts += 1;
        let failure = match assess(answer, true) {
            Assessment::Final(response) => {
                self.open.remove(&id);
                return self.calls.answer(id, Ok(response));
            }
            Assessment::Retry { after, failure } => {
                let wait = self
                    .policy
                    .delay(attempt.attempts - 1, after, retry::jitter());
                if self
                    .policy
                    .may_retry(attempt.attempts, attempt.first_sent.elapsed(), wait)
                {
                    attempt.due = Some(Instant::now() + wait);
                    return;
                }
                failure
            }
            Assessment::GiveUp(failure) => failure,
        };
        let attempt = self.open.remove(&id).expect("open");
        let error = give_up(&attempt.request, &failure, attempt.attempts);
        self.calls.answer(id, Err(error));
    }

    fn due(&self) -> Option<Instant> {
        self.open.values().filter_map(|a| a.due).min()
    }

    fn done(&self) -> bool {
        self.open.is_empty() && self.calls.done()
    }
}

impl Retrying<'_> {
    /// A retry that is due, else the caller's next request (not yet given its credentials).
    fn next_attempt(&mut self) -> Option<(usize, Request)> {
        let now = Instant::now();
        let retry = self
            .open
            .iter_mut()
            .find(|(_, a)| a.due.is_some_and(|due| due <= now));
        if let Some((&id, attempt)) = retry {
            attempt.due = None;
            return Some((id, attempt.request.clone()));
        }
        let (id, request) = self.calls.next()?;
        let attempt = Attempt {
            request: request.clone(),
            attempts: 0,
            first_sent: now,
            due: None,
        };
        self.open.insert(id, attempt);
        Some((id, request))
    }
}

/// `Http` plus the retry policy: what store clients use.
pub struct Transport {
    http: Box<dyn Http>,
    policy: RetryPolicy,
}

/// How many files are opened (their requests authorised or signed) at a time, per slot in
/// flight: enough to keep every slot busy, few enough that signed URLs are fresh when used.
const OPEN_AHEAD_PER_SLOT: usize = 4;

impl Transport {
    pub fn new(http: Box<dyn Http>, policy: RetryPolicy) -> Transport {
        Transport { http, policy }
    }

    /// The wait before retry number `retry` (0 for the first) of something the transport does
    /// not send itself (a create looked for before it is sent again).
    pub fn backoff(&self, retry: u32) -> Duration {
        self.policy.delay(retry, None, retry::jitter())
    }

    /// How many times anything is tried, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.policy.max_attempts
    }

    /// Sends a request, retrying connection failures and transient statuses (408, 429, 5xx).
    /// A non-idempotent request (a create) is only repeated when the server certainly did not
    /// act on it, so that a lost response cannot create a duplicate. Returns the final response,
    /// whatever its status.
    pub fn send(&self, request: &Request, idempotent: bool) -> Result<Response, Error> {
        let mut results = self.send_many(std::slice::from_ref(request), 1, idempotent);
        results.pop().expect("one answer per request")
    }

    /// Sends several requests, at most `concurrency` in flight, each retried as `send` would.
    /// Answers come back in the order of `requests`.
    pub fn send_many(
        &self,
        requests: &[Request],
        concurrency: usize,
        idempotent: bool,
    ) -> Vec<Result<Response, Error>> {
        let start = Instant::now();
        let mut results: Vec<Option<Result<Response, Error>>> =
            requests.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = (0..requests.len()).collect();
        let mut attempts = 0;
        while !pending.is_empty() {
            attempts += 1;
            // Credentials are added to each attempt as it is sent.
            let mut batch = Vec::new();
            pending.retain(|&i| match requests[i].ready_to_send() {
                Ok(ready) => {
                    batch.push(ready);
                    true
                }
                Err(error) => {
                    results[i] = Some(Err(error));
                    false
                }
            });
            let answers = self.http.send_all(&batch, concurrency);
            let (mut again, mut asked) = (Vec::new(), None);
            for (&i, answer) in pending.iter().zip(answers) {
                match assess(answer, idempotent) {
                    Assessment::Final(response) => results[i] = Some(Ok(response)),
                    Assessment::Retry { after, failure } => {
                        asked = asked.max(after);
                        again.push((i, failure));
                    }
                    Assessment::GiveUp(failure) => {
                        results[i] = Some(Err(give_up(&requests[i], &failure, attempts)))
                    }
                }
            }
            if again.is_empty() {
                break;
            }
            let wait = self.policy.delay(attempts - 1, asked, retry::jitter());
            if !self.policy.may_retry(attempts, start.elapsed(), wait) {
                for (i, failure) in again {
                    results[i] = Some(Err(give_up(&requests[i], &failure, attempts)));
                }
                break;
            }
            sleep(wait);
            pending = again.into_iter().map(|(i, _)| i).collect();
        }
        results
            .into_iter()
            .map(|r| r.expect("every request answered"))
            .collect()
    }

    /// Streams files `0..count` while sending the requests of `calls` (see `Calls`). `open`
    /// turns file indices into jobs; it is called a few files ahead of the transfer, and again
    /// for a file that is retried, so that a store can sign URLs in batches and hand out fresh
    /// ones. Files that fail transiently are retried, each with its own budget of attempts and
    /// time (a long transfer never uses up another file's). A file written in parts resumes at
    /// its first part not yet accepted (a retry keeps the upload begun first, not the one a
    /// reopened job brings), gets a fresh budget whenever a part was accepted since its last
    /// failure, is committed after its last part, and is aborted when the copy fails. Returns
    /// the bytes written, or the first permanent failure of a file, once `calls` is done too
    /// (its failures are its own to report).
    pub fn stream_files(
        &self,
        count: usize,
        concurrency: usize,
        calls: &mut dyn Calls,
        open: OpenFiles,
        on_progress: &mut dyn FnMut(Transferred),
    ) -> Result<u64, CopyError> {
        let mut files: Vec<FileState> = (0..count).map(|_| FileState::default()).collect();
        let mut calls = Retrying {
            calls,
            policy: &self.policy,
            open: HashMap::new(),
        };
        let result = self.stream_rounds(
            &mut files,
            concurrency.max(1),
            &mut calls,
            open,
            on_progress,
        );
        if result.is_err() {
            for parted in files.iter_mut().filter_map(|f| f.parted.as_mut()) {
                parted.abort();
            }
        }
        result
    }

    fn stream_rounds(
        &self,
        files: &mut [FileState],
        concurrency: usize,
        calls: &mut dyn Attempts,
        open: OpenFiles,
        on_progress: &mut dyn FnMut(Transferred),
    ) -> Result<u64, CopyError> {
        let mut pending: Vec<usize> = (0..files.len()).collect();
        let mut total = 0u64;
        // The first round runs even without files: it carries the calls.
        loop {
            let round = Round {
                pending: &pending,
                concurrency,
                calls: &mut *calls,
                open: &mut *open,
                on_progress: &mut *on_progress,
            };
            let failures = self.stream_round(round, files, &mut total)?;
            let wait = self.assess(files, &failures)?;
            pending = failures.into_iter().map(|(id, _)| id).collect();
            if pending.is_empty() {
                return Ok(total);
            }
            sleep(wait);
        }
    }

    /// One pass over the pending files: those that failed (to retry or give up on), or an
    /// error that ends the copy.
    fn stream_round(
        &self,
        round: Round,
        files: &mut [FileState],
        total: &mut u64,
    ) -> Result<Vec<(usize, StreamFailure)>, CopyError> {
        let Round {
            pending,
            concurrency,
            calls,
            open,
            on_progress,
        } = round;
        let mut feed = Feed {
            waiting: pending.iter().copied().collect(),
            opened: VecDeque::new(),
            batch: concurrency * OPEN_AHEAD_PER_SLOT,
            open,
            failed_to_open: None,
        };
        // Both callbacks below reach the files' state; `Http::stream` never runs them at once.
        let files = std::cell::RefCell::new(files);
        let fatal: std::cell::RefCell<Option<CopyError>> = Default::default();
        let mut only_commit = Vec::new();
        let mut refused = Vec::new();
        let mut failures = Vec::new();
        let mut next = || loop {
            if fatal.borrow().is_some() {
                return None;
            }
            let (id, job) = feed.next()?;
            match files.borrow_mut()[id].prepare(job) {
                Ok(Prepared::Stream(stream)) => return Some((id, stream)),
                Ok(Prepared::OnlyCommit) => only_commit.push(id),
                Ok(Prepared::Refused(failure)) => refused.push((id, failure)),
                Err(e) => *fatal.borrow_mut() = Some(e),
            }
        };
        let complete = |id: usize, streamed: u64| files.borrow_mut()[id].complete(streamed);
        self.http
            .stream(&mut next, concurrency, calls, &mut |event| match event {
                StreamEvent::Bytes(n) => on_progress(Transferred::Bytes(n)),
                StreamEvent::PartWritten { id, part, headers } => {
                    files.borrow_mut()[id].part_written(part, headers)
                }
                StreamEvent::Finished {
                    id,
                    result: Ok(streamed),
                } => match complete(id, streamed) {
                    Ok(bytes) => {
                        *total += bytes;
                        on_progress(Transferred::File { index: id, bytes });
                    }
                    Err(e) => {
                        fatal.borrow_mut().get_or_insert(e);
                    }
                },
                StreamEvent::Finished { id, result: Err(f) } => failures.push((id, f)),
            });
        if let Some(error) = feed.failed_to_open.or(fatal.into_inner()) {
            return Err(error);
        }
        failures.extend(refused);
        for id in only_commit {
            let bytes = complete(id, 0)?;
            *total += bytes;
            on_progress(Transferred::File { index: id, bytes });
        }
        Ok(failures)
    }

    /// Decides about the files that failed in a round: how long to wait before retrying them,
    /// or the error that gives up the copy.
    fn assess(
        &self,
        files: &mut [FileState],
        failures: &[(usize, StreamFailure)],
    ) -> Result<Duration, CopyError> {
        let now = Instant::now();
        let mut wait = Duration::ZERO;
        for (id, failure) in failures {
            let file = &mut files[*id];
            file.renew_budget_on_progress();
            file.budget.attempts += 1;
            let first = *file.budget.first_failure.get_or_insert(now);
            // A signed URL that is refused has expired, most likely: once, a fresh one.
            // Refused on a route the store can replace: opened again at once, on the other.
            let rerouted = file.reroute(failure);
            let refused = credentials_refused(failure.status, &failure.message);
            let expired = rerouted || (refused && file.refreshable() && file.first_refusal());
            let attempts = file.budget.attempts;
            let delay = self
                .policy
                .delay(attempts - 1, failure.retry_after, retry::jitter());
            let retry = (failure.retryable || expired)
                && self.policy.may_retry(attempts, now - first, delay);
            if !retry {
                return Err(stream_error(&file.label, failure, attempts).into());
            }
            wait = wait.max(if expired { Duration::ZERO } else { delay });
        }
        Ok(wait)
    }
}

/// What one round of `stream_files` works on.
struct Round<'a> {
    pending: &'a [usize],
    concurrency: usize,
    calls: &'a mut dyn Attempts,
    open: OpenFiles<'a>,
    on_progress: &'a mut dyn FnMut(Transferred),
}

/// What `FileState::prepare` makes of a file's next attempt.
enum Prepared {
    Stream(StreamJob),
    /// Every part was accepted: only the commit is left.
    OnlyCommit,
    /// Its parts could not be begun on a route the store can replace (now marked refused).
    Refused(StreamFailure),
}

/// What `stream_files` keeps of one file between its attempts.
#[derive(Default)]
struct FileState {
    /// The routes of its last attempt that the store may replace: the download's, the upload's.
    fallbacks: [Option<Fallback>; 2],
    label: String,
    size: u64,
    /// Whether its requests are signed URLs (a refusal may mean they expired).
    signed: bool,
    /// The credentials its requests carry to their servers (a refusal may mean a token
    /// expired: they are refreshed, and the file sent again once).
    credentials: Vec<Credential>,
    budget: FileBudget,
    /// A file written in parts: the upload begun, and the parts accepted.
    parted: Option<Parted>,
}

impl FileState {
    /// The next attempt's transfer of this file.
    fn prepare(&mut self, job: FileJob) -> Result<Prepared, CopyError> {
        self.label = job.label;
        self.size = job.size;
        let download = job.download;
        self.credentials = download.request.credential.iter().cloned().collect();
        self.fallbacks = [download.fallback.clone(), job.upload.fallback.clone()];
        let (offset, parts) = match job.upload.kind {
            UploadKind::Whole { request, signed } => {
                self.signed = download.signed || signed;
                self.credentials.extend(request.credential.clone());
                let part = Part {
                    request,
                    length: job.size,
                };
                (0, vec![part])
            }
            UploadKind::Parts(upload) => {
                self.signed = true;
                // A retry reopens the file for fresh URLs; its upload was begun the first time.
                if self.parted.is_none() {
                    match Parted::begin(upload, job.size, &self.label) {
                        Ok(parted) => self.parted = Some(parted),
                        Err(e) => return self.refused_at_begin(e),
                    }
                }
                let parted = self.parted.as_mut().expect("begun");
                let (offset, parts) = parted.remaining()?;
                if parts.is_empty() {
                    return Ok(Prepared::OnlyCommit);
                }
                (offset, parts)
            }
        };
        // Credentials are added now, as the transfer starts (the file may have been opened a
        // while ago), and again for each retry.
        let ready = |request: &Request| {
            request.ready_to_send().map_err(|e| CopyError {
                message: format!("{}: {}", self.label, e.message),
                ..CopyError::from(e)
            })
        };
        let parts = parts
            .into_iter()
            .map(|part| {
                Ok(Part {
                    request: ready(&part.request)?,
                    length: part.length,
                })
            })
            .collect::<Result<Vec<Part>, CopyError>>()?;
        Ok(Prepared::Stream(StreamJob {
            download: ready(&download.request)?,
            offset,
            size: job.size,
            parts,
        }))
    }

    /// Parts that could not be begun: on a route the store can replace, a failure to retry
    /// on the other route; else the error that ends the copy.
    fn refused_at_begin(&mut self, error: CopyError) -> Result<Prepared, CopyError> {
        match &self.fallbacks[1] {
            Some(fallback) if fallback.refuse_now() => Ok(Prepared::Refused(StreamFailure {
                message: error.message,
                retryable: true,
                retry_after: None,
                status: None,
                end: Some(End::Destination),
            })),
            _ => Err(error),
        }
    }

    /// Whether this failure is a refusal (an answer that retrying will not change) on a route
    /// the store can replace: the route is marked refused, so that the store plans the file
    /// on its other route when it is opened again.
    fn reroute(&self, failure: &StreamFailure) -> bool {
        let fallback = match failure.end {
            Some(End::Source) => &self.fallbacks[0],
            Some(End::Destination) => &self.fallbacks[1],
            None => return false,
        };
        // A begun multipart upload keeps its route: a refused part is a signed URL that expired.
        let refusal = failure.status.is_some() && !failure.retryable && self.parted.is_none();
        // Every file planned on the route is moved, not only the first one refused.
        refusal && fallback.as_ref().is_some_and(|f| f.refuse_now())
    }

    fn part_written(&mut self, part: usize, headers: Vec<(String, String)>) {
        if let Some(parted) = self.parted.as_mut() {
            parted.part_written(part, headers);
        }
    }

    /// Commits a file whose bytes are all written (`streamed` of them by its last attempt);
    /// the file's byte count.
    fn complete(&mut self, streamed: u64) -> Result<u64, CopyError> {
        if let Some(parted) = self.parted.as_mut() {
            parted.complete().map_err(|e| CopyError {
                message: format!("committing {}: {}", self.label, e.message),
                ..e
            })?;
            // Committed: nothing to abort any more.
            self.parted = None;
            return Ok(self.size);
        }
        Ok(streamed)
    }

    /// A file written in parts that got further since its last failure starts a fresh budget:
    /// a long upload is not given up for failures spread over its parts.
    fn renew_budget_on_progress(&mut self) {
        let written = self.parted.as_ref().map_or(0, Parted::written);
        if written > self.budget.parts_written {
            self.budget = FileBudget {
                parts_written: written,
                ..FileBudget::default()
            };
        }
    }

    /// Whether fresh credentials may cure a refusal: signed URLs are signed again when the
    /// file is reopened, and a token the file's requests carry is fetched again.
    fn refreshable(&self) -> bool {
        let refreshed = self.credentials.iter().filter(|c| c.refresh()).count();
        self.signed || refreshed > 0
    }

    /// Whether this refusal of a signed request is its first (then the next attempt gets
    /// fresh URLs): once per file, or once per part of a file written in parts.
    fn first_refusal(&mut self) -> bool {
        match self.parted.as_mut() {
            Some(parted) => parted.first_refusal(),
            None => !std::mem::replace(&mut self.budget.refreshed, true),
        }
    }
}

/// One file's retry budget.
#[derive(Default)]
struct FileBudget {
    attempts: u32,
    first_failure: Option<Instant>,
    /// Whether the file was opened again after its signed URL was refused.
    refreshed: bool,
    /// Parts accepted when the budget started.
    parts_written: usize,
}

/// Opens files a batch at a time as the transfer asks for them.
struct Feed<'a> {
    waiting: VecDeque<usize>,
    opened: VecDeque<(usize, FileJob)>,
    batch: usize,
    open: OpenFiles<'a>,
    /// Set when opening failed: nothing more is handed out, the error ends the transfer.
    failed_to_open: Option<CopyError>,
}

impl Feed<'_> {
    fn next(&mut self) -> Option<(usize, FileJob)> {
        if self.opened.is_empty() && self.failed_to_open.is_none() && !self.waiting.is_empty() {
            let n = self.batch.min(self.waiting.len());
            let ids: Vec<usize> = self.waiting.drain(..n).collect();
            match (self.open)(&ids) {
                Ok(jobs) => self.opened.extend(ids.into_iter().zip(jobs)),
                Err(e) => self.failed_to_open = Some(e),
            }
        }
        self.opened.pop_front()
    }
}

/// What one attempt's answer means for the request.
enum Assessment {
    Final(Response),
    Retry {
        after: Option<Duration>,
        failure: Failure,
    },
    GiveUp(Failure),
}

/// Why an attempt failed.
struct Failure {
    message: String,
    status: Option<u16>,
}

fn assess(answer: Result<Response, SendError>, idempotent: bool) -> Assessment {
    match answer {
        Ok(response) => {
            let transient = if idempotent {
                retry::is_transient_status(response.status)
            } else {
                retry::is_not_processed_status(response.status)
            };
            if !transient {
                return Assessment::Final(response);
            }
            let after = response
                .header("retry-after")
                .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
            Assessment::Retry {
                after,
                failure: Failure {
                    message: format!("HTTP {}: {}", response.status, response.body_snippet()),
                    status: Some(response.status),
                },
            }
        }
        Err(e) if !e.retryable => Assessment::GiveUp(Failure {
            message: e.message,
            status: None,
        }),
        Err(e) if idempotent || e.not_sent => Assessment::Retry {
            after: None,
            failure: Failure {
                message: e.message,
                status: None,
            },
        },
        Err(e) => Assessment::GiveUp(Failure {
            message: e.message,
            status: None,
        }),
    }
}

fn give_up(request: &Request, failure: &Failure, attempts: u32) -> Error {
    Error {
        message: format!(
            "{}: {} (after {attempts} attempt{})",
            request.describe(),
            failure.message,
            plural(attempts)
        ),
        status: failure.status,
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn stream_error(label: &str, failure: &StreamFailure, attempts: u32) -> Error {
    Error {
        message: format!(
            "copying {label}: {} (after {attempts} attempt{})",
            failure.message,
            plural(attempts)
        ),
        status: failure.status,
    }
}

pub fn sleep(wait: Duration) {
    if !wait.is_zero() {
        std::thread::sleep(wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::VecDeque;

    /// Answers each `send` from a script, and records what was sent.
    struct Scripted {
        answers: RefCell<VecDeque<Result<Response, SendError>>>,
        sent: std::rc::Rc<RefCell<u32>>,
        stream_rounds: RefCell<VecDeque<Vec<Result<u64, StreamFailure>>>>,
    }

    impl Http for Scripted {
        fn send(&self, _: &Request) -> Result<Response, SendError> {
            *self.sent.borrow_mut() += 1;
            self.answers
                .borrow_mut()
                .pop_front()
                .expect("script exhausted")
        }
        fn stream(
            &self,
            next: NextJob,
            _: usize,
            calls: &mut dyn Attempts,
            events: &mut dyn FnMut(StreamEvent),
        ) {
            send_each(self, calls);
            let mut jobs = Vec::new();
            while let Some((id, _)) = next() {
                jobs.push(id);
            }
            if jobs.is_empty() {
                return;
            }
            let round = self
                .stream_rounds
                .borrow_mut()
                .pop_front()
                .expect("no round scripted");
            assert_eq!(
                round.len(),
                jobs.len(),
                "retry round has the failed jobs only"
            );
            for (id, result) in jobs.into_iter().zip(round) {
                // `Ok(n)` with n >= 1000 stands for a long transfer: it takes n/1000 * 100 ms.
                if let Ok(n) = result {
                    sleep(Duration::from_millis(n / 1000 * 100));
                }
                events(StreamEvent::Finished { id, result });
            }
        }
    }

    fn status(code: u16) -> Result<Response, SendError> {
        Ok(Response {
            status: code,
            headers: vec![],
            body: b"{}".to_vec(),
        })
    }
    fn refused() -> Result<Response, SendError> {
        Err(SendError {
            message: "connection refused".into(),
            not_sent: true,
            retryable: true,
        })
    }
    fn reset() -> Result<Response, SendError> {
        Err(SendError {
            message: "connection reset".into(),
            not_sent: false,
            retryable: true,
        })
    }

    fn transport(
        answers: Vec<Result<Response, SendError>>,
    ) -> (Transport, std::rc::Rc<RefCell<u32>>) {
        let sent = std::rc::Rc::new(RefCell::new(0));
        let http = Scripted {
            answers: RefCell::new(answers.into()),
            sent: sent.clone(),
            stream_rounds: RefCell::new(VecDeque::new()),
        };
        // Five attempts, as the scripts below are written for.
        let policy = RetryPolicy {
            max_attempts: 5,
            ..RetryPolicy::without_waits()
        };
        (Transport::new(Box::new(http), policy), sent)
    }

    fn get() -> Request {
        Request::new(
            Method::Get,
            Url::parse("http://h/api?token=secret").unwrap(),
        )
    }

    fn job(label: &str) -> FileJob {
        FileJob {
            label: label.into(),
            size: 0,
            download: Download::get(get()),
            upload: Upload::put(get()),
        }
    }

    #[test]
    fn transient_failures_are_retried_until_success() {
        let (t, sent) = transport(vec![refused(), status(503), status(502), status(200)]);
        assert_eq!(t.send(&get(), true).unwrap().status, 200);
        assert_eq!(*sent.borrow(), 4);
    }

    #[test]
    fn storage_errors_never_echo_credentials() {
        let body = b"<Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message>\
<Token-0>FwoGZXIvYXdzEXAMPLEsession</Token-0><CanonicalRequest>PUT /b/k\nx-amz-security-token:FwoGZXIvYXdzEXAMPLEsession</CanonicalRequest><RequestId>R1</RequestId></Error>";
        let text = snippet(body);
        assert!(!text.contains("FwoGZXIvYXdz"), "{text}");
        assert!(
            text.contains("<Code>ExpiredToken</Code>") && text.contains("<Token-0>***</Token-0>"),
            "{text}"
        );
        assert!(text.contains("<RequestId>R1</RequestId>"), "{text}");
        // Cut off inside an element: nothing after its start.
        assert_eq!(
            snippet(b"<Error><StringToSign>AWS4 secret"),
            "<Error><StringToSign>***"
        );
    }

    #[test]
    fn client_errors_are_returned_at_once() {
        let (t, sent) = transport(vec![status(404)]);
        assert_eq!(t.send(&get(), true).unwrap().status, 404);
        assert_eq!(*sent.borrow(), 1);
    }

    #[test]
    fn retries_are_bounded_and_the_error_hides_the_query() {
        let (t, sent) = transport((0..10).map(|_| status(500)).collect());
        let err = t.send(&get(), true).unwrap_err();
        assert_eq!(*sent.borrow(), 5);
        let msg = err.message.clone();
        assert!(msg.contains("GET http://h/api: HTTP 500"), "{msg}");
        assert!(
            msg.contains("after 5 attempts") && !msg.contains("secret"),
            "{msg}"
        );
        assert_eq!(err.status, Some(500));
        assert_eq!(CopyError::from(err).kind, crate::api::ErrorKind::Upstream);
    }

    #[test]
    fn permanent_send_failures_are_not_retried() {
        let unknown_host = Err(SendError {
            message: "host name not found".into(),
            not_sent: true,
            retryable: false,
        });
        let (t, sent) = transport(vec![unknown_host]);
        let err = t.send(&get(), true).unwrap_err();
        assert!(
            err.message
                .contains("host name not found (after 1 attempt)"),
            "{}",
            err.message
        );
        assert_eq!(*sent.borrow(), 1);
    }

    #[test]
    fn settings_come_from_mlflow_variables() {
        let env = fixed_env;
        let default = Settings::from_env(&env(&[]), Caller::User).unwrap();
        assert_eq!(default.timeout, Duration::from_secs(120));
        assert_eq!(default.policy.max_attempts, 8);
        assert_eq!(default.policy.backoff_factor, Duration::from_secs(2));
        assert_eq!(default.hosts, HostPolicy::any());
        let set = Settings::from_env(
            &env(&[
                ("MLFLOW_HTTP_REQUEST_TIMEOUT", "2.5"),
                ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1"),
                ("MLFLOW_COPY_ALLOWED_HOSTS", "h:1"),
                ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0.5"),
                ("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0"),
            ]),
            Caller::User,
        )
        .unwrap();
        assert_eq!(set.timeout, Duration::from_millis(2500));
        assert_eq!(set.policy.max_attempts, 2);
        assert!(set.hosts.listed().is_some());
        assert_eq!(set.policy.backoff_factor, Duration::from_millis(500));
        assert_eq!(set.policy.backoff_jitter, Duration::ZERO);
        for bad in [
            ("MLFLOW_HTTP_REQUEST_TIMEOUT", "soon"),
            ("MLFLOW_HTTP_REQUEST_TIMEOUT", "0"),
        ] {
            let err = Settings::from_env(
                &move |k: &str| (k == bad.0).then(|| bad.1.to_string()),
                Caller::User,
            );
            assert!(err
                .unwrap_err()
                .message
                .contains("MLFLOW_HTTP_REQUEST_TIMEOUT"));
        }
        let err = Settings::from_env(
            &env(&[("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "11")]),
            Caller::User,
        );
        assert!(err.unwrap_err().message.contains("from 0 to 10"));
    }

    #[test]
    fn many_requests_are_retried_each_and_answered_in_order() {
        // Request 0 fails once then succeeds; request 1 succeeds; request 2 is a client error.
        let (t, sent) = transport(vec![status(503), status(201), status(404), status(200)]);
        let answers = t.send_many(&[get(), get(), get()], 3, true);
        let statuses: Vec<u16> = answers.iter().map(|a| a.as_ref().unwrap().status).collect();
        assert_eq!(statuses, vec![200, 201, 404]);
        assert_eq!(*sent.borrow(), 4);
    }

    #[test]
    fn creates_are_not_repeated_when_the_server_may_have_acted() {
        let (t, sent) = transport(vec![reset()]);
        assert!(t.send(&get(), false).is_err());
        assert_eq!(*sent.borrow(), 1);
        let (t, sent) = transport(vec![status(502)]);
        assert_eq!(t.send(&get(), false).unwrap().status, 502);
        assert_eq!(*sent.borrow(), 1);
        let (t, sent) = transport(vec![refused(), status(429), status(200)]);
        assert_eq!(t.send(&get(), false).unwrap().status, 200);
        assert_eq!(*sent.borrow(), 3);
    }

    fn transient() -> Result<u64, StreamFailure> {
        Err(StreamFailure {
            message: "HTTP 503".into(),
            retryable: true,
            retry_after: None,
            status: Some(503),
            end: None,
        })
    }

    #[test]
    fn streams_retry_only_the_failed_files() {
        let (mut t, _) = transport(vec![]);
        let rounds = vec![
            vec![Ok(10), transient(), Ok(5)],
            vec![transient()],
            vec![Ok(7)],
        ];
        t.http = Box::new(Scripted {
            answers: RefCell::new(VecDeque::new()),
            sent: Default::default(),
            stream_rounds: RefCell::new(rounds.into()),
        });
        let mut opened = Vec::new();
        let mut done = Vec::new();
        let total = t
            .stream_files(
                3,
                2,
                &mut NoCalls,
                &mut |ids| {
                    opened.push(ids.to_vec());
                    Ok(ids.iter().map(|i| job(&format!("f{i}"))).collect())
                },
                &mut |p| {
                    if let Transferred::File { index, bytes } = p {
                        done.push((index, bytes))
                    }
                },
            )
            .unwrap();
        assert_eq!(total, 22);
        assert_eq!(done, vec![(0, 10), (2, 5), (1, 7)]);
        // A retried file is opened again (fresh signed URLs), alone.
        assert_eq!(opened, vec![vec![0, 1, 2], vec![1], vec![1]]);
    }

    /// `count` API calls; records their final answers.
    struct SomeCalls {
        count: usize,
        sent: usize,
        answers: Vec<(usize, Result<u16, String>)>,
    }

    fn some_calls(count: usize) -> SomeCalls {
        SomeCalls {
            count,
            sent: 0,
            answers: Vec::new(),
        }
    }

    impl Calls for SomeCalls {
        fn next(&mut self) -> Option<(usize, Request)> {
            (self.sent < self.count).then(|| {
                self.sent += 1;
                (self.sent, get())
            })
        }
        fn answer(&mut self, id: usize, answer: Result<Response, Error>) {
            self.answers
                .push((id, answer.map(|r| r.status).map_err(|e| e.message)));
        }
        fn done(&self) -> bool {
            self.answers.len() == self.count
        }
    }

    #[test]
    fn calls_travel_with_the_files_each_retried_on_its_own() {
        // Call 1 meets a 503 and is retried while the file streams; call 2's 404 is final.
        let (mut t, sent) = transport(vec![]);
        t.http = Box::new(Scripted {
            answers: RefCell::new(vec![status(503), status(200), status(404)].into()),
            sent: sent.clone(),
            stream_rounds: RefCell::new(vec![vec![Ok(5)]].into()),
        });
        let mut calls = some_calls(2);
        let total = t
            .stream_files(1, 1, &mut calls, &mut |_| Ok(vec![job("f")]), &mut |_| {})
            .unwrap();
        assert_eq!(total, 5);
        assert_eq!(*sent.borrow(), 3);
        assert_eq!(calls.answers, vec![(1, Ok(200)), (2, Ok(404))]);

        // Without files: a call that keeps failing gets its five attempts, then its error.
        let (t, sent) = transport((0..5).map(|_| status(500)).collect());
        let mut calls = some_calls(1);
        t.stream_files(0, 1, &mut calls, &mut |_| unreachable!(), &mut |_| {})
            .unwrap();
        assert_eq!(*sent.borrow(), 5);
        let err = calls.answers[0].1.as_ref().unwrap_err();
        assert!(
            err.contains("HTTP 500") && err.contains("after 5 attempts"),
            "{err}"
        );
    }

    #[test]
    fn each_file_has_its_own_retry_clock() {
        // The whole transfer may take longer than one file's retry budget: a long file
        // (300 ms) must not use up the time of the file that fails after it.
        let (mut t, _) = transport(vec![]);
        t.policy.max_elapsed = Some(Duration::from_millis(200));
        t.http = Box::new(Scripted {
            answers: RefCell::new(VecDeque::new()),
            sent: Default::default(),
            stream_rounds: RefCell::new(vec![vec![Ok(3000), transient()], vec![Ok(1)]].into()),
        });
        let total = t
            .stream_files(
                2,
                1,
                &mut NoCalls,
                &mut |ids| Ok(ids.iter().map(|i| job(&format!("f{i}"))).collect()),
                &mut |_| {},
            )
            .unwrap();
        assert_eq!(total, 3001);
    }

    #[test]
    fn a_file_that_keeps_failing_gives_up_after_its_attempts() {
        let (mut t, _) = transport(vec![]);
        let rounds: Vec<_> = (0..5).map(|_| vec![transient()]).collect();
        t.http = Box::new(Scripted {
            answers: RefCell::new(VecDeque::new()),
            sent: Default::default(),
            stream_rounds: RefCell::new(rounds.into()),
        });
        let err = t
            .stream_files(1, 1, &mut NoCalls, &mut |_| Ok(vec![job("f")]), &mut |_| {})
            .unwrap_err();
        assert!(err.message.contains("after 5 attempts"), "{}", err.message);
    }

    #[test]
    fn a_refused_route_with_a_fallback_is_replaced_when_the_file_is_opened_again() {
        let denied = |end| {
            Err(StreamFailure {
                message: "HTTP 403".into(),
                retryable: false,
                retry_after: None,
                status: Some(403),
                end: Some(end),
            })
        };
        let run = |rounds: Vec<Vec<Result<u64, StreamFailure>>>| {
            let count = rounds[0].len();
            let (mut t, _) = transport(vec![]);
            t.http = Box::new(Scripted {
                answers: RefCell::new(VecDeque::new()),
                sent: Default::default(),
                stream_rounds: RefCell::new(rounds.into()),
            });
            let files_api = Fallback::default();
            let mut routes = Vec::new();
            let result = t.stream_files(
                count,
                count,
                &mut NoCalls,
                &mut |ids| {
                    // The store: the Files API until it is refused, then a signed URL.
                    let download = if files_api.refused() {
                        routes.push("signed");
                        Download::signed(get())
                    } else {
                        routes.push("files");
                        Download::with_fallback(get(), files_api.clone())
                    };
                    Ok(ids
                        .iter()
                        .map(|_| FileJob {
                            download: download.clone(),
                            ..job("f")
                        })
                        .collect())
                },
                &mut |_| {},
            );
            (result.map_err(|e| e.message), routes, files_api.refused())
        };
        // Refused at the source, the Files API's side: the retry goes by signed URL, at once.
        let (result, routes, refused) = run(vec![vec![denied(End::Source)], vec![Ok(4)]]);
        assert_eq!(
            (result, routes, refused),
            (Ok(4), vec!["files", "signed"], true)
        );
        // Refused at the other end: nothing to replace, the refusal ends the copy.
        let (result, routes, refused) = run(vec![vec![denied(End::Destination)]]);
        assert!(result.unwrap_err().contains("HTTP 403"));
        assert_eq!((routes, refused), (vec!["files"], false));
        // Both files of a batch planned on the route are moved, not only the first refused.
        let both = vec![
            vec![denied(End::Source), denied(End::Source)],
            vec![Ok(4), Ok(4)],
        ];
        let (result, routes, refused) = run(both);
        assert_eq!(
            (result, routes, refused),
            (Ok(8), vec!["files", "signed"], true)
        );
        // A transient failure is retried on the same route.
        let (result, routes, refused) = run(vec![vec![transient()], vec![Ok(4)]]);
        assert_eq!(
            (result, routes, refused),
            (Ok(4), vec!["files", "files"], false)
        );
    }

    #[test]
    fn a_refused_signed_url_is_opened_again_once() {
        let denied = || {
            Err(StreamFailure {
                message: "HTTP 403".into(),
                retryable: false,
                retry_after: None,
                status: Some(403),
                end: None,
            })
        };
        let (mut t, _) = transport(vec![]);
        t.http = Box::new(Scripted {
            answers: RefCell::new(VecDeque::new()),
            sent: Default::default(),
            stream_rounds: RefCell::new(vec![vec![denied()], vec![Ok(4)]].into()),
        });
        let signed = |ids: &[usize]| {
            let signed_job = |_| FileJob {
                download: Download::signed(get()),
                ..job("f")
            };
            Ok::<_, CopyError>(ids.iter().map(signed_job).collect())
        };
        let mut opened = 0;
        let total = t
            .stream_files(
                1,
                1,
                &mut NoCalls,
                &mut |ids| {
                    opened += 1;
                    signed(ids)
                },
                &mut |_| {},
            )
            .unwrap();
        assert_eq!((total, opened), (4, 2));

        // Refused again with a fresh URL: that is a real refusal.
        t.http = Box::new(Scripted {
            answers: RefCell::new(VecDeque::new()),
            sent: Default::default(),
            stream_rounds: RefCell::new(vec![vec![denied()], vec![denied()]].into()),
        });
        let err = t
            .stream_files(1, 1, &mut NoCalls, &mut |ids| signed(ids), &mut |_| {})
            .unwrap_err();
        assert_eq!(err.kind, crate::api::ErrorKind::Unauthorized);
        // An unsigned request refused is not retried at all.
        t.http = Box::new(Scripted {
            answers: RefCell::new(VecDeque::new()),
            sent: Default::default(),
            stream_rounds: RefCell::new(vec![vec![denied()]].into()),
        });
        let plain = |ids: &[usize]| Ok::<_, CopyError>(ids.iter().map(|_| job("f")).collect());
        assert!(t
            .stream_files(1, 1, &mut NoCalls, &mut |ids| plain(ids), &mut |_| {})
            .is_err());
    }

    #[test]
    fn a_permanent_stream_failure_stops_the_copy() {
        let (mut t, _) = transport(vec![]);
        let denied = StreamFailure {
            message: "HTTP 403".into(),
            retryable: false,
            retry_after: None,
            status: Some(403),
            end: None,
        };
        t.http = Box::new(Scripted {
            answers: RefCell::new(VecDeque::new()),
            sent: Default::default(),
            stream_rounds: RefCell::new(vec![vec![Ok(1), Err(denied)]].into()),
        });
        let err: CopyError = t
            .stream_files(
                2,
                2,
                &mut NoCalls,
                &mut |ids| Ok(ids.iter().map(|&i| job(["a", "b"][i])).collect()),
                &mut |_| {},
            )
            .unwrap_err();
        assert_eq!(err.kind, crate::api::ErrorKind::Unauthorized);
        assert!(
            err.message.starts_with("copying b: HTTP 403"),
            "{}",
            err.message
        );
    }
}
