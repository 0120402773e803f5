//! Shell integration: `completions bash|zsh|fish`, and `NO_COLOR` (no escape codes anywhere,
//! even when `CLICOLOR_FORCE` asks for colour). Needs no Docker.

use crate::managed::out;
use std::process::{Command, Output};

fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fractalic-publisher"));
    cmd.args(args)
        .env_remove("FRACTALIC_PUBLISHER_PLUGINS")
        .env_remove("NO_COLOR")
        .current_dir(std::env::temp_dir());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

const SUBCOMMANDS: &[&str] = &[
    "deploy",
    "list",
    "info",
    "badges",
    "ps",
    "status",
    "logs",
    "stop",
    "start",
    "rm",
    "doctor",
    "completions",
];

#[test]
fn completions_name_every_subcommand_and_bash_parses_them() {
    for shell in ["bash", "zsh", "fish"] {
        let o = run(&["completions", shell], &[]);
        let (stdout, stderr) = out(&o);
        assert_eq!(o.status.code(), Some(0), "{shell}: {stderr}");
        for sub in SUBCOMMANDS {
            assert!(stdout.contains(sub), "{shell}: no {sub}");
        }
        for flag in ["--script-folder", "--print-config", "--config"] {
            assert!(
                stdout.contains(flag.trim_start_matches('-')),
                "{shell}: no {flag}"
            );
        }
    }
    let o = run(&["completions", "bash"], &[]);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("fractalic-publisher.bash");
    std::fs::write(&script, &o.stdout).unwrap();
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(check.status.success(), "bash -n: {}", out(&check).1);
    // Sourcing it registers the completion function.
    let probe = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source '{}' && complete -p fractalic-publisher",
            script.display()
        ))
        .output()
        .unwrap();
    assert!(probe.status.success(), "{}", out(&probe).1);
    assert!(out(&probe).0.contains("fractalic-publisher"));

    let o = run(&["completions", "tcsh"], &[]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn no_color_removes_every_escape_code() {
    // CLICOLOR_FORCE makes clap colour its help and errors even into a pipe; NO_COLOR wins.
    let colored = run(&["deploy", "--bogus"], &[("CLICOLOR_FORCE", "1")]);
    assert!(
        colored.stderr.contains(&0x1b),
        "expected colour without NO_COLOR: {}",
        out(&colored).1
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.md"), "# hi\n").unwrap();
    let folder = dir.path().to_str().unwrap();
    for args in [
        &["deploy", "--bogus"][..],
        &["--help"],
        &["deploy", "--help"],
        &["deploy", "--script-name", "x"],
        &[
            "deploy",
            "docker-registry",
            "--script-name",
            "hello",
            "--script-folder",
            folder,
            "--print-config",
        ],
        &["list"],
        &["info", "docker-registry"],
        &["completions", "bash"],
    ] {
        let o = run(args, &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]);
        let (stdout, stderr) = out(&o);
        assert!(
            !o.stdout.contains(&0x1b) && !o.stderr.contains(&0x1b),
            "{args:?} printed escape codes:\n{stdout}\n{stderr}"
        );
    }
}

/// A reader that has gone (`fractalic-publisher ... | head -1`) is not a failure of the command:
/// no panic (exit 101), the command's own exit code; a stdout that cannot be written for
/// another reason (a full disk) is: exit 1 with a one-line message.
#[test]
fn a_closed_stdout_is_quiet_and_a_full_one_is_an_error() {
    use std::process::Stdio;
    for args in [
        &["plugin", "api"][..],
        &["list", "--json"],
        &["info", "docker-swarm"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = Command::new(env!("CARGO_BIN_EXE_fractalic-publisher"))
            .args(args)
            .env_remove("FRACTALIC_PUBLISHER_PLUGINS")
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_fractalic-publisher"))
        .args(["plugin", "api"])
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::from(full))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("could not be written to stdout"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
