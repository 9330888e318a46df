//! The HTTP function's rules, kept free of WASI so they are unit-tested natively: routes,
//! caller authentication, request parsing and limits, the outbound host allow-list, and how
//! failures map to statuses. `http_handler` does the I/O.

use crate::api::{CopyError, ErrorKind};
use crate::transport::hosts::{ALLOWED_HOSTS_VAR, ALLOW_ANY_HOST_VAR};
use crate::transport::HostPolicy;
use crate::uri::ServerUri;
use serde::de::DeserializeOwned;
use serde_json::json;
use url::Url;

/// Largest request body accepted (copy requests are a few hundred bytes).
pub const MAX_BODY: usize = 64 * 1024;
/// The secret callers must present as `Authorization: Bearer <token>`.
pub const TOKEN_VAR: &str = "MLFLOW_COPY_API_TOKEN";
/// Set to `true` to accept copy requests without a token (fail-closed otherwise).
pub const ALLOW_UNAUTHENTICATED_VAR: &str = "MLFLOW_COPY_ALLOW_UNAUTHENTICATED";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Health,
    CopyRun,
    CopyModelVersion,
    CopyExperiment,
    CopyModel,
    VerifyRun,
    VerifyExperiment,
    VerifyModelVersion,
}

/// A failure answered before or instead of a copy: status, code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn body(&self) -> String {
        error_body(self.code, &self.message)
    }
}

pub fn error_body(code: &str, message: &str) -> String {
    json!({ "error": { "code": code, "message": message } }).to_string()
}

pub fn route(method: &str, path: &str) -> Result<Route, Refusal> {
    let (route, allowed) = match path.trim_end_matches('/') {
        "/healthz" => (Route::Health, "GET"),
        "/copy-run" => (Route::CopyRun, "POST"),
        "/copy-model-version" => (Route::CopyModelVersion, "POST"),
        "/copy-experiment" => (Route::CopyExperiment, "POST"),
        "/copy-model" => (Route::CopyModel, "POST"),
        "/verify-run" => (Route::VerifyRun, "POST"),
        "/verify-experiment" => (Route::VerifyExperiment, "POST"),
        "/verify-model-version" => (Route::VerifyModelVersion, "POST"),
        _ => {
            return Err(Refusal::new(
                404,
                "not_found",
                format!(
                    "no route {path:?}; routes: GET /healthz, POST /copy-run, \
                     POST /copy-model-version, POST /copy-experiment, POST /copy-model, \
                     POST /verify-run, POST /verify-experiment, POST /verify-model-version"
                ),
            ))
        }
    };
    if method != allowed {
        return Err(Refusal::new(
            405,
            "method_not_allowed",
            format!("{path} accepts {allowed} only"),
        ));
    }
    Ok(route)
}

