//! `serve`: the REST API driven as the Fractalic UI drives it (POST the stream endpoint, split
//! the body on newlines, take every `data: ` line as an event, stop at completed/error), the
//! management routes, re-attaching, concurrency, tokens, CORS, roots and bad HTTP input.

use crate::managed::{self, containers_named, eventually, state};
use crate::support::{self, ContainerGuard};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const HELLO: &str = "# Demo task {id=demo-task}\n\n@shell\nprompt: echo hello from rest\nuse-header: \"# Out {id=out}\"\n\n@return\nblock: out\n";

pub(crate) const SETTINGS: &str = "defaultProvider = \"demo\"\n\n[settings.demo]\nmodel = \"demo-model\"\napiKey = \"sk-rest-test-not-real\"\n";

/// The stages the UI knows, in the order a deploy goes through them.
pub(crate) const UI_STAGES: &[&str] = &[
    "validating",
    "pulling_image",
    "preparing_files",
    "creating_container",
    "starting_container",
    "completed",
    "error",
];

/// A running `serve`; SIGTERM and wait on drop.
pub(crate) struct Served {
    child: Child,
    pub url: String,
    pub root: tempfile::TempDir,
    _stderr: tempfile::NamedTempFile,
}

impl Served {
    pub(crate) fn start(docker: &Path, extra: &[&str]) -> Served {
        Self::try_start(docker, extra, &[]).expect("serve starts")
    }

    pub(crate) fn try_start(
        docker: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Served, String> {
        Self::try_start_in(docker, extra, env, None)
    }

    /// [`Served::try_start`] with the server's working directory `cwd`.
    pub(crate) fn try_start_in(
        docker: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        cwd: Option<&Path>,
    ) -> Result<Served, String> {
        let root = tempfile::tempdir().unwrap();
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut cmd = managed::command(docker, &["serve", "--listen", "127.0.0.1:0", "--root"]);
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
        cmd.arg(root.path()).args(extra);
        cmd.env_remove(TOKEN_ENV);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        let Some(url) = line.trim().strip_prefix("listening on ") else {
            let status = child.wait().unwrap();
            let mut err = String::new();
            std::fs::File::open(stderr.path())
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return Err(format!("{status}: {line}{err}"));
        };
        Ok(Served {
            url: url.to_string(),
            child,
            root,
            _stderr: stderr,
        })
    }

    /// A script folder `rel` under the root holding hello.md.
    pub(crate) fn folder(&self, rel: &str) -> PathBuf {
        let f = self.root.path().join(rel);
        std::fs::create_dir_all(&f).unwrap();
        std::fs::write(f.join("hello.md"), HELLO).unwrap();
        std::fs::write(f.join("settings.toml"), SETTINGS).unwrap();
        f
    }

    pub(crate) fn addr(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }
}

pub(crate) const TOKEN_ENV: &str = "FRACTALIC_PUBLISHER_TOKEN";

impl Drop for Served {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(5))
        .timeout(Duration::from_secs(180))
        .build()
}

/// (status, body) of any answer.
pub(crate) fn call(req: ureq::Request, body: Option<&Value>) -> (u16, String) {
    let r = match body {
        Some(b) => req.send_string(&b.to_string()),
        None => req.call(),
    };
    match r {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
        Err(e) => panic!("request failed: {e}"),
    }
}

pub(crate) fn detail(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("no detail: {body}"))
        .to_string()
}

pub(crate) fn deploy_body(folder: &str, name: &str, extra: Value) -> Value {
    let image = support::stand_in_image();
    let (repo, tag) = image.rsplit_once(':').unwrap();
    let mut b = json!({
        "image_name": repo,
        "image_tag": tag,
        "script_name": "hello",
        "script_folder": folder,
        "container_name": name,
        "pull": "missing",
    });
    if let (Some(b), Some(x)) = (b.as_object_mut(), extra.as_object()) {
        for (k, v) in x {
            b.insert(k.clone(), v.clone());
        }
    }
    b
}

