//! An example embedding host for mlflow_copy.wasm, the way a platform would run it as a plugin:
//! wasmtime with WASI (environment, stdio) and WASI HTTP (outgoing requests), the component's
//! `mlflow:copy/copier` interface called as typed functions.
//!
//! Usage: mlflow-copy-host <mlflow_copy.wasm> <export> '<json request>', where <export> is one of
//! copy-run, copy-model-version, copy-experiment, copy-model, verify-run, verify-experiment,
//! verify-model-version.
//!
//! The request's fields are those of the WIT record, in snake_case (`run_id`, `experiment_name`,
//! `src_mlflow_uri`, …). Prints `{"ok": <report>}` and exits 0, or `{"err": {"kind", "message"}}`
//! (the `copy-error` variant, returned as a value) and exits 1. Exit 2: the host itself failed.
//! The guest sees only the host's credential variables (`GUEST_ENV`), never the whole
//! environment.
//!
//! copy-experiment with `"parallel": N` (and no `via`) runs N component instances at once, the
//! items in waves by nesting depth (`fan_out.rs`).
//!
//! `mlflow-copy-host exports <mlflow_copy.wasm>` prints the component's export names as JSON.
//!
//! `mlflow-copy-host serve <wasm> …` serves the component's HTTP function as Spin does, with
//! Spin variables (`serve.rs`). The host is built on wasmtime 44.0.0, the version Spin 4.0.2
//! pins, so that what loads here loads in Spin.

mod fan_out;
mod outgoing;
mod serve;
mod variables;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::{WasiHttpCtxView, WasiHttpView};
use wasmtime_wasi_http::WasiHttpCtx;

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "plugin",
    exports: { default: async },
    additional_derives: [serde::Serialize, serde::Deserialize],
});

use exports::mlflow::copy::copier::{
    CopyError, CopyExperimentRequest, CopyModelRequest, CopyModelVersionRequest, CopyRunRequest,
    VerifyModelVersionRequest, VerifyRunRequest,
};

pub(crate) struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    /// Spin variables (`serve --spin-variables`); none for a plugin call.
    variables: variables::Variables,
    /// Outgoing requests, on connections kept and reused (`outgoing.rs`).
    outgoing: outgoing::Pool,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outgoing,
        }
    }
}

/// The exports this host calls.
const FUNCTIONS: &str = "copy-run|copy-model-version|copy-experiment|copy-model|verify-run|verify-experiment|verify-model-version";

#[tokio::main(flavor = "current_thread")]
async fn main() {
    match run().await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("mlflow-copy-host: {e:#}");
            std::process::exit(2);
        }
    }
}

async fn run() -> Result<i32> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, command, wasm] = args.as_slice() {
        if command == "exports" {
            return list_exports(wasm);
        }
    }
    if args.get(1).is_some_and(|a| a == "serve") {
        return serve::serve(&args[2..]).await;
    }
    let [_, wasm, function, request] = args.as_slice() else {
        bail!(
            "usage: mlflow-copy-host <mlflow_copy.wasm> {FUNCTIONS} '<json request>' | exports <wasm> \
             | serve <wasm> [--listen ADDR] [--spin-variables FILE|key=value]..."
        );
    };
    let engine = engine()?;
    let component = Component::from_file(&engine, wasm)
        .map_err(|e| anyhow::anyhow!("loading {wasm}: {e:#}"))?;
    let guest = Guest {
        linker: linker(&engine)?,
        engine,
        component,
        outgoing: outgoing::Pool::default(),
    };
    let (mut store, plugin) = guest.instance().await?;
    let copier = plugin.mlflow_copy_copier();

    // Parses the request of an export, calls it, and turns its report into JSON.
    macro_rules! call {
        ($export:ident, $request:ty) => {{
            let request: $request = serde_json::from_str(request)
                .with_context(|| format!("parsing the {function} request"))?;
            copier.$export(&mut store, &request).await?.map(report_json)
        }};
    }
    let outcome: Result<Value, CopyError> = match function.as_str() {
        "copy-run" => call!(call_copy_run, CopyRunRequest),
        "copy-model-version" => call!(call_copy_model_version, CopyModelVersionRequest),
        "copy-experiment" => {
            let request: CopyExperimentRequest =
                serde_json::from_str(request).context("parsing the copy-experiment request")?;
            match fan_out::instances_wanted(&request) {
                Some(n) => fan_out::copy_experiment(&guest, request, n)
                    .await?
                    .map(report_json),
                None => copier
                    .call_copy_experiment(&mut store, &request)
                    .await?
                    .map(report_json),
            }
        }
        "copy-model" => call!(call_copy_model, CopyModelRequest),
        "verify-run" => call!(call_verify_run, VerifyRunRequest),
        "verify-experiment" => call!(call_verify_experiment, CopyExperimentRequest),
        "verify-model-version" => call!(call_verify_model_version, VerifyModelVersionRequest),
        other => bail!("unknown function {other:?}; expected {FUNCTIONS}"),
    };
    match outcome {
        Ok(report) => {
            println!("{}", json!({ "ok": report }));
            Ok(0)
        }
        Err(error) => {
            let (kind, message) = match error {
                CopyError::BadInput(m) => ("bad_input", m),
                CopyError::NotFound(m) => ("not_found", m),
                CopyError::Unauthorized(m) => ("unauthorized", m),
                CopyError::Conflict(m) => ("conflict", m),
                CopyError::Upstream(m) => ("upstream", m),
            };
            println!("{}", json!({ "err": { "kind": kind, "message": message } }));
            Ok(1)
        }
    }
}

