//! The metric pipeline: every key's full history, read from the source and written to the
//! destination in full log-batch requests, with several reads and writes in flight at once.
//! The run's params and tags ride along, first in line for the writers.
//!
//! It is the engine's `PendingCalls`: the scheduler sends its calls in the same loop that
//! streams the artifact files, so metrics and artifacts travel together (the component is
//! single-threaded; the concurrency is several requests polled together). Each call is retried
//! on its own budget and its final answer handed back; this decides what to send next.
//!
//! Bounds: history reads (source; destination too when resuming) and log-batch requests
//! (destination) in flight are each an `AdaptiveLimit` (slow start then AIMD, backing off on
//! 429/503 and on climbing latency): reads from 3 up to `READS_MAX`, writes from 4 up to
//! `WRITES_MAX`, fed every attempt's latency (`PendingCalls::attempted`). No new read
//! while twice the write limit of full batches wait to be written, so memory holds a few pages
//! (at most 32 batches of 1,000 points), never a run's whole history.
//!
//! Order: a key's pages are read one after the other, so its points enter the batches in the
//! source's order; batches are sent in the order they fill. (Batches in flight together may
//! land in any order: MLflow keeps every point with its step and timestamp, and computes a
//! metric's latest value from them, not from the order of arrival.) Resuming, a key's points
//! already at the destination are read first and skipped.

use super::metrics::{AlreadyCopied, MetricBatcher, ModelLinks};
use crate::api::CopyError;
use crate::limits::AdaptiveLimit;
use crate::stores::model::{KeyValue, Metric};
use crate::stores::{Answer, Call, HistoryPage, Outgoing, PendingCalls, Reader, Tracking};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// History reads in flight at the start. A page (up to 10,000 points) feeds up to ten writes,
/// so a few reads keep the writers fed; each key's pages are still read one at a time.
const READS_START: usize = 3;
/// At most this many: eight pages in flight already feed 80 writes.
pub const READS_MAX: usize = 8;
/// Log-batch requests in flight at the start (MLflow handles them in parallel: 82 ms a request
/// one at a time, 53 ms four at a time against a local server).
const WRITES_START: usize = 4;
/// At most this many: a batch is at most 1,000 points (~100 KiB of JSON), and 16 of them
/// cover a 50 ms link at MLflow's few ms of work per batch per worker.
pub const WRITES_MAX: usize = 16;

/// What the pipeline asks of a store: every `Tracking` store answers it. (A trait of its own
/// so that the tests can drive the pipeline with a store whose every call is a request.)
pub trait MetricCalls {
    fn history_page_call(
        &self,
        run_id: &str,
        key: &str,
        token: Option<&str>,
    ) -> Call<'_, HistoryPage>;
    fn log_metrics_call(&self, run_id: &str, batch: &[Metric]) -> Call<'_, ()>;
    fn log_batch_call(&self, run_id: &str, params: &[KeyValue], tags: &[KeyValue]) -> Call<'_, ()>;
}

impl<T: Tracking + ?Sized> MetricCalls for T {
    fn history_page_call(
        &self,
        run_id: &str,
        key: &str,
        token: Option<&str>,
    ) -> Call<'_, HistoryPage> {
        Tracking::history_page_call(self, run_id, key, token)
    }
    fn log_metrics_call(&self, run_id: &str, batch: &[Metric]) -> Call<'_, ()> {
        Tracking::log_metrics_call(self, run_id, batch)
    }
    fn log_batch_call(&self, run_id: &str, params: &[KeyValue], tags: &[KeyValue]) -> Call<'_, ()> {
        Tracking::log_batch_call(self, run_id, params, tags)
    }
}

/// One log-batch request of params or tags (at most `MAX_PARAMS_TAGS_PER_BATCH` of each).
pub struct Entities {
    pub params: Vec<KeyValue>,
    pub tags: Vec<KeyValue>,
    /// What they are, for messages: "params" or "tags".
    pub what: &'static str,
}

