//! The management commands (`ps`, `status`, `logs`, `stop`, `start`, `rm`): ask every plugin's
//! `lookup(name)` which deployment a name is, check it is ours, and hand it to the entry point of
//! the plugin that made it; `ps` asks every plugin's `list_all()`. The core knows no platform:
//! what a deployment is (a container, a Swarm service ...) is the plugin's business. Also renders
//! the results.

use crate::config;
use crate::contract;
use crate::docker::Docker;
use crate::error::{Error, Result};
use crate::plugin::host::{self, Host, LABEL_MANAGED, LABEL_PLUGIN};
use crate::plugin::{self, Plugin};
use crate::progress::Progress;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const SEE_PS: &str = "`fractalic-publisher ps --all` lists the deployments this tool manages";

/// What every management command needs: docker, where plugins are, where progress goes.
pub(crate) struct Manager {
    docker: Arc<Docker>,
    dirs: Vec<PathBuf>,
    progress: Progress,
    capture: bool,
    follow: std::sync::Mutex<Option<host::Follow>>,
}

/// A deployment this tool created, as its plugin's `lookup(name)` described it.
pub(crate) struct Owned {
    /// Its real name.
    pub name: String,
    /// What it is ("container", "Swarm service"), for messages.
    pub kind: String,
    /// The plugin that created it (its `fractalic-publisher.plugin` label).
    pub plugin: String,
    /// Whether it was running when looked up.
    pub running: bool,
    /// The docker argv that stops it again when a `start` fails (None: the plugin gave none).
    pub stop_args: Option<Vec<String>>,
}

impl Manager {
    /// Finds docker and the plugin directories; `quiet` silences progress (for `--json`).
    pub(crate) fn new(
        docker_flag: Option<&Path>,
        plugins_dir: Option<&Path>,
        quiet: bool,
    ) -> Result<Self> {
        Ok(Manager {
            docker: Arc::new(Docker::locate(docker_flag)?),
            dirs: plugin::search_dirs(plugins_dir),
            progress: Progress::stderr(quiet),
            capture: false,
            follow: std::sync::Mutex::new(None),
        })
    }

    /// A manager over an engine already found (a deploy's reconcile finishing a killed `rm`).
    pub(crate) fn over(docker: Arc<Docker>, dirs: Vec<PathBuf>, progress: Progress) -> Self {
        Manager {
            docker,
            dirs,
            progress,
            capture: false,
            follow: std::sync::Mutex::new(None),
        }
    }

    /// Logs are returned as text instead of streamed to stdout (the REST API).
    pub(crate) fn capturing(mut self) -> Self {
        self.capture = true;
        self
    }

    /// A followed log goes line by line to `follow` (the REST API's log stream); implies
    /// [`Manager::capturing`] for everything else.
    pub(crate) fn following(mut self, follow: host::Follow) -> Self {
        self.capture = true;
        self.follow = std::sync::Mutex::new(Some(follow));
        self
    }

    /// The docker handle.
    pub(crate) fn docker(&self) -> &Arc<Docker> {
        &self.docker
    }

    /// Loads plugin `name` with a host that has Docker access and checks it defines `entry`.
    fn plugin(&self, name: &str, entry: &str) -> Result<Plugin> {
        let source = plugin::find(name, &self.dirs).map_err(|e| {
            Error::failed(format!(
                "this deployment was made by plugin {name:?}, which cannot be loaded here ({e}); see `fractalic-publisher list`"
            ))
        })?;
        let mut host = Host::new(self.progress.clone(), Some(Arc::clone(&self.docker)));
        if self.capture {
            host = host.with_capture();
        }
        // Only the plugin that streams the log gets the follower (lookups load plugins too).
        if entry == "logs" {
            let follow = crate::sync::lock(&self.follow).take();
            if let Some(f) = follow {
                host = host.with_follow(f);
            }
        }
        let host = Arc::new(host);
        host.set_plugin(name);
        let p = Plugin::load(source, host)?;
        if !p.has_fn(entry) {
            return Err(Error::Plugin {
                location: p.source.label(),
                message: format!(
                    "plugin {name} does not define `fn {entry}(...)`, so it cannot answer this command"
                ),
            });
        }
        Ok(p)
    }

