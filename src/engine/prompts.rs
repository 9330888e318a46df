//! Linked prompts: the prompt versions a run, its logged models and its traces name in
//! `mlflow.linkedPrompts` (JSON `[{"name": …, "version": …}]`) are made to exist in the
//! destination's prompt registry, and the copies' links name the destination's versions.
//!
//! On an open-source registry a prompt is a registered model tagged
//! `mlflow.prompt.is_prompt=true` and a prompt version a model version whose tags hold the
//! template (MLflow `tracking/client.py:register_prompt`). A destination version with the same
//! tags (template text included) is reused, never duplicated; else a new version is made, and
//! where its number differs every link is rewritten.

use super::create_once::create_once;
use super::Copier;
use crate::stores::model::{KeyValue, ModelVersion, NewVersion};
use anyhow::Context;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Run, logged-model and trace tag (and span attribute) naming the prompt versions used.
pub const LINKED_PROMPTS: &str = "mlflow.linkedPrompts";
/// Registered-model tag naming the experiments that used a prompt: the source server's ids.
const EXPERIMENT_IDS_TAG: &str = "_mlflow_experiment_ids";

/// (prompt name, source version) to the destination's version.
pub type PromptMap = BTreeMap<(String, String), String>;

/// The (name, version) pairs a `mlflow.linkedPrompts` value names; nothing for other JSON.
pub fn linked(value: &str) -> Vec<(String, String)> {
    let Ok(Value::Array(links)) = serde_json::from_str::<Value>(value) else {
        return Vec::new();
    };
    links
        .iter()
        .filter_map(|l| Some((l["name"].as_str()?.to_string(), version_of(&l["version"])?)))
        .collect()
}

/// The prompts a link value names, sorted, without their versions: a copy links the same
/// prompts under the destination registry's version numbers (what verify compares).
pub fn linked_names(value: &str) -> Vec<String> {
    let mut names: Vec<String> = linked(value).into_iter().map(|(name, _)| name).collect();
    names.sort();
    names
}

/// Versions are strings in the tag, numbers in some clients' values.
fn version_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The value with every version the map knows replaced; the same text when nothing changes.
pub fn relink(value: &str, map: &PromptMap) -> String {
    let Ok(Value::Array(mut links)) = serde_json::from_str::<Value>(value) else {
        return value.to_string();
    };
    let mut changed = false;
    for link in &mut links {
        let key = (
            link["name"].as_str().unwrap_or_default().to_string(),
            version_of(&link["version"]).unwrap_or_default(),
        );
        if let Some(new) = map.get(&key).filter(|new| **new != key.1) {
            link["version"] = json!(new);
            changed = true;
        }
    }
    if changed {
        Value::Array(links).to_string()
    } else {
        value.to_string()
    }
}

/// Tags with `mlflow.linkedPrompts` relinked.
pub fn relink_tags(tags: &mut [KeyValue], map: &PromptMap) {
    for tag in tags.iter_mut().filter(|t| t.key == LINKED_PROMPTS) {
        tag.value = relink(&tag.value, map);
    }
}

/// Copies prompt versions on demand and remembers where each went.
#[derive(Default)]
pub struct PromptCopier {
    pub map: PromptMap,
    /// Prompt versions created or found at the destination.
    pub count: u32,
    /// Set once a side turned out to keep no prompts as registered models (warned once).
    unsupported: bool,
}

impl PromptCopier {
    /// Whether the links to prompts name destination versions (else both sides keep prompts
    /// the same way, and a link would name a version the destination lacks).
    pub fn reach_destination(&self) -> bool {
        !self.unsupported
    }

    /// Makes every prompt version a `mlflow.linkedPrompts` value names exist at the destination.
    pub fn ensure_linked(&mut self, c: &mut Copier, value: &str) -> anyhow::Result<()> {
        for (name, version) in linked(value) {
            self.ensure(c, &name, &version)?;
        }
        Ok(())
    }

    fn ensure(&mut self, c: &mut Copier, name: &str, version: &str) -> anyhow::Result<()> {
        let key = (name.to_string(), version.to_string());
        if self.unsupported || self.map.contains_key(&key) {
            return Ok(());
        }
        let (src, dst) = (c.src.registry.clone(), c.dst.registry.clone());
        if src.prompt_versions(name)?.is_none() || dst.prompt_versions(name)?.is_none() {
            self.unsupported = true;
            c.warn(format!(
                "linked prompts (such as {name} version {version}) are not copied: {} or {} keeps \
                 no prompts as MLflow registered models; links still name the source's versions",
                src.server(),
                dst.server()
            ));
            return Ok(());
        }
        let source = src.model_version(name, version).with_context(|| {
            format!(
                "reading prompt {name} version {version} on {}",
                src.server()
            )
        })?;
        let dst_version = copy_version(c, &source)
            .with_context(|| format!("copying prompt {name} version {version}"))?;
        copy_aliases(c, name, version, &dst_version)?;
        c.phase(format!(
            "prompt {name} version {version}: destination version {dst_version}"
        ));
        self.map.insert(key, dst_version);
        self.count += 1;
        Ok(())
    }
}

