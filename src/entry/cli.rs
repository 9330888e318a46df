//! The command line, a drop-in for mlflow-export-import's `copy-run` (same flag names).

#[cfg(test)]
use crate::api::ErrorKind;
use crate::api::{
    CopyError, CopyExperimentRequest, CopyModelRequest, CopyModelVersionRequest, CopyRunRequest,
    VerifyModelVersionRequest, VerifyRunRequest, DEFAULT_CONCURRENCY,
};
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
  MLFLOW_COPY_VIA_TOKEN                          bearer token of the HTTP function of --via
                                                 (sent to that host only)

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
    /// Copy the runs of an experiment (all, --filter, --run-ids, --max-runs) into another
    /// experiment, parents before children, with the experiment's description and tags. Each
    /// run is a copy-run: a re-run copies only what is missing.
    #[command(after_help = CREDENTIALS_HELP)]
    CopyExperiment(CopyExperimentArgs),
    /// Copy versions of a registered model (all, --versions, --stages, --aliases) in ascending
    /// order, each as copy-model-version does (deep with --dst-experiment-name); aliases move
    /// last.
    #[command(after_help = CREDENTIALS_HELP)]
    CopyModel(CopyModelArgs),
    /// Compare a copied run with its source field by field (run info, params, tags, full
    /// metric histories, datasets, logged-model outputs, artifact paths, sizes and contents); print every
    /// difference and exit non-zero when there is one.
    #[command(after_help = CREDENTIALS_HELP)]
    VerifyRun(VerifyRunArgs),
    /// Compare the copies of an experiment's runs (copy-experiment's selection: all, --filter,
    /// --run-ids, --max-runs) with their sources, each as verify-run does, and the experiment's
    /// description and tags; list runs without a complete copy and every difference, and exit
    /// non-zero when there is one.
    #[command(after_help = CREDENTIALS_HELP)]
    VerifyExperiment(VerifyExperimentArgs),
    /// Compare a copied model version (copy-model-version's flags, and --dst-version or the
    /// copy found by its source) with its source: source, description, tags, status, stage
    /// and aliases when copied, and a deep copy's run as verify-run does; print every
    /// difference and exit non-zero when there is one.
    #[command(after_help = CREDENTIALS_HELP)]
    VerifyModelVersion(VerifyModelVersionArgs),
}

#[derive(Debug, Args)]
pub struct VerifyModelVersionArgs {
    /// Source registered model.
    #[arg(long, value_name = "TEXT")]
    pub src_model: String,
    /// Source model version.
    #[arg(long, value_name = "TEXT")]
    pub src_version: String,
    /// The registered model holding the copy.
    #[arg(long, value_name = "TEXT")]
    pub dst_model: String,
    /// The copy's version number (default: the version whose source points where the copy's
    /// would, as copy-model-version finds an earlier copy).
    #[arg(long, value_name = "N")]
    pub dst_version: Option<String>,
    #[command(flatten)]
    pub registries: Registries,
    #[command(flatten)]
    pub version: VersionFlags,
}

impl From<VerifyModelVersionArgs> for VerifyModelVersionRequest {
    fn from(a: VerifyModelVersionArgs) -> Self {
        VerifyModelVersionRequest {
            src_model: a.src_model,
            src_version: a.src_version,
            dst_model: a.dst_model,
            src_registry_uri: a.registries.src_registry_uri,
            dst_registry_uri: a.registries.dst_registry_uri,
            dst_version: a.dst_version,
            dst_experiment_name: a.version.dst_experiment_name,
            copy_stages_and_aliases: a.version.copy_stages_and_aliases,
            copy_lineage_tags: a.version.copy_lineage_tags,
        }
    }
}

