//! An in-memory server for the engine's unit tests: one `FakeServer` serves all three store
//! interfaces the way an MLflow server behaves where the engine depends on it (ids assigned by
//! the server, params that cannot change, aliases that move, paged metric histories), and
//! `FakeHttp` streams files between fakes as the WASI transport does between servers.
//!
//! Faults are injected by operation name (`fail("update_run", 0)` fails the first
//! `update_run`), so every half-done state of a copy can be produced and resumed.

use super::model::*;
use super::{Artifacts, Call, HistoryPage, Registry, RunsPage, Stores, Tracking};
use crate::api::CopyError;
use crate::transport::{
    send_each, Attempts, Digest, Download, Http, Method, NextJob, Request, Response, SendError,
    Slots, StreamEvent, StreamFailure, Upload,
};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use url::Url;

/// Metric-history page size: small, so that histories span several pages.
const HISTORY_PAGE: usize = 700;

#[derive(Default)]
pub struct State {
    pub experiments: Vec<Experiment>,
    pub runs: Vec<Run>,
    /// Full metric histories, by run id.
    pub history: BTreeMap<String, Vec<Metric>>,
    pub models: Vec<LoggedModel>,
    pub registered: Vec<RegisteredModel>,
    pub versions: Vec<ModelVersion>,
    /// Per-user grants (`None`: the server has no permissions API).
    pub grants: Option<Vec<(String, Grant)>>,
    /// Users the permissions API knows.
    pub users: Vec<String>,
    /// Artifact files by (root URI, path).
    pub files: BTreeMap<(String, String), Vec<u8>>,
    /// Sizes of the metric batches written, in order.
    pub metric_batches: Vec<usize>,
    /// Every write, by operation name, in order.
    pub writes: Vec<&'static str>,
    /// MLflow 3 traces (see `fake_traces`).
    pub traces: Vec<super::fake_traces::FakeTrace>,
    next_id: u64,
}

