//! The copy function deployed elsewhere (`--via URL`: `wasmtime serve` replicas behind a load
//! balancer, Spin on Kubernetes) as the executor of a bulk copy's items. Each item is one
//! request with the body the HTTP function takes (`POST URL/copy-run` with `copy_children`
//! false, `POST URL/copy-model-version`), `parallel` of them in flight as the transport's
//! concurrent calls, so that the platform spreads them over its replicas.
//!
//! Each item is idempotent (a copy-run finds, completes or resumes the copy its lineage tags
//! point at), so a request that fails on the way — a replica lost mid-copy, a connection reset,
//! 502/503/504 from the load balancer, a timeout — is simply sent again, on its own budget of
//! attempts and backoff (`MLFLOW_HTTP_REQUEST_MAX_RETRIES`, …); another replica then resumes
//! the copy. A 4xx answer is the item's failure, except 401/403: the function refuses the
//! token or the servers, which no item would get past, so the copy stops there.
//!
//! The function answers when the item's copy is done, so an item's request may take as long as
//! that copy: its timeout is `MLFLOW_COPY_VIA_TIMEOUT` seconds (default 2 hours), not the
//! ordinary request timeout. Its bearer token comes from `MLFLOW_COPY_VIA_TOKEN` only, and goes
//! to the function's origin only (`Credential::for_origin_of`, and a host policy naming that
//! host alone).

use crate::api::{CopyError, ErrorKind};
use crate::credentials::Authorizer;
use crate::engine::item_executor::{Done, ItemExecutor, Items, Job};
use crate::engine::Copier;
use crate::transport::{
    Calls, Credential, Error, HostPolicy, Http, Method, Request, Response, Settings, Transport,
};
use serde::Serialize;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;
use url::Url;

/// The copy function's bearer token (its `MLFLOW_COPY_API_TOKEN`).
pub const TOKEN_VAR: &str = "MLFLOW_COPY_VIA_TOKEN";
/// Seconds one item's request may take (connect, and the whole copy until its answer).
pub const TIMEOUT_VAR: &str = "MLFLOW_COPY_VIA_TIMEOUT";
const DEFAULT_ITEM_TIMEOUT: Duration = Duration::from_secs(2 * 3600);
/// Attempts at the health check before the copy starts: enough to ride out a replica
/// restarting, few enough that a wrong URL fails in seconds.
const HEALTH_ATTEMPTS: u32 = 3;

/// The copy function at one URL, and how to reach it.
pub struct Via {
    base: Url,
    parallel: usize,
    credential: Option<Credential>,
    /// For the items' requests: the long item timeout.
    items: Transport,
    /// For the health check: the ordinary request timeout.
    probe: Transport,
}

impl Via {
    /// Checks the URL against the copy's host policy and reads the token; sends nothing (a
    /// dry run never contacts the function).
    pub fn new(
        url: &str,
        parallel: u32,
        http: fn(&Settings) -> Box<dyn Http>,
        env: &dyn Fn(&str) -> Option<String>,
        settings: &Settings,
    ) -> Result<Via, CopyError> {
        let base = Url::parse(url)
            .map_err(|e| CopyError::bad_input(format!("via {url:?} is not a URL: {e}")))?;
        settings
            .hosts
            .check_named(&base)
            .map_err(|why| CopyError::bad_input(format!("via {}: {why}", shown(&base))))?;
        let credential = env(TOKEN_VAR)
            .filter(|t| !t.trim().is_empty())
            .map(|token| Credential::for_origin_of(Rc::new(ViaToken(token)), &base));
        // Only the function's host, whatever the copy's own policy allows.
        let only_there = |timeout| Settings {
            timeout,
            policy: settings.policy.clone(),
            hosts: HostPolicy::only(&base),
        };
        let items = only_there(item_timeout(env)?);
        let probe = Settings {
            policy: crate::transport::retry::RetryPolicy {
                max_attempts: HEALTH_ATTEMPTS.min(settings.policy.max_attempts),
                ..settings.policy.clone()
            },
            ..only_there(settings.timeout)
        };
        Ok(Via {
            items: Transport::new(http(&items), items.policy.clone()),
            probe: Transport::new(http(&probe), probe.policy.clone()),
            base,
            parallel: parallel.max(1) as usize,
            credential,
        })
    }