#[derive(Debug, Args)]
pub struct VerifyRunArgs {
    /// The source run.
    #[arg(long, value_name = "ID")]
    pub src_run_id: String,
    /// Its copy.
    #[arg(long, value_name = "ID")]
    pub dst_run_id: String,
    /// Source tracking server (as copy-run's --src-mlflow-uri).
    #[arg(long, value_name = "TEXT")]
    pub src_mlflow_uri: String,
    /// The copy's tracking server.
    #[arg(long, value_name = "TEXT")]
    pub dst_mlflow_uri: String,
}

impl From<VerifyRunArgs> for VerifyRunRequest {
    fn from(a: VerifyRunArgs) -> Self {
        VerifyRunRequest {
            src_run_id: a.src_run_id,
            dst_run_id: a.dst_run_id,
            src_mlflow_uri: a.src_mlflow_uri,
            dst_mlflow_uri: a.dst_mlflow_uri,
        }
    }
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
    /// Most artifact files copied at once (1-64); the number adapts below it.
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
    #[command(flatten)]
    pub registries: Registries,
    #[command(flatten)]
    pub version: VersionFlags,
    /// Most artifact files copied at once (1-64); the number adapts below it.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: u32,
}

#[derive(Debug, Args)]
pub struct Registries {
    /// Source registry: an MLflow server's tracking URI (http(s)://host:port), a Databricks
    /// workspace registry (databricks, databricks://PROFILE) or Unity Catalog (databricks-uc,
    /// databricks-uc://PROFILE).
    #[arg(long, value_name = "TEXT")]
    pub src_registry_uri: String,
    /// Destination registry, in the same forms.
    #[arg(long, value_name = "TEXT")]
    pub dst_registry_uri: String,
}

/// How each version is copied (copy-model-version's flags, which copy-model shares).
#[derive(Debug, Args)]
pub struct VersionFlags {
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
}

/// What the bulk commands add: a plan without writes, and an id map.
#[derive(Debug, Args)]
pub struct BulkFlags {
    /// Print the plan (each item: would_create, would_resume or existing, and why) and write
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also write each item (source id, destination id, status, error) as one JSON line to
    /// FILE as it completes: the id map. Under wasmtime, give its directory with --dir.
    #[arg(long, value_name = "FILE")]
    pub report: Option<String>,
    /// Compare each copy with its source right after making it, as verify-run does (for
    /// copy-model: each version as verify-model-version does, aliases aside: they move last); a
    /// copy that differs is a failed item.
    #[arg(long)]
    pub verify: bool,
    /// Run each item as one request to mlflow-copy's HTTP function at URL (its replicas behind
    /// a load balancer share the work); the plan, the order and --verify stay here. Its bearer
    /// token comes from MLFLOW_COPY_VIA_TOKEN; an item's request may take
    /// MLFLOW_COPY_VIA_TIMEOUT seconds (default 7200). A lost replica means a retry.
    #[arg(long, value_name = "URL")]
    pub via: Option<String>,
    /// Items in flight at once over --via (1-64, default 4; copy-model sends its versions one
    /// after another whatever it says, so that they keep their numbers).
    #[arg(long, value_name = "N")]
    pub parallel: Option<u32>,
}

#[derive(Debug, Args)]
pub struct CopyExperimentArgs {
    #[command(flatten)]
    pub runs: ExperimentRuns,
    #[command(flatten)]
    pub bulk: BulkFlags,
    /// Most artifact files copied at once (1-64); the number adapts below it.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: u32,
}

