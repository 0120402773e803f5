//! `deploy`: real deploys of the stand-in image from the local registry, every failure path,
//! and every bad input (exit 2, nothing created or removed).

use crate::support::{self, ContainerGuard};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

const HELLO: &str = "# Demo task {id=demo-task}\n@shell\nprompt: echo \"hello from fractalic shell\"; uname -s\nuse-header: \"# Shell output {id=shell-output}\"\n\n@return\nblock: shell-output\n";
const SETTINGS: &str = "defaultProvider = \"demo\"\n[settings.demo]\nmodel = \"m\"\napiKey = \"sk-test-SECRET-1234\"\n";

/// A temp script folder: `hello.md`, optionally settings.toml, and anything else added.
struct Folder {
    dir: tempfile::TempDir,
}

impl Folder {
    fn new(settings: bool) -> Folder {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hello.md"), HELLO).unwrap();
        if settings {
            std::fs::write(dir.path().join("settings.toml"), SETTINGS).unwrap();
        }
        Folder { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, rel: &str, contents: &str) -> PathBuf {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, contents).unwrap();
        p
    }
}

/// One deploy under test: a script folder, a unique container name (removed on drop, also when
/// the test fails) and the stand-in image.
struct Case {
    folder: Folder,
    name: String,
    image: String,
    _guard: ContainerGuard,
}

impl Case {
    fn new(prefix: &str, settings: bool) -> Case {
        let name = support::unique_name(prefix);
        Case {
            folder: Folder::new(settings),
            _guard: ContainerGuard::new(&name),
            name,
            image: support::stand_in_image(),
        }
    }
}

/// Runs `fractalic-publisher ARGS` with the given docker binary.
fn publisher(docker: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fractalic-publisher"));
    cmd.arg("--docker").arg(docker).args(args);
    // The plugin comes from the binary unless a test says otherwise.
    cmd.env_remove("FRACTALIC_PUBLISHER_PLUGINS");
    cmd.current_dir(std::env::temp_dir());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The deploy command line of the `hello` script (shared with the management tests).
fn deploy_args<'a>(folder: &'a Path, name: &'a str, image: &'a str) -> Vec<&'a str> {
    crate::managed::deploy_argv(folder, name, image)
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn container_exists(docker: &Path, name: &str) -> bool {
    std::process::Command::new(docker)
        .args(["container", "inspect", name])
        .output()
        .unwrap()
        .status
        .success()
}

fn inspect(docker: &Path, name: &str) -> Value {
    let o = std::process::Command::new(docker)
        .args(["container", "inspect", name])
        .output()
        .unwrap();
    assert!(o.status.success(), "inspect {name}: {}", text(&o).1);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v[0].clone()
}

