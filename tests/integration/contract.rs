//! The typed plugin contract: a plugin whose result has a missing or wrong field fails with a
//! message naming its file, the entry point and the field (never an empty cell). The docker
//! program is a fake that prints nothing: these are error paths, no deploy is proven here.

use crate::managed::{assert_code, json, out};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A `docker` that succeeds and prints nothing (an engine with no containers, no services).
fn silent_docker(dir: &Path) -> PathBuf {
    let p = dir.join("docker");
    std::fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A plugin `aaa-bad` (asked before the built-ins) with the given entry points.
fn bad_plugin(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("aaa-bad.rhai");
    let code = format!(
        "fn info() {{ #{{ name: \"aaa-bad\", display_name: \"Bad\", description: \"d\", version: \"0\", capabilities: [] }} }}\nfn validate(c) {{ [] }}\n{body}\n"
    );
    std::fs::write(&p, code).unwrap();
    p
}

fn run(docker: &Path, plugins: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fractalic-publisher"))
        .arg("--docker")
        .arg(docker)
        .arg("--plugins-dir")
        .arg(plugins)
        .args(args)
        .env_remove("FRACTALIC_PUBLISHER_PLUGINS")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap()
}

#[test]
fn a_publish_result_with_a_wrong_field_names_file_entry_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let docker = silent_docker(dir.path());
    let file = bad_plugin(
        dir.path(),
        "fn publish(c) { #{ url: 5, deployment_id: c.name } }",
    );
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("hello.md"), "# Hi\n").unwrap();
    let f = folder.path().to_str().unwrap();
    let args = [
        "deploy",
        "aaa-bad",
        "--script-name",
        "hello",
        "--script-folder",
        f,
        "--name",
        "fp-contract-x",
    ];
    let o = run(&docker, dir.path(), &args);
    assert_code(&o, 1);
    let (stdout, err) = out(&o);
    let want = format!(
        "{}: publish() result: field \"url\" must be a string, not an integer",
        file.display()
    );
    assert!(err.contains(&want), "expected {want:?} in: {err}");
    assert!(!stdout.contains("deployed successfully"), "{stdout}");

    let mut json_args = args.to_vec();
    json_args.push("--json");
    let o = run(&docker, dir.path(), &json_args);
    assert_code(&o, 1);
    let v = json(&o);
    assert_eq!(v["success"], false);
    assert!(v["error"].as_str().unwrap().contains(&want), "{v}");

    // A missing url is named too.
    bad_plugin(dir.path(), "fn publish(c) { #{ port: 8001 } }");
    let o = run(&docker, dir.path(), &args);
    assert_code(&o, 1);
    assert!(
        out(&o)
            .1
            .contains("publish() result: field \"url\" is missing (it must be a string)"),
        "{}",
        out(&o).1
    );
}

#[test]
fn lookup_and_management_results_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let docker = silent_docker(dir.path());
    let file = bad_plugin(
        dir.path(),
        "fn publish(c) { #{} }\nfn lookup(n) { #{ name: n, managed: \"yes\", running: true } }",
    );
    let o = run(&docker, dir.path(), &["status", "fp-contract-y"]);
    assert_code(&o, 1);
    let want = format!(
        "{}: lookup() result: field \"managed\" must be true or false, not a string",
        file.display()
    );
    assert!(out(&o).1.contains(&want), "{}", out(&o).1);

    // A deployment found, but status() leaves out its state: the field is named, no table row.
    bad_plugin(
        dir.path(),
        "fn publish(c) { #{} }\nfn lookup(n) { #{ name: n, plugin: \"aaa-bad\", managed: true, running: true } }\nfn status(n) { #{ name: n } }\nfn delete(n, o) { #{ name: n, removed: \"all\" } }",
    );
    let o = run(&docker, dir.path(), &["status", "fp-contract-y"]);
    assert_code(&o, 1);
    assert!(
        out(&o)
            .1
            .contains("status() result: field \"state\" is missing (it must be a string)"),
        "{}",
        out(&o).1
    );
    let o = run(&docker, dir.path(), &["rm", "fp-contract-y", "--json"]);
    assert_code(&o, 1);
    let v = json(&o);
    assert!(
        v["error"].as_str().unwrap().contains(
            "delete() result: field \"removed\" must be an array of strings, not a string"
        ),
        "{v}"
    );
}

#[test]
fn a_bad_list_all_is_a_warning_naming_the_item_and_field_and_ps_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let docker = silent_docker(dir.path());
    let file = bad_plugin(
        dir.path(),
        "fn publish(c) { #{} }\nfn list_all() { [#{ name: \"a\", plugin: \"aaa-bad\", state: \"running\" }, #{ name: \"b\", plugin: \"aaa-bad\" }] }",
    );
    let o = run(&docker, dir.path(), &["ps"]);
    assert_code(&o, 0);
    let (table, err) = out(&o);
    assert_eq!(table, "", "no half-listed rows");
    let want = format!(
        "{}: list_all() result: item 1: field \"state\" is missing (it must be a string)",
        file.display()
    );
    assert!(err.contains(&want), "{err}");
    let o = run(&docker, dir.path(), &["ps", "--json"]);
    assert_code(&o, 0);
    assert_eq!(json(&o), serde_json::json!([]), "no half-listed rows");
}
