//! A small synchronous HTTP/1.1 layer on `std::net`: one request per connection
//! (`Connection: close`), request heads parsed by `httparse`, hard limits and deadlines on
//! every read and write, JSON and Server-Sent-Event responses.

use crate::error::Error;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A comment line is sent when nothing else was for this long.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The HTTP status for an error of the deploy or management path.
pub(crate) fn status_of(e: &Error) -> u16 {
    match e {
        Error::NotFound { .. } => 404,
        Error::NotManaged { .. } => 403,
        Error::Locked { .. } => 409,
        Error::Input { .. } | Error::PluginInvalid { .. } => 400,
        Error::DockerMissing { .. } | Error::DaemonDown { .. } => 503,
        _ => 500,
    }
}

/// Largest request head (request line and headers).
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Largest request body; more is answered 413.
pub(crate) const MAX_BODY: usize = 1024 * 1024;
/// A request's head must arrive within this.
pub(crate) const HEAD_DEADLINE: Duration = Duration::from_secs(10);
/// A connection that sends no byte for this long is closed without an answer (idle
/// connections must not hold the server's connection slots).
pub(crate) const IDLE_DEADLINE: Duration = Duration::from_secs(2);
/// A request's body must arrive within this.
pub(crate) const BODY_DEADLINE: Duration = Duration::from_secs(30);
/// Each single write may block this long (a client that stops reading is dropped).
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed request.
#[derive(Debug)]
pub(crate) struct Request {
    pub method: String,
    /// The path without the query string, percent-decoded.
    pub path: String,
    /// Query parameters, percent-decoded.
    pub query: Vec<(String, String)>,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header named `name` (lowercase).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter named `name`.
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request could not be read; each maps to one status.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The client went away or sent nothing (no answer is possible or needed).
    Gone,
    /// 400 with this detail.
    Bad(String),
    /// 408: the head or body did not arrive in time.
    Timeout,
    /// 413: the body is larger than [`MAX_BODY`].
    TooLarge(usize),
    /// 431: the head is larger than [`MAX_HEAD`].
    HeadTooLarge,
    /// 411: a body without Content-Length (e.g. chunked).
    LengthRequired,
}

fn read_some(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<usize, ReadError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ReadError::Timeout);
    }
    // Each read waits at most until the deadline, so a client trickling bytes cannot hold the
    // connection past it.
    let _ = stream.set_read_timeout(Some(left.max(Duration::from_millis(10))));
    match stream.read(buf) {
        Ok(n) => Ok(n),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(ReadError::Timeout)
        }
        Err(_) => Err(ReadError::Gone),
    }
}

/// A request head, read before its body: enough to decide who answers it (`serve` itself or,
/// with `--backend`, the Fractalic backend), without touching the body.
#[derive(Debug)]
pub(crate) struct Head {
    pub method: String,
    /// The request target exactly as sent (path and query, not decoded).
    pub target: String,
    /// The path percent-decoded; None when its escapes are broken.
    pub path: Option<String>,
    /// HTTP/1.x minor version (0 or 1).
    pub version: u8,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    /// The head's bytes as received (for exact forwarding).
    pub raw: Vec<u8>,
    /// Bytes after the head that arrived with it (the body's start).
    pub rest: Vec<u8>,
}

