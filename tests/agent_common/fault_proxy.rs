//! A small fault-injecting HTTP/1.1 proxy on loopback, in front of the real OpenBao and moto
//! servers. It forwards requests unchanged until told to misbehave the way providers and the
//! networks in front of them do: refuse connections, reset them, close before answering (a cut
//! TLS handshake when the client speaks TLS), cut or stall a response mid-body, stall before
//! the headers, answer slowly, answer 5xx/429 or an HTML page, or answer 200 with garbage or
//! the wrong JSON shape. A fault can be limited to requests whose path contains a filter (so a
//! login passes and a read fails). It counts requests, remembers when each arrived, and the
//! most in flight at once.
//!
//! It runs its own tokio runtime on a thread, so the (blocking) tests drive it with plain
//! method calls. Responses are re-framed with a `Content-Length` (chunked answers are
//! de-chunked first), which is what lets it cut a body at a known byte.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Forward unchanged.
    Pass,
    /// No listener: new connections are refused and open ones are closed.
    Refuse,
    /// Read the request, then close the connection with a TCP reset.
    Reset,
    /// Read the first bytes that arrive (an HTTP request, or a TLS ClientHello), then close
    /// without a byte of answer.
    Close,
    /// Forward, send the answer's head and half its body, then close.
    CutBody,
    /// Forward, send the answer's head and half its body, then send nothing more.
    StallBody,
    /// Read the request and never answer.
    StallHead,
    /// Wait this long, then forward.
    Delay(Duration),
    /// Answer with this status and a JSON `errors` body.
    Status(u16),
    /// Answer with this status and an HTML error page (a load balancer's).
    Html(u16),
    /// Answer 200 `application/json` with a body that is not JSON.
    Garbage,
    /// Answer 200 with valid JSON of a shape no provider uses.
    WrongShape,
    /// Answer with this status, content type and body.
    Answer(u16, &'static str, String),
}

#[derive(Clone, Debug)]
struct Rule {
    fault: Fault,
    /// Applies to requests whose path contains this; empty: every request.
    filter: String,
    /// Applies to this many more matching requests only (None: all of them).
    times: Option<Arc<AtomicUsize>>,
}

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub method: String,
    pub path: String,
}

