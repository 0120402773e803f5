//! `deploy docker-swarm` on a real multi-node swarm: the separate engines that
//! `scripts/dev-env.sh cluster up` starts in network namespaces (scripts/test.sh brings it up and
//! exports its manager as FRACTALIC_TEST_CLUSTER=unix:///.../n1.sock). Tasks spread over nodes,
//! each node's URL, secrets on every node, a node's death and return, a node cut off from the
//! registry. These tests kill and cut nodes, so they take turns (one lock).

use crate::managed::{self, assert_code, json, out};
use crate::support;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    // At most one task per node: the three land on the three nodes whatever the scheduler's
    // load, and updates must then be stop-first (no node has room for a fourth task).
    let mut args = deploy_args(dir.path(), &name, &image, "3");
    args.extend(["--max-replicas-per-node", "1"]);
    let o = c.publisher(&args);
    assert_code(&o, 0);
    let v = json(&o);
    assert_eq!(
        c.dk(&[
            "service",
            "inspect",
            "--format",
            "{{.Spec.TaskTemplate.Placement.MaxReplicas}} {{.Spec.UpdateConfig.Order}}",
            &name
        ]),
        "1 stop-first",
        "{v}"
    );
    assert_eq!(v["details"]["plugin_result"]["max_replicas_per_node"], 1);
    assert!(
        v["warnings"].to_string().contains("updates of")
            && v["warnings"].to_string().contains("are stop-first"),
        "{v}"
    );

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

    // ps --json: one task on each node.
    let per = ps_nodes(&c, &name);
    assert_eq!(per.len(), 3, "{per:?}");
    assert!(per.values().all(|n| *n == 1), "{per:?}");

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

    // While it is down, three tasks at most one per node cannot be placed: said before anything
    // is made, naming the node.
    let other = support::unique_name("fp-clp");
    let _g2 = Guard {
        c: &c,
        name: other.clone(),
        restore: vec![],
    };
    let mut args = deploy_args(dir.path(), &other, &image, "3");
    args.extend(["--max-replicas-per-node", "1"]);
    let o = c.publisher(&args);
    assert_code(&o, 1);
    let err = json(&o)["error"].as_str().unwrap_or_default().to_string();
    assert!(
        err.contains(&format!("cannot place task 3 of 3 of {other}"))
            && err.contains("--max-replicas-per-node 1 allows 2 task(s)")
            && err.contains(&format!("{victim} is down")),
        "{err}"
    );
    assert!(c
        .dk(&["service", "ls", "-q", "--filter", &format!("name={other}")])
        .is_empty());
    assert!(objects(&c, "secret", &other).is_empty(), "secrets left");

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

/// What a client on each node saw during an update: it follows the node's tasks (every 200 ms
/// it learns their URLs from `docker service ps`, as a front proxy would) and asks
/// `GET /health` every 20 ms, newest task first.
struct NodePollers {
    stop: Arc<AtomicBool>,
    threads: Vec<(String, JoinHandle<Polled>)>,
    discover: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Polled {
    requests: u32,
    /// Ticks where no task on the node answered (a client that follows the node's tasks).
    failed: u32,
    /// Ticks where the node's task from before the update did not answer (a client that keeps
    /// the URL it had).
    old_url_failed: u32,
    /// The longest time with no answer from any task on the node, in ms.
    longest_gap_ms: u128,
}

impl NodePollers {
    fn start(c: &Cluster, name: &str) -> NodePollers {
        let addrs: BTreeMap<String, String> = c
            .dk(&[
                "node",
                "inspect",
                "--format",
                "{{.Description.Hostname}} {{.Status.Addr}}",
                "fpc-n1",
                "fpc-n2",
                "fpc-n3",
            ])
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(h, a)| (h.to_string(), a.to_string()))
            .collect();
        let known: Arc<Mutex<BTreeMap<String, Vec<String>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let find = {
            let (known, stop, addrs) = (known.clone(), stop.clone(), addrs.clone());
            let (docker, manager, name) = (c.docker.clone(), c.manager.clone(), name.to_string());
            move || loop {
                let o = support::run_docker(
                    &docker,
                    &[
                        "-H",
                        &manager,
                        "service",
                        "ps",
                        "--filter",
                        "desired-state=running",
                        "--format",
                        "{{.Node}}\t{{.Ports}}",
                        &name,
                    ],
                );
                for line in String::from_utf8_lossy(&o.stdout).lines() {
                    let Some((node, ports)) = line.split_once('\t') else {
                        continue;
                    };
                    // "*:30001->8001/tcp"
                    let port = ports
                        .split("->8001")
                        .next()
                        .and_then(|p| p.rsplit(':').next())
                        .and_then(|p| p.parse::<u16>().ok());
                    if let (Some(p), Some(a)) = (port, addrs.get(node)) {
                        let url = format!("http://{a}:{p}");
                        let mut k = known.lock().unwrap();
                        let v = k.entry(node.to_string()).or_default();
                        if !v.contains(&url) {
                            v.insert(0, url);
                        }
                    }
                }
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        };
        let discover = std::thread::spawn(find);
        // The first look, so the pollers start with every node's current task.
        managed::eventually(10, || known.lock().unwrap().len() == addrs.len());
        let threads = addrs
            .keys()
            .map(|node| {
                let (known, stop, node2) = (known.clone(), stop.clone(), node.clone());
                let h = std::thread::spawn(move || {
                    let mut p = Polled::default();
                    let mut last_ok = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        let tick = Instant::now();
                        let urls = known
                            .lock()
                            .unwrap()
                            .get(&node2)
                            .cloned()
                            .unwrap_or_default();
                        let answers = |u: &String| {
                            ureq::get(&format!("{u}/health"))
                                .timeout(Duration::from_millis(500))
                                .call()
                                .is_ok()
                        };
                        // The oldest URL is last (new ones are put first).
                        let old_ok = urls.last().is_some_and(answers);
                        let ok = old_ok || urls.iter().rev().skip(1).any(answers);
                        p.requests += 1;
                        if !old_ok {
                            p.old_url_failed += 1;
                        }
                        if ok {
                            last_ok = Instant::now();
                        } else {
                            p.failed += 1;
                            p.longest_gap_ms = p.longest_gap_ms.max(last_ok.elapsed().as_millis());
                        }
                        let spent = tick.elapsed();
                        if spent < Duration::from_millis(20) {
                            std::thread::sleep(Duration::from_millis(20) - spent);
                        }
                    }
                    p
                });
                (node.clone(), h)
            })
            .collect();
        NodePollers {
            stop,
            threads,
            discover: Some(discover),
        }
    }

