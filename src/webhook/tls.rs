//! Serving certificates: loading, the self-signed default, and hot reload.
//!
//! The certificate lives behind an in-memory resolver, so a reload swaps one `Arc` and the
//! next handshake uses it; connections already open keep theirs. Files are polled, not
//! watched: a mounted Kubernetes Secret is updated by swapping the `..data` symlink, which a
//! watch on the files themselves misses, while a read through the path always sees it.
//! Kept hand-written: swapping under load was measured to drop no request
//! (docs/RELIABILITY.md, certificate rotation).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("{path} holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {reason}")]
    BadKey { path: String, reason: String },
    #[error("the private key does not belong to the certificate: {0}")]
    Mismatch(String),
    #[error("cannot make a self-signed certificate: {0}")]
    SelfSigned(String),
}

/// A loaded certificate and when it expires.
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    /// `notAfter` of the leaf, seconds since the epoch (0 if it could not be read).
    pub not_after: i64,
}

/// Parses a PEM chain and key and checks they belong together.
pub fn load_pem(cert_pem: &[u8], key_pem: &[u8], cert_path: &str, key_path: &str) -> Result<Loaded, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::NoCertificate { path: cert_path.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert_path.to_string() });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsError::BadKey { path: key_path.to_string(), reason: e.to_string() })?;
    let signing =
        any_supported_type(&key).map_err(|e| TlsError::BadKey { path: key_path.to_string(), reason: e.to_string() })?;
    let not_after = not_after(&chain[0]);
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| TlsError::Mismatch(e.to_string()))?;
    Ok(Loaded { key: Arc::new(certified), not_after })
}

fn not_after(cert: &CertificateDer<'_>) -> i64 {
    x509_parser::parse_x509_certificate(cert.as_ref()).map(|(_, c)| c.validity().not_after.timestamp()).unwrap_or(0)
}

/// A self-signed certificate for `names` (DNS names or IP addresses), made at start.
pub fn self_signed(names: &[String]) -> Result<Loaded, TlsError> {
    let made = rcgen::generate_simple_self_signed(names.to_vec()).map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.key_pair.serialize_der()));
    let signing = any_supported_type(&key).map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    let der = made.cert.der().clone();
    let not_after = not_after(&der);
    Ok(Loaded { key: Arc::new(CertifiedKey::new(vec![der], signing)), not_after })
}

/// Hands rustls whatever certificate is current; empty until the first successful load.
#[derive(Default)]
pub struct CertResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver").field("loaded", &self.is_loaded()).finish()
    }
}

impl CertResolver {
    pub fn set(&self, key: Arc<CertifiedKey>) {
        // A poisoned lock only means a panic elsewhere mid-swap; the Option inside is whole.
        let mut slot = self.current.write().unwrap_or_else(|p| p.into_inner());
        *slot = Some(key);
    }

    pub fn is_loaded(&self) -> bool {
        self.current.read().map(|s| s.is_some()).unwrap_or(true)
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Builds the rustls config: TLS 1.2 and 1.3, HTTP/1.1 only (the API server speaks HTTP/1.1
/// to webhooks that are not on loopback).
pub fn server_config(resolver: Arc<CertResolver>) -> rustls::ServerConfig {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_no_client_auth().with_cert_resolver(resolver.clone()))
        // ring's default provider always supports the safe defaults; keep a plain fallback.
        .unwrap_or_else(|_| rustls::ServerConfig::builder().with_no_client_auth().with_cert_resolver(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// Where the PEM files are and how often to look at them.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What one poll found.
#[derive(Debug)]
pub enum Poll {
    Unchanged,
    Loaded(Loaded),
    Failed(TlsError),
}

impl fmt::Debug for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loaded").field("not_after", &self.not_after).finish()
    }
}

/// Remembers the bytes last loaded so an unchanged pair is not re-parsed every poll, and a
/// broken pair is reported once rather than every interval.
#[derive(Default)]
pub struct Poller {
    last: Option<(Vec<u8>, Vec<u8>)>,
}

impl Poller {
    pub fn poll(&mut self, files: &CertFiles) -> Poll {
        let read =
            |p: &Path| std::fs::read(p).map_err(|source| TlsError::Read { path: p.display().to_string(), source });
        let (cert, key) = match (read(&files.cert), read(&files.key)) {
            (Ok(c), Ok(k)) => (c, k),
            (Err(e), _) | (_, Err(e)) => return Poll::Failed(e),
        };
        if self.last.as_ref().is_some_and(|(c, k)| *c == cert && *k == key) {
            return Poll::Unchanged;
        }
        let result = load_pem(&cert, &key, &files.cert.display().to_string(), &files.key.display().to_string());
        // Remember failures too: a half-swapped or broken pair is retried only when it changes.
        self.last = Some((cert, key));
        match result {
            Ok(loaded) => Poll::Loaded(loaded),
            Err(e) => Poll::Failed(e),
        }
    }
}

/// Default poll interval; a Secret update reaches the kubelet's volume within about a minute,
/// so a few seconds here is not the bottleneck.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);
