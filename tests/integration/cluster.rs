//! `deploy docker-swarm` on a real multi-node swarm: the separate engines that
//! `scripts/dev-env.sh cluster up` starts in network namespaces (scripts/test.sh brings it up and
//! exports its manager as FRACTALIC_TEST_CLUSTER=unix:///.../n1.sock). Tasks spread over nodes,
//! each node's URL, secrets on every node, a node's death and return, a node cut off from the
//! registry. These tests kill and cut nodes, so they take turns (one lock).

use crate::managed::{self, assert_code, json, out};
use crate::support;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

const SETTINGS_SECRET: &str = "sk-cluster-SECRET-5150";

static TURN: Mutex<()> = Mutex::new(());

/// The cluster a test runs on: the docker binary, the manager's DOCKER_HOST, every node's.
struct Cluster {
    docker: PathBuf,
    manager: String,
    nodes: Vec<String>,
    _turn: MutexGuard<'static, ()>,
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The cluster from FRACTALIC_TEST_CLUSTER with at least `n` Ready nodes; None (a SKIPPED line)
/// without one, a failure with CI=true.
fn cluster(n: usize) -> Option<Cluster> {
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let skip = |why: String| {
        if ci() {
            panic!("CI=true but {why}; scripts/test.sh brings the cluster up (scripts/dev-env.sh cluster up)");
        }
        eprintln!(
            "SKIPPED: {why}; run scripts/dev-env.sh cluster up and set FRACTALIC_TEST_CLUSTER"
        );
        None
    };
    let Ok(manager) = std::env::var("FRACTALIC_TEST_CLUSTER") else {
        return skip("FRACTALIC_TEST_CLUSTER is not set".into());
    };
    let docker = support::docker()?;
    let ready = support::run_docker(
        &docker,
        &[
            "-H",
            &manager,
            "node",
            "ls",
            "--format",
            "{{.Hostname}} {{.Status}}",
        ],
    );
    let text = String::from_utf8_lossy(&ready.stdout).to_string();
    let count = text.lines().filter(|l| l.ends_with(" Ready")).count();
    if !ready.status.success() || count < n {
        return skip(format!(
            "the cluster at {manager} has {count} Ready nodes, not {n}: {text}"
        ));
    }
    // The nodes' sockets sit beside the manager's: .../n1.sock, n2.sock ...
    let nodes = (1..=count)
        .map(|k| manager.replace("/n1.sock", &format!("/n{k}.sock")))
        .collect();
    Some(Cluster {
        docker,
        manager,
        nodes,
        _turn: turn,
    })
}

impl Cluster {
    fn on(&self, host: &str, args: &[&str]) -> String {
        let mut all = vec!["-H", host];
        all.extend_from_slice(args);
        support::docker_ok(&self.docker, &all)
    }

    fn dk(&self, args: &[&str]) -> String {
        self.on(&self.manager, args)
    }

    fn publisher(&self, args: &[&str]) -> Output {
        managed::command(&self.docker, args)
            .env("DOCKER_HOST", &self.manager)
            .output()
            .unwrap()
    }

    /// `scripts/dev-env.sh cluster ARGS...` of this checkout.
    fn script(&self, args: &[&str]) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/dev-env.sh");
        let o = Command::new(script)
            .arg("cluster")
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "dev-env.sh cluster {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    fn node_status(&self, host: &str) -> String {
        self.dk(&["node", "ls", "--format", "{{.Hostname}} {{.Status}}"])
            .lines()
            .find(|l| l.starts_with(&format!("{host} ")))
            .map(|l| l.split(' ').nth(1).unwrap_or("").to_string())
            .unwrap_or_default()
    }

    /// (node, current state) of the tasks meant to run.
    fn tasks(&self, name: &str) -> Vec<(String, String)> {
        self.dk(&[
            "service",
            "ps",
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Node}}\t{{.CurrentState}}",
            name,
        ])
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
    }

    fn status(&self, name: &str) -> Value {
        let o = self.publisher(&["status", name, "--json"]);
        json(&o)
    }
}

/// Removes a test's service, secrets, configs and image tag on every node when dropped; puts
/// back what a test took from a node (its registry, its engine).
struct Guard<'a> {
    c: &'a Cluster,
    name: String,
    restore: Vec<Vec<&'static str>>,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        for args in self.restore.drain(..) {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/dev-env.sh");
            let _ = Command::new(script).arg("cluster").args(&args).output();
        }
        let d = &self.c.docker;
        let m = &self.c.manager;
        let _ = Command::new(d)
            .args(["-H", m, "service", "rm", &self.name])
            .output();
        managed::eventually(30, || {
            self.c.nodes.iter().all(|n| {
                let filter = format!("label=com.docker.swarm.service.name={}", self.name);
                support::run_docker(d, &["-H", n, "ps", "-aq", "--filter", &filter])
                    .stdout
                    .is_empty()
            })
        });
        for kind in ["secret", "config"] {
            for o in objects(self.c, kind, &self.name) {
                let _ = Command::new(d).args(["-H", m, kind, "rm", &o]).output();
            }
        }
    }
}

