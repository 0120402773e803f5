//! The deploy command: validate, find and compile the plugin, hand it the staged deploy, and
//! roll back whatever it created if anything fails. Also renders the result.

use crate::cli::DeployArgs;
use crate::config::{self, DeployConfig};
use crate::contract::{ConfigFileRef, PluginConfig, PublishResult};
use crate::docker::Docker;
use crate::error::{Error, Result};
use crate::journal::UndoReport;
use crate::plugin::{self, host::Host, Plugin};
use crate::ports::PortRequest;
use crate::progress::Progress;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

/// What a successful deploy reports (the plugin's result plus what we know of the config).
#[derive(Debug, Clone)]
pub struct Report {
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

/// The config as plugins see it: names, paths and flags; never secret values.
pub fn plugin_config(cfg: &DeployConfig) -> PluginConfig {
    let (port, port_exact) = match cfg.port {
        PortRequest::Preferred(p) => (p, false),
        PortRequest::Exact(p) => (p, true),
    };
    PluginConfig {
        plugin: cfg.plugin.clone(),
        name: cfg.name.clone(),
        script_name: cfg.script_name.clone(),
        script_folder: cfg.script_folder.display().to_string(),
        main_script: cfg.main_script.clone(),
        script_path: cfg.script_path(),
        image: cfg.image.clone(),
        platform: cfg.platform.clone(),
        port,
        port_exact,
        bind: cfg.bind.to_string(),
        pull: cfg.pull.as_str().to_string(),
        timeout: cfg.timeout.as_secs(),
        env_keys: cfg.env.iter().map(|(k, _)| k.clone()).collect(),
        config_files: cfg
            .config_files
            .iter()
            .map(|c| ConfigFileRef {
                name: c.name.to_string(),
                source: c.source.display().to_string(),
                dests: c.dests.iter().map(|d| d.to_string()).collect(),
            })
            .collect(),
        warnings: cfg.warnings.clone(),
        project_root: cfg.project_root.display().to_string(),
        replicas: cfg.replicas,
        registry: cfg.registry.clone(),
        publish_mode: cfg.publish_mode.clone(),
        proxy: match cfg.proxy.proxy {
            Some(true) => "yes".into(),
            Some(false) => "no".into(),
            None => String::new(),
        },
        domain: cfg.proxy.domain.clone().unwrap_or_default(),
        tls: cfg
            .proxy
            .tls
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
    }
}

/// [`plugin_config`] as the Rhai map handed to `validate` and `publish`.
pub fn config_map(cfg: &DeployConfig) -> rhai::Dynamic {
    rhai::serde::to_dynamic(plugin_config(cfg)).unwrap_or(rhai::Dynamic::UNIT)
}

/// A deploy that passed every check that needs no Docker daemon: flags, files, the plugin's
/// own `validate`. [`run`] carries it out. The REST API prepares on the request thread (so bad
/// input is an HTTP 400 before any stream starts) and runs on a thread of its own.
pub struct Prepared {
    name: String,
    script_name: String,
    script_path: String,
    plugin_name: String,
    plugin_source: String,
    map: rhai::Dynamic,
    host: Arc<Host>,
    plugin: Plugin,
    docker: Arc<Docker>,
    progress: Progress,
    /// How long to wait for the deployment's lock.
    lock_wait: std::time::Duration,
    /// `--port P` is busy now: fine only if it is this deployment's own port (an update).
    port_busy: Option<(u16, Error)>,
    /// Where plugins are found (a reconcile finishing a killed `rm` loads the deployment's).
    dirs: Vec<std::path::PathBuf>,
}

impl Prepared {
    /// The deployment's name (its container name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host the plugin calls (what its readiness wait saw, its journal).
    pub fn host(&self) -> &Arc<Host> {
        &self.host
    }

    /// The plugin that will publish.
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }
}

