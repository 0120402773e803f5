//! `fractalic-stand-in backend --listen ADDR --root DIR`: a fake of the Fractalic backend
//! (`core/ui_server/server.py`, uvicorn on 8000) for tests of `serve --backend`: the routes the
//! Fractalic UI calls, with the real answer shapes, uvicorn's lowercase headers, Starlette's
//! CORS (every origin allowed, credentials on) and redirect to the slash-ended path, and
//! `POST /ws/run_command` streaming the command's output as chunks while it runs.
//!
//! Relative paths resolve against `--root` (the real backend's working directory). It prints
//! `listening on http://ADDR` on stdout when ready and one uvicorn-style line per request on
//! stderr. `GET /stand-in/echo` (not a route of the real backend) answers the request head it
//! received as JSON, so tests can see what a proxy passed on.

use crate::http::{read_request, ParseError, Request};
use crate::json::{array, object, string, value};
use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// The flags of the `backend` mode.
#[derive(Debug, PartialEq)]
pub struct Args {
    pub listen: String,
    pub root: PathBuf,
}

const USAGE: &str = "usage: fractalic-stand-in backend [--listen ADDR:PORT] [--root DIR]";

impl Args {
    /// Parses `--listen ADDR` (default 127.0.0.1:8000) and `--root DIR` (default the working
    /// directory).
    pub fn parse(args: &[String]) -> Result<Args, String> {
        let mut listen = "127.0.0.1:8000".to_string();
        let mut root = None;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value; {USAGE}"))
            };
            match a.as_str() {
                "--listen" => listen = value("--listen")?,
                "--root" => root = Some(PathBuf::from(value("--root")?)),
                other => return Err(format!("unknown argument {other:?}; {USAGE}")),
            }
        }
        let root = match root {
            Some(r) => r,
            None => std::env::current_dir().map_err(|e| format!("no working directory: {e}"))?,
        };
        let root = root
            .canonicalize()
            .ok()
            .filter(|r| r.is_dir())
            .ok_or_else(|| format!("--root {} is not a directory", root.display()))?;
        Ok(Args { listen, root })
    }
}

/// Runs the backend mode; returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let a = match Args::parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("stand-in backend: {e}");
            return 2;
        }
    };
    let listener = match TcpListener::bind(&a.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("stand-in backend: cannot listen on {}: {e}", a.listen);
            return 1;
        }
    };
    let local = listener
        .local_addr()
        .map(|l| l.to_string())
        .unwrap_or_default();
    println!("listening on http://{local}");
    let _ = std::io::stdout().flush();
    eprintln!("INFO:     Uvicorn running on http://{local} (Press CTRL+C to quit)");
    let root = Arc::new(a.root);
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let root = Arc::clone(&root);
        thread::spawn(move || connection(stream, &root));
    }
    1
}

/// An answer: status, headers (besides the standard ones) and a body, or a stream.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

enum Body {
    Bytes(Vec<u8>),
    /// `sh -c COMMAND` in DIR: its stdout, then its stderr, chunk by chunk as they come.
    Command(String, PathBuf),
}

impl Answer {
    fn json(status: u16, body: String) -> Answer {
        Answer {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Body::Bytes(body.into_bytes()),
        }
    }

    fn detail(status: u16, detail: &str) -> Answer {
        Answer::json(status, object(&[("detail", string(detail))]))
    }

    fn text(status: u16, text: Vec<u8>) -> Answer {
        Answer {
            status,
            headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            body: Body::Bytes(text),
        }
    }

    fn with(mut self, k: &str, v: &str) -> Answer {
        self.headers.push((k.into(), v.into()));
        self
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn connection(stream: TcpStream, root: &Path) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_nodelay(true);
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "-".into());
    let mut reader = BufReader::new(&stream);
    let req = match read_request(&mut reader) {
        Ok(r) => r,
        Err(ParseError::Io(_)) => return,
        Err(_) => {
            let _ = write(&stream, Answer::detail(400, "Bad Request"), false);
            return;
        }
    };
    let answer = cors(&req, respond(&req, root));
    eprintln!(
        "INFO:     {peer} - \"{} {} HTTP/1.1\" {} {}",
        req.method,
        req.target,
        answer.status,
        reason(answer.status)
    );
    let _ = write(&stream, answer, req.method == "HEAD");
}

