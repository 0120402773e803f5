//! What a fuzzer (schemathesis on `/openapi.json`) and an attack on `serve` found, each
//! pinned by a test: large folders in the history, the server's own settings.toml, shutdown,
//! idle connections, query flags, path names, messages.

use crate::serve::{self, Served};
use crate::support;
use serde_json::{json, Value};
use std::path::Path;

/// Removes every container whose name starts with the name when dropped (the deployment and
/// the old containers an update keeps).
pub(crate) struct Prefixed(pub std::path::PathBuf, pub String);

impl Drop for Prefixed {
    fn drop(&mut self) {
        let filter = format!("name=^{}", self.1);
        let out = support::run_docker(&self.0, &["ps", "-aq", "--filter", &filter]);
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            support::run_docker(&self.0, &["rm", "-f", "-v", id]);
        }
    }
}

fn many_files(folder: &Path, n: usize, version: &str) {
    for i in 0..n {
        let d = folder.join(format!("d{:03}", i % 100));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i:05}.md")), format!("{version} {i}\n")).unwrap();
    }
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn history_of_a_10000_file_deployment_is_answered_and_its_change_line_is_short() {
    let Some(docker) = support::docker() else {
        return;
    };
    support::pull_stand_in(&docker);
    let s = Served::start(&docker, &[]);
    let folder = s.folder("big");
    many_files(&folder, 10_000, "v1");
    let name = support::unique_name("fp-big-hist");
    let _g = Prefixed(docker.clone(), name.clone());
    let body = serve::deploy_body(folder.to_str().unwrap(), &name, json!({"timeout": 120}));
    let events = serve::ui_stream(&s.url, &body);
    assert_eq!(
        events.last().unwrap()["stage"],
        "completed",
        "{:?}",
        events.last()
    );
    many_files(&folder, 10_000, "v2");
    let events = serve::ui_stream(&s.url, &body);
    let last = events.last().unwrap();
    assert_eq!(last["stage"], "completed", "{last}");
    // The change summary is one short line; the result has every name.
    for e in &events {
        let m = e["message"].as_str().unwrap();
        assert!(
            m.len() < 400,
            "a {}-byte progress line: {}",
            m.len(),
            &m[..200]
        );
    }
    assert!(
        events.iter().any(|e| e["message"]
            .as_str()
            .unwrap()
            .contains("files changed (10000): d000/f00000.md")),
        "{events:?}"
    );
    let changed = last["result"]["changes"]["files_changed"]
        .as_array()
        .unwrap();
    assert_eq!(changed.len(), 10_000);

    let (code, out) = serve::call(
        serve::agent().get(&format!("{}/api/deployments/{name}/history", s.url)),
        None,
    );
    assert_eq!(code, 200, "{out}");
    let h: Value = serde_json::from_str(&out).unwrap();
    let releases = h["releases"].as_array().unwrap();
    assert_eq!(releases.len(), 2, "{h}");
    let r2 = &releases[1];
    assert_eq!(r2["changes"]["counts"]["files_changed"], 10_000, "{r2}");
    assert!(
        r2["state"].get("files").is_none(),
        "no per-file map in a release"
    );
    assert_eq!(r2["state"]["file_count"].as_u64().unwrap(), 10_002, "{r2}");
    // The CLI's history too.
    let o = crate::managed::publisher(&docker, &["history", &name]);
    crate::managed::assert_code(&o, 0);
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn the_servers_own_settings_never_reach_an_api_deployment() {
    let Some(docker) = support::docker() else {
        return;
    };
    support::pull_stand_in(&docker);
    // The operator starts `serve` in a Fractalic project holding the real API key.
    let home = tempfile::tempdir().unwrap();
    let secret = "sk-OPERATOR-KEY-must-not-leak";
    std::fs::write(home.path().join("fractalic.py"), "").unwrap();
    std::fs::write(
        home.path().join("settings.toml"),
        format!("defaultProvider = \"op\"\n[settings.op]\nmodel = \"m\"\napiKey = \"{secret}\"\n"),
    )
    .unwrap();
    std::fs::write(home.path().join("mcp_servers.json"), "{\"operator\": true}").unwrap();
    let s = Served::try_start_in(&docker, &[], &[], Some(home.path())).unwrap();
    // A folder inside the root with no settings.toml of its own.
    let folder = s.root.path().join("plain");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("hello.md"), serve::HELLO).unwrap();
    let name = support::unique_name("fp-leak");
    let _g = Prefixed(docker.clone(), name.clone());
    let events = serve::ui_stream(
        &s.url,
        &serve::deploy_body(folder.to_str().unwrap(), &name, json!({})),
    );
    let last = events.last().unwrap();
    assert_eq!(last["stage"], "completed", "{last}");
    assert!(
        last["result"]["warnings"]
            .to_string()
            .contains("no settings.toml"),
        "it says the deployment has none: {last}"
    );
    let o = support::run_docker(
        &docker,
        &[
            "exec",
            &name,
            "sh",
            "-c",
            "cat /fractalic/settings.toml /settings.toml /fractalic/mcp_servers.json 2>&1; true",
        ],
    );
    let inside = String::from_utf8_lossy(&o.stdout);
    assert!(
        !inside.contains(secret),
        "the operator's key leaked: {inside}"
    );
    assert!(!inside.contains("operator"), "{inside}");
    assert!(!last.to_string().contains(secret));
}

