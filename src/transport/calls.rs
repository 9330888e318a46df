//! API requests sent in the same loop as file transfers: the `Calls` a caller hands out, the
//! `Attempts` that `Http::stream` sends (one try each), a fixed list of them (`FixedAttempts`,
//! what `Http::send_all` is made of) and `Retrying`, which gives each call its own retry
//! budget without holding up the rest of the loop.

use super::assessment::{assess, give_up, Assessment};
use super::retry::{self, RetryPolicy};
use super::{sleep, Error, Http, Request, Response, SendError};
use std::collections::HashMap;
use std::time::{Duration, Instant};

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
    /// What one attempt of request `id` met, retried or not: the server answered in `latency`,
    /// and said it is overloaded (429, 503, `Retry-After`: `Some` of the wait it asked, zero if
    /// none) or not (`None`). (Not called for connection failures and other 5xx, which say
    /// nothing about load.) For a caller that adapts its limits to the server
    /// (`AdaptiveLimit`); ignored by default.
    fn attempted(&mut self, _id: usize, _latency: Duration, _overloaded: Option<Duration>) {}
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
pub(super) struct Retrying<'a> {
    calls: &'a mut dyn Calls,
    policy: &'a RetryPolicy,
    /// Requests sent and not yet finally answered, by the caller's id.
    open: HashMap<usize, Attempt>,
}

struct Attempt {
    request: Request,
    attempts: u32,
    first_sent: Instant,
    /// When its latest attempt was sent.
    sent: Instant,
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
        if let Ok(response) = &answer {
            let status = response.status;
            let asked = response.header("retry-after");
            let overloaded = (matches!(status, 429 | 503) || asked.is_some()).then(|| {
                asked
                    .and_then(|v| retry::parse_retry_after(v, std::time::SystemTime::now()))
                    .unwrap_or_default()
            });
            if overloaded.is_some() || status < 500 {
                self.calls.attempted(id, attempt.sent.elapsed(), overloaded);
            }
        }
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

impl<'a> Retrying<'a> {
    /// The calls of `calls`, each retried on its own budget under `policy`.
    pub(super) fn new(calls: &'a mut dyn Calls, policy: &'a RetryPolicy) -> Retrying<'a> {
        Retrying {
            calls,
            policy,
            open: HashMap::new(),
        }
    }

    /// A retry that is due, else the caller's next request (not yet given its credentials).
    fn next_attempt(&mut self) -> Option<(usize, Request)> {
        let now = Instant::now();
        let retry = self
            .open
            .iter_mut()
            .find(|(_, a)| a.due.is_some_and(|due| due <= now));
        if let Some((&id, attempt)) = retry {
            attempt.due = None;
            attempt.sent = now;
            return Some((id, attempt.request.clone()));
        }
        let (id, request) = self.calls.next()?;
        let attempt = Attempt {
            request: request.clone(),
            attempts: 0,
            first_sent: now,
            sent: now,
            due: None,
        };
        self.open.insert(id, attempt);
        Some((id, request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::testing::{get, job, status, transport, Scripted};
    use std::cell::RefCell;

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
            digest_rounds: RefCell::default(),
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
}
