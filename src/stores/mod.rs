//! Store clients, one per kind of server, behind three interfaces the copy engine uses:
//!
//! - [`Tracking`]: experiments, runs (params, tags, metric histories, datasets, outputs) and
//!   MLflow 3 logged models;
//! - [`Registry`]: registered models, versions, stages, aliases and permissions;
//! - [`Artifacts`]: artifact trees: list a tree, and say how each file is read (a download) and
//!   written (an upload). The store decides how bytes travel (through an MLflow server's
//!   artifact proxy today; signed cloud-storage URLs or the Files API for Databricks); the
//!   transport streams them.
//!
//! Questions the engine asks ("which runs in this experiment carry these tags") are methods here,
//! so that query syntax stays in the store. [`connect`] builds one side's stores from its URI.

pub mod copy_function;
pub mod databricks;
pub mod mlflow;
pub mod model;
pub mod scheduler;

#[cfg(test)]
pub mod fake;
#[cfg(test)]
pub mod fake_traces;

use crate::api::CopyError;
use crate::credentials::{Auth, Side, StaticAuth};
use crate::transport::{Download, Transport, Upload};
use crate::uri::ServerUri;
use model::*;
pub use scheduler::{Answer, Call, Outgoing, PendingCalls, Reader, Scheduler};
use std::rc::Rc;

pub trait Tracking {
    /// The server as shown in messages and lineage tags (never with credentials).
    fn server(&self) -> String;

    /// Whether the server would accept this experiment name: checked before a copy writes
    /// anything.
    fn check_experiment_name(&self, _name: &str) -> Result<(), CopyError> {
        Ok(())
    }

    fn get_run(&self, run_id: &str) -> Result<Run, CopyError>;
    /// Active runs of the experiment that carry every one of these tags.
    fn runs_with_tags(
        &self,
        experiment_id: &str,
        tags: &[(&str, &str)],
    ) -> Result<Vec<Run>, CopyError>;
    fn create_run(&self, experiment_id: &str, run: &NewRun) -> Result<RunInfo, CopyError>;
    fn update_run(
        &self,
        run_id: &str,
        status: &str,
        end_time: Option<i64>,
    ) -> Result<(), CopyError>;
    /// Deletes a run (MLflow's soft delete: it leaves the active runs).
    fn delete_run(&self, run_id: &str) -> Result<(), CopyError>;
    /// Removes a run tag; removing one that is not there succeeds (the answer to an earlier
    /// attempt may have been lost).
    fn delete_tag(&self, run_id: &str, key: &str) -> Result<(), CopyError>;
    /// One page of a metric's history (`token`: the page's, `None` for the first), as a call
    /// the engine sends along with other work.
    fn history_page_call(
        &self,
        run_id: &str,
        key: &str,
        token: Option<&str>,
    ) -> Call<'_, HistoryPage>;
    /// One log-batch request of metric points (at most `MAX_METRICS_PER_BATCH`), as a call the
    /// engine sends along with other work.
    fn log_metrics_call(&self, run_id: &str, batch: &[Metric]) -> Call<'_, ()>;
    /// One log-batch request of params and tags (see `log_metrics_call`).
    fn log_batch_call(&self, run_id: &str, params: &[KeyValue], tags: &[KeyValue]) -> Call<'_, ()>;
    fn log_inputs(&self, run_id: &str, datasets: &[DatasetInput]) -> Result<(), CopyError>;
    /// Records logged models the run used as inputs.
    fn log_model_inputs(&self, run_id: &str, model_ids: &[String]) -> Result<(), CopyError>;
    fn log_outputs(&self, run_id: &str, models: &[ModelOutput]) -> Result<(), CopyError>;

