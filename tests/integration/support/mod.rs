//! Shared helpers for the integration tests: the docker binary (or a skip), the stand-in image
//! pulled once from the local registry, unique container names removed on drop, docker runs with
//! captured output and a timeout, files copied into containers as one tar, HTTP polling.
#![allow(dead_code)] // each test module uses a different subset

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The image tests deploy; `FRACTALIC_STAND_IN_IMAGE` (set by scripts/test.sh) wins.
pub(crate) const DEFAULT_STAND_IN_IMAGE: &str =
    "127.0.0.1:5000/fractalic-stand-in:latest-production";

/// How long a single docker call may take before the test fails.
pub(crate) const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);

static DOCKER: OnceLock<Result<PathBuf, String>> = OnceLock::new();

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The docker binary when a daemon answers, else `None` after printing a `SKIPPED` line.
/// With `CI=true` a missing daemon is a failure, not a skip. `FRACTALIC_PUBLISHER_DOCKER` picks
/// the binary; `FRACTALIC_TEST_NO_DOCKER=1` (set by scripts/test.sh when `up` failed) skips.
///
/// Tests that call this carry `#[cfg_attr(no_docker, ignore = ...)]`, so with
/// `FRACTALIC_TEST_NO_DOCKER=1` the harness lists them as ignored (see build.rs). When Docker
/// is missing without that variable, the harness can only say "ok"; the `SKIPPED` line, written
/// straight to stderr (not captured by the harness), says the truth.
pub(crate) fn docker() -> Option<PathBuf> {
    match DOCKER.get_or_init(find_docker) {
        Ok(p) => Some(p.clone()),
        Err(why) if ci() => panic!("CI=true but Docker is unusable: {why}"),
        Err(why) => {
            let test = thread::current().name().unwrap_or("a test").to_string();
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: needs Docker ({why}); it did not run"
            );
            None
        }
    }
}

/// A `docker` that must never run: it appends each call's argv to `DIR/calls` and fails. For
/// checks that bad input is found before Docker is touched; needs no daemon. Returns the
/// program and the log.
pub(crate) fn untouchable_docker(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let log = dir.join("calls");
    std::fs::write(&log, "").expect("create call log");
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> {}\necho \"untouchable docker was run: $*\" >&2\nexit 1\n",
        quote(&log)
    );
    let path = dir.join("docker");
    std::fs::write(&path, script).expect("write untouchable docker");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (path, log)
}

/// The calls an [`untouchable_docker`] recorded.
pub(crate) fn calls(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn find_docker() -> Result<PathBuf, String> {
    if std::env::var("FRACTALIC_TEST_NO_DOCKER").is_ok_and(|v| v == "1") {
        return Err("FRACTALIC_TEST_NO_DOCKER=1".into());
    }
    let bin = match std::env::var_os("FRACTALIC_PUBLISHER_DOCKER") {
        Some(p) => PathBuf::from(p),
        None => which::which("docker").map_err(|e| format!("docker CLI not found: {e}"))?,
    };
    let out = run_with_timeout(
        Command::new(&bin).args(["version", "--format", "{{.Server.Version}}"]),
        None,
        Duration::from_secs(20),
    )?;
    if out.status.success() {
        Ok(bin)
    } else {
        Err(format!(
            "the daemon does not answer: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The stand-in image name (`FRACTALIC_STAND_IN_IMAGE`, default [`DEFAULT_STAND_IN_IMAGE`]).
pub(crate) fn stand_in_image() -> String {
    std::env::var("FRACTALIC_STAND_IN_IMAGE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_STAND_IN_IMAGE.to_string())
}

/// `docker pull`s the stand-in image once per test run; panics (with docker's stderr) if that
/// fails, e.g. because `scripts/dev-env.sh up` was not run.
pub(crate) fn pull_stand_in(docker: &Path) -> String {
    static PULLED: OnceLock<Result<(), String>> = OnceLock::new();
    let image = stand_in_image();
    let result = PULLED.get_or_init(|| {
        let out = run_docker(docker, &["pull", "--quiet", &image]);
        if out.status.success() {
            Ok(())
        } else {
            Err(describe(&["pull", "--quiet", &image], &out))
        }
    });
    if let Err(e) = result {
        panic!("{e}\n(start the test bed with scripts/dev-env.sh up)");
    }
    image
}

/// A container name no other test (or run) uses: `<prefix>-<pid>-<counter>-<time>`.
pub(crate) fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        % 1_000_000_000;
    format!("{prefix}-{}-{n}-{t}", std::process::id())
}

/// Removes the named container (`docker rm -f -v`) when dropped, also when the test panics.
pub(crate) struct ContainerGuard {
    name: String,
}

impl ContainerGuard {
    pub(crate) fn new(name: &str) -> Self {
        ContainerGuard {
            name: name.to_string(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        // No usable docker: nothing can have been created.
        let Some(Ok(bin)) = DOCKER.get() else { return };
        // The container may never have been created; docker's complaint is expected then.
        let _ = run_with_timeout(
            Command::new(bin).args(["rm", "-f", "-v", &self.name]),
            None,
            Duration::from_secs(60),
        );
    }
}

/// Runs `docker ARGS` with captured output and [`DOCKER_TIMEOUT`]; panics only when docker
/// cannot be started or hangs.
pub(crate) fn run_docker(docker: &Path, args: &[&str]) -> Output {
    run_docker_stdin(docker, args, None)
}

/// Like [`run_docker`], feeding `stdin` to the process.
pub(crate) fn run_docker_stdin(docker: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    run_with_timeout(Command::new(docker).args(args), stdin, DOCKER_TIMEOUT)
        .unwrap_or_else(|e| panic!("docker {}: {e}", args.join(" ")))
}

/// Runs `docker ARGS`, asserts it succeeded and returns its trimmed stdout.
pub(crate) fn docker_ok(docker: &Path, args: &[&str]) -> String {
    let out = run_docker(docker, args);
    assert!(out.status.success(), "{}", describe(args, &out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// argv, exit status, stdout and stderr of a docker call, for assertion messages.
pub(crate) fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "docker {} -> {}\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub(crate) fn run_with_timeout(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output, String> {
    let mut child: Child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    let feeder = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("piped stdin");
        let bytes = bytes.to_vec();
        thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        })
    });
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let drain = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out_t = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err_t = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("timed out after {timeout:?}"));
        }
        thread::sleep(Duration::from_millis(20));
    };
    if let Some(f) = feeder {
        let _ = f.join();
    }
    Ok(Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    })
}

/// An entry of a tar copied into a container with [`copy_into`]; all owned by appuser 1000:1000.
pub(crate) enum Entry<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
}

