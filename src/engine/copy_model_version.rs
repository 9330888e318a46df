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

use super::artifacts::{self, Listed, TreeCopy};
use super::copy_run;
use super::create_once::create_once;
use super::lineage;
use super::mlmodel::{self, IdMap};
use super::models;
use super::version_source::{self, Copies, Repointed, SourceRef};
use super::Copier;
use crate::api::{
    CopyError, CopyModelVersionReport, CopyModelVersionRequest, CopyRunRequest, ErrorKind,
    ItemStatus, Outcome,
};
use crate::stores::model::{
    ArtifactRoot, KeyValue, ModelVersion, NewVersion, Owner, RegisteredModel, Run,
};
use crate::stores::scheduler::NoCalls;
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
    copy_version(c, request, Aliases::WithVersion)
}

/// When a version's aliases move to its copy (with `copy_stages_and_aliases`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Aliases {
    /// With the version (copy-model-version).
    WithVersion,
    /// Later, by the caller (copy-model moves them once every version is there, so that an
    /// alias never points at a destination version older than the one it will end on).
    Later,
}

pub(super) fn copy_version(
    c: &mut Copier,
    request: &CopyModelVersionRequest,
    aliases: Aliases,
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

    // A registry that keeps version files (Unity Catalog) gets the source version's files.
    let keeps_files = c.dst.registry.keeps_version_files();
    // The version's run is read once, when a deep copy, the lineage tags or the files need it.
    let src_run = match version.run_id.as_deref().filter(|r| !r.is_empty()) {
        Some(run_id) if request.is_deep() || request.copy_lineage_tags || keeps_files => {
            Some(c.src.tracking.get_run(run_id).with_context(|| {
                format!("reading the run of model version {src_model}/{src_version}")
            })?)
        }
        _ => None,
    };
    // Found and checked (signature) before anything is written.
    let files = match keeps_files {
        true => Some(version_files(c, request, &version, src_run.as_ref())?),
        false => None,
    };
    let (target, run_report, ids) = match &request.dst_experiment_name {
        Some(experiment) => deep_target(c, request, &version, src_run.as_ref(), experiment)?,
        None => (shallow_target(c, &version)?, None, IdMap::default()),
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
            let found = match &files {
                // An earlier attempt stopped before its version was finalized: finish it.
                Some(files) if is_pending(&found) => {
                    report.outcome = Outcome::Resumed;
                    write_files(c, &request.dst_model, found, files, &ids, true)?
                }
                _ => found,
            };
            wait_until_ready(c, &request.dst_model, found)?
        }
        None => {
            c.phase(format!(
                "creating version of {} from {}",
                request.dst_model, target.source
            ));
            // Unity Catalog records the run of every version (MLflow's client sends the logged
            // model's source run), even one in another workspace.
            let run_id = match keeps_files {
                true => target
                    .run_id
                    .clone()
                    .or(report.dst_run_id.clone())
                    .or(version.run_id.clone()),
                false => target.run_id.clone(),
            };
            let new = NewVersion {
                source: target.source.clone(),
                run_id,
                model_id: target.model_id.clone(),
                description: version.description.clone(),
                tags: tags.clone(),
                feature_deps: version.feature_deps.clone(),
                model_version_dependencies: version.model_version_dependencies.clone(),
            };
            let registry = c.dst.registry.as_ref();
            let created = create_once(
                c,
                || registry.create_model_version(&request.dst_model, &new),
                || earlier_copy(c, &request.dst_model, &target),
            )
            .with_context(|| format!("creating a version of {:?}", request.dst_model))?;
            let created = match &files {
                Some(files) => write_files(c, &request.dst_model, created, files, &ids, false)?,
                None => created,
            };
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
        completed |= copy_stage(c, &version, &request.dst_model, &ready, &mut report)?;
        if aliases == Aliases::WithVersion {
            let names: Vec<String> = registered
                .aliases
                .iter()
                .filter(|a| a.version == version.version)
                .map(|a| a.alias.clone())
                .collect();
            completed |= move_aliases(c, &request.dst_model, &ready.version, &names)?;
            if c.dst.registry.supports_aliases() {
                report.aliases = names;
            }
        }
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

pub(super) fn read_version(c: &Copier, model: &str, version: &str) -> anyhow::Result<ModelVersion> {
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

/// A shallow copy points at the source's run and artifacts: only the same server can reach them,
/// unless the destination keeps its own copy of the version's files (Unity Catalog).
pub(super) fn shallow_target(c: &Copier, version: &ModelVersion) -> anyhow::Result<Repointed> {
    let reachable =
        c.src.registry.server() == c.dst.registry.server() || c.dst.registry.keeps_version_files();
    if !reachable {
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
) -> anyhow::Result<(Repointed, Option<crate::api::CopyRunReport>, IdMap)> {
    let name = format!("{}/{}", request.src_model, request.src_version);
    let (src_run, source) = deep_source(&name, version, src_run)?;
    let run_request = CopyRunRequest {
        run_id: src_run.info.run_id.clone(),
        experiment_name: experiment.to_string(),
        src_mlflow_uri: request.src_registry_uri.clone(),
        dst_mlflow_uri: request.dst_registry_uri.clone(),
        copy_children: false,
        concurrency: request.concurrency,
    };
    let run_report = copy_run::copy_run(c, &run_request)?;
    let (target, ids) = repoint_at_copy(
        c,
        &name,
        version,
        src_run,
        &source,
        (&run_report.dst_experiment_id, &run_report.dst_run_id),
    )?;
    Ok((target, Some(run_report), ids))
}

/// The version's run and what its source names in it: checked before a deep copy.
pub(super) fn deep_source<'r>(
    name: &str,
    version: &ModelVersion,
    src_run: Option<&'r Run>,
) -> anyhow::Result<(&'r Run, SourceRef)> {
    let Some(src_run) = src_run else {
        return Err(CopyError::bad_input(format!(
            "model version {name} has no run, so there is nothing to deep-copy; copy it shallow (without --dst-experiment-name)"
        ))
        .into());
    };
    let run_id = src_run.info.run_id.as_str();
    let source = version_source::parse(
        &version.source,
        Some(run_id),
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
    Ok((src_run, source))
}

/// The source of the version's copy, pointing at the copy `(experiment id, run id)` of its
/// run, and the ids the version's files must be rewritten with.
pub(super) fn repoint_at_copy(
    c: &Copier,
    name: &str,
    version: &ModelVersion,
    src_run: &Run,
    source: &SourceRef,
    (dst_experiment_id, dst_run_id): (&str, &str),
) -> anyhow::Result<(Repointed, IdMap)> {
    let run_id = src_run.info.run_id.as_str();
    let dst_run = c.dst.tracking.get_run(dst_run_id)?;
    let copied = models::copied_models(c.dst.tracking.as_ref(), dst_experiment_id, dst_run_id)?;
    // The version's own files (Unity Catalog) name the copies, as the copied run's do.
    let mut ids = IdMap::default();
    ids.add(run_id, dst_run_id);
    for (src_id, (dst_id, dst_uri)) in &copied {
        ids.add(src_id, dst_id);
        let src_model = c.src.tracking.get_logged_model(src_id)?;
        ids.add(&src_model.info.artifact_uri, dst_uri);
    }
    let lookup = |src_id: &str| copied.get(src_id).cloned();
    let copies = Copies {
        run_id: dst_run_id,
        run_artifact_uri: &dst_run.info.artifact_uri,
        model: &lookup,
        models_uri: c.dst.registry.accepts_models_uri(),
    };
    let target = version_source::repoint(source, &copies).ok_or_else(|| {
        CopyError::bad_input(format!(
            "model version {name} comes from logged model {:?}, which run {run_id} did not produce; it was not copied",
            version.source
        ))
    })?;
    Ok((target, ids))
}

/// What copying the version would do, the destination version it would complete or find,
/// and why (a dry run: nothing is written).
pub(super) fn planned(
    c: &mut Copier,
    request: &CopyModelVersionRequest,
) -> anyhow::Result<(ItemStatus, Option<String>, &'static str)> {
    let name = format!("{}/{}", request.src_model, request.src_version);
    let version = read_version(c, &request.src_model, &request.src_version)?;
    if c.dst
        .registry
        .registered_model(&request.dst_model)?
        .is_none()
    {
        return Ok((
            ItemStatus::WouldCreate,
            None,
            "the destination model does not exist yet",
        ));
    }
    let target = match &request.dst_experiment_name {
        None => shallow_target(c, &version)?,
        Some(experiment) => {
            let src_run = match version.run_id.as_deref().filter(|r| !r.is_empty()) {
                Some(run_id) => Some(c.src.tracking.get_run(run_id)?),
                None => None,
            };
            let (src_run, source) = deep_source(&name, &version, src_run.as_ref())?;
            let Some(dst_experiment) = copy_run::existing_experiment(c, experiment)? else {
                return Ok((
                    ItemStatus::WouldCreate,
                    None,
                    "the destination experiment does not exist yet",
                ));
            };
            match copy_run::planned(c, src_run, &dst_experiment)? {
                (ItemStatus::Existing, Some(dst_run)) => {
                    let copy = (dst_experiment.as_str(), dst_run.as_str());
                    repoint_at_copy(c, &name, &version, src_run, &source, copy)?.0
                }
                (ItemStatus::WouldResume, _) => {
                    return Ok((
                        ItemStatus::WouldCreate,
                        None,
                        "its run's incomplete copy would be completed first",
                    ))
                }
                _ => return Ok((ItemStatus::WouldCreate, None, "its run has no copy yet")),
            }
        }
    };
    Ok(match earlier_copy(c, &request.dst_model, &target)? {
        Some(found) if is_pending(&found) => (
            ItemStatus::WouldResume,
            Some(found.version),
            "a copy whose files are not all written would be finished",
        ),
        Some(found) => (
            ItemStatus::Existing,
            Some(found.version),
            "a copy is in the destination model",
        ),
        None => (
            ItemStatus::WouldCreate,
            None,
            "no copy in the destination model",
        ),
    })
}

/// The source version's files, for a registry that keeps its own (Unity Catalog): the source
/// registry's copy if it keeps one too, else the folder of the run or logged model that the
/// version's source names. Its `MLmodel` is checked for a signature where the destination needs
/// one.
fn version_files(
    c: &mut Copier,
    request: &CopyModelVersionRequest,
    version: &ModelVersion,
    src_run: Option<&Run>,
) -> anyhow::Result<Listed> {
    let name = format!("{}/{}", request.src_model, request.src_version);
    let (root, dir) = if c.src.registry.keeps_version_files() {
        let owner = Owner::Version {
            model: request.src_model.clone(),
            version: request.src_version.clone(),
        };
        (
            ArtifactRoot {
                owner,
                uri: String::new(),
            },
            String::new(),
        )
    } else {
        source_folder(c, &name, version, src_run)?
    };
    c.phase(format!("listing the files of model version {name}"));
    let listed = artifacts::list_under(c, root, &dir)?;
    if !listed.files.iter().any(|f| f.path == "MLmodel") {
        return Err(CopyError::bad_input(format!(
            "model version {name}: its source {:?} has no MLmodel file, so it is not a model {} can register",
            version.source,
            c.dst.registry.server()
        ))
        .into());
    }
    if c.dst.registry.requires_signature() {
        let text = c
            .src
            .artifacts
            .read_small(&listed.root, &format!("{}MLmodel", listed.prefix))
            .with_context(|| format!("reading the MLmodel of model version {name}"))?;
        if let Some(problem) = mlmodel::signature_problem(&String::from_utf8_lossy(&text)) {
            return Err(CopyError::bad_input(format!(
                "model version {name}: the model {problem}; {} needs a signature with both inputs \
                 and outputs (log the model with a signature, or set \
                 MLFLOW_SKIP_SIGNATURE_CHECK_FOR_UC_REGISTRY_MIGRATION=true to copy it as it is)",
                c.dst.registry.server()
            ))
            .into());
        }
    }
    Ok(listed)
}

/// The run or logged-model folder a version's source names.
fn source_folder(
    c: &Copier,
    name: &str,
    version: &ModelVersion,
    src_run: Option<&Run>,
) -> anyhow::Result<(ArtifactRoot, String)> {
    let run_id = src_run.map(|r| r.info.run_id.clone());
    let run_uri = src_run.map(|r| r.info.artifact_uri.as_str());
    match version_source::parse(&version.source, run_id.as_deref(), run_uri) {
        SourceRef::RunArtifact { path } | SourceRef::RunsUri { path } => {
            let (run_id, uri) = (run_id.unwrap_or_default(), run_uri.unwrap_or_default());
            let owner = Owner::Run(run_id);
            Ok((ArtifactRoot { owner, uri: uri.to_string() }, path))
        }
        SourceRef::LoggedModel { model_id, path } => {
            let model = c.src.tracking.get_logged_model(&model_id)?;
            let owner = Owner::Model(model_id);
            Ok((ArtifactRoot { owner, uri: model.info.artifact_uri }, path))
        }
        SourceRef::Other => Err(CopyError::bad_input(format!(
            "model version {name} has source {:?}, which is neither in its run nor in a logged model \
             of {}; its files cannot be read to copy them into {}",
            version.source,
            c.src.tracking.server(),
            c.dst.registry.server()
        ))
        .into()),
    }
}

fn is_pending(version: &ModelVersion) -> bool {
    version.status.as_deref() == Some("PENDING_REGISTRATION")
}

/// Writes the files of a new (pending) version to the registry's storage, then finalizes it.
/// `resuming`: files an earlier attempt wrote are kept.
fn write_files(
    c: &mut Copier,
    model: &str,
    created: ModelVersion,
    files: &Listed,
    ids: &IdMap,
    resuming: bool,
) -> anyhow::Result<ModelVersion> {
    let owner = Owner::Version {
        model: model.to_string(),
        version: created.version.clone(),
    };
    let tree = TreeCopy {
        src: files,
        dst: ArtifactRoot {
            owner,
            uri: String::new(),
        },
        ids: ids.clone(),
    };
    c.phase(format!(
        "writing the files of {model}/{} to {}",
        created.version,
        c.dst.registry.server()
    ));
    artifacts::copy_trees(c, &[tree], resuming, &mut NoCalls).with_context(|| {
        format!(
            "writing the files of {model}/{} (the version stays PENDING_REGISTRATION, never \
             ready; re-run the same command to finish it)",
            created.version
        )
    })?;
    match c.dst.registry.finalize_version(model, &created.version) {
        Ok(ready) => Ok(ready),
        // The answer to an earlier finalize may have been lost: then it is ready already.
        Err(e) => {
            match c.dst.registry.model_version(model, &created.version) {
                Ok(now) if now.status.as_deref() == Some("READY") => Ok(now),
                _ => Err(anyhow::Error::new(e)
                    .context(format!("finalizing {model}/{}", created.version))),
            }
        }
    }
}

/// A version of the destination model created by an earlier run of the same copy: same source.
pub(super) fn earlier_copy(
    c: &Copier,
    dst_model: &str,
    target: &Repointed,
) -> Result<Option<ModelVersion>, CopyError> {
    let versions = c.dst.registry.versions(dst_model)?;
    // A version whose registration failed is left as it is; a new one is made.
    Ok(versions
        .into_iter()
        .find(|v| v.source == target.source && v.status.as_deref() != Some("FAILED_REGISTRATION")))
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
    let tags: Vec<KeyValue> = source
        .tags
        .iter()
        .map(|t| KeyValue::new(c.dst.registry.tag_key(&t.key), &t.value))
        .collect();
    let registry = c.dst.registry.as_ref();
    let created = create_once(
        c,
        || registry.create_registered_model(name, source.description.as_deref(), &tags),
        || Ok(registry.registered_model(name)?.map(|_| ())),
    );
    match created {
        Ok(()) => Ok(()),
        // Created in the meantime by someone else: then it is theirs, leave it alone.
        Err(e) if e.has_code("RESOURCE_ALREADY_EXISTS") => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("creating registered model {name:?}"))),
    }
}

/// The source version's tags, plus the lineage tags when asked for (named as the Python tool
/// names them, without its doubled `mlflow_exim.mlflow_exim.` prefix).
pub(super) fn version_tags(
    c: &Copier,
    request: &CopyModelVersionRequest,
    version: &ModelVersion,
    src_run: Option<&Run>,
) -> Vec<KeyValue> {
    let tags = lineage_tags(c, request, version, src_run);
    // Under the keys the destination can store (Unity Catalog: `.` and friends become `_`).
    tags.into_iter()
        .map(|t| KeyValue::new(c.dst.registry.tag_key(&t.key), t.value))
        .collect()
}

fn lineage_tags(
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

/// Gives the new version the source's stage, where it is not so already. Returns whether it
/// changed anything.
fn copy_stage(
    c: &mut Copier,
    version: &ModelVersion,
    dst_model: &str,
    dst: &ModelVersion,
    report: &mut CopyModelVersionReport,
) -> anyhow::Result<bool> {
    let stage = version
        .current_stage
        .as_deref()
        .filter(|s| !s.is_empty() && *s != "None");
    let Some(stage) = stage else {
        return Ok(false);
    };
    if !c.dst.registry.supports_stages() {
        c.warn(format!(
            "stage {stage} not copied: {} has no stages (use aliases)",
            c.dst.registry.server()
        ));
        return Ok(false);
    }
    report.stage = Some(stage.to_string());
    if dst.current_stage.as_deref() == Some(stage) {
        return Ok(false);
    }
    c.dst
        .registry
        .transition_stage(dst_model, &dst.version, stage)
        .with_context(|| format!("setting stage {stage}"))?;
    Ok(true)
}

/// Moves these aliases to the destination version, where they are not on it already
/// (setting an alias takes it off any other version). Returns whether it changed anything.
pub(super) fn move_aliases(
    c: &mut Copier,
    dst_model: &str,
    dst_version: &str,
    aliases: &[String],
) -> anyhow::Result<bool> {
    if aliases.is_empty() {
        return Ok(false);
    }
    if !c.dst.registry.supports_aliases() {
        c.warn(format!(
            "aliases {aliases:?} not copied: {} has no aliases",
            c.dst.registry.server()
        ));
        return Ok(false);
    }
    let current = c
        .dst
        .registry
        .registered_model(dst_model)?
        .map(|m| m.aliases)
        .unwrap_or_default();
    let mut changed = false;
    for alias in aliases {
        let in_place = current
            .iter()
            .any(|a| &a.alias == alias && a.version == dst_version);
        if !in_place {
            c.dst
                .registry
                .set_alias(dst_model, alias, dst_version)
                .with_context(|| format!("setting alias {alias:?} on {dst_model}/{dst_version}"))?;
            changed = true;
        }
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
