//! copy-model-version: one registered model version into another (or the same) registry.
//!
//! - Deep (a destination experiment is given): the version's run is copied with copy-run
//!   (including its logged models and artifacts) and the new version points at the copies —
//!   `models:/<copied model>` for an MLflow 3 model, the same path inside the copied run for a
//!   run-artifact source — so that it loads exactly like the source.
//! - Shallow: the new version points at the source's run and artifacts, which only works when
//!   the destination registry is the source's server.
//!
//! Everything that can fail on the source side is checked before anything is written.

use super::copy_run;
use super::lineage;
use super::models;
use super::version_source::{self, Copies, Repointed, SourceRef};
use super::Copier;
use crate::api::{
    CopyError, CopyModelVersionReport, CopyModelVersionRequest, CopyRunRequest, ErrorKind, Outcome,
};
use crate::stores::model::{KeyValue, ModelVersion, NewVersion, RegisteredModel, Run};
use anyhow::Context;
use std::time::{Duration, Instant};

/// How long a new version may stay PENDING_REGISTRATION (as MLflow's own client waits).
const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// Source-run tags carried into the lineage tags (as mlflow-export-import does).
const LINEAGE_RUN_TAGS: [&str; 4] = [
    "mlflow.user",
    "mlflow.databricks.workspaceURL",
    "mlflow.databricks.webappURL",
    "mlflow.databricks.workspaceID",
];

