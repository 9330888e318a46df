//! `Http` over WASI HTTP: the only module that touches host bindings.
//!
//! waki provides the bindings; its client does not fit: it cannot stream a request body, keep
//! several requests in flight, or send a declared-length body safely (MLflow's JSON API reads a
//! chunked body as empty). So this module drives the `wasi:http` and `wasi:io` resources that
//! waki re-exports directly. `send` is one blocking request; `stream` runs each file transfer as
//! a small state machine advanced when its pollable is ready, and sends API requests (`Attempts`)
//! alongside, one `poll` waiting for all: the transfers' streams and the requests' answers.
//! (A request's body is written, and its answer read, whole when its turn comes: they are small.)
//!
//! Resource discipline (the host traps otherwise): a pollable is dropped before the stream or
//! future it watches, an input/output stream before its body. Struct fields are declared in
//! that order, because Rust drops fields in declaration order.

mod digest;

use super::{
    Attempts, Digest, HostPolicy, Http, NextJob, Part, Request, Response, SendError, Slots,
    StreamEvent, StreamFailure, StreamJob,
};
use crate::transport::retry::{is_transient_status, parse_retry_after};
use std::time::{Duration, Instant, SystemTime};
use waki::bindings::wasi::clocks::monotonic_clock;
use waki::bindings::wasi::http::outgoing_handler;
use waki::bindings::wasi::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingBody, IncomingResponse,
    Method as WasiMethod, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use waki::bindings::wasi::io::poll::{poll, Pollable};
use waki::bindings::wasi::io::streams::{InputStream, OutputStream, StreamError};

/// Largest read from a source stream; also the most one transfer holds in memory.
const CHUNK: u64 = 1 << 20;
/// Largest answer read whole (API answers and error bodies, never artifacts): whatever a server
/// sends, memory stays bounded.
pub const MAX_ANSWER: usize = 32 << 20;

/// WASI HTTP with the bounds every request keeps.
pub struct WasiHttp {
    /// How long a request may wait to connect, for its answer, or between two bytes in either
    /// direction. The host is asked to enforce it too; the guest enforces it regardless.
    pub timeout: Duration,
    /// Hosts requests may go to.
    pub hosts: HostPolicy,
}

impl Http for WasiHttp {
    fn send(&self, request: &Request) -> Result<Response, SendError> {
        let future = self.begin(request)?;
        let started = Instant::now();
        loop {
            if let Some(result) = take_response(&future, "server") {
                return self.complete(result);
            }
            let left = self.timeout.saturating_sub(started.elapsed());
            if left.is_zero() || !ready_within(&future.subscribe(), left) {
                return Err(self.timed_out("waiting for the answer"));
            }
        }
    }

    fn stream(
        &self,
        next: NextJob,
        slots: Slots,
        calls: &mut dyn Attempts,
        events: &mut dyn FnMut(StreamEvent),
    ) {
        let mut active: Vec<Transfer> = Vec::new();
        let mut asked: Vec<Asked> = Vec::new();
        let mut exhausted = false;
        loop {
            while active.len() < slots().max(1) && !exhausted {
                match next() {
                    None => exhausted = true,
                    Some((id, job)) => self.start_transfer(id, job, &mut active, events),
                }
            }
            while let Some((id, request)) = calls.next() {
                match self.begin(&request) {
                    Ok(future) => asked.push(Asked {
                        id,
                        future,
                        sent: Instant::now(),
                    }),
                    Err(e) => calls.answer(id, Err(e)),
                }
            }
            if active.is_empty() && asked.is_empty() && calls.due().is_none() {
                return;
            }
            self.advance_transfers(&mut active, events);
            if active.len() < slots().max(1) && !exhausted {
                continue;
            }
            self.wait_for_any(&mut active, &asked, calls.due());
            self.answer_calls(&mut asked, calls);
            self.drop_stalled(&mut active, events);
        }
    }

    fn digest(
        &self,
        downloads: &[(Request, u64)],
        concurrency: usize,
    ) -> Vec<Result<Digest, StreamFailure>> {
        digest::read_through(self, downloads, concurrency)
    }
}

/// An API request in flight in `stream`'s loop.
struct Asked {
    id: usize,
    future: FutureIncomingResponse,
    sent: Instant,
}

impl WasiHttp {
    fn start_transfer(
        &self,
        id: usize,
        job: StreamJob,
        active: &mut Vec<Transfer>,
        events: &mut dyn FnMut(StreamEvent),
    ) {
        let servers = servers_of(&job);
        match Transfer::start(id, job, self) {
            Ok(transfer) => active.push(transfer),
            Err(failure) => events(StreamEvent::Finished {
                id,
                result: Err(with_servers(failure, &servers)),
            }),
        }
    }

