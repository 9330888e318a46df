//! A model version's `source`, understood relative to its run or logged model, and re-pointed at
//! the copies. mlflow-export-import takes "the text after the first `artifacts/`", which breaks
//! for `mlflow-artifacts:`, `runs:/` and `models:/` sources; this anchors on what the source
//! actually names instead.

/// What a version's source points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceRef {
    /// An MLflow 3 logged model: `models:/m-…`, or a path inside its artifact location.
    LoggedModel { model_id: String, path: String },
    /// `runs:/<run id>/<path>`.
    RunsUri { path: String },
    /// `<run artifact root>/<path>`, e.g. `mlflow-artifacts:/1/<run>/artifacts/model`.
    RunArtifact { path: String },
    /// Something that is neither in the run nor in a logged model (`s3://…`, a registry URI).
    Other,
}

/// Where the copies live, for re-pointing a source.
pub struct Copies<'a> {
    pub run_id: &'a str,
    pub run_artifact_uri: &'a str,
    /// Source logged model id → (copied model id, its artifact URI).
    pub model: &'a dyn Fn(&str) -> Option<(String, String)>,
    /// Whether the destination registry takes `models:/<id>` sources (a Databricks workspace
    /// wants the model's artifact location instead).
    pub models_uri: bool,
}

/// A new version's source and the ids that must accompany it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repointed {
    pub source: String,
    pub run_id: Option<String>,
    pub model_id: Option<String>,
}

pub fn parse(source: &str, run_id: Option<&str>, run_artifact_uri: Option<&str>) -> SourceRef {
    if let Some(rest) = source.strip_prefix("models:/") {
        let rest = rest.trim_start_matches('/');
        let (id, path) = rest.split_once('/').unwrap_or((rest, ""));
        if id.starts_with("m-") {
            return SourceRef::LoggedModel {
                model_id: id.to_string(),
                path: trim(path),
            };
        }
        return SourceRef::Other;
    }
    if let Some(rest) = source.strip_prefix("runs:/") {
        let rest = rest.trim_start_matches('/');
        let (id, path) = rest.split_once('/').unwrap_or((rest, ""));
        if run_id == Some(id) {
            return SourceRef::RunsUri { path: trim(path) };
        }
        return SourceRef::Other;
    }
    if let Some(root) = run_artifact_uri.filter(|r| !r.is_empty()) {
        if let Some(path) = under(source, root) {
            return SourceRef::RunArtifact { path };
        }
    }
    // A logged model's location: …/models/m-<id>/artifacts[/path]
    if let Some(at) = source.find("/models/m-") {
        let rest = &source[at + "/models/".len()..];
        if let Some((id, after)) = rest.split_once('/') {
            if let Some(path) = after
                .strip_prefix("artifacts")
                .filter(|p| p.is_empty() || p.starts_with('/'))
            {
                return SourceRef::LoggedModel {
                    model_id: id.to_string(),
                    path: trim(path),
                };
            }
        }
    }
    // Same run, root spelled differently (another host form): anchor on `<run id>/artifacts`.
    if let Some(run_id) = run_id.filter(|r| !r.is_empty()) {
        let anchor = format!("/{run_id}/artifacts");
        if let Some(at) = source.find(&anchor) {
            let after = &source[at + anchor.len()..];
            if after.is_empty() || after.starts_with('/') {
                return SourceRef::RunArtifact { path: trim(after) };
            }
        }
    }
    SourceRef::Other
}

/// `source` below `root` (ignoring doubled slashes), as a relative path.
fn under(source: &str, root: &str) -> Option<String> {
    let norm = |s: &str| {
        s.split('/')
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("/")
    };
    let (source, root) = (norm(source), norm(root));
    if source == root {
        return Some(String::new());
    }
    source.strip_prefix(&format!("{root}/")).map(str::to_string)
}

fn trim(path: &str) -> String {
    path.trim_matches('/').to_string()
}

fn join(root: &str, path: &str) -> String {
    if path.is_empty() {
        root.trim_end_matches('/').to_string()
    } else {
        format!("{}/{path}", root.trim_end_matches('/'))
    }
}

