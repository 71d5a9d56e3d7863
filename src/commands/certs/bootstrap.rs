//! `secretmode certs bootstrap`: the in-cluster certificate flow for clusters without
//! cert-manager, run by the chart's hook Job (and, optionally, a renewal CronJob).
//!
//! State lives in two Secrets in the webhook's namespace:
//! - the CA Secret (`ca.crt`, `ca.key`, `bundle.crt`): read only by this command;
//! - the serving Secret (`kubernetes.io/tls`: `tls.crt`, `tls.key`, `ca.crt`): mounted by the
//!   webhook pods, which re-read it by polling.
//!
//! Each run creates what is missing, reuses what is still good, and renews what is close to
//! expiry. A renewed CA is added to the trusted bundle next to the old one (kept until the old
//! one expires), and the MutatingWebhookConfiguration's `caBundle` is patched **before** the
//! serving Secret changes, so at every moment the API server trusts whatever certificate a
//! webhook pod serves — old pods with the old certificate, reloaded pods with the new one.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::Client;

use super::generate::{self, CaPair, ServingPair};

/// Field manager recorded on our writes.
pub const FIELD_MANAGER: &str = "secretmode-certs";

#[derive(Debug, Clone, clap::Args)]
pub struct BootstrapArgs {
    /// Name of the webhook's Service.
    #[arg(long, visible_alias = "service-name", env = "SECRETMODE_SERVICE")]
    pub service: String,
    /// Namespace the webhook runs in (its Service and Secrets).
    #[arg(long, env = "SECRETMODE_NAMESPACE")]
    pub namespace: String,
    /// Serving Secret (type kubernetes.io/tls) that the webhook pods mount.
    #[arg(long, env = "SECRETMODE_TLS_SECRET")]
    pub tls_secret: String,
    /// Secret holding the CA key; only this command reads it.
    #[arg(long, env = "SECRETMODE_CA_SECRET")]
    pub ca_secret: String,
    /// MutatingWebhookConfiguration whose webhooks get the caBundle.
    #[arg(long, env = "SECRETMODE_WEBHOOK_CONFIG")]
    pub webhook_config: String,
    /// Lifetime of the serving certificate, in days.
    #[arg(long, env = "SECRETMODE_VALIDITY_DAYS", default_value_t = 365)]
    pub validity_days: u32,
    /// Lifetime of the CA, in days.
    #[arg(long, env = "SECRETMODE_CA_VALIDITY_DAYS", default_value_t = 3650)]
    pub ca_validity_days: u32,
    /// Renew a certificate once it has fewer than this many days left.
    #[arg(long, env = "SECRETMODE_RENEW_BEFORE_DAYS", default_value_t = 30)]
    pub renew_before_days: u32,
    /// Fail when the webhook configuration does not exist (instead of leaving it for a later
    /// run: the chart's pre-install run comes before Helm creates it).
    #[arg(long, env = "SECRETMODE_REQUIRE_WEBHOOK")]
    pub require_webhook: bool,
}

/// What a run did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub ca_created: bool,
    pub ca_renewed: bool,
    pub serving_issued: bool,
    /// Number of CA certificates in the trusted bundle.
    pub bundle_size: usize,
    /// Webhooks whose caBundle was patched (empty if none needed it or the config is absent).
    pub patched_webhooks: Vec<String>,
    pub webhook_config_found: bool,
}

pub fn run(args: BootstrapArgs) -> Result<std::process::ExitCode> {
    // kube's TLS client takes rustls's process-wide provider; pin ring (the one this binary is
    // built with) so a dependency enabling a second provider cannot make that ambiguous.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let client = Client::try_default().await.context("connecting to the Kubernetes API (in-cluster config)")?;
        let outcome = bootstrap(client, &args, SystemTime::now()).await?;
        println!(
            "certs bootstrap: CA {}, serving certificate {}, {} CA(s) trusted, webhook configuration {}",
            if outcome.ca_created {
                "created"
            } else if outcome.ca_renewed {
                "renewed (old CA kept in the bundle)"
            } else {
                "reused"
            },
            if outcome.serving_issued { "issued" } else { "reused" },
            outcome.bundle_size,
            if !outcome.webhook_config_found {
                "not found yet (patched by the next run)".to_string()
            } else if outcome.patched_webhooks.is_empty() {
                "already up to date".to_string()
            } else {
                format!("patched ({})", outcome.patched_webhooks.join(", "))
            },
        );
        Ok(std::process::ExitCode::SUCCESS)
    })
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    secret.data.as_ref()?.get(key).and_then(|b| String::from_utf8(b.0.clone()).ok())
}