fn objects(c: &Cluster, kind: &str, name: &str) -> Vec<String> {
    let filter = format!("label=fractalic-publisher.deployment={name}");
    c.dk(&[kind, "ls", "--filter", &filter, "--format", "{{.Name}}"])
        .lines()
        .map(str::to_string)
        .collect()
}

fn folder() -> tempfile::TempDir {
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
    // A payload of its own per test, so no node has its image yet.
    std::fs::write(
        dir.path().join("unique.txt"),
        support::unique_name("payload"),
    )
    .unwrap();
    dir
}

fn deploy_args<'a>(
    folder: &'a Path,
    name: &'a str,
    image: &'a str,
    replicas: &'a str,
) -> Vec<&'a str> {
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
        "--replicas",
        replicas,
        "--timeout",
        "60",
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

fn execute(url: &str) -> Value {
    ureq::post(&format!("{url}/execute"))
        .timeout(Duration::from_secs(10))
        .send_json(serde_json::json!({ "filename": "/payload/hello/hello.md" }))
        .unwrap()
        .into_json()
        .unwrap()
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn three_replicas_run_on_three_nodes_each_answering_with_the_settings_secret() {
    let Some(c) = cluster(3) else { return };
    let image = support::stand_in_image();
    let dir = folder();
    let name = support::unique_name("fp-cl3");
    let g = Guard {
        c: &c,
        name: name.clone(),
        restore: vec![],
    };
    let o = c.publisher(&deploy_args(dir.path(), &name, &image, "3"));
    assert_code(&o, 0);
    let v = json(&o);

    let tasks = c.tasks(&name);
    let mut nodes: Vec<&str> = tasks.iter().map(|(n, _)| n.as_str()).collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(tasks.len(), 3, "{tasks:?}");
    assert_eq!(
        nodes.len(),
        3,
        "three tasks on three different nodes: {tasks:?}"
    );
    assert!(
        tasks.iter().all(|(_, s)| s.starts_with("Running")),
        "{tasks:?}"
    );

    // One URL per task, each at its node's address, each running the deployed script with the
    // settings from the secret (the stand-in names the provider it read).
    let u = urls(&v);
    assert_eq!(u.len(), 3, "{v}");
    let mut hosts: Vec<String> = u
        .iter()
        .map(|x| x.split(':').nth(1).unwrap().to_string())
        .collect();
    hosts.sort();
    hosts.dedup();
    assert_eq!(hosts.len(), 3, "one address per node: {u:?}");
    let script = std::fs::read_to_string(dir.path().join("hello.md")).unwrap();
    for url in &u {
        let r = execute(url);
        assert_eq!(r["success"], true, "{url}: {r}");
        assert!(script.contains("hello from fractalic shell"));
        assert_eq!(
            r["return_content"],
            "# Shell output {id=shell-output}\nhello from fractalic shell\nLinux\n\n",
            "{url}: {r}"
        );
        assert!(
            r["output"].as_str().unwrap().contains("provider demo"),
            "{url}: {r}"
        );
    }

    // status: healthy, every node named with its task.
    let s = c.status(&name);
    assert_eq!(s["healthy"], true, "{s}");
    assert_eq!(s["healthy_tasks"], 3, "{s}");
    for n in &nodes {
        assert!(
            s["nodes"][*n]
                .as_str()
                .unwrap_or("")
                .contains("healthy at http://"),
            "{s}"
        );
    }

    // The secret's value is in no inspect output, on any node.
    let mut seen = c.dk(&["service", "inspect", &name]);
    for secret in objects(&c, "secret", &name) {
        seen += &c.dk(&["secret", "inspect", &secret]);
    }
    let filter = format!("label=com.docker.swarm.service.name={name}");
    for node in &c.nodes {
        for id in c.on(node, &["ps", "-q", "--filter", &filter]).lines() {
            seen += &c.on(node, &["inspect", id]);
        }
    }
    assert!(seen.contains(&name), "the inspect outputs were read");
    assert!(
        !seen.contains(SETTINGS_SECRET),
        "the settings secret leaked into an inspect output"
    );

    // rm leaves no service, secret, config or image tag of ours on any node.
    let tag = v["details"]["plugin_result"]["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert_code(&c.publisher(&["rm", "--force", &name]), 0);
    assert!(c
        .dk(&["service", "ls", "-q", "--filter", &format!("name={name}")])
        .is_empty());
    assert!(objects(&c, "secret", &name).is_empty() && objects(&c, "config", &name).is_empty());
    for node in &c.nodes {
        let tags = c.on(node, &["images", "--format", "{{.Repository}}:{{.Tag}}"]);
        let left: Vec<&str> = tags.lines().filter(|t| *t == tag).collect();
        assert!(left.is_empty() || node == &c.manager, "{node} keeps {tag}");
    }
    drop(g);
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn a_dead_node_degrades_the_deployment_by_name_swarm_heals_it_and_the_node_rejoins() {
    let Some(c) = cluster(3) else { return };
    let image = support::stand_in_image();
    let dir = folder();
    let name = support::unique_name("fp-clk");
    let mut g = Guard {
        c: &c,
        name: name.clone(),
        restore: vec![],
    };
    assert_code(
        &c.publisher(&deploy_args(dir.path(), &name, &image, "3")),
        0,
    );

    // Kill the engine (and its containers) of a node that is not the manager but runs a task.
    let tasks = c.tasks(&name);
    let victim = tasks
        .iter()
        .map(|(n, _)| n.clone())
        .find(|n| n != "fpc-n1")
        .unwrap_or_else(|| panic!("no task off the manager: {tasks:?}"));
    let k: &'static str = match victim.as_str() {
        "fpc-n2" => "2",
        "fpc-n3" => "3",
        other => panic!("unexpected node {other}"),
    };
    g.restore.push(vec!["start-node", k]);
    c.script(&["stop-node", k]);

    let mut last = Value::Null;
    let degraded = managed::eventually(60, || {
        last = c.status(&name);
        let st = last["state"].as_str().unwrap_or("");
        st.starts_with("degraded") && st.contains(&victim)
    });
    assert!(
        degraded,
        "status never said degraded naming {victim}: {last}"
    );
    assert_eq!(last["healthy"], false, "{last}");

    // Swarm sees the node down and runs its task elsewhere; status is healthy again and names
    // the dead node.
    let healed = managed::eventually(90, || {
        last = c.status(&name);
        last["healthy"] == true
    });
    assert!(healed, "status never healthy again: {last}");
    let st = last["state"].as_str().unwrap();
    assert!(
        st.starts_with("running (3 of 3 tasks") && st.contains(&format!("node {victim}")),
        "{last}"
    );
    assert!(c.tasks(&name).iter().all(|(n, _)| *n != victim));

    // An update while the node is down: done on the remaining nodes, naming the missing one.
    std::fs::write(
        dir.path().join("hello.md"),
        "# Updated {id=u}\n\n@return\nblock: u\n",
    )
    .unwrap();
    let o = c.publisher(&deploy_args(dir.path(), &name, &image, "3"));
    assert_code(&o, 0);
    let v = json(&o);
    let warned = v["warnings"].as_array().is_some_and(|w| {
        w.iter().any(|w| {
            w.as_str()
                .unwrap_or("")
                .starts_with(&format!("node {victim} ("))
                && w.as_str().unwrap_or("").contains(" is down")
        })
    });
    assert!(warned, "the update does not name the down node: {v}");
    for url in urls(&v) {
        assert!(
            !url.contains(&format!(".{}:", 10 + k.parse::<u8>().unwrap())),
            "{url}"
        );
        let r = execute(&url);
        assert_eq!(r["success"], true, "{url}: {r}");
        assert!(
            r["return_content"].as_str().unwrap().contains("# Updated"),
            "{url}: {r}"
        );
    }

    // The node comes back and rejoins.
    g.restore.clear();
    c.script(&["start-node", k]);
    assert!(
        managed::eventually(60, || c.node_status(&victim) == "Ready"),
        "{victim} did not rejoin: {}",
        c.dk(&["node", "ls"])
    );
    assert!(managed::eventually(30, || c.status(&name)["state"] == "running (3 of 3 tasks)"));
    let (so, se) = out(&c.publisher(&["status", &name]));
    assert!(
        so.contains("State:       running (3 of 3 tasks)"),
        "{so}{se}"
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn a_node_cut_off_from_the_registry_fails_the_deploy_by_name_leaving_nothing() {
    let Some(c) = cluster(3) else { return };
    let image = support::stand_in_image();
    let dir = folder();
    let name = support::unique_name("fp-clr");
    let mut g = Guard {
        c: &c,
        name: name.clone(),
        restore: vec![],
    };
    g.restore.push(vec!["restore-registry", "3"]);
    c.script(&["cut-registry", "3"]);
    // Node 3 must get a task: it is the least loaded once the manager and node 2 have theirs.
    let o = c.publisher(&deploy_args(dir.path(), &name, &image, "3"));
    assert_code(&o, 1);
    let v = json(&o);
    let err = v["error"].as_str().unwrap_or_default().to_string();
    assert!(
        err.contains("node fpc-n3 cannot pull the payload image"),
        "{v}"
    );
    assert!(err.contains("No such image"), "{v}");
    assert!(err.contains("nothing of this run is left"), "{v}");
    assert!(c
        .dk(&["service", "ls", "-q", "--filter", &format!("name={name}")])
        .is_empty());
    assert!(objects(&c, "secret", &name).is_empty(), "secrets left");
}
