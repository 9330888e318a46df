//! Tracking API calls: experiments, runs, metrics, inputs/outputs and MLflow 3 logged models.

use super::rest::{all_pages, for_each_page, MlflowRest, Page};
use super::types::*;
use crate::api::CopyError;
use serde::Deserialize;
use serde_json::{json, Value};

/// Most points one metric-history page asks for (Databricks' maximum; OSS accepts it too).
pub const HISTORY_PAGE: usize = 25_000;

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

impl MlflowRest {
    pub fn get_run(&self, run_id: &str) -> Result<Run, CopyError> {
        self.get::<RunEnvelope>("/api/2.0/mlflow/runs/get", &[("run_id", run_id)])
            .map(|e| e.run)
    }

    /// The experiment of that name, active or deleted, if any.
    pub fn experiment_by_name(&self, name: &str) -> Result<Option<Experiment>, CopyError> {
        match self.get::<ExperimentEnvelope>(
            "/api/2.0/mlflow/experiments/get-by-name",
            &[("experiment_name", name)],
        ) {
            Ok(e) => Ok(Some(e.experiment)),
            Err(e) if e.has_code("RESOURCE_DOES_NOT_EXIST") => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn create_experiment(&self, name: &str) -> Result<String, CopyError> {
        let v: Value = self.create(
            "/api/2.0/mlflow/experiments/create",
            &json!({ "name": name }),
        )?;
        Ok(str_field(&v, "experiment_id"))
    }

    pub fn create_run(
        &self,
        experiment_id: &str,
        run_name: Option<&str>,
        start_time: Option<i64>,
        user_id: Option<&str>,
        tags: &[KeyValue],
    ) -> Result<RunInfo, CopyError> {
        let mut body = json!({ "experiment_id": experiment_id, "tags": tags });
        if let Some(name) = run_name {
            body["run_name"] = json!(name);
        }
        if let Some(t) = start_time {
            body["start_time"] = json!(t);
        }
        if let Some(user) = user_id {
            body["user_id"] = json!(user);
        }
        self.create::<RunEnvelope>("/api/2.0/mlflow/runs/create", &body)
            .map(|e| e.run.info)
    }

    pub fn update_run(
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

    pub fn delete_run(&self, run_id: &str) -> Result<(), CopyError> {
        self.post::<Value>("/api/2.0/mlflow/runs/delete", &json!({ "run_id": run_id }))
            .map(drop)
    }

    pub fn set_tag(&self, run_id: &str, key: &str, value: &str) -> Result<(), CopyError> {
        let body = json!({ "run_id": run_id, "key": key, "value": value });
        self.post::<Value>("/api/2.0/mlflow/runs/set-tag", &body)
            .map(drop)
    }

    pub fn delete_tag(&self, run_id: &str, key: &str) -> Result<(), CopyError> {
        let body = json!({ "run_id": run_id, "key": key });
        self.post::<Value>("/api/2.0/mlflow/runs/delete-tag", &body)
            .map(drop)
    }

    pub fn log_batch(
        &self,
        run_id: &str,
        metrics: &[Metric],
        params: &[KeyValue],
        tags: &[KeyValue],
    ) -> Result<(), CopyError> {
        let body = json!({ "run_id": run_id, "metrics": metrics, "params": params, "tags": tags });
        self.post::<Value>("/api/2.0/mlflow/runs/log-batch", &body)
            .map(drop)
    }

    /// Writes metric batches (each at most one log-batch request's worth), several at once.
    pub fn log_metric_batches(
        &self,
        run_id: &str,
        batches: &[Vec<Metric>],
        concurrency: usize,
    ) -> Result<(), CopyError> {
        let bodies: Vec<Value> = batches
            .iter()
            .map(|b| json!({ "run_id": run_id, "metrics": b }))
            .collect();
        self.post_many("/api/2.0/mlflow/runs/log-batch", &bodies, concurrency)
    }

    /// Calls `page` with each page of a metric's full history, in order.
    pub fn metric_history(
        &self,
        run_id: &str,
        key: &str,
        page: impl FnMut(Vec<Metric>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let max = HISTORY_PAGE.to_string();
        let fetch = |token: Option<&str>| {
            let mut query = vec![
                ("run_id", run_id),
                ("metric_key", key),
                ("max_results", max.as_str()),
            ];
            query.extend(token.map(|t| ("page_token", t)));
            self.get::<Page<Metric>>("/api/2.0/mlflow/metrics/get-history", &query)
        };
        for_each_page(fetch, page)
    }

    pub fn log_inputs(&self, run_id: &str, datasets: &[DatasetInput]) -> Result<(), CopyError> {
        let body = json!({ "run_id": run_id, "datasets": datasets });
        self.post::<Value>("/api/2.0/mlflow/runs/log-inputs", &body)
            .map(drop)
    }

    /// Records logged models the run used as inputs.
    pub fn log_model_inputs(&self, run_id: &str, model_ids: &[String]) -> Result<(), CopyError> {
        let models: Vec<Value> = model_ids
            .iter()
            .map(|id| json!({ "model_id": id }))
            .collect();
        let body = json!({ "run_id": run_id, "models": models });
        self.post::<Value>("/api/2.0/mlflow/runs/log-inputs", &body)
            .map(drop)
    }

    pub fn log_outputs(&self, run_id: &str, models: &[ModelOutput]) -> Result<(), CopyError> {
        let body = json!({ "run_id": run_id, "models": models });
        self.post::<Value>("/api/2.0/mlflow/runs/outputs", &body)
            .map(drop)
    }

    /// All runs of the experiments that match `filter`; `view` is `ACTIVE_ONLY` or `ALL`.
    pub fn search_runs(
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

    pub fn get_logged_model(&self, model_id: &str) -> Result<LoggedModel, CopyError> {
        let path = format!("/api/2.0/mlflow/logged-models/{model_id}");
        self.get::<ModelEnvelope>(&path, &[]).map(|e| e.model)
    }

    pub fn create_logged_model(
        &self,
        experiment_id: &str,
        source: &LoggedModelInfo,
        params: &[KeyValue],
        tags: &[KeyValue],
        source_run_id: Option<&str>,
    ) -> Result<LoggedModel, CopyError> {
        let mut body = json!({
            "experiment_id": experiment_id, "name": source.name, "params": params, "tags": tags,
        });
        if let Some(t) = source.model_type.as_deref().filter(|t| !t.is_empty()) {
            body["model_type"] = json!(t);
        }
        if let Some(run) = source_run_id {
            body["source_run_id"] = json!(run);
        }
        self.create::<ModelEnvelope>("/api/2.0/mlflow/logged-models", &body)
            .map(|e| e.model)
    }

    pub fn finalize_logged_model(&self, model_id: &str, status: &str) -> Result<(), CopyError> {
        let path = format!("/api/2.0/mlflow/logged-models/{model_id}");
        // OSS wants the path's model id repeated in the body.
        self.patch::<Value>(&path, &json!({ "model_id": model_id, "status": status }))
            .map(drop)
    }

    pub fn set_logged_model_tags(
        &self,
        model_id: &str,
        tags: &[KeyValue],
    ) -> Result<(), CopyError> {
        let path = format!("/api/2.0/mlflow/logged-models/{model_id}/tags");
        self.patch::<Value>(&path, &json!({ "model_id": model_id, "tags": tags }))
            .map(drop)
    }

    pub fn delete_logged_model_tag(&self, model_id: &str, key: &str) -> Result<(), CopyError> {
        let mut url = self.url(&format!("/api/2.0/mlflow/logged-models/{model_id}/tags/"));
        url.path_segments_mut()
            .expect("http url")
            .pop_if_empty()
            .push(key);
        let request = crate::transport::Request::new(crate::transport::Method::Delete, url);
        self.send(request, true).map(drop)
    }

    pub fn search_logged_models(
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

fn str_field(v: &Value, name: &str) -> String {
    v.get(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A single-quoted string literal for MLflow search filters.
pub fn filter_literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn filter_literals_escape_quotes() {
        assert_eq!(super::filter_literal("a'b"), r"'a\'b'");
        assert_eq!(super::filter_literal("http://h:1"), "'http://h:1'");
    }
}