pub struct FakeServer {
    pub name: String,
    pub state: RefCell<State>,
    /// Injected faults: operation name and how many calls of it succeed first.
    faults: RefCell<Vec<(&'static str, u32)>>,
    /// A run another process creates just before the next call of an operation (a race).
    racing: RefCell<Option<(&'static str, String, Run)>>,
    /// A run its writer deletes just before the next `get_run` of it (stepping aside).
    vanishing: RefCell<Option<String>>,
    /// Creates carried out whose answer is then lost (see `lose_answer`).
    lost_answers: RefCell<Vec<&'static str>>,
    /// Whether the registry behaves as Unity Catalog does: versions keep their own files
    /// (created pending, finalized once an `MLmodel` is there), no stages, `_` tag keys,
    /// signatures required.
    pub unity_catalog: std::cell::Cell<bool>,
    /// Whether traces are written as a Databricks workspace writes them: the info first
    /// (`begin_traces`), then the rest (`complete_traces`).
    pub traces_info_first: std::cell::Cell<bool>,
}

impl FakeServer {
    pub fn new(name: &str) -> Rc<FakeServer> {
        Rc::new(FakeServer {
            name: name.to_string(),
            state: RefCell::new(State::default()),
            faults: RefCell::new(Vec::new()),
            racing: RefCell::new(None),
            vanishing: RefCell::new(None),
            lost_answers: RefCell::new(Vec::new()),
            unity_catalog: std::cell::Cell::new(false),
            traces_info_first: std::cell::Cell::new(false),
        })
    }

    pub fn stores(self: &Rc<Self>) -> Stores {
        Stores {
            tracking: self.clone(),
            registry: self.clone(),
            artifacts: self.clone(),
        }
    }

    /// Has `run` appear in the experiment just before the next run is created, as an identical
    /// copy started at the same moment would.
    pub fn race_next_create(&self, experiment_id: &str, run: Run) {
        self.race_before("create_run", experiment_id, run);
    }

    /// Has `run` appear in the experiment just before the next write `op`.
    pub fn race_before(&self, op: &'static str, experiment_id: &str, run: Run) {
        *self.racing.borrow_mut() = Some((op, experiment_id.to_string(), run));
    }

    /// Has the run's writer delete it just before the next look at it.
    pub fn vanish_on_next_look(&self, run_id: &str) {
        *self.vanishing.borrow_mut() = Some(run_id.to_string());
    }

    /// Makes the next create `op` happen, and its answer be lost (a 500 after the fact).
    pub fn lose_answer(&self, op: &'static str) {
        self.lost_answers.borrow_mut().push(op);
    }

    /// The answer to a create carried out, unless it is to be lost.
    fn answer<T>(&self, op: &'static str, value: T) -> Result<T, CopyError> {
        let mut lost = self.lost_answers.borrow_mut();
        match lost.iter().position(|o| *o == op) {
            Some(at) => {
                lost.remove(at);
                Err(
                    CopyError::upstream(format!("{}: HTTP 500 answering {op}", self.name))
                        .maybe_created(),
                )
            }
            None => Ok(value),
        }
    }

    /// Makes the call of `op` after `succeed_first` successful ones fail (once).
    pub fn fail(&self, op: &'static str, succeed_first: u32) {
        self.faults.borrow_mut().push((op, succeed_first));
    }

    fn id(&self, prefix: &str) -> String {
        let mut state = self.state.borrow_mut();
        state.next_id += 1;
        format!("{prefix}{}", state.next_id)
    }

    /// Records a write, or fails it when a fault is due.
    pub(super) fn write(&self, op: &'static str) -> Result<(), CopyError> {
        self.check(op)?;
        let due = matches!(&*self.racing.borrow(), Some((at, _, _)) if *at == op);
        if due {
            let (_, experiment, run) = self.racing.borrow_mut().take().expect("racer present");
            self.add_run(&experiment, run, Vec::new());
        }
        self.state.borrow_mut().writes.push(op);
        Ok(())
    }

    pub(super) fn check(&self, op: &'static str) -> Result<(), CopyError> {
        let mut faults = self.faults.borrow_mut();
        if let Some(at) = faults.iter().position(|(name, _)| *name == op) {
            if faults[at].1 == 0 {
                faults.remove(at);
                return Err(CopyError::upstream(format!(
                    "{}: injected failure of {op}",
                    self.name
                )));
            }
            faults[at].1 -= 1;
        }
        Ok(())
    }

    fn not_found(&self, what: String) -> CopyError {
        CopyError {
            code: Some("RESOURCE_DOES_NOT_EXIST".into()),
            ..CopyError::not_found(format!("{}: {what} not found", self.name))
        }
    }

    fn with_run<T>(&self, run_id: &str, f: impl FnOnce(&mut Run) -> T) -> Result<T, CopyError> {
        let mut state = self.state.borrow_mut();
        match state.runs.iter_mut().find(|r| r.info.run_id == run_id) {
            Some(run) => Ok(f(run)),
            None => Err(self.not_found(format!("run {run_id}"))),
        }
    }

    /// Adds a run as a client would have logged it (for seeding sources).
    pub fn add_run(&self, experiment_id: &str, mut run: Run, history: Vec<Metric>) -> String {
        let id = self.id("run");
        run.info.run_id = id.clone();
        run.info.experiment_id = experiment_id.to_string();
        run.info.artifact_uri = format!("fake://{}/{experiment_id}/{id}/artifacts", self.name);
        if run.info.lifecycle_stage.is_empty() {
            run.info.lifecycle_stage = "active".into();
        }
        let mut state = self.state.borrow_mut();
        state.runs.push(run);
        state.history.insert(id.clone(), history);
        id
    }

    pub fn run(&self, run_id: &str) -> Run {
        self.get_run(run_id).expect("run exists")
    }

    pub fn history(&self, run_id: &str, key: &str) -> Vec<Metric> {
        let state = self.state.borrow();
        state.history[run_id]
            .iter()
            .filter(|m| m.key == key)
            .cloned()
            .collect()
    }

    /// A log-batch request of params and tags: a param never changes value, as in MLflow.
    fn log_params_and_tags(
        &self,
        run_id: &str,
        params: &[KeyValue],
        tags: &[KeyValue],
    ) -> Result<(), CopyError> {
        self.write("log_batch")?;
        let changed = self.with_run(run_id, |r| {
            for p in params {
                match r.data.params.iter().find(|q| q.key == p.key) {
                    Some(q) if q.value != p.value => return Some(p.key.clone()),
                    Some(_) => {}
                    None => r.data.params.push(p.clone()),
                }
            }
            for t in tags {
                r.data.tags.retain(|u| u.key != t.key);
                r.data.tags.push(t.clone());
            }
            None
        })?;
        match changed {
            Some(key) => Err(CopyError::bad_input(format!(
                "param {key} cannot be changed"
            ))),
            None => Ok(()),
        }
    }

    /// A log-batch request of metric points (its size recorded).
    fn log_metric_batch(&self, run_id: &str, batch: &[Metric]) -> Result<(), CopyError> {
        self.write("log_metric_batch")?;
        self.with_run(run_id, |_| ())?;
        let mut state = self.state.borrow_mut();
        state.metric_batches.push(batch.len());
        state
            .history
            .entry(run_id.into())
            .or_default()
            .extend_from_slice(batch);
        // Like MLflow 3: a point logged for a model is one of the model's metrics too.
        for metric in batch {
            let model = metric.model_id.as_deref();
            if let Some(m) = state
                .models
                .iter_mut()
                .find(|m| Some(m.info.model_id.as_str()) == model)
            {
                m.data.metrics.push(Metric {
                    run_id: Some(run_id.to_string()),
                    ..metric.clone()
                });
            }
        }
        Ok(())
    }

    /// One page of a history; its token is the index of its first point.
    fn history_page(
        &self,
        run_id: &str,
        key: &str,
        token: Option<String>,
    ) -> Result<HistoryPage, CopyError> {
        self.check("get_history")?;
        let all = self.history(run_id, key);
        let start: usize = token.map_or(0, |t| t.parse().expect("a token of ours"));
        let end = (start + HISTORY_PAGE).min(all.len());
        // Like OSS: history pages leave out the model and dataset links.
        let points = all[start..end]
            .iter()
            .map(|m| Metric {
                model_id: None,
                dataset_name: None,
                dataset_digest: None,
                ..m.clone()
            })
            .collect();
        let next_token = (end < all.len()).then(|| end.to_string());
        Ok(HistoryPage { points, next_token })
    }

    pub fn put_file(&self, root_uri: &str, path: &str, bytes: &[u8]) {
        let key = (root_uri.to_string(), path.to_string());
        self.state.borrow_mut().files.insert(key, bytes.to_vec());
    }

    pub fn file(&self, root_uri: &str, path: &str) -> Option<Vec<u8>> {
        let key = (root_uri.to_string(), path.to_string());
        self.state.borrow().files.get(&key).cloned()
    }

    pub fn writes(&self) -> usize {
        self.state.borrow().writes.len()
    }

    /// How many writes of this operation were made.
    pub fn writes_of(&self, op: &str) -> usize {
        let state = self.state.borrow();
        state.writes.iter().filter(|w| **w == op).count()
    }

    /// Where a tree's files are kept: its URI, or for a version's own files its name.
    pub fn files_key(root: &ArtifactRoot) -> String {
        match &root.owner {
            Owner::Version { model, version } => format!("versions/{model}/{version}"),
            _ => root.uri.clone(),
        }
    }

    fn file_url(&self, root: &ArtifactRoot, path: &str) -> Url {
        let mut url = Url::parse(&format!("http://{}/file", self.name)).expect("fake url");
        url.query_pairs_mut()
            .append_pair("root", &Self::files_key(root))
            .append_pair("path", path);
        url
    }
}

impl Tracking for FakeServer {
    fn server(&self) -> String {
        format!("http://{}", self.name)
    }

    fn get_run(&self, run_id: &str) -> Result<Run, CopyError> {
        let vanishes = self.vanishing.borrow().as_deref() == Some(run_id);
        if vanishes {
            self.vanishing.borrow_mut().take();
            self.with_run(run_id, |r| r.info.lifecycle_stage = "deleted".into())?;
        }
        let mut run = self.with_run(run_id, |r| r.clone())?;
        // Like MLflow: the run's metrics are the latest point of each key.
        let state = self.state.borrow();
        let mut latest: BTreeMap<&str, &Metric> = BTreeMap::new();
        for m in state.history.get(run_id).into_iter().flatten() {
            latest.insert(&m.key, m);
        }
        run.data.metrics = latest.into_values().cloned().collect();
        Ok(run)
    }

    fn runs_with_tags(
        &self,
        experiment_id: &str,
        tags: &[(&str, &str)],
    ) -> Result<Vec<Run>, CopyError> {
        let state = self.state.borrow();
        Ok(state
            .runs
            .iter()
            .filter(|r| r.info.experiment_id == experiment_id && !r.info.is_deleted())
            .filter(|r| tags.iter().all(|(k, v)| r.data.tag(k) == Some(*v)))
            .cloned()
            .collect())
    }

    fn create_run(&self, experiment_id: &str, new: &NewRun) -> Result<RunInfo, CopyError> {
        self.write("create_run")?;
        let run = Run {
            info: RunInfo {
                run_name: new.run_name.clone(),
                user_id: new.user_id.clone(),
                status: Some("RUNNING".into()),
                start_time: new.start_time,
                ..RunInfo::default()
            },
            data: RunData {
                tags: new.tags.clone(),
                ..RunData::default()
            },
            ..Run::default()
        };
        let id = self.add_run(experiment_id, run, Vec::new());
        self.answer("create_run", self.run(&id).info)
    }

    fn update_run(
        &self,
        run_id: &str,
        status: &str,
        end_time: Option<i64>,
    ) -> Result<(), CopyError> {
        self.write("update_run")?;
        self.with_run(run_id, |r| {
            r.info.status = Some(status.to_string());
            r.info.end_time = end_time.or(r.info.end_time);
        })
    }

    fn delete_run(&self, run_id: &str) -> Result<(), CopyError> {
        self.write("delete_run")?;
        self.with_run(run_id, |r| r.info.lifecycle_stage = "deleted".into())
    }

    fn delete_tag(&self, run_id: &str, key: &str) -> Result<(), CopyError> {
        self.write("delete_tag")?;
        self.with_run(run_id, |r| r.data.tags.retain(|t| t.key != key))
    }

    fn log_batch_call(&self, run_id: &str, params: &[KeyValue], tags: &[KeyValue]) -> Call<'_, ()> {
        Call::Done(self.log_params_and_tags(run_id, params, tags))
    }

    fn log_metrics_call(&self, run_id: &str, batch: &[Metric]) -> Call<'_, ()> {
        Call::Done(self.log_metric_batch(run_id, batch))
    }