    /// Advances every transfer that is not waiting; each stops at its next wait or its end.
    fn advance_transfers(&self, active: &mut Vec<Transfer>, events: &mut dyn FnMut(StreamEvent)) {
        let mut i = 0;
        while i < active.len() {
            if !active[i].wait.is_empty() {
                i += 1;
                continue;
            }
            match active[i].advance(self, events) {
                Some(result) => {
                    let done = active.swap_remove(i);
                    let servers = servers_of(&done.job);
                    events(StreamEvent::Finished {
                        id: done.id,
                        result: result.map_err(|f| with_servers(f, &servers)),
                    });
                }
                None => i += 1,
            }
        }
    }

    /// One `poll` for everything in flight: the transfers' streams, the requests' answers, and
    /// a timer for the first deadline (a transfer or request running out of time, a retry
    /// coming due). Marks the transfers that may move on.
    fn wait_for_any(&self, active: &mut [Transfer], asked: &[Asked], due: Option<Instant>) {
        let deadlines = active
            .iter()
            .map(|t| t.progressed + self.timeout)
            .chain(asked.iter().map(|a| a.sent + self.timeout))
            .chain(due);
        let first = deadlines.min().unwrap_or_else(Instant::now);
        let timer = timer(first.saturating_duration_since(Instant::now()));
        let answers: Vec<Pollable> = asked.iter().map(|a| a.future.subscribe()).collect();
        let (owners, mut pollables): (Vec<usize>, Vec<&Pollable>) = active
            .iter()
            .enumerate()
            .flat_map(|(i, t)| t.wait.iter().map(move |p| (i, p)))
            .unzip();
        pollables.extend(answers.iter());
        pollables.push(&timer);
        let ready = poll(&pollables);
        drop(pollables);
        for index in ready.into_iter().filter(|&k| (k as usize) < owners.len()) {
            let transfer = &mut active[owners[index as usize]];
            transfer.wait.clear();
            transfer.progressed = Instant::now();
        }
    }

    /// Hands every request whose answer came (or whose time ran out) to `calls`.
    fn answer_calls(&self, asked: &mut Vec<Asked>, calls: &mut dyn Attempts) {
        let mut i = 0;
        while i < asked.len() {
            let answer = match take_response(&asked[i].future, "server") {
                Some(result) => self.complete(result),
                None if asked[i].sent.elapsed() >= self.timeout => {
                    Err(self.timed_out("waiting for the answer"))
                }
                None => {
                    i += 1;
                    continue;
                }
            };
            let done = asked.swap_remove(i);
            calls.answer(done.id, answer);
        }
    }

    /// Ends the transfers that waited a whole timeout for their next byte or answer.
    fn drop_stalled(&self, active: &mut Vec<Transfer>, events: &mut dyn FnMut(StreamEvent)) {
        let mut i = 0;
        while i < active.len() {
            if active[i].progressed.elapsed() < self.timeout {
                i += 1;
                continue;
            }
            let stalled = active.swap_remove(i);
            let servers = servers_of(&stalled.job);
            let failure = transient(format!(
                "timed out: no progress for {} s",
                self.timeout.as_secs_f64()
            ));
            events(StreamEvent::Finished {
                id: stalled.id,
                result: Err(with_servers(failure, &servers)),
            });
        }
    }
}

/// A stream error as a message: the host reports idle timeouts as errors of the stream.
fn stream_trouble(doing: &str, detail: &str) -> String {
    let detail = detail.split_whitespace().collect::<Vec<_>>().join(" ");
    if detail.to_ascii_lowercase().contains("timeout") {
        format!("timed out {doing} ({detail})")
    } else {
        format!("{doing}: {detail}")
    }
}

/// The two servers of a transfer, for its messages (`source h:1, destination h:2`).
fn servers_of(job: &StreamJob) -> String {
    let authority = |r: &Request| {
        let url = &r.url;
        format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or(0)
        )
    };
    let destination = job.parts.first().map(|p| authority(&p.request));
    format!(
        "source {}, destination {}",
        authority(&job.download),
        destination.unwrap_or_default()
    )
}

fn with_servers(mut failure: StreamFailure, servers: &str) -> StreamFailure {
    failure.message = format!("{} ({servers})", failure.message);
    failure
}

