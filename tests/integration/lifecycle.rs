//! `stop`, `start` and `rm`: a deployment stopped and brought back healthy, a start that does
//! not become healthy, and `rm` refusing what it must not remove.

use crate::managed::{self, assert_code, deploy, json, out, publisher};
use crate::support;

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn stop_then_start_waits_until_healthy() {
    let Some(docker) = support::docker() else {
        return;
    };
    let d = deploy(&docker, "fp-life", &[]);
    let o = publisher(&docker, &["stop", &d.name]);
    assert_code(&o, 0);
    assert_eq!(out(&o).0, format!("Stopped {}.\n", d.name));
    assert_eq!(managed::state(&docker, &d.name).as_deref(), Some("exited"));
    assert!(ureq::get(&format!("{}/health", d.url)).call().is_err());

    let o = publisher(&docker, &["start", &d.name, "--json"]);
    assert_code(&o, 0);
    let v = json(&o);
    assert_eq!(v["state"], "running");
    assert_eq!(v["url"].as_str(), Some(d.url.as_str()));
    assert_eq!(v["services"]["mcp_manager"], "healthy");
    let r = ureq::get(&format!("{}/health", d.url)).call().unwrap();
    assert_eq!(r.status(), 200);

    // Starting a running deployment only checks it.
    let o = publisher(&docker, &["start", &d.name]);
    assert_code(&o, 0);
    assert!(
        out(&o)
            .0
            .starts_with(&format!("Started {}: healthy", d.name)),
        "{}",
        out(&o).0
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn start_of_a_deployment_that_became_unhealthy_fails_explained_and_stays_stopped() {
    let Some(docker) = support::docker() else {
        return;
    };
    let d = deploy(&docker, "fp-life-sick", &[]);
    assert_code(&publisher(&docker, &["stop", &d.name]), 0);
    // The stand-in reads switches from this file at start: from now on /health answers 503.
    let dir = tempfile::tempdir().unwrap();
    let switch = dir.path().join("stand-in.env");
    std::fs::write(&switch, "STAND_IN_HEALTH=unhealthy\n").unwrap();
    let dest = format!("{}:/fractalic/stand-in.env", d.name);
    support::docker_ok(&docker, &["cp", switch.to_str().unwrap(), &dest]);

    let o = publisher(&docker, &["start", &d.name, "--timeout", "3"]);
    assert_code(&o, 1);
    let (_, err) = out(&o);
    assert!(
        err.contains(&format!("{}/health did not answer 2xx", d.url)),
        "{err}"
    );
    assert!(err.contains("503"), "{err}");
    assert!(err.contains("was stopped again, as it was before"), "{err}");
    assert!(
        err.contains(&format!("fractalic-publisher logs {}", d.name)),
        "{err}"
    );
    assert_eq!(managed::state(&docker, &d.name).as_deref(), Some("exited"));

    let o = publisher(&docker, &["start", &d.name, "--timeout", "2", "--json"]);
    assert_code(&o, 1);
    let v = json(&o);
    assert_eq!(v["success"], false);
    assert_eq!(v["exit_code"], 1);
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn rm_refuses_a_running_deployment_without_force() {
    let Some(docker) = support::docker() else {
        return;
    };
    let d = deploy(&docker, "fp-rm", &[]);
    let o = publisher(&docker, &["rm", &d.name]);
    assert_code(&o, 2);
    let (_, err) = out(&o);
    assert!(err.contains("is running"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(managed::state(&docker, &d.name).as_deref(), Some("running"));

    let o = publisher(&docker, &["rm", "--force", &d.name, "--json"]);
    assert_code(&o, 0);
    assert_eq!(json(&o)["removed"][0], d.name.as_str());
    assert_eq!(managed::state(&docker, &d.name), None);
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn rm_removes_a_stopped_deployment() {
    let Some(docker) = support::docker() else {
        return;
    };
    let d = deploy(&docker, "fp-rm-stopped", &[]);
    assert_code(&publisher(&docker, &["stop", &d.name]), 0);
    let o = publisher(&docker, &["rm", &d.name]);
    assert_code(&o, 0);
    assert_eq!(out(&o).0, format!("Removed {}.\n", d.name));
    assert_eq!(managed::state(&docker, &d.name), None);
    // Gone means gone: now it is an unknown name.
    assert_code(&publisher(&docker, &["rm", &d.name]), 2);
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn rm_stop_and_start_refuse_a_container_the_tool_did_not_create() {
    let Some(docker) = support::docker() else {
        return;
    };
    let (foreign, _g) = managed::foreign_container(&docker, "fp-rm-foreign");
    for args in [
        vec!["rm", "--force", foreign.as_str()],
        vec!["stop", foreign.as_str()],
        vec!["start", foreign.as_str()],
    ] {
        let o = publisher(&docker, &args);
        assert_code(&o, 2);
        let (_, err) = out(&o);
        assert!(
            err.contains("was not created by fractalic-publisher"),
            "{args:?}: {err}"
        );
        assert!(err.contains("fractalic-publisher ps"), "{err}");
    }
    assert_eq!(
        managed::state(&docker, &foreign).as_deref(),
        Some("created")
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn stop_and_start_quiet_print_only_the_result() {
    let Some(docker) = support::docker() else {
        return;
    };
    let d = deploy(&docker, "fp-life-quiet", &[]);
    let o = publisher(&docker, &["stop", "--quiet", &d.name]);
    assert_code(&o, 0);
    assert_eq!(out(&o), (format!("Stopped {}.\n", d.name), String::new()));
    let o = publisher(&docker, &["start", "-q", &d.name]);
    assert_code(&o, 0);
    let (stdout, stderr) = out(&o);
    assert!(
        stdout.starts_with(&format!("Started {}: healthy", d.name)),
        "{stdout}"
    );
    assert_eq!(stderr, "", "progress printed despite --quiet");
    // Without --quiet, start reports progress (so the flag is what silenced it).
    let o = publisher(&docker, &["stop", &d.name]);
    assert_code(&o, 0);
    let o = publisher(&docker, &["start", &d.name]);
    assert_code(&o, 0);
    assert!(
        out(&o).1.contains("Waiting for the AI server"),
        "{}",
        out(&o).1
    );
}

/// Stops the deployment and gives the stand-in `switches` for its next start.
fn stop_and_switch(docker: &std::path::Path, name: &str, switches: &str) {
    assert_code(&publisher(docker, &["stop", name]), 0);
    let dir = tempfile::tempdir().unwrap();
    let switch = dir.path().join("stand-in.env");
    std::fs::write(&switch, switches).unwrap();
    let dest = format!("{name}:/fractalic/stand-in.env");
    support::docker_ok(docker, &["cp", switch.to_str().unwrap(), &dest]);
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn start_of_a_deployment_that_dies_and_is_restarted_fails_and_stays_stopped() {
    let Some(docker) = support::docker() else {
        return;
    };
    let d = deploy(&docker, "fp-life-dies", &[]);
    // It answers, then dies; its restart policy brings it back: not stably up.
    stop_and_switch(&docker, &d.name, "STAND_IN_EXIT_AFTER_MS=300\n");
    let o = publisher(&docker, &["start", &d.name, "--timeout", "60"]);
    assert_code(&o, 1);
    let (_, err) = out(&o);
    assert!(
        err.contains(&format!("container {} exited with code 3", d.name)),
        "{err}"
    );
    assert!(
        err.contains("stand-in: STAND_IN_EXIT_AFTER_MS=300 elapsed"),
        "{err}"
    );
    assert!(err.contains("was stopped again, as it was before"), "{err}");
    assert_eq!(managed::state(&docker, &d.name).as_deref(), Some("exited"));
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn start_with_a_crash_looping_service_fails_naming_it_and_a_fixed_one_starts_again() {
    let Some(docker) = support::docker() else {
        return;
    };
    let d = deploy(&docker, "fp-life-crashloop", &[]);
    stop_and_switch(&docker, &d.name, "STAND_IN_CRASHLOOP=mcp_manager\n");
    let o = publisher(&docker, &["start", &d.name, "--timeout", "60"]);
    assert_code(&o, 1);
    let (_, err) = out(&o);
    assert!(
        err.contains("mcp_manager (the MCP manager) keeps crashing"),
        "{err}"
    );
    assert!(
        err.contains("last line of /tmp/mcp_manager_error.log: ")
            && err.contains("Failed to start server: [Errno 99]"),
        "{err}"
    );
    assert!(err.contains("was stopped again, as it was before"), "{err}");
    assert_eq!(managed::state(&docker, &d.name).as_deref(), Some("exited"));

    // Fixed: the crashes of the earlier run stay in /tmp/supervisord.log, but only this run
    // counts.
    stop_and_switch(&docker, &d.name, "# fixed\n");
    let o = publisher(&docker, &["start", &d.name, "--json"]);
    assert_code(&o, 0);
    assert_eq!(json(&o)["services"]["mcp_manager"], "healthy");
    let log = support::exec(&docker, &d.name, &["cat", "/tmp/supervisord.log"]);
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(
        log.contains("exited: mcp_manager (exit status 1; not expected)"),
        "{log}"
    );
}
