//! The deploy command: validate, find and compile the plugin, hand it the staged deploy, and
//! roll back whatever it created if anything fails. Also renders the result.

use crate::cli::DeployArgs;
use crate::config::{self, DeployConfig};
use crate::docker::Docker;
use crate::error::{Error, Result};
use crate::plugin::{self, host::Host, Plugin};
use crate::ports::PortRequest;
use crate::progress::Progress;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

/// What a successful deploy reports (the plugin's result plus what we know of the config).
#[derive(Debug, Clone)]
pub struct Report {
    pub name: String,
    pub plugin: String,
    pub plugin_source: String,
    pub script_path: String,
    pub result: Value,
    pub warnings: Vec<String>,
    pub docker_calls: u32,
}

/// The config as plugins see it: names, paths and flags; never secret values.
pub fn config_map(cfg: &DeployConfig) -> rhai::Dynamic {
    let (port, exact) = match cfg.port {
        PortRequest::Preferred(p) => (p, false),
        PortRequest::Exact(p) => (p, true),
    };
    let v = json!({
        "plugin": cfg.plugin,
        "name": cfg.name,
        "script_name": cfg.script_name,
        "script_folder": cfg.script_folder.display().to_string(),
        "main_script": cfg.main_script,
        "script_path": cfg.script_path(),
        "image": cfg.image,
        "platform": cfg.platform,
        "port": port,
        "port_exact": exact,
        "bind": cfg.bind.to_string(),
        "pull": cfg.pull.as_str(),
        "timeout": cfg.timeout.as_secs(),
        "env_keys": cfg.env.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        "config_files": cfg.config_files.iter().map(|c| json!({
            "name": c.name,
            "source": c.source.display().to_string(),
            "dests": c.dests,
        })).collect::<Vec<_>>(),
        "warnings": cfg.warnings,
        "project_root": cfg.project_root.display().to_string(),
    });
    rhai::serde::to_dynamic(&v).unwrap_or(rhai::Dynamic::UNIT)
}

