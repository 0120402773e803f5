//! `serve --backend URL`: every request `serve` has no route for goes to the Fractalic backend
//! (the UI's one backend URL serves the file tree, files, git, settings, `mcp/*` and the deploy
//! call). Both directions stream: the request body is passed on as it arrives (Content-Length
//! or chunked), the answer's bytes as the backend sends them (its `text/plain` command output
//! chunk by chunk), with method, target, headers, status and reason phrase kept; hop-by-hop
//! headers are dropped and `X-Forwarded-*`/`Via` added. Every wait has a deadline; a backend
//! that is down or silent is a 502/504 of ours naming its URL.

use super::api;
use super::http::{self, Head, Request, Response};
use super::Server;
use crate::error::{Error, Result};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Connecting to the backend may take this long (then 504).
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The backend's answer must begin (status line and headers) within this (then 504).
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest silence inside the backend's answer body (a Fractalic run waiting on a model may be
/// quiet for minutes); the connection is cut after it.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest silence inside a client's request body (then 408), as [`http::BODY_DEADLINE`].
pub(crate) const BODY_IDLE: Duration = http::BODY_DEADLINE;
/// Largest request body passed on (file saves can be larger than our own API's bodies).
pub(crate) const MAX_BODY: u64 = 64 * 1024 * 1024;
/// Largest head of the backend's answer.
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Headers that describe one connection, never passed on (RFC 9110 7.6.1), plus `Expect`
/// (answered here) and the framing headers (set again for the next hop).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// The `Via` pseudonym added to both directions.
const VIA: &str = "fractalic-publisher";

/// Where the Fractalic backend listens (`--backend http://HOST:PORT`), resolved at start.
#[derive(Debug, Clone)]
pub(crate) struct Backend {
    /// `http://HOST:PORT` as shown in messages.
    pub url: String,
    addrs: Vec<SocketAddr>,
}

impl Backend {
    /// Parses and resolves `--backend` (bad input: exit 2).
    pub(crate) fn parse(s: &str) -> Result<Backend> {
        let bad = |why: &str| {
            Error::input(
                format!("bad --backend {s:?}: {why}"),
                "give the Fractalic backend's address as http://HOST:PORT, e.g. http://127.0.0.1:8001",
            )
        };
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("https://") {
            return Err(bad("serve talks plain HTTP to the backend (no TLS)"));
        }
        if !lower.starts_with("http://") {
            return Err(bad("it must start with http://"));
        }
        let rest = &s["http://".len()..];
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(bad("a path, query or fragment is not supported"));
        }
        if authority.contains('@') {
            return Err(bad("user information is not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            match after {
                "" => (h, None),
                p => (h, Some(p.strip_prefix(':').ok_or_else(|| bad("bad port"))?)),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("the port must be 1-65535"))?,
        };
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|e| bad(&format!("cannot resolve {host}: {e}")))?
            .collect();
        if addrs.is_empty() {
            return Err(bad(&format!("{host} resolves to no address")));
        }
        let shown = if host.contains(':') {
            format!("http://[{host}]:{port}")
        } else {
            format!("http://{host}:{port}")
        };
        Ok(Backend { url: shown, addrs })
    }

    /// Is `local` (the address `serve` listens on) one of the backend's addresses? Forwarding
    /// to ourselves would loop.
    pub(crate) fn is_self(&self, local: SocketAddr) -> bool {
        self.addrs.iter().any(|a| {
            a.port() == local.port()
                && (a.ip() == local.ip()
                    || (local.ip().is_unspecified()
                        && (a.ip().is_loopback() || a.ip() == local.ip())))
        })
    }
}

/// Does `serve` answer this request itself? Its route table, everything under `/api` (the
/// deploy routes and their preflights included), and a path it cannot decode under `/api`.
pub(crate) fn owns(head: &Head) -> bool {
    match &head.path {
        Some(p) => {
            p == "/api"
                || p.starts_with("/api/")
                || api::ROUTES
                    .iter()
                    .any(|(_, pattern)| api::matches(pattern, p).is_some())
        }
        None => head.target.starts_with("/api"),
    }
}

