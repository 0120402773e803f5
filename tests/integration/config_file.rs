//! The deployment file (`fractalic-publish.toml`): a real deploy from the file alone,
//! `deploy --print-config` with secrets redacted, and bad files (exit 2, Docker never called).

use crate::managed::{assert_code, json, out};
use crate::support::{self, ContainerGuard};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const HELLO: &str = "# Demo task {id=demo-task}\n\n@shell\nprompt: echo hello\nuse-header: \"# Out {id=out}\"\n\n@return\nblock: out\n";
const SETTINGS: &str =
    "defaultProvider = \"demo\"\n[settings.demo]\nmodel = \"m\"\napiKey = \"sk-settings-SECRET\"\n";

/// Runs the binary in `cwd` with `--docker DOCKER` and no plugin directory.
fn publisher_in(cwd: &Path, docker: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fractalic-publisher"))
        .arg("--docker")
        .arg(docker)
        .args(args)
        .env_remove("FRACTALIC_PUBLISHER_PLUGINS")
        .current_dir(cwd)
        .output()
        .unwrap()
}

/// A `docker` that only records its argv in `calls` and fails: proof that nothing reached
/// Docker (needs no daemon).
fn recording_docker(dir: &Path) -> (PathBuf, PathBuf) {
    let calls = dir.join("calls");
    let path = dir.join("docker");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexit 1\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    (path, calls)
}

