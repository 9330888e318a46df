//! copy-model: versions of one registered model (all, listed, in given stages or holding given
//! aliases) into another, each a copy-model-version of its own, deep or shallow.
//!
//! Versions are copied in ascending order, so that a new destination model gets the source's
//! numbers wherever none is missing, and aliases are moved last, once every version is there.

use super::copy_model_version;
use super::item_executor::{Done, ItemExecutor, Items, Job};
use super::migration::{self, Migration};
use super::verify_model_version;
use super::Copier;
use crate::api::{
    canonical_stage, CopyError, CopyModelRequest, CopyModelVersionRequest, ItemStatus,
    MigrationItem, MigrationReport,
};
use crate::stores::model::{ModelVersion, RegisteredModel};

pub fn copy_model(
    c: &mut Copier,
    request: &CopyModelRequest,
    executor: &mut dyn ItemExecutor,
) -> anyhow::Result<MigrationReport> {
    c.dst.registry.check_model_name(&request.dst_model)?;
    let src = c.src.registry.as_ref();
    let registered = src.registered_model(&request.src_model)?.ok_or_else(|| {
        CopyError::not_found(format!(
            "registered model {:?} not found on {}",
            request.src_model,
            src.server()
        ))
    })?;
    let versions = select_versions(src.versions(&request.src_model)?, &registered, request)
        .map_err(|missing| {
            CopyError::not_found(format!(
                "version {missing} of registered model {:?} not found on {}",
                request.src_model,
                src.server()
            ))
        })?;
    c.phase(format!(
        "{} versions of {:?} to copy into {:?} on {}",
        versions.len(),
        request.src_model,
        request.dst_model,
        c.dst.registry.server()
    ));
    let mut migration = Migration::new(
        request.src_model.clone(),
        Some(request.dst_model.clone()),
        request.dry_run,
        versions.len(),
    );
    if request.dry_run {
        for version in &versions {
            let one = version_request(request, &version.version, request.copy_permissions);
            migration.item(c, &version.version, |c| plan_item(c, &one));
        }
        return Ok(migration.finish());
    }
    let mut items = VersionItems {
        versions: &versions,
        next: 0,
        in_flight: None,
        permissions: request.copy_permissions,
        copies: Vec::new(),
        migration: &mut migration,
        request,
    };
    executor.run(c, &mut items)?;
    let copies = std::mem::take(&mut items.copies);
    if request.copy_stages_and_aliases {
        move_aliases(c, request, &registered, &copies, &mut migration);
    }
    Ok(migration.finish())
}

/// The versions of a copy, handed to the executor one at a time whatever it could run at
/// once: a destination model numbers its versions in the order they are created, so a
/// version starts only once the one before it is there. (A deep copy's run is copied inside
/// its version's item.)
struct VersionItems<'a> {
    versions: &'a [ModelVersion],
    /// The index of the next version to hand out.
    next: usize,
    /// The version in flight, as it was asked for (its `--verify` compares with that).
    in_flight: Option<CopyModelVersionRequest>,
    /// Permissions go with the version that creates the destination model.
    permissions: bool,
    /// Source and destination version numbers of the versions copied.
    copies: Vec<(String, String)>,
    migration: &'a mut Migration,
    request: &'a CopyModelRequest,
}

impl Items for VersionItems<'_> {
    fn next(&mut self, c: &mut Copier) -> Option<(usize, Job)> {
        while self.in_flight.is_none() && self.next < self.versions.len() {
            let (index, version) = (self.next, &self.versions[self.next].version);
            self.next += 1;
            if self.migration.begin(c, version) {
                let one = version_request(self.request, version, self.permissions);
                self.in_flight = Some(one.clone());
                return Some((index, Job::Version(one)));
            }
        }
        None
    }

    fn done(&mut self, c: &mut Copier, _: usize, result: anyhow::Result<Done>) {
        let one = self.in_flight.take().expect("a version in flight");
        let result = result.and_then(|done| copied_item(c, &one, done, self.request.verify));
        if let Ok(item) = &result {
            self.permissions &= item.status == ItemStatus::Failed;
            if let Some(dst) = &item.dst_id {
                self.copies.push((one.src_version.clone(), dst.clone()));
            }
        }
        self.migration.end(c, &one.src_version, result);
    }

    fn exhausted(&self) -> bool {
        self.next >= self.versions.len()
    }
}

fn version_request(
    request: &CopyModelRequest,
    version: &str,
    copy_permissions: bool,
) -> CopyModelVersionRequest {
    CopyModelVersionRequest {
        src_model: request.src_model.clone(),
        src_version: version.to_string(),
        dst_model: request.dst_model.clone(),
        src_registry_uri: request.src_registry_uri.clone(),
        dst_registry_uri: request.dst_registry_uri.clone(),
        dst_experiment_name: request.dst_experiment_name.clone(),
        copy_permissions,
        copy_stages_and_aliases: request.copy_stages_and_aliases,
        copy_lineage_tags: request.copy_lineage_tags,
        concurrency: request.concurrency,
    }
}

