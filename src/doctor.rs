//! `doctor`: checks, step by step, that this host can run a deployment (docker binary, daemon,
//! image, then a throwaway deploy through the docker-registry plugin: a free port, a container
//! that starts and answers), with a hint for every failure. The throwaway is undone by its
//! deploy's journal at the end, and by the Ctrl-C handler if the run is interrupted.

use crate::cli::PullPolicy;
use crate::config::DeployConfig;
use crate::deploy;
use crate::docker::Docker;
use crate::error::{Error, Result};
use crate::plugin::host::ReadinessSeen;
use crate::ports::PortRequest;
use crate::progress::{Kind, Progress, Stage};
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// How one check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    Pass,
    Fail,
    /// Not run because an earlier check failed.
    Skip,
}

/// One step of the diagnosis.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    /// What is checked ("docker binary found" ...).
    pub name: String,
    pub outcome: Outcome,
    /// What was found.
    pub detail: String,
    /// What to do about a failure (empty when it passed).
    pub hint: String,
}

/// Everything `doctor` found.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    /// True when every check passed.
    pub ok: bool,
    pub image: String,
    pub checks: Vec<Check>,
}

/// The checks, in order (all of them appear in every report).
pub(crate) const STEPS: &[&str] = &[
    "docker binary found",
    "daemon reachable",
    "image pullable or cached",
    "free port from 8001",
    "throwaway container starts",
    "/health answers",
    "MCP manager answers",
    "cleanup done",
];

struct Run {
    checks: Vec<Check>,
}

impl Run {
    fn pass(&mut self, detail: impl Into<String>) {
        self.push(Outcome::Pass, detail.into(), String::new());
    }
    fn fail(&mut self, detail: impl Into<String>, hint: impl Into<String>) {
        self.push(Outcome::Fail, detail.into(), hint.into());
    }
    fn push(&mut self, outcome: Outcome, detail: String, hint: String) {
        let name = STEPS[self.checks.len()].to_string();
        self.checks.push(Check {
            name,
            outcome,
            detail,
            hint,
        });
    }
    fn skip_rest(&mut self, why: &str) {
        while self.checks.len() < STEPS.len() {
            self.push(Outcome::Skip, why.to_string(), String::new());
        }
    }
}

/// Runs every check against `image` (already production-tagged); `timeout` bounds each wait
/// for the throwaway container's services.
pub(crate) fn run(
    docker_flag: Option<&Path>,
    plugins_dir: Option<&Path>,
    image: &str,
    timeout: Duration,
) -> Report {
    let mut r = Run { checks: Vec::new() };
    let docker = match Docker::locate(docker_flag) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            r.fail(
                e.to_string(),
                "install Docker (https://docs.docker.com/engine/install/), or pass --docker PATH / set FRACTALIC_PUBLISHER_DOCKER",
            );
            r.skip_rest("needs the docker binary");
            return finish(image, r);
        }
    };
    r.pass(docker.binary().display().to_string());

    match docker.server_version() {
        Ok(v) => r.pass(format!("Docker Engine {v}")),
        Err(e) => {
            let host = std::env::var("DOCKER_HOST").unwrap_or_default();
            let target = if host.is_empty() {
                "the default socket (DOCKER_HOST is not set)".to_string()
            } else {
                format!("DOCKER_HOST={host}")
            };
            r.fail(
                e.to_string(),
                format!(
                    "the docker CLI cannot reach a daemon at {target}: start it (`sudo systemctl start docker` or `dockerd`), check DOCKER_HOST / `docker context ls`, and that your user may use the socket (the docker group)"
                ),
            );
            r.skip_rest("needs a reachable daemon");
            return finish(image, r);
        }
    }

    match check_image(&docker, image) {
        Ok(detail) => r.pass(detail),
        Err(e) => {
            r.fail(
                e.to_string(),
                format!(
                    "check the image name, your network and registry login (`docker login`), then `docker pull {image}`; or pass --image with an image that is cached"
                ),
            );
            r.skip_rest("needs the image");
            return finish(image, r);
        }
    }

    throwaway(&mut r, docker_flag, plugins_dir, &docker, image, timeout);
    finish(image, r)
}

fn finish(image: &str, r: Run) -> Report {
    Report {
        ok: r.checks.iter().all(|c| c.outcome == Outcome::Pass),
        image: image.to_string(),
        checks: r.checks,
    }
}

fn check_image(docker: &Docker, image: &str) -> Result<String> {
    if let Some(v) = docker.image_inspect(image)? {
        return Ok(format!("{image} is cached ({})", image_id(&v)));
    }
    docker.pull(image, None, Duration::from_secs(600))?;
    match docker.image_inspect(image)? {
        Some(v) => Ok(format!("{image} was pulled ({})", image_id(&v))),
        None => Err(Error::failed(format!(
            "{image} was pulled but cannot be inspected"
        ))),
    }
}

