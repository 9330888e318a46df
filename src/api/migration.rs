//! Requests and the report of the bulk commands (copy-experiment, copy-model): many one-object
//! copies planned from the destination's lineage tags, each reported on its own.

use super::{
    default_concurrency, require_non_empty, validate_concurrency, validate_model_copy, CopyError,
    ErrorKind,
};
use serde::{Deserialize, Serialize};

/// Runs or versions named one by one at most (a longer list belongs in a filter).
pub const MAX_LISTED_ITEMS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyExperimentRequest {
    /// The source experiment, by name or by id (exactly one of the two).
    #[serde(default)]
    pub src_experiment_name: Option<String>,
    #[serde(default)]
    pub src_experiment_id: Option<String>,
    /// Found by name or created.
    pub dst_experiment_name: String,
    pub src_mlflow_uri: String,
    pub dst_mlflow_uri: String,
    /// Only the runs matching this MLflow search filter
    /// (e.g. `metrics.rmse < 0.8 and tags.team = 'x'`).
    #[serde(default)]
    pub filter: Option<String>,
    /// Only these runs (which must be in the source experiment).
    #[serde(default)]
    pub run_ids: Vec<String>,
    /// At most this many runs (the most recent first, as MLflow's search orders them).
    #[serde(default)]
    pub max_runs: Option<u32>,
    /// Plan only: report what would be copied, write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Compare each copy with its source after copying it (as verify-run); a copy that
    /// differs is a failed item.
    #[serde(default)]
    pub verify: bool,
    /// Run each item as one request to the HTTP function deployed at this URL
    /// (`POST URL/copy-run`): the plan and the order stay here, the copies spread over the
    /// function's replicas. Its bearer token comes from `MLFLOW_COPY_VIA_TOKEN`.
    #[serde(default)]
    pub via: Option<String>,
    /// Items in flight at once over `via` (default 4, 1..=64; only with `via`).
    #[serde(default)]
    pub parallel: Option<u32>,
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
}

impl CopyExperimentRequest {
    pub fn validate(&self) -> Result<(), CopyError> {
        match (&self.src_experiment_name, &self.src_experiment_id) {
            (Some(name), None) => require_non_empty("src_experiment_name", name)?,
            (None, Some(id)) => require_non_empty("src_experiment_id", id)?,
            _ => {
                return Err(CopyError::bad_input(
                    "give exactly one of src_experiment_name and src_experiment_id",
                ))
            }
        }
        require_non_empty("dst_experiment_name", &self.dst_experiment_name)?;
        require_non_empty("src_mlflow_uri", &self.src_mlflow_uri)?;
        require_non_empty("dst_mlflow_uri", &self.dst_mlflow_uri)?;
        check_list("run_ids", &self.run_ids, is_run_id)?;
        if self.max_runs == Some(0) {
            return Err(CopyError::bad_input("max_runs must be at least 1"));
        }
        validate_via(self.via.as_deref(), self.parallel)?;
        validate_concurrency(self.concurrency)
    }
}

/// Items in flight at once over `via` when `parallel` is not given.
pub const DEFAULT_PARALLEL: u32 = 4;
/// Most items in flight at once over `via`.
pub const MAX_PARALLEL: u32 = 64;

/// `via` must be an http(s) URL; `parallel` is in range, and only says something with `via`
/// (one component instance copies its items one at a time: see `engine::migration`).
fn validate_via(via: Option<&str>, parallel: Option<u32>) -> Result<(), CopyError> {
    if let Some(n) = parallel {
        if n == 0 || n > MAX_PARALLEL {
            return Err(CopyError::bad_input(format!(
                "parallel must be between 1 and {MAX_PARALLEL}, got {n}"
            )));
        }
    }
    let Some(via) = via else {
        return match parallel {
            Some(n) if n > 1 => Err(CopyError::bad_input(
                "parallel needs via: one component instance copies the items one at a time \
                 (each with many requests in flight); give via URL of the copy function to \
                 spread them over its replicas",
            )),
            _ => Ok(()),
        };
    };
    match url::Url::parse(via) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => Ok(()),
        _ => Err(CopyError::bad_input(format!(
            "via {via:?} is not an http(s) URL of the copy function"
        ))),
    }
}

fn is_run_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn check_list(field: &str, items: &[String], valid: fn(&str) -> bool) -> Result<(), CopyError> {
    if items.len() > MAX_LISTED_ITEMS {
        return Err(CopyError::bad_input(format!(
            "{field} lists {} items; at most {MAX_LISTED_ITEMS}",
            items.len()
        )));
    }
    match items.iter().find(|item| !valid(item)) {
        Some(bad) => Err(CopyError::bad_input(format!(
            "{field}: {bad:?} is not a valid entry"
        ))),
        None => Ok(()),
    }
}

