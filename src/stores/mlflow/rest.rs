//! A small client for one MLflow server's REST API: builds requests with the server's
//! credentials, sends them through the retrying transport, and turns error answers into
//! classified errors that name the server and the call.

use super::flavor::{Flavor, OpenSource};
use crate::api::{CopyError, ErrorKind};
use crate::credentials::{Authorizer, Side};
use crate::stores::Call;
use crate::transport::{self, Credential, Method, Request, Response, Transport};
use crate::uri::HttpBase;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::rc::Rc;
use url::Url;

/// One page of a paginated answer; `items` is whichever list the endpoint returns.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
pub struct Page<T> {
    #[serde(
        alias = "runs",
        alias = "metrics",
        alias = "models",
        alias = "files",
        alias = "model_versions",
        alias = "contents"
    )]
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

/// Reads every page: `fetch` gets the token of the page to read (`None` for the first) and
/// `each` gets its items, until a page has no next token (or repeats the one it was read with).
fn for_each_page<T, E: From<CopyError>>(
    mut fetch: impl FnMut(Option<&str>) -> Result<Page<T>, CopyError>,
    mut each: impl FnMut(Vec<T>) -> Result<(), E>,
) -> Result<(), E> {
    let mut token: Option<String> = None;
    loop {
        let page = fetch(token.as_deref())?;
        each(page.items)?;
        match page.next_page_token {
            Some(next) if !next.is_empty() && token.as_deref() != Some(next.as_str()) => {
                token = Some(next)
            }
            _ => return Ok(()),
        }
    }
}

/// All items of every page (see `for_each_page`).
pub fn all_pages<T>(
    fetch: impl FnMut(Option<&str>) -> Result<Page<T>, CopyError>,
) -> Result<Vec<T>, CopyError> {
    let mut items = Vec::new();
    for_each_page(fetch, |page| {
        items.extend(page);
        Ok::<(), CopyError>(())
    })?;
    Ok(items)
}

/// Cheap to clone: a multipart upload keeps one for its later calls.
#[derive(Clone)]
pub struct MlflowRest {
    base: HttpBase,
    auth: Rc<dyn Authorizer>,
    side: Side,
    transport: Rc<Transport>,
    /// What this kind of server does differently from an open-source one.
    flavor: Rc<dyn Flavor>,
}

impl MlflowRest {
    pub fn new(
        base: HttpBase,
        side: Side,
        auth: Rc<dyn Authorizer>,
        transport: Rc<Transport>,
    ) -> MlflowRest {
        MlflowRest {
            base,
            auth,
            side,
            transport,
            flavor: Rc::new(OpenSource),
        }
    }

    /// The same client for a server of another flavor (a Databricks workspace).
    pub fn with_flavor(self, flavor: Rc<dyn Flavor>) -> MlflowRest {
        MlflowRest { flavor, ..self }
    }

    pub(super) fn flavor(&self) -> &dyn Flavor {
        self.flavor.as_ref()
    }

    /// The server as shown in messages and lineage tags (never with credentials).
    pub fn base_display(&self) -> String {
        self.base.to_string()
    }

    pub fn side(&self) -> Side {
        self.side
    }

    pub fn url(&self, path: &str) -> Url {
        self.base.join(path)
    }

    /// Gives a request for one of this server's URLs the server's credentials; the transport
    /// turns them into a header each time it sends the request (a token is fetched then).
    pub fn authorize(&self, request: Request) -> Request {
        request.with_credential(Credential::new(self.auth.clone()))
    }

