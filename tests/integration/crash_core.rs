//! Issue 16, failures 2 and 3: a swap of containers killed with SIGKILL half-way. The next
//! natural command finds the dead run's durable journal and puts the deployment back on a
//! complete release it can name; `status` never says healthy for a broken one; `stop` then a
//! deploy work. Real engine, stand-in image; each kill is triggered by what the run is doing
//! (a progress line, or the docker call it makes), never by a fixed delay.

use crate::managed::{self, assert_code, json, publisher};
use crate::support;
use serde_json::Value;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

const SETTINGS: &str = "defaultProvider = \"one\"\n[settings.one]\nmodel = \"m\"\napiKey = \"k\"\n";

fn script(version: &str) -> String {
    format!("# Demo {{id=d}}\n\n@shell\nprompt: echo {version}\nuse-header: \"# Out {{id=out}}\"\n\n@return\nblock: out\n")
}

/// A deployment under test; every container whose name starts with its name is removed when
/// dropped.
struct Dep {
    name: String,
    folder: tempfile::TempDir,
    docker: PathBuf,
    image: String,
}

impl Drop for Dep {
    fn drop(&mut self) {
        for c in managed::containers_named(&self.docker, &self.name) {
            support::run_docker(&self.docker, &["rm", "-f", "-v", &c]);
        }
    }
}

impl Dep {
    fn new(docker: &Path, prefix: &str) -> Dep {
        let folder = tempfile::tempdir().unwrap();
        std::fs::write(folder.path().join("hello.md"), script("v1")).unwrap();
        std::fs::write(folder.path().join("settings.toml"), SETTINGS).unwrap();
        Dep {
            name: support::unique_name(prefix),
            folder,
            docker: docker.to_path_buf(),
            image: support::pull_stand_in(docker),
        }
    }

    fn write(&self, version: &str) {
        std::fs::write(self.folder.path().join("hello.md"), script(version)).unwrap();
    }

    fn argv<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut a = managed::deploy_argv(self.folder.path(), &self.name, &self.image);
        a.push("--json");
        a.extend_from_slice(extra);
        a
    }

    fn deploy(&self, extra: &[&str]) -> Value {
        let o = publisher(&self.docker, &self.argv(extra));
        assert_code(&o, 0);
        json(&o)
    }

    /// What the deployment serves on its published port: the version in its script.
    fn serves(&self) -> Result<String, String> {
        let port = support::docker_ok(
            &self.docker,
            &[
                "inspect",
                "-f",
                "{{index .Config.Labels \"fractalic-publisher.port\"}}",
                &self.name,
            ],
        );
        execute(&format!("http://localhost:{}", port.trim()))
    }

    /// Eventually serves `version` (the container may still be starting).
    fn assert_serves(&self, version: &str, when: &str) {
        let mut last = Err(String::new());
        let ok = managed::eventually(60, || {
            last = self.serves();
            last.as_deref() == Ok(version)
        });
        assert!(
            ok,
            "{when}: {} does not serve {version}: {last:?}",
            self.name
        );
    }

    /// Containers of this deployment (by its label) that are running.
    fn running(&self) -> Vec<String> {
        let filter = format!("label=fractalic-publisher.deployment={}", self.name);
        let out = support::docker_ok(
            &self.docker,
            &["ps", "--filter", &filter, "--format", "{{.Names}}"],
        );
        out.split_whitespace().map(str::to_string).collect()
    }

    fn status(&self) -> Value {
        let o = publisher(&self.docker, &["status", &self.name, "--json"]);
        assert_code(&o, 0);
        json(&o)
    }

    /// `status` must not say healthy unless it really serves `version` under its own name.
    fn assert_status_true(&self, version: &str, when: &str) {
        let v = self.status();
        assert_eq!(v["state"], "running", "{when}: {v}");
        assert_ne!(
            v["healthy"], false,
            "{when}: status says unhealthy after the repair: {v}"
        );
        self.assert_serves(version, when);
        assert_eq!(
            self.running(),
            vec![self.name.clone()],
            "{when}: only the deployment itself runs (no proof or renamed container)"
        );
    }
}

fn execute(url: &str) -> Result<String, String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    let r = agent
        .post(&format!("{url}/execute"))
        .send_json(serde_json::json!({"filename": "/payload/hello/hello.md"}))
        .map_err(|e| e.to_string())?;
    let v: Value = r.into_json().map_err(|e| e.to_string())?;
    let content = v["return_content"].as_str().unwrap_or("");
    content
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .ok_or_else(|| format!("no version in {v}"))
}