/// Runs a prepared deploy and then undoes it, whether it succeeded or not: a deployment made
/// only to prove that deploys work (doctor's throwaway), removed by the same journal that
/// removes a failed deploy's leftovers (and, on Ctrl-C, by the interrupt handler).
pub fn run_and_undo(p: Prepared) -> (Result<Report>, UndoReport) {
    let published = p
        .plugin
        .call("publish", (p.map.clone(),))
        .and_then(|v| p.host.finish_main_check().map(|()| v))
        .and_then(|v| crate::contract::publish_result(&p.plugin_source, &v));
    p.host.release_port_lock();
    let undo = p.host.journal().undo();
    p.progress.finish();
    let report = published.map(|result| Report {
        name: p.name.clone(),
        script_name: p.script_name.clone(),
        plugin: p.plugin_name.clone(),
        plugin_source: p.plugin_source.clone(),
        script_path: p.script_path.clone(),
        result,
        warnings: p.progress.warnings(),
        docker_calls: p.docker.calls(),
        run_id: p.progress.run_id(),
    });
    (report, undo)
}

/// Validates a deploy: bad input fails here, before Docker is touched.
pub fn prepare(
    docker_flag: Option<&Path>,
    plugins_dir: Option<&Path>,
    args: &DeployArgs,
    progress: Progress,
) -> Result<Prepared> {
    let lock_wait = crate::lock::parse_wait(&args.lock_wait)?;
    let (cfg, port_busy) = match config::deploy_config(args) {
        Ok(c) => (c, None),
        // Busy may mean: held by this very deployment, which the deploy then updates.
        Err(e @ Error::Input { .. }) if e.to_string().starts_with("--port ") => {
            let c = config::deploy_config_own_port(args)?;
            let p = match c.port {
                PortRequest::Exact(p) | PortRequest::Preferred(p) => p,
            };
            (c, Some((p, e)))
        }
        Err(e) => return Err(e),
    };
    let mut p = prepare_config(docker_flag, plugins_dir, cfg, progress)?;
    p.lock_wait = lock_wait;
    p.port_busy = port_busy;
    if let Some(mut m) = p.map.clone().try_cast::<rhai::Map>() {
        m.insert("port_given".into(), args.port.is_some().into());
        p.map = m.into();
    }
    Ok(p)
}

/// [`prepare`] for a config built in code (doctor's throwaway deployment).
pub fn prepare_config(
    docker_flag: Option<&Path>,
    plugins_dir: Option<&Path>,
    cfg: DeployConfig,
    progress: Progress,
) -> Result<Prepared> {
    progress.step(1, format!("Validated the deploy of {}", cfg.name));
    let dirs = plugin::search_dirs(plugins_dir);
    let source = plugin::find(&cfg.plugin, &dirs)?;
    let plugin_source = source.label();
    progress.info(format!("plugin {} from {}", source.name, plugin_source));
    for c in &cfg.config_files {
        progress.info(format!("{} from {}", c.name, c.source.display()));
    }
    for w in &cfg.warnings {
        progress.warn(w.clone());
    }
    let name = cfg.name.clone();
    let script_name = cfg.script_name.clone();
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
    Ok(Prepared {
        name,
        script_name,
        script_path,
        plugin_name,
        plugin_source,
        map,
        host,
        plugin,
        docker,
        progress,
        lock_wait: std::time::Duration::ZERO,
        port_busy: None,
        dirs,
    })
}

