//! The entities every store speaks: MLflow's tracking and registry objects as its REST API sends
//! and accepts them (Databricks and Unity Catalog use the same shapes). Every field is optional
//! on the wire (servers omit defaults), so everything has a default.

use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

impl KeyValue {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Run {
    pub info: RunInfo,
    pub data: RunData,
    pub inputs: RunInputs,
    pub outputs: RunOutputs,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RunInfo {
    pub run_id: String,
    pub run_name: Option<String>,
    pub experiment_id: String,
    pub user_id: Option<String>,
    pub status: Option<String>,
    #[serde(deserialize_with = "opt_i64")]
    pub start_time: Option<i64>,
    #[serde(deserialize_with = "opt_i64")]
    pub end_time: Option<i64>,
    pub artifact_uri: String,
    pub lifecycle_stage: String,
}

impl RunInfo {
    pub fn is_deleted(&self) -> bool {
        self.lifecycle_stage == "deleted"
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RunData {
    pub metrics: Vec<Metric>,
    pub params: Vec<KeyValue>,
    pub tags: Vec<KeyValue>,
}

impl RunData {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }
}

/// One metric point. `value` travels as a JSON number, or as the strings "NaN", "Infinity" and
/// "-Infinity", which serde_json cannot do by itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Metric {
    pub key: String,
    #[serde(serialize_with = "ser_f64", deserialize_with = "de_f64")]
    pub value: f64,
    #[serde(deserialize_with = "de_i64")]
    pub timestamp: i64,
    #[serde(deserialize_with = "de_i64")]
    pub step: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

impl Metric {
    /// Identity of a point in a run's history: equal points are one point to MLflow.
    pub fn identity(&self) -> (String, u64, i64, i64) {
        (
            self.key.clone(),
            self.value.to_bits(),
            self.timestamp,
            self.step,
        )
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RunInputs {
    pub dataset_inputs: Vec<DatasetInput>,
    pub model_inputs: Vec<ModelInput>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatasetInput {
    pub tags: Vec<KeyValue>,
    pub dataset: Dataset,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Dataset {
    pub name: String,
    pub digest: String,
    pub source_type: String,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ModelInput {
    pub model_id: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RunOutputs {
    pub model_outputs: Vec<ModelOutput>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelOutput {
    pub model_id: String,
    #[serde(deserialize_with = "de_i64")]
    pub step: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Experiment {
    pub experiment_id: String,
    pub name: String,
    pub artifact_location: String,
    pub lifecycle_stage: String,
    /// Its tags, the description (`mlflow.note.content`) among them.
    pub tags: Vec<KeyValue>,
}

/// An MLflow 3 LoggedModel.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LoggedModel {
    pub info: LoggedModelInfo,
    pub data: LoggedModelData,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LoggedModelInfo {
    pub model_id: String,
    pub experiment_id: String,
    pub name: String,
    pub artifact_uri: String,
    pub status: Option<String>,
    pub status_message: Option<String>,
    pub model_type: Option<String>,
    pub source_run_id: Option<String>,
    pub tags: Vec<KeyValue>,
}

impl LoggedModelInfo {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LoggedModelData {
    pub params: Vec<KeyValue>,
    pub metrics: Vec<Metric>,
}

/// One entry of an artifact listing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FileInfo {
    pub path: String,
    pub is_dir: bool,
    #[serde(deserialize_with = "opt_i64")]
    pub file_size: Option<i64>,
}

/// What a new run is created with.
#[derive(Debug, Clone, Default)]
pub struct NewRun {
    pub run_name: Option<String>,
    pub start_time: Option<i64>,
    pub user_id: Option<String>,
    pub tags: Vec<KeyValue>,
}

/// What a new logged model is created with.
#[derive(Debug, Clone, Default)]
pub struct NewLoggedModel {
    pub name: String,
    pub model_type: Option<String>,
    pub params: Vec<KeyValue>,
    pub tags: Vec<KeyValue>,
    pub source_run_id: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RegisteredModel {
    pub name: String,
    pub description: Option<String>,
    pub tags: Vec<KeyValue>,
    pub aliases: Vec<RegisteredModelAlias>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RegisteredModelAlias {
    pub alias: String,
    pub version: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ModelVersion {
    pub name: String,
    pub version: String,
    pub source: String,
    pub run_id: Option<String>,
    pub run_link: Option<String>,
    pub model_id: Option<String>,
    pub status: Option<String>,
    pub status_message: Option<String>,
    pub description: Option<String>,
    pub current_stage: Option<String>,
    pub tags: Vec<KeyValue>,
    /// Alias names (OSS lists names; Unity Catalog `{alias, version}` objects).
    #[serde(deserialize_with = "alias_names")]
    pub aliases: Vec<String>,
    /// Where a registry that keeps version files (Unity Catalog) stores this version's.
    pub storage_location: Option<String>,
    /// Unity Catalog: the id of the workspace whose tracking server holds the version's run.
    pub run_tracking_server_id: Option<String>,
    /// Unity Catalog: the features and the resources (`{type, name}`) the version depends on,
    /// when the registry's answer names them.
    pub feature_deps: Option<String>,
    pub model_version_dependencies: Vec<serde_json::Value>,
}

impl ModelVersion {
    pub fn is_ready(&self) -> bool {
        self.status.as_deref().is_none_or(|s| s == "READY")
    }
}

/// What a new model version is created from.
#[derive(Debug, Clone, Default)]
pub struct NewVersion {
    pub source: String,
    pub run_id: Option<String>,
    pub model_id: Option<String>,
    pub description: Option<String>,
    pub tags: Vec<KeyValue>,
    /// Unity Catalog's dependency fields, carried from a source version that has them.
    pub feature_deps: Option<String>,
    pub model_version_dependencies: Vec<serde_json::Value>,
}

/// One principal's permission on one registered model, in the registry's own terms: an OSS
/// user and `READ`/`EDIT`/`MANAGE`, or a workspace principal (`user_name:alice@example.com`,
/// `group_name:ml`, `service_principal_name:…`) and `CAN_READ`/`CAN_MANAGE`/….
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub principal: String,
    pub permission: String,
}

/// Whose artifacts: a run's, an MLflow 3 logged model's, a registered model version's own
/// files (in a registry that keeps them, as Unity Catalog does), or an MLflow 3 trace's span
/// file (where a server keeps spans as files, as a Databricks workspace does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Run(String),
    Model(String),
    Version { model: String, version: String },
    Trace(String),
}

/// An artifact tree: its owner and its root URI (`artifact_uri` of the run or model; a model
/// version's storage is found by the registry that keeps it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRoot {
    pub owner: Owner,
    pub uri: String,
}

impl ArtifactRoot {
    pub fn describe(&self) -> String {
        match &self.owner {
            Owner::Run(id) => format!("run {id}"),
            Owner::Model(id) => format!("logged model {id}"),
            Owner::Version { model, version } => format!("model version {model}/{version}"),
            Owner::Trace(id) => format!("trace {id}"),
        }
    }
}

/// A file in a tree, by its path relative to the root (`/`-separated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
}

fn ser_f64<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
    if value.is_nan() {
        s.serialize_str("NaN")
    } else if value.is_infinite() {
        s.serialize_str(if *value > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        })
    } else {
        s.serialize_f64(*value)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrString {
    Int(i64),
    Float(f64),
    Text(String),
}

fn de_f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    match NumberOrString::deserialize(d)? {
        NumberOrString::Int(i) => Ok(i as f64),
        NumberOrString::Float(f) => Ok(f),
        NumberOrString::Text(t) => match t.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => other
                .parse()
                .map_err(|_| de::Error::custom(format!("not a number: {other:?}"))),
        },
    }
}

/// int64 fields arrive as JSON numbers from MLflow, as strings from proto3-JSON servers.
fn de_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    match NumberOrString::deserialize(d)? {
        NumberOrString::Int(i) => Ok(i),
        NumberOrString::Float(f) => Ok(f as i64),
        NumberOrString::Text(t) => t
            .parse()
            .map_err(|_| de::Error::custom(format!("not an integer: {t:?}"))),
    }
}

fn alias_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Alias {
        Name(String),
        Object { alias: String },
    }
    let aliases = Vec::<Alias>::deserialize(d)?;
    Ok(aliases
        .into_iter()
        .map(|a| match a {
            Alias::Name(name) | Alias::Object { alias: name } => name,
        })
        .collect())
}

fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    de_i64(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_values_round_trip_non_finite_numbers() {
        let m: Metric =
            serde_json::from_str(r#"{"key":"a","value":"NaN","timestamp":"12","step":3}"#).unwrap();
        assert!(m.value.is_nan());
        assert_eq!((m.timestamp, m.step), (12, 3));
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"key":"a","value":"NaN","timestamp":12,"step":3}"#);
        let inf = Metric {
            value: f64::NEG_INFINITY,
            ..Metric::default()
        };
        assert!(serde_json::to_string(&inf)
            .unwrap()
            .contains(r#""value":"-Infinity""#));
        let int: Metric = serde_json::from_str(r#"{"key":"a","value":5}"#).unwrap();
        assert_eq!((int.value, int.step), (5.0, 0));
    }

    #[test]
    fn metric_values_round_trip_exactly() {
        // Needs serde_json's `float_roundtrip`: the default parser may be off by one ulp.
        for text in [
            "0.0009363295880149813",
            "0.0010298661174047373",
            "1.7976931348623157e308",
            "5e-324",
        ] {
            let m: Metric =
                serde_json::from_str(&format!(r#"{{"key":"k","value":{text}}}"#)).unwrap();
            assert_eq!(m.value, text.parse::<f64>().unwrap(), "{text}");
            let back: Metric = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
            assert_eq!(back.value.to_bits(), m.value.to_bits());
        }
    }

    #[test]
    fn version_aliases_are_names_or_objects() {
        let oss: ModelVersion = serde_json::from_str(r#"{"aliases":["a"]}"#).unwrap();
        let uc: ModelVersion =
            serde_json::from_str(r#"{"aliases":[{"alias":"a","version":"1"}]}"#).unwrap();
        assert_eq!(
            (oss.aliases, uc.aliases),
            (vec!["a".to_string()], vec!["a".to_string()])
        );
    }

    #[test]
    fn missing_fields_take_defaults() {
        let run: Run = serde_json::from_str(r#"{"info":{"run_id":"r","start_time":1}}"#).unwrap();
        assert_eq!(run.info.start_time, Some(1));
        assert_eq!(run.info.end_time, None);
        assert!(run.data.tags.is_empty() && run.outputs.model_outputs.is_empty());
        let f: FileInfo = serde_json::from_str(r#"{"path":"empty.txt","is_dir":false}"#).unwrap();
        assert_eq!(f.file_size, None);
    }
}
