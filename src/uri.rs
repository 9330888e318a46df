//! Tracking and registry URIs as users write them for mlflow-export-import, parsed into the
//! server a store client talks to.

use crate::api::CopyError;
use url::Url;

/// Where a tracking server or registry lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerUri {
    /// An MLflow server reached over HTTP(S), e.g. `http://127.0.0.1:5000` or
    /// `https://mlflow.example.com/prefix` (a `--static-prefix` is kept as part of the base).
    Http(HttpBase),
    /// A Databricks workspace: `databricks` or `databricks://<profile>`.
    Databricks { profile: Option<String> },
    /// A Databricks Unity Catalog registry: `databricks-uc` or `databricks-uc://<profile>`.
    DatabricksUc { profile: Option<String> },
}

/// The base URL of an HTTP MLflow server, without credentials, query or trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpBase(Url);

impl HttpBase {
    /// `<base>/<path>`, where `path` starts with `/` (e.g. `/api/2.0/mlflow/runs/get`).
    pub fn join(&self, path: &str) -> Url {
        let mut url = self.0.clone();
        let joined = format!("{}{}", self.0.path().trim_end_matches('/'), path);
        url.set_path(&joined);
        url
    }

    pub fn url(&self) -> &Url {
        &self.0
    }
}

impl std::fmt::Display for HttpBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.as_str().trim_end_matches('/'))
    }
}

impl ServerUri {
    pub fn parse(raw: &str) -> Result<ServerUri, CopyError> {
        let raw = raw.trim();
        if raw == "databricks" {
            return Ok(ServerUri::Databricks { profile: None });
        }
        if raw == "databricks-uc" {
            return Ok(ServerUri::DatabricksUc { profile: None });
        }
        if let Some(profile) = raw.strip_prefix("databricks://") {
            return Ok(ServerUri::Databricks {
                profile: Some(non_empty_profile(raw, profile)?),
            });
        }
        if let Some(profile) = raw.strip_prefix("databricks-uc://") {
            return Ok(ServerUri::DatabricksUc {
                profile: Some(non_empty_profile(raw, profile)?),
            });
        }
        let url = Url::parse(raw).map_err(|e| {
            CopyError::bad_input(format!(
                "{:?} is not a valid MLflow server URI ({e}); expected http(s)://host:port, \
                 databricks[://profile] or databricks-uc[://profile]",
                redact(raw)
            ))
        })?;
        match url.scheme() {
            "http" | "https" => {}
            other => {
                return Err(CopyError::bad_input(format!(
                    "unsupported URI scheme {other:?} in {:?}: mlflow-copy talks to tracking \
                     servers over HTTP; use http(s)://host:port, databricks[://profile] or \
                     databricks-uc[://profile]",
                    redact(raw)
                )))
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(CopyError::bad_input(format!(
                "URI {:?} has no host",
                redact(raw)
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(CopyError::bad_input(format!(
                "URI {:?} carries credentials; pass them in the environment instead \
                 (MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN, see --help)",
                redact(raw)
            )));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(CopyError::bad_input(format!(
                "URI {:?} must not have a query or fragment",
                redact(raw)
            )));
        }
        Ok(ServerUri::Http(HttpBase(url)))
    }

    /// The URI as it may appear in output, tags and errors: never with credentials.
    pub fn display(&self) -> String {
        match self {
            ServerUri::Http(base) => base.to_string(),
            ServerUri::Databricks { profile: None } => "databricks".into(),
            ServerUri::Databricks { profile: Some(p) } => format!("databricks://{p}"),
            ServerUri::DatabricksUc { profile: None } => "databricks-uc".into(),
            ServerUri::DatabricksUc { profile: Some(p) } => format!("databricks-uc://{p}"),
        }
    }
}

fn non_empty_profile(raw: &str, profile: &str) -> Result<String, CopyError> {
    // `databricks://scope:prefix` names Databricks secrets, readable only inside a notebook.
    if profile.is_empty() || profile.contains(['/', '@']) {
        return Err(CopyError::bad_input(format!(
            "{:?}: expected databricks://<profile> with a profile name",
            redact(raw)
        )));
    }
    Ok(profile.to_string())
}

/// Removes any `user:password@` from a URI-like string so that it can be shown.
pub fn redact(raw: &str) -> String {
    let Some(scheme_end) = raw.find("://") else {
        return raw.to_string();
    };
    let rest = &raw[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}://***@{}", &raw[..scheme_end], &rest[at + 1..]),
        None => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_uris_keep_path_prefix_and_drop_trailing_slash() {
        let ServerUri::Http(base) = ServerUri::parse("http://127.0.0.1:5000/").unwrap() else {
            panic!()
        };
        assert_eq!(base.to_string(), "http://127.0.0.1:5000");
        assert_eq!(
            base.join("/api/2.0/mlflow/runs/get").as_str(),
            "http://127.0.0.1:5000/api/2.0/mlflow/runs/get"
        );
        let ServerUri::Http(base) = ServerUri::parse("https://h.example/mlflow/").unwrap() else {
            panic!()
        };
        assert_eq!(
            base.join("/api/x").as_str(),
            "https://h.example/mlflow/api/x"
        );
    }

    #[test]
    fn databricks_forms() {
        assert_eq!(
            ServerUri::parse("databricks").unwrap(),
            ServerUri::Databricks { profile: None }
        );
        assert_eq!(
            ServerUri::parse("databricks-uc://prod").unwrap(),
            ServerUri::DatabricksUc {
                profile: Some("prod".into())
            }
        );
        assert_eq!(
            ServerUri::parse("databricks://prod").unwrap().display(),
            "databricks://prod"
        );
        assert!(ServerUri::parse("databricks://").is_err());
    }

    #[test]
    fn unsupported_and_malformed_uris_are_bad_input() {
        for raw in [
            "sqlite:///mlflow.db",
            "file:///tmp/mlruns",
            "ftp://h/x",
            "not a uri",
            "http://",
        ] {
            let err = ServerUri::parse(raw).unwrap_err();
            assert_eq!(err.kind, crate::api::ErrorKind::BadInput, "{raw}");
        }
        assert!(ServerUri::parse("sqlite:///x")
            .unwrap_err()
            .message
            .contains("\"sqlite\""));
    }

    #[test]
    fn credentials_in_uri_are_refused_without_echoing_them() {
        let err = ServerUri::parse("http://alice:s3cret@127.0.0.1:5000").unwrap_err();
        assert!(!err.message.contains("s3cret"), "{}", err.message);
        assert!(
            err.message.contains("***@127.0.0.1:5000"),
            "{}",
            err.message
        );
        let err = ServerUri::parse("gopher://bob:hunter2@h/x").unwrap_err();
        assert!(!err.message.contains("hunter2"));
    }

    #[test]
    fn redact_only_touches_userinfo() {
        assert_eq!(redact("http://u:p@h:1/a@b"), "http://***@h:1/a@b");
        assert_eq!(redact("http://h:1/a@b"), "http://h:1/a@b");
        assert_eq!(redact("databricks"), "databricks");
    }
}