    fn experiment_by_name(&self, name: &str) -> Result<Option<Experiment>, CopyError>;
    fn experiment_by_id(&self, experiment_id: &str) -> Result<Experiment, CopyError>;
    fn create_experiment(&self, name: &str) -> Result<String, CopyError>;
    /// Sets (or replaces) one tag of an experiment.
    fn set_experiment_tag(&self, experiment_id: &str, tag: &KeyValue) -> Result<(), CopyError>;
    /// One page of the experiment's active runs matching `filter` (MLflow search syntax;
    /// empty for all), most recent first (`token`: the page's, `None` for the first).
    fn runs_page(
        &self,
        experiment_id: &str,
        filter: &str,
        token: Option<&str>,
    ) -> Result<RunsPage, CopyError>;

    fn get_logged_model(&self, model_id: &str) -> Result<LoggedModel, CopyError>;
    /// Logged models of the experiment whose source run is `run_id`.
    fn logged_models_of_run(
        &self,
        experiment_id: &str,
        run_id: &str,
    ) -> Result<Vec<LoggedModel>, CopyError>;
    /// Logged models of the experiment that carry this tag.
    fn logged_models_with_tag(
        &self,
        experiment_id: &str,
        key: &str,
        value: &str,
    ) -> Result<Vec<LoggedModel>, CopyError>;
    fn create_logged_model(
        &self,
        experiment_id: &str,
        model: &NewLoggedModel,
    ) -> Result<LoggedModel, CopyError>;
    fn finalize_logged_model(&self, model_id: &str, status: &str) -> Result<(), CopyError>;
    /// Soft-deletes a logged model (a copy that lost a race removes the models it made).
    fn delete_logged_model(&self, model_id: &str) -> Result<(), CopyError>;

    /// Of these tags, the ones the server lets a client write (the rest it sets itself or
    /// refuses: a copy leaves them out, and verify does not look for them).
    fn writable_tags(&self, tags: &[KeyValue]) -> Vec<KeyValue> {
        tags.to_vec()
    }

    /// The server's MLflow 3 traces, when its REST API serves them the way an open-source
    /// server does (`None`: traces are not copied, and the engine says so).
    fn traces(&self) -> Option<&dyn Traces> {
        None
    }
}

/// MLflow 3 traces: a trace is its info (TraceInfoV3 JSON, assessments inside) and its spans
/// (OTLP JSON as `traces/get` returns them). Both are kept as JSON values so that every field
/// travels, including ones this tool does not know; integers (nanosecond times) stay exact.
pub trait Traces {
    /// One page (at most `TRACE_PAGE` infos) of the experiment's traces matching `filter`.
    fn search_traces(
        &self,
        experiment_id: &str,
        filter: &str,
        token: Option<&str>,
    ) -> Result<TracePage, CopyError>;
    /// Each trace's info (with assessments) and spans, several in flight where the store can;
    /// answers in order. `listed` are the traces' infos as a search returned them (they say
    /// where the spans are kept).
    fn get_traces(&self, listed: &[serde_json::Value]) -> Vec<Result<FullTrace, CopyError>>;
    /// Each trace's info, `None` for a trace the server has not got; answers in order.
    fn trace_infos(&self, ids: &[String]) -> Vec<Result<Option<serde_json::Value>, CopyError>>;
    /// Writes each trace's spans (OTLP JSON, trace ids already the copy's) and whatever else
    /// the store needs before the trace can be linked. Each `(pending, spans)`: `pending` is
    /// the copy's info as it may be seen until `complete_traces` (its lineage tag says the
    /// copy is incomplete; its `trace_location` names the destination experiment); a store
    /// that can write spans first need not write it. Repeating it rewrites the same traces.
    /// Returns each trace's id on this server (a store may assign its own).
    fn begin_traces(
        &self,
        traces: &[(serde_json::Value, Vec<serde_json::Value>)],
    ) -> Vec<Result<String, CopyError>>;
    /// Writes the rest of each trace (its final info, assessments, lineage tag), after which
    /// a resumed copy sees it complete.
    fn complete_traces(&self, infos: &[serde_json::Value]) -> Vec<Result<(), CopyError>>;

