//! The deploy command: validate, find and compile the plugin, hand it the staged deploy, and
//! roll back whatever it created if anything fails. Also renders the result.

use crate::cli::DeployArgs;
use crate::config::{self, DeployConfig};
use crate::contract::{ConfigFileRef, PluginConfig};
use crate::docker::Docker;
use crate::error::{Error, Result};
use crate::journal::UndoReport;
use crate::outcome::Report;
use crate::plugin::{self, host::Host, Plugin};
use crate::ports::PortRequest;
use crate::progress::{Progress, Stage};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

/// The config as plugins see it: names, paths and flags; never secret values.
pub(crate) fn plugin_config(cfg: &DeployConfig) -> PluginConfig {
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
        placement_pref: cfg.placement_pref.clone().unwrap_or_default(),
        max_replicas_per_node: cfg.max_replicas_per_node.map_or(-1, i64::from),
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
pub(crate) fn config_map(cfg: &DeployConfig) -> rhai::Dynamic {
    rhai::serde::to_dynamic(plugin_config(cfg)).unwrap_or(rhai::Dynamic::UNIT)
}

/// A deploy that passed every check that needs no Docker daemon: flags, files, the plugin's
/// own `validate`. [`run`] carries it out. The REST API prepares on the request thread (so bad
/// input is an HTTP 400 before any stream starts) and runs on a thread of its own.
pub(crate) struct Prepared {
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
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The host the plugin calls (what its readiness wait saw, its journal).
    pub(crate) fn host(&self) -> &Arc<Host> {
        &self.host
    }
}

/// Runs a prepared deploy and then undoes it, whether it succeeded or not: a deployment made
/// only to prove that deploys work (doctor's throwaway), removed by the same journal that
/// removes a failed deploy's leftovers (and, on Ctrl-C, by the interrupt handler).
pub(crate) fn run_and_undo(p: Prepared) -> (Result<Report>, UndoReport) {
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
pub(crate) fn prepare(
    docker_flag: Option<&Path>,
    plugins_dir: Option<&Path>,
    args: &DeployArgs,
    progress: Progress,
) -> Result<Prepared> {
    let lock_wait = args.lock_wait;
    let cfg = config::deploy_config_own_port(args)?;
    // Busy may mean: held by this very deployment, which the deploy then updates.
    let port_busy = config::port_taken(&cfg);
    let mut p = prepare_config(docker_flag, plugins_dir, cfg, progress)?;
    if args.dry_run {
        p.docker.set_dry_run();
    }
    p.lock_wait = lock_wait;
    p.port_busy = port_busy;
    if let Some(mut m) = p.map.clone().try_cast::<rhai::Map>() {
        m.insert("port_given".into(), args.port.is_some().into());
        p.map = m.into();
    }
    Ok(p)
}

/// [`prepare`] for a config built in code (doctor's throwaway deployment).
pub(crate) fn prepare_config(
    docker_flag: Option<&Path>,
    plugins_dir: Option<&Path>,
    cfg: DeployConfig,
    progress: Progress,
) -> Result<Prepared> {
    progress.step(
        1,
        Stage::Validating,
        format!("Validated the deploy of {}", cfg.name),
    );
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
pub(crate) fn run(p: Prepared) -> Result<Report> {
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
    // The front proxy serves docker-registry deployments only (another platform's deploy
    // makes no docker call for it).
    if plugin_name == "docker-registry" {
        crate::manage::report_heal(&progress, crate::proxy::heal_for(&docker, &name));
    }
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
            Err(crate::outcome::with_cleanup(e, &undo, &progress))
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
    // (A dry run reads the live release when the plan asks, on the plugin's thread.)
    if update && !docker.dry_run() {
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

/// `deploy --dry-run`: runs the deploy's own code (the plugin's `publish` or `update`) on a
/// docker handle that lets only reads through, and stops at the first change it would make
/// (a container, a copy, a release switch, any docker call that is not a read, any journal
/// record). No lock, journal, container or release is made; an image is only looked up. The
/// plan: create or update; in place or by container (and why); what changed; port; image;
/// where it stopped; unfinished work of a dead run the real deploy would repair first.
pub(crate) fn plan(p: Prepared) -> Result<Value> {
    let Prepared {
        name,
        script_name,
        plugin_name,
        map,
        host,
        plugin,
        docker,
        port_busy,
        ..
    } = p;
    debug_assert!(docker.dry_run());
    let unfinished: Vec<String> = crate::journal::unfinished(Some(&name), false)
        .iter()
        .map(|f| f.describe())
        .collect();
    let entry = entry_point(&docker, &plugin, &plugin_name, &name, port_busy)?;
    let ran = plugin.call(entry, (map,));
    host.release_port_lock();
    let stopped = docker.dry_stopped();
    let result = match (ran, &stopped) {
        // It reached a change (the plugin may have caught the stop and failed otherwise).
        (_, Some(_)) => None,
        (Ok(v), None) => Some(v),
        (Err(e), None) => return Err(e),
    };
    let facts = host.dry_facts();
    let kind = match (entry, facts.get("update").and_then(|u| u["kind"].as_str())) {
        ("publish", _) => "create".to_string(),
        (_, Some(k)) => k.to_string(),
        _ => "update".to_string(),
    };
    let mut plan = json!({
        "dry_run": true,
        "name": name,
        "script_name": script_name,
        "plugin": plugin_name,
        "action": if entry == "publish" { "create" } else { "update" },
        "kind": kind,
        "image": facts.get("image").cloned().unwrap_or(Value::Null),
        "port": facts.get("port").cloned().unwrap_or(Value::Null),
        "update": facts.get("update").cloned().unwrap_or(Value::Null),
        "stopped_before": stopped,
        "unfinished": unfinished,
        "changed": false,
    });
    if let (Some(v), Value::Object(m)) = (result, &mut plan) {
        // The plugin ran to its end without a change (an update with nothing to do).
        if let Ok(r) = crate::contract::publish_result(&plugin.source.label(), &v) {
            m.insert("url".into(), r.url.into());
        }
    }
    if plan["port"].is_null() {
        if let Some(p) = plan["update"]["port"].as_u64() {
            plan["port"] = json!({"port": p, "explain": "the deployment's own port"});
        }
    }
    Ok(plan)
}

/// The plan of [`plan`] as text: one fact per line.
pub(crate) fn render_plan(v: &Value) -> String {
    let mut out = String::new();
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let what = match (s("action").as_str(), s("kind").as_str()) {
        ("create", _) => format!("create {} (a new deployment)", s("name")),
        (_, "none") => format!("nothing to do: {} already serves this", s("name")),
        (_, "in-place") => format!("update {} in place (no restart)", s("name")),
        (_, "container") => format!("update {} with a new container", s("name")),
        (_, k) => format!("update {} ({k})", s("name")),
    };
    out.push_str(&format!("Plan (dry run, nothing was changed): {what}\n"));
    out.push_str(&format!("  plugin:  {}\n", s("plugin")));
    if let Some(img) = v["image"].as_object() {
        let name = img.get("name").and_then(Value::as_str).unwrap_or("");
        let id = img.get("id").and_then(Value::as_str).unwrap_or("");
        let short = id.strip_prefix("sha256:").unwrap_or(id);
        let short = &short[..short.len().min(12)];
        out.push_str(&format!(
            "  image:   {name}{}\n",
            if short.is_empty() {
                String::new()
            } else {
                format!(" ({short})")
            }
        ));
        if let Some(n) = img.get("note").and_then(Value::as_str) {
            out.push_str(&format!("           {n}\n"));
        }
    }
    if let Some(p) = v["port"]["port"].as_u64() {
        let why = v["port"]["explain"].as_str().unwrap_or("");
        out.push_str(&format!("  port:    {p} ({why})\n"));
    }
    for r in v["update"]["reasons"].as_array().into_iter().flatten() {
        if let Some(r) = r.as_str() {
            out.push_str(&format!("  why:     {r}\n"));
        }
    }
    if let Some(from) = v["update"]["from"].as_str().filter(|f| !f.is_empty()) {
        out.push_str(&format!("  live:    release {from}\n"));
    }
    for l in v["update"]["lines"].as_array().into_iter().flatten() {
        if let Some(l) = l.as_str() {
            out.push_str(&format!("  change:  {l}\n"));
        }
    }
    if let Some(n) = v["stopped_before"].as_str() {
        out.push_str(&format!("  next:    {n} (not done)\n"));
    }
    for u in v["unfinished"].as_array().into_iter().flatten() {
        if let Some(u) = u.as_str() {
            out.push_str(&format!(
                "  first:   the deploy would repair the unfinished {u}\n"
            ));
        }
    }
    out
}

/// Runs a deploy: [`prepare`] then [`run`].
pub(crate) fn deploy(
    docker_flag: Option<&Path>,
    plugins_dir: Option<&Path>,
    args: &DeployArgs,
    progress: Progress,
) -> Result<Report> {
    run(prepare(docker_flag, plugins_dir, args, progress)?)
}

/// The seed's "Expected Output", with this tool's management commands.
pub(crate) fn render_text(r: &Report) -> String {
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
pub(crate) fn render_json(r: &Report) -> Value {
    crate::outcome::success(r)
}

/// The `--json` object for a failure.
pub(crate) fn render_json_error(e: &Error) -> Value {
    crate::outcome::failure(e, None, None)
}
