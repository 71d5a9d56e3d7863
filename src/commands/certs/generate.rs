//! Making the webhook's certificates: an ECDSA P-256 CA and a serving certificate for the
//! Service's DNS names, with rcgen. Pure functions plus one that writes files; the in-cluster
//! flow (`bootstrap`) reuses them.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use time::OffsetDateTime;

/// Certificates are back-dated by this much so that a node whose clock is a little behind
/// still accepts them.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// A CA: its certificate and private key, both PEM.
#[derive(Clone, Debug)]
pub struct CaPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A serving certificate (leaf only) and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct ServingPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The DNS names the API server and in-cluster clients use for `service` in `namespace`; the
/// API server verifies `<service>.<namespace>.svc`.
pub fn dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Checks that `name` is a DNS-1123 label (what Service names and namespaces are).
pub fn validate_dns_label(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        bail!("{what} {name:?} is not a DNS-1123 label (lower-case letters, digits and '-', at most 63 characters)");
    }
    Ok(())
}

fn validity(now: SystemTime, days: u32) -> Result<(OffsetDateTime, OffsetDateTime)> {
    if days == 0 {
        bail!("validity must be at least one day");
    }
    let secs = now.duration_since(UNIX_EPOCH).context("system clock before 1970")?.as_secs();
    let start = OffsetDateTime::from_unix_timestamp(secs as i64 - BACKDATE.as_secs() as i64)
        .context("system clock out of range")?;
    let end =
        OffsetDateTime::from_unix_timestamp(secs as i64 + i64::from(days) * 86_400).context("validity out of range")?;
    Ok((start, end))
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

/// The CA's common name: unique per generation, so old and new CAs in one bundle are told
/// apart in logs and by `openssl x509`.
pub fn ca_common_name(service: &str, namespace: &str, now: SystemTime) -> String {
    let stamp = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{service}.{namespace} webhook CA {stamp}")
}

/// A new self-signed CA valid for `days` from `now`.
pub fn new_ca(common_name: &str, now: SystemTime, days: u32) -> Result<CaPair> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating the CA key")?;
    let mut params = ca_params(common_name);
    (params.not_before, params.not_after) = validity(now, days)?;
    let cert = params.self_signed(&key).context("signing the CA certificate")?;
    Ok(CaPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// A serving certificate for `service` in `namespace` signed by `ca`, valid for `days`
/// (never past the CA's own expiry).
pub fn new_serving(ca: &CaPair, service: &str, namespace: &str, now: SystemTime, days: u32) -> Result<ServingPair> {
    validate_dns_label("service", service)?;
    validate_dns_label("namespace", namespace)?;
    let ca_info = inspect(&ca.cert_pem).context("reading the CA certificate")?;
    let ca_key = KeyPair::from_pem(&ca.key_pem).context("reading the CA key")?;
    // Rebuild the issuer from the CA's subject and key: rcgen signs with the issuer's name and
    // key identifier, both of which are taken from the CA as it is.
    let issuer = ca_params(&ca_info.common_name).self_signed(&ca_key).context("loading the CA")?;
    let ca_spki_matches = {
        let parsed = parse_pem_cert(&ca.cert_pem)?;
        let (_, cert) = x509_parser::parse_x509_certificate(&parsed).context("parsing the CA certificate")?;
        cert.public_key().raw == ca_key.public_key_der().as_slice()
    };
    if !ca_spki_matches {
        bail!("the CA key does not belong to the CA certificate");
    }

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating the serving key")?;
    let mut params = CertificateParams::new(dns_names(service, namespace)).context("serving certificate names")?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("{service}.{namespace}.svc"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let (start, mut end) = validity(now, days)?;
    let ca_end = OffsetDateTime::from_unix_timestamp(ca_info.not_after).context("CA expiry out of range")?;
    if end > ca_end {
        end = ca_end;
    }
    (params.not_before, params.not_after) = (start, end);
    let cert = params.signed_by(&key, &issuer, &ca_key).context("signing the serving certificate")?;
    Ok(ServingPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// What we need to know about a certificate to decide whether to keep it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub common_name: String,
    pub not_before: i64,
    pub not_after: i64,
    pub dns_names: Vec<String>,
    pub subject_key_id: Option<Vec<u8>>,
    pub authority_key_id: Option<Vec<u8>>,
    pub is_ca: bool,
}

fn parse_pem_cert(pem_text: &str) -> Result<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes()).context("not a PEM certificate")?;
    if pem.label != "CERTIFICATE" {
        bail!("expected a CERTIFICATE PEM block, found {}", pem.label);
    }
    Ok(pem.contents)
}

/// The DER SubjectPublicKeyInfo of the first certificate in `pem_text`.
pub fn public_key_of(pem_text: &str) -> Result<Vec<u8>> {
    let der = parse_pem_cert(pem_text)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).context("not an X.509 certificate")?;
    Ok(cert.public_key().raw.to_vec())
}

/// Splits a PEM bundle into its certificate blocks (each returned as PEM text).
pub fn split_bundle(bundle: &str) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = bundle;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let Some(end) = rest[start..].find(END) else { break };
        let stop = start + end + END.len();
        out.push(format!("{}\n", &rest[start..stop]));
        rest = &rest[stop..];
    }
    out
}

