//! verify-model-version: a copied registered model version compared with its source, as
//! copy-model-version (with the same flags) made it: where its source points, its
//! description, tags and status, its stage and aliases when they were copied, and for a deep
//! copy its run, as verify-run compares one. Reads only.

use super::copy_model_version::{
    deep_source, earlier_copy, read_version, repoint_at_copy, shallow_target, version_tags, Aliases,
};
use super::copy_run;
use super::lineage;
use super::verify::{compare_with_copy, Differences};
use super::version_source::Repointed;
use super::Copier;
use crate::api::{
    CopyError, CopyModelVersionRequest, ErrorKind, ItemStatus, ModelVersionVerifyReport,
    VerifyModelVersionRequest,
};
use crate::stores::model::{KeyValue, ModelVersion, Run};
use std::collections::BTreeMap;

pub fn verify_model_version(
    c: &mut Copier,
    request: &VerifyModelVersionRequest,
) -> anyhow::Result<ModelVersionVerifyReport> {
    compare_version(c, request, Aliases::WithVersion)
}

/// copy-model's `--verify`: the version just copied as `dst_version` must not differ from its
/// source (a difference is the item's `conflict`). Its aliases are moved, and so compared, only
/// once every version is there.
pub(super) fn check_copy(
    c: &mut Copier,
    copied: &CopyModelVersionRequest,
    dst_version: &str,
) -> anyhow::Result<()> {
    let request = VerifyModelVersionRequest::of_copy(copied, dst_version);
    match compare_version(c, &request, Aliases::Later)?.failure() {
        Some(failure) => Err(failure.into()),
        None => Ok(()),
    }
}

fn compare_version(
    c: &mut Copier,
    request: &VerifyModelVersionRequest,
    aliases: Aliases,
) -> anyhow::Result<ModelVersionVerifyReport> {
    let copy = request.as_copy();
    let name = format!("{}/{}", request.src_model, request.src_version);
    let version = read_version(c, &request.src_model, &request.src_version)?;
    let src_run = match version.run_id.as_deref().filter(|r| !r.is_empty()) {
        Some(run_id) if copy.is_deep() || copy.copy_lineage_tags => {
            Some(c.src.tracking.get_run(run_id)?)
        }
        _ => None,
    };
    let mut diff = Differences::default();
    let (target, run_copy) = match &request.dst_experiment_name {
        None => (Some(shallow_target(c, &version)?), None),
        Some(experiment) => {
            deep_target(c, &name, &version, src_run.as_ref(), experiment, &mut diff)?
        }
    };
    let dst = copied_version(c, request, target.as_ref())?;
    if let Some(target) = &target {
        diff.field("source", &target.source, &dst.source);
    }
    diff.field(
        "status",
        Some("READY"),
        dst.status.as_deref().or(Some("READY")),
    );
    diff.field("description", &version.description, &dst.description);
    let expected = version_tags(c, &copy, &version, src_run.as_ref());
    diff.maps("tag", &pairs(&expected), &comparable_tags(&dst, &expected));
    if request.copy_stages_and_aliases {
        compare_stage(c, &version, &dst, &mut diff);
        // Aliases moved later (copy-model moves them after every version) are not due yet.
        if aliases == Aliases::WithVersion {
            compare_aliases(c, request, &dst, &mut diff)?;
        }
    }
    let run = match (run_copy, &src_run) {
        (Some(dst_id), Some(src)) => {
            let report = compare_with_copy(c, src, &dst_id)?;
            for line in &report.differences {
                diff.add(format!("run: {line}"));
            }
            Some(report)
        }
        _ => None,
    };
    Ok(ModelVersionVerifyReport {
        src_model: request.src_model.clone(),
        src_version: request.src_version.clone(),
        dst_model: request.dst_model.clone(),
        dst_version: dst.version,
        run,
        differences: diff.0,
    })
}

