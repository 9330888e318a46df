//! Which workspace a `databricks[://PROFILE]` URI names, and with which credentials, resolved
//! as the Databricks SDK and CLI do it ("unified auth"):
//!
//! 1. environment variables (`DATABRICKS_HOST`, `DATABRICKS_TOKEN`, `DATABRICKS_CLIENT_ID`,
//!    `DATABRICKS_CLIENT_SECRET`, `DATABRICKS_AUTH_TYPE`) come first;
//! 2. then the profile's section of the config file (`DATABRICKS_CONFIG_FILE`, default
//!    `~/.databrickscfg`) fills in what they left unset. The file is read when a profile is
//!    named (by the URI, or `DATABRICKS_CONFIG_PROFILE`) or when the environment gave no host or
//!    no credential. The profile is the URI's, else `DATABRICKS_CONFIG_PROFILE`, else the
//!    file's `[__settings__] default_profile`, else `DEFAULT`; a named profile that is missing
//!    is an error. Sections do not inherit `[DEFAULT]` keys (as in the SDK).
//!
//! Hosts get `https://` when they have no scheme; one given as `http://` is used as given (for
//! proxies and emulators).

use crate::api::CopyError;
use std::collections::HashMap;
use std::fmt;
use url::Url;

/// How requests to a workspace are authenticated. `Debug` never shows a secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A personal access token.
    Token(String),
    /// OAuth machine-to-machine: a service principal's client id and secret.
    OAuth {
        client_id: String,
        client_secret: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token(***)"),
            Credentials::OAuth { client_id, .. } => write!(f, "OAuth({client_id}, ***)"),
        }
    }
}

impl Credentials {
    pub fn secrets(&self) -> Vec<String> {
        match self {
            Credentials::Token(token) => vec![token.clone()],
            Credentials::OAuth { client_secret, .. } => vec![client_secret.clone()],
        }
    }
}

/// A resolved workspace: where it is and how to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub host: Url,
    pub credentials: Credentials,
    /// Where the settings came from, for messages (`environment`, `profile dev in /cfg/x`).
    pub source: String,
}

/// The config attributes unified auth reads, by file key.
const KEYS: [(&str, &str); 5] = [
    ("host", "DATABRICKS_HOST"),
    ("token", "DATABRICKS_TOKEN"),
    ("client_id", "DATABRICKS_CLIENT_ID"),
    ("client_secret", "DATABRICKS_CLIENT_SECRET"),
    ("auth_type", "DATABRICKS_AUTH_TYPE"),
];

/// Resolves the workspace for `profile` (from the URI). `env` reads variables; `read_file`
/// reads the config file (`None` when it does not exist).
pub fn resolve(
    profile: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&str) -> Option<String>,
) -> Result<Workspace, CopyError> {
    let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let mut attrs: HashMap<&str, String> = KEYS
        .iter()
        .filter_map(|(key, name)| Some((*key, var(name)?)))
        .collect();
    let mut source = "environment".to_string();
    let named = profile
        .map(str::to_string)
        .or_else(|| var("DATABRICKS_CONFIG_PROFILE"));
    let env_complete = attrs.contains_key("host")
        && (attrs.contains_key("token") || attrs.contains_key("client_id"));
    if named.is_some() || !env_complete {
        let path = config_path(env);
        match read_file(&path) {
            Some(text) => {
                let file = parse_ini(&text);
                let chosen = named.clone().unwrap_or_else(|| {
                    file.get("__settings__")
                        .and_then(|s| s.get("default_profile"))
                        .cloned()
                        .unwrap_or_else(|| "DEFAULT".to_string())
                });
                match file.get(chosen.as_str()) {
                    Some(section) => {
                        for (key, _) in KEYS {
                            if let Some(value) = section.get(key).filter(|v| !v.is_empty()) {
                                attrs.entry(key).or_insert_with(|| value.clone());
                            }
                        }
                        source = format!("profile {chosen:?} in {path}");
                    }
                    None if named.is_some() => {
                        return Err(CopyError::bad_input(format!(
                            "Databricks profile {chosen:?} not found in {path}"
                        )))
                    }
                    None => {}
                }
            }
            None if named.is_some() => {
                return Err(CopyError::bad_input(format!(
                    "Databricks profile {:?} named, but the config file {path} cannot be read \
                     (with wasmtime, give the guest the file: --dir HOSTDIR::/cfg --env \
                     DATABRICKS_CONFIG_FILE=/cfg/.databrickscfg)",
                    named.unwrap_or_default()
                )))
            }
            None => {}
        }
    }
    let missing = |what: &str| {
        CopyError::bad_input(format!(
            "Databricks {what} not set (from {source}); set DATABRICKS_HOST with DATABRICKS_TOKEN \
             or DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET, or name a profile of \
             ~/.databrickscfg (databricks://PROFILE)"
        ))
    };
    let host = normalize_host(attrs.get("host").ok_or_else(|| missing("host"))?)?;
    let auth_type = attrs.get("auth_type").map(String::as_str);
    let token = attrs.get("token");
    let client = attrs.get("client_id").zip(attrs.get("client_secret"));
    let credentials = match (auth_type, token, client) {
        (Some("pat"), Some(t), _) | (None, Some(t), None) => Credentials::Token(t.clone()),
        (Some("oauth-m2m"), _, Some((id, secret))) | (None, None, Some((id, secret))) => {
            Credentials::OAuth {
                client_id: id.clone(),
                client_secret: secret.clone(),
            }
        }
        (None, Some(_), Some(_)) => {
            return Err(CopyError::bad_input(format!(
                "more than one Databricks authorization method configured (token and client \
                 id/secret, from {source}); set DATABRICKS_AUTH_TYPE (or auth_type) to pat or \
                 oauth-m2m"
            )))
        }
        (Some(other), _, _) if other != "pat" && other != "oauth-m2m" => {
            return Err(CopyError::bad_input(format!(
                "Databricks auth_type {other:?} (from {source}) is not supported here; use pat \
                 or oauth-m2m"
            )))
        }
        _ if attrs.contains_key("client_id") => return Err(missing("client secret")),
        _ => return Err(missing("token or client id/secret")),
    };
    Ok(Workspace {
        host,
        credentials,
        source,
    })
}

