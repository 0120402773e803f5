//! `doctor`: checks, step by step, that this host can run a deployment (docker binary, daemon,
//! image, a free port, a throwaway container that starts and answers), with a hint for every
//! failure. The throwaway container is removed at the end, and by the Ctrl-C handler if the
//! run is interrupted.

use crate::docker::{Docker, QUICK};
use crate::error::{Error, Result};
use crate::journal::{Journal, Resource};
use crate::ports::{self, PortRequest};
use crate::readiness::{self, Started};
use serde::Serialize;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Label on the throwaway container (not the managed label: `ps` never shows it).
pub const LABEL_DOCTOR: &str = "fractalic-publisher.doctor";

/// How one check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail,
    /// Not run because an earlier check failed.
    Skip,
}

/// One step of the diagnosis.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
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
pub struct Report {
    /// True when every check passed.
    pub ok: bool,
    pub image: String,
    pub checks: Vec<Check>,
}

/// The checks, in order (all of them appear in every report).
pub const STEPS: &[&str] = &[
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

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Runs every check against `image` (already production-tagged); `timeout` bounds each wait
/// for the throwaway container's services.
pub fn run(docker_flag: Option<&Path>, image: &str, timeout: Duration) -> Report {
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

    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let port = match ports::choose(PortRequest::Preferred(8001), localhost, &BTreeSet::new()) {
        Ok(c) => {
            r.pass(c.explain());
            c.port
        }
        Err(e) => {
            r.fail(
                e.to_string(),
                "stop what listens on 8001 and the ports after it (`ss -ltnp`), or deploy with --port",
            );
            r.skip_rest("needs a free port");
            return finish(image, r);
        }
    };

    let name = format!(
        "fractalic-doctor-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() % 1_000_000)
    );
    // The throwaway container is this run's journal's: an interrupt at any point removes it.
    let journal = Journal::new();
    journal.set_docker(Arc::clone(&docker));
    let outcome = throwaway(&docker, &journal, &mut r, image, &name, port, timeout);
    // Whatever happened above, the container goes.
    let undo = journal.undo();
    let removed = match undo.left.first() {
        Some(l) => Err(Error::failed(format!("{}: {}", l.what, l.error))),
        None => docker.container_inspect(&name),
    };
    if !outcome {
        while r.checks.len() < STEPS.len() - 1 {
            r.push(
                Outcome::Skip,
                "needs the throwaway container".into(),
                String::new(),
            );
        }
    }
    match removed {
        Ok(None) => r.pass(format!("removed container {name}; nothing is left behind")),
        Ok(Some(_)) => r.fail(
            format!("container {name} is still there after `docker rm -f`"),
            format!("remove it by hand: docker rm -f {name}"),
        ),
        Err(e) => r.fail(
            e.to_string(),
            format!("remove it by hand: docker rm -f {name}"),
        ),
    }
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

/// Steps 5-7 on a throwaway container; false when one failed (the rest are skipped).
fn throwaway(
    docker: &Arc<Docker>,
    journal: &Journal,
    r: &mut Run,
    image: &str,
    name: &str,
    port: u16,
    timeout: Duration,
) -> bool {
    let label = format!("{LABEL_DOCTOR}=true");
    let run_label = journal.run_label();
    let t0 = Instant::now();
    let first = port;
    let mut port = port;
    let mut tries = 0;
    let mut wall = SystemTime::now();
    let started = loop {
        tries += 1;
        let publish = format!("127.0.0.1:{port}:8001");
        // Recorded before `docker create` runs, so an interrupt during the call removes it too.
        let token = match journal.record(Resource::Container {
            name: name.to_string(),
        }) {
            Ok(t) => t,
            Err(e) => break Err(e),
        };
        let created = docker.run(
            &[
                "create",
                "--name",
                name,
                "--publish",
                &publish,
                "--label",
                &label,
                "--label",
                &run_label,
                "--",
                image,
            ],
            None,
            QUICK,
        );
        match &created {
            Ok(_) => journal.confirm(token),
            Err(Error::Docker { stderr, .. }) if stderr.contains("is already in use") => {
                journal.forget(token)
            }
            Err(_) => {}
        }
        let started = created.and_then(|_| {
            wall = SystemTime::now();
            docker.run(&["start", name], None, QUICK)
        });
        // The port was free when chosen, but another deploy may take it before `docker start`:
        // like deploy, try the next free port (a few times).
        let clash = matches!(&started, Err(Error::Docker { stderr, .. }) if stderr.contains("port is already allocated"));
        let next = if clash && tries < 5 {
            ports::next_free(
                first,
                port,
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                &BTreeSet::new(),
            )
        } else {
            None
        };
        match next {
            Some(p) => {
                if let Some(t) = journal.container(name) {
                    journal.undo_now(t);
                }
                port = p;
            }
            None => break started,
        }
    };
    if let Err(e) = started {
        r.fail(
            e.to_string(),
            "Docker could not create or start a container from the image; read docker's message above (a port clash: run doctor again; a platform mismatch: pull the image for this host's platform)",
        );
        return false;
    }
    r.pass(format!(
        "{name} started in {} ms, port 127.0.0.1:{port}",
        t0.elapsed().as_millis()
    ));

    let started = Started::since(wall);
    let url = format!("http://127.0.0.1:{port}/health");
    let argv = ["curl", "-fsS", "http://localhost:5859/status"];
    let mcp_hint = "the MCP manager runs inside the image on port 5859; read its log with `docker exec CONTAINER cat /tmp/mcp_manager_error.log` on a deployment, or `fractalic-publisher logs NAME --service mcp_manager`";
    // The same proof as a deploy's: an exit, a restart or a service that keeps crashing fails
    // at once with the reason, and the container must stay up for a second.
    let (health, error) =
        match readiness::wait(docker, name, Some(started), &url, Some(&argv), timeout) {
            Ok(ready) => (
                Some(ready.health),
                ready.exec.filter(|o| !o.ok).map(|o| {
                    Error::failed(format!(
                        "http://localhost:5859/status did not answer within {}s ({})",
                        timeout.as_secs(),
                        o.error
                    ))
                }),
            ),
            Err(not) => (not.health, Some(not.error)),
        };
    let Some(health) = health else {
        let error = error.map_or_else(String::new, |e| e.to_string());
        // A death's message has the logs already; a timeout's does not.
        let logs = if error.contains("its last log lines") || error.contains("printed nothing") {
            String::new()
        } else {
            let logs = docker
                .run_unchecked(&["logs", "--tail", "10", name], None, QUICK)
                .map(|(_, o)| one_line(&format!("{}{}", o.stdout, o.stderr)))
                .unwrap_or_default();
            if logs.is_empty() {
                "; it printed nothing".to_string()
            } else {
                format!("; its last log lines: {logs}")
            }
        };
        r.fail(
            error,
            format!("the AI server in the image did not come up{logs}; a slow host may need a longer --timeout"),
        );
        return false;
    };
    r.pass(format!(
        "{url} answered 2xx after {} ms",
        health.elapsed.as_millis()
    ));
    match error {
        None => {
            r.pass("http://localhost:5859/status answered inside the container, and the container stayed up");
            true
        }
        Some(e) => {
            r.fail(e.to_string(), mcp_hint);
            false
        }
    }
}

/// Plain text: one line per check, `[ ok ]`, `[FAIL]` or `[skip]`, the hint under a failure.
pub fn render_text(r: &Report) -> String {
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