    fn finish(mut self) -> BTreeMap<String, Polled> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(d) = self.discover.take() {
            d.join().unwrap();
        }
        self.threads
            .drain(..)
            .map(|(n, h)| (n, h.join().unwrap()))
            .collect()
    }
}

/// The /execute answer of every task, by node, from `status --json`'s URLs.
fn contents_by_node(c: &Cluster, name: &str) -> BTreeMap<String, String> {
    let s = c.status(name);
    let mut out = BTreeMap::new();
    for (node, text) in s["nodes"].as_object().unwrap_or_else(|| panic!("{s}")) {
        let text = text.as_str().unwrap_or("");
        // "NAME.2 healthy at http://10.231.0.12:30001" (and "; NAME.5 ..." for a second task).
        let url = text
            .split(" healthy at ")
            .nth(1)
            .and_then(|u| u.split([';', ' ']).next())
            .unwrap_or_else(|| panic!("{node}: {text}"));
        let r = execute(url);
        out.insert(
            node.clone(),
            r["return_content"].as_str().unwrap_or("").to_string(),
        );
    }
    out
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn a_rolling_update_reaches_every_node_under_pollers_rollback_returns_each_and_rm_leaves_nothing_on_any_node(
) {
    let Some(c) = cluster(3) else { return };
    let image = support::stand_in_image();
    let dir = folder();
    let name = support::unique_name("fp-clu");
    let g = Guard {
        c: &c,
        name: name.clone(),
        restore: vec![],
    };
    // One task per node, always: without the limit a start-first update may leave a node
    // with none (Swarm places each new task on any node; measured in docs/cluster.md), with it
    // updates are stop-first and each new task can only go to the node its old one left.
    let mut args = deploy_args(dir.path(), &name, &image, "3");
    args.extend(["--max-replicas-per-node", "1"]);
    let o = c.publisher(&args);
    assert_code(&o, 0);
    let v1 = json(&o);
    let tag1 = v1["details"]["plugin_result"]["image"]
        .as_str()
        .unwrap()
        .to_string();
    let old = contents_by_node(&c, &name);
    assert_eq!(old.len(), 3, "one task per node: {old:?}");
    assert!(
        old.values()
            .all(|t| t.contains("hello from fractalic shell")),
        "{old:?}"
    );

    // The update, with a client on every node.
    std::fs::write(
        dir.path().join("hello.md"),
        "# Rolled {id=u}\n\n@return\nblock: u\n",
    )
    .unwrap();
    let pollers = NodePollers::start(&c, &name);
    let t0 = Instant::now();
    let o = c.publisher(&args);
    let took = t0.elapsed();
    // What a client that sticks to the old URL would also see is in the docs; this one follows.
    let polled = pollers.finish();
    assert_code(&o, 0);
    let v2 = json(&o);
    assert_eq!(
        v2["details"]["plugin_result"]["update_order"], "stop-first",
        "{v2}"
    );
    eprintln!(
        "rolling update of 3 tasks on 3 nodes: {} ms; per node: {polled:?}",
        took.as_millis()
    );
    assert_eq!(polled.len(), 3, "{polled:?}");
    for (node, p) in &polled {
        assert!(p.requests > 10, "{node} was polled: {p:?}");
    }
    // Guaranteed: every node runs a task again and answers with the new release.
    let new = contents_by_node(&c, &name);
    assert_eq!(
        new.keys().collect::<Vec<_>>(),
        old.keys().collect::<Vec<_>>(),
        "{new:?}"
    );
    assert!(new.values().all(|t| t.contains("# Rolled")), "{new:?}");
    let tag2 = v2["details"]["plugin_result"]["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(tag1, tag2);

    // Rollback: every node's task runs the first release again.
    let o = c.publisher(&["rollback", &name, "--json"]);
    assert_code(&o, 0);
    assert!(managed::eventually(60, || {
        let s = c.status(&name);
        s["healthy"] == true && s["image"] == tag1.as_str()
    }));
    let back = contents_by_node(&c, &name);
    assert_eq!(back.len(), 3, "{back:?}");
    assert!(
        back.values()
            .all(|t| t.contains("hello from fractalic shell")),
        "{back:?}"
    );

    // rm: no service, secret or config on the manager, no task container and no image tag of
    // either release on any node's engine.
    let o = c.publisher(&["rm", "--force", &name, "--json"]);
    assert_code(&o, 0);
    assert!(c
        .dk(&["service", "ls", "-q", "--filter", &format!("name={name}")])
        .is_empty());
    assert!(objects(&c, "secret", &name).is_empty() && objects(&c, "config", &name).is_empty());
    let filter = format!("label=com.docker.swarm.service.name={name}");
    for node in &c.nodes {
        assert!(
            c.on(node, &["ps", "-aq", "--filter", &filter]).is_empty(),
            "{node} keeps a task container"
        );
        let tags = c.on(node, &["images", "--format", "{{.Repository}}:{{.Tag}}"]);
        for tag in [&tag1, &tag2] {
            assert!(!tags.lines().any(|t| t == tag), "{node} keeps {tag}");
        }
    }
    drop(g);
}

/// Puts a drained node back to active when dropped.
struct Undrain<'a>(&'a Cluster, String);

impl Drop for Undrain<'_> {
    fn drop(&mut self) {
        let _ = Command::new(&self.0.docker)
            .args([
                "-H",
                &self.0.manager,
                "node",
                "update",
                "--availability",
                "active",
                &self.1,
            ])
            .output();
    }
}