/// Deploys through the stream endpoint exactly as the UI's useDeployment hook reads it;
/// returns the events it would count, the last being completed or error.
pub(crate) fn ui_stream(url: &str, body: &Value) -> Vec<Value> {
    let r = agent()
        .post(&format!("{url}/api/deploy/docker-registry/stream"))
        .set("Content-Type", "application/json")
        .set("Accept", "text/event-stream")
        .send_string(&body.to_string());
    let r = match r {
        Ok(r) => r,
        Err(e) => panic!("HTTP error (the UI would show it): {e}"),
    };
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let mut text = String::new();
    r.into_reader().read_to_string(&mut text).unwrap();
    let mut events = Vec::new();
    for line in text.split('\n') {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data.trim().is_empty() {
            continue;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        let counts = v["deployment_id"].as_str().is_some_and(|s| !s.is_empty())
            && v["stage"].as_str().is_some_and(|s| !s.is_empty())
            && v["progress"].is_number();
        if counts {
            let stage = v["stage"].as_str().unwrap().to_string();
            events.push(v);
            if stage == "completed" || stage == "error" {
                break;
            }
        }
    }
    events
}

pub(crate) fn assert_monotonic(events: &[Value]) {
    let mut last_stage = 0;
    let mut last_pct = 0;
    let id = events[0]["deployment_id"].clone();
    for e in events {
        let stage = e["stage"].as_str().unwrap();
        let i = UI_STAGES
            .iter()
            .position(|s| *s == stage)
            .unwrap_or_else(|| panic!("stage {stage} is unknown to the UI"));
        assert!(i >= last_stage, "stage went back to {stage}: {events:?}");
        let pct = e["progress"].as_u64().unwrap();
        assert!(pct >= last_pct, "progress went back: {events:?}");
        assert_eq!(e["deployment_id"], id);
        assert!(
            e["timestamp"].as_str().is_some_and(|t| t.contains('T')),
            "{e}"
        );
        last_stage = i;
        last_pct = pct;
    }
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn the_ui_client_deploys_then_execute_works_and_management_routes_follow() {
    let Some(docker) = support::docker() else {
        return;
    };
    support::pull_stand_in(&docker);
    let s = Served::start(&docker, &[]);
    s.folder("scripts/hello");
    let name = support::unique_name("fp-rest");
    let _g = ContainerGuard::new(&name);
    let events = ui_stream(&s.url, &deploy_body("scripts/hello", &name, json!({})));
    assert_monotonic(&events);
    let stages: Vec<&str> = events
        .iter()
        .map(|e| e["stage"].as_str().unwrap())
        .collect();
    for want in [
        "validating",
        "pulling_image",
        "creating_container",
        "starting_container",
        "completed",
    ] {
        assert!(stages.contains(&want), "{want} missing from {stages:?}");
    }
    let last = events.last().unwrap();
    assert_eq!(last["stage"], "completed", "{last}");
    assert_eq!(last["progress"], 100);
    let r = &last["result"];
    assert_eq!(r["success"], true, "{r}");
    let url = r["endpoint_url"].as_str().unwrap();
    let m = &r["metadata"];
    let port = m["ai_server"]["port"].as_u64().unwrap();
    assert_eq!(url, format!("http://localhost:{port}"));
    assert_eq!(m["ai_server"]["host"], url);
    assert_eq!(m["ai_server"]["health_url"], format!("{url}/health"));
    assert_eq!(m["ai_server"]["docs_url"], format!("{url}/docs"));
    assert_eq!(m["deployment"]["script_name"], "hello");
    assert_eq!(m["deployment"]["script_path"], "/payload/hello/hello.md");
    assert_eq!(m["deployment"]["container_name"], name.as_str());
    let short = m["deployment"]["container_id"].as_str().unwrap();
    let real = support::docker_ok(&docker, &["inspect", "-f", "{{.Id}}", &name]);
    assert!(
        short.len() == 12 && real.trim().starts_with(short),
        "{short} vs {real}"
    );
    assert_eq!(m["api"]["endpoint"], format!("{url}/execute"));
    assert!(m["api"]["sample_curl"]
        .as_str()
        .unwrap()
        .contains("/payload/hello/hello.md"));
    assert_eq!(
        m["api"]["example_payload"]["filename"],
        "/payload/hello/hello.md"
    );
    for k in ["logs_command", "stop_command", "remove_command"] {
        assert!(m["container"][k].as_str().unwrap().contains(&name), "{k}");
    }
    assert_eq!(m["services"]["ai_server"], "healthy");
    assert_eq!(m["services"]["mcp_manager"], "healthy");

    // What the UI's sample curl does.
    let (code, body) = call(
        agent()
            .post(&format!("{url}/execute"))
            .set("Content-Type", "application/json"),
        Some(&json!({"filename": "/payload/hello/hello.md"})),
    );
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["success"], true, "{v}");
    assert!(
        v["return_content"]
            .as_str()
            .unwrap()
            .contains("hello from rest"),
        "{v}"
    );

    let api = |p: &str| format!("{}/api/deployments{p}", s.url);
    let (code, body) = call(agent().get(&api("")), None);
    assert_eq!(code, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name.as_str())
        .expect("listed");
    assert_eq!(row["health"], "healthy");
    let (code, body) = call(agent().get(&api(&format!("/{name}"))), None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["healthy"],
        true
    );
    let (code, body) = call(
        agent().get(&api(&format!("/{name}/logs?tail=50&service=ai_server"))),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("GET /health"), "{body}");
    let (code, body) = call(
        agent().post(&api(&format!("/{name}/stop"))),
        Some(&json!({})),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(state(&docker, &name).as_deref(), Some("exited"));
    let (code, body) = call(
        agent().post(&api(&format!("/{name}/start?timeout=60"))),
        Some(&json!({})),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(state(&docker, &name).as_deref(), Some("running"));
    let (code, body) = call(agent().delete(&api(&format!("/{name}"))), None);
    assert_eq!(code, 409, "{body}");
    assert_eq!(state(&docker, &name).as_deref(), Some("running"));
    let (code, body) = call(agent().delete(&api(&format!("/{name}?force=true"))), None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(state(&docker, &name), None);
    let (code, body) = call(agent().get(&api(&format!("/{name}"))), None);
    assert_eq!(code, 404, "{body}");
    let (foreign, _fg) = managed::foreign_container(&docker, "fp-rest-foreign");
    let before = state(&docker, &foreign);
    assert!(before.is_some());
    let (code, body) = call(agent().get(&api(&format!("/{foreign}"))), None);
    assert_eq!(code, 403, "{body}");
    let (code, _) = call(
        agent().delete(&api(&format!("/{foreign}?force=true"))),
        None,
    );
    assert_eq!(code, 403);
    assert_eq!(state(&docker, &foreign), before, "left as it was");
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn failed_stream_deploys_end_in_error_and_leave_nothing() {
    let Some(docker) = support::docker() else {
        return;
    };
    support::pull_stand_in(&docker);
    let s = Served::start(&docker, &[]);
    let folder = s.folder("f");
    for (i, env) in [
        json!({"STAND_IN_HEALTH": "unhealthy"}),
        json!({"STAND_IN_EXIT_AFTER_MS": "10"}),
    ]
    .into_iter()
    .enumerate()
    {
        let name = support::unique_name(&format!("fp-rest-fail{i}"));
        let _g = ContainerGuard::new(&name);
        let body = deploy_body(
            folder.to_str().unwrap(),
            &name,
            json!({"env_vars": env, "timeout": 4}),
        );
        let events = ui_stream(&s.url, &body);
        assert_monotonic(&events);
        let last = events.last().unwrap();
        assert_eq!(last["stage"], "error", "{last}");
        assert_eq!(last["progress"], 100);
        assert!(last.get("result").is_none(), "{last}");
        assert_eq!(last["failure"]["success"], false);
        let err = last["error"].as_str().unwrap();
        assert!(err.contains("removed"), "says what was cleaned up: {err}");
        assert!(!last.to_string().contains("completed\""), "{last}");
        assert_eq!(state(&docker, &name), None, "nothing left behind");
    }
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn the_blocking_endpoint_returns_the_same_outcome_and_a_name_in_flight_is_409() {
    let Some(docker) = support::docker() else {
        return;
    };
    support::pull_stand_in(&docker);
    let s = Served::start(&docker, &[]);
    let folder = s.folder("f");
    let name = support::unique_name("fp-rest-block");
    let _g = ContainerGuard::new(&name);
    // A slow-booting deploy holds the name; a second deploy of it meanwhile is refused.
    let slow = deploy_body(
        folder.to_str().unwrap(),
        &name,
        json!({"env_vars": {"STAND_IN_START_DELAY_MS": "2500"}}),
    );
    let first = first_event_then_disconnect(&s.addr(), &slow);
    let id = first["deployment_id"].as_str().unwrap().to_string();
    let (code, body) = call(
        agent()
            .post(&format!("{}/api/deploy/docker-registry", s.url))
            .set("Content-Type", "application/json"),
        Some(&deploy_body(folder.to_str().unwrap(), &name, json!({}))),
    );
    assert_eq!(code, 409, "{body}");
    assert!(detail(&body).contains(&id), "{body}");
    let (code, body) = call(
        agent().post(&format!("{}/api/deployments/{name}/stop", s.url)),
        Some(&json!({})),
    );
    assert_eq!(code, 409, "{body}");
    let (_, evs) = reattach(&s.url, &id, None);
    assert_eq!(evs.last().unwrap()["stage"], "completed");

    // Blocking deploy of another name: the outcome object, as the stream's final result.
    let other = support::unique_name("fp-rest-block2");
    let _g2 = ContainerGuard::new(&other);
    let (code, body) = call(
        agent()
            .post(&format!("{}/api/deploy/docker-registry", s.url))
            .set("Content-Type", "application/json"),
        Some(&deploy_body(folder.to_str().unwrap(), &other, json!({}))),
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["success"], true);
    assert_eq!(v["deployment_id"], other.as_str());
    let streamed = evs.last().unwrap()["result"].clone();
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&v), keys(&streamed));
    assert_eq!(keys(&v["metadata"]), keys(&streamed["metadata"]));
    // A failed blocking deploy: HTTP 200, success false, same keys as a failed stream result.
    let bad = support::unique_name("fp-rest-block3");
    let _g3 = ContainerGuard::new(&bad);
    let (code, body) = call(
        agent()
            .post(&format!("{}/api/deploy/docker-registry", s.url))
            .set("Content-Type", "application/json"),
        Some(&deploy_body(
            folder.to_str().unwrap(),
            &bad,
            json!({"env_vars": {"STAND_IN_HEALTH": "unhealthy"}, "timeout": 3}),
        )),
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["success"], false, "{v}");
    assert_eq!(v["exit_code"], 1);
    assert!(v["error"].as_str().unwrap().contains("cleanup"), "{v}");
    assert_eq!(state(&docker, &bad), None);
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn four_concurrent_stream_deploys_get_distinct_ports() {
    let Some(docker) = support::docker() else {
        return;
    };
    support::pull_stand_in(&docker);
    let s = Served::start(&docker, &[]);
    let folder = s.folder("f");
    let prefix = support::unique_name("fp-rest-par");
    let names: Vec<String> = (0..4).map(|i| format!("{prefix}-{i}")).collect();
    let _guards: Vec<ContainerGuard> = names.iter().map(|n| ContainerGuard::new(n)).collect();
    let url = s.url.clone();
    let results: Vec<Vec<Value>> = std::thread::scope(|sc| {
        let hs: Vec<_> = names
            .iter()
            .map(|n| {
                let body = deploy_body(folder.to_str().unwrap(), n, json!({}));
                let url = url.clone();
                sc.spawn(move || ui_stream(&url, &body))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ports = Vec::new();
    for evs in &results {
        let last = evs.last().unwrap();
        assert_eq!(last["stage"], "completed", "{last}");
        ports.push(
            last["result"]["metadata"]["ai_server"]["port"]
                .as_u64()
                .unwrap(),
        );
        let health = format!(
            "{}/health",
            last["result"]["endpoint_url"].as_str().unwrap()
        );
        assert_eq!(
            support::wait_http(&health, Duration::from_secs(5)).map(|r| r.0),
            Some(200)
        );
    }
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 4, "{ports:?}");
}

/// Reads raw SSE from a socket until the first `data:` line; returns that event.
fn first_event_then_disconnect(addr: &str, body: &Value) -> Value {
    let mut c = TcpStream::connect(addr).unwrap();
    let b = body.to_string();
    write!(
        c,
        "POST /api/deploy/docker-registry/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: {}\r\n\r\n{b}",
        b.len()
    )
    .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = BufReader::new(c);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "stream ended early");
        if let Some(d) = line.strip_prefix("data: ") {
            return serde_json::from_str(d.trim()).unwrap();
        }
    }
    // dropping the reader closes the connection
}

fn reattach(url: &str, id: &str, last_event_id: Option<u64>) -> (u16, Vec<Value>) {
    let mut req = agent().get(&format!("{url}/api/deployments/{id}/events"));
    if let Some(n) = last_event_id {
        req = req.set("Last-Event-ID", &n.to_string());
    }
    let r = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(s, _)) => return (s, vec![]),
        Err(e) => panic!("{e}"),
    };
    let mut text = String::new();
    r.into_reader().read_to_string(&mut text).unwrap();
    let evs = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    (200, evs)
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn a_disconnect_never_harms_the_deploy_and_reattaching_replays_everything() {
    let Some(docker) = support::docker() else {
        return;
    };
    support::pull_stand_in(&docker);
    let s = Served::start(&docker, &[]);
    let folder = s.folder("f");
    let name = support::unique_name("fp-rest-drop");
    let _g = ContainerGuard::new(&name);
    let first = first_event_then_disconnect(
        &s.addr(),
        &deploy_body(folder.to_str().unwrap(), &name, json!({})),
    );
    let id = first["deployment_id"].as_str().unwrap().to_string();
    assert_eq!(first["seq"], 1);
    let (code, evs) = reattach(&s.url, &id, None);
    assert_eq!(code, 200);
    assert_eq!(evs[0], first, "the replay starts at the first event");
    assert_monotonic(&evs);
    let last = evs.last().unwrap();
    assert_eq!(last["stage"], "completed", "{last}");
    let seqs: Vec<u64> = evs.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let health = format!(
        "{}/health",
        last["result"]["endpoint_url"].as_str().unwrap()
    );
    assert_eq!(
        support::wait_http(&health, Duration::from_secs(5)).map(|r| r.0),
        Some(200)
    );
    // Last-Event-ID resumes after that event.
    let (_, rest) = reattach(&s.url, &id, Some(3));
    assert_eq!(rest[0]["seq"], 4);
    assert_eq!(rest.last(), evs.last());
    assert_eq!(reattach(&s.url, "nope", None).0, 404);
}

/// The docker binary for tests that are refused before Docker is touched.
pub(crate) fn any_docker() -> PathBuf {
    support::docker().unwrap_or_else(|| PathBuf::from("docker"))
}

#[test]
fn tokens_cors_and_listen_rules() {
    let docker = any_docker();
    // Off loopback without a token: refused at start.
    let mut cmd = managed::command(&docker, &["serve", "--listen", "0.0.0.0:0"]);
    cmd.env_remove(TOKEN_ENV);
    let o = cmd.output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("--token-file"));

    let dir = tempfile::tempdir().unwrap();
    let token = "0123456789abcdef0123456789abcdef";
    let tf = dir.path().join("token");
    std::fs::write(&tf, format!("{token}\n")).unwrap();
    let s = Served::start(
        &docker,
        &[
            "--token-file",
            tf.to_str().unwrap(),
            "--cors-origin",
            "http://localhost:3000",
        ],
    );
    let plugins = format!("{}/api/plugins", s.url);
    assert_eq!(call(agent().get(&plugins), None).0, 401);
    assert_eq!(
        call(
            agent().get(&plugins).set("Authorization", "Bearer wrong"),
            None
        )
        .0,
        401
    );
    let (code, body) = call(
        agent()
            .get(&plugins)
            .set("Authorization", &format!("Bearer {token}")),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("docker-registry"));
    for route in [
        "/api/deployments",
        "/api/deployments/x",
        "/api/deployments/x/logs",
    ] {
        assert_eq!(
            call(agent().get(&format!("{}{route}", s.url)), None).0,
            401,
            "{route}"
        );
    }
    let (code, _) = call(
        agent()
            .post(&format!("{}/api/deploy/docker-registry/stream", s.url))
            .set("Content-Type", "application/json"),
        Some(&json!({"script_name": "hello", "script_folder": "f"})),
    );
    assert_eq!(code, 401);
    assert_eq!(call(agent().get(&format!("{}/health", s.url)), None).0, 200);

    // CORS: the allowed origin's preflight is answered, another origin's is not.
    // (status, allow-origin, allow-headers) of a preflight from `origin`.
    let pre = |origin: &str| {
        let r = agent()
            .request(
                "OPTIONS",
                &format!("{}/api/deploy/docker-registry/stream", s.url),
            )
            .set("Origin", origin)
            .set("Access-Control-Request-Method", "POST")
            .set("Access-Control-Request-Headers", "content-type")
            .call();
        let r = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{e}"),
        };
        let h = |k: &str| r.header(k).map(str::to_string);
        (
            r.status(),
            h("access-control-allow-origin"),
            h("access-control-allow-headers"),
        )
    };
    let (code, origin, headers) = pre("http://localhost:3000");
    assert_eq!(code, 204);
    assert_eq!(origin.as_deref(), Some("http://localhost:3000"));
    let headers = headers.unwrap();
    assert!(
        headers.contains("Content-Type") && headers.contains("Authorization"),
        "{headers}"
    );
    let (code, origin, _) = pre("http://evil.example");
    assert_eq!(code, 403);
    assert_eq!(origin, None);
    let r = agent()
        .get(&format!("{}/health", s.url))
        .set("Origin", "http://localhost:3000")
        .call()
        .unwrap();
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
}

#[test]
fn bad_http_input_is_a_clear_error_and_creates_nothing() {
    let docker = any_docker();
    let s = Served::start(&docker, &[]);
    s.folder("inside");
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("hello.md"), HELLO).unwrap();
    std::os::unix::fs::symlink(outside.path(), s.root.path().join("link")).unwrap();
    let deploy = format!("{}/api/deploy/docker-registry/stream", s.url);
    let post = |body: &Value| {
        call(
            agent()
                .post(&deploy)
                .set("Content-Type", "application/json"),
            Some(body),
        )
    };
    let prefix = support::unique_name("fp-rest-bad");
    let body = |folder: &str, extra: Value| deploy_body(folder, &prefix, extra);

    for folder in [
        outside.path().to_str().unwrap(),
        "../x",
        "link",
        "inside/../../y",
    ] {
        let (code, b) = post(&body(folder, json!({})));
        assert_eq!(code, 403, "{folder}: {b}");
        assert!(detail(&b).contains("outside"), "{b}");
    }
    let cases: Vec<(Value, u16, &str)> = vec![
        (body("inside", json!({"bogus": 1})), 400, "\"bogus\""),
        (body("inside", json!({"port": "8001"})), 400, "\"port\""),
        (
            body("inside", json!({"env_vars": {"OPENAI": 7}})),
            400,
            "env_vars.OPENAI",
        ),
        (
            body("inside", json!({"env_vars": {"1BAD": "sk-secret-value"}})),
            400,
            "1BAD",
        ),
        (
            body("inside", json!({"script_name": "../x"})),
            400,
            "bad script_name \"../x\"",
        ),
        (
            body("inside", json!({"script_name": "missing"})),
            400,
            "missing",
        ),
        (body("nope", json!({})), 400, "nope"),
        (json!({"script_folder": "inside"}), 400, "script_name"),
        (body("inside", json!({"timeout": 0})), 400, "\"timeout\""),
    ];
    for (b, code, needle) in cases {
        let (got, text) = post(&b);
        assert_eq!(got, code, "{b}: {text}");
        let d = detail(&text);
        assert!(d.contains(needle), "{needle} not in {d}");
        assert!(!d.contains("sk-secret-value"), "{d}");
        assert!(!d.contains('\n'), "{d}");
    }
    let raw = |req: &str| -> String {
        let mut c = TcpStream::connect(s.addr()).unwrap();
        c.write_all(req.as_bytes()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out
    };
    let r = raw("POST /api/deploy/docker-registry HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n{oops");
    // The reason is on the status line (the Fractalic UI shows only statusText) and in the body.
    assert!(
        r.starts_with("HTTP/1.1 400 the body is not valid JSON (line 1, column 2)"),
        "{r}"
    );
    assert!(r.contains("X-Content-Type-Options: nosniff\r\n"), "{r}");
    assert!(
        r.contains("\"detail\": \"the body is not valid JSON"),
        "{r}"
    );
    let r = raw("POST /api/deploy/docker-registry HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}");
    assert!(r.starts_with("HTTP/1.1 415"), "{r}");
    let r = raw("POST /api/deploy/docker-registry HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    let r = raw("GET /api/nothing HTTP/1.1\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    let r = raw("PUT /api/deployments HTTP/1.1\r\n\r\n");
    assert!(
        r.starts_with("HTTP/1.1 405") && r.contains("Allow: GET"),
        "{r}"
    );
    let r = raw("POST /api/deploy/no-such-plugin HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    assert!(r.contains("docker-registry"), "names the plugins: {r}");

    // Cross-site writes and DNS rebinding: a page elsewhere cannot drive the API.
    let r = raw("POST /api/deployments/x/stop HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n");
    assert!(
        r.starts_with("HTTP/1.1 403") && r.contains("evil.example"),
        "{r}"
    );
    let r = raw("DELETE /api/deployments/x?force=true HTTP/1.1\r\nOrigin: null\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    let r = raw("GET /api/deployments HTTP/1.1\r\nHost: attacker.example:8090\r\n\r\n");
    assert!(
        r.starts_with("HTTP/1.1 403") && r.contains("loopback"),
        "{r}"
    );
    let r = raw("GET /health HTTP/1.1\r\nHost: localhost:1\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");

    // A half-sent request times out on its own while other clients are served.
    let mut slow = TcpStream::connect(s.addr()).unwrap();
    slow.write_all(b"POST /api/deploy/docker-registry HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"scr").unwrap();
    let t = Instant::now();
    assert_eq!(call(agent().get(&format!("{}/health", s.url)), None).0, 200);
    assert!(t.elapsed() < Duration::from_secs(5));
    slow.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut out = String::new();
    let _ = slow.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");

    if let Some(d) = support::docker() {
        assert!(
            containers_named(&d, &prefix).is_empty(),
            "nothing was created"
        );
    }
    let (code, body) = call(agent().get(&format!("{}/openapi.json", s.url)), None);
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["openapi"],
        "3.1.0"
    );
}

#[test]
fn two_hundred_concurrent_health_requests_are_all_answered() {
    let s = Served::start(&any_docker(), &[]);
    let url = format!("{}/health", s.url);
    let ok = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..200)
            .map(|_| {
                let url = url.clone();
                sc.spawn(move || call(agent().get(&url), None).0 == 200)
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .filter(|ok| *ok)
            .count()
    });
    assert_eq!(ok, 200);
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn sigterm_waits_for_a_running_deploy_then_exits_0() {
    let Some(docker) = support::docker() else {
        return;
    };
    support::pull_stand_in(&docker);
    let mut s = Served::start(&docker, &[]);
    let folder = s.folder("f");
    let name = support::unique_name("fp-rest-term");
    let _g = ContainerGuard::new(&name);
    let first = first_event_then_disconnect(
        &s.addr(),
        &deploy_body(
            folder.to_str().unwrap(),
            &name,
            json!({"env_vars": {"STAND_IN_START_DELAY_MS": "1500"}}),
        ),
    );
    assert!(first["deployment_id"].is_string());
    managed::sigterm(s.child.id());
    let status = managed::wait_exit(&mut s.child, 90);
    assert_eq!(status.code(), Some(0));
    // The deploy was allowed to finish: it is running and healthy, not half-made.
    assert!(eventually(10, || state(&docker, &name).as_deref() == Some("running")));
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn cli_progress_json_prints_the_same_events_as_the_stream() {
    let Some(docker) = support::docker() else {
        return;
    };
    let image = support::pull_stand_in(&docker);
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("hello.md"), HELLO).unwrap();
    let name = support::unique_name("fp-ndjson");
    let _g = ContainerGuard::new(&name);
    let mut args = managed::deploy_argv(folder.path(), &name, &image);
    args.extend(["--json", "--progress", "json"]);
    let o = managed::publisher(&docker, &args);
    managed::assert_code(&o, 0);
    let (stdout, stderr) = managed::out(&o);
    let events: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not an event ({e}): {l}")))
        .collect();
    assert_monotonic(&events);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "completed");
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        last["result"], printed,
        "the final event carries the --json object"
    );
    assert_eq!(printed["run_id"], last["deployment_id"]);

    // A failure ends with an error event and the same failure object on stdout.
    let o = managed::publisher(
        &docker,
        &[
            "deploy",
            "docker-registry",
            "--script-name",
            "nope",
            "--script-folder",
            folder.path().to_str().unwrap(),
            "--json",
            "--progress",
            "json",
        ],
    );
    managed::assert_code(&o, 2);
    let (stdout, stderr) = managed::out(&o);
    let last: Value = serde_json::from_str(stderr.lines().last().unwrap()).unwrap();
    assert_eq!(last["stage"], "error");
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(printed["success"], false);
    assert_eq!(last["error"], printed["error"]);
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn a_quiet_stream_sends_keep_alive_comments() {
    let Some(docker) = support::docker() else {
        return;
    };
    support::pull_stand_in(&docker);
    let s = Served::start(&docker, &[]);
    let folder = s.folder("f");
    let name = support::unique_name("fp-rest-quiet");
    let _g = ContainerGuard::new(&name);
    // The AI server starts listening only after 17 s: no event for longer than 15 s.
    let body = deploy_body(
        folder.to_str().unwrap(),
        &name,
        json!({"env_vars": {"STAND_IN_START_DELAY_MS": "17000"}, "timeout": 60}),
    );
    let mut c = TcpStream::connect(s.addr()).unwrap();
    let b = body.to_string();
    write!(
        c,
        "POST /api/deploy/docker-registry/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
        b.len()
    )
    .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut r = BufReader::new(c);
    let mut line = String::new();
    let mut keep_alive_before_end = false;
    loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "stream ended early");
        if line.starts_with(": keep-alive") {
            keep_alive_before_end = true;
        }
        if let Some(d) = line.strip_prefix("data: ") {
            let e: Value = serde_json::from_str(d.trim()).unwrap();
            if e["stage"] == "completed" || e["stage"] == "error" {
                assert_eq!(e["stage"], "completed", "{e}");
                break;
            }
        }
    }
    assert!(
        keep_alive_before_end,
        "no `: keep-alive` during 17 s of silence"
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn sigterm_lets_attached_clients_read_the_outcome_and_starts_nothing_new() {
    let Some(docker) = support::docker() else {
        return;
    };
    support::pull_stand_in(&docker);
    let mut s = Served::start(&docker, &[]);
    let folder = s.folder("f");
    let name = support::unique_name("fp-rest-drain");
    let late = support::unique_name("fp-rest-late");
    let _g = ContainerGuard::new(&name);
    let _g2 = ContainerGuard::new(&late);
    let body = deploy_body(
        folder.to_str().unwrap(),
        &name,
        json!({"env_vars": {"STAND_IN_START_DELAY_MS": "2000"}}),
    );
    let url = s.url.clone();
    let streaming = std::thread::spawn(move || ui_stream(&url, &body));
    // A second client has sent its head but not yet its body when the signal comes.
    let late_body = deploy_body(folder.to_str().unwrap(), &late, json!({})).to_string();
    let mut half = TcpStream::connect(s.addr()).unwrap();
    write!(
        half,
        "POST /api/deploy/docker-registry/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        late_body.len(),
        &late_body[..late_body.len() - 5]
    )
    .unwrap();
    assert!(eventually(30, || state(&docker, &name).as_deref() == Some("running")));
    managed::sigterm(s.child.id());
    // The signal has landed once a new request is answered 503 (the listener stays open,
    // so the answer is HTTP, not a refused connection); only then the rest of the body.
    let url = s.url.clone();
    assert!(eventually(10, || {
        matches!(
            agent().get(&format!("{url}/health")).call(),
            Err(ureq::Error::Status(503, _))
        )
    }));
    let r = agent().get(&format!("{}/api/plugins", s.url)).call();
    match r {
        Err(ureq::Error::Status(503, r)) => {
            assert_eq!(
                r.status_text(),
                "the server is shutting down and takes no new requests"
            );
        }
        other => panic!("want 503 during the shutdown, got {other:?}"),
    }
    half.write_all(&late_body.as_bytes()[late_body.len() - 5..])
        .unwrap();
    half.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = String::new();
    let _ = half.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");

    let events = streaming.join().unwrap();
    let last = events.last().unwrap();
    assert_eq!(
        last["stage"], "completed",
        "the attached client saw the outcome: {last}"
    );
    assert_eq!(managed::wait_exit(&mut s.child, 90).code(), Some(0));
    assert_eq!(state(&docker, &late), None, "nothing new was started");
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn history_and_rollback_over_rest() {
    let Some(docker) = support::docker() else {
        return;
    };
    support::pull_stand_in(&docker);
    let s = Served::start(&docker, &[]);
    let folder = s.folder("f");
    let name = support::unique_name("fp-rest-roll");
    let _g = ContainerGuard::new(&name);
    let deploy = || {
        call(
            agent()
                .post(&format!("{}/api/deploy/docker-registry", s.url))
                .set("Content-Type", "application/json"),
            Some(&deploy_body(folder.to_str().unwrap(), &name, json!({}))),
        )
    };
    let (code, body) = deploy();
    assert_eq!(code, 200, "{body}");
    std::fs::write(
        folder.join("hello.md"),
        HELLO.replace("hello from rest", "second"),
    )
    .unwrap();
    let (code, body) = deploy();
    assert_eq!(code, 200, "{body}");
    let api = |p: &str| format!("{}/api/deployments/{name}{p}", s.url);
    let (code, body) = call(agent().get(&api("/history")), None);
    assert_eq!(code, 200, "{body}");
    let h: Value = serde_json::from_str(&body).unwrap();
    let releases = h["releases"].as_array().unwrap();
    assert!(releases.len() >= 2, "{h}");
    let before = h["current"].as_str().unwrap().to_string();
    let first = releases[0]["id"].as_str().unwrap().to_string();
    assert_ne!(before, first);
    let (code, body) = call(
        agent().post(&api(&format!("/rollback?to={first}"))),
        Some(&json!({})),
    );
    assert_eq!(code, 200, "{body}");
    let (_, body) = call(agent().get(&api("/history")), None);
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_ne!(h["current"], before.as_str(), "{h}");
    let (code, body) = call(agent().post(&api("/rollback?to=r999")), Some(&json!({})));
    assert!((400..500).contains(&code), "{code} {body}");
    let (code, _) = call(
        agent().get(&format!("{}/api/deployments/nope-{name}/history", s.url)),
        None,
    );
    assert_eq!(code, 404);
}
