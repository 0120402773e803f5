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

/// A local image: the stand-in with `env` (`K=V`) baked in, for doctor's throwaway container
/// (which gets no environment of ours). Removed when dropped.
struct SwitchedImage {
    docker: std::path::PathBuf,
    tag: String,
}

impl SwitchedImage {
    fn new(docker: &std::path::Path, prefix: &str, env: &str) -> Self {
        let base = support::pull_stand_in(docker);
        let name = support::unique_name(prefix);
        let _g = support::ContainerGuard::new(&name);
        support::docker_ok(docker, &["create", "--name", &name, &base]);
        let tag = format!("fractalic-{name}:latest-production");
        let change = format!("ENV {env}");
        support::docker_ok(docker, &["commit", "--change", &change, &name, &tag]);
        SwitchedImage {
            docker: docker.to_path_buf(),
            tag,
        }
    }
}

impl Drop for SwitchedImage {
    fn drop(&mut self) {
        let _ = support::run_docker(&self.docker, &["rmi", "-f", &self.tag]);
    }
}

/// Runs doctor on `image`, expects it to fail at "/health answers" (index 5) or "MCP manager
/// answers" (6), the checks before passing, those after skipped, and nothing left behind;
/// returns the failed check's index and detail.
fn doctor_fails_after_the_start(docker: &std::path::Path, image: &str) -> (usize, String) {
    let o = publisher(docker, &["doctor", "--image", image, "--json"]);
    assert_code(&o, 1);
    let v = json(&o);
    let got = outcomes(&v);
    let failed = got
        .iter()
        .position(|o| o == "fail")
        .expect("a failed check");
    assert!(failed == 5 || failed == 6, "{v:#}");
    let mut want = vec!["pass"; 8];
    want[failed] = "fail";
    for w in want.iter_mut().take(7).skip(failed + 1) {
        *w = "skip";
    }
    assert_eq!(got, want, "{v:#}");
    let throwaway = v["checks"][4]["detail"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(managed::state(docker, &throwaway), None, "left behind");
    (
        failed,
        v["checks"][failed]["detail"].as_str().unwrap().to_string(),
    )
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn doctor_names_a_crash_looping_service_and_its_cause() {
    let Some(docker) = support::docker() else {
        return;
    };
    let image = SwitchedImage::new(&docker, "fp-doctor-crash", "STAND_IN_CRASHLOOP=mcp_manager");
    let (failed, detail) = doctor_fails_after_the_start(&docker, &image.tag);
    assert_eq!(failed, 6, "the AI server answers: {detail}");
    assert!(
        detail.contains("mcp_manager (the MCP manager) keeps crashing inside container"),
        "{detail}"
    );
    assert!(
        detail.contains("last line of /tmp/mcp_manager_error.log: ")
            && detail.contains("Failed to start server: [Errno 99]"),
        "{detail}"
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn doctor_fails_a_container_that_dies_after_its_services_answered() {
    let Some(docker) = support::docker() else {
        return;
    };
    let image = SwitchedImage::new(&docker, "fp-doctor-dies", "STAND_IN_EXIT_AFTER_MS=300");
    // Usually after /health answered (step 6); on a slow host it may die before (step 5).
    let (_, detail) = doctor_fails_after_the_start(&docker, &image.tag);
    assert!(detail.contains("exited with code 3"), "{detail}");
    assert!(
        detail.contains("stand-in: STAND_IN_EXIT_AFTER_MS=300 elapsed"),
        "{detail}"
    );
}
