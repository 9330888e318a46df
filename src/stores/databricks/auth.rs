//! The `Authorization` header of a workspace's requests: a personal access token as it is, or
//! an OAuth machine-to-machine token fetched with the client credentials, cached, and fetched
//! again before it expires and after a refusal (401, or the 403 real workspaces answer).

use super::config::{Credentials, Workspace};
use crate::api::{CopyError, ErrorKind};
use crate::credentials::Authorizer;
use crate::transport::{Method, Request, Transport};
use base64::Engine;
use serde::Deserialize;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};
use url::Url;

/// A token is fetched again when less than this much of its life is left (or a quarter of
/// it, for short-lived ones).
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

pub struct WorkspaceAuth {
    workspace: Workspace,
    transport: Rc<Transport>,
    token: RefCell<Option<Token>>,
}

struct Token {
    header: String,
    refresh_at: Instant,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct Discovery {
    token_endpoint: Option<String>,
}

impl WorkspaceAuth {
    pub fn new(workspace: Workspace, transport: Rc<Transport>) -> WorkspaceAuth {
        WorkspaceAuth {
            workspace,
            transport,
            token: RefCell::new(None),
        }
    }

    /// The workspace's token endpoint: from its OIDC discovery document when that names the
    /// workspace itself, else the standard `/oidc/v1/token`. Client secrets go nowhere else.
    fn token_endpoint(&self) -> Url {
        let host = &self.workspace.host;
        let default = host.join("oidc/v1/token").expect("a path joins a host");
        let discovery = host
            .join("oidc/.well-known/oauth-authorization-server")
            .expect("a path joins a host");
        let found = self
            .transport
            .send(&Request::new(Method::Get, discovery), true)
            .ok()
            .filter(|r| r.is_success())
            .and_then(|r| serde_json::from_slice::<Discovery>(&r.body).ok())
            .and_then(|d| Url::parse(&d.token_endpoint?).ok())
            .filter(|u| {
                u.host_str() == host.host_str()
                    && u.port_or_known_default() == host.port_or_known_default()
            });
        found.unwrap_or(default)
    }

    fn fetch(&self, client_id: &str, client_secret: &str) -> Result<Token, CopyError> {
        let endpoint = self.token_endpoint();
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{client_id}:{client_secret}"));
        let mut request = Request::new(Method::Post, endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", format!("Basic {basic}"));
        request.body = b"grant_type=client_credentials&scope=all-apis".to_vec();
        let refused = |detail: String| {
            CopyError::new(
                ErrorKind::Unauthorized,
                format!(
                    "Databricks {}: the OAuth token request for client {client_id} (from {}) was \
                     refused: {detail}",
                    self.workspace.host.as_str().trim_end_matches('/'),
                    self.workspace.source
                ),
            )
        };
        let response = self
            .transport
            .send(&request, true)
            .map_err(|e| refused(e.message))?;
        if !response.is_success() {
            return Err(refused(format!(
                "HTTP {}: {}",
                response.status,
                response.body_snippet()
            )));
        }
        let answer: TokenAnswer = serde_json::from_slice(&response.body)
            .map_err(|e| refused(format!("unexpected answer ({e})")))?;
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(3600));
        let margin = REFRESH_MARGIN.min(lifetime / 4);
        Ok(Token {
            header: format!(
                "{} {}",
                answer.token_type.as_deref().unwrap_or("Bearer"),
                answer.access_token
            ),
            refresh_at: Instant::now() + lifetime - margin,
        })
    }
}

impl Authorizer for WorkspaceAuth {
    fn header(&self) -> Result<Option<String>, CopyError> {
        let (client_id, client_secret) = match &self.workspace.credentials {
            Credentials::Token(token) => return Ok(Some(format!("Bearer {token}"))),
            Credentials::OAuth {
                client_id,
                client_secret,
            } => (client_id, client_secret),
        };
        let fresh = self
            .token
            .borrow()
            .as_ref()
            .filter(|t| Instant::now() < t.refresh_at)
            .map(|t| t.header.clone());
        if let Some(header) = fresh {
            return Ok(Some(header));
        }
        let token = self.fetch(client_id, client_secret)?;
        let header = token.header.clone();
        *self.token.borrow_mut() = Some(token);
        Ok(Some(header))
    }

    fn refresh(&self) -> bool {
        let oauth = matches!(self.workspace.credentials, Credentials::OAuth { .. });
        if oauth {
            self.token.borrow_mut().take();
        }
        oauth
    }

    fn hint(&self) -> String {
        format!(
            "check the Databricks token or client id/secret from {}",
            self.workspace.source
        )
    }
}
