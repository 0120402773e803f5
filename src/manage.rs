//! The management commands (`ps`, `status`, `logs`, `stop`, `start`, `rm`): find the
//! deployment in Docker by its labels, check it is ours, and hand it to the entry point of the
//! plugin that made it. Also renders their results. Docker's labels are all the state there is.

use crate::config;
use crate::docker::{Docker, QUICK};
use crate::error::{Error, Result};
use crate::plugin::host::{self, Host, LABEL_CREATED, LABEL_MANAGED, LABEL_PLUGIN};
use crate::plugin::{self, Plugin};
use crate::progress::Progress;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The labels `ps` reads in its one `docker ps` call (plugins find them in `row.labels`).
pub const PS_LABELS: &[&str] = &[
    LABEL_MANAGED,
    LABEL_PLUGIN,
    LABEL_CREATED,
    "fractalic-publisher.script",
    "fractalic-publisher.script-path",
    "fractalic-publisher.port",
    "fractalic-publisher.bind",
    "fractalic-publisher.image",
    "fractalic-publisher.image-digest",
];

const SEE_PS: &str = "`fractalic-publisher ps --all` lists the deployments this tool manages";

/// What every management command needs: docker, where plugins are, where progress goes.
pub struct Manager {
    docker: Arc<Docker>,
    dirs: Vec<PathBuf>,
    progress: Progress,
    capture: bool,
    follow: std::sync::Mutex<Option<host::Follow>>,
}

/// A container this tool created, as `docker container inspect` showed it.
pub struct Owned {
    /// The container's name (without docker's leading `/`).
    pub name: String,
    /// The plugin that created it (its `fractalic-publisher.plugin` label).
    pub plugin: String,
    /// Whether it was running when looked up.
    pub running: bool,
    /// How to stop it again when a `start` fails (docker argv; None: `docker stop NAME`).
    /// A plugin's `lookup(name)` gives it for deployments that are not one container.
    pub stop_args: Option<Vec<String>>,
}