/// How a forwarded exchange went, for the access log.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub status: u16,
    pub bytes: u64,
}

/// A head-only view of the request for the checks shared with our own routes.
fn as_request(head: &Head) -> Request {
    Request {
        method: head.method.clone(),
        path: head.path.clone().unwrap_or_default(),
        query: Vec::new(),
        headers: head.headers.clone(),
        body: Vec::new(),
    }
}

/// A page of another origin may use the backend through us only if `--cors-origin` allows it
/// (the backend itself allows every origin: any web site could read files and run commands).
fn foreign_origin(server: &Server, head: &Head) -> Option<String> {
    let origin = head.header("origin")?;
    if server.cors_origins.iter().any(|a| a == origin) {
        return None;
    }
    let same = head
        .header("host")
        .is_some_and(|h| origin == format!("http://{h}") || origin == format!("https://{h}"));
    (!same).then(|| origin.to_string())
}

/// One line of JSON `{"detail": ...}` (our own answers on forwarded routes).
fn ours(server: &Server, head: &Head, status: u16, detail: String) -> Response {
    let body = serde_json::to_vec(&serde_json::json!({ "detail": detail })).unwrap_or_default();
    api::with_cors(
        server,
        &as_request(head),
        Response::bytes(status, "application/json", body),
    )
}

fn answer(client: &mut TcpStream, r: &Response) -> Outcome {
    let _ = http::write_response(client, r);
    Outcome {
        status: r.status,
        bytes: r.body.len() as u64,
    }
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the sender closes (answers only).
    Close,
}

/// The request body's framing, or the answer refusing it.
fn request_framing(head: &Head) -> std::result::Result<Framing, (u16, String)> {
    let te: Vec<&str> = head
        .headers
        .iter()
        .filter(|(k, _)| k == "transfer-encoding")
        .map(|(_, v)| v.as_str())
        .collect();
    let lengths: Vec<&str> = head
        .headers
        .iter()
        .filter(|(k, _)| k == "content-length")
        .map(|(_, v)| v.as_str())
        .collect();
    if !te.is_empty() {
        if !lengths.is_empty() {
            return Err((
                400,
                "a request with both Transfer-Encoding and Content-Length is refused".into(),
            ));
        }
        let codings = te.join(",");
        if !codings.trim().eq_ignore_ascii_case("chunked") {
            return Err((
                501,
                format!("Transfer-Encoding {codings:?} is not supported; send chunked or a Content-Length"),
            ));
        }
        return Ok(Framing::Chunked);
    }
    if lengths.windows(2).any(|w| w[0] != w[1]) {
        return Err((
            400,
            format!("conflicting Content-Length headers {lengths:?}: send one"),
        ));
    }
    match lengths.first() {
        None => Ok(Framing::None),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n > MAX_BODY => Err((
                413,
                format!("the body has {n} bytes; at most {MAX_BODY} are passed on"),
            )),
            Ok(0) => Ok(Framing::None),
            Ok(n) => Ok(Framing::Length(n)),
            Err(_) => Err((400, format!("bad Content-Length {v:?}"))),
        },
    }
}

/// Names listed in a `Connection` header (also hop-by-hop).
fn connection_tokens(headers: &[(String, Vec<u8>)]) -> Vec<String> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The headers to pass on: everything but hop-by-hop ones, those named in `Connection`, and
/// `extra_drop` (lowercase).
fn end_to_end(headers: &[(String, Vec<u8>)], extra_drop: &[&str]) -> Vec<(String, Vec<u8>)> {
    let named = connection_tokens(headers);
    headers
        .iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            !HOP_BY_HOP.contains(&k.as_str())
                && !extra_drop.contains(&k.as_str())
                && !named.contains(&k)
        })
        .cloned()
        .collect()
}

