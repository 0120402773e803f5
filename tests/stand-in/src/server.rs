//! The three services of the production image (AI server 8001, backend 8000, MCP manager 5859):
//! their routes, and a thread-per-connection accept loop that logs uvicorn-style request lines.

use crate::http::{self, read_request, write_response, ParseError, Request, Response};
use crate::json::{object, string};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Which of the image's programs a listener plays.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    AiServer,
    Backend,
    McpManager,
}

impl Kind {
    /// The supervisord program name, also the log files' stem (`/tmp/<name>.log`,
    /// `/tmp/<name>_error.log`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::AiServer => "ai_server",
            Kind::Backend => "backend",
            Kind::McpManager => "mcp_manager",
        }
    }

    /// Every program, in supervisord's start order.
    pub const ALL: [Kind; 3] = [Kind::AiServer, Kind::Backend, Kind::McpManager];

    /// The program called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Opens `path` for appending; None (after saying why on stderr) when it cannot be.
pub fn open_log(path: &Path) -> Option<Mutex<File>> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| eprintln!("stand-in: cannot open {}: {e}", path.display()))
        .ok()
        .map(Mutex::new)
}

/// Appends `text` to an opened log, if there is one.
pub fn append(log: &Option<Mutex<File>>, text: &str) {
    if let Some(log) = log {
        if let Ok(mut f) = log.lock() {
            let _ = f.write_all(text.as_bytes());
        }
    }
}

/// One running service: its routes' settings and its two log files.
pub struct Service {
    pub kind: Kind,
    pub healthy: bool,
    pub fractalic_dir: PathBuf,
    log: Option<Mutex<File>>,
    error_log: Option<Mutex<File>>,
}

impl Service {
    /// Opens (appending) `<log_dir>/<name>.log` (stdout: request lines) and
    /// `<log_dir>/<name>_error.log` (stderr: uvicorn's start-up lines), as the image's
    /// supervisord config does; a service without writable logs still serves.
    pub fn new(kind: Kind, healthy: bool, fractalic_dir: PathBuf, log_dir: &Path) -> Self {
        Service {
            kind,
            healthy,
            fractalic_dir,
            log: open_log(&log_dir.join(format!("{}.log", kind.name()))),
            error_log: open_log(&log_dir.join(format!("{}_error.log", kind.name()))),
        }
    }

    /// Appends one line to the service's log file (its stdout).
    pub fn log(&self, line: &str) {
        append(&self.log, &format!("{line}\n"));
    }

    /// Appends one line to the service's error log file (its stderr).
    pub fn error_log(&self, line: &str) {
        append(&self.error_log, &format!("{line}\n"));
    }

    /// Routes a request to its response.
    pub fn respond(&self, req: &Request) -> Response {
        let get = matches!(req.method.as_str(), "GET" | "HEAD");
        let route = |ok: Response| {
            if get {
                ok
            } else {
                Response::detail(405)
            }
        };
        match (self.kind, req.path.as_str()) {
            (Kind::AiServer, "/health") => route(if self.healthy {
                Response::json(200, object(&[("status", string("healthy"))]))
            } else {
                Response::json(503, object(&[("status", string("unhealthy"))]))
            }),
            (Kind::AiServer, "/docs") => route(Response::html(200, DOCS_HTML)),
            (Kind::AiServer, "/openapi.json") => route(Response::json(200, OPENAPI.to_string())),
            (Kind::AiServer, "/execute") if req.method == "POST" => {
                crate::execute::handle(&req.body, &self.fractalic_dir)
            }
            (Kind::AiServer, "/execute") => Response::detail(405),
            (Kind::Backend, "/health") => route(Response::json(
                200,
                object(&[
                    ("status", string("healthy")),
                    ("service", string("backend")),
                ]),
            )),
            (Kind::McpManager, "/status") => route(Response::json(
                200,
                object(&[
                    ("status", string("running")),
                    ("api_responsive", "true".into()),
                    ("servers", "{}".into()),
                    ("total_servers", "0".into()),
                    ("running_servers", "0".into()),
                ]),
            )),
            _ => Response::detail(404),
        }
    }
}

