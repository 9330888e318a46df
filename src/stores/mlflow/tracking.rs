//! Tracking API calls: experiments, runs, metrics, inputs/outputs and MLflow 3 logged models.

use super::rest::{all_pages, filter_literal, MlflowRest, Page};
use crate::api::CopyError;
use crate::stores::model::*;
use crate::stores::{Call, HistoryPage, RunsPage, Tracking};
use serde::Deserialize;
use serde_json::{json, Value};

/// Most points one metric-history page asks for (Databricks allows up to 25,000). Several
/// pages are in flight at once in the metric pipeline: 10,000 keeps each answer near 1 MiB.
const HISTORY_PAGE: &str = "10000";

const GET_HISTORY: &str = "/api/2.0/mlflow/metrics/get-history";
const LOG_BATCH: &str = "/api/2.0/mlflow/runs/log-batch";

#[derive(Deserialize)]
struct RunEnvelope {
    run: Run,
}

#[derive(Deserialize)]
struct ExperimentEnvelope {
    experiment: Experiment,
}

#[derive(Deserialize)]
struct ModelEnvelope {
    model: LoggedModel,
}

/// The query of one metric-history page.
fn history_query<'a>(
    run_id: &'a str,
    key: &'a str,
    token: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut query = vec![
        ("run_id", run_id),
        ("metric_key", key),
        ("max_results", HISTORY_PAGE),
    ];
    query.extend(token.map(|t| ("page_token", t)));
    query
}

impl MlflowRest {
    fn run_exists(&self, run_id: &str) -> Result<bool, CopyError> {
        match self.get_run(run_id) {
            Ok(_) => Ok(true),
            Err(e) if e.has_code("RESOURCE_DOES_NOT_EXIST") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// All runs of the experiments that match `filter`; `view` is `ACTIVE_ONLY` or `ALL`.
    fn search_runs(
        &self,
        experiment_ids: &[&str],
        filter: &str,
        view: &str,
    ) -> Result<Vec<Run>, CopyError> {
        all_pages(|token| {
            let mut body = json!({
                "experiment_ids": experiment_ids, "filter": filter,
                "run_view_type": view, "max_results": 1000,
            });
            if let Some(t) = token {
                body["page_token"] = json!(t);
            }
            self.post("/api/2.0/mlflow/runs/search", &body)
        })
    }

    fn search_logged_models(
        &self,
        experiment_id: &str,
        filter: &str,
    ) -> Result<Vec<LoggedModel>, CopyError> {
        all_pages(|token| {
            let mut body =
                json!({ "experiment_ids": [experiment_id], "filter": filter, "max_results": 50 });
            if let Some(t) = token {
                body["page_token"] = json!(t);
            }
            self.post("/api/2.0/mlflow/logged-models/search", &body)
        })
    }
}

impl Tracking for MlflowRest {
    fn server(&self) -> String {
        self.base_display()
    }

    fn check_experiment_name(&self, name: &str) -> Result<(), CopyError> {
        self.flavor().check_experiment_name(self, name)
    }

    fn get_run(&self, run_id: &str) -> Result<Run, CopyError> {
        self.get::<RunEnvelope>("/api/2.0/mlflow/runs/get", &[("run_id", run_id)])
            .map(|e| e.run)
    }

    fn runs_with_tags(
        &self,
        experiment_id: &str,
        tags: &[(&str, &str)],
    ) -> Result<Vec<Run>, CopyError> {
        let filter = tags
            .iter()
            .map(|(key, value)| format!("tags.`{key}` = {}", filter_literal(value)))
            .collect::<Vec<_>>()
            .join(" and ");
        self.search_runs(&[experiment_id], &filter, "ACTIVE_ONLY")
    }

    fn create_run(&self, experiment_id: &str, run: &NewRun) -> Result<RunInfo, CopyError> {
        let tags = self.flavor().writable_tags(&run.tags);
        let mut body = json!({ "experiment_id": experiment_id, "tags": tags });
        if let Some(name) = &run.run_name {
            body["run_name"] = json!(name);
        }
        if let Some(t) = run.start_time {
            body["start_time"] = json!(t);
        }
        if let Some(user) = run
            .user_id
            .as_ref()
            .filter(|_| self.flavor().takes_run_user())
        {
            body["user_id"] = json!(user);
        }
        self.create::<RunEnvelope>("/api/2.0/mlflow/runs/create", &body)
            .map(|e| e.run.info)
    }

    fn update_run(
        &self,
        run_id: &str,
        status: &str,
        end_time: Option<i64>,
    ) -> Result<(), CopyError> {
        let mut body = json!({ "run_id": run_id, "status": status });
        if let Some(t) = end_time {
            body["end_time"] = json!(t);
        }
        self.post::<Value>("/api/2.0/mlflow/runs/update", &body)
            .map(drop)
    }

    fn delete_run(&self, run_id: &str) -> Result<(), CopyError> {
        self.post::<Value>("/api/2.0/mlflow/runs/delete", &json!({ "run_id": run_id }))
            .map(drop)
    }

    fn delete_tag(&self, run_id: &str, key: &str) -> Result<(), CopyError> {
        let body = json!({ "run_id": run_id, "key": key });
        match self.post::<Value>("/api/2.0/mlflow/runs/delete-tag", &body) {
            // Already gone: an earlier attempt's answer was lost after the server acted.
            Err(e) if e.has_code("RESOURCE_DOES_NOT_EXIST") && self.run_exists(run_id)? => Ok(()),
            other => other.map(drop),
        }
    }

    fn history_page_call(
        &self,
        run_id: &str,
        key: &str,
        token: Option<&str>,
    ) -> Call<'_, HistoryPage> {
        let request = self.get_request(GET_HISTORY, &history_query(run_id, key, token));
        self.prepare::<Page<Metric>>(request)
            .map(|page| HistoryPage {
                points: page.items,
                next_token: page.next_page_token.filter(|t| !t.is_empty()),
            })
    }

    fn log_metrics_call(&self, run_id: &str, batch: &[Metric]) -> Call<'_, ()> {
        let body = json!({ "run_id": run_id, "metrics": batch });
        self.prepare::<Value>(self.post_request(LOG_BATCH, &body))
            .map(drop)
    }

