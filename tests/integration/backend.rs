//! `serve --backend`: the Fractalic UI's calls answered by a Fractalic backend (the stand-in's
//! `backend` mode, a real process on loopback) through `serve`, with status, reason and
//! headers intact; command output streamed chunk by chunk; `serve`'s own deploy routes and
//! preflights in front; a backend that is down; and a real deploy through the same `serve`.

use crate::support::{self, ContainerGuard};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const UI: &str = "http://localhost:3000";

/// The static stand-in binary, built once per test run exactly as `scripts/dev-env.sh up`
/// builds it for the image (same target dir and flags, so either reuses the other's build).
pub(crate) fn stand_in_bin() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        let v = support::run_with_timeout(
            Command::new(rustc).arg("-vV"),
            None,
            Duration::from_secs(30),
        )?;
        let text = String::from_utf8_lossy(&v.stdout).into_owned();
        let triple = text
            .lines()
            .find_map(|l| l.strip_prefix("host: "))
            .ok_or_else(|| format!("rustc -vV names no host: {text}"))?
            .to_string();
        let target = root.join("target/stand-in");
        let out = support::run_with_timeout(
            Command::new(env!("CARGO"))
                .args(["build", "--quiet", "--release", "-p", "fractalic-stand-in"])
                .args(["--target", &triple])
                .env("RUSTFLAGS", "-C target-feature=+crt-static")
                .env("CARGO_TARGET_DIR", &target)
                .current_dir(root),
            None,
            Duration::from_secs(900),
        )?;
        if !out.status.success() {
            return Err(format!(
                "cargo build of the stand-in failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(target.join(&triple).join("release/fractalic-stand-in"))
    });
    r.clone().unwrap_or_else(|e| panic!("{e}"))
}

/// A process that prints `listening on http://ADDR` first; killed on drop.
pub(crate) struct Listening {
    child: Child,
    pub url: String,
    stderr: tempfile::NamedTempFile,
}

impl Listening {
    fn spawn(mut cmd: Command) -> Result<Listening, String> {
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        match line.trim().strip_prefix("listening on ") {
            Some(url) => Ok(Listening {
                url: url.to_string(),
                child,
                stderr,
            }),
            None => {
                let status = child.wait().unwrap();
                Err(format!(
                    "{status}: {line}{}",
                    std::fs::read_to_string(stderr.path()).unwrap_or_default()
                ))
            }
        }
    }

    /// The fake Fractalic backend serving `root`.
    pub(crate) fn backend(root: &Path) -> Listening {
        let mut cmd = Command::new(stand_in_bin());
        cmd.args(["backend", "--listen", "127.0.0.1:0", "--root"])
            .arg(root);
        Self::spawn(cmd).expect("the stand-in backend starts")
    }

    /// `serve --listen 127.0.0.1:0 ARGS` (no token in its environment).
    pub(crate) fn serve(docker: &Path, args: &[&str]) -> Result<Listening, String> {
        let mut cmd = crate::managed::command(docker, &["serve"]);
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.args(args).env_remove(crate::serve::TOKEN_ENV);
        Self::spawn(cmd)
    }

    pub(crate) fn addr(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }

    /// What it wrote to stderr so far.
    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One raw HTTP answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    /// As sent (chunk framing included).
    pub raw_body: Vec<u8>,
}

impl Reply {
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.all(name).first().copied()
    }

    /// The body, de-chunked when it was chunked.
    pub(crate) fn body(&self) -> String {
        let b = if self
            .header("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        {
            dechunk(&self.raw_body)
        } else {
            self.raw_body.clone()
        };
        String::from_utf8_lossy(&b).into_owned()
    }

    pub(crate) fn json(&self) -> Value {
        let b = self.body();
        serde_json::from_str(&b).unwrap_or_else(|e| panic!("not JSON ({e}): {b}"))
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let i = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let n = usize::from_str_radix(
            String::from_utf8_lossy(&b[..i])
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .expect("hex chunk size");
        b = &b[i + 2..];
        if n == 0 {
            assert!(b.ends_with(b"\r\n"), "no end of the chunked body");
            return out;
        }
        out.extend_from_slice(&b[..n]);
        assert_eq!(&b[n..n + 2], b"\r\n");
        b = &b[n + 2..];
    }
}