/// The stages a registered model version can be in (MLflow's `model_registry` stages).
pub const STAGES: [&str; 4] = ["None", "Staging", "Production", "Archived"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyModelRequest {
    pub src_model: String,
    pub dst_model: String,
    pub src_registry_uri: String,
    pub dst_registry_uri: String,
    /// Deep copies (each version's run copied into this experiment); without it, shallow.
    #[serde(default)]
    pub dst_experiment_name: Option<String>,
    /// Which versions: those listed, those in one of the stages, those holding one of the
    /// aliases (each list adds versions); all versions when the three are empty.
    #[serde(default)]
    pub versions: Vec<String>,
    #[serde(default)]
    pub stages: Vec<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub copy_permissions: bool,
    #[serde(default)]
    pub copy_stages_and_aliases: bool,
    #[serde(default)]
    pub copy_lineage_tags: bool,
    #[serde(default)]
    pub dry_run: bool,
    /// Compare each copied version with its source after copying it (as verify-model-version,
    /// aliases aside: they move last); a copy that differs is a failed item.
    #[serde(default)]
    pub verify: bool,
    /// Run each version as one request to the HTTP function deployed at this URL
    /// (`POST URL/copy-model-version`), one after another (versions are numbered in the order
    /// they are created). Its bearer token comes from `MLFLOW_COPY_VIA_TOKEN`.
    #[serde(default)]
    pub via: Option<String>,
    /// Accepted for symmetry with copy-experiment; versions go one at a time whatever it says.
    #[serde(default)]
    pub parallel: Option<u32>,
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
}

impl CopyModelRequest {
    pub fn validate(&self) -> Result<(), CopyError> {
        validate_model_copy(
            [&self.src_model, &self.dst_model],
            [&self.src_registry_uri, &self.dst_registry_uri],
            self.dst_experiment_name.as_deref(),
        )?;
        check_list("versions", &self.versions, |v| v.parse::<u64>().is_ok())?;
        check_list("stages", &self.stages, |s| canonical_stage(s).is_some())?;
        check_list("aliases", &self.aliases, |a| !a.trim().is_empty())?;
        validate_via(self.via.as_deref(), self.parallel)?;
        validate_concurrency(self.concurrency)
    }

    pub fn is_deep(&self) -> bool {
        self.dst_experiment_name.is_some()
    }
}

/// A stage as MLflow spells it, whatever the case it was given in (MLflow's own stage
/// arguments are case-insensitive).
pub fn canonical_stage(stage: &str) -> Option<&'static str> {
    STAGES
        .into_iter()
        .find(|s| s.eq_ignore_ascii_case(stage.trim()))
}

/// What became of one item of a migration (or, in a dry run, what would).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    /// Copied now.
    Created,
    /// An incomplete earlier copy was completed.
    Resumed,
    /// A complete copy was there already; nothing was written.
    Existing,
    /// Not copied: see the item's error.
    Failed,
    /// Dry run: no copy yet, one would be made.
    WouldCreate,
    /// Dry run: an incomplete copy is there and would be completed.
    WouldResume,
}

impl ItemStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Created => "created",
            ItemStatus::Resumed => "resumed",
            ItemStatus::Existing => "existing",
            ItemStatus::Failed => "failed",
            ItemStatus::WouldCreate => "would_create",
            ItemStatus::WouldResume => "would_resume",
        }
    }
}

impl From<super::Outcome> for ItemStatus {
    fn from(outcome: super::Outcome) -> Self {
        match outcome {
            super::Outcome::Created => ItemStatus::Created,
            super::Outcome::Resumed => ItemStatus::Resumed,
            super::Outcome::Existing => ItemStatus::Existing,
        }
    }
}

/// One run (copy-experiment) or version (copy-model) of a migration: one line of the id map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationItem {
    /// The source run id, or the source version number.
    pub src_id: String,
    /// The copy's run id or version number, when there is one.
    pub dst_id: Option<String>,
    pub status: ItemStatus,
    /// Why (a dry run's reason, a deep copy's run), in words.
    pub detail: Option<String>,
    /// copy-experiment: the source run's parent, when that parent is an item too (this item
    /// waits for it). What a host needs to run the items in waves by nesting depth.
    #[serde(default)]
    pub src_parent_id: Option<String>,
    pub error: Option<ItemError>,
    /// Artifact bytes and metric points this item wrote.
    pub artifact_bytes: u64,
    pub metric_points: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemError {
    pub kind: ErrorKind,
    pub message: String,
}

