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

mod assessment;
mod calls;
mod digests;
mod files;
mod request;
mod settings;
mod storage_errors;
mod stream_files;
#[cfg(test)]
mod testing;

use crate::api::CopyError;
use crate::limits::AdaptiveLimit;
use assessment::{assess, give_up, Assessment};
pub use calls::{send_each, Attempts, Calls, FixedAttempts, NoCalls};
pub use credential::Credential;
pub use digests::{Digest, DigestJob, OpenDigests};
pub use files::{
    Download, End, Fallback, FileJob, NextJob, OpenFiles, Part, Slots, StreamEvent, StreamFailure,
    StreamJob, Transferred, Upload,
};
pub use hosts::{Caller, HostPolicy, ALLOWED_HOSTS_VAR};
pub use multipart::Multipart;
pub use request::{Method, Request, Response};
use retry::RetryPolicy;
pub use settings::{
    Settings, BACKOFF_FACTOR_VAR, BACKOFF_JITTER_VAR, MAX_RETRIES_VAR, TIMEOUT_VAR,
};
use std::time::{Duration, Instant};
pub use storage_errors::{credentials_refused, error_refuses_credentials, storage_refusal};
#[cfg(test)]
pub(crate) use testing::fixed_env;

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
        self.stream(&mut || None, &|| 1, &mut fixed, &mut |_| {});
        fixed.answers()
    }

    /// Streams each job's download into its parts chunk by chunk, never holding more than a
    /// chunk, with at most `slots()` jobs in flight (asked again as jobs end: the limit may
    /// change meanwhile), while sending the requests `calls` hands out. Jobs are taken from `next` only when a slot is free. One attempt per job (a
    /// failed part ends the job) and per request. Returns once every job has ended and `calls`
    /// is done.
    fn stream(
        &self,
        next: NextJob,
        slots: Slots,
        calls: &mut dyn Attempts,
        events: &mut dyn FnMut(StreamEvent),
    );

    /// Reads each download (with the size it must have) through to its end, at most
    /// `concurrency` at once, hashing it chunk by chunk; the digests in request order. One
    /// attempt each.
    fn digest(
        &self,
        downloads: &[(Request, u64)],
        concurrency: usize,
    ) -> Vec<Result<Digest, StreamFailure>>;
}

/// `Http` plus the retry policy: what store clients use.
pub struct Transport {
    http: Box<dyn Http>,
    policy: RetryPolicy,
    /// File transfers in flight (`stream_files`), learned over every transfer of the command:
    /// `None` until files are streamed.
    files: std::cell::RefCell<Option<AdaptiveLimit>>,
    /// The clock the limits are fed (`AdaptiveLimit::overloaded`).
    epoch: Instant,
}

impl Transport {
    pub fn new(http: Box<dyn Http>, policy: RetryPolicy) -> Transport {
        Transport {
            http,
            policy,
            files: Default::default(),
            epoch: Instant::now(),
        }
    }

    /// What the file transfers' limit settled on ("limit settled at 24 (peak 32)"), once
    /// files were streamed.
    pub fn files_limit(&self) -> Option<String> {
        self.files.borrow().as_ref().map(AdaptiveLimit::summary)
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
}

pub fn sleep(wait: Duration) {
    if !wait.is_zero() {
        std::thread::sleep(wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::testing::{get, status, transport};

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

    #[test]
    fn transient_failures_are_retried_until_success() {
        let (t, sent) = transport(vec![refused(), status(503), status(502), status(200)]);
        assert_eq!(t.send(&get(), true).unwrap().status, 200);
        assert_eq!(*sent.borrow(), 4);
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
}