    /// A `Via` over transports given (the tests' doubles of the function).
    #[cfg(test)]
    pub fn over(
        base: &str,
        parallel: usize,
        token: Option<&str>,
        [items, probe]: [Transport; 2],
    ) -> Via {
        let base = Url::parse(base).expect("a URL");
        Via {
            credential: token
                .map(|t| Credential::for_origin_of(Rc::new(ViaToken(t.to_string())), &base)),
            base,
            parallel,
            items,
            probe,
        }
    }

    /// `URL/route`, under the URL's own path (a function behind a path prefix).
    fn route(&self, route: &str) -> Url {
        let mut url = self.base.clone();
        let prefix = self.base.path().trim_end_matches('/');
        url.set_path(&format!("{prefix}/{route}"));
        url.set_query(None);
        url
    }

    /// Fails at once, clearly, when nothing answers at the URL.
    fn check_reachable(&self) -> Result<(), CopyError> {
        let request = Request::new(Method::Get, self.route("healthz"));
        match self.probe.send(&request, true) {
            Ok(response) if response.is_success() => Ok(()),
            Ok(response) => Err(CopyError::upstream(format!(
                "the copy function at {} answered its health check (GET /healthz) with HTTP {}: \
                 is that the address of mlflow-copy's HTTP function?",
                shown(&self.base),
                response.status
            ))),
            Err(e) => Err(CopyError::upstream(format!(
                "the copy function at {} is unreachable: {e}",
                shown(&self.base)
            ))),
        }
    }

    fn request(&self, job: &Job) -> Request {
        let (route, body) = match job {
            Job::Run { request, .. } => ("copy-run", json(request)),
            Job::Version(request) => ("copy-model-version", json(request)),
        };
        let mut request = Request::new(Method::Post, self.route(route))
            .header("content-type", "application/json")
            .header("accept", "application/json");
        request.body = body;
        match &self.credential {
            Some(credential) => request.with_credential(credential.clone()),
            None => request,
        }
    }
}

impl ItemExecutor for Via {
    fn run(&mut self, c: &mut Copier, items: &mut dyn Items) -> anyhow::Result<()> {
        self.check_reachable()?;
        let mut calls = ItemCalls {
            via: self,
            c,
            items,
            in_flight: HashMap::new(),
            refused: None,
        };
        let mut no_files = |_: &[usize]| Ok(Vec::new());
        self.items
            .stream_files(0, 1, &mut calls, &mut no_files, &mut |_| {})?;
        match calls.refused {
            Some(refusal) => Err(refusal.into()),
            None => Ok(()),
        }
    }
}

/// The items as the transport's calls: at most `parallel` in flight, each answer turned into
/// the item's result.
struct ItemCalls<'a, 'p> {
    via: &'a Via,
    c: &'a mut Copier<'p>,
    items: &'a mut dyn Items,
    /// The job of each item in flight, by its key.
    in_flight: HashMap<usize, Job>,
    /// Set when the function refused the token or the servers: nothing more is sent.
    refused: Option<CopyError>,
}

impl Calls for ItemCalls<'_, '_> {
    fn next(&mut self) -> Option<(usize, Request)> {
        if self.refused.is_some() || self.in_flight.len() >= self.via.parallel {
            return None;
        }
        let (key, job) = self.items.next(self.c)?;
        let request = self.via.request(&job);
        self.in_flight.insert(key, job);
        Some((key, request))
    }

