//! MLflow 3 logged models a run produced: found on the source, recreated on the destination
//! with the same name, type, params, tags, metrics and status, and linked to the copied run.

use super::create_once::create_once;
use super::lineage;
use super::Copier;
use crate::stores::model::{
    ArtifactRoot, KeyValue, LoggedModel, Metric, ModelOutput, NewLoggedModel, Owner, Run,
};
use crate::stores::Tracking;
use anyhow::Context;

/// One source model and its destination copy.
pub struct ModelCopy {
    pub src: LoggedModel,
    pub dst_id: String,
    pub dst_artifact_uri: String,
}

impl ModelCopy {
    pub fn src_root(&self) -> ArtifactRoot {
        ArtifactRoot {
            owner: Owner::Model(self.src.info.model_id.clone()),
            uri: self.src.info.artifact_uri.clone(),
        }
    }

    pub fn dst_root(&self) -> ArtifactRoot {
        ArtifactRoot {
            owner: Owner::Model(self.dst_id.clone()),
            uri: self.dst_artifact_uri.clone(),
        }
    }
}

/// The logged models a run produced: its outputs, and models naming it as their source run
/// (a model logged without being attached as an output).
pub fn discover(src: &dyn Tracking, run: &Run) -> anyhow::Result<Vec<LoggedModel>> {
    let mut ids: Vec<String> = run
        .outputs
        .model_outputs
        .iter()
        .map(|o| o.model_id.clone())
        .collect();
    let searched = src
        .logged_models_of_run(&run.info.experiment_id, &run.info.run_id)
        .with_context(|| format!("finding the logged models of run {}", run.info.run_id))?;
    ids.extend(searched.into_iter().map(|m| m.info.model_id));
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    ids.iter()
        .map(|id| {
            src.get_logged_model(id)
                .with_context(|| format!("reading logged model {id}"))
        })
        .collect()
}

/// Creates the destination model for each source model, or finds the one an earlier,
/// interrupted copy created (by its lineage tag).
pub fn create_copies(
    c: &mut Copier,
    models: Vec<LoggedModel>,
    src_run_id: &str,
    dst_experiment_id: &str,
    dst_run_id: &str,
    resuming: bool,
) -> anyhow::Result<Vec<ModelCopy>> {
    let mut existing = if resuming && !models.is_empty() {
        copied_models(c.dst.tracking.as_ref(), dst_experiment_id, dst_run_id)?
    } else {
        Default::default()
    };
    let mut copies = Vec::new();
    for model in models {
        let src_id = model.info.model_id.clone();
        let (dst_id, dst_artifact_uri) = match existing.remove(&src_id) {
            Some(found) => found,
            None => {
                let mut tags: Vec<KeyValue> = model
                    .info
                    .tags
                    .iter()
                    .filter(|t| t.key != lineage::MODEL_VERSIONS && !lineage::is_lineage(&t.key))
                    .cloned()
                    .collect();
                tags.push(KeyValue::new(lineage::SRC_MODEL_ID, &src_id));
                // A model produced by this run points at the copy; one produced elsewhere keeps
                // no source run rather than a dangling id.
                let source_run =
                    (model.info.source_run_id.as_deref() == Some(src_run_id)).then_some(dst_run_id);
                let new = NewLoggedModel {
                    name: model.info.name.clone(),
                    model_type: model.info.model_type.clone(),
                    params: model.data.params.clone(),
                    tags,
                    source_run_id: source_run.map(str::to_string),
                };
                let tracking = c.dst.tracking.as_ref();
                let found = || {
                    let copies = tracking.logged_models_with_tag(
                        dst_experiment_id,
                        lineage::SRC_MODEL_ID,
                        &src_id,
                    )?;
                    // This copy's, not one an earlier copy of another run made of it.
                    let ours = |m: &LoggedModel| m.info.source_run_id == new.source_run_id;
                    Ok(copies.into_iter().find(ours))
                };
                create_once(
                    c,
                    || tracking.create_logged_model(dst_experiment_id, &new),
                    found,
                )
                .map(|m| (m.info.model_id, m.info.artifact_uri))
                .with_context(|| format!("creating the copy of logged model {src_id}"))?
            }
        };
        copies.push(ModelCopy {
            dst_id,
            dst_artifact_uri,
            src: model,
        });
    }
    Ok(copies)
}

