//! `secretmode certs`: the webhook's serving certificates.
//!
//! - `certs generate` writes a CA and a serving certificate for `<service>.<namespace>.svc`
//!   into a directory and prints the base64 `caBundle` (development, `provided` installs).
//! - `certs bootstrap` does the same inside the cluster for the Helm chart's `generated`
//!   mode: it keeps the CA and serving Secrets, renews them before expiry and patches the
//!   MutatingWebhookConfiguration's `caBundle` with old and new CA during a rotation.
//!
//! The certificate-making code is in [`generate`]; the Kubernetes side in [`bootstrap`].

pub mod bootstrap;
pub mod generate;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Result;

use crate::vocabulary::duration::rfc3339;

#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Generate a CA and a serving certificate into a directory and print the caBundle.
    Generate(GenerateArgs),
    /// In-cluster: create or renew the certificate Secrets and patch the webhook's caBundle.
    Bootstrap(bootstrap::BootstrapArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// Name of the webhook's Service.
    #[arg(long, visible_alias = "service-name", env = "SECRETMODE_SERVICE", default_value = "secretmode")]
    pub service: String,
    /// Namespace the webhook runs in.
    #[arg(long, env = "SECRETMODE_NAMESPACE", default_value = "secretmode")]
    pub namespace: String,
    /// Directory for ca.crt, ca.key, tls.crt and tls.key (keys are written 0600).
    #[arg(long, env = "SECRETMODE_CERTS_OUT", default_value = "certs/out")]
    pub out: PathBuf,
    /// Lifetime of the serving certificate, in days.
    #[arg(long, env = "SECRETMODE_VALIDITY_DAYS", default_value_t = 365)]
    pub validity_days: u32,
    /// Lifetime of the CA, in days (at least the serving certificate's).
    #[arg(long, env = "SECRETMODE_CA_VALIDITY_DAYS", default_value_t = 3650)]
    pub ca_validity_days: u32,
    /// Replace the CA and keys already in the directory. Without it, any of the four files
    /// existing is an error: a new CA breaks every caBundle that trusts the old one.
    #[arg(long)]
    pub force: bool,
}

pub fn run(cmd: CertsCommand) -> Result<ExitCode> {
    match cmd {
        CertsCommand::Generate(args) => run_generate(&args),
        CertsCommand::Bootstrap(args) => bootstrap::run(args),
    }
}

fn run_generate(args: &GenerateArgs) -> Result<ExitCode> {
    generate::validate_dns_label("service", &args.service)?;
    generate::validate_dns_label("namespace", &args.namespace)?;
    if args.ca_validity_days < args.validity_days {
        anyhow::bail!("--ca-validity-days must be at least --validity-days");
    }
    let existing: Vec<&str> = generate::FILES.into_iter().filter(|f| args.out.join(f).exists()).collect();
    if !existing.is_empty() && !args.force {
        anyhow::bail!(
            "{} already holds {}: a new CA would break every caBundle that trusts the old one; fix: keep them, \
             choose another --out, or pass --force to replace them",
            args.out.display(),
            existing.join(", ")
        );
    }
    let now = SystemTime::now();
    let ca =
        generate::new_ca(&generate::ca_common_name(&args.service, &args.namespace, now), now, args.ca_validity_days)?;
    let serving = generate::new_serving(&ca, &args.service, &args.namespace, now, args.validity_days)?;
    let written = generate::write_dir(&args.out, &ca, &serving)?;
    let until = |pem: &str| generate::inspect(pem).map(|c| rfc3339(c.not_after)).unwrap_or_else(|_| "?".into());
    eprintln!(
        "wrote {}, {}, {} and {} (serving certificate for {}, valid until {}; CA valid until {})",
        written.ca_cert.display(),
        written.ca_key.display(),
        written.tls_cert.display(),
        written.tls_key.display(),
        generate::dns_names(&args.service, &args.namespace).join(", "),
        until(&serving.cert_pem),
        until(&ca.cert_pem),
    );
    eprintln!("caBundle (base64 of ca.crt) on stdout:");
    println!("{}", generate::ca_bundle_base64(&ca.cert_pem));
    Ok(ExitCode::SUCCESS)
}
