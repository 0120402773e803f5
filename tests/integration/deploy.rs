//! `deploy`: real deploys of the stand-in image from the local registry, every failure path,
//! and every bad input (exit 2, nothing created or removed).

use crate::support::{self, ContainerGuard};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

/// What Fractalic returns for [`HELLO`]: the block its `@shell` made.
const RETURNED: &str = "# Shell output {id=shell-output}\nhello from fractalic shell\nLinux\n\n";
const HELLO: &str = "# Demo task {id=demo-task}\n\n@shell\nprompt: echo \"hello from fractalic shell\"; uname -s\nuse-header: \"# Shell output {id=shell-output}\"\n\n@return\nblock: shell-output\n";
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
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
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
            "/payload/hello/",
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
        "/payload/hello/ 1000:1000 755",
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
    // The folder is the first release; /payload/hello is the link that makes it live.
    let live = exec(&docker, &name, &["readlink", "/payload/hello"]);
    assert!(live.trim().starts_with(".releases/r1-"), "{live}");
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
    assert_eq!(r["return_content"].as_str().unwrap(), RETURNED);
    // The seed's relative form works through the /fractalic/payload link.
    let r = post_execute(&url, "payload/hello/hello.md");
    assert_eq!(r["success"], true, "{r}");
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
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
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
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
    // (and one more `cp -`: the release history, written once beside the readiness wait).
    assert!(creates >= 1 && cps == creates + 1, "{argv}");
    // 10 (a port-lock re-read when a concurrent deploy created a container meanwhile, and the
    // readiness proof's second inspect), plus the inspect that tells a new deployment from an
    // update and the history write.
    let calls = argv.lines().count();
    assert!(
        calls <= 12 + 4 * (creates - 1),
        "{calls} docker calls:\n{argv}"
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
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
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
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

#[test]
fn a_dead_runs_orphaned_calls_are_waited_for_without_touching_this_deployment() {
    // Needs no daemon. Another deployment's run was killed with a docker call in flight (its
    // children list names a live process). This deploy lets that call end, and since nothing
    // of its own deployment was undone it neither resyncs the front proxy nor calls it
    // unfinished work: the busy --port is still the one error, after the read-only inspects.
    let fake_dir = tempfile::tempdir().unwrap();
    let (docker, log) = support::untouchable_docker(fake_dir.path());
    let state = tempfile::tempdir().unwrap();
    let children = state.path().join("children");
    std::fs::create_dir(&children).unwrap();
    let mut call = std::process::Command::new("sleep")
        .arg("1")
        .spawn()
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", call.id())).unwrap();
    let start = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .to_string();
    // Owner 999999 started at tick 1: not a live process of this tool.
    std::fs::write(
        children.join("999999-1.json"),
        format!("[[{},{start}]]", call.id()),
    )
    .unwrap();
    let folder = Folder::new(true);
    let hold = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let busy = hold.local_addr().unwrap().port().to_string();
    let name = support::unique_name("fp-deploy-orphan");
    let image = support::stand_in_image();
    let mut args = deploy_args(folder.path(), &name, &image);
    args.extend(["--port", &busy]);
    let state_dir = state.path().to_str().unwrap();
    let o = publisher(&docker, &args, &[("FRACTALIC_STATE_DIR", state_dir)]);
    let _ = call.wait();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}\n{err}");
    assert!(
        err.contains("waited for 1 docker call(s) a killed run left running"),
        "{err}"
    );
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.contains(&format!("--port {busy}: port {busy} is in use")),
        "{err}"
    );
    assert!(!err.contains("unfinished work"), "{err}");
    let calls = support::calls(&log);
    assert!(
        calls.iter().all(|c| c.starts_with("container inspect ")),
        "ran more than inspects: {calls:?}"
    );
    assert!(
        std::fs::read_dir(&children).unwrap().next().is_none(),
        "the dead run's list is left"
    );
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
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
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
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
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
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn mcp_manager_down_fails_the_deploy() {
    let Some(docker) = support::docker() else {
        return;
    };
    let extra = ["--env", "STAND_IN_MCP=down", "--timeout", "2"];
    let (_, err) = failing_deploy(&docker, "fp-deploy-mcp", &extra);
    assert!(err.contains("MCP manager"), "{err}");
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
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
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
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

/// Secrets planted in the bad-input fixtures; none may ever be printed.
const PLANTED: &[&str] = &["sk-LEAK-ME", "sk-test-SECRET", "sk-proj-", "LEAK-ME"];

#[test]
fn bad_inputs_exit_2_before_docker_is_touched() {
    // Needs no daemon: the docker given to the binary records every call and fails, and bad
    // input must be found before the first one.
    let fake_dir = tempfile::tempdir().unwrap();
    let (docker, log) = support::untouchable_docker(fake_dir.path());
    let image = support::stand_in_image();
    let folder = Folder::new(true);
    folder.write("run.ctx", "local run artefact");
    let f = folder.path().to_str().unwrap().to_string();
    let bad_toml = Folder::new(false);
    bad_toml.write(
        "settings.toml",
        "defaultProvider = \"x\"\napiKey = \"sk-LEAK-ME\n",
    );
    let bad_json = Folder::new(true);
    bad_json.write("mcp_servers.json", "{\"mcpServers\": [}");
    let bad_dotenv = Folder::new(true);
    bad_dotenv.write(".env", "# keys\nOPENAI_API_KEY: sk-proj-LEAK-ME-4\n");
    // Main scripts that cannot reach the payload as a regular file.
    let odd = Folder::new(true);
    odd.write("run.ctx", "# a script the default excludes drop\n");
    odd.write("tab.\tx\n8009", "# a name that would break a table\n");
    let host_file = tempfile::NamedTempFile::new().unwrap();
    std::os::unix::fs::symlink(host_file.path(), odd.path().join("outside.md")).unwrap();
    std::os::unix::fs::symlink("gone.md", odd.path().join("dangling.md")).unwrap();
    let o = odd.path().to_str().unwrap().to_string();
    let env_dir = tempfile::tempdir().unwrap();
    let bad_env = env_dir.path().join("bad.env");
    std::fs::write(&bad_env, "GOOD=1\nOPENAI_API_KEY: sk-proj-LEAK-ME-3\n").unwrap();
    let hold = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let busy = hold.local_addr().unwrap().port().to_string();
    let big = format!("BIG={}", "v".repeat(70_000));
    let name = support::unique_name("fp-deploy-bad");

    let s = |v: &str| v.to_string();
    let cases: Vec<(Vec<String>, String)> = vec![
        (vec![s("--name"), s("-rm")], s("bad container name")),
        (vec![s("--name"), s("../x")], s("bad container name")),
        (
            vec![s("--script-name"), s("../etc")],
            s("bad --script-name"),
        ),
        (vec![s("--script-name"), s("a/b")], s("bad --script-name")),
        (vec![s("--script-name"), s("nothere")], s("no main script")),
        (
            vec![s("--script-folder"), s("/nonexistent/folder")],
            s("is not a directory"),
        ),
        (
            vec![s("--script-folder"), s(bad_toml.path().to_str().unwrap())],
            s("is not valid TOML at line 2"),
        ),
        (
            vec![s("--script-folder"), s(bad_json.path().to_str().unwrap())],
            s("is not valid JSON"),
        ),
        (
            vec![s("--script-folder"), s(bad_dotenv.path().to_str().unwrap())],
            s(".env:2 (it starts with \"OPENAI_API_KEY\"): it has no '='"),
        ),
        (vec![s("--port"), s("0")], s("1 to 65535")),
        (vec![s("--port"), s("70000")], s("1 to 65535")),
        (vec![s("--port"), s("http")], s("1 to 65535")),
        (
            vec![s("--port"), busy.clone()],
            format!("--port {busy}: port {busy} is in use"),
        ),
        (vec![s("--env"), s("NOEQUALS")], s("KEY=VALUE")),
        (vec![s("--env"), s("1BAD=x")], s("bad env name")),
        (
            vec![s("--env"), s("OPENAI_API_KEY: sk-proj-LEAK-ME-2")],
            s("bad env item at --env #1 (it starts with \"OPENAI_API_KEY\")"),
        ),
        (
            vec![s("--env"), big.clone()],
            s("env value of BIG (--env #1) is too long"),
        ),
        (
            vec![s("--env-file"), s(bad_env.to_str().unwrap())],
            s("bad.env:2"),
        ),
        (
            vec![s("--env-file"), s("/nonexistent.env")],
            s("cannot read --env-file"),
        ),
        (vec![s("--bind"), s("localhost:80")], s("bad --bind")),
        (
            vec![s("--bind"), s("192.0.2.1")],
            s("not an address of this host"),
        ),
        (
            vec![s("--exclude"), s("a[")],
            s("bad --exclude pattern \"a[\""),
        ),
        (
            vec![s("--exclude"), s("hello.md")],
            s("is left out of the payload by --exclude \"hello.md\""),
        ),
        (vec![s("--timeout"), s("0")], s("bad --timeout")),
        (vec![s("--platform"), s("linux")], s("bad --platform")),
        (vec![s("--image"), s("-bad")], s("bad --image")),
        (
            vec![s("--image"), s("Ghcr.io/Fractalic-AI/fractalic:latest")],
            s("\"Fractalic-AI\" has uppercase letters"),
        ),
        (
            vec![s("--image"), s("app:-x")],
            s("tag \"-x\" is not valid"),
        ),
        (vec![s("--pull"), s("sometimes")], s("sometimes")),
    ];
    // Cases in the odd folder: (script name, expected).
    let odd_cases = [
        (
            "run",
            "left out of the payload by the default exclude pattern \"*.ctx\"",
        ),
        ("outside", "outside the script folder"),
        ("dangling", "which does not exist"),
        ("tab", "bad main script name \"tab.\\tx\\n8009\""),
    ];
    let mut all: Vec<(Vec<(String, String)>, String)> = Vec::new();
    for (overrides, want) in cases {
        all.push((vec![(overrides[0].clone(), overrides[1].clone())], want));
    }
    for (script, want) in odd_cases {
        all.push((
            vec![
                (s("--script-folder"), o.clone()),
                (s("--script-name"), s(script)),
            ],
            s(want),
        ));
    }
    for (overrides, want) in all {
        // Start from good flags, then let each case override some of them.
        let mut flags: Vec<(String, String)> = vec![
            (s("--script-name"), s("hello")),
            (s("--script-folder"), f.clone()),
            (s("--name"), name.clone()),
            (s("--image"), image.clone()),
        ];
        for (k, v) in &overrides {
            match flags.iter_mut().find(|(fk, _)| fk == k) {
                Some(slot) => slot.1 = v.clone(),
                None => flags.push((k.clone(), v.clone())),
            }
        }
        let case: String = overrides
            .iter()
            .map(|(k, v)| format!("{k}={}", v.chars().take(60).collect::<String>()))
            .collect::<Vec<_>>()
            .join(" ");
        let mut args: Vec<String> = vec![s("deploy"), s("docker-registry")];
        for (k, v) in flags {
            args.push(format!("{k}={v}"));
        }
        let clap_error = case.starts_with("--pull");
        // A busy --port may be the deployment's own (an update keeps its port): one read-only
        // `docker container inspect NAME` decides, after the validation's progress lines.
        let busy_port = case == format!("--port={busy}");
        for json in [false, true] {
            let mut argv: Vec<&str> = args.iter().map(String::as_str).collect();
            if json {
                argv.push("--json");
            }
            let o = publisher(&docker, &argv, &[]);
            let (out, err) = text(&o);
            assert_eq!(o.status.code(), Some(2), "{case}: {out}\n{err}");
            for secret in PLANTED {
                assert!(
                    !out.contains(secret) && !err.contains(secret),
                    "{case}: a secret leaked: {out}\n{err}"
                );
            }
            if json {
                let v: Value = serde_json::from_str(&out)
                    .unwrap_or_else(|e| panic!("{case}: not one JSON object ({e}): {out}"));
                assert_eq!(v["success"], false, "{case}");
                assert_eq!(v["error_kind"], "bad_input", "{case}");
                assert_eq!(v["exit_code"], 2, "{case}");
                let msg = v["error"].as_str().unwrap();
                assert!(msg.contains(&want), "{case}: expected {want:?} in {msg}");
                assert!(!msg.contains('\n'), "{case}: {msg:?}");
                assert_eq!(err, "", "{case}: --json prints nothing on stderr");
            } else {
                let first = if busy_port {
                    err.lines().last().unwrap_or("")
                } else {
                    err.lines().next().unwrap_or("")
                };
                assert!(
                    first.contains(&want),
                    "{case}: the first line must say {want:?}: {err}"
                );
                if !clap_error && !busy_port {
                    // One line: the error and nothing else (no progress before validation).
                    assert_eq!(err.lines().count(), 1, "{case}: {err}");
                    assert!(err.len() < 600, "{case}: {} bytes: {err}", err.len());
                    assert!(
                        err.matches("use a glob such as").count() <= 1,
                        "{case}: hint repeated: {err}"
                    );
                }
            }
        }
        let calls = support::calls(&log);
        if busy_port {
            assert!(
                calls.iter().all(|c| c.starts_with("container inspect ")),
                "{case} ran more than an inspect: {calls:?}"
            );
            // The next case starts from an empty log.
            std::fs::write(&log, "").unwrap();
        } else {
            assert!(calls.is_empty(), "{case} ran docker: {calls:?}");
        }
    }
}

#[test]
fn an_unreadable_script_folder_is_bad_input_naming_it() {
    // Needs no daemon. Root reads everything, so as root the binary runs as nobody.
    let base = tempfile::tempdir().unwrap();
    let mode = |p: &Path, m: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    };
    mode(base.path(), 0o755);
    let (docker, log) = support::untouchable_docker(base.path());
    let folder = base.path().join("scripts");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("hello.md"), HELLO).unwrap();
    std::fs::write(folder.join("settings.toml"), SETTINGS).unwrap();
    let private = folder.join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::write(private.join("notes.md"), "x").unwrap();
    mode(&folder, 0o755);
    mode(&folder.join("hello.md"), 0o644);
    mode(&folder.join("settings.toml"), 0o644);
    let as_root = std::fs::metadata("/proc/self").is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    let run = |args: &[&str]| -> Output {
        let bin = env!("CARGO_BIN_EXE_fractalic-publisher");
        let mut cmd = if as_root {
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin]);
            c
        } else {
            std::process::Command::new(bin)
        };
        cmd.arg("--docker").arg(&docker).args(args);
        cmd.env_remove("FRACTALIC_PUBLISHER_PLUGINS");
        cmd.current_dir("/");
        cmd.output().unwrap()
    };
    let f = folder.to_str().unwrap();
    let argv = [
        "deploy",
        "docker-registry",
        "--script-name",
        "hello",
        "--script-folder",
        f,
    ];
    // A directory inside the folder that cannot be listed.
    mode(&private, 0o700);
    if !as_root {
        mode(&private, 0o000);
    }
    let o = run(&argv);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}\n{err}");
    assert!(
        err.starts_with(&format!("error: cannot read {}", private.display()))
            && err.contains("Permission denied"),
        "{err}"
    );
    // A file inside that cannot be opened.
    mode(&private, 0o755);
    let closed = private.join("notes.md");
    mode(&closed, if as_root { 0o600 } else { 0o000 });
    let o = run(&argv);
    let (out, err) = text(&o);
    mode(&closed, 0o644);
    assert_eq!(o.status.code(), Some(2), "{out}\n{err}");
    assert!(
        err.starts_with(&format!("error: cannot read {}", closed.display())),
        "{err}"
    );
    // The folder itself.
    mode(&folder, if as_root { 0o711 } else { 0o311 });
    let o = run(&argv);
    let (out, err) = text(&o);
    mode(&folder, 0o755);
    assert_eq!(o.status.code(), Some(2), "{out}\n{err}");
    assert!(
        err.starts_with(&format!("error: cannot read {f}:")),
        "{err}"
    );
    assert!(support::calls(&log).is_empty(), "docker was run");
}