fn image_id(v: &serde_json::Value) -> String {
    let id = v["Id"].as_str().unwrap_or("");
    id.get(..19).unwrap_or(id).to_string()
}

/// The plugin that deploys doctor's throwaway.
pub(crate) const PLUGIN: &str = "docker-registry";

/// What the throwaway deploy's progress showed: how far it got, and when.
#[derive(Default)]
struct Trace {
    stage: Option<Stage>,
    /// The step message of the port choice (stage preparing_files).
    port: Option<String>,
    /// When the creating_container stage began.
    creating: Option<SystemTime>,
}

/// Steps 4-8: a real deploy of a one-file script through the docker-registry plugin's
/// `publish` (port choice, container, payload, start, /health and the MCP manager, exactly
/// as a deploy), then the undo of that deploy by its journal, checked through the plugin's
/// `lookup`. Each step's outcome is read from how far the deploy got.
fn throwaway(
    r: &mut Run,
    docker_flag: Option<&Path>,
    plugins_dir: Option<&Path>,
    docker: &Docker,
    image: &str,
    timeout: Duration,
) {
    let name = format!(
        "fractalic-doctor-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() % 1_000_000)
    );
    let trace = Arc::new(Mutex::new(Trace::default()));
    let t = Arc::clone(&trace);
    let progress = Progress::callback(move |e| {
        if e.kind != Kind::Step {
            return;
        }
        let mut t = crate::sync::lock(&t);
        if e.stage == Stage::PreparingFiles && t.port.is_none() {
            t.port = Some(e.message.trim_start_matches("Port: ").to_string());
        }
        if e.stage >= Stage::CreatingContainer && t.creating.is_none() {
            t.creating = Some(SystemTime::now());
        }
        t.stage = Some(e.stage);
    });
    let prepared = throwaway_config(docker, &name, image, timeout).and_then(|(cfg, folder)| {
        deploy::prepare_config(docker_flag, plugins_dir, cfg, progress).map(|p| (p, folder))
    });
    let (prepared, _folder) = match prepared {
        Ok(p) => p,
        Err(e) => {
            r.fail(
                e.to_string(),
                format!("the {PLUGIN} plugin could not prepare a deploy; check it with `fractalic-publisher info {PLUGIN}`"),
            );
            r.skip_rest("needs a deploy");
            return;
        }
    };
    let host = Arc::clone(prepared.host());
    let (published, undo) = deploy::run_and_undo(prepared);
    let seen = host.readiness_seen();
    let trace = crate::sync::lock(&trace);
    let error = published.as_ref().err().map(|e| e.to_string());
    let reached = |s: Stage| trace.stage.is_some_and(|t| t >= s);

    // 4: the port (chosen before the container is created).
    let steps_done = match (&error, reached(Stage::CreatingContainer)) {
        (Some(e), false) => {
            r.fail(
                e.clone(),
                "stop what listens on 8001 and the ports after it (`ss -ltnp`), or deploy with --port",
            );
            false
        }
        _ => {
            let port = published.as_ref().ok().and_then(|p| p.result.port);
            r.pass(match (&trace.port, port) {
                (Some(m), _) => m.clone(),
                (None, Some(p)) => format!("using port {p}"),
                (None, None) => "chosen by the plugin".into(),
            });
            true
        }
    };
    // 5: the container starts (the readiness wait begins only once it did).
    let steps_done = steps_done
        && match (&seen, &error) {
            (None, Some(e)) => {
                r.fail(
                    e.clone(),
                    "Docker could not create or start a container from the image; read docker's message above (a port clash: run doctor again; a platform mismatch: pull the image for this host's platform)",
                );
                false
            }
            _ => {
                let ms = match (&seen, trace.creating) {
                    (Some(s), Some(c)) => s.began.duration_since(c).map_or(0, |d| d.as_millis()),
                    _ => 0,
                };
                let at = seen
                    .as_ref()
                    .map(|s| s.url.trim_end_matches("/health").to_string())
                    .unwrap_or_default();
                let port = at.rsplit(':').next().unwrap_or("").to_string();
                r.pass(format!("{name} started in {ms} ms, port 127.0.0.1:{port}"));
                true
            }
        };
    // 6: /health; 7: the MCP manager (and the container stayed up).
    if steps_done {
        match (&seen, &error) {
            (
                Some(ReadinessSeen {
                    health_ms: None, ..
                }),
                Some(e),
            )
            | (None, Some(e)) => {
                r.fail(
                    e.clone(),
                    "the AI server in the image did not come up; a slow host may need a longer --timeout",
                );
            }
            _ => {
                let (url, ms) = seen.as_ref().map_or((String::new(), 0), |s| {
                    (s.url.clone(), s.health_ms.unwrap_or(0))
                });
                r.pass(format!("{url} answered 2xx after {ms} ms"));
                match &error {
                    None => r.pass("http://localhost:5859/status answered inside the container, and the container stayed up"),
                    Some(e) => r.fail(e.clone(), MCP_HINT),
                }
            }
        }
    }
    while r.checks.len() < STEPS.len() - 1 {
        r.push(
            Outcome::Skip,
            "needs the throwaway container".into(),
            String::new(),
        );
    }
    // 8: the undo removed everything, and the plugin no longer knows the name.
    let gone = lookup_gone(plugins_dir, docker_flag, &name);
    match (undo.left.first(), gone) {
        (None, Ok(true)) => r.pass(format!("removed container {name}; nothing is left behind")),
        (None, Ok(false)) => r.fail(
            format!("container {name} is still there after the undo"),
            format!("remove it by hand: fractalic-publisher rm --force {name}"),
        ),
        (Some(l), _) => r.fail(
            format!("{}: {}", l.what, l.error),
            format!("remove it by hand: {}", l.remove_with),
        ),
        (None, Err(e)) => r.fail(
            e.to_string(),
            format!("check by hand: fractalic-publisher status {name}"),
        ),
    }
}

