//! `Http` over WASI HTTP: the only module that touches host bindings.
//!
//! waki provides the bindings; its client does not fit: it cannot stream a request body, keep
//! several requests in flight, or send a declared-length body safely (MLflow's JSON API reads a
//! chunked body as empty). So this module drives the `wasi:http` and `wasi:io` resources that
//! waki re-exports directly. `send` is one blocking request; `stream` runs each file transfer as
//! a small state machine advanced when its pollable is ready, one `poll` waiting for all.
//!
//! Resource discipline (the host traps otherwise): a pollable is dropped before the stream or
//! future it watches, an input/output stream before its body. Struct fields are declared in
//! that order, because Rust drops fields in declaration order.

use super::{FileJob, Http, NextJob, Request, Response, SendError, StreamEvent, StreamFailure};
use crate::transport::retry::{is_transient_status, parse_retry_after};
use std::time::{Duration, SystemTime};
use waki::bindings::wasi::http::outgoing_handler;
use waki::bindings::wasi::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingBody, IncomingResponse,
    Method as WasiMethod, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use waki::bindings::wasi::io::poll::{poll, Pollable};
use waki::bindings::wasi::io::streams::{InputStream, OutputStream, StreamError};

/// Largest read from a source stream; also the most one transfer holds in memory.
const CHUNK: u64 = 1 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

pub struct WasiHttp;

impl Http for WasiHttp {
    fn send(&self, request: &Request) -> Result<Response, SendError> {
        let future = begin(request)?;
        loop {
            match take_response(&future, "server") {
                None => future.subscribe().block(),
                Some(result) => return complete(result),
            }
        }
    }

    fn send_all(
        &self,
        requests: &[Request],
        concurrency: usize,
    ) -> Vec<Result<Response, SendError>> {
        let mut answers: Vec<Option<Result<Response, SendError>>> =
            requests.iter().map(|_| None).collect();
        let mut in_flight: Vec<(usize, FutureIncomingResponse)> = Vec::new();
        let mut next = 0;
        while next < requests.len() || !in_flight.is_empty() {
            while in_flight.len() < concurrency.max(1) && next < requests.len() {
                match begin(&requests[next]) {
                    Ok(future) => in_flight.push((next, future)),
                    Err(e) => answers[next] = Some(Err(e)),
                }
                next += 1;
            }
            if in_flight.is_empty() {
                continue;
            }
            let pollables: Vec<Pollable> = in_flight.iter().map(|(_, f)| f.subscribe()).collect();
            let mut ready = poll(&pollables.iter().collect::<Vec<_>>());
            drop(pollables);
            // Highest index first, so that removing one does not move those still to come.
            ready.sort_unstable_by(|a, b| b.cmp(a));
            for k in ready {
                let (index, future) = in_flight.swap_remove(k as usize);
                if let Some(result) = take_response(&future, "server") {
                    answers[index] = Some(complete(result));
                } else {
                    in_flight.push((index, future));
                }
            }
        }
        answers
            .into_iter()
            .map(|a| a.expect("every request answered"))
            .collect()
    }

    fn stream(&self, next: NextJob, concurrency: usize, events: &mut dyn FnMut(StreamEvent)) {
        let concurrency = concurrency.max(1);
        let mut active: Vec<Transfer> = Vec::new();
        let mut exhausted = false;
        loop {
            while active.len() < concurrency && !exhausted {
                match next() {
                    None => exhausted = true,
                    Some((id, job)) => match Transfer::start(id, job) {
                        Ok(transfer) => active.push(transfer),
                        Err(failure) => events(StreamEvent::Finished {
                            id,
                            result: Err(failure),
                        }),
                    },
                }
            }
            if active.is_empty() {
                return;
            }
            // Advance every transfer that is not waiting; each stops at its next wait or its end.
            let mut i = 0;
            while i < active.len() {
                if !active[i].wait.is_empty() {
                    i += 1;
                    continue;
                }
                match active[i].advance(events) {
                    Some(result) => {
                        let done = active.swap_remove(i);
                        events(StreamEvent::Finished {
                            id: done.id,
                            result,
                        });
                    }
                    None => i += 1,
                }
            }
            if active.is_empty() || (active.len() < concurrency && !exhausted) {
                continue;
            }
            // A transfer may wait on two things (e.g. its stream and an early answer).
            let (owners, pollables): (Vec<usize>, Vec<&Pollable>) = active
                .iter()
                .enumerate()
                .flat_map(|(i, t)| t.wait.iter().map(move |p| (i, p)))
                .unzip();
            let ready = poll(&pollables);
            drop(pollables);
            for index in ready {
                active[owners[index as usize]].wait.clear();
            }
        }
    }
}