/// The decision of one run, computed from what exists; no I/O.
#[derive(Debug, Clone)]
pub struct Plan {
    pub ca: CaPair,
    pub bundle_pem: String,
    pub serving: ServingPair,
    pub ca_created: bool,
    pub ca_renewed: bool,
    pub ca_secret_changed: bool,
    pub serving_issued: bool,
    pub bundle_size: usize,
}

/// Decides what to keep and what to make. `ca_secret` and `tls_secret` are the Secrets as they
/// exist (if they do).
pub fn plan(
    args: &BootstrapArgs,
    ca_secret: Option<&Secret>,
    tls_secret: Option<&Secret>,
    now: SystemTime,
) -> Result<Plan> {
    generate::validate_dns_label("service", &args.service)?;
    generate::validate_dns_label("namespace", &args.namespace)?;
    if args.renew_before_days >= args.validity_days {
        bail!("--renew-before-days must be less than --validity-days");
    }
    if args.ca_validity_days <= args.validity_days + args.renew_before_days {
        bail!("--ca-validity-days must exceed --validity-days plus --renew-before-days");
    }
    let now_s = unix(now);
    let day = 86_400i64;
    let renew_before = i64::from(args.renew_before_days) * day;

    // The CA in use, if it is whole and has room for a full serving certificate.
    let existing_ca = ca_secret.and_then(|s| {
        let ca = CaPair { cert_pem: text(s, "ca.crt")?, key_pem: text(s, "ca.key")? };
        let info = generate::inspect(&ca.cert_pem).ok()?;
        Some((ca, info))
    });
    let stored_bundle = ca_secret.and_then(|s| text(s, "bundle.crt")).unwrap_or_default();
    let ca_room = i64::from(args.validity_days) * day + renew_before;
    let (ca, ca_created, ca_renewed, mut previous) = match existing_ca {
        Some((ca, info)) if info.is_ca && info.not_after - now_s > ca_room => (ca, false, false, Vec::new()),
        Some((old, _)) => {
            let name = generate::ca_common_name(&args.service, &args.namespace, now);
            (generate::new_ca(&name, now, args.ca_validity_days)?, false, true, vec![old.cert_pem])
        }
        None => {
            let name = generate::ca_common_name(&args.service, &args.namespace, now);
            (generate::new_ca(&name, now, args.ca_validity_days)?, true, false, Vec::new())
        }
    };
    // Trusted bundle: the current CA first, then every earlier CA that has not expired yet.
    previous.extend(generate::split_bundle(&stored_bundle));
    let mut bundle = vec![ca.cert_pem.clone()];
    for pem in previous {
        let still_valid = generate::inspect(&pem).map(|i| i.not_after > now_s).unwrap_or(false);
        if still_valid && !bundle.iter().any(|b| b.trim() == pem.trim()) {
            bundle.push(pem);
        }
    }
    let bundle_pem: String = bundle.concat();
    let ca_secret_changed = ca_created
        || ca_renewed
        || stored_bundle.trim() != bundle_pem.trim()
        || ca_secret.and_then(|s| text(s, "ca.crt")).as_deref() != Some(ca.cert_pem.as_str());

    // The serving certificate: kept only while it is signed by the current CA, names exactly
    // our Service, and has more than the renewal margin left.
    let ca_info = generate::inspect(&ca.cert_pem)?;
    let wanted = generate::dns_names(&args.service, &args.namespace);
    let existing_serving = tls_secret.and_then(|s| {
        let pair = ServingPair { cert_pem: text(s, "tls.crt")?, key_pem: text(s, "tls.key")? };
        let info = generate::inspect(&pair.cert_pem).ok()?;
        let ok = info.authority_key_id.is_some()
            && info.authority_key_id == ca_info.subject_key_id
            && info.dns_names == wanted
            && info.not_after - now_s > renew_before
            && rcgen::KeyPair::from_pem(&pair.key_pem)
                .map(|k| generate::public_key_of(&pair.cert_pem).map(|p| p == k.public_key_der()).unwrap_or(false))
                .unwrap_or(false);
        ok.then_some(pair)
    });
    let (serving, serving_issued) = match existing_serving {
        Some(pair) => (pair, false),
        None => (generate::new_serving(&ca, &args.service, &args.namespace, now, args.validity_days)?, true),
    };
    Ok(Plan {
        bundle_size: bundle.len(),
        ca,
        bundle_pem,
        serving,
        ca_created,
        ca_renewed,
        ca_secret_changed,
        serving_issued,
    })
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "secretmode".to_string()),
        ("app.kubernetes.io/component".to_string(), "webhook-certs".to_string()),
        ("app.kubernetes.io/managed-by".to_string(), FIELD_MANAGER.to_string()),
    ])
}