/// The head sent to the backend: the client's request line and end-to-end headers (its
/// `Host` kept, so the backend's redirects point back here), `X-Forwarded-For/Proto/Host`,
/// `Via`, framing and `Connection: close`.
fn backend_head(head: &Head, peer: Option<SocketAddr>, framing: Framing) -> Vec<u8> {
    let mut parsed = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut parsed);
    let _ = req.parse(&head.raw);
    let headers: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .filter(|h| !h.name.is_empty())
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect();
    let kept = end_to_end(
        &headers,
        &[
            "content-length",
            "expect",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
        ],
    );
    let mut out = format!(
        "{} {} HTTP/1.{}\r\n",
        head.method, head.target, head.version
    )
    .into_bytes();
    for (k, v) in &kept {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    let prior: Vec<&str> = head
        .headers
        .iter()
        .filter(|(k, _)| k == "x-forwarded-for")
        .map(|(_, v)| v.as_str())
        .collect();
    let mut xff = prior.join(", ");
    if let Some(p) = peer {
        if !xff.is_empty() {
            xff.push_str(", ");
        }
        xff.push_str(&p.ip().to_string());
    }
    let mut add = |k: &str, v: &str| out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    if !xff.is_empty() {
        add("X-Forwarded-For", &xff);
    }
    add("X-Forwarded-Proto", "http");
    if let Some(h) = head.header("host") {
        add("X-Forwarded-Host", h);
    }
    add("Via", &format!("1.{} {VIA}", head.version));
    match framing {
        Framing::Length(n) => add("Content-Length", &n.to_string()),
        Framing::Chunked => add("Transfer-Encoding", "chunked"),
        Framing::None | Framing::Close => {}
    }
    add("Connection", "close");
    out.extend_from_slice(b"\r\n");
    out
}

/// Forwards one request whose head was read to the backend and streams the answer back.
pub(crate) fn handle(
    server: &Server,
    backend: &Backend,
    head: Head,
    client: &mut TcpStream,
) -> Outcome {
    let req = as_request(&head);
    if !api::host_allowed(server, &req) {
        let d = format!(
            "Host {:?} is not a loopback name; this server answers only requests addressed to localhost or 127.0.0.1",
            head.header("host").unwrap_or("")
        );
        return answer(client, &ours(server, &head, 403, d));
    }
    if let Some(origin) = foreign_origin(server, &head) {
        let d = format!(
            "a page of origin {origin:?} may not use the Fractalic backend through this server; start it with --cors-origin {origin} to allow it"
        );
        return answer(client, &ours(server, &head, 403, d));
    }
    let framing = match request_framing(&head) {
        Ok(f) => f,
        Err((status, d)) => return answer(client, &ours(server, &head, status, d)),
    };
    let mut upstream = match connect(backend) {
        Ok(s) => s,
        Err((status, d)) => {
            drain(client, &head, framing);
            return answer(client, &ours(server, &head, status, d));
        }
    };
    let _ = upstream.set_nodelay(true);
    let _ = upstream.set_write_timeout(Some(http::WRITE_TIMEOUT));
    let _ = client.set_write_timeout(Some(http::WRITE_TIMEOUT));
    let expects = head
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
    if expects && head.version == 1 && framing != Framing::None {
        // The client waits for this before sending its body; the backend never sees the Expect.
        let _ = client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let out_head = backend_head(&head, client.peer_addr().ok(), framing);
    let sent = upstream
        .write_all(&out_head)
        .and_then(|_| upstream.flush())
        .is_ok();
    if !sent {
        let d = format!(
            "the Fractalic backend {} closed the connection",
            backend.url
        );
        return answer(client, &ours(server, &head, 502, d));
    }
    match pump_body(client, &mut upstream, head.rest.clone(), framing) {
        Ok(()) => {}
        // The backend stopped reading: it may have answered already (e.g. an early error).
        Err(Pump::Upstream) => {}
        Err(Pump::Client(status, d)) => {
            let _ = upstream.shutdown(std::net::Shutdown::Both);
            return answer(client, &ours(server, &head, status, d));
        }
    }
    relay_answer(server, backend, &head, &mut upstream, client)
}

fn connect(backend: &Backend) -> std::result::Result<TcpStream, (u16, String)> {
    let mut last = None;
    for a in &backend.addrs {
        match TcpStream::connect_timeout(a, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    let timed_out = last
        .as_ref()
        .is_some_and(|e| matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock));
    let e = last.map_or_else(|| "no address".to_string(), |e| e.to_string());
    Err(if timed_out {
        (
            504,
            format!(
                "the Fractalic backend {} did not accept a connection within {}s",
                backend.url,
                CONNECT_TIMEOUT.as_secs()
            ),
        )
    } else {
        (
            502,
            format!(
                "the Fractalic backend {} cannot be reached ({e}); is it running?",
                backend.url
            ),
        )
    })
}

/// Reads (and drops) a small body the client is still sending, so that the error answer is
/// not lost to a reset when the connection closes with unread bytes.
fn drain(client: &mut TcpStream, head: &Head, framing: Framing) {
    let Framing::Length(n) = framing else { return };
    let mut left = n
        .saturating_sub(head.rest.len() as u64)
        .min(http::MAX_BODY as u64);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 8192];
    while left > 0 && Instant::now() < deadline {
        let _ = client.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(10)),
        ));
        match client.read(&mut buf[..(left.min(8192) as usize)]) {
            Ok(0) | Err(_) => return,
            Ok(k) => left -= k as u64,
        }
    }
}