/// The destination's identical version of the prompt, or a new one.
fn copy_version(c: &mut Copier, source: &ModelVersion) -> anyhow::Result<String> {
    let dst = c.dst.registry.clone();
    let name = source.name.as_str();
    let identical = || -> Result<Option<ModelVersion>, crate::api::CopyError> {
        let versions = dst.prompt_versions(name)?.unwrap_or_default();
        Ok(versions
            .into_iter()
            .find(|v| same_tags(&v.tags, &source.tags)))
    };
    if let Some(found) = identical()? {
        return Ok(found.version);
    }
    if dst.registered_model(name)?.is_none() {
        let prompt =
            c.src.registry.registered_model(name)?.with_context(|| {
                format!("prompt {name} is missing on {}", c.src.registry.server())
            })?;
        let tags: Vec<KeyValue> = prompt
            .tags
            .into_iter()
            .filter(|t| t.key != EXPERIMENT_IDS_TAG)
            .collect();
        match dst.create_registered_model(name, prompt.description.as_deref(), &tags) {
            Err(e) if !e.has_code("RESOURCE_ALREADY_EXISTS") => return Err(e.into()),
            _ => {}
        }
    }
    let new = NewVersion {
        source: source.source.clone(),
        description: source.description.clone(),
        tags: source.tags.clone(),
        ..NewVersion::default()
    };
    let created = create_once(c, || dst.create_model_version(name, &new), identical)?;
    Ok(created.version)
}

fn same_tags(a: &[KeyValue], b: &[KeyValue]) -> bool {
    sorted_pairs(a) == sorted_pairs(b)
}

fn sorted_pairs(tags: &[KeyValue]) -> Vec<(&str, &str)> {
    let mut pairs: Vec<(&str, &str)> = tags
        .iter()
        .map(|t| (t.key.as_str(), t.value.as_str()))
        .collect();
    pairs.sort();
    pairs
}

/// The source's aliases of the version, set on the destination's version where the
/// destination has no alias of that name yet (its own aliases are never moved).
fn copy_aliases(
    c: &mut Copier,
    name: &str,
    version: &str,
    dst_version: &str,
) -> anyhow::Result<()> {
    let Some(src_prompt) = c.src.registry.registered_model(name)? else {
        return Ok(());
    };
    let dst_prompt = c.dst.registry.registered_model(name)?.unwrap_or_default();
    for alias in src_prompt.aliases.iter().filter(|a| a.version == version) {
        match dst_prompt.aliases.iter().find(|a| a.alias == alias.alias) {
            None => c
                .dst
                .registry
                .set_alias(name, &alias.alias, dst_version)
                .with_context(|| format!("setting alias {} of prompt {name}", alias.alias))?,
            Some(theirs) if theirs.version != dst_version => c.warn(format!(
                "prompt {name}: alias {} stays on the destination's version {} (the source's \
                 points at version {version}, copied as {dst_version})",
                alias.alias, theirs.version
            )),
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> PromptMap {
        BTreeMap::from([
            (("qa".to_string(), "1".to_string()), "3".to_string()),
            (("same".to_string(), "2".to_string()), "2".to_string()),
        ])
    }

    #[test]
    fn links_are_read_from_the_tag_json() {
        let value = r#"[{"name": "qa", "version": "1"}, {"name": "n", "version": 4}, {"x": 1}]"#;
        assert_eq!(
            linked(value),
            vec![("qa".into(), "1".into()), ("n".into(), "4".into())]
        );
        assert!(linked("not json").is_empty());
    }

    #[test]
    fn relinking_rewrites_only_changed_versions() {
        let value = r#"[{"name": "qa", "version": "1"}, {"name": "other", "version": "1"}]"#;
        let out: Value = serde_json::from_str(&relink(value, &map())).unwrap();
        assert_eq!(
            out,
            json!([{"name": "qa", "version": "3"}, {"name": "other", "version": "1"}])
        );
        let same = r#"[{"name": "same", "version": "2"}]"#;
        assert_eq!(relink(same, &map()), same, "text kept when nothing changes");
        assert_eq!(relink("oops", &map()), "oops");
    }

    #[test]
    fn only_the_linked_prompts_tag_is_relinked() {
        let mut tags = vec![
            KeyValue::new(LINKED_PROMPTS, r#"[{"name": "qa", "version": "1"}]"#),
            KeyValue::new("note", r#"[{"name": "qa", "version": "1"}]"#),
        ];
        relink_tags(&mut tags, &map());
        assert_eq!(tags[0].value, r#"[{"name":"qa","version":"3"}]"#);
        assert_eq!(tags[1].value, r#"[{"name": "qa", "version": "1"}]"#);
    }

    #[test]
    fn identical_versions_compare_tags_in_any_order() {
        let a = [
            KeyValue::new("mlflow.prompt.text", "hi {{x}}"),
            KeyValue::new("team", "a"),
        ];
        let b = [
            KeyValue::new("team", "a"),
            KeyValue::new("mlflow.prompt.text", "hi {{x}}"),
        ];
        assert!(same_tags(&a, &b));
        assert!(!same_tags(&a, &[KeyValue::new("team", "a")]));
    }
}
