//! `doctor`: every check passes against the stand-in; an unreachable daemon, a missing image
//! and a missing docker binary each fail at the right step with a hint. Nothing is left behind.

use crate::managed::{self, assert_code, json, out, publisher};
use crate::support;
use serde_json::Value;

fn outcomes(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["outcome"].as_str().unwrap().to_string())
        .collect()
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn doctor_passes_against_the_stand_in_and_cleans_up() {
    let Some(docker) = support::docker() else {
        return;
    };
    let image = support::stand_in_image();
    let o = publisher(&docker, &["doctor", "--image", &image, "--json"]);
    assert_code(&o, 0);
    let v = json(&o);
    assert_eq!(v["ok"], true);
    assert_eq!(v["image"], image.as_str());
    assert_eq!(outcomes(&v), vec!["pass"; 8], "{v:#}");
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "docker binary found",
            "daemon reachable",
            "image pullable or cached",
            "free port from 8001",
            "throwaway container starts",
            "/health answers",
            "MCP manager answers",
            "cleanup done",
        ]
    );
    let throwaway = v["checks"][4]["detail"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert!(throwaway.starts_with("fractalic-doctor-"), "{v:#}");
    assert_eq!(managed::state(&docker, &throwaway), None, "left behind");

    let o = publisher(&docker, &["doctor", "--image", &image]);
    assert_code(&o, 0);
    let (text, _) = out(&o);
    assert_eq!(text.matches("[ ok ]").count(), 8, "{text}");
    assert!(text.contains("All checks passed"), "{text}");
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn doctor_with_an_unreachable_daemon_says_so_with_a_hint() {
    let Some(docker) = support::docker() else {
        return;
    };
    let o = managed::command(&docker, &["doctor", "--image", &support::stand_in_image()])
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .output()
        .unwrap();
    assert_code(&o, 1);
    let (text, _) = out(&o);
    assert!(text.contains("[ ok ] docker binary found"), "{text}");
    assert!(text.contains("[FAIL] daemon reachable"), "{text}");
    assert!(
        text.contains(
            "hint: the docker CLI cannot reach a daemon at DOCKER_HOST=unix:///nonexistent.sock"
        ),
        "{text}"
    );
    assert_eq!(text.matches("[skip]").count(), 6, "{text}");

    let o = managed::command(&docker, &["doctor", "--json"])
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .output()
        .unwrap();
    assert_code(&o, 1);
    let v = json(&o);
    assert_eq!(v["ok"], false);
    assert_eq!(outcomes(&v)[..3], ["pass", "fail", "skip"]);
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn doctor_with_a_missing_image_fails_at_the_image_step() {
    let Some(docker) = support::docker() else {
        return;
    };
    let image = format!(
        "127.0.0.1:5000/{}:latest-production",
        support::unique_name("fp-no-such-image")
    );
    let o = publisher(&docker, &["doctor", "--image", &image, "--json"]);
    assert_code(&o, 1);
    let v = json(&o);
    assert_eq!(
        outcomes(&v),
        ["pass", "pass", "fail", "skip", "skip", "skip", "skip", "skip"]
    );
    let hint = v["checks"][2]["hint"].as_str().unwrap();
    assert!(hint.contains(&format!("docker pull {image}")), "{hint}");
}

#[test]
fn doctor_without_a_docker_binary_fails_at_the_first_step() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_fractalic-publisher"))
        .args(["--docker", "/nonexistent/docker", "doctor"])
        .output()
        .unwrap();
    assert_code(&o, 1);
    let (text, _) = out(&o);
    assert!(text.contains("[FAIL] docker binary found"), "{text}");
    assert!(text.contains("hint: install Docker"), "{text}");
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn doctor_retries_when_its_port_is_taken_before_the_container_starts() {
    let Some(docker) = support::docker() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let clashing = support::port_clash_once_docker(dir.path(), &docker);
    let image = support::stand_in_image();
    let o = publisher(&clashing, &["doctor", "--image", &image, "--json"]);
    assert_code(&o, 0);
    assert!(
        dir.path().join("clashed").exists(),
        "the clash was never simulated"
    );
    let v = json(&o);
    assert_eq!(outcomes(&v), vec!["pass"; 8], "{v:#}");
    let chosen: u16 = v["checks"][3]["detail"]
        .as_str()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let started = v["checks"][4]["detail"].as_str().unwrap();
    assert!(
        !started.ends_with(&format!("127.0.0.1:{chosen}")),
        "it should have moved past port {chosen}: {started}"
    );
}