pub fn copy_model_version(
    c: &mut Copier,
    request: &CopyModelVersionRequest,
) -> anyhow::Result<CopyModelVersionReport> {
    let started = Instant::now();
    let (src_model, src_version) = (request.src_model.as_str(), request.src_version.as_str());
    // Inputs first: nothing is written for a name the destination would refuse at the end.
    c.dst.registry.check_model_name(&request.dst_model)?;
    if let Some(experiment) = &request.dst_experiment_name {
        c.dst.tracking.check_experiment_name(experiment)?;
    }
    c.phase(format!(
        "reading model version {src_model}/{src_version} from {}",
        c.src.registry.server()
    ));
    let version = read_version(c, src_model, src_version)?;
    let registered = c.src.registry.registered_model(src_model)?.ok_or_else(|| {
        CopyError::not_found(format!(
            "registered model {src_model:?} not found on {}",
            c.src.registry.server()
        ))
    })?;

    // The version's run is read once, when a deep copy or the lineage tags need it.
    let src_run = match version.run_id.as_deref().filter(|r| !r.is_empty()) {
        Some(run_id) if request.is_deep() || request.copy_lineage_tags => {
            Some(c.src.tracking.get_run(run_id).with_context(|| {
                format!("reading the run of model version {src_model}/{src_version}")
            })?)
        }
        _ => None,
    };
    let (target, run_report) = match &request.dst_experiment_name {
        Some(experiment) => deep_target(c, request, &version, src_run.as_ref(), experiment)?,
        None => (shallow_target(c, &version)?, None),
    };
    let mut report = CopyModelVersionReport {
        src_model: src_model.to_string(),
        src_version: src_version.to_string(),
        dst_model: request.dst_model.clone(),
        dst_version: String::new(),
        dst_run_id: target
            .run_id
            .clone()
            .or_else(|| run_report.as_ref().map(|r| r.dst_run_id.clone())),
        dst_source: target.source.clone(),
        deep: request.is_deep(),
        outcome: Outcome::Created,
        registered_model_created: false,
        tags: 0,
        stage: None,
        aliases: Vec::new(),
        permissions: 0,
        run: run_report,
        elapsed_seconds: 0.0,
    };

    let tags = version_tags(c, request, &version, src_run.as_ref());
    let existing_model = c.dst.registry.registered_model(&request.dst_model)?;
    let earlier = match existing_model {
        Some(_) => earlier_copy(c, &request.dst_model, &target)?,
        None => {
            create_registered_model(c, &request.dst_model, &registered)?;
            report.registered_model_created = true;
            None
        }
    };
    let ready = match earlier {
        Some(found) => {
            c.phase(format!(
                "version {src_model}/{src_version} was already copied to {} as {}/{}",
                c.dst.registry.server(),
                request.dst_model,
                found.version
            ));
            report.outcome = Outcome::Existing;
            wait_until_ready(c, &request.dst_model, found)?
        }
        None => {
            c.phase(format!(
                "creating version of {} from {}",
                request.dst_model, target.source
            ));
            let new = NewVersion {
                source: target.source.clone(),
                run_id: target.run_id.clone(),
                model_id: target.model_id.clone(),
                description: version.description.clone(),
                tags: tags.clone(),
            };
            let created = c
                .dst
                .registry
                .create_model_version(&request.dst_model, &new)
                .with_context(|| format!("creating a version of {:?}", request.dst_model))?;
            wait_until_ready(c, &request.dst_model, created)?
        }
    };
    report.dst_version = ready.version.clone();
    report.tags = tags.len() as u32;
    report.dst_run_id = report.dst_run_id.or(ready.run_id.clone());

    // A version found from an earlier attempt may lack what that attempt did not get to (its
    // answer lost, or the process stopped): the same command finishes the job.
    let mut completed = complete_tags(c, &request.dst_model, &ready, &tags)?;
    if request.copy_stages_and_aliases {
        completed |= copy_stage_and_aliases(
            c,
            &version,
            &registered,
            &request.dst_model,
            &ready,
            &mut report,
        )?;
    }
    if completed && report.outcome == Outcome::Existing {
        report.outcome = Outcome::Resumed;
    }
    // Permissions go with the first copy only (on a model it created); a re-run leaves them.
    if request.copy_permissions && report.outcome == Outcome::Created {
        report.permissions = copy_permissions(
            c,
            src_model,
            &request.dst_model,
            report.registered_model_created,
        )?;
    }
    c.phase(format!(
        "{src_model}/{src_version} copied to {} as {}/{}",
        c.dst.registry.server(),
        request.dst_model,
        ready.version
    ));
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn read_version(c: &Copier, model: &str, version: &str) -> anyhow::Result<ModelVersion> {
    let found = c
        .src
        .registry
        .model_version(model, version)
        .map_err(|e| match e.kind {
            ErrorKind::NotFound => CopyError::not_found(format!(
                "model version {model}/{version} not found on {}",
                c.src.registry.server()
            )),
            _ => e,
        })?;
    if !found.is_ready() {
        return Err(CopyError::bad_input(format!(
            "model version {model}/{version} on {} is {} (not READY); only ready versions can be copied",
            c.src.registry.server(),
            found.status.as_deref().unwrap_or("unknown")
        ))
        .into());
    }
    Ok(found)
}

/// A shallow copy points at the source's run and artifacts: only the same server can reach them.
fn shallow_target(c: &Copier, version: &ModelVersion) -> anyhow::Result<Repointed> {
    if c.src.registry.server() != c.dst.registry.server() {
        return Err(CopyError::bad_input(format!(
            "a shallow copy from {} to {} would point at a run and artifacts the destination registry \
             cannot reach; give --dst-experiment-name for a deep copy (the run and its artifacts are \
             copied too)",
            c.src.registry.server(),
            c.dst.registry.server()
        ))
        .into());
    }
    // OSS leaves `model_id` out of versions: recover it from a `models:/m-…` source.
    let model_id = version.model_id.clone().or_else(|| {
        match version_source::parse(&version.source, None, None) {
            SourceRef::LoggedModel { model_id, path } if path.is_empty() => Some(model_id),
            _ => None,
        }
    });
    let run_id = if model_id.is_some() {
        None
    } else {
        version.run_id.clone()
    };
    Ok(Repointed {
        source: version.source.clone(),
        run_id,
        model_id,
    })
}

/// A deep copy: copy the run (with its logged models), then re-point the source at the copies.
fn deep_target(
    c: &mut Copier,
    request: &CopyModelVersionRequest,
    version: &ModelVersion,
    src_run: Option<&Run>,
    experiment: &str,
) -> anyhow::Result<(Repointed, Option<crate::api::CopyRunReport>)> {
    let name = format!("{}/{}", request.src_model, request.src_version);
    let Some(src_run) = src_run else {
        return Err(CopyError::bad_input(format!(
            "model version {name} has no run, so there is nothing to deep-copy; copy it shallow (without --dst-experiment-name)"
        ))
        .into());
    };
    let run_id = src_run.info.run_id.clone();
    let source = version_source::parse(
        &version.source,
        Some(&run_id),
        Some(&src_run.info.artifact_uri),
    );
    if source == SourceRef::Other {
        return Err(CopyError::bad_input(format!(
            "model version {name} has source {:?}, which is neither in its run {run_id} nor in a logged model; \
             it cannot be re-pointed at a copy (a shallow copy keeps it as it is)",
            version.source
        ))
        .into());
    }
    let run_request = CopyRunRequest {
        run_id: run_id.clone(),
        experiment_name: experiment.to_string(),
        src_mlflow_uri: request.src_registry_uri.clone(),
        dst_mlflow_uri: request.dst_registry_uri.clone(),
        copy_children: false,
        concurrency: request.concurrency,
    };
    let run_report = copy_run::copy_run(c, &run_request)?;
    let dst_run = c.dst.tracking.get_run(&run_report.dst_run_id)?;
    let copied = models::copied_models(
        c.dst.tracking.as_ref(),
        &run_report.dst_experiment_id,
        &run_report.dst_run_id,
    )?;
    let lookup = |src_id: &str| copied.get(src_id).cloned();
    let copies = Copies {
        run_id: &run_report.dst_run_id,
        run_artifact_uri: &dst_run.info.artifact_uri,
        model: &lookup,
        models_uri: c.dst.registry.accepts_models_uri(),
    };
    let target = version_source::repoint(&source, &copies).ok_or_else(|| {
        CopyError::bad_input(format!(
            "model version {name} comes from logged model {:?}, which run {run_id} did not produce; it was not copied",
            version.source
        ))
    })?;
    Ok((target, Some(run_report)))
}

/// A version of the destination model created by an earlier run of the same copy: same source.
fn earlier_copy(
    c: &Copier,
    dst_model: &str,
    target: &Repointed,
) -> anyhow::Result<Option<ModelVersion>> {
    let versions = c.dst.registry.versions(dst_model)?;
    Ok(versions.into_iter().find(|v| v.source == target.source))
}

fn create_registered_model(
    c: &mut Copier,
    name: &str,
    source: &RegisteredModel,
) -> anyhow::Result<()> {
    c.phase(format!(
        "creating registered model {name:?} on {}",
        c.dst.registry.server()
    ));
    match c
        .dst
        .registry
        .create_registered_model(name, source.description.as_deref(), &source.tags)
    {
        Ok(()) => Ok(()),
        // Created in the meantime by someone else: then it is theirs, leave it alone.
        Err(e) if e.has_code("RESOURCE_ALREADY_EXISTS") => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("creating registered model {name:?}"))),
    }
}