/// Splits an answer's head from its body.
fn parse(raw: &[u8]) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status = parts.next().unwrap().parse().unwrap();
    let reason = parts.next().unwrap_or("").to_string();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.to_string(), v.trim().to_string())
        })
        .collect();
    Reply {
        status,
        reason,
        headers,
        raw_body: raw[end + 4..].to_vec(),
    }
}

/// Sends `request` as is and reads the answer until the server closes.
pub(crate) fn exchange(addr: &str, request: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(request).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse(&raw)
}

/// A request with `Host` (the address) and `headers` (`Name: value` lines).
pub(crate) fn request(
    method: &str,
    addr: &str,
    target: &str,
    headers: &[&str],
    body: &str,
) -> Vec<u8> {
    let mut r = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    if !body.is_empty() {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    r.push_str(body);
    r.into_bytes()
}

/// A folder for the backend: `scripts/hello` with a script, a git repo, settings.
fn tree() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let hello = d.path().join("scripts/hello");
    std::fs::create_dir_all(hello.join(".git")).unwrap();
    std::fs::write(
        hello.join("hello.md"),
        "# Demo task {id=demo-task}\n\n@shell\nprompt: echo hello from the backend test\nuse-header: \"# Out {id=out}\"\n\n@return\nblock: out\n",
    )
    .unwrap();
    std::fs::write(
        hello.join("settings.toml"),
        "defaultProvider = \"demo\"\n\n[settings.demo]\nmodel = \"demo-model\"\napiKey = \"sk-backend-test-not-real\"\n",
    )
    .unwrap();
    std::fs::write(
        d.path().join("settings.toml"),
        "defaultProvider = \"demo\"\n",
    )
    .unwrap();
    d
}

/// A docker that must never run (the forwarding needs none).
fn no_docker(dir: &Path) -> PathBuf {
    support::untouchable_docker(dir).0
}

