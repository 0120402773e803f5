//! Readiness proves a container stably up: one that dies and is brought back by its restart
//! policy, at any moment of the readiness wait, fails the deploy with its exit code and last log
//! lines, and so does a service that keeps crashing under supervisord (named, with its cause).
//! Each failure leaves nothing behind. (`start` and `doctor`: lifecycle.rs and doctor.rs.)

use crate::managed::{self, assert_code, deploy_argv, out, publisher};
use crate::support::{self, ContainerGuard};
use std::path::Path;

/// Deploys the stand-in with `extra` flags and expects exit 1 with the container removed;
/// returns stderr.
fn failing_deploy(docker: &Path, prefix: &str, extra: &[&str]) -> String {
    let name = support::unique_name(prefix);
    let _guard = ContainerGuard::new(&name);
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("hello.md"), "# Hello {id=hello}\nhi\n").unwrap();
    let image = support::stand_in_image();
    let mut args = deploy_argv(folder.path(), &name, &image);
    args.extend_from_slice(extra);
    let o = publisher(docker, &args);
    assert_code(&o, 1);
    let (_, err) = out(&o);
    assert!(err.contains(&format!("removed container {name}")), "{err}");
    assert_eq!(managed::state(docker, &name), None, "left behind: {name}");
    err
}

/// The stand-in exits with code 3 after `ms`; `unless-stopped` brings it back each time.
fn dies_after(ms: u32) {
    let Some(docker) = support::docker() else {
        return;
    };
    let switch = format!("STAND_IN_EXIT_AFTER_MS={ms}");
    // A timeout far longer than the test may take: the death, not the deadline, ends the wait.
    let err = failing_deploy(
        &docker,
        &format!("fp-ready-exit{ms}"),
        &["--env", &switch, "--timeout", "60"],
    );
    assert!(err.contains("exited with code 3"), "{err}");
    assert!(err.contains("its last log lines:"), "{err}");
    assert!(
        err.contains(&format!("stand-in: {switch} elapsed, exiting with code 3")),
        "{err}"
    );
    assert!(!err.contains("did not answer"), "blamed a service: {err}");
}

#[test]
fn container_dying_after_10ms_fails_the_deploy() {
    dies_after(10);
}

#[test]
fn container_dying_after_50ms_fails_the_deploy() {
    dies_after(50);
}

#[test]
fn container_dying_after_300ms_after_its_services_answered_fails_the_deploy() {
    dies_after(300);
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn crash_looping_mcp_manager_fails_the_deploy_naming_it_and_its_cause() {
    let Some(docker) = support::docker() else {
        return;
    };
    let err = failing_deploy(
        &docker,
        "fp-ready-crashloop",
        &["--env", "STAND_IN_CRASHLOOP=mcp_manager", "--timeout", "60"],
    );
    assert!(
        err.contains("mcp_manager (the MCP manager) keeps crashing inside container"),
        "{err}"
    );
    assert!(
        err.contains("supervisord saw it exit unexpectedly"),
        "{err}"
    );
    // The last non-empty line of its error log (the stand-in ends it with a blank line).
    assert!(
        err.contains("last line of /tmp/mcp_manager_error.log: ")
            && err.contains("Failed to start server: [Errno 99] error while attempting to bind on address ('::1', 5859, 0, 0): cannot assign requested address"),
        "{err}"
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn crash_looping_ai_server_fails_the_deploy_before_the_timeout() {
    let Some(docker) = support::docker() else {
        return;
    };
    let err = failing_deploy(
        &docker,
        "fp-ready-crashloop-ai",
        &["--env", "STAND_IN_CRASHLOOP=ai_server", "--timeout", "60"],
    );
    assert!(
        err.contains("ai_server (the AI server) keeps crashing"),
        "{err}"
    );
    assert!(err.contains("('::1', 8001, 0, 0)"), "{err}");
    assert!(!err.contains("did not answer 2xx"), "{err}");
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn a_healthy_deploy_is_still_healthy_and_running_afterwards() {
    let Some(docker) = support::docker() else {
        return;
    };
    let d = managed::deploy(&docker, "fp-ready-ok", &[]);
    let count = support::docker_ok(
        &docker,
        &[
            "inspect",
            "-f",
            "{{.RestartCount}} {{.State.Status}}",
            &d.name,
        ],
    );
    assert_eq!(count.trim(), "0 running");
}
