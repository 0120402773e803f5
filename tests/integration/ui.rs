//! What a user of the unmodified Fractalic UI (fractalic-ui `components/DeployModal.tsx`,
//! `hooks/useDeployment.ts`, `utils/deployUtils.ts`) sees: its rules replayed on our own events
//! (how it parses the stream, the stages it knows, the result fields its dialog reads), and a
//! refused request as its `fetch` shows it (`HTTP ${status}: ${statusText}`), with Node's fetch.

use crate::serve::{self, Served};
use crate::support::{self, ContainerGuard};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

/// `getStageInfo`: the stages the dialog has a label for (others show "Unknown").
const STAGE_LABELS: &[(&str, &str)] = &[
    ("validating", "Validating"),
    ("pulling_image", "Pulling Image"),
    ("preparing_files", "Preparing Files"),
    ("creating_container", "Creating Container"),
    ("starting_container", "Starting Container"),
    ("completed", "Completed"),
    ("error", "Error"),
];

fn string_at<'a>(v: &'a Value, path: &str) -> &'a str {
    let mut cur = v;
    for k in path.split('.') {
        cur = &cur[k];
    }
    cur.as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| panic!("{path} must be a non-empty string (the dialog shows it): {v}"))
}

/// The `result` as the dialog reads it: every field of `DeploymentStatus.result` and
/// `DeploymentMetadata` present with the type the UI declares, and the values it puts in
/// links and copy buttons usable.
pub(crate) fn assert_complete_result(r: &Value) {
    assert_eq!(r["success"], true, "{r}");
    string_at(r, "deployment_id");
    let url = string_at(r, "endpoint_url");
    assert!(
        url.starts_with("http://") || url.starts_with("https://"),
        "{url}"
    );
    let m = &r["metadata"];
    for k in [
        "ai_server.host",
        "ai_server.health_url",
        "ai_server.docs_url",
        "deployment.script_name",
        "deployment.script_path",
        "deployment.container_name",
        "deployment.container_id",
        "api.endpoint",
        "api.sample_curl",
        "api.example_payload.filename",
        "container.logs_command",
        "container.stop_command",
        "container.remove_command",
        "services.ai_server",
        "services.mcp_manager",
    ] {
        string_at(m, k);
    }
    assert!(
        m["ai_server"]["port"].as_u64().is_some_and(|p| p > 0),
        "{m}"
    );
    assert!(string_at(m, "ai_server.docs_url").starts_with(url));
    assert!(string_at(m, "api.endpoint").starts_with(url));
    assert!(string_at(m, "api.sample_curl").contains(string_at(m, "api.example_payload.filename")));
}

/// Replays `useDeployment`'s reading of a stream body: split on `\n`, every `data: ` line is
/// JSON, `parseDeploymentEvent` keeps only objects with a truthy `deployment_id` and `stage`
/// and a numeric `progress`, and the first `completed` or `error` event ends it. Then checks
/// what the dialog draws from those events; returns the events it kept.
pub(crate) fn replay_ui(body: &str, want_success: bool) -> Vec<Value> {
    let mut events = Vec::new();
    for line in body.split('\n') {
        let Some(data) = line.strip_prefix("data: ") else {
            assert!(
                line.is_empty() || line.starts_with("id: ") || line.starts_with(':'),
                "a line the UI would ignore: {line:?}"
            );
            continue;
        };
        let v: Value = serde_json::from_str(data.trim())
            .unwrap_or_else(|e| panic!("the UI's JSON.parse fails ({e}): {data}"));
        assert!(
            v["deployment_id"].as_str().is_some_and(|s| !s.is_empty())
                && v["stage"].as_str().is_some_and(|s| !s.is_empty())
                && v["progress"].is_number(),
            "parseDeploymentEvent drops it: {v}"
        );
        let stage = v["stage"].as_str().unwrap().to_string();
        assert!(
            STAGE_LABELS.iter().any(|(s, _)| *s == stage),
            "getStageInfo({stage}) is Unknown"
        );
        string_at(&v, "message");
        events.push(v);
        if stage == "completed" || stage == "error" {
            break;
        }
    }
    serve::assert_monotonic(&events);
    let last = events.last().expect("at least one event");
    let before = &events[..events.len() - 1];
    for e in before {
        // The dialog draws the URL box whenever `result` is set, and its error box whenever
        // `error` is: neither may appear before the end.
        assert!(e.get("result").is_none(), "result before the end: {e}");
        assert!(e.get("error").is_none(), "error before the end: {e}");
    }
    if want_success {
        assert_eq!(last["stage"], "completed", "{last}");
        assert_eq!(last["progress"], 100, "getProgressColor: green only at 100");
        assert!(
            last.get("error").is_none(),
            "the error box would show: {last}"
        );
        assert_complete_result(&last["result"]);
    } else {
        assert_eq!(last["stage"], "error", "{last}");
        string_at(last, "error");
        // No result, or a complete one: the dialog draws the "API Endpoints / Main URL" box
        // (with copy and open buttons) whenever there is one.
        if let Some(r) = last.get("result") {
            assert_complete_result(r);
        }
    }
    events
}

