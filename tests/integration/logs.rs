//! `logs`: docker's output, one service's own log file, a stopped deployment's logs, and a
//! follow that runs until interrupted.

use crate::managed::{self, assert_code, deploy, out, publisher};
use crate::support;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn logs_show_the_container_output_and_honour_tail() {
    let Some(docker) = support::docker() else {
        return;
    };
    let d = deploy(&docker, "fp-logs", &[]);
    let o = publisher(&docker, &["logs", &d.name]);
    assert_code(&o, 0);
    let (text, _) = out(&o);
    assert!(text.contains("supervisord started"), "{text}");
    assert!(text.contains("spawned: 'mcp_manager'"), "{text}");

    let o = publisher(&docker, &["logs", &d.name, "--tail", "1"]);
    assert_code(&o, 0);
    let (text, err) = out(&o);
    assert_eq!((text + &err).lines().count(), 1);
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn service_logs_come_from_the_service_log_file() {
    let Some(docker) = support::docker() else {
        return;
    };
    let d = deploy(&docker, "fp-logs-svc", &[]);
    for (service, needle) in [
        ("ai_server", "GET /health"),
        ("mcp_manager", "127.0.0.1:5859"),
        ("backend", "127.0.0.1:8000"),
    ] {
        let o = publisher(&docker, &["logs", &d.name, "--service", service]);
        assert_code(&o, 0);
        let (text, _) = out(&o);
        assert!(text.contains(needle), "{service}: {text}");
    }
    let o = publisher(
        &docker,
        &["logs", &d.name, "--service", "ai_server", "-n", "2"],
    );
    assert_code(&o, 0);
    assert_eq!(out(&o).0.lines().count(), 2);
    let o = publisher(&docker, &["logs", &d.name, "--service", "frontend"]);
    assert_code(&o, 2);
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn logs_of_a_stopped_deployment() {
    let Some(docker) = support::docker() else {
        return;
    };
    let d = deploy(&docker, "fp-logs-stopped", &[]);
    assert_code(&publisher(&docker, &["stop", &d.name]), 0);
    assert_eq!(managed::state(&docker, &d.name).as_deref(), Some("exited"));
    let o = publisher(&docker, &["logs", &d.name]);
    assert_code(&o, 0);
    assert!(out(&o).0.contains("supervisord started"), "{}", out(&o).0);
    let o = publisher(&docker, &["logs", &d.name, "--service", "ai_server"]);
    assert_code(&o, 0);
    assert!(out(&o).0.contains("GET /health"), "{}", out(&o).0);
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn logs_of_a_name_that_is_not_ours_is_bad_input() {
    let Some(docker) = support::docker() else {
        return;
    };
    let (foreign, _g) = managed::foreign_container(&docker, "fp-logs-foreign");
    let o = publisher(&docker, &["logs", &foreign]);
    assert_code(&o, 2);
    assert!(out(&o).1.contains("not created by fractalic-publisher"));
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn follow_streams_until_interrupted() {
    let Some(docker) = support::docker() else {
        return;
    };
    let d = deploy(&docker, "fp-logs-follow", &[]);
    let mut child = managed::command(&docker, &["logs", &d.name, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kept open until the end: a closed pipe would end the follow (SIGPIPE), not the test.
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.contains("supervisord"), "{first}");
    // Still running: a follow has no deadline.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "follow ended by itself"
    );
    managed::sigint(child.id());
    let status = managed::wait_exit(&mut child, 10);
    assert_eq!(status.code(), Some(130));
    drop(reader);
}