/// Starlette's CORSMiddleware as the backend configures it (`allow_origins=["*"]`,
/// credentials, every method and header): simple answers get `*`, preflights echo the origin.
fn cors(req: &Request, a: Answer) -> Answer {
    let Some(origin) = header(req, "origin") else {
        return a;
    };
    if req.method == "OPTIONS" && header(req, "access-control-request-method").is_some() {
        let mut p = Answer::text(200, b"OK".to_vec())
            .with("vary", "Origin")
            .with(
                "access-control-allow-methods",
                "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT",
            )
            .with("access-control-max-age", "600")
            .with("access-control-allow-credentials", "true")
            .with("access-control-allow-origin", origin);
        if let Some(h) = header(req, "access-control-request-headers") {
            p = p.with("access-control-allow-headers", h);
        }
        return p;
    }
    a.with("access-control-allow-origin", "*")
        .with("access-control-allow-credentials", "true")
}

/// `%XX` and `+` decoding of one query value.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(v) => {
                    out.push(v);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn param(req: &Request, name: &str) -> Option<String> {
    let q = req.target.split_once('?')?.1;
    q.split('&')
        .filter_map(|p| p.split_once('=').or(Some((p, ""))))
        .find(|(k, _)| decode(k) == name)
        .map(|(_, v)| decode(v))
}

/// FastAPI's answer to a missing required query parameter.
fn missing(name: &str) -> Answer {
    Answer::json(
        422,
        format!(
            "{{\"detail\":[{{\"type\":\"missing\",\"loc\":[\"query\",{}],\"msg\":\"Field required\",\"input\":null}}]}}",
            string(name)
        ),
    )
}

fn resolve(root: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    };
    joined.canonicalize().unwrap_or(joined)
}