/// `ps --json`'s `nodes` of a deployment: {node: running tasks}.
fn ps_nodes(c: &Cluster, name: &str) -> BTreeMap<String, u64> {
    let o = c.publisher(&["ps", "--json"]);
    assert_code(&o, 0);
    let list = json(&o);
    let e = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in ps: {list}"))
        .clone();
    e["nodes"]
        .as_object()
        .unwrap_or_else(|| panic!("no nodes in {e}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn a_node_drained_by_hand_loses_its_tasks_and_status_and_ps_follow() {
    let Some(c) = cluster(3) else { return };
    let image = support::stand_in_image();
    let dir = folder();
    let name = support::unique_name("fp-cld");
    let g = Guard {
        c: &c,
        name: name.clone(),
        restore: vec![],
    };
    assert_code(
        &c.publisher(&deploy_args(dir.path(), &name, &image, "3")),
        0,
    );
    let before = ps_nodes(&c, &name);
    assert_eq!(before.values().sum::<u64>(), 3, "{before:?}");
    assert_eq!(before.len(), 3, "one task per node: {before:?}");

    let victim = "fpc-n3".to_string();
    let _u = Undrain(&c, victim.clone());
    c.dk(&["node", "update", "--availability", "drain", &victim]);

    // Swarm moves the task; status is healthy again once it runs elsewhere, naming the node.
    let mut last = Value::Null;
    let moved = managed::eventually(60, || {
        last = c.status(&name);
        last["healthy"] == true && c.tasks(&name).iter().all(|(n, _)| *n != victim)
    });
    assert!(moved, "the task never left {victim}: {last}");
    let st = last["state"].as_str().unwrap();
    assert!(
        st.starts_with("running (3 of 3 tasks")
            && st.contains(&format!("node {victim} (10.231.0.13) is drain")),
        "{last}"
    );
    assert!(last["nodes"].get(&victim).is_none(), "{last}");
    let after = ps_nodes(&c, &name);
    assert_eq!(after.values().sum::<u64>(), 3, "{after:?}");
    assert!(!after.contains_key(&victim), "{after:?}");
    drop(_u);
    assert!(managed::eventually(10, || c.dk(&[
        "node",
        "inspect",
        "--format",
        "{{.Spec.Availability}}",
        &victim
    ]) == "active"));
    drop(g);
}