    /// Looks `name` up in every plugin that defines `lookup(name)` (by plugin name, the first
    /// that knows it wins): exit 2 when none knows it ([`Error::NotFound`]) or it is not ours
    /// ([`Error::NotManaged`]).
    pub(crate) fn owned(&self, name: &str) -> Result<Owned> {
        config::check_container_name(name)?;
        for p in self.plugins_with("lookup") {
            let v = p.call("lookup", (name.to_string(),))?;
            let Some(l) = contract::lookup_result(&p.source.label(), &v)? else {
                continue;
            };
            let (kind, real) = (l.kind, l.name);
            if !l.managed {
                return Err(Error::NotManaged {
                    what: format!("{kind} {real:?} was not created by fractalic-publisher"),
                    hint: format!(
                        "it exists but has no {LABEL_MANAGED}=true label, so this tool leaves it alone (use docker itself); {SEE_PS}"
                    ),
                });
            }
            if l.plugin.is_empty() {
                return Err(Error::failed(format!(
                    "{kind} {real:?} has no {LABEL_PLUGIN} label, so no plugin can manage it; remove it with docker itself"
                )));
            }
            self.heal_proxy(&real);
            return Ok(Owned {
                name: real,
                kind,
                plugin: l.plugin,
                running: l.running,
                stop_args: l.stop_args,
            });
        }
        Err(Error::NotFound {
            what: format!("no deployment named {name:?}"),
            hint: format!("no plugin knows a deployment by that name; {SEE_PS}"),
        })
    }

    /// The sources of every available plugin whose code defines entry point `entry`.
    fn plugin_sources_with(&self, entry: &str) -> Vec<plugin::PluginSource> {
        let def = format!("fn {entry}(");
        plugin::available(&self.dirs)
            .into_iter()
            .filter(|s| s.code.contains(&def))
            .collect()
    }

    /// Every available plugin that defines entry point `entry`, loaded (those that cannot be
    /// loaded are skipped with a warning).
    fn plugins_with(&self, entry: &str) -> Vec<Plugin> {
        let mut out = Vec::new();
        for source in self.plugin_sources_with(entry) {
            let name = source.name.clone();
            match self.plugin(&name, entry) {
                Ok(p) => out.push(p),
                Err(e) => self
                    .progress
                    .warn(format!("plugin {name:?} is skipped: {e}")),
            }
        }
        out
    }