fn secret(name: &str, namespace: &str, type_: &str, data: &[(&str, &str)], existing: Option<&Secret>) -> Secret {
    let mut meta = existing.map(|s| s.metadata.clone()).unwrap_or_default();
    if existing.is_none() {
        meta = ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            ..ObjectMeta::default()
        };
    }
    meta.labels.get_or_insert_with(BTreeMap::new).extend(labels());
    meta.managed_fields = None;
    Secret {
        metadata: meta,
        type_: Some(type_.to_string()),
        data: Some(data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect()),
        ..Secret::default()
    }
}

async fn write_secret(api: &Api<Secret>, name: &str, secret: Secret, exists: bool) -> Result<()> {
    let pp = PostParams { field_manager: Some(FIELD_MANAGER.to_string()), ..PostParams::default() };
    if exists {
        api.replace(name, &pp, &secret).await.with_context(|| format!("updating Secret {name}"))?;
    } else {
        api.create(&pp, &secret).await.with_context(|| format!("creating Secret {name}"))?;
    }
    Ok(())
}

/// The whole in-cluster flow against `client`. See the module documentation for the order.
pub async fn bootstrap(client: Client, args: &BootstrapArgs, now: SystemTime) -> Result<Outcome> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &args.namespace);
    let ca_secret =
        secrets.get_opt(&args.ca_secret).await.with_context(|| format!("reading Secret {}", args.ca_secret))?;
    let tls_secret =
        secrets.get_opt(&args.tls_secret).await.with_context(|| format!("reading Secret {}", args.tls_secret))?;
    let plan = plan(args, ca_secret.as_ref(), tls_secret.as_ref(), now)?;

    // 1. The CA Secret (key and trusted bundle).
    if plan.ca_secret_changed {
        let data = [
            ("ca.crt", plan.ca.cert_pem.as_str()),
            ("ca.key", plan.ca.key_pem.as_str()),
            ("bundle.crt", plan.bundle_pem.as_str()),
        ];
        let s = secret(&args.ca_secret, &args.namespace, "Opaque", &data, ca_secret.as_ref());
        write_secret(&secrets, &args.ca_secret, s, ca_secret.is_some()).await?;
    }

    // 2. The webhook configuration trusts the new bundle before anything serves a new cert.
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let mut outcome = Outcome {
        ca_created: plan.ca_created,
        ca_renewed: plan.ca_renewed,
        serving_issued: plan.serving_issued,
        bundle_size: plan.bundle_size,
        ..Outcome::default()
    };
    let config = webhooks
        .get_opt(&args.webhook_config)
        .await
        .with_context(|| format!("reading MutatingWebhookConfiguration {}", args.webhook_config))?;
    match config {
        None if args.require_webhook => {
            bail!("MutatingWebhookConfiguration {} does not exist", args.webhook_config)
        }
        None => {}
        Some(config) => {
            outcome.webhook_config_found = true;
            let want = plan.bundle_pem.as_bytes();
            let stale: Vec<String> = config
                .webhooks
                .unwrap_or_default()
                .into_iter()
                .filter(|w| w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(want))
                .map(|w| w.name)
                .collect();
            if !stale.is_empty() {
                // Strategic merge on the `webhooks` list (merge key `name`): only caBundle of
                // each named webhook changes; every other field stays as the cluster has it.
                let encoded = generate::ca_bundle_base64(&plan.bundle_pem);
                let items: Vec<serde_json::Value> = stale
                    .iter()
                    .map(|name| serde_json::json!({"name": name, "clientConfig": {"caBundle": encoded}}))
                    .collect();
                let patch = serde_json::json!({ "webhooks": items });
                webhooks
                    .patch(
                        &args.webhook_config,
                        &PatchParams { field_manager: Some(FIELD_MANAGER.to_string()), ..PatchParams::default() },
                        &Patch::Strategic(patch),
                    )
                    .await
                    .with_context(|| format!("patching the caBundle of {}", args.webhook_config))?;
                outcome.patched_webhooks = stale;
            }
        }
    }

    // 3. The serving Secret: webhook pods pick the new files up by polling.
    let tls_data_changed = plan.serving_issued
        || tls_secret.as_ref().and_then(|s| text(s, "ca.crt")).as_deref() != Some(plan.bundle_pem.as_str());
    if tls_data_changed {
        let data = [
            ("tls.crt", plan.serving.cert_pem.as_str()),
            ("tls.key", plan.serving.key_pem.as_str()),
            ("ca.crt", plan.bundle_pem.as_str()),
        ];
        let s = secret(&args.tls_secret, &args.namespace, "kubernetes.io/tls", &data, tls_secret.as_ref());
        write_secret(&secrets, &args.tls_secret, s, tls_secret.is_some()).await?;
    }
    Ok(outcome)
}