/// One file in flight: one download feeding its parts' uploads in turn. `wait` comes first so
/// that it is dropped before the resources it watches, and a part's upload (`stage`) before
/// the download (`source`).
struct Transfer {
    wait: Vec<Pollable>,
    stage: Option<Stage>,
    /// The download, once it answered.
    source: Option<Source>,
    id: usize,
    job: StreamJob,
    /// The part being written (an index into `job.parts`).
    part: usize,
    /// Bytes the parts accepted so far took.
    sent: u64,
    /// When the transfer last moved (a byte, an answer): it times out when idle too long.
    progressed: Instant,
}

enum Stage {
    /// The GET was sent; waiting for its response head.
    AwaitSource(FutureIncomingResponse),
    /// Copying bytes from the GET body to the current part's body.
    Pump(Sink),
    /// The part's body is complete; waiting for the destination's answer.
    AwaitDestination(FutureIncomingResponse),
}

/// The download's body, and the chunk read from it that is not yet all written.
struct Source {
    stream: InputStream,
    _body: IncomingBody,
    _response: IncomingResponse,
    chunk: Vec<u8>,
    offset: usize,
    /// Bytes still to drop: a source that ignored `Range` sends the file from its start.
    skip: u64,
    /// Bytes still to come after those: the source must end exactly then.
    left: u64,
    /// The file's listed size, for messages.
    size: u64,
}

/// One part's upload.
struct Sink {
    stream: Option<OutputStream>,
    body: Option<OutgoingBody>,
    response: FutureIncomingResponse,
    /// The part's declared length.
    length: u64,
    sent: u64,
    /// The part is complete and the stream was asked to flush.
    flushing: bool,
}

/// What one `pump` step ended with.
enum PumpStep {
    Wait(Vec<Pollable>),
    Finished,
    Failed(StreamFailure),
}

impl Transfer {
    fn start(id: usize, job: StreamJob, http: &WasiHttp) -> Result<Transfer, StreamFailure> {
        if job.parts.is_empty() {
            return Err(internal("a transfer without uploads"));
        }
        let mut download = job.download.clone();
        if job.offset > 0 {
            // A retried part: only the rest of the file is needed.
            download = download.header("range", format!("bytes={}-", job.offset));
        }
        let request = http.outgoing_request(&download, None)?;
        let future = handle(request, "source", http.timeout)?;
        Ok(Transfer {
            wait: Vec::new(),
            stage: Some(Stage::AwaitSource(future)),
            source: None,
            id,
            job,
            part: 0,
            sent: 0,
            progressed: Instant::now(),
        })
    }

    /// Moves the transfer on until it has to wait (sets `wait`, returns `None`) or ends.
    fn advance(
        &mut self,
        http: &WasiHttp,
        events: &mut dyn FnMut(StreamEvent),
    ) -> Option<Result<u64, StreamFailure>> {
        loop {
            let stage = self.stage.take().expect("transfer has a stage");
            match stage {
                Stage::AwaitSource(future) => match take_response(&future, "source") {
                    None => {
                        self.wait = vec![future.subscribe()];
                        self.stage = Some(Stage::AwaitSource(future));
                        return None;
                    }
                    Some(Err(failure)) => return Some(Err(failure)),
                    Some(Ok(response)) => match Source::begin(response, &self.job) {
                        Ok(source) => {
                            self.source = Some(source);
                            match Sink::begin(&self.job.parts[0], http) {
                                Ok(sink) => self.stage = Some(Stage::Pump(sink)),
                                Err(failure) => return Some(Err(failure)),
                            }
                        }
                        Err(failure) => return Some(Err(failure)),
                    },
                },
                Stage::Pump(mut sink) => {
                    let last = self.part + 1 == self.job.parts.len();
                    let source = self.source.as_mut().expect("source open while pumping");
                    match pump(source, &mut sink, last, events) {
                        PumpStep::Wait(pollables) => {
                            self.wait = pollables;
                            self.stage = Some(Stage::Pump(sink));
                            return None;
                        }
                        PumpStep::Failed(failure) => return Some(Err(failure)),
                        PumpStep::Finished => match sink.finish() {
                            Ok((response, sent)) => {
                                self.sent += sent;
                                self.stage = Some(Stage::AwaitDestination(response));
                            }
                            Err(failure) => return Some(Err(failure)),
                        },
                    }
                }
                Stage::AwaitDestination(response) => {
                    let answer = match take_response(&response, "destination") {
                        None => {
                            self.wait = vec![response.subscribe()];
                            self.stage = Some(Stage::AwaitDestination(response));
                            return None;
                        }
                        Some(Err(failure)) => return Some(Err(failure)),
                        Some(Ok(answer)) => answer,
                    };
                    if let Err(failure) = check_status(&answer, "destination") {
                        return Some(Err(failure));
                    }
                    events(StreamEvent::PartWritten {
                        id: self.id,
                        part: self.part,
                        headers: header_list(&answer),
                    });
                    drop(answer);
                    drop(response);
                    self.part += 1;
                    let Some(part) = self.job.parts.get(self.part) else {
                        return Some(Ok(self.sent));
                    };
                    match Sink::begin(part, http) {
                        Ok(sink) => self.stage = Some(Stage::Pump(sink)),
                        Err(failure) => return Some(Err(failure)),
                    }
                }
            }
        }
    }
}

