//! `list`, `info` and `badges`: the plugins' self-descriptions, built-in and from disk.

use std::process::Output;

fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fractalic-publisher"));
    cmd.args(args)
        .env_remove("FRACTALIC_PUBLISHER_PLUGINS")
        .current_dir(std::env::temp_dir());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn list_shows_the_builtin_plugin_in_text_and_json() {
    let o = run(&["list"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.starts_with("PLUGIN"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("docker-registry ")),
        "{text}"
    );

    let o = run(&["list", "--json"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let dr = v
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "docker-registry")
        .expect("docker-registry listed");
    assert_eq!(dr["source"], "<built-in>/docker-registry.rhai");
    assert!(dr["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "deploy"));
}

#[test]
fn info_describes_a_plugin_and_rejects_unknown_ones() {
    let o = run(&["info", "docker-registry"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    for field in [
        "Name:",
        "Display name:",
        "Description:",
        "Version:",
        "Capabilities:",
        "Difficulty:",
        "Deploy time:",
        "Source:",
    ] {
        assert!(text.contains(field), "{field} missing in {text}");
    }
    let o = run(&["info", "docker-registry", "--json"], &[]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["display_name"], "Docker Registry");
    assert!(!v["version"].as_str().unwrap().is_empty());

    let o = run(&["info", "railway"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown plugin \"railway\"") && stderr(&o).contains("docker-registry"),
        "{}",
        stderr(&o)
    );
    let o = run(&["info", "../etc/passwd"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn a_new_platform_is_a_new_rhai_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("fly-io.rhai"),
        "fn info() { #{ name: \"fly-io\", display_name: \"Fly.io\", description: \"d\", version: \"0.1.0\", capabilities: [\"deploy\"], difficulty: \"medium\", deploy_time: \"1 min\" } }\nfn validate(c) { [] }\nfn publish(c) { #{} }\n",
    )
    .unwrap();
    let dir_s = dir.path().to_str().unwrap();
    let o = run(&["list"], &[("FRACTALIC_PUBLISHER_PLUGINS", dir_s)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).lines().any(|l| l.starts_with("fly-io ")),
        "{}",
        stdout(&o)
    );
    let o = run(&["--plugins-dir", dir_s, "badges", "fly-io"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let badge = stdout(&o);
    assert!(
        badge.starts_with("[![Deploy with Fly.io](https://img.shields.io/badge/"),
        "{badge}"
    );
    assert_eq!(badge.lines().count(), 1);
}

#[test]
fn badges_cover_every_plugin() {
    let o = run(&["badges"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("[![Deploy with Docker Registry]"), "{text}");
}

/// The generated block of docs/plugin-api.md: between the line that opens with
/// `<!-- BEGIN plugin api` (up to its `-->`) and `<!-- END plugin api -->`.
const PLUGIN_API_DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/plugin-api.md");

#[test]
fn plugin_api_prints_the_reference_and_the_docs_hold_exactly_it() {
    let o = run(&["plugin", "api"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("\n### Host functions\n"), "{text}");
    for f in [
        "docker_run(argv, opts)",
        "create_container(spec)",
        "engine_info()",
    ] {
        assert!(
            text.contains(&format!("- `{f}` → ")),
            "{f} missing:\n{text}"
        );
    }
    let doc = std::fs::read_to_string(PLUGIN_API_DOC).unwrap();
    let begin = doc
        .find("<!-- BEGIN plugin api")
        .expect("docs/plugin-api.md has no BEGIN plugin api marker");
    let start = begin + doc[begin..].find("-->\n").unwrap() + 4;
    let end = start
        + doc[start..]
            .find("<!-- END plugin api -->")
            .expect("docs/plugin-api.md has no END plugin api marker");
    if doc[start..end] != text {
        // `scripts/regen-plugin-api.sh` (this test with FRACTALIC_UPDATE_DOCS=1): the binary's
        // output is the source of truth, the file is rewritten from it.
        if std::env::var_os("FRACTALIC_UPDATE_DOCS").is_some() {
            let updated = format!("{}{text}{}", &doc[..start], &doc[end..]);
            std::fs::write(PLUGIN_API_DOC, updated).unwrap();
            eprintln!("rewrote the generated block of {PLUGIN_API_DOC}");
        } else {
            panic!(
                "docs/plugin-api.md's generated block differs from `fractalic-publisher plugin api`; \
                 regenerate it with scripts/regen-plugin-api.sh"
            );
        }
    }

    let o = run(&["plugin", "api", "--json"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let functions: Vec<&serde_json::Value> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["functions"].as_array().unwrap())
        .collect();
    assert!(functions.len() >= 40, "{}", functions.len());
    let run_fn = functions
        .iter()
        .find(|f| f["name"] == "docker_run")
        .unwrap();
    assert_eq!(run_fn["args"], serde_json::json!(["argv", "opts"]));
    assert_eq!(run_fn["group"], "docker");
    assert!(run_fn["throws"].as_str().unwrap().contains("timeout"));
}
