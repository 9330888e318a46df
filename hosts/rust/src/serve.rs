//! `mlflow-copy-host serve`: the component's `wasi:http/incoming-handler` served over HTTP/1.1
//! the way Spin 4.0.2's HTTP trigger runs it: wasmtime 44 (Spin's), the WASI p2 and wasi-http
//! linkers, Spin variables through `wasi:config/store`, a fresh instance per request, and no
//! host environment for the guest (Spin passes only the manifest's `environment`).
//!
//! Usage: mlflow-copy-host serve <wasm> [--listen 127.0.0.1:0] [--spin-variables FILE|key=value]…
//! Prints `listening on http://ADDR` on stdout once it accepts connections.

use crate::variables::Variables;
use crate::HostState;
use anyhow::{bail, Context, Result};
use hyper::server::conn::http1;
use std::sync::Arc;
use tokio::net::TcpListener;
use wasmtime::component::{Component, ResourceTable};
use wasmtime::Store;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p2::WasiHttpView;
use wasmtime_wasi_http::WasiHttpCtx;

struct Server {
    pre: ProxyPre<HostState>,
    variables: Variables,
    /// One pool of outgoing connections for every request the server handles.
    outgoing: crate::outgoing::Pool,
}

pub async fn serve(args: &[String]) -> Result<i32> {
    let Some((wasm, options)) = args.split_first() else {
        bail!("usage: mlflow-copy-host serve <wasm> [--listen ADDR] [--spin-variables FILE|key=value]…");
    };
    let mut listen = "127.0.0.1:0".to_string();
    let mut variables = Variables::default();
    let mut options = options.iter();
    while let Some(option) = options.next() {
        let value = options
            .next()
            .with_context(|| format!("{option} needs a value"))?;
        match option.as_str() {
            "--listen" => listen = value.clone(),
            "--spin-variables" => variables.add(value)?,
            other => bail!("unknown option {other:?}; expected --listen or --spin-variables"),
        }
    }
    let engine = crate::engine()?;
    let component = Component::from_file(&engine, wasm)
        .map_err(|e| anyhow::anyhow!("loading {wasm}: {e:#}"))?;
    let linker = crate::linker(&engine)?;
    let pre = ProxyPre::new(linker.instantiate_pre(&component)?).map_err(|e| {
        anyhow::Error::from(e).context(format!("{wasm} does not export wasi:http/incoming-handler"))
    })?;
    let server = Arc::new(Server {
        pre,
        variables,
        outgoing: Default::default(),
    });
    let listener = TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (client, _) = listener.accept().await?;
        let server = server.clone();
        tokio::task::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let server = server.clone();
                async move { server.handle(req).await }
            });
            if let Err(e) = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(client), service)
                .await
            {
                eprintln!("mlflow-copy-host: serving a connection: {e:?}");
            }
        });
    }
}

impl Server {
    async fn handle(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> Result<hyper::Response<HyperOutgoingBody>> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.inherit_stderr();
        let state = HostState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            variables: self.variables.clone(),
            outgoing: self.outgoing.clone(),
        };
        let mut store = Store::new(self.pre.engine(), state);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = self.pre.clone();
        // The guest keeps running after it sets the response (a streamed body), so it runs in
        // its own task while the response goes out.
        let task = tokio::task::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(store, req, out)
                .await
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => bail!("the guest answered with an error: {code:?}"),
            Err(_) => {
                let why = match task.await {
                    Ok(Ok(())) => anyhow::anyhow!("it returned"),
                    Ok(Err(e)) => anyhow::Error::from(e),
                    Err(e) => e.into(),
                };
                Err(why.context("the guest never set a response"))
            }
        }
    }
}