/// An answer's headers, as text.
fn header_list(response: &IncomingResponse) -> Vec<(String, String)> {
    response
        .headers()
        .entries()
        .into_iter()
        .filter_map(|(k, v)| Some((k, String::from_utf8(v).ok()?)))
        .collect()
}

impl Source {
    /// Takes the download's answer: the whole file, or from `job.offset` on (206). A source
    /// that announces another length than expected fails the file.
    fn begin(response: IncomingResponse, job: &StreamJob) -> Result<Source, StreamFailure> {
        check_status(&response, "source")?;
        let headers = response.headers();
        let header = |name: &str| {
            let value = headers.get(&name.to_string()).into_iter().next()?;
            String::from_utf8(value).ok()
        };
        let ranged = job.offset > 0 && response.status() == 206;
        if ranged {
            // `Content-Range: bytes <first>-<last>/<size>`: the part must start where asked.
            let first = header("content-range").and_then(|v| {
                let range = v
                    .trim()
                    .strip_prefix("bytes ")?
                    .split('-')
                    .next()?
                    .to_string();
                range.parse::<u64>().ok()
            });
            if first.is_some_and(|f| f != job.offset) {
                return Err(permanent(format!(
                    "the source sent a range from byte {}, not from byte {} as asked",
                    first.unwrap_or_default(),
                    job.offset
                )));
            }
        }
        let expected = if ranged {
            job.size - job.offset
        } else {
            job.size
        };
        let announced = header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(length) = announced.filter(|&l| l != expected) {
            return Err(permanent(if ranged {
                format!(
                    "the source sends {length} bytes from byte {}, not {expected}",
                    job.offset
                )
            } else {
                format!(
                    "the source sends {length} bytes, but listed the file with {}",
                    job.size
                )
            }));
        }
        drop(headers);
        let body = response
            .consume()
            .map_err(|()| internal("source body already taken"))?;
        let stream = body
            .stream()
            .map_err(|()| internal("source stream already taken"))?;
        Ok(Source {
            stream,
            _body: body,
            _response: response,
            chunk: Vec::new(),
            offset: 0,
            skip: if ranged { 0 } else { job.offset },
            left: job.size - job.offset,
            size: job.size,
        })
    }

    /// Takes bytes read: drops those to skip, and fails when more come than the file has.
    fn take(&mut self, bytes: Vec<u8>) -> Result<(), StreamFailure> {
        let dropped = self.skip.min(bytes.len() as u64);
        self.skip -= dropped;
        let kept = bytes.len() as u64 - dropped;
        if kept > self.left {
            return Err(permanent(format!(
                "the source sends more than the listed {} bytes",
                self.size
            )));
        }
        self.left -= kept;
        self.chunk = bytes;
        self.offset = dropped as usize;
        Ok(())
    }

    fn drained(&self) -> bool {
        self.offset == self.chunk.len()
    }
}

impl Sink {
    /// Sends a part's head, declaring its length; its body is written as the bytes come.
    fn begin(part: &Part, http: &WasiHttp) -> Result<Sink, StreamFailure> {
        let request = http.outgoing_request(&part.request, Some(part.length))?;
        let body = request
            .body()
            .map_err(|()| internal("destination body already taken"))?;
        let stream = body
            .write()
            .map_err(|()| internal("destination stream already taken"))?;
        // The host must have the request before the body is written (its buffer is one chunk).
        let response = handle(request, "destination", http.timeout)?;
        Ok(Sink {
            stream: Some(stream),
            body: Some(body),
            response,
            length: part.length,
            sent: 0,
            flushing: false,
        })
    }

    /// What to wait on besides `pollable`: the destination's answer, which comes early when
    /// the upload fails.
    fn while_watching(&self, pollable: Pollable) -> Vec<Pollable> {
        vec![pollable, self.response.subscribe()]
    }

