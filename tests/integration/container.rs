//! The tool inside a container, as users run it: a socket-mounted CI job container (`FROM
//! scratch`, busybox, the docker CLI and the static binary) on the default bridge network,
//! whose deployments are siblings it cannot reach on its own loopback. Images are built once
//! per test run from local files, named uniquely and removed when the last test using them ends.

use crate::managed::{assert_code, out};
use crate::support::{self, ContainerGuard};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Mutex, OnceLock};

/// The static binary: `FRACTALIC_PUBLISHER_STATIC`, else built once by scripts/build-static.sh.
pub(crate) fn static_binary() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("FRACTALIC_PUBLISHER_STATIC").filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-static.sh");
        let o = std::process::Command::new(&script)
            .output()
            .map_err(|e| format!("{}: {e}", script.display()))?;
        let stdout = String::from_utf8_lossy(&o.stdout);
        match (o.status.success(), stdout.lines().last()) {
            (true, Some(p)) => Ok(PathBuf::from(p.trim())),
            _ => Err(format!(
                "scripts/build-static.sh failed: {}",
                String::from_utf8_lossy(&o.stderr)
            )),
        }
    });
    r.clone().unwrap_or_else(|e| panic!("{e}"))
}

fn is_static(file: &Path) -> bool {
    let o = std::process::Command::new("ldd").arg(file).output();
    o.is_ok_and(|o| {
        let t = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        t.contains("not a dynamic executable") || t.contains("statically linked")
    })
}

/// A statically linked docker CLI to put into `FROM scratch` images: the one the tests use, or
/// another on this machine.
pub(crate) fn static_docker_cli(docker: &Path) -> PathBuf {
    let given = std::fs::canonicalize(docker).unwrap_or_else(|_| docker.to_path_buf());
    [
        given,
        "/usr/local/bin/docker".into(),
        "/usr/bin/docker".into(),
    ]
    .into_iter()
    .find(|p| p.is_file() && is_static(p))
    .unwrap_or_else(|| {
        panic!("no statically linked docker CLI found (the test images are FROM scratch)")
    })
}

/// A statically linked busybox.
fn busybox() -> PathBuf {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file() && is_static(p))
        .expect("a statically linked busybox (apt-get install busybox-static)")
}

/// A test image built at most once while tests use it, and removed when the last lease ends.
pub(crate) struct ImageLease {
    tag: String,
    slot: &'static Mutex<(usize, Option<String>)>,
}

impl ImageLease {
    /// Leases the image in `slot`, building it with `build(tag)` if no test holds it now.
    pub(crate) fn take(
        slot: &'static Mutex<(usize, Option<String>)>,
        prefix: &str,
        build: impl FnOnce(&str),
    ) -> ImageLease {
        let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
        if s.1.is_none() {
            let tag = format!("{}:test", support::unique_name(prefix));
            build(&tag);
            s.1 = Some(tag);
        }
        s.0 += 1;
        ImageLease {
            tag: s.1.clone().unwrap(),
            slot,
        }
    }

    pub(crate) fn tag(&self) -> &str {
        &self.tag
    }
}

impl Drop for ImageLease {
    fn drop(&mut self) {
        let mut s = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        s.0 -= 1;
        if s.0 == 0 {
            if let (Some(tag), Some(docker)) = (s.1.take(), support::docker()) {
                let _ = support::run_docker(&docker, &["rmi", "-f", &tag]);
            }
        }
    }
}

