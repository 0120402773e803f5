//! The SIGKILL sweep harness (issue 16): runs a command of the built binary, kills it with
//! SIGKILL at a chosen instant (when its K-th progress step appears, a delay after a step, a
//! seeded random delay, or as its K-th docker call starts), and then checks what it left:
//! which release the deployment serves (a sha256 of every file under `/payload/<script>/`
//! in the container against the host folder of each release, and `/execute`), what `status`
//! and `history` say about it, and every leftover (containers, swarm secrets/configs, build
//! containers, journals under the per-test `XDG_STATE_HOME`, the lock, any file under `/tmp`
//! holding the test's secret). Failures are collected per kill point and reported together,
//! with the seed that reproduces the random delays.

use crate::managed;
use crate::support;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long any one command of the tool may run before the harness gives up on it.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// `FRACTALIC_CRASH_SWEEP=full`: every progress step and docker call, more random delays.
pub(super) fn full_sweep() -> bool {
    std::env::var("FRACTALIC_CRASH_SWEEP").is_ok_and(|v| v == "full")
}

/// The seed of the random delays: `FRACTALIC_CRASH_SEED`, else the clock (printed either way).
pub(super) fn seed() -> u64 {
    std::env::var("FRACTALIC_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64
                % 1_000_000_007
        })
}

/// A small deterministic generator (xorshift64*): the delays must be reproducible by seed.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number in `0..n` (n > 0).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// Kill as the first progress step containing `s` appears.
pub(super) fn step(s: &str) -> At {
    At::Step(s.to_string())
}

/// Kill `ms` milliseconds after the first progress step containing `s`.
pub(super) fn after(s: &str, ms: u64) -> At {
    At::AfterStep(s.to_string(), Duration::from_millis(ms))
}

/// The same point, with the docker calls in flight killed too.
pub(super) fn group(at: At) -> At {
    At::Group(Box::new(at))
}

/// When to kill the run.
#[derive(Clone, Debug)]
pub(super) enum At {
    /// Never: the run goes to its end (the baseline of a sweep).
    End,
    /// As the first progress step whose message contains this text appears.
    Step(String),
    /// This long after that step appeared.
    AfterStep(String, Duration),
    /// As the K-th (1-based) progress step appears.
    StepNo(usize),
    /// This long after the command started.
    Delay(Duration),
    /// As the K-th (1-based) docker call starts (the call itself runs on, orphaned).
    Call(usize),
    /// As the first docker call whose arguments begin with this text starts, killed with it
    /// before it reaches the engine (the window between a journal record and its change).
    BeforeCall(String),
    /// As the inner point, but the docker calls in flight are killed too, at the same
    /// instant (as systemd stopping a unit kills its whole cgroup).
    Group(Box<At>),
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            At::End => write!(f, "no kill"),
            At::Step(s) => write!(f, "at step {s:?}"),
            At::AfterStep(s, d) => write!(f, "{} ms after step {s:?}", d.as_millis()),
            At::StepNo(k) => write!(f, "at progress step #{k}"),
            At::Delay(d) => write!(f, "{} ms after the start", d.as_millis()),
            At::Call(k) => write!(f, "as docker call #{k} starts"),
            At::BeforeCall(a) => write!(f, "as `docker {a}...` starts, with it"),
            At::Group(a) => write!(f, "{a}, with its docker calls"),
        }
    }
}

/// What a (possibly killed) run did.
#[derive(Debug)]
pub(super) struct Run {
    /// The kill point, as planned.
    pub at: String,
    /// True when SIGKILL was sent while it ran; false when it ended first.
    pub killed: bool,
    /// Its exit code when it ended by itself.
    pub code: Option<i32>,
    /// The progress step messages it printed, in order.
    pub steps: Vec<String>,
    /// The run id from `--progress json` events (`deployment_id`), if any.
    pub run_id: Option<String>,
    /// How many docker calls it started (with a counting wrapper only).
    pub calls: usize,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// A release of the test's script folder on the host: what the container must hold.
#[derive(Clone, Debug)]
pub(super) struct Release {
    /// The version `/execute` echoes ("v3").
    pub version: String,
    pub dir: PathBuf,
    /// Relative path -> sha256 hex of every file.
    pub files: BTreeMap<String, String>,
}

/// One deployment under a sweep: its unique name and secrets, a per-test state directory,
/// host folders of each release, the failures found so far. Everything it made is removed
/// when dropped.
pub(super) struct Lab {
    pub docker: PathBuf,
    pub image: String,
    pub name: String,
    pub case: String,
    pub seed: u64,
    pub rng: Rng,
    pub full: bool,
    /// `--env SECRET_X=<this>`: must never be found on disk outside the container.
    pub secret: String,
    /// settings.toml's apiKey: the same.
    pub api_key: String,
    pub swarm: bool,
    work: tempfile::TempDir,
    state: tempfile::TempDir,
    pub failures: Vec<String>,
    pub kills: usize,
    started: Instant,
    /// Images the swarm tasks ran (baked by this test; removed when dropped).
    images: std::cell::RefCell<BTreeSet<String>>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let d = self.docker.clone();
        if self.swarm {
            let _ = Command::new(&d)
                .args(["service", "rm", &self.name])
                .output();
            let filter = format!("label=com.docker.swarm.service.name={}", self.name);
            managed::eventually(30, || {
                support::run_docker(&d, &["ps", "-aq", "--filter", &filter])
                    .stdout
                    .is_empty()
            });
            for kind in ["secret", "config"] {
                for n in self.objects(kind) {
                    let _ = Command::new(&d).args([kind, "rm", &n]).output();
                }
            }
        }
        for c in self.containers() {
            let _ = Command::new(&d).args(["rm", "-f", "-v", &c.0]).output();
        }
        for image in self.images.borrow().iter() {
            let _ = Command::new(&d).args(["image", "rm", image]).output();
        }
    }
}

