//! Credentials a request carries to its server, turned into an `Authorization` header only when
//! the request is sent, and again for each retry: a token that expires while a request waits
//! for its turn (a long copy, a short-lived OAuth token) is never sent stale.

use super::{Error, Request};
use crate::api::ErrorKind;
use crate::credentials::Authorizer;
use std::rc::Rc;

/// The credentials of one server. `Debug` shows no secret.
#[derive(Clone)]
pub struct Credential {
    auth: Rc<dyn Authorizer>,
    /// The only origin (scheme, host, port) these credentials are ever sent to, when they
    /// belong to one host alone (the copy function's token of `--via`): whatever URL a request
    /// ends up with, they go nowhere else.
    only_to: Option<url::Origin>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(***)")
    }
}

impl Credential {
    pub fn new(auth: Rc<dyn Authorizer>) -> Credential {
        Credential {
            auth,
            only_to: None,
        }
    }

    /// Credentials that belong to the origin of `url` and are sent to no other.
    pub fn for_origin_of(auth: Rc<dyn Authorizer>, url: &url::Url) -> Credential {
        Credential {
            auth,
            only_to: Some(url.origin()),
        }
    }

    /// After the server refused the credentials (401, or 403 as real workspaces answer an
    /// expired OAuth token): drops a cached token; whether sending again may help.
    pub fn refresh(&self) -> bool {
        self.auth.refresh()
    }
}

