//! Rewriting the ids inside an `MLmodel` file so that a copied model refers to the copied run
//! and logged model, not the source's.
//!
//! Only the top-level `run_id`, `model_id`, `model_uuid` and `artifact_path` entries carry ids;
//! the rest of the YAML (signature, flavors, …) is kept byte for byte. Editing those lines
//! directly keeps the file otherwise identical, which a YAML round trip would not.

/// Old → new replacements for one copied model.
#[derive(Debug, Clone, Default)]
pub struct IdMap {
    pub pairs: Vec<(String, String)>,
}

impl IdMap {
    pub fn add(&mut self, old: &str, new: &str) {
        if !old.is_empty() && old != new {
            self.pairs.push((old.to_string(), new.to_string()));
        }
    }

    /// Applies every replacement, longest first so that a URI is replaced before an id in it.
    pub fn apply(&self, text: &str) -> String {
        let mut pairs: Vec<&(String, String)> = self.pairs.iter().collect();
        pairs.sort_by_key(|(old, _)| std::cmp::Reverse(old.len()));
        pairs.iter().fold(text.to_string(), |acc, (old, new)| {
            acc.replace(old.as_str(), new)
        })
    }
}

const ID_KEYS: [&str; 4] = ["run_id", "model_id", "model_uuid", "artifact_path"];

/// Rewrites the id-bearing top-level entries of an `MLmodel` file. Returns `None` when the
/// file is not UTF-8 (then it is copied unchanged).
pub fn rewrite(mlmodel: &[u8], ids: &IdMap) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(mlmodel).ok()?;
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let top_level_id = ID_KEYS.iter().any(|key| {
            line.strip_prefix(key)
                .is_some_and(|rest| rest.starts_with(':'))
        });
        if top_level_id {
            out.push_str(&ids.apply(line));
        } else {
            out.push_str(line);
        }
    }
    Some(out.into_bytes())
}

/// What is wrong with an `MLmodel`'s signature for a registry that needs one with inputs and
/// outputs (Unity Catalog), in MLflow's words; `None` when it has both. Reads the block-style
/// YAML MLflow writes: a top-level `signature:` whose indented `inputs:` and `outputs:` hold
/// non-empty schemas.
pub fn signature_problem(mlmodel: &str) -> Option<&'static str> {
    const MISSING: &str = "did not contain any signature metadata";
    const INPUTS_ONLY: &str = "contained a signature that includes only inputs";
    let mut lines = mlmodel.lines().skip_while(|l| l.trim_end() != "signature:");
    if lines.next().is_none() {
        return Some(MISSING);
    }
    let block: Vec<&str> = lines
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .collect();
    let has = |key: &str| {
        block.iter().any(|line| {
            let value = line.trim_start().strip_prefix(key).map(str::trim);
            value.is_some_and(|v| !matches!(v, "" | "null" | "~" | "''" | "'[]'" | "[]"))
        })
    };
    match (has("inputs:"), has("outputs:")) {
        (true, true) => None,
        (true, false) => Some(INPUTS_ONLY),
        _ => Some(MISSING),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_need_inputs_and_outputs() {
        let full = "flavors: {}\nsignature:\n  inputs: '[{\"type\": \"double\"}]'\n  outputs: '[{\"type\": \"long\"}]'\n  params: null\nutc_time_created: x\n";
        assert_eq!(signature_problem(full), None);
        let inputs_only = "signature:\n  inputs: '[{\"type\": \"double\"}]'\n  outputs: null\n";
        assert_eq!(
            signature_problem(inputs_only),
            Some("contained a signature that includes only inputs")
        );
        let none = "flavors: {}\nrun_id: r\n";
        assert_eq!(
            signature_problem(none),
            Some("did not contain any signature metadata")
        );
        // `outputs:` of another block does not count.
        let elsewhere = "signature:\n  inputs: '[1]'\nother:\n  outputs: '[1]'\n";
        assert!(signature_problem(elsewhere).is_some());
    }

    const SOURCE: &str = "artifact_path: mlflow-artifacts:/1/models/m-old/artifacts\n\
flavors:\n  python_function:\n    model_path: model.skops\n    run_id: keep-nested-untouched-old-run\n\
model_id: m-old\nmodel_uuid: m-old\nrun_id: old-run\nsignature:\n  inputs: '[{\"type\": \"tensor\"}]'\n\
utc_time_created: '2026-11-29 09:14:39.885866'\n";

    fn ids() -> IdMap {
        let mut ids = IdMap::default();
        ids.add("old-run", "new-run");
        ids.add("m-old", "m-new");
        ids.add(
            "mlflow-artifacts:/1/models/m-old/artifacts",
            "mlflow-artifacts:/7/models/m-new/artifacts",
        );
        ids
    }

    #[test]
    fn rewrites_top_level_ids_only() {
        let out = String::from_utf8(rewrite(SOURCE.as_bytes(), &ids()).unwrap()).unwrap();
        assert!(
            out.starts_with("artifact_path: mlflow-artifacts:/7/models/m-new/artifacts\n"),
            "{out}"
        );
        assert!(
            out.contains("\nmodel_id: m-new\nmodel_uuid: m-new\nrun_id: new-run\n"),
            "{out}"
        );
        assert!(
            out.contains("    run_id: keep-nested-untouched-old-run\n"),
            "{out}"
        );
        assert!(out.contains("utc_time_created: '2026-11-29 09:14:39.885866'\n"));
        assert_eq!(out.lines().count(), SOURCE.lines().count());
    }

    #[test]
    fn classic_run_model_keeps_relative_artifact_path() {
        let classic = "artifact_path: model\nrun_id: old-run\nflavors: {}\n";
        let out = rewrite(classic.as_bytes(), &ids()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "artifact_path: model\nrun_id: new-run\nflavors: {}\n"
        );
    }

    #[test]
    fn binary_files_are_left_alone() {
        assert_eq!(rewrite(&[0xff, 0xfe, 0x00], &ids()), None);
    }

    #[test]
    fn longest_replacement_wins() {
        let mut ids = IdMap::default();
        ids.add("m-1", "m-2");
        ids.add(
            "mlflow-artifacts:/1/models/m-1/artifacts",
            "mlflow-artifacts:/9/models/m-2/artifacts",
        );
        assert_eq!(
            ids.apply("x mlflow-artifacts:/1/models/m-1/artifacts"),
            "x mlflow-artifacts:/9/models/m-2/artifacts"
        );
    }
}