/// Runs a deploy. Bad input fails before Docker is touched; a failure after a container was
/// created removes it and says so.
pub fn deploy(
    docker_flag: Option<&Path>,
    plugins_dir: Option<&Path>,
    args: &DeployArgs,
    progress: Progress,
) -> Result<Report> {
    let cfg = config::deploy_config(args)?;
    let source = plugin::find(&cfg.plugin, &plugin::search_dirs(plugins_dir))?;
    let plugin_source = source.label();
    progress.info(format!("plugin {} from {}", source.name, plugin_source));
    for c in &cfg.config_files {
        progress.info(format!("{} from {}", c.name, c.source.display()));
    }
    for w in &cfg.warnings {
        progress.warn(w.clone());
    }
    let name = cfg.name.clone();
    let script_path = cfg.script_path();
    let plugin_name = cfg.plugin.clone();
    let map = config_map(&cfg);
    let host = Arc::new(Host::new(progress.clone(), None).with_deploy(cfg));
    host.set_plugin(&plugin_name);
    // A broken plugin is bad input (exit 2) whether or not Docker is there.
    let plugin = Plugin::load(source, Arc::clone(&host))?;
    let docker = Arc::new(Docker::locate(docker_flag)?);
    host.set_docker(Arc::clone(&docker));

    let problems = plugin.call("validate", (map.clone(),))?;
    let problems: Vec<String> = match problems.clone().try_cast::<rhai::Array>() {
        Some(a) => a.iter().map(|p| p.to_string()).collect(),
        None if problems.is_unit() => Vec::new(),
        None => vec![problems.to_string()],
    };
    if !problems.is_empty() {
        return Err(Error::input(
            format!("plugin {plugin_name} rejected the deploy"),
            problems.join("; "),
        ));
    }

    // The main-script check copy_payload started must have passed, whatever the plugin did.
    let published = plugin
        .call("publish", (map,))
        .and_then(|v| host.finish_main_check().map(|()| v));
    match published {
        Ok(v) => {
            host.keep_created();
            progress.finish();
            let result: Value = rhai::serde::from_dynamic(&v).map_err(|e| Error::Plugin {
                location: plugin_source.clone(),
                message: format!("publish() must return a map: {e}"),
            })?;
            Ok(Report {
                name,
                plugin: plugin_name,
                plugin_source,
                script_path,
                result,
                warnings: progress.warnings(),
                docker_calls: docker.calls(),
            })
        }
        Err(e) => {
            let removed = host.rollback();
            progress.finish();
            if removed.is_empty() || e.exit_code() == crate::error::exit::DOCKER_UNAVAILABLE {
                return Err(e);
            }
            let note = format!(
                "removed container {} (nothing is left running)",
                removed.join(", ")
            );
            Err(match e {
                Error::Plugin { location, message } => Error::Plugin {
                    location,
                    message: format!("{message}; {note}"),
                },
                Error::Input { what, hint } => Error::Input {
                    what,
                    hint: format!("{hint}; {note}"),
                },
                other => Error::failed(format!("{other}; {note}")),
            })
        }
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

/// The seed's "Expected Output", with this tool's management commands.
pub fn render_text(r: &Report) -> String {
    let url = s(&r.result, "url");
    let container = s(&r.result, "container");
    let container = if container.is_empty() {
        &r.name
    } else {
        container
    };
    let mut o = String::new();
    o.push_str("🎉 Fractalic AI Server deployed successfully!\n\n");
    o.push_str("📋 AI Server Access:\n");
    o.push_str(&format!("   • Host: {url}\n"));
    o.push_str(&format!("   • Health Check: {url}/health\n"));
    o.push_str(&format!("   • API Documentation: {url}/docs\n\n"));
    o.push_str("🗂️ Deployed Script:\n");
    o.push_str(&format!("   • File: {}\n", r.script_path));
    o.push_str(&format!("   • Container: {container}\n\n"));
    o.push_str("📝 Sample Usage:\n");
    o.push_str(&format!("   curl -X POST {url}/execute \\\n"));
    o.push_str("     -H \"Content-Type: application/json\" \\\n");
    o.push_str(&format!(
        "     -d '{{\"filename\": \"{}\"}}'\n\n",
        r.script_path
    ));
    o.push_str("🐳 Container Management:\n");
    o.push_str(&format!(
        "   • Status: fractalic-publisher status {container}\n"
    ));
    o.push_str(&format!(
        "   • View logs: fractalic-publisher logs {container} (or: docker logs {container})\n"
    ));
    o.push_str(&format!(
        "   • Service log: fractalic-publisher logs {container} --service ai_server\n"
    ));
    o.push_str(&format!(
        "   • Stop: fractalic-publisher stop {container} (or: docker stop {container})\n"
    ));
    o.push_str(&format!(
        "   • Remove: fractalic-publisher rm --force {container} (or: docker rm -f {container})\n"
    ));
    o
}

/// The `--json` object for a successful deploy.
pub fn render_json(r: &Report) -> Value {
    let res = &r.result;
    let url = s(res, "url");
    let id = res["deployment_id"].as_str().unwrap_or(&r.name);
    json!({
        "success": true,
        "deployment_id": id,
        "message": "Fractalic AI Server deployed successfully",
        "url": url,
        "error": null,
        "metadata": {
            "ai_server": {
                "url": url,
                "health": format!("{url}/health"),
                "docs": format!("{url}/docs"),
                "execute": format!("{url}/execute"),
            },
            "deployment": {
                "plugin": r.plugin,
                "plugin_source": r.plugin_source,
                "script_path": r.script_path,
                "files": res["files"],
                "bytes": res["bytes"],
                "warnings": r.warnings,
                "docker_calls": r.docker_calls,
            },
            "api": {
                "execute": {
                    "method": "POST",
                    "url": format!("{url}/execute"),
                    "body": {"filename": r.script_path},
                },
            },
            "container": {
                "name": res["container"],
                "port": res["port"],
                "bind": res["bind"],
                "image": res["image"],
                "image_digest": res["image_digest"],
                "image_cached": res["image_cached"],
            },
            "services": res["services"],
        },
    })
}

/// The `--json` object for a failure.
pub fn render_json_error(e: &Error) -> Value {
    json!({
        "success": false,
        "deployment_id": null,
        "message": "deploy failed",
        "url": null,
        "error": crate::error::one_line(&e.to_string()),
        "error_kind": e.kind(),
        "exit_code": e.exit_code(),
        "metadata": null,
    })
}
