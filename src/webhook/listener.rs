//! The TLS accept loop: connection limit, handshake and header timeouts, graceful drain.
//!
//! The API server reuses keep-alive connections, even to a terminating pod. On shutdown we
//! stop accepting, let hyper close idle keep-alive connections, finish requests in flight
//! (answering them with `Connection: close`), and wait for every connection task, all
//! within the grace period.
//!
//! Hand-written over hyper (not `axum::serve`, which has none of these limits); the load tests
//! measure the ceiling on this same loop, so its cost is known (docs/BENCHMARKS.md).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::deadlines::{Deadlines, Marked, Phase};
use super::metrics::Metrics;

pub struct ListenerLimits {
    pub handshake_timeout: Duration,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
}

/// Serves until `stop` turns true, then drains. Returns whether the drain finished in time.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    limits: ListenerLimits,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> bool {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let draining = Arc::new(AtomicBool::new(false));
    let service = TowerToHyperService::new(router);

    loop {
        tokio::select! {
            biased;
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
            accepted = listener.accept() => {
                let tcp = match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    metrics.connections_refused.inc();
                    drop(tcp);
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                let service = service.clone();
                let draining = draining.clone();
                let metrics = metrics.clone();
                let handshake_timeout = limits.handshake_timeout;
                let header_timeout = limits.header_timeout;
                let idle_timeout = limits.idle_timeout;
                tokio::spawn(async move {
                    let _slot = slot;
                    let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            return;
                        }
                    };
                    metrics.connections.inc();
                    // Header and idle deadlines are ours (deadlines.rs): hyper's header timeout
                    // would also close idle keep-alive connections.
                    let phase = Phase::default();
                    let io = Deadlines::new(tls, phase.clone(), header_timeout, idle_timeout);
                    let service = Marked::new(service, phase);
                    let mut builder = http1::Builder::new();
                    builder
                        .timer(TokioTimer::new())
                        .header_read_timeout(None)
                        // A connection whose handshake finished after the drain began serves
                        // one request and closes.
                        .keep_alive(!draining.load(Ordering::Relaxed));
                    let conn = builder.serve_connection(TokioIo::new(io), service);
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    metrics.connections.dec();
                });
            }
        }
    }
    drop(listener);
    draining.store(true, Ordering::Relaxed);
    let all_slots = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let drain = async {
        graceful.shutdown().await;
        // Connections still in their handshake are not watched yet; wait for every task.
        let _ = slots.acquire_many(all_slots).await;
    };
    match tokio::time::timeout(limits.shutdown_grace, drain).await {
        Ok(()) => true,
        Err(_) => {
            tracing::warn!("shutdown grace period ended with connections still open");
            false
        }
    }
}