    /// The destination stopped taking bytes early: its answer (if any) says why.
    fn failed(&self, error: StreamError) -> StreamFailure {
        if let Some(Ok(Ok(answer))) = self.response.get() {
            if let Err(failure) = check_status(&answer, "destination") {
                return failure;
            }
        }
        match error {
            StreamError::Closed => transient("destination closed the upload early".into()),
            StreamError::LastOperationFailed(e) => {
                transient(format!("writing destination: {}", e.to_debug_string()))
            }
        }
    }

    /// Asks the stream to flush the part's last bytes; `finish` follows once it has.
    fn flush(&mut self) -> Result<(), StreamFailure> {
        let stream = self.stream.as_ref().expect("sink open while pumping");
        match stream.flush() {
            Ok(()) | Err(StreamError::Closed) => {
                self.flushing = true;
                Ok(())
            }
            Err(StreamError::LastOperationFailed(e)) => Err(transient(format!(
                "writing destination: {}",
                e.to_debug_string()
            ))),
        }
    }

    /// Ends the part's body. `finish` checks the byte count against the declared length.
    fn finish(mut self) -> Result<(FutureIncomingResponse, u64), StreamFailure> {
        drop(self.stream.take());
        let body = self.body.take().expect("sink body present");
        OutgoingBody::finish(body, None)
            .map_err(|code| transient(format!("finishing upload: {}", describe_code(&code))))?;
        Ok((self.response, self.sent))
    }
}

/// Copies bytes from the source into the part until it has to wait or the part is complete. A
/// part that is not the last one ends at its length (the rest of the chunk goes to the next
/// part); the last one ends with the source, which must end exactly there.
fn pump(
    source: &mut Source,
    sink: &mut Sink,
    last: bool,
    events: &mut dyn FnMut(StreamEvent),
) -> PumpStep {
    loop {
        let stream = sink.stream.as_ref().expect("sink open while pumping");
        if sink.flushing {
            // Wait until the flush is done. After the last declared byte the host may close
            // the stream (content-length reached): that is success too. So is an answer
            // arriving meanwhile: it decides.
            return match stream.check_write() {
                Ok(0) if sink.response.subscribe().ready() => PumpStep::Finished,
                Ok(0) => PumpStep::Wait(sink.while_watching(stream.subscribe())),
                Ok(_) | Err(StreamError::Closed) => PumpStep::Finished,
                Err(StreamError::LastOperationFailed(e)) => PumpStep::Failed(transient(format!(
                    "writing destination: {}",
                    e.to_debug_string()
                ))),
            };
        }
        let complete = sink.sent == sink.length;
        // An answer before the body is complete is a refusal, or a dead connection (the host
        // may then never make the body writable again). Once every declared byte is written,
        // though, an answer may simply beat the source's end-of-file (seen under jco): the
        // part is done, and the answer is read as usual.
        if sink.response.subscribe().ready() {
            if complete && (!last || source.drained()) {
                return PumpStep::Finished;
            }
            if let Some(answer) = sink.response.get() {
                return PumpStep::Failed(early_answer(answer));
            }
        }
        if complete && !last {
            if let Err(failure) = sink.flush() {
                return PumpStep::Failed(failure);
            }
            continue;
        }
        if source.drained() {
            match source.stream.read(CHUNK) {
                Ok(bytes) if bytes.is_empty() => {
                    return PumpStep::Wait(sink.while_watching(source.stream.subscribe()))
                }
                Ok(bytes) => {
                    if let Err(failure) = source.take(bytes) {
                        return PumpStep::Failed(failure);
                    }
                }
                Err(StreamError::Closed) if source.left > 0 || !complete => {
                    return PumpStep::Failed(permanent(format!(
                        "the source ended after {} of {} bytes",
                        source.size - source.left,
                        source.size
                    )))
                }
                Err(StreamError::Closed) => {
                    if let Err(failure) = sink.flush() {
                        return PumpStep::Failed(failure);
                    }
                }
                Err(StreamError::LastOperationFailed(e)) => {
                    return PumpStep::Failed(transient(stream_trouble(
                        "reading source",
                        &e.to_debug_string(),
                    )))
                }
            }
            continue;
        }
        match stream.check_write() {
            Ok(0) => return PumpStep::Wait(sink.while_watching(stream.subscribe())),
            Ok(permit) => {
                let room = (sink.length - sink.sent).min(permit) as usize;
                let end = source.chunk.len().min(source.offset + room);
                if let Err(e) = stream.write(&source.chunk[source.offset..end]) {
                    return PumpStep::Failed(sink.failed(e));
                }
                let n = (end - source.offset) as u64;
                source.offset = end;
                sink.sent += n;
                events(StreamEvent::Bytes(n));
            }
            Err(e) => return PumpStep::Failed(sink.failed(e)),
        }
    }
}

