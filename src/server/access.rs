//! The access log: one line per request on stderr, as servers write them (time, client,
//! method, path without its query, status, body bytes sent, milliseconds, `-> backend` for a
//! forwarded request). Never a query string, header or body: they may hold secrets.
//!
//! What a handler sends is counted by a [`Meter`] of its connection: the HTTP writers add to
//! the calling thread's meter, and a stream written from other threads takes the meter along.

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The status and body bytes of one answer, as they are written.
#[derive(Debug, Default)]
pub(crate) struct Meter {
    status: AtomicU16,
    bytes: AtomicU64,
}

impl Meter {
    /// Counts `bytes` more body bytes (and the status, when the head is written).
    pub(crate) fn sent(&self, status: Option<u16>, bytes: usize) {
        if let Some(s) = status {
            self.status.store(s, Ordering::SeqCst);
        }
        self.bytes.fetch_add(bytes as u64, Ordering::SeqCst);
    }

    /// (status, bytes) so far.
    pub(crate) fn get(&self) -> (u16, u64) {
        (
            self.status.load(Ordering::SeqCst),
            self.bytes.load(Ordering::SeqCst),
        )
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Meter>>> = const { RefCell::new(None) };
}

/// A new meter for the request this thread now answers.
pub(crate) fn begin() -> Arc<Meter> {
    let m = Arc::new(Meter::default());
    CURRENT.with(|c| *c.borrow_mut() = Some(Arc::clone(&m)));
    m
}

/// This thread's meter, to take along to threads that write to the same connection.
pub(crate) fn current() -> Option<Arc<Meter>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Counts on this thread's meter, if it has one.
pub(crate) fn sent(status: Option<u16>, bytes: usize) {
    CURRENT.with(|c| {
        if let Some(m) = c.borrow().as_ref() {
            m.sent(status, bytes);
        }
    });
}

/// The line for one request (no trailing newline).
pub(crate) fn line(
    peer: Option<SocketAddr>,
    method: &str,
    path: &str,
    status: u16,
    bytes: u64,
    started: Instant,
    forwarded: bool,
) -> String {
    let when = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let peer = peer.map_or_else(|| "-".to_string(), |p| p.ip().to_string());
    let status = if status == 0 {
        "-".to_string()
    } else {
        status.to_string()
    };
    let ms = started.elapsed().as_millis();
    let to = if forwarded { " -> backend" } else { "" };
    format!("{when} {peer} \"{method} {path}\" {status} {bytes} {ms}ms{to}")
}

/// Writes the line for one request to stderr in one piece.
pub(crate) fn log(
    peer: Option<SocketAddr>,
    method: &str,
    path: &str,
    status: u16,
    bytes: u64,
    started: Instant,
    forwarded: bool,
) {
    let mut l = line(peer, method, path, status, bytes, started, forwarded);
    l.push('\n');
    let _ = std::io::stderr().lock().write_all(l.as_bytes());
}

/// The part of a request target to log: the path, never the query (`?token=...`).
pub(crate) fn loggable(target: &str) -> &str {
    target.split(['?', '#']).next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_hold_no_query_and_count_what_was_sent() {
        assert_eq!(
            loggable("/get_file_content_disk/?path=/secret"),
            "/get_file_content_disk/"
        );
        let m = begin();
        sent(Some(200), 10);
        sent(None, 5);
        assert_eq!(m.get(), (200, 15));
        assert_eq!(current().map(|c| c.get()), Some((200, 15)));
        let l = line(
            Some("127.0.0.1:5000".parse().unwrap()),
            "POST",
            "/ws/run_command",
            200,
            15,
            Instant::now(),
            true,
        );
        assert!(
            l.ends_with(" 127.0.0.1 \"POST /ws/run_command\" 200 15 0ms -> backend"),
            "{l}"
        );
        assert!(!line(None, "GET", "/", 0, 0, Instant::now(), false).contains("backend"));
    }
}