/// The source version's tags, plus the lineage tags when asked for (named as the Python tool
/// names them, without its doubled `mlflow_exim.mlflow_exim.` prefix).
fn version_tags(
    c: &Copier,
    request: &CopyModelVersionRequest,
    version: &ModelVersion,
    src_run: Option<&Run>,
) -> Vec<KeyValue> {
    if !request.copy_lineage_tags {
        return version.tags.clone();
    }
    // Lineage covers one hop: an earlier copy's lineage tags are replaced, not kept.
    let mut tags: Vec<KeyValue> = version
        .tags
        .iter()
        .filter(|t| !lineage::is_lineage(&t.key))
        .cloned()
        .collect();
    let run_id = version.run_id.clone().unwrap_or_default();
    tags.push(KeyValue::new(
        "mlflow_exim.src_version.name",
        &request.src_model,
    ));
    tags.push(KeyValue::new(
        "mlflow_exim.src_version.version",
        &request.src_version,
    ));
    tags.push(KeyValue::new("mlflow_exim.src_version.run_id", &run_id));
    tags.push(KeyValue::new(
        lineage::SRC_TRACKING_URI,
        c.src.registry.server(),
    ));
    tags.push(KeyValue::new(
        "mlflow_exim.dst_client.tracking_uri",
        c.dst.registry.server(),
    ));
    if let Some(run) = src_run {
        for key in LINEAGE_RUN_TAGS {
            if let Some(value) = run.data.tag(key) {
                tags.push(KeyValue::new(format!("mlflow_exim.src_run.{key}"), value));
            }
        }
    }
    tags
}