/// Copies entries (absolute paths; list new parent directories first, or Docker creates them
/// owned by root) into a container, created or running, with one `docker cp - NAME:/`. Ownership
/// comes from the tar headers; `-a` would instead look the container's user name up on the host
/// (moby/moby#34142: "getent unable to find entry \"appuser\"").
pub(crate) fn copy_into(docker: &Path, container: &str, entries: &[Entry]) {
    let mut tar = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_mtime(1_700_000_000);
        let (path, data): (&str, &[u8]) = match e {
            Entry::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                (p, &[])
            }
            Entry::File(p, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                (p, data)
            }
            Entry::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                h.set_link_name(target).expect("symlink target");
                (p, &[])
            }
        };
        tar.append_data(&mut h, path.trim_start_matches('/'), data)
            .expect("tar entry");
    }
    let bytes = tar.into_inner().expect("tar");
    let target = format!("{container}:/");
    let args = ["cp", "-", target.as_str()];
    let out = run_docker_stdin(docker, &args, Some(&bytes));
    assert!(out.status.success(), "{}", describe(&args, &out));
}

/// `docker exec NAME ARGS...` (as the image's user), captured.
pub(crate) fn exec(docker: &Path, container: &str, args: &[&str]) -> Output {
    let mut argv = vec!["exec", container];
    argv.extend_from_slice(args);
    run_docker(docker, &argv)
}

/// The host address (`127.0.0.1:PORT`) a container port is published on.
pub(crate) fn published(docker: &Path, container: &str, port: u16) -> String {
    let out = docker_ok(docker, &["port", container, &format!("{port}/tcp")]);
    out.lines()
        .find(|l| l.starts_with("127.0.0.1:") || l.starts_with("0.0.0.0:"))
        .unwrap_or_else(|| panic!("{container}:{port} is not published: {out}"))
        .replace("0.0.0.0:", "127.0.0.1:")
}

/// The container's IP address on its (first) network.
pub(crate) fn container_ip(docker: &Path, container: &str) -> String {
    docker_ok(
        docker,
        &[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            container,
        ],
    )
    .split_whitespace()
    .next()
    .unwrap_or_else(|| panic!("{container} has no IP address"))
    .to_string()
}

/// Polls `docker inspect` until the container stopped; its exit code, or `None` at the deadline.
pub(crate) fn wait_exited(docker: &Path, container: &str, timeout: Duration) -> Option<i64> {
    let deadline = Instant::now() + timeout;
    loop {
        let state = docker_ok(
            docker,
            &[
                "inspect",
                "--format",
                "{{.State.Running}} {{.State.ExitCode}}",
                container,
            ],
        );
        if let Some(code) = state.strip_prefix("false ") {
            return code.parse().ok();
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `url` (GET, every 100 ms) until any HTTP answer arrives; returns its status and body,
/// or `None` when `timeout` passes first. Connection errors and resets count as "not yet".
pub(crate) fn wait_http(url: &str, timeout: Duration) -> Option<(u16, String)> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .build();
    let deadline = Instant::now() + timeout;
    loop {
        match agent.get(url).call() {
            Ok(r) => {
                let status = r.status();
                return Some((status, r.into_string().unwrap_or_default()));
            }
            Err(ureq::Error::Status(status, r)) => {
                return Some((status, r.into_string().unwrap_or_default()))
            }
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
            Err(_) => return None,
        }
    }
}

/// A wrapper around `docker` that appends each invocation's argv (one line) to `log`, then execs
/// the real binary; for tests that count docker calls or look for secrets on command lines.
pub(crate) fn counting_docker(dir: &Path, docker: &Path, log: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let script = format!(
        "#!/bin/sh\na=$(printf '%s' \"$*\" | tr '\\n' ' '); printf '%s\\n' \"$a\" >> {}\nexec {} \"$@\"\n",
        quote(log),
        quote(docker)
    );
    let path = dir.join("docker");
    std::fs::write(&path, script).expect("write docker wrapper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// A wrapper around `docker` whose first `docker start` fails the way a port taken between
/// choosing it and starting fails ("port is already allocated"), without starting anything;
/// every other call, and every later `start`, goes to the real docker. For the retry paths.
pub(crate) fn port_clash_once_docker(dir: &Path, docker: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let marker = dir.join("clashed");
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = start ] && [ ! -e {m} ]; then\n  : > {m}\n  echo \"Error response from daemon: driver failed programming external connectivity on endpoint $2: Bind for 127.0.0.1:8001 failed: port is already allocated\" >&2\n  exit 1\nfi\nexec {d} \"$@\"\n",
        m = quote(&marker),
        d = quote(docker)
    );
    let path = dir.join("docker");
    std::fs::write(&path, script).expect("write docker wrapper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}