/// Runs the binary with `args` and kills it with SIGKILL as soon as its progress (stderr)
/// shows a line containing `trigger`; returns once it is dead.
fn kill_on_line(docker: &Path, args: &[&str], trigger: &str) {
    let mut child = managed::command(docker, args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut hit = false;
    for line in std::io::BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        if line.contains(trigger) {
            child.kill().unwrap(); // SIGKILL
            hit = true;
            break;
        }
        seen.push(line);
    }
    let status = managed::wait_exit(&mut child, 60);
    assert!(
        hit,
        "the run ended ({status:?}) without printing {trigger:?}:\n{}",
        seen.join("\n")
    );
}

/// Runs the binary and kills it with SIGKILL once `marker` exists (a docker wrapper makes it
/// at the moment the test is about).
fn kill_on_marker(docker: &Path, args: &[&str], marker: &Path) {
    let mut child = managed::command(docker, args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reached = managed::eventually(90, || {
        marker.exists() || child.try_wait().ok().flatten().is_some()
    });
    assert!(
        reached && marker.exists(),
        "the run never reached the kill point"
    );
    child.kill().unwrap();
    managed::wait_exit(&mut child, 30);
}

/// Failure 3: a container update killed right after "Creating the new NAME" (the old one
/// renamed aside and still serving, the new one being created). Then the next natural
/// command: `status` (repairs: the old one is back under its name, healthy and serving v1),
/// `stop` really stops it, and a deploy works; or, straight away, the same deploy again.
#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn container_update_killed_after_creating_the_new_one_is_repaired_by_the_next_command() {
    let Some(docker) = support::docker() else {
        return;
    };
    for next in ["status", "deploy"] {
        let dep = Dep::new(&docker, "fp-crash-cupd");
        dep.deploy(&[]);
        dep.write("v2");
        // Without --json: the progress lines go to stderr.
        let mut argv = managed::deploy_argv(dep.folder.path(), &dep.name, &dep.image);
        argv.extend(["--env", "X=1"]);
        kill_on_line(&docker, &argv, &format!("Creating the new {}", dep.name));
        if next == "status" {
            dep.assert_status_true("v1", "after the kill");
            let h = publisher(&docker, &["history", &dep.name, "--json"]);
            assert_code(&h, 0);
            assert_eq!(json(&h)["current"], "r1", "history names what is live");
            let o = publisher(&docker, &["stop", &dep.name, "--json"]);
            assert_code(&o, 0);
            assert!(
                dep.running().is_empty(),
                "`stop` said it stopped {} but {:?} still run",
                dep.name,
                dep.running()
            );
        }
        // The repairing deploy (or the one after `stop`) works and serves the new release.
        let v = dep.deploy(&["--env", "X=1"]);
        assert_eq!(v["success"], true, "{next}: {v}");
        dep.assert_serves("v2", &format!("{next}: the deploy after the kill"));
        assert_eq!(dep.running(), vec![dep.name.clone()], "{next}");
    }
}

/// Failure 2: a rollback onto a kept container killed between the stop of the live one and
/// the start of the kept one (both exited, nothing serving). The next command puts the live
/// release (r2, v2) back; the rollback then works; `stop` then a deploy work.
#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn rollback_onto_a_kept_container_killed_in_the_gap_is_repaired_by_the_next_command() {
    let Some(docker) = support::docker() else {
        return;
    };
    let dep = Dep::new(&docker, "fp-crash-rb");
    dep.deploy(&[]);
    dep.write("v2");
    // A new container (the environment changed): r1's container is kept for the rollback.
    let up = dep.deploy(&["--env", "X=1"]);
    assert_eq!(up["details"]["update"]["kind"], "container", "{up}");
    dep.assert_serves("v2", "after the update");
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("gap");
    // Docker stalls the start of the kept container (renamed to NAME by then, the live one
    // stopped): the run is killed in that gap.
    let w = managed::docker_wrapper(
        dir.path(),
        &docker,
        &dir.path().join("calls.log"),
        &format!(
            "if [ \"$1\" = start ] && [ \"$2\" = '{}' ]; then : > '{}'; sleep 60; exit 1; fi",
            dep.name,
            marker.display()
        ),
    );
    kill_on_marker(&w, &["rollback", &dep.name, "--json"], &marker);
    dep.assert_status_true("v2", "after the killed rollback");
    // The rollback, run again, works.
    let o = publisher(&docker, &["rollback", &dep.name, "--json"]);
    assert_code(&o, 0);
    dep.assert_serves("v1", "after the rollback");
    let o = publisher(&docker, &["stop", &dep.name, "--json"]);
    assert_code(&o, 0);
    assert!(dep.running().is_empty(), "{:?}", dep.running());
    dep.write("v3");
    dep.deploy(&["--env", "X=2"]);
    dep.assert_serves("v3", "the deploy after stop");
}