enum Pump {
    /// Writing to the backend failed.
    Upstream,
    /// The client's body is broken or late: our answer.
    Client(u16, String),
}

/// Reads from the client with an idle timeout.
fn read_client(client: &mut TcpStream, buf: &mut [u8]) -> std::result::Result<usize, Pump> {
    let _ = client.set_read_timeout(Some(BODY_IDLE));
    match client.read(buf) {
        Ok(n) => Ok(n),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            Err(Pump::Client(
                408,
                format!(
                    "the request body stopped arriving for {}s",
                    BODY_IDLE.as_secs()
                ),
            ))
        }
        Err(e) => Err(Pump::Client(
            400,
            format!("the request body could not be read: {e}"),
        )),
    }
}

/// Passes the client's body on as it arrives: a Content-Length body byte for byte, a chunked
/// one chunk by chunk (extensions and trailers dropped).
fn pump_body(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    rest: Vec<u8>,
    framing: Framing,
) -> std::result::Result<(), Pump> {
    let up = |upstream: &mut TcpStream, b: &[u8]| upstream.write_all(b).map_err(|_| Pump::Upstream);
    let mut buf = vec![0u8; 16 * 1024];
    match framing {
        Framing::None | Framing::Close => Ok(()),
        Framing::Length(n) => {
            let first = &rest[..rest.len().min(n as usize)];
            up(upstream, first)?;
            let mut left = n - first.len() as u64;
            while left > 0 {
                let want = left.min(buf.len() as u64) as usize;
                let k = read_client(client, &mut buf[..want])?;
                if k == 0 {
                    return Err(Pump::Client(
                        400,
                        format!(
                            "the body ended after {} of {n} bytes (Content-Length)",
                            n - left
                        ),
                    ));
                }
                up(upstream, &buf[..k])?;
                left -= k as u64;
            }
            Ok(())
        }
        Framing::Chunked => {
            let mut dec = Chunked::default();
            let mut total = 0u64;
            let mut input = rest;
            loop {
                let mut pieces: Vec<Vec<u8>> = Vec::new();
                let end = dec
                    .feed(&input, |d| pieces.push(d.to_vec()))
                    .map_err(|e| Pump::Client(400, format!("bad chunked body: {e}")))?;
                for p in pieces {
                    total += p.len() as u64;
                    if total > MAX_BODY {
                        return Err(Pump::Client(
                            413,
                            format!("the body has more than {MAX_BODY} bytes, the most passed on"),
                        ));
                    }
                    up(upstream, format!("{:x}\r\n", p.len()).as_bytes())?;
                    up(upstream, &p)?;
                    up(upstream, b"\r\n")?;
                }
                if end.is_some() {
                    return up(upstream, b"0\r\n\r\n");
                }
                let k = read_client(client, &mut buf)?;
                if k == 0 {
                    return Err(Pump::Client(400, "the chunked body ended early".into()));
                }
                input = buf[..k].to_vec();
            }
        }
    }
}