    fn history_page_call(
        &self,
        run_id: &str,
        key: &str,
        token: Option<&str>,
    ) -> Call<'_, HistoryPage> {
        Call::Done(self.history_page(run_id, key, token.map(str::to_string)))
    }

    fn log_inputs(&self, run_id: &str, datasets: &[DatasetInput]) -> Result<(), CopyError> {
        self.write("log_inputs")?;
        self.with_run(run_id, |r| {
            for d in datasets {
                if !r.inputs.dataset_inputs.contains(d) {
                    r.inputs.dataset_inputs.push(d.clone());
                }
            }
        })
    }

    fn log_model_inputs(&self, run_id: &str, model_ids: &[String]) -> Result<(), CopyError> {
        self.write("log_model_inputs")?;
        self.with_run(run_id, |r| {
            for id in model_ids {
                r.inputs.model_inputs.push(ModelInput {
                    model_id: id.clone(),
                });
            }
        })
    }

    fn log_outputs(&self, run_id: &str, models: &[ModelOutput]) -> Result<(), CopyError> {
        self.write("log_outputs")?;
        self.with_run(run_id, |r| {
            r.outputs.model_outputs.extend_from_slice(models)
        })
    }

    fn experiment_by_name(&self, name: &str) -> Result<Option<Experiment>, CopyError> {
        let state = self.state.borrow();
        Ok(state.experiments.iter().find(|e| e.name == name).cloned())
    }

    fn create_experiment(&self, name: &str) -> Result<String, CopyError> {
        self.write("create_experiment")?;
        let id = self.id("exp");
        self.state.borrow_mut().experiments.push(Experiment {
            experiment_id: id.clone(),
            name: name.to_string(),
            artifact_location: format!("fake://{}/{id}", self.name),
            lifecycle_stage: "active".into(),
            tags: Vec::new(),
        });
        self.answer("create_experiment", id)
    }

    fn experiment_by_id(&self, experiment_id: &str) -> Result<Experiment, CopyError> {
        let state = self.state.borrow();
        let found = state
            .experiments
            .iter()
            .find(|e| e.experiment_id == experiment_id);
        found
            .cloned()
            .ok_or_else(|| self.not_found(format!("experiment {experiment_id}")))
    }

    fn set_experiment_tag(&self, experiment_id: &str, tag: &KeyValue) -> Result<(), CopyError> {
        self.write("set_experiment_tag")?;
        let mut state = self.state.borrow_mut();
        let Some(experiment) = state
            .experiments
            .iter_mut()
            .find(|e| e.experiment_id == experiment_id)
        else {
            return Err(self.not_found(format!("experiment {experiment_id}")));
        };
        experiment.tags.retain(|t| t.key != tag.key);
        experiment.tags.push(tag.clone());
        Ok(())
    }

    /// Pages of two runs, so that paging is exercised; `filter` is `tags.KEY = 'VALUE'` or empty.
    fn runs_page(
        &self,
        experiment_id: &str,
        filter: &str,
        token: Option<&str>,
    ) -> Result<RunsPage, CopyError> {
        let wanted = filter
            .strip_prefix("tags.")
            .and_then(|f| f.split_once(" = "))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()));
        let state = self.state.borrow();
        let mut runs: Vec<Run> = state
            .runs
            .iter()
            .filter(|r| r.info.experiment_id == experiment_id && !r.info.is_deleted())
            .filter(|r| match &wanted {
                Some((k, v)) => r.data.tag(k) == Some(v.as_str()),
                None => true,
            })
            .cloned()
            .collect();
        runs.sort_by_key(|r| std::cmp::Reverse(r.info.start_time));
        let start: usize = token.map_or(0, |t| t.parse().expect("fake page token"));
        let next = (start + 2 < runs.len()).then(|| (start + 2).to_string());
        Ok(RunsPage {
            runs: runs.into_iter().skip(start).take(2).collect(),
            next_token: next,
        })
    }

    fn get_logged_model(&self, model_id: &str) -> Result<LoggedModel, CopyError> {
        let state = self.state.borrow();
        let found = state.models.iter().find(|m| m.info.model_id == model_id);
        found
            .cloned()
            .ok_or_else(|| self.not_found(format!("logged model {model_id}")))
    }

    fn logged_models_of_run(
        &self,
        experiment_id: &str,
        run_id: &str,
    ) -> Result<Vec<LoggedModel>, CopyError> {
        let state = self.state.borrow();
        Ok(state
            .models
            .iter()
            .filter(|m| m.info.experiment_id == experiment_id)
            .filter(|m| m.info.source_run_id.as_deref() == Some(run_id))
            .cloned()
            .collect())
    }

    fn logged_models_with_tag(
        &self,
        experiment_id: &str,
        key: &str,
        value: &str,
    ) -> Result<Vec<LoggedModel>, CopyError> {
        let state = self.state.borrow();
        Ok(state
            .models
            .iter()
            .filter(|m| m.info.experiment_id == experiment_id && m.info.tag(key) == Some(value))
            .cloned()
            .collect())
    }

    fn create_logged_model(
        &self,
        experiment_id: &str,
        new: &NewLoggedModel,
    ) -> Result<LoggedModel, CopyError> {
        self.write("create_logged_model")?;
        let mut keys: Vec<&str> = new.tags.iter().map(|t| t.key.as_str()).collect();
        keys.sort_unstable();
        if keys.windows(2).any(|w| w[0] == w[1]) {
            // As OSS's SQL store answers a repeated tag key.
            return Err(CopyError::upstream(
                "UNIQUE constraint failed: logged model tag key",
            ));
        }
        let id = self.id("m-");
        let model = LoggedModel {
            info: LoggedModelInfo {
                model_id: id.clone(),
                experiment_id: experiment_id.to_string(),
                name: new.name.clone(),
                artifact_uri: format!("fake://{}/{experiment_id}/models/{id}/artifacts", self.name),
                status: Some("LOGGED_MODEL_PENDING".into()),
                model_type: new.model_type.clone(),
                source_run_id: new.source_run_id.clone(),
                tags: new.tags.clone(),
                ..LoggedModelInfo::default()
            },
            data: LoggedModelData {
                params: new.params.clone(),
                metrics: Vec::new(),
            },
        };
        self.state.borrow_mut().models.push(model.clone());
        self.answer("create_logged_model", model)
    }

    fn finalize_logged_model(&self, model_id: &str, status: &str) -> Result<(), CopyError> {
        self.write("finalize_logged_model")?;
        let mut state = self.state.borrow_mut();
        let model = state
            .models
            .iter_mut()
            .find(|m| m.info.model_id == model_id);
        model.expect("model exists").info.status = Some(status.to_string());
        Ok(())
    }

    fn delete_logged_model(&self, model_id: &str) -> Result<(), CopyError> {
        self.write("delete_logged_model")?;
        self.state
            .borrow_mut()
            .models
            .retain(|m| m.info.model_id != model_id);
        Ok(())
    }

    fn traces(&self) -> Option<&dyn super::Traces> {
        Some(self)
    }
}

