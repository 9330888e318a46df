//! What one attempt's answer means (a final answer, a retry, or giving up) and the error
//! that gives up a request or a file, naming its attempts: shared by `send_many`, the calls'
//! `Retrying` and `stream_files`.

use super::retry;
use super::{Error, Request, Response, SendError, StreamFailure};
use std::time::{Duration, SystemTime};

/// What one attempt's answer means for the request.
pub(super) enum Assessment {
    Final(Response),
    Retry {
        after: Option<Duration>,
        failure: Failure,
    },
    GiveUp(Failure),
}

/// Why an attempt failed.
pub(super) struct Failure {
    message: String,
    status: Option<u16>,
}

pub(super) fn assess(answer: Result<Response, SendError>, idempotent: bool) -> Assessment {
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

pub(super) fn give_up(request: &Request, failure: &Failure, attempts: u32) -> Error {
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

/// A file given up on: `doing` says what was done with it (`copying run r artifact a`).
pub(super) fn stream_error(doing: &str, failure: &StreamFailure, attempts: u32) -> Error {
    Error {
        message: format!(
            "{doing}: {} (after {attempts} attempt{})",
            failure.message,
            plural(attempts)
        ),
        status: failure.status,
    }
}