impl Manager {
    /// Finds docker and the plugin directories; `quiet` silences progress (for `--json`).
    pub fn new(
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

    /// Logs are returned as text instead of streamed to stdout (the REST API).
    pub fn capturing(mut self) -> Self {
        self.capture = true;
        self
    }

    /// A followed log goes line by line to `follow` (the REST API's log stream); implies
    /// [`Manager::capturing`] for everything else.
    pub fn following(mut self, follow: host::Follow) -> Self {
        self.capture = true;
        self.follow = std::sync::Mutex::new(Some(follow));
        self
    }

    /// The docker handle.
    pub fn docker(&self) -> &Arc<Docker> {
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
        let follow = self.follow.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(f) = follow {
            host = host.with_follow(f);
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

    /// Looks `name` up: exit 2 when there is no such container or it is not ours.
    pub fn owned(&self, name: &str) -> Result<Owned> {
        config::check_container_name(name)?;
        let Some(v) = self.docker.container_inspect(name)? else {
            // Not a container: maybe a deployment of a platform that knows it by other means.
            if let Some(o) = self.lookup_in_plugins(name)? {
                return Ok(o);
            }
            return Err(Error::NotFound {
                what: format!("no deployment named {name:?}"),
                hint: format!(
                    "there is no container with that name, and no plugin knows a deployment by it; {SEE_PS}"
                ),
            });
        };
        let labels = &v["Config"]["Labels"];
        let label = |k: &str| labels[k].as_str().unwrap_or("").to_string();
        let real = v["Name"]
            .as_str()
            .unwrap_or(name)
            .trim_start_matches('/')
            .to_string();
        if label(LABEL_MANAGED) != "true" {
            return Err(Error::NotManaged {
                what: format!("container {real:?} was not created by fractalic-publisher"),
                hint: format!(
                    "it exists but has no {LABEL_MANAGED}=true label, so this tool leaves it alone (use docker itself); {SEE_PS}"
                ),
            });
        }
        let plugin = label(LABEL_PLUGIN);
        if plugin.is_empty() {
            return Err(Error::failed(format!(
                "container {real:?} has no {LABEL_PLUGIN} label, so no plugin can manage it; remove it with `fractalic-publisher rm {real}`"
            )));
        }
        Ok(Owned {
            name: real,
            plugin,
            running: v["State"]["Running"].as_bool().unwrap_or(false),
            stop_args: None,
        })
    }

    /// Every available plugin that defines entry point `entry`, loaded (those that cannot be
    /// loaded are skipped with a warning).
    fn plugins_with(&self, entry: &str) -> Vec<Plugin> {
        let mut out = Vec::new();
        for source in plugin::available(&self.dirs) {
            if !source.code.contains(&format!("fn {entry}(")) {
                continue;
            }
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

    /// Asks each plugin that defines `lookup(name)`, in turn, whether `name` is one of its
    /// deployments. A plugin answers () (not mine) or a map {name, plugin, managed, running,
    /// kind, stop_args}; `managed: false` means the object exists but this tool did not make it.
    fn lookup_in_plugins(&self, name: &str) -> Result<Option<Owned>> {
        for p in self.plugins_with("lookup") {
            let v = p.call("lookup", (name.to_string(),))?;
            if v.is_unit() {
                continue;
            }
            let v = to_value(&p, "lookup", v)?;
            let kind = v["kind"].as_str().unwrap_or("object").to_string();
            let real = v["name"].as_str().unwrap_or(name).to_string();
            if v["managed"].as_bool() != Some(true) {
                return Err(Error::NotManaged {
                    what: format!("{kind} {real:?} was not created by fractalic-publisher"),
                    hint: format!(
                        "it exists but has no {LABEL_MANAGED}=true label, so this tool leaves it alone (use docker itself); {SEE_PS}"
                    ),
                });
            }
            let plugin = v["plugin"].as_str().unwrap_or("").to_string();
            if plugin.is_empty() {
                return Err(Error::failed(format!(
                    "{kind} {real:?} has no {LABEL_PLUGIN} label, so no plugin can manage it"
                )));
            }
            let stop_args = v["stop_args"].as_array().map(|a| {
                a.iter()
                    .map(|x| x.as_str().unwrap_or("").to_string())
                    .collect()
            });
            return Ok(Some(Owned {
                name: real,
                plugin,
                running: v["running"].as_bool().unwrap_or(false),
                stop_args,
            }));
        }
        Ok(None)
    }

    /// `ps`: one `docker ps` call; each plugin's `list(rows)` turns its rows into entries.
    pub fn ps(&self, all: bool) -> Result<Vec<Value>> {
        let keys: Vec<String> = PS_LABELS.iter().map(|k| k.to_string()).collect();
        let format = host::ps_format(&keys);
        let filter = format!("label={LABEL_MANAGED}=true");
        let mut args = vec!["ps", "--no-trunc", "--filter", &filter, "--format", &format];
        if all {
            args.push("--all");
        }
        let out = self.docker.run(&args, None, QUICK)?;
        let mut by_plugin: BTreeMap<String, rhai::Array> = BTreeMap::new();
        for row in host::parse_ps(&out.stdout, &keys)? {
            let plugin = row
                .read_lock::<rhai::Map>()
                .and_then(|m| m.get("labels").cloned())
                .and_then(|l| {
                    l.read_lock::<rhai::Map>()
                        .map(|l| l.get(LABEL_PLUGIN).cloned())
                })
                .flatten()
                .map(|p| p.to_string())
                .unwrap_or_default();
            by_plugin.entry(plugin).or_default().push(row);
        }
        let mut entries = Vec::new();
        for (name, rows) in by_plugin {
            let listed = self
                .plugin(&name, "list")
                .and_then(|p| p.call("list", (rows.clone(),)).map(|v| (p, v)))
                .and_then(|(p, v)| {
                    rhai::serde::from_dynamic::<Vec<Value>>(&v).map_err(|e| Error::Plugin {
                        location: p.source.label(),
                        message: format!("list() must return an array of maps: {e}"),
                    })
                });
            match listed {
                Ok(v) => entries.extend(v),
                Err(e) => {
                    self.progress.warn(format!(
                        "plugin {name:?} could not list its deployments ({e}); showing what Docker knows"
                    ));
                    entries.extend(rows.iter().map(|r| plain_entry(r, &name)));
                }
            }
        }
        // Platforms whose deployments are not containers list their own (one call each).
        for p in self.plugins_with("list_all") {
            let listed = p.call("list_all", ()).and_then(|v| {
                rhai::serde::from_dynamic::<Vec<Value>>(&v).map_err(|e| Error::Plugin {
                    location: p.source.label(),
                    message: format!("list_all() must return an array of maps: {e}"),
                })
            });
            match listed {
                Ok(v) => entries.extend(
                    v.into_iter()
                        .filter(|e| all || e["state"].as_str() == Some("running")),
                ),
                Err(e) => self.progress.warn(format!(
                    "plugin {:?} could not list its deployments ({e})",
                    p.source.name
                )),
            }
        }
        entries.sort_by(|a, b| {
            a["name"]
                .as_str()
                .unwrap_or("")
                .cmp(b["name"].as_str().unwrap_or(""))
        });
        Ok(entries)
    }

    /// `status NAME`: the plugin's `status(name)`.
    pub fn status(&self, name: &str) -> Result<Value> {
        let o = self.owned(name)?;
        let p = self.plugin(&o.plugin, "status")?;
        to_value(&p, "status", p.call("status", (o.name.clone(),))?)
    }

    /// `logs NAME`: the plugin's `logs(name, opts)`; returns what is left to print (a streamed
    /// log has already been written).
    pub fn logs(
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

    /// `stop NAME`: the plugin's `stop(name)`.
    pub fn stop(&self, name: &str) -> Result<Value> {
        let o = self.owned(name)?;
        let p = self.plugin(&o.plugin, "stop")?;
        to_value(&p, "stop", p.call("stop", (o.name.clone(),))?)
    }

    /// `start NAME`: the plugin's `start(name, opts)`. A deployment that was stopped and does
    /// not become healthy (or an interrupt) leaves it stopped again, as it was.
    pub fn start(&self, name: &str, timeout: Duration) -> Result<Value> {
        let o = self.owned(name)?;
        let p = self.plugin(&o.plugin, "start")?;
        let mut opts = rhai::Map::new();
        opts.insert("timeout".into(), (timeout.as_secs() as i64).into());
        // Stopping it again is the undo of this start: an interrupt or a failure does it.
        let journal = crate::journal::Journal::new();
        journal.set_docker(Arc::clone(&self.docker));
        if !o.running {
            journal.record(match &o.stop_args {
                Some(args) => crate::journal::Resource::DockerObject {
                    what: format!("{} (started)", o.name),
                    remove_args: args.clone(),
                },
                None => crate::journal::Resource::StartedContainer {
                    name: o.name.clone(),
                },
            })?;
        }
        let r = p.call("start", (o.name.clone(), opts));
        self.progress.finish();
        match r {
            Ok(v) => {
                journal.commit()?;
                to_value(&p, "start", v)
            }
            Err(e) if o.running || e.exit_code() == crate::error::exit::DOCKER_UNAVAILABLE => {
                let _ = journal.commit();
                Err(e)
            }
            Err(e) => {
                let undo = journal.undo();
                let note = match undo.left.first() {
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
                    Error::Input { what, hint: h } => Error::Input {
                        what,
                        hint: format!("{h}; {note}"),
                    },
                    other => Error::failed(format!("{other}; {note}; {hint}")),
                })
            }
        }
    }

    /// `rm NAME [--force]`: the plugin's `delete(name, opts)`.
    pub fn rm(&self, name: &str, force: bool) -> Result<Value> {
        let o = self.owned(name)?;
        let p = self.plugin(&o.plugin, "delete")?;
        let mut opts = rhai::Map::new();
        opts.insert("force".into(), force.into());
        to_value(&p, "delete", p.call("delete", (o.name.clone(), opts))?)
    }
}

fn to_value(p: &Plugin, entry: &str, v: rhai::Dynamic) -> Result<Value> {
    rhai::serde::from_dynamic(&v).map_err(|e| Error::Plugin {
        location: p.source.label(),
        message: format!("{entry}() must return a map: {e}"),
    })
}

/// A `ps` entry from the docker row alone (when the owning plugin cannot list).
fn plain_entry(row: &rhai::Dynamic, plugin: &str) -> Value {
    let v: Value = rhai::serde::from_dynamic(row).unwrap_or(Value::Null);
    let label = |k: &str| v["labels"][k].as_str().unwrap_or("").to_string();
    json!({
        "name": v["name"],
        "plugin": plugin,
        "script": label("fractalic-publisher.script"),
        "state": v["state"],
        "health": "-",
        "url": "",
        "age": "",
    })
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

/// The `ps` table: NAME PLUGIN SCRIPT STATE HEALTH URL AGE.
pub fn render_ps(entries: &[Value]) -> String {
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
pub fn render_status(v: &Value) -> String {
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
pub fn render_start(v: &Value) -> String {
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
pub fn parse_secs(s: &str, flag: &str) -> Result<Duration> {
    match s.trim().parse::<u64>() {
        Ok(n) if (1..=3600).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(Error::input(
            format!("bad {flag} {s:?}"),
            "give a whole number of seconds from 1 to 3600",
        )),
    }
}

/// The `--json` object for a failed management command.
pub fn render_json_error(e: &Error) -> Value {
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
