//! Ctrl-C (SIGINT) during a deploy, a doctor run or a start leaves no half-made container.

use crate::managed::{self, assert_code, deploy, publisher};
use crate::support::{self, ContainerGuard};
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
