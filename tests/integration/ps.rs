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