#[test]
fn the_uis_calls_reach_the_backend_through_serve_unchanged() {
    let root = tree();
    let be = Listening::backend(root.path());
    let scratch = tempfile::tempdir().unwrap();
    let docker = no_docker(scratch.path());
    let r = root.path().to_str().unwrap();
    let s = Listening::serve(
        &docker,
        &["--backend", &be.url, "--cors-origin", UI, "--root", r],
    )
    .unwrap();
    let a = s.addr();
    let origin = format!("Origin: {UI}");
    let get = |target: &str| exchange(&a, &request("GET", &a, target, &[&origin], ""));

    // The file tree: first `.`, then the configured path.
    let dot = get("/list_directory/?path=.");
    assert_eq!((dot.status, dot.reason.as_str()), (200, "OK"), "{dot:?}");
    let names: Vec<String> = dot
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["..", "scripts", "settings.toml"]);
    // The backend's own CORS and cache headers, once each, none of ours added.
    assert_eq!(dot.all("access-control-allow-origin"), ["*"], "{dot:?}");
    assert_eq!(dot.all("access-control-allow-credentials"), ["true"]);
    assert_eq!(dot.all("cache-control"), ["no-store"]);
    assert!(dot.all("vary").is_empty(), "{dot:?}");
    assert_eq!(dot.all("server"), ["uvicorn"]);
    assert_eq!(dot.all("connection"), ["close"]);
    let hello = root.path().join("scripts/hello");
    let listed = get(&format!("/list_directory/?path={}", hello.display()));
    let v = listed.json();
    assert_eq!(v[1]["name"], ".git", "{v}");
    assert_eq!(v[2]["name"], "hello.md", "{v}");
    assert_eq!(v[2]["path"], hello.join("hello.md").display().to_string());

    let file = get("/get_file_content_disk/?path=scripts%2Fhello%2Fhello.md");
    assert_eq!(file.status, 200);
    assert_eq!(
        file.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(
        file.body(),
        std::fs::read_to_string(hello.join("hello.md")).unwrap()
    );
    let missing = get("/get_file_content_disk/?path=nope.md");
    assert_eq!(
        (missing.status, missing.reason.as_str()),
        (404, "Not Found")
    );
    assert_eq!(missing.json()["detail"], "File not found.");

    let branches = get(&format!(
        "/branches_and_commits/?repo_path={}",
        hello.display()
    ));
    assert_eq!((branches.status, branches.body().as_str()), (200, "[]"));
    let no_repo = get("/branches_and_commits/?repo_path=.");
    assert_eq!(
        (no_repo.status, no_repo.reason.as_str()),
        (500, "Internal Server Error")
    );

    // Settings: the UI asks without the slash; the backend's redirect keeps pointing at serve
    // (its Host was passed on).
    let redirect = get("/load_settings");
    assert_eq!(
        (redirect.status, redirect.reason.as_str()),
        (307, "Temporary Redirect")
    );
    assert_eq!(
        redirect.header("location"),
        Some(format!("http://{a}/load_settings/").as_str())
    );
    let settings = get("/load_settings/");
    assert_eq!(settings.json()["settings"]["defaultProvider"], "demo");

    // A file edit as the UI sends it (JSON, Content-Length), and the same body chunked.
    let edit = json!({"path": "scripts/hello/new.md", "content": "# edited\n"}).to_string();
    let saved = exchange(
        &a,
        &request(
            "POST",
            &a,
            "/save_file?path=scripts%2Fhello%2Fnew.md",
            &[&origin, "Content-Type: application/json"],
            &edit,
        ),
    );
    assert_eq!(saved.status, 200, "{saved:?}");
    assert_eq!(saved.json()["message"], "File saved successfully");
    assert_eq!(
        std::fs::read_to_string(hello.join("new.md")).unwrap(),
        "# edited\n"
    );
    let chunked_body =
        json!({"path": "scripts/hello/chunked.md", "content": "in two chunks"}).to_string();
    let (one, two) = chunked_body.split_at(10);
    let mut raw = format!(
        "POST /save_file HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    raw.push_str(&format!(
        "{:x}\r\n{one}\r\n{:x};ext=1\r\n{two}\r\n0\r\n\r\n",
        one.len(),
        two.len()
    ));
    let saved = exchange(&a, raw.as_bytes());
    assert_eq!(saved.status, 200, "{saved:?}");
    assert_eq!(
        std::fs::read_to_string(hello.join("chunked.md")).unwrap(),
        "in two chunks"
    );

    // A preflight for a backend route is the backend's (Starlette's answer)...
    let pre = exchange(
        &a,
        &request(
            "OPTIONS",
            &a,
            "/save_settings/",
            &[
                &origin,
                "Access-Control-Request-Method: POST",
                "Access-Control-Request-Headers: content-type",
            ],
            "",
        ),
    );
    assert_eq!((pre.status, pre.reason.as_str()), (200, "OK"), "{pre:?}");
    assert_eq!(pre.all("access-control-allow-origin"), [UI]);
    assert_eq!(
        pre.header("access-control-allow-methods"),
        Some("DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT")
    );
    // ...the deploy route's is serve's.
    let ours = exchange(
        &a,
        &request(
            "OPTIONS",
            &a,
            "/api/deploy/docker-registry/stream",
            &[
                &origin,
                "Access-Control-Request-Method: POST",
                "Access-Control-Request-Headers: content-type",
            ],
            "",
        ),
    );
    assert_eq!(
        (ours.status, ours.reason.as_str()),
        (204, "No Content"),
        "{ours:?}"
    );
    assert_eq!(ours.all("access-control-allow-origin"), [UI]);
    assert_eq!(
        ours.header("access-control-allow-methods"),
        Some("GET, POST, DELETE, OPTIONS")
    );
    assert!(ours.header("via").is_none(), "{ours:?}");

    // What the backend saw: the client's head without hop-by-hop headers, plus forwarding ones.
    let echo = exchange(
        &a,
        &request(
            "GET",
            &a,
            "/stand-in/echo?x=%2F1",
            &[
                "X-Forwarded-For: 203.0.113.7",
                "Connection: X-Hop",
                "X-Hop: 1",
                "Keep-Alive: 5",
                "X-Kept: yes",
            ],
            "",
        ),
    );
    let v = echo.json();
    assert_eq!(v["target"], "/stand-in/echo?x=%2F1");
    let seen: Vec<(String, String)> = v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_ascii_lowercase(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let h = |n: &str| {
        seen.iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(h("host"), [a.as_str()]);
    assert_eq!(h("x-kept"), ["yes"]);
    assert_eq!(h("x-forwarded-for"), ["203.0.113.7, 127.0.0.1"]);
    assert_eq!(h("x-forwarded-proto"), ["http"]);
    assert_eq!(h("x-forwarded-host"), [a.as_str()]);
    assert_eq!(h("via"), ["1.1 fractalic-publisher"]);
    assert_eq!(h("connection"), ["close"]);
    assert!(
        h("x-hop").is_empty() && h("keep-alive").is_empty(),
        "{seen:?}"
    );

    // Unknown to the backend: its own 404; serve's routes stay serve's.
    let nope = get("/no-such-route");
    assert_eq!(
        (nope.status, nope.json()["detail"].as_str()),
        (404, Some("Not Found"))
    );
    let health = get("/health");
    assert_eq!(
        health.json()["version"],
        env!("CARGO_PKG_VERSION"),
        "{health:?}"
    );
    let doc = get("/openapi.json");
    assert_eq!(doc.json()["openapi"], "3.1.0");

    // A page of another origin is refused by serve, although the backend would allow it.
    let evil = exchange(
        &a,
        &request(
            "GET",
            &a,
            "/get_file_content_disk/?path=settings.toml",
            &["Origin: http://evil.example"],
            "",
        ),
    );
    assert_eq!(evil.status, 403, "{evil:?}");
    assert!(
        evil.body().contains("--cors-origin http://evil.example"),
        "{evil:?}"
    );
    // So is a name that is not loopback (DNS rebinding) on a loopback listener.
    let rebound = exchange(
        &a,
        &request("GET", "evil.example:80", "/list_directory/?path=.", &[], ""),
    );
    assert_eq!(rebound.status, 403, "{rebound:?}");
    assert!(
        !be.stderr().contains("evil"),
        "refused requests reached the backend"
    );
}

#[test]
fn command_output_reaches_the_client_while_the_command_runs() {
    let root = tree();
    let be = Listening::backend(root.path());
    let scratch = tempfile::tempdir().unwrap();
    let docker = no_docker(scratch.path());
    let s = Listening::serve(&docker, &["--backend", &be.url, "--cors-origin", UI]).unwrap();
    let a = s.addr();
    let gate = root.path().join("gate");
    // The command prints, then waits (bounded) for the test to open the gate, then prints again.
    let body = json!({
        "command": "echo first-chunk; i=0; while [ ! -e gate ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done; echo last-chunk",
        "path": ".",
    })
    .to_string();
    let mut c = TcpStream::connect(&a).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(&request(
        "POST",
        &a,
        "/ws/run_command",
        &[&format!("Origin: {UI}"), "Content-Type: application/json"],
        &body,
    ))
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&got).contains("first-chunk") {
        assert!(
            Instant::now() < deadline,
            "no first chunk: {:?}",
            String::from_utf8_lossy(&got)
        );
        let n = c.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "closed before the first chunk: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    // The backend has not sent its last chunk: it cannot until the gate opens.
    assert!(!gate.exists());
    assert!(!String::from_utf8_lossy(&got).contains("last-chunk"));
    std::fs::write(&gate, "").unwrap();
    c.read_to_end(&mut got).unwrap();
    let reply = parse(&got);
    assert_eq!((reply.status, reply.reason.as_str()), (200, "OK"));
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(reply.header("transfer-encoding"), Some("chunked"));
    assert_eq!(reply.body(), "first-chunk\nlast-chunk\n");
}

#[test]
fn a_backend_that_is_down_is_a_502_naming_it() {
    // A port nobody listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let scratch = tempfile::tempdir().unwrap();
    let docker = no_docker(scratch.path());
    let s = Listening::serve(&docker, &["--backend", &url, "--cors-origin", UI]).unwrap();
    let a = s.addr();
    let r = exchange(
        &a,
        &request(
            "POST",
            &a,
            "/ws/run_command",
            &[&format!("Origin: {UI}")],
            "{\"command\":\"true\",\"path\":\".\"}",
        ),
    );
    assert_eq!(r.status, 502, "{r:?}");
    assert!(
        r.reason.contains("cannot be reached"),
        "the reason phrase says why: {r:?}"
    );
    let body = r.body();
    assert_eq!(body.lines().count(), 1, "{body}");
    assert!(
        r.json()["detail"].as_str().unwrap().contains(&url),
        "{body}"
    );
    // Ours, so with our CORS for the UI (it can show the reason).
    assert_eq!(r.all("access-control-allow-origin"), [UI]);
    assert_eq!(
        r.all("server"),
        [concat!("fractalic-publisher/", env!("CARGO_PKG_VERSION"))]
    );
    // serve's own routes do not need the backend.
    let h = exchange(&a, &request("GET", &a, "/health", &[], ""));
    assert_eq!(h.status, 200);
}

#[test]
fn bad_backend_urls_are_bad_input() {
    let scratch = tempfile::tempdir().unwrap();
    let docker = no_docker(scratch.path());
    for bad in [
        "https://127.0.0.1:8001",
        "127.0.0.1:8001",
        "http://127.0.0.1:8001/x",
    ] {
        let o = crate::managed::command(
            &docker,
            &["serve", "--listen", "127.0.0.1:0", "--backend", bad],
        )
        .output()
        .unwrap();
        crate::managed::assert_code(&o, 2);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(bad) && err.contains("http://HOST:PORT"),
            "{err}"
        );
        assert!(o.stdout.is_empty());
    }
}

