//! The command line, a drop-in for mlflow-export-import's `copy-run` (same flag names).

#[cfg(test)]
use crate::api::ErrorKind;
use crate::api::{CopyError, CopyModelVersionRequest, CopyRunRequest, DEFAULT_CONCURRENCY};
use crate::engine::progress::{human_line, Event, Progress};
use clap::{Args, Parser, Subcommand};

const CREDENTIALS_HELP: &str = "\
Credentials come from the environment, never from flags (under wasmtime, pass each with --env):
  MLFLOW_TRACKING_TOKEN                          bearer token for both servers
  MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD   HTTP basic auth for both servers
  MLFLOW_SRC_TRACKING_TOKEN, MLFLOW_SRC_TRACKING_USERNAME, MLFLOW_SRC_TRACKING_PASSWORD
                                                 source server only (replace the shared ones)
  MLFLOW_DST_TRACKING_TOKEN, MLFLOW_DST_TRACKING_USERNAME, MLFLOW_DST_TRACKING_PASSWORD
                                                 destination server only

Hosts: the servers you name are contacted, and the hosts they hand out (signed storage URLs);
set MLFLOW_COPY_ALLOWED_HOSTS (comma-separated host or host:port) to allow only those. (The
HTTP function, whose callers are not its operator, refuses every copy until that list is set.)

On success one JSON report is printed on stdout and the exit code is 0; progress goes to stderr.
On failure the exit code is non-zero (1 under wasmtime; the pip package's commands exit 3-7 by
kind) and stderr ends with one line
  mlflow-copy: error [KIND]: MESSAGE
where KIND is bad_input, not_found, unauthorized, conflict or upstream.";

#[derive(Debug, Parser)]
#[command(
    name = "mlflow_copy.wasm",
    version,
    about = "Copy MLflow runs between tracking servers, streaming artifacts server to server.",
    after_help = CREDENTIALS_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy a run (params, tags, metric histories, datasets, logged models, artifacts, times,
    /// user) into an experiment on the same or another tracking server.
    #[command(after_help = CREDENTIALS_HELP)]
    CopyRun(CopyRunArgs),
    /// Copy a registered model version into a registered model on the same or another server:
    /// deep (its run, logged models and artifacts copied too) with --dst-experiment-name,
    /// shallow (pointing at the source's run) without.
    #[command(after_help = CREDENTIALS_HELP)]
    CopyModelVersion(CopyModelVersionArgs),
}

#[derive(Debug, Args)]
pub struct CopyRunArgs {
    /// Run ID.
    #[arg(long, value_name = "TEXT")]
    pub run_id: String,
    /// Destination experiment name (found by name or created).
    #[arg(long, value_name = "TEXT")]
    pub experiment_name: String,
    /// Source tracking server: http(s)://host:port[/prefix] (e.g. http://localhost:5000), or a
    /// Databricks workspace: databricks (from DATABRICKS_HOST/TOKEN or ~/.databrickscfg) or
    /// databricks://PROFILE.
    #[arg(long, value_name = "TEXT")]
    pub src_mlflow_uri: String,
    /// Destination tracking server, in the same forms.
    #[arg(long, value_name = "TEXT")]
    pub dst_mlflow_uri: String,
    /// Also copy the run's child runs (recursively), nested under the copy.
    #[arg(long, value_name = "BOOLEAN", num_args = 0..=1, default_missing_value = "true",
          default_value = "false", value_parser = parse_bool)]
    pub copy_children: bool,
    /// Artifact files copied at once (1-64).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: u32,
}

#[derive(Debug, Args)]
pub struct CopyModelVersionArgs {
    /// Source registered model.
    #[arg(long, value_name = "TEXT")]
    pub src_model: String,
    /// Source model version.
    #[arg(long, value_name = "TEXT")]
    pub src_version: String,
    /// Destination registered model (created, with the source's description and tags, if missing).
    #[arg(long, value_name = "TEXT")]
    pub dst_model: String,
    /// Source registry: an MLflow server's tracking URI (http(s)://host:port), a Databricks
    /// workspace registry (databricks, databricks://PROFILE) or Unity Catalog (databricks-uc,
    /// databricks-uc://PROFILE).
    #[arg(long, value_name = "TEXT")]
    pub src_registry_uri: String,
    /// Destination registry, in the same forms.
    #[arg(long, value_name = "TEXT")]
    pub dst_registry_uri: String,
    /// Destination experiment name. If specified, the version's run is copied to a new run
    /// there (deep copy); else the new version uses the source version's run (shallow copy).
    #[arg(long, value_name = "TEXT")]
    pub dst_experiment_name: Option<String>,
    /// Copy the registered model's permissions (only if the destination model is created).
    #[arg(long, value_name = "BOOLEAN", num_args = 0..=1, default_missing_value = "true",
          default_value = "false", value_parser = parse_bool)]
    pub copy_permissions: bool,
    /// Copy the version's stage and move its aliases to the new version.
    #[arg(long, value_name = "BOOLEAN", num_args = 0..=1, default_missing_value = "true",
          default_value = "false", value_parser = parse_bool)]
    pub copy_stages_and_aliases: bool,
    /// Add source lineage info to the new version as tags starting with 'mlflow_exim'.
    #[arg(long, value_name = "BOOLEAN", num_args = 0..=1, default_missing_value = "true",
          default_value = "false", value_parser = parse_bool)]
    pub copy_lineage_tags: bool,
    /// Artifact files copied at once (1-64), for deep copies.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: u32,
}