/// Which side a history page is read from.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    /// The points already copied (resuming): they are skipped.
    Destination,
    Source,
}

/// The next page of one key to read, with what is already at the destination.
struct PageRead {
    key: String,
    side: Side,
    token: Option<String>,
    present: AlreadyCopied,
}

enum InFlight<'s> {
    Read {
        page: PageRead,
        read: Reader<'s, HistoryPage>,
    },
    Write {
        read: Reader<'s, ()>,
        what: &'static str,
    },
}

pub struct MetricPipeline<'s, S: MetricCalls + ?Sized> {
    src: &'s S,
    dst: &'s S,
    src_run: &'s str,
    dst_run: &'s str,
    resuming: bool,
    /// Keys not started yet.
    keys: VecDeque<String>,
    /// Pages to read, a started key's next page first.
    to_read: VecDeque<PageRead>,
    links: ModelLinks,
    batcher: MetricBatcher,
    /// Params and tags waiting to be written.
    entities: VecDeque<Entities>,
    /// Full batches waiting to be written, in the order they filled.
    full: VecDeque<Vec<Metric>>,
    in_flight: HashMap<usize, InFlight<'s>>,
    next_id: usize,
    reads: usize,
    writes: usize,
    read_limit: AdaptiveLimit,
    write_limit: AdaptiveLimit,
    /// The clock the limits are fed.
    epoch: Instant,
    /// Source points read (those already at the destination included).
    points: u64,
    failed: Option<anyhow::Error>,
}

/// What a finished pipeline did.
#[derive(Debug)]
pub struct Copied {
    pub points: u64,
    /// Logged-model metrics that matched no point of the run's history.
    pub unmatched_links: usize,
    /// What the limits settled on, if any request was sent: "reads: limit settled at 8;
    /// writes: ...".
    pub limits: Option<String>,
}