/// POSTs the stream endpoint as the UI does and returns the raw body.
fn ui_post(url: &str, body: &Value) -> String {
    let r = serve::agent()
        .post(&format!("{url}/api/deploy/docker-registry/stream"))
        .set("Content-Type", "application/json")
        .set("Accept", "text/event-stream")
        .send_string(&body.to_string())
        .unwrap_or_else(|e| panic!("the UI would show an HTTP error: {e}"));
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    r.into_string().unwrap()
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn the_ui_reads_a_success_and_a_failure_as_its_dialog_expects() {
    let Some(docker) = support::docker() else {
        return;
    };
    support::pull_stand_in(&docker);
    let s = Served::start(&docker, &[]);
    let folder = s.folder("ui-contract");
    let f = folder.to_str().unwrap();

    let name = support::unique_name("fp-ui-ok");
    let _g = ContainerGuard::new(&name);
    let body = ui_post(&s.url, &serve::deploy_body(f, &name, json!({})));
    let events = replay_ui(&body, true);
    let r = &events.last().unwrap()["result"];
    let real = support::docker_ok(&docker, &["inspect", "-f", "{{.Id}}", &name]);
    assert!(real
        .trim()
        .starts_with(string_at(r, "metadata.deployment.container_id")));

    let bad = support::unique_name("fp-ui-bad");
    let _g2 = ContainerGuard::new(&bad);
    let body = ui_post(
        &s.url,
        &serve::deploy_body(
            f,
            &bad,
            json!({"env_vars": {"STAND_IN_HEALTH": "unhealthy"}, "timeout": 3}),
        ),
    );
    let events = replay_ui(&body, false);
    let last = events.last().unwrap();
    assert!(
        last.get("result").is_none(),
        "a failed deploy has no result: {last}"
    );
    assert_eq!(last["failure"]["success"], false, "{last}");
    assert!(string_at(last, "error").contains("removed"), "{last}");
}

/// Node's `fetch` (undici, what the browser's fetch exposes too) against `serve`: returns
/// `[status, statusText, body]`. None (after a SKIPPED line) without node, unless CI=true.
pub(crate) fn node_fetch(
    url: &str,
    method: &str,
    body: Option<&Value>,
) -> Option<(u16, String, String)> {
    let script = r#"
const [url, method, body] = process.argv.slice(1);
const init = { method, headers: { 'Content-Type': 'application/json', 'Accept': 'text/event-stream' } };
if (body) init.body = body;
fetch(url, init).then(async (r) => {
  const text = await r.text();
  process.stdout.write(JSON.stringify([r.status, r.statusText, text]));
}).catch((e) => { console.error(String(e)); process.exit(1); });
"#;
    let body = body.map(Value::to_string).unwrap_or_default();
    let o = match Command::new("node")
        .args(["-e", script, url, method, &body])
        .output()
    {
        Ok(o) => o,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but node cannot run: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: needs node ({e}); it did not run");
            return None;
        }
    };
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: (u16, String, String) = serde_json::from_slice(&o.stdout).unwrap();
    Some(v)
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn a_refused_deploy_says_why_in_the_status_text_the_ui_shows() {
    let dir = tempfile::tempdir().unwrap();
    let (docker, calls) = support::untouchable_docker(dir.path());
    let s = Served::start(&docker, &[]);
    let folder = s.root.path().join("hello-ui");
    write(&folder, "other.md", serve::HELLO);
    let url = format!("{}/api/deploy/docker-registry/stream", s.url);
    // What createDeploymentPayload sends.
    let payload = json!({
        "image_name": "ghcr.io/fractalic-ai/fractalic",
        "image_tag": "latest",
        "script_name": "my-script",
        "script_folder": folder.to_str().unwrap(),
    });
    let Some((status, text, body)) = node_fetch(&url, "POST", Some(&payload)) else {
        return;
    };
    assert_eq!(status, 400, "{body}");
    // The UI throws `HTTP ${status}: ${statusText}`: the reason must be in statusText.
    let shown = format!("HTTP {status}: {text}");
    assert!(
        shown.starts_with(&format!(
            "HTTP 400: no main script \"my-script\" in {}",
            folder.display()
        )),
        "{shown}"
    );
    // The JSON body is as before.
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["detail"].as_str().unwrap(), text, "{v}");
    assert_eq!(v["field"], "script_name");
    assert!(text.is_ascii() && !text.contains(['\r', '\n']), "{text:?}");

    // Other refusals too: invalid JSON, a folder outside the root, an unknown plugin.
    let (status, text, _) = node_fetch(
        &format!("{}/api/deploy/nope/stream", s.url),
        "POST",
        Some(&payload),
    )
    .unwrap();
    assert_eq!(status, 404);
    assert!(text.contains("nope"), "{text}");
    let outside = json!({"script_name": "x", "script_folder": "/"});
    let (status, text, _) = node_fetch(&url, "POST", Some(&outside)).unwrap();
    assert_eq!(status, 403);
    assert!(
        text.contains("outside the folders this server may deploy from"),
        "{text}"
    );
    // Success answers keep the standard phrase.
    let (status, text, _) = node_fetch(&format!("{}/health", s.url), "GET", None).unwrap();
    assert_eq!((status, text.as_str()), (200, "OK"));
    assert!(support::calls(&calls).is_empty(), "docker was never run");
}