    /// `ps`: every plugin's `list_all()` (each makes one docker call, or a fixed few), stopped
    /// deployments only with `all`, sorted by name. A plugin that cannot list is a warning.
    pub(crate) fn ps(&self, all: bool) -> Result<Vec<Value>> {
        let repair = crate::reconcile::all(&self.docker, self);
        for f in &repair.fixed {
            self.progress.warn(format!("repaired: {f}"));
        }
        let mut problems: Vec<&str> = repair.unfinished.iter().map(|u| u.name.as_str()).collect();
        problems.dedup();
        for n in problems {
            if let Some(p) = repair.problem(n) {
                self.progress.warn(p);
            }
        }
        let mut entries = Vec::new();
        // A proxied deployment with no running proxy (removed by hand) gets it back; seen
        // from the listing itself, so ps stays one docker call per platform when all is well.
        let (mut proxied, mut proxy_runs) = (false, false);
        let (mut listed_any, mut first_error) = (false, None);
        // Each platform is asked in its own thread (its compile, its docker call and its
        // health probes overlap the others'); the answers are taken in plugin order.
        let listings: Vec<(String, Result<Vec<contract::ListEntry>>)> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .plugin_sources_with("list_all")
                .into_iter()
                .map(|source| {
                    let name = source.name.clone();
                    let h = s.spawn(move || -> Option<Result<Vec<contract::ListEntry>>> {
                        let p = match self.plugin(&source.name, "list_all") {
                            Ok(p) => p,
                            Err(e) => {
                                self.progress
                                    .warn(format!("plugin {:?} is skipped: {e}", source.name));
                                return None;
                            }
                        };
                        Some(
                            p.call("list_all", ())
                                .and_then(|v| contract::list_result(&p.source.label(), &v)),
                        )
                    });
                    (name, h)
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|(name, h)| {
                    let r = h.join().unwrap_or_else(|_| {
                        Some(Err(Error::failed(format!(
                            "plugin {name:?}: listing its deployments panicked"
                        ))))
                    });
                    r.map(|r| (name, r))
                })
                .collect()
        });
        for (name, listed) in listings {
            match listed {
                Ok(v) => {
                    listed_any = true;
                    proxied |= v
                        .iter()
                        .any(|e| e.extra.get("proxied") == Some(&Value::Bool(true)));
                    proxy_runs |= v
                        .iter()
                        .any(|e| e.name == crate::proxy::PROXY_NAME && e.state == "running");
                    entries.extend(v.into_iter().filter(|e| all || e.state == "running"));
                }
                // No engine to ask (or an interrupt): no platform can answer.
                Err(e)
                    if matches!(
                        e.exit_code(),
                        crate::error::exit::DOCKER_UNAVAILABLE | crate::error::exit::INTERRUPTED
                    ) =>
                {
                    return Err(e)
                }
                Err(e) => {
                    self.progress.warn(format!(
                        "plugin {name:?} could not list its deployments ({e})"
                    ));
                    first_error.get_or_insert(e);
                }
            }
        }
        // Not one platform could list: that is a failure, not an empty list.
        if let (false, Some(e)) = (listed_any, first_error) {
            return Err(e);
        }
        if proxied && !proxy_runs {
            report_heal(&self.progress, crate::proxy::heal_all(&self.docker));
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries
            .into_iter()
            .map(|e| {
                let name = e.name.clone();
                let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
                // Never healthy while a killed run's work on it is unfinished.
                if repair.problem(&name).is_some() {
                    v["health"] = "unfinished".into();
                    v["repair"] = repair.to_json(&name)["repair"].clone();
                }
                v
            })
            .collect())
    }

    /// A proxied deployment's front proxy removed or stopped by hand comes back, with every
    /// route, before the command looks at the deployment (said as a warning; a failure too).
    fn heal_proxy(&self, name: &str) {
        report_heal(&self.progress, crate::proxy::heal_for(&self.docker, name));
    }

    /// Reconcile first, under `lock` (held by the command): see [`crate::reconcile`].
    fn reconcile(&self, lock: &mut crate::lock::DeployLock) -> Result<()> {
        let r = crate::reconcile::under_lock(&self.docker, lock, self);
        crate::reconcile::report(lock.name(), &r, &self.progress)
    }

    /// Reconcile first for a command that only reads `name`; returns what is still unfinished.
    fn reconcile_read(&self, name: &str) -> crate::reconcile::Repair {
        let r = crate::reconcile::first(&self.docker, name, self);
        for f in &r.fixed {
            self.progress.warn(format!("repaired {name}: {f}"));
        }
        r
    }

    /// `status NAME`: the plugin's `status(name)`, after reconcile first. Never healthy while a
    /// killed run's work on it is unfinished: then `health` says so and `repair` how.
    pub(crate) fn status(&self, name: &str) -> Result<Value> {
        let r = self.reconcile_read(name);
        let problem = r.problem(name);
        let o = match self.owned(name) {
            Ok(o) => o,
            Err(e) => {
                return Err(match problem {
                    Some(p) => Error::failed(format!("{p} ({e})")),
                    None => e,
                })
            }
        };
        let p = self.plugin(&o.plugin, "status")?;
        let v = match p.call("status", (o.name.clone(),)) {
            Ok(v) => v,
            // What the dead run left half-done is the news, with its repair.
            Err(e) => {
                return Err(match problem {
                    Some(p) => Error::failed(format!("{p} ({e})")),
                    None => e,
                })
            }
        };
        let mut v = to_value::<contract::StatusResult>(&p, "status", v)?;
        if let Some(problem) = problem {
            v["healthy"] = false.into();
            v["health"] = format!("unfinished: {problem}").into();
            let extra = r.to_json(name);
            v["unfinished"] = extra["unfinished"].clone();
            v["repair"] = extra["repair"].clone();
        }
        Ok(v)
    }

    /// `logs NAME`: the plugin's `logs(name, opts)`; returns what is left to print (a streamed
    /// log has already been written).
    pub(crate) fn logs(
        &self,
        name: &str,
        tail: Option<u32>,
        follow: bool,
        service: Option<&str>,
    ) -> Result<String> {
        let o = self.owned(name)?;
        let p = self.plugin(&o.plugin, "logs")?;
        let mut opts = rhai::Map::new();
        opts.insert("tail".into(), tail.map_or(-1_i64, i64::from).into());
        opts.insert("follow".into(), follow.into());
        opts.insert("service".into(), service.unwrap_or("").into());
        let v = p.call("logs", (o.name.clone(), opts))?;
        let mut out = p.host().take_captured();
        if !v.is_unit() {
            out.push_str(&v.to_string());
        }
        Ok(out)
    }

    /// `rollback NAME [--to R]`: the plugin's `rollback(name, opts)`, under the lock.
    pub(crate) fn rollback(
        &self,
        name: &str,
        to: Option<&str>,
        timeout: Duration,
        lock_wait: Duration,
    ) -> Result<Value> {
        crate::config::check_container_name(name)?;
        // An empty --to is no release (a plugin would take it for a plain rollback).
        if to.is_some_and(|t| t.trim().is_empty()) {
            return Err(Error::input(
                format!("bad --to {:?}: it names no release", to.unwrap_or("")),
                format!("give a release id such as r3 (or 3; see `fractalic-publisher history {name}`), or leave --to out to go back to the previous release"),
            ));
        }
        let mut lock = crate::lock::DeployLock::acquire(name, "rollback", lock_wait)?;
        self.reconcile(&mut lock)?;
        let o = self.owned(name)?;
        let p = self.plugin(&o.plugin, "rollback")?;
        p.host().journal().describe(name, "rollback");
        let mut opts = rhai::Map::new();
        opts.insert("to".into(), to.unwrap_or("").into());
        opts.insert("timeout".into(), (timeout.as_secs() as i64).into());
        let r = p.call("rollback", (o.name.clone(), opts));
        match r {
            Ok(v) => {
                self.progress.finish();
                p.host().journal().commit()?;
                to_value::<Value>(&p, "rollback", v)
            }
            // What the plugin's rollback changed (a Swarm service rolled back ...) is undone
            // here, and the message says so.
            Err(e) => {
                let undo = p.host().journal().undo();
                self.progress.finish();
                Err(crate::outcome::with_cleanup(e, &undo, &self.progress))
            }
        }
    }

    /// `history NAME`: the plugin's `history(name)`.
    pub(crate) fn history(&self, name: &str) -> Result<Value> {
        let r = self.reconcile_read(name);
        if let Some(p) = r.problem(name) {
            // What history would name as live may not be what serves.
            return Err(Error::failed(p));
        }
        let o = self.owned(name)?;
        let p = self.plugin(&o.plugin, "history")?;
        to_value::<Value>(&p, "history", p.call("history", (o.name.clone(),))?)
    }

    /// `stop NAME`: the plugin's `stop(name)`.
    pub(crate) fn stop(&self, name: &str) -> Result<Value> {
        let mut lock = crate::lock::DeployLock::acquire(name, "stop", Duration::ZERO)?;
        self.reconcile(&mut lock)?;
        let o = self.owned(name)?;
        let p = self.plugin(&o.plugin, "stop")?;
        p.host().journal().describe(&o.name, "stop");
        let v = p.call("stop", (o.name.clone(),))?;
        to_value::<contract::StopResult>(&p, "stop", v)
    }

    /// `start NAME`: the plugin's `start(name, opts)`. A deployment that was stopped and does
    /// not become healthy (or an interrupt) leaves it stopped again, as it was.
    pub(crate) fn start(&self, name: &str, timeout: Duration) -> Result<Value> {
        let mut lock = crate::lock::DeployLock::acquire(name, "start", Duration::ZERO)?;
        self.reconcile(&mut lock)?;
        let o = self.owned(name)?;
        let p = self.plugin(&o.plugin, "start")?;
        let mut opts = rhai::Map::new();
        opts.insert("timeout".into(), (timeout.as_secs() as i64).into());
        // Stopping it again is the undo of this start: an interrupt or a failure does it.
        let journal = crate::journal::Journal::new();
        journal.set_docker(Arc::clone(&self.docker));
        journal.describe(&o.name, "start");
        if let (false, Some(args)) = (o.running, &o.stop_args) {
            journal.record(crate::journal::Resource::DockerObject {
                what: format!("{} {} (started)", o.kind, o.name),
                remove_args: args.clone(),
            })?;
        }
        let r = p.call("start", (o.name.clone(), opts));
        self.progress.finish();
        match r {
            Ok(v) => {
                journal.commit()?;
                to_value::<contract::StartResult>(&p, "start", v)
            }
            Err(e) if o.running || e.exit_code() == crate::error::exit::DOCKER_UNAVAILABLE => {
                let _ = journal.commit();
                Err(e)
            }
            Err(e) => {
                let undo = journal.undo();
                let note = match undo.left.first() {
                    None if o.stop_args.is_none() => format!(
                        "plugin {} gives no way to stop {} again, so it may be left running; stop it with: fractalic-publisher stop {}",
                        o.plugin, o.name, o.name
                    ),
                    None => format!("{} was stopped again, as it was before", o.name),
                    Some(l) => format!(
                        "stopping {} again failed too ({}); stop it with: {}",
                        o.name, l.error, l.remove_with
                    ),
                };
                let hint = format!(
                    "see `fractalic-publisher logs {n}` and `fractalic-publisher logs {n} --service ai_server`",
                    n = o.name
                );
                Err(match e {
                    Error::Input {
                        what,
                        hint: h,
                        field,
                    } => Error::Input {
                        what,
                        hint: format!("{h}; {note}"),
                        field,
                    },
                    other => Error::failed(format!("{other}; {note}; {hint}")),
                })
            }
        }
    }

    /// `rm NAME [--force]`: the plugin's `delete(name, opts)`.
    pub(crate) fn rm(&self, name: &str, force: bool) -> Result<Value> {
        let mut lock = crate::lock::DeployLock::acquire(name, "rm", Duration::ZERO)?;
        let finishes = lock.died_command().as_deref() == Some("rm");
        if force {
            // The way out of anything: unfinished work is said, not a reason to refuse.
            let r = crate::reconcile::under_lock(&self.docker, &mut lock, self);
            for f in &r.fixed {
                self.progress.warn(format!("repaired {name}: {f}"));
            }
            if let Some(p) = r.problem(name) {
                self.progress.warn(p);
            }
        } else {
            self.reconcile(&mut lock)?;
        }
        let o = match self.owned(name) {
            // The rm a killed run began is what this one asked for, and it is finished now.
            Err(Error::NotFound { .. }) if finishes => {
                return Ok(json!({
                    "name": name,
                    "removed": [],
                    "was": "removed by finishing the rm a killed run began",
                }));
            }
            o => o?,
        };
        let p = self.plugin(&o.plugin, "delete")?;
        p.host().journal().describe(&o.name, "rm");
        let mut opts = rhai::Map::new();
        opts.insert("force".into(), force.into());
        let v = p.call("delete", (o.name.clone(), opts))?;
        to_value::<contract::DeleteResult>(&p, "delete", v)
    }
}

