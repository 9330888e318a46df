//! The logged models a run produced, each compared with its copy (found among the copied
//! run's models by its lineage tag): name, type, status, source run, params, tags, metrics and
//! its artifact tree (`MLmodel` with the run and model ids re-pointed).

use super::lineage;
use super::mlmodel::IdMap;
use super::models;
use super::verify::{pairs, point_key, run_ids, Differences};
use super::verify_artifacts::{compare_tree, Compared, Trees};
use super::Copier;
use crate::stores::model::{ArtifactRoot, KeyValue, LoggedModel, Owner, Run};
use anyhow::Context;
use std::collections::BTreeMap;

/// What the source's models hold: how many, and their files and bytes; and which copy is
/// whose (source model id -> copy's id).
pub struct ModelsCompared {
    pub models: u32,
    pub files: u64,
    pub bytes: u64,
    pub copies: Vec<(String, String)>,
}

pub fn compare_logged_models(
    c: &Copier,
    [src, dst]: [&Run; 2],
    diff: &mut Differences,
) -> anyhow::Result<ModelsCompared> {
    let models = models::discover(c.src.tracking.as_ref(), src)?;
    let copies = models::copied_models(
        c.dst.tracking.as_ref(),
        &dst.info.experiment_id,
        &dst.info.run_id,
    )
    .context("finding the copy's logged models")?;
    let mut total = ModelsCompared {
        models: models.len() as u32,
        files: 0,
        bytes: 0,
        copies: Vec::new(),
    };
    for model in &models {
        let id = &model.info.model_id;
        let Some((dst_id, dst_uri)) = copies.get(id) else {
            diff.add(format!(
                "logged model {id} ({:?}): no copy among the copy's logged models",
                model.info.name
            ));
            continue;
        };
        let copy = c
            .dst
            .tracking
            .get_logged_model(dst_id)
            .with_context(|| format!("reading logged model {dst_id}, the copy of {id}"))?;
        let prefix = format!("logged model {id} (copy {dst_id}) ");
        let writable = c.dst.tracking.writable_tags(&model.info.tags);
        compare_fields(model, &copy, [src, dst], &writable, &prefix, diff);
        let trees = Trees {
            src: ArtifactRoot {
                owner: Owner::Model(id.clone()),
                uri: model.info.artifact_uri.clone(),
            },
            dst: ArtifactRoot {
                owner: Owner::Model(dst_id.clone()),
                uri: dst_uri.clone(),
            },
            ids: model_ids(model, &copy, [src, dst]),
            prefix,
        };
        let Compared { files, bytes } = compare_tree(c, &trees, diff)?;
        total.files += files;
        total.bytes += bytes;
        total.copies.push((id.clone(), dst_id.clone()));
    }
    Ok(total)
}

fn compare_fields(
    model: &LoggedModel,
    copy: &LoggedModel,
    [src, dst]: [&Run; 2],
    writable: &[KeyValue],
    prefix: &str,
    diff: &mut Differences,
) {
    let (s, d) = (&model.info, &copy.info);
    diff.field(&format!("{prefix}name"), &s.name, &d.name);
    diff.field(&format!("{prefix}type"), &s.model_type, &d.model_type);
    diff.field(&format!("{prefix}status"), &s.status, &d.status);
    // A model this run produced points at the copy; one produced elsewhere at no run.
    let source_run = (s.source_run_id.as_deref() == Some(src.info.run_id.as_str()))
        .then_some(dst.info.run_id.as_str());
    diff.field(
        &format!("{prefix}source run"),
        source_run,
        d.source_run_id.as_deref(),
    );
    diff.maps(
        &format!("{prefix}param"),
        &pairs(&model.data.params),
        &pairs(&copy.data.params),
    );
    let mut wanted = tags(model);
    wanted.retain(|key, _| writable.iter().any(|t| t.key == *key));
    diff.maps(&format!("{prefix}tag"), &wanted, &tags(copy));
    let (from, to) = (
        metrics(model, &src.info.run_id),
        metrics(copy, &dst.info.run_id),
    );
    if from != to {
        diff.add(format!(
            "{prefix}metrics: {} points in the source, {} in the copy, or different values",
            from.len(),
            to.len()
        ));
    }
}

/// Tags as the copy carries them: lineage and the registry's `mlflow.modelVersions` aside.
fn tags(model: &LoggedModel) -> BTreeMap<String, String> {
    let mut tags = pairs(&model.info.tags);
    tags.retain(|key, _| key != lineage::MODEL_VERSIONS && !lineage::is_lineage(key));
    tags
}

/// The model's metric points the run logged (those the copy links), as (key, point).
fn metrics(model: &LoggedModel, run_id: &str) -> Vec<(String, (i64, i64, u64))> {
    let mut points: Vec<(String, (i64, i64, u64))> = model
        .data
        .metrics
        .iter()
        .filter(|m| m.run_id.as_deref().is_none_or(|r| r == run_id))
        .map(|m| (m.key.clone(), point_key(m)))
        .collect();
    points.sort();
    points
}

/// What the copy re-points in the model's `MLmodel`: the run, the model and its location.
fn model_ids(model: &LoggedModel, copy: &LoggedModel, runs: [&Run; 2]) -> IdMap {
    let mut ids: IdMap = run_ids(runs[0], runs[1]);
    ids.add(&model.info.model_id, &copy.info.model_id);
    ids.add(&model.info.artifact_uri, &copy.info.artifact_uri);
    ids
}
