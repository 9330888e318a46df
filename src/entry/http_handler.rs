//! The HTTP function: `wasi:http/incoming-handler`, exported by the same component, for
//! `wasmtime serve` and Spin. The rules live in `http_api`; this file reads the request,
//! applies them and writes the response — streaming NDJSON progress when asked to.

use super::http_api::{self, Refusal, Route};
use super::{execute, scrub_text, secrets, wasi_host, CopyRequest};
use crate::api::{
    CopyError, CopyExperimentRequest, CopyModelRequest, CopyModelVersionRequest, CopyRunRequest,
    VerifyExperimentRequest, VerifyModelVersionRequest, VerifyRunRequest,
};
use crate::engine::progress::{human_line, Event, Progress};
use crate::stores::databricks::workspace_host;
use crate::transport::hosts::{any_host_allowed, ALLOW_ANY_HOST_VAR};
use crate::transport::wasi_http::read_body;
use crate::transport::{Caller, HostPolicy};
use serde::Serialize;
use serde_json::json;
use std::time::Instant;
use waki::bindings::exports::wasi::http::incoming_handler::Guest;
use waki::bindings::wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use waki::bindings::wasi::io::streams::OutputStream;

struct HttpFunction;

waki::bindings::export!(HttpFunction with_types_in waki::bindings);

impl Guest for HttpFunction {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let started = Instant::now();
        let method = method_name(&request.method());
        let path = request.path_with_query().unwrap_or_default();
        let path = path.split('?').next().unwrap_or_default().to_string();
        if any_host_allowed(&env) {
            // Each request runs in a fresh instance: the operator sees this with every one.
            eprintln!(
                "[mlflow-copy] warning: {ALLOW_ANY_HOST_VAR}=true: callers may name any host \
                 (special-purpose addresses aside), and upstream credentials go to the hosts \
                 they name"
            );
        }
        let status = serve(&method, &path, request, out);
        // One access-log line; never headers or bodies (they carry tokens).
        eprintln!(
            "[mlflow-copy] {method} {path} -> {status} ({:.2} s)",
            started.elapsed().as_secs_f64()
        );
    }
}

fn env(name: &str) -> Option<String> {
    super::settings_source::setting(name)
}

fn serve(method: &str, path: &str, request: IncomingRequest, out: ResponseOutparam) -> u16 {
    let route = match http_api::route(method, path) {
        Ok(route) => route,
        Err(refusal) => return refuse(out, &refusal),
    };
    if route == Route::Health {
        return respond(out, 200, "application/json", br#"{"status":"ok"}"#);
    }
    let header = |name: &str| {
        request
            .headers()
            .get(&name.to_string())
            .first()
            .and_then(|v| String::from_utf8(v.clone()).ok())
    };
    let allow_unauthenticated =
        env(http_api::ALLOW_UNAUTHENTICATED_VAR).is_some_and(|v| v == "true");
    let authorization = header("authorization");
    if let Err(refusal) = http_api::authorize(
        authorization.as_deref(),
        env(http_api::TOKEN_VAR).as_deref(),
        allow_unauthenticated,
    ) {
        return refuse(out, &refusal);
    }
    let ndjson = http_api::wants_ndjson(header("accept").as_deref());
    let body = match read_request_body(request) {
        Ok(body) => body,
        Err(refusal) => return refuse(out, &refusal),
    };
    match route {
        Route::CopyRun => copy::<CopyRunRequest>(out, &body, ndjson),
        Route::CopyModelVersion => copy::<CopyModelVersionRequest>(out, &body, ndjson),
        Route::CopyExperiment => copy::<CopyExperimentRequest>(out, &body, ndjson),
        Route::CopyModel => copy::<CopyModelRequest>(out, &body, ndjson),
        Route::VerifyRun => copy::<VerifyRunRequest>(out, &body, ndjson),
        Route::VerifyExperiment => copy::<VerifyExperimentRequest>(out, &body, ndjson),
        Route::VerifyModelVersion => copy::<VerifyModelVersionRequest>(out, &body, ndjson),
        Route::Health => unreachable!("answered above"),
    }
}

fn copy<R: CopyRequest>(out: ResponseOutparam, body: &[u8], ndjson: bool) -> u16 {
    let request: R = match http_api::parse_body(body) {
        Ok(r) => r,
        Err(refusal) => return refuse(out, &refusal),
    };
    let (src, dst) = request.ends();
    let hosts = HostPolicy::from_env(&env, Caller::Remote);
    let workspace = |profile: Option<&str>| workspace_host(profile, &env);
    if let Err(refusal) = http_api::check_hosts(&[src, dst], &hosts, &workspace) {
        return refuse(out, &refusal);
    }
    run(
        out,
        ndjson,
        |progress| execute(wasi_host(Caller::Remote), &request, progress),
        R::failure,
    )
}

/// Runs a copy and answers with its report: as one JSON document, or as NDJSON progress events
/// ending with `{"event":"report",…}` or `{"event":"error",…}` (the status is then already 200).
/// A report that stands for a failure (a bulk copy with failed items) is answered with the
/// failure's status and `{"error":…,"report":…}`, or as a report event followed by an error
/// event.
fn run<R: Serialize>(
    out: ResponseOutparam,
    ndjson: bool,
    copy: impl FnOnce(&mut dyn Progress) -> Result<R, CopyError>,
    failure: fn(&R) -> Option<CopyError>,
) -> u16 {
    if !ndjson {
        return match copy(&mut LogProgress) {
            Ok(report) => match failure(&report) {
                None => respond(
                    out,
                    200,
                    "application/json",
                    json!(report).to_string().as_bytes(),
                ),
                Some(e) => {
                    let body = json!({ "error": error_json(&e), "report": report });
                    respond(
                        out,
                        http_api::status_for(&e),
                        "application/json",
                        body.to_string().as_bytes(),
                    )
                }
            },
            Err(e) => respond(
                out,
                http_api::status_for(&e),
                "application/json",
                http_api::error_body(e.kind.as_str(), &e.message).as_bytes(),
            ),
        };
    }
    let reply = Reply::start(out, 200, "application/x-ndjson");
    let mut progress = NdjsonProgress {
        reply: &reply,
        secrets: secrets(&env),
    };
    let error = match copy(&mut progress) {
        Ok(report) => {
            progress.line(&json!({ "event": "report", "report": report }).to_string());
            failure(&report)
        }
        Err(e) => Some(e),
    };
    if let Some(e) = error {
        progress.line(&json!({ "event": "error", "error": error_json(&e) }).to_string());
    }
    reply.finish();
    200
}

fn error_json(e: &CopyError) -> serde_json::Value {
    json!({ "code": e.kind.as_str(), "message": e.message })
}

/// Progress of a JSON (non-streaming) request: logged for the operator.
struct LogProgress;

impl Progress for LogProgress {
    fn event(&mut self, event: Event) {
        eprintln!("{}", human_line(&event));
    }
}

struct NdjsonProgress<'a> {
    reply: &'a Reply,
    secrets: Vec<String>,
}