fn calls(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// A script folder with `hello.md`, settings.toml, extra files and a deployment file.
fn folder(deploy_file: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("hello.md"), HELLO).unwrap();
    std::fs::write(p.join("settings.toml"), SETTINGS).unwrap();
    std::fs::write(p.join("notes.txt"), "not deployed").unwrap();
    std::fs::create_dir(p.join("data")).unwrap();
    std::fs::write(p.join("data/table.csv"), "a,b\n").unwrap();
    std::fs::write(p.join("data/skip.log"), "log").unwrap();
    std::fs::write(p.join("fractalic-publish.toml"), deploy_file).unwrap();
    dir
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn deploys_with_only_a_deployment_file() {
    let Some(docker) = support::docker() else {
        return;
    };
    let image = support::pull_stand_in(&docker);
    let name = support::unique_name("fp-cfgfile");
    let _guard = ContainerGuard::new(&name);
    let dir = folder(&format!(
        r#"plugin = "docker-registry"
script_name = "hello"
script_folder = "."
container_name = "{name}"
registry_image = "{image}"
pull = "missing"
timeout = 60
include_files = ["*.md", "*.toml", "data"]
exclude_patterns = ["*.log"]

[environment]
FILE_VAR = "from-the-file"
"#
    ));
    // No flags but --json: everything comes from the file found in the working directory.
    let o = publisher_in(dir.path(), &docker, &["deploy", "--json"]);
    assert_code(&o, 0);
    let (stdout, stderr) = out(&o);
    assert!(!stdout.contains("from-the-file") && !stderr.contains("from-the-file"));
    let v = json(&o);
    assert_eq!(v["metadata"]["deployment"]["container_name"], name.as_str());
    assert_eq!(
        v["metadata"]["deployment"]["script_path"],
        "/payload/hello/hello.md"
    );

    let env = support::docker_ok(
        &docker,
        &["inspect", "--format", "{{json .Config.Env}}", &name],
    );
    assert!(env.contains("\"FILE_VAR=from-the-file\""), "{env}");
    // include_files took *.md, *.toml and data/ (less the excluded *.log); notes.txt
    // stayed behind, and so did the deployment file (a built-in exclude).
    let ls = support::exec(
        &docker,
        &name,
        &["sh", "-c", "cd /payload/hello && find . | sort"],
    );
    let listing = String::from_utf8_lossy(&ls.stdout).into_owned();
    assert_eq!(
        listing.lines().collect::<Vec<_>>(),
        [
            ".",
            "./data",
            "./data/table.csv",
            "./hello.md",
            "./settings.toml"
        ],
        "{listing}"
    );
}

#[test]
fn print_config_merges_redacts_and_touches_nothing() {
    let dir = folder(
        r#"plugin = "docker-registry"
script_name = "hello"
script_folder = "."
container_name = "fp-never-created"
env_file = "secrets.env"
timeout = 30

[ports]
ai_server = 8123

[environment]
API_KEY = "sk-file-SECRET"
"#,
    );
    std::fs::write(
        dir.path().join("secrets.env"),
        "ENV_FILE_KEY=sk-envfile-SECRET\n",
    )
    .unwrap();
    let tools = tempfile::tempdir().unwrap();
    let (docker, log) = recording_docker(tools.path());
    let folder_arg = dir.path().to_str().unwrap();

    // Found in the --script-folder; flags win; --env adds.
    let o = publisher_in(
        tools.path(),
        &docker,
        &[
            "deploy",
            "--script-folder",
            folder_arg,
            "--print-config",
            "--timeout",
            "7",
            "--env",
            "FLAG_KEY=sk-flag-SECRET",
        ],
    );
    assert_code(&o, 0);
    let (stdout, stderr) = out(&o);
    assert!(
        !stdout.contains("SECRET") && !stderr.contains("SECRET"),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("timeout = 7\n"), "{stdout}");
    assert!(stdout.contains("container_name = \"fp-never-created\""));
    assert!(stdout.contains("[ports]\nai_server = 8123\n"), "{stdout}");
    for key in ["API_KEY", "ENV_FILE_KEY", "FLAG_KEY"] {
        assert!(
            stdout.contains(&format!("{key} = \"<redacted>\"")),
            "{key}: {stdout}"
        );
    }

    let o = publisher_in(
        tools.path(),
        &docker,
        &[
            "deploy",
            "--script-folder",
            folder_arg,
            "--print-config",
            "--json",
        ],
    );
    assert_code(&o, 0);
    let v = json(&o);
    assert_eq!(v["environment"]["API_KEY"], "<redacted>");
    assert_eq!(v["environment"]["ENV_FILE_KEY"], "<redacted>");
    assert_eq!(v["timeout"], 30);
    let file = dir
        .path()
        .canonicalize()
        .unwrap()
        .join("fractalic-publish.toml");
    assert_eq!(v["config_file"], file.display().to_string());
    assert!(!out(&o).0.contains("SECRET"));
    assert_eq!(calls(&log), "", "--print-config called docker");
}

#[test]
fn bad_deployment_files_exit_2_and_never_reach_docker() {
    let tools = tempfile::tempdir().unwrap();
    let (fake, log) = recording_docker(tools.path());
    let real = support::docker();
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "plugin = \"docker-registry\"\nscript_name = \"hello\"\nscript_folder = \".\"\nimage = \"x\"\n",
            &[],
            "fractalic-publish.toml:5:1: unknown key \"image\"",
        ),
        (
            "plugin = \"docker-registry\"\n\n[environment]\nAPI_KEY = 123456789\n",
            &[],
            "fractalic-publish.toml:5:11: wrong type for \"environment.API_KEY\"",
        ),
        (
            "plugin = \"docker-registry\"\nscript_folder = \".\"\n",
            &[],
            "no script name given: pass --script-name NAME or set script_name in",
        ),
        (
            "script_name = \"hello\"\nscript_folder = \".\"\n",
            &[],
            "no plugin given: pass it as `deploy PLUGIN`",
        ),
        (
            "plugin = \"docker-registry\"\nscript_name = \"hello\"\nscript_folder = \".\"\ninclude_files = [\"*.txt\"]\n",
            &[],
            "the main script \"hello.md\" is left out of the payload",
        ),
        (
            "plugin = \"docker-registry\"\nscript_name = \"hello\"\nscript_folder = \".\"\n[ports]\nai_server = 70000\n",
            &["--json"],
            "fractalic-publish.toml:6:13: bad ports.ai_server 70000",
        ),
    ];
    for (text, extra, want) in cases {
        let name = support::unique_name("fp-cfgbad");
        let _guard = ContainerGuard::new(&name);
        let dir = folder(&format!("container_name = \"{name}\"\n{text}"));
        let mut args = vec!["deploy"];
        args.extend_from_slice(extra);
        // The fake docker proves Docker is never called, the real one (when there is a
        // daemon) that nothing of that name exists afterwards.
        let o = publisher_in(dir.path(), &fake, &args);
        assert_code(&o, 2);
        let (stdout, stderr) = out(&o);
        let shown = if extra.contains(&"--json") {
            let v = json(&o);
            assert_eq!(v["error_kind"], "bad_input");
            v["error"].as_str().unwrap().to_string()
        } else {
            // Progress may name the deployment file first; the error is one line.
            let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
            assert_eq!(errors.len(), 1, "{stderr}");
            assert!(stderr.ends_with(&format!("{}\n", errors[0])), "{stderr}");
            errors[0].to_string()
        };
        assert!(shown.contains(want), "want {want:?}, got {shown}");
        assert!(!stdout.contains("123456789") && !stderr.contains("123456789"));
        assert_eq!(calls(&log), "", "{text}: docker was called");
        if let Some(docker) = &real {
            let o = publisher_in(dir.path(), docker, &args);
            assert_code(&o, 2);
            assert!(
                crate::managed::state(docker, &name).is_none(),
                "{name} exists"
            );
        }
    }
}