impl Head {
    /// The first header named `name` (lowercase).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request from `stream` within the deadlines and limits above.
pub(crate) fn read_request(stream: &mut TcpStream) -> Result<Request, ReadError> {
    read_request_within(stream, IDLE_DEADLINE, HEAD_DEADLINE)
}

/// [`read_request`] with its own deadlines for the first byte and for the whole head.
pub(crate) fn read_request_within(
    stream: &mut TcpStream,
    idle: Duration,
    head: Duration,
) -> Result<Request, ReadError> {
    let h = read_head_within(stream, idle, head)?;
    read_body(stream, h)
}

/// Reads a request head (within [`HEAD_DEADLINE`], at most [`MAX_HEAD`] bytes; nothing at all
/// for [`IDLE_DEADLINE`] is a connection gone idle).
pub(crate) fn read_head(stream: &mut TcpStream) -> Result<Head, ReadError> {
    read_head_within(stream, IDLE_DEADLINE, HEAD_DEADLINE)
}

/// [`read_head`] with its own deadlines for the first byte and for the whole head.
pub(crate) fn read_head_within(
    stream: &mut TcpStream,
    idle: Duration,
    head: Duration,
) -> Result<Head, ReadError> {
    let head_deadline = Instant::now() + head;
    let idle_deadline = Instant::now() + idle.min(head);
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    let head_len = loop {
        if let Some(i) = find_head_end(&buf) {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(ReadError::HeadTooLarge);
        }
        let deadline = if buf.is_empty() {
            idle_deadline
        } else {
            head_deadline
        };
        let n = match read_some(stream, &mut chunk, deadline) {
            Ok(0) if buf.is_empty() => return Err(ReadError::Gone),
            Ok(0) => return Err(ReadError::Bad("the request head ended early".into())),
            Ok(n) => n,
            Err(ReadError::Timeout) if buf.is_empty() => return Err(ReadError::Gone),
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
    };
    if head_len > MAX_HEAD {
        return Err(ReadError::HeadTooLarge);
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(ReadError::Bad("incomplete request head".into()))
        }
        Err(e) => return Err(ReadError::Bad(format!("malformed request: {e}"))),
    }
    let method = req.method.unwrap_or("").to_string();
    let target = req.path.unwrap_or("/").to_string();
    let version = req.version.unwrap_or(1);
    let mut hs = Vec::new();
    for h in req.headers.iter() {
        let v = String::from_utf8_lossy(h.value).trim().to_string();
        hs.push((h.name.to_ascii_lowercase(), v));
    }
    let raw_path = target.split_once('?').map_or(target.as_str(), |(p, _)| p);
    let path = percent_decode(raw_path);
    let rest = buf.split_off(head_len);
    Ok(Head {
        method,
        target,
        path,
        version,
        headers: hs,
        raw: buf,
        rest,
    })
}

/// Reads the body of a request whose head is `head` (Content-Length only, at most
/// [`MAX_BODY`], within [`BODY_DEADLINE`]) and decodes its path and query.
pub(crate) fn read_body(stream: &mut TcpStream, head: Head) -> Result<Request, ReadError> {
    let Head {
        method,
        target,
        path,
        headers: hs,
        rest,
        ..
    } = head;
    let raw_path = target.split_once('?').map_or(target.as_str(), |(p, _)| p);
    let raw_query = target.split_once('?').map_or("", |(_, q)| q);
    let path =
        path.ok_or_else(|| ReadError::Bad(format!("bad percent-encoding in path {raw_path:?}")))?;
    let mut chunk = [0u8; 4096];
    let mut query = Vec::new();
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(&k.replace('+', " "));
        let v = percent_decode(&v.replace('+', " "));
        match (k, v) {
            (Some(k), Some(v)) => query.push((k, v)),
            _ => {
                return Err(ReadError::Bad(format!(
                    "bad percent-encoding in query {pair:?}"
                )))
            }
        }
    }
    let header = |n: &str| hs.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    if header("transfer-encoding").is_some() {
        return Err(ReadError::LengthRequired);
    }
    let lengths: Vec<&str> = hs
        .iter()
        .filter(|(k, _)| k == "content-length")
        .map(|(_, v)| v.as_str())
        .collect();
    if lengths.windows(2).any(|w| w[0] != w[1]) {
        return Err(ReadError::Bad(format!(
            "conflicting Content-Length headers {lengths:?}: send one"
        )));
    }
    let len = match header("content-length") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| ReadError::Bad(format!("bad Content-Length {v:?}")))?,
    };
    if len > MAX_BODY {
        return Err(ReadError::TooLarge(len));
    }
    let mut body = rest;
    if body.len() > len {
        body.truncate(len);
    }
    let body_deadline = Instant::now() + BODY_DEADLINE;
    while body.len() < len {
        let want = (len - body.len()).min(chunk.len());
        match read_some(stream, &mut chunk[..want], body_deadline)? {
            0 => {
                return Err(ReadError::Bad(format!(
                    "the body ended after {} of {len} bytes (Content-Length)",
                    body.len()
                )))
            }
            n => body.extend_from_slice(&chunk[..n]),
        }
    }
    Ok(Request {
        method,
        path,
        query,
        headers: hs,
        body,
    })
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Decodes `%XX` escapes; None for a broken escape or bytes that are not UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A response to write.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON body.
    pub(crate) fn json(status: u16, v: &Value) -> Response {
        let body = serde_json::to_vec_pretty(v).unwrap_or_default();
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body,
        }
    }

    /// `{"detail": "..."}`, the error body every failure uses (FastAPI's shape).
    pub(crate) fn error(status: u16, detail: impl Into<String>) -> Response {
        Response::json(status, &serde_json::json!({ "detail": detail.into() }))
    }

    /// An error about the request's field `field`: `{"detail": ..., "field": ...}`.
    pub(crate) fn error_at(status: u16, detail: impl Into<String>, field: &str) -> Response {
        Response::json(
            status,
            &serde_json::json!({ "detail": detail.into(), "field": field }),
        )
    }

    /// A body of `content_type`.
    pub(crate) fn bytes(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body,
        }
    }

    /// Adds a header.
    pub(crate) fn with(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// The reason phrase for `status` (the UI shows `HTTP <status>: <statusText>`).
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// The `Server` header of every answer `serve` writes itself.
pub(crate) const SERVER: &str = concat!("fractalic-publisher/", env!("CARGO_PKG_VERSION"));

/// Sent on every response: a browser never second-guesses the Content-Type (`/logs` is
/// text the container wrote, which must never be run as HTML or script).
pub(crate) const SECURITY_HEADERS: &str = "X-Content-Type-Options: nosniff\r\n";

/// Longest reason phrase put on a status line (longer details are cut, with `...`).
pub(crate) const MAX_REASON: usize = 300;

/// The reason phrase for `r`: for an error with a JSON `detail`, that detail as one line of
/// printable ASCII (the Fractalic UI shows only `HTTP <status>: <statusText>` and never reads
/// the body, so the reason must be on the status line); otherwise the standard phrase.
/// Details never hold secrets (the project's rule for every message), so neither does this.
pub(crate) fn reason_phrase(r: &Response) -> String {
    let detail = (r.status >= 400)
        .then(|| serde_json::from_slice::<Value>(&r.body).ok())
        .flatten()
        .and_then(|v| v["detail"].as_str().map(str::to_string));
    let Some(detail) = detail else {
        return reason(r.status).to_string();
    };
    let mut out = String::with_capacity(detail.len().min(MAX_REASON + 3));
    let mut space = false;
    for c in detail.chars() {
        // RFC 9110 allows HTAB, SP, VCHAR and obs-text; only SP and VCHAR are sent, so every
        // client reads the same text. Control characters (a CR or LF would end the line)
        // become spaces; other characters a `?`.
        let c = match c {
            c if c.is_ascii_graphic() => c,
            c if c.is_whitespace() || c.is_control() => ' ',
            _ => '?',
        };
        if c == ' ' {
            if space || out.is_empty() {
                continue;
            }
            space = true;
        } else {
            space = false;
        }
        if out.len() >= MAX_REASON {
            out.truncate(out.trim_end().len());
            out.push_str("...");
            return out;
        }
        out.push(c);
    }
    let out = out.trim_end().to_string();
    if out.is_empty() {
        reason(r.status).to_string()
    } else {
        out
    }
}

/// Writes a whole response and closes the exchange (`Connection: close`).
pub(crate) fn write_response(stream: &mut TcpStream, r: &Response) -> std::io::Result<()> {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    super::access::sent(Some(r.status), r.body.len());
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nServer: {SERVER}\r\n",
        r.status,
        reason_phrase(r)
    );
    head.push_str(SECURITY_HEADERS);
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        r.body.len()
    ));
    stream.write_all(head.as_bytes())?;
    stream.write_all(&r.body)?;
    stream.flush()
}

