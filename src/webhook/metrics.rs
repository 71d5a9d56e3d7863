//! Prometheus metrics of the webhook.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The API server's own bucket edges for webhook latency
/// (`apiserver_admission_webhook_admission_duration_seconds`), so both sides line up.
pub const LATENCY_BUCKETS: [f64; 8] = [0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 10.0, 25.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub mode: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub rule: String,
    pub enforcement: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub admissions: Family<AdmissionLabels, Counter>,
    pub duration: Histogram,
    pub patch_bytes: Histogram,
    pub policy_violations: Family<PolicyLabels, Counter>,
    pub rejected: Family<ReasonLabels, Counter>,
    pub cert_expiry: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub cert_reloads: Family<ResultLabels, Counter>,
    pub connections: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub connections_refused: Counter<u64, AtomicU64>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("secretmode");
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register("admissions", "Admission reviews answered, by mode and outcome", admissions.clone());
        let duration = Histogram::new(LATENCY_BUCKETS);
        registry.register(
            "admission_duration_seconds",
            "Time from request received to response ready, body read included",
            duration.clone(),
        );
        let patch_bytes = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(128.0, 4.0, 8));
        registry.register("patch_bytes", "Size of returned JSON patches before base64", patch_bytes.clone());
        let policy_violations = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "policy_violations",
            "Pods that broke a policy rule, by rule and enforcement level (enforce = denied)",
            policy_violations.clone(),
        );
        let rejected = Family::<ReasonLabels, Counter>::default();
        registry.register("requests_rejected", "Requests answered with an HTTP error, by reason", rejected.clone());
        let cert_expiry = Gauge::default();
        registry.register(
            "tls_cert_expiry_timestamp_seconds",
            "notAfter of the serving certificate in use, seconds since the epoch",
            cert_expiry.clone(),
        );
        let cert_reloads = Family::<ResultLabels, Counter>::default();
        registry.register("tls_cert_reloads", "Certificate reload attempts, by result", cert_reloads.clone());
        let connections = Gauge::default();
        registry.register("open_connections", "TLS connections currently open", connections.clone());
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Connections closed at once because the connection limit was reached",
            connections_refused.clone(),
        );
        Metrics {
            registry,
            admissions,
            duration,
            patch_bytes,
            policy_violations,
            rejected,
            cert_expiry,
            cert_reloads,
            connections,
            connections_refused,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
