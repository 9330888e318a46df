//! Which hosts a copy's requests may go to: the operator's allow-list, the hosts servers hand
//! out during the copy (signed storage URLs), and the special-purpose addresses (cloud metadata
//! services, link-local) that a request from a remote caller must never reach.
//!
//! Who names the servers decides the default. On the command line and in a plugin the user
//! names them, so every host is allowed unless `MLFLOW_COPY_ALLOWED_HOSTS` says otherwise. The
//! HTTP function's callers are not its operator: it fails closed, refusing every copy until the
//! operator lists the hosts (or opts out with `MLFLOW_COPY_ALLOW_ANY_HOST=true`), and it refuses
//! special-purpose addresses whatever the mode, unless the list names one exactly.

use super::Request;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use url::{Host, Url};

/// The environment variable that lists the allowed hosts (comma-separated `host` or
/// `host:port`).
pub const ALLOWED_HOSTS_VAR: &str = "MLFLOW_COPY_ALLOWED_HOSTS";
/// Set to `true` to let the HTTP function's callers name any host (unsafe when the function
/// holds upstream credentials).
pub const ALLOW_ANY_HOST_VAR: &str = "MLFLOW_COPY_ALLOW_ANY_HOST";

/// Host names of cloud metadata services (their addresses are special-purpose too).
const METADATA_NAMES: [&str; 5] = [
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
];

/// The entries of `MLFLOW_COPY_ALLOWED_HOSTS`.
#[derive(Debug, Clone, PartialEq)]
pub struct AllowedHosts(Vec<String>);

impl AllowedHosts {
    /// `None` when the list is empty.
    pub fn parse(list: &str) -> Option<AllowedHosts> {
        let entries: Vec<String> = list
            .split(',')
            .map(|e| e.trim().to_ascii_lowercase())
            .filter(|e| !e.is_empty())
            .collect();
        (!entries.is_empty()).then_some(AllowedHosts(entries))
    }

    /// Whether an entry names the URL's host, or its host and port.
    pub fn allows(&self, url: &Url) -> bool {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let with_port = format!("{host}:{}", url.port_or_known_default().unwrap_or(0));
        self.0.iter().any(|e| *e == host || *e == with_port)
    }
}

/// Who named the servers of a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The user of the command line or of a plugin host: any host, unless a list is set.
    User,
    /// A caller of the HTTP function: only listed hosts, unless the operator opted out.
    Remote,
}

/// The hosts one copy may send requests to. Every request is checked when it is sent.
#[derive(Debug, Clone, PartialEq)]
pub struct HostPolicy {
    /// The operator's list; `None` allows any host.
    listed: Option<AllowedHosts>,
    /// No list, and no opt-out: a remote caller's copy may send nothing.
    closed: bool,
    /// Whether special-purpose addresses are refused unless listed exactly.
    guard_special: bool,
}

impl HostPolicy {
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>, caller: Caller) -> HostPolicy {
        let listed = env(ALLOWED_HOSTS_VAR).and_then(|l| AllowedHosts::parse(&l));
        let remote = caller == Caller::Remote;
        HostPolicy {
            closed: remote && listed.is_none() && !any_host_allowed(env),
            listed,
            guard_special: remote,
        }
    }

    /// The host and port of `url` and nothing else: where a bulk copy's items go with
    /// `--via` (the copy function's token must reach no other host, and nothing else is asked
    /// of that transport).
    pub fn only(url: &Url) -> HostPolicy {
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(0);
        HostPolicy {
            listed: AllowedHosts::parse(&format!("{host}:{port}")),
            closed: false,
            guard_special: false,
        }
    }

    /// Any host: what a user who sets nothing gets.
    #[cfg(test)]
    pub fn any() -> HostPolicy {
        HostPolicy {
            listed: None,
            closed: false,
            guard_special: false,
        }
    }

    pub fn listed(&self) -> Option<&AllowedHosts> {
        self.listed.as_ref()
    }

    /// Whether nothing may be contacted (a remote caller, and no list or opt-out).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether a server a caller named (by URL) may be contacted; why not, if not.
    pub fn check_named(&self, url: &Url) -> Result<(), String> {
        self.check(url, false)
    }

    /// Whether this request may be sent; why not, if not. A request to a URL a server of the
    /// copy handed out (`Request::issued`: a signed storage URL) may go to a host the list does
    /// not name: the operator allowed the server that issued it, for this copy. Never one that
    /// carries a server's credentials: those go to listed hosts only.
    pub fn check_request(&self, request: &Request) -> Result<(), String> {
        self.check(&request.url, request.issued && request.credential.is_none())
    }

    fn check(&self, url: &Url, issued: bool) -> Result<(), String> {
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(0);
        if self.closed {
            return Err(format!(
                "{host}:{port}: no host is allowed: set {ALLOWED_HOSTS_VAR} (or {ALLOW_ANY_HOST_VAR}=true)"
            ));
        }
        if self.listed.as_ref().is_some_and(|l| l.allows(url)) {
            return Ok(());
        }
        if self.guard_special && is_special_purpose(url) {
            return Err(format!(
                "{host}:{port} is a special-purpose address (cloud metadata, link-local); \
                 refused unless {ALLOWED_HOSTS_VAR} names it"
            ));
        }
        match &self.listed {
            Some(_) if !issued => Err(format!("host {host}:{port} is not in {ALLOWED_HOSTS_VAR}")),
            _ => Ok(()),
        }
    }
}