impl NdjsonProgress<'_> {
    fn line(&self, line: &str) {
        let mut text = scrub_text(line, &self.secrets);
        text.push('\n');
        self.reply.write(text.as_bytes());
    }
}

impl Progress for NdjsonProgress<'_> {
    fn event(&mut self, event: Event) {
        self.line(&serde_json::to_string(&event).expect("events serialize"));
    }
}

fn read_request_body(request: IncomingRequest) -> Result<Vec<u8>, Refusal> {
    let too_large = || Refusal {
        status: 413,
        code: "payload_too_large",
        message: format!("request body over {} bytes", http_api::MAX_BODY),
    };
    let declared = request
        .headers()
        .get(&"content-length".to_string())
        .first()
        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > http_api::MAX_BODY) {
        return Err(too_large());
    }
    let body = request
        .consume()
        .map_err(|()| internal("body already taken"))?;
    // The caller's body is small (a JSON request); a caller that stalls is not waited for long.
    let result = read_body(
        &body,
        http_api::MAX_BODY,
        std::time::Duration::from_secs(30),
    );
    drop(body);
    match result {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => Err(too_large()),
        Err(e) => Err(internal(&e)),
    }
}

fn internal(what: &str) -> Refusal {
    Refusal {
        status: 500,
        code: "internal",
        message: format!("reading the request: {what}"),
    }
}

/// A response whose head is sent; its body is written as it comes.
struct Reply {
    stream: Option<OutputStream>,
    body: Option<OutgoingBody>,
}

impl Reply {
    fn start(out: ResponseOutparam, status: u16, content_type: &str) -> Reply {
        let headers =
            Fields::from_list(&[("content-type".to_string(), content_type.as_bytes().to_vec())])
                .expect("valid header");
        let response = OutgoingResponse::new(headers);
        let _ = response.set_status_code(status);
        let body = response.body().expect("body taken once");
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().expect("stream taken once");
        Reply {
            stream: Some(stream),
            body: Some(body),
        }
    }

    /// Writes and flushes, so that each progress line reaches the caller as it happens.
    fn write(&self, mut bytes: &[u8]) {
        let Some(stream) = &self.stream else { return };
        while !bytes.is_empty() {
            // blocking-write-and-flush takes at most 4096 bytes per call.
            let n = bytes.len().min(4096);
            if stream.blocking_write_and_flush(&bytes[..n]).is_err() {
                return; // the caller went away; the copy itself still completes
            }
            bytes = &bytes[n..];
        }
    }

    fn finish(mut self) {
        drop(self.stream.take());
        if let Some(body) = self.body.take() {
            let _ = OutgoingBody::finish(body, None);
        }
    }
}

fn respond(out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) -> u16 {
    let reply = Reply::start(out, status, content_type);
    reply.write(body);
    reply.finish();
    status
}

fn refuse(out: ResponseOutparam, refusal: &Refusal) -> u16 {
    respond(
        out,
        refusal.status,
        "application/json",
        refusal.body().as_bytes(),
    )
}

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(other) => other.clone(),
    }
}
