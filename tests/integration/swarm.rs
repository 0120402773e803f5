//! `deploy docker-swarm` and the management commands on Swarm services: real deploys on the
//! single-node swarm of the test bed (scripts/dev-env.sh up), the stand-in image from the local
//! registry, host publish mode (this kernel has no IPVS, so the ingress routing mesh cannot
//! answer here). Also: a new platform is one .rhai file.

use crate::managed::{self, assert_code, json, out, publisher};
use crate::support;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SETTINGS_SECRET: &str = "sk-swarm-SECRET-7731";
const ENV_SECRET: &str = "envSECRET-4411";

/// The docker binary when a daemon answers and it is a swarm manager (the test bed makes it
/// one); with CI=true a missing swarm is a failure.
fn swarm_docker() -> Option<PathBuf> {
    let docker = support::docker()?;
    let state = support::docker_ok(
        &docker,
        &[
            "info",
            "--format",
            "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}",
        ],
    );
    if state != "active true" {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but the engine is not a swarm manager ({state}); run scripts/dev-env.sh up");
        }
        eprintln!("skipping: not a swarm manager ({state})");
        return None;
    }
    support::pull_stand_in(&docker);
    Some(docker)
}

/// Removes a test's service, its task containers, secrets and configs when dropped.
pub(crate) struct ServiceGuard {
    docker: PathBuf,
    name: String,
}

impl Drop for ServiceGuard {
    fn drop(&mut self) {
        let d = &self.docker;
        // The baked image is a content-addressed cache that `rm` keeps; tests drop theirs.
        let image = Command::new(d)
            .args([
                "service",
                "inspect",
                "--format",
                "{{index .Spec.Labels \"fractalic-publisher.image\"}}",
                &self.name,
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let _ = Command::new(d).args(["service", "rm", &self.name]).output();
        let filter = format!("label=com.docker.swarm.service.name={}", self.name);
        managed::eventually(30, || task_containers(d, &filter, true).is_empty());
        for kind in ["secret", "config"] {
            for n in objects(d, kind, &self.name) {
                let _ = Command::new(d).args([kind, "rm", &n]).output();
            }
        }
        if !image.is_empty() {
            let _ = Command::new(d).args(["image", "rm", &image]).output();
        }
    }
}

/// What most swarm tests start from: the engine, the stand-in image, a sample folder, a unique
/// deployment name (from `prefix`) and the guard that removes everything of that name at the
/// end. None when the engine is not a swarm manager (outside CI only; see `swarm_docker`).
pub(crate) fn case(
    prefix: &str,
) -> Option<(PathBuf, String, tempfile::TempDir, String, ServiceGuard)> {
    let docker = swarm_docker()?;
    let name = support::unique_name(prefix);
    let guard = ServiceGuard {
        docker: docker.clone(),
        name: name.clone(),
    };
    Some((
        docker,
        support::stand_in_image(),
        sample_folder(),
        name,
        guard,
    ))
}

pub(crate) fn task_containers(docker: &Path, filter: &str, all: bool) -> Vec<String> {
    let mut args = vec!["ps", "-q", "--filter", filter];
    if all {
        args.push("--all");
    }
    support::docker_ok(docker, &args)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Names of the secrets or configs labelled as belonging to deployment `name`.
pub(crate) fn objects(docker: &Path, kind: &str, name: &str) -> Vec<String> {
    let filter = format!("label=fractalic-publisher.deployment={name}");
    support::docker_ok(
        docker,
        &[kind, "ls", "--filter", &filter, "--format", "{{.Name}}"],
    )
    .lines()
    .map(str::to_string)
    .collect()
}

pub(crate) fn service_exists(docker: &Path, name: &str) -> bool {
    support::run_docker(docker, &["service", "inspect", name])
        .status
        .success()
}

/// A copy of the sample folder (scripts/demo/hello-fractalic) with a secret in settings.toml
/// and a .env.
fn sample_folder() -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo/hello-fractalic");
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    std::fs::write(
        dir.path().join("settings.toml"),
        format!("defaultProvider = \"demo\"\n[settings.demo]\nmodel = \"m\"\napiKey = \"{SETTINGS_SECRET}\"\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join(".env"),
        format!("DOTENV_KEY={ENV_SECRET}\n"),
    )
    .unwrap();
    dir
}

pub(crate) fn swarm_argv<'a>(folder: &'a Path, name: &'a str, image: &'a str) -> Vec<&'a str> {
    vec![
        "deploy",
        "docker-swarm",
        "--script-name",
        "hello",
        "--script-folder",
        folder.to_str().unwrap(),
        "--name",
        name,
        "--image",
        image,
        "--pull",
        "missing",
        "--publish-mode",
        "host",
        "--json",
    ]
}

fn urls(v: &Value) -> Vec<String> {
    v["details"]["plugin_result"]["urls"]
        .as_array()
        .unwrap_or_else(|| panic!("no urls in {v}"))
        .iter()
        .map(|u| u.as_str().unwrap().to_string())
        .collect()
}

fn execute(url: &str, filename: &str) -> Value {
    ureq::post(&format!("{url}/execute"))
        .timeout(Duration::from_secs(10))
        .send_json(serde_json::json!({ "filename": filename }))
        .unwrap()
        .into_json()
        .unwrap()
}

fn health_ok(url: &str) -> bool {
    ureq::get(&format!("{url}/health"))
        .timeout(Duration::from_millis(800))
        .call()
        .is_ok_and(|r| r.status() == 200)
}

#[test]
fn deploys_one_and_three_replicas_with_secrets_off_argv_and_out_of_the_image() {
    let Some(docker) = swarm_docker() else { return };
    let image = support::stand_in_image();
    let folder = sample_folder();
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("calls.log");
    let counting = support::counting_docker(logdir.path(), &docker, &log);

    // One replica: /execute through the task, with the settings from the secret.
    let one = support::unique_name("fp-sw1");
    let _g1 = ServiceGuard {
        docker: docker.clone(),
        name: one.clone(),
    };
    let env_item = format!("SECRET_X={ENV_SECRET}");
    let mut args = swarm_argv(folder.path(), &one, &image);
    args.extend(["--env", &env_item, "--timeout", "30", "--progress", "json"]);
    let o = publisher(&counting, &args);
    assert_code(&o, 0);
    let v = json(&o);
    // Each step's stage is the one the plugin names, not one its percentage implies (the
    // pull at 8 % is pulling_image, the bake at 20 % preparing_files).
    let stage_of = |prefix: &str| -> String {
        let stderr = String::from_utf8_lossy(&o.stderr);
        stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
            .map(|e| e["stage"].as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|| panic!("no step starting {prefix:?}: {stderr}"))
    };
    assert_eq!(stage_of("Pulling "), "pulling_image");
    assert_eq!(stage_of("Baking "), "preparing_files");
    assert_eq!(stage_of("Creating service "), "creating_container");
    assert_eq!(stage_of("Waiting for "), "starting_container");
    let u1 = urls(&v);
    assert_eq!(u1.len(), 1, "{v}");
    let r = execute(&u1[0], "/payload/hello/hello.md");
    assert_eq!(r["success"], true, "{r}");
    // The demo script's @shell output, as Fractalic returns it.
    assert_eq!(
        r["return_content"],
        "# Shell output {id=shell-output}\nhello from fractalic shell\nLinux\n\n",
        "{r}"
    );
    assert!(
        r["output"].as_str().unwrap().contains("provider demo"),
        "{r}"
    );

    // The secret is mounted where the image expects it, owned by appuser, 0400.
    let filter = format!("label=com.docker.swarm.service.name={one}");
    let task = task_containers(&docker, &filter, false);
    assert_eq!(task.len(), 1, "{task:?}");
    for path in [
        "/fractalic/settings.toml",
        "/settings.toml",
        "/fractalic/.env",
    ] {
        let ls = support::exec(&docker, &task[0], &["ls", "-ln", path]);
        let ls = String::from_utf8_lossy(&ls.stdout).to_string();
        assert!(
            ls.starts_with("-r-------- ") && ls.contains(" 1000 "),
            "{path}: {ls}"
        );
    }
    let env = support::exec(&docker, &task[0], &["env"]);
    assert!(String::from_utf8_lossy(&env.stdout).contains(&format!("SECRET_X={ENV_SECRET}")));

    // The image holds the payload and no settings.toml or .env: run it and look.
    let pushed = v["details"]["plugin_result"]["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        pushed.starts_with("127.0.0.1:5000/fractalic-app/hello:"),
        "{pushed}"
    );
    let found = support::docker_ok(
        &docker,
        &[
            "run", "--rm", "--entrypoint", "/bin/sh", &pushed, "-c",
            "ls /payload/hello; find / -xdev \\( -name settings.toml -o -name .env -o -name mcp_servers.json \\) 2>/dev/null; echo end",
        ],
    );
    assert!(
        found.contains("hello.md") && found.contains("README.txt"),
        "{found}"
    );
    assert!(
        !found.contains("settings.toml") && !found.contains(".env"),
        "{found}"
    );
    assert!(found.ends_with("end"), "{found}");
    assert_eq!(
        objects(&docker, "secret", &one).len(),
        2,
        "settings.toml and .env"
    );

    // Three replicas, host mode: each task has its own port, each answers.
    let three = support::unique_name("fp-sw3");
    let _g3 = ServiceGuard {
        docker: docker.clone(),
        name: three.clone(),
    };
    let mut args = swarm_argv(folder.path(), &three, &image);
    args.extend(["--replicas", "3", "--timeout", "40"]);
    let o = publisher(&counting, &args);
    assert_code(&o, 0);
    let v3 = json(&o);
    let mut u3 = urls(&v3);
    assert_eq!(u3.len(), 3, "{v3}");
    u3.dedup();
    assert_eq!(u3.len(), 3, "each task its own port: {v3}");
    for u in &u3 {
        assert!(health_ok(u), "{u}");
    }
    // Same content again (for another service): the image is reused, not committed or pushed.
    assert_eq!(v3["details"]["plugin_result"]["committed"], false, "{v3}");
    assert_eq!(v3["details"]["plugin_result"]["pushed"], false, "{v3}");

    // ps lists both platforms' deployments in one table.
    let o = publisher(&docker, &["ps", "--json"]);
    assert_code(&o, 0);
    let ps = json(&o);
    let row = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == three.as_str())
        .unwrap_or_else(|| panic!("{three} not in ps: {ps}"));
    assert_eq!(row["plugin"], "docker-swarm");
    assert_eq!(row["state"], "running");
    assert!(
        row["health"].as_str().unwrap().starts_with("healthy (3/3"),
        "{row}"
    );