/// The script of release `version`.
pub(super) fn script(version: &str) -> String {
    format!("# Demo {{id=d}}\n\n@shell\nprompt: echo {version}\nuse-header: \"# Out {{id=out}}\"\n\n@return\nblock: out\n")
}

fn sha256_hex(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(bytes);
    h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, out);
        } else {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.insert(rel, sha256_hex(&std::fs::read(&p).unwrap()));
        }
    }
}

impl Lab {
    /// A lab for a docker-registry deployment named after `prefix`; None without Docker.
    pub(super) fn new(case: &str, prefix: &str) -> Option<Lab> {
        let docker = support::docker()?;
        let image = support::pull_stand_in(&docker);
        let seed = seed();
        let tmp = env!("CARGO_TARGET_TMPDIR");
        let name = support::unique_name(prefix);
        let uniq = name.replace(['-', '.'], "");
        let lab = Lab {
            docker,
            image,
            case: case.to_string(),
            seed,
            rng: Rng::new(seed),
            full: full_sweep(),
            secret: format!("crashSECRET{uniq}"),
            api_key: format!("crashAPIKEY{uniq}"),
            swarm: false,
            work: tempfile::tempdir_in(tmp).unwrap(),
            state: tempfile::tempdir_in(tmp).unwrap(),
            failures: Vec::new(),
            kills: 0,
            started: Instant::now(),
            images: Default::default(),
            name,
        };
        eprintln!(
            "crash sweep {}: {} seed={} (FRACTALIC_CRASH_SEED={} reproduces the random delays), mode={}",
            lab.case,
            lab.name,
            lab.seed,
            lab.seed,
            if lab.full { "full" } else { "ci" }
        );
        Some(lab)
    }

    /// A lab for a docker-swarm deployment (host publish mode); None without Docker or, out
    /// of CI, without a swarm manager.
    pub(super) fn new_swarm(case: &str, prefix: &str) -> Option<Lab> {
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
        let mut lab = Lab::new(case, prefix)?;
        lab.swarm = true;
        Some(lab)
    }