/// The item of a copied version, its deep copy's run compared with its source first when
/// asked to (locally, wherever the copy ran).
fn copied_item(
    c: &mut Copier,
    one: &CopyModelVersionRequest,
    done: Done,
    verify: bool,
) -> anyhow::Result<MigrationItem> {
    let Done::Version(report) = done else {
        anyhow::bail!(
            "version {}: the executor reported a run, not a version",
            one.src_version
        );
    };
    if verify {
        verify_model_version::check_copy(c, one, &report.dst_version)?;
    }
    let run = report.run.as_ref();
    Ok(MigrationItem {
        dst_id: Some(report.dst_version.clone()),
        detail: report.dst_run_id.as_ref().map(|r| format!("run {r}")),
        artifact_bytes: run.map_or(0, |r| r.artifact_bytes),
        metric_points: run.map_or(0, |r| r.metric_points),
        ..migration::item(&one.src_version, ItemStatus::from(report.outcome))
    })
}

fn plan_item(c: &mut Copier, one: &CopyModelVersionRequest) -> anyhow::Result<MigrationItem> {
    let (status, dst_id, why) = copy_model_version::planned(c, one)?;
    Ok(MigrationItem {
        dst_id,
        detail: Some(why.to_string()),
        ..migration::item(&one.src_version, status)
    })
}

/// Moves each source alias of a copied version to that version's copy. A failure is the
/// version's: its item is marked failed (a re-run moves the alias).
fn move_aliases(
    c: &mut Copier,
    request: &CopyModelRequest,
    registered: &RegisteredModel,
    copies: &[(String, String)],
    migration: &mut Migration,
) {
    for (src_version, dst_version) in copies {
        let names: Vec<String> = registered
            .aliases
            .iter()
            .filter(|a| &a.version == src_version)
            .map(|a| a.alias.clone())
            .collect();
        if let Err(e) = copy_model_version::move_aliases(c, &request.dst_model, dst_version, &names)
        {
            migration.fail_item(src_version, &CopyError::from_chain(&e));
        }
    }
}

/// The selected versions in ascending order: those listed, in one of the stages or holding
/// one of the aliases; all when nothing is asked for. `Err`: a listed version that is not
/// there.
pub fn select_versions(
    mut all: Vec<ModelVersion>,
    registered: &RegisteredModel,
    request: &CopyModelRequest,
) -> Result<Vec<ModelVersion>, String> {
    if let Some(missing) = request
        .versions
        .iter()
        .find(|v| !all.iter().any(|have| &have.version == *v))
    {
        return Err(missing.clone());
    }
    let everything =
        request.versions.is_empty() && request.stages.is_empty() && request.aliases.is_empty();
    let stages: Vec<&str> = request
        .stages
        .iter()
        .filter_map(|s| canonical_stage(s))
        .collect();
    let held = |version: &str| {
        registered
            .aliases
            .iter()
            .any(|a| a.version == version && request.aliases.contains(&a.alias))
    };
    all.retain(|v| {
        let stage = v.current_stage.as_deref().unwrap_or("None");
        everything
            || request.versions.contains(&v.version)
            || stages.iter().any(|s| s.eq_ignore_ascii_case(stage))
            || held(&v.version)
    });
    all.sort_by_key(|v| v.version.parse::<u64>().unwrap_or(u64::MAX));
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stores::model::RegisteredModelAlias;

    fn version(n: &str, stage: &str) -> ModelVersion {
        ModelVersion {
            version: n.into(),
            current_stage: Some(stage.into()),
            ..ModelVersion::default()
        }
    }

    fn request(json: &str) -> CopyModelRequest {
        let base =
            r#""src_model":"m","dst_model":"n","src_registry_uri":"s","dst_registry_uri":"d""#;
        serde_json::from_str(&format!("{{{base}{json}}}")).unwrap()
    }

    #[test]
    fn versions_are_selected_by_number_stage_or_alias_and_sorted() {
        let all = vec![
            version("10", "None"),
            version("2", "Production"),
            version("1", "Archived"),
            version("3", "Staging"),
        ];
        let registered = RegisteredModel {
            aliases: vec![RegisteredModelAlias {
                alias: "champion".into(),
                version: "3".into(),
            }],
            ..RegisteredModel::default()
        };
        let pick = |json: &str| -> Vec<String> {
            select_versions(all.clone(), &registered, &request(json))
                .unwrap()
                .into_iter()
                .map(|v| v.version)
                .collect()
        };
        assert_eq!(pick(""), ["1", "2", "3", "10"]);
        assert_eq!(pick(r#","stages":["production"]"#), ["2"]);
        assert_eq!(
            pick(r#","aliases":["champion"],"versions":["10"]"#),
            ["3", "10"]
        );
        let missing = select_versions(all.clone(), &registered, &request(r#","versions":["7"]"#));
        assert_eq!(missing.unwrap_err(), "7");
    }
}
