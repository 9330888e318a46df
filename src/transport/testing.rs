//! Test doubles shared by the transport's tests: a scripted `Http`, a `Transport` over it,
//! the requests and jobs the tests send, and a fixed environment for settings.

use super::retry::RetryPolicy;
use super::{
    send_each, sleep, Attempts, Digest, Download, FileJob, Http, Method, NextJob, Request,
    Response, SendError, Slots, StreamEvent, StreamFailure, Transport, Upload,
};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::Duration;
use url::Url;

/// An environment of fixed variables, for tests of settings read from it.
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

/// Answers each `send` from a script, and records what was sent.
pub(super) struct Scripted {
    pub(super) answers: RefCell<VecDeque<Result<Response, SendError>>>,
    pub(super) sent: std::rc::Rc<RefCell<u32>>,
    pub(super) stream_rounds: RefCell<VecDeque<Vec<Result<u64, StreamFailure>>>>,
    /// The answers of each `digest` call, in turn.
    pub(super) digest_rounds: RefCell<VecDeque<Vec<Result<Digest, StreamFailure>>>>,
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
        _: Slots,
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

    fn digest(&self, downloads: &[(Request, u64)], _: usize) -> Vec<Result<Digest, StreamFailure>> {
        let round = self
            .digest_rounds
            .borrow_mut()
            .pop_front()
            .expect("no digest round scripted");
        assert_eq!(
            round.len(),
            downloads.len(),
            "a round reads the pending files"
        );
        round
    }
}

pub(super) fn status(code: u16) -> Result<Response, SendError> {
    Ok(Response {
        status: code,
        headers: vec![],
        body: b"{}".to_vec(),
    })
}

pub(super) fn transport(
    answers: Vec<Result<Response, SendError>>,
) -> (Transport, std::rc::Rc<RefCell<u32>>) {
    let sent = std::rc::Rc::new(RefCell::new(0));
    let http = Scripted {
        answers: RefCell::new(answers.into()),
        sent: sent.clone(),
        stream_rounds: RefCell::new(VecDeque::new()),
        digest_rounds: RefCell::new(VecDeque::new()),
    };
    // Five attempts, as the scripts below are written for.
    let policy = RetryPolicy {
        max_attempts: 5,
        ..RetryPolicy::without_waits()
    };
    (Transport::new(Box::new(http), policy), sent)
}

pub(super) fn get() -> Request {
    Request::new(
        Method::Get,
        Url::parse("http://h/api?token=secret").unwrap(),
    )
}

pub(super) fn job(label: &str) -> FileJob {
    FileJob {
        label: label.into(),
        size: 0,
        download: Download::get(get()),
        upload: Upload::put(get()),
    }
}
