//! Which workspace a `databricks[://PROFILE]` URI names, and with which credentials, resolved
//! as the Databricks SDK's `Config` does it ("unified auth"), with one rule on top: a workspace's
//! host and its credentials always come from the same place, so that no credential is ever sent
//! to another workspace's host.
//!
//! 1. A profile the URI names is read from the config file (`DATABRICKS_CONFIG_FILE`, default
//!    `~/.databrickscfg`), host and credentials together; the environment's host and
//!    credentials are not mixed in. (The SDK would let `DATABRICKS_TOKEN` win over the
//!    profile's token and send it to the profile's host.)
//! 2. Otherwise, when the environment names a host or any credential, the environment alone is
//!    used and the config file is not read at all (the SDK's `_known_file_config_loader` skips
//!    the file then): `DATABRICKS_HOST=B` without a token is an error, never B with the
//!    `DEFAULT` profile's token.
//! 3. Otherwise the profile `DATABRICKS_CONFIG_PROFILE` names, else the file's
//!    `[__settings__] default_profile`, else `DEFAULT` if the file has it. A profile named by
//!    either of the first two that is missing is an error, as in the SDK. Sections do not
//!    inherit `[DEFAULT]` keys (as in the SDK).
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

/// Variables of the SDK's credential attributes (`ConfigAttribute(auth=…)` in the SDK's
/// `config.py`), ours and the kinds we do not support: any of them set means "the environment
/// configures the workspace" (rule 2).
const CREDENTIAL_VARS: [&str; 12] = [
    "DATABRICKS_TOKEN",
    "DATABRICKS_CLIENT_ID",
    "DATABRICKS_CLIENT_SECRET",
    "DATABRICKS_USERNAME",
    "DATABRICKS_PASSWORD",
    "DATABRICKS_AZURE_RESOURCE_ID",
    "ARM_CLIENT_ID",
    "ARM_CLIENT_SECRET",
    "ARM_TENANT_ID",
    "ARM_USE_MSI",
    "GOOGLE_CREDENTIALS",
    "DATABRICKS_GOOGLE_SERVICE_ACCOUNT",
];

/// The section of the config file that holds settings, not a profile.
const SETTINGS_SECTION: &str = "__settings__";

/// Resolves the workspace for `profile` (from the URI). `env` reads variables; `read_file`
/// reads the config file (`None` when it does not exist).
pub fn resolve(
    profile: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&str) -> Option<String>,
) -> Result<Workspace, CopyError> {
    let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let auth_type = var("DATABRICKS_AUTH_TYPE");
    if let Some(named) = profile {
        return ConfigFile::read(env, read_file).profile(named, true, auth_type);
    }
    let env_configures =
        var("DATABRICKS_HOST").is_some() || CREDENTIAL_VARS.iter().any(|n| var(n).is_some());
    if env_configures {
        let attrs = KEYS
            .iter()
            .filter_map(|(key, name)| Some((*key, var(name)?)))
            .collect();
        return from_attrs(attrs, "environment".to_string());
    }
    let file = ConfigFile::read(env, read_file);
    match var("DATABRICKS_CONFIG_PROFILE").or_else(|| file.default_profile()) {
        Some(named) => file.profile(&named, true, auth_type),
        None => file.profile("DEFAULT", false, auth_type),
    }
}

/// The config file, read once: its path (for messages) and its sections, if it exists.
struct ConfigFile {
    path: String,
    sections: Option<HashMap<String, HashMap<String, String>>>,
}

impl ConfigFile {
    fn read(
        env: &dyn Fn(&str) -> Option<String>,
        read_file: &dyn Fn(&str) -> Option<String>,
    ) -> ConfigFile {
        let path = config_path(env);
        let sections = read_file(&path).map(|text| parse_ini(&text));
        ConfigFile { path, sections }
    }

    /// `[__settings__] default_profile`, if set.
    fn default_profile(&self) -> Option<String> {
        let settings = self.sections.as_ref()?.get(SETTINGS_SECTION)?;
        let named = settings.get("default_profile")?.trim();
        (!named.is_empty()).then(|| named.to_string())
    }