/// A repository as the UI sends it: its root as `script_folder`, the script's lower-cased,
/// hyphenated name as `script_name`, the file itself in a subfolder with capitals and spaces.
fn ui_repo(root: &Path) -> std::path::PathBuf {
    let repo = root.join("my-repo");
    write(&repo.join("tasks"), "My Script.md", serve::HELLO);
    write(&repo, "settings.toml", serve::SETTINGS);
    write(&repo, "README.md", "# a repository\n");
    write(&repo.join(".git"), "HEAD", "ref: refs/heads/main\n");
    repo
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn the_ui_names_a_script_as_it_does_and_the_one_file_it_means_is_deployed() {
    let Some(docker) = support::docker() else {
        return;
    };
    support::pull_stand_in(&docker);
    let s = Served::start(&docker, &[]);
    let repo = ui_repo(s.root.path());
    let name = support::unique_name("fp-ui-name");
    let _g = ContainerGuard::new(&name);
    let mut body = serve::deploy_body(repo.to_str().unwrap(), &name, json!({}));
    body["script_name"] = json!("my-script");
    let events = replay_ui(&ui_post(&s.url, &body), true);
    let warned: Vec<&Value> = events.iter().filter(|e| e["type"] == "warn").collect();
    assert!(
        warned.iter().any(|e| e["message"]
            .as_str()
            .unwrap()
            .contains("\"tasks/My Script.md\"")),
        "a warning says which file was taken: {warned:?}"
    );
    let r = &events.last().unwrap()["result"];
    let path = "/payload/my-script/tasks/My Script.md";
    assert_eq!(r["metadata"]["deployment"]["script_path"], path);
    assert_eq!(r["metadata"]["api"]["example_payload"]["filename"], path);
    assert!(r["warnings"].to_string().contains("My Script.md"), "{r}");
    // The sample request works on it.
    let url = r["endpoint_url"].as_str().unwrap();
    let (code, out) = serve::call(
        serve::agent()
            .post(&format!("{url}/execute"))
            .set("Content-Type", "application/json"),
        Some(&json!({ "filename": path })),
    );
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["success"], true, "{v}");
    assert!(v["return_content"].as_str().is_some(), "{v}");
}

