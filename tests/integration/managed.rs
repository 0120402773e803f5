//! Helpers for the management-command tests (ps, status, logs, stop/start/rm, doctor,
//! interrupts): deploy the stand-in through the built binary, run the binary, look at Docker.

use crate::support::{self, ContainerGuard};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const HELLO: &str = "# Demo task {id=demo-task}\n\n@shell\nprompt: echo hello\nuse-header: \"# Out {id=out}\"\n\n@return\nblock: out\n";

/// A deployment made for a test; its container is removed when this is dropped.
pub(crate) struct Deployed {
    pub name: String,
    pub url: String,
    _guard: ContainerGuard,
    _folder: tempfile::TempDir,
}

/// A command line for the built binary with `--docker DOCKER` (plugins from the binary).
pub(crate) fn command(docker: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fractalic-publisher"));
    cmd.arg("--docker").arg(docker).args(args);
    cmd.env_remove("FRACTALIC_PUBLISHER_PLUGINS");
    cmd.current_dir(std::env::temp_dir());
    cmd
}

/// Runs the binary to completion.
pub(crate) fn publisher(docker: &Path, args: &[&str]) -> Output {
    command(docker, args).output().unwrap()
}

/// (stdout, stderr) as text.
pub(crate) fn out(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Asserts the exit code, showing both streams when it is not the expected one.
pub(crate) fn assert_code(o: &Output, code: i32) {
    let (so, se) = out(o);
    assert_eq!(o.status.code(), Some(code), "stdout:\n{so}\nstderr:\n{se}");
}

/// stdout parsed as JSON.
pub(crate) fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", out(o).0))
}

/// `deploy docker-registry` of the `hello` script in `folder` as `name`, from the cached `image`.
pub(crate) fn deploy_argv<'a>(folder: &'a Path, name: &'a str, image: &'a str) -> Vec<&'a str> {
    vec![
        "deploy",
        "docker-registry",
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
    ]
}

/// Deploys the stand-in as a fresh uniquely named deployment; `extra` goes on the deploy line.
pub(crate) fn deploy(docker: &Path, prefix: &str, extra: &[&str]) -> Deployed {
    let name = support::unique_name(prefix);
    let guard = ContainerGuard::new(&name);
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("hello.md"), HELLO).unwrap();
    let image = support::stand_in_image();
    let mut args = deploy_argv(folder.path(), &name, &image);
    args.push("--json");
    args.extend_from_slice(extra);
    let o = publisher(docker, &args);
    assert_code(&o, 0);
    let url = json(&o)["url"].as_str().unwrap().to_string();
    Deployed {
        name,
        url,
        _guard: guard,
        _folder: folder,
    }
}

/// `docker container inspect NAME` `.State.Status`, or None when there is no such container.
pub(crate) fn state(docker: &Path, name: &str) -> Option<String> {
    let o = Command::new(docker)
        .args([
            "container",
            "inspect",
            "--format",
            "{{.State.Status}}",
            name,
        ])
        .output()
        .unwrap();
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Names of all containers (any state) whose name starts with `prefix`.
pub(crate) fn containers_named(docker: &Path, prefix: &str) -> Vec<String> {
    let filter = format!("name=^/?{prefix}");
    let o = Command::new(docker)
        .args(["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"])
        .output()
        .unwrap();
    assert!(o.status.success(), "docker ps: {}", out(&o).1);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Polls `f` every 100 ms until it is true or `secs` pass; returns the last answer.
pub(crate) fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends SIGINT to `pid` (as Ctrl-C would).
pub(crate) fn sigint(pid: u32) {
    let s = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(s.success(), "kill -INT {pid}");
}

/// Sends SIGTERM to `pid`.
pub(crate) fn sigterm(pid: u32) {
    let s = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(s.success(), "kill -TERM {pid}");
}

/// Waits for a child to exit within `secs`; kills it and panics otherwise.
pub(crate) fn wait_exit(child: &mut std::process::Child, secs: u64) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the process did not exit within {secs}s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A shell script standing in for docker: appends its argv to `log`, runs `prelude` (sh code
/// that sees "$@"), then execs the real docker.
pub(crate) fn docker_wrapper(dir: &Path, docker: &Path, log: &Path, prelude: &str) -> PathBuf {
    let p = dir.join("docker-wrapper");
    let body = format!(
        "#!/bin/sh\na=$(printf '%s' \"$*\" | tr '\\n' ' '); printf '%s\\n' \"$a\" >> '{}'\n{prelude}\nexec '{}' \"$@\"\n",
        log.display(),
        docker.display()
    );
    std::fs::write(&p, body).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// The lines a [`docker_wrapper`] logged.
pub(crate) fn logged_calls(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A stopped container with the stand-in image that this tool did not create.
pub(crate) fn foreign_container(docker: &Path, prefix: &str) -> (String, ContainerGuard) {
    let name = support::unique_name(prefix);
    let guard = ContainerGuard::new(&name);
    let o = Command::new(docker)
        .args(["create", "--name", &name, &support::stand_in_image()])
        .output()
        .unwrap();
    assert!(o.status.success(), "docker create: {}", out(&o).1);
    (name, guard)
}

/// Kills the child when dropped (a failed assertion must not leave a publisher running).
pub(crate) struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Removes every container whose name starts with the prefix when dropped (for names the
/// binary makes up, like doctor's throwaway container).
pub(crate) struct PrefixGuard {
    pub docker: PathBuf,
    pub prefix: String,
}

impl Drop for PrefixGuard {
    fn drop(&mut self) {
        for name in containers_named(&self.docker, &self.prefix) {
            let _ = Command::new(&self.docker)
                .args(["rm", "-f", "-v", &name])
                .output();
        }
    }
}