/// Starts a Server-Sent-Events response; events follow with [`write_event`].
pub(crate) fn start_sse(stream: &mut TcpStream, extra: &[(String, String)]) -> std::io::Result<()> {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    super::access::sent(Some(200), 0);
    let mut head = format!(
        "HTTP/1.1 200 OK\r\nServer: {SERVER}\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: close\r\n",
    );
    head.push_str(SECURITY_HEADERS);
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.flush()
}

/// One SSE event: `id: N` and one `data:` line of JSON (JSON has no raw newlines).
pub(crate) fn write_event(stream: &mut TcpStream, id: u64, data: &str) -> std::io::Result<()> {
    let e = format!("id: {id}\ndata: {data}\n\n");
    super::access::sent(None, e.len());
    stream.write_all(e.as_bytes())?;
    stream.flush()
}

/// An SSE comment line that keeps proxies and clients from timing the stream out.
pub(crate) fn write_keep_alive(stream: &mut TcpStream) -> std::io::Result<()> {
    super::access::sent(None, 14);
    stream.write_all(b": keep-alive\n\n")?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn roundtrip(raw: &'static [u8]) -> Result<Request, ReadError> {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(raw).unwrap();
            // keep the socket open a moment so the server reads what it needs
            let mut sink = [0u8; 16];
            let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = c.read(&mut sink);
        });
        let (mut s, _) = l.accept().unwrap();
        let r = read_request(&mut s);
        drop(s);
        t.join().unwrap();
        r
    }

    #[test]
    fn parses_head_query_and_body() {
        let r = roundtrip(
            b"POST /api/x%20y?tail=5&service=ai_server HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        )
        .unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/api/x y");
        assert_eq!(r.param("tail"), Some("5"));
        assert_eq!(r.param("service"), Some("ai_server"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.body, b"{}");
    }

    #[test]
    fn limits_are_enforced() {
        assert!(matches!(
            roundtrip(b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"),
            Err(ReadError::TooLarge(99999999))
        ));
        assert!(matches!(
            roundtrip(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(ReadError::LengthRequired)
        ));
        assert!(matches!(
            roundtrip(b"GARBAGE\r\n\r\n"),
            Err(ReadError::Bad(_))
        ));
        assert!(matches!(
            roundtrip(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            Err(ReadError::Bad(_))
        ));
    }

    #[test]
    fn error_details_become_one_line_ascii_reason_phrases() {
        let r = Response::error(
            400,
            "no main script \"my-script\" in /srv/hello-ui: add my-script.md",
        );
        assert_eq!(
            reason_phrase(&r),
            "no main script \"my-script\" in /srv/hello-ui: add my-script.md"
        );
        let r = Response::error(400, "a\r\nHTTP/1.1 200 OK\r\n\tb \u{e9}\u{1b}[31m  ");
        let p = reason_phrase(&r);
        assert_eq!(p, "a HTTP/1.1 200 OK b ? [31m");
        assert!(p.bytes().all(|b| b == b' ' || b.is_ascii_graphic()), "{p}");
        let long = Response::error(409, "x".repeat(5000));
        let p = reason_phrase(&long);
        assert!(
            p.len() <= MAX_REASON + 3 && p.ends_with("..."),
            "{}",
            p.len()
        );
        // No detail: the standard phrase.
        assert_eq!(
            reason_phrase(&Response::json(200, &serde_json::json!({"detail": "x"}))),
            "OK"
        );
        assert_eq!(reason_phrase(&Response::error(404, " \n ")), "Not Found");
        assert_eq!(
            reason_phrase(&Response::bytes(500, "text/plain", b"boom".to_vec())),
            "Internal Server Error"
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
    }
}