/// Reads from the backend, waiting at most `wait`.
fn read_upstream(
    upstream: &mut TcpStream,
    buf: &mut [u8],
    wait: Duration,
) -> std::io::Result<usize> {
    let _ = upstream.set_read_timeout(Some(wait.max(Duration::from_millis(10))));
    upstream.read(buf)
}

/// Reads the backend's answer head and streams the whole answer to the client.
fn relay_answer(
    server: &Server,
    backend: &Backend,
    head: &Head,
    upstream: &mut TcpStream,
    client: &mut TcpStream,
) -> Outcome {
    let deadline = Instant::now() + HEAD_TIMEOUT;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    let (status, reason, headers, body_start) = loop {
        // Parse what we have; 1xx answers (other than 101) are skipped.
        let mut hs = [httparse::EMPTY_HEADER; 128];
        let mut resp = httparse::Response::new(&mut hs);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let code = resp.code.unwrap_or(0);
                if (100..200).contains(&code) && code != 101 {
                    buf.drain(..n);
                    continue;
                }
                let headers: Vec<(String, Vec<u8>)> = resp
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), h.value.to_vec()))
                    .collect();
                break (code, resp.reason.unwrap_or("").to_string(), headers, n);
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => {
                let d = format!(
                    "the Fractalic backend {} sent a malformed answer: {e}",
                    backend.url
                );
                return answer(client, &ours(server, head, 502, d));
            }
        }
        if buf.len() > MAX_RESPONSE_HEAD {
            let d = format!(
                "the Fractalic backend {} sent an answer head over {MAX_RESPONSE_HEAD} bytes",
                backend.url
            );
            return answer(client, &ours(server, head, 502, d));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let d = format!(
                "the Fractalic backend {} did not answer within {}s",
                backend.url,
                HEAD_TIMEOUT.as_secs()
            );
            return answer(client, &ours(server, head, 504, d));
        }
        match read_upstream(upstream, &mut chunk, left) {
            Ok(0) => {
                let d = format!(
                    "the Fractalic backend {} closed the connection without an answer",
                    backend.url
                );
                return answer(client, &ours(server, head, 502, d));
            }
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => {
                let d = format!("the Fractalic backend {} failed: {e}", backend.url);
                return answer(client, &ours(server, head, 502, d));
            }
        }
    };
    if status == 101 {
        let d = format!(
            "the Fractalic backend {} switched protocols; upgrades are not passed on",
            backend.url
        );
        return answer(client, &ours(server, head, 502, d));
    }
    let framing = answer_framing(&head.method, status, &headers);
    let te: Vec<String> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
        .map(|(_, v)| String::from_utf8_lossy(v).trim().to_string())
        .collect();
    // With Transfer-Encoding a Content-Length is wrong and must go (RFC 9112 6.3).
    let kept = end_to_end(
        &headers,
        if te.is_empty() {
            &[]
        } else {
            &["content-length"]
        },
    );
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n").into_bytes();
    for (k, v) in &kept {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    if !te.is_empty() && framing != Framing::None {
        // The body goes on exactly as the backend coded and framed it.
        out.extend_from_slice(format!("Transfer-Encoding: {}\r\n", te.join(", ")).as_bytes());
    }
    out.extend_from_slice(format!("Via: 1.1 {VIA}\r\nConnection: close\r\n\r\n").as_bytes());
    let mut outcome = Outcome { status, bytes: 0 };
    if client.write_all(&out).is_err() {
        return outcome;
    }
    let mut pending = buf.split_off(body_start);
    let mut dec = Chunked::default();
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    if matches!(framing, Framing::None) {
        let _ = client.flush();
        return outcome;
    }
    loop {
        // Pass on what arrived, up to the end of the message.
        let mut take = pending.len();
        let mut done = false;
        match framing {
            Framing::Length(_) => {
                take = take.min(left as usize);
                left -= take as u64;
                done = left == 0;
            }
            Framing::Chunked => match dec.feed(&pending, |_| {}) {
                Ok(Some(end)) => {
                    take = end;
                    done = true;
                }
                Ok(None) => {}
                Err(_) => {
                    // Pass on what is valid of it and cut: the client sees a broken stream.
                    let _ = client.write_all(&pending);
                    outcome.bytes += pending.len() as u64;
                    return outcome;
                }
            },
            _ => {}
        }
        if take > 0 {
            if client.write_all(&pending[..take]).is_err() || client.flush().is_err() {
                // The client left: closing the backend connection tells it too.
                return outcome;
            }
            outcome.bytes += take as u64;
        }
        if done {
            return outcome;
        }
        match read_upstream(upstream, &mut chunk, IDLE_TIMEOUT) {
            Ok(0) => return outcome,
            Ok(k) => pending = chunk[..k].to_vec(),
            Err(_) => return outcome,
        }
    }
}

