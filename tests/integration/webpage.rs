//! The web page of `serve`, driven in a real headless Chromium through chromedriver's W3C
//! WebDriver protocol (plain JSON over HTTP, spoken here with ureq): deploy the sample folder
//! through the form and watch it complete, see the row healthy, read and follow its log, stop,
//! start and remove it; a bad script folder shows the server's message at its field; a token
//! is asked for once. Screenshots go to target/webpage/ (CI keeps them as artifacts).
//! Needs Debian's `chromium` and `chromium-driver` (scripts/dev-env.sh browser installs them);
//! without them the test skips, or fails with CI=true.

use crate::managed::{self, eventually, state};
use crate::serve::Served;
use crate::support::{self, ContainerGuard};
use base64::Engine as _;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key W3C WebDriver uses for element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The flags that let Chromium run here: no sandbox (root in a container), no GPU, no
/// network of its own (no QUIC, no background fetches, updates or sync), a fresh profile.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where screenshots go (a CI artifact).
fn shots() -> PathBuf {
    let d = repo().join("target/webpage");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// chromium and chromedriver, or None (skip) / a panic with CI=true.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let found = which::which("chromium")
        .or_else(|_| which::which("chromium-browser"))
        .and_then(|c| which::which("chromedriver").map(|d| (c, d)));
    match found {
        Ok(p) => Some(p),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
            "CI=true but chromium/chromedriver are missing ({e}); run scripts/dev-env.sh browser (apt-get install chromium chromium-driver)"
        ),
        Err(e) => {
            eprintln!("skipping: no chromium/chromedriver ({e}); scripts/dev-env.sh browser installs them");
            None
        }
    }
}