impl Registry for FakeServer {
    fn server(&self) -> String {
        format!("http://{}", self.name)
    }

    fn supports_stages(&self) -> bool {
        !self.unity_catalog.get()
    }

    fn tag_key(&self, key: &str) -> String {
        match self.unity_catalog.get() {
            true => crate::stores::databricks::unity_catalog::uc_tag_key(key),
            false => key.to_string(),
        }
    }

    fn requires_signature(&self) -> bool {
        self.unity_catalog.get()
    }

    fn keeps_version_files(&self) -> bool {
        self.unity_catalog.get()
    }

    fn finalize_version(&self, name: &str, version: &str) -> Result<ModelVersion, CopyError> {
        self.write("finalize_version")?;
        let key = format!("versions/{name}/{version}");
        if self.file(&key, "MLmodel").is_none() {
            return Err(CopyError::bad_input(format!(
                "{name}/{version} has no MLmodel"
            )));
        }
        let mut state = self.state.borrow_mut();
        let found = state.versions.iter_mut().find(|v| {
            v.name == name
                && v.version == version
                && v.status.as_deref() == Some("PENDING_REGISTRATION")
        });
        let found = found
            .ok_or_else(|| CopyError::bad_input(format!("{name}/{version} is not pending")))?;
        found.status = Some("READY".into());
        Ok(found.clone())
    }