impl WasiHttp {
    /// Sends a request's head and whole body; the answer is awaited on the returned future.
    fn begin(&self, request: &Request) -> Result<FutureIncomingResponse, SendError> {
        let unsent = |f: StreamFailure| SendError {
            message: f.message,
            not_sent: true,
            retryable: f.retryable,
        };
        let sent = |f: StreamFailure| SendError {
            message: f.message,
            not_sent: false,
            retryable: f.retryable,
        };
        // Always declare the length of a body: MLflow's JSON API (WSGI) reads a chunked body as
        // empty. waki cannot do this safely (its write loop fails on the host closing the
        // stream after the last declared byte), hence raw WASI here too.
        let has_body = !matches!(request.method, super::Method::Get | super::Method::Head)
            || !request.body.is_empty();
        let length = has_body.then_some(request.body.len() as u64);
        let outgoing = self.outgoing_request(request, length).map_err(unsent)?;
        let body = outgoing
            .body()
            .map_err(|()| unsent(internal("request body already taken")))?;
        let future = handle(outgoing, "server", self.timeout).map_err(unsent)?;
        write_all(&body, &request.body, self.timeout).map_err(sent)?;
        OutgoingBody::finish(body, None).map_err(|code| sent(code_failure(&code, "server")))?;
        Ok(future)
    }

    /// Reads a whole answer, at most `MAX_ANSWER` bytes of it.
    fn complete(
        &self,
        result: Result<IncomingResponse, StreamFailure>,
    ) -> Result<Response, SendError> {
        let response = result.map_err(|f| SendError {
            not_sent: never_reached(&f),
            retryable: f.retryable,
            message: f.message,
        })?;
        let status = response.status();
        let headers: Vec<(String, String)> = response
            .headers()
            .entries()
            .into_iter()
            .filter_map(|(k, v)| Some((k, String::from_utf8(v).ok()?)))
            .collect();
        let too_large = || {
            self.failed(
                &format!(
                    "the answer (HTTP {status}) is larger than {} MiB",
                    MAX_ANSWER >> 20
                ),
                false,
            )
        };
        let announced = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok());
        if announced.is_some_and(|n| n > MAX_ANSWER) {
            return Err(too_large());
        }
        let body = response
            .consume()
            .map_err(|()| self.failed("response body already taken", false))?;
        let read = read_body(&body, MAX_ANSWER, self.timeout);
        drop(body);
        let body = match read {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                return Err(self.failed(
                    &format!(
                        "the answer (HTTP {status}) is larger than {} MiB",
                        MAX_ANSWER >> 20
                    ),
                    false,
                ))
            }
            Err(e) => return Err(self.failed(&format!("reading the answer: {e}"), true)),
        };
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    fn failed(&self, message: &str, retryable: bool) -> SendError {
        SendError {
            message: message.to_string(),
            not_sent: false,
            retryable,
        }
    }

    fn timed_out(&self, what: &str) -> SendError {
        self.failed(
            &format!("timed out after {} s {what}", self.timeout.as_secs_f64()),
            true,
        )
    }

    /// The WASI request for `request`, declaring `content_length` when given. A host the
    /// copy's host policy refuses is refused here, whatever asked for it.
    fn outgoing_request(
        &self,
        request: &Request,
        content_length: Option<u64>,
    ) -> Result<OutgoingRequest, StreamFailure> {
        if let Err(why) = self.hosts.check_request(request) {
            return Err(permanent(format!("{}: {why}", request.describe())));
        }
        outgoing_request(request, content_length)
    }
}

/// A timer pollable that is ready after `wait`.
fn timer(wait: Duration) -> Pollable {
    monotonic_clock::subscribe_duration(wait.as_nanos().min(u64::MAX as u128) as u64)
}

/// Waits until `pollable` is ready or `wait` has passed; whether it is ready.
fn ready_within(pollable: &Pollable, wait: Duration) -> bool {
    let timer = timer(wait);
    poll(&[pollable, &timer]).contains(&0)
}

