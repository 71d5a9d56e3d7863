//! Per-connection read deadlines: a short one for a request's headers, a long one for an idle
//! keep-alive connection between requests.
//!
//! hyper's own `header_read_timeout` starts as soon as a connection waits for its next request,
//! so it would also close every keep-alive connection idle for longer than the header timeout.
//! The API server's webhook client keeps idle connections for 90 s and does not retry a POST
//! that raced a close, so closing them early fails admissions (with `failurePolicy: Fail`,
//! rejects pods). Here the header deadline starts with the first byte of a request, and an idle
//! connection is closed only after the idle timeout, which defaults to longer than the client's.
//!
//! [`Deadlines`] wraps the connection's byte stream; [`Phase`] is shared with the connection's
//! service, which marks when a request's headers were parsed and when its answer was made.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A new connection, waiting for its first request.
const NEW: u8 = 0;
/// A keep-alive connection waiting for its next request.
const AWAITING: u8 = 1;
/// Between the first byte of a request and its parsed headers.
const HEADERS: u8 = 2;
/// Headers parsed, answer not made yet: the handler bounds the body read itself.
const HANDLING: u8 = 3;

/// Where a connection is in its request cycle; shared by [`Deadlines`] and the service.
#[derive(Clone, Debug, Default)]
pub struct Phase(Arc<AtomicU8>);

impl Phase {
    /// The service got a request (its headers are complete).
    pub fn request_started(&self) {
        self.0.store(HANDLING, Ordering::Release);
    }

    /// The service made its answer: the connection waits for the next request.
    pub fn request_answered(&self) {
        self.0.store(AWAITING, Ordering::Release);
    }

    fn get(&self) -> u8 {
        self.0.load(Ordering::Acquire)
    }

    /// Bytes arrived; whether they start a request. Bytes read while handling are the body's.
    fn first_byte(&self) -> bool {
        let waiting = |p| p == NEW || p == AWAITING;
        self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| waiting(p).then_some(HEADERS)).is_ok()
    }
}

/// The connection's byte stream with the header and idle deadlines applied to its reads.
pub struct Deadlines<T> {
    inner: T,
    phase: Phase,
    header_timeout: Duration,
    idle_timeout: Duration,
    /// The phase the current deadline was set for.
    armed_for: u8,
    timer: Pin<Box<Sleep>>,
}

impl<T> Deadlines<T> {
    /// A new connection has `header_timeout` to start its first request: a client opens a
    /// connection to send a request, not to hold a slot.
    pub fn new(inner: T, phase: Phase, header_timeout: Duration, idle_timeout: Duration) -> Self {
        Deadlines {
            inner,
            phase,
            header_timeout,
            idle_timeout,
            armed_for: NEW,
            timer: Box::pin(tokio::time::sleep(header_timeout)),
        }
    }

    /// Sets the deadline of `phase`, from now.
    fn arm(&mut self, phase: u8) {
        self.armed_for = phase;
        let after = if phase == AWAITING { self.idle_timeout } else { self.header_timeout };
        self.timer.as_mut().reset(Instant::now() + after);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Deadlines<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && this.phase.first_byte() {
                    this.arm(HEADERS);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let phase = this.phase.get();
                if phase == HANDLING {
                    return Poll::Pending;
                }
                if phase != this.armed_for {
                    this.arm(phase);
                }
                if this.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if phase != HEADERS {
                    // No request started in time: end of stream, which hyper takes as the
                    // client closing an idle connection.
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "request headers not received in time")))
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Deadlines<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The connection's service, marking the [`Phase`]: a request started when hyper hands it over
/// (its headers are parsed), answered when the service's future ends (or is dropped).
pub struct Marked<S> {
    inner: S,
    phase: Phase,
}

impl<S> Marked<S> {
    pub fn new(inner: S, phase: Phase) -> Self {
        Marked { inner, phase }
    }
}

/// Marks the request answered when dropped, however its future ends.
struct Answered(Phase);

impl Drop for Answered {
    fn drop(&mut self) {
        self.0.request_answered();
    }
}

impl<S, R> hyper::service::Service<R> for Marked<S>
where
    S: hyper::service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, req: R) -> Self::Future {
        self.phase.request_started();
        let answered = Answered(self.phase.clone());
        let future = self.inner.call(req);
        Box::pin(async move {
            let _answered = answered;
            future.await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const HEADER: Duration = Duration::from_secs(5);
    const IDLE: Duration = Duration::from_secs(120);

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
        let (client, server) = tokio::io::duplex(64);
        let mut conn = Deadlines::new(server, Phase::default(), HEADER, IDLE);
        let started = Instant::now();
        assert_eq!(conn.read(&mut [0; 8]).await.unwrap(), 0);
        assert_eq!(started.elapsed(), HEADER);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_connection_lives_for_the_idle_timeout_then_ends_quietly() {
        let (mut client, server) = tokio::io::duplex(64);
        let phase = Phase::default();
        let mut conn = Deadlines::new(server, phase.clone(), HEADER, IDLE);
        client.write_all(b"GET").await.unwrap();
        assert_eq!(conn.read(&mut [0; 8]).await.unwrap(), 3);
        phase.request_started();
        phase.request_answered();
        // Far past the header timeout, still open: the next request is read.
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(60)).await;
        client.write_all(b"POST").await.unwrap();
        assert_eq!(conn.read(&mut [0; 8]).await.unwrap(), 4);
        phase.request_started();
        phase.request_answered();
        // Then idle past the idle timeout: end of stream, not an error.
        let idle_from = Instant::now();
        assert_eq!(conn.read(&mut [0; 8]).await.unwrap(), 0);
        assert_eq!(idle_from.elapsed(), IDLE);
        assert!(started.elapsed() > IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn headers_trickling_after_the_first_byte_get_the_header_timeout() {
        let (mut client, server) = tokio::io::duplex(64);
        let phase = Phase::default();
        let mut conn = Deadlines::new(server, phase.clone(), HEADER, IDLE);
        client.write_all(b"GET").await.unwrap();
        assert_eq!(conn.read(&mut [0; 8]).await.unwrap(), 3);
        phase.request_started();
        phase.request_answered();
        tokio::time::sleep(Duration::from_secs(30)).await;
        client.write_all(b"P").await.unwrap();
        assert_eq!(conn.read(&mut [0; 8]).await.unwrap(), 1);
        let from_first_byte = Instant::now();
        let err = conn.read(&mut [0; 8]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(from_first_byte.elapsed(), HEADER);
    }

    #[tokio::test(start_paused = true)]
    async fn no_deadline_while_the_handler_has_the_request() {
        let (mut client, server) = tokio::io::duplex(64);
        let phase = Phase::default();
        let mut conn = Deadlines::new(server, phase.clone(), HEADER, IDLE);
        client.write_all(b"POST").await.unwrap();
        assert_eq!(conn.read(&mut [0; 8]).await.unwrap(), 4);
        phase.request_started();
        let read = tokio::spawn(async move { conn.read(&mut [0; 8]).await });
        tokio::time::sleep(IDLE * 2).await;
        client.write_all(b"{}").await.unwrap();
        assert_eq!(read.await.unwrap().unwrap(), 2);
    }
}
