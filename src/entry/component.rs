//! The component's exports: the `mlflow:copy/copier` interface and `wasi:cli/run`. Only
//! translation between the WIT types and the shared `api` types happens here.

use crate::api::{
    self, CopyError, CopyExperimentRequest, CopyModelRequest, CopyModelVersionRequest,
    CopyRunReport, CopyRunRequest, MigrationReport, VerifyExperimentRequest,
    VerifyModelVersionRequest, VerifyRunRequest,
};
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
        Ok(run_report(run_quietly(&request)?))
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
        let r = run_quietly(&request)?;
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

    fn copy_experiment(
        request: wit::CopyExperimentRequest,
    ) -> Result<wit::MigrationReport, wit::CopyError> {
        migrate(&experiment_request(request))
    }

    fn copy_model(request: wit::CopyModelRequest) -> Result<wit::MigrationReport, wit::CopyError> {
        let request = CopyModelRequest {
            src_model: request.src_model,
            dst_model: request.dst_model,
            src_registry_uri: request.src_registry_uri,
            dst_registry_uri: request.dst_registry_uri,
            dst_experiment_name: request.dst_experiment_name,
            versions: request.versions,
            stages: request.stages,
            aliases: request.aliases,
            copy_permissions: request.copy_permissions.unwrap_or(false),
            copy_stages_and_aliases: request.copy_stages_and_aliases.unwrap_or(false),
            copy_lineage_tags: request.copy_lineage_tags.unwrap_or(false),
            dry_run: request.dry_run.unwrap_or(false),
            verify: request.verify.unwrap_or(false),
            via: request.via,
            parallel: request.parallel,
            concurrency: request.concurrency.unwrap_or(api::DEFAULT_CONCURRENCY),
        };
        migrate(&request)
    }

    fn verify_run(request: wit::VerifyRunRequest) -> Result<wit::VerifyReport, wit::CopyError> {
        let request = VerifyRunRequest {
            src_run_id: request.src_run_id,
            dst_run_id: request.dst_run_id,
            src_mlflow_uri: request.src_mlflow_uri,
            dst_mlflow_uri: request.dst_mlflow_uri,
        };
        run_quietly(&request).map(verify_report)
    }

    fn verify_experiment(
        request: wit::CopyExperimentRequest,
    ) -> Result<wit::ExperimentVerifyReport, wit::CopyError> {
        let request = VerifyExperimentRequest(experiment_request(request));
        let r = run_quietly(&request)?;
        Ok(wit::ExperimentVerifyReport {
            src_experiment_id: r.src_experiment_id,
            dst_experiment_id: r.dst_experiment_id,
            runs_compared: r.runs_compared,
            runs_differing: r.runs_differing,
            missing: r.missing,
            metric_points: r.metric_points,
            artifact_bytes: r.artifact_bytes,
            differences: r.differences,
        })
    }

    fn verify_model_version(
        request: wit::VerifyModelVersionRequest,
    ) -> Result<wit::ModelVersionVerifyReport, wit::CopyError> {
        let request = VerifyModelVersionRequest {
            src_model: request.src_model,
            src_version: request.src_version,
            dst_model: request.dst_model,
            src_registry_uri: request.src_registry_uri,
            dst_registry_uri: request.dst_registry_uri,
            dst_version: request.dst_version,
            dst_experiment_name: request.dst_experiment_name,
            copy_stages_and_aliases: request.copy_stages_and_aliases.unwrap_or(false),
            copy_lineage_tags: request.copy_lineage_tags.unwrap_or(false),
        };
        let r = run_quietly(&request)?;
        Ok(wit::ModelVersionVerifyReport {
            src_model: r.src_model,
            src_version: r.src_version,
            dst_model: r.dst_model,
            dst_version: r.dst_version,
            run: r.run.map(verify_report),
            differences: r.differences,
        })
    }
}

fn experiment_request(request: wit::CopyExperimentRequest) -> CopyExperimentRequest {
    CopyExperimentRequest {
        src_experiment_name: request.src_experiment_name,
        src_experiment_id: request.src_experiment_id,
        dst_experiment_name: request.dst_experiment_name,
        src_mlflow_uri: request.src_mlflow_uri,
        dst_mlflow_uri: request.dst_mlflow_uri,
        filter: request.filter,
        run_ids: request.run_ids,
        max_runs: request.max_runs,
        dry_run: request.dry_run.unwrap_or(false),
        verify: request.verify.unwrap_or(false),
        via: request.via,
        parallel: request.parallel,
        concurrency: request.concurrency.unwrap_or(api::DEFAULT_CONCURRENCY),
    }
}

/// Runs a request for a plugin host: no progress, the user's own servers.
fn run_quietly<R: super::CopyRequest>(request: &R) -> Result<R::Report, wit::CopyError> {
    super::execute(
        super::wasi_host(crate::transport::Caller::User),
        request,
        &mut Silent,
    )
    .map_err(to_wit_error)
}

fn verify_report(r: api::VerifyReport) -> wit::VerifyReport {
    wit::VerifyReport {
        src_run_id: r.src_run_id,
        dst_run_id: r.dst_run_id,
        params: r.params,
        tags: r.tags,
        metric_points: r.metric_points,
        dataset_inputs: r.dataset_inputs,
        logged_models: r.logged_models,
        artifact_files: r.artifact_files,
        artifact_bytes: r.artifact_bytes,
        traces: r.traces,
        differences: r.differences,
    }
}

/// Runs a bulk copy; its failed items are in the report, not an error.
fn migrate<R: super::CopyRequest<Report = MigrationReport>>(
    request: &R,
) -> Result<wit::MigrationReport, wit::CopyError> {
    let r = run_quietly(request)?;
    Ok(wit::MigrationReport {
        src: r.src,
        dst: r.dst,
        dry_run: r.dry_run,
        items: r.items.into_iter().map(migration_item).collect(),
        created: r.created,
        resumed: r.resumed,
        existing: r.existing,
        failed: r.failed,
        artifact_bytes: r.artifact_bytes,
        metric_points: r.metric_points,
        elapsed_seconds: r.elapsed_seconds,
    })
}

fn migration_item(item: api::MigrationItem) -> wit::MigrationItem {
    let status = match item.status {
        api::ItemStatus::Created => wit::ItemStatus::Created,
        api::ItemStatus::Resumed => wit::ItemStatus::Resumed,
        api::ItemStatus::Existing => wit::ItemStatus::Existing,
        api::ItemStatus::Failed => wit::ItemStatus::Failed,
        api::ItemStatus::WouldCreate => wit::ItemStatus::WouldCreate,
        api::ItemStatus::WouldResume => wit::ItemStatus::WouldResume,
    };
    wit::MigrationItem {
        src_id: item.src_id,
        dst_id: item.dst_id,
        status,
        detail: item.detail,
        src_parent_id: item.src_parent_id,
        error: item
            .error
            .map(|e| to_wit_error(CopyError::new(e.kind, e.message))),
        artifact_bytes: item.artifact_bytes,
        metric_points: item.metric_points,
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
        new_trace_ids: report.new_trace_ids.into_iter().collect(),
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