/// Whether the opt-out is set.
pub fn any_host_allowed(env: &dyn Fn(&str) -> Option<String>) -> bool {
    env(ALLOW_ANY_HOST_VAR).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Addresses no remote caller may make the function reach: link-local (169.254.0.0/16, where
/// AWS, Azure, GCP and ECS serve instance metadata and credentials; fe80::/10), AWS's IPv6
/// metadata address, Alibaba's and Azure's platform endpoints, unspecified, broadcast and
/// multicast addresses, IPv4-mapped IPv6 forms of these, and metadata host names. (The URL
/// parser has already turned `http://2852039166/` and other IPv4 spellings into dotted form.)
/// Names that merely resolve to such an address cannot be caught here: a WASI HTTP guest sees
/// no DNS answers. The operator's allow-list is what stops those.
pub fn is_special_purpose(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => special_v4(ip),
        Some(Host::Ipv6(ip)) => special_v6(ip),
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            METADATA_NAMES.contains(&name.as_str())
                || name.parse::<IpAddr>().is_ok_and(|ip| match ip {
                    IpAddr::V4(v4) => special_v4(v4),
                    IpAddr::V6(v6) => special_v6(v6),
                })
        }
        None => true,
    }
}

fn special_v4(ip: Ipv4Addr) -> bool {
    const ALIBABA_METADATA: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);
    const AZURE_WIRESERVER: Ipv4Addr = Ipv4Addr::new(168, 63, 129, 16);
    ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.octets()[0] == 0
        || ip == ALIBABA_METADATA
        || ip == AZURE_WIRESERVER
}

