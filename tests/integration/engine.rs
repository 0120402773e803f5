//! Remote engines: `--context NAME` reaches every docker call of every command. The context
//! here is the local socket under another name (in a private DOCKER_CONFIG), so the real
//! engine serves it; the engine-host logic for a truly remote engine (ports from the engine's
//! view, probes at its address) is unit-tested with a fake docker (src/plugin, src/engine.rs).

use crate::managed::{self, assert_code, json, out};
use crate::support::{self, ContainerGuard};
use std::path::Path;
use std::process::{Command, Output};

const HELLO: &str = "# Demo task {id=demo-task}\n\n@shell\nprompt: echo hello\nuse-header: \"# Out {id=out}\"\n\n@return\nblock: out\n";

/// A docker context named `name` on the local socket, in the private config dir `config`.
pub(crate) fn local_context(docker: &Path, config: &Path, name: &str) {
    let o = Command::new(docker)
        .env("DOCKER_CONFIG", config)
        .args([
            "context",
            "create",
            name,
            "--docker",
            "host=unix:///var/run/docker.sock",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn run(wrapper: &Path, config: &Path, ctx: &str, args: &[&str]) -> Output {
    managed::command(wrapper, &[&["--context", ctx], args].concat())
        .env("DOCKER_CONFIG", config)
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .output()
        .unwrap()
}

fn assert_all_on_context(log: &Path, ctx: &str) -> usize {
    let calls = managed::logged_calls(log);
    assert!(!calls.is_empty());
    let want = format!("--context {ctx} ");
    let stray: Vec<&String> = calls.iter().filter(|c| !c.starts_with(&want)).collect();
    assert!(stray.is_empty(), "calls without {want:?}: {stray:?}");
    std::fs::remove_file(log).unwrap();
    calls.len()
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn context_flag_reaches_every_docker_call_of_every_command() {
    let Some(docker) = support::docker() else {
        return;
    };
    let config = tempfile::tempdir().unwrap();
    let ctx = "fp-test-ctx";
    local_context(&docker, config.path(), ctx);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let wrapper = support::counting_docker(dir.path(), &docker, &log);

    let name = support::unique_name("fp-ctx");
    let _g = ContainerGuard::new(&name);
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("hello.md"), HELLO).unwrap();
    let image = support::stand_in_image();
    let mut args = managed::deploy_argv(folder.path(), &name, &image);
    args.push("--json");
    let o = run(&wrapper, config.path(), ctx, &args);
    assert_code(&o, 0);
    let url = json(&o)["url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with("http://localhost:"),
        "a local context: {url}"
    );
    let deploy_calls = assert_all_on_context(&log, ctx);
    assert!(deploy_calls >= 4, "{deploy_calls}");

    for (cmd, code) in [
        (vec!["ps", "--json"], 0),
        (vec!["status", &name, "--json"], 0),
        (vec!["logs", &name, "--tail", "5"], 0),
        (vec!["logs", &name, "--service", "ai_server"], 0),
        (vec!["stop", &name, "--json"], 0),
        (vec!["start", &name, "--json"], 0),
        (vec!["rm", &name], 2),
        (vec!["rm", "--force", &name, "--json"], 0),
        (vec!["status", &name], 2),
    ] {
        let o = run(&wrapper, config.path(), ctx, &cmd);
        assert_code(&o, code);
        if cmd[0] == "ps" {
            let list = json(&o);
            assert!(
                list.as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["name"] == name.as_str() && e["health"] == "healthy"),
                "{list}"
            );
        }
        assert_all_on_context(&log, ctx);
    }
    assert!(
        managed::state(&docker, &name).is_none(),
        "{name} is still there"
    );

    // An unknown context: no engine to talk to (exit 3), with docker's own words.
    let o = run(&wrapper, config.path(), "fp-no-such-ctx", &["ps"]);
    assert_code(&o, 3);
    assert!(out(&o).1.contains("fp-no-such-ctx"), "{}", out(&o).1);
    assert_all_on_context(&log, "fp-no-such-ctx");
    // A name docker would not accept is bad input before any docker call.
    let o = run(&wrapper, config.path(), "bad name", &["ps"]);
    assert_code(&o, 2);
    assert!(out(&o).1.contains("bad --context"), "{}", out(&o).1);
    assert!(managed::logged_calls(&log).is_empty());
}
