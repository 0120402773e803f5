//! `ps`: deployments in mixed states, found with exactly one docker call.

use crate::managed::{self, assert_code, deploy, json, out, publisher};
use crate::support;
use serde_json::Value;

fn entry<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn ps_lists_mixed_states_with_one_docker_call() {
    let Some(docker) = support::docker() else {
        return;
    };
    let up = deploy(&docker, "fp-ps-up", &[]);
    let down = deploy(&docker, "fp-ps-down", &[]);
    let up2 = deploy(&docker, "fp-ps-up2", &[]);
    assert_code(&publisher(&docker, &["stop", &down.name]), 0);
    let (foreign, _g) = managed::foreign_container(&docker, "fp-ps-foreign");

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let wrapper = support::counting_docker(dir.path(), &docker, &log);

    let o = publisher(&wrapper, &["ps", "--json"]);
    assert_code(&o, 0);
    let calls = managed::logged_calls(&log);
    // One `docker ps` for every container deployment, whatever their number; docker-swarm
    // lists its services itself (`service ls`, plus `service inspect` and `service ps` when it
    // has any).
    assert!(calls[0].starts_with("ps "), "{calls:?}");
    let rest: Vec<&String> = calls[1..].iter().collect();
    assert!(
        rest.iter().all(|c| c.starts_with("service ")) && rest.len() <= 3,
        "ps made more than one docker call per platform: {calls:?}"
    );
    let list = json(&o);
    assert!(list.is_array());
    for d in [&up, &up2] {
        let e = entry(&list, &d.name).unwrap_or_else(|| panic!("{} missing: {list}", d.name));
        assert_eq!(e["plugin"], "docker-registry");
        assert_eq!(e["script"], "hello");
        assert_eq!(e["state"], "running");
        assert_eq!(e["health"], "healthy");
        assert_eq!(e["url"].as_str(), Some(d.url.as_str()));
        assert!(e["age"].as_str().unwrap().ends_with('s'), "{e}");
    }
    assert!(
        entry(&list, &down.name).is_none(),
        "stopped one listed without --all"
    );
    assert!(
        entry(&list, &foreign).is_none(),
        "a container we did not create is listed"
    );

    std::fs::remove_file(&log).unwrap();
    let o = publisher(&wrapper, &["ps", "--all", "--json"]);
    assert_code(&o, 0);
    let calls = managed::logged_calls(&log);
    assert_eq!(
        calls.iter().filter(|c| !c.starts_with("service ")).count(),
        1,
        "{calls:?}"
    );
    let list = json(&o);
    let e = entry(&list, &down.name).expect("stopped deployment listed with --all");
    assert_eq!(e["state"], "exited");
    assert_eq!(e["health"], "-");
    assert!(entry(&list, &up.name).is_some());
    assert!(entry(&list, &foreign).is_none());
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn ps_prints_a_plain_table() {
    let Some(docker) = support::docker() else {
        return;
    };
    let d = deploy(&docker, "fp-ps-table", &[]);
    let o = publisher(&docker, &["ps"]);
    assert_code(&o, 0);
    let (stdout, _) = out(&o);
    let mut lines = stdout.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "PLUGIN", "SCRIPT", "STATE", "HEALTH", "URL", "AGE"]
    );
    let row = lines
        .find(|l| l.starts_with(&format!("{} ", d.name)))
        .unwrap_or_else(|| panic!("no row for {}:\n{stdout}", d.name));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cols[1..6],
        [
            "docker-registry",
            "hello",
            "running",
            "healthy",
            d.url.as_str()
        ]
    );
    assert!(!stdout.contains('\x1b'), "escape codes in plain output");
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn label_values_cannot_corrupt_ps() {
    let Some(docker) = support::docker() else {
        return;
    };
    // A deployment whose labels hold what a hostile file name could: tabs, a newline followed
    // by something shaped like a whole row, commas and '='.
    let name = support::unique_name("fp-ps-hostile");
    let _guard = support::ContainerGuard::new(&name);
    let ghost = support::unique_name("fp-ps-ghost");
    let script = format!("x\ty\nid\t{ghost}\trunning\tUp\timg\tt\t\ttrue\tdocker-registry,k=v");
    let labels = [
        "fractalic-publisher.managed=true".to_string(),
        "fractalic-publisher.plugin=docker-registry".to_string(),
        "fractalic-publisher.created=2026-11-27T00:00:00Z".to_string(),
        format!("fractalic-publisher.script={script}"),
        format!("fractalic-publisher.script-path=/payload/x/{script}"),
        "fractalic-publisher.port=8123".to_string(),
        "fractalic-publisher.bind=127.0.0.1".to_string(),
    ];
    let mut args = vec!["create".to_string(), "--name".into(), name.clone()];
    for l in &labels {
        args.extend(["--label".into(), l.clone()]);
    }
    args.push(support::stand_in_image());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    support::docker_ok(&docker, &argv);

    let o = publisher(&docker, &["ps", "--all", "--json"]);
    assert_code(&o, 0);
    let list = json(&o);
    let e = entry(&list, &name).unwrap_or_else(|| panic!("{name} missing: {list}"));
    assert_eq!(e["port"], "8123", "{e}");
    assert_eq!(e["url"], "http://localhost:8123", "{e}");
    assert_eq!(e["script"].as_str(), Some(script.as_str()), "{e}");
    assert_eq!(e["state"], "created", "{e}");
    assert!(entry(&list, &ghost).is_none(), "a ghost row: {list}");

    // The table stays one row per deployment.
    let o = publisher(&docker, &["ps", "--all"]);
    assert_code(&o, 0);
    let (table, _) = out(&o);
    let rows: Vec<&str> = table.lines().filter(|l| l.contains(&name)).collect();
    assert_eq!(rows.len(), 1, "{table}");
    assert!(rows[0].contains("http://localhost:8123"), "{table}");
    // The ghost appears only escaped inside the SCRIPT cell, never as a row of its own.
    assert!(!table.lines().any(|l| l.starts_with(&ghost)), "{table}");
    assert!(rows[0].contains("x\\ty\\nid\\t"), "{table}");
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn ps_into_a_closed_pipe_ends_quietly() {
    let Some(docker) = support::docker() else {
        return;
    };
    let mut child = managed::command(&docker, &["ps", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before ps has written anything (as `| head -0` would).
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let (_, stderr) = out(&o);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(o.status.code(), Some(0), "{stderr}");
}