impl<'s, S: MetricCalls + ?Sized> MetricPipeline<'s, S> {
    /// The pipeline for these keys from `src_run` to `dst_run`. `links` gives points their
    /// logged model; `resuming` skips points the destination already has.
    pub fn new(
        (src, src_run): (&'s S, &'s str),
        (dst, dst_run): (&'s S, &'s str),
        keys: Vec<String>,
        links: ModelLinks,
        resuming: bool,
    ) -> MetricPipeline<'s, S> {
        MetricPipeline {
            src,
            dst,
            src_run,
            dst_run,
            resuming,
            keys: keys.into(),
            to_read: VecDeque::new(),
            links,
            batcher: MetricBatcher::default(),
            entities: VecDeque::new(),
            full: VecDeque::new(),
            in_flight: HashMap::new(),
            next_id: 0,
            reads: 0,
            writes: 0,
            read_limit: AdaptiveLimit::new(READS_START, READS_MAX),
            write_limit: AdaptiveLimit::new(WRITES_START, WRITES_MAX),
            epoch: Instant::now(),
            points: 0,
            failed: None,
        }
    }

    /// Params and tags to write along with the metrics.
    pub fn with_entities(mut self, entities: Vec<Entities>) -> Self {
        self.entities.extend(entities);
        self
    }

    /// The outcome, once the scheduler has driven the pipeline to its end.
    pub fn finish(self) -> anyhow::Result<Copied> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        if !self.done() {
            return Err(
                CopyError::upstream("the metric copy stopped before it was complete").into(),
            );
        }
        Ok(Copied {
            points: self.points,
            unmatched_links: self.links.unmatched(),
            limits: (self.next_id > 0).then(|| {
                format!(
                    "reads: {}; writes: {}",
                    self.read_limit.summary(),
                    self.write_limit.summary()
                )
            }),
        })
    }

    fn nothing_to_read(&self) -> bool {
        self.keys.is_empty() && self.to_read.is_empty()
    }

    /// Full batches that may wait to be written before reading stops.
    fn queued(&self) -> usize {
        2 * self.write_limit.get()
    }

    fn may_read(&self) -> bool {
        self.reads < self.read_limit.get()
            && self.full.len() < self.queued()
            && !self.nothing_to_read()
    }

    /// Starts the next write, params and tags first: a request to send, or `None` when the
    /// store answered at once.
    fn start_write(&mut self) -> Option<(usize, Outgoing)> {
        let (call, what) = match self.entities.pop_front() {
            Some(e) => (
                self.dst.log_batch_call(self.dst_run, &e.params, &e.tags),
                e.what,
            ),
            None => {
                let batch = self.full.pop_front().expect("a full batch");
                (self.dst.log_metrics_call(self.dst_run, &batch), "metrics")
            }
        };
        match call {
            Call::Done(result) => {
                self.written(result, what);
                None
            }
            Call::Send { request, read } => {
                self.writes += 1;
                Some((self.register(InFlight::Write { read, what }), request))
            }
        }
    }

    /// Starts the next page read (see `start_write`).
    fn start_read(&mut self) -> Option<(usize, Outgoing)> {
        let page = match self.to_read.pop_front() {
            Some(page) => page,
            None => {
                let key = self.keys.pop_front().expect("a key to read");
                PageRead {
                    key,
                    side: if self.resuming {
                        Side::Destination
                    } else {
                        Side::Source
                    },
                    token: None,
                    present: AlreadyCopied::default(),
                }
            }
        };
        let (store, run) = match page.side {
            Side::Destination => (self.dst, self.dst_run),
            Side::Source => (self.src, self.src_run),
        };
        match store.history_page_call(run, &page.key, page.token.as_deref()) {
            Call::Done(result) => {
                self.page_read(page, result);
                None
            }
            Call::Send { request, read } => {
                self.reads += 1;
                Some((self.register(InFlight::Read { page, read }), request))
            }
        }
    }

    fn register(&mut self, call: InFlight<'s>) -> usize {
        self.next_id += 1;
        self.in_flight.insert(self.next_id, call);
        self.next_id
    }

    /// Takes in a page: its points go to the batches (or, from the destination, to what is
    /// skipped), and the key's next page is read next.
    fn page_read(&mut self, mut page: PageRead, result: Result<HistoryPage, CopyError>) {
        let got = match result {
            Ok(got) => got,
            Err(e) => {
                let key = &page.key;
                let error = anyhow::Error::new(e);
                return self.fail(error.context(format!("copying the history of metric {key:?}")));
            }
        };
        match page.side {
            Side::Destination => got.points.iter().for_each(|p| page.present.add(p)),
            Side::Source => self.batch(got.points, &page.present),
        }
        // A token repeated is a server's loop, not another page.
        let next = got.next_token.filter(|t| page.token.as_ref() != Some(t));
        match (next, page.side) {
            (Some(token), _) => page.token = Some(token),
            (None, Side::Destination) => {
                page.side = Side::Source;
                page.token = None;
            }
            (None, Side::Source) => return,
        }
        self.to_read.push_front(page);
    }

    fn batch(&mut self, points: Vec<Metric>, present: &AlreadyCopied) {
        for mut point in points {
            self.points += 1;
            if present.contains(&point) {
                continue;
            }
            self.links.link(&mut point);
            if let Some(batch) = self.batcher.push(point) {
                self.full.push_back(batch);
            }
        }
    }

    fn written(&mut self, result: Result<(), CopyError>, what: &str) {
        if let Err(e) = result {
            self.fail(anyhow::Error::new(e).context(format!("copying {what}")));
        }
    }

    /// The first failure ends the pipeline: nothing more is sent, answers still due are
    /// awaited and dropped.
    fn fail(&mut self, error: anyhow::Error) {
        self.failed.get_or_insert(error);
    }
}

