//! The component's exports: the `mlflow:copy/copier` interface and `wasi:cli/run`.

use crate::api::{self, CopyError, CopyRunRequest};
use crate::engine::progress::Silent;

wit_bindgen::generate!({
    path: "wit",
    world: "mlflow-copy",
    generate_all,
});

use exports::mlflow::copy::copier::{self as wit};

struct Component;

impl wit::Guest for Component {
    fn copy_run(request: wit::CopyRunRequest) -> Result<wit::CopyRunReport, wit::CopyError> {
        let request = CopyRunRequest {
            run_id: request.run_id,
            experiment_name: request.experiment_name,
            src_mlflow_uri: request.src_mlflow_uri,
            dst_mlflow_uri: request.dst_mlflow_uri,
            copy_children: request.copy_children.unwrap_or(false),
            concurrency: request.concurrency.unwrap_or(api::DEFAULT_CONCURRENCY),
        };
        let report = super::execute_copy_run(super::wasi_host(), &request, &mut Silent)
            .map_err(to_wit_error)?;
        Ok(wit::CopyRunReport {
            src_run_id: report.src_run_id,
            dst_run_id: report.dst_run_id,
            dst_experiment_id: report.dst_experiment_id,
            outcome: report.outcome.as_str().to_string(),
            params: report.params,
            tags: report.tags,
            metric_points: report.metric_points,
            dataset_inputs: report.dataset_inputs,
            logged_models: report.logged_models,
            artifact_files: report.artifact_files,
            artifact_bytes: report.artifact_bytes,
            artifact_files_skipped: report.artifact_files_skipped,
            child_run_ids: report.child_run_ids,
            elapsed_seconds: report.elapsed_seconds,
        })
    }
}

fn to_wit_error(e: CopyError) -> wit::CopyError {
    match e.kind {
        api::ErrorKind::BadInput => wit::CopyError::BadInput(e.message),
        api::ErrorKind::NotFound => wit::CopyError::NotFound(e.message),
        api::ErrorKind::Unauthorized => wit::CopyError::Unauthorized(e.message),
        api::ErrorKind::Conflict => wit::CopyError::Conflict(e.message),
        api::ErrorKind::Upstream => wit::CopyError::Upstream(e.message),
    }
}

impl exports::wasi::cli::run::Guest for Component {
    fn run() -> Result<(), ()> {
        if super::cli::main(std::env::args().collect()) {
            Ok(())
        } else {
            Err(())
        }
    }
}

export!(Component);
