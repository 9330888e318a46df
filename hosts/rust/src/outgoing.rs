//! The host's outgoing HTTP: connections kept open and reused per server, as Spin's host does.
//! wasmtime's default handler (`default_send_request`, what `wasmtime run` and `wasmtime serve`
//! use) opens a new connection for every request: one more round trip each, three with TLS.
//! Timeouts and errors are the default handler's.

use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::time::timeout;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::{DnsErrorPayload, ErrorCode};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p2::types::{
    HostFutureIncomingResponse, IncomingResponse, OutgoingRequestConfig,
};
use wasmtime_wasi_http::p2::{hyper_request_error, HttpResult, WasiHttpHooks};

/// Connections kept per server at most (busy or idle); more are opened, used once, and closed.
const MAX_PER_SERVER: usize = 32;

type Request = hyper::Request<HyperOutgoingBody>;

/// The connections of one host process, shared by its component instances.
#[derive(Clone, Default)]
pub struct Pool {
    /// (authority, TLS) -> connections, each busy until its answer's body is read.
    connections: Arc<Mutex<HashMap<(String, bool), Vec<SendRequest<HyperOutgoingBody>>>>>,
}

impl WasiHttpHooks for Pool {
    fn send_request(
        &mut self,
        request: Request,
        config: OutgoingRequestConfig,
    ) -> HttpResult<HostFutureIncomingResponse> {
        let pool = self.clone();
        let handle =
            wasmtime_wasi::runtime::spawn(async move { Ok(pool.send(request, config).await) });
        Ok(HostFutureIncomingResponse::pending(handle))
    }
}

impl Pool {
    async fn send(
        &self,
        mut request: Request,
        config: OutgoingRequestConfig,
    ) -> Result<IncomingResponse, ErrorCode> {
        let server = (authority(&request, config.use_tls)?, config.use_tls);
        // The request line names the path only (scheme and authority are for proxies).
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        *request.uri_mut() = http::Uri::builder()
            .path_and_query(path)
            .build()
            .map_err(|_| ErrorCode::HttpRequestUriInvalid)?;
        let mut sender = match self.idle(&server) {
            Some(sender) => sender,
            None => self.connect(&server, &config).await?,
        };
        let answer =
            match timeout(config.first_byte_timeout, sender.try_send_request(request)).await {
                Err(_) => return Err(ErrorCode::ConnectionReadTimeout),
                Ok(Ok(answer)) => answer,
                // A kept connection the server had closed: the request was not sent, so it goes
                // again on a new one.
                Ok(Err(mut failed)) => match failed.take_message() {
                    Some(request) => {
                        sender = self.connect(&server, &config).await?;
                        timeout(config.first_byte_timeout, sender.send_request(request))
                            .await
                            .map_err(|_| ErrorCode::ConnectionReadTimeout)?
                            .map_err(hyper_request_error)?
                    }
                    None => return Err(hyper_request_error(failed.into_error())),
                },
            };
        self.keep(server, sender);
        Ok(IncomingResponse {
            resp: answer.map(|body| body.map_err(hyper_request_error).boxed_unsync()),
            worker: None,
            between_bytes_timeout: config.between_bytes_timeout,
        })
    }

    /// A kept connection to the server that can take a request now (its last answer read).
    fn idle(&self, server: &(String, bool)) -> Option<SendRequest<HyperOutgoingBody>> {
        let mut connections = self.connections.lock().unwrap();
        let kept = connections.get_mut(server)?;
        kept.retain(|s| !s.is_closed());
        let ready = kept.iter().position(|s| s.is_ready())?;
        Some(kept.swap_remove(ready))
    }

    fn keep(&self, server: (String, bool), sender: SendRequest<HyperOutgoingBody>) {
        let mut connections = self.connections.lock().unwrap();
        let kept = connections.entry(server).or_default();
        if kept.len() < MAX_PER_SERVER {
            kept.push(sender);
        }
    }

    /// A new connection (TCP, TLS for https, the HTTP/1.1 handshake), as the default handler
    /// makes one; its connection task runs for as long as the connection is kept.
    async fn connect(
        &self,
        (authority, use_tls): &(String, bool),
        config: &OutgoingRequestConfig,
    ) -> Result<SendRequest<HyperOutgoingBody>, ErrorCode> {
        let tcp = timeout(
            config.connect_timeout,
            tokio::net::TcpStream::connect(authority),
        )
        .await
        .map_err(|_| ErrorCode::ConnectionTimeout)?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrNotAvailable => dns_error("address not available"),
            _ if e
                .to_string()
                .starts_with("failed to lookup address information") =>
            {
                dns_error("address not available")
            }
            _ => ErrorCode::ConnectionRefused,
        })?;
        if *use_tls {
            let stream = tls(authority, tcp).await?;
            handshake(TokioIo::new(stream), config).await
        } else {
            handshake(TokioIo::new(tcp), config).await
        }
    }
}

async fn handshake<S>(
    stream: TokioIo<S>,
    config: &OutgoingRequestConfig,
) -> Result<SendRequest<HyperOutgoingBody>, ErrorCode>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = timeout(
        config.connect_timeout,
        hyper::client::conn::http1::handshake(stream),
    )
    .await
    .map_err(|_| ErrorCode::ConnectionTimeout)?
    .map_err(hyper_request_error)?;
    tokio::spawn(async move {
        // Ends when the connection closes (server, error, or its last sender dropped).
        let _ = connection.await;
    });
    Ok(sender)
}

/// TLS with the web's root certificates, as the default handler does.
async fn tls(
    authority: &str,
    tcp: tokio::net::TcpStream,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, ErrorCode> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    let domain = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|_| dns_error("invalid dns name"))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(domain, tcp)
        .await
        .map_err(|_| ErrorCode::TlsProtocolError)
}

fn dns_error(rcode: &str) -> ErrorCode {
    ErrorCode::DnsError(DnsErrorPayload {
        rcode: Some(rcode.to_string()),
        info_code: Some(0),
    })
}

/// `host:port` of the request, the scheme's port when it names none.
fn authority(request: &Request, use_tls: bool) -> Result<String, ErrorCode> {
    let authority = request
        .uri()
        .authority()
        .ok_or(ErrorCode::HttpRequestUriInvalid)?;
    Ok(match authority.port() {
        Some(_) => authority.to_string(),
        None => format!("{authority}:{}", if use_tls { 443 } else { 80 }),
    })
}
