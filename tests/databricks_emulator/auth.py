"""Workspace authentication: personal access tokens and OAuth machine-to-machine (client
credentials), as Databricks serves them.

- PAT: `Authorization: Bearer <token>`; tokens are configured per emulator and map to a user name.
- OAuth M2M: `POST /oidc/v1/token` with `grant_type=client_credentials&scope=all-apis`, the client
  authenticated by HTTP Basic `client_id:client_secret` (what the Databricks SDK sends) or by the
  form fields `client_id` / `client_secret`. The answer is `{access_token, token_type: "Bearer",
  expires_in, scope}`; the access token is a JWT-shaped string (HS256 over a per-emulator key) whose
  lifetime is configurable, so that tests can make tokens expire mid-run.

Unknown tokens are answered as Databricks does (`403 {"error_code": 403, "message": "Invalid access
token."}`), expired OAuth tokens with `401 {"error_code": 401, "message": "Token is expired"}`, a
request without credentials with 401.

Like production (`expired_status=403`, `refuse_before_expiry=S`): public reports of real
workspaces (n8n-io/n8n#34147 and its fix; databricks/databricks-vscode#583) say an expired M2M token
is answered with 403, not 401, and that tokens are refused about 30 s before their expiry, which is
why the Databricks SDK (`databricks/sdk/oauth.py`, `Refreshable`) refreshes stale tokens ahead of
time. The exact margin of a real workspace is UNKNOWN; tests scale it to their short-lived tokens.
"""
import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass

from .errors import ApiError


def _b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class Principal:
    name: str  # user name (e-mail) or service principal application id
    kind: str  # "pat" or "oauth"
    is_service_principal: bool = False


class OAuthError(Exception):
    """An error of the token endpoint (RFC 6749 shape, not the API's shape)."""

    def __init__(self, status, error, description):
        super().__init__(description)
        self.status = status
        self.body = {"error": error, "error_description": description}


class Auth:
    def __init__(self, pats, oauth_clients, oauth_token_ttl=3600.0, expired_status=401,
                 refuse_before_expiry=0.0):
        """pats: {token: user_name}; oauth_clients: {client_id: client_secret} (the service
        principal's name is its client id, as for Databricks-managed service principals).
        expired_status: the status an expired OAuth token gets (401; 403 like production);
        refuse_before_expiry: seconds before its expiry from which a token is refused already."""
        self.expired_status = int(expired_status)
        self.refuse_before_expiry = float(refuse_before_expiry)
        self.tokens_refused = 0
        self.pats = dict(pats)
        self.oauth_clients = dict(oauth_clients)
        self.oauth_token_ttl = float(oauth_token_ttl)
        self._key = secrets.token_bytes(32)
        self._issued = {}  # access token -> (client_id, expires_at)
        self._lock = threading.Lock()
        self.tokens_issued = 0

    # ---- token endpoint -------------------------------------------------------------------------
    def issue(self, headers, form):
        """Handle a client-credentials token request; returns the JSON answer or raises OAuthError."""
        grant = form.get("grant_type")
        if grant != "client_credentials":
            raise OAuthError(400, "unsupported_grant_type", f"Unsupported grant_type: {grant!r}")
        client_id = client_secret = None
        authz = headers.get("Authorization", "")
        if authz.startswith("Basic "):
            try:
                client_id, client_secret = base64.b64decode(authz[6:]).decode().split(":", 1)
            except Exception:
                raise OAuthError(401, "invalid_client", "Malformed client authentication")
        elif "client_id" in form:
            client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if client_id is None:
            raise OAuthError(401, "invalid_client", "Client authentication is required")
        expected = self.oauth_clients.get(client_id)
        if expected is None or not hmac.compare_digest(str(expected), str(client_secret or "")):
            raise OAuthError(401, "invalid_client", "Client authentication failed")
        scope = form.get("scope", "all-apis")
        if "all-apis" not in scope.split():
            raise OAuthError(400, "invalid_scope", f"Unsupported scope: {scope!r}")
        now = time.time()
        exp = now + self.oauth_token_ttl
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "emulator"}).encode())
        payload = _b64url(json.dumps({
            "sub": client_id, "client_id": client_id, "scope": "all-apis", "iat": int(now),
            "exp": int(exp) if self.oauth_token_ttl >= 1 else exp, "jti": secrets.token_hex(8),
        }).encode())
        sig = _b64url(hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        token = f"{header}.{payload}.{sig}"
        with self._lock:
            self._issued[token] = (client_id, exp)
            self.tokens_issued += 1
        expires_in = max(1, int(round(self.oauth_token_ttl)))
        return {"access_token": token, "token_type": "Bearer", "expires_in": expires_in,
                "scope": "all-apis"}

    # ---- API authentication ---------------------------------------------------------------------
    def authenticate(self, headers):
        """Returns the Principal of a request's bearer token, or raises ApiError."""
        authz = headers.get("Authorization")
        if not authz:
            raise ApiError(401, "Credential was not sent or was of an unsupported type for this API.",
                           status=401)
        scheme, _, token = authz.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "Credential was not sent or was of an unsupported type for this API.",
                           status=401)
        token = token.strip()
        user = self.pats.get(token)
        if user is not None:
            return Principal(user, "pat")
        with self._lock:
            issued = self._issued.get(token)
        if issued is not None:
            client_id, exp = issued
            if time.time() >= exp - self.refuse_before_expiry:
                with self._lock:
                    self.tokens_refused += 1
                status = self.expired_status
                raise ApiError(status, "Token is expired", status=status)
            return Principal(client_id, "oauth", is_service_principal=True)
        raise ApiError(403, "Invalid access token.", status=403)