    fn log_batch_call(&self, run_id: &str, params: &[KeyValue], tags: &[KeyValue]) -> Call<'_, ()> {
        let tags = self.flavor().writable_tags(tags);
        if params.is_empty() && tags.is_empty() {
            return Call::Done(Ok(()));
        }
        let body = json!({ "run_id": run_id, "params": params, "tags": tags });
        self.prepare::<Value>(self.post_request(LOG_BATCH, &body))
            .map(drop)
    }

    fn log_inputs(&self, run_id: &str, datasets: &[DatasetInput]) -> Result<(), CopyError> {
        let body = json!({ "run_id": run_id, "datasets": datasets });
        // Two writers logging the same new dataset into one experiment at once (identical
        // copies racing) make the server's SQL store refuse the second insert; by the time it
        // is sent again, the dataset exists and the call succeeds.
        let mut attempt = 0;
        loop {
            match self.post::<Value>("/api/2.0/mlflow/runs/log-inputs", &body) {
                Err(e) if attempt < 3 && e.message.contains("UNIQUE constraint failed") => {
                    attempt += 1;
                    crate::transport::sleep(std::time::Duration::from_millis(200 * attempt));
                }
                done => return done.map(drop),
            }
        }
    }

    fn log_model_inputs(&self, run_id: &str, model_ids: &[String]) -> Result<(), CopyError> {
        let models: Vec<Value> = model_ids
            .iter()
            .map(|id| json!({ "model_id": id }))
            .collect();
        let body = json!({ "run_id": run_id, "models": models });
        self.post::<Value>("/api/2.0/mlflow/runs/log-inputs", &body)
            .map(drop)
    }

    fn log_outputs(&self, run_id: &str, models: &[ModelOutput]) -> Result<(), CopyError> {
        let body = json!({ "run_id": run_id, "models": models });
        self.post::<Value>("/api/2.0/mlflow/runs/outputs", &body)
            .map(drop)
    }

    fn experiment_by_name(&self, name: &str) -> Result<Option<Experiment>, CopyError> {
        match self.get::<ExperimentEnvelope>(
            "/api/2.0/mlflow/experiments/get-by-name",
            &[("experiment_name", name)],
        ) {
            Ok(e) => Ok(Some(e.experiment)),
            Err(e) if e.has_code("RESOURCE_DOES_NOT_EXIST") => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn experiment_by_id(&self, experiment_id: &str) -> Result<Experiment, CopyError> {
        self.get::<ExperimentEnvelope>(
            "/api/2.0/mlflow/experiments/get",
            &[("experiment_id", experiment_id)],
        )
        .map(|e| e.experiment)
    }

    fn set_experiment_tag(&self, experiment_id: &str, tag: &KeyValue) -> Result<(), CopyError> {
        let body = json!({ "experiment_id": experiment_id, "key": tag.key, "value": tag.value });
        self.post::<Value>("/api/2.0/mlflow/experiments/set-experiment-tag", &body)
            .map(drop)
    }

    fn runs_page(
        &self,
        experiment_id: &str,
        filter: &str,
        token: Option<&str>,
    ) -> Result<RunsPage, CopyError> {
        let mut body = json!({
            "experiment_ids": [experiment_id], "filter": filter,
            "run_view_type": "ACTIVE_ONLY", "max_results": 1000,
        });
        if let Some(t) = token {
            body["page_token"] = json!(t);
        }
        let page: Page<Run> = self.post("/api/2.0/mlflow/runs/search", &body)?;
        Ok(RunsPage {
            runs: page.items,
            next_token: page.next_page_token.filter(|t| !t.is_empty()),
        })
    }

    fn create_experiment(&self, name: &str) -> Result<String, CopyError> {
        self.flavor().check_experiment_name(self, name)?;
        self.flavor().before_create_experiment(self, name)?;
        let v: Value = self.create(
            "/api/2.0/mlflow/experiments/create",
            &json!({ "name": name }),
        )?;
        Ok(str_field(&v, "experiment_id"))
    }

    fn get_logged_model(&self, model_id: &str) -> Result<LoggedModel, CopyError> {
        let path = format!("/api/2.0/mlflow/logged-models/{model_id}");
        self.get::<ModelEnvelope>(&path, &[]).map(|e| e.model)
    }

    fn logged_models_of_run(
        &self,
        experiment_id: &str,
        run_id: &str,
    ) -> Result<Vec<LoggedModel>, CopyError> {
        let filter = format!("source_run_id = {}", filter_literal(run_id));
        self.search_logged_models(experiment_id, &filter)
    }

    fn logged_models_with_tag(
        &self,
        experiment_id: &str,
        key: &str,
        value: &str,
    ) -> Result<Vec<LoggedModel>, CopyError> {
        let filter = format!("tags.`{key}` = {}", filter_literal(value));
        self.search_logged_models(experiment_id, &filter)
    }

    fn create_logged_model(
        &self,
        experiment_id: &str,
        model: &NewLoggedModel,
    ) -> Result<LoggedModel, CopyError> {
        let mut body = json!({
            "experiment_id": experiment_id, "name": model.name,
            "params": model.params, "tags": self.flavor().writable_tags(&model.tags),
        });
        if let Some(t) = model.model_type.as_deref().filter(|t| !t.is_empty()) {
            body["model_type"] = json!(t);
        }
        if let Some(run) = &model.source_run_id {
            body["source_run_id"] = json!(run);
        }
        self.create::<ModelEnvelope>("/api/2.0/mlflow/logged-models", &body)
            .map(|e| e.model)
    }

    fn finalize_logged_model(&self, model_id: &str, status: &str) -> Result<(), CopyError> {
        let path = format!("/api/2.0/mlflow/logged-models/{model_id}");
        // OSS wants the path's model id repeated in the body.
        self.patch::<Value>(&path, &json!({ "model_id": model_id, "status": status }))
            .map(drop)
    }

    fn delete_logged_model(&self, model_id: &str) -> Result<(), CopyError> {
        let path = format!("/api/2.0/mlflow/logged-models/{model_id}");
        self.delete::<Value>(&path, &json!({})).map(drop)
    }

    fn writable_tags(&self, tags: &[KeyValue]) -> Vec<KeyValue> {
        self.flavor().writable_tags(tags)
    }

    fn traces(&self) -> Option<&dyn crate::stores::Traces> {
        Some(self)
    }
}

fn str_field(v: &Value, name: &str) -> String {
    v.get(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}