/// How the backend's answer body is delimited (RFC 9112 6.3).
fn answer_framing(method: &str, status: u16, headers: &[(String, Vec<u8>)]) -> Framing {
    if method == "HEAD" || (100..200).contains(&status) || status == 204 || status == 304 {
        return Framing::None;
    }
    let get = |n: &str| {
        headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| String::from_utf8_lossy(v).to_string())
            .collect::<Vec<_>>()
    };
    let te = get("transfer-encoding");
    if !te.is_empty() {
        let last = te.join(",");
        let last = last
            .rsplit(',')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        return if last == "chunked" {
            Framing::Chunked
        } else {
            Framing::Close
        };
    }
    match get("content-length")
        .first()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    }
}

/// An incremental reader of chunked framing: gives each data piece to a callback and says
/// where the message ends (after the last chunk and its trailers).
#[derive(Debug, Default)]
pub(crate) struct Chunked {
    state: State,
    line: Vec<u8>,
    trailer_bytes: usize,
}

#[derive(Debug, Default, PartialEq)]
enum State {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

impl Chunked {
    /// Feeds `input`; `Ok(Some(n))` when the message ended after `n` bytes of it.
    pub(crate) fn feed(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> std::result::Result<Option<usize>, String> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => return Ok(Some(i)),
                State::Size | State::DataEnd | State::Trailers => {
                    let b = input[i];
                    i += 1;
                    if b != b'\n' {
                        self.line.push(b);
                        if self.line.len() > 4096 {
                            return Err("a chunk line is over 4096 bytes".into());
                        }
                        continue;
                    }
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    match self.state {
                        State::Size => {
                            let text = String::from_utf8_lossy(line);
                            let size = text.split(';').next().unwrap_or("").trim();
                            if size.is_empty() || size.len() > 16 {
                                return Err(format!("bad chunk size {size:?}"));
                            }
                            let n = u64::from_str_radix(size, 16)
                                .map_err(|_| format!("bad chunk size {size:?}"))?;
                            self.state = if n == 0 {
                                State::Trailers
                            } else {
                                State::Data(n)
                            };
                        }
                        State::DataEnd => {
                            if !line.is_empty() {
                                return Err("a chunk is longer than its size".into());
                            }
                            self.state = State::Size;
                        }
                        _ => {
                            self.trailer_bytes += line.len();
                            if self.trailer_bytes > 16 * 1024 {
                                return Err("the trailers are over 16 KiB".into());
                            }
                            if line.is_empty() {
                                self.state = State::Done;
                                return Ok(Some(i));
                            }
                        }
                    }
                }
                State::Data(left) => {
                    let take = (left as usize).min(input.len() - i);
                    data(&input[i..i + take]);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                }
            }
        }
        Ok((self.state == State::Done).then_some(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn backend_urls() {
        let b = Backend::parse("http://127.0.0.1:8001").unwrap();
        assert_eq!(b.url, "http://127.0.0.1:8001");
        assert_eq!(Backend::parse("http://127.0.0.1:8001/").unwrap().url, b.url);
        assert_eq!(
            Backend::parse("http://[::1]:9").unwrap().url,
            "http://[::1]:9"
        );
        assert_eq!(
            Backend::parse("http://localhost").unwrap().url,
            "http://localhost:80"
        );
        for bad in [
            "127.0.0.1:8001",
            "https://127.0.0.1:8001",
            "http://127.0.0.1:8001/prefix",
            "http://u:p@127.0.0.1:1",
            "http://:8001",
            "http://127.0.0.1:0",
            "http://127.0.0.1:99999",
            "http://[::1",
            "ftp://x",
        ] {
            let e = Backend::parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
            assert!(e.to_string().contains(bad), "{bad}: {e}");
        }
        let local: SocketAddr = "0.0.0.0:8001".parse().unwrap();
        assert!(b.is_self(local));
        assert!(!b.is_self("127.0.0.1:8000".parse().unwrap()));
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let h = hv(&[
            ("Host", "localhost:8000"),
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("Keep-Alive", "timeout=5"),
            ("X-Secret-Hop", "1"),
            ("TE", "trailers"),
            ("Upgrade", "websocket"),
            ("Proxy-Authorization", "Basic x"),
            ("Transfer-Encoding", "chunked"),
            ("Cache-Control", "no-cache"),
            ("Access-Control-Allow-Origin", "*"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
        ]);
        let kept: Vec<String> = end_to_end(&h, &[]).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            kept,
            [
                "Host",
                "Cache-Control",
                "Access-Control-Allow-Origin",
                "Set-Cookie",
                "Set-Cookie"
            ]
        );
    }

    fn head(raw: &str) -> Head {
        let (h, rest) = raw.split_once("\r\n\r\n").unwrap();
        let raw_head = format!("{h}\r\n\r\n").into_bytes();
        let mut hs = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Request::new(&mut hs);
        r.parse(&raw_head).unwrap();
        let target = r.path.unwrap().to_string();
        let path = http::percent_decode(target.split('?').next().unwrap());
        Head {
            method: r.method.unwrap().into(),
            version: r.version.unwrap(),
            headers: r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).to_string(),
                    )
                })
                .collect(),
            target,
            path,
            raw: raw_head,
            rest: rest.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_backend_gets_the_request_with_forwarding_headers() {
        let h = head("POST /save_file?path=%2Ftmp%2Fa HTTP/1.1\r\nHost: localhost:8000\r\nOrigin: http://localhost:3000\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Host: evil\r\nExpect: 100-continue\r\nContent-Length: 2\r\nConnection: keep-alive\r\nAuthorization: Bearer abc\r\n\r\n{}");
        let out = String::from_utf8(backend_head(
            &h,
            Some("127.0.0.1:5555".parse().unwrap()),
            Framing::Length(2),
        ))
        .unwrap();
        assert!(
            out.starts_with("POST /save_file?path=%2Ftmp%2Fa HTTP/1.1\r\n"),
            "{out}"
        );
        for want in [
            "Host: localhost:8000\r\n",
            "Origin: http://localhost:3000\r\n",
            "Authorization: Bearer abc\r\n",
            "X-Forwarded-For: 10.0.0.1, 127.0.0.1\r\n",
            "X-Forwarded-Proto: http\r\n",
            "X-Forwarded-Host: localhost:8000\r\n",
            "Via: 1.1 fractalic-publisher\r\n",
            "Content-Length: 2\r\n",
            "Connection: close\r\n\r\n",
        ] {
            assert!(out.contains(want), "{want:?} missing in {out}");
        }
        for gone in ["evil", "Expect", "keep-alive"] {
            assert!(!out.contains(gone), "{gone} passed on: {out}");
        }
        assert_eq!(out.matches("Connection:").count(), 1, "{out}");
    }