    fn check_model_name(&self, name: &str) -> Result<(), CopyError> {
        if name.contains('/') {
            return Err(CopyError::bad_input(format!(
                "{name:?} is not a valid name"
            )));
        }
        Ok(())
    }

    fn registered_model(&self, name: &str) -> Result<Option<RegisteredModel>, CopyError> {
        Ok(self
            .state
            .borrow()
            .registered
            .iter()
            .find(|m| m.name == name)
            .cloned())
    }

    fn create_registered_model(
        &self,
        name: &str,
        description: Option<&str>,
        tags: &[KeyValue],
    ) -> Result<(), CopyError> {
        self.write("create_registered_model")?;
        if self.registered_model(name)?.is_some() {
            return Err(CopyError {
                code: Some("RESOURCE_ALREADY_EXISTS".into()),
                ..CopyError::bad_input(format!("registered model {name} exists"))
            });
        }
        self.state.borrow_mut().registered.push(RegisteredModel {
            name: name.to_string(),
            description: description.map(str::to_string),
            tags: tags.to_vec(),
            aliases: Vec::new(),
        });
        self.answer("create_registered_model", ())
    }

    fn model_version(&self, name: &str, version: &str) -> Result<ModelVersion, CopyError> {
        let state = self.state.borrow();
        let found = state
            .versions
            .iter()
            .find(|v| v.name == name && v.version == version);
        found
            .cloned()
            .ok_or_else(|| self.not_found(format!("model version {name}/{version}")))
    }