/// Writes a whole body, never more than the host permits at once.
fn write_all(
    body: &OutgoingBody,
    mut bytes: &[u8],
    timeout: Duration,
) -> Result<(), StreamFailure> {
    let stream = body
        .write()
        .map_err(|()| internal("request stream already taken"))?;
    let pollable = stream.subscribe();
    let result = loop {
        if bytes.is_empty() {
            break match stream.flush() {
                // The host closes the stream once the declared length is reached: success.
                Ok(()) | Err(StreamError::Closed) => Ok(()),
                Err(StreamError::LastOperationFailed(e)) => Err(transient(format!(
                    "sending request body: {}",
                    e.to_debug_string()
                ))),
            };
        }
        match stream.check_write() {
            Ok(0) if ready_within(&pollable, timeout) => {}
            Ok(0) => {
                break Err(transient(format!(
                    "timed out after {} s sending the request body",
                    timeout.as_secs_f64()
                )))
            }
            Ok(permit) => {
                let n = bytes.len().min(permit as usize);
                if let Err(e) = stream.write(&bytes[..n]) {
                    break Err(transient(format!("sending request body: {e:?}")));
                }
                bytes = &bytes[n..];
            }
            Err(e) => break Err(transient(format!("sending request body: {e:?}"))),
        }
    };
    drop(pollable);
    drop(stream);
    result
}

/// Reads an incoming body to its end; `None` once it exceeds `limit` bytes. Fails when no byte
/// comes for `idle`.
pub(crate) fn read_body(
    body: &IncomingBody,
    limit: usize,
    idle: Duration,
) -> Result<Option<Vec<u8>>, String> {
    let stream = body
        .stream()
        .map_err(|()| "body stream already taken".to_string())?;
    let mut out = Vec::new();
    let result = loop {
        match stream.read(CHUNK) {
            Ok(bytes) if bytes.is_empty() => {
                if !ready_within(&stream.subscribe(), idle) {
                    break Err(format!("timed out: no byte for {} s", idle.as_secs_f64()));
                }
            }
            Ok(bytes) if out.len() + bytes.len() > limit => break Ok(None),
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(StreamError::Closed) => break Ok(Some(out)),
            Err(StreamError::LastOperationFailed(e)) => break Err(e.to_debug_string()),
        }
    };
    drop(stream);
    result
}

fn never_reached(failure: &StreamFailure) -> bool {
    failure.message.ends_with("connection refused")
        || failure.message.ends_with("host name not found")
}

/// A destination answer that came before the whole body was sent.
fn early_answer(answer: Result<Result<IncomingResponse, ErrorCode>, ()>) -> StreamFailure {
    match answer {
        Ok(Ok(response)) => match check_status(&response, "destination") {
            Err(failure) => failure,
            Ok(()) => transient("destination answered before the upload was complete".into()),
        },
        Ok(Err(code)) => code_failure(&code, "destination"),
        Err(()) => internal("response already taken"),
    }
}

fn outgoing_request(
    request: &Request,
    content_length: Option<u64>,
) -> Result<OutgoingRequest, StreamFailure> {
    let mut entries: Vec<(String, Vec<u8>)> = request
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone().into_bytes()))
        .collect();
    if let Some(length) = content_length {
        entries.push(("content-length".into(), length.to_string().into_bytes()));
    }
    let fields =
        Fields::from_list(&entries).map_err(|e| permanent(format!("bad header: {e:?}")))?;
    let out = OutgoingRequest::new(fields);
    let url = &request.url;
    let scheme = match url.scheme() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_string()),
    };
    let authority = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let ok = out.set_method(&wasi_method(request.method)).is_ok()
        && out.set_scheme(Some(&scheme)).is_ok()
        && out.set_authority(Some(&authority)).is_ok()
        && out.set_path_with_query(Some(&path)).is_ok();
    if !ok {
        return Err(permanent(format!(
            "cannot build request {}",
            request.describe()
        )));
    }
    Ok(out)
}

/// How long the host may wait for the answer's first byte after sending a request whose body
/// streams for as long as the file takes: the guest watches such uploads for stalls itself.
const STREAMED_UPLOAD_ANSWER: Duration = Duration::from_secs(7 * 24 * 3600);

fn handle(
    request: OutgoingRequest,
    side: &str,
    timeout: Duration,
) -> Result<FutureIncomingResponse, StreamFailure> {
    let first_byte = if side == "destination" {
        STREAMED_UPLOAD_ANSWER
    } else {
        timeout
    };
    let options = RequestOptions::new();
    // Not every host supports every option; a refusal only means the host's default applies
    // (the guest enforces the timeout itself as well).
    let nanos = |d: Duration| Some(d.as_nanos().min(u64::MAX as u128) as u64);
    let _ = options.set_connect_timeout(nanos(timeout));
    let _ = options.set_first_byte_timeout(nanos(first_byte));
    let _ = options.set_between_bytes_timeout(nanos(timeout));
    outgoing_handler::handle(request, Some(options)).map_err(|code| code_failure(&code, side))
}