/// Builds `dockerfile` with `files` (name in the context, source) as the context.
pub(crate) fn build_image(docker: &Path, tag: &str, dockerfile: &str, files: &[(&str, &Path)]) {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    for (name, src) in files {
        std::fs::copy(src, ctx.path().join(name))
            .unwrap_or_else(|e| panic!("copy {} into the build context: {e}", src.display()));
    }
    let o = std::process::Command::new(docker)
        .args(["build", "-q", "-t", tag])
        .arg(ctx.path())
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "docker build {tag}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The CI job image: `FROM scratch`, busybox, the docker CLI, the static binary; no HOME, no
/// /tmp, no /etc/nsswitch.conf.
fn job_image(docker: &Path) -> ImageLease {
    static SLOT: Mutex<(usize, Option<String>)> = Mutex::new((0, None));
    ImageLease::take(&SLOT, "fp-ci-job", |tag| {
        let bin = static_binary();
        let cli = static_docker_cli(docker);
        let bb = busybox();
        build_image(
            docker,
            tag,
            "FROM scratch\n\
             COPY busybox /bin/busybox\n\
             COPY docker /usr/local/bin/docker\n\
             COPY fractalic-publisher /usr/local/bin/fractalic-publisher\n\
             RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
             ENV PATH=/usr/local/bin:/bin\n\
             CMD [\"sleep\", \"600\"]\n",
            &[
                ("busybox", &bb),
                ("docker", &cli),
                ("fractalic-publisher", &bin),
            ],
        );
    })
}

/// A running job container of the CI image with the host's socket and `src` mounted at /src.
struct Job {
    guard: ContainerGuard,
    docker: PathBuf,
    _image: ImageLease,
}

impl Job {
    fn start(docker: &Path, src: &Path, network: Option<&str>) -> Job {
        let image = job_image(docker);
        let name = support::unique_name("fp-ci-job");
        let guard = ContainerGuard::new(&name);
        let volume = format!("{}:/src", src.display());
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &name,
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            "-v",
            &volume,
        ];
        if let Some(n) = network {
            args.extend(["--network", n]);
        }
        args.push(image.tag());
        support::docker_ok(docker, &args);
        Job {
            guard,
            docker: docker.to_path_buf(),
            _image: image,
        }
    }

    /// `fractalic-publisher ARGS` inside the job container.
    fn publisher(&self, args: &[&str]) -> Output {
        let mut argv = vec!["exec", self.guard.name(), "fractalic-publisher"];
        argv.extend_from_slice(args);
        support::run_docker(&self.docker, &argv)
    }
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", out(o).0))
}

/// The demo script folder, copied so the test can change it.
fn demo_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo/hello-fractalic");
    let dest = dir.path().join("hello-fractalic");
    std::fs::create_dir(&dest).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dest.join(e.file_name())).unwrap();
    }
    // The job container reads it as root; the folder must be traversable.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// POST `url`/execute for the demo script from this host; the parsed answer.
pub(crate) fn execute(url: &str, file: &str) -> Value {
    let r = ureq::post(&format!("{url}/execute"))
        .timeout(std::time::Duration::from_secs(30))
        .send_json(serde_json::json!({ "filename": file }))
        .unwrap_or_else(|e| panic!("POST {url}/execute: {e}"));
    r.into_json().unwrap()
}

