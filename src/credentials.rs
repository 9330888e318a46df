//! Credentials for each side of a copy, read from the environment only (never from flags or
//! request bodies, so they stay out of shell history, process lists and logs).
//!
//! The MLflow conventions apply to both sides; `MLFLOW_SRC_…` / `MLFLOW_DST_…` override them for
//! one side, so that two servers can have different credentials:
//!
//! | side-specific               | shared fallback            | sends                       |
//! |-----------------------------|----------------------------|-----------------------------|
//! | `MLFLOW_{SRC,DST}_TRACKING_TOKEN`    | `MLFLOW_TRACKING_TOKEN`    | `Authorization: Bearer …` |
//! | `MLFLOW_{SRC,DST}_TRACKING_USERNAME` | `MLFLOW_TRACKING_USERNAME` | `Authorization: Basic …`  |
//! | `MLFLOW_{SRC,DST}_TRACKING_PASSWORD` | `MLFLOW_TRACKING_PASSWORD` |                           |
//!
//! A side-specific setting of either kind replaces the shared ones entirely for that side.

use base64::Engine;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Src,
    Dst,
}

impl Side {
    pub fn label(self) -> &'static str {
        match self {
            Side::Src => "source",
            Side::Dst => "destination",
        }
    }
    pub fn env_infix(self) -> &'static str {
        match self {
            Side::Src => "SRC_",
            Side::Dst => "DST_",
        }
    }
}

/// Gives the `Authorization` header of one server's requests.
pub trait Authorizer {
    /// The header value, if the server takes one (fetched first, for a token that expires).
    fn header(&self) -> Result<Option<String>, crate::api::CopyError>;
    /// After the server refused the credentials (401, or 403 for an expired OAuth token):
    /// drops a cached token; whether a retry may help.
    fn refresh(&self) -> bool {
        false
    }
    /// What to set to give this side credentials, for the error a refusal becomes.
    fn hint(&self) -> String;
}

/// Fixed credentials of an MLflow server, for one side.
pub struct StaticAuth {
    pub auth: Auth,
    pub side: Side,
}

impl Authorizer for StaticAuth {
    fn header(&self) -> Result<Option<String>, crate::api::CopyError> {
        Ok(self.auth.header_value())
    }

    fn hint(&self) -> String {
        hint(self.side)
    }
}

/// What to set to give one side credentials, for error messages.
pub fn hint(side: Side) -> String {
    let infix = side.env_infix();
    format!("set MLFLOW_{infix}TRACKING_USERNAME/PASSWORD or MLFLOW_{infix}TRACKING_TOKEN")
}

/// How requests to one server are authenticated. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Auth {
    #[default]
    None,
    Bearer(String),
    Basic {
        username: String,
        password: String,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("Auth::None"),
            Auth::Bearer(_) => f.write_str("Auth::Bearer(***)"),
            Auth::Basic { username, .. } => write!(f, "Auth::Basic({username}:***)"),
        }
    }
}

impl Auth {
    /// The `Authorization` header value, if any.
    pub fn header_value(&self) -> Option<String> {
        match self {
            Auth::None => None,
            Auth::Bearer(token) => Some(format!("Bearer {token}")),
            Auth::Basic { username, password } => {
                let raw = format!("{username}:{password}");
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                ))
            }
        }
    }

    /// The secrets this auth carries, in every form they travel in (a Basic header's base64
    /// too), so that output can be scrubbed of them defensively.
    pub fn secrets(&self) -> Vec<String> {
        match self {
            Auth::None => vec![],
            Auth::Bearer(token) => vec![token.clone()],
            Auth::Basic { password, .. } => {
                let header = self.header_value().unwrap_or_default();
                let encoded = header.trim_start_matches("Basic ").to_string();
                vec![password.clone(), encoded]
            }
        }
    }

    /// Resolves one side's credentials from environment lookups (`env` is `std::env::var` in the
    /// component; a map in tests).
    pub fn from_env(side: Side, env: impl Fn(&str) -> Option<String>) -> Auth {
        let var = |prefix: &str, name: &str| {
            env(&format!("MLFLOW_{prefix}TRACKING_{name}")).filter(|v| !v.is_empty())
        };
        let specific = side.env_infix();
        let has_specific = ["TOKEN", "USERNAME", "PASSWORD"]
            .iter()
            .any(|n| var(specific, n).is_some());
        let prefix = if has_specific { specific } else { "" };
        if let Some(username) = var(prefix, "USERNAME") {
            let password = var(prefix, "PASSWORD").unwrap_or_default();
            return Auth::Basic { username, password };
        }
        match var(prefix, "TOKEN") {
            Some(token) => Auth::Bearer(token),
            None => Auth::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn shared_token_applies_to_both_sides() {
        let e = env(&[("MLFLOW_TRACKING_TOKEN", "t0")]);
        assert_eq!(Auth::from_env(Side::Src, &e), Auth::Bearer("t0".into()));
        assert_eq!(Auth::from_env(Side::Dst, &e), Auth::Bearer("t0".into()));
    }

    #[test]
    fn side_specific_settings_replace_shared_ones() {
        let e = env(&[
            ("MLFLOW_TRACKING_TOKEN", "shared"),
            ("MLFLOW_DST_TRACKING_USERNAME", "admin"),
            ("MLFLOW_DST_TRACKING_PASSWORD", "pw"),
        ]);
        assert_eq!(Auth::from_env(Side::Src, &e), Auth::Bearer("shared".into()));
        assert_eq!(
            Auth::from_env(Side::Dst, &e),
            Auth::Basic {
                username: "admin".into(),
                password: "pw".into()
            }
        );
    }

    #[test]
    fn basic_header_is_base64_and_debug_hides_secrets() {
        let auth = Auth::Basic {
            username: "admin".into(),
            password: "password1234".into(),
        };
        assert_eq!(
            auth.header_value().unwrap(),
            "Basic YWRtaW46cGFzc3dvcmQxMjM0"
        );
        assert!(!format!("{auth:?}").contains("password1234"));
        assert!(!format!("{:?}", Auth::Bearer("tok".into())).contains("tok"));
        assert_eq!(Auth::from_env(Side::Src, env(&[])), Auth::None);
        assert_eq!(Auth::None.header_value(), None);
    }
}