fn exec(docker: &Path, name: &str, argv: &[&str]) -> String {
    let o = std::process::Command::new(docker)
        .arg("exec")
        .arg(name)
        .args(argv)
        .output()
        .unwrap();
    assert!(o.status.success(), "exec {argv:?}: {}", text(&o).1);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn post_execute(url: &str, filename: &str) -> Value {
    ureq::post(&format!("{url}/execute"))
        .timeout(std::time::Duration::from_secs(10))
        .send_json(serde_json::json!({ "filename": filename }))
        .unwrap()
        .into_json()
        .unwrap()
}

/// Deploys the folder as `name` and returns the parsed `--json` result (asserting exit 0).
fn deploy_ok(docker: &Path, folder: &Folder, name: &str, extra: &[&str]) -> Value {
    let image = support::stand_in_image();
    let mut args = deploy_args(folder.path(), name, &image);
    args.extend_from_slice(extra);
    args.push("--json");
    let o = publisher(docker, &args, &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "deploy failed: {out}\n{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn happy_path_serves_the_script_with_right_owners_modes_port_and_labels() {
    let Some(docker) = support::docker() else {
        return;
    };
    let folder = Folder::new(true);
    folder.write("lib/helper.md", "# helper\n");
    folder.write("mcp_servers.json", "{\"mcpServers\": {}}");
    folder.write("__pycache__/x.pyc", "junk");
    folder.write(".env", "DOTENV_VALUE=from-dotenv\n");
    let name = support::unique_name("fp-deploy-ok");
    let _guard = ContainerGuard::new(&name);
    let image = support::stand_in_image();

    let o = publisher(&docker, &deploy_args(folder.path(), &name, &image), &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    // The seed's "Expected Output".
    for want in [
        "Fractalic AI Server deployed successfully!",
        "AI Server Access:",
        "/health",
        "/docs",
        "File: /payload/hello/hello.md",
        &format!("Container: {name}"),
        "/execute",
        "\"filename\": \"/payload/hello/hello.md\"",
        &format!("docker logs {name}"),
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(err.contains("[100%] Deployment healthy"), "{err}");
    assert!(!out.contains("sk-test-SECRET") && !err.contains("sk-test-SECRET"));

    let c = inspect(&docker, &name);
    // Exactly one published port, on 127.0.0.1, to the AI server.
    let bindings = c["HostConfig"]["PortBindings"].as_object().unwrap();
    assert_eq!(bindings.len(), 1, "{bindings:?}");
    let b = &bindings["8001/tcp"];
    assert_eq!(b.as_array().unwrap().len(), 1);
    assert_eq!(b[0]["HostIp"], "127.0.0.1");
    let port = b[0]["HostPort"].as_str().unwrap().to_string();
    assert_eq!(c["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped");
    let labels = &c["Config"]["Labels"];
    assert_eq!(labels["fractalic-publisher.managed"], "true");
    assert_eq!(labels["fractalic-publisher.plugin"], "docker-registry");
    assert_eq!(labels["fractalic-publisher.script"], "hello");
    assert_eq!(
        labels["fractalic-publisher.script-path"],
        "/payload/hello/hello.md"
    );
    assert_eq!(labels["fractalic-publisher.port"], port.as_str());
    assert_eq!(labels["fractalic-publisher.image"], image.as_str());
    assert!(labels["fractalic-publisher.image-digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert!(labels["fractalic-publisher.created"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(labels["fractalic-deploy"], "true");

    // Owners and modes, as appuser (1000:1000) needs them; secrets 0600.
    let ls = exec(
        &docker,
        &name,
        &[
            "stat",
            "-c",
            "%n %u:%g %a",
            "/payload/hello",
            "/payload/hello/hello.md",
            "/payload/hello/lib/helper.md",
            "/fractalic/settings.toml",
            "/settings.toml",
            "/fractalic/mcp_servers.json",
            "/mcp_servers.json",
            "/fractalic/.env",
        ],
    );
    for want in [
        "/payload/hello 1000:1000 755",
        "/payload/hello/hello.md 1000:1000 644",
        "/payload/hello/lib/helper.md 1000:1000 644",
        "/fractalic/settings.toml 1000:1000 600",
        "/settings.toml 1000:1000 600",
        "/fractalic/mcp_servers.json 1000:1000 600",
        "/mcp_servers.json 1000:1000 600",
        "/fractalic/.env 1000:1000 600",
    ] {
        assert!(ls.contains(want), "missing {want:?} in:\n{ls}");
    }
    let link = exec(&docker, &name, &["readlink", "/fractalic/payload"]);
    assert_eq!(link.trim(), "/payload");
    let listing = exec(&docker, &name, &["ls", "-a", "/payload/hello"]);
    assert!(
        !listing.contains("__pycache__"),
        "default excludes: {listing}"
    );
    assert!(
        !listing.contains(".env"),
        ".env belongs in /fractalic, not the payload: {listing}"
    );

    // /execute runs the script (and writes into its folder, which must be appuser's).
    let url = format!("http://localhost:{port}");
    let r = post_execute(&url, "/payload/hello/hello.md");
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["return_content"].as_str().unwrap(), HELLO);
    // The seed's relative form works through the /fractalic/payload link.
    let r = post_execute(&url, "payload/hello/hello.md");
    assert_eq!(r["success"], true, "{r}");
}

#[test]
fn json_output_reports_services_honestly() {
    let Some(docker) = support::docker() else {
        return;
    };
    let folder = Folder::new(true);
    let name = support::unique_name("fp-deploy-json");
    let _guard = ContainerGuard::new(&name);
    let v = deploy_ok(&docker, &folder, &name, &["--env", "GREETING=hi there"]);
    assert_eq!(v["success"], true);
    assert_eq!(v["deployment_id"], name.as_str());
    assert!(v["error"].is_null());
    let url = v["url"].as_str().unwrap();
    assert!(url.starts_with("http://localhost:"), "{url}");
    assert_eq!(v["endpoint_url"], url);
    // The same object the REST API returns: metadata in the Fractalic UI's shape.
    let m = &v["metadata"];
    assert_eq!(m["ai_server"]["health_url"], format!("{url}/health"));
    assert_eq!(m["deployment"]["container_name"], name.as_str());
    assert_eq!(m["services"]["ai_server"], "healthy");
    assert_eq!(m["services"]["mcp_manager"], "healthy");
    assert_eq!(
        m["api"]["example_payload"]["filename"],
        "/payload/hello/hello.md"
    );
    assert_eq!(v["details"]["container"], name.as_str());
    // --env reaches the container.
    let env = inspect(&docker, &name)["Config"]["Env"].clone();
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e == "GREETING=hi there"),
        "{env}"
    );
}

#[test]
fn secrets_stay_off_command_lines_and_output() {
    let Some(docker) = support::docker() else {
        return;
    };
    let folder = Folder::new(true);
    let name = support::unique_name("fp-deploy-secret");
    let _guard = ContainerGuard::new(&name);
    let log = tempfile::NamedTempFile::new().unwrap();
    let wrapper_dir = tempfile::tempdir().unwrap();
    let wrapper = support::counting_docker(wrapper_dir.path(), &docker, log.path());
    let env_file = wrapper_dir.path().join("secret.env");
    std::fs::write(&env_file, "API_TOKEN=tok-VERY-SECRET-42\n").unwrap();
    let image = support::stand_in_image();
    let mut args = deploy_args(folder.path(), &name, &image);
    args.extend([
        "--env",
        "OTHER=pw-ALSO-SECRET-7",
        "--env-file",
        env_file.to_str().unwrap(),
    ]);
    let o = publisher(&wrapper, &args, &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    let argv = std::fs::read_to_string(log.path()).unwrap();
    for secret in [
        "tok-VERY-SECRET-42",
        "pw-ALSO-SECRET-7",
        "sk-test-SECRET-1234",
    ] {
        assert!(
            !argv.contains(secret),
            "{secret} on a docker command line:\n{argv}"
        );
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{secret} printed"
        );
    }
    let env = inspect(&docker, &name)["Config"]["Env"].to_string();
    assert!(env.contains("API_TOKEN=tok-VERY-SECRET-42") && env.contains("OTHER=pw-ALSO-SECRET-7"));
    // The number of docker calls does not depend on the number of files: one cp for all of
    // them per container made (a port taken by a concurrent test between choice and start
    // makes the deploy re-create the container on the next port, with its own cp).
    let count = |prefix: &str| argv.lines().filter(|l| l.starts_with(prefix)).count();
    let (creates, cps) = (count("create "), count("cp - "));
    assert!(creates >= 1 && cps == creates, "{argv}");
    let calls = argv.lines().count();
    assert!(
        calls <= 9 + 4 * (creates - 1),
        "{calls} docker calls:\n{argv}"
    );
}

#[test]
fn preferred_port_busy_moves_to_the_next_free_port() {
    let Some(docker) = support::docker() else {
        return;
    };
    // Make sure 8001 is taken: by us if it is free, else by whoever holds it.
    let _hold = std::net::TcpListener::bind(("127.0.0.1", 8001)).ok();
    let case = Case::new("fp-deploy-port", true);
    let (folder, name, image) = (&case.folder, &case.name, &case.image);
    let o = publisher(&docker, &deploy_args(folder.path(), name, image), &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    let port = inspect(&docker, name)["HostConfig"]["PortBindings"]["8001/tcp"][0]["HostPort"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(port, "8001");
    assert!(err.contains("8001"), "the port choice is explained: {err}");
    assert!(out.contains(&format!("http://localhost:{port}")), "{out}");
}

#[test]
fn exact_port_that_is_busy_is_bad_input() {
    let Some(docker) = support::docker() else {
        return;
    };
    let hold = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let busy = hold.local_addr().unwrap().port().to_string();
    let case = Case::new("fp-deploy-exact", true);
    let (folder, name, image) = (&case.folder, &case.name, &case.image);
    let mut args = deploy_args(folder.path(), name, image);
    args.extend(["--port", &busy]);
    let o = publisher(&docker, &args, &[]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&busy), "{err}");
    assert!(!container_exists(&docker, name));
}

/// Deploys with `extra` flags expecting exit 1, and checks that the container the deploy made
/// was removed and that it said so. Returns stdout and stderr.
fn failing_deploy(docker: &Path, prefix: &str, extra: &[&str]) -> (String, String) {
    let case = Case::new(prefix, true);
    let (folder, name, image) = (&case.folder, &case.name, &case.image);
    let mut args = deploy_args(folder.path(), name, image);
    args.extend_from_slice(extra);
    let o = publisher(docker, &args, &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    let removed = format!("removed container {name}");
    assert!(
        out.contains(&removed) || err.contains(&removed),
        "{out}\n{err}"
    );
    assert!(!container_exists(docker, name));
    (out, err)
}

#[test]
fn unhealthy_service_fails_and_leaves_nothing() {
    let Some(docker) = support::docker() else {
        return;
    };
    let extra = [
        "--env",
        "STAND_IN_HEALTH=unhealthy",
        "--timeout",
        "2",
        "--json",
    ];
    let (out, _) = failing_deploy(&docker, "fp-deploy-sick", &extra);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["success"], false);
    assert_eq!(v["exit_code"], 1);
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("503"), "{msg}");
}

#[test]
fn container_that_exits_on_start_fails_fast_with_its_exit_code() {
    let Some(docker) = support::docker() else {
        return;
    };
    // Exits before it ever listens; the 60 s timeout must not be what ends the wait.
    let extra = [
        "--env",
        "STAND_IN_EXIT_AFTER_MS=1",
        "--env",
        "STAND_IN_START_DELAY_MS=60000",
        "--timeout",
        "60",
    ];
    let (_, err) = failing_deploy(&docker, "fp-deploy-exit", &extra);
    assert!(err.contains("exited with code 3"), "{err}");
}

#[test]
fn mcp_manager_down_fails_the_deploy() {
    let Some(docker) = support::docker() else {
        return;
    };
    let extra = ["--env", "STAND_IN_MCP=down", "--timeout", "2"];
    let (_, err) = failing_deploy(&docker, "fp-deploy-mcp", &extra);
    assert!(err.contains("MCP manager"), "{err}");
}

#[test]
fn missing_settings_warns_and_execute_says_why() {
    let Some(docker) = support::docker() else {
        return;
    };
    let case = Case::new("fp-deploy-nosettings", false);
    let (folder, name, image) = (&case.folder, &case.name, &case.image);
    let o = publisher(&docker, &deploy_args(folder.path(), name, image), &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(
        err.contains("warning: no settings.toml")
            && err.contains("No model specified and no defaultProvider in settings.toml"),
        "{err}"
    );
    let port = inspect(&docker, name)["HostConfig"]["PortBindings"]["8001/tcp"][0]["HostPort"]
        .as_str()
        .unwrap()
        .to_string();
    let r = post_execute(
        &format!("http://localhost:{port}"),
        "/payload/hello/hello.md",
    );
    assert_eq!(r["success"], false);
    assert_eq!(
        r["error"],
        "No model specified and no defaultProvider in settings.toml"
    );
}

#[test]
fn existing_container_of_the_same_name_is_never_touched() {
    let Some(docker) = support::docker() else {
        return;
    };
    let name = support::unique_name("fp-deploy-taken");
    let _guard = ContainerGuard::new(&name);
    let image = support::stand_in_image();
    let o = std::process::Command::new(&docker)
        .args(["create", "--name", &name, &image])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o).1);
    let id_before = inspect(&docker, &name)["Id"].clone();
    let folder = Folder::new(true);
    let o = publisher(&docker, &deploy_args(folder.path(), &name, &image), &[]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("already exists") && err.contains(&format!("docker rm -f {name}")),
        "{err}"
    );
    assert_eq!(
        inspect(&docker, &name)["Id"],
        id_before,
        "the existing container was replaced"
    );
}

#[test]
fn bad_inputs_exit_2_and_create_nothing() {
    let Some(docker) = support::docker() else {
        return;
    };
    let image = support::stand_in_image();
    let folder = Folder::new(true);
    let f = folder.path().to_str().unwrap().to_string();
    let bad_toml = Folder::new(false);
    bad_toml.write(
        "settings.toml",
        "defaultProvider = \"x\"\napiKey = \"sk-LEAK-ME\n",
    );
    let bad_json = Folder::new(true);
    bad_json.write("mcp_servers.json", "{\"mcpServers\": [}");
    let env_dir = tempfile::tempdir().unwrap();
    let bad_env = env_dir.path().join("bad.env");
    std::fs::write(&bad_env, "GOOD=1\nthis is not an assignment\n").unwrap();
    let name = support::unique_name("fp-deploy-bad");
    let _guard = ContainerGuard::new(&name);

    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--name".into(), "-rm".into()], "bad container name"),
        (vec!["--name".into(), "../x".into()], "bad container name"),
        (
            vec!["--script-name".into(), "../etc".into()],
            "bad --script-name",
        ),
        (
            vec!["--script-name".into(), "a/b".into()],
            "bad --script-name",
        ),
        (
            vec!["--script-name".into(), "nothere".into()],
            "no main script",
        ),
        (
            vec!["--script-folder".into(), "/nonexistent/folder".into()],
            "is not a directory",
        ),
        (
            vec![
                "--script-folder".into(),
                bad_toml.path().to_str().unwrap().into(),
            ],
            "is not valid TOML at line 2",
        ),
        (
            vec![
                "--script-folder".into(),
                bad_json.path().to_str().unwrap().into(),
            ],
            "is not valid JSON",
        ),
        (vec!["--port".into(), "0".into()], "1 to 65535"),
        (vec!["--port".into(), "70000".into()], "1 to 65535"),
        (vec!["--port".into(), "http".into()], "1 to 65535"),
        (vec!["--env".into(), "NOEQUALS".into()], "KEY=VALUE"),
        (vec!["--env".into(), "1BAD=x".into()], "bad env name"),
        (
            vec!["--env-file".into(), bad_env.to_str().unwrap().into()],
            "bad.env:2",
        ),
        (
            vec!["--env-file".into(), "/nonexistent.env".into()],
            "cannot read --env-file",
        ),
        (vec!["--bind".into(), "localhost:80".into()], "bad --bind"),
        (vec!["--exclude".into(), "a[".into()], "bad --exclude"),
        (vec!["--timeout".into(), "0".into()], "bad --timeout"),
        (vec!["--platform".into(), "linux".into()], "bad --platform"),
        (vec!["--image".into(), "-bad".into()], "bad --image"),
        (vec!["--pull".into(), "sometimes".into()], "sometimes"),
    ];
    for (overrides, want) in cases {
        // Start from good flags, then let each case override one of them.
        let mut flags: Vec<(String, String)> = vec![
            ("--script-name".into(), "hello".into()),
            ("--script-folder".into(), f.clone()),
            ("--name".into(), name.clone()),
            ("--image".into(), image.clone()),
        ];
        let (k, v) = (overrides[0].clone(), overrides[1].clone());
        match flags.iter_mut().find(|(fk, _)| *fk == k) {
            Some(slot) => slot.1 = v.clone(),
            None => flags.push((k.clone(), v.clone())),
        }
        let mut args: Vec<String> = vec!["deploy".into(), "docker-registry".into()];
        for (k, v) in flags {
            args.push(format!("{k}={v}"));
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = publisher(&docker, &argv, &[]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{k}={v}: {out}\n{err}");
        assert!(err.contains(want), "{k}={v}: expected {want:?} in {err}");
        assert!(!err.contains("sk-LEAK-ME"), "a secret leaked: {err}");
        assert!(!err.contains("sk-test-SECRET"), "a secret leaked: {err}");
        let first = err.lines().next().unwrap_or("");
        assert!(
            first.contains(want),
            "{k}={v}: the first line must say it: {err}"
        );
        assert!(
            !container_exists(&docker, &name),
            "{k}={v} created a container"
        );
        // (The --name cases' values are names Docker itself refuses, so `name` is the only
        // container such a run could have made.)
    }
}

#[test]
fn docker_unavailable_is_exit_3() {
    let folder = Folder::new(true);
    let f = folder.path().to_str().unwrap();
    let args = [
        "deploy",
        "docker-registry",
        "--script-name",
        "hello",
        "--script-folder",
        f,
        "--name",
        "fp-never",
    ];
    let o = publisher(Path::new("/nonexistent/docker"), &args, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o).1);
    assert!(text(&o).1.contains("docker not found"), "{}", text(&o).1);
    let Some(docker) = support::docker() else {
        return;
    };
    let o = publisher(
        &docker,
        &args,
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("does not answer"), "{err}");
}

#[test]
fn plugin_with_a_syntax_error_is_reported_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("docker-registry.rhai");
    std::fs::write(&plugin, "fn info() { #{ name: \"docker-registry\" } }\nfn validate(c) { [] }\nfn publish(c) {\n    let x = ;\n}\n").unwrap();
    let folder = Folder::new(true);
    let f = folder.path().to_str().unwrap();
    let name = support::unique_name("fp-deploy-syntax");
    let args = [
        "--plugins-dir",
        dir.path().to_str().unwrap(),
        "deploy",
        "docker-registry",
        "--script-name",
        "hello",
        "--script-folder",
        f,
        "--name",
        &name,
    ];
    let docker = support::docker().unwrap_or_else(|| PathBuf::from("docker"));
    let o = publisher(&docker, &args, &[]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let want = format!("{}:4:", plugin.display());
    assert!(
        err.contains(&want) && err.contains("syntax error"),
        "expected {want}: {err}"
    );
}

#[test]
fn plugin_file_on_disk_overrides_the_builtin_and_is_reread() {
    let Some(docker) = support::docker() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("docker-registry.rhai");
    let builtin = include_str!("../../plugins/docker-registry.rhai");
    let case = Case::new("fp-deploy-override", true);
    let (folder, name, image) = (&case.folder, &case.name, &case.image);
    let mut args = vec!["--plugins-dir", dir.path().to_str().unwrap()];
    args.extend(deploy_args(folder.path(), name, image));

    // First version: refuses everything in validate().
    std::fs::write(
        &plugin,
        builtin.replace(
            "let problems = [];",
            "let problems = [\"override says no\"];",
        ),
    )
    .unwrap();
    let o = publisher(&docker, &args, &[]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("override says no"), "{err}");
    assert!(!container_exists(&docker, name));

    // Edited on disk: the next run uses the new text, and says which file it used.
    std::fs::write(
        &plugin,
        builtin.replace(
            "fn publish(config) {",
            "fn publish(config) {\n    print(\"override plugin in use\");",
        ),
    )
    .unwrap();
    let o = publisher(&docker, &args, &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(err.contains("override plugin in use"), "{err}");
    assert!(err.contains(&format!("from {}", plugin.display())), "{err}");
}

#[test]
fn port_taken_at_start_is_retried_on_the_next_port() {
    let Some(docker) = support::docker() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let clashing = support::port_clash_once_docker(dir.path(), &docker);
    let case = Case::new("fp-deploy-clash", true);
    let (folder, name, image) = (&case.folder, &case.name, &case.image);
    let mut args = deploy_args(folder.path(), name, image);
    args.push("--json");
    let o = publisher(&clashing, &args, &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(
        dir.path().join("clashed").exists(),
        "the clash was never simulated"
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    // --json keeps stderr quiet; the warning travels in the result instead.
    let warnings = v["warnings"].to_string();
    assert!(
        warnings.contains("was taken when the container started; retrying on"),
        "{warnings}"
    );
    let port = v["details"]["port"].as_i64().unwrap();
    assert_eq!(v["metadata"]["ai_server"]["port"], port);
    let bound = inspect(&docker, name)["HostConfig"]["PortBindings"]["8001/tcp"][0]["HostPort"]
        .as_str()
        .unwrap()
        .parse::<i64>()
        .unwrap();
    assert_eq!(port, bound);
    assert!(v["url"].as_str().unwrap().ends_with(&format!(":{port}")));
}

#[test]
fn port_taken_at_start_with_an_exact_port_fails_cleanly() {
    let Some(docker) = support::docker() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let clashing = support::port_clash_once_docker(dir.path(), &docker);
    let free = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = free.local_addr().unwrap().port().to_string();
    drop(free);
    let extra = ["--port", port.as_str()];
    // Same checks as every failing deploy, through the clashing wrapper.
    let case = Case::new("fp-deploy-clash-exact", true);
    let (folder, name, image) = (&case.folder, &case.name, &case.image);
    let mut args = deploy_args(folder.path(), name, image);
    args.extend_from_slice(&extra);
    let o = publisher(&clashing, &args, &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(err.contains("port is already allocated"), "{err}");
    assert!(!container_exists(&docker, name));
}

/// Tags the stand-in under a name the registry does not have, so pulling it fails.
fn cached_only_image(docker: &Path, tag: &str) -> String {
    let image = support::stand_in_image();
    let repo = image.rsplit_once(':').map_or(image.as_str(), |(r, _)| r);
    let local = format!("{repo}:{tag}");
    support::docker_ok(docker, &["pull", "-q", &image]);
    support::docker_ok(docker, &["tag", &image, &local]);
    local
}

#[test]
fn a_cached_image_still_deploys_when_the_pull_fails_and_says_so() {
    let Some(docker) = support::docker() else {
        return;
    };
    let tag = support::unique_name("cached-only");
    let image = cached_only_image(&docker, &tag);
    let folder = Folder::new(true);
    let name = support::unique_name("fp-deploy-cached");
    let _guard = ContainerGuard::new(&name);
    let mut args = deploy_args(folder.path(), &name, &image);
    *args.last_mut().unwrap() = "always"; // deploy_args ends with --pull missing
    let o = publisher(&docker, &args, &[]);
    let _ = std::process::Command::new(&docker)
        .args(["rmi", &image])
        .output();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(
        err.contains(&format!("warning: pulling {image} failed"))
            && err.contains("deploying the cached image"),
        "{err}"
    );
}

#[test]
fn pull_never_without_a_cached_image_fails_before_creating_anything() {
    let Some(docker) = support::docker() else {
        return;
    };
    let image = format!(
        "127.0.0.1:5000/{}:nowhere",
        support::unique_name("fp-missing")
    );
    let folder = Folder::new(true);
    let name = support::unique_name("fp-deploy-never");
    let _guard = ContainerGuard::new(&name);
    let mut args = deploy_args(folder.path(), &name, &image);
    *args.last_mut().unwrap() = "never"; // deploy_args ends with --pull missing
    let o = publisher(&docker, &args, &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(err.contains("is not cached and --pull never"), "{err}");
    assert!(!container_exists(&docker, &name));
    // --pull always with an image that exists nowhere: the pull error, and nothing made.
    let mut args = deploy_args(folder.path(), &name, &image);
    *args.last_mut().unwrap() = "always"; // deploy_args ends with --pull missing
    let o = publisher(&docker, &args, &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(
        err.contains(&format!("cannot pull {image} and no copy is cached")),
        "{err}"
    );
    assert!(!container_exists(&docker, &name));
}