    /// Writes the host folder of release `version`: hello.md echoing it, settings.toml with
    /// the test's apiKey, and `files` data files whose contents name the version.
    pub(super) fn release(&self, version: &str, files: usize) -> Release {
        let dir = self.work.path().join(version);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("hello.md"), script(version)).unwrap();
        // Unique to this test, so a swarm deploy bakes its own image (no cache hit from an
        // earlier run of the same release).
        std::fs::write(dir.join("id.txt"), format!("{}\n", self.name)).unwrap();
        std::fs::write(
            dir.join("settings.toml"),
            format!(
                "defaultProvider = \"one\"\n[settings.one]\nmodel = \"m\"\napiKey = \"{}\"\n",
                self.api_key
            ),
        )
        .unwrap();
        for i in 0..files {
            std::fs::write(
                dir.join("data").join(format!("f{i:04}.txt")),
                format!(
                    "file {i} of release {version}: {}\n",
                    "x".repeat(64 + i % 50)
                ),
            )
            .unwrap();
        }
        if files == 0 {
            std::fs::remove_dir(dir.join("data")).unwrap();
        }
        let mut map = BTreeMap::new();
        walk(&dir, &dir, &mut map);
        Release {
            version: version.to_string(),
            dir,
            files: map,
        }
    }

    /// The deploy command line of `rel` (docker-registry, or docker-swarm in host mode).
    pub(super) fn deploy_args(&self, rel: &Release, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = [
            "deploy",
            if self.swarm {
                "docker-swarm"
            } else {
                "docker-registry"
            },
            "--script-name",
            "hello",
            "--script-folder",
            rel.dir.to_str().unwrap(),
            "--name",
            &self.name,
            "--image",
            &self.image,
            "--pull",
            "missing",
            "--timeout",
            "30",
            "--progress",
            "json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if self.swarm {
            a.extend(["--publish-mode", "host"].map(String::from));
        }
        a.push("--env".into());
        a.push(format!("SECRET_X={}", self.secret));
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    /// A command line of the binary, with this lab's state directory.
    pub(super) fn command(&self, docker: &Path, args: &[String]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fractalic-publisher"));
        cmd.arg("--docker").arg(docker).args(args);
        cmd.env_remove("FRACTALIC_PUBLISHER_PLUGINS");
        cmd.env("XDG_STATE_HOME", self.state.path());
        cmd.current_dir(self.work.path());
        cmd
    }

    /// Runs the binary to completion (with a deadline).
    pub(super) fn run(&self, args: &[&str]) -> Output {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let r = self.run_at(&args, &At::End);
        Output {
            status: std::os::unix::process::ExitStatusExt::from_raw(r.code.unwrap_or(-1) << 8),
            stdout: r.stdout.into_bytes(),
            stderr: r.stderr.into_bytes(),
        }
    }

    /// Runs `args`, killing the publisher with SIGKILL at `at`; after the kill waits until the
    /// docker calls it had started have ended (they run on, orphaned, as after a real kill),
    /// so that what is checked next is what the dead run left, not a race with its children.
    pub(super) fn run_at(&self, args: &[String], at: &At) -> Run {
        let (at_inner, group) = match at {
            At::Group(a) => (a.as_ref(), true),
            a => (a, false),
        };
        let shown = at.to_string();
        let at = at_inner;
        let wrapdir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let log = wrapdir.path().join("calls");
        let docker = match at {
            At::Call(k) => call_killer(wrapdir.path(), &self.docker, &log, *k),
            At::BeforeCall(a) => before_call_killer(wrapdir.path(), &self.docker, &log, a),
            _ => call_counter(wrapdir.path(), &self.docker, &log),
        };
        let t0 = Instant::now();
        let mut child = self
            .command(&docker, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut so = child.stdout.take().unwrap();
        let out_t = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = so.read_to_string(&mut s);
            s
        });
        let (tx, rx) = mpsc::channel::<String>();
        let se = child.stderr.take().unwrap();
        let err_t = std::thread::spawn(move || {
            for line in BufReader::new(se).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = String::new();
        let mut steps = Vec::new();
        let mut run_id = None;
        let mut step_seen: Option<Instant> = None;
        let mut killed = false;
        let mut orphans = Vec::new();
        let deadline = t0 + RUN_TIMEOUT;
        let kill_now = |child: &mut std::process::Child, orphans: &mut Vec<u32>| {
            *orphans = descendants(pid);
            if group {
                // One kill(1) for all of them: as close to one instant as a test can get.
                let mut pids = vec![pid.to_string()];
                pids.extend(orphans.iter().map(u32::to_string));
                let _ = Command::new("kill").arg("-9").args(&pids).status();
            }
            let _ = child.kill();
        };
        loop {
            match rx.recv_timeout(Duration::from_millis(5)) {
                Ok(line) => {
                    stderr.push_str(&line);
                    stderr.push('\n');
                    if let Some(msg) = step_message(&line, &mut run_id) {
                        steps.push(msg.clone());
                        let hit = match at {
                            At::Step(s) => msg.contains(s.as_str()),
                            At::StepNo(k) => steps.len() == *k,
                            At::AfterStep(s, _) => {
                                if step_seen.is_none() && msg.contains(s.as_str()) {
                                    step_seen = Some(Instant::now());
                                }
                                false
                            }
                            _ => false,
                        };
                        if hit && !killed {
                            kill_now(&mut child, &mut orphans);
                            killed = true;
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(5))
                }
            }
            if !killed {
                let due = match at {
                    At::Delay(d) => t0.elapsed() >= *d,
                    At::AfterStep(_, d) => step_seen.is_some_and(|t| t.elapsed() >= *d),
                    _ => false,
                };
                if due {
                    kill_now(&mut child, &mut orphans);
                    killed = true;
                }
            }
            if let Some(status) = child.try_wait().unwrap() {
                // A kill by the wrapper (At::Call) shows as death by signal 9.
                let by_signal = std::os::unix::process::ExitStatusExt::signal(&status);
                if by_signal == Some(9) {
                    killed = true;
                }
                let _ = err_t.join();
                while let Ok(line) = rx.try_recv() {
                    stderr.push_str(&line);
                    stderr.push('\n');
                    if let Some(msg) = step_message(&line, &mut run_id) {
                        steps.push(msg);
                    }
                }
                let calls = managed::logged_calls(&log).len();
                if killed {
                    if orphans.is_empty() {
                        orphans = orphans_of_log(&log);
                    }
                    wait_gone(&orphans, Duration::from_secs(60));
                }
                return Run {
                    at: shown,
                    killed,
                    code: if killed { None } else { status.code() },
                    steps,
                    run_id,
                    calls,
                    stdout: out_t.join().unwrap_or_default(),
                    stderr,
                    elapsed: t0.elapsed(),
                };
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{}: {:?} did not end within {RUN_TIMEOUT:?}\nstderr:\n{stderr}",
                    self.case, args
                );
            }
        }
    }

    /// Records a failure of this kill point (reported together at the end).
    pub(super) fn fail(&mut self, at: &str, what: String) {
        let msg = format!("[{} | {} | seed {}] {}", self.case, at, self.seed, what);
        eprintln!("FAIL {msg}");
        self.failures.push(msg);
    }

    /// Panics with every failure found, or prints the tally.
    pub(super) fn finish(self) {
        eprintln!(
            "crash sweep {}: {} kills in {:.1}s, {} failures",
            self.case,
            self.kills,
            self.started.elapsed().as_secs_f64(),
            self.failures.len()
        );
        println!(
            "CRASH-SWEEP case={} kills={} secs={:.1} failures={}",
            self.case,
            self.kills,
            self.started.elapsed().as_secs_f64(),
            self.failures.len()
        );
        if !self.failures.is_empty() {
            let all = self.failures.join("\n");
            panic!(
                "{} of the kill points of {} failed (FRACTALIC_CRASH_SEED={}):\n{all}",
                self.failures.len(),
                self.case,
                self.seed
            );
        }
    }

    /// The kill points of a sweep. CI: the few points `ci` names plus `random` seeded delays
    /// within the baseline's duration. Full (`FRACTALIC_CRASH_SWEEP=full`): every `named` step
    /// (as it appears and each `after` ms later), the `ci` points, every progress step and
    /// every docker call of the baseline by number, and `4 * random + 4` delays.
    pub(super) fn plan(
        &mut self,
        baseline: &Run,
        ci: Vec<At>,
        named: &[(&str, &[u64])],
        random: usize,
    ) -> Vec<At> {
        let mut v = Vec::new();
        if self.full {
            for (step, afters) in named {
                v.push(At::Step(step.to_string()));
                for ms in *afters {
                    v.push(At::AfterStep(step.to_string(), Duration::from_millis(*ms)));
                }
            }
        }
        v.extend(ci);
        let span = baseline.elapsed.as_millis().max(50) as u64;
        let n = if self.full { random * 4 + 4 } else { random };
        for _ in 0..n {
            v.push(At::Delay(Duration::from_millis(self.rng.below(span))));
        }
        if self.full {
            for k in 1..=baseline.steps.len() {
                v.push(At::StepNo(k));
            }
            for k in 1..=baseline.calls {
                v.push(At::Call(k));
            }
        }
        v
    }

    // ---- what is there ----

    /// All containers of this deployment, by name prefix or the deployment label:
    /// (name, state).
    pub(super) fn containers(&self) -> Vec<(String, String)> {
        let mut seen = BTreeMap::new();
        for filter in [
            format!("name=^/?{}", self.name),
            format!("label=fractalic-publisher.deployment={}", self.name),
        ] {
            let o = support::run_docker(
                &self.docker,
                &[
                    "ps",
                    "-a",
                    "--filter",
                    &filter,
                    "--format",
                    "{{.Names}}\t{{.State}}\t{{.Label \"com.docker.swarm.task.id\"}}",
                ],
            );
            for l in String::from_utf8_lossy(&o.stdout).lines() {
                let f: Vec<&str> = l.split('\t').collect();
                if f.len() >= 2 && f.get(2).is_none_or(|t| t.is_empty()) {
                    seen.insert(f[0].to_string(), f[1].to_string());
                }
            }
        }
        seen.into_iter().collect()
    }

    /// Containers labelled with a run id (e.g. a swarm build container of that run).
    pub(super) fn run_containers(&self, run_id: &str) -> Vec<String> {
        let filter = format!("label=fractalic-publisher.run={run_id}");
        let o = support::run_docker(
            &self.docker,
            &["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"],
        );
        let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        let name = format!("name=fractalic-build-{run_id}");
        let o = support::run_docker(
            &self.docker,
            &["ps", "-a", "--filter", &name, "--format", "{{.Names}}"],
        );
        v.extend(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string),
        );
        v.sort();
        v.dedup();
        v
    }

    /// Swarm secrets or configs whose name starts with `NAME.` or that carry its label.
    pub(super) fn objects(&self, kind: &str) -> Vec<String> {
        let mut v = BTreeSet::new();
        for filter in [
            format!("name={}.", self.name),
            format!("label=fractalic-publisher.deployment={}", self.name),
        ] {
            let o = support::run_docker(
                &self.docker,
                &[kind, "ls", "--filter", &filter, "--format", "{{.Name}}"],
            );
            for l in String::from_utf8_lossy(&o.stdout).lines() {
                if l.starts_with(&format!("{}.", self.name)) || filter.starts_with("label") {
                    v.insert(l.to_string());
                }
            }
        }
        v.into_iter().collect()
    }

    /// The release files the container `c` holds under /payload/hello/ (path -> sha256), or
    /// why they could not be read.
    pub(super) fn content_of(&self, c: &str) -> Result<BTreeMap<String, String>, String> {
        let o = support::run_docker(
            &self.docker,
            &[
                "exec",
                c,
                "sh",
                "-c",
                "cd /payload/hello/ && find . -type f | sort | xargs -r sha256sum",
            ],
        );
        if !o.status.success() {
            return Err(format!(
                "cannot read /payload/hello in {c}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        let mut m = BTreeMap::new();
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            if let Some((h, p)) = l.split_once("  ") {
                let p = p.trim_start_matches("./");
                // What the AI server itself writes beside a script it ran (not the release).
                let written =
                    p.ends_with(".ctx") || p.ends_with(".trc") || p.ends_with("call_tree.json");
                if !written {
                    m.insert(p.to_string(), h.to_string());
                }
            }
        }
        Ok(m)
    }

    /// Which of `rels` the content is exactly, else a description of how it differs.
    pub(super) fn which<'a>(
        &self,
        content: &BTreeMap<String, String>,
        rels: &[&'a Release],
    ) -> Result<&'a Release, String> {
        let want = |r: &Release| -> BTreeMap<String, String> {
            let mut f = r.files.clone();
            if self.swarm {
                // settings.toml never enters a swarm image: it is a secret, mounted elsewhere.
                f.remove("settings.toml");
            }
            f
        };
        if let Some(r) = rels.iter().find(|r| want(r) == *content) {
            return Ok(r);
        }
        let mut why = format!("{} files, none of the releases: ", content.len());
        for r in rels {
            let missing = r.files.keys().filter(|k| !content.contains_key(*k)).count();
            let differ = r
                .files
                .iter()
                .filter(|(k, h)| content.get(*k).is_some_and(|c| c != *h))
                .count();
            let extra = content.keys().filter(|k| !r.files.contains_key(*k)).count();
            why.push_str(&format!(
                "{}: {missing} missing, {differ} differ, {extra} extra{}; ",
                r.version,
                if content.contains_key("hello.md") {
                    ""
                } else {
                    " (main script missing)"
                }
            ));
        }
        Err(why)
    }

    /// The version `/execute` of the main script at `url` echoes.
    pub(super) fn execute(&self, url: &str) -> Result<String, String> {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        let r = agent
            .post(&format!("{url}/execute"))
            .send_json(serde_json::json!({"filename": "/payload/hello/hello.md"}))
            .map_err(|e| format!("POST {url}/execute: {e}"))?;
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
            .ok_or_else(|| format!("/execute answered without a version: {v}"))
    }

    /// `status NAME --json`: (exit code, parsed stdout or Null, stderr).
    pub(super) fn status(&self) -> (Option<i32>, Value, String) {
        let o = self.run(&["status", &self.name, "--json"]);
        let v = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        (
            o.status.code(),
            v,
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// `history NAME --json`, or why it failed.
    pub(super) fn history(&self) -> Result<Value, String> {
        let o = self.run(&["history", &self.name, "--json"]);
        if !o.status.success() {
            let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
            return Err(format!(
                "history exits {:?}: {}{}",
                o.status.code(),
                v["error"].as_str().unwrap_or(""),
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        serde_json::from_slice(&o.stdout).map_err(|e| format!("history --json: {e}"))
    }

    /// The files (path -> sha256 hex) of the release `history` calls current.
    pub(super) fn history_current_files(
        &self,
    ) -> Result<(String, BTreeMap<String, String>), String> {
        let h = self.history()?;
        let cur = h["current"].as_str().unwrap_or("").to_string();
        let r = h["releases"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["id"] == cur.as_str()))
            .ok_or_else(|| format!("history has no current release ({cur:?})"))?;
        // A release's files are in its manifest beside its folder (the history holds no
        // per-file map since 10,000 files made it too large); older histories had them.
        let manifest: Value = match r["state"]["files"].as_object() {
            Some(m) => Value::Object(m.clone()),
            None => {
                let dir = r["dir"].as_str().unwrap_or("");
                let path = format!("/payload/.releases/{dir}.config/manifest.json");
                let o = support::run_docker(&self.docker, &["exec", &self.name, "cat", &path]);
                serde_json::from_slice(&o.stdout).map_err(|e| {
                    format!(
                        "release {cur} has no files in history and no manifest at {path}: {e} {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    )
                })?
            }
        };
        let files = manifest
            .as_object()
            .ok_or_else(|| format!("release {cur}'s manifest is not an object"))?
            .iter()
            .map(|(k, v)| {
                let h = v.as_str().unwrap_or("");
                let h = h.strip_prefix("sha256:").unwrap_or(h);
                (k.clone(), h.split(' ').next().unwrap_or("").to_string())
            })
            .collect();
        Ok((cur, files))
    }

    /// The URL of the container deployment (from its port label).
    pub(super) fn url(&self) -> Option<String> {
        let o = support::run_docker(
            &self.docker,
            &[
                "inspect",
                "-f",
                "{{index .Config.Labels \"fractalic-publisher.port\"}}",
                &self.name,
            ],
        );
        let port = String::from_utf8_lossy(&o.stdout).trim().to_string();
        (o.status.success() && !port.is_empty()).then(|| format!("http://localhost:{port}"))
    }

    /// What the docker-registry deployment serves, completely: the release whose every file
    /// is under /payload/hello/ (and nothing else), and whose version /execute answers.
    pub(super) fn serving<'a>(&self, rels: &[&'a Release]) -> Result<&'a Release, String> {
        if self.swarm {
            return self.swarm_serving(rels);
        }
        let st = managed::state(&self.docker, &self.name);
        if st.as_deref() != Some("running") {
            return Err(format!(
                "{} is {}",
                self.name,
                st.unwrap_or("missing".into())
            ));
        }
        let content = self.content_of(&self.name)?;
        let rel = self.which(&content, rels)?;
        let url = self.url().ok_or("no port label")?;
        let ok = managed::eventually(20, || {
            support::wait_http(&format!("{url}/health"), Duration::from_millis(500))
                .is_some_and(|(s, _)| s == 200)
        });
        if !ok {
            return Err(format!("{url}/health does not answer 200"));
        }
        let v = self.execute(&url)?;
        if v != rel.version {
            return Err(format!("holds {} but /execute answers {v}", rel.version));
        }
        Ok(rel)
    }

    /// The running task containers of the swarm service: (container, image).
    pub(super) fn tasks(&self) -> Vec<(String, String)> {
        let filter = format!("label=com.docker.swarm.service.name={}", self.name);
        let o = support::run_docker(
            &self.docker,
            &[
                "ps",
                "--filter",
                &filter,
                "--filter",
                "status=running",
                "--format",
                "{{.Names}}\t{{.Image}}",
            ],
        );
        let v: Vec<(String, String)> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        for (_, image) in &v {
            let tag = image.split('@').next().unwrap_or(image).to_string();
            self.images.borrow_mut().insert(tag);
        }
        v
    }

    /// The URLs of the service's running tasks (host-mode ports).
    pub(super) fn task_urls(&self) -> Vec<String> {
        let o = support::run_docker(
            &self.docker,
            &[
                "service",
                "ps",
                "--filter",
                "desired-state=running",
                "--format",
                "{{.CurrentState}}|{{.Ports}}",
                &self.name,
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

    /// Which release every running task holds (an error names the first that holds none).
    pub(super) fn task_releases<'a>(
        &self,
        rels: &[&'a Release],
    ) -> Result<Vec<&'a Release>, String> {
        let mut v = Vec::new();
        for (c, _) in self.tasks() {
            let content = match self.content_of(&c) {
                // A task that stopped between the listing and the read (its service is being
                // removed, or Swarm replaces it) runs nothing: not a mixture.
                Err(e) if e.contains("is not running") || e.contains("No such container") => {
                    continue
                }
                // A task stopped while the read ran (its exec killed with it, saying nothing):
                // asked again, it no longer runs.
                Err(e) if !self.container_running(&c) => {
                    eprintln!("  (task {c} stopped during the read: {e})");
                    continue;
                }
                r => r?,
            };
            v.push(
                self.which(&content, rels)
                    .map_err(|e| format!("task {c}: {e}"))?,
            );
        }
        Ok(v)
    }

    /// Whether container `c` exists and runs.
    fn container_running(&self, c: &str) -> bool {
        let o = support::run_docker(
            &self.docker,
            &["inspect", "--format", "{{.State.Running}}", c],
        );
        o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "true"
    }

    /// What the swarm service serves, completely: every running task holds the same release
    /// and every task URL answers /health and /execute with its version.
    fn swarm_serving<'a>(&self, rels: &[&'a Release]) -> Result<&'a Release, String> {
        // Swarm converges on its own after a kill (an update it finishes or rolls back).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let e = match self.swarm_serving_once(rels) {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            if Instant::now() >= deadline || e.starts_with("there is no service") {
                return Err(e);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn swarm_serving_once<'a>(&self, rels: &[&'a Release]) -> Result<&'a Release, String> {
        let spec = support::run_docker(&self.docker, &["service", "inspect", &self.name]);
        if !spec.status.success() {
            return Err(format!("there is no service {}", self.name));
        }
        let held = self.task_releases(rels)?;
        let Some(first) = held.first() else {
            return Err(format!("no running task of {}", self.name));
        };
        if held.iter().any(|r| r.version != first.version) {
            return Err(format!(
                "tasks hold different releases: {:?}",
                held.iter().map(|r| &r.version).collect::<Vec<_>>()
            ));
        }
        let urls = self.task_urls();
        if urls.is_empty() {
            return Err("no task URL".into());
        }
        for u in &urls {
            let v = self.execute(u)?;
            if v != first.version {
                return Err(format!("{u} answers {v}, its task holds {}", first.version));
            }
        }
        Ok(first)
    }

    /// True when `history` names what is live: docker-registry: the current release's files
    /// are `rel`'s; docker-swarm: its image is the running tasks' image.
    pub(super) fn history_names(&self, rel: &Release) -> Result<(), String> {
        if !self.swarm {
            let (id, files) = self.history_current_files()?;
            return if files == rel.files {
                Ok(())
            } else {
                Err(format!(
                    "{} serves {} but history's current release {id} is another",
                    self.name, rel.version
                ))
            };
        }
        let h = self.history()?;
        let cur = h["current"].as_str().unwrap_or("");
        let img = h["releases"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["id"] == cur))
            .and_then(|r| r["state"]["image"].as_str())
            .ok_or_else(|| format!("history has no image for its current release {cur:?}"))?
            .to_string();
        let tasks = self.tasks();
        if tasks.iter().all(|(_, i)| i.starts_with(&img)) && !tasks.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} serves {} from {:?} but history's current release {cur} is {img}",
                self.name,
                rel.version,
                tasks.iter().map(|t| &t.1).collect::<Vec<_>>()
            ))
        }
    }

    /// Leftovers of a swarm deployment: secrets/configs neither the service nor its history
    /// use (all of them when there is no service), the run's build container, containers of
    /// the name that are not tasks, and the shared ones.
    pub(super) fn swarm_leftovers(&self, live: bool, run: &Run) -> Vec<String> {
        let mut v = Vec::new();
        let spec = support::run_docker(
            &self.docker,
            &[
                "service",
                "inspect",
                "--format",
                "{{json .Spec}}",
                &self.name,
            ],
        );
        let exists = spec.status.success();
        let spec = String::from_utf8_lossy(&spec.stdout).into_owned();
        if live && !exists {
            v.push(format!("no service {}", self.name));
        }
        if !live && exists {
            v.push(format!("service {} still exists", self.name));
        }
        for kind in ["secret", "config"] {
            for o in self.objects(kind) {
                if !exists || !spec.contains(&o) {
                    v.push(format!("{kind} {o} (no service or release uses it)"));
                }
            }
        }
        for (c, st) in self.containers() {
            v.push(format!("container {c} ({st})"));
        }
        if let Some(id) = &run.run_id {
            for c in self.run_containers(id) {
                v.push(format!("container {c} of the killed run {id}"));
            }
        }
        v.extend(self.common_leftovers());
        v
    }

    // ---- what must not be there ----

    /// Files under the state directory (journals of runs that ended must be gone).
    pub(super) fn state_files(&self) -> Vec<String> {
        let mut v = Vec::new();
        files_under(self.state.path(), &mut v);
        v.into_iter().map(|p| p.display().to_string()).collect()
    }

    /// Files under /tmp and the state directory holding the env secret or the apiKey. Only
    /// files written since this test started are read (the secret is unique to it; /tmp of a
    /// shared machine can hold gigabytes of other work).
    pub(super) fn secret_files(&self) -> Vec<String> {
        let mut v = Vec::new();
        files_under(Path::new("/tmp"), &mut v);
        files_under(self.state.path(), &mut v);
        let since = SystemTime::now() - self.started.elapsed() - Duration::from_secs(2);
        // The lab's own release folders hold the secret by design (they may be under /tmp).
        let own = self.work.path().to_path_buf();
        let holds = |p: &PathBuf| {
            std::fs::metadata(p).is_ok_and(|m| {
                m.is_file() && m.len() < 8 << 20 && m.modified().is_ok_and(|t| t >= since)
            }) && std::fs::read(p).is_ok_and(|b| {
                contains(&b, self.secret.as_bytes()) || contains(&b, self.api_key.as_bytes())
            })
        };
        let mut found: Vec<PathBuf> = v
            .into_iter()
            .filter(|p| !Path::new(p).starts_with(&own))
            .filter(holds)
            .collect();
        // Left behind means it stays: the engine's own files of a running exec (runc's
        // `/tmp/runc-process*` spec of a task's health check, holding the service's env) come
        // and go within a second.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !found.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            found.retain(holds);
        }
        found.into_iter().map(|p| p.display().to_string()).collect()
    }

    /// The lock file of the name, when it still records a holder (or is held).
    pub(super) fn lock_problem(&self) -> Option<String> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
        let path = base
            .join("fractalic-publisher/locks")
            .join(format!("{}.lock", self.name));
        let f = std::fs::File::open(&path).ok()?;
        if f.try_lock().is_err() {
            return Some(format!("{} is still held", path.display()));
        }
        let _ = f.unlock();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        (!text.trim().is_empty())
            .then(|| format!("{} still names a holder: {}", path.display(), text.trim()))
    }

    /// Every leftover of a docker-registry deployment whose live release is `live` (None:
    /// removed): anything but NAME running and at most 2 stopped kept containers; the run's
    /// labelled containers; journals; the lock; secrets on disk.
    pub(super) fn leftovers(&self, live: bool, run: &Run) -> Vec<String> {
        if self.swarm {
            return self.swarm_leftovers(live, run);
        }
        let mut v = Vec::new();
        let mut kept = 0;
        for (n, st) in self.containers() {
            if live && n == self.name {
                if st != "running" {
                    v.push(format!("{n} is {st}"));
                }
            } else if live
                && n.starts_with(&format!("{}.r", self.name))
                && st != "running"
                && st != "created"
            {
                kept += 1;
            } else {
                v.push(format!("container {n} ({st})"));
            }
        }
        if kept > 2 {
            v.push(format!("{kept} kept containers (at most 2)"));
        }
        if let Some(id) = &run.run_id {
            for c in self.run_containers(id) {
                if c != self.name && !c.starts_with(&format!("{}.r", self.name)) {
                    v.push(format!("container {c} of the killed run {id}"));
                }
            }
        }
        v.extend(self.common_leftovers());
        v
    }

    /// Leftovers every plugin shares: journals, the lock, secrets on disk.
    pub(super) fn common_leftovers(&self) -> Vec<String> {
        let mut v = Vec::new();
        for f in self.state_files() {
            v.push(format!("state file {f}"));
        }
        if let Some(l) = self.lock_problem() {
            v.push(l);
        }
        for f in self.secret_files() {
            v.push(format!("file {f} holds the test's secret"));
            // Reported once, at the kill point that left it; it is this test's secret.
            let _ = std::fs::remove_file(&f);
        }
        v
    }

    /// Removes the deployment whatever state it is in (between sweeps of a case that must
    /// start over).
    pub(super) fn reset(&self) {
        let _ = self.run(&["rm", "--force", &self.name]);
        for (c, _) in self.containers() {
            let _ = Command::new(&self.docker)
                .args(["rm", "-f", "-v", &c])
                .output();
        }
        if self.swarm {
            let _ = Command::new(&self.docker)
                .args(["service", "rm", &self.name])
                .output();
            for kind in ["secret", "config"] {
                for n in self.objects(kind) {
                    let _ = Command::new(&self.docker).args([kind, "rm", &n]).output();
                }
            }
        }
        for f in self.state_files() {
            let _ = std::fs::remove_file(f);
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            files_under(&e.path(), out);
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
}

/// The message of a progress step line (`--progress json` step event or a plain `[ NN%]`
/// line); notes the run id of JSON events.
fn step_message(line: &str, run_id: &mut Option<String>) -> Option<String> {
    if line.starts_with('{') {
        let v: Value = serde_json::from_str(line).ok()?;
        if run_id.is_none() {
            *run_id = v["deployment_id"].as_str().map(str::to_string);
        }
        return (v["type"] == "step").then(|| v["message"].as_str().unwrap_or("").to_string());
    }
    let rest = line.trim_start().strip_prefix('[')?;
    let (pct, msg) = rest.split_once("%]")?;
    pct.trim().parse::<u32>().ok()?;
    Some(msg.trim().to_string())
}

/// Pids of all descendants of `pid` (from /proc), children before grandchildren.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            if let Some(pp) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                parent_of.push((p, pp));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(q) = frontier.pop() {
        for (c, pp) in &parent_of {
            if *pp == q && !out.contains(c) {
                out.push(*c);
                frontier.push(*c);
            }
        }
    }
    out
}