    fn versions(&self, name: &str) -> Result<Vec<ModelVersion>, CopyError> {
        let state = self.state.borrow();
        Ok(state
            .versions
            .iter()
            .filter(|v| v.name == name)
            .cloned()
            .collect())
    }

    fn create_model_version(
        &self,
        name: &str,
        new: &NewVersion,
    ) -> Result<ModelVersion, CopyError> {
        self.write("create_model_version")?;
        if self.registered_model(name)?.is_none() {
            return Err(self.not_found(format!("registered model {name}")));
        }
        let version = (self.versions(name)?.len() + 1).to_string();
        let created = ModelVersion {
            name: name.to_string(),
            version,
            source: new.source.clone(),
            run_id: new.run_id.clone(),
            model_id: new.model_id.clone(),
            status: Some(
                if self.unity_catalog.get() {
                    "PENDING_REGISTRATION"
                } else {
                    "READY"
                }
                .into(),
            ),
            description: new.description.clone(),
            current_stage: Some("None".into()),
            tags: new.tags.clone(),
            ..ModelVersion::default()
        };
        self.state.borrow_mut().versions.push(created.clone());
        self.answer("create_model_version", created)
    }

    fn set_version_tag(
        &self,
        name: &str,
        version: &str,
        key: &str,
        value: &str,
    ) -> Result<(), CopyError> {
        self.write("set_version_tag")?;
        let mut state = self.state.borrow_mut();
        let found = state
            .versions
            .iter_mut()
            .find(|v| v.name == name && v.version == version);
        let tags = &mut found.expect("version exists").tags;
        tags.retain(|t| t.key != key);
        tags.push(KeyValue::new(key, value));
        Ok(())
    }