impl From<CopyModelVersionArgs> for CopyModelVersionRequest {
    fn from(a: CopyModelVersionArgs) -> Self {
        CopyModelVersionRequest {
            src_model: a.src_model,
            src_version: a.src_version,
            dst_model: a.dst_model,
            src_registry_uri: a.src_registry_uri,
            dst_registry_uri: a.dst_registry_uri,
            dst_experiment_name: a.dst_experiment_name,
            copy_permissions: a.copy_permissions,
            copy_stages_and_aliases: a.copy_stages_and_aliases,
            copy_lineage_tags: a.copy_lineage_tags,
            concurrency: a.concurrency,
        }
    }
}

impl From<CopyRunArgs> for CopyRunRequest {
    fn from(a: CopyRunArgs) -> Self {
        CopyRunRequest {
            run_id: a.run_id,
            experiment_name: a.experiment_name,
            src_mlflow_uri: a.src_mlflow_uri,
            dst_mlflow_uri: a.dst_mlflow_uri,
            copy_children: a.copy_children,
            concurrency: a.concurrency,
        }
    }
}

/// Booleans as the Python tool (click) accepts them.
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "t" | "1" | "yes" | "y" | "on" => Ok(true),
        "false" | "f" | "0" | "no" | "n" | "off" => Ok(false),
        other => Err(format!("{other:?} is not a boolean (use true or false)")),
    }
}

/// The one-line error the command prints.
pub fn error_line(error: &CopyError) -> String {
    // One line, whatever a server or the host put in the message.
    let message = error
        .message
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    format!("mlflow-copy: error [{}]: {message}", error.kind.as_str())
}

#[cfg(target_arch = "wasm32")]
fn to_json(report: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(report).expect("reports serialize")
}

/// Progress as human-readable lines on stderr; artifact progress at most twice a second (and
/// when the last file is done), so that thousands of small files do not flood the terminal.
#[derive(Default)]
pub struct StderrProgress {
    last_artifacts: Option<std::time::Instant>,
}

impl Progress for StderrProgress {
    fn event(&mut self, event: Event) {
        if let Event::Artifacts {
            files_done,
            files_total,
            ..
        } = &event
        {
            let recent = self
                .last_artifacts
                .is_some_and(|t| t.elapsed() < std::time::Duration::from_millis(500));
            if recent && files_done < files_total {
                return;
            }
            self.last_artifacts = Some(std::time::Instant::now());
        }
        eprintln!("{}", human_line(&event));
    }
}