/// Checks the caller's `Authorization` header against the configured token.
pub fn authorize(
    header: Option<&str>,
    token: Option<&str>,
    allow_unauthenticated: bool,
) -> Result<(), Refusal> {
    let Some(expected) = token.filter(|t| !t.is_empty()) else {
        if allow_unauthenticated {
            return Ok(());
        }
        return Err(Refusal::new(
            401,
            "unauthorized",
            format!("copy requests are refused: no {TOKEN_VAR} is configured (set {ALLOW_UNAUTHENTICATED_VAR}=true to opt out)"),
        ));
    };
    let presented = header.and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
    if constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(Refusal::new(
            401,
            "unauthorized",
            "missing or wrong bearer token",
        ))
    }
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was
/// right. (The length is not secret.)
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    if body.len() > MAX_BODY {
        return Err(Refusal::new(
            413,
            "payload_too_large",
            format!("request body over {MAX_BODY} bytes"),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| Refusal::new(400, "bad_input", format!("invalid request body: {e}")))
}

/// Whether the function may contact every server a request names, before anything is sent:
/// 403 when the operator listed no hosts (fail closed), or when a server is not on the list or
/// is a special-purpose address. A Databricks URI counts as its workspace's host
/// (`workspace_host` resolves its profile with the function's own config file and environment).
/// The transport applies the same policy to every request the copy then makes.
pub fn check_hosts(
    uris: &[&str],
    hosts: &HostPolicy,
    workspace_host: &dyn Fn(Option<&str>) -> Result<Url, CopyError>,
) -> Result<(), Refusal> {
    if hosts.is_closed() {
        return Err(Refusal::new(
            403,
            "forbidden",
            format!(
                "copy requests are refused: no {ALLOWED_HOSTS_VAR} is configured; list the MLflow \
                 servers and Databricks workspaces this function may reach (or set \
                 {ALLOW_ANY_HOST_VAR}=true, unsafe when the function holds credentials)"
            ),
        ));
    }
    for uri in uris {
        let parsed =
            ServerUri::parse(uri).map_err(|e| Refusal::new(400, "bad_input", e.message))?;
        let url = match &parsed {
            ServerUri::Http(base) => base.url().clone(),
            ServerUri::Databricks { profile } | ServerUri::DatabricksUc { profile } => {
                workspace_host(profile.as_deref())
                    .map_err(|e| Refusal::new(400, "bad_input", e.message))?
            }
        };
        if let Err(why) = hosts.check_named(&url) {
            return Err(Refusal::new(
                403,
                "forbidden",
                format!("{}: {why}", parsed.display()),
            ));
        }
    }
    Ok(())
}

/// The HTTP status for a failed copy. A server refusing the function's own credentials is an
/// upstream problem (502), not the caller's (401 is for the caller's token).
pub fn status_for(error: &CopyError) -> u16 {
    match error.kind {
        ErrorKind::BadInput => 400,
        ErrorKind::NotFound => 404,
        ErrorKind::Conflict => 409,
        ErrorKind::Unauthorized | ErrorKind::Upstream => 502,
    }
}

/// Whether the caller asked for progress as NDJSON.
pub fn wants_ndjson(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',')
            .any(|t| t.trim().starts_with("application/x-ndjson"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CopyRunRequest;

    #[test]
    fn routes_and_methods() {
        assert_eq!(route("GET", "/healthz"), Ok(Route::Health));
        assert_eq!(route("POST", "/copy-run"), Ok(Route::CopyRun));
        assert_eq!(
            route("POST", "/copy-model-version/"),
            Ok(Route::CopyModelVersion)
        );
        assert_eq!(route("GET", "/copy-run").unwrap_err().status, 405);
        assert_eq!(route("POST", "/healthz").unwrap_err().status, 405);
        assert_eq!(route("GET", "/nope").unwrap_err().status, 404);
    }

    #[test]
    fn authentication_fails_closed() {
        assert_eq!(
            authorize(Some("Bearer s3cret"), Some("s3cret"), false),
            Ok(())
        );
        assert_eq!(
            authorize(Some("Bearer wrong!"), Some("s3cret"), false)
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(
            authorize(Some("s3cret"), Some("s3cret"), false)
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(
            authorize(None, Some("s3cret"), true).unwrap_err().status,
            401,
            "a token, once set, is required"
        );
        let unset = authorize(Some("Bearer x"), None, false).unwrap_err();
        assert!(unset.status == 401 && unset.message.contains(TOKEN_VAR));
        assert_eq!(authorize(None, Some(""), true), Ok(()));
        assert!(!authorize(Some("Bearer wrong!"), Some("s3cret"), false)
            .unwrap_err()
            .body()
            .contains("s3cret"));
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn bodies_are_limited_and_strict() {
        let ok: CopyRunRequest = parse_body(
            br#"{"run_id":"r","experiment_name":"e","src_mlflow_uri":"s","dst_mlflow_uri":"d"}"#,
        )
        .unwrap();
        assert_eq!(ok.run_id, "r");
        let unknown = parse_body::<CopyRunRequest>(br#"{"run_id":"r","bogus":1}"#).unwrap_err();
        assert_eq!((unknown.status, unknown.code), (400, "bad_input"));
        assert!(unknown.message.contains("bogus"));
        assert_eq!(parse_body::<CopyRunRequest>(b"{").unwrap_err().status, 400);
        assert_eq!(
            parse_body::<CopyRunRequest>(&vec![b' '; MAX_BODY + 1])
                .unwrap_err()
                .status,
            413
        );
    }

    fn remote(list: Option<&'static str>, any: bool) -> HostPolicy {
        HostPolicy::from_env(
            &move |k: &str| match k {
                ALLOWED_HOSTS_VAR => list.map(str::to_string),
                ALLOW_ANY_HOST_VAR if any => Some("true".to_string()),
                _ => None,
            },
            crate::transport::Caller::Remote,
        )
    }

    fn workspace(profile: Option<&str>) -> Result<Url, CopyError> {
        match profile {
            Some("prod") => Ok(Url::parse("https://dbc-prod.cloud.databricks.com").unwrap()),
            _ => Err(CopyError::bad_input("Databricks profile not found")),
        }
    }

    #[test]
    fn host_allow_list() {
        let uris = ["http://127.0.0.1:5000", "https://mlflow.example.com"];
        let check = |list, any| check_hosts(&uris, &remote(list, any), &workspace);
        assert!(check(Some("127.0.0.1:5000, mlflow.example.com"), false).is_ok());
        assert!(check(Some("127.0.0.1, mlflow.example.com:443"), false).is_ok());
        let refused = check(Some("127.0.0.1:5001,mlflow.example.com"), false).unwrap_err();
        assert_eq!(refused.status, 403);
        assert!(refused.message.contains("127.0.0.1:5000"));
    }

    #[test]
    fn no_allow_list_refuses_every_copy_unless_the_operator_opts_out() {
        let uris = ["http://127.0.0.1:5000", "http://127.0.0.1:5001"];
        let closed = check_hosts(&uris, &remote(None, false), &workspace).unwrap_err();
        assert_eq!((closed.status, closed.code), (403, "forbidden"));
        assert!(closed.message.contains(ALLOWED_HOSTS_VAR));
        assert!(check_hosts(&uris, &remote(None, true), &workspace).is_ok());
        let metadata = ["http://169.254.169.254", "http://127.0.0.1:5001"];
        let refused = check_hosts(&metadata, &remote(None, true), &workspace).unwrap_err();
        assert!(refused.status == 403 && refused.message.contains("special-purpose"));
    }

    #[test]
    fn a_databricks_uri_counts_as_its_workspace_host() {
        let list = Some("dbc-prod.cloud.databricks.com,127.0.0.1");
        let ok = ["databricks://prod", "http://127.0.0.1:5000"];
        assert!(check_hosts(&ok, &remote(list, false), &workspace).is_ok());
        let elsewhere = remote(Some("127.0.0.1"), false);
        let refused = check_hosts(&ok, &elsewhere, &workspace).unwrap_err();
        assert!(refused.status == 403 && refused.message.contains("dbc-prod"));
        let unknown = check_hosts(&["databricks-uc://nope"], &remote(list, false), &workspace);
        assert_eq!(unknown.unwrap_err().status, 400);
    }

    #[test]
    fn statuses_and_ndjson() {
        assert_eq!(status_for(&CopyError::not_found("x")), 404);
        assert_eq!(status_for(&CopyError::conflict("x")), 409);
        assert_eq!(
            status_for(&CopyError::new(ErrorKind::Unauthorized, "x")),
            502
        );
        assert!(wants_ndjson(Some("application/json, application/x-ndjson")));
        assert!(!wants_ndjson(Some("application/json")) && !wants_ndjson(None));
        assert_eq!(
            error_body("bad_input", "x"),
            r#"{"error":{"code":"bad_input","message":"x"}}"#
        );
    }
}