const MCP_HINT: &str = "the MCP manager runs inside the image on port 5859; read its log with `docker exec CONTAINER cat /tmp/mcp_manager_error.log` on a deployment, or `fractalic-publisher logs NAME --service mcp_manager`";

/// The throwaway's deploy: a one-line script, the default port, no config files, no env.
fn throwaway_config(
    docker: &Docker,
    name: &str,
    image: &str,
    timeout: Duration,
) -> Result<(DeployConfig, tempfile::TempDir)> {
    let folder = tempfile::Builder::new()
        .prefix("fractalic-doctor-")
        .tempdir()
        .map_err(|e| Error::failed(format!("cannot make a temporary folder: {e}")))?;
    std::fs::write(
        folder.path().join("doctor.md"),
        "# Doctor {id=doctor}\nHello from doctor.\n",
    )
    .map_err(|e| Error::failed(format!("cannot write the doctor script: {e}")))?;
    // A remote engine's loopback cannot be reached from here.
    let bind = match docker.endpoint().remote_host() {
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let excludes = crate::payload::Excludes::new(&[]).map_err(|e| Error::failed(e.to_string()))?;
    let cfg = DeployConfig {
        plugin: PLUGIN.into(),
        name: name.into(),
        script_name: "doctor".into(),
        script_folder: folder.path().to_path_buf(),
        main_script: "doctor.md".into(),
        image: image.into(),
        platform: String::new(),
        port: PortRequest::Preferred(crate::config::DEFAULT_PORT),
        bind,
        env: Vec::new(),
        excludes,
        pull: PullPolicy::Missing,
        timeout,
        project_root: folder.path().to_path_buf(),
        config_files: Vec::new(),
        warnings: Vec::new(),
        replicas: 1,
        registry: crate::cli::DEFAULT_REGISTRY.into(),
        publish_mode: crate::cli::DEFAULT_PUBLISH_MODE.into(),
        placement_pref: None,
        max_replicas_per_node: None,
        proxy: Default::default(),
    };
    Ok((cfg, folder))
}

/// Whether no plugin knows `name` any more (the throwaway is gone).
fn lookup_gone(plugins_dir: Option<&Path>, docker_flag: Option<&Path>, name: &str) -> Result<bool> {
    let m = crate::manage::Manager::new(docker_flag, plugins_dir, true)?;
    match m.owned(name) {
        Err(Error::NotFound { .. }) => Ok(true),
        Ok(_) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Plain text: one line per check, `[ ok ]`, `[FAIL]` or `[skip]`, the hint under a failure.
pub(crate) fn render_text(r: &Report) -> String {
    let mut o = format!("fractalic-publisher doctor (image {})\n", r.image);
    let width = STEPS.iter().map(|s| s.len()).max().unwrap_or(0);
    for c in &r.checks {
        let mark = match c.outcome {
            Outcome::Pass => "[ ok ]",
            Outcome::Fail => "[FAIL]",
            Outcome::Skip => "[skip]",
        };
        o.push_str(&format!("{mark} {:<width$}  {}\n", c.name, c.detail));
        if !c.hint.is_empty() {
            o.push_str(&format!("       hint: {}\n", c.hint));
        }
    }
    let failed = r
        .checks
        .iter()
        .filter(|c| c.outcome == Outcome::Fail)
        .count();
    if r.ok {
        o.push_str("All checks passed: this host can run deployments.\n");
    } else {
        o.push_str(&format!("{failed} check(s) failed; see the hints above.\n"));
    }
    o
}