impl crate::reconcile::Finisher for Manager {
    /// Runs the deployment's plugin's `delete(name, {force: true})` on what is left of it
    /// (`lookup` finds leftovers too: kept containers, secrets, build containers).
    fn finish_removal(&self, name: &str) -> Result<Vec<String>> {
        let o = match self.owned(name) {
            Ok(o) => o,
            Err(Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let p = self.plugin(&o.plugin, "delete")?;
        p.host().journal().describe(&o.name, "rm");
        let mut opts = rhai::Map::new();
        opts.insert("force".into(), true.into());
        let v = p.call("delete", (o.name.clone(), opts))?;
        let r = to_value::<contract::DeleteResult>(&p, "delete", v)?;
        let removed: Vec<String> = r["removed"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect();
        Ok(if removed.is_empty() {
            vec![format!("what was left of {name}")]
        } else {
            removed
        })
    }
}

/// Checks an entry point's result against its contract type and returns it as JSON.
fn to_value<T: serde::de::DeserializeOwned + serde::Serialize>(
    p: &Plugin,
    entry: &str,
    v: rhai::Dynamic,
) -> Result<Value> {
    let typed: T = contract::entry_result(&p.source.label(), entry, &v)?;
    serde_json::to_value(typed).map_err(|e| Error::failed(format!("{entry}() result: {e}")))
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        // Control characters (a label may hold any) are escaped, so a cell stays one cell.
        Value::String(s) if s.chars().any(char::is_control) => {
            s.chars().flat_map(char::escape_default).collect()
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Says what bringing the front proxy back did, or why it could not.
pub(crate) fn report_heal(progress: &Progress, r: Result<Vec<String>>) {
    match r {
        Ok(done) => {
            for d in done {
                progress.warn(format!("the front proxy was not running: {d}"));
            }
        }
        Err(e) => progress.warn(format!(
            "the front proxy is not running and could not be brought back: {e} (try: fractalic-publisher proxy up)"
        )),
    }
}

/// The `ps` table: NAME PLUGIN SCRIPT STATE HEALTH URL AGE.
pub(crate) fn render_ps(entries: &[Value]) -> String {
    const COLS: &[(&str, &str)] = &[
        ("NAME", "name"),
        ("PLUGIN", "plugin"),
        ("SCRIPT", "script"),
        ("STATE", "state"),
        ("HEALTH", "health"),
        ("URL", "url"),
        ("AGE", "age"),
    ];
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| COLS.iter().map(|(_, k)| cell(&e[*k])).collect())
        .collect();
    let mut widths: Vec<usize> = COLS.iter().map(|(h, _)| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.push('\n');
        s
    };
    let mut o = line(COLS.iter().map(|(h, _)| h.to_string()).collect());
    for r in rows {
        o.push_str(&line(r));
    }
    o
}

/// `status` as `Key: value` lines, known keys first in a fixed order, then any others.
pub(crate) fn render_status(v: &Value) -> String {
    const KEYS: &[(&str, &str)] = &[
        ("name", "Name"),
        ("plugin", "Plugin"),
        ("state", "State"),
        ("health", "Health"),
        ("url", "URL"),
        ("image", "Image"),
        ("image_digest", "Digest"),
        ("created", "Created"),
        ("started_at", "Started"),
        ("restart_count", "Restarts"),
        ("port", "Port"),
        ("bind", "Bind"),
        ("script", "Script"),
        ("script_path", "Script path"),
    ];
    // Shown as the Health line already.
    const HIDDEN: &[&str] = &["healthy"];
    let mut o = String::new();
    let mut row = |label: &str, value: &Value| {
        let text = match value {
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| format!("{k} {}", cell(v)))
                .collect::<Vec<_>>()
                .join(", "),
            other => cell(other),
        };
        o.push_str(&format!("{:<13}{text}\n", format!("{label}:")));
    };
    for (k, label) in KEYS {
        if let Some(val) = v.get(*k) {
            row(label, val);
        }
    }
    if let Some(m) = v.as_object() {
        for (k, val) in m {
            if !KEYS.iter().any(|(known, _)| known == k) && !HIDDEN.contains(&k.as_str()) {
                row(k, val);
            }
        }
    }
    o
}

/// What `start` prints: the deployment is back and where it answers.
pub(crate) fn render_start(v: &Value) -> String {
    let name = cell(&v["name"]);
    let mut o = format!("Started {name}: healthy");
    if let Some(ms) = v["health_ms"].as_i64() {
        o.push_str(&format!(" after {ms} ms"));
    }
    o.push('\n');
    let url = cell(&v["url"]);
    if url != "-" {
        o.push_str(&format!(
            "   • Host: {url}\n   • Health Check: {url}/health\n"
        ));
    }
    o
}

/// Seconds from a flag value: a whole number from 1 to 3600.
pub(crate) fn parse_secs(s: &str, flag: &str) -> Result<Duration> {
    match s.trim().parse::<u64>() {
        Ok(n) if (1..=3600).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(Error::input(
            format!("bad {flag} {s:?}"),
            "give a whole number of seconds from 1 to 3600",
        )),
    }
}

/// The `--json` object for a failed management command.
pub(crate) fn render_json_error(e: &Error) -> Value {
    json!({
        "success": false,
        "error": crate::error::one_line(&e.to_string()),
        "error_kind": e.kind(),
        "exit_code": e.exit_code(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_table_aligns_and_marks_empty_cells() {
        let t = render_ps(&[
            json!({"name": "a", "plugin": "docker-registry", "script": "s", "state": "running",
                   "health": "healthy", "url": "http://localhost:8001", "age": "5m"}),
            json!({"name": "longer-name", "plugin": "p", "script": "", "state": "exited",
                   "health": "-", "url": "", "age": "1h"}),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NAME         PLUGIN"), "{t}");
        assert!(lines[2].starts_with("longer-name  p "), "{t}");
        assert!(lines[2].contains("  exited   -        -   "), "{t}");
        assert!(lines[2].ends_with(" 1h"), "{t}");
    }

    #[test]
    fn status_lines_in_order() {
        let s = render_status(&json!({
            "url": "http://localhost:8001", "name": "x", "extra": 1,
            "health": {"ai_server": "healthy", "mcp_manager": "running"},
        }));
        assert_eq!(
            s,
            "Name:        x\nHealth:      ai_server healthy, mcp_manager running\nURL:         http://localhost:8001\nextra:       1\n"
        );
    }
}
