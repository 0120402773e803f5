//! Just enough HTTP/1.1 for the stand-in: one request per connection, `Connection: close`,
//! `Content-Length` on every response; the same head/body parsing serves the curl mode.

use std::io::{self, BufRead, Read, Write};

/// Upper bound for the request line plus headers.
const MAX_HEAD: u64 = 64 * 1024;
/// Upper bound for a body; /execute bodies are small JSON objects.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Why a message could not be read.
#[derive(Debug)]
pub enum ParseError {
    Io(io::Error),
    Malformed(&'static str),
    TooLarge,
}

impl From<io::Error> for ParseError {
    fn from(e: io::Error) -> Self {
        ParseError::Io(e)
    }
}

/// A parsed request; `path` has the query string removed.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub path: String,
    /// Headers as sent (names as sent), in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A parsed response (used by the curl mode).
#[derive(Debug)]
pub struct ParsedResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A response to send.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    /// A response whose body is already-encoded JSON.
    pub fn json(status: u16, body: String) -> Self {
        Response {
            status,
            content_type: "application/json",
            body: body.into_bytes(),
        }
    }

    pub fn html(status: u16, body: &str) -> Self {
        Response {
            status,
            content_type: "text/html; charset=utf-8",
            body: body.as_bytes().to_vec(),
        }
    }

    /// FastAPI's shape for simple errors: `{"detail":"..."}`.
    pub fn detail(status: u16) -> Self {
        Response::json(
            status,
            format!("{{\"detail\":{}}}", crate::json::string(reason(status))),
        )
    }
}

/// The standard reason phrase for the codes the stand-in uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Reads one request (head and body) from a connection.
pub fn read_request<R: BufRead>(r: &mut R) -> Result<Request, ParseError> {
    let (start, headers) = read_head(r)?;
    let mut parts = start.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) if !m.is_empty() && t.starts_with('/') => (m, t, v),
        _ => return Err(ParseError::Malformed("bad request line")),
    };
    if !version.starts_with("HTTP/1.") {
        return Err(ParseError::Malformed("unsupported HTTP version"));
    }
    let body = read_body(r, &headers, false)?;
    Ok(Request {
        method: method.to_string(),
        target: target.to_string(),
        path: target.split('?').next().unwrap_or(target).to_string(),
        headers,
        body,
    })
}

/// Reads one response (status line, headers, body) from a connection.
pub fn read_response<R: BufRead>(r: &mut R) -> Result<ParsedResponse, ParseError> {
    let (start, headers) = read_head(r)?;
    let mut parts = start.splitn(3, ' ');
    let status = match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => code
            .parse::<u16>()
            .map_err(|_| ParseError::Malformed("bad status code"))?,
        _ => return Err(ParseError::Malformed("bad status line")),
    };
    let body = read_body(r, &headers, true)?;
    Ok(ParsedResponse { status, body })
}

/// Writes a complete response; `head_only` answers a HEAD request (same headers, no body).
pub fn write_response<W: Write>(w: &mut W, resp: &Response, head_only: bool) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nServer: fractalic-stand-in\r\n\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(&resp.body);
    }
    w.write_all(&out)?;
    w.flush()
}

/// The value of a header, matched case-insensitively.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn read_head<R: BufRead>(r: &mut R) -> Result<(String, Vec<(String, String)>), ParseError> {
    let mut limited = r.take(MAX_HEAD);
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = limited.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(if limited.limit() == 0 {
                ParseError::TooLarge
            } else if lines.is_empty() {
                ParseError::Malformed("connection closed before a request")
            } else {
                ParseError::Malformed("connection closed inside the headers")
            });
        }
        if !line.ends_with(b"\n") {
            return Err(ParseError::TooLarge);
        }
        let text = String::from_utf8(line)
            .map_err(|_| ParseError::Malformed("non-UTF-8 header"))?
            .trim_end_matches(['\r', '\n'])
            .to_string();
        if text.is_empty() {
            if lines.is_empty() {
                continue; // tolerate stray CRLF before the start line
            }
            break;
        }
        lines.push(text);
    }
    let start = lines.remove(0);
    let mut headers = Vec::with_capacity(lines.len());
    for line in lines {
        let (k, v) = line
            .split_once(':')
            .ok_or(ParseError::Malformed("header without colon"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok((start, headers))
}

fn read_body<R: BufRead>(
    r: &mut R,
    headers: &[(String, String)],
    until_eof: bool,
) -> Result<Vec<u8>, ParseError> {
    if header(headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return read_chunked(r);
    }
    if let Some(len) = header(headers, "content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| ParseError::Malformed("bad Content-Length"))?;
        if len > MAX_BODY {
            return Err(ParseError::TooLarge);
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        return Ok(body);
    }
    let mut body = Vec::new();
    if until_eof {
        r.take(MAX_BODY as u64 + 1).read_to_end(&mut body)?;
        if body.len() > MAX_BODY {
            return Err(ParseError::TooLarge);
        }
    }
    Ok(body)
}

fn read_chunked<R: BufRead>(r: &mut R) -> Result<Vec<u8>, ParseError> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        r.take(1024).read_line(&mut line)?;
        let size_text = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| ParseError::Malformed("bad chunk size"))?;
        if body.len() + size > MAX_BODY {
            return Err(ParseError::TooLarge);
        }
        if size == 0 {
            // Trailers until the empty line.
            loop {
                let mut t = String::new();
                if r.take(1024).read_line(&mut t)? == 0 || t.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(ParseError::Malformed("chunk not followed by CRLF"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_with_body_and_query() {
        let raw = b"POST /execute?x=1 HTTP/1.1\r\nHost: a\r\ncontent-length: 4\r\n\r\nabcdEXTRA";
        let req = read_request(&mut &raw[..]).unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.target, "/execute?x=1");
        assert_eq!(req.path, "/execute");
        assert_eq!(req.body, b"abcd");
    }

    #[test]
    fn parses_chunked_request() {
        let raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        let req = read_request(&mut &raw[..]).unwrap();
        assert_eq!(req.body, b"abcde");
    }

    #[test]
    fn rejects_garbage_request_line() {
        let raw = b"HELLO\r\n\r\n";
        assert!(matches!(
            read_request(&mut &raw[..]),
            Err(ParseError::Malformed(_))
        ));
    }

    #[test]
    fn response_body_until_eof_without_length() {
        let raw = b"HTTP/1.0 503 Service Unavailable\r\nX: y\r\n\r\ndown";
        let resp = read_response(&mut &raw[..]).unwrap();
        assert_eq!(resp.status, 503);
        assert_eq!(resp.body, b"down");
    }

    #[test]
    fn head_response_keeps_length_but_drops_body() {
        let mut out = Vec::new();
        let resp = Response::json(200, "{\"a\":1}".into());
        write_response(&mut out, &resp, true).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Content-Length: 7\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "{text}");
    }
}