/// Runs the command line: parses `args`, copies, prints. Returns whether it succeeded.
/// (WASI 0.2 exits with success or failure only, so the error kind is in the message.)
#[cfg(target_arch = "wasm32")]
pub fn main(args: Vec<String>) -> bool {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return !e.use_stderr();
        }
    };
    let result = match cli.command {
        Command::CopyRun(args) => {
            let request = CopyRunRequest::from(args);
            super::execute(
                super::wasi_host(crate::transport::Caller::User),
                &request,
                &mut StderrProgress::default(),
            )
            .map(|r| to_json(&r))
        }
        Command::CopyModelVersion(args) => {
            let request = CopyModelVersionRequest::from(args);
            super::execute(
                super::wasi_host(crate::transport::Caller::User),
                &request,
                &mut StderrProgress::default(),
            )
            .map(|r| to_json(&r))
        }
    };
    match result {
        Ok(json) => {
            println!("{json}");
            true
        }
        Err(e) => {
            eprintln!("{}", error_line(&e));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("mlflow_copy.wasm").chain(args.iter().copied()))
    }

    const BASE: [&str; 9] = [
        "copy-run",
        "--run-id",
        "abc",
        "--experiment-name",
        "My_Experiment",
        "--src-mlflow-uri",
        "http://localhost:5000",
        "--dst-mlflow-uri",
        "http://localhost:5001",
    ];

    #[test]
    fn python_tool_flags_parse() {
        let Command::CopyRun(a) = parse(&BASE).unwrap().command else {
            panic!()
        };
        let r = CopyRunRequest::from(a);
        assert_eq!(r.run_id, "abc");
        assert_eq!(r.experiment_name, "My_Experiment");
        assert_eq!(r.dst_mlflow_uri, "http://localhost:5001");
        assert!(!r.copy_children);
        assert_eq!(r.concurrency, 8);
    }

    #[test]
    fn booleans_take_flag_or_value_form() {
        for (extra, expect) in [
            (&["--copy-children"][..], true),
            (&["--copy-children", "false"][..], false),
            (&["--copy-children", "True"][..], true),
        ] {
            let args: Vec<&str> = BASE.iter().copied().chain(extra.iter().copied()).collect();
            let Command::CopyRun(a) = parse(&args).unwrap().command else {
                panic!()
            };
            assert_eq!(a.copy_children, expect, "{extra:?}");
        }
        let args: Vec<&str> = BASE
            .iter()
            .copied()
            .chain(["--copy-children", "maybe"])
            .collect();
        assert!(parse(&args)
            .unwrap_err()
            .to_string()
            .contains("not a boolean"));
    }

    #[test]
    fn copy_model_version_flags_parse_like_the_python_tool() {
        let args = [
            "copy-model-version",
            "--src-model",
            "Sklearn_Wine",
            "--src-version",
            "1",
            "--dst-model",
            "prod_wine",
            "--src-registry-uri",
            "http://localhost:5020",
            "--dst-registry-uri",
            "http://localhost:5021",
            "--dst-experiment-name",
            "/Exp",
            "--copy-stages-and-aliases",
            "true",
            "--copy-lineage-tags",
            "True",
        ];
        let Command::CopyModelVersion(a) = parse(&args).unwrap().command else {
            panic!()
        };
        let r = CopyModelVersionRequest::from(a);
        assert!(
            r.is_deep() && r.copy_stages_and_aliases && r.copy_lineage_tags && !r.copy_permissions
        );
        assert_eq!(
            (
                r.src_model.as_str(),
                r.src_version.as_str(),
                r.dst_model.as_str()
            ),
            ("Sklearn_Wine", "1", "prod_wine")
        );
        let shallow: Vec<&str> = args[..11].to_vec();
        let Command::CopyModelVersion(a) = parse(&shallow).unwrap().command else {
            panic!()
        };
        assert!(!CopyModelVersionRequest::from(a).is_deep());
    }

    #[test]
    fn missing_flags_are_named() {
        let err = parse(&["copy-run", "--run-id", "abc"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--experiment-name"), "{err}");
    }

    #[test]
    fn help_lists_every_flag_and_the_credentials() {
        let help = parse(&["copy-run", "--help"]).unwrap_err().to_string();
        for flag in [
            "--run-id",
            "--experiment-name",
            "--src-mlflow-uri",
            "--dst-mlflow-uri",
            "--copy-children",
            "--concurrency",
            "MLFLOW_DST_TRACKING_TOKEN",
        ] {
            assert!(help.contains(flag), "{flag} missing from:\n{help}");
        }
    }

    #[test]
    fn error_line_names_the_kind() {
        let line = error_line(&CopyError::new(
            ErrorKind::NotFound,
            "source run x not found on http://h",
        ));
        assert_eq!(
            line,
            "mlflow-copy: error [not_found]: source run x not found on http://h"
        );
    }

    #[test]
    fn a_mistyped_flag_suggests_the_right_one() {
        // As mlflow-export-import's own README writes it.
        let args = [
            "mlflow_copy.wasm",
            "copy-model-version",
            "--src-registry-uri:",
            "x",
        ];
        let err = Cli::try_parse_from(args).unwrap_err().to_string();
        assert!(err.contains("'--src-registry-uri'"), "{err}");
    }

    #[test]
    fn help_names_the_databricks_uri_forms() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        let run = cmd
            .find_subcommand_mut("copy-run")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(run.contains("databricks://PROFILE"), "{run}");
        let version = Cli::command()
            .find_subcommand_mut("copy-model-version")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(version.contains("databricks-uc://PROFILE"), "{version}");
    }
}
