//! What a transport failure was, read from the typed errors in its source chain (I/O error
//! kinds, hyper's "incomplete message", rustls' certificate errors) rather than from the top
//! line the HTTP crates print ("error sending request", "dispatch failure"), which names no
//! cause. Used by both providers; transport errors never carry a response body, so nothing
//! here can quote a value.

use std::error::Error;
use std::io;

use super::ErrorKind;

/// Where in the exchange the failure happened, to name it precisely.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Opening the connection (TCP connect, TLS handshake).
    Connect,
    /// Sending the request or waiting for the answer's head.
    Answer,
    /// Reading the answer's body, after its head arrived.
    Body,
}

/// The kind (an outage, or `Config` for a certificate that is not trusted: a mistake, not an
/// outage) and a short cause.
pub fn transport(e: &(dyn Error + 'static), stage: Stage) -> (ErrorKind, String) {
    let mut cur: Option<&(dyn Error + 'static)> = Some(e);
    let mut fallback = None;
    while let Some(err) = cur {
        if let Some(found) = typed(err, stage) {
            return found;
        }
        if fallback.is_none() && err.to_string().contains("dns error") {
            fallback = Some((ErrorKind::Unreachable, format!("DNS lookup failed: {}", super::chain(err))));
        }
        cur = err.source();
    }
    fallback.unwrap_or_else(|| (ErrorKind::Unreachable, super::chain(e)))
}

fn typed(err: &(dyn Error + 'static), stage: Stage) -> Option<(ErrorKind, String)> {
    if let Some(tls) = err.downcast_ref::<rustls::Error>() {
        return Some(tls_error(tls));
    }
    if let Some(io) = err.downcast_ref::<io::Error>() {
        // io::Error::source() skips the error it wraps, so look inside explicitly.
        if let Some(tls) = io.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            return Some(tls_error(tls));
        }
        if let Some(found) = io.get_ref().and_then(|inner| typed(inner, stage)) {
            return Some(found);
        }
        // tokio-rustls names an EOF inside the handshake; the caller may not know the stage.
        let stage = if io.to_string().contains("handshake") { Stage::Connect } else { stage };
        let text = match io.kind() {
            io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            io::ErrorKind::ConnectionReset => match stage {
                Stage::Connect => "connection reset during the TLS handshake".to_string(),
                Stage::Answer => "connection reset before the answer".to_string(),
                Stage::Body => "then the connection was reset".to_string(),
            },
            io::ErrorKind::ConnectionAborted => "connection aborted".to_string(),
            io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe => match stage {
                Stage::Connect => "TLS handshake cut: the connection closed during the handshake".to_string(),
                Stage::Answer => "connection closed before the answer".to_string(),
                Stage::Body => "then the connection closed".to_string(),
            },
            io::ErrorKind::TimedOut => "timed out".to_string(),
            io::ErrorKind::NotConnected | io::ErrorKind::AddrNotAvailable => format!("cannot connect: {io}"),
            _ => return None,
        };
        return Some((ErrorKind::Unreachable, text));
    }
    if let Some(h) = err.downcast_ref::<hyper::Error>() {
        if h.is_incomplete_message() {
            let text = match stage {
                Stage::Body => "then the connection closed",
                _ => "connection closed before the answer was complete",
            };
            return Some((ErrorKind::Unreachable, text.into()));
        }
        if h.is_timeout() {
            return Some((ErrorKind::Unreachable, "timed out".into()));
        }
        if h.is_parse() {
            return Some((ErrorKind::BadAnswer, format!("not an HTTP answer ({h})")));
        }
    }
    None
}

fn tls_error(e: &rustls::Error) -> (ErrorKind, String) {
    match e {
        rustls::Error::InvalidCertificate(why) => {
            (ErrorKind::Config, format!("server certificate not trusted ({why:?}): check caPem and the address"))
        }
        other => (ErrorKind::Unreachable, format!("TLS handshake failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrap(&'static str, Box<dyn Error + Send + Sync>);
    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl Error for Wrap {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(self.1.as_ref())
        }
    }

    #[test]
    fn io_causes_are_named_through_wrappers() {
        let refused = Wrap("error sending request", Box::new(io::Error::from(io::ErrorKind::ConnectionRefused)));
        assert_eq!(transport(&refused, Stage::Connect), (ErrorKind::Unreachable, "connection refused".into()));
        let eof = Wrap("client error", Box::new(io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof")));
        let (kind, text) = transport(&eof, Stage::Connect);
        assert_eq!(kind, ErrorKind::Unreachable);
        assert!(text.contains("TLS handshake cut"), "{text}");
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(transport(&reset, Stage::Answer).1, "connection reset before the answer");
    }

    #[test]
    fn an_untrusted_certificate_is_configuration_not_an_outage() {
        let bad = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = Wrap("connect", Box::new(io::Error::new(io::ErrorKind::InvalidData, bad)));
        let (kind, text) = transport(&wrapped, Stage::Connect);
        assert_eq!(kind, ErrorKind::Config);
        assert!(text.contains("certificate not trusted") && text.contains("UnknownIssuer"), "{text}");
    }
}