    /// One profile, host and credentials together. A missing profile is an error when it was
    /// asked for (`explicit`); a missing `DEFAULT` is "nothing configured".
    fn profile(
        &self,
        named: &str,
        explicit: bool,
        auth_type: Option<String>,
    ) -> Result<Workspace, CopyError> {
        let path = &self.path;
        let source = format!("profile {named:?} in {path}");
        if named == SETTINGS_SECTION {
            return Err(CopyError::bad_input(format!(
                "{SETTINGS_SECTION} in {path} holds settings and cannot be used as a profile"
            )));
        }
        let Some(sections) = &self.sections else {
            if !explicit {
                return from_attrs(HashMap::new(), "environment".to_string());
            }
            return Err(CopyError::bad_input(format!(
                "Databricks profile {named:?} named, but the config file {path} cannot be read \
                 (with wasmtime, give the guest the file: --dir HOSTDIR::/cfg --env \
                 DATABRICKS_CONFIG_FILE=/cfg/.databrickscfg)"
            )));
        };
        let Some(section) = sections.get(named) else {
            if !explicit {
                return from_attrs(HashMap::new(), "environment".to_string());
            }
            return Err(CopyError::bad_input(format!(
                "Databricks profile {named:?} not found in {path}"
            )));
        };
        let mut attrs: HashMap<&str, String> = KEYS
            .iter()
            .filter_map(|(key, _)| {
                Some((*key, section.get(*key).filter(|v| !v.is_empty())?.clone()))
            })
            .collect();
        // The method to use is not a credential: the environment may choose it for a profile
        // that does not say.
        if let Some(auth_type) = auth_type {
            attrs.entry("auth_type").or_insert(auth_type);
        }
        from_attrs(attrs, source)
    }
}

/// The workspace the attributes describe (`source` says where they came from, for messages).
fn from_attrs(attrs: HashMap<&str, String>, source: String) -> Result<Workspace, CopyError> {
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
    fn a_profile_brings_its_own_host_and_credentials_whatever_the_environment_says() {
        let e = env(&[
            ("DATABRICKS_CONFIG_FILE", "/cfg/x"),
            ("DATABRICKS_HOST", "b.example"),
            ("DATABRICKS_TOKEN", "from-env"),
        ]);
        let ws = resolve(Some("dev"), &e, &file).unwrap();
        assert_eq!(ws.host.as_str(), "https://dev.example/");
        assert_eq!(ws.credentials, Credentials::Token("dapi-dev".into()));
    }

    #[test]
    fn an_environment_that_names_a_host_or_credential_is_used_alone() {
        let no_file = |_: &str| -> Option<String> { panic!("the config file is not read") };
        let only_env = env(&[("DATABRICKS_HOST", "e.example"), ("DATABRICKS_TOKEN", "t")]);
        let ws = resolve(None, &only_env, &no_file).unwrap();
        assert_eq!(ws.source, "environment");
        // The case that leaked: workspace B's host, and the DEFAULT profile (workspace A) has
        // a token. B gets an error, never A's token.
        let host_only = env(&[("HOME", "/home/u"), ("DATABRICKS_HOST", "b.example")]);
        let err = resolve(None, &host_only, &no_file).unwrap_err();
        assert!(err
            .message
            .contains("token or client id/secret not set (from environment)"));
        let token_only = env(&[("HOME", "/home/u"), ("DATABRICKS_TOKEN", "t")]);
        assert!(resolve(None, &token_only, &no_file)
            .unwrap_err()
            .message
            .contains("host not set"));
        let other_kind = env(&[("HOME", "/home/u"), ("ARM_CLIENT_SECRET", "x")]);
        assert!(
            resolve(None, &other_kind, &no_file).is_err(),
            "any credential counts"
        );
        let profile_too = env(&[
            ("DATABRICKS_CONFIG_PROFILE", "dev"),
            ("DATABRICKS_HOST", "e.example"),
            ("DATABRICKS_TOKEN", "t"),
        ]);
        assert_eq!(
            resolve(None, &profile_too, &no_file).unwrap().source,
            "environment"
        );
    }

    #[test]
    fn the_default_profile_is_the_settings_choice_else_default() {
        let settings = |choice: &'static str| {
            move |path: &str| {
                (path == "/home/u/.databrickscfg")
                    .then(|| format!("[__settings__]\ndefault_profile = {choice}\n{FILE}"))
            }
        };
        let home = env(&[("HOME", "/home/u")]);
        let ws = resolve(None, &home, &settings("sp")).unwrap();
        assert_eq!(ws.host.as_str(), "http://127.0.0.1:9000/");
        let err = resolve(None, &home, &settings("gone")).unwrap_err();
        assert!(
            err.message.contains("profile \"gone\" not found"),
            "{}",
            err.message
        );
        let err = resolve(None, &home, &settings("__settings__")).unwrap_err();
        assert!(
            err.message.contains("cannot be used as a profile"),
            "{}",
            err.message
        );
        let by_env = env(&[("HOME", "/home/u"), ("DATABRICKS_CONFIG_PROFILE", "dev")]);
        assert_eq!(
            resolve(None, &by_env, &settings("sp"))
                .unwrap()
                .host
                .as_str(),
            "https://dev.example/"
        );
        let no_default = |_: &str| Some("[dev]\nhost = d\ntoken = t\n".to_string());
        let err = resolve(None, &home, &no_default).unwrap_err();
        assert!(err.message.contains("host not set"), "{}", err.message);
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
