//! `deploy` onto an existing deployment: in-place updates (atomic under load), updates by a new
//! container, nothing-changed, rollback, history, locks, and failure injection at each step
//! (a fake docker wrapper fails, stalls or is killed at one step) against the real engine.

use crate::managed::{self, assert_code, json, publisher};
use crate::support;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SETTINGS: &str = "defaultProvider = \"one\"\n[settings.one]\nmodel = \"m\"\napiKey = \"k\"\n";

fn script(version: &str) -> String {
    format!("# Demo {{id=d}}\n\n@shell\nprompt: echo {version}\nuse-header: \"# Out {{id=out}}\"\n\n@return\nblock: out\n")
}

/// A deployment under test: its folder, and every container whose name starts with its name
/// (the kept old ones, proof containers) removed when dropped.
struct Dep {
    name: String,
    folder: tempfile::TempDir,
    docker: PathBuf,
    image: String,
}

impl Drop for Dep {
    fn drop(&mut self) {
        let filter = format!("name=^{}", self.name);
        let out = support::run_docker(&self.docker, &["ps", "-aq", "--filter", &filter]);
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            support::run_docker(&self.docker, &["rm", "-f", "-v", id]);
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

    fn argv<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut a = managed::deploy_argv(self.folder.path(), &self.name, &self.image);
        a.push("--json");
        a.extend_from_slice(extra);
        a
    }

    /// Deploys with the real docker (or `docker`), `--json`.
    fn deploy_with(&self, docker: &Path, extra: &[&str]) -> Output {
        publisher(docker, &self.argv(extra))
    }

    fn deploy(&self, extra: &[&str]) -> Value {
        let o = self.deploy_with(&self.docker, extra);
        assert_code(&o, 0);
        json(&o)
    }

    fn write(&self, version: &str) {
        std::fs::write(self.folder.path().join("hello.md"), script(version)).unwrap();
    }

    fn url(&self) -> String {
        let port = support::docker_ok(
            &self.docker,
            &[
                "inspect",
                "-f",
                "{{index .Config.Labels \"fractalic-publisher.port\"}}",
                &self.name,
            ],
        );
        format!("http://localhost:{}", port.trim())
    }

    /// What the deployment serves: the version in its script, via /execute.
    fn serves(&self) -> String {
        execute(&self.url()).unwrap_or_else(|e| panic!("{} does not serve: {e}", self.name))
    }

    fn container_id(&self) -> String {
        support::docker_ok(
            &self.docker,
            &["inspect", "-f", "{{.Id}} {{.State.StartedAt}}", &self.name],
        )
    }

    fn history(&self) -> Value {
        let o = publisher(&self.docker, &["history", &self.name, "--json"]);
        assert_code(&o, 0);
        json(&o)
    }

    /// Containers whose names start with this deployment's name.
    fn containers(&self) -> Vec<String> {
        managed::containers_named(&self.docker, &self.name)
    }

    /// The state a failed update must leave: same container, running, healthy, serving v1,
    /// release unchanged, no leftovers.
    fn assert_as_before(&self, id: &str, current: &str, containers: &[String]) {
        assert!(
            managed::eventually(30, || support::wait_http(
                &format!("{}/health", self.url()),
                Duration::from_secs(1)
            )
            .is_some_and(|(s, _)| s == 200)),
            "{} is not healthy again",
            self.name
        );
        assert_eq!(self.serves(), "v1");
        assert_eq!(
            self.container_id().split(' ').next(),
            id.split(' ').next(),
            "the deployment is another container now"
        );
        assert_eq!(self.history()["current"], current);
        let mut left = self.containers();
        left.sort();
        let mut before = containers.to_vec();
        before.sort();
        assert_eq!(left, before, "containers differ from before the update");
    }
}

/// POST /execute of the deployed script; the version it echoes.
fn execute(url: &str) -> Result<String, String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    let r = agent
        .post(&format!("{url}/execute"))
        .send_json(serde_json::json!({"filename": "/payload/hello/hello.md"}))
        .map_err(|e| e.to_string())?;
    let v: Value = r.into_json().map_err(|e| e.to_string())?;
    if v["success"] != true {
        return Err(v.to_string());
    }
    // The block the script's `@shell` made: `# Out {id=out}`, then the echoed version.
    let content = v["return_content"].as_str().unwrap_or("");
    content
        .strip_prefix("# Out {id=out}\n")
        .and_then(|rest| rest.lines().next())
        .map(str::to_string)
        .ok_or_else(|| format!("no version in {content:?}"))
}