/// Reads the first certificate of a PEM text.
pub fn inspect(pem_text: &str) -> Result<CertInfo> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let der = parse_pem_cert(pem_text)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).context("not an X.509 certificate")?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
        .unwrap_or_default();
    let mut info = CertInfo {
        common_name,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        dns_names: Vec::new(),
        subject_key_id: None,
        authority_key_id: None,
        is_ca: cert.is_ca(),
    };
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    if let GeneralName::DNSName(dns) = name {
                        info.dns_names.push((*dns).to_string());
                    }
                }
            }
            ParsedExtension::SubjectKeyIdentifier(id) => info.subject_key_id = Some(id.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                info.authority_key_id = aki.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => {}
        }
    }
    Ok(info)
}

/// Base64 of a PEM bundle: the form of a webhook configuration's `caBundle`.
pub fn ca_bundle_base64(bundle_pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(bundle_pem.as_bytes())
}

/// Paths written by [`write_dir`].
#[derive(Clone, Debug)]
pub struct Written {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
}

/// The files [`write_dir`] writes.
pub const FILES: [&str; 4] = ["ca.crt", "ca.key", "tls.crt", "tls.key"];

/// Writes `ca.crt`, `ca.key`, `tls.crt`, `tls.key` into `dir` (created 0700 if missing).
/// Private keys are created with mode 0600 from the start, never widened afterwards.
pub fn write_dir(dir: &Path, ca: &CaPair, serving: &ServingPair) -> Result<Written> {
    create_private_dir(dir)?;
    let [ca_cert, ca_key, tls_cert, tls_key] = FILES.map(|f| dir.join(f));
    let written = Written { ca_cert, ca_key, tls_cert, tls_key };
    write_file(&written.ca_cert, ca.cert_pem.as_bytes(), 0o644)?;
    write_file(&written.ca_key, ca.key_pem.as_bytes(), 0o600)?;
    write_file(&written.tls_cert, serving.cert_pem.as_bytes(), 0o644)?;
    write_file(&written.tls_key, serving.key_pem.as_bytes(), 0o600)?;
    Ok(written)
}

fn create_private_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
    }
}

/// Writes through a temporary file in the same directory and renames it into place, so a
/// reader (a polling webhook) never sees half a key; the temporary is created with `mode`.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let _ = std::fs::remove_file(&tmp);
    let mut file = options.open(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(data).and_then(|()| file.sync_all()).with_context(|| format!("writing {}", tmp.display()))?;
    drop(file);
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_cert_carries_every_service_name_and_points_at_its_ca() {
        let now = SystemTime::now();
        let ca = new_ca("test CA", now, 30).unwrap();
        let leaf = new_serving(&ca, "secretmode", "platform", now, 10).unwrap();
        let ca_info = inspect(&ca.cert_pem).unwrap();
        let info = inspect(&leaf.cert_pem).unwrap();
        assert!(ca_info.is_ca && !info.is_ca);
        assert_eq!(info.dns_names, dns_names("secretmode", "platform"));
        assert_eq!(info.authority_key_id, ca_info.subject_key_id);
        assert!(info.not_after <= ca_info.not_after);
        assert!(info.not_after - info.not_before >= 10 * 86_400);
    }

    #[test]
    fn serving_cert_never_outlives_its_ca() {
        let now = SystemTime::now();
        let ca = new_ca("short CA", now, 2).unwrap();
        let leaf = new_serving(&ca, "s", "n", now, 365).unwrap();
        assert_eq!(inspect(&leaf.cert_pem).unwrap().not_after, inspect(&ca.cert_pem).unwrap().not_after);
    }

    #[test]
    fn rejects_bad_names_and_mismatched_keys() {
        let now = SystemTime::now();
        let ca = new_ca("ca", now, 30).unwrap();
        assert!(new_serving(&ca, "Bad_Name", "n", now, 1).is_err());
        assert!(new_serving(&ca, "s", "", now, 1).is_err());
        let other = new_ca("other", now, 30).unwrap();
        let mixed = CaPair { cert_pem: ca.cert_pem.clone(), key_pem: other.key_pem };
        assert!(new_serving(&mixed, "s", "n", now, 1).is_err());
        assert!(new_ca("zero", now, 0).is_err());
    }

    #[test]
    fn bundles_split_into_their_certificates() {
        let now = SystemTime::now();
        let a = new_ca("a", now, 1).unwrap().cert_pem;
        let b = new_ca("b", now, 1).unwrap().cert_pem;
        let parts = split_bundle(&format!("{a}{b}"));
        assert_eq!(parts.len(), 2);
        assert_eq!(inspect(&parts[1]).unwrap().common_name, "b");
    }
}