/// Runs a prepared deploy: the plugin's `publish`. A failure undoes what the run created
/// (its journal) and says what that undo really did.
pub fn run(p: Prepared) -> Result<Report> {
    let Prepared {
        name,
        script_name,
        script_path,
        plugin_name,
        plugin_source,
        map,
        host,
        plugin,
        docker,
        progress,
        lock_wait,
        port_busy,
        dirs,
    } = p;
    // One deploy (or rollback, stop, start, rm) of a name at a time, CLI and REST alike.
    let mut lock = crate::lock::DeployLock::acquire(&name, "deploy", lock_wait)?;
    host.journal().describe(&name, "deploy");
    // Reconcile first: a run killed on this name is finished or undone before anything here
    // reads the deployment (the early read below included).
    crate::reconcile::report(
        &name,
        &crate::reconcile::under_lock(
            &docker,
            &mut lock,
            &crate::manage::Manager::over(Arc::clone(&docker), dirs, progress.clone()),
        ),
        &progress,
    )?;
    crate::manage::report_heal(&progress, crate::proxy::heal_for(&docker, &name));
    if plugin.has_fn("update") && lock.seen_before() && port_busy.is_none() {
        crate::update::read_early(&host, &docker);
    }
    let entry = entry_point(&docker, &plugin, &plugin_name, &name, port_busy)?;
    // The main-script check copy_payload started must have passed, whatever the plugin did.
    let published = plugin
        .call(entry, (map,))
        .and_then(|v| host.finish_main_check().map(|()| v))
        .and_then(|v| crate::update::finish_record(&host).map(|()| v));
    host.release_port_lock();
    match published {
        Ok(v) => {
            // An interrupt's undo may have got there first: then the handler speaks.
            host.journal().commit()?;
            progress.finish();
            let mut result = crate::contract::publish_result(&plugin_source, &v)?;
            // The plugin saw the change lists cut short; `--json` has them whole.
            if entry == "update" && result.raw["update"].is_object() {
                if let Some(full) = crate::update::plan_changes(&host) {
                    result.raw["update"]["changes"] = full;
                }
            }
            Ok(Report {
                name,
                script_name,
                plugin: plugin_name,
                plugin_source,
                script_path,
                result,
                warnings: progress.warnings(),
                docker_calls: docker.calls(),
                run_id: progress.run_id(),
            })
        }
        Err(e) => {
            let undo = host.journal().undo();
            if host.proxy_touched() {
                // The routes follow the containers: the undone one's route goes with it.
                if let Err(s) = crate::proxy::Proxy::new(&docker, crate::proxy::image(None)).sync()
                {
                    progress.warn(format!("re-syncing the front proxy's routes failed: {s}"));
                }
            }
            progress.finish();
            Err(with_cleanup(e, &undo, &progress))
        }
    }
}

/// `publish` for a new deployment; `update` when a deployment of this name exists that this
/// tool made with this plugin (and the plugin can update). Another plugin's deployment of that
/// name is refused (exit 2); a foreign container is refused by `publish` as before.
fn entry_point(
    docker: &Arc<Docker>,
    plugin: &Plugin,
    plugin_name: &str,
    name: &str,
    port_busy: Option<(u16, Error)>,
) -> Result<&'static str> {
    // Only a plugin that can update asks whether the name exists (here, as a container: a
    // platform with other objects answers in its own `update` and `publish`).
    if !plugin.has_fn("update") {
        return match port_busy {
            Some((_, e)) => Err(e),
            None => Ok("publish"),
        };
    }
    let existing = match docker.container_inspect(name) {
        Ok(v) => v,
        // A busy --port stays the answer when Docker cannot say whose it is.
        Err(_) if port_busy.is_some() => return Err(port_busy.map(|(_, e)| e).unwrap()),
        Err(e) => return Err(e),
    };
    let labels = existing.as_ref().map(|v| v["Config"]["Labels"].clone());
    let label = |k: &str| {
        labels
            .as_ref()
            .and_then(|l| l[k].as_str())
            .unwrap_or("")
            .to_string()
    };
    let ours = label(crate::plugin::host::LABEL_MANAGED) == "true";
    let owner = label(crate::plugin::host::LABEL_PLUGIN);
    if existing.is_some() && ours && owner != plugin_name {
        return Err(Error::input(
            format!("deployment {name} was made by plugin {owner}, not {plugin_name}"),
            format!("nothing was changed; deploy with {owner}, or choose another --name, or remove it first: fractalic-publisher rm --force {name}"),
        ));
    }
    let update = existing.is_some() && ours && plugin.has_fn("update");
    if update {
        if let Some(v) = &existing {
            crate::update::prefetch(plugin.host(), docker, name, v.clone());
        }
    }
    if let Some((p, e)) = port_busy {
        // --port P is busy: fine only when this deployment holds it.
        if !update || label(crate::plugin::host::LABEL_PORT) != p.to_string() {
            return Err(e);
        }
    }
    Ok(if update { "update" } else { "publish" })
}

/// Runs a deploy: [`prepare`] then [`run`].
pub fn deploy(
    docker_flag: Option<&Path>,
    plugins_dir: Option<&Path>,
    args: &DeployArgs,
    progress: Progress,
) -> Result<Report> {
    run(prepare(docker_flag, plugins_dir, args, progress)?)
}