    fn transition_stage(&self, name: &str, version: &str, stage: &str) -> Result<(), CopyError> {
        self.write("transition_stage")?;
        let mut state = self.state.borrow_mut();
        let found = state
            .versions
            .iter_mut()
            .find(|v| v.name == name && v.version == version);
        found.expect("version exists").current_stage = Some(stage.to_string());
        Ok(())
    }

    fn set_alias(&self, name: &str, alias: &str, version: &str) -> Result<(), CopyError> {
        self.write("set_alias")?;
        let mut state = self.state.borrow_mut();
        let model = state.registered.iter_mut().find(|m| m.name == name);
        let model = model.expect("registered model exists");
        model.aliases.retain(|a| a.alias != alias);
        model.aliases.push(RegisteredModelAlias {
            alias: alias.to_string(),
            version: version.to_string(),
        });
        Ok(())
    }

    fn model_grants(&self, name: &str) -> Result<Option<Vec<Grant>>, CopyError> {
        let state = self.state.borrow();
        Ok(state.grants.as_ref().map(|grants| {
            grants
                .iter()
                .filter(|(model, _)| model == name)
                .map(|(_, g)| g.clone())
                .collect()
        }))
    }

    fn grant_model_permission(&self, name: &str, grant: &Grant) -> Result<(), CopyError> {
        self.write("grant_model_permission")?;
        let mut state = self.state.borrow_mut();
        if !state.users.contains(&grant.principal) {
            return Err(CopyError::not_found(format!(
                "user {} not found",
                grant.principal
            )));
        }
        let grants = state.grants.get_or_insert_with(Vec::new);
        grants.push((name.to_string(), grant.clone()));
        Ok(())
    }
}