/// One file in flight. `wait` comes first so that it is dropped before the resources it watches.
struct Transfer {
    wait: Vec<Pollable>,
    stage: Option<Stage>,
    id: usize,
    job: FileJob,
}

enum Stage {
    /// The GET was sent; waiting for its response head.
    AwaitSource(FutureIncomingResponse),
    /// Copying bytes from the GET body to the PUT body.
    Pump(Pump),
    /// The PUT body is complete; waiting for the destination's answer.
    AwaitDestination {
        response: FutureIncomingResponse,
        sent: u64,
    },
}

struct Pump {
    source: InputStream,
    _source_body: IncomingBody,
    _source_response: IncomingResponse,
    sink: Option<OutputStream>,
    sink_body: Option<OutgoingBody>,
    response: FutureIncomingResponse,
    chunk: Vec<u8>,
    offset: usize,
    sent: u64,
    /// The source is exhausted and the sink was asked to flush.
    flushing: bool,
}

/// What one `Pump::advance` step ended with.
enum PumpStep {
    Wait(Vec<Pollable>),
    Finished,
    Failed(StreamFailure),
}

impl Transfer {
    fn start(id: usize, job: FileJob) -> Result<Transfer, StreamFailure> {
        let request = outgoing_request(job.download.request(), None)?;
        let future = handle(request, "source")?;
        Ok(Transfer {
            wait: Vec::new(),
            stage: Some(Stage::AwaitSource(future)),
            id,
            job,
        })
    }

    /// Moves the transfer on until it has to wait (sets `wait`, returns `None`) or ends.
    fn advance(
        &mut self,
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
                    Some(Ok(response)) => match Pump::begin(response, &self.job) {
                        Ok(pump) => self.stage = Some(Stage::Pump(pump)),
                        Err(failure) => return Some(Err(failure)),
                    },
                },
                Stage::Pump(mut pump) => match pump.advance(events) {
                    PumpStep::Wait(pollables) => {
                        self.wait = pollables;
                        self.stage = Some(Stage::Pump(pump));
                        return None;
                    }
                    PumpStep::Failed(failure) => return Some(Err(failure)),
                    PumpStep::Finished => match pump.finish() {
                        Ok((response, sent)) => {
                            self.stage = Some(Stage::AwaitDestination { response, sent })
                        }
                        Err(failure) => return Some(Err(failure)),
                    },
                },
                Stage::AwaitDestination { response, sent } => {
                    match take_response(&response, "destination") {
                        None => {
                            self.wait = vec![response.subscribe()];
                            self.stage = Some(Stage::AwaitDestination { response, sent });
                            return None;
                        }
                        Some(Err(failure)) => return Some(Err(failure)),
                        Some(Ok(answer)) => {
                            return Some(check_status(&answer, "destination").map(|()| sent))
                        }
                    }
                }
            }
        }
    }
}