/// Reads an SSE deploy stream as the UI does; returns the answer head and the events.
fn ui_deploy(addr: &str, body: &Value) -> (Reply, Vec<Value>) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(180))).unwrap();
    c.write_all(&request(
        "POST",
        addr,
        "/api/deploy/docker-registry/stream",
        &[
            &format!("Origin: {UI}"),
            "Content-Type: application/json",
            "Accept: text/event-stream",
        ],
        &body.to_string(),
    ))
    .unwrap();
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).unwrap();
    let reply = parse(&raw);
    let events = reply
        .body()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .collect();
    (reply, events)
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn the_ui_deploys_through_the_same_serve_that_forwards_its_file_tree() {
    let Some(docker) = support::docker() else {
        return;
    };
    support::pull_stand_in(&docker);
    let root = tree();
    let be = Listening::backend(root.path());
    let r = root.path().to_str().unwrap();
    let s = Listening::serve(
        &docker,
        &["--backend", &be.url, "--cors-origin", UI, "--root", r],
    )
    .unwrap();
    let a = s.addr();
    // The UI lists its folder, opens the script, then deploys it.
    let listed = exchange(
        &a,
        &request(
            "GET",
            &a,
            "/list_directory/?path=scripts",
            &[&format!("Origin: {UI}")],
            "",
        ),
    );
    assert_eq!(listed.json()[1]["name"], "hello");
    let name = support::unique_name("fp-backend");
    let _g = ContainerGuard::new(&name);
    let (reply, events) = ui_deploy(
        &a,
        &crate::serve::deploy_body("scripts/hello", &name, json!({})),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    assert_eq!(reply.all("access-control-allow-origin"), [UI]);
    let last = events.last().expect("events");
    assert_eq!(last["stage"], "completed", "{events:?}");
    let url = last["result"]["endpoint_url"].as_str().unwrap();
    let port = last["result"]["metadata"]["ai_server"]["port"]
        .as_u64()
        .unwrap();
    assert_eq!(url, format!("http://localhost:{port}"));
    let health = support::wait_http(
        &format!("http://127.0.0.1:{port}/health"),
        Duration::from_secs(10),
    );
    assert_eq!(health.map(|h| h.0), Some(200));
    // The deploy never went to the backend; serve logged it with the bytes it streamed.
    assert!(!be.stderr().contains("/api/deploy"), "{}", be.stderr());
    let line = logged(&s, "\"POST /api/deploy/docker-registry/stream\" 200 ", 1);
    assert_eq!(line.len(), 1, "{}", s.stderr());
    assert!(
        line[0].contains(&format!(" 200 {} ", reply.raw_body.len())),
        "{line:?} vs {} bytes",
        reply.raw_body.len()
    );
    assert_eq!(
        reply.all("server"),
        [concat!("fractalic-publisher/", env!("CARGO_PKG_VERSION"))]
    );
}

#[test]
fn auth_none_opts_out_of_the_token_off_loopback_loudly() {
    let scratch = tempfile::tempdir().unwrap();
    let docker = no_docker(scratch.path());
    let s = Listening::serve(&docker, &["--listen", "0.0.0.0:0", "--auth", "none"]).unwrap();
    let port = s.addr().rsplit_once(':').unwrap().1.to_string();
    let err = s.stderr();
    let warning: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("WARNING: --auth none"))
        .collect();
    assert_eq!(warning.len(), 1, "{err}");
    assert!(
        warning[0].contains(&format!("-p 127.0.0.1:{port}:{port}")),
        "{err}"
    );
    let a = format!("127.0.0.1:{port}");
    let plugins = exchange(&a, &request("GET", &a, "/api/plugins", &[], ""));
    assert_eq!(plugins.status, 200, "no token needed: {plugins:?}");
    // Without a token, only loopback names are answered (a rebinding page is not).
    let rebound = exchange(&a, &request("GET", "evil.example", "/api/plugins", &[], ""));
    assert_eq!(rebound.status, 403, "{rebound:?}");
    // `--auth token` is the default rule: off loopback without a token is refused.
    for args in [
        &["--listen", "0.0.0.0:0"][..],
        &["--listen", "0.0.0.0:0", "--auth", "token"],
    ] {
        let o = crate::managed::command(&docker, &["serve"])
            .args(args)
            .env_remove(crate::serve::TOKEN_ENV)
            .output()
            .unwrap();
        crate::managed::assert_code(&o, 2);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(
            e.contains("no token is set") && e.contains("--auth none"),
            "{e}"
        );
        assert!(o.stdout.is_empty());
    }
}