impl Artifacts for FakeServer {
    fn list(&self, root: &ArtifactRoot) -> Result<Vec<FileEntry>, CopyError> {
        let state = self.state.borrow();
        Ok(state
            .files
            .iter()
            .filter(|((uri, _), _)| *uri == Self::files_key(root))
            .map(|((_, path), bytes)| FileEntry {
                path: path.clone(),
                size: bytes.len() as u64,
            })
            .collect())
    }

    fn downloads(&self, root: &ArtifactRoot, paths: &[&str]) -> Result<Vec<Download>, CopyError> {
        let get = |path: &&str| Download::get(Request::new(Method::Get, self.file_url(root, path)));
        Ok(paths.iter().map(get).collect())
    }

    fn uploads(&self, root: &ArtifactRoot, files: &[&FileEntry]) -> Result<Vec<Upload>, CopyError> {
        let put =
            |f: &&FileEntry| Upload::put(Request::new(Method::Put, self.file_url(root, &f.path)));
        Ok(files.iter().map(put).collect())
    }

    fn read_small(&self, root: &ArtifactRoot, path: &str) -> Result<Vec<u8>, CopyError> {
        self.file(&Self::files_key(root), path)
            .ok_or_else(|| self.not_found(format!("artifact {path}")))
    }

    fn write_small(&self, root: &ArtifactRoot, path: &str, body: Vec<u8>) -> Result<(), CopyError> {
        self.write("write_small")?;
        self.put_file(&Self::files_key(root), path, &body);
        Ok(())
    }
}

/// Streams files between fake servers, found by the host name of a request's URL.
pub struct FakeHttp {
    pub servers: Vec<Rc<FakeServer>>,
}

impl FakeHttp {
    fn file<'a>(&'a self, request: &Request) -> (&'a FakeServer, String, String) {
        let host = request.url.host_str().unwrap_or_default();
        let server = self
            .servers
            .iter()
            .find(|s| s.name == host)
            .expect("known fake");
        let query: BTreeMap<String, String> = request.url.query_pairs().into_owned().collect();
        (server, query["root"].clone(), query["path"].clone())
    }
}

impl Http for FakeHttp {
    fn send(&self, request: &Request) -> Result<Response, SendError> {
        panic!(
            "the stores talk to fakes directly; unexpected request {}",
            request.describe()
        )
    }

    fn stream(
        &self,
        next: NextJob,
        _slots: Slots,
        calls: &mut dyn Attempts,
        events: &mut dyn FnMut(StreamEvent),
    ) {
        // The fake stores answer their calls at once (`Call::Done`): nothing reaches the wire.
        send_each(self, calls);
        while let Some((id, job)) = next() {
            let (src, root, path) = self.file(&job.download);
            let (dst, dst_root, dst_path) = self.file(&job.parts[0].request);
            let result = match (src.file(&root, &path), dst.check("upload")) {
                (None, _) => Err(StreamFailure {
                    message: format!("source answered HTTP 404 for {path}"),
                    retryable: false,
                    retry_after: None,
                    status: Some(404),
                    end: None,
                }),
                (Some(_), Err(e)) => Err(StreamFailure {
                    message: e.message,
                    retryable: false,
                    retry_after: None,
                    status: Some(500),
                    end: None,
                }),
                (Some(bytes), Ok(())) => {
                    dst.state.borrow_mut().writes.push("upload");
                    dst.put_file(&dst_root, &dst_path, &bytes);
                    events(StreamEvent::Bytes(bytes.len() as u64));
                    Ok(bytes.len() as u64)
                }
            };
            events(StreamEvent::Finished { id, result });
        }
    }

    fn digest(
        &self,
        downloads: &[(Request, u64)],
        _concurrency: usize,
    ) -> Vec<Result<Digest, StreamFailure>> {
        downloads
            .iter()
            .map(|(request, _)| {
                let (store, root, path) = self.file(request);
                store
                    .file(&root, &path)
                    .map(|bytes| Digest::of(&bytes))
                    .ok_or_else(|| StreamFailure {
                        message: format!("source answered HTTP 404 for {path}"),
                        retryable: false,
                        retry_after: None,
                        status: Some(404),
                        end: None,
                    })
            })
            .collect()
    }
}