/// A chromedriver process with one browser session; the session is closed (which ends the
/// browser) and chromedriver killed on drop.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start(chromium: &Path, chromedriver: &Path, width: u32, height: u32) -> Browser {
        let port = portpicker::pick_unused_port().expect("a free port for chromedriver");
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build();
        let profile = tempfile::tempdir().unwrap();
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            agent,
            _profile: profile,
        };
        let ready = eventually(20, || {
            b.agent
                .get(&format!("{}/status", b.base))
                .call()
                .ok()
                .and_then(|r| r.into_json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true)
        });
        assert!(ready, "chromedriver did not become ready within 20 s");
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", b._profile.path().display()));
        args.push(format!("--window-size={width},{height}"));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let v = b.send("POST", "/session", Some(caps));
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        b
    }

    /// One WebDriver command; returns its `value` (panics on a WebDriver error).
    fn send(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let req = self.agent.request(method, &url);
        let r = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let v: Value = match r {
            Ok(r) => r.into_json().unwrap(),
            Err(ureq::Error::Status(s, r)) => {
                let t = r.into_string().unwrap_or_default();
                panic!("WebDriver {method} {path}: HTTP {s}: {t}")
            }
            Err(e) => panic!("WebDriver {method} {path}: {e}"),
        };
        v["value"].clone()
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.send(method, &format!("/session/{}{path}", self.session), body)
    }

    fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    fn find(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/clear"), Some(json!({})));
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    fn text(&self, css: &str) -> String {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            json!([css]),
        )
        .as_str()
        .unwrap_or("")
        .to_string()
    }

    fn screenshot(&self, file: &str) -> PathBuf {
        let v = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let p = shots().join(file);
        std::fs::write(&p, png).unwrap();
        p
    }

    fn resize(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    /// Polls `check` (a script returning a value; null/false means "not yet") until it gives
    /// something, for at most `secs`; on timeout saves a screenshot and panics with `what`.
    fn wait(&self, secs: u64, what: &str, check: &str, args: Value) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.js(check, args.clone());
            if !(v.is_null() || v == false) {
                return v;
            }
            if Instant::now() >= deadline {
                let shot = self.screenshot("failure.png");
                let run = self.text("#run");
                let errs = self.text("#e-form");
                panic!(
                    "timed out after {secs}s waiting for {what} (screenshot {}); run: {run}; form: {errs}",
                    shot.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .agent
                .delete(&format!("{}/session/{}", self.base, self.session))
                .call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `docker logs --follow` processes reading `name`'s log (the page's follow stream).
fn log_followers(name: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| {
            c.split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
        })
        .filter(|argv| {
            argv.iter().any(|a| a == "logs")
                && argv.iter().any(|a| a == "--follow")
                && argv.iter().any(|a| a == name)
        })
        .count()
}

/// True when the row of `arguments[0]` has `data-<arguments[1]>` equal to `arguments[2]`.
const ROW_IS: &str = "const r = document.querySelector(`tr[data-name=\"${arguments[0]}\"]`); return (r !== null && r.dataset[arguments[1]] === arguments[2]) || null;";

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn the_page_deploys_shows_logs_stops_starts_and_removes_in_a_real_browser() {
    let Some(docker) = support::docker() else {
        return;
    };
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let image = support::pull_stand_in(&docker);
    let (repo_name, tag) = image.rsplit_once(':').unwrap();
    let demo = repo().join("scripts/demo");
    let folder = demo.join("hello-fractalic");
    let s = Served::start(&docker, &["--root", demo.to_str().unwrap()]);
    let name = support::unique_name("fp-page");
    let _g = ContainerGuard::new(&name);
    let b = Browser::start(&chromium, &chromedriver, 1280, 1000);
    b.go(&format!("{}/", s.url));
    b.wait(
        20,
        "the plugin list",
        "return document.querySelector('#f-plugin option[value=\"docker-registry\"]') !== null;",
        json!([]),
    );
    b.wait(
        20,
        "the first table refresh",
        "return document.getElementById('refreshed').textContent !== '';",
        json!([]),
    );

    // A script folder that does not exist: the server's 400 shows at that field, nothing
    // is created, no run starts.
    b.type_into("#f-script_folder", "no-such-folder");
    b.type_into("#f-script_name", "hello");
    b.type_into("#f-container_name", &name);
    b.click("#deploy-btn");
    let msg = b.wait(
        30,
        "the script_folder error",
        "const e = document.getElementById('e-script_folder'); return e.textContent || null;",
        json!([]),
    );
    let msg = msg.as_str().unwrap();
    assert!(
        msg.contains("script_folder no-such-folder cannot be used"),
        "{msg}"
    );
    assert_eq!(
        b.js(
            "return document.getElementById('f-script_folder').getAttribute('aria-invalid');",
            json!([])
        ),
        "true"
    );
    assert_eq!(
        b.js("return document.getElementById('run').hidden;", json!([])),
        true
    );
    assert_eq!(state(&docker, &name), None, "a bad folder created {name}");

    // The real deploy, submitted from the keyboard (Enter in a field).
    b.type_into("#f-script_folder", folder.to_str().unwrap());
    b.type_into("#f-image_name", repo_name);
    b.type_into("#f-image_tag", tag);
    assert_eq!(b.text("#e-script_folder"), "", "typing clears the error");
    b.type_into("#f-script_name", "hello\u{E007}");
    let outcome = b.wait(
        240,
        "the deploy to finish",
        "const s = document.getElementById('run-stage').dataset.stage; return (s === 'completed' || s === 'error') ? s : null;",
        json!([]),
    );
    if outcome != "completed" {
        let shot = b.screenshot("deploy.png");
        panic!("{} (screenshot {})", b.text("#run"), shot.display());
    }
    assert_eq!(b.text("#run-pct"), "100 %");
    assert_eq!(b.text("#run-stage"), "Completed");
    let stages = b.js(
        "return [...document.querySelectorAll('#run-events .st')].map(e => e.textContent);",
        json!([]),
    );
    for want in [
        "Validating",
        "Pulling image",
        "Starting container",
        "Completed",
    ] {
        assert!(
            stages.as_array().unwrap().iter().any(|s| s == want),
            "{want} not among the event lines {stages}"
        );
    }
    let links = b.js(
        "return [...document.querySelectorAll('#run-result a')].map(a => a.href);",
        json!([]),
    );
    let url = links[0].as_str().unwrap().trim_end_matches('/').to_string();
    assert!(url.starts_with("http://localhost:"), "{links}");
    assert_eq!(links[2], format!("{url}/docs"), "{links}");
    assert!(
        b.text("#sample-curl").contains(&format!("{url}/execute")),
        "{}",
        b.text("#sample-curl")
    );
    // The URL the page shows is the deployment's.
    let (status, _) = support::wait_http(&format!("{url}/health"), Duration::from_secs(10))
        .expect("the deployment answers at the URL the page shows");
    assert_eq!(status, 200);

    // The table shows it running and healthy, with its URL as a link.
    b.wait(
        30,
        "the row to be healthy",
        ROW_IS,
        json!([name, "health", "healthy"]),
    );
    // The end of the deploy, all of it on one screen: form, progress, result, table.
    b.resize(1280, 1750);
    b.wait(
        10,
        "the progress bar to fill",
        "const f = document.getElementById('run-fill').getBoundingClientRect().width; const all = document.getElementById('run-bar').clientWidth; return (window.innerHeight > 1500 && f >= all - 1) || null;",
        json!([]),
    );
    b.js("window.scrollTo(0, 0);", json!([]));
    b.screenshot("deploy.png");
    b.resize(1280, 1000);
    let row_url = b.js(
        "return document.querySelector(`tr[data-name=\"${arguments[0]}\"] td.url a`).href;",
        json!([name]),
    );
    assert_eq!(row_url.as_str().unwrap().trim_end_matches('/'), url);
    let health_text = b.js(
        "return document.querySelector(`tr[data-name=\"${arguments[0]}\"] td.health`).textContent;",
        json!([name]),
    );
    assert!(
        health_text.as_str().unwrap().contains("healthy"),
        "{health_text}"
    );

    // 375 px wide: nothing wider than the screen; the row is a card with labels.
    b.resize(375, 900);
    b.wait(
        10,
        "the narrow layout",
        "return window.innerWidth <= 400 || null;",
        json!([]),
    );
    let overflow = b.js(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
        json!([]),
    );
    b.js(
        "document.getElementById('deployments').scrollIntoView();",
        json!([]),
    );
    b.screenshot("narrow.png");
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "the page is {overflow}px wider than 375px"
    );
    // prefers-color-scheme: dark gives a dark page (emulated through chromedriver's CDP).
    let light = b.js(
        "return getComputedStyle(document.body).backgroundColor;",
        json!([]),
    );
    b.cmd(
        "POST",
        "/goog/cdp/execute",
        Some(json!({"cmd": "Emulation.setEmulatedMedia", "params": {"features": [{"name": "prefers-color-scheme", "value": "dark"}]}})),
    );
    let dark = b.wait(
        10,
        "the dark colour scheme",
        "const c = getComputedStyle(document.body).backgroundColor; return c !== arguments[0] ? c : null;",
        json!([light]),
    );
    let rgb: Vec<u32> = dark
        .as_str()
        .unwrap()
        .trim_start_matches("rgb(")
        .trim_end_matches(')')
        .split(',')
        .map(|x| x.trim().parse().unwrap())
        .collect();
    assert!(rgb.iter().all(|c| *c < 64), "dark background is {dark}");
    b.screenshot("narrow-dark.png");
    b.cmd(
        "POST",
        "/goog/cdp/execute",
        Some(json!({"cmd": "Emulation.setEmulatedMedia", "params": {"features": [{"name": "prefers-color-scheme", "value": "light"}]}})),
    );
    b.resize(1280, 1000);

    // Logs: the tail, then follow (a stream), then untick: the docker logs behind it ends.
    let sel = |what: &str| format!("tr[data-name=\"{name}\"] button[data-action=\"{what}\"]");
    b.click(&sel("logs"));
    b.wait(
        30,
        "the log tail",
        "return document.getElementById('logs').textContent.length > 0 || null;",
        json!([]),
    );
    b.wait(
        30,
        "the status details",
        "return document.getElementById('detail-status').textContent.includes('running') || null;",
        json!([]),
    );
    assert!(b.text("#detail-h").contains(&name));
    // The release history of the deployment: one release, the live one.
    b.wait(
        30,
        "the release history",
        "return document.getElementById('history-rows').textContent.includes('(live)') || null;",
        json!([]),
    );
    b.click("#logs-follow");
    b.wait(
        30,
        "the followed log",
        "const p = document.getElementById('logs'); return (p.dataset.following === 'true' && p.textContent.length > 0) || null;",
        json!([]),
    );
    assert!(
        eventually(20, || log_followers(&name) == 1),
        "no docker logs --follow for {name}"
    );
    b.click("#logs-follow");
    assert!(
        eventually(20, || log_followers(&name) == 0),
        "docker logs --follow still runs after the page stopped following"
    );

    // Follow again, then stop: the stream ends by itself when the container stops.
    b.click("#logs-follow");
    b.wait(
        30,
        "the followed log again",
        "return document.getElementById('logs').dataset.following === 'true' || null;",
        json!([]),
    );
    assert!(eventually(20, || log_followers(&name) == 1));
    b.click(&sel("stop"));
    b.wait(
        60,
        "the row to show exited",
        ROW_IS,
        json!([name, "state", "exited"]),
    );
    assert_eq!(state(&docker, &name).as_deref(), Some("exited"));
    b.wait(
        30,
        "the follow stream to end",
        "return (document.getElementById('logs').dataset.following === undefined && document.getElementById('logs-state').textContent.includes('ended')) || null;",
        json!([]),
    );
    assert!(eventually(20, || log_followers(&name) == 0));

    // Start: healthy again.
    b.click(&sel("start"));
    b.wait(
        120,
        "the row to be healthy again",
        ROW_IS,
        json!([name, "health", "healthy"]),
    );
    assert_eq!(state(&docker, &name).as_deref(), Some("running"));

    // Remove: the confirmation names the deployment; cancel keeps it, confirm removes it.
    b.click(&sel("remove"));
    let asked = b.wait(
        10,
        "the confirmation",
        "const d = document.getElementById('confirm'); return d.open ? d.textContent : null;",
        json!([]),
    );
    assert!(asked.as_str().unwrap().contains(&name), "{asked}");
    b.click("#confirm-cancel");
    b.wait(
        10,
        "the dialog to close",
        "return !document.getElementById('confirm').open || null;",
        json!([]),
    );
    assert_eq!(state(&docker, &name).as_deref(), Some("running"));
    b.click(&sel("remove"));
    b.wait(
        10,
        "the confirmation again",
        "return document.getElementById('confirm').open || null;",
        json!([]),
    );
    b.click("#confirm-ok");
    b.wait(
        60,
        "the row to go",
        "return document.querySelector(`tr[data-name=\"${arguments[0]}\"]`) === null || null;",
        json!([name]),
    );
    assert!(
        eventually(30, || state(&docker, &name).is_none()),
        "{name} still exists after Remove"
    );
    assert!(managed::containers_named(&docker, &name).is_empty());
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn the_page_asks_for_the_token_once_and_keeps_it_for_the_tab() {
    let Some(docker) = support::docker() else {
        return;
    };
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let token = "page-test-token-0123456789abcdef";
    let s =
        Served::try_start(&docker, &[], &[(crate::serve::TOKEN_ENV, token)]).expect("serve starts");
    let b = Browser::start(&chromium, &chromedriver, 1024, 800);
    b.go(&format!("{}/", s.url));
    b.wait(
        20,
        "the token dialog",
        "return document.getElementById('token-dlg').open || null;",
        json!([]),
    );
    b.type_into("#token-input", "wrong-token-wrong-token");
    b.click("#token-dlg button[type=submit]");
    // A wrong token is refused by the server and asked for again, saying so.
    b.wait(
        20,
        "the token dialog to ask again",
        "const d = document.getElementById('token-dlg'); return (d.open && document.getElementById('token-why').textContent.includes('refused')) || null;",
        json!([]),
    );
    b.type_into("#token-input", token);
    b.click("#token-dlg button[type=submit]");
    b.wait(
        20,
        "the table with the token",
        "return (document.getElementById('refreshed').textContent !== '' && !document.getElementById('token-dlg').open) || null;",
        json!([]),
    );
    assert_eq!(b.text("#dep-error"), "");
    assert_eq!(
        b.js(
            "return sessionStorage.getItem('fractalic-publisher.token');",
            json!([])
        ),
        token
    );
    // A reload in the same tab does not ask again.
    b.go(&format!("{}/", s.url));
    b.wait(
        20,
        "the table after a reload",
        "return document.getElementById('refreshed').textContent !== '' || null;",
        json!([]),
    );
    assert_eq!(
        b.js(
            "return document.getElementById('token-dlg').open;",
            json!([])
        ),
        false
    );
    let _ = docker;
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn the_page_is_served_with_a_strict_policy_and_log_follow_refuses_before_streaming() {
    let Some(docker) = support::docker() else {
        return;
    };
    let token = "page-test-token-fedcba9876543210";
    let s =
        Served::try_start(&docker, &[], &[(crate::serve::TOKEN_ENV, token)]).expect("serve starts");
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    // The page and its files need no token (they hold no data); each has the policy.
    for (path, ct) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/app.css", "text/css"),
    ] {
        let r = agent.get(&format!("{}{path}", s.url)).call().unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.header("content-type").unwrap().starts_with(ct), "{path}");
        let csp = r
            .header("content-security-policy")
            .unwrap_or("")
            .to_string();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
            "{path}: {csp}"
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    }
    // Following a log still needs the token, and an unknown deployment is a plain 404
    // (JSON, before any stream starts).
    let follow = format!(
        "{}/api/deployments/fp-page-no-such-x/logs?follow=true",
        s.url
    );
    match agent.get(&follow).call() {
        Err(ureq::Error::Status(401, _)) => {}
        other => panic!("want 401, got {other:?}"),
    }
    match agent
        .get(&follow)
        .set("Authorization", &format!("Bearer {token}"))
        .call()
    {
        Err(ureq::Error::Status(404, r)) => {
            assert_eq!(r.header("content-type"), Some("application/json"));
            let v: Value = r.into_json().unwrap();
            assert!(
                v["detail"].as_str().unwrap().contains("fp-page-no-such-x"),
                "{v}"
            );
        }
        other => panic!("want 404, got {other:?}"),
    }
    match agent
        .get(&format!("{follow}=maybe"))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
    {
        Err(ureq::Error::Status(400, _)) => {}
        other => panic!("want 400 for follow=true=maybe, got {other:?}"),
    }
}