fn config_path(env: &dyn Fn(&str) -> Option<String>) -> String {
    env("DATABRICKS_CONFIG_FILE")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| {
            let home = env("HOME").unwrap_or_default();
            format!("{}/.databrickscfg", home.trim_end_matches('/'))
        })
}

/// `https://` when no scheme is given; no trailing slash; no `:443`.
pub fn normalize_host(raw: &str) -> Result<Url, CopyError> {
    let raw = raw.trim().trim_end_matches('/');
    let with_scheme = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("https://{raw}")
    };
    let url = Url::parse(&with_scheme)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .filter(|u| u.username().is_empty() && u.password().is_none())
        .ok_or_else(|| {
            CopyError::bad_input(format!(
                "Databricks host {:?} is not a workspace URL like https://dbc-123.cloud.databricks.com",
                crate::uri::redact(raw)
            ))
        })?;
    Ok(url)
}

/// INI as the SDK reads it: `[section]`, `key = value`, `;`/`#` comments, keys lower-cased,
/// values not unquoted.
fn parse_ini(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut sections: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim().to_string();
            sections.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let Some((key, value)) = line.split_once('=').or_else(|| line.split_once(':')) else {
            continue;
        };
        if let Some(section) = current.as_ref() {
            let entries = sections.entry(section.clone()).or_default();
            entries.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    sections
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
; comment
[DEFAULT]
host = https://default.example
token = dapi-default

[dev]
host  = dev.example/
token = dapi-dev
[sp]
host          = http://127.0.0.1:9000
client_id     = app-1
client_secret = s3cret
[both]
host = h.example
token = t
client_id = c
client_secret = s
";

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    fn file(path: &str) -> Option<String> {
        (path == "/home/u/.databrickscfg" || path == "/cfg/x").then(|| FILE.to_string())
    }

    #[test]
    fn a_named_profile_comes_from_the_file() {
        let home = env(&[("HOME", "/home/u")]);
        let ws = resolve(Some("dev"), &home, &file).unwrap();
        assert_eq!(ws.host.as_str(), "https://dev.example/");
        assert_eq!(ws.credentials, Credentials::Token("dapi-dev".into()));
        assert!(ws.source.contains("profile \"dev\""), "{}", ws.source);
        let sp = resolve(Some("sp"), &home, &file).unwrap();
        assert_eq!(
            sp.host.as_str(),
            "http://127.0.0.1:9000/",
            "http is kept as given"
        );
        assert_eq!(
            sp.credentials,
            Credentials::OAuth {
                client_id: "app-1".into(),
                client_secret: "s3cret".into()
            }
        );
        let default = resolve(None, &home, &file).unwrap();
        assert_eq!(
            default.credentials,
            Credentials::Token("dapi-default".into())
        );
    }

    #[test]
    fn environment_variables_win_and_the_file_path_can_be_set() {
        let e = env(&[
            ("DATABRICKS_CONFIG_FILE", "/cfg/x"),
            ("DATABRICKS_TOKEN", "from-env"),
        ]);
        let ws = resolve(Some("dev"), &e, &file).unwrap();
        assert_eq!(ws.host.as_str(), "https://dev.example/");
        assert_eq!(ws.credentials, Credentials::Token("from-env".into()));
        let only_env = env(&[("DATABRICKS_HOST", "e.example"), ("DATABRICKS_TOKEN", "t")]);
        let ws = resolve(None, &only_env, &|_: &str| panic!("file not read")).unwrap();
        assert_eq!(ws.source, "environment");
    }

    #[test]
    fn errors_name_the_file_and_profile_and_never_a_secret() {
        let home = env(&[("HOME", "/home/u")]);
        let err = resolve(Some("prod"), &home, &file).unwrap_err();
        assert!(
            err.message
                .contains("profile \"prod\" not found in /home/u/.databrickscfg"),
            "{}",
            err.message
        );
        let err = resolve(Some("dev"), &home, &|_: &str| None).unwrap_err();
        assert!(err.message.contains("cannot be read"), "{}", err.message);
        let err = resolve(Some("both"), &home, &file).unwrap_err();
        assert!(err.message.contains("more than one"), "{}", err.message);
        assert!(!err.message.contains("dapi") && !err.message.contains("s3cret"));
        let pinned = env(&[("HOME", "/home/u"), ("DATABRICKS_AUTH_TYPE", "oauth-m2m")]);
        assert!(matches!(
            resolve(Some("both"), &pinned, &file).unwrap().credentials,
            Credentials::OAuth { .. }
        ));
        let err = resolve(None, &env(&[]), &|_: &str| None).unwrap_err();
        assert!(err.message.contains("host not set"), "{}", err.message);
        assert!(!format!("{:?}", Credentials::Token("dapi-x".into())).contains("dapi-x"));
    }

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(
            normalize_host("dbc-1.cloud.databricks.com/")
                .unwrap()
                .as_str(),
            "https://dbc-1.cloud.databricks.com/"
        );
        assert_eq!(
            normalize_host("https://h.example:443").unwrap().as_str(),
            "https://h.example/"
        );
        assert!(normalize_host("ftp://h").is_err());
        assert!(!normalize_host("https://u:pw@h")
            .unwrap_err()
            .message
            .contains("pw"));
    }
}