#[test]
fn a_ui_script_name_that_could_mean_several_files_is_refused_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let (docker, calls) = support::untouchable_docker(dir.path());
    let s = Served::start(&docker, &[]);
    let repo = ui_repo(s.root.path());
    write(&repo, "my_script.md", serve::HELLO);
    let (code, body) = serve::call(
        serve::agent()
            .post(&format!("{}/api/deploy/docker-registry/stream", s.url))
            .set("Content-Type", "application/json"),
        Some(&json!({"script_name": "my-script", "script_folder": repo.to_str().unwrap()})),
    );
    assert_eq!(code, 400, "{body}");
    let d = serve::detail(&body);
    assert!(
        d.contains("\"my_script.md\", \"tasks/My Script.md\""),
        "names both: {d}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["field"], "script_name");
    assert!(support::calls(&calls).is_empty());
}

/// Removes every container whose name starts with `.1` (a deployment and the old containers
/// an update keeps) and the image tag `.2` when dropped.
struct Leftovers(std::path::PathBuf, String, Option<String>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let filter = format!("name=^{}", self.1);
        let out = support::run_docker(&self.0, &["ps", "-aq", "--filter", &filter]);
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            support::run_docker(&self.0, &["rm", "-f", "-v", id]);
        }
        if let Some(tag) = &self.2 {
            support::run_docker(&self.0, &["rmi", tag]);
        }
    }
}

