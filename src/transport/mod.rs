//! The one way out of the component: HTTP requests with retries, and streamed file transfers.
//!
//! `Http` is the seam between pure logic and the host. On `wasm32` it is implemented over WASI
//! HTTP (`wasi_http`); the retry loops here are host-independent and unit-tested with a scripted
//! `Http`.

pub mod retry;
#[cfg(target_arch = "wasm32")]
pub mod wasi_http;

use crate::api::CopyError;
use retry::RetryPolicy;
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
}

impl Request {
    pub fn new(method: Method, url: Url) -> Request {
        Request {
            method,
            url,
            headers: Vec::new(),
            body: Vec::new(),
        }
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

pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A request that never reached a server answer: refused connection, DNS failure, reset.
#[derive(Debug, Clone, PartialEq)]
pub struct SendError {
    pub message: String,
    /// Whether the server may not have seen the request at all (refused connection, DNS).
    pub not_sent: bool,
}

/// One file to stream: the body of `get` becomes the body of `put`.
#[derive(Debug, Clone)]
pub struct StreamJob {
    /// What the file is, for messages (e.g. `run abc artifact model/MLmodel`).
    pub label: String,
    pub get: Request,
    pub put: Request,
}

/// Why one streamed file failed.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamFailure {
    pub message: String,
    pub retryable: bool,
    pub retry_after: Option<Duration>,
    /// HTTP status of the failing side, if a server answered.
    pub status: Option<u16>,
}

/// What `Http::stream` reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// `bytes` more bytes reached the destination.
    Bytes(u64),
    /// Job `index` finished: its byte count, or why it failed.
    Finished {
        index: usize,
        result: Result<u64, StreamFailure>,
    },
}

/// Progress of `Transport::stream_all`.
pub enum Transferred<'a> {
    /// More bytes reached a destination (possibly of a file that will be retried).
    Bytes(u64),
    /// A file is complete.
    File { job: &'a StreamJob, bytes: u64 },
}

/// The host's HTTP client: one attempt per call, no retries.
pub trait Http {
    /// Sends one request with its whole body and reads the whole response.
    fn send(&self, request: &Request) -> Result<Response, SendError>;

    /// Sends several requests with at most `concurrency` in flight; answers in request order.
    fn send_all(
        &self,
        requests: &[Request],
        _concurrency: usize,
    ) -> Vec<Result<Response, SendError>> {
        requests.iter().map(|r| self.send(r)).collect()
    }

    /// Streams every job's GET body into its PUT chunk by chunk, with at most `concurrency`
    /// jobs in flight, forwarding the source `content-length`. One attempt per job.
    fn stream(&self, jobs: &[StreamJob], concurrency: usize, events: &mut dyn FnMut(StreamEvent));
}

/// `Http` plus the retry policy: what store clients use.
pub struct Transport {
    http: Box<dyn Http>,
    policy: RetryPolicy,
}

impl Transport {
    pub fn new(http: Box<dyn Http>, policy: RetryPolicy) -> Transport {
        Transport { http, policy }
    }

    /// Sends a request, retrying connection failures and transient statuses (408, 429, 5xx).
    /// A non-idempotent request (a create) is only repeated when the server certainly did not
    /// act on it, so that a lost response cannot create a duplicate. Returns the final response,
    /// whatever its status.
    pub fn send(&self, request: &Request, idempotent: bool) -> Result<Response, CopyError> {
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
    ) -> Vec<Result<Response, CopyError>> {
        let start = Instant::now();
        let mut results: Vec<Option<Result<Response, CopyError>>> =
            requests.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = (0..requests.len()).collect();
        let mut attempts = 0;
        while !pending.is_empty() {
            attempts += 1;
            let batch: Vec<Request> = pending.iter().map(|&i| requests[i].clone()).collect();
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

    /// Streams all jobs, retrying the files that failed transiently (PUT overwrites, so a
    /// repeated file is harmless). Returns the bytes written, or the first permanent failure.
    pub fn stream_all(
        &self,
        jobs: &[StreamJob],
        concurrency: usize,
        on_progress: &mut dyn FnMut(Transferred),
    ) -> Result<u64, CopyError> {
        let start = Instant::now();
        let mut pending: Vec<usize> = (0..jobs.len()).collect();
        let mut total = 0u64;
        let mut round = 0u32;
        while !pending.is_empty() {
            round += 1;
            let batch: Vec<StreamJob> = pending.iter().map(|&i| jobs[i].clone()).collect();
            let mut failures: Vec<(usize, StreamFailure)> = Vec::new();
            self.http
                .stream(&batch, concurrency, &mut |event| match event {
                    StreamEvent::Bytes(n) => on_progress(Transferred::Bytes(n)),
                    StreamEvent::Finished {
                        index,
                        result: Ok(bytes),
                    } => {
                        total += bytes;
                        on_progress(Transferred::File {
                            job: &batch[index],
                            bytes,
                        });
                    }
                    StreamEvent::Finished {
                        index,
                        result: Err(f),
                    } => failures.push((index, f)),
                });
            if let Some((index, fatal)) = failures.iter().find(|(_, f)| !f.retryable) {
                return Err(stream_error(&batch[*index], fatal, round));
            }
            let Some((first_index, first)) = failures.first() else {
                break;
            };
            let retry_after = failures.iter().filter_map(|(_, f)| f.retry_after).max();
            let wait = self.policy.delay(round - 1, retry_after, retry::jitter());
            if !self.policy.may_retry(round, start.elapsed(), wait) {
                return Err(stream_error(&batch[*first_index], first, round));
            }
            pending = failures.iter().map(|(i, _)| pending[*i]).collect();
            sleep(wait);
        }
        Ok(total)
    }
}

/// What one attempt's answer means for the request.
enum Assessment {
    Final(Response),
    Retry {
        after: Option<Duration>,
        failure: String,
    },
    GiveUp(String),
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
                failure: format!("HTTP {}: {}", response.status, response.body_snippet()),
            }
        }
        Err(e) if idempotent || e.not_sent => Assessment::Retry {
            after: None,
            failure: e.message,
        },
        Err(e) => Assessment::GiveUp(e.message),
    }
}

