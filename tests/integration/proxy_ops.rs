//! The front proxy under real use (issue 19): a poller every 20 ms through a proxied
//! deployment's URL while it changes image, environment and port and rolls back (no request
//! fails, and once a command returns only its release answers), the one short gap of a move
//! behind the proxy and back (measured, on the same URL), and a proxy removed by hand that the
//! next command on a proxied deployment brings back with every route. Real engine, the
//! stand-in and the test bed's Caddy image; these take turns with `proxy`'s tests.

use crate::support;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PROXY: &str = "fractalic-publisher-proxy";

/// The script of release `version`: `/execute` answers with the version.
fn script(version: &str) -> String {
    format!("# Demo {{id=d}}\n\n@shell\nprompt: echo {version}\nuse-header: \"# Out {{id=out}}\"\n\n@return\nblock: out\n")
}

/// The proxy image of the test bed, or None (a skip; a failure with CI=true).
fn bed() -> Option<(PathBuf, String, std::sync::MutexGuard<'static, ()>)> {
    let docker = support::docker()?;
    if std::env::var_os("FRACTALIC_PUBLISHER_PROXY_IMAGE").is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but FRACTALIC_PUBLISHER_PROXY_IMAGE is not set (scripts/test.sh sets it)"
        );
        eprintln!("SKIPPED: FRACTALIC_PUBLISHER_PROXY_IMAGE is not set");
        return None;
    }
    let one = crate::proxy::serial();
    let image = support::pull_stand_in(&docker);
    Some((docker, image, one))
}

fn publisher(docker: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fractalic-publisher"))
        .arg("--docker")
        .arg(docker)
        .args(args)
        .output()
        .expect("run fractalic-publisher")
}