fn deploy_args<'a>(name: &'a str, image: &'a str) -> Vec<&'a str> {
    vec![
        "deploy",
        "docker-registry",
        "--script-name",
        "hello",
        "--script-folder",
        "/src/hello-fractalic",
        "--name",
        name,
        "--image",
        image,
        "--pull",
        "missing",
    ]
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn a_ci_job_container_deploys_updates_rolls_back_and_removes_on_the_bridge() {
    let Some(docker) = support::docker() else {
        return;
    };
    let image = support::pull_stand_in(&docker);
    let src = demo_copy();
    let job = Job::start(&docker, src.path(), None);
    let name = support::unique_name("fp-ci-dep");
    let _dep = ContainerGuard::new(&name);

    // Deploy: probed at the sibling's bridge address, shown at the host's URL.
    let o = job.publisher(&deploy_args(&name, &image));
    assert_code(&o, 0);
    let (so, se) = out(&o);
    assert!(so.contains("http://localhost:"), "{so}");
    let probing = se
        .lines()
        .find(|l| l.contains("Probing http://localhost:"))
        .unwrap_or_else(|| panic!("progress names no probe address:\n{se}"));
    assert!(
        probing.contains(":8001 (container ") && probing.contains("on network bridge"),
        "{probing}"
    );

    let o = job.publisher(&["status", &name, "--json"]);
    assert_code(&o, 0);
    let v = json(&o);
    assert_eq!(v["healthy"], true, "{v}");
    let url = v["url"].as_str().unwrap().to_string();
    assert!(url.starts_with("http://localhost:"), "{url}");
    let r = execute(&url, "/payload/hello/hello.md");
    assert_eq!(r["success"], true, "{r}");
    assert!(
        r["return_content"]
            .as_str()
            .unwrap_or("")
            .contains("hello from fractalic shell"),
        "{r}"
    );

    // An update (the script changed) from the job container.
    let md = src.path().join("hello-fractalic/hello.md");
    let text = std::fs::read_to_string(&md).unwrap();
    std::fs::write(
        &md,
        text.replace("hello from fractalic shell", "updated from CI"),
    )
    .unwrap();
    let mut args = deploy_args(&name, &image);
    args.push("--json");
    let o = job.publisher(&args);
    assert_code(&o, 0);
    assert_eq!(json(&o)["url"].as_str(), Some(url.as_str()));
    let r = execute(&url, "/payload/hello/hello.md");
    assert!(
        r["return_content"]
            .as_str()
            .unwrap_or("")
            .contains("updated from CI"),
        "{r}"
    );

    let o = job.publisher(&["rollback", &name]);
    assert_code(&o, 0);
    let r = execute(&url, "/payload/hello/hello.md");
    assert!(
        r["return_content"]
            .as_str()
            .unwrap_or("")
            .contains("hello from fractalic shell"),
        "{r}"
    );

    let o = job.publisher(&["ps", "--json"]);
    assert_code(&o, 0);
    let rows = json(&o);
    let row = rows
        .as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == name.as_str()))
        .unwrap_or_else(|| panic!("ps lists no {name}: {rows}"));
    assert_eq!(row["health"], "healthy", "{row}");

    let o = job.publisher(&["rm", "--force", &name]);
    assert_code(&o, 0);
    assert!(crate::managed::state(&docker, &name).is_none());
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn a_job_container_on_another_network_probes_through_the_engine() {
    let Some(docker) = support::docker() else {
        return;
    };
    let image = support::pull_stand_in(&docker);
    let net = support::unique_name("fp-ci-net");
    support::docker_ok(&docker, &["network", "create", &net]);
    struct NetGuard(PathBuf, String);
    impl Drop for NetGuard {
        fn drop(&mut self) {
            let _ = support::run_docker(&self.0, &["network", "rm", &self.1]);
        }
    }
    // Declared before the job container, so it is dropped (network removed) after it.
    let _net = NetGuard(docker.clone(), net.clone());
    let src = demo_copy();
    let job = Job::start(&docker, src.path(), Some(&net));
    let name = support::unique_name("fp-ci-dep");
    let _dep = ContainerGuard::new(&name);

    let o = job.publisher(&deploy_args(&name, &image));
    assert_code(&o, 0);
    let (_, se) = out(&o);
    assert!(
        se.contains(&format!(
            "`docker exec {name} curl http://127.0.0.1:8001/health`"
        )),
        "{se}"
    );
    let o = job.publisher(&["status", &name, "--json"]);
    assert_code(&o, 0);
    let v = json(&o);
    assert_eq!(v["healthy"], true, "{v}");
    let url = v["url"].as_str().unwrap().to_string();
    assert_eq!(execute(&url, "/payload/hello/hello.md")["success"], true);
    assert_code(&job.publisher(&["rm", "--force", &name]), 0);
}