/// Accepts connections forever, one thread each.
pub fn serve(listener: TcpListener, service: Arc<Service>) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let service = Arc::clone(&service);
                thread::spawn(move || handle_connection(stream, &service));
            }
            Err(e) => eprintln!("stand-in: {}: accept failed: {e}", service.kind.name()),
        }
    }
}

fn handle_connection(stream: TcpStream, service: &Service) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "-".into());
    let mut reader = BufReader::new(&stream);
    let (line, resp, head_only) = match read_request(&mut reader) {
        Ok(req) => {
            let resp = service.respond(&req);
            (
                format!("\"{} {} HTTP/1.1\"", req.method, req.target),
                resp,
                req.method == "HEAD",
            )
        }
        // A probe that connects and closes (docker's port proxy does) gets no answer.
        Err(ParseError::Io(_))
        | Err(ParseError::Malformed("connection closed before a request")) => return,
        Err(ParseError::TooLarge) => ("\"-\"".to_string(), Response::detail(413), false),
        Err(ParseError::Malformed(_)) => ("\"-\"".to_string(), Response::detail(400), false),
    };
    // Logged before answering, so a client that got its answer finds the line in the log.
    service.log(&format!(
        "INFO:     {peer} - {line} {} {}",
        resp.status,
        http::reason(resp.status)
    ));
    let _ = write_response(&mut &stream, &resp, head_only);
}

const DOCS_HTML: &str = r#"<!DOCTYPE html>
<html>
<head>
<link type="text/css" rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
<title>Fractalic AI Server - Swagger UI</title>
</head>
<body>
<div id="swagger-ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>
const ui = SwaggerUIBundle({url: '/openapi.json', dom_id: '#swagger-ui'})
</script>
</body>
</html>
"#;

const OPENAPI: &str = r#"{"openapi":"3.1.0","info":{"title":"Fractalic AI Server (stand-in)","version":"0.1.0"},"paths":{"/health":{"get":{"summary":"Health"}},"/execute":{"post":{"summary":"Execute"}}}}"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str) -> Request {
        Request {
            method: method.into(),
            target: path.into(),
            path: path.into(),
            headers: vec![],
            body: vec![],
        }
    }

    fn service(kind: Kind, healthy: bool) -> Service {
        Service {
            kind,
            healthy,
            fractalic_dir: PathBuf::from("/nonexistent"),
            log: None,
            error_log: None,
        }
    }

    #[test]
    fn routes() {
        let ai = service(Kind::AiServer, true);
        let r = ai.respond(&req("GET", "/health"));
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &br#"{"status":"healthy"}"#[..])
        );
        assert_eq!(
            service(Kind::AiServer, false)
                .respond(&req("GET", "/health"))
                .status,
            503
        );
        assert_eq!(
            ai.respond(&req("GET", "/docs")).content_type,
            "text/html; charset=utf-8"
        );
        assert_eq!(ai.respond(&req("GET", "/execute")).status, 405);
        assert_eq!(ai.respond(&req("POST", "/health")).status, 405);
        assert_eq!(ai.respond(&req("GET", "/status")).status, 404);
        let mcp = service(Kind::McpManager, true);
        let s = String::from_utf8(mcp.respond(&req("GET", "/status")).body).unwrap();
        assert!(
            s.starts_with(r#"{"status":"running","api_responsive":true"#),
            "{s}"
        );
        assert_eq!(
            service(Kind::Backend, true)
                .respond(&req("GET", "/health"))
                .status,
            200
        );
    }

    #[test]
    fn serves_over_tcp_and_curl_reads_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("stand-in-serve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let svc = Arc::new(Service::new(Kind::AiServer, false, dir.clone(), &dir));
        thread::spawn(move || serve(listener, svc));
        let url = format!("http://localhost:{port}/health");
        assert_eq!(crate::curl::main(&["-fs".into(), url.clone()]), 22);
        assert_eq!(crate::curl::main(&["-s".into(), url]), 0);
        let log = std::fs::read_to_string(dir.join("ai_server.log")).unwrap();
        assert!(
            log.contains("\"GET /health HTTP/1.1\" 503 Service Unavailable"),
            "{log}"
        );
        // The error log exists (uvicorn's start-up lines go there) and has no request lines.
        let err = std::fs::read_to_string(dir.join("ai_server_error.log")).unwrap();
        assert!(!err.contains("GET /health"), "{err}");
    }
}
