//! What the transport sends and gets back: a request (method, URL, headers, body, whether a
//! server of the copy issued its URL, the credentials it is sent with) and the response.
//! Plain data with the few helpers that read it, kept apart from how requests are sent.

use super::storage_errors::snippet;
use super::Credential;
use url::Url;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether a server of the copy handed out this URL (a signed storage URL, or storage it
    /// issued temporary credentials for): it may go to a host the allow-list does not name
    /// (see `hosts::HostPolicy`), and it never carries credentials of ours.
    pub issued: bool,
    /// The server's credentials, added as a header when the request is sent (see
    /// `Request::ready_to_send`).
    pub credential: Option<Credential>,
}

impl Request {
    pub fn new(method: Method, url: Url) -> Request {
        Request {
            method,
            url,
            headers: Vec::new(),
            body: Vec::new(),
            issued: false,
            credential: None,
        }
    }

    /// The request with the server's credentials, added when it is sent.
    pub fn with_credential(mut self, credential: Credential) -> Request {
        self.credential = Some(credential);
        self
    }

    /// Marks the URL as handed out by a server of the copy (see `issued`).
    pub fn issued(mut self) -> Request {
        self.issued = true;
        self
    }

    /// A request to a URL a server of the copy handed out (see `issued`).
    pub fn to_issued(method: Method, url: Url) -> Request {
        Request::new(method, url).issued()
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Request {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// Where the request goes, for messages: method and URL without query (queries can carry
    /// signed-URL credentials).
    pub fn describe(&self) -> String {
        let mut url = self.url.clone();
        url.set_query(None);
        format!("{} {}", self.method.as_str(), url)
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The start of the body as text, for error messages.
    pub fn body_snippet(&self) -> String {
        snippet(&self.body)
    }
}
