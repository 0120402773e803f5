//! The stand-in image, pulled from the local registry and run on the real engine, answers as the
//! Fractalic production image's contract (shared/fractalic-image.md) says, failure switches included.

use crate::support::{self, ContainerGuard, Entry};
use serde_json::Value;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

const READY: Duration = Duration::from_secs(30);

/// A running stand-in container with 8001 published on 127.0.0.1.
struct StandIn {
    guard: ContainerGuard,
    docker: PathBuf,
    base: String,
}

impl StandIn {
    /// Creates the container with `env` and extra `docker create` flags, copies `files` in before
    /// it starts, starts it and returns without waiting for readiness.
    fn start(docker: &Path, prefix: &str, env: &[&str], flags: &[&str], files: &[Entry]) -> Self {
        let image = support::pull_stand_in(docker);
        let name = support::unique_name(prefix);
        let guard = ContainerGuard::new(&name);
        let mut args = vec!["create", "--name", &name, "-p", "127.0.0.1::8001"];
        for e in env {
            args.extend(["-e", e]);
        }
        args.extend_from_slice(flags);
        args.push(&image);
        support::docker_ok(docker, &args);
        if !files.is_empty() {
            support::copy_into(docker, &name, files);
        }
        support::docker_ok(docker, &["start", &name]);
        let base = format!("http://{}", support::published(docker, &name, 8001));
        StandIn {
            guard,
            docker: docker.to_path_buf(),
            base,
        }
    }

    /// Like [`StandIn::start`], then waits for `/health` to answer 200.
    fn ready(docker: &Path, prefix: &str, env: &[&str], files: &[Entry]) -> Self {
        let s = Self::start(docker, prefix, env, &[], files);
        let answer = support::wait_http(&s.url("/health"), READY);
        assert_eq!(answer.as_ref().map(|a| a.0), Some(200), "{answer:?}");
        s
    }