impl From<&CopyError> for ItemError {
    fn from(e: &CopyError) -> Self {
        ItemError {
            kind: e.kind,
            message: e.message.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationReport {
    /// The source experiment id, or the source model name.
    pub src: String,
    /// The destination experiment id or model name (`None` in a dry run whose destination
    /// experiment does not exist yet).
    pub dst: Option<String>,
    pub dry_run: bool,
    /// Every item, in the order they were copied (parents before children, versions in
    /// ascending order).
    pub items: Vec<MigrationItem>,
    pub created: u32,
    pub resumed: u32,
    pub existing: u32,
    pub failed: u32,
    pub artifact_bytes: u64,
    pub metric_points: u64,
    pub elapsed_seconds: f64,
}

impl MigrationReport {
    /// The failure a migration with failed items ends with: its kind is the first failed
    /// item's, its message counts them (each item's own error is in the report).
    pub fn failure(&self) -> Option<CopyError> {
        let first = self.items.iter().find_map(|i| i.error.as_ref())?;
        Some(CopyError::new(
            first.kind,
            format!(
                "{} of {} items failed (re-run the same command to copy what is missing); first: {}",
                self.failed,
                self.items.len(),
                first.message
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn experiment_request() -> CopyExperimentRequest {
        serde_json::from_str(
            r#"{"src_experiment_name":"e","dst_experiment_name":"f","src_mlflow_uri":"s","dst_mlflow_uri":"d"}"#,
        )
        .unwrap()
    }

    #[test]
    fn experiment_requests_name_their_bad_field() {
        assert!(experiment_request().validate().is_ok());
        let mut r = experiment_request();
        r.src_experiment_id = Some("1".into());
        assert!(r.validate().unwrap_err().message.contains("exactly one"));
        let mut r = experiment_request();
        r.run_ids = vec!["abc".into(), "a/../b".into()];
        assert!(r.validate().unwrap_err().message.contains("run_ids"));
        let mut r = experiment_request();
        r.max_runs = Some(0);
        assert!(r.validate().unwrap_err().message.contains("max_runs"));
    }

    #[test]
    fn via_takes_an_http_url_and_parallel_needs_via() {
        let with = |via: Option<&str>, parallel: Option<u32>| {
            let mut r = experiment_request();
            r.via = via.map(str::to_string);
            r.parallel = parallel;
            r.validate()
        };
        assert!(with(Some("http://127.0.0.1:8080"), Some(8)).is_ok());
        assert!(with(Some("https://copy.example.com/fn"), None).is_ok());
        assert!(with(None, Some(1)).is_ok());
        let bad = with(Some("ftp://x"), None).unwrap_err();
        assert!(bad.message.contains("via \"ftp://x\""), "{bad}");
        assert!(with(Some("not a url"), None).is_err());
        assert!(with(None, Some(4))
            .unwrap_err()
            .message
            .contains("needs via"));
        let zero = with(Some("http://h"), Some(0)).unwrap_err();
        assert!(zero.message.contains("between 1 and 64"), "{zero}");
    }

    #[test]
    fn model_requests_check_versions_and_stages() {
        let mut r: CopyModelRequest = serde_json::from_str(
            r#"{"src_model":"m","dst_model":"n","src_registry_uri":"s","dst_registry_uri":"d","stages":["production"]}"#,
        )
        .unwrap();
        assert!(r.validate().is_ok());
        assert_eq!(canonical_stage(" production"), Some("Production"));
        r.stages = vec!["Prod".into()];
        assert!(r.validate().unwrap_err().message.contains("stages"));
        r.stages.clear();
        r.versions = vec!["1".into(), "latest".into()];
        assert!(r.validate().unwrap_err().message.contains("\"latest\""));
    }

    #[test]
    fn a_report_with_failures_fails_with_the_first_items_kind() {
        let item = |status, error: Option<CopyError>| MigrationItem {
            src_id: "r".into(),
            dst_id: None,
            status,
            detail: None,
            src_parent_id: None,
            error: error.as_ref().map(ItemError::from),
            artifact_bytes: 0,
            metric_points: 0,
        };
        let mut report = MigrationReport {
            src: "1".into(),
            dst: Some("2".into()),
            dry_run: false,
            items: vec![item(ItemStatus::Created, None)],
            created: 1,
            resumed: 0,
            existing: 0,
            failed: 0,
            artifact_bytes: 0,
            metric_points: 0,
            elapsed_seconds: 0.0,
        };
        assert!(report.failure().is_none());
        report.items.push(item(
            ItemStatus::Failed,
            Some(CopyError::not_found("run x gone")),
        ));
        report.failed = 1;
        let failure = report.failure().unwrap();
        assert_eq!(failure.kind, ErrorKind::NotFound);
        assert!(
            failure.message.starts_with("1 of 2 items failed"),
            "{failure}"
        );
        assert!(failure.message.ends_with("run x gone"));
    }
}