impl Request {
    /// The request with its credentials as they are now: an `Authorization` header added for a
    /// request that carries a `Credential` (asked of the authorizer, which fetches a token
    /// when its cached one is about to expire); any other request as it is.
    pub fn ready_to_send(&self) -> Result<Request, Error> {
        let Some(credential) = &self.credential else {
            return Ok(self.clone());
        };
        if let Some(origin) = &credential.only_to {
            if self.url.origin() != *origin {
                return Err(Error {
                    message: format!(
                        "{}: refused: the credentials it carries belong to {} alone",
                        self.describe(),
                        origin.ascii_serialization()
                    ),
                    status: None,
                });
            }
        }
        let header = credential.auth.header().map_err(|e| Error {
            message: e.message,
            status: (e.kind == ErrorKind::Unauthorized).then_some(401),
        })?;
        let mut request = self.clone();
        request.credential = None;
        // Whoever handed out its URL, a request with a server's credentials goes only where the
        // host policy lets credentials go (see `hosts::HostPolicy::check_request`).
        request.issued = false;
        if let Some(value) = header {
            request.headers.retain(|(name, _)| name != "authorization");
            request.headers.push(("authorization".into(), value));
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CopyError;
    use crate::transport::retry::RetryPolicy;
    use crate::transport::{
        send_each, Attempts, Download, FileJob, Http, Method, NextJob, NoCalls, Response,
        SendError, Slots, StreamEvent, StreamFailure, Transport, Upload,
    };
    use std::cell::{Cell, RefCell};
    use url::Url;

    /// A token that changes each time it is refreshed, as a short-lived OAuth token does.
    #[derive(Default)]
    struct Rotating {
        generation: Cell<u32>,
    }

    impl Authorizer for Rotating {
        fn header(&self) -> Result<Option<String>, CopyError> {
            Ok(Some(format!("Bearer t{}", self.generation.get())))
        }
        fn refresh(&self) -> bool {
            self.generation.set(self.generation.get() + 1);
            true
        }
        fn hint(&self) -> String {
            String::new()
        }
    }

    /// Answers sends with `status` and refuses the first streamed file with 403; records the
    /// Authorization header of everything it was given.
    struct Recording {
        headers: RefCell<Vec<String>>,
        status: u16,
        refusals: Cell<u32>,
    }

    fn authorization(request: &Request) -> String {
        let found = request.headers.iter().find(|(n, _)| n == "authorization");
        found.map(|(_, v)| v.clone()).unwrap_or_default()
    }

    impl Http for Rc<Recording> {
        fn send(&self, request: &Request) -> Result<Response, SendError> {
            self.headers.borrow_mut().push(authorization(request));
            Ok(Response {
                status: self.status,
                headers: vec![],
                body: vec![],
            })
        }
        fn stream(
            &self,
            next: NextJob,
            _: Slots,
            calls: &mut dyn Attempts,
            events: &mut dyn FnMut(StreamEvent),
        ) {
            send_each(self, calls);
            while let Some((id, job)) = next() {
                self.headers.borrow_mut().push(authorization(&job.download));
                let result = if self.refusals.get() > 0 {
                    self.refusals.set(self.refusals.get() - 1);
                    Err(StreamFailure {
                        message: "HTTP 403".into(),
                        retryable: false,
                        retry_after: None,
                        status: Some(403),
                        end: Some(crate::transport::End::Source),
                    })
                } else {
                    Ok(0)
                };
                events(StreamEvent::Finished { id, result });
            }
        }

        fn digest(
            &self,
            _: &[(Request, u64)],
            _: usize,
        ) -> Vec<Result<crate::transport::Digest, crate::transport::StreamFailure>> {
            unreachable!("these tests read no file through")
        }
    }

    fn transport(status: u16, refusals: u32) -> (Transport, Rc<Recording>) {
        let http = Rc::new(Recording {
            headers: RefCell::new(vec![]),
            status,
            refusals: Cell::new(refusals),
        });
        let policy = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::without_waits()
        };
        (Transport::new(Box::new(http.clone()), policy), http)
    }

    fn request(auth: &Rc<Rotating>) -> Request {
        let url = Url::parse("https://dbc-1.cloud.databricks.com/api").unwrap();
        Request::new(Method::Get, url).with_credential(Credential::new(auth.clone()))
    }

    #[test]
    fn each_attempt_carries_the_credentials_of_the_moment_it_is_sent() {
        let auth = Rc::new(Rotating::default());
        let (t, http) = transport(503, 0);
        let pending = request(&auth);
        auth.refresh(); // the token changed between building the request and sending it
        let _ = t.send(&pending, true);
        let sent = http.headers.borrow().clone();
        assert_eq!(sent.len(), 3, "retried on its budget");
        assert!(sent.iter().all(|h| h == "Bearer t1"), "{sent:?}");
        assert!(
            !format!("{pending:?}").contains("t1"),
            "Debug shows no token"
        );
    }

    #[test]
    fn credentials_of_one_origin_go_to_that_origin_only() {
        let auth = Rc::new(Rotating::default());
        let home = Url::parse("http://127.0.0.1:8080/copy-run").unwrap();
        let credential = Credential::for_origin_of(auth, &home);
        let to = |u: &str| {
            Request::new(Method::Post, Url::parse(u).unwrap()).with_credential(credential.clone())
        };
        let sent = to("http://127.0.0.1:8080/copy-model-version").ready_to_send();
        assert_eq!(authorization(&sent.unwrap()), "Bearer t0");
        for elsewhere in ["http://127.0.0.1:8081/copy-run", "https://127.0.0.1:8080/x"] {
            let refused = to(elsewhere).ready_to_send().unwrap_err();
            assert!(
                refused
                    .message
                    .contains("belong to http://127.0.0.1:8080 alone")
                    && !refused.message.contains("t0"),
                "{}",
                refused.message
            );
        }
    }

    #[test]
    fn a_file_refused_for_its_token_is_sent_again_once_with_a_fresh_one() {
        let auth = Rc::new(Rotating::default());
        let (t, http) = transport(200, 1);
        let job = |_: &usize| FileJob {
            label: "run r artifact f".into(),
            size: 0,
            download: Download::get(request(&auth)),
            upload: Upload::put(Request::new(
                Method::Put,
                Url::parse("http://dst/f").unwrap(),
            )),
        };
        let mut open = |ids: &[usize]| Ok::<_, CopyError>(ids.iter().map(job).collect());
        t.stream_files(1, 1, &mut NoCalls, &mut open, &mut |_| {})
            .unwrap();
        assert_eq!(*http.headers.borrow(), ["Bearer t0", "Bearer t1"]);
    }
}