fn ok(docker: &Path, args: &[&str]) -> Output {
    let out = publisher(docker, args);
    assert!(
        out.status.success(),
        "fractalic-publisher {} -> {:?}\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A deployment under test: its folder (one release at a time), removed with its proxy
/// (when nothing else uses it) when dropped.
struct Dep {
    docker: PathBuf,
    name: String,
    dir: tempfile::TempDir,
}

impl Drop for Dep {
    fn drop(&mut self) {
        let _ = publisher(&self.docker, &["rm", "--force", &self.name]);
        let _ = publisher(&self.docker, &["proxy", "down"]);
    }
}

impl Dep {
    fn new(docker: &Path, prefix: &str) -> Dep {
        Dep {
            docker: docker.to_path_buf(),
            name: support::unique_name(prefix),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes release `version` and deploys it with `extra`; returns the output.
    fn deploy(&self, image: &str, version: &str, extra: &[&str]) -> Output {
        std::fs::write(self.dir.path().join("hello.md"), script(version)).unwrap();
        std::fs::write(
            self.dir.path().join("settings.toml"),
            "defaultProvider = \"one\"\n[settings.one]\nmodel = \"m\"\napiKey = \"sk-ops\"\n",
        )
        .unwrap();
        let f = self.dir.path().display().to_string();
        let mut args = vec![
            "deploy",
            "docker-registry",
            "--script-name",
            "hello",
            "--script-folder",
            &f,
            "--name",
            &self.name,
            "--image",
            image,
            "--pull",
            "missing",
            "--progress",
            "plain",
        ];
        args.extend_from_slice(extra);
        ok(&self.docker, &args)
    }

    fn status(&self) -> Value {
        let out = ok(&self.docker, &["status", &self.name, "--json"]);
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    fn url(&self) -> String {
        self.status()["url"].as_str().unwrap().to_string()
    }
}

/// The version `/execute` at `base` answers.
fn version(agent: &ureq::Agent, base: &str) -> Result<String, String> {
    let r = agent
        .post(&format!("{base}/execute"))
        .send_json(serde_json::json!({ "filename": "/payload/hello/hello.md" }))
        .map_err(|e| e.to_string())?;
    let v: Value = r.into_json().map_err(|e| e.to_string())?;
    if v["success"] != true {
        return Err(format!("/execute: {v}"));
    }
    v["return_content"]
        .as_str()
        .unwrap_or("")
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .ok_or_else(|| format!("no version in {v}"))
}

/// One request of the poller: when it started and ended, and what answered.
#[derive(Clone, Debug)]
struct Answer {
    start: Instant,
    end: Instant,
    got: Result<String, String>,
}

/// POSTs `/execute` every 20 ms to the first of `urls` that answers (a port change moves the
/// deployment from the first to the second); a request fails only when none answers.
struct Poller {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Answer>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Poller {
    fn start(urls: &[String]) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (s, l, urls) = (stop.clone(), log.clone(), urls.to_vec());
        let handle = std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(5))
                .build();
            let deadline = Instant::now() + Duration::from_secs(600);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                let start = Instant::now();
                let mut got = Err(String::new());
                for u in &urls {
                    got = version(&agent, u).map_err(|e| format!("{u}: {e}"));
                    if got.is_ok() {
                        break;
                    }
                }
                l.lock().unwrap().push(Answer {
                    start,
                    end: Instant::now(),
                    got,
                });
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let p = Poller {
            stop,
            log,
            handle: Some(handle),
        };
        let t0 = Instant::now();
        while p
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.got.is_ok())
            .count()
            < 5
        {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "the poller never got an answer: {:?}",
                p.log.lock().unwrap().last()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    fn finish(mut self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().expect("poller");
        }
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

/// The windows of consecutive failed requests: (first failure's start, the next answer's end).
fn gaps(log: &[Answer]) -> Vec<(Instant, Instant, usize)> {
    let mut out = Vec::new();
    let mut open: Option<(Instant, usize)> = None;
    for a in log {
        match (&a.got, open) {
            (Err(_), None) => open = Some((a.start, 1)),
            (Err(_), Some((t, n))) => open = Some((t, n + 1)),
            (Ok(_), Some((t, n))) => {
                out.push((t, a.end, n));
                open = None;
            }
            (Ok(_), None) => {}
        }
    }
    if let Some((t, n)) = open {
        out.push((t, log.last().map_or(t, |a| a.end), n));
    }
    out
}

/// A second image of the stand-in (another id, the same behaviour) for an image change.
struct SecondImage(PathBuf, String);

impl Drop for SecondImage {
    fn drop(&mut self) {
        let _ = support::run_docker(&self.0, &["rmi", "-f", &self.1]);
    }
}

fn second_image(docker: &Path, image: &str) -> SecondImage {
    let c = support::unique_name("fp-ops-img");
    let _guard = support::ContainerGuard::new(&c);
    support::docker_ok(docker, &["create", "--name", &c, image]);
    let tag = format!("fp-ops-upgrade:{c}");
    support::docker_ok(
        docker,
        &["commit", "--change", "LABEL fp-ops-upgrade=1", &c, &tag],
    );
    SecondImage(docker.to_path_buf(), tag)
}

fn image_id(docker: &Path, name: &str) -> String {
    support::docker_ok(docker, &["inspect", "--format", "{{.Image}}", name])
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker")]
fn image_env_port_changes_and_rollback_fail_no_request_and_then_only_the_new_release_answers() {
    let Some((docker, image, _one)) = bed() else {
        return;
    };
    let upgrade = second_image(&docker, &image);
    let dep = Dep::new(&docker, "fp-ops-poll");
    dep.deploy(&image, "v1", &["--proxy", "--env", "GEN=1"]);
    let url = dep.url();
    let new_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let moved = format!("http://localhost:{new_port}");
    let poller = Poller::start(&[url.clone(), moved.clone()]);
    // (what, when its command started and returned, the version that must answer from its
    // return until the next command starts)
    let mut marks: Vec<(&str, Instant, Instant, &str)> = Vec::new();

    let t = Instant::now();
    dep.deploy(&image, "v2", &["--env", "GEN=2"]);
    marks.push(("env change", t, Instant::now(), "v2"));
    let before = image_id(&docker, &dep.name);
    let t = Instant::now();
    dep.deploy(&upgrade.1, "v3", &["--env", "GEN=2"]);
    marks.push(("image change", t, Instant::now(), "v3"));
    assert_ne!(image_id(&docker, &dep.name), before, "a new image");
    let port = new_port.to_string();
    let t = Instant::now();
    dep.deploy(&upgrade.1, "v4", &["--env", "GEN=2", "--port", &port]);
    marks.push(("port change", t, Instant::now(), "v4"));
    assert_eq!(dep.url(), moved, "the route moved to the new port");
    let t = Instant::now();
    ok(&docker, &["rollback", &dep.name]);
    marks.push(("rollback", t, Instant::now(), "v3"));
    assert_eq!(dep.url(), url, "the rollback took the first port back");
    // Let the poller see the last release for a moment.
    std::thread::sleep(Duration::from_millis(300));
    let log = poller.finish();

    let failed: Vec<&Answer> = log.iter().filter(|a| a.got.is_err()).collect();
    let during = |a: &Answer| {
        marks
            .iter()
            .find(|m| a.end >= m.1 && a.start <= m.2)
            .map_or("between the commands", |m| m.0)
    };
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        log.len(),
        failed
            .iter()
            .take(5)
            .map(|a| (during(a), &a.got))
            .collect::<Vec<_>>()
    );
    assert!(log.len() > 50, "the poller ran ({} requests)", log.len());
    // After each command returned, only its release answers (until the next command).
    for (i, (what, _, t, want)) in marks.iter().enumerate() {
        let until = marks.get(i + 1).map(|m| m.1);
        let wrong: Vec<&String> = log
            .iter()
            .filter(|a| a.start > *t && until.is_none_or(|u| a.end < u))
            .filter_map(|a| a.got.as_ref().ok())
            .filter(|v| v != want)
            .collect();
        assert!(
            wrong.is_empty(),
            "after the {what} returned, {} requests were answered by another release: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
    }
    let seen: std::collections::BTreeSet<&str> =
        log.iter().filter_map(|a| a.got.as_deref().ok()).collect();
    assert!(
        ["v1", "v2", "v3", "v4"].iter().all(|v| seen.contains(v)),
        "every release answered in turn: {seen:?}"
    );
    eprintln!(
        "proxied updates under a 20 ms poller: {} requests, 0 failed",
        log.len()
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker")]
fn moving_behind_the_proxy_and_back_has_one_short_gap_each_on_the_same_url() {
    let Some((docker, image, _one)) = bed() else {
        return;
    };
    let dep = Dep::new(&docker, "fp-ops-move");
    dep.deploy(&image, "v1", &[]);
    let url = dep.url();
    assert!(
        !support::docker_ok(&docker, &["port", &dep.name]).is_empty(),
        "unproxied: the container publishes its port"
    );
    for (flag, version) in [("--proxy", "v2"), ("--no-proxy", "v3")] {
        let poller = Poller::start(std::slice::from_ref(&url));
        let out = dep.deploy(&image, version, &[flag]);
        let done = Instant::now();
        std::thread::sleep(Duration::from_millis(200));
        let log = poller.finish();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("one short gap"),
            "the plan says there is one short gap: {err}"
        );
        let g = gaps(&log);
        assert!(
            g.len() <= 1,
            "{flag}: {} gaps (at most one): {:?}",
            g.len(),
            g.iter()
                .map(|(a, b, n)| (b.duration_since(*a), n))
                .collect::<Vec<_>>()
        );
        let gap = g
            .first()
            .map_or(Duration::ZERO, |(a, b, _)| b.duration_since(*a));
        eprintln!(
            "{flag}: {} requests, {} failed in one gap of {} ms",
            log.len(),
            g.first().map_or(0, |x| x.2),
            gap.as_millis()
        );
        // Afterwards it answers on the same URL, with the new release, every time.
        let after: Vec<&Answer> = log.iter().filter(|a| a.start > done).collect();
        assert!(!after.is_empty());
        assert!(
            after.iter().all(|a| a.got.as_deref() == Ok(version)),
            "{flag}: after the move {url} answers {:?}",
            after.iter().map(|a| &a.got).collect::<Vec<_>>()
        );
        assert_eq!(dep.url(), url, "{flag}: the same URL");
        let publishes = !support::docker_ok(&docker, &["port", &dep.name]).is_empty();
        assert_eq!(
            publishes,
            flag == "--no-proxy",
            "{flag}: who holds the port"
        );
    }
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker")]
fn a_proxy_removed_by_hand_comes_back_at_the_next_command_with_every_route() {
    let Some((docker, image, _one)) = bed() else {
        return;
    };
    let a = Dep::new(&docker, "fp-ops-heal-a");
    let b = Dep::new(&docker, "fp-ops-heal-b");
    a.deploy(&image, "a1", &["--proxy"]);
    b.deploy(&image, "b1", &["--proxy"]);
    let (ua, ub) = (a.url(), b.url());
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    let serves = |u: &str, v: &str| {
        let t0 = Instant::now();
        loop {
            match version(&agent, u) {
                Ok(got) if got == v => return,
                r if t0.elapsed() > Duration::from_secs(10) => {
                    panic!("{u} does not answer {v}: {r:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    };
    serves(&ua, "a1");
    serves(&ub, "b1");
    let an = a.name.clone();
    let commands: Vec<(&str, Vec<&str>)> = vec![
        ("status", vec!["status", &an]),
        ("ps", vec!["ps"]),
        ("logs", vec!["logs", &an, "--tail", "1"]),
        ("history", vec!["history", &an]),
        ("stop", vec!["stop", &an]),
        ("start", vec!["start", &an]),
    ];
    for (what, args) in commands {
        support::docker_ok(&docker, &["rm", "-f", PROXY]);
        assert!(version(&agent, &ub).is_err(), "the proxy is gone");
        let out = ok(&docker, &args);
        let state = support::docker_ok(&docker, &["inspect", "-f", "{{.State.Status}}", PROXY]);
        assert_eq!(state, "running", "`{what}` brought the proxy back");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("the front proxy was not running"),
            "`{what}` says it brought the proxy back: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if what != "stop" {
            serves(&ua, "a1");
        } else {
            // A stopped proxied deployment's route answers 503 instead of dialling nothing.
            let st = agent.get(&format!("{ua}/health")).call();
            assert!(
                matches!(st, Err(ureq::Error::Status(503, _))),
                "stopped: {st:?}"
            );
        }
        // Every route, not only the one of the deployment the command was about.
        serves(&ub, "b1");
    }
    // A deploy that changes only the script (in place: no container, no route changes).
    support::docker_ok(&docker, &["rm", "-f", PROXY]);
    let out = a.deploy(&image, "a2", &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Copying release"),
        "an in-place update: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serves(&ua, "a2");
    serves(&ub, "b1");
}