    /// Whether an answer refused credentials that a fresh token may cure: 401, or 403 as real
    /// workspaces answer an expired OAuth token (n8n-io/n8n#34147; the SDK refreshes ahead).
    /// The authorizer drops its cached token; a personal access token is not retried.
    fn refreshed_after(&self, response: &Response) -> bool {
        matches!(response.status, 401 | 403) && self.auth.refresh()
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    pub fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, CopyError> {
        self.call(self.get_request(path, query), true)
    }

    pub fn get_request(&self, path: &str, query: &[(&str, &str)]) -> Request {
        let mut url = self.url(path);
        url.query_pairs_mut().extend_pairs(query);
        Request::new(Method::Get, url)
    }

    pub fn post_request(&self, path: &str, body: &Value) -> Request {
        json_request(Method::Post, self.url(path), body)
    }

    /// POST of an operation that may safely be repeated (log-batch, set-tag, update, search).
    pub fn post<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T, CopyError> {
        self.call(json_request(Method::Post, self.url(path), body), true)
    }

    /// POST that creates something: not repeated when the server may have acted on it.
    pub fn create<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T, CopyError> {
        self.call(json_request(Method::Post, self.url(path), body), false)
    }

    pub fn patch<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T, CopyError> {
        self.call(json_request(Method::Patch, self.url(path), body), true)
    }

    /// DELETE with a JSON body: OSS reads DELETE arguments from the body only.
    pub fn delete<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T, CopyError> {
        self.call(json_request(Method::Delete, self.url(path), body), true)
    }

    pub(super) fn call<T: DeserializeOwned>(
        &self,
        request: Request,
        idempotent: bool,
    ) -> Result<T, CopyError> {
        let response = self.send(request.clone(), idempotent)?;
        self.parse(&request, &response)
    }

    /// An idempotent request as a call the engine sends along with other work (see
    /// `stores::Call`); its answer is read as `call` reads one.
    pub fn prepare<'s, T: DeserializeOwned + 's>(&'s self, request: Request) -> Call<'s, T> {
        self.prepare_with(request, move |named, response| self.parse(named, response))
    }

    /// `prepare`, with the successful answer read by `read` (given the call without its
    /// body, for messages) instead of as JSON.
    pub fn prepare_with<'s, T: 's>(
        &'s self,
        request: Request,
        read: impl FnOnce(&Request, &Response) -> Result<T, CopyError> + 's,
    ) -> Call<'s, T> {
        let request = self.authorize(request);
        let again = request.clone();
        // What error messages name: the call without its body (a log-batch body is large).
        let named = Request {
            body: Vec::new(),
            ..request.clone()
        };
        let read = move |answer: Result<Response, transport::Error>| {
            let response = answer.map_err(|e| self.named(e))?;
            // A token that expired while the call waited (short-lived OAuth tokens): sent again
            // at once with a fresh one, as `send` does.
            if self.refreshed_after(&response) {
                let response = self.send(again, true)?;
                return read(&named, &response);
            }
            if !response.is_success() {
                return Err(self.error_for(&named, &response));
            }
            read(&named, &response)
        };
        Call::send(request, read)
    }

    /// Sends the requests of these calls together, at most `in_flight` at once (each retried on
    /// its own), and reads each answer as its call says; results in the calls' order.
    pub fn run_together<'s, T>(
        &self,
        calls: Vec<Call<'s, T>>,
        in_flight: usize,
    ) -> Vec<Result<T, CopyError>> {
        let mut requests = Vec::new();
        let mut results: Vec<Option<Result<T, CopyError>>> = Vec::new();
        let mut readers = Vec::new();
        for call in calls {
            match call {
                Call::Done(result) => results.push(Some(result)),
                Call::Send { request, read } => {
                    requests.push(request.0);
                    readers.push((results.len(), read.0));
                    results.push(None);
                }
            }
        }
        let answers = self.transport.send_many(&requests, in_flight, true);
        for ((at, read), answer) in readers.into_iter().zip(answers) {
            results[at] = Some(read(answer));
        }
        results
            .into_iter()
            .map(|r| r.expect("every call answered"))
            .collect()
    }