/// The original failure, followed by what the undo really did and what it left (with the
/// commands that remove it).
pub fn with_cleanup(e: Error, undo: &UndoReport, progress: &Progress) -> Error {
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
        Error::Input { what, hint } => Error::Input {
            what,
            hint: format!("{hint}; {note}"),
        },
        other => Error::failed(format!("{other}; {note}")),
    }
}

/// The seed's "Expected Output", with this tool's management commands.
pub fn render_text(r: &Report) -> String {
    let url = r.result.url.as_str();
    let container = r.result.container.as_deref().unwrap_or(&r.name);
    let mut o = String::new();
    let u = &r.result.raw["update"];
    let s = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_string();
    if u.is_object() {
        let rel = s(u, "release");
        match s(u, "kind").as_str() {
            "none" => {
                o.push_str(&format!(
                    "✅ No changes: {} already serves this folder and configuration (release {}); nothing was touched.\n\n",
                    r.name,
                    s(u, "from")
                ));
            }
            kind => {
                let how = if kind == "in-place" {
                    "in place, no restart".to_string()
                } else {
                    format!(
                        "in a new container; the old one is kept as {}",
                        s(u, "kept")
                    )
                };
                o.push_str(&format!(
                    "🔄 Updated {} to release {rel} (from {}; {how}) in {} ms.\n",
                    r.name,
                    s(u, "from"),
                    u["elapsed_ms"].as_u64().unwrap_or(0)
                ));
                for line in u["lines"].as_array().into_iter().flatten() {
                    o.push_str(&format!("   • {}\n", line.as_str().unwrap_or("")));
                }
                o.push_str(&format!(
                    "   • Undo: fractalic-publisher rollback {} (history: fractalic-publisher history {})\n\n",
                    r.name, r.name
                ));
            }
        }
    }
    o.push_str("🎉 Fractalic AI Server deployed successfully!\n\n");
    o.push_str("📋 AI Server Access:\n");
    o.push_str(&format!("   • Host: {url}\n"));
    o.push_str(&format!("   • Health Check: {url}/health\n"));
    o.push_str(&format!("   • API Documentation: {url}/docs\n\n"));
    o.push_str("🗂️ Deployed Script:\n");
    o.push_str(&format!("   • File: {}\n", r.script_path));
    // The docker commands that do the same exist only for a container (not, e.g., a Swarm
    // service, which `docker logs/stop/rm` do not know).
    let (kind, or) = match r.result.container.as_deref() {
        Some(c) => ("Container", Some(c)),
        None => ("Deployment", None),
    };
    let alt = |cmd: &str| or.map_or(String::new(), |c| format!(" (or: docker {cmd} {c})"));
    o.push_str(&format!("   • {kind}: {container}\n\n"));
    o.push_str("📝 Sample Usage:\n");
    o.push_str(&format!("   curl -X POST {url}/execute \\\n"));
    o.push_str("     -H \"Content-Type: application/json\" \\\n");
    o.push_str(&format!(
        "     -d '{{\"filename\": \"{}\"}}'\n\n",
        r.script_path
    ));
    o.push_str(&format!("🐳 {kind} Management:\n"));
    o.push_str(&format!(
        "   • Status: fractalic-publisher status {container}\n"
    ));
    o.push_str(&format!(
        "   • View logs: fractalic-publisher logs {container}{}\n",
        alt("logs")
    ));
    o.push_str(&format!(
        "   • Service log: fractalic-publisher logs {container} --service ai_server\n"
    ));
    o.push_str(&format!(
        "   • Stop: fractalic-publisher stop {container}{}\n",
        alt("stop")
    ));
    o.push_str(&format!(
        "   • Remove: fractalic-publisher rm --force {container}{}\n",
        alt("rm -f")
    ));
    o
}

/// The `--json` object for a successful deploy (the REST API's `result`, too).
pub fn render_json(r: &Report) -> Value {
    crate::outcome::success(r)
}

/// The `--json` object for a failure.
pub fn render_json_error(e: &Error) -> Value {
    crate::outcome::failure(e, None, None)
}
