//! Bulk copies whose items run elsewhere: an executor that finishes items out of order, and
//! `--via` against a double of the HTTP function that really copies (on the fake stores),
//! loses a replica's answer and refuses a token.

use super::copy_experiment::copy_experiment;
use super::copy_run;
use super::item_executor::{run_here, ItemExecutor, Items, Job};
use super::lineage;
use super::migration_tests::{experiment_request, seed_experiment};
use super::tests::{the_copy, world, Recorded, World};
use super::Copier;
use crate::api::{CopyRunRequest, ErrorKind, ItemStatus};
use crate::stores::copy_function::Via;
use crate::stores::fake::FakeServer;
use crate::stores::Scheduler;
use crate::transport::retry::RetryPolicy;
use crate::transport::{send_each, Attempts, Http, NextJob, Request, Response, SendError, Slots};
use crate::transport::{Digest, StreamEvent, StreamFailure, Transport};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

/// Takes up to three items at once and finishes the last taken first: an order a fan-out
/// may end in. Records the run ids in the order they were handed out.
#[derive(Default)]
struct LatestFirst {
    handed_out: Vec<String>,
}

impl ItemExecutor for LatestFirst {
    fn run(&mut self, c: &mut Copier, items: &mut dyn Items) -> anyhow::Result<()> {
        loop {
            let mut batch = Vec::new();
            while batch.len() < 3 {
                let Some(next) = items.next(c) else { break };
                batch.push(next);
            }
            if batch.is_empty() {
                return Ok(());
            }
            for (key, job) in batch.into_iter().rev() {
                if let Job::Run { request, .. } = &job {
                    self.handed_out.push(request.run_id.clone());
                }
                let result = run_here(c, &job);
                items.done(c, key, result);
            }
        }
    }
}

fn parent_of_copy(w: &World, src_run_id: &str) -> Option<String> {
    the_copy(&w.dst, src_run_id)
        .data
        .tag(lineage::PARENT_RUN_ID)
        .map(str::to_string)
}

#[test]
fn items_finished_out_of_order_are_each_copied_once_children_after_their_parent() {
    let w = world();
    let (exp, ids) = seed_experiment(&w);
    let mut executor = LatestFirst::default();
    let mut progress = Recorded::default();
    let request = experiment_request(&exp, false);
    let report = copy_experiment(
        &mut w.copier(&w.dst, &mut progress),
        &request,
        &mut executor,
    )
    .unwrap();
    assert_eq!((report.created, report.failed), (4, 0), "{report:?}");
    let at = |id: &String| executor.handed_out.iter().position(|h| h == id).unwrap();
    assert!(at(&ids[0]) < at(&ids[1]) && at(&ids[1]) < at(&ids[2]));
    let root = the_copy(&w.dst, &ids[0]).info.run_id;
    let child = the_copy(&w.dst, &ids[1]).info.run_id;
    assert_eq!(parent_of_copy(&w, &ids[1]), Some(root));
    assert_eq!(parent_of_copy(&w, &ids[2]), Some(child));
}

/// What the double of the function does with the next copy request.
#[derive(Clone, Copy)]
enum Answer {
    /// Copies, and answers with the report.
    Copy,
    /// Answers with this status and an error body, copying nothing.
    Status(u16),
    /// Copies, but the answer is lost on the way (a replica killed before it answered).
    CopyThenLose,
}

/// The HTTP function over the fake stores: each `POST /copy-run` really runs copy-run.
#[derive(Clone)]
struct Function {
    src: Rc<FakeServer>,
    dst: Rc<FakeServer>,
    transport: Rc<Transport>,
    script: Rc<RefCell<VecDeque<Answer>>>,
    /// Path and Authorization header of every request.
    seen: Rc<RefCell<Vec<(String, String)>>>,
}

impl Function {
    fn copy(&self, request: &Request) -> Response {
        let one: CopyRunRequest = serde_json::from_slice(&request.body).unwrap();
        assert!(!one.copy_children, "children are items of their own");
        let mut progress = Recorded::default();
        let mut c = Copier {
            src: self.src.stores(),
            dst: self.dst.stores(),
            scheduler: Scheduler::new(self.transport.clone()),
            progress: &mut progress,
            concurrency: 4,
            alive_poll: std::time::Duration::ZERO,
        };
        let report = copy_run::copy_run(&mut c, &one).unwrap();
        answer(200, serde_json::to_vec(&report).unwrap())
    }
}