    // The secrets never appeared on a docker command line nor in our output.
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(calls.contains("secret create"), "{calls}");
    for s in [SETTINGS_SECRET, ENV_SECRET] {
        assert!(!calls.contains(s), "a secret reached argv:\n{calls}");
    }
    let (so, se) = out(&o);
    assert!(!so.contains(SETTINGS_SECRET) && !se.contains(SETTINGS_SECRET));

    // rm leaves no service, secret, config or container behind.
    for name in [&one, &three] {
        let o = publisher(&docker, &["rm", "--force", name]);
        assert_code(&o, 0);
        assert!(!service_exists(&docker, name), "{name}");
        let filter = format!("label=com.docker.swarm.service.name={name}");
        assert!(task_containers(&docker, &filter, true).is_empty(), "{name}");
        assert!(objects(&docker, "secret", name).is_empty(), "{name}");
        assert!(objects(&docker, "config", name).is_empty(), "{name}");
    }
}

/// The deployment's running task URLs, as `docker service ps` shows them.
fn task_urls(docker: &Path, name: &str) -> Vec<String> {
    let o = support::run_docker(
        docker,
        &[
            "service",
            "ps",
            "--filter",
            "desired-state=running",
            "--format",
            "{{.CurrentState}}|{{.Ports}}",
            name,
        ],
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with("Running"))
        .filter_map(|l| {
            let p = l.split("*:").nth(1)?.split("->").next()?;
            Some(format!("http://localhost:{p}"))
        })
        .collect()
}