#[test]
fn a_docker_that_is_not_docker_is_exit_3_with_a_reason() {
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
    for (fake, want) in [
        (
            "/bin/false",
            "/bin/false failed without a word (`docker container ...` exited with code 1)",
        ),
        ("/bin/true", "/bin/true: `docker container inspect"),
    ] {
        let o = publisher(Path::new(fake), &args, &[]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(3), "{fake}: {out}\n{err}");
        let last = err.lines().last().unwrap_or("");
        assert!(
            last.contains(want) && last.contains("does not behave like the docker CLI"),
            "{fake}: {err}"
        );
        let mut json_args = args.to_vec();
        json_args.push("--json");
        let v: Value =
            serde_json::from_slice(&publisher(Path::new(fake), &json_args, &[]).stdout).unwrap();
        assert_eq!(v["error_kind"], "docker_unusable", "{fake}");
        assert_eq!(v["exit_code"], 3, "{fake}");
    }
}

#[test]
fn usage_errors_with_json_print_one_json_error() {
    let o = publisher(
        Path::new("/nonexistent/docker"),
        &[
            "deploy",
            "docker-registry",
            "--script-name",
            "x",
            "--bogus",
            "--json",
        ],
        &[],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}\n{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["success"], false);
    assert_eq!(v["error_kind"], "bad_input");
    assert_eq!(v["exit_code"], 2);
    assert!(v["deployment_id"].is_null(), "the deploy error shape: {v}");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("'--bogus'") && msg.contains("deploy --help"),
        "{msg}"
    );
    for argv in [vec!["ps", "--json", "--bogus"], vec!["stop", "--json"]] {
        let o = publisher(Path::new("/nonexistent/docker"), &argv, &[]);
        assert_eq!(o.status.code(), Some(2), "{argv:?}");
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["error_kind"], "bad_input", "{argv:?}");
        assert!(v.get("deployment_id").is_none(), "{argv:?}: {v}");
    }
    // Without --json clap speaks as usual; --help is not an error.
    let o = publisher(Path::new("/nonexistent/docker"), &["ps", "--bogus"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty() && text(&o).1.contains("Usage:"));
    let o = publisher(
        Path::new("/nonexistent/docker"),
        &["deploy", "--help", "--json"],
        &[],
    );
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o).0.contains("--script-name"));
}

