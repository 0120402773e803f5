//! `status`: live health, URL, image, digest, port and script of one deployment; exit 2 for a
//! name that is not ours.

use crate::managed::{self, assert_code, deploy, json, out, publisher};
use crate::support;

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn status_reports_live_health_and_what_was_deployed() {
    let Some(docker) = support::docker() else {
        return;
    };
    let d = deploy(&docker, "fp-status", &[]);
    let o = publisher(&docker, &["status", &d.name, "--json"]);
    assert_code(&o, 0);
    let v = json(&o);
    assert_eq!(v["name"], d.name.as_str());
    assert_eq!(v["plugin"], "docker-registry");
    assert_eq!(v["state"], "running");
    assert_eq!(v["healthy"], true);
    assert!(
        v["health"]["ai_server"]
            .as_str()
            .unwrap()
            .starts_with("healthy"),
        "{v}"
    );
    assert_eq!(v["health"]["mcp_manager"], "running");
    assert_eq!(v["url"].as_str(), Some(d.url.as_str()));
    assert_eq!(v["image"], support::stand_in_image().as_str());
    assert!(
        v["image_digest"].as_str().unwrap().starts_with("sha256:"),
        "{v}"
    );
    assert!(v["created"].as_str().unwrap().ends_with('Z'), "{v}");
    assert_eq!(v["restart_count"], 0);
    let port = v["port"].as_u64().unwrap();
    assert!(d.url.ends_with(&format!(":{port}")), "{v}");
    assert_eq!(v["bind"], "127.0.0.1");
    assert_eq!(v["script_path"], "/payload/hello/hello.md");

    let o = publisher(&docker, &["status", &d.name]);
    assert_code(&o, 0);
    let (text, _) = out(&o);
    for line in [
        format!("Name:        {}", d.name),
        "State:       running".to_string(),
        format!("URL:         {}", d.url),
        "Script path: /payload/hello/hello.md".to_string(),
    ] {
        assert!(text.contains(&line), "missing {line:?} in:\n{text}");
    }
    assert!(text.contains("Health:      ai_server healthy"), "{text}");
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn status_of_a_stopped_deployment_says_so() {
    let Some(docker) = support::docker() else {
        return;
    };
    let d = deploy(&docker, "fp-status-stopped", &[]);
    assert_code(&publisher(&docker, &["stop", &d.name]), 0);
    let o = publisher(&docker, &["status", &d.name, "--json"]);
    assert_code(&o, 0);
    let v = json(&o);
    assert_eq!(v["state"], "exited (code 0)");
    assert_eq!(v["healthy"], false);
    assert_eq!(v["health"]["ai_server"], "stopped");
    assert_eq!(v["url"].as_str(), Some(d.url.as_str()));
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn unknown_and_foreign_names_are_bad_input_pointing_at_ps() {
    let Some(docker) = support::docker() else {
        return;
    };
    let missing = support::unique_name("fp-status-none");
    let o = publisher(&docker, &["status", &missing]);
    assert_code(&o, 2);
    let (_, err) = out(&o);
    assert!(
        err.contains(&format!("no deployment named \"{missing}\"")),
        "{err}"
    );
    assert!(err.contains("fractalic-publisher ps"), "{err}");

    let (foreign, _g) = managed::foreign_container(&docker, "fp-status-foreign");
    let o = publisher(&docker, &["status", &foreign, "--json"]);
    assert_code(&o, 2);
    let v = json(&o);
    assert_eq!(v["error_kind"], "bad_input");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("was not created by fractalic-publisher"),
        "{msg}"
    );
    assert!(msg.contains("fractalic-publisher ps"), "{msg}");

    let o = publisher(&docker, &["status", "bad/name"]);
    assert_code(&o, 2);
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn a_managed_container_with_missing_or_bad_labels_gets_clear_answers() {
    let Some(docker) = support::docker() else {
        return;
    };
    let image = support::pull_stand_in(&docker);
    for (i, port) in ["", "abc", "99999\"}"].iter().enumerate() {
        let name = support::unique_name(&format!("fp-status-ghost{i}"));
        let _g = support::ContainerGuard::new(&name);
        let mut args = vec![
            "create".to_string(),
            "--name".into(),
            name.clone(),
            "--label".into(),
            "fractalic-publisher.managed=true".into(),
            "--label".into(),
            "fractalic-publisher.plugin=docker-registry".into(),
        ];
        if !port.is_empty() {
            args.extend(["--label".into(), format!("fractalic-publisher.port={port}")]);
        }
        args.push(image.clone());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        support::docker_ok(&docker, &argv);
        let o = publisher(&docker, &["status", &name, "--json"]);
        assert_code(&o, 0);
        let v = json(&o);
        assert_eq!(v["url"], "", "{v}");
        assert!(v["port"].is_null(), "{v}");
        let o = publisher(&docker, &["start", &name]);
        assert_code(&o, 1);
        let err = out(&o).1;
        assert!(
            err.contains("has no usable fractalic-publisher.port label"),
            "{err}"
        );
        assert!(!err.contains("Function not found"), "{err}");
        let o = publisher(&docker, &["ps", "--all", "--json"]);
        assert_code(&o, 0);
    }
}