impl Pump {
    /// Takes the source response and sends the PUT head, forwarding the source's length.
    fn begin(source: IncomingResponse, job: &FileJob) -> Result<Pump, StreamFailure> {
        check_status(&source, "source")?;
        let length = source
            .headers()
            .get(&"content-length".to_string())
            .first()
            .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok());
        let body = source
            .consume()
            .map_err(|()| internal("source body already taken"))?;
        let stream = body
            .stream()
            .map_err(|()| internal("source stream already taken"))?;
        let request = outgoing_request(job.upload.request(), length)?;
        let sink_body = request
            .body()
            .map_err(|()| internal("destination body already taken"))?;
        let sink = sink_body
            .write()
            .map_err(|()| internal("destination stream already taken"))?;
        // The host must have the request before the body is written (its buffer is one chunk).
        let response = handle(request, "destination")?;
        Ok(Pump {
            source: stream,
            _source_body: body,
            _source_response: source,
            sink: Some(sink),
            sink_body: Some(sink_body),
            response,
            chunk: Vec::new(),
            offset: 0,
            sent: 0,
            flushing: false,
        })
    }

    fn advance(&mut self, events: &mut dyn FnMut(StreamEvent)) -> PumpStep {
        let sink = self.sink.as_ref().expect("sink open while pumping");
        loop {
            if self.flushing {
                // Wait until the flush is done. After the last declared byte the host may close
                // the stream (content-length reached): that is success too. So is an answer
                // arriving meanwhile: it decides.
                return match sink.check_write() {
                    Ok(0) if self.response.subscribe().ready() => PumpStep::Finished,
                    Ok(0) => PumpStep::Wait(self.while_watching(sink.subscribe())),
                    Ok(_) | Err(StreamError::Closed) => PumpStep::Finished,
                    Err(StreamError::LastOperationFailed(e)) => PumpStep::Failed(transient(
                        format!("writing destination: {}", e.to_debug_string()),
                    )),
                };
            }
            // An answer before the body is complete is a refusal, or a dead connection (the
            // host may then never make the body writable again).
            if let Some(answer) = self.response.get() {
                return PumpStep::Failed(early_answer(answer));
            }
            if self.offset == self.chunk.len() {
                match self.source.read(CHUNK) {
                    Ok(bytes) if bytes.is_empty() => {
                        return PumpStep::Wait(self.while_watching(self.source.subscribe()))
                    }
                    Ok(bytes) => {
                        self.chunk = bytes;
                        self.offset = 0;
                    }
                    Err(StreamError::Closed) => {
                        match sink.flush() {
                            Ok(()) | Err(StreamError::Closed) => {}
                            Err(StreamError::LastOperationFailed(e)) => {
                                return PumpStep::Failed(transient(format!(
                                    "writing destination: {}",
                                    e.to_debug_string()
                                )))
                            }
                        }
                        self.flushing = true;
                        continue;
                    }
                    Err(StreamError::LastOperationFailed(e)) => {
                        return PumpStep::Failed(transient(format!(
                            "reading source: {}",
                            e.to_debug_string()
                        )))
                    }
                }
            }
            match sink.check_write() {
                Ok(0) => return PumpStep::Wait(self.while_watching(sink.subscribe())),
                Ok(permit) => {
                    let end = self.chunk.len().min(self.offset + permit as usize);
                    if let Err(e) = sink.write(&self.chunk[self.offset..end]) {
                        return PumpStep::Failed(self.sink_failed(e));
                    }
                    let n = (end - self.offset) as u64;
                    self.offset = end;
                    self.sent += n;
                    events(StreamEvent::Bytes(n));
                }
                Err(e) => return PumpStep::Failed(self.sink_failed(e)),
            }
        }
    }

    /// What to wait on besides `pollable`: the destination's answer, which comes early when
    /// the upload fails.
    fn while_watching(&self, pollable: Pollable) -> Vec<Pollable> {
        vec![pollable, self.response.subscribe()]
    }

    /// The destination stopped taking bytes early: its answer (if any) says why.
    fn sink_failed(&self, error: StreamError) -> StreamFailure {
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

    /// Ends the PUT body. `finish` checks the byte count against the declared content-length.
    fn finish(mut self) -> Result<(FutureIncomingResponse, u64), StreamFailure> {
        drop(self.sink.take());
        let body = self.sink_body.take().expect("sink body present");
        OutgoingBody::finish(body, None)
            .map_err(|code| transient(format!("finishing upload: {}", describe_code(&code))))?;
        Ok((self.response, self.sent))
    }
}