fn take_response(
    future: &FutureIncomingResponse,
    side: &str,
) -> Option<Result<IncomingResponse, StreamFailure>> {
    match future.get()? {
        Err(()) => Some(Err(internal("response already taken"))),
        Ok(Err(code)) => Some(Err(code_failure(&code, side))),
        Ok(Ok(response)) => Some(Ok(response)),
    }
}

/// The side of a streamed file that a `side` name in messages stands for.
fn end_of(side: &str) -> Option<super::End> {
    match side {
        "source" => Some(super::End::Source),
        "destination" => Some(super::End::Destination),
        _ => None,
    }
}

fn check_status(response: &IncomingResponse, side: &str) -> Result<(), StreamFailure> {
    let status = response.status();
    if (200..300).contains(&status) {
        return Ok(());
    }
    let retry_after = response
        .headers()
        .get(&"retry-after".to_string())
        .first()
        .and_then(|v| parse_retry_after(std::str::from_utf8(v).ok()?, SystemTime::now()));
    let detail = error_body(response);
    Err(StreamFailure {
        message: format!("{side} answered HTTP {status}: {detail}"),
        retryable: is_transient_status(status),
        retry_after,
        status: Some(status),
        end: end_of(side),
    })
}

/// The first few hundred bytes of an error response, for the message.
fn error_body(response: &IncomingResponse) -> String {
    let Ok(body) = response.consume() else {
        return String::new();
    };
    let text = match body.stream() {
        Ok(stream) => {
            // A snippet for the message: whatever arrives soon, never a wait on a stalled body.
            let mut bytes = stream.read(4096).unwrap_or_default();
            if bytes.is_empty() && ready_within(&stream.subscribe(), Duration::from_secs(2)) {
                bytes = stream.read(4096).unwrap_or_default();
            }
            drop(stream);
            super::storage_errors::snippet(&bytes)
        }
        Err(()) => String::new(),
    };
    drop(body);
    text
}

fn wasi_method(method: super::Method) -> WasiMethod {
    use super::Method::*;
    match method {
        Get => WasiMethod::Get,
        Head => WasiMethod::Head,
        Post => WasiMethod::Post,
        Put => WasiMethod::Put,
        Patch => WasiMethod::Patch,
        Delete => WasiMethod::Delete,
    }
}

fn code_failure(code: &ErrorCode, side: &str) -> StreamFailure {
    let permanent_code = matches!(
        code,
        ErrorCode::DnsError(_)
            | ErrorCode::DestinationNotFound
            | ErrorCode::HttpRequestUriInvalid
            | ErrorCode::HttpRequestMethodInvalid
            | ErrorCode::TlsCertificateError
            | ErrorCode::TlsProtocolError
            | ErrorCode::TlsAlertReceived(_)
            | ErrorCode::HttpRequestDenied
    );
    StreamFailure {
        message: format!("{side}: {}", describe_code(code)),
        retryable: !permanent_code,
        retry_after: None,
        status: None,
        end: None,
    }
}

fn describe_code(code: &ErrorCode) -> String {
    match code {
        ErrorCode::ConnectionRefused => "connection refused".into(),
        ErrorCode::ConnectionTerminated => "connection terminated".into(),
        ErrorCode::ConnectionTimeout => "timed out connecting".into(),
        ErrorCode::ConnectionReadTimeout => "timed out waiting for bytes from the server".into(),
        ErrorCode::ConnectionWriteTimeout => "timed out sending bytes to the server".into(),
        ErrorCode::TlsProtocolError => "TLS handshake failed (is this an https server?)".into(),
        ErrorCode::DnsError(_) => "host name not found".into(),
        ErrorCode::HttpRequestDenied => {
            "request denied by the host (outbound host not allowed?)".into()
        }
        other => format!("{other:?}"),
    }
}

fn transient(message: String) -> StreamFailure {
    StreamFailure {
        message,
        retryable: true,
        retry_after: None,
        status: None,
        end: None,
    }
}

fn permanent(message: String) -> StreamFailure {
    StreamFailure {
        message,
        retryable: false,
        retry_after: None,
        status: None,
        end: None,
    }
}

fn internal(message: &str) -> StreamFailure {
    permanent(format!("internal error: {message}"))
}