#[test]
fn updates_roll_without_a_failed_poll_and_a_failing_update_is_rolled_back() {
    let Some((docker, image, folder, name, _g)) = case("fp-swup") else {
        return;
    };
    let mut args = swarm_argv(folder.path(), &name, &image);
    args.extend(["--timeout", "10"]);
    let o = publisher(&docker, &args);
    assert_code(&o, 0);

    // Unchanged content: no commit, no push, no update.
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("calls.log");
    let counting = support::counting_docker(logdir.path(), &docker, &log);
    let o = publisher(&counting, &args);
    assert_code(&o, 0);
    assert_eq!(json(&o)["details"]["plugin_result"]["unchanged"], true);
    let calls = std::fs::read_to_string(&log).unwrap();
    for verb in [
        "commit ",
        "push ",
        "service update",
        "service create",
        "create ",
    ] {
        assert!(
            !calls.lines().any(|l| l.starts_with(verb)),
            "{verb}:\n{calls}"
        );
    }
    // (`secret create` of the same content answers "already exists": nothing new.)
    assert_eq!(objects(&docker, "secret", &name).len(), 2);

    // A changed script while a poller asks /health every 50 ms. In host mode every task has its
    // own port and there is no load balancer: a poll succeeds when any running task answers
    // (the task list is refreshed every 200 ms), as a client behind a balancer would see it.
    let known: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(task_urls(&docker, &name)));
    let stop = Arc::new(AtomicBool::new(false));
    let (polls, failures) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let refresher = {
        let (known, stop, docker, name) =
            (known.clone(), stop.clone(), docker.clone(), name.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let now = task_urls(&docker, &name);
                let mut k = known.lock().unwrap();
                for u in now {
                    if !k.contains(&u) {
                        k.push(u);
                    }
                }
                drop(k);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let poller = {
        let (known, stop, polls, failures) =
            (known.clone(), stop.clone(), polls.clone(), failures.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let urls = known.lock().unwrap().clone();
                polls.fetch_add(1, Ordering::Relaxed);
                if !urls.iter().rev().any(|u| health_ok(u)) {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let v2 = "# Demo task v2 {id=demo-task}\n\n@shell\nprompt: echo v2\nuse-header: \"# Out {id=out}\"\n\n@return\nblock: out\n";
    std::fs::write(folder.path().join("hello.md"), v2).unwrap();
    let o = publisher(&docker, &args);
    // A few more polls after the old task is gone.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    poller.join().unwrap();
    refresher.join().unwrap();
    assert_code(&o, 0);
    let v = json(&o);
    assert_eq!(v["details"]["plugin_result"]["updated"], true, "{v}");
    assert!(polls.load(Ordering::Relaxed) > 20, "the poller hardly ran");
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "polls failed during the rolling update"
    );
    let after = urls(&v);
    for u in &after {
        assert_eq!(
            execute(u, "/payload/hello/hello.md")["return_content"],
            returned_v("v2").as_str()
        );
    }
    let image_v2 = support::docker_ok(
        &docker,
        &[
            "service",
            "inspect",
            "--format",
            "{{index .Spec.Labels \"fractalic-publisher.image\"}}",
            &name,
        ],
    );

    // An update whose tasks fail health: exit 1, Swarm rolls back, v2 keeps serving.
    std::fs::write(folder.path().join("hello.md"), "# v3\n").unwrap();
    let mut bad = args.clone();
    bad.extend(["--env", "STAND_IN_HEALTH=unhealthy"]);
    let o = publisher(&docker, &bad);
    assert_code(&o, 1);
    let e = json(&o);
    let msg = e["error"].as_str().unwrap();
    assert!(msg.contains("rolled it back"), "{msg}");
    let now = support::docker_ok(
        &docker,
        &["service", "inspect", "--format", "{{index .Spec.Labels \"fractalic-publisher.image\"}} {{json .Spec.TaskTemplate.ContainerSpec.Env}}", &name],
    );
    assert!(
        now.starts_with(&image_v2) && !now.contains("unhealthy"),
        "{now}"
    );
    let serving = task_urls(&docker, &name);
    assert_eq!(serving.len(), 1, "{serving:?}");
    assert_eq!(
        execute(&serving[0], "/payload/hello/hello.md")["return_content"],
        returned_v("v2").as_str()
    );
}

#[test]
fn ctrl_c_at_each_step_of_a_first_deploy_leaves_nothing() {
    let Some(docker) = swarm_docker() else { return };
    let image = support::stand_in_image();
    let mut removed_service = false;
    for (i, ms) in [0u64, 150, 300, 500, 800, 1200, 1800, 2600]
        .into_iter()
        .enumerate()
    {
        let folder = sample_folder();
        // A script of its own per moment: its image repository shows what was left.
        let script = format!("sig{i}-{}", std::process::id());
        std::fs::write(
            folder.path().join(format!("{script}.md")),
            format!("# {ms}\n"),
        )
        .unwrap();
        let name = support::unique_name("fp-swint");
        let _g = ServiceGuard {
            docker: docker.clone(),
            name: name.clone(),
        };
        let mut args = swarm_argv(folder.path(), &name, &image);
        args[3] = &script;
        args.extend(["--timeout", "30", "--env", "STAND_IN_START_DELAY_MS=1500"]);
        // (Not spawn_interruptible: the interrupt's moment counts from the spawn.)
        let child = managed::command(&docker, &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut child = managed::KillOnDrop(child);
        let t0 = Instant::now();
        wait_for_handler(pid);
        std::thread::sleep(Duration::from_millis(ms).saturating_sub(t0.elapsed()));
        managed::sigint(pid);
        let status = managed::wait_exit(&mut child.0, 90);
        let (mut so, mut se) = (String::new(), String::new());
        use std::io::Read;
        child
            .0
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut so)
            .unwrap();
        child
            .0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut se)
            .unwrap();
        let when = format!("SIGINT at {ms} ms\nstdout: {so}\nstderr: {se}");
        assert_eq!(status.code(), Some(130), "{when}");
        let v: Value = serde_json::from_str(so.trim()).unwrap_or_else(|e| panic!("{e}: {when}"));
        assert_eq!(v["cleanup"]["left"], serde_json::json!([]), "{when}");
        removed_service |= v["cleanup"]["removed"].as_array().is_some_and(|a| {
            a.iter()
                .any(|r| r == &Value::from(format!("removed service {name}")))
        });
        assert!(!service_exists(&docker, &name), "{when}");
        assert!(objects(&docker, "secret", &name).is_empty(), "{when}");
        let mine = format!(" {pid}-");
        let labelled = support::docker_ok(
            &docker,
            &[
                "ps",
                "-a",
                "--filter",
                "label=fractalic-publisher.run",
                "--format",
                "{{.Names}} {{.Label \"fractalic-publisher.run\"}}",
            ],
        );
        assert!(
            !labelled.lines().any(|l| l.contains(&mine)),
            "{when}\n{labelled}"
        );
        let repo = format!("127.0.0.1:5000/fractalic-app/{script}");
        let tags = support::docker_ok(&docker, &["image", "ls", "-q", &repo]);
        assert!(tags.is_empty(), "{when}: image tags left: {tags}");
    }
    assert!(
        removed_service,
        "no interrupt landed after the service was created"
    );
}

/// Starts the publisher with `args` (output piped), killed when dropped, and waits until its
/// SIGINT handler is installed, so a signal the test sends lands in the tool's own cleanup.
fn spawn_interruptible(docker: &Path, args: &[&str]) -> (u32, managed::KillOnDrop) {
    let child = managed::command(docker, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let child = managed::KillOnDrop(child);
    wait_for_handler(pid);
    (pid, child)
}

/// Waits until `pid` has installed its SIGINT handler.
fn wait_for_handler(pid: u32) {
    let caught = || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|m| m & 2 != 0)
    };
    assert!(
        managed::eventually(10, caught),
        "no signal handler in {pid}"
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn not_a_swarm_manager_is_bad_input_and_touches_nothing() {
    let Some(docker) = support::docker() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    // `docker info` says: no swarm; everything else is the real docker.
    let fake = managed::docker_wrapper(
        dir.path(),
        &docker,
        &log,
        "if [ \"$1\" = info ]; then echo 'inactive false'; exit 0; fi",
    );
    let folder = sample_folder();
    let name = support::unique_name("fp-swno");
    let image = support::stand_in_image();
    let o = publisher(&fake, &swarm_argv(folder.path(), &name, &image));
    assert_code(&o, 2);
    let e = json(&o);
    let msg = e["error"].as_str().unwrap();
    assert!(
        msg.contains("not a swarm manager") && msg.contains("docker swarm init"),
        "{msg}"
    );
    let calls = managed::logged_calls(&log);
    assert_eq!(
        calls,
        vec!["info --format {{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"]
    );
}

#[test]
fn bad_swarm_flags_are_bad_input_before_docker() {
    let folder = sample_folder();
    let f = folder.path().to_str().unwrap();
    let base = [
        "deploy",
        "docker-swarm",
        "--script-name",
        "hello",
        "--script-folder",
        f,
    ];
    for (extra, needle) in [
        (vec!["--replicas", "0"], "--replicas"),
        (vec!["--replicas", "many"], "--replicas"),
        (vec!["--registry", "http://x:5000"], "HOST:PORT"),
        (vec!["--publish-mode", "mesh"], "--publish-mode"),
        (
            vec!["--placement-pref", "spread=node.hostname"],
            "bad --placement-pref \"spread=node.hostname\"",
        ),
        (vec!["--placement-pref", "zone"], "spread=node.labels.KEY"),
        (
            vec!["--max-replicas-per-node", "101"],
            "bad --max-replicas-per-node \"101\"",
        ),
        (
            vec!["--max-replicas-per-node=-1"],
            "from 0 (no limit) to 100",
        ),
        (
            vec![
                "--publish-mode",
                "host",
                "--port",
                "8080",
                "--replicas",
                "3",
            ],
            "each node one task",
        ),
        (vec!["--name", "a.b"], "DNS name"),
        (
            vec!["--name", "x-123456789-123456789-123456789-123456789"],
            "too long",
        ),
    ] {
        let mut args: Vec<&str> = base.to_vec();
        args.extend(extra.iter());
        // /bin/true as docker: nothing could be created even if a check were missing.
        let o = publisher(Path::new("/bin/true"), &args);
        assert_code(&o, 2);
        assert!(out(&o).1.contains(needle), "{extra:?}: {}", out(&o).1);
    }
}

#[test]
fn a_service_this_tool_did_not_make_is_refused() {
    let Some(docker) = swarm_docker() else { return };
    let name = support::unique_name("fp-swforeign");
    let _g = ServiceGuard {
        docker: docker.clone(),
        name: name.clone(),
    };
    support::docker_ok(
        &docker,
        &[
            "service",
            "create",
            "--detach",
            "--replicas",
            "0",
            "--name",
            &name,
            &support::stand_in_image(),
        ],
    );
    for cmd in [
        vec!["status", name.as_str()],
        vec!["rm", "--force", name.as_str()],
        vec!["stop", name.as_str()],
    ] {
        let o = publisher(&docker, &cmd);
        assert_code(&o, 2);
        assert!(
            out(&o).1.contains("not created by fractalic-publisher"),
            "{}",
            out(&o).1
        );
    }
    let folder = sample_folder();
    let image = support::stand_in_image();
    let o = publisher(&docker, &swarm_argv(folder.path(), &name, &image));
    assert_code(&o, 2);
    assert!(
        service_exists(&docker, &name),
        "the foreign service was touched"
    );
}

#[test]
fn stop_start_logs_and_status_work_on_a_swarm_deployment() {
    let Some((docker, image, folder, name, _g)) = case("fp-swmg") else {
        return;
    };
    let mut args = swarm_argv(folder.path(), &name, &image);
    args.extend(["--replicas", "2", "--timeout", "30"]);
    assert_code(&publisher(&docker, &args), 0);

    let o = publisher(&docker, &["status", &name, "--json"]);
    assert_code(&o, 0);
    let s = json(&o);
    assert_eq!(s["healthy"], true, "{s}");
    assert_eq!(s["replicas"], 2, "{s}");

    let o = publisher(&docker, &["logs", &name, "--tail", "5"]);
    assert_code(&o, 0);
    assert!(out(&o).0.contains("INFO success"), "{}", out(&o).0);

    let o = publisher(&docker, &["stop", &name]);
    assert_code(&o, 0);
    let filter = format!("label=com.docker.swarm.service.name={name}");
    assert!(task_containers(&docker, &filter, false).is_empty());
    // A stopped deployment is refused by rm without --force? No: it is not running.
    let o = publisher(&docker, &["ps", "--all", "--json"]);
    let ps = json(&o);
    let row = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name.as_str())
        .unwrap();
    assert_eq!(row["state"], "stopped", "{row}");

    let o = publisher(&docker, &["start", &name, "--json"]);
    assert_code(&o, 0);
    assert_eq!(
        task_urls(&docker, &name).len(),
        2,
        "start brings back both tasks"
    );

    let o = publisher(&docker, &["rm", &name]);
    assert_code(&o, 2);
    assert!(
        service_exists(&docker, &name),
        "rm without --force removed a running deployment"
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn a_new_platform_is_one_file() {
    let Some(docker) = support::docker() else {
        return;
    };
    support::pull_stand_in(&docker);
    let plugins = tempfile::tempdir().unwrap();
    let code = r#"// tiny: one container from an image baked with the payload, on generic host calls only.
fn info() { #{ name: "tiny", display_name: "Tiny", description: "test platform", version: "0.1.0", capabilities: ["deploy", "list", "delete"] } }
fn validate(c) { [] }
fn publish(c) {
    let base = pull_image(c.image, c.platform, c.pull);
    let img = payload_image(#{ base: c.image, base_id: base.id, user: base.user, repo: `fractalic-tiny/${c.script_name}`, push: false });
    let args = ["run", "-d", "--name", c.name, "-p", "127.0.0.1::8001"];
    let l = deploy_labels();
    l["fractalic-publisher.script"] = c.script_name;
    for k in l.keys() { args += ["--label", `${k}=${l[k]}`]; }
    args.push(img.image);
    let r = docker_run(args, #{ undo: ["rm", "-f", c.name], what: `container ${c.name}` });
    if !r.ok { fail(r.stderr); }
    let p = docker_run(["port", c.name, "8001/tcp"], #{}).stdout.split("\n")[0];
    let url = `http://localhost:${p.sub_string(p.index_of(":") + 1)}`;
    let deadline = clock_ms() + c.timeout * 1000;
    while !http_request("GET", url + "/health", #{ timeout_ms: 500 }).ok {
        if clock_ms() > deadline { fail(`${url} never answered`); }
        pause_ms(50);
    }
    #{ deployment_id: c.name, url: url, image: img.image }
}
fn lookup(n) {
    let c = container_inspect(n);
    if c == () { return (); }
    let l = c.Config.Labels;
    #{ name: n, kind: "container", plugin: l["fractalic-publisher.plugin"] ?? "", managed: l["fractalic-publisher.managed"] == "true", running: c.State.Running }
}
fn list_all() {
    let out = [];
    for r in docker_ps(true, ["label=fractalic-publisher.plugin=tiny"], ["fractalic-publisher.script"]) {
        out.push(#{ name: r.name, plugin: "tiny", script: r.labels["fractalic-publisher.script"], state: r.state });
    }
    out
}
fn delete(name, opts) {
    let r = docker_run(["rm", "-f", name], #{});
    if !r.ok { fail(r.stderr); }
    #{ name: name, removed: [name] }
}
"#;
    assert!(code.lines().count() < 60);
    std::fs::write(plugins.path().join("tiny.rhai"), code).unwrap();
    let pdir = plugins.path().to_str().unwrap();
    let folder = sample_folder();
    let name = support::unique_name("fp-tiny");
    let _g = support::ContainerGuard::new(&name);
    let image = support::stand_in_image();
    let o = publisher(
        &docker,
        &[
            "--plugins-dir",
            pdir,
            "deploy",
            "tiny",
            "--script-name",
            "hello",
            "--script-folder",
            folder.path().to_str().unwrap(),
            "--name",
            &name,
            "--image",
            &image,
            "--pull",
            "missing",
            "--json",
        ],
    );
    assert_code(&o, 0);
    let url = json(&o)["url"].as_str().unwrap().to_string();
    assert!(health_ok(&url), "{url}");
    let served = support::exec(&docker, &name, &["cat", "/payload/hello/hello.md"]);
    assert_eq!(
        String::from_utf8_lossy(&served.stdout),
        std::fs::read_to_string(folder.path().join("hello.md")).unwrap()
    );
    let o = publisher(&docker, &["--plugins-dir", pdir, "ps", "--json"]);
    assert_code(&o, 0);
    let ps = json(&o);
    assert!(
        ps.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == name.as_str() && e["plugin"] == "tiny"),
        "{ps}"
    );
    let o = publisher(&docker, &["--plugins-dir", pdir, "rm", "--force", &name]);
    assert_code(&o, 0);
    assert!(
        managed::state(&docker, &name).is_none(),
        "{name} is still there"
    );
}

#[test]
fn ctrl_c_during_an_update_rolls_it_back() {
    let Some((docker, image, folder, name, _g)) = case("fp-swintup") else {
        return;
    };
    let mut args = swarm_argv(folder.path(), &name, &image);
    args.extend(["--timeout", "20"]);
    assert_code(&publisher(&docker, &args), 0);
    let label = |d: &Path| {
        support::docker_ok(
            d,
            &["service", "inspect", "--format", "{{index .Spec.Labels \"fractalic-publisher.image\"}}|{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}", &name],
        )
    };
    let before = label(&docker);
    std::fs::write(folder.path().join("hello.md"), "# changed\n").unwrap();
    args.extend(["--env", "STAND_IN_START_DELAY_MS=5000"]);
    let (pid, mut child) = spawn_interruptible(&docker, &args);
    assert!(
        managed::eventually(30, || label(&docker).ends_with("|updating")),
        "the update never started: {}",
        label(&docker)
    );
    managed::sigint(pid);
    assert_eq!(managed::wait_exit(&mut child.0, 60).code(), Some(130));
    // The undo waits for Swarm's rollback, then records the undone release with a label-only
    // update (which clears the update status): the old image, and every task back on it.
    let (img_before, _) = before.split_once('|').unwrap();
    let tasks_on = |img: &str| {
        let t = support::docker_ok(
            &docker,
            &[
                "service",
                "ps",
                "--filter",
                "desired-state=running",
                "--format",
                "{{.Image}}",
                &name,
            ],
        );
        !t.is_empty() && t.lines().all(|l| l.starts_with(img))
    };
    assert!(
        managed::eventually(60, || {
            let l = label(&docker);
            (l.ends_with("|rollback_completed") || l.ends_with('|'))
                && l.starts_with(&format!("{img_before}|"))
                && tasks_on(img_before)
        }),
        "not rolled back: {}",
        label(&docker)
    );
    assert_eq!(
        objects(&docker, "secret", &name).len(),
        2,
        "the secrets (same content, reused) are still the two the service uses"
    );
    // The undone update never went live: the history says so.
    let h = history(&docker, &name);
    assert_eq!(h["current"], "r1", "{h}");
    for r in releases(&h) {
        assert!(r.0 != "r2" || r.3 == "rolled back", "{h}");
    }
}

#[test]
fn dying_tasks_fail_fast_quoting_swarm_and_leave_nothing() {
    let Some((docker, image, folder, name, _g)) = case("fp-swdie") else {
        return;
    };
    let mut args = swarm_argv(folder.path(), &name, &image);
    // A generous deadline: "keep failing" comes only from the fail-fast path (the deadline's
    // message is "not healthy within").
    args.extend(["--timeout", "300", "--env", "STAND_IN_EXIT_AFTER_MS=300"]);
    let o = publisher(&docker, &args);
    assert_code(&o, 1);
    let e = json(&o);
    let msg = e["error"].as_str().unwrap();
    assert!(
        msg.contains("keep failing") && msg.contains("non-zero exit (3)"),
        "{msg}"
    );
    assert!(msg.contains("nothing of this run is left"), "{msg}");
    assert!(!service_exists(&docker, &name));
    assert!(objects(&docker, "secret", &name).is_empty());
}

#[test]
fn context_flag_reaches_every_docker_call_of_a_swarm_deployment() {
    let Some(docker) = swarm_docker() else { return };
    let image = support::stand_in_image();
    let folder = sample_folder();
    let config = tempfile::tempdir().unwrap();
    let ctx = "fp-test-swarm-ctx";
    crate::engine::local_context(&docker, config.path(), ctx);
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("calls.log");
    let counting = support::counting_docker(logdir.path(), &docker, &log);
    let name = support::unique_name("fp-swctx");
    let _g = ServiceGuard {
        docker: docker.clone(),
        name: name.clone(),
    };
    let run = |args: &[&str]| {
        managed::command(&counting, &[&["--context", ctx], args].concat())
            .env("DOCKER_CONFIG", config.path())
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .output()
            .unwrap()
    };
    let mut args = swarm_argv(folder.path(), &name, &image);
    args.extend(["--timeout", "30"]);
    let o = run(&args);
    assert_code(&o, 0);
    assert!(health_ok(&urls(&json(&o))[0]));
    for (cmd, code) in [
        (vec!["ps", "--json"], 0),
        (vec!["status", &name, "--json"], 0),
        (vec!["stop", &name, "--json"], 0),
        (vec!["rm", &name, "--json"], 0),
    ] {
        let o = run(&cmd);
        assert_code(&o, code);
    }
    assert!(!service_exists(&docker, &name), "{name} is still there");
    let calls = managed::logged_calls(&log);
    let want = format!("--context {ctx} ");
    let stray: Vec<&String> = calls.iter().filter(|c| !c.starts_with(&want)).collect();
    assert!(stray.is_empty(), "calls without {want:?}: {stray:?}");
    assert!(
        calls.iter().any(|c| c.contains(" service create ")),
        "{calls:?}"
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn ps_lists_swarm_deployments_with_one_docker_call_even_with_hostile_labels() {
    let Some((docker, image, folder, name, _g)) = case("fp-swps") else {
        return;
    };
    let port = portpicker::pick_unused_port()
        .expect("a free port")
        .to_string();
    let mut args = swarm_argv(folder.path(), &name, &image);
    args.extend(["--port", &port]);
    let o = publisher(&docker, &args);
    assert_code(&o, 0);
    // A label edited by hand with everything a naive parser of the CLI's output trips on.
    let hostile = r#"he"l}lo, x:y \ map[a:b] {"z":1}"#;
    support::docker_ok(
        &docker,
        &[
            "service",
            "update",
            "--detach",
            "--label-add",
            &format!("fractalic-publisher.script={hostile}"),
            &name,
        ],
    );

    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("calls.log");
    let counting = support::counting_docker(logdir.path(), &docker, &log);
    let row = |all: bool| {
        std::fs::write(&log, "").unwrap();
        let mut a = vec!["ps", "--json"];
        if all {
            a.push("--all");
        }
        let o = publisher(&counting, &a);
        assert_code(&o, 0);
        let calls = std::fs::read_to_string(&log).unwrap();
        // One `service ls` and at most one `service ps` (every running service's tasks at
        // once, for the tasks per node); nothing else about this deployment.
        let swarm: Vec<&str> = calls
            .lines()
            .filter(|l| l.starts_with("service "))
            .collect();
        assert_eq!(
            swarm
                .iter()
                .filter(|l| l.starts_with("service ls "))
                .count(),
            1,
            "{calls}"
        );
        assert!(
            swarm
                .iter()
                .filter(|l| l.starts_with("service ps "))
                .count()
                <= 1
                && swarm
                    .iter()
                    .all(|l| l.starts_with("service ls ") || l.starts_with("service ps ")),
            "docker-swarm made another call for {name}:\n{calls}"
        );
        json(&o)
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name.as_str())
            .cloned()
    };
    let r = row(false).unwrap_or_else(|| panic!("{name} not in ps"));
    assert_eq!(r["plugin"], "docker-swarm", "{r}");
    assert_eq!(r["script"], hostile, "{r}");
    assert_eq!(r["state"], "running", "{r}");
    assert_eq!(r["url"], format!("http://localhost:{port}"), "{r}");
    assert_eq!(r["replicas"], 1, "{r}");
    assert!(
        r["health"]
            .as_str()
            .unwrap()
            .starts_with("healthy (1/1 tasks)"),
        "{r}"
    );
    assert!(r["created"].as_str().unwrap().ends_with('Z'), "{r}");

    // Stopped (scaled to 0): listed with --all only, still one call.
    let o = publisher(&docker, &["stop", &name]);
    assert_code(&o, 0);
    assert!(
        row(false).is_none(),
        "a stopped deployment is listed without --all"
    );
    let r = row(true).unwrap_or_else(|| panic!("{name} not in ps --all"));
    assert_eq!(r["state"], "stopped", "{r}");
    assert_eq!(r["health"], "-", "{r}");
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn an_ingress_port_that_never_answers_names_publish_mode_host_and_leaves_nothing() {
    let Some((docker, image, folder, name, _g)) = case("fp-swing") else {
        return;
    };
    let mut args = swarm_argv(folder.path(), &name, &image);
    let at = args.iter().position(|a| *a == "host").unwrap();
    args[at] = "ingress";
    args.extend(["--timeout", "8"]);
    let o = publisher(&docker, &args);
    let ipvs = Path::new("/proc/net/ip_vs").exists();
    if o.status.code() == Some(0) {
        // An engine with the routing mesh: the failure this test is about cannot happen.
        assert!(ipvs, "ingress answered without IPVS? {:?}", out(&o));
        eprintln!("the ingress routing mesh works on this engine; nothing to check");
        return;
    }
    assert_code(&o, 1);
    let (stdout, stderr) = out(&o);
    let msg = stdout + &stderr;
    assert!(msg.contains("--publish-mode host"), "no hint in: {msg}");
    assert!(msg.contains("ingress"), "{msg}");
    assert!(!service_exists(&docker, &name), "{name} was left behind");
    for kind in ["secret", "config"] {
        assert!(
            objects(&docker, kind, &name).is_empty(),
            "a {kind} was left"
        );
    }
}

/// `history NAME --json`.
fn history(docker: &Path, name: &str) -> Value {
    let o = publisher(docker, &["history", name, "--json"]);
    assert_code(&o, 0);
    json(&o)
}

/// The release ids of a history, oldest first, with kind, `of` and outcome.
fn releases(h: &Value) -> Vec<(String, String, String, String)> {
    h["releases"]
        .as_array()
        .unwrap_or_else(|| panic!("no releases in {h}"))
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
            (s("id"), s("kind"), s("of"), s("outcome"))
        })
        .collect()
}

fn release<'a>(h: &'a Value, id: &str) -> &'a Value {
    h["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {h}"))
}

/// What every running task of the deployment serves for hello.md (they must agree).
fn serves(docker: &Path, name: &str) -> String {
    let urls = task_urls(docker, name);
    assert!(!urls.is_empty(), "no running task of {name}");
    let got: Vec<String> = urls
        .iter()
        .map(|u| {
            execute(u, "/payload/hello/hello.md")["return_content"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert!(got.iter().all(|g| *g == got[0]), "tasks disagree: {got:?}");
    got[0].clone()
}

/// A service label's value.
fn service_label(docker: &Path, name: &str, key: &str) -> String {
    support::docker_ok(
        docker,
        &[
            "service",
            "inspect",
            "--format",
            &format!("{{{{index .Spec.Labels \"{key}\"}}}}"),
            name,
        ],
    )
}

/// The service's spec version: any change to it (even a label) moves it.
fn spec_version(docker: &Path, name: &str) -> String {
    support::docker_ok(
        docker,
        &["service", "inspect", "--format", "{{.Version.Index}}", name],
    )
}

/// The content tag of a deploy's image (`REPO:TAG`).
fn tag_of(deploy: &Value) -> String {
    let image = deploy["details"]["plugin_result"]["image"]
        .as_str()
        .unwrap_or_else(|| panic!("no image in {deploy}"));
    image.rsplit(':').next().unwrap().to_string()
}

/// What the stand-in (as Fractalic) returns for [`script_v`]: the block its `@shell` made.
fn returned_v(v: &str) -> String {
    format!("# Out {{id=out}}\n{v}\n\n")
}

fn script_v(v: &str) -> String {
    format!("# Demo task {v} {{id=demo-task}}\n\n@shell\nprompt: echo {v}\nuse-header: \"# Out {{id=out}}\"\n\n@return\nblock: out\n")
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn rollback_and_history_map_onto_swarm_rollback_and_rolling_updates() {
    let Some((docker, image, folder, name, _g)) = case("fp-swrb") else {
        return;
    };
    let mut args = swarm_argv(folder.path(), &name, &image);
    args.extend(["--timeout", "10"]);
    let (v1, v2) = (script_v("v1"), script_v("v2"));
    std::fs::write(folder.path().join("hello.md"), &v1).unwrap();
    let o = publisher(&docker, &args);
    assert_code(&o, 0);
    let tag1 = tag_of(&json(&o));
    std::fs::write(folder.path().join("hello.md"), &v2).unwrap();
    let o = publisher(&docker, &args);
    assert_code(&o, 0);
    let tag2 = tag_of(&json(&o));
    assert_ne!(tag1, tag2);

    // r1 initial + r2 update, each with the content tag of its image as payload hash.
    let h = history(&docker, &name);
    assert_eq!(
        releases(&h),
        [
            ("r1".into(), "initial".into(), "".into(), "ok".into()),
            ("r2".into(), "update".into(), "".into(), "ok".into())
        ],
        "{h}"
    );
    assert_eq!(h["current"], "r2");
    assert_eq!(release(&h, "r1")["state"]["payload_hash"], tag1.as_str());
    assert_eq!(release(&h, "r2")["state"]["payload_hash"], tag2.as_str());
    assert_eq!(
        release(&h, "r2")["changes"]["image"],
        serde_json::json!({"from": tag1, "to": tag2})
    );
    assert_eq!(
        release(&h, "r2")["state"]["config"],
        serde_json::json!({".env": "set", "settings.toml": "set"})
    );
    // Kept with the service, and no secret in it or in the output.
    let label = service_label(&docker, &name, "fractalic-publisher.history");
    let stored: Value = serde_json::from_str(&label).unwrap();
    assert_eq!(stored["current"], "r2", "{label}");
    for text in [label.as_str(), &h.to_string()] {
        assert!(
            !text.contains(SETTINGS_SECRET) && !text.contains(ENV_SECRET),
            "{text}"
        );
    }

    // rollback = Swarm's own rollback; twice returns to where it started.
    let o = publisher(&docker, &["rollback", &name, "--json"]);
    assert_code(&o, 0);
    let r = json(&o);
    assert_eq!(
        (&r["of"], &r["release"], &r["kind"]),
        (
            &Value::from("r1"),
            &Value::from("r3"),
            &Value::from("docker service rollback")
        ),
        "{r}"
    );
    assert_eq!(serves(&docker, &name), returned_v("v1"));
    let h = history(&docker, &name);
    assert_eq!(h["current"], "r3");
    assert_eq!(
        releases(&h)[2],
        ("r3".into(), "rollback".into(), "r1".into(), "ok".into())
    );
    assert_eq!(release(&h, "r3")["state"]["payload_hash"], tag1.as_str());
    let o = publisher(&docker, &["rollback", &name, "--json"]);
    assert_code(&o, 0);
    assert_eq!(json(&o)["of"], "r2");
    assert_eq!(serves(&docker, &name), returned_v("v2"));

    // --to a given release: a rolling update to its image, secrets and configs.
    let o = publisher(&docker, &["rollback", &name, "--to", "r1", "--json"]);
    assert_code(&o, 0);
    let r = json(&o);
    assert_eq!(
        (&r["of"], &r["release"]),
        (&Value::from("r1"), &Value::from("r5"))
    );
    assert_eq!(serves(&docker, &name), returned_v("v1"));
    let o = publisher(&docker, &["history", &name]);
    assert_code(&o, 0);
    let text = out(&o).0;
    assert!(
        text.contains("*r5") && text.contains("back to r1"),
        "{text}"
    );

    // An update whose tasks fail health: Swarm rolls it back; history says so; v1 serves.
    std::fs::write(folder.path().join("hello.md"), script_v("v3")).unwrap();
    let mut bad = args.clone();
    bad.extend(["--env", "STAND_IN_HEALTH=unhealthy"]);
    assert_code(&publisher(&docker, &bad), 1);
    let h = history(&docker, &name);
    assert_eq!(h["current"], "r5", "{h}");
    let r6 = release(&h, "r6");
    assert_eq!(
        (&r6["kind"], &r6["outcome"]),
        (&Value::from("update"), &Value::from("rolled back")),
        "{h}"
    );
    assert!(
        r6["error"].as_str().unwrap().contains("rollback_completed"),
        "{r6}"
    );
    assert_eq!(
        r6["state"]["env"],
        serde_json::json!({"STAND_IN_HEALTH": "set"})
    );
    assert_eq!(serves(&docker, &name), returned_v("v1"));

    // Refused, exit 2, nothing changed: a release that never went live, one that is not there.
    let version = spec_version(&docker, &name);
    for to in ["r6", "r99"] {
        let o = publisher(&docker, &["rollback", &name, "--to", to]);
        assert_code(&o, 2);
        assert!(out(&o).1.contains("nothing was changed"), "{}", out(&o).1);
    }
    assert_eq!(spec_version(&docker, &name), version);
    assert_eq!(serves(&docker, &name), returned_v("v1"));

    // The REST route answers the same history.
    let s = crate::serve::Served::start(&docker, &[]);
    let body: Value = ureq::get(&format!("{}/api/deployments/{name}/history", s.url))
        .timeout(Duration::from_secs(30))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(body, history(&docker, &name));
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn swarm_rollback_is_locked_undone_on_ctrl_c_and_survives_hostile_labels() {
    let Some((docker, image, folder, name, _g)) = case("fp-swrba") else {
        return;
    };
    // Slow-starting tasks, so a rollback is still under way when it is interrupted.
    let mut args = swarm_argv(folder.path(), &name, &image);
    args.extend(["--timeout", "20", "--env", "STAND_IN_START_DELAY_MS=4000"]);
    std::fs::write(folder.path().join("hello.md"), script_v("v1")).unwrap();
    assert_code(&publisher(&docker, &args), 0);
    std::fs::write(folder.path().join("hello.md"), script_v("v2")).unwrap();
    assert_code(&publisher(&docker, &args), 0);
    let image_v2 = service_label(&docker, &name, "fractalic-publisher.image");
    let state = |d: &Path| {
        support::docker_ok(
            d,
            &["service", "inspect", "--format", "{{index .Spec.Labels \"fractalic-publisher.image\"}}|{{index .Spec.Labels \"fractalic-publisher.release\"}}|{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}", &name],
        )
    };

    // A rollback under way holds the deployment's lock: a second rollback and a deploy exit 2.
    let (pid, mut child) = spawn_interruptible(&docker, &["rollback", &name, "--json"]);
    assert!(
        managed::eventually(30, || state(&docker).ends_with("|rollback_started")),
        "the rollback never started: {}",
        state(&docker)
    );
    for other in [vec!["rollback", name.as_str()], args.clone()] {
        let o = publisher(&docker, &other);
        assert_code(&o, 2);
        let (so, se) = out(&o);
        assert!(
            so.contains("is locked by") || se.contains("is locked by"),
            "{so}{se}"
        );
    }

    // Ctrl-C: the journal's `docker service rollback` puts v2 back, history as before.
    managed::sigint(pid);
    assert_eq!(managed::wait_exit(&mut child.0, 60).code(), Some(130));
    assert!(
        managed::eventually(60, || state(&docker)
            == format!("{image_v2}|r2|rollback_completed")),
        "not back on r2: {}",
        state(&docker)
    );
    assert_eq!(serves(&docker, &name), returned_v("v2"));
    let h = history(&docker, &name);
    assert_eq!(
        (h["current"].as_str(), releases(&h).len()),
        (Some("r2"), 2),
        "{h}"
    );

    // Hand-edited history labels: a clear error naming the label, exit 1, nothing changed.
    let good = service_label(&docker, &name, "fractalic-publisher.history");
    let mut foreign: Value = serde_json::from_str(&good).unwrap();
    foreign["releases"][0]["state"]["secrets"] = serde_json::json!(["someone-elses"]);
    foreign["releases"][0]["state"]["mounts"]["secret"] =
        serde_json::json!(["source=someone-elses,target=/fractalic/settings.toml"]);
    let set = |text: &str| {
        support::docker_ok(
            &docker,
            &[
                "service",
                "update",
                "--detach",
                "--label-add",
                &format!("fractalic-publisher.history={text}"),
                &name,
            ],
        );
    };
    for (text, needle) in [
        ("{not json", "not JSON"),
        (r#"{"current": "r" + "2", "releases": []}"#, "not JSON"),
        (r#"[1, 2]"#, "not a JSON object"),
        (
            &good.replace(&image_v2, "--help"),
            "state.image is not an image reference",
        ),
        (&good.replace("\"seq\":1", "\"seq\":\"1\""), "\"seq\""),
    ] {
        set(text);
        let version = spec_version(&docker, &name);
        for cmd in [
            vec!["history", name.as_str()],
            vec!["rollback", name.as_str()],
        ] {
            let o = publisher(&docker, &cmd);
            assert_code(&o, 1);
            let err = out(&o).1;
            assert!(
                err.contains("the label fractalic-publisher.history of service")
                    && err.contains(needle)
                    && err.contains("--label-rm"),
                "{text}: {err}"
            );
            assert!(!err.contains("panicked"), "{err}");
        }
        assert_eq!(spec_version(&docker, &name), version, "{text}");
    }
    // Refused before any change (exit 2): a release naming a secret that is not this
    // deployment's, one whose image is gone, one with an environment no spec holds any more.
    let mut gone: Value = serde_json::from_str(&good).unwrap();
    let repo = image_v2.rsplit_once(':').unwrap().0;
    gone["releases"][0]["state"]["image"] = Value::from(format!("{repo}:{}", "0".repeat(24)));
    let mut other_env: Value = serde_json::from_str(&good).unwrap();
    other_env["releases"][0]["state"]["env_hash"] = Value::from("0123456789abcdef");
    for (h, needle) in [
        (&foreign, "someone-elses"),
        (&gone, "which is gone from its registry"),
        (&other_env, "another environment"),
    ] {
        set(&h.to_string());
        let version = spec_version(&docker, &name);
        let o = publisher(&docker, &["rollback", &name, "--to", "r1"]);
        assert_code(&o, 2);
        let err = out(&o).1;
        assert!(
            err.contains(needle) && err.contains("nothing was changed"),
            "{err}"
        );
        assert_eq!(spec_version(&docker, &name), version);
    }

    // A deploy over a broken history warns and starts a new one from the service's labels.
    set("{not json");
    std::fs::write(folder.path().join("hello.md"), script_v("v3")).unwrap();
    let o = publisher(&docker, &args);
    assert_code(&o, 0);
    assert!(
        json(&o)["warnings"]
            .to_string()
            .contains("starts a new history"),
        "{}",
        json(&o)
    );
    let h = history(&docker, &name);
    assert_eq!(h["current"], "r2", "{h}");
    assert_eq!(releases(&h)[1].1, "update");
    assert_eq!(serves(&docker, &name), returned_v("v3"));
}

/// Creates a service by hand that carries this tool's labels (plus `labels`) but was never
/// deployed by it; its one task can never be placed (no node has the label), so nothing runs.
fn hand_made_service(docker: &Path, name: &str, image: &str, extra: &[&str]) {
    let mut args = vec![
        "service",
        "create",
        "--detach",
        "--name",
        name,
        "--constraint",
        "node.labels.fp-atk-nowhere==1",
        "--label",
        "fractalic-publisher.managed=true",
        "--label",
        "fractalic-publisher.plugin=docker-swarm",
        "--label",
        "fractalic-publisher.publish-mode=host",
    ];
    args.extend_from_slice(extra);
    args.push(image);
    support::docker_ok(docker, &args);
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn ps_rows_stay_true_with_extra_ports_odd_labels_and_a_service_removed_midway() {
    let Some(docker) = swarm_docker() else { return };
    let image = support::stand_in_image();
    let folder = sample_folder();
    let name = support::unique_name("fp-atk-ps");
    let odd = support::unique_name("fp-atk-odd");
    let gone = support::unique_name("fp-atk-gone");
    let _g: Vec<ServiceGuard> = [&name, &odd, &gone]
        .iter()
        .map(|n| ServiceGuard {
            docker: docker.clone(),
            name: n.to_string(),
        })
        .collect();
    let mut args = swarm_argv(folder.path(), &name, &image);
    args.retain(|a| *a != "--json");
    let o = publisher(&docker, &args);
    assert_code(&o, 0);
    // The text report offers no docker container command: a service has no container of
    // its name (`docker stop NAME` would fail or hit another container).
    let (text, _) = out(&o);
    assert!(text.contains(&format!("Deployment: {name}")), "{text}");
    for cmd in ["docker logs", "docker stop", "docker rm"] {
        assert!(
            !text.contains(cmd),
            "{cmd} offered for a Swarm service:\n{text}"
        );
    }

    // The MCP manager's port published too, on a lower host port than the AI server's: the
    // task's PORTS column then lists it first.
    let mut ports = [0u16; 2];
    for p in &mut ports {
        *p = portpicker::pick_unused_port().expect("a free port");
    }
    ports.sort_unstable();
    let (mcp, ai) = (ports[0], ports[1]);
    support::docker_ok(
        &docker,
        &[
            "service",
            "update",
            "--detach",
            "--publish-rm",
            "8001",
            "--publish-add",
            &format!("mode=host,target=5859,published={mcp}"),
            "--publish-add",
            &format!("mode=host,target=8001,published={ai}"),
            &name,
        ],
    );
    let want = format!(":{ai}->8001/");
    assert!(
        managed::eventually(90, || {
            let t = support::docker_ok(
                &docker,
                &[
                    "service",
                    "ps",
                    "--filter",
                    "desired-state=running",
                    "--format",
                    "{{.CurrentState}} {{.Ports}}",
                    &name,
                ],
            );
            // (and the old task gone: `service ls` counts it while it drains)
            let filter = format!("name={name}");
            let replicas = support::docker_ok(
                &docker,
                &[
                    "service",
                    "ls",
                    "--filter",
                    &filter,
                    "--format",
                    "{{.Replicas}}",
                ],
            );
            t.lines().count() == 1
                && t.starts_with("Running")
                && t.contains(&want)
                && replicas == "1/1"
        }),
        "{name} did not converge on host ports {mcp} and {ai}"
    );

    // A port label edited by hand to something that is no port, and over 1 MB of labels (a
    // label value alone of 110 KB) on one service.
    let big = "y".repeat(110_000);
    let notes: Vec<String> = (0..10).map(|i| format!("zz-note-{i}={big}")).collect();
    let mut extra = vec!["--label", "fractalic-publisher.port=abc"];
    for n in &notes {
        extra.extend(["--label", n.as_str()]);
    }
    hand_made_service(&docker, &odd, &image, &extra);
    // A host-mode service without a fixed port (so `ps` asks its tasks) that is removed after
    // `service ls` named it and before `service ps` asks about it.
    hand_made_service(
        &docker,
        &gone,
        &image,
        &["--publish", "mode=host,target=8001"],
    );
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let counting = support::counting_docker(dir.path(), &docker, &log);
    let wrapper = dir.path().join("removing-docker");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$1\" = service ] && [ \"$2\" = ps ]; then '{}' service rm {gone} >/dev/null 2>&1; fi\nexec '{}' \"$@\"\n",
            docker.display(),
            counting.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    let o = publisher(&wrapper, &["ps", "--json"]);
    assert_code(&o, 0);
    // Under load Swarm may be restarting the task (its health check timed out): then wait for
    // it and ask again; the wrong-port and vanished-listing failures stay failures.
    let running = |o: &std::process::Output| {
        json(o).as_array().unwrap().iter().any(|e| {
            e["name"] == name.as_str() && e["health"].as_str().unwrap_or("").contains("(1/1 tasks)")
        })
    };
    let o = if running(&o) {
        o
    } else {
        let mut last = o;
        managed::eventually(60, || {
            std::fs::write(&log, "").unwrap();
            last = publisher(&counting, &["ps", "--json"]);
            running(&last)
        });
        last
    };
    let (_, stderr) = out(&o);
    assert!(!stderr.contains("could not list"), "{stderr}");
    let rows = json(&o);
    let row = |n: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n} not in ps: {rows}"))
    };
    let r = row(&name);
    assert_eq!(r["url"], format!("http://localhost:{ai}"), "{r}");
    assert!(
        r["health"]
            .as_str()
            .unwrap()
            .starts_with("healthy (1/1 tasks)"),
        "{r}"
    );
    let r = row(&odd);
    assert_eq!(r["state"], "running", "{r}");
    assert_eq!(r["url"], "", "{r}");
    assert_eq!(r["health"], "0/1 tasks", "{r}");
    assert!(
        !service_exists(&docker, &gone),
        "the wrapper did not remove {gone}"
    );
    let calls = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        calls
            .lines()
            .filter(|l| l.starts_with("service ls "))
            .count(),
        1,
        "{calls}"
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn swarm_rollback_refuses_hostile_to_and_replicas_and_ten_failed_updates_keep_the_history() {
    let Some((docker, image, folder, name, _g)) = case("fp-swatk") else {
        return;
    };
    let mut args = swarm_argv(folder.path(), &name, &image);
    args.extend(["--timeout", "10"]);
    std::fs::write(folder.path().join("hello.md"), script_v("v1")).unwrap();
    assert_code(&publisher(&docker, &args), 0);
    let set = |text: &str| {
        support::docker_ok(
            &docker,
            &[
                "service",
                "update",
                "--detach",
                "--label-add",
                &format!("fractalic-publisher.history={text}"),
                &name,
            ],
        );
    };

    // Hostile --to values: bad input naming the value, nothing changed. An empty one is no
    // release (it used to be taken for a plain rollback).
    let version = spec_version(&docker, &name);
    for to in [
        "",
        " ",
        "r0",
        "-1",
        "r1x",
        "99999999999999999999999",
        "../",
        "r2",
    ] {
        let flag = format!("--to={to}");
        let o = publisher(&docker, &["rollback", &name, &flag, "--json"]);
        assert_code(&o, 2);
        let v = json(&o);
        assert_eq!(v["exit_code"], 2, "{to:?}: {v}");
        assert!(
            v["error"].as_str().unwrap_or("").contains("--to"),
            "{to:?}: {v}"
        );
    }
    assert_eq!(spec_version(&docker, &name), version);

    // A hand-edited release with 0, negative or a flood of replicas, or an id given twice, is
    // no history: a rollback to it would stop the service (or hang 180 s) or flood the node.
    let good = service_label(&docker, &name, "fractalic-publisher.history");
    let h: Value = serde_json::from_str(&good).unwrap();
    let r1 = h["releases"][0].clone();
    let mut dup = h.clone();
    dup["releases"] = serde_json::json!([r1.clone(), r1.clone()]);
    for (bad, needle) in [
        (good.replace("\"replicas\":1", "\"replicas\":0"), "replicas"),
        (
            good.replace("\"replicas\":1", "\"replicas\":-1"),
            "replicas",
        ),
        (
            good.replace("\"replicas\":1", "\"replicas\":5000"),
            "replicas",
        ),
        (dup.to_string(), "twice"),
    ] {
        assert_ne!(bad, good);
        set(&bad);
        let version = spec_version(&docker, &name);
        for cmd in [
            vec!["history", name.as_str()],
            vec!["rollback", name.as_str()],
        ] {
            let o = publisher(&docker, &cmd);
            assert_code(&o, 1);
            let err = out(&o).1;
            assert!(
                err.contains("the label fractalic-publisher.history of service")
                    && err.contains(needle),
                "{bad}: {err}"
            );
        }
        assert_eq!(spec_version(&docker, &name), version);
    }

    // Nine failed updates behind the live r1 (written by hand, as ten real ones would), then a
    // real failed update: the history keeps its newest ten, but never drops the live release.
    let mut full = h.clone();
    let mut rs = vec![r1.clone()];
    for seq in 2..=10 {
        let mut r = r1.clone();
        r["id"] = Value::from(format!("r{seq}"));
        r["seq"] = Value::from(seq);
        r["kind"] = Value::from("update");
        r["outcome"] = Value::from("rolled back");
        rs.push(r);
    }
    full["releases"] = Value::from(rs);
    set(&full.to_string());
    assert_eq!(releases(&history(&docker, &name)).len(), 10);
    let mut bad_args = args.clone();
    bad_args.extend(["--env", "STAND_IN_HEALTH=unhealthy"]);
    assert_code(&publisher(&docker, &bad_args), 1);
    let h = history(&docker, &name);
    let ids: Vec<String> = releases(&h).into_iter().map(|r| r.0).collect();
    assert_eq!(h["current"], "r1", "{h}");
    assert_eq!(ids.len(), 10, "{h}");
    assert_eq!(ids.first().map(String::as_str), Some("r1"), "{h}");
    assert_eq!(
        releases(&h).last().unwrap(),
        &(
            "r11".to_string(),
            "update".to_string(),
            "".to_string(),
            "rolled back".to_string()
        )
    );
    assert_eq!(serves(&docker, &name), returned_v("v1"));
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn ctrl_c_during_a_rolling_rollback_leaves_the_history_as_it_was() {
    let Some((docker, image, folder, name, _g)) = case("fp-swrbc") else {
        return;
    };
    let mut args = swarm_argv(folder.path(), &name, &image);
    args.extend(["--timeout", "20", "--env", "STAND_IN_START_DELAY_MS=4000"]);
    for v in ["v1", "v2"] {
        std::fs::write(folder.path().join("hello.md"), script_v(v)).unwrap();
        assert_code(&publisher(&docker, &args), 0);
    }
    // r3: Swarm's own rollback to r1; the next one is a rolling update back to r2.
    let o = publisher(&docker, &["rollback", &name, "--json"]);
    assert_code(&o, 0);
    assert_eq!(
        json(&o)["details"]["plugin_result"]["kind"]
            .as_str()
            .or(json(&o)["kind"].as_str()),
        Some("docker service rollback"),
        "{}",
        json(&o)
    );
    let before = history(&docker, &name);
    assert_eq!(before["current"], "r3", "{before}");
    let state = |d: &Path| {
        support::docker_ok(
            d,
            &["service", "inspect", "--format", "{{index .Spec.Labels \"fractalic-publisher.release\"}}|{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}", &name],
        )
    };
    let (pid, mut child) = spawn_interruptible(&docker, &["rollback", &name, "--json"]);
    assert!(
        managed::eventually(30, || state(&docker) == "r4|updating"),
        "the rolling rollback never started: {}",
        state(&docker)
    );
    managed::sigint(pid);
    assert_eq!(managed::wait_exit(&mut child.0, 60).code(), Some(130));
    assert!(
        // (A label-only update after the rollback records r4 as undone: the status is cleared.)
        managed::eventually(60, || ["r3|rollback_completed", "r3|"]
            .contains(&state(&docker).as_str())),
        "not back on r3: {}",
        state(&docker)
    );
    assert_eq!(serves(&docker, &name), returned_v("v1"));
    // The interrupted rollback never went live: history as before, or r4 `rolled back`.
    let h = history(&docker, &name);
    assert_eq!(h["current"], "r3", "{h}");
    for r in releases(&h) {
        assert!(r.0 != "r4" || r.3 == "rolled back", "{h}");
    }
}