impl<S: MetricCalls + ?Sized> PendingCalls for MetricPipeline<'_, S> {
    fn next(&mut self) -> Option<(usize, Outgoing)> {
        while self.failed.is_none() {
            // Writes first: they free the memory reads fill.
            let to_write = !self.entities.is_empty() || !self.full.is_empty();
            let started = if self.writes < self.write_limit.get() && to_write {
                self.start_write()
            } else if self.may_read() {
                self.start_read()
            } else if self.in_flight.is_empty() && self.nothing_to_read() {
                // Everything is read and written but the last, partial batch.
                self.full.extend(self.batcher.take());
                if self.full.is_empty() {
                    return None;
                }
                continue;
            } else {
                return None;
            };
            if started.is_some() {
                return started;
            }
        }
        None
    }

    fn answer(&mut self, id: usize, answer: Answer) {
        match self
            .in_flight
            .remove(&id)
            .expect("an answer to a call in flight")
        {
            InFlight::Read { page, read } => {
                self.reads -= 1;
                if self.failed.is_none() {
                    let result = read.read(answer);
                    self.page_read(page, result);
                }
            }
            InFlight::Write { read, what } => {
                self.writes -= 1;
                if self.failed.is_none() {
                    let result = read.read(answer);
                    self.written(result, what);
                }
            }
        }
    }

    fn attempted(&mut self, id: usize, latency: Duration, overloaded: Option<Duration>) {
        let (limit, in_flight) = match self.in_flight.get(&id) {
            Some(InFlight::Read { .. }) => (&mut self.read_limit, self.reads),
            Some(InFlight::Write { .. }) => (&mut self.write_limit, self.writes),
            None => return,
        };
        match overloaded {
            Some(asked) => limit.overloaded(self.epoch.elapsed(), Some(asked)),
            None => limit.answered(Some(latency), in_flight),
        }
    }

    fn done(&self) -> bool {
        self.in_flight.is_empty()
            && (self.failed.is_some()
                || (self.nothing_to_read()
                    && self.entities.is_empty()
                    && self.full.is_empty()
                    && self.batcher.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{self, Method, Request, Response};
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use url::Url;

    /// A store whose every call is a request: the test holds the requests and answers them in
    /// any order, as the scheduler's loop does.
    struct Wire {
        /// The source's histories, by key.
        history: Vec<(String, Vec<Metric>)>,
        /// Batches written, in the order their answers came.
        written: RefCell<Vec<Vec<Metric>>>,
    }

    const PAGE: usize = 300;

    impl MetricCalls for Wire {
        fn log_batch_call(&self, _: &str, _: &[KeyValue], _: &[KeyValue]) -> Call<'_, ()> {
            Call::Done(Ok(()))
        }

        fn history_page_call(
            &self,
            _: &str,
            key: &str,
            token: Option<&str>,
        ) -> Call<'_, HistoryPage> {
            let all = &self.history.iter().find(|(k, _)| k == key).unwrap().1;
            let start: usize = token.map_or(0, |t| t.parse().unwrap());
            let end = (start + PAGE).min(all.len());
            let page = HistoryPage {
                points: all[start..end].to_vec(),
                next_token: (end < all.len()).then(|| end.to_string()),
            };
            let url = Url::parse(&format!("http://src/history?key={key}&start={start}")).unwrap();
            Call::send(Request::new(Method::Get, url), move |answer| {
                answer.map(|_| page).map_err(CopyError::from)
            })
        }

        fn log_metrics_call(&self, _: &str, batch: &[Metric]) -> Call<'_, ()> {
            let batch = batch.to_vec();
            let url = Url::parse("http://dst/log-batch").unwrap();
            Call::send(Request::new(Method::Post, url), move |answer| {
                answer.map_err(CopyError::from)?;
                self.written.borrow_mut().push(batch);
                Ok(())
            })
        }
    }

    fn wire(keys: usize, points: impl Fn(usize) -> usize) -> Wire {
        let history = (0..keys)
            .map(|k| {
                let key = format!("m{k}");
                let steps = (0..points(k) as i64)
                    .map(|i| Metric {
                        key: key.clone(),
                        value: i as f64,
                        timestamp: 1000 + i,
                        step: i,
                        ..Metric::default()
                    })
                    .collect();
                (key, steps)
            })
            .collect();
        Wire {
            history,
            written: RefCell::new(Vec::new()),
        }
    }

    fn ok() -> Result<Response, transport::Error> {
        Ok(Response {
            status: 200,
            headers: vec![],
            body: b"{}".to_vec(),
        })
    }

    /// Drives the pipeline as the scheduler would, answering the request at `pick(in flight)`
    /// each time, and checks the bounds on the way. Returns the requests in the order sent.
    fn drive(
        pipeline: &mut MetricPipeline<Wire>,
        mut answer_for: impl FnMut(&Request) -> Result<Response, transport::Error>,
        pick: impl Fn(usize) -> usize,
    ) -> Vec<Request> {
        let mut in_flight: Vec<(usize, Request)> = Vec::new();
        let mut sent = Vec::new();
        loop {
            while let Some((id, outgoing)) = pipeline.next() {
                let request = outgoing.into_request();
                sent.push(request.clone());
                in_flight.push((id, request));
            }
            let count = |m: Method| in_flight.iter().filter(|(_, r)| r.method == m).count();
            assert!(
                count(Method::Get) <= pipeline.read_limit.get(),
                "reads in flight"
            );
            assert!(
                count(Method::Post) <= pipeline.write_limit.get(),
                "writes in flight"
            );
            assert!(
                pipeline.full.len() <= pipeline.queued() + PAGE / 1000 + 1,
                "batches waiting"
            );
            if in_flight.is_empty() {
                return sent;
            }
            let (id, request) = in_flight.remove(pick(in_flight.len()));
            pipeline.answer(id, Answer::of(answer_for(&request)));
        }
    }

    fn keys(w: &Wire) -> Vec<String> {
        w.history.iter().map(|(k, _)| k.clone()).collect()
    }

    #[test]
    fn every_point_is_written_once_in_full_batches_whatever_the_order_of_answers() {
        // 9 keys of 0 to 2,400 points, several pages each; answers newest first, then oldest.
        let w = wire(9, |k| k * 300 + (k % 2) * 7);
        for pick in [|n: usize| n - 1, |_| 0] {
            w.written.borrow_mut().clear();
            let mut p =
                MetricPipeline::new((&w, "r"), (&w, "c"), keys(&w), ModelLinks::new([]), false);
            let sent = drive(&mut p, |_| ok(), pick);
            let total: usize = w.history.iter().map(|(_, h)| h.len()).sum();
            assert!(p.done());
            assert_eq!(p.finish().unwrap().points, total as u64);
            let written = w.written.borrow();
            let sizes: Vec<usize> = written.iter().map(Vec::len).collect();
            assert_eq!(sizes.iter().sum::<usize>(), total);
            assert_eq!(
                sizes.iter().filter(|&&n| n < 1000).count(),
                1,
                "one partial batch: {sizes:?}"
            );
            for (key, history) in &w.history {
                // Exactly once each, and sent (not necessarily answered) in the source's order.
                let mut got: Vec<i64> = written
                    .iter()
                    .flatten()
                    .filter(|m| &m.key == key)
                    .map(|m| m.step)
                    .collect();
                got.sort();
                assert_eq!(
                    got,
                    history.iter().map(|m| m.step).collect::<Vec<_>>(),
                    "{key}"
                );
            }
            let reads: Vec<String> = sent
                .iter()
                .filter(|r| r.method == Method::Get)
                .map(|r| r.url.query().unwrap().to_string())
                .collect();
            for (key, history) in &w.history {
                let starts: Vec<String> = reads
                    .iter()
                    .filter(|q| q.starts_with(&format!("key={key}&")))
                    .cloned()
                    .collect();
                let expected: Vec<String> = (0..history.len().max(1))
                    .step_by(PAGE)
                    .map(|s| format!("key={key}&start={s}"))
                    .collect();
                assert_eq!(starts, expected, "pages of {key} read once each, in order");
            }
        }
    }

    /// Drives the pipeline, answering the oldest read (else the oldest write) each time after
    /// telling it how the attempt went (`overloaded` for a write: refused once, then accepted);
    /// the most reads and writes it had in flight. (Reads first: the batches pile up and the
    /// writes use their limit.)
    fn drive_timed(
        pipeline: &mut MetricPipeline<Wire>,
        latency: Duration,
        overloaded: impl Fn(usize) -> bool,
    ) -> (usize, usize) {
        let mut in_flight: VecDeque<(usize, Request)> = VecDeque::new();
        let (mut most, mut writes) = ((0, 0), 0);
        loop {
            while let Some((id, outgoing)) = pipeline.next() {
                in_flight.push_back((id, outgoing.into_request()));
            }
            let count = |m: Method| in_flight.iter().filter(|(_, r)| r.method == m).count();
            most = (
                most.0.max(count(Method::Get)),
                most.1.max(count(Method::Post)),
            );
            let oldest_read = in_flight.iter().position(|(_, r)| r.method == Method::Get);
            let Some((id, request)) = in_flight.remove(oldest_read.unwrap_or(0)) else {
                return most;
            };
            if request.method == Method::Post {
                writes += 1;
                if overloaded(writes) {
                    pipeline.attempted(id, latency, Some(Duration::ZERO));
                }
            }
            pipeline.attempted(id, latency, None);
            pipeline.answer(id, Answer::of(ok()));
        }
    }

    #[test]
    fn more_requests_go_out_while_answers_come_quickly_fewer_after_429s() {
        let w = wire(40, |_| 3000);
        let mut p = MetricPipeline::new((&w, "r"), (&w, "c"), keys(&w), ModelLinks::new([]), false);
        let (reads, writes) = drive_timed(&mut p, Duration::from_millis(50), |_| false);
        assert!(reads > READS_START && reads <= READS_MAX, "{reads} reads");
        assert!(
            writes > WRITES_START && writes <= WRITES_MAX,
            "{writes} writes"
        );
        let limits = p.finish().unwrap().limits.unwrap();
        assert_eq!(
            limits,
            format!("reads: limit settled at {READS_MAX}; writes: limit settled at {WRITES_MAX}")
        );

        // Every 10th write refused: slow start ends at the first refusal (after 9 answers), and
        // the writes back off from there, never reaching their max.
        w.written.borrow_mut().clear();
        let mut p = MetricPipeline::new((&w, "r"), (&w, "c"), keys(&w), ModelLinks::new([]), false);
        let (_, writes) = drive_timed(&mut p, Duration::from_millis(50), |n| n % 10 == 0);
        assert!(writes <= WRITES_START + 9, "{writes} writes");
        let settled = p.write_limit.get();
        let limits = p.finish().unwrap().limits.unwrap();
        assert!(settled < WRITES_START + 9, "{limits}");
        assert!(limits.contains("back-off(s) for 429/503"), "{limits}");
        let total: usize = w.written.borrow().iter().map(Vec::len).sum();
        assert_eq!(total, 40 * 3000);
    }

    #[test]
    fn a_failed_write_stops_the_pipeline_and_is_reported() {
        let w = wire(6, |_| 2000);
        let mut p = MetricPipeline::new((&w, "r"), (&w, "c"), keys(&w), ModelLinks::new([]), false);
        let mut writes = 0;
        let sent = drive(
            &mut p,
            |r| {
                if r.method == Method::Post {
                    writes += 1;
                    if writes == 3 {
                        return Err(transport::Error {
                            message: "HTTP 500 after 5 attempts".into(),
                            status: Some(500),
                        });
                    }
                }
                ok()
            },
            |_| 0,
        );
        assert!(p.done(), "every answer still due was awaited");
        let posts = sent.iter().filter(|r| r.method == Method::Post).count();
        assert!(
            posts < 12,
            "nothing more is sent after the failure ({posts} writes)"
        );
        let err = format!("{:#}", p.finish().unwrap_err());
        assert!(err.starts_with("copying metrics: HTTP 500"), "{err}");
    }
}