/// The job image run as uid 1000 without the socket's group: one line naming the fix.
#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn a_user_without_the_sockets_group_is_told_the_group_add_fix() {
    let Some(docker) = support::docker() else {
        return;
    };
    let gid = socket_gid();
    if gid == 0 {
        // A root-group socket: a uid-1000 user is refused as well, but the fix differs.
        eprintln!("SKIPPED: the socket's group is root here");
        return;
    }
    let image = job_image(&docker);
    let o = support::run_docker(
        &docker,
        &[
            "run",
            "--rm",
            "--user",
            "1000:1000",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            image.tag(),
            "fractalic-publisher",
            "ps",
        ],
    );
    assert_code(&o, 3);
    let (so, se) = out(&o);
    assert!(so.is_empty(), "{so}");
    assert_eq!(se.lines().count(), 1, "{se}");
    assert!(
        se.contains(&format!("--group-add {gid}")) && se.contains("permission denied"),
        "{se}"
    );
    // With the group it works.
    let group = gid.to_string();
    let o = support::run_docker(
        &docker,
        &[
            "run",
            "--rm",
            "--user",
            "1000:1000",
            "--group-add",
            &group,
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            image.tag(),
            "fractalic-publisher",
            "ps",
            "--json",
        ],
    );
    assert_code(&o, 0);
}

fn socket_gid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/var/run/docker.sock").map_or(0, |m| m.gid())
}

/// The `command=` line of the supervisord program the Fractalic image runs.
fn program_line() -> String {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts/fractalic-image/fractalic-publisher.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("command="))
        .expect("a command= line")
        .trim()
        .to_string()
}

