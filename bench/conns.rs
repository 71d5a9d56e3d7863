//! The client of the "thousands of connections" fault drill (issue 6 item 2, `bench/faults.py
//! conns`): opens N TLS connections to a webhook, at most C handshakes at a time, posts one
//! AdmissionReview on each and keeps every connection open. When every connection has an
//! answer (or failed) it prints one line, `READY {json}`, and holds them all open until its
//! standard input closes, so the caller can read the server's memory with all of them open.
//!
//! Compiled because a single-threaded Python client driving 3,000 handshakes on one event loop
//! was itself slow enough to hit the server's 5 s handshake timeout on a busy 2-core machine.
//! Loopback load generator: it does not verify the server's certificate (like `oha
//! --insecure`). Built only with `--features bench`.
//!
//! Usage: `secretmode-conns 127.0.0.1:8443 review.json 3000 [50]`

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::TlsConnector;

#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One connection: handshake (within the semaphore), one request, its status; then held
/// open until `release` turns true.
async fn connection(
    addr: SocketAddr,
    connector: TlsConnector,
    request: Arc<Vec<u8>>,
    handshakes: Arc<Semaphore>,
    results: mpsc::UnboundedSender<String>,
    mut release: watch::Receiver<bool>,
) {
    let stream = {
        let _permit = handshakes.acquire().await;
        let connected = async {
            let tcp = TcpStream::connect(addr).await.context("connect")?;
            let name = ServerName::try_from("localhost").context("server name")?;
            connector.connect(name, tcp).await.context("handshake")
        };
        match tokio::time::timeout(Duration::from_secs(30), connected).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                let _ = results.send(format!("connect:{}", e.root_cause()));
                return;
            }
            Err(_) => {
                let _ = results.send("connect:timeout".into());
                return;
            }
        }
    };
    let mut stream = BufReader::new(stream);
    let answer = async {
        stream.get_mut().write_all(&request).await?;
        let mut status_line = String::new();
        stream.read_line(&mut status_line).await?;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await? == 0 || line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>(status_line.split_whitespace().nth(1).unwrap_or("?").to_string())
    };
    match tokio::time::timeout(Duration::from_secs(60), answer).await {
        Ok(Ok(status)) => {
            let _ = results.send(format!("status:{status}"));
        }
        Ok(Err(e)) => {
            let _ = results.send(format!("error:{:?}", e.kind()));
            return;
        }
        Err(_) => {
            let _ = results.send("error:timeout".into());
            return;
        }
    }
    let _ = release.wait_for(|r| *r).await;
    let _ = stream.get_mut().shutdown().await;
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(body), Some(n)) = (args.next(), args.next(), args.next()) else {
        bail!("usage: secretmode-conns ADDR REVIEW.json N [CONCURRENT_HANDSHAKES]");
    };
    let addr: SocketAddr = addr.parse().context("address")?;
    let n: usize = n.parse().context("N")?;
    let concurrent: usize = args.next().map(|c| c.parse()).transpose().context("handshakes")?.unwrap_or(50);
    let body = std::fs::read(&body).with_context(|| format!("reading {body}"))?;
    let mut request = format!(
        "POST /mutate?timeout=10s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(config));
    let request = Arc::new(request);
    let handshakes = Arc::new(Semaphore::new(concurrent));
    let (results_tx, mut results_rx) = mpsc::unbounded_channel();
    let (release_tx, release_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        tasks.push(tokio::spawn(connection(
            addr,
            connector.clone(),
            request.clone(),
            handshakes.clone(),
            results_tx.clone(),
            release_rx.clone(),
        )));
    }
    drop(results_tx);
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..n {
        match results_rx.recv().await {
            Some(outcome) => *outcomes.entry(outcome).or_default() += 1,
            None => break,
        }
    }
    println!("READY {}", serde_json::to_string(&outcomes)?);
    // Hold every connection open until the caller closes our stdin.
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    let _ = release_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}
