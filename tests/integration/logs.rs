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
    // -n applies to each of the service's files (three requests: the request log has more).
    for _ in 0..3 {
        ureq::get(&format!("{}/health", d.url)).call().unwrap();
    }
    let o = publisher(
        &docker,
        &["logs", &d.name, "--service", "ai_server", "-n", "2"],
    );
    assert_code(&o, 0);
    let text = out(&o).0;
    let sections = sections(&text);
    assert_eq!(sections.len(), 2, "{text}");
    for (file, lines) in &sections {
        assert_eq!(lines.len(), 2, "{file}: {text}");
    }
    let o = publisher(&docker, &["logs", &d.name, "--service", "frontend"]);
    assert_code(&o, 2);
}

/// Splits `logs --service` output into (file, lines) by its `==> FILE <==` headers, checking
/// the layout `tail` uses: a header on a line of its own, one blank line before each header
/// but the first, no blank lines inside a section.
fn sections(text: &str) -> Vec<(String, Vec<String>)> {
    assert!(!text.contains("\\n"), "a literal \\n: {text:?}");
    assert!(text.ends_with('\n'), "{text:?}");
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some(file) = line
            .strip_prefix("==> ")
            .and_then(|l| l.strip_suffix(" <=="))
        {
            if i > 0 {
                assert_eq!(lines[i - 1], "", "no blank line before {file}: {text:?}");
            }
            out.push((file.to_string(), Vec::new()));
        } else if line.is_empty() {
            assert!(
                lines.get(i + 1).is_some_and(|n| n.starts_with("==> ")),
                "a blank line inside a section: {text:?}"
            );
        } else {
            assert!(line.find("==>").is_none(), "a header ran on: {text:?}");
            out.last_mut()
                .unwrap_or_else(|| panic!("text before the first header: {text:?}"))
                .1
                .push(line.to_string());
        }
    }
    out
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn service_logs_show_both_files_under_headers() {
    let Some(docker) = support::docker() else {
        return;
    };
    let d = deploy(&docker, "fp-logs-headers", &[]);
    for (service, port) in [
        ("ai_server", 8001),
        ("mcp_manager", 5859),
        ("backend", 8000),
    ] {
        let o = publisher(&docker, &["logs", &d.name, "--service", service]);
        assert_code(&o, 0);
        let text = out(&o).0;
        let s = sections(&text);
        let files: Vec<&str> = s.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            files,
            [
                format!("/tmp/{service}.log"),
                format!("/tmp/{service}_error.log")
            ],
            "{text}"
        );
        // uvicorn's start-up lines are in the error file, as in the real image.
        assert!(
            s[1].1.iter().any(
                |l| l.contains("Uvicorn running on http://") && l.contains(&format!(":{port}"))
            ),
            "{text}"
        );
    }

    // A file without a final newline: the next header still starts a line of its own.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backend.log");
    std::fs::write(&file, "first\nlast line without a newline").unwrap();
    let dest = format!("{}:/tmp/backend.log", d.name);
    support::docker_ok(&docker, &["cp", file.to_str().unwrap(), &dest]);
    let o = publisher(&docker, &["logs", &d.name, "--service", "backend"]);
    assert_code(&o, 0);
    let text = out(&o).0;
    let s = sections(&text);
    assert_eq!(s[0].1, ["first", "last line without a newline"], "{text}");
    assert_eq!(s[1].0, "/tmp/backend_error.log", "{text}");
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