/// The source a version of the copied model should have, or `None` when the source cannot be
/// re-pointed (it lies outside the run and its logged models, or its model was not copied).
pub fn repoint(source: &SourceRef, copies: &Copies) -> Option<Repointed> {
    let run = Some(copies.run_id.to_string());
    match source {
        SourceRef::LoggedModel { model_id, path } => {
            let (new_id, new_root) = (copies.model)(model_id)?;
            let source = if path.is_empty() && copies.models_uri {
                format!("models:/{new_id}")
            } else {
                join(&new_root, path)
            };
            Some(Repointed {
                source,
                run_id: None,
                model_id: Some(new_id),
            })
        }
        SourceRef::RunsUri { path } => Some(Repointed {
            source: join(&format!("runs:/{}", copies.run_id), path),
            run_id: run,
            model_id: None,
        }),
        SourceRef::RunArtifact { path } => Some(Repointed {
            source: join(copies.run_artifact_uri, path),
            run_id: run,
            model_id: None,
        }),
        SourceRef::Other => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "abc123def456";
    const ROOT: &str = "mlflow-artifacts:/1/abc123def456/artifacts";

    #[test]
    fn parses_every_source_form() {
        let p = |s: &str| parse(s, Some(RUN), Some(ROOT));
        assert_eq!(
            p("models:/m-0123"),
            SourceRef::LoggedModel {
                model_id: "m-0123".into(),
                path: "".into()
            }
        );
        assert_eq!(p("models:/my-model/3"), SourceRef::Other);
        assert_eq!(
            p("runs:/abc123def456/model"),
            SourceRef::RunsUri {
                path: "model".into()
            }
        );
        assert_eq!(p("runs:/otherrun/model"), SourceRef::Other);
        assert_eq!(
            p("mlflow-artifacts:/1/abc123def456/artifacts/model"),
            SourceRef::RunArtifact {
                path: "model".into()
            }
        );
        assert_eq!(
            p("mlflow-artifacts://1/abc123def456//artifacts/sub/model"),
            SourceRef::RunArtifact {
                path: "sub/model".into()
            }
        );
        assert_eq!(
            p("mlflow-artifacts:/1/models/m-77/artifacts"),
            SourceRef::LoggedModel {
                model_id: "m-77".into(),
                path: "".into()
            }
        );
        assert_eq!(
            p("mlflow-artifacts://host:5000/1/abc123def456/artifacts/artifacts/model"),
            SourceRef::RunArtifact {
                path: "artifacts/model".into()
            }
        );
        assert_eq!(p("s3://bucket/mlflow/artifacts/x/model"), SourceRef::Other);
    }

    #[test]
    fn the_python_tools_failure_cases_are_handled() {
        // "artifacts" earlier in the URI, and a path that itself contains "artifacts".
        let root = "s3://bucket/mlflow/artifacts/1/abc123def456/artifacts";
        assert_eq!(
            parse(
                "s3://bucket/mlflow/artifacts/1/abc123def456/artifacts/model",
                Some(RUN),
                Some(root)
            ),
            SourceRef::RunArtifact {
                path: "model".into()
            }
        );
    }

    #[test]
    fn repoints_at_the_copies() {
        let models = |id: &str| {
            (id == "m-old").then(|| {
                (
                    "m-new".to_string(),
                    "mlflow-artifacts:/9/models/m-new/artifacts".to_string(),
                )
            })
        };
        let mut copies = Copies {
            run_id: "newrun",
            run_artifact_uri: "mlflow-artifacts:/9/newrun/artifacts",
            model: &models,
            models_uri: true,
        };
        let r = |s: &SourceRef| repoint(s, &copies);
        assert_eq!(
            r(&SourceRef::LoggedModel {
                model_id: "m-old".into(),
                path: "".into()
            }),
            Some(Repointed {
                source: "models:/m-new".into(),
                run_id: None,
                model_id: Some("m-new".into())
            })
        );
        assert_eq!(
            r(&SourceRef::LoggedModel {
                model_id: "m-old".into(),
                path: "sub".into()
            })
            .unwrap()
            .source,
            "mlflow-artifacts:/9/models/m-new/artifacts/sub"
        );
        assert_eq!(
            r(&SourceRef::LoggedModel {
                model_id: "m-x".into(),
                path: "".into()
            }),
            None
        );
        assert_eq!(
            r(&SourceRef::RunsUri {
                path: "model".into()
            }),
            Some(Repointed {
                source: "runs:/newrun/model".into(),
                run_id: Some("newrun".into()),
                model_id: None
            })
        );
        assert_eq!(
            r(&SourceRef::RunArtifact {
                path: "model".into()
            })
            .unwrap()
            .source,
            "mlflow-artifacts:/9/newrun/artifacts/model"
        );
        assert_eq!(r(&SourceRef::Other), None);
        copies.models_uri = false;
        let whole_model = SourceRef::LoggedModel {
            model_id: "m-old".into(),
            path: "".into(),
        };
        assert_eq!(
            repoint(&whole_model, &copies).unwrap().source,
            "mlflow-artifacts:/9/models/m-new/artifacts"
        );
    }
}
