//! `secretmode serve`, the HTTP layer: the HTTPS webhook plus a plain-HTTP admin port.
//!
//! [`review`] speaks the AdmissionReview wire format and hands the pod, read as a
//! [`pod_view`], to `decide`; [`routes`] are the handlers, [`listener`] accepts connections
//! under [`deadlines`], [`tls`] serves and reloads the certificate, [`metrics`] counts. This
//! file wires them from the `serve` flags.

pub mod deadlines;
pub mod listener;
pub mod metrics;
pub mod pod_view;
pub mod review;
pub mod routes;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::vocabulary::duration::{rfc3339, HumanDuration};
use listener::{serve_tls, ListenerLimits};
use metrics::{Metrics, ResultLabels};
use routes::{AdminState, WebhookState};
use tls::{CertFiles, CertResolver, Poll, Poller};

fn duration_arg(s: &str) -> Result<Duration, String> {
    crate::vocabulary::duration::parse(s)
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// HTTPS address of the webhook (`POST /mutate`).
    #[arg(long, env = "SECRETMODE_ADDR", default_value = "0.0.0.0:8443")]
    pub addr: SocketAddr,
    /// Plain-HTTP address for /healthz, /readyz and /metrics.
    #[arg(long, env = "SECRETMODE_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,
    /// PEM certificate chain; without it a self-signed certificate is made at start.
    #[arg(long, env = "SECRETMODE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "SECRETMODE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// How often the certificate files are re-read (symlink swaps included).
    #[arg(long, env = "SECRETMODE_TLS_RELOAD_INTERVAL", default_value = "5s", value_parser = duration_arg)]
    pub tls_reload_interval: Duration,
    /// Webhook config file (YAML); the built-in config without it.
    #[arg(long, env = "SECRETMODE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Name of the webhook's Service, for the self-signed certificate's SANs.
    #[arg(long, visible_alias = "service-name", env = "SECRETMODE_SERVICE", default_value = "secretmode")]
    pub service: String,
    /// Namespace the webhook runs in, for the self-signed certificate's SANs.
    #[arg(long, env = "SECRETMODE_NAMESPACE", default_value = "secretmode")]
    pub namespace: String,
    /// Largest accepted request body (the API server sends at most about 3 MiB).
    #[arg(long, env = "SECRETMODE_MAX_BODY_BYTES", default_value_t = 3_670_016)]
    pub max_body_bytes: usize,
    /// Time allowed for a client to complete the TLS handshake.
    #[arg(long, env = "SECRETMODE_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = duration_arg)]
    pub handshake_timeout: Duration,
    /// Time allowed to send a request's headers, from its first byte (and for a new
    /// connection, to start its first request).
    #[arg(long, env = "SECRETMODE_HEADER_TIMEOUT", default_value = "5s", value_parser = duration_arg)]
    pub header_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request. Longer than the API
    /// server's client keeps idle connections (90 s), so the webhook never closes one the client
    /// is about to reuse.
    #[arg(long, env = "SECRETMODE_IDLE_TIMEOUT", default_value = "120s", value_parser = duration_arg)]
    pub idle_timeout: Duration,
    /// Time allowed to send the request body (also capped by the request's `?timeout=`).
    #[arg(long, env = "SECRETMODE_BODY_TIMEOUT", default_value = "10s", value_parser = duration_arg)]
    pub body_timeout: Duration,
    /// Open connections beyond this are closed at once.
    #[arg(long, env = "SECRETMODE_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// After SIGTERM, keep serving (while /readyz fails) this long so endpoints update first.
    #[arg(long, env = "SECRETMODE_SHUTDOWN_DELAY", default_value = "0s", value_parser = duration_arg)]
    pub shutdown_delay: Duration,
    /// Time to finish in-flight requests after we stop accepting.
    #[arg(long, env = "SECRETMODE_SHUTDOWN_GRACE", default_value = "25s", value_parser = duration_arg)]
    pub shutdown_grace: Duration,
}