    /// One trace's info and spans (see `get_traces`).
    fn get_trace(&self, listed: &serde_json::Value) -> Result<FullTrace, CopyError> {
        let mut got = self.get_traces(std::slice::from_ref(listed));
        got.pop().expect("one answer per trace")
    }
    /// One trace's info, `None` when the server has no such trace.
    fn trace_info(&self, trace_id: &str) -> Result<Option<serde_json::Value>, CopyError> {
        let mut got = self.trace_infos(&[trace_id.to_string()]);
        got.pop().expect("one answer per trace")
    }
    /// Associates traces with a run (at most `MAX_TRACE_LINKS` ids per call).
    fn link_traces_to_run(&self, run_id: &str, trace_ids: &[String]) -> Result<(), CopyError>;
    /// Associates a trace with prompt versions (`name`, `version`), as searches by prompt see.
    fn link_prompts(&self, trace_id: &str, versions: &[(String, String)]) -> Result<(), CopyError>;
}

/// Most trace infos one search page asks for (the server allows 500; infos carry their
/// assessments, so pages stay small).
pub const TRACE_PAGE: u32 = 100;
/// Most trace ids one link-to-run call takes (`MAX_TRACE_LINKS_PER_REQUEST` in MLflow).
pub const MAX_TRACE_LINKS: usize = 100;

pub struct TracePage {
    pub infos: Vec<serde_json::Value>,
    pub next_token: Option<String>,
}

impl TracePage {
    /// No infos on this page and no page after it.
    pub fn is_empty(&self) -> bool {
        self.infos.is_empty() && self.next_token.as_deref().is_none_or(str::is_empty)
    }
}

pub struct FullTrace {
    pub info: serde_json::Value,
    pub spans: Vec<serde_json::Value>,
}

/// One page of runs, and the token of the next page if there is one.
pub struct RunsPage {
    pub runs: Vec<Run>,
    pub next_token: Option<String>,
}

/// One page of a metric's history, and the token of the next page if there is one.
pub struct HistoryPage {
    pub points: Vec<Metric>,
    pub next_token: Option<String>,
}

pub trait Registry {
    /// The registry as shown in messages and lineage tags (never with credentials).
    fn server(&self) -> String;

    /// The kind of permissions the registry has: grants are copied between registries of one
    /// kind only (their principals and levels mean nothing elsewhere).
    fn permission_scheme(&self) -> &'static str {
        "mlflow-basic-auth"
    }

    /// Whether a version's source may be `models:/<logged model id>`; otherwise it is the
    /// logged model's artifact location.
    fn accepts_models_uri(&self) -> bool {
        true
    }

    /// Whether versions have stages (Unity Catalog has none) and models aliases (a Databricks
    /// workspace registry has none): what the registry lacks is skipped with a warning.
    fn supports_stages(&self) -> bool {
        true
    }
    fn supports_aliases(&self) -> bool {
        true
    }

    /// The tag key this registry stores for `key` (Unity Catalog refuses `. , - = / :` in tag
    /// keys): tags are written, and compared, under this key.
    fn tag_key(&self, key: &str) -> String {
        key.to_string()
    }

    /// Whether a version is accepted only with an `MLmodel` whose signature has inputs and
    /// outputs (Unity Catalog relies on clients to check it).
    fn requires_signature(&self) -> bool {
        false
    }

    /// Whether the registry keeps each version's files itself (Unity Catalog): a new version
    /// is created pending, its files are written under `Owner::Version`, then it is finalized.
    /// Otherwise a version only points at its source.
    fn keeps_version_files(&self) -> bool {
        false
    }

    /// Marks a version whose files are all written as ready (see `keeps_version_files`).
    fn finalize_version(&self, name: &str, version: &str) -> Result<ModelVersion, CopyError> {
        self.model_version(name, version)
    }

    /// Whether the registry would accept this registered-model name: checked before a copy
    /// writes anything (a `bad_input` error says what is wrong).
    fn check_model_name(&self, name: &str) -> Result<(), CopyError>;
    fn registered_model(&self, name: &str) -> Result<Option<RegisteredModel>, CopyError>;
    fn create_registered_model(
        &self,
        name: &str,
        description: Option<&str>,
        tags: &[KeyValue],
    ) -> Result<(), CopyError>;
    fn model_version(&self, name: &str, version: &str) -> Result<ModelVersion, CopyError>;
    /// Every version of the registered model.
    fn versions(&self, name: &str) -> Result<Vec<ModelVersion>, CopyError>;
    fn create_model_version(&self, name: &str, new: &NewVersion)
        -> Result<ModelVersion, CopyError>;
    fn set_version_tag(
        &self,
        name: &str,
        version: &str,
        key: &str,
        value: &str,
    ) -> Result<(), CopyError>;
    fn transition_stage(&self, name: &str, version: &str, stage: &str) -> Result<(), CopyError>;
    fn set_alias(&self, name: &str, alias: &str, version: &str) -> Result<(), CopyError>;
    /// The direct grants on a registered model, or `None` when the registry has no
    /// permissions API.
    fn model_grants(&self, name: &str) -> Result<Option<Vec<Grant>>, CopyError>;
    fn grant_model_permission(&self, name: &str, grant: &Grant) -> Result<(), CopyError>;

    /// Every version of a prompt (a registered model tagged `mlflow.prompt.is_prompt`, whose
    /// versions plain searches hide), or `None` when the registry keeps no prompts that way.
    fn prompt_versions(&self, _name: &str) -> Result<Option<Vec<ModelVersion>>, CopyError> {
        Ok(None)
    }
}

