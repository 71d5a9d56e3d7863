//! The webhook's log writer: formatted lines go to a thread that writes them to stderr in
//! batches, so that neither a busy nor a moderately loaded webhook pays for a log line with a
//! syscall or a thread wake-up on the request path.
//!
//! A line is handed over through a bounded channel. While the writer is idle it blocks on the
//! channel, so the first line after a quiet spell is written at once (one wake-up). It then
//! sleeps for [`WINDOW`] and writes everything that arrived meanwhile in one `write(2)`, and
//! keeps doing so while lines keep coming; senders never wake a sleeping writer. At 1,000
//! admissions/s that is 100 writes/s instead of 1,000 writes and 1,000 wake-ups. A line waits
//! at most about one window. When [`CAPACITY`] lines are queued, loggers wait (nothing is
//! dropped), as they would on a blocked stderr. Dropping the [`Guard`] writes out the queue.
//!
//! Hand-written rather than a crate's non-blocking writer because this batching was measured to
//! matter for throughput (docs/BENCHMARKS.md).

use std::io::Write;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::time::Duration;

/// How long the writer collects lines before writing them, while lines keep coming.
pub const WINDOW: Duration = Duration::from_millis(10);
/// Lines queued at most (about 2 MB of typical lines).
pub const CAPACITY: usize = 8192;

enum Msg {
    Line(Vec<u8>),
    /// Write out everything before this message, then answer.
    Flush(SyncSender<()>),
}

/// Hands each formatted line to the writer thread; a `tracing_subscriber` writer.
#[derive(Clone)]
pub struct LineSender {
    tx: SyncSender<Msg>,
}

/// Dropping it writes out every queued line (waiting at most a second for a blocked stderr).
/// The thread itself lives as long as the process: the global subscriber keeps a sender.
pub struct Guard {
    tx: SyncSender<Msg>,
}

/// Starts the writer thread over `out` (stderr in production).
pub fn start<W: Write + Send + 'static>(out: W) -> std::io::Result<(LineSender, Guard)> {
    let (tx, rx) = mpsc::sync_channel(CAPACITY);
    std::thread::Builder::new().name("secretmode-log".into()).spawn(move || run(&rx, out))?;
    Ok((LineSender { tx: tx.clone() }, Guard { tx }))
}

fn run<W: Write>(rx: &Receiver<Msg>, out: W) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let take = |msg: Msg, out: &mut std::io::BufWriter<W>| match msg {
        Msg::Line(line) => {
            let _ = out.write_all(&line);
        }
        Msg::Flush(ack) => {
            let _ = out.flush();
            let _ = ack.send(());
        }
    };
    // Idle: block until a line comes, and write it at once.
    while let Ok(msg) = rx.recv() {
        take(msg, &mut out);
        let _ = out.flush();
        // Busy: collect a window's worth, write it, and again while lines keep coming.
        loop {
            std::thread::sleep(WINDOW);
            let mut got = false;
            loop {
                match rx.try_recv() {
                    Ok(msg) => {
                        take(msg, &mut out);
                        got = true;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        let _ = out.flush();
                        return;
                    }
                }
            }
            let _ = out.flush();
            if !got {
                break;
            }
        }
    }
    let _ = out.flush();
}

impl Write for LineSender {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // tracing-subscriber writes each formatted event with one write_all.
        self.tx.send(Msg::Line(buf.to_vec())).map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LineSender {
    type Writer = LineSender;

    fn make_writer(&'a self) -> LineSender {
        self.clone()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv_timeout(Duration::from_secs(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// stderr stand-in that records each write(2)-sized chunk.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_and_a_burst_in_few_writes() {
        let out = Recorder::default();
        let (sender, guard) = start(out.clone()).unwrap();
        let mut s = sender.clone();
        s.write_all(b"first\n").unwrap();
        for i in 0..5000 {
            s.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let chunks = out.0.lock().unwrap().clone();
        let text = String::from_utf8(chunks.concat()).unwrap();
        let expected: String =
            std::iter::once("first\n".to_string()).chain((0..5000).map(|i| format!("line {i}\n"))).collect();
        assert_eq!(text, expected);
        // Batched: far fewer writes than lines (each chunk is at most the 64 KiB buffer).
        assert!(chunks.len() < 100, "{} writes for 5001 lines", chunks.len());
    }

    #[test]
    fn a_line_after_a_quiet_spell_is_written_without_waiting_for_more() {
        let out = Recorder::default();
        let (mut sender, _guard) = start(out.clone()).unwrap();
        sender.write_all(b"alone\n").unwrap();
        // No flush, no more lines: the writer writes it on its own.
        let written = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            out.0.lock().unwrap().concat() == b"alone\n"
        });
        assert!(written);
    }
}