/// The loaded component, from which instances are made (one per call; several at once for a
/// fanned-out copy-experiment).
pub(crate) struct Guest {
    engine: Engine,
    component: Component,
    linker: Linker<HostState>,
    /// The outgoing connections, shared by every instance (`outgoing.rs`).
    outgoing: outgoing::Pool,
}

impl Guest {
    /// A fresh instance, its guest given the host's credential variables and stderr.
    pub(crate) async fn instance(&self) -> Result<(Store<HostState>, Plugin)> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.inherit_stderr();
        for (key, value) in std::env::vars().filter(|(k, _)| passed_to_guest(k)) {
            wasi.env(key, value);
        }
        let state = HostState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            variables: Default::default(),
            outgoing: self.outgoing.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        let plugin = Plugin::instantiate_async(&mut store, &self.component, &self.linker).await?;
        Ok((store, plugin))
    }
}

/// The engine, with the compile cache wasmtime's CLI uses (its default configuration): a
/// component is compiled once, not on every call.
pub(crate) fn engine() -> Result<Engine> {
    let mut config = Config::new();
    config.cache(wasmtime::Cache::from_file(None).ok());
    Ok(Engine::new(&config)?)
}

/// What a guest may import: WASI p2, wasi-http, and Spin's variables (`wasi:config/store`),
/// the interfaces Spin 4 links for a component.
fn linker(engine: &Engine) -> Result<Linker<HostState>> {
    let mut linker = Linker::<HostState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    variables::add_to_linker(&mut linker, |state| &mut state.variables)?;
    Ok(linker)
}

/// Whether a host environment variable is passed to the guest: `MLFLOW_*TRACKING_*` (the
/// credentials, e.g. `MLFLOW_TRACKING_TOKEN`, `MLFLOW_DST_TRACKING_PASSWORD`),
/// `MLFLOW_*S3_ENDPOINT_URL`, the MLflow and AWS settings the component reads (`EXACT`) and
/// `DATABRICKS_*`. The same rule as the Python and Node.js hosts.
fn passed_to_guest(name: &str) -> bool {
    const EXACT: [&str; 15] = [
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER",
        "MLFLOW_COPY_FILES_API_MAX_PUT",
        "MLFLOW_COPY_ALLOWED_HOSTS",
        "MLFLOW_COPY_VIA_TOKEN",
        "MLFLOW_COPY_VIA_TIMEOUT",
        "MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE",
        "MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_SKIP_SIGNATURE_CHECK_FOR_UC_REGISTRY_MIGRATION",
        "MLFLOW_USE_DATABRICKS_SDK_MODEL_ARTIFACTS_REPO_FOR_UC",
        "MLFLOW_DISABLE_DATABRICKS_SDK_FOR_RUN_ARTIFACTS",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ];
    if EXACT.contains(&name) || name.starts_with("DATABRICKS_") {
        return true;
    }
    name.strip_prefix("MLFLOW_")
        .is_some_and(|rest| rest.contains("TRACKING_") || rest.ends_with("S3_ENDPOINT_URL"))
}

/// A report as JSON with snake_case keys (the serde derive of the WIT records), enums as their
/// WIT case names (`created`, `would_create`) and an item's `copy-error` as `{kind, message}`,
/// as the command line prints them. The derive would spell the Rust names (`WouldCreate`,
/// `{"BadInput": "…"}`).
fn report_json<T: serde::Serialize>(report: T) -> Value {
    fn snake(name: &str) -> String {
        let mut out = String::new();
        for (i, c) in name.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    }
    fn fix(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    match v {
                        Value::String(s) if key == "outcome" || key == "status" => *s = snake(s),
                        Value::Object(case) if key == "error" && case.len() == 1 => {
                            let (kind, message) = case.iter().next().expect("one case");
                            *v = json!({ "kind": snake(kind), "message": message });
                        }
                        _ => fix(v),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(fix),
            _ => {}
        }
    }
    let mut value = json!(report);
    fix(&mut value);
    value
}

/// The names the component exports, as a JSON list (what a host such as Spin matches on).
fn list_exports(wasm: &str) -> Result<i32> {
    let engine = engine()?;
    let component = Component::from_file(&engine, wasm)
        .map_err(|e| anyhow::anyhow!("loading {wasm}: {e:#}"))?;
    let names: Vec<String> = component
        .component_type()
        .exports(&engine)
        .map(|(name, _)| name.to_string())
        .collect();
    println!("{}", json!(names));
    Ok(0)
}