    /// A JSON answer; empty answers (`{}` or nothing) mean "no fields".
    fn parse<T: DeserializeOwned>(
        &self,
        request: &Request,
        response: &Response,
    ) -> Result<T, CopyError> {
        let body: &[u8] = if response.body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &response.body
        };
        serde_json::from_slice(body).map_err(|e| {
            CopyError::upstream(format!(
                "{}: {}: unexpected answer ({e}): {}",
                self.who(),
                call_name(request),
                response.body_snippet()
            ))
        })
    }

    /// Sends a request for one of this server's URLs with its credentials; any non-2xx answer
    /// becomes an error naming the server and the call.
    /// A create (`idempotent` false) whose answer was lost or a 500/502/504 fails with
    /// `MAYBE_CREATED`: the caller looks for the object before creating it again.
    pub fn send(&self, request: Request, idempotent: bool) -> Result<Response, CopyError> {
        let uncertain = |e: CopyError| if idempotent { e } else { e.maybe_created() };
        let authorized = self.authorize(request);
        let mut refreshed = false;
        loop {
            let response = self
                .transport
                .send(&authorized, idempotent)
                .map_err(|e| uncertain(self.named(e)))?;
            if response.is_success() {
                return Ok(response);
            }
            // An expired token is fetched again once.
            if !refreshed && self.refreshed_after(&response) {
                refreshed = true;
                continue;
            }
            let error = self.error_for(&authorized, &response);
            return Err(match response.status {
                500 | 502 | 504 => uncertain(error),
                _ => error,
            });
        }
    }

    /// A transport failure, classified, and prefixed with which server it concerns.
    fn named(&self, error: transport::Error) -> CopyError {
        let error = CopyError::from(error);
        CopyError {
            message: format!("{}: {}", self.who(), error.message),
            ..error
        }
    }

    fn who(&self) -> String {
        format!("{} server {}", self.side.label(), self.base_display())
    }

    fn error_for(&self, request: &Request, response: &Response) -> CopyError {
        let parsed: Option<Value> = serde_json::from_slice(&response.body).ok();
        let field = |name: &str| {
            parsed
                .as_ref()
                .and_then(|v| v.get(name))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        // A 404 without an MLflow error is a route the server does not have (as MLflow's own
        // client maps it).
        let code = field("error_code")
            .or_else(|| (response.status == 404).then(|| "ENDPOINT_NOT_FOUND".to_string()));
        let detail = match (&code, field("message")) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (None, Some(message)) => message,
            _ => format!("HTTP {}: {}", response.status, response.body_snippet()),
        };
        let hint = match response.status {
            401 | 403 => format!(" (credentials refused; {})", self.auth.hint()),
            404 if code.is_none() => {
                " (endpoint not found: is this an MLflow 3 tracking server?)".into()
            }
            _ => String::new(),
        };
        let kind = match (response.status, code.as_deref()) {
            (_, Some("RESOURCE_DOES_NOT_EXIST" | "NOT_FOUND")) => ErrorKind::NotFound,
            (_, Some("ENDPOINT_NOT_FOUND")) => ErrorKind::Upstream,
            (status, _) => CopyError::kind_for_status(status),
        };
        CopyError {
            kind,
            message: format!("{}: {}: {detail}{hint}", self.who(), call_name(request)),
            code,
        }
    }
}

/// A single-quoted string literal for MLflow search filters.
pub(super) fn filter_literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn json_request(method: Method, url: Url, body: &Value) -> Request {
    let mut request = Request::new(method, url).header("content-type", "application/json");
    request.body = body.to_string().into_bytes();
    request
}

/// `GET /api/2.0/mlflow/runs/get` — the call without host or query, for messages.
fn call_name(request: &Request) -> String {
    format!("{} {}", request.method.as_str(), request.url.path())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(items: &[u32], next: Option<&str>) -> Page<u32> {
        Page {
            items: items.to_vec(),
            next_page_token: next.map(str::to_string),
        }
    }

    #[test]
    fn filter_literals_escape_quotes() {
        assert_eq!(filter_literal("a'b"), r"'a\'b'");
        assert_eq!(filter_literal("http://h:1"), "'http://h:1'");
    }

    #[test]
    fn pages_are_followed_to_the_last_one() {
        let mut asked = Vec::new();
        let items = all_pages(|token| {
            asked.push(token.map(str::to_string));
            Ok(match token {
                None => page(&[1, 2], Some("a")),
                Some("a") => page(&[3], Some("b")),
                _ => page(&[4], Some("")),
            })
        })
        .unwrap();
        assert_eq!(items, vec![1, 2, 3, 4]);
        assert_eq!(asked, vec![None, Some("a".into()), Some("b".into())]);
    }

    #[test]
    fn a_repeated_token_ends_the_walk_instead_of_looping() {
        let mut calls = 0;
        let items = all_pages(|_| {
            calls += 1;
            Ok(page(&[7], Some("same")))
        })
        .unwrap();
        assert_eq!((items, calls), (vec![7, 7], 2));
    }

    #[test]
    fn a_failing_page_stops_the_walk() {
        let err = all_pages::<u32>(|token| match token {
            None => Ok(page(&[1], Some("x"))),
            Some(_) => Err(CopyError::upstream("page 2 failed")),
        })
        .unwrap_err();
        assert_eq!(err.message, "page 2 failed");
    }
}
