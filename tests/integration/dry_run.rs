//! `deploy --dry-run` (CLI) and `dry_run: true` (REST): the plan comes from the deploy's own
//! code and nothing changes: no container, no release, no lock, no journal, no pulled image.

use crate::managed::{self, assert_code, json};
use crate::serve;
use crate::support;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Output;

const SCRIPT: &str = "# Demo {id=d}\n\n@shell\nprompt: echo v1\n";

/// A dry run with its own state and cache directories, so what it leaves there is seen.
struct Dry {
    state: tempfile::TempDir,
    cache: tempfile::TempDir,
}

impl Dry {
    fn new() -> Dry {
        Dry {
            state: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, docker: &Path, args: &[&str]) -> Output {
        managed::command(docker, args)
            .env("FRACTALIC_STATE_DIR", self.state.path())
            .env("XDG_CACHE_HOME", self.cache.path())
            .output()
            .unwrap()
    }

    /// Files the run left in the state and cache directories: journals and lock files.
    fn left(&self) -> Vec<PathBuf> {
        let mut v = Vec::new();
        for d in [
            self.state.path().join("journals"),
            self.cache.path().join("fractalic-publisher/locks"),
        ] {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                v.push(e.path());
            }
        }
        v
    }
}

fn containers_named(docker: &Path, name: &str) -> Vec<String> {
    let filter = format!("name=^{name}");
    let o = support::run_docker(
        docker,
        &["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"],
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn remove_all(docker: &Path, name: &str) {
    for c in containers_named(docker, name) {
        support::run_docker(docker, &["rm", "-f", "-v", &c]);
    }
}

fn history_len(docker: &Path, name: &str) -> usize {
    let o = managed::publisher(docker, &["history", name, "--json"]);
    assert_code(&o, 0);
    json(&o)["releases"].as_array().map_or(0, Vec::len)
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn the_plan_of_a_create_and_of_each_update_kind_changes_nothing() {
    let Some(docker) = support::docker() else {
        return;
    };
    let image = support::pull_stand_in(&docker);
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("hello.md"), SCRIPT).unwrap();
    let name = support::unique_name("fp-dry");
    let argv = |extra: &[&'static str]| -> Vec<String> {
        let mut a: Vec<String> = managed::deploy_argv(folder.path(), &name, &image)
            .into_iter()
            .map(str::to_string)
            .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let strs = |v: &[String]| v.iter().map(String::clone).collect::<Vec<_>>();
    let dry = Dry::new();

    // A create: the port it would use, the image, and where it stopped.
    let a = strs(&argv(&["--dry-run", "--json"]));
    let o = dry.run(&docker, &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_code(&o, 0);
    let plan = json(&o);
    assert_eq!(plan["dry_run"], true, "{plan}");
    assert_eq!(plan["action"], "create", "{plan}");
    let port = plan["port"]["port"].as_u64().expect("a port in the plan");
    assert!((8001..=65535).contains(&port), "{plan}");
    assert_eq!(plan["image"]["name"], image.as_str(), "{plan}");
    assert_eq!(plan["image"]["cached"], true, "{plan}");
    assert!(
        plan["stopped_before"]
            .as_str()
            .is_some_and(|s| s.contains(&name)),
        "{plan}"
    );
    assert!(containers_named(&docker, &name).is_empty(), "no container");
    assert!(
        dry.left().is_empty(),
        "no journal or lock: {:?}",
        dry.left()
    );

    // The same in text.
    let a = strs(&argv(&["--dry-run"]));
    let o = dry.run(&docker, &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_code(&o, 0);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.starts_with("Plan (dry run, nothing was changed): create"),
        "{text}"
    );
    // (The port may differ from the first plan's: parallel tests take ports meanwhile.)
    assert!(text.contains("  port:    8"), "{text}");

    // Deployed for real, then: a changed script is an in-place update ...
    let a = strs(&argv(&["--json"]));
    let o = managed::publisher(&docker, &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_code(&o, 0);
    let releases = history_len(&docker, &name);
    std::fs::write(folder.path().join("hello.md"), SCRIPT.replace("v1", "v2")).unwrap();
    let a = strs(&argv(&["--dry-run", "--json"]));
    let o = dry.run(&docker, &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_code(&o, 0);
    let plan = json(&o);
    assert_eq!(plan["action"], "update", "{plan}");
    assert_eq!(plan["kind"], "in-place", "{plan}");
    let lines = plan["update"]["lines"].to_string();
    assert!(lines.contains("hello.md"), "{plan}");
    // ... an environment change needs a new container, and says why.
    let a = strs(&argv(&["--dry-run", "--json", "--env", "GEN=two"]));
    let o = dry.run(&docker, &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_code(&o, 0);
    let plan = json(&o);
    assert_eq!(plan["kind"], "container", "{plan}");
    assert!(
        plan["update"]["reasons"]
            .to_string()
            .contains("environment"),
        "{plan}"
    );
    assert!(
        !o.stdout.windows(3).any(|w| w == b"two"),
        "no env value in the plan"
    );
    // Nothing of either happened: the old script is live, no new release, no extra container.
    let live = support::exec(&docker, &name, &["cat", "/payload/hello/hello.md"]);
    assert!(String::from_utf8_lossy(&live.stdout).contains("echo v1"));
    assert_eq!(history_len(&docker, &name), releases);
    assert_eq!(containers_named(&docker, &name), vec![name.clone()]);
    assert!(
        dry.left().is_empty(),
        "no journal or lock: {:?}",
        dry.left()
    );
    remove_all(&docker, &name);
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn an_image_that_is_not_cached_is_looked_up_not_pulled_and_the_plan_says_so() {
    let Some(docker) = support::docker() else {
        return;
    };
    support::pull_stand_in(&docker);
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("hello.md"), SCRIPT).unwrap();
    let name = support::unique_name("fp-dry-img");
    // A tag the local registry has (so a real deploy could pull it) but the engine has not.
    let tag = format!(
        "127.0.0.1:5000/fractalic-stand-in:dry-{}",
        std::process::id()
    );
    let base = support::stand_in_image();
    support::docker_ok(&docker, &["tag", &base, &tag]);
    support::docker_ok(&docker, &["push", "-q", &tag]);
    support::docker_ok(&docker, &["rmi", &tag]);
    let dry = Dry::new();
    let mut a = managed::deploy_argv(folder.path(), &name, &tag);
    a.extend(["--dry-run", "--json"]);
    let o = dry.run(&docker, &a);
    assert_code(&o, 0);
    let plan = json(&o);
    assert_eq!(plan["image"]["cached"], false, "{plan}");
    assert_eq!(plan["image"]["digest_known"], false, "{plan}");
    assert!(
        plan["image"]["note"]
            .as_str()
            .is_some_and(|n| n.contains("would pull")),
        "{plan}"
    );
    let still = support::run_docker(&docker, &["image", "inspect", &tag]);
    assert!(!still.status.success(), "the dry run pulled {tag}");
    assert!(containers_named(&docker, &name).is_empty());
    // --pull never with no cached image is the same error as the real deploy's.
    let mut a = managed::deploy_argv(folder.path(), &name, &tag);
    a.retain(|x| *x != "missing" && *x != "--pull");
    a.extend(["--dry-run", "--pull", "never"]);
    let o = dry.run(&docker, &a);
    assert_code(&o, 1);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--pull never"));
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn rest_dry_run_answers_the_plan_and_a_bad_value_is_a_400_naming_the_field() {
    let Some(docker) = support::docker() else {
        return;
    };
    let image = support::pull_stand_in(&docker);
    let s = serve::Served::start(&docker, &[]);
    std::fs::create_dir_all(s.root.path().join("f")).unwrap();
    std::fs::write(s.root.path().join("f/hello.md"), SCRIPT).unwrap();
    let name = support::unique_name("fp-dry-rest");
    let url = format!("{}/api/deploy/docker-registry", s.url);
    let post = |b: Value| {
        serve::call(
            serve::agent()
                .post(&url)
                .set("Content-Type", "application/json"),
            Some(&b),
        )
    };
    let body = json!({"script_name": "hello", "script_folder": "f", "container_name": name,
        "image_name": image, "pull": "missing", "dry_run": true});
    let (code, text) = post(body.clone());
    assert_eq!(code, 200, "{text}");
    let plan: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(plan["action"], "create", "{plan}");
    assert!(plan["port"]["port"].as_u64().is_some(), "{plan}");
    assert!(containers_named(&docker, &name).is_empty());
    let mut bad = body;
    bad["dry_run"] = json!("yes");
    let (code, text) = post(bad);
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("dry_run"), "{text}");
    assert!(containers_named(&docker, &name).is_empty());
}
