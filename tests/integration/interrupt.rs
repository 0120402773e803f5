//! Ctrl-C (SIGINT) during a deploy, a doctor run or a start leaves no half-made container.

use crate::managed::{self, assert_code, deploy, publisher};
use crate::support::{self, ContainerGuard};
use std::path::Path;
use std::process::Stdio;

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn interrupted_deploy_leaves_nothing_behind() {
    let Some(docker) = support::docker() else {
        return;
    };
    let name = support::unique_name("fp-int-deploy");
    let _guard = ContainerGuard::new(&name);
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("hello.md"), "# Hi\n").unwrap();
    let image = support::stand_in_image();
    let mut args = managed::deploy_argv(folder.path(), &name, &image);
    args.extend(["--env", "STAND_IN_START_DELAY_MS=20000", "--timeout", "30"]);
    let mut child = managed::command(&docker, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        managed::eventually(30, || !managed::containers_named(&docker, &name).is_empty()),
        "the deploy never created its container"
    );
    managed::sigint(child.id());
    let status = managed::wait_exit(&mut child, 30);
    assert_eq!(status.code(), Some(130));
    assert!(
        managed::eventually(10, || managed::containers_named(&docker, &name).is_empty()),
        "{name} was left behind"
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn interrupted_doctor_leaves_nothing_behind() {
    let Some(docker) = support::docker() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    // The MCP manager check hangs, so the throwaway container is up when we interrupt.
    let wrapper = managed::docker_wrapper(
        dir.path(),
        &docker,
        &log,
        "if [ \"$1\" = exec ]; then sleep 20; fi",
    );
    let child = managed::command(&wrapper, &["doctor", "--image", &support::stand_in_image()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let prefix = format!("fractalic-doctor-{}-", child.id());
    // Dropped in reverse order, also when an assertion fails: the doctor is killed first,
    // then whatever it left is removed (its wrapper, in `dir`, goes last).
    let _leftovers = managed::PrefixGuard {
        docker: docker.clone(),
        prefix: prefix.clone(),
    };
    let mut child = managed::KillOnDrop(child);
    assert!(
        managed::eventually(30, || managed::logged_calls(&log)
            .iter()
            .any(|c| c.starts_with("exec "))),
        "doctor never reached the MCP check"
    );
    assert_eq!(managed::containers_named(&docker, &prefix).len(), 1);
    managed::sigint(child.0.id());
    let status = managed::wait_exit(&mut child.0, 30);
    assert_eq!(status.code(), Some(130));
    assert!(
        managed::eventually(10, || managed::containers_named(&docker, &prefix)
            .is_empty()),
        "the doctor's container was left behind"
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn interrupted_start_leaves_the_deployment_stopped() {
    let Some(docker) = support::docker() else {
        return;
    };
    let d = deploy(
        &docker,
        "fp-int-start",
        &["--env", "STAND_IN_START_DELAY_MS=4000", "--timeout", "30"],
    );
    assert_code(&publisher(&docker, &["stop", &d.name]), 0);
    let mut child = managed::command(&docker, &["start", &d.name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        managed::eventually(10, || managed::state(&docker, &d.name).as_deref()
            == Some("running")),
        "start never started the container"
    );
    managed::sigint(child.id());
    let status = managed::wait_exit(&mut child, 30);
    assert_eq!(status.code(), Some(130));
    assert!(
        managed::eventually(15, || managed::state(&docker, &d.name).as_deref()
            == Some("exited")),
        "the interrupted start left {} running",
        d.name
    );
}

/// A deploy of `hello` in a fresh folder as `name`, with a secret in its environment, `--json`
/// and a private TMPDIR (returned), so a leaked env-file can be seen.
fn secret_deploy(
    docker: &Path,
    name: &str,
    extra: &[&str],
) -> (std::process::Child, tempfile::TempDir, tempfile::TempDir) {
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("hello.md"), "# Hi\n").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let image = support::stand_in_image();
    let mut args = managed::deploy_argv(folder.path(), name, &image);
    args.extend(["--json", "--env", "SECRET_X=s3cret", "--timeout", "30"]);
    args.extend_from_slice(extra);
    let child = managed::command(docker, &args)
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, folder, tmp)
}

/// Waits until process `pid` catches SIGINT and SIGTERM (its handler is installed), so a
/// signal sent next tests the handler, not the process's first microseconds.
fn wait_for_handler(pid: u32) {
    let caught = || -> bool {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|m| m & (1 << (2 - 1)) != 0 && m & (1 << (15 - 1)) != 0)
    };
    assert!(
        managed::eventually(10, caught),
        "process {pid} never installed its signal handler"
    );
}

fn signal(pid: u32, sig: &str) {
    let s = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(s.success(), "kill -{sig} {pid}");
}

/// Containers (any name) carrying a run label of process `pid`.
fn labelled_by(docker: &Path, pid: u32) -> Vec<String> {
    let out = support::docker_ok(
        docker,
        &[
            "ps",
            "-a",
            "--filter",
            "label=fractalic-publisher.run",
            "--format",
            "{{.Names}} {{.Label \"fractalic-publisher.run\"}}",
        ],
    );
    let mine = format!(" {pid}-");
    out.lines()
        .filter(|l| l.contains(&mine))
        .map(str::to_string)
        .collect()
}

/// Waits for the interrupted deploy and checks the contract: exit 130, one JSON object saying
/// "interrupted", no container by name or by run label, no env-file in its TMPDIR.
fn assert_clean_interrupt(
    docker: &Path,
    child: std::process::Child,
    name: &str,
    tmp: &Path,
    when: &str,
) -> serde_json::Value {
    let pid = child.id();
    let mut child = managed::KillOnDrop(child);
    let status = managed::wait_exit(&mut child.0, 60);
    let mut stdout = String::new();
    let mut stderr = String::new();
    use std::io::Read;
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "{when}\nstdout: {stdout}\nstderr: {stderr}"
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{when}: stdout is not one JSON object ({e}): {stdout}"));
    assert_eq!(v["success"], false, "{when}: {v}");
    assert_eq!(v["error_kind"], "interrupted", "{when}: {v}");
    assert_eq!(v["exit_code"], 130, "{when}: {v}");
    assert_eq!(v["cleanup"]["left"], serde_json::json!([]), "{when}: {v}");
    assert!(
        managed::containers_named(docker, name).is_empty(),
        "{when}: {name} was left behind ({v})"
    );
    assert!(
        labelled_by(docker, pid).is_empty(),
        "{when}: containers with the run's label were left: {:?}",
        labelled_by(docker, pid)
    );
    let leaked: Vec<_> = std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("fractalic-env-"))
        .collect();
    assert!(
        leaked.is_empty(),
        "{when}: env-files left in TMPDIR: {leaked:?}"
    );
    assert!(
        !stdout.contains("s3cret") && !stderr.contains("s3cret"),
        "{when}"
    );
    v
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn signals_at_every_moment_of_a_deploy_leave_nothing() {
    let Some(docker) = support::docker() else {
        return;
    };
    support::pull_stand_in(&docker);
    let mut removed_something = false;
    for (i, ms) in [0u64, 30, 60, 100, 150, 200, 300, 450, 600, 800]
        .into_iter()
        .enumerate()
    {
        let sig = if i % 2 == 0 { "TERM" } else { "INT" };
        let name = support::unique_name("fp-int-sweep");
        let _guard = ContainerGuard::new(&name);
        // The slow start keeps the deploy in its readiness wait at the later moments.
        let (child, _folder, tmp) =
            secret_deploy(&docker, &name, &["--env", "STAND_IN_START_DELAY_MS=3000"]);
        wait_for_handler(child.id());
        // A moment in the deploy, not a pause for something to happen: the sweep is the test.
        std::thread::sleep(std::time::Duration::from_millis(ms));
        signal(child.id(), sig);
        let v = assert_clean_interrupt(
            &docker,
            child,
            &name,
            tmp.path(),
            &format!("SIG{sig} at {ms} ms"),
        );
        let removed = v["cleanup"]["removed"].as_array().unwrap();
        removed_something |= removed
            .iter()
            .any(|r| r.as_str() == Some(&format!("removed container {name}")));
    }
    assert!(
        removed_something,
        "no signal of the sweep landed after the container was created"
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn a_signal_during_a_slow_create_waits_for_it_and_removes_what_it_made() {
    let Some(docker) = support::docker() else {
        return;
    };
    support::pull_stand_in(&docker);
    for sig in ["TERM", "INT"] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("calls.log");
        // `docker create` starts 1.5 s late: the signal lands while it is in flight.
        let wrapper = managed::docker_wrapper(
            dir.path(),
            &docker,
            &log,
            "if [ \"$1\" = create ]; then sleep 1.5; fi",
        );
        let name = support::unique_name("fp-int-create");
        let _guard = ContainerGuard::new(&name);
        let (child, _folder, tmp) = secret_deploy(&wrapper, &name, &[]);
        let pid = child.id();
        assert!(
            managed::eventually(30, || managed::logged_calls(&log)
                .iter()
                .any(|c| c.starts_with("create "))),
            "the deploy never reached docker create"
        );
        // The moment that once leaked an env-file: the environment now goes through a pipe.
        assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none());
        signal(pid, sig);
        let v = assert_clean_interrupt(
            &docker,
            child,
            &name,
            tmp.path(),
            &format!("SIG{sig} during create"),
        );
        assert!(
            v["error"].as_str().unwrap().contains(&name),
            "the message must say the container made by the create was removed: {v}"
        );
    }
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn a_failing_rm_is_reported_not_hidden() {
    let Some(docker) = support::docker() else {
        return;
    };
    support::pull_stand_in(&docker);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let wrapper = managed::docker_wrapper(
        dir.path(),
        &docker,
        &log,
        "if [ \"$1\" = rm ]; then echo 'Error response from daemon: injected rm failure' >&2; exit 1; fi",
    );
    // A failed deploy: the original cause, what was removed and what could not be.
    let name = support::unique_name("fp-int-rmfail");
    let _guard = ContainerGuard::new(&name);
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("hello.md"), "# Hi\n").unwrap();
    let image = support::stand_in_image();
    let mut args = managed::deploy_argv(folder.path(), &name, &image);
    args.extend(["--env", "STAND_IN_START_DELAY_MS=20000", "--timeout", "1"]);
    let o = managed::publisher(&wrapper, &args);
    managed::assert_code(&o, 1);
    let (_, err) = managed::out(&o);
    let cause = err
        .lines()
        .find_map(|l| l.strip_prefix("error: "))
        .and_then(|l| l.split("; cleanup: ").next())
        .unwrap_or("");
    assert!(
        cause.contains("did not answer"),
        "the original cause is lost: {err}"
    );
    assert!(
        err.contains(&format!("could not remove container {name}")),
        "{err}"
    );
    assert!(err.contains("injected rm failure"), "{err}");
    assert!(
        err.contains(&format!("remove it with: docker rm -f -v {name}")),
        "{err}"
    );
    assert!(!err.contains("nothing of this run is left"), "{err}");
    assert!(!managed::containers_named(&docker, &name).is_empty());

    // An interrupted deploy says the same, in its JSON too.
    let name = support::unique_name("fp-int-rmfail");
    let _guard2 = ContainerGuard::new(&name);
    let (child, _folder, _tmp) =
        secret_deploy(&wrapper, &name, &["--env", "STAND_IN_START_DELAY_MS=20000"]);
    let mut child = managed::KillOnDrop(child);
    assert!(
        managed::eventually(30, || managed::logged_calls(&log)
            .iter()
            .any(|c| c.starts_with("start ") && c.contains(&name))),
        "the deploy never started its container"
    );
    signal(child.0.id(), "TERM");
    let status = managed::wait_exit(&mut child.0, 60);
    assert_eq!(status.code(), Some(130));
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.0.stdout.take().unwrap(), &mut stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let left = &v["cleanup"]["left"][0];
    assert_eq!(left["what"], format!("container {name}"), "{v}");
    assert_eq!(
        left["remove_with"],
        format!("docker rm -f -v {name}"),
        "{v}"
    );
    assert!(
        left["error"]
            .as_str()
            .unwrap()
            .contains("injected rm failure"),
        "{v}"
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn a_second_signal_stops_waiting_for_a_hanging_rm() {
    let Some(docker) = support::docker() else {
        return;
    };
    support::pull_stand_in(&docker);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let wrapper = managed::docker_wrapper(
        dir.path(),
        &docker,
        &log,
        "if [ \"$1\" = rm ]; then exec sleep 25; fi",
    );
    let name = support::unique_name("fp-int-rmhang");
    let _guard = ContainerGuard::new(&name);
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("hello.md"), "# Hi\n").unwrap();
    let image = support::stand_in_image();
    let mut args = managed::deploy_argv(folder.path(), &name, &image);
    args.extend(["--env", "STAND_IN_START_DELAY_MS=20000", "--timeout", "30"]);
    let child = managed::command(&wrapper, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = managed::KillOnDrop(child);
    assert!(
        managed::eventually(30, || managed::logged_calls(&log)
            .iter()
            .any(|c| c.starts_with("start "))),
        "the deploy never started its container"
    );
    signal(child.0.id(), "INT");
    assert!(
        managed::eventually(20, || managed::logged_calls(&log)
            .iter()
            .any(|c| c.starts_with("rm "))),
        "the interrupt never tried to remove the container"
    );
    let t = std::time::Instant::now();
    signal(child.0.id(), "TERM");
    // Promptly: the hanging rm would take 25 s (and the old handler waited 30 s).
    let status = managed::wait_exit(&mut child.0, 10);
    let waited = t.elapsed();
    assert_eq!(status.code(), Some(130));
    assert!(waited < std::time::Duration::from_secs(10), "{waited:?}");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("interrupted again: stopped waiting"), "{err}");
    assert!(
        err.contains(&format!("left behind: container {name}")),
        "{err}"
    );
    assert!(
        err.contains(&format!("remove it with: docker rm -f -v {name}")),
        "{err}"
    );
    assert!(!managed::containers_named(&docker, &name).is_empty());
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn an_interrupt_after_the_parent_closed_our_pipes_still_ends_the_process() {
    let Some(docker) = support::docker() else {
        return;
    };
    let image = support::pull_stand_in(&docker);
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("hello.md"), "# hi\n").unwrap();
    let name = support::unique_name("fp-int-pipes");
    let _g = ContainerGuard::new(&name);
    let mut args = managed::deploy_argv(folder.path(), &name, &image);
    args.extend(["--env", "STAND_IN_START_DELAY_MS=20000", "--timeout", "60"]);
    let mut child = managed::command(&docker, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_handler(child.id());
    assert!(managed::eventually(30, || managed::state(&docker, &name).is_some()));
    // The reader of both streams goes away (as a killed parent's pipes do).
    drop(child.stdout.take());
    drop(child.stderr.take());
    signal(child.id(), "TERM");
    let status = managed::wait_exit(&mut child, 60);
    assert_eq!(status.code(), Some(130));
    assert!(managed::eventually(10, || managed::state(&docker, &name).is_none()));
}
