//! The secretmode command line: wiring only; every subcommand lives in its own module.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secretmode::telemetry::{self, LogFormat, LogWriter};
use secretmode::{agent, audit, certs, config::Config, mutate_cmd, server};

/// mimalloc, as in `secretmode`: see docs/BENCHMARKS.md (allocation-bound request path).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "secretmode", version, about = "Choose per workload how secrets reach pods, and so how they fail")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "SECRETMODE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log level or env-filter directive; RUST_LOG overrides it.
    #[arg(long, global = true, env = "SECRETMODE_LOG_LEVEL", default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the mutating admission webhook over HTTPS.
    Serve(server::ServeArgs),
    /// Run the webhook's decision offline on a Pod or AdmissionReview and print the result.
    Mutate {
        /// Pod or AdmissionReview, YAML or JSON; `-` for stdin.
        #[arg(short = 'f', long = "file", env = "SECRETMODE_MUTATE_FILE")]
        file: PathBuf,
        /// Namespace of the workload, as `kubectl -n` (default: the pod's, else `default`).
        // No env: SECRETMODE_NAMESPACE is the namespace the webhook runs in (serve, certs).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Print the JSON Patch instead of the patched pod.
        #[arg(long, env = "SECRETMODE_MUTATE_PATCH")]
        patch: bool,
        /// Webhook config file (default: the built-in config).
        #[arg(long, env = "SECRETMODE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// The injected agent: fetch secrets into files (init) or keep them fresh (sidecar).
    Agent(agent::AgentArgs),
    /// Wait until the local sidecar has synced (postStart hook of a plain sidecar).
    #[command(hide = true)]
    AgentWait(agent::WaitArgs),
    /// Report which failure mode every workload chose, and check it against policy.
    Audit(audit::AuditArgs),
    /// Make webhook serving certificates.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_level = match &cli.command {
        Command::Agent(_) => agent::log_directives(&cli.log_level),
        _ => cli.log_level.clone(),
    };
    // Only the webhook logs on a hot path (a line per admission).
    let writer = if matches!(cli.command, Command::Serve(_)) { LogWriter::Background } else { LogWriter::Direct };
    let log = telemetry::init(cli.log_format, &log_level, writer);
    let result = match cli.command {
        Command::Serve(args) => server::run(args),
        Command::Mutate { file, namespace, patch, config } => {
            run_mutate(&file, namespace.as_deref(), patch, config.as_deref())
        }
        Command::Agent(args) => agent::run(args),
        Command::AgentWait(args) => agent::run_wait(args),
        Command::Audit(args) => audit::run(args),
        Command::Certs(cmd) => certs::run(cmd),
        Command::Version => {
            println!("secretmode {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
    };
    // Queued log lines first, then the command's last word.
    drop(log);
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("secretmode: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run_mutate(
    file: &std::path::Path,
    namespace: Option<&str>,
    patch: bool,
    config: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let config = Config::load_or_builtin(config)?;
    let out = mutate_cmd::run(&mutate_cmd::MutateArgs { file, namespace, patch_only: patch }, &config)?;
    for w in &out.warnings {
        eprintln!("Warning: {w}");
    }
    if let Some(denial) = out.denied {
        eprintln!("denied: {denial}");
        return Ok(ExitCode::from(1));
    }
    print!("{}", out.stdout);
    Ok(ExitCode::SUCCESS)
}