#[test]
fn auth_none_with_a_token_is_bad_input() {
    let scratch = tempfile::tempdir().unwrap();
    let docker = no_docker(scratch.path());
    let token = scratch.path().join("token");
    std::fs::write(&token, "0123456789abcdef0123").unwrap();
    let t = token.to_str().unwrap();
    let o = crate::managed::command(
        &docker,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--auth",
            "none",
            "--token-file",
            t,
        ],
    )
    .env_remove(crate::serve::TOKEN_ENV)
    .output()
    .unwrap();
    crate::managed::assert_code(&o, 2);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("--auth none and --token-file contradict"), "{e}");
    let o = crate::managed::command(
        &docker,
        &["serve", "--listen", "127.0.0.1:0", "--auth", "none"],
    )
    .env(crate::serve::TOKEN_ENV, "0123456789abcdef0123")
    .output()
    .unwrap();
    crate::managed::assert_code(&o, 2);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains(crate::serve::TOKEN_ENV) && !e.contains("0123456789abcdef"),
        "{e}"
    );
    let o = crate::managed::command(&docker, &["serve", "--auth", "maybe"])
        .output()
        .unwrap();
    crate::managed::assert_code(&o, 2);
}

/// Waits (bounded) until `serve` has logged `n` lines containing `needle`; returns them.
fn logged(s: &Listening, needle: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<String> = s
            .stderr()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serve_names_itself_and_logs_one_line_per_request() {
    let root = tree();
    let be = Listening::backend(root.path());
    let scratch = tempfile::tempdir().unwrap();
    let docker = no_docker(scratch.path());
    let s = Listening::serve(&docker, &["--backend", &be.url, "--cors-origin", UI]).unwrap();
    let a = s.addr();
    let server = concat!("fractalic-publisher/", env!("CARGO_PKG_VERSION"));
    let secret = "Authorization: Bearer sekrit-token-0123456789";

    let health = exchange(&a, &request("GET", &a, "/health", &[secret], ""));
    assert_eq!(health.all("server"), [server]);
    let pre = exchange(
        &a,
        &request(
            "OPTIONS",
            &a,
            "/api/deploy/docker-registry/stream",
            &[
                &format!("Origin: {UI}"),
                "Access-Control-Request-Method: POST",
            ],
            "",
        ),
    );
    assert_eq!((pre.status, pre.all("server")), (204, vec![server]));
    let nope = exchange(
        &a,
        &request("GET", &a, "/api/nope?token=sekrit-query", &[secret], ""),
    );
    assert_eq!((nope.status, nope.all("server")), (404, vec![server]));
    // Forwarded answers are the backend's (its Server), marked with Via.
    let listed = exchange(
        &a,
        &request(
            "GET",
            &a,
            "/list_directory/?path=sekrit-path",
            &[secret],
            "",
        ),
    );
    assert_eq!(listed.status, 400);
    assert_eq!(listed.all("server"), ["uvicorn"]);
    assert_eq!(listed.all("via"), ["1.1 fractalic-publisher"]);
    let ran = exchange(
        &a,
        &request(
            "POST",
            &a,
            "/ws/run_command",
            &["Content-Type: application/json"],
            "{\"command\":\"echo hi\",\"path\":\".\"}",
        ),
    );
    assert_eq!(ran.body(), "hi\n");

    for (needle, status, bytes, forwarded) in [
        ("\"GET /health\"", 200, health.raw_body.len(), false),
        (
            "\"OPTIONS /api/deploy/docker-registry/stream\"",
            204,
            0,
            false,
        ),
        ("\"GET /api/nope\"", 404, nope.raw_body.len(), false),
        ("\"GET /list_directory/\"", 400, listed.raw_body.len(), true),
        ("\"POST /ws/run_command\"", 200, ran.raw_body.len(), true),
    ] {
        let lines = logged(&s, needle, 1);
        assert_eq!(lines.len(), 1, "{needle}: {}", s.stderr());
        let l = &lines[0];
        let after = l.split_once(needle).unwrap().1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        assert_eq!(fields[0], status.to_string(), "{l}");
        assert_eq!(fields[1], bytes.to_string(), "{l}");
        assert!(fields[2].ends_with("ms"), "{l}");
        assert_eq!(l.ends_with("-> backend"), forwarded, "{l}");
        assert!(l.contains(" 127.0.0.1 "), "{l}");
    }
    let all = s.stderr();
    assert!(!all.contains("sekrit"), "a secret reached the log: {all}");
}

#[test]
fn a_request_body_reaches_the_backend_while_it_is_being_sent() {
    // A backend of the test's own: it says when the body's first half arrived.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let (first, first_rx) = std::sync::mpsc::channel();
    let (all, all_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let mut told = false;
        while !String::from_utf8_lossy(&got).contains("part-two") {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "closed early");
            got.extend_from_slice(&buf[..n]);
            if !told && String::from_utf8_lossy(&got).contains("part-one") {
                first.send(()).unwrap();
                told = true;
            }
        }
        c.write_all(b"HTTP/1.1 201 Made It\r\nContent-Length: 2\r\nX-Backend: own\r\n\r\nok")
            .unwrap();
        all.send(String::from_utf8_lossy(&got).into_owned())
            .unwrap();
    });
    let scratch = tempfile::tempdir().unwrap();
    let docker = no_docker(scratch.path());
    let s = Listening::serve(&docker, &["--backend", &url]).unwrap();
    let a = s.addr();
    let mut c = TcpStream::connect(&a).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(
        format!("POST /upload HTTP/1.1\r\nHost: {a}\r\nContent-Length: 16\r\n\r\npart-one")
            .as_bytes(),
    )
    .unwrap();
    // The backend has the first half before the client sends the second.
    first_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the first half reached the backend");
    c.write_all(b"part-two").unwrap();
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).unwrap();
    let r = parse(&raw);
    assert_eq!(
        (r.status, r.reason.as_str(), r.body().as_str()),
        (201, "Made It", "ok")
    );
    assert_eq!(r.header("x-backend"), Some("own"));
    let seen = all_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(seen.starts_with("POST /upload HTTP/1.1\r\n"), "{seen}");
    assert!(
        seen.contains("Content-Length: 16\r\n") && seen.ends_with("\r\n\r\npart-onepart-two"),
        "{seen}"
    );
}
