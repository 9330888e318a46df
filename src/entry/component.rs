//! The component's exports: the `mlflow:copy/copier` interface and `wasi:cli/run`. Only
//! translation between the WIT types and the shared `api` types happens here.

use crate::api::{self, CopyError, CopyModelVersionRequest, CopyRunReport, CopyRunRequest};
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
        let report = super::execute(
            super::wasi_host(crate::transport::Caller::User),
            &request,
            &mut Silent,
        )
        .map_err(to_wit_error)?;
        Ok(run_report(report))
    }

    fn copy_model_version(
        request: wit::CopyModelVersionRequest,
    ) -> Result<wit::CopyModelVersionReport, wit::CopyError> {
        let request = CopyModelVersionRequest {
            src_model: request.src_model,
            src_version: request.src_version,
            dst_model: request.dst_model,
            src_registry_uri: request.src_registry_uri,
            dst_registry_uri: request.dst_registry_uri,
            dst_experiment_name: request.dst_experiment_name,
            copy_permissions: request.copy_permissions.unwrap_or(false),
            copy_stages_and_aliases: request.copy_stages_and_aliases.unwrap_or(false),
            copy_lineage_tags: request.copy_lineage_tags.unwrap_or(false),
            concurrency: request.concurrency.unwrap_or(api::DEFAULT_CONCURRENCY),
        };
        let r = super::execute(
            super::wasi_host(crate::transport::Caller::User),
            &request,
            &mut Silent,
        )
        .map_err(to_wit_error)?;
        Ok(wit::CopyModelVersionReport {
            src_model: r.src_model,
            src_version: r.src_version,
            dst_model: r.dst_model,
            dst_version: r.dst_version,
            dst_run_id: r.dst_run_id,
            dst_source: r.dst_source,
            deep: r.deep,
            outcome: outcome(r.outcome),
            registered_model_created: r.registered_model_created,
            tags: r.tags,
            stage: r.stage,
            aliases: r.aliases,
            permissions: r.permissions,
            run: r.run.map(run_report),
            elapsed_seconds: r.elapsed_seconds,
        })
    }
}

fn run_report(report: CopyRunReport) -> wit::CopyRunReport {
    wit::CopyRunReport {
        src_run_id: report.src_run_id,
        dst_run_id: report.dst_run_id,
        dst_experiment_id: report.dst_experiment_id,
        outcome: outcome(report.outcome),
        params: report.params,
        tags: report.tags,
        metric_points: report.metric_points,
        dataset_inputs: report.dataset_inputs,
        logged_models: report.logged_models,
        artifact_files: report.artifact_files,
        artifact_bytes: report.artifact_bytes,
        artifact_files_skipped: report.artifact_files_skipped,
        traces: report.traces,
        assessments: report.assessments,
        prompts: report.prompts,
        child_run_ids: report.child_run_ids,
        elapsed_seconds: report.elapsed_seconds,
    }
}

fn outcome(outcome: api::Outcome) -> wit::Outcome {
    match outcome {
        api::Outcome::Created => wit::Outcome::Created,
        api::Outcome::Resumed => wit::Outcome::Resumed,
        api::Outcome::Existing => wit::Outcome::Existing,
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