    fn answer(&mut self, key: usize, answer: Result<Response, Error>) {
        let job = self
            .in_flight
            .remove(&key)
            .expect("an answer to an item sent");
        let result = match answer {
            Ok(response) if response.is_success() => report(&job, &response.body),
            Ok(response) => Err(self.failure(&response)),
            Err(e) => Err(CopyError::upstream(format!("the copy function: {e}"))),
        };
        if let Err(e) = &result {
            let fatal = e.kind == ErrorKind::Unauthorized && self.refused.is_none();
            if fatal {
                self.refused = Some(e.clone());
            }
        }
        let result = result.map_err(|e| anyhow::Error::new(e).context(describe(&job)));
        self.items.done(self.c, key, result);
    }

    fn done(&self) -> bool {
        self.in_flight.is_empty() && (self.refused.is_some() || self.items.exhausted())
    }
}

impl ItemCalls<'_, '_> {
    /// The function's error answer (`{"error": {"code", "message"}}`) as the item's error.
    fn failure(&self, response: &Response) -> CopyError {
        let base = shown(&self.via.base);
        let (code, message) = error_of(response);
        if matches!(response.status, 401 | 403) {
            return CopyError::new(
                ErrorKind::Unauthorized,
                format!(
                    "the copy function at {base} refused the copy (HTTP {} {code}: {message}); \
                     {TOKEN_VAR} must hold its MLFLOW_COPY_API_TOKEN, and its \
                     MLFLOW_COPY_ALLOWED_HOSTS must list both servers",
                    response.status
                ),
            );
        }
        let kind = match code.as_str() {
            "bad_input" => ErrorKind::BadInput,
            "not_found" => ErrorKind::NotFound,
            "conflict" => ErrorKind::Conflict,
            _ => CopyError::kind_for_status(response.status),
        };
        CopyError::new(
            kind,
            format!(
                "the copy function at {base} (HTTP {}): {message}",
                response.status
            ),
        )
    }
}

/// The report the function answered for the job, as the engine takes it.
fn report(job: &Job, body: &[u8]) -> Result<Done, CopyError> {
    let unreadable = |e: serde_json::Error| {
        CopyError::upstream(format!("the copy function's report is not readable: {e}"))
    };
    match job {
        Job::Run { .. } => serde_json::from_slice(body).map(Done::Run),
        Job::Version(_) => serde_json::from_slice(body).map(|r| Done::Version(Box::new(r))),
    }
    .map_err(unreadable)
}

/// The code and message of an error answer, or the start of a body that is not one.
fn error_of(response: &Response) -> (String, String) {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&response.body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let field = |name: &str| {
        error
            .and_then(|e| e.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    match (field("code"), field("message")) {
        (Some(code), Some(message)) => (code, message),
        _ => ("error".into(), response.body_snippet()),
    }
}

fn describe(job: &Job) -> String {
    match job {
        Job::Run { request, .. } => format!("copying run {} via the copy function", request.run_id),
        Job::Version(v) => format!(
            "copying version {} of {:?} via the copy function",
            v.src_version, v.src_model
        ),
    }
}

fn json(body: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(body).expect("requests serialize")
}

/// The URL for messages: without query or credentials.
fn shown(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    let _ = url.set_password(None);
    let _ = url.set_username("");
    url.to_string()
}

fn item_timeout(env: &dyn Fn(&str) -> Option<String>) -> Result<Duration, CopyError> {
    let Some(raw) = env(TIMEOUT_VAR).filter(|v| !v.trim().is_empty()) else {
        return Ok(DEFAULT_ITEM_TIMEOUT);
    };
    match raw.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 => Ok(Duration::from_secs_f64(secs)),
        _ => Err(CopyError::bad_input(format!(
            "{TIMEOUT_VAR}={raw:?} is not a number of seconds above 0"
        ))),
    }
}

/// The function's token, as a bearer header. Never shown.
struct ViaToken(String);

impl Authorizer for ViaToken {
    fn header(&self) -> Result<Option<String>, CopyError> {
        Ok(Some(format!("Bearer {}", self.0)))
    }

    fn hint(&self) -> String {
        format!("set {TOKEN_VAR} to the copy function's MLFLOW_COPY_API_TOKEN")
    }
}