fn blocking_deploy(url: &str, body: &Value) -> Value {
    let (code, out) = serve::call(
        serve::agent()
            .post(&format!("{url}/api/deploy/docker-registry"))
            .set("Content-Type", "application/json"),
        Some(body),
    );
    assert_eq!(code, 200, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["success"], true, "{v}");
    v
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn a_redeploy_reports_the_container_and_image_that_actually_run() {
    let Some(docker) = support::docker() else {
        return;
    };
    let image = support::pull_stand_in(&docker);
    let s = Served::start(&docker, &[]);
    let folder = s.folder("redeploy");
    let f = folder.to_str().unwrap();
    let name = support::unique_name("fp-ui-re");
    // A second name for the same image: an update that needs no new container keeps running
    // the first one's.
    let (repo, _) = image.rsplit_once(':').unwrap();
    let alias_tag = format!("alias-{}", std::process::id());
    let alias = format!("{repo}:{alias_tag}");
    support::docker_ok(&docker, &["tag", &image, &alias]);
    let _left = Leftovers(docker.clone(), name.clone(), Some(alias.clone()));
    let inspect = |fmt: &str| support::docker_ok(&docker, &["inspect", "-f", fmt, &name]);

    let first = blocking_deploy(&s.url, &serve::deploy_body(f, &name, json!({})));
    assert_complete_result(&first);
    let id1 = inspect("{{.Id}}");
    assert!(id1.starts_with(
        first["metadata"]["deployment"]["container_id"]
            .as_str()
            .unwrap()
    ));

    // A new container (the environment changed).
    let second = blocking_deploy(
        &s.url,
        &serve::deploy_body(f, &name, json!({"env_vars": {"NEW": "1"}})),
    );
    assert_eq!(second["details"]["update"]["kind"], "container", "{second}");
    assert_complete_result(&second);
    let id2 = inspect("{{.Id}}");
    assert_ne!(id1, id2);
    let short = second["metadata"]["deployment"]["container_id"]
        .as_str()
        .unwrap();
    assert!(
        short.len() == 12 && id2.starts_with(short),
        "{short} vs {id2}"
    );
    assert_eq!(second["details"]["container_id"], id2.as_str());

    // The same image under another name, and a file change: in place, the container (and
    // its image) stay.
    std::fs::write(folder.join("extra.md"), "more\n").unwrap();
    let third = blocking_deploy(
        &s.url,
        &serve::deploy_body(
            f,
            &name,
            json!({"image_tag": alias_tag, "env_vars": {"NEW": "1"}}),
        ),
    );
    assert_eq!(third["details"]["update"]["kind"], "in-place", "{third}");
    assert!(id2.starts_with(
        third["metadata"]["deployment"]["container_id"]
            .as_str()
            .unwrap()
    ));
    assert_eq!(
        third["details"]["image"],
        inspect("{{.Config.Image}}").as_str()
    );
    assert_eq!(third["details"]["image"], image.as_str(), "{third}");
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn rest_reads_the_folders_deployment_file_and_the_request_wins() {
    let Some(docker) = support::docker() else {
        return;
    };
    support::pull_stand_in(&docker);
    let s = Served::start(&docker, &[]);
    let folder = s.folder("with-file");
    let name = support::unique_name("fp-ui-file");
    let _left = Leftovers(docker.clone(), name.clone(), None);
    write(
        &folder,
        "fractalic-publish.toml",
        &format!("container_name = \"{name}\"\ntimeout = 90\n\n[environment]\nFROM_FILE = \"file\"\nBOTH = \"file\"\n"),
    );
    let mut body = serve::deploy_body(
        folder.to_str().unwrap(),
        "x",
        json!({"env_vars": {"BOTH": "request"}}),
    );
    body.as_object_mut().unwrap().remove("container_name");
    let events = replay_ui(&ui_post(&s.url, &body), true);
    let r = &events.last().unwrap()["result"];
    assert_eq!(r["deployment_id"], name.as_str(), "the file named it: {r}");
    let env = support::docker_ok(&docker, &["inspect", "-f", "{{json .Config.Env}}", &name]);
    assert!(env.contains("\"FROM_FILE=file\""), "{env}");
    assert!(env.contains("\"BOTH=request\""), "the request wins: {env}");
    let o = support::run_docker(&docker, &["exec", &name, "ls", "/payload/hello/"]);
    let listing = String::from_utf8_lossy(&o.stdout);
    assert!(!listing.contains("fractalic-publish.toml"), "{listing}");
}

#[test]
fn a_whole_monorepo_as_script_folder_is_refused_quickly_saying_how_to_narrow_it() {
    let dir = tempfile::tempdir().unwrap();
    let (docker, calls) = support::untouchable_docker(dir.path());
    let s = Served::start(&docker, &[]);
    let repo = ui_repo(s.root.path());
    // What the default excludes leave out does not count; what is left is over the ceiling.
    for i in 0..20_001 {
        let d = repo.join(format!("data/{:03}", i % 200));
        if i < 200 {
            std::fs::create_dir_all(&d).unwrap();
        }
        std::fs::write(d.join(format!("{i}.json")), "{}").unwrap();
    }
    let url = format!("{}/api/deploy/docker-registry/stream", s.url);
    let payload = json!({
        "image_name": "ghcr.io/fractalic-ai/fractalic",
        "image_tag": "latest",
        "script_name": "my-script",
        "script_folder": repo.to_str().unwrap(),
    });
    let Some((status, text, body)) = node_fetch(&url, "POST", Some(&payload)) else {
        return;
    };
    assert_eq!(status, 400, "{body}");
    assert!(
        text.contains("is too big to deploy: it holds more than 20000 files"),
        "{text}"
    );
    assert!(text.contains("exclude"), "says how to narrow it: {text}");
    assert!(!text.contains("--"), "JSON field names over REST: {text}");
    // Narrowed with `exclude`, the same repository passes validation (and reaches Docker).
    let mut narrowed = payload.clone();
    narrowed["exclude"] = json!(["data"]);
    let (status, _, body) = node_fetch(&url, "POST", Some(&narrowed)).unwrap();
    assert_ne!(status, 400, "{body}");
    assert!(
        !support::calls(&calls).is_empty(),
        "the narrowed deploy went on to docker"
    );
}