fn give_up(request: &Request, failure: &str, attempts: u32) -> CopyError {
    CopyError::upstream(format!(
        "{}: {failure} (after {attempts} attempt{})",
        request.describe(),
        plural(attempts)
    ))
}

fn plural(n: u32) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn stream_error(job: &StreamJob, failure: &StreamFailure, attempts: u32) -> CopyError {
    let message = format!(
        "copying {}: {} (after {attempts} attempt{})",
        job.label,
        failure.message,
        plural(attempts)
    );
    match failure.status {
        Some(401 | 403) => CopyError::new(crate::api::ErrorKind::Unauthorized, message),
        _ => CopyError::upstream(message),
    }
}

fn sleep(wait: Duration) {
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
        fn stream(&self, jobs: &[StreamJob], _: usize, events: &mut dyn FnMut(StreamEvent)) {
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
            for (index, result) in round.into_iter().enumerate() {
                events(StreamEvent::Finished { index, result });
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
        })
    }
    fn reset() -> Result<Response, SendError> {
        Err(SendError {
            message: "connection reset".into(),
            not_sent: false,
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
        let policy = RetryPolicy {
            base_delay: Duration::ZERO,
            ..RetryPolicy::default()
        };
        (Transport::new(Box::new(http), policy), sent)
    }

    fn get() -> Request {
        Request::new(
            Method::Get,
            Url::parse("http://h/api?token=secret").unwrap(),
        )
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
        assert_eq!(err.kind, crate::api::ErrorKind::Upstream);
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
        let job = |n: &str| StreamJob {
            label: n.into(),
            get: get(),
            put: get(),
        };
        let jobs = vec![job("a"), job("b"), job("c")];
        let mut done = Vec::new();
        let total = t
            .stream_all(&jobs, 2, &mut |p| {
                if let Transferred::File { job, bytes } = p {
                    done.push((job.label.clone(), bytes))
                }
            })
            .unwrap();
        assert_eq!(total, 22);
        assert_eq!(
            done,
            vec![("a".into(), 10), ("c".into(), 5), ("b".into(), 7)]
        );
    }

    #[test]
    fn a_permanent_stream_failure_stops_the_copy() {
        let (mut t, _) = transport(vec![]);
        let denied = StreamFailure {
            message: "HTTP 403".into(),
            retryable: false,
            retry_after: None,
            status: Some(403),
        };
        t.http = Box::new(Scripted {
            answers: RefCell::new(VecDeque::new()),
            sent: Default::default(),
            stream_rounds: RefCell::new(vec![vec![Ok(1), Err(denied)]].into()),
        });
        let job = |n: &str| StreamJob {
            label: n.into(),
            get: get(),
            put: get(),
        };
        let err = t
            .stream_all(&[job("a"), job("b")], 2, &mut |_| {})
            .unwrap_err();
        let flat = err;
        assert_eq!(flat.kind, crate::api::ErrorKind::Unauthorized);
        assert!(
            flat.message.starts_with("copying b: HTTP 403"),
            "{}",
            flat.message
        );
    }
}