/// A kill whose undo cannot run (the daemon does not answer the renames): the journal is
/// kept, `stop` and `status` say what is unfinished and how to repair it instead of
/// "Stopped" or "healthy", and once Docker answers the next `status` repairs it.
#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn an_undo_docker_cannot_run_is_kept_and_said_then_repaired_when_it_can() {
    let Some(docker) = support::docker() else {
        return;
    };
    let dep = Dep::new(&docker, "fp-crash-down");
    dep.deploy(&[]);
    dep.write("v2");
    let mut argv = managed::deploy_argv(dep.folder.path(), &dep.name, &dep.image);
    argv.extend(["--env", "X=1"]);
    kill_on_line(&docker, &argv, &format!("Creating the new {}", dep.name));
    let dir = tempfile::tempdir().unwrap();
    let down = managed::docker_wrapper(
        dir.path(),
        &docker,
        &dir.path().join("calls.log"),
        "if [ \"$1\" = rename ]; then echo 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?' >&2; exit 1; fi",
    );
    let o = publisher(&down, &["stop", &dep.name, "--json"]);
    assert_code(&o, 1);
    let e = json(&o)["error"].as_str().unwrap().to_string();
    assert!(e.contains("unfinished work"), "{e}");
    assert!(
        e.contains(&format!("fractalic-publisher status {}", dep.name)),
        "{e}"
    );
    assert!(
        !dep.running().is_empty(),
        "the refused stop changed nothing: the old release still runs"
    );
    let o = publisher(&down, &["status", &dep.name, "--json"]);
    let (so, se) = managed::out(&o);
    assert!(
        !so.contains("\"healthy\":true")
            && (so.contains("unfinished") || se.contains("unfinished")),
        "status must not say healthy while the undo is unfinished:\n{so}\n{se}"
    );
    // Docker answers again: the next command repairs it.
    dep.assert_status_true("v1", "once Docker answers");
    let o = publisher(&docker, &["stop", &dep.name, "--json"]);
    assert_code(&o, 0);
    assert!(dep.running().is_empty(), "{:?}", dep.running());
}

/// `serve` reconciles every name at start-up: a journal a killed run left (here: a file with
/// a secret it had recorded, in a state directory of this test) is undone and removed before
/// the server says it listens.
#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn serve_finishes_a_killed_runs_journal_at_start_up() {
    let Some(docker) = support::docker() else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let journals = state.path().join("journals");
    std::fs::create_dir_all(&journals).unwrap();
    let secret = state.path().join("fractalic-env-left");
    std::fs::write(&secret, "API_TOKEN=tok-LEFT-BEHIND\n").unwrap();
    // Written by a process that is gone (a reaped child's pid).
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let pid = dead.id();
    dead.wait().unwrap();
    let name = support::unique_name("fp-crash-serve");
    let run = format!("{pid}-1-dead");
    let journal = journals.join(format!("{run}.jsonl"));
    std::fs::write(
        &journal,
        format!(
            "{}\n{}\n",
            serde_json::json!({"journal": 1, "run": run, "pid": pid, "start": 1,
                "name": name, "command": "deploy", "since": "2026-12-03T10:00:00Z"}),
            serde_json::json!({"add": 1, "confirmed": true,
                "res": {"kind": "temp_file", "path": secret}}),
        ),
    )
    .unwrap();
    let served = crate::serve::Served::try_start(
        &docker,
        &[],
        &[("FRACTALIC_STATE_DIR", state.path().to_str().unwrap())],
    )
    .unwrap();
    assert!(!secret.exists(), "the killed run's secret file is deleted");
    assert!(!journal.exists(), "its journal is finished and removed");
    drop(served);
}