#[test]
fn docker_missing_is_exit_3() {
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
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn daemon_down_is_exit_3() {
    let Some(docker) = support::docker() else {
        return;
    };
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
    // The plugin is compiled before Docker is looked for: no daemon needed.
    let o = publisher(Path::new("/nonexistent/docker"), &args, &[]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let want = format!("{}:4:", plugin.display());
    assert!(
        err.contains(&want) && err.contains("syntax error"),
        "expected {want}: {err}"
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
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
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
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
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
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
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
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
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
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

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn payload_losses_are_warned_and_symlinks_follow_the_policy() {
    let Some(docker) = support::docker() else {
        return;
    };
    let case = Case::new("fp-deploy-links", true);
    let (folder, name, image) = (&case.folder, &case.name, &case.image);
    let root = folder.path();
    // The main script is an in-folder symlink: it is deployed as a regular file.
    std::fs::rename(root.join("hello.md"), root.join("hello-v2.md")).unwrap();
    std::os::unix::fs::symlink("hello-v2.md", root.join("hello.md")).unwrap();
    folder.write("lib/helper.md", "# helper\n");
    std::os::unix::fs::symlink("lib/helper.md", root.join("alias.md")).unwrap();
    std::os::unix::fs::symlink(root.join("lib"), root.join("libdir")).unwrap();
    let host_secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(host_secret.path(), "HOST-ONLY-CONTENT").unwrap();
    std::os::unix::fs::symlink(host_secret.path(), root.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink("missing.md", root.join("dangling.md")).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(root.join("pipe"))
        .status()
        .unwrap();
    assert!(made.success());
    let _socket = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();

    let v = deploy_ok(&docker, folder, name, &[]);
    let warnings: Vec<String> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    let want = [
        "symlink \"leak.txt\" -> ",
        "symlink \"dangling.md\" -> \"missing.md\" points at nothing",
        "\"pipe\" is a FIFO; left out of the payload",
        "\"sock\" is a socket; left out of the payload",
    ];
    for w in want {
        assert_eq!(
            warnings.iter().filter(|x| x.contains(w)).count(),
            1,
            "{w:?} in {warnings:#?}"
        );
    }
    assert!(
        warnings
            .iter()
            .any(|x| x.contains("leaves the script folder; not followed and not copied")),
        "{warnings:#?}"
    );
    assert_eq!(warnings.len(), 4, "{warnings:#?}");

    let stat = exec(
        &docker,
        name,
        &[
            "stat",
            "-c",
            "%n|%F",
            "/payload/hello/hello.md",
            "/payload/hello/alias.md",
            "/payload/hello/libdir",
        ],
    );
    assert!(
        stat.contains("/payload/hello/hello.md|regular file"),
        "{stat}"
    );
    assert!(
        stat.contains("/payload/hello/alias.md|symbolic link"),
        "{stat}"
    );
    assert!(
        stat.contains("/payload/hello/libdir|symbolic link"),
        "{stat}"
    );
    let link = exec(&docker, name, &["readlink", "/payload/hello/libdir"]);
    assert_eq!(link.trim(), "lib", "in-folder links are stored relative");
    assert_eq!(
        exec(&docker, name, &["cat", "/payload/hello/alias.md"]),
        "# helper\n"
    );
    let listing = exec(&docker, name, &["ls", "-a", "/payload/hello"]);
    for gone in ["leak.txt", "dangling.md", "pipe", "sock"] {
        assert!(!listing.contains(gone), "{gone} copied: {listing}");
    }
    // The script runs.
    let url = v["url"].as_str().unwrap();
    let r = post_execute(url, "/payload/hello/hello.md");
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["return_content"].as_str().unwrap(), RETURNED);

    // In text mode the same warnings are progress lines (a second deploy under the same name
    // updates it: nothing changed, nothing touched, after printing them).
    let o = publisher(&docker, &deploy_args(root, name, image), &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(out.contains("No changes"), "{out}");
    for w in want {
        assert!(
            err.lines()
                .any(|l| l.starts_with("warning: ") && l.contains(w)),
            "{w:?} in {err}"
        );
    }
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn a_main_script_that_did_not_arrive_fails_the_deploy() {
    let Some(docker) = support::docker() else {
        return;
    };
    // A docker whose payload copy loses everything but a directory entry: the container gets
    // no script, as a broken copy would leave it. Only the in-container check can notice.
    let dir = tempfile::tempdir().unwrap();
    let empty_tar = dir.path().join("empty.tar");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, "payload/", std::io::empty()).unwrap();
    std::fs::write(&empty_tar, b.into_inner().unwrap()).unwrap();
    let log = dir.path().join("calls");
    let lossy = crate::managed::docker_wrapper(
        dir.path(),
        &docker,
        &log,
        &format!(
            "if [ \"$1\" = cp ] && [ \"$2\" = - ]; then cat > /dev/null; exec '{}' cp - \"$3\" < '{}'; fi",
            docker.display(),
            empty_tar.display()
        ),
    );
    let (out, err) = failing_deploy(&lossy, "fp-deploy-lost", &[]);
    assert!(
        err.contains("has no regular file /payload/hello/hello.md"),
        "{out}\n{err}"
    );
    let calls = crate::managed::logged_calls(&log);
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("cp ") && c.ends_with(":/payload/hello/hello.md -")),
        "{calls:?}"
    );
}