    #[test]
    fn request_bodies_are_framed_or_refused() {
        let f = |raw: &str| request_framing(&head(raw)).map_err(|(s, _)| s);
        assert_eq!(f("GET / HTTP/1.1\r\n\r\n"), Ok(Framing::None));
        assert_eq!(
            f("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Err(501)
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
            Err(400)
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            Err(400)
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n"),
            Err(413)
        );
        assert_eq!(f("POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), Err(400));
    }

    #[test]
    fn answers_are_framed_as_rfc_9112_says() {
        let h = |pairs: &[(&str, &str)]| hv(pairs);
        assert_eq!(
            answer_framing("GET", 200, &h(&[("Content-Length", "3")])),
            Framing::Length(3)
        );
        assert_eq!(
            answer_framing("HEAD", 200, &h(&[("Content-Length", "3")])),
            Framing::None
        );
        assert_eq!(answer_framing("GET", 304, &h(&[])), Framing::None);
        assert_eq!(answer_framing("GET", 204, &h(&[])), Framing::None);
        assert_eq!(
            answer_framing("POST", 200, &h(&[("transfer-encoding", "chunked")])),
            Framing::Chunked
        );
        assert_eq!(answer_framing("GET", 200, &h(&[])), Framing::Close);
    }

    #[test]
    fn chunked_framing_is_followed_across_reads() {
        let msg = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\nGARBAGE";
        // Every split point gives the same data and the same end.
        for split in 0..msg.len() {
            let mut d = Chunked::default();
            let mut data = Vec::new();
            let a = d
                .feed(&msg[..split], |p| data.extend_from_slice(p))
                .unwrap();
            let end = match a {
                Some(e) => e,
                None => {
                    split
                        + d.feed(&msg[split..], |p| data.extend_from_slice(p))
                            .unwrap()
                            .unwrap()
                }
            };
            assert_eq!(data, b"hello world", "split {split}");
            assert_eq!(&msg[end..], b"GARBAGE", "split {split}");
        }
        let mut d = Chunked::default();
        assert!(d.feed(b"zz\r\n", |_| {}).is_err());
        let mut d = Chunked::default();
        assert!(d.feed(b"2\r\nabc\r\n", |_| {}).is_err());
    }

    #[test]
    fn serve_keeps_its_own_routes() {
        let own = |raw: &str| owns(&head(raw));
        assert!(own(
            "OPTIONS /api/deploy/docker-registry/stream HTTP/1.1\r\n\r\n"
        ));
        assert!(own("POST /api/deploy/docker-registry HTTP/1.1\r\n\r\n"));
        assert!(own("GET /api/nothing-here HTTP/1.1\r\n\r\n"));
        assert!(own("GET /%61pi/deployments HTTP/1.1\r\n\r\n"));
        assert!(own("GET /openapi.json HTTP/1.1\r\n\r\n"));
        assert!(own("GET / HTTP/1.1\r\n\r\n"));
        assert!(own("GET /health HTTP/1.1\r\n\r\n"));
        assert!(own("GET /api%zz HTTP/1.1\r\n\r\n"));
        assert!(!own("GET /list_directory/?path=. HTTP/1.1\r\n\r\n"));
        assert!(!own("POST /ws/run_command HTTP/1.1\r\n\r\n"));
        assert!(!own("GET /mcp/status HTTP/1.1\r\n\r\n"));
        assert!(!own("OPTIONS /save_settings/ HTTP/1.1\r\n\r\n"));
        assert!(!own("GET /apix HTTP/1.1\r\n\r\n"));
    }
}