/// Where a deep copy's source must point (at the copy of the version's run), and that copy
/// to compare with the run; a run without a complete copy is a difference.
fn deep_target(
    c: &mut Copier,
    name: &str,
    version: &ModelVersion,
    src_run: Option<&Run>,
    experiment: &str,
    diff: &mut Differences,
) -> anyhow::Result<(Option<Repointed>, Option<String>)> {
    let (src_run, source) = deep_source(name, version, src_run)?;
    let run_id = src_run.info.run_id.clone();
    let Some(dst_experiment) = copy_run::existing_experiment(c, experiment)? else {
        diff.add(format!(
            "run: no copy of run {run_id} (destination experiment {experiment:?} not found)"
        ));
        return Ok((None, None));
    };
    match copy_run::planned(c, src_run, &dst_experiment)? {
        (ItemStatus::Existing, Some(dst_run)) => {
            let copy = (dst_experiment.as_str(), dst_run.as_str());
            let target = repoint_at_copy(c, name, version, src_run, &source, copy)?.0;
            Ok((Some(target), Some(dst_run)))
        }
        _ => {
            diff.add(format!(
                "run: no complete copy of run {run_id} in experiment {experiment:?}"
            ));
            Ok((None, None))
        }
    }
}

/// The copy named by `dst_version`, else the one copy-model-version would find.
fn copied_version(
    c: &Copier,
    request: &VerifyModelVersionRequest,
    target: Option<&Repointed>,
) -> anyhow::Result<ModelVersion> {
    let registry = c.dst.registry.as_ref();
    let model = &request.dst_model;
    let missing = |what: String| CopyError::not_found(format!("{what} on {}", registry.server()));
    match (&request.dst_version, target) {
        (Some(v), _) => registry.model_version(model, v).map_err(|e| match e.kind {
            ErrorKind::NotFound => missing(format!("model version {model}/{v} not found")).into(),
            _ => anyhow::Error::new(e),
        }),
        (None, Some(target)) => earlier_copy(c, model, target)?.ok_or_else(|| {
            missing(format!(
                "no copy of {}/{} in {model:?} (its source would be {:?})",
                request.src_model, request.src_version, target.source
            ))
            .into()
        }),
        // A deep copy is made after its run's: without that, there is none to find.
        (None, None) => Err(missing(format!(
            "no copy of {}/{} in {model:?}: its run has no complete copy in experiment {:?}",
            request.src_model,
            request.src_version,
            request.dst_experiment_name.as_deref().unwrap_or_default()
        ))
        .into()),
    }
}

fn pairs(tags: &[KeyValue]) -> BTreeMap<String, String> {
    tags.iter()
        .map(|t| (t.key.clone(), t.value.clone()))
        .collect()
}

/// The copy's tags, less lineage tags the copy was not asked for (another copy's, or a
/// re-copy with them).
fn comparable_tags(dst: &ModelVersion, expected: &[KeyValue]) -> BTreeMap<String, String> {
    let mut tags = pairs(&dst.tags);
    tags.retain(|key, _| !lineage::is_lineage(key) || expected.iter().any(|t| &t.key == key));
    tags
}

fn compare_stage(c: &Copier, version: &ModelVersion, dst: &ModelVersion, diff: &mut Differences) {
    let stage = |v: &ModelVersion| {
        v.current_stage
            .clone()
            .filter(|s| !s.is_empty() && s != "None")
    };
    if c.dst.registry.supports_stages() {
        diff.field("stage", stage(version), stage(dst));
    }
}

/// The aliases on the source version must be on the copy (moved there), and no others.
fn compare_aliases(
    c: &Copier,
    request: &VerifyModelVersionRequest,
    dst: &ModelVersion,
    diff: &mut Differences,
) -> anyhow::Result<()> {
    if !c.dst.registry.supports_aliases() {
        return Ok(());
    }
    let on = |aliases: Vec<crate::stores::model::RegisteredModelAlias>, version: &str| {
        let mut names: Vec<String> = aliases
            .into_iter()
            .filter(|a| a.version == version)
            .map(|a| a.alias)
            .collect();
        names.sort();
        names
    };
    let aliases_of = |registry: &dyn crate::stores::Registry, model: &str| {
        registry
            .registered_model(model)
            .map(|m| m.map(|m| m.aliases).unwrap_or_default())
    };
    let src = on(
        aliases_of(c.src.registry.as_ref(), &request.src_model)?,
        &request.src_version,
    );
    let copied = on(
        aliases_of(c.dst.registry.as_ref(), &request.dst_model)?,
        &dst.version,
    );
    diff.field("aliases", src, copied);
    Ok(())
}