/// The Docker layout's test image: the stand-in image (the real Fractalic image cannot be
/// pulled here) plus the docker CLI and the static binary; its start script stands in for
/// supervisord: the stand-in backend on the moved port, then `program_line()` verbatim.
fn layout_image(docker: &Path, stand_in: &str) -> ImageLease {
    static SLOT: Mutex<(usize, Option<String>)> = Mutex::new((0, None));
    ImageLease::take(&SLOT, "fp-layout", |tag| {
        let command = program_line();
        let backend = command
            .split_whitespace()
            .skip_while(|w| *w != "--backend")
            .nth(1)
            .and_then(|u| u.strip_prefix("http://"))
            .expect("--backend http://ADDR:PORT in the program line")
            .to_string();
        let dir = tempfile::tempdir().unwrap();
        let start = dir.path().join("start");
        std::fs::write(
            &start,
            format!(
                "#!/bin/sh\n\
                 fractalic-stand-in backend --listen {backend} --root /fractalic >/tmp/backend.log 2>&1 &\n\
                 cd /fractalic\n\
                 exec {command}\n"
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&start, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = static_binary();
        let cli = static_docker_cli(docker);
        build_image(
            docker,
            tag,
            &format!(
                "FROM {stand_in}\n\
                 COPY docker /usr/local/bin/docker\n\
                 COPY fractalic-publisher /usr/local/bin/fractalic-publisher\n\
                 COPY start /usr/local/bin/layout-start\n\
                 USER appuser\n\
                 WORKDIR /fractalic\n\
                 CMD [\"/usr/local/bin/layout-start\"]\n"
            ),
            &[
                ("docker", &cli),
                ("fractalic-publisher", &bin),
                ("start", &start),
            ],
        );
    })
}

/// The layout container, running, its port 8000 published on the host's 127.0.0.1 only.
struct Layout {
    guard: ContainerGuard,
    docker: PathBuf,
    base: String,
    _image: ImageLease,
}

impl Layout {
    fn start(docker: &Path) -> Layout {
        let stand_in = support::pull_stand_in(docker);
        let image = layout_image(docker, &stand_in);
        let name = support::unique_name("fp-layout");
        let guard = ContainerGuard::new(&name);
        let group = socket_gid().to_string();
        support::docker_ok(
            docker,
            &[
                "run",
                "-d",
                "--name",
                &name,
                "--network",
                "bridge",
                "-p",
                "127.0.0.1::8000",
                "-v",
                "/var/run/docker.sock:/var/run/docker.sock",
                "--group-add",
                &group,
                image.tag(),
            ],
        );
        let addr = support::published(docker, &name, 8000);
        let base = format!("http://{addr}");
        let up = support::wait_http(
            &format!("{base}/health"),
            std::time::Duration::from_secs(30),
        );
        assert_eq!(
            up.map(|u| u.0),
            Some(200),
            "serve in the layout did not come up: {}",
            String::from_utf8_lossy(&support::run_docker(docker, &["logs", &name]).stderr)
        );
        Layout {
            guard,
            docker: docker.to_path_buf(),
            base,
            _image: image,
        }
    }

    /// Writes the demo script into /fractalic/hello-fractalic inside (owned by appuser).
    fn put_demo(&self, hello_md: &str) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo/hello-fractalic");
        let settings = std::fs::read(dir.join("settings.toml")).unwrap();
        use support::Entry;
        support::copy_into(
            &self.docker,
            self.guard.name(),
            &[
                Entry::Dir("/fractalic/hello-fractalic", 0o755),
                Entry::File(
                    "/fractalic/hello-fractalic/hello.md",
                    hello_md.as_bytes(),
                    0o644,
                ),
                Entry::File("/fractalic/hello-fractalic/settings.toml", &settings, 0o600),
            ],
        );
    }

    /// The UI's stream POST; the SSE events.
    fn ui_deploy(&self, body: &Value) -> Vec<Value> {
        let r = ureq::post(&format!("{}/api/deploy/docker-registry/stream", self.base))
            .timeout(std::time::Duration::from_secs(180))
            .set("Origin", "http://localhost:3000")
            .set("Content-Type", "application/json")
            .set("Accept", "text/event-stream")
            .send_string(&body.to_string())
            .unwrap_or_else(|e| panic!("the UI's deploy POST: {e}"));
        r.into_string()
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect()
    }

    fn api(&self, method: &str, path: &str) -> (u16, Value) {
        let r = ureq::request(method, &format!("{}{path}", self.base))
            .timeout(std::time::Duration::from_secs(180))
            .call();
        let r = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = r.status();
        let text = r.into_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

fn ui_body(name: &str, image: &str) -> Value {
    let (repo, tag) = image.rsplit_once(':').unwrap();
    serde_json::json!({
        "image_name": repo,
        "image_tag": tag,
        "script_name": "hello",
        "script_folder": "hello-fractalic",
        "container_name": name,
        "pull": "missing",
    })
}

const DEMO_MD: &str = "# Demo task {id=demo-task}\n\n@shell\nprompt: echo \"hello from the layout\"\nuse-header: \"# Out {id=out}\"\n\n@return\nblock: out\n";

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn the_docker_layout_deploys_from_the_ui_and_forwards_the_rest_to_the_backend() {
    let Some(docker) = support::docker() else {
        return;
    };
    let layout = Layout::start(&docker);
    let image = support::stand_in_image();
    layout.put_demo(DEMO_MD);

    // The UI's file tree and a streamed command go to the backend inside, through serve.
    let (status, listed) = layout.api("GET", "/list_directory/?path=/fractalic");
    assert_eq!(status, 200, "{listed}");
    assert!(listed.to_string().contains("hello-fractalic"), "{listed}");
    let r = ureq::post(&format!("{}/ws/run_command", layout.base))
        .set("Content-Type", "application/json")
        .send_string(r#"{"command": "echo first; echo second", "path": "."}"#)
        .unwrap();
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.into_string().unwrap(), "first\nsecond\n");

    // The UI's deploy: a healthy sibling, reachable from the host at the URL given.
    let name = support::unique_name("fp-layout-dep");
    let _dep = ContainerGuard::new(&name);
    let events = layout.ui_deploy(&ui_body(&name, &image));
    let last = events.last().expect("events");
    assert_eq!(last["stage"], "completed", "{events:?}");
    let url = last["result"]["endpoint_url"].as_str().unwrap().to_string();
    assert!(url.starts_with("http://localhost:"), "{url}");
    let r = execute(&url, "/payload/hello/hello.md");
    assert!(
        r["return_content"]
            .as_str()
            .unwrap_or("")
            .contains("hello from the layout"),
        "{r}"
    );

    // An update from the UI: the script changed inside the layout.
    layout.put_demo(&DEMO_MD.replace("hello from the layout", "updated in the layout"));
    let events = layout.ui_deploy(&ui_body(&name, &image));
    assert_eq!(events.last().unwrap()["stage"], "completed", "{events:?}");
    let r = execute(&url, "/payload/hello/hello.md");
    assert!(
        r["return_content"]
            .as_str()
            .unwrap_or("")
            .contains("updated in the layout"),
        "{r}"
    );

    let (status, v) = layout.api("POST", &format!("/api/deployments/{name}/rollback"));
    assert_eq!(status, 200, "{v}");
    let r = execute(&url, "/payload/hello/hello.md");
    assert!(
        r["return_content"]
            .as_str()
            .unwrap_or("")
            .contains("hello from the layout"),
        "{r}"
    );
    let (status, v) = layout.api("GET", &format!("/api/deployments/{name}"));
    assert_eq!((status, &v["healthy"]), (200, &Value::Bool(true)), "{v}");

    let (status, v) = layout.api("POST", &format!("/api/deployments/{name}/stop"));
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        crate::managed::state(&docker, &name).as_deref(),
        Some("exited")
    );
    let (status, v) = layout.api("DELETE", &format!("/api/deployments/{name}?force=true"));
    assert_eq!(status, 200, "{v}");
    assert!(crate::managed::state(&docker, &name).is_none());
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn a_layout_deploy_that_cannot_succeed_reports_its_real_reason_before_the_timeout() {
    let Some(docker) = support::docker() else {
        return;
    };
    let layout = Layout::start(&docker);
    layout.put_demo(DEMO_MD);
    // An image whose server dies at once: the reason is its exit, not a probe timeout.
    let stand_in = support::stand_in_image();
    let crasher = format!("{}:test", support::unique_name("fp-crasher"));
    build_image(
        &docker,
        &crasher,
        &format!(
            "FROM {stand_in}\nCMD [\"sh\", \"-c\", \"echo the server gave up >&2; exit 3\"]\n"
        ),
        &[],
    );
    struct Rmi(PathBuf, String);
    impl Drop for Rmi {
        fn drop(&mut self) {
            let _ = support::run_docker(&self.0, &["rmi", "-f", &self.1]);
        }
    }
    let _rmi = Rmi(docker.clone(), crasher.clone());
    let name = support::unique_name("fp-layout-bad");
    let _dep = ContainerGuard::new(&name);
    let mut body = ui_body(&name, &crasher);
    body["timeout"] = Value::from(120);
    let t0 = std::time::Instant::now();
    let events = layout.ui_deploy(&body);
    let last = events.last().expect("events");
    assert_eq!(last["stage"], "error", "{events:?}");
    let text = last.to_string();
    assert!(text.contains("exited with code 3"), "{text}");
    assert!(text.contains("the server gave up"), "{text}");
    // Not the 120 s probe timeout on an unreachable loopback.
    assert!(t0.elapsed() < std::time::Duration::from_secs(120));
    assert!(!text.contains("did not answer 2xx"), "{text}");
}

#[test]
fn man_prints_the_man_page_of_every_subcommand() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_fractalic-publisher"))
        .arg("man")
        .output()
        .unwrap();
    assert_code(&o, 0);
    let (page, err) = out(&o);
    assert!(err.is_empty(), "{err}");
    assert!(page.contains(".TH fractalic-publisher 1"), "{page}");
    assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
    for sub in ["deploy", "serve", "rollback", "completions", "man"] {
        let entry = format!("fractalic\\-publisher\\-{sub}(1)");
        assert!(page.contains(&entry), "no {entry} in:\n{page}");
    }
}