struct Shared {
    upstream: SocketAddr,
    seen: Mutex<Vec<Seen>>,
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

pub struct FaultProxy {
    pub port: u16,
    shared: Arc<Shared>,
    rule: watch::Sender<Rule>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy on a free loopback port forwarding to `upstream` (`127.0.0.1:port`). Faults
    /// that answer by themselves never contact the upstream, so it may be a closed port.
    pub fn start(upstream: &str) -> FaultProxy {
        let upstream: SocketAddr = upstream.parse().expect("upstream host:port");
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = std_listener.local_addr().unwrap().port();
        std_listener.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared {
            upstream,
            seen: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let (tx, rx) = watch::channel(Rule { fault: Fault::Pass, filter: String::new(), times: None });
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (shared.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(accept_loop(std_listener, port, s, rx, st));
        });
        FaultProxy { port, shared, rule: tx, stop, thread: Some(thread) }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Applies `fault` to every request from now on.
    pub fn set(&self, fault: Fault) {
        self.set_for("", fault);
    }

    /// Applies `fault` to requests whose path contains `filter`; the others pass.
    pub fn set_for(&self, filter: &str, fault: Fault) {
        self.apply(Rule { fault, filter: filter.to_string(), times: None });
    }

    /// Applies `fault` to the next `n` requests whose path contains `filter`, then passes.
    pub fn set_times(&self, filter: &str, fault: Fault, n: usize) {
        self.apply(Rule { fault, filter: filter.to_string(), times: Some(Arc::new(AtomicUsize::new(n))) });
    }

    fn apply(&self, rule: Rule) {
        self.rule.send_replace(rule);
        if self.rule.borrow().fault != Fault::Refuse {
            // The listener is back before the caller goes on (it is rebound asynchronously).
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        } else {
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    pub fn clear(&self) {
        self.set(Fault::Pass);
    }

    /// HTTP requests seen (connections that were closed before a request are not counted).
    pub fn count(&self) -> usize {
        self.shared.seen.lock().unwrap().len()
    }

    /// Requests whose path contains `part`.
    pub fn count_to(&self, part: &str) -> usize {
        self.shared.seen.lock().unwrap().iter().filter(|s| s.path.contains(part)).count()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn reset_max_in_flight(&self) {
        self.shared.max_in_flight.store(self.shared.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.rule.send_modify(|_| {});
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn rebind(port: u16) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    socket.listen(1024)
}

async fn accept_loop(
    first: std::net::TcpListener,
    port: u16,
    shared: Arc<Shared>,
    mut rule: watch::Receiver<Rule>,
    stop: Arc<AtomicBool>,
) {
    let mut listener = Some(TcpListener::from_std(first).expect("tokio listener"));
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let refusing = rule.borrow().fault == Fault::Refuse;
        if refusing {
            listener = None;
        } else if listener.is_none() {
            // The old socket may linger for a moment; retry briefly.
            for _ in 0..100 {
                if let Ok(l) = rebind(port) {
                    listener = Some(l);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let accepted = async {
            match &listener {
                Some(l) => l.accept().await.ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            conn = accepted => {
                if let Some((stream, _)) = conn {
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    let (s, r) = (shared.clone(), rule.clone());
                    tokio::spawn(async move { let _ = serve(stream, s, r).await; });
                }
            }
            changed = rule.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

struct InFlight<'a>(&'a Shared);
impl<'a> InFlight<'a> {
    fn new(s: &'a Shared) -> Self {
        let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        s.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(s)
    }
}
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One client connection: requests one after another (keep-alive), each forwarded or faulted.
async fn serve(mut client: TcpStream, shared: Arc<Shared>, mut rule: watch::Receiver<Rule>) -> std::io::Result<()> {
    let mut upstream: Option<TcpStream> = None;
    let mut buf = Vec::new();
    loop {
        // A connection that is open when the proxy starts refusing is closed, as a stopped
        // server's would be.
        let head_end = tokio::select! {
            r = read_head(&mut client, &mut buf) => r?,
            _ = wait_for(&mut rule, |r| r.fault == Fault::Refuse) => return Ok(()),
        };
        let current = rule.borrow().clone();
        // Closed, or not HTTP (a TLS ClientHello: the `Close` fault's cut handshake).
        let Some(head_end) = head_end else { return Ok(()) };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut first = head.lines().next().unwrap_or_default().split_whitespace();
        let method = first.next().unwrap_or_default().to_string();
        let path = first.next().unwrap_or_default().to_string();
        let length = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
        let client_closes = header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 16384];
            let n = client.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let request: Vec<u8> = buf.drain(..head_end + length).collect();
        shared.seen.lock().unwrap().push(Seen { at: Instant::now(), method: method.clone(), path: path.clone() });
        let _guard = InFlight::new(&shared);
        let matches = current.filter.is_empty() || path.contains(&current.filter);
        let counted = matches
            && match &current.times {
                Some(left) => left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok(),
                None => true,
            };
        let fault = if counted { current.fault } else { Fault::Pass };
        match fault {
            Fault::Pass | Fault::Refuse => {}
            Fault::Reset => {
                client.set_zero_linger()?;
                return Ok(());
            }
            Fault::Close => return Ok(()),
            Fault::StallHead => {
                // Hold until the client gives up or the fault is lifted, then close.
                let mut one = [0u8; 1];
                tokio::select! {
                    _ = client.read(&mut one) => {}
                    _ = wait_for(&mut rule, |r| r.fault != Fault::StallHead) => {}
                }
                return Ok(());
            }
            Fault::Delay(d) => tokio::time::sleep(d).await,
            Fault::Status(code) => {
                let body = format!("{{\"errors\":[\"fault proxy: status {code}\"]}}");
                client.write_all(&response(code, "application/json", body.as_bytes())).await?;
                if client_closes {
                    return Ok(());
                }
                continue;
            }
            Fault::Html(code) => {
                let body = format!(
                    "<html><head><title>{code} Bad Gateway</title></head><body><center><h1>{code}</h1></center><hr><center>nginx</center></body></html>\n"
                );
                client.write_all(&response(code, "text/html", body.as_bytes())).await?;
                if client_closes {
                    return Ok(());
                }
                continue;
            }
            Fault::Garbage => {
                client.write_all(&response(200, "application/json", b"{\"data\": {\"data\": {\"pass")).await?;
                if client_closes {
                    return Ok(());
                }
                continue;
            }
            Fault::WrongShape => {
                client.write_all(&response(200, "application/json", b"{\"hello\": [\"world\"]}")).await?;
                if client_closes {
                    return Ok(());
                }
                continue;
            }
            Fault::Answer(code, content_type, body) => {
                client.write_all(&response(code, content_type, body.as_bytes())).await?;
                if client_closes {
                    return Ok(());
                }
                continue;
            }
            Fault::CutBody | Fault::StallBody => {}
        }
        // Forward.
        if upstream.is_none() {
            upstream = Some(TcpStream::connect(shared.upstream).await?);
        }
        let up = upstream.as_mut().expect("connected");
        up.write_all(&request).await?;
        let (resp_head, body, close) = read_response(up, method == "HEAD").await?;
        if close {
            upstream = None;
        }
        let framed = reframe(&resp_head, &body);
        match fault {
            Fault::CutBody | Fault::StallBody => {
                let head_len = framed.len() - body.len();
                let cut = head_len + body.len() / 2;
                client.write_all(&framed[..cut]).await?;
                client.flush().await?;
                if fault == Fault::StallBody {
                    let mut one = [0u8; 1];
                    tokio::select! {
                        _ = client.read(&mut one) => {}
                        _ = wait_for(&mut rule, |r| r.fault != Fault::StallBody) => {}
                    }
                }
                return Ok(());
            }
            _ => client.write_all(&framed).await?,
        }
        if close || client_closes {
            return Ok(());
        }
    }
}

async fn wait_for(rule: &mut watch::Receiver<Rule>, f: impl Fn(&Rule) -> bool) {
    loop {
        if f(&rule.borrow()) {
            return;
        }
        if rule.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Reads until a complete request head is buffered. `Ok(None)`: the peer closed, or sent
/// something that is not HTTP (the bytes stay in `buf`).
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            return Ok(Some(i + 4));
        }
        if !buf.is_empty() && !buf[0].is_ascii_alphabetic() {
            return Ok(None);
        }
        if buf.len() > 64 * 1024 {
            return Ok(None);
        }
        let mut chunk = [0u8; 16384];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads one response: (head, de-chunked body, whether the upstream closes after it).
async fn read_response(s: &mut TcpStream, head_only: bool) -> std::io::Result<(String, Vec<u8>, bool)> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 16384];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "upstream closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut rest = buf[head_end..].to_vec();
    let status: u16 = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let close = header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok((head, Vec::new(), close));
    }
    if let Some(len) = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        while rest.len() < len {
            let mut chunk = [0u8; 16384];
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "upstream closed mid-body"));
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        rest.truncate(len);
        return Ok((head, rest, close));
    }
    if header(&head, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&rest, b"\r\n") {
                    break i;
                }
                let mut chunk = [0u8; 16384];
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "upstream closed mid-chunk"));
                }
                rest.extend_from_slice(&chunk[..n]);
            };
            let size_text = String::from_utf8_lossy(&rest[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
            while rest.len() < line_end + 2 + size + 2 {
                let mut chunk = [0u8; 16384];
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "upstream closed mid-chunk"));
                }
                rest.extend_from_slice(&chunk[..n]);
            }
            body.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            rest.drain(..line_end + 2 + size + 2);
            if size == 0 {
                return Ok((head, body, close));
            }
        }
    }
    // Close-delimited.
    s.read_to_end(&mut rest).await?;
    Ok((head, rest, true))
}

/// The head without its framing headers, plus `Content-Length`, then the body.
fn reframe(head: &str, body: &[u8]) -> Vec<u8> {
    let mut out = String::new();
    for line in head.trim_end().lines() {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("content-length:") || lower.starts_with("transfer-encoding:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn response(code: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Fault",
    };
    let mut out =
        format!("HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n", body.len())
            .into_bytes();
    out.extend_from_slice(body);
    out
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