#[test]
fn query_flags_rollback_to_follow_service_and_empty_names_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (docker, calls) = support::untouchable_docker(dir.path());
    let s = Served::start(&docker, &[]);
    let api = |p: &str| format!("{}/api/deployments{p}", s.url);
    let refused = |r: ureq::Request, want: &str| {
        let (code, body) = serve::call(r, Some(&json!({})));
        assert_eq!(code, 400, "{body}");
        let d = serve::detail(&body);
        assert!(d.contains(want), "{want:?} not in {d}");
    };
    // One rule for every flag: true or false (any case); `all=`, `all=1` are refused.
    for q in ["all=", "all=1", "all=yes"] {
        let (code, body) = serve::call(serve::agent().get(&api(&format!("?{q}"))), None);
        assert_eq!(code, 400, "{q}: {body}");
        assert!(
            serve::detail(&body).contains("all=true or all=false"),
            "{body}"
        );
    }
    // An empty `to` is not "the previous release" (the CLI's `--to ""` is exit 2).
    refused(serve::agent().post(&api("/x/rollback?to=")), "to=\"\"");
    // Following a service's log is refused before the stream starts.
    let (code, body) = serve::call(
        serve::agent().get(&api("/x/logs?follow=true&service=ai_server")),
        None,
    );
    assert_eq!(code, 400, "{body}");
    assert!(serve::detail(&body).contains("leave out service"), "{body}");
    // A field that was sent empty is said to be empty, not missing; messages name JSON fields.
    let deploy = format!("{}/api/deploy/docker-registry", s.url);
    let post = |b: Value| {
        serve::call(
            serve::agent()
                .post(&deploy)
                .set("Content-Type", "application/json"),
            Some(&b),
        )
    };
    let (code, body) = post(json!({"script_name": "", "script_folder": "x"}));
    assert_eq!(code, 400);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("\"script_name\" is empty"),
        "{v}"
    );
    assert_eq!(v["field"], "script_name");
    std::fs::create_dir_all(s.root.path().join("f")).unwrap();
    std::fs::write(s.root.path().join("f/hello.md"), serve::HELLO).unwrap();
    let (code, body) =
        post(json!({"script_name": "hello", "script_folder": "f", "image_name": "UPPER::bad"}));
    assert_eq!(code, 400, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let d = v["detail"].as_str().unwrap();
    assert!(d.starts_with("bad image_name"), "{d}");
    assert!(!d.contains("--"), "no CLI flags over REST: {d}");
    assert_eq!(v["field"], "image_name");
    // Every answer says nosniff.
    let r = serve::agent()
        .get(&format!("{}/health", s.url))
        .call()
        .unwrap();
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert!(support::calls(&calls).is_empty(), "docker was never run");
}

#[test]
fn six_hundred_idle_connections_neither_lock_out_health_nor_stay_open() {
    use std::io::Read;
    use std::net::TcpStream;
    use std::time::{Duration, Instant};
    let s = Served::start(&serve::any_docker(), &[]);
    let addr = s.addr();
    // Connections that send nothing, more than the server serves at once.
    let idle: Vec<TcpStream> = (0..600)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    // /health still answers while they hold every slot.
    let t = Instant::now();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    let r = agent.get(&format!("{}/health", s.url)).call();
    assert!(
        matches!(&r, Ok(r) if r.status() == 200),
        "/health during 600 idle connections: {r:?} after {:?}",
        t.elapsed()
    );
    // And the idle ones are closed by the server within a few seconds, not held for long.
    let mut first = idle.into_iter().next().unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(8)))
        .unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 64];
    let n = first.read(&mut buf);
    assert!(
        matches!(n, Ok(0)) || n.is_err() && t.elapsed() < Duration::from_secs(8),
        "an idle connection was kept open: {n:?} after {:?}",
        t.elapsed()
    );
    // Once they are gone, every route is served again.
    let ok = crate::managed::eventually(10, || {
        agent
            .get(&format!("{}/openapi.json", s.url))
            .call()
            .is_ok_and(|r| r.status() == 200)
    });
    assert!(ok, "the server recovered");
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn a_hand_made_bind_label_becomes_no_link_and_no_probe() {
    let Some(docker) = support::docker() else {
        return;
    };
    let image = support::pull_stand_in(&docker);
    let name = support::unique_name("fp-badbind");
    let _g = Prefixed(docker.clone(), name.clone());
    support::docker_ok(
        &docker,
        &[
            "create",
            "--name",
            &name,
            "--label",
            "fractalic-publisher.managed=true",
            "--label",
            "fractalic-publisher.plugin=docker-registry",
            "--label",
            "fractalic-publisher.port=8001",
            "--label",
            "fractalic-publisher.bind=attacker@127.0.0.2",
            "--label",
            "fractalic-publisher.script=hello",
            &image,
        ],
    );
    let o = crate::managed::publisher(&docker, &["ps", "--all", "--json"]);
    crate::managed::assert_code(&o, 0);
    let rows: Value = serde_json::from_slice(&o.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name.as_str())
        .unwrap_or_else(|| panic!("{name} not listed: {rows}"));
    let text = row.to_string();
    assert!(!text.contains("attacker"), "{text}");
    assert_eq!(row["url"].as_str().unwrap_or(""), "", "{row}");
    let s = Served::start(&docker, &[]);
    let (code, body) = serve::call(
        serve::agent().get(&format!("{}/api/deployments?all=true", s.url)),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains("attacker@"), "{body}");
}
