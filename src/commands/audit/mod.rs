//! `secretmode audit`: which failure mode every workload chose, and whether policy allows it.
//!
//! Workloads are judged by the webhook's own code (`annotations::parse/resolve`,
//! `PolicyConfig::evaluate_pod`, `decide::admit_pod`), so the audit and the webhook can never
//! disagree. Exit codes: 0 clean, 1 on error-level findings (enforce-level policy violations,
//! pods the webhook denies, broken references), 2 on unreadable input or config.

mod analyze;
pub mod blast;
mod cluster;
pub mod load;
mod manifests;
mod render;
pub mod rotation;
pub mod sources;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use k8s_openapi::chrono::{DateTime, Utc};

use crate::config::Config;

pub use analyze::{
    analyze_cluster, analyze_manifests, Check, ClusterState, ExternalSecretReport, Finding, Level, ModeSource,
    PolicyResult, Report, Summary, WorkloadReport, CHECKS,
};
pub use cluster::{fetch, ClusterError};
pub use manifests::{load, parse_text, read, ManifestError, Object, Source, STDIN_NAME};
pub use render::render;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for a terminal.
    Table,
    Json,
    /// SARIF 2.1.0 for code-scanning tools.
    Sarif,
    Markdown,
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Files or directories (searched recursively for .yaml, .yml, .json); `-` for stdin.
    #[arg(conflicts_with = "cluster")]
    pub paths: Vec<PathBuf>,
    /// The same as the paths, as kubectl takes them: `-f FILE_OR_DIR`, repeatable.
    #[arg(short = 'f', long = "filename", visible_alias = "file", value_name = "PATH", conflicts_with = "cluster")]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Webhook config file holding the policy (default: the built-in config).
    #[arg(long, env = "SECRETMODE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Namespace for manifests that set none (default `default`); with --cluster, audit only
    /// this namespace.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Audit the live cluster (kubeconfig, or the in-cluster service account) instead of files.
    #[arg(long)]
    pub cluster: bool,
    /// kubeconfig context to use with --cluster (default: the current context).
    #[arg(long, requires = "cluster")]
    pub context: Option<String>,
    /// Rotation impact: who reads this provider path or prefix (repeatable; `PROVIDER:PATH`
    /// for one provider) and how long until each sees a new value.
    #[arg(long = "path", value_name = "PATH")]
    pub rotation_paths: Vec<String>,
    /// Report the requests per second each provider takes, per namespace and in total,
    /// beside its rate limit and cost (config `providerLoad`).
    #[arg(long)]
    pub load: bool,
    /// Nodes each DaemonSet runs on, for manifests (default 1); `--cluster` counts live pods.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = parse_nodes, allow_negative_numbers = true)]
    pub nodes: u32,
    /// Blast radius: what breaks while this provider (of the config's `providers`) is down.
    /// Repeatable, or a comma list.
    #[arg(long, value_name = "PROVIDER")]
    pub assume_down: Vec<String>,
    /// With --assume-down, fail (SM015, exit 1) when a workload meets CONDITION: `blocked`,
    /// `fallback`, `stale-within=DURATION` or `unknown`, optionally `CONDITION@NAMESPACE_GLOB`.
    /// Repeatable.
    #[arg(long, value_name = "CONDITION", requires = "assume_down")]
    pub fail_on: Vec<blast::FailOn>,
}

fn parse_nodes(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{text:?} is not a number of nodes; fix: give a whole number of at least 1 (the nodes a DaemonSet runs on)"
        )),
    }
}

pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load_or_builtin(args.config.as_deref())?;
    let down = match blast::providers(&args.assume_down, &config) {
        Ok(down) => down,
        Err(e) => return Ok(unreadable(std::iter::once(e))),
    };
    let queries: Result<Vec<_>, _> = args.rotation_paths.iter().map(|p| rotation::parse_path(p, &config)).collect();
    let queries = match queries {
        Ok(q) => q,
        Err(e) => return Ok(unreadable(std::iter::once(e))),
    };
    let mut report = if args.cluster {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(cluster_report(&args, &config))?
    } else {
        let paths: Vec<PathBuf> = args.paths.iter().chain(&args.files).cloned().collect();
        if paths.is_empty() {
            bail!(
                "no manifests to audit; fix: name files or directories (or -f PATH, `-` for stdin), or use --cluster"
            );
        }
        let objects = match load(&paths) {
            Ok(objects) => objects,
            Err(errors) => return Ok(unreadable(errors.iter().map(ToString::to_string))),
        };
        let namespace = args.namespace.as_deref().unwrap_or("default");
        match quietly(|| analyze_manifests(&objects, namespace, &config)) {
            Ok(report) => report,
            Err(errors) => return Ok(unreadable(errors.into_iter())),
        }
    };
    load::apply(&mut report, &config, load::LoadOptions { report: args.load, nodes: args.nodes });
    if !queries.is_empty() {
        report.rotation = Some(rotation::impact(&report, &queries, &config));
    }
    if !down.is_empty() {
        blast::apply(&mut report, &down, &args.fail_on);
    }
    print!("{}", render(&report, args.format));
    Ok(ExitCode::from(report.exit_code()))
}

fn unreadable(errors: impl Iterator<Item = String>) -> ExitCode {
    for e in errors {
        eprintln!("secretmode audit: {e}");
    }
    ExitCode::from(2)
}

async fn cluster_report(args: &AuditArgs, config: &Config) -> anyhow::Result<Report> {
    let options = kube::config::KubeConfigOptions { context: args.context.clone(), ..Default::default() };
    let kube_config = match args.context {
        Some(_) => kube::Config::from_kubeconfig(&options).await.context("loading kubeconfig")?,
        None => kube::Config::infer().await.context("no kubeconfig and not running in a cluster")?,
    };
    let client = kube::Client::try_from(kube_config).context("building the Kubernetes client")?;
    audit_cluster(client, args.namespace.as_deref(), config, Utc::now()).await.map_err(Into::into)
}

/// `--cluster` with an explicit client and clock (tests use kube's mock service).
pub async fn audit_cluster(
    client: kube::Client,
    namespace: Option<&str>,
    config: &Config,
    now: DateTime<Utc>,
) -> Result<Report, ClusterError> {
    let state = fetch(client, namespace).await?;
    Ok(quietly(|| analyze_cluster(&state, config, now)))
}

/// Runs the analysis without the webhook's per-pod policy log lines: the audit reports every
/// finding itself, and the same lines on stderr would only be noise.
fn quietly<T>(f: impl FnOnce() -> T) -> T {
    tracing::dispatcher::with_default(&tracing::Dispatch::none(), f)
}