/// The pids the counting wrapper logged (for a kill by the wrapper itself).
fn orphans_of_log(log: &Path) -> Vec<u32> {
    managed::logged_calls(log)
        .iter()
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect()
}

fn wait_gone(pids: &[u32], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while pids
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists() && !is_zombie(*p))
    {
        if Instant::now() >= deadline {
            eprintln!("orphaned docker calls still running after {timeout:?}: {pids:?}");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next().map(|x| x == "Z"))
        })
        .unwrap_or(true)
}

fn write_wrapper(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("docker");
    std::fs::write(&p, body).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A docker that logs `PID ARGV` per call (its pid stays the real docker's: exec).
fn call_counter(dir: &Path, docker: &Path, log: &Path) -> PathBuf {
    write_wrapper(
        dir,
        &format!(
            "#!/bin/sh\necho \"$$ $*\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            docker.display()
        ),
    )
}

/// A docker that logs as [`call_counter`] and, as call K starts, SIGKILLs its parent (the
/// publisher); the call then runs on.
fn call_killer(dir: &Path, docker: &Path, log: &Path, k: usize) -> PathBuf {
    write_wrapper(
        dir,
        &format!(
            "#!/bin/sh\necho \"$$ $*\" >> '{log}'\nif [ \"$(wc -l < '{log}')\" -eq {k} ]; then kill -9 $PPID; fi\nexec '{docker}' \"$@\"\n",
            log = log.display(),
            docker = docker.display()
        ),
    )
}

/// A docker wrapper that logs each call and, at the first call whose arguments begin with
/// `prefix`, SIGKILLs its parent (the publisher) and ends without running docker.
fn before_call_killer(dir: &Path, docker: &Path, log: &Path, prefix: &str) -> PathBuf {
    assert!(!prefix.contains('\''), "a prefix without quotes: {prefix}");
    write_wrapper(
        dir,
        &format!(
            "#!/bin/sh\necho \"$$ $*\" >> '{log}'\ncase \"$*\" in\n'{prefix}'*) if mkdir '{hit}' 2>/dev/null; then kill -9 $PPID; exit 137; fi;;\nesac\nexec '{docker}' \"$@\"\n",
            log = log.display(),
            hit = dir.join("hit").display(),
            docker = docker.display()
        ),
    )
}

/// A `serve` process of a lab (same state directory), listening on a free loopback port.
pub(super) struct Server {
    child: std::process::Child,
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// SIGKILL, as `systemctl kill -s KILL` of the unit would; then waits for the docker
    /// calls it had started to end.
    pub(super) fn kill_hard(&mut self) {
        let orphans = descendants(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        wait_gone(&orphans, Duration::from_secs(60));
    }
}

impl Lab {
    /// Starts `serve --listen 127.0.0.1:0 --root WORK` and waits for its `listening on` line.
    pub(super) fn serve(&self) -> Server {
        let args: Vec<String> = ["serve", "--listen", "127.0.0.1:0", "--root"]
            .iter()
            .map(|s| s.to_string())
            .chain([self.work.path().display().to_string()])
            .collect();
        let mut child = self
            .command(&self.docker, &args)
            .env_remove("FRACTALIC_PUBLISHER_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{}: serve did not say where it listens", self.case));
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{}: serve printed {line:?}", self.case))
            .to_string();
        Server { child, url }
    }

    /// The REST deploy body of `rel` (docker-registry), with `env` and the test's secret.
    pub(super) fn rest_body(&self, rel: &Release, env: &[(&str, &str)]) -> Value {
        let (repo, tag) = self.image.rsplit_once(':').unwrap();
        let mut vars = serde_json::Map::new();
        vars.insert("SECRET_X".into(), Value::String(self.secret.clone()));
        for (k, v) in env {
            vars.insert(k.to_string(), Value::String(v.to_string()));
        }
        serde_json::json!({
            "image_name": repo,
            "image_tag": tag,
            "script_name": "hello",
            "script_folder": rel.dir.display().to_string(),
            "container_name": self.name,
            "pull": "missing",
            "timeout": 30,
            "env_vars": vars,
        })
    }
}

/// Reads a Server-Sent Events stream on a thread: each `data:` payload parsed, on `rx`.
pub(super) fn sse_events(reader: Box<dyn Read + Send>) -> mpsc::Receiver<Value> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if let Some(d) = line.strip_prefix("data:") {
                if let Ok(v) = serde_json::from_str::<Value>(d.trim()) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}