/// The backend's routes (paths end in `/` where the real ones do).
fn respond(req: &Request, root: &Path) -> Answer {
    let m = req.method.as_str();
    let get = m == "GET" || m == "HEAD";
    let slashed = [
        "/list_directory",
        "/get_file_content_disk",
        "/branches_and_commits",
        "/load_settings",
        "/save_settings",
        "/create_file",
        "/create_folder",
    ];
    if slashed.contains(&req.path.as_str()) {
        // Starlette's redirect_slashes: back to the same Host, with the slash.
        let host = header(req, "host").unwrap_or("localhost");
        let query = req
            .target
            .split_once('?')
            .map_or(String::new(), |(_, q)| format!("?{q}"));
        return Answer::text(307, Vec::new())
            .with("location", &format!("http://{host}{}/{query}", req.path));
    }
    match (req.path.as_str(), m) {
        ("/health", _) if get => Answer::json(
            200,
            object(&[
                ("status", string("healthy")),
                ("ui_server", string("running")),
                ("mcp_manager", object(&[("status", string("stopped"))])),
            ]),
        ),
        ("/list_directory/", _) if get => {
            list_directory(root, &param(req, "path").unwrap_or_default())
        }
        ("/get_file_content_disk/", _) if get => match param(req, "path") {
            None => missing("path"),
            Some(p) => match std::fs::read(resolve(root, &p)) {
                Ok(bytes) if resolve(root, &p).is_file() => {
                    Answer::text(200, bytes).with("cache-control", "no-store")
                }
                _ => Answer::detail(404, "File not found."),
            },
        },
        ("/branches_and_commits/", _) if get => match param(req, "repo_path") {
            None => missing("repo_path"),
            Some(p) if resolve(root, &p).join(".git").is_dir() => Answer::json(200, "[]".into()),
            Some(p) => Answer::detail(
                500,
                &format!(
                    "Internal Server Error: Path '{}' is not a git repository",
                    p
                ),
            ),
        },
        ("/load_settings/", _) if get => {
            let path = root.join("settings.toml");
            let settings = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.parse::<toml::Table>().ok())
                .and_then(|t| serde_json::to_value(t).ok())
                .map_or("null".to_string(), |v| value(&v));
            Answer::json(200, object(&[("settings", settings)]))
        }
        ("/save_settings/", "POST") => match serde_json::from_slice::<serde_json::Value>(&req.body)
        {
            Ok(v) => match toml::to_string(&v) {
                Ok(t) if std::fs::write(root.join("settings.toml"), &t).is_ok() => {
                    Answer::detail(200, "Settings saved successfully")
                }
                _ => Answer::detail(500, "Internal Server Error: cannot write settings.toml"),
            },
            Err(e) => Answer::detail(500, &format!("Internal Server Error: {e}")),
        },
        ("/save_file", "POST") => save_file(root, &req.body),
        ("/create_file/", "POST") | ("/create_folder/", "POST") => {
            match (param(req, "path"), param(req, "name")) {
                (Some(p), Some(n)) => {
                    let full = resolve(root, &p).join(n);
                    let made = if req.path == "/create_file/" {
                        std::fs::write(&full, b"").map(|_| "File created successfully")
                    } else {
                        std::fs::create_dir_all(&full).map(|_| "Folder created successfully")
                    };
                    match made {
                        Ok(d) => Answer::detail(200, d),
                        Err(e) => Answer::detail(500, &format!("Internal Server Error: {e}")),
                    }
                }
                (None, _) => missing("path"),
                (_, None) => missing("name"),
            }
        }
        ("/mcp/status", _) if get => Answer::json(
            200,
            object(&[("status", string("stopped")), ("servers", "{}".into())]),
        ),
        ("/ws/run_command", "POST") => {
            let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
            match (v["command"].as_str(), v["path"].as_str()) {
                (Some(c), Some(p)) if !c.is_empty() && !p.is_empty() => Answer {
                    status: 200,
                    headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
                    body: Body::Command(c.to_string(), resolve(root, p)),
                },
                _ => Answer::detail(400, "Command and path are required"),
            }
        }
        ("/stand-in/echo", _) => {
            let hs: Vec<String> = req
                .headers
                .iter()
                .map(|(k, v)| array(&[string(k), string(v)]))
                .collect();
            Answer::json(
                200,
                object(&[
                    ("method", string(&req.method)),
                    ("target", string(&req.target)),
                    ("headers", array(&hs)),
                    ("body", string(&String::from_utf8_lossy(&req.body))),
                ]),
            )
        }
        (
            "/health"
            | "/list_directory/"
            | "/get_file_content_disk/"
            | "/branches_and_commits/"
            | "/load_settings/"
            | "/save_settings/"
            | "/save_file"
            | "/create_file/"
            | "/create_folder/"
            | "/mcp/status"
            | "/ws/run_command",
            _,
        ) => Answer::detail(405, "Method Not Allowed"),
        _ => Answer::detail(404, "Not Found"),
    }
}

/// `list_directory`: `..` first (unless at `/`), then folders, then files, by lowercase name.
fn list_directory(root: &Path, p: &str) -> Answer {
    let dir = resolve(root, p);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Answer::detail(400, "Invalid directory path");
    };
    let mut items: Vec<(bool, String, String, bool)> = entries
        .filter_map(Result::ok)
        .map(|e| {
            let path = e.path();
            let is_dir = path.is_dir();
            (
                is_dir,
                e.file_name().to_string_lossy().into_owned(),
                path.display().to_string(),
                is_dir && path.join(".git").is_dir(),
            )
        })
        .collect();
    items.sort_by_key(|(d, n, _, _)| (!*d, n.to_lowercase()));
    let mut out = Vec::new();
    if let Some(parent) = dir.parent() {
        out.push(object(&[
            ("name", string("..")),
            ("path", string(&parent.display().to_string())),
            ("is_dir", "true".into()),
            ("is_git_repo", "false".into()),
        ]));
    }
    for (is_dir, name, path, git) in items {
        out.push(object(&[
            ("name", string(&name)),
            ("path", string(&path)),
            ("is_dir", is_dir.to_string()),
            ("is_git_repo", git.to_string()),
        ]));
    }
    Answer::json(200, array(&out)).with("cache-control", "no-store")
}

