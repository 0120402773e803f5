//! `GET /api/deployments/{name}/logs?follow=true`: a deployment's log as Server-Sent Events,
//! fed by the plugin's `logs` entry point (`docker logs --follow`) line by line. It ends when
//! the log ends, when the client goes away (a watcher sees the socket close and kills docker),
//! or when the server shuts down.

use super::http::{self, Response};
use crate::manage::Manager;
use crate::plugin::host::Follow;
use crate::sync::lock;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Log streams open now (a shutdown waits briefly for them to end).
pub(crate) static OPEN: AtomicUsize = AtomicUsize::new(0);

/// How often the watcher looks at the socket and the shutdown flag.
const WATCH_EVERY: Duration = Duration::from_millis(200);

/// One SSE event carrying `text` as a JSON string (no raw newlines on the wire).
fn event(kind: Option<&str>, data: &str) -> String {
    match kind {
        Some(k) => format!("event: {k}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

/// Streams `name`'s log (the last `tail` lines first) until it ends or the client leaves.
/// Unknown or foreign deployments are answered as JSON errors before the stream starts;
/// anything that fails later is a final `event: error` with `{"detail": ...}`.
pub(crate) fn follow(
    manager: Manager,
    name: &str,
    tail: Option<u32>,
    service: Option<&str>,
    extra_headers: &[(String, String)],
    stream: &mut TcpStream,
) -> Option<Response> {
    if let Err(e) = manager.owned(name) {
        return Some(Response::error(http::status_of(&e), e.to_string()));
    }
    let (Ok(out), Ok(mut watch)) = (stream.try_clone(), stream.try_clone()) else {
        return Some(Response::error(500, "cannot share the connection"));
    };
    if http::start_sse(stream, extra_headers).is_err() {
        return None;
    }
    OPEN.fetch_add(1, Ordering::SeqCst);
    let out = Arc::new(Mutex::new(out));
    let stop = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let sink_out = Arc::clone(&out);
    let sink_stop = Arc::clone(&stop);
    // The lines are written from another thread: the access log's meter goes along.
    let meter = super::access::current();
    let sink_meter = meter.clone();
    let sink = move |line: &str| {
        let data = serde_json::to_string(line).unwrap_or_default();
        let e = event(None, &data);
        if let Some(m) = &sink_meter {
            m.sent(None, e.len());
        }
        let mut o = lock(&sink_out);
        let ok = o.write_all(e.as_bytes()).is_ok() && o.flush().is_ok();
        if !ok {
            sink_stop.store(true, Ordering::SeqCst);
        }
        ok
    };
    // The watcher: a client that closes the connection sends EOF, which only a read sees
    // (a quiet log writes nothing that could fail). It also keeps idle streams alive.
    let (w_out, w_stop, w_finished) = (Arc::clone(&out), Arc::clone(&stop), Arc::clone(&finished));
    let watcher = std::thread::Builder::new()
        .name("log-watch".into())
        .spawn(move || {
            let _ = watch.set_read_timeout(Some(WATCH_EVERY));
            let mut last_write = Instant::now();
            let mut buf = [0u8; 512];
            while !w_finished.load(Ordering::SeqCst) && !w_stop.load(Ordering::SeqCst) {
                match watch.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
                if super::shutting_down() {
                    break;
                }
                if last_write.elapsed() >= http::KEEP_ALIVE {
                    if http::write_keep_alive(&mut lock(&w_out)).is_err() {
                        break;
                    }
                    last_write = Instant::now();
                }
            }
            w_stop.store(true, Ordering::SeqCst);
        });
    let follow = Follow {
        sink: Box::new(sink),
        stop: Arc::clone(&stop),
    };
    let result = manager.following(follow).logs(name, tail, true, service);
    let last = match result {
        _ if stop.load(Ordering::SeqCst) => None,
        Ok(rest) => {
            let mut s = String::new();
            if !rest.is_empty() {
                s.push_str(&event(
                    None,
                    &serde_json::to_string(&rest).unwrap_or_default(),
                ));
            }
            s.push_str(&event(
                Some("end"),
                &json!({"detail": format!("the log of {name} ended (the container stopped)")})
                    .to_string(),
            ));
            Some(s)
        }
        Err(e) => Some(event(
            Some("error"),
            &json!({"detail": e.to_string()}).to_string(),
        )),
    };
    if let Some(last) = last {
        if let Some(m) = &meter {
            m.sent(None, last.len());
        }
        let mut o = lock(&out);
        let _ = o.write_all(last.as_bytes());
        let _ = o.flush();
    }
    finished.store(true, Ordering::SeqCst);
    if let Ok(w) = watcher {
        let _ = w.join();
    }
    OPEN.fetch_sub(1, Ordering::SeqCst);
    None
}