fn answer(status: u16, body: Vec<u8>) -> Response {
    Response {
        status,
        headers: vec![],
        body,
    }
}

impl Http for Function {
    fn send(&self, request: &Request) -> Result<Response, SendError> {
        let header = request.headers.iter().find(|(n, _)| n == "authorization");
        let header = header.map(|(_, v)| v.clone()).unwrap_or_default();
        self.seen
            .borrow_mut()
            .push((request.url.path().to_string(), header));
        if request.url.path() == "/fn/healthz" {
            return Ok(answer(200, br#"{"status":"ok"}"#.to_vec()));
        }
        let next = self.script.borrow_mut().pop_front().unwrap_or(Answer::Copy);
        match next {
            Answer::Copy => Ok(self.copy(request)),
            Answer::Status(status) => {
                let body = format!(r#"{{"error":{{"code":"x","message":"refused {status}"}}}}"#);
                Ok(answer(status, body.into_bytes()))
            }
            Answer::CopyThenLose => {
                self.copy(request);
                Err(SendError {
                    message: "connection reset".into(),
                    not_sent: false,
                    retryable: true,
                })
            }
        }
    }

    fn stream(
        &self,
        _: NextJob,
        _: Slots,
        calls: &mut dyn Attempts,
        _: &mut dyn FnMut(StreamEvent),
    ) {
        send_each(self, calls);
    }

    fn digest(&self, _: &[(Request, u64)], _: usize) -> Vec<Result<Digest, StreamFailure>> {
        unreachable!("the function's double streams no files")
    }
}

fn via(w: &World, script: Vec<Answer>, token: &str) -> (Via, Function) {
    let function = Function {
        src: w.src.clone(),
        dst: w.dst.clone(),
        transport: w.transport.clone(),
        script: Rc::new(RefCell::new(script.into())),
        seen: Rc::default(),
    };
    let transport = || Transport::new(Box::new(function.clone()), RetryPolicy::without_waits());
    let via = Via::over(
        "http://function.test/fn/",
        2,
        Some(token),
        [transport(), transport()],
    );
    (via, function)
}

#[test]
fn via_items_are_retried_when_a_replica_is_lost_and_copied_once() {
    let w = world();
    let (exp, ids) = seed_experiment(&w);
    // A 503 from the load balancer, then an answer lost after the copy was made.
    let (mut via, function) = via(
        &w,
        vec![Answer::Status(503), Answer::CopyThenLose],
        "tok-1234",
    );
    let mut progress = Recorded::default();
    let request = experiment_request(&exp, false);
    let report = copy_experiment(&mut w.copier(&w.dst, &mut progress), &request, &mut via).unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    let existing = report
        .items
        .iter()
        .filter(|i| i.status == ItemStatus::Existing);
    assert_eq!(
        existing.count(),
        1,
        "the retry found the copy the lost answer made"
    );
    for id in &ids {
        the_copy(&w.dst, id); // exactly one copy each
    }
    let root = the_copy(&w.dst, &ids[0]).info.run_id;
    assert_eq!(parent_of_copy(&w, &ids[1]), Some(root));
    let seen = function.seen.borrow();
    assert_eq!(seen[0].0, "/fn/healthz");
    let copies: Vec<_> = seen.iter().filter(|(p, _)| p == "/fn/copy-run").collect();
    assert_eq!(copies.len(), 6, "4 items, 2 of them sent twice");
    assert!(copies.iter().all(|(_, h)| h == "Bearer tok-1234"));
}

#[test]
fn a_refused_token_stops_the_copy_with_a_clear_error() {
    let w = world();
    let (exp, _) = seed_experiment(&w);
    let (mut via, function) = via(&w, vec![Answer::Status(401); 4], "tok-wrong-1234");
    let mut progress = Recorded::default();
    let request = experiment_request(&exp, false);
    let err =
        copy_experiment(&mut w.copier(&w.dst, &mut progress), &request, &mut via).unwrap_err();
    let err = crate::api::CopyError::from_chain(&err);
    assert_eq!(err.kind, ErrorKind::Unauthorized);
    assert!(
        err.message.contains("MLFLOW_COPY_VIA_TOKEN") && !err.message.contains("tok-wrong"),
        "{err}"
    );
    let sent = function
        .seen
        .borrow()
        .iter()
        .filter(|(p, _)| p == "/fn/copy-run")
        .count();
    assert!(
        sent <= 2,
        "nothing sent after the refusal but what was in flight: {sent}"
    );
}