pub fn run(args: ServeArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let (stop_tx, stop_rx) = watch::channel(false);
        let signals = tokio::spawn(async move {
            wait_for_signal().await;
            let _ = stop_tx.send(true);
        });
        let result = serve(args, stop_rx).await;
        signals.abort();
        result
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs the webhook until `stop` turns true, then drains and returns.
pub async fn serve(args: ServeArgs, mut stop: watch::Receiver<bool>) -> Result<()> {
    let config = Arc::new(Config::load_or_builtin(args.config.as_deref())?);
    let metrics = Arc::new(Metrics::new());
    let resolver = Arc::new(CertResolver::default());

    let files = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(CertFiles { cert: cert.clone(), key: key.clone() }),
        _ => None,
    };
    let mut poller = Poller::default();
    match &files {
        Some(files) => reload(&mut poller, files, &resolver, &metrics),
        None => {
            let names = vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
                args.service.clone(),
                format!("{}.{}", args.service, args.namespace),
                format!("{}.{}.svc", args.service, args.namespace),
            ];
            let loaded = tls::self_signed(&names)?;
            metrics.cert_expiry.set(loaded.not_after);
            resolver.set(loaded.key);
            tracing::info!(
                sans = ?names,
                not_after = %rfc3339(loaded.not_after),
                "serving with a self-signed certificate made at start"
            );
        }
    }

    let webhook_listener = TcpListener::bind(args.addr).await.with_context(|| format!("binding {}", args.addr))?;
    let admin_listener =
        TcpListener::bind(args.admin_addr).await.with_context(|| format!("binding {}", args.admin_addr))?;
    tracing::info!(
        addr = %webhook_listener.local_addr().unwrap_or(args.addr),
        admin_addr = %admin_listener.local_addr().unwrap_or(args.admin_addr),
        "secretmode webhook listening"
    );

    let draining = Arc::new(AtomicBool::new(false));
    let admin = routes::admin_router(Arc::new(AdminState {
        metrics: metrics.clone(),
        resolver: resolver.clone(),
        draining: draining.clone(),
    }));
    let (admin_stop_tx, mut admin_stop_rx) = watch::channel(false);
    let admin_task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = admin_stop_rx.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(admin_listener, admin).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "admin server failed");
        }
    });

    let reload_task = files.map(|files| {
        let resolver = resolver.clone();
        let metrics = metrics.clone();
        let interval = args.tls_reload_interval;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                reload(&mut poller, &files, &resolver, &metrics);
            }
        })
    });

    let webhook = routes::webhook_router(Arc::new(WebhookState {
        config,
        metrics: metrics.clone(),
        max_body_bytes: args.max_body_bytes,
        body_timeout: args.body_timeout,
    }));
    let (listener_stop_tx, listener_stop_rx) = watch::channel(false);
    let limits = ListenerLimits {
        handshake_timeout: args.handshake_timeout,
        header_timeout: args.header_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections.max(1),
        shutdown_grace: args.shutdown_grace,
    };
    let tls_config = Arc::new(tls::server_config(resolver.clone()));
    let server =
        tokio::spawn(serve_tls(webhook_listener, tls_config, webhook, limits, metrics.clone(), listener_stop_rx));

    let _ = stop.wait_for(|s| *s).await;
    tracing::info!(
        delay = %HumanDuration(args.shutdown_delay),
        "shutdown requested: failing readiness, then draining"
    );
    draining.store(true, Ordering::Relaxed);
    tokio::time::sleep(args.shutdown_delay).await;
    let _ = listener_stop_tx.send(true);
    let drained = server.await.unwrap_or(false);
    if let Some(task) = reload_task {
        task.abort();
    }
    let _ = admin_stop_tx.send(true);
    let _ = admin_task.await;
    tracing::info!(drained, "secretmode webhook stopped");
    Ok(())
}

fn reload(poller: &mut Poller, files: &CertFiles, resolver: &CertResolver, metrics: &Metrics) {
    match poller.poll(files) {
        Poll::Unchanged => {}
        Poll::Loaded(loaded) => {
            metrics.cert_expiry.set(loaded.not_after);
            metrics.cert_reloads.get_or_create(&ResultLabels { result: "loaded" }).inc();
            resolver.set(loaded.key);
            tracing::info!(
                cert = %files.cert.display(),
                not_after = %rfc3339(loaded.not_after),
                "serving certificate loaded"
            );
        }
        Poll::Failed(e) => {
            metrics.cert_reloads.get_or_create(&ResultLabels { result: "failed" }).inc();
            if resolver.is_loaded() {
                tracing::error!(error = %e, "certificate reload failed; keeping the certificate in use");
            } else {
                tracing::error!(error = %e, "no usable certificate yet; not ready");
            }
        }
    }
}