fn special_v6(ip: Ipv6Addr) -> bool {
    const AWS_METADATA: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return special_v4(v4);
    }
    let first = ip.segments()[0];
    (first & 0xffc0) == 0xfe80 || ip.is_unspecified() || ip.is_multicast() || ip == AWS_METADATA
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{fixed_env, Method};

    fn url(u: &str) -> Url {
        Url::parse(u).unwrap()
    }

    #[test]
    fn allowed_hosts_match_host_or_host_and_port() {
        let allowed = AllowedHosts::parse(" mlflow.example.com , 127.0.0.1:5000").unwrap();
        let ok = |u: &str| allowed.allows(&url(u));
        assert!(ok("https://mlflow.example.com/api"));
        assert!(ok("http://MLflow.example.com:8080/x"));
        assert!(ok("http://127.0.0.1:5000/api"));
        assert!(!ok("http://127.0.0.1:5001/api"));
        assert!(!ok("http://other.example.com/"));
        assert_eq!(AllowedHosts::parse(" , "), None);
    }

    #[test]
    fn users_may_name_any_host_unless_they_list_some() {
        let any = HostPolicy::from_env(&fixed_env(&[]), Caller::User);
        assert!(any.check_named(&url("http://169.254.169.254/")).is_ok());
        assert!(any
            .check_named(&url("https://anywhere.example.com/"))
            .is_ok());
        let listed = HostPolicy::from_env(
            &fixed_env(&[(ALLOWED_HOSTS_VAR, "mlflow.example.com")]),
            Caller::User,
        );
        assert!(listed
            .check_named(&url("https://mlflow.example.com/"))
            .is_ok());
        let refused = listed
            .check_named(&url("https://other.example.com/"))
            .unwrap_err();
        assert!(refused.contains("other.example.com:443") && refused.contains(ALLOWED_HOSTS_VAR));
    }

    #[test]
    fn remote_callers_are_refused_everything_until_the_operator_lists_hosts() {
        let closed = HostPolicy::from_env(&fixed_env(&[]), Caller::Remote);
        let refused = closed
            .check_named(&url("http://127.0.0.1:5000/"))
            .unwrap_err();
        assert!(refused.contains(ALLOWED_HOSTS_VAR) && refused.contains(ALLOW_ANY_HOST_VAR));
        let signed = Request::new(Method::Get, url("https://bucket.s3.amazonaws.com/k")).issued();
        assert!(
            closed.check_request(&signed).is_err(),
            "closed means closed"
        );

        let opened =
            HostPolicy::from_env(&fixed_env(&[(ALLOW_ANY_HOST_VAR, "true")]), Caller::Remote);
        assert!(opened
            .check_named(&url("https://anywhere.example.com/"))
            .is_ok());
        assert!(
            opened
                .check_named(&url("http://169.254.169.254/latest/meta-data/"))
                .is_err(),
            "metadata stays out of reach even when any host is allowed"
        );
    }

    #[test]
    fn hosts_a_listed_server_hands_out_are_allowed_but_never_special_ones() {
        let policy = HostPolicy::from_env(
            &fixed_env(&[(ALLOWED_HOSTS_VAR, "dbc-1.cloud.databricks.com")]),
            Caller::Remote,
        );
        let storage = url("https://bucket.s3.us-west-2.amazonaws.com/k?X-Amz-Signature=1");
        assert!(
            policy.check_named(&storage).is_err(),
            "not named by the list"
        );
        let signed = Request::new(Method::Put, storage).issued();
        assert!(policy.check_request(&signed).is_ok());
        let metadata = Request::new(Method::Get, url("http://169.254.169.254/")).issued();
        assert!(policy.check_request(&metadata).is_err());
        let auth: std::rc::Rc<dyn crate::credentials::Authorizer> =
            std::rc::Rc::new(crate::credentials::StaticAuth {
                auth: crate::credentials::Auth::Bearer("t".into()),
                side: crate::credentials::Side::Dst,
            });
        let with_token = Request::new(Method::Put, url("https://bucket.s3.amazonaws.com/k"))
            .issued()
            .with_credential(crate::transport::Credential::new(auth));
        assert!(
            policy.check_request(&with_token).is_err(),
            "credentials go to listed hosts only"
        );
    }

    #[test]
    fn a_policy_for_one_host_allows_that_host_and_port_only() {
        let only = HostPolicy::only(&url("http://127.0.0.1:8080/fn"));
        assert!(only
            .check_named(&url("http://127.0.0.1:8080/copy-run"))
            .is_ok());
        assert!(only.check_named(&url("http://127.0.0.1:8081/")).is_err());
        assert!(only.check_named(&url("https://127.0.0.1:8080/")).is_ok());
    }

    #[test]
    fn special_purpose_addresses_are_allowed_only_when_listed_exactly() {
        for special in [
            "http://169.254.169.254/latest/meta-data/",
            "http://169.254.170.2/v2/credentials",
            "http://2852039166/",
            "http://0xA9FEA9FE/",
            "http://[fd00:ec2::254]/",
            "http://[fe80::1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://100.100.100.200/",
            "http://168.63.129.16/",
            "http://0.0.0.0:5000/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://METADATA.google.internal./",
        ] {
            assert!(is_special_purpose(&url(special)), "{special}");
        }
        for ordinary in [
            "http://127.0.0.1:5000/",
            "http://[::1]:5000/",
            "https://dbc-1.cloud.databricks.com/",
            "http://10.0.0.5/",
        ] {
            assert!(!is_special_purpose(&url(ordinary)), "{ordinary}");
        }
        let named = HostPolicy::from_env(
            &fixed_env(&[(ALLOWED_HOSTS_VAR, "169.254.169.254:80")]),
            Caller::Remote,
        );
        assert!(named.check_named(&url("http://169.254.169.254/")).is_ok());
        assert!(named.check_named(&url("http://169.254.170.2/")).is_err());
    }
}
