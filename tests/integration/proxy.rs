//! `proxy status|up|down` against the real engine and the test bed's Caddy image
//! (`FRACTALIC_PUBLISHER_PROXY_IMAGE`, built by scripts/dev-env.sh up from Debian's caddy):
//! routes follow Docker's state, a reload under load fails no request, a proxy removed by hand
//! comes back with every route, and `down` refuses while it serves deployments.
//!
//! The proxy is one per engine, so everything runs in one test, in order.

use crate::support::{self, ContainerGuard, Entry};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PROXY: &str = "fractalic-publisher-proxy";
const NETWORK: &str = "fractalic-publisher";
/// Every upstream holds `/payload/who/<its tag>.md`; a request for `first.md` succeeds on the
/// first container only and is "File not found" on the second: which upstream served it,
/// whatever the image's script parser makes of the script.
const SCRIPT: &[u8] = b"# Who {id=who}\n\nhello\n";
const SETTINGS: &[u8] =
    b"defaultProvider = \"demo\"\n[settings.demo]\nmodel = \"m\"\napiKey = \"sk-proxy-test\"\n";

fn publisher(docker: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fractalic-publisher"))
        .arg("--docker")
        .arg(docker)
        .args(args)
        .output()
        .expect("run fractalic-publisher")
}

fn ok(docker: &Path, args: &[&str]) -> String {
    let out = publisher(docker, args);
    assert!(
        out.status.success(),
        "fractalic-publisher {} -> {:?}\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A stand-in container on the tool's network, labelled as (a container of) a proxied
/// deployment `deployment` on `port`, started and answering.
fn upstream(docker: &Path, image: &str, name: &str, deployment: &str, port: u16, tag: &str) {
    let labels = [
        format!("fractalic-publisher.deployment={deployment}"),
        "fractalic-publisher.proxy=true".to_string(),
        "fractalic-publisher.bind=127.0.0.1".to_string(),
        format!("fractalic-publisher.port={port}"),
    ];
    let mut args = vec!["create", "--name", name, "--network", NETWORK];
    for l in &labels {
        args.extend(["--label", l.as_str()]);
    }
    args.push(image);
    support::docker_ok(docker, &args);
    support::copy_into(
        docker,
        name,
        &[
            Entry::Dir("/payload/who", 0o755),
            Entry::File(&format!("/payload/who/{tag}.md"), SCRIPT, 0o644),
            Entry::File("/payload/who/settings.toml", SETTINGS, 0o600),
        ],
    );
    support::docker_ok(docker, &["start", name]);
    let ip = support::docker_ok(
        docker,
        &[
            "inspect",
            "--format",
            &format!("{{{{(index .NetworkSettings.Networks \"{NETWORK}\").IPAddress}}}}"),
            name,
        ],
    );
    let health = format!("http://{ip}:8001/health");
    assert!(
        support::wait_http(&health, Duration::from_secs(30)).is_some_and(|(s, _)| s == 200),
        "{name} never answered {health}"
    );
}

/// POST /execute of `first.md` through `base`: "first" or "second", the upstream that answered.
fn who(agent: &ureq::Agent, base: &str) -> Result<String, String> {
    let r = agent
        .post(&format!("{base}/execute"))
        .send_json(serde_json::json!({ "filename": "/payload/who/first.md" }))
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value = r.into_json().map_err(|e| e.to_string())?;
    if v["success"] == true {
        return Ok("first".into());
    }
    match v["error"].as_str() {
        Some(e) if e.starts_with("File not found") => Ok("second".into()),
        _ => Err(format!("unexpected answer {v}")),
    }
}

/// Requests `base` every 20 ms until stopped: (answers by hostname, failures).
struct Poller {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicU32>,
    seen: Arc<Mutex<Vec<String>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Poller {
    fn start(base: &str) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicU32::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, f, w, base) = (stop.clone(), failed.clone(), seen.clone(), base.to_string());
        let handle = std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(5))
                .build();
            let deadline = Instant::now() + Duration::from_secs(120);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                match who(&agent, &base) {
                    Ok(h) => w.lock().unwrap().push(h),
                    Err(_) => {
                        f.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Poller {
            stop,
            failed,
            seen,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> (Vec<String>, u32) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().expect("poller");
        }
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        (seen, self.failed.load(Ordering::Relaxed))
    }
}

struct ProxyDown(std::path::PathBuf);

impl Drop for ProxyDown {
    fn drop(&mut self) {
        let _ = publisher(&self.0, &["proxy", "down", "--force"]);
    }
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker")]
fn proxy_routes_follow_docker_reload_fails_nothing_and_comes_back() {
    let Some(docker) = support::docker() else {
        return;
    };
    if std::env::var_os("FRACTALIC_PUBLISHER_PROXY_IMAGE").is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but FRACTALIC_PUBLISHER_PROXY_IMAGE is not set (scripts/test.sh sets it)"
        );
        eprintln!("SKIPPED: FRACTALIC_PUBLISHER_PROXY_IMAGE is not set (run scripts/test.sh)");
        return;
    }
    let image = support::pull_stand_in(&docker);
    let _down = ProxyDown(docker.clone());
    let up = ok(&docker, &["proxy", "up"]);
    assert!(up.contains(PROXY) || up.contains("nothing to do"), "{up}");

    let dep = support::unique_name("fp-proxied");
    let port = free_port();
    let first = ContainerGuard::new(&dep);
    upstream(&docker, &image, first.name(), &dep, port, "first");
    let first_host = "first".to_string();
    ok(&docker, &["proxy", "up"]);
    let base = format!("http://127.0.0.1:{port}");
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    assert!(support::wait_http(&format!("{base}/health"), Duration::from_secs(10)).is_some());
    assert_eq!(who(&agent, &base).as_deref(), Ok(first_host.as_str()));

    // status names the route and its healthy upstream.
    let status: serde_json::Value =
        serde_json::from_str(&ok(&docker, &["proxy", "status", "--json"])).unwrap();
    assert_eq!(status["state"], "running");
    let route = status["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["deployment"] == dep.as_str())
        .unwrap_or_else(|| panic!("no route for {dep}: {status}"))
        .clone();
    assert_eq!(route["url"], base.as_str());
    assert_eq!(route["upstream_health"][0][1], true, "{route}");

    // The route moves to a second container in one graceful reload while a poller runs:
    // no request fails, and afterwards only the new one answers.
    let next_name = format!("{dep}-next");
    let next = ContainerGuard::new(&next_name);
    upstream(&docker, &image, next.name(), &dep, port, "second");
    let next_host = "second".to_string();
    let poller = Poller::start(&base);
    while poller.seen.lock().unwrap().len() < 10 {
        std::thread::sleep(Duration::from_millis(20));
    }
    support::docker_ok(&docker, &["rename", &dep, &format!("{dep}-old")]);
    let old = ContainerGuard::new(&format!("{dep}-old"));
    support::docker_ok(&docker, &["rename", &next_name, &dep]);
    let _next_live = ContainerGuard::new(&dep);
    ok(&docker, &["proxy", "up"]);
    let settle = Instant::now();
    loop {
        let seen = poller.seen.lock().unwrap().clone();
        if seen.iter().rev().take(10).all(|h| h == &next_host) && seen.len() > 20 {
            break;
        }
        assert!(
            settle.elapsed() < Duration::from_secs(20),
            "the new upstream never took over"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    support::docker_ok(&docker, &["stop", "-t", "1", old.name()]);
    let (seen, failed) = poller.finish();
    assert_eq!(
        failed,
        0,
        "requests failed during the switch ({} answered)",
        seen.len()
    );
    assert!(seen.contains(&first_host) && seen.contains(&next_host));
    assert_eq!(who(&agent, &base).as_deref(), Ok(next_host.as_str()));

    // Removed by hand: the next `proxy up` re-creates it with the route.
    support::docker_ok(&docker, &["rm", "-f", PROXY]);
    assert!(who(&agent, &base).is_err());
    let up = ok(&docker, &["proxy", "up"]);
    assert!(up.contains("restored 1 route"), "{up}");
    assert!(support::wait_http(&format!("{base}/health"), Duration::from_secs(10)).is_some());
    assert_eq!(who(&agent, &base).as_deref(), Ok(next_host.as_str()));

    // down refuses while a deployment is routed through it (exit 2, nothing removed).
    let out = publisher(&docker, &["proxy", "down"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&dep) && err.contains("--force"), "{err}");
    assert_eq!(
        support::docker_ok(
            &docker,
            &["inspect", "--format", "{{.State.Status}}", PROXY]
        ),
        "running"
    );
}