/// The source models' metrics, re-addressed to the destination models, for linking run points.
pub fn model_metrics(copies: &[ModelCopy], src_run_id: &str) -> Vec<Metric> {
    copies
        .iter()
        .flat_map(|copy| {
            copy.src
                .data
                .metrics
                .iter()
                .filter(|m| m.run_id.as_deref().is_none_or(|r| r == src_run_id))
                .map(|m| Metric {
                    model_id: Some(copy.dst_id.clone()),
                    run_id: None,
                    ..m.clone()
                })
        })
        .collect()
}

/// Records the copied models as outputs of the copied run, with the source's steps.
pub fn link_outputs(
    c: &mut Copier,
    src_run: &Run,
    copies: &[ModelCopy],
    dst_run: &Run,
) -> anyhow::Result<()> {
    let already: Vec<&str> = dst_run
        .outputs
        .model_outputs
        .iter()
        .map(|o| o.model_id.as_str())
        .collect();
    let outputs: Vec<ModelOutput> = src_run
        .outputs
        .model_outputs
        .iter()
        .filter_map(|o| {
            let copy = copies.iter().find(|c| c.src.info.model_id == o.model_id)?;
            Some(ModelOutput {
                model_id: copy.dst_id.clone(),
                step: o.step,
            })
        })
        .filter(|o| !already.contains(&o.model_id.as_str()))
        .collect();
    if !outputs.is_empty() {
        c.dst
            .tracking
            .log_outputs(&dst_run.info.run_id, &outputs)
            .context("linking logged models to the copied run")?;
    }
    Ok(())
}

/// Links the copied run to the logged models the source run used as inputs — to their copies in
/// the destination experiment (made when the runs that produced them were copied). An input
/// with no copy there is reported, not invented.
pub fn link_inputs(
    c: &mut Copier,
    src_run: &Run,
    dst_run: &Run,
    dst_experiment_id: &str,
) -> anyhow::Result<u32> {
    let already: Vec<&str> = dst_run
        .inputs
        .model_inputs
        .iter()
        .map(|m| m.model_id.as_str())
        .collect();
    let mut linked = Vec::new();
    for input in &src_run.inputs.model_inputs {
        let copies = c.dst.tracking.logged_models_with_tag(
            dst_experiment_id,
            lineage::SRC_MODEL_ID,
            &input.model_id,
        )?;
        match copies.first() {
            Some(copy) if already.contains(&copy.info.model_id.as_str()) => {}
            Some(copy) => linked.push(copy.info.model_id.clone()),
            None => c.warn(format!(
                "run {} used logged model {} as an input, which has no copy in the destination experiment; \
                 copy the run that produced it first to keep the link",
                src_run.info.run_id, input.model_id
            )),
        }
    }
    if !linked.is_empty() {
        c.dst
            .tracking
            .log_model_inputs(&dst_run.info.run_id, &linked)
            .context("linking input models")?;
    }
    Ok((linked.len() + already.len()) as u32)
}

/// Gives each copy the source's final status, once its artifacts are in place.
pub fn finalize(c: &mut Copier, copies: &[ModelCopy]) -> anyhow::Result<()> {
    for copy in copies {
        let status = copy
            .src
            .info
            .status
            .as_deref()
            .unwrap_or("LOGGED_MODEL_READY");
        c.dst
            .tracking
            .finalize_logged_model(&copy.dst_id, status)
            .with_context(|| format!("finalizing logged model {}", copy.dst_id))?;
    }
    Ok(())
}

/// The logged models an earlier copy made for a copied run: source model id → (copied model
/// id, its artifact URI), found by their lineage tag.
pub fn copied_models(
    dst: &dyn Tracking,
    dst_experiment_id: &str,
    dst_run_id: &str,
) -> anyhow::Result<std::collections::HashMap<String, (String, String)>> {
    let found = dst.logged_models_of_run(dst_experiment_id, dst_run_id)?;
    Ok(found
        .into_iter()
        .filter_map(|m| {
            let src_id = m.info.tag(lineage::SRC_MODEL_ID)?.to_string();
            Some((src_id, (m.info.model_id, m.info.artifact_uri)))
        })
        .collect())
}