/// Sends a request's head and whole body; the answer is awaited on the returned future.
fn begin(request: &Request) -> Result<FutureIncomingResponse, SendError> {
    let unsent = |f: StreamFailure| SendError {
        message: f.message,
        not_sent: true,
    };
    let sent = |f: StreamFailure| SendError {
        message: f.message,
        not_sent: false,
    };
    // Always declare the length of a body: MLflow's JSON API (WSGI) reads a chunked body as
    // empty. waki cannot do this safely (its write loop fails on the host closing the stream
    // after the last declared byte), hence raw WASI here too.
    let has_body = !matches!(request.method, super::Method::Get | super::Method::Head)
        || !request.body.is_empty();
    let outgoing =
        outgoing_request(request, has_body.then_some(request.body.len() as u64)).map_err(unsent)?;
    let body = outgoing
        .body()
        .map_err(|()| unsent(internal("request body already taken")))?;
    let future = handle(outgoing, "server").map_err(unsent)?;
    write_all(&body, &request.body).map_err(sent)?;
    OutgoingBody::finish(body, None).map_err(|code| sent(code_failure(&code, "server")))?;
    Ok(future)
}

/// Reads a whole answer.
fn complete(result: Result<IncomingResponse, StreamFailure>) -> Result<Response, SendError> {
    let response = result.map_err(|f| SendError {
        not_sent: never_reached(&f),
        message: f.message,
    })?;
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .filter_map(|(k, v)| Some((k, String::from_utf8(v).ok()?)))
        .collect();
    let body = read_all(&response).map_err(|f| SendError {
        message: f.message,
        not_sent: false,
    })?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Writes a whole body, never more than the host permits at once.
fn write_all(body: &OutgoingBody, mut bytes: &[u8]) -> Result<(), StreamFailure> {
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
            Ok(0) => pollable.block(),
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

/// Reads a whole response body.
fn read_all(response: &IncomingResponse) -> Result<Vec<u8>, StreamFailure> {
    let body = response
        .consume()
        .map_err(|()| internal("response body already taken"))?;
    let result = read_body(&body, usize::MAX);
    drop(body);
    match result {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => unreachable!("no limit"),
        Err(e) => Err(transient(format!("reading response body: {e}"))),
    }
}

/// Reads an incoming body to its end; `None` once it exceeds `limit` bytes.
pub(crate) fn read_body(body: &IncomingBody, limit: usize) -> Result<Option<Vec<u8>>, String> {
    let stream = body
        .stream()
        .map_err(|()| "body stream already taken".to_string())?;
    let mut out = Vec::new();
    let result = loop {
        match stream.blocking_read(CHUNK) {
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

fn handle(request: OutgoingRequest, side: &str) -> Result<FutureIncomingResponse, StreamFailure> {
    let options = RequestOptions::new();
    // Not every host supports every option; a refusal only means the host's default applies.
    let _ = options.set_connect_timeout(Some(CONNECT_TIMEOUT.as_nanos() as u64));
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
    })
}

/// The first few hundred bytes of an error response, for the message.
fn error_body(response: &IncomingResponse) -> String {
    let Ok(body) = response.consume() else {
        return String::new();
    };
    let text = match body.stream() {
        Ok(stream) => {
            let bytes = stream.blocking_read(4096).unwrap_or_default();
            drop(stream);
            super::snippet(&bytes)
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
            | ErrorCode::TlsAlertReceived(_)
            | ErrorCode::HttpRequestDenied
    );
    StreamFailure {
        message: format!("{side}: {}", describe_code(code)),
        retryable: !permanent_code,
        retry_after: None,
        status: None,
    }
}

fn describe_code(code: &ErrorCode) -> String {
    match code {
        ErrorCode::ConnectionRefused => "connection refused".into(),
        ErrorCode::ConnectionTerminated => "connection terminated".into(),
        ErrorCode::ConnectionTimeout => "connection timed out".into(),
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
    }
}

fn permanent(message: String) -> StreamFailure {
    StreamFailure {
        message,
        retryable: false,
        retry_after: None,
        status: None,
    }
}

fn internal(message: &str) -> StreamFailure {
    permanent(format!("internal error: {message}"))
}