/// `save_file`: `{"path", "content"}`, the path inside the root.
fn save_file(root: &Path, body: &[u8]) -> Answer {
    let v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Answer::detail(500, &e.to_string()),
    };
    let (Some(p), Some(c)) = (v["path"].as_str(), v["content"].as_str()) else {
        return Answer::detail(400, "Missing required fields");
    };
    let full = resolve(root, p);
    if !full.starts_with(root) {
        return Answer::detail(403, "Access denied: Path outside base directory");
    }
    if let Some(parent) = full.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    match std::fs::write(&full, c) {
        Ok(()) => Answer::json(
            200,
            object(&[("message", string("File saved successfully"))]),
        ),
        Err(e) => Answer::detail(500, &e.to_string()),
    }
}

fn write(stream: &TcpStream, a: Answer, head_only: bool) -> std::io::Result<()> {
    let mut w = stream;
    let mut head = format!("HTTP/1.1 {} {}\r\n", a.status, reason(a.status));
    head.push_str("date: Thu, 01 Jan 2026 00:00:00 GMT\r\nserver: uvicorn\r\n");
    for (k, v) in &a.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    match a.body {
        Body::Bytes(b) => {
            head.push_str(&format!(
                "content-length: {}\r\nconnection: close\r\n\r\n",
                b.len()
            ));
            w.write_all(head.as_bytes())?;
            if !head_only {
                w.write_all(&b)?;
            }
            w.flush()
        }
        Body::Command(cmd, dir) => {
            head.push_str("transfer-encoding: chunked\r\nconnection: close\r\n\r\n");
            w.write_all(head.as_bytes())?;
            w.flush()?;
            stream_command(w, &cmd, &dir)
        }
    }
}

/// Runs `sh -c cmd` in `dir` and sends each read of its stdout (then its stderr) as one chunk
/// the moment it is read, as the real backend's StreamingResponse does.
fn stream_command(mut w: &TcpStream, cmd: &str, dir: &Path) -> std::io::Result<()> {
    let mut chunk = |data: &[u8]| -> std::io::Result<()> {
        w.write_all(format!("{:x}\r\n", data.len()).as_bytes())?;
        w.write_all(data)?;
        w.write_all(b"\r\n")?;
        w.flush()
    };
    let child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    match child {
        Ok(mut c) => {
            let mut buf = [0u8; 1024];
            let mut out = c.stdout.take();
            let mut err = c.stderr.take();
            let mut result = Ok(());
            for pipe in [
                out.as_mut().map(|o| o as &mut dyn Read),
                err.as_mut().map(|e| e as &mut dyn Read),
            ]
            .into_iter()
            .flatten()
            {
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if let Err(e) = chunk(&buf[..n]) {
                                // The client left: stop the command, as the real one is cancelled.
                                let _ = c.kill();
                                result = Err(e);
                                break;
                            }
                        }
                    }
                }
                if result.is_err() {
                    break;
                }
            }
            let _ = c.wait();
            result?;
        }
        Err(e) => chunk(format!("Failed to execute command: {e}\n").as_bytes())?,
    }
    w.write_all(b"0\r\n\r\n")?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_and_query_values() {
        let a = Args::parse(&[
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--root".into(),
            "/".into(),
        ])
        .unwrap();
        assert_eq!(
            a,
            Args {
                listen: "127.0.0.1:0".into(),
                root: PathBuf::from("/")
            }
        );
        assert!(Args::parse(&["--root".into(), "/nonexistent-x".into()]).is_err());
        assert!(Args::parse(&["--nope".into()]).is_err());
        assert!(Args::parse(&["--listen".into()]).is_err());
        assert_eq!(decode("a%2Fb+c"), "a/b c");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }

    #[test]
    fn lists_a_folder_as_the_backend_does() {
        let dir = std::env::temp_dir().join(format!("stand-in-backend-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("Zeta/.git")).unwrap();
        std::fs::create_dir_all(dir.join("alpha")).unwrap();
        std::fs::write(dir.join("b.md"), "x").unwrap();
        let a = list_directory(&dir, ".");
        let Body::Bytes(b) = a.body else { panic!() };
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        let names: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["..", "alpha", "Zeta", "b.md"]);
        assert_eq!(v[2]["is_git_repo"], true);
        assert_eq!(v[3]["is_dir"], false);
        assert_eq!(list_directory(&dir, "b.md").status, 400);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