pub trait Artifacts {
    /// Every file under the root, recursively, sorted by path.
    fn list(&self, root: &ArtifactRoot) -> Result<Vec<FileEntry>, CopyError>;
    /// How to read each of these files, in order. Called shortly before the files are
    /// transferred (and again for a retried file), so a store may sign them in one batch.
    fn downloads(&self, root: &ArtifactRoot, paths: &[&str]) -> Result<Vec<Download>, CopyError>;
    /// How to write each of these files, in order (see `downloads`).
    fn uploads(&self, root: &ArtifactRoot, files: &[&FileEntry]) -> Result<Vec<Upload>, CopyError>;
    /// Reads a small file whole (an `MLmodel`, to rewrite its ids).
    fn read_small(&self, root: &ArtifactRoot, path: &str) -> Result<Vec<u8>, CopyError>;
    /// Writes a small file whole.
    fn write_small(&self, root: &ArtifactRoot, path: &str, body: Vec<u8>) -> Result<(), CopyError>;
}

/// One side of a copy: the stores its URI names.
#[derive(Clone)]
pub struct Stores {
    pub tracking: Rc<dyn Tracking>,
    pub registry: Rc<dyn Registry>,
    pub artifacts: Rc<dyn Artifacts>,
}

impl Stores {
    /// One client serving all three interfaces (an MLflow server is all three).
    pub fn all_in_one<S: Tracking + Registry + Artifacts + 'static>(store: S) -> Stores {
        let store = Rc::new(store);
        Stores {
            tracking: store.clone(),
            registry: store.clone(),
            artifacts: store,
        }
    }
}

/// Builds one side's stores from its URI, with credentials from `env`: the only place that
/// knows which kind of server a URI names.
pub fn connect(
    uri: &str,
    side: Side,
    env: &dyn Fn(&str) -> Option<String>,
    transport: Rc<Transport>,
) -> Result<Stores, CopyError> {
    match ServerUri::parse(uri)? {
        ServerUri::Http(base) => {
            let auth = StaticAuth {
                auth: Auth::from_env(side, env),
                side,
            };
            let client = mlflow::MlflowRest::new(base, side, Rc::new(auth), transport);
            Ok(Stores::all_in_one(client))
        }
        ServerUri::Databricks { profile } => {
            databricks::connect(profile.as_deref(), false, side, env, transport)
        }
        ServerUri::DatabricksUc { profile } => {
            databricks::connect(profile.as_deref(), true, side, env, transport)
        }
    }
}