    fn name(&self) -> &str {
        self.guard.name()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn exec(&self, args: &[&str]) -> Output {
        support::exec(&self.docker, self.name(), args)
    }

    /// `curl` inside the container: (exit code, stdout, stderr).
    fn curl(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let mut argv = vec!["curl"];
        argv.extend_from_slice(args);
        let o = self.exec(&argv);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// POSTs a raw body to /execute: (status, raw body).
    fn execute_raw(&self, body: &str) -> (u16, String) {
        let r = ureq::post(&self.url("/execute"))
            .set("Content-Type", "application/json")
            .send_string(body);
        match r {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
            Err(e) => panic!("POST /execute: {e}"),
        }
    }

    /// POSTs `{"filename": filename}` and expects HTTP 200: the raw JSON text.
    fn execute(&self, filename: &str) -> String {
        let (status, body) =
            self.execute_raw(&serde_json::json!({ "filename": filename }).to_string());
        assert_eq!(status, 200, "{body}");
        body
    }

    fn docker_logs(&self) -> String {
        let o = support::run_docker(&self.docker, &["logs", self.name()]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }

    fn health_status(&self) -> String {
        support::docker_ok(
            &self.docker,
            &[
                "inspect",
                "--format",
                "{{.State.Health.Status}}",
                self.name(),
            ],
        )
    }
}

/// The real server's failure object, byte for byte.
fn failure(error: &str) -> String {
    format!(
        r#"{{"success":false,"error":{},"output":"","explicit_return":false,"return_content":null,"branch_name":null,"ctx_file":null}}"#,
        Value::from(error)
    )
}

/// Asserts a success answer: field order as the real server, `returned` as return_content.
fn assert_success(raw: &str, returned: &str) {
    let v: Value = serde_json::from_str(raw).unwrap();
    assert_eq!(v["success"], true, "{raw}");
    assert_eq!(v["explicit_return"], true, "{raw}");
    assert_eq!(v["return_content"], returned, "{raw}");
    assert!(
        v["branch_name"].as_str().is_some_and(|b| !b.is_empty()),
        "{raw}"
    );
    assert_eq!(v["ctx_file"], Value::Null, "{raw}");
    assert!(v["output"].is_string(), "{raw}");
    let keys = [
        "success",
        "explicit_return",
        "return_content",
        "branch_name",
        "ctx_file",
        "output",
    ];
    let positions: Vec<usize> = keys
        .iter()
        .map(|k| raw.find(&format!("\"{k}\":")).unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "field order: {raw}"
    );
    assert_eq!(v.as_object().unwrap().len(), keys.len(), "{raw}");
}

fn refused(addr: &str) -> bool {
    let addr: SocketAddr = addr.parse().unwrap();
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err()
}

const SCRIPT: &str = "# Demo task {id=demo-task}\n\n@shell\nprompt: echo hi; uname -s\nuse-header: \"# Out {id=out}\"\n\n@return\nblock: out\n";
/// What Fractalic returns for [`SCRIPT`]: the block its `@shell` made (run in the container).
const RETURNED: &str = "# Out {id=out}\nhi\nLinux\n\n";
const USABLE: &str =
    "defaultProvider = \"openai\"\n[settings.openai]\nmodel = \"gpt-4o\"\napiKey = \"sk-test\"\n";

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn image_is_pulled_from_the_registry_and_laid_out_like_the_real_one() {
    let Some(docker) = support::docker() else {
        return;
    };
    let image = support::pull_stand_in(&docker);
    assert!(image.starts_with("127.0.0.1:5000/"), "{image}");
    let config: Value = serde_json::from_str(&support::docker_ok(
        &docker,
        &["image", "inspect", "--format", "{{json .Config}}", &image],
    ))
    .unwrap();
    assert_eq!(config["User"], "appuser");
    assert_eq!(config["WorkingDir"], "/fractalic");
    assert!(config["ExposedPorts"].get("8001/tcp").is_some(), "{config}");
    assert!(config["Env"]
        .as_array()
        .unwrap()
        .contains(&Value::from("PYTHONPATH=/fractalic")));
    let hc = &config["Healthcheck"];
    assert!(
        hc["Test"]
            .to_string()
            .contains("curl -f http://localhost:8001/health"),
        "{hc}"
    );
    assert_eq!(hc["Interval"], 30_000_000_000u64);
    assert_eq!(hc["StartPeriod"], 60_000_000_000u64);

    let s = StandIn::ready(&docker, "fp-si-layout", &[], &[]);
    let id = s.exec(&["id"]);
    assert_eq!(
        String::from_utf8_lossy(&id.stdout).trim(),
        "uid=1000(appuser) gid=1000(appuser) groups=1000(appuser)"
    );
    let stat = s.exec(&[
        "stat",
        "-c",
        "%n %U:%G %a",
        "/fractalic",
        "/fractalic/logs",
        "/payload",
        "/tmp",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&stat.stdout),
        "/fractalic appuser:appuser 755\n/fractalic/logs appuser:appuser 755\n/payload appuser:appuser 755\n/tmp root:root 1777\n"
    );
    let pwd = s.exec(&["sh", "-c", "pwd; command -v curl"]);
    assert_eq!(
        String::from_utf8_lossy(&pwd.stdout),
        "/fractalic\n/usr/bin/curl\n"
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn health_docs_and_unknown_paths() {
    let Some(docker) = support::docker() else {
        return;
    };
    let s = StandIn::ready(&docker, "fp-si-http", &[], &[]);
    let r = ureq::get(&s.url("/health")).call().unwrap();
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.into_string().unwrap(), r#"{"status":"healthy"}"#);

    let r = ureq::head(&s.url("/health")).call().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("content-length"), Some("20"));

    let r = ureq::get(&s.url("/docs")).call().unwrap();
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let html = r.into_string().unwrap();
    assert!(
        html.starts_with("<!DOCTYPE html>") && html.contains("swagger-ui"),
        "{html}"
    );

    match ureq::get(&s.url("/nope")).call() {
        Err(ureq::Error::Status(404, r)) => {
            assert_eq!(r.into_string().unwrap(), r#"{"detail":"Not Found"}"#)
        }
        other => panic!("expected 404, got {other:?}"),
    }
    match ureq::get(&s.url("/execute")).call() {
        Err(ureq::Error::Status(405, _)) => {}
        other => panic!("expected 405, got {other:?}"),
    }
    // Concurrent requests are served (thread per connection).
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let url = s.url("/health");
            std::thread::spawn(move || ureq::get(&url).call().map(|r| r.status()).ok())
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), Some(200));
    }
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn execute_answers_like_the_real_server() {
    let Some(docker) = support::docker() else {
        return;
    };
    let ro_script = SCRIPT.as_bytes();
    let files = [
        Entry::Dir("/payload/demo", 0o755),
        Entry::Dir("/payload/bare", 0o755),
        Entry::Dir("/payload/onlyprovider", 0o755),
        Entry::Dir("/payload/nokey", 0o755),
        Entry::File("/payload/demo/main.md", SCRIPT.as_bytes(), 0o644),
        Entry::File("/payload/demo/settings.toml", USABLE.as_bytes(), 0o600),
        Entry::File("/payload/bare/main.md", SCRIPT.as_bytes(), 0o644),
        Entry::File("/payload/onlyprovider/main.md", SCRIPT.as_bytes(), 0o644),
        Entry::File(
            "/payload/onlyprovider/settings.toml",
            b"defaultProvider = \"openai\"\n",
            0o600,
        ),
        Entry::File("/payload/nokey/main.md", SCRIPT.as_bytes(), 0o644),
        Entry::File(
            "/payload/nokey/settings.toml",
            b"defaultProvider = \"openai\"\n[settings.openai]\nmodel = \"gpt-4o\"\n",
            0o600,
        ),
        Entry::Dir("/payload/ro", 0o555),
        Entry::File("/payload/ro/main.md", ro_script, 0o444),
        Entry::File("/payload/ro/settings.toml", USABLE.as_bytes(), 0o444),
        // Only /settings.toml: other services read it, the AI server does not.
        Entry::File("/settings.toml", USABLE.as_bytes(), 0o600),
    ];
    let s = StandIn::ready(&docker, "fp-si-exec", &[], &files);

    assert_eq!(
        s.execute("/payload/demo/nope.md"),
        failure("File not found: /payload/demo/nope.md")
    );
    assert_eq!(
        s.execute("/payload/bare/main.md"),
        failure("No model specified and no defaultProvider in settings.toml")
    );
    assert_eq!(
        s.execute("/payload/onlyprovider/main.md"),
        failure("model \"openai\" not found under [settings]")
    );
    assert_eq!(
        s.execute("/payload/nokey/main.md"),
        failure("No API key found for provider openai")
    );

    // Settings in the script's folder: success, and a .ctx file next to the script.
    let (status, raw) =
        s.execute_raw(r#"{"filename":"/payload/demo/main.md","parameter_text":"be brief"}"#);
    assert_eq!(status, 200);
    assert_success(&raw, RETURNED);
    let ctx = s.exec(&["cat", "/payload/demo/main.ctx"]);
    let ctx = String::from_utf8_lossy(&ctx.stdout);
    assert!(
        ctx.contains("parameter_text: be brief") && ctx.contains(RETURNED),
        "{ctx}"
    );
    assert!(!ctx.contains("sk-test"), "the API key leaked into {ctx}");

    // A folder appuser cannot write: the run fails as in the real image.
    let v: Value = serde_json::from_str(&s.execute("/payload/ro/main.md")).unwrap();
    assert_eq!(v["success"], false);
    assert!(
        v["error"].as_str().unwrap().contains("Permission denied"),
        "{v}"
    );

    // The seed's relative form works only once /fractalic/payload links to /payload.
    assert_eq!(
        s.execute("payload/demo/main.md"),
        failure("File not found: payload/demo/main.md")
    );
    let ln = s.exec(&["ln", "-s", "/payload", "/fractalic/payload"]);
    assert!(ln.status.success(), "{ln:?}");
    assert_success(&s.execute("payload/demo/main.md"), RETURNED);

    // /fractalic/settings.toml is the fallback for a folder without one.
    support::copy_into(
        &docker,
        s.name(),
        &[Entry::File(
            "/fractalic/settings.toml",
            USABLE.as_bytes(),
            0o600,
        )],
    );
    assert_success(&s.execute("/payload/bare/main.md"), RETURNED);
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn execute_rejects_bad_bodies_with_422() {
    let Some(docker) = support::docker() else {
        return;
    };
    let s = StandIn::ready(&docker, "fp-si-422", &[], &[]);
    let (status, body) = s.execute_raw("{\"filename\": ");
    assert_eq!(status, 422, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["detail"][0]["type"], "json_invalid", "{body}");

    let (status, body) = s.execute_raw("{}");
    assert_eq!(status, 422);
    assert_eq!(
        body,
        r#"{"detail":[{"type":"missing","loc":["body","filename"],"msg":"Field required","input":{}}]}"#
    );
    let (status, body) = s.execute_raw(r#"{"filename": 7}"#);
    assert_eq!(status, 422);
    assert!(
        body.contains(r#""type":"string_type","loc":["body","filename"]"#),
        "{body}"
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn internal_services_listen_on_the_container_loopback_only() {
    let Some(docker) = support::docker() else {
        return;
    };
    let s = StandIn::ready(&docker, "fp-si-ports", &[], &[]);

    let (code, out, err) = s.curl(&["-f", "http://localhost:5859/status"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with(r#"{"status":"running","api_responsive":true"#),
        "{out}"
    );
    let (code, out, err) = s.curl(&["-fsS", "http://localhost:8000/health"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("healthy"), "{out}");

    let ip = support::container_ip(&docker, s.name());
    assert!(
        !refused(&format!("{ip}:8001")),
        "8001 should answer on {ip}"
    );
    assert!(
        refused(&format!("{ip}:5859")),
        "5859 reachable from the host on {ip}"
    );
    assert!(
        refused(&format!("{ip}:8000")),
        "8000 reachable from the host on {ip}"
    );

    // supervisord-like lines in `docker logs`, request lines in the service logs under /tmp.
    let logs = s.docker_logs();
    for program in ["ai_server", "backend", "mcp_manager"] {
        assert!(
            logs.contains(&format!("success: {program} entered RUNNING state")),
            "{logs}"
        );
    }
    let ai = s.exec(&["cat", "/tmp/ai_server.log"]);
    let ai = String::from_utf8_lossy(&ai.stdout);
    assert!(ai.contains("\"GET /health HTTP/1.1\" 200 OK"), "{ai}");
    let mcp = s.exec(&["cat", "/tmp/mcp_manager.log"]);
    assert!(String::from_utf8_lossy(&mcp.stdout).contains("\"GET /status HTTP/1.1\" 200 OK"));
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn curl_personality_has_curls_exit_codes() {
    let Some(docker) = support::docker() else {
        return;
    };
    let s = StandIn::ready(&docker, "fp-si-curl", &[], &[]);
    let (code, out, err) = s.curl(&["-fsS", "http://localhost:8001/nope"]);
    assert_eq!(code, Some(22));
    assert_eq!(out, "");
    assert_eq!(err, "curl: (22) The requested URL returned error: 404\n");
    let (code, out, _) = s.curl(&["-s", "http://localhost:8001/nope"]);
    assert_eq!((code, out.as_str()), (Some(0), r#"{"detail":"Not Found"}"#));
    let (code, _, err) = s.curl(&["-fs", "http://localhost:9/"]);
    assert_eq!((code, err.as_str()), (Some(7), ""));
    let (code, _, err) = s.curl(&["-f", "http://localhost:9/"]);
    assert_eq!(code, Some(7));
    assert!(
        err.starts_with("curl: (7) Failed to connect to localhost port 9"),
        "{err}"
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn healthcheck_passes_and_unhealthy_switch_fails_it() {
    let Some(docker) = support::docker() else {
        return;
    };
    // The image's HEALTHCHECK command, run by Docker at a test-friendly interval.
    let fast = [
        "--health-interval",
        "1s",
        "--health-start-period",
        "1s",
        "--health-retries",
        "1",
    ];
    let ok = StandIn::start(&docker, "fp-si-hc", &[], &fast, &[]);
    let sick = StandIn::start(
        &docker,
        "fp-si-sick",
        &["STAND_IN_HEALTH=unhealthy"],
        &fast,
        &[],
    );

    let answer = support::wait_http(&sick.url("/health"), READY);
    assert_eq!(answer, Some((503, r#"{"status":"unhealthy"}"#.to_string())));
    let (code, _, err) = sick.curl(&["-fsS", "http://localhost:8001/health"]);
    assert_eq!(code, Some(22));
    assert_eq!(err, "curl: (22) The requested URL returned error: 503\n");

    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut a, mut b) = (String::new(), String::new());
    while Instant::now() < deadline {
        a = ok.health_status();
        b = sick.health_status();
        if a == "healthy" && b == "unhealthy" {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!((a.as_str(), b.as_str()), ("healthy", "unhealthy"));
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn start_delay_switch_delays_listening() {
    let Some(docker) = support::docker() else {
        return;
    };
    let started = Instant::now();
    let s = StandIn::start(
        &docker,
        "fp-si-delay",
        &["STAND_IN_START_DELAY_MS=2000"],
        &[],
        &[],
    );
    let answer = support::wait_http(&s.url("/health"), READY);
    assert_eq!(answer.map(|a| a.0), Some(200));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(2000),
        "answered after {waited:?}"
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn exit_after_switch_exits_with_code_3() {
    let Some(docker) = support::docker() else {
        return;
    };
    let s = StandIn::start(
        &docker,
        "fp-si-exit",
        &["STAND_IN_EXIT_AFTER_MS=1000"],
        &[],
        &[],
    );
    assert_eq!(support::wait_exited(&docker, s.name(), READY), Some(3));
    let logs = s.docker_logs();
    assert!(
        logs.contains("STAND_IN_EXIT_AFTER_MS=1000 elapsed"),
        "{logs}"
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn mcp_down_switch_leaves_5859_closed() {
    let Some(docker) = support::docker() else {
        return;
    };
    let s = StandIn::ready(&docker, "fp-si-mcp", &["STAND_IN_MCP=down"], &[]);
    let (code, _, err) = s.curl(&["-fsS", "http://localhost:5859/status"]);
    assert_eq!(code, Some(7), "{err}");
    let (code, _, _) = s.curl(&["-fsS", "http://localhost:8000/health"]);
    assert_eq!(code, Some(0));
    assert!(s
        .docker_logs()
        .contains("gave up: mcp_manager entered FATAL state"));
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn switch_file_read_at_start_overrides_the_environment() {
    let Some(docker) = support::docker() else {
        return;
    };
    let file = b"# set by a test\nSTAND_IN_HEALTH=unhealthy\n";
    let s = StandIn::start(
        &docker,
        "fp-si-file",
        &["STAND_IN_MCP=down"],
        &[],
        &[Entry::File("/fractalic/stand-in.env", file, 0o644)],
    );
    let answer = support::wait_http(&s.url("/health"), READY);
    assert_eq!(answer.map(|a| a.0), Some(503));
    // Switches the file does not set still come from the environment.
    let (code, _, _) = s.curl(&["-fs", "http://localhost:5859/status"]);
    assert_eq!(code, Some(7));
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn crashloop_switch_plays_a_program_that_supervisord_gives_up_on() {
    let Some(docker) = support::docker() else {
        return;
    };
    let s = StandIn::ready(
        &docker,
        "fp-si-crashloop",
        &["STAND_IN_CRASHLOOP=mcp_manager"],
        &[],
    );
    let (code, _, _) = s.curl(&["-fs", "http://localhost:5859/status"]);
    assert_eq!(code, Some(7));
    // Four attempts with 1 + 2 + 3 s of back-off, then FATAL.
    let read = |path: &str| String::from_utf8_lossy(&s.exec(&["cat", path]).stdout).into_owned();
    let deadline = Instant::now() + READY;
    let mut log = read("/tmp/supervisord.log");
    while !log.contains("gave up: mcp_manager entered FATAL state") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        log = read("/tmp/supervisord.log");
    }
    assert!(
        log.contains(
            "INFO gave up: mcp_manager entered FATAL state, too many start retries too quickly"
        ),
        "{log}"
    );
    assert_eq!(
        log.matches("WARN exited: mcp_manager (exit status 1; not expected)")
            .count(),
        4,
        "{log}"
    );
    assert_eq!(
        log.matches("INFO spawned: 'mcp_manager'").count(),
        4,
        "{log}"
    );
    assert!(!log.contains("success: mcp_manager"), "{log}");
    assert!(
        log.contains("success: ai_server entered RUNNING state"),
        "{log}"
    );
    // The same lines reach `docker logs`, as supervisord's do.
    assert!(
        s.docker_logs()
            .contains("gave up: mcp_manager entered FATAL state"),
        "{}",
        s.docker_logs()
    );
    // The cause is the error log's last non-empty line.
    let err = read("/tmp/mcp_manager_error.log");
    assert!(err.ends_with("\n\n"), "{err:?}");
    let last = err.lines().rfind(|l| !l.trim().is_empty()).unwrap();
    assert!(
        last.ends_with(" - __main__ - ERROR - Failed to start server: [Errno 99] error while attempting to bind on address ('::1', 5859, 0, 0): cannot assign requested address"),
        "{last}"
    );
    // The other programs are unaffected.
    let (code, _, _) = s.curl(&["-fs", "http://localhost:8000/health"]);
    assert_eq!(code, Some(0));
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn every_program_has_a_log_and_an_error_log() {
    let Some(docker) = support::docker() else {
        return;
    };
    let s = StandIn::ready(&docker, "fp-si-errlogs", &[], &[]);
    let (code, _, _) = s.curl(&["-fs", "http://localhost:5859/status"]);
    assert_eq!(code, Some(0));
    for (program, addr) in [
        ("ai_server", "0.0.0.0:8001"),
        ("backend", "127.0.0.1:8000"),
        ("mcp_manager", "127.0.0.1:5859"),
    ] {
        let err = s.exec(&["cat", &format!("/tmp/{program}_error.log")]);
        let err = String::from_utf8_lossy(&err.stdout);
        assert!(
            err.contains(&format!("INFO:     Uvicorn running on http://{addr}")),
            "{program}: {err}"
        );
        assert!(!err.contains("HTTP/1.1"), "{program}: {err}");
    }
    let log = s.exec(&["cat", "/tmp/supervisord.log"]);
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(log.contains("INFO supervisord started with pid 1"), "{log}");
    assert!(
        log.contains("success: backend entered RUNNING state"),
        "{log}"
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn crashloop_switch_rejects_an_unknown_program() {
    let Some(docker) = support::docker() else {
        return;
    };
    let image = support::pull_stand_in(&docker);
    let guard = ContainerGuard::new(&support::unique_name("fp-si-crashloop-bad"));
    let args = [
        "run",
        "--name",
        guard.name(),
        "-e",
        "STAND_IN_CRASHLOOP=frontend",
        &image,
    ];
    let o = support::run_docker(&docker, &args);
    assert_eq!(o.status.code(), Some(2), "{}", support::describe(&args, &o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "STAND_IN_CRASHLOOP=\"frontend\": \"frontend\" is not ai_server, backend or mcp_manager"
        ),
        "{err}"
    );
}