fn wait_until_ready(
    c: &mut Copier,
    model: &str,
    mut version: ModelVersion,
) -> anyhow::Result<ModelVersion> {
    let started = Instant::now();
    loop {
        match version.status.as_deref() {
            None | Some("READY") => return Ok(version),
            Some("FAILED_REGISTRATION") => {
                return Err(CopyError::upstream(format!(
                    "version {model}/{} failed registration on {}: {}",
                    version.version,
                    c.dst.registry.server(),
                    version.status_message.as_deref().unwrap_or("no message")
                ))
                .into())
            }
            Some(_) if started.elapsed() > READY_TIMEOUT => {
                return Err(CopyError::upstream(format!(
                    "version {model}/{} on {} is still not READY after {} s",
                    version.version,
                    c.dst.registry.server(),
                    READY_TIMEOUT.as_secs()
                ))
                .into())
            }
            Some(status) => {
                c.phase(format!(
                    "waiting for {model}/{} ({status})",
                    version.version
                ));
                std::thread::sleep(Duration::from_secs(1));
                version = c.dst.registry.model_version(model, &version.version)?;
            }
        }
    }
}

/// Sets the tags the version should carry and does not (yet). Returns whether it wrote any.
fn complete_tags(
    c: &mut Copier,
    dst_model: &str,
    dst: &ModelVersion,
    tags: &[KeyValue],
) -> anyhow::Result<bool> {
    let missing: Vec<&KeyValue> = tags.iter().filter(|t| !dst.tags.contains(t)).collect();
    for tag in &missing {
        c.dst
            .registry
            .set_version_tag(dst_model, &dst.version, &tag.key, &tag.value)
            .with_context(|| format!("setting tag {:?} of {dst_model}/{}", tag.key, dst.version))?;
    }
    Ok(!missing.is_empty())
}

/// Gives the new version the source's stage and moves the source version's aliases to it,
/// where they are not so already. Returns whether it changed anything.
fn copy_stage_and_aliases(
    c: &mut Copier,
    version: &ModelVersion,
    registered: &RegisteredModel,
    dst_model: &str,
    dst: &ModelVersion,
    report: &mut CopyModelVersionReport,
) -> anyhow::Result<bool> {
    let mut changed = false;
    if let Some(stage) = version
        .current_stage
        .as_deref()
        .filter(|s| !s.is_empty() && *s != "None")
    {
        if dst.current_stage.as_deref() != Some(stage) {
            c.dst
                .registry
                .transition_stage(dst_model, &dst.version, stage)
                .with_context(|| format!("setting stage {stage}"))?;
            changed = true;
        }
        report.stage = Some(stage.to_string());
    }
    let current = c
        .dst
        .registry
        .registered_model(dst_model)?
        .map(|m| m.aliases)
        .unwrap_or_default();
    // Aliases move: setting one on the new version takes it off any other version.
    for alias in registered
        .aliases
        .iter()
        .filter(|a| a.version == version.version)
    {
        let in_place = current
            .iter()
            .any(|a| a.alias == alias.alias && a.version == dst.version);
        if !in_place {
            c.dst
                .registry
                .set_alias(dst_model, &alias.alias, &dst.version)
                .with_context(|| format!("setting alias {:?}", alias.alias))?;
            changed = true;
        }
        report.aliases.push(alias.alias.clone());
    }
    Ok(changed)
}

/// Copies the users' permissions on the registered model, only onto a model this copy created
/// (an existing model's permissions are its owners' business).
fn copy_permissions(
    c: &mut Copier,
    src_model: &str,
    dst_model: &str,
    created: bool,
) -> anyhow::Result<u32> {
    if !created {
        c.warn(format!(
            "not copying permissions: registered model {dst_model:?} already existed"
        ));
        return Ok(0);
    }
    let (from, to) = (
        c.src.registry.permission_scheme(),
        c.dst.registry.permission_scheme(),
    );
    if from != to {
        c.warn(format!(
            "not copying permissions: the source registry's ({from}) principals and levels mean \
             nothing to the destination's ({to})"
        ));
        return Ok(0);
    }
    let Some(grants) = c.src.registry.model_grants(src_model)? else {
        c.warn(format!(
            "not copying permissions: {} has no permissions API (not a basic-auth server)",
            c.src.registry.server()
        ));
        return Ok(0);
    };
    let mut copied = 0;
    for grant in grants {
        match c.dst.registry.grant_model_permission(dst_model, &grant) {
            Ok(()) => copied += 1,
            // One missing user must not stop the others (as the Python tool does).
            Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::BadInput) => {
                c.warn(format!(
                    "permission {} for {:?} not copied: {}",
                    grant.permission, grant.principal, e.message
                ))
            }
            Err(e) => return Err(anyhow::Error::new(e).context("copying permissions")),
        }
    }
    Ok(copied)
}
