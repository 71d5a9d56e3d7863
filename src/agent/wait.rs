//! `agent-wait`: the postStart hook of a plain (non-native) sidecar. The kubelet does not
//! start the next container until the hook returns, so blocking here until `/startup` answers
//! 200 gives old clusters the same ordering a native sidecar's startup probe gives.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::vocabulary::paths::STARTUP_PATH;

/// Polls `GET /startup` on loopback until 200 or the timeout.
pub fn wait_for_startup(port: u16, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        let last = match probe(addr) {
            Ok(200) => return Ok(()),
            Ok(code) => format!("{STARTUP_PATH} answered {code}"),
            Err(e) => format!("{STARTUP_PATH}: {e}"),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "sidecar not synced after {}: {last}",
                crate::vocabulary::duration::format_ms(timeout)
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn probe(addr: SocketAddr) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("GET {STARTUP_PATH} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())?;
    let mut buf = Vec::new();
    s.take(256).read_to_end(&mut buf)?;
    let head = String::from_utf8_lossy(&buf);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer"))
}