/// Hits /health and /execute every 20 ms until stopped; records every answer or error.
struct Poller {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Result<String, String>>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Poller {
    fn start(url: String) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (Arc::clone(&stop), Arc::clone(&seen));
        let handle = std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(5))
                .build();
            while !s.load(Ordering::Relaxed) {
                let health = agent
                    .get(&format!("{url}/health"))
                    .call()
                    .map(|_| ())
                    .map_err(|e| format!("/health: {e}"));
                let got = health.and_then(|()| execute(&url));
                r.lock().unwrap().push(got);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Poller {
            stop,
            seen,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Vec<Result<String, String>> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
        self.seen.lock().unwrap().clone()
    }
}

/// A docker wrapper running `prelude` (sh; `$REAL` is the real docker) before each call.
fn wrapper(dir: &Path, docker: &Path, prelude: &str) -> PathBuf {
    let log = dir.join("calls.log");
    managed::docker_wrapper(
        dir,
        docker,
        &log,
        &format!("REAL='{}'\n{prelude}", docker.display()),
    )
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn in_place_update_is_atomic_under_load_and_rollback_twice_returns() {
    let Some(docker) = support::docker() else {
        return;
    };
    let dep = Dep::new(&docker, "fp-upd-inplace");
    let first = dep.deploy(&[]);
    assert_eq!(first["details"]["release"], "r1", "{first}");
    let id = dep.container_id();
    assert_eq!(dep.serves(), "v1");

    // Nothing changed: nothing touched, exit 0, said so.
    let same = dep.deploy(&[]);
    assert_eq!(same["details"]["update"]["kind"], "none", "{same}");
    assert_eq!(dep.container_id(), id);
    assert_eq!(dep.history()["releases"].as_array().unwrap().len(), 1);

    // A script change goes in place under load: no error, and after the switch only v2.
    let poller = Poller::start(dep.url());
    assert!(managed::eventually(10, || poller
        .seen
        .lock()
        .unwrap()
        .len()
        >= 5));
    dep.write("v2");
    let up = dep.deploy(&[]);
    let after_switch = poller.seen.lock().unwrap().len();
    assert!(managed::eventually(10, || poller
        .seen
        .lock()
        .unwrap()
        .len()
        >= after_switch + 5));
    let seen = poller.finish();
    let u = &up["details"]["update"];
    assert_eq!(u["kind"], "in-place", "{up}");
    assert_eq!(u["restarted"], false);
    assert_eq!(
        u["changes"]["files_changed"],
        serde_json::json!(["hello.md"])
    );
    assert_eq!(
        dep.container_id(),
        id,
        "an in-place update must not restart the container"
    );
    let errors: Vec<&String> = seen.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        errors.is_empty(),
        "requests failed during the switch: {errors:?}"
    );
    let versions: Vec<&str> = seen.iter().filter_map(|r| r.as_deref().ok()).collect();
    let first_v2 = versions
        .iter()
        .position(|v| *v == "v2")
        .expect("never saw v2");
    assert!(
        versions[..first_v2].iter().all(|v| *v == "v1"),
        "{versions:?}"
    );
    assert!(
        versions[first_v2..].iter().all(|v| *v == "v2"),
        "old content after the switch: {versions:?}"
    );
    assert!(
        versions[after_switch..].iter().all(|v| *v == "v2"),
        "{versions:?}"
    );

    // settings.toml is read per request: in place too, and the next request sees it.
    std::fs::write(
        dep.folder.path().join("settings.toml"),
        SETTINGS.replace("one", "two"),
    )
    .unwrap();
    let s = dep.deploy(&[]);
    assert_eq!(s["details"]["update"]["kind"], "in-place", "{s}");
    assert_eq!(
        s["details"]["update"]["changes"]["config"],
        serde_json::json!(["settings.toml changed"])
    );
    assert_eq!(dep.container_id(), id);
    let out = ureq::post(&format!("{}/execute", dep.url()))
        .send_json(serde_json::json!({"filename": "/payload/hello/hello.md"}))
        .unwrap()
        .into_json::<Value>()
        .unwrap();
    assert!(
        out["output"].as_str().unwrap().contains("provider two"),
        "{out}"
    );

    // rollback twice returns to where it started; history tells the truth.
    let o = publisher(&docker, &["rollback", &dep.name, "--json"]);
    assert_code(&o, 0);
    assert_eq!(json(&o)["of"], "r2");
    assert_eq!(dep.serves(), "v2");
    let o = publisher(&docker, &["rollback", &dep.name, "--json"]);
    assert_code(&o, 0);
    assert_eq!(json(&o)["of"], "r3");
    let h = dep.history();
    let kinds: Vec<&str> = h["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["initial", "in-place", "in-place", "rollback", "rollback"],
        "{h}"
    );
    assert_eq!(h["current"], "r5");
    assert_eq!(dep.container_id(), id);
    let o = publisher(&docker, &["rollback", &dep.name, "--to", "r99"]);
    assert_code(&o, 2);
    let text = publisher(&docker, &["history", &dep.name]);
    assert_code(&text, 0);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("*r5") && text.contains("files changed: hello.md"),
        "{text}"
    );
    assert!(
        !text.contains("apiKey") && !text.contains("\"k\""),
        "{text}"
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn container_update_proves_the_new_one_first_and_keeps_the_old_for_rollback() {
    let Some(docker) = support::docker() else {
        return;
    };
    let dep = Dep::new(&docker, "fp-upd-container");
    dep.deploy(&[]);
    let id = dep.container_id();
    let port = dep.url();
    dep.write("v2");
    let up = dep.deploy(&["--env", "FEATURE=on"]);
    let u = &up["details"]["update"];
    assert_eq!(u["kind"], "container", "{up}");
    assert_eq!(u["changes"]["env_added"], serde_json::json!(["FEATURE"]));
    assert!(!up.to_string().contains("=on"), "an env value leaked: {up}");
    assert_ne!(dep.container_id(), id);
    assert_eq!(dep.url(), port, "the deployment keeps its port");
    assert_eq!(dep.serves(), "v2");
    let h = dep.history();
    assert_eq!(h["releases"][1]["state"]["env"]["FEATURE"], "set", "{h}");
    assert!(!h.to_string().contains("=on"), "{h}");
    let env = support::docker_ok(
        &docker,
        &["inspect", "-f", "{{json .Config.Env}}", &dep.name],
    );
    assert!(env.contains("FEATURE=on"), "{env}");
    // The old one is kept, stopped, and not listed as a deployment of its own.
    let all = dep.containers();
    assert_eq!(all.len(), 2, "{all:?}");
    let ps = publisher(&docker, &["ps", "--all", "--json"]);
    let listed = json(&ps).to_string();
    assert!(
        !all.iter()
            .any(|c| *c != dep.name && listed.contains(&format!("\"{c}\""))),
        "{listed}"
    );

    // Rolling back puts the kept container back on the port.
    let o = publisher(&docker, &["rollback", &dep.name, "--json"]);
    assert_code(&o, 0);
    assert_eq!(json(&o)["kind"], "container");
    assert_eq!(dep.container_id().split(' ').next(), id.split(' ').next());
    assert_eq!(dep.serves(), "v1");
    assert_eq!(dep.history()["current"], "r3");
    // rm removes the kept ones too.
    assert_code(&publisher(&docker, &["rm", "--force", &dep.name]), 0);
    assert!(dep.containers().is_empty(), "{:?}", dep.containers());
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn another_plugins_or_foreign_container_is_refused() {
    let Some(docker) = support::docker() else {
        return;
    };
    let (name, _guard) = managed::foreign_container(&docker, "fp-upd-foreign");
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("hello.md"), script("v1")).unwrap();
    let image = support::pull_stand_in(&docker);
    let o = publisher(&docker, &managed::deploy_argv(folder.path(), &name, &image));
    assert_code(&o, 2);
}

/// Failure injection during an in-place update: afterwards the same container serves v1,
/// healthy, release r1 current, nothing else exists.
#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn in_place_failures_at_each_step_leave_it_as_before() {
    let Some(docker) = support::docker() else {
        return;
    };
    let steps: &[(&str, &str)] = &[
        // The copy of the new release fails (once: the failure is then recorded).
        // The copy of the new release fails inside the container (its stdin is cut off).
        ("copy fails", "case \"$*\" in *'shift 3'*) exec \"$REAL\" \"$@\" </dev/null;; esac"),
        // The switch runs, then its verification fails (the exec exits non-zero).
        ("switch fails", "case \"$*\" in *'shift 3'*) \"$REAL\" \"$@\" >/dev/null 2>&1; echo 'exec failed' >&2; exit 4;; esac"),
    ];
    for (what, prelude) in steps {
        let dep = Dep::new(&docker, "fp-upd-ipfail");
        dep.deploy(&["--timeout", "5"]);
        let id = dep.container_id();
        let before = dep.containers();
        dep.write("v2");
        let dir = tempfile::tempdir().unwrap();
        let prelude = format!("D='{}'\n{prelude}", dir.path().display());
        let w = wrapper(dir.path(), &docker, &prelude);
        let o = dep.deploy_with(&w, &["--timeout", "5"]);
        assert_code(&o, 1);
        let v = json(&o);
        assert!(
            v["error"].as_str().unwrap().contains("back on release r1"),
            "{what}: {v}"
        );
        dep.assert_as_before(&id, "r1", &before);
        let h = dep.history();
        let last = h["releases"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["outcome"], "rolled back", "{what}: {h}");
        // The next deploy works.
        let up = dep.deploy(&[]);
        assert_eq!(up["details"]["update"]["kind"], "in-place", "{what}: {up}");
        assert_eq!(dep.serves(), "v2", "{what}");
    }
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn interrupted_or_killed_in_place_updates_are_undone_or_recoverable() {
    let Some(docker) = support::docker() else {
        return;
    };
    for signal in ["INT", "KILL"] {
        let dep = Dep::new(&docker, "fp-upd-ipsig");
        dep.deploy(&[]);
        let id = dep.container_id();
        let before = dep.containers();
        dep.write("v2");
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("switched");
        // Stalls right after the switch ran, before the tool hears back.
        let w = wrapper(
            dir.path(),
            &docker,
            &format!(
                "case \"$*\" in *'shift 3'*) \"$REAL\" \"$@\"; : > '{}'; sleep 30; exit 1;; esac",
                marker.display()
            ),
        );
        let mut child = managed::command(&w, &dep.argv(&[]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert!(
            managed::eventually(30, || marker.exists()),
            "{signal}: the switch never ran"
        );
        let kill = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let status = managed::wait_exit(&mut child, 30);
        if signal == "INT" {
            assert_eq!(status.code(), Some(130));
            dep.assert_as_before(&id, "r1", &before);
        } else {
            // Killed after the switch: v2 is served unproven; the next deploy converges
            // and rollback still reaches v1.
            let up = dep.deploy(&[]);
            assert_eq!(dep.serves(), "v2", "{up}");
            assert_eq!(dep.container_id(), id);
            let o = publisher(&docker, &["rollback", &dep.name, "--to", "r1", "--json"]);
            assert_code(&o, 0);
            assert_eq!(dep.serves(), "v1");
        }
    }
}

/// Failure injection during an update that needs a new container: afterwards the old
/// container is back on its port, running, healthy, serving v1; the new ones are gone.
#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn container_update_failures_at_each_step_put_the_old_one_back() {
    let Some(docker) = support::docker() else {
        return;
    };
    let cases: &[(&str, &[&str], &str)] = &[
        ("new container exits", &["--env", "STAND_IN_EXIT_AFTER_MS=300"], ""),
        ("health fails", &["--env", "STAND_IN_HEALTH=unhealthy"], ""),
        // The port is taken between stopping the old one and starting the new one.
        ("port clash", &["--env", "X=1"], "if [ \"$1\" = start ] && [ \"$2\" = \"$NAME\" ]; then echo \"Error response from daemon: Bind for 127.0.0.1:1 failed: port is already allocated\" >&2; exit 1; fi"),
        // The new one on the real port dies right after it starts.
        ("final exits", &["--env", "X=1"], "if [ \"$1\" = start ] && [ \"$2\" = \"$NAME\" ]; then printf 'STAND_IN_EXIT_AFTER_MS=200\\n' > \"$D/stand-in.env\"; tar -C \"$D\" -cf - stand-in.env | \"$REAL\" cp - \"$NAME:/fractalic/\"; fi"),
    ];
    for (what, extra, prelude) in cases {
        let dep = Dep::new(&docker, "fp-upd-cfail");
        dep.deploy(&[]);
        let id = dep.container_id();
        let before = dep.containers();
        dep.write("v2");
        let dir = tempfile::tempdir().unwrap();
        let prelude = format!(
            "NAME='{}'; D='{}'\n{prelude}",
            dep.name,
            dir.path().display()
        );
        let w = wrapper(dir.path(), &docker, &prelude);
        let mut args = vec!["--timeout", "8"];
        args.extend_from_slice(extra);
        let o = dep.deploy_with(&w, &args);
        assert_code(&o, 1);
        let v = json(&o);
        assert!(v["error"].as_str().unwrap().contains("old"), "{what}: {v}");
        dep.assert_as_before(&id, "r1", &before);
        let h = dep.history();
        assert_eq!(
            h["releases"].as_array().unwrap().last().unwrap()["outcome"],
            "rolled back",
            "{what}: {h}"
        );
    }
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn interrupted_or_killed_container_updates_are_undone_or_recoverable() {
    let Some(docker) = support::docker() else {
        return;
    };
    for signal in ["INT", "KILL"] {
        let dep = Dep::new(&docker, "fp-upd-csig");
        dep.deploy(&[]);
        let id = dep.container_id();
        let before = dep.containers();
        dep.write("v2");
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("at-start");
        // Stalls when the new container is about to take the real port (the old one is
        // stopped and renamed aside by then: the worst moment).
        let w = wrapper(
            dir.path(),
            &docker,
            &format!(
                "if [ \"$1\" = start ] && [ \"$2\" = '{}' ]; then : > '{}'; sleep 30; exit 1; fi",
                dep.name,
                marker.display()
            ),
        );
        let mut child = managed::command(&w, &dep.argv(&["--env", "X=1"]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert!(
            managed::eventually(60, || marker.exists()),
            "{signal}: never reached the final start"
        );
        let kill = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let status = managed::wait_exit(&mut child, 60);
        if signal == "INT" {
            assert_eq!(status.code(), Some(130));
        } else {
            // The next command under the lock puts the old one back.
            let o = publisher(&docker, &["rollback", &dep.name, "--json"]);
            let _ = o;
        }
        dep.assert_as_before(&id, "r1", &before);
    }
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn concurrent_deploys_of_one_name_never_interleave() {
    let Some(docker) = support::docker() else {
        return;
    };
    let dep = Dep::new(&docker, "fp-upd-lock");
    dep.deploy(&[]);
    dep.write("v2");
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("copying");
    // The first update stalls before its copy-and-switch, holding the lock.
    let w = wrapper(
        dir.path(),
        &docker,
        &format!(
            "case \"$*\" in *'shift 3'*) : > '{}'; sleep 8;; esac",
            marker.display()
        ),
    );
    let first = managed::command(&w, &dep.argv(&[]))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(managed::eventually(30, || marker.exists()));
    // Fails fast, naming the holder.
    let o = dep.deploy_with(&docker, &[]);
    assert_code(&o, 2);
    let err = json(&o)["error"].as_str().unwrap().to_string();
    assert!(
        err.contains(&format!("pid {}", first.id())) && err.contains("deploy"),
        "{err}"
    );
    // Other commands that change it are refused too, by the CLI and the REST server alike.
    assert_code(&publisher(&docker, &["stop", &dep.name]), 2);
    let served = crate::serve::Served::start(&docker, &[]);
    let r = ureq::post(&format!("{}/api/deployments/{}/stop", served.url, dep.name)).call();
    match r {
        Err(ureq::Error::Status(409, body)) => {
            let body = body.into_string().unwrap();
            assert!(body.contains("is locked by pid"), "{body}");
        }
        other => panic!("REST stop during a deploy: {other:?}"),
    }
    drop(served);
    // Waits with --lock-wait, then finds nothing left to do.
    let o = dep.deploy_with(&docker, &["--lock-wait", "60"]);
    assert_code(&o, 0);
    assert_eq!(
        json(&o)["details"]["update"]["kind"],
        "none",
        "{}",
        json(&o)
    );
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(dep.serves(), "v2");

    // A holder killed with SIGKILL leaves a lock that is simply free.
    let marker2 = dir.path().join("copying2");
    let w2 = wrapper(
        dir.path(),
        &docker,
        &format!(
            "case \"$*\" in *'shift 3'*) : > '{}'; sleep 30; exit 1;; esac",
            marker2.display()
        ),
    );
    dep.write("v3");
    let mut killed = managed::command(&w2, &dep.argv(&[]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(managed::eventually(30, || marker2.exists()));
    killed.kill().unwrap();
    killed.wait().unwrap();
    let up = dep.deploy(&[]);
    assert_eq!(up["details"]["update"]["kind"], "in-place", "{up}");
    assert_eq!(dep.serves(), "v3");
}
