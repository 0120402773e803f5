//! A deploy's outcome as one JSON object: what `deploy --json` prints, the REST API's blocking
//! response and the `result` of its final SSE event. `metadata` has exactly the shape the
//! Fractalic UI reads (`utils/deployUtils.ts`: DeploymentMetadata); our extras live in `details`.

use crate::contract::PublishResult;
use crate::error::Error;
use crate::journal::UndoReport;
use crate::progress::Progress;
use serde_json::{json, Value};

/// What a successful deploy reports (the plugin's result plus what we know of the config).
#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub name: String,
    pub script_name: String,
    /// The run's id (every progress event's `deployment_id`).
    pub run_id: String,
    pub plugin: String,
    pub plugin_source: String,
    pub script_path: String,
    /// The plugin's `publish()` result, checked field by field.
    pub result: PublishResult,
    pub warnings: Vec<String>,
    pub docker_calls: u32,
}

/// The original failure, followed by what the undo really did and what it left (with the
/// commands that remove it).
pub(crate) fn with_cleanup(e: Error, undo: &UndoReport, progress: &Progress) -> Error {
    if undo.undone.is_empty() && undo.left.is_empty() {
        return e;
    }
    let note = format!("cleanup: {}", undo.summary());
    match e {
        Error::Interrupted => Error::Interrupted,
        // The exit code says "Docker unavailable"; the cleanup goes beside it.
        e @ (Error::DaemonDown { .. } | Error::DockerMissing { .. }) => {
            progress.warn(note);
            e
        }
        Error::Plugin { location, message } => Error::Plugin {
            location,
            message: format!("{message}; {note}"),
        },
        Error::Input { what, hint, field } => Error::Input {
            what,
            hint: format!("{hint}; {note}"),
            field,
        },
        other => Error::failed(format!("{other}; {note}")),
    }
}

/// The sample request shown to users (the seed's "Sample Usage").
pub(crate) fn sample_curl(url: &str, script_path: &str) -> String {
    format!(
        "curl -X POST {url}/execute -H \"Content-Type: application/json\" -d '{{\"filename\": \"{script_path}\"}}'"
    )
}

/// The outcome of a successful deploy.
pub(crate) fn success(r: &Report) -> Value {
    let t = &r.result;
    let res = &t.raw;
    let url = t.url.as_str();
    let container = match t.container.as_deref() {
        None | Some("") => r.name.as_str(),
        Some(c) => c,
    };
    let service = |k: &str| {
        t.services
            .as_ref()
            .and_then(|s| s.get(k).cloned())
            .unwrap_or_else(|| "unknown".to_string())
    };
    json!({
        "success": true,
        "message": "Fractalic AI Server deployed successfully",
        "deployment_id": r.name,
        "run_id": r.run_id,
        "endpoint_url": url,
        "url": url,
        "error": null,
        "warnings": r.warnings,
        "metadata": {
            "ai_server": {
                "host": url,
                "port": t.port.unwrap_or(0),
                "health_url": format!("{url}/health"),
                "docs_url": format!("{url}/docs"),
            },
            "deployment": {
                "script_name": r.script_name,
                "script_path": r.script_path,
                "container_name": container,
                // Docker's short id, as `docker ps` shows it (the full one is in details).
                "container_id": t.container_id.as_deref().unwrap_or("").chars().take(12).collect::<String>(),
            },
            "api": {
                "endpoint": format!("{url}/execute"),
                "sample_curl": sample_curl(url, &r.script_path),
                "example_payload": { "filename": r.script_path },
            },
            "container": {
                "logs_command": format!("fractalic-publisher logs {container}"),
                "stop_command": format!("fractalic-publisher stop {container}"),
                "remove_command": format!("fractalic-publisher rm --force {container}"),
            },
            "services": {
                "ai_server": service("ai_server"),
                "mcp_manager": service("mcp_manager"),
            },
        },
        "details": {
            "plugin": r.plugin,
            "plugin_source": r.plugin_source,
            "container": container,
            "container_id": res["container_id"],
            "port": res["port"],
            "bind": res["bind"],
            "image": res["image"],
            "image_digest": res["image_digest"],
            "image_cached": res["image_cached"],
            "files": res["files"],
            "bytes": res["bytes"],
            "docker_calls": r.docker_calls,
            "health_ms": res["health_ms"],
            "mcp_ms": res["mcp_ms"],
            "services": res["services"],
            // The release now live, and for a deploy onto an existing deployment what it
            // did: {kind: none | in-place | container, release, from, changes, ...}.
            "release": res["release"],
            "update": res["update"],
            // Everything the plugin reported, including what only its platform has (e.g.
            // docker-swarm's urls, replicas, committed/pushed).
            "plugin_result": res,
        },
        // What changed (names and keys only), when the deploy updated a deployment.
        "changes": res["update"]["changes"],
    })
}

/// The outcome of a failed deploy: `error` says what failed and what was cleaned up.
/// `name` and `run_id` are known when the deploy got far enough to have them.
pub(crate) fn failure(e: &Error, name: Option<&str>, run_id: Option<&str>) -> Value {
    json!({
        "success": false,
        "message": "Deployment failed",
        "deployment_id": name,
        "run_id": run_id,
        "endpoint_url": null,
        "url": null,
        "error": crate::error::one_line(&e.to_string()),
        "error_kind": e.kind(),
        "exit_code": e.exit_code(),
        "metadata": null,
    })
}