/// Which runs of which experiment, and where their copies go: copy-experiment's selection,
/// which verify-experiment shares.
#[derive(Debug, Args)]
pub struct ExperimentRuns {
    /// Source experiment name (or give --src-experiment-id).
    #[arg(
        long,
        value_name = "TEXT",
        required_unless_present = "src_experiment_id",
        conflicts_with = "src_experiment_id"
    )]
    pub src_experiment_name: Option<String>,
    /// Source experiment id.
    #[arg(long, value_name = "ID")]
    pub src_experiment_id: Option<String>,
    /// Destination experiment name (found by name or created).
    #[arg(long, value_name = "TEXT")]
    pub dst_experiment_name: String,
    /// Source tracking server (as copy-run's --src-mlflow-uri).
    #[arg(long, value_name = "TEXT")]
    pub src_mlflow_uri: String,
    /// Destination tracking server, in the same forms.
    #[arg(long, value_name = "TEXT")]
    pub dst_mlflow_uri: String,
    /// Only runs matching this MLflow search filter, e.g. "metrics.rmse < 0.8 and tags.team = 'x'".
    #[arg(long, value_name = "FILTER")]
    pub filter: Option<String>,
    /// Only these runs (comma-separated ids).
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    pub run_ids: Vec<String>,
    /// At most N runs (the most recent first).
    #[arg(long, value_name = "N")]
    pub max_runs: Option<u32>,
}

#[derive(Debug, Args)]
pub struct VerifyExperimentArgs {
    #[command(flatten)]
    pub runs: ExperimentRuns,
}

#[derive(Debug, Args)]
pub struct CopyModelArgs {
    /// Source registered model.
    #[arg(long, value_name = "TEXT")]
    pub src_model: String,
    /// Destination registered model (created, with the source's description and tags, if missing).
    #[arg(long, value_name = "TEXT")]
    pub dst_model: String,
    #[command(flatten)]
    pub registries: Registries,
    #[command(flatten)]
    pub version: VersionFlags,
    /// Only these versions (comma-separated numbers); with --stages and --aliases, each adds
    /// versions. Default: every version.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub versions: Vec<String>,
    /// Only versions in these stages (comma-separated: None, Staging, Production, Archived).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub stages: Vec<String>,
    /// Only versions holding these aliases (comma-separated).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub aliases: Vec<String>,
    #[command(flatten)]
    pub bulk: BulkFlags,
    /// Most artifact files copied at once (1-64); the number adapts below it.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: u32,
}

impl From<CopyExperimentArgs> for CopyExperimentRequest {
    fn from(a: CopyExperimentArgs) -> Self {
        CopyExperimentRequest {
            dry_run: a.bulk.dry_run,
            verify: a.bulk.verify,
            via: a.bulk.via,
            parallel: a.bulk.parallel,
            concurrency: a.concurrency,
            ..CopyExperimentRequest::from(a.runs)
        }
    }
}

impl From<ExperimentRuns> for CopyExperimentRequest {
    fn from(r: ExperimentRuns) -> Self {
        CopyExperimentRequest {
            src_experiment_name: r.src_experiment_name,
            src_experiment_id: r.src_experiment_id,
            dst_experiment_name: r.dst_experiment_name,
            src_mlflow_uri: r.src_mlflow_uri,
            dst_mlflow_uri: r.dst_mlflow_uri,
            filter: r.filter,
            run_ids: r.run_ids,
            max_runs: r.max_runs,
            dry_run: false,
            verify: false,
            via: None,
            parallel: None,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

impl From<CopyModelArgs> for CopyModelRequest {
    fn from(a: CopyModelArgs) -> Self {
        CopyModelRequest {
            src_model: a.src_model,
            dst_model: a.dst_model,
            src_registry_uri: a.registries.src_registry_uri,
            dst_registry_uri: a.registries.dst_registry_uri,
            dst_experiment_name: a.version.dst_experiment_name,
            versions: a.versions,
            stages: a.stages,
            aliases: a.aliases,
            copy_permissions: a.version.copy_permissions,
            copy_stages_and_aliases: a.version.copy_stages_and_aliases,
            copy_lineage_tags: a.version.copy_lineage_tags,
            dry_run: a.bulk.dry_run,
            verify: a.bulk.verify,
            via: a.bulk.via,
            parallel: a.bulk.parallel,
            concurrency: a.concurrency,
        }
    }
}

impl From<CopyModelVersionArgs> for CopyModelVersionRequest {
    fn from(a: CopyModelVersionArgs) -> Self {
        CopyModelVersionRequest {
            src_model: a.src_model,
            src_version: a.src_version,
            dst_model: a.dst_model,
            src_registry_uri: a.registries.src_registry_uri,
            dst_registry_uri: a.registries.dst_registry_uri,
            dst_experiment_name: a.version.dst_experiment_name,
            copy_permissions: a.version.copy_permissions,
            copy_stages_and_aliases: a.version.copy_stages_and_aliases,
            copy_lineage_tags: a.version.copy_lineage_tags,
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
/// Progress on stderr (artifact lines at most twice a second), and each bulk item as one JSON
/// line in the `--report` file as it completes.
#[derive(Default)]
pub struct StderrProgress {
    last_artifacts: Option<std::time::Instant>,
    id_map: Option<std::fs::File>,
}

impl StderrProgress {
    /// With the id map file of `--report FILE` (created, or appended to by a re-run).
    pub fn with_report(path: Option<&str>) -> Result<StderrProgress, CopyError> {
        let Some(path) = path else {
            return Ok(StderrProgress::default());
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| {
                CopyError::bad_input(format!(
                    "cannot write the report file {path:?}: {e} (under wasmtime, give its directory with --dir)"
                ))
            })?;
        Ok(StderrProgress {
            id_map: Some(file),
            ..StderrProgress::default()
        })
    }
}

impl Progress for StderrProgress {
    fn event(&mut self, event: Event) {
        match &event {
            Event::Artifacts {
                files_done,
                files_total,
                ..
            } => {
                let recent = self
                    .last_artifacts
                    .is_some_and(|t| t.elapsed() < std::time::Duration::from_millis(500));
                if recent && files_done < files_total {
                    return;
                }
                self.last_artifacts = Some(std::time::Instant::now());
            }
            Event::Item { item, .. } => {
                if let Some(file) = &mut self.id_map {
                    use std::io::Write;
                    let line = serde_json::to_string(item).expect("items serialize");
                    if let Err(e) = writeln!(file, "{line}") {
                        eprintln!("[mlflow-copy] warning: writing the report file: {e}");
                    }
                }
            }
            _ => {}
        }
        eprintln!("{}", human_line(&event));
    }
}

#[cfg(target_arch = "wasm32")]
pub fn main(args: Vec<String>) -> bool {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return !e.use_stderr();
        }
    };
    match cli.command {
        Command::CopyRun(args) => command(CopyRunRequest::from(args), None),
        Command::CopyModelVersion(args) => command(CopyModelVersionRequest::from(args), None),
        Command::CopyExperiment(args) => {
            let report = args.bulk.report.clone();
            command(CopyExperimentRequest::from(args), report.as_deref())
        }
        Command::CopyModel(args) => {
            let report = args.bulk.report.clone();
            command(CopyModelRequest::from(args), report.as_deref())
        }
        Command::VerifyRun(args) => command(VerifyRunRequest::from(args), None),
        Command::VerifyExperiment(args) => {
            command(crate::api::VerifyExperimentRequest(args.runs.into()), None)
        }
        Command::VerifyModelVersion(args) => command(VerifyModelVersionRequest::from(args), None),
    }
}

/// Runs one command: the JSON report on stdout, and on failure (or a report that stands for
/// one: a bulk copy with failed items) the error line on stderr and `false`.
#[cfg(target_arch = "wasm32")]
fn command<R: super::CopyRequest>(request: R, id_map: Option<&str>) -> bool {
    let result = StderrProgress::with_report(id_map).and_then(|mut progress| {
        super::execute(
            super::wasi_host(crate::transport::Caller::User),
            &request,
            &mut progress,
        )
    });
    let failure = match result {
        Ok(report) => {
            println!("{}", to_json(&report));
            R::failure(&report)
        }
        Err(e) => Some(e),
    };
    match failure {
        Some(e) => {
            eprintln!("{}", error_line(&e));
            false
        }
        None => true,
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
        assert_eq!(r.concurrency, 32);
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
