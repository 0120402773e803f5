//! The typed contract between the binary and a plugin: the config handed to `validate` and
//! `publish`, and the results read back from every entry point. A result is checked field by
//! field before it is used, so a plugin that returns a missing or wrong field fails with
//! `FILE: ENTRY() result: field "F" must be ...`, never with an empty cell in the output.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The plugin contract as docs/plugin-api.md states it (printed by `plugin api`
/// ahead of the host functions): entry points, what each must return, and `config`. Kept
/// beside the types and checks it describes.
pub(crate) const ENTRY_POINTS_MD: &str = r#"A plugin is a Rhai script `NAME.rhai`. It is looked up, first match wins, in `--plugins-dir` /
`FRACTALIC_PUBLISHER_PLUGINS`, then `./plugins`, then `$XDG_CONFIG_HOME/fractalic-publisher/plugins`
(`~/.config/...`), then the plugins built into the binary. Files are re-read on every run; the
deploy says which file it used. The engine is hardened: operation, call-depth, expression-depth,
string/array/map size limits, strict variables, no `eval`; `print` goes to the progress output.
Syntax errors are reported as `file:line:col: message` (exit 2); errors thrown while running as
`file:line:col: message` (exit 1).

### Entry points

The binary knows no platform: what a deployment is (a container, a Swarm service ...) is the
plugin's business, and every command goes through these functions. Results are checked field by
field: a missing or wrong field fails with `FILE: ENTRY() result: field "F" must be ...` (exit 1),
never as an empty cell in the output. Fields not listed are kept and shown (`--json`, `status`).

| function | called by | returns (required fields in bold) |
| --- | --- | --- |
| `info()` | `list`, `info`, `badges` | map: **`name`**, `display_name`, `description`, `version`, `capabilities` (array), `difficulty`, `deploy_time`, `homepage` |
| `validate(config)` | `deploy`, before anything is created | array of problems (strings); non-empty means exit 2 |
| `publish(config)` | `deploy`, `doctor` (docker-registry's, for its throwaway) | map: **`url`** (string, not empty), `deployment_id`, `container`, `container_id`, `port` (int), `bind`, `image`, `image_digest`, `image_cached` (bool), `files`, `bytes`, `health_ms`, `mcp_ms` (ints), `services` (map of service -> state string) |
| `lookup(name)` | every management command: each plugin that defines it is asked in turn (by plugin name) until one knows the name | `()` (not mine) or **`{name, managed, running}`**, `plugin`, `kind` ("container", "Swarm service"), `stop_args` (array of strings: the docker argv that stops it again when a `start` fails; recorded in the undo journal). `managed: false` is refused (exit 2, REST 403); no plugin knowing it: exit 2, REST 404 |
| `list_all()` | `ps`, once per plugin that defines it (one docker call, or a fixed few) | array of **`{name, plugin, state}`** maps with `script`, `health`, `url`, `age` (strings) and any extras (`--json`); `ps` leaves out entries whose `state` is not `running` unless `--all`. A plugin that cannot list is a warning; when none can, `ps` fails |
| `status(name)` | `status` | **`{name, state}`**; known keys are shown in order (`name, plugin, state, health, url, image, image_digest, created, started_at, restart_count, port, bind, script, script_path`), others after them |
| `logs(name, opts)` | `logs` | text to print, or `""` after streaming. `opts`: `{tail (-1 = all), follow, service ("" or ai_server / mcp_manager / backend)}` |
| `stop(name)` | `stop` | **`{name, state}`** |
| `start(name, opts)` | `start` | **`{name, state}`**, `url`, `health_ms`; throw when it does not become healthy (the binary then runs `lookup`'s `stop_args` if it was stopped). `opts`: `{timeout}` (seconds) |
| `delete(name, opts)` | `rm` | **`{name, removed}`** (`removed`: array of strings). `opts`: `{force}`; a running one without force: `bad_input(...)` |
| `update(config)` | `deploy`, instead of `publish`, when `config.name` is a deployment this tool made with this plugin (under the deployment's lock; see docs/updates.md). Without it such a deploy is refused as before | the `publish` map plus `release` and `update`: `{kind: none / in-place / container, release, from, changes, lines, reasons, restarted, elapsed_ms, ...}` (`changes`: names and keys only). docker-registry: the release-switch and container-replacement functions below; docker-swarm can map it onto `docker service update` |
| `rollback(name, opts)` | `rollback` (under the lock) | `{name, release, of, kind, restarted}`. `opts`: `{to ("" = the previous release), timeout}` (seconds) |
| `history(name)` | `history` | `{current, releases: [{id, time, kind, of, outcome, error, changes, state}]}` |

`info`, `validate` and `publish` are required; a plugin without one of the others gets
"plugin X does not define `fn status(...)`" (exit 1) for that command.

### `config`

What `validate(config)` and `publish(config)` get (no secret values in it): `plugin`, `name`,
`script_name`, `script_folder`, `main_script`, `script_path`, `image`, `platform`, `port`,
`port_exact`, `bind`, `pull`, `timeout` (seconds), `env_keys` (names only), `config_files`
(`name`, `source`, `dests`), `warnings`, `project_root`, `replicas`, `registry`, `publish_mode`,
`placement_pref` (`spread=node.labels.KEY` ..., `none`, or `""`: not given),
`max_replicas_per_node` (0 to 100, 0 no limit; -1: not given), `proxy` (`"yes"`, `"no"` or `""`: not
given), `domain`, `tls` (`""`: not given);
`port_given` (whether `--port` was given: an update keeps the deployment's port otherwise).
"#;

/// One configuration file of a deploy, as plugins see it (never its content).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct ConfigFileRef {
    /// `settings.toml`, `.env` or `mcp_servers.json`.
    pub name: String,
    /// Where it is read from on this host.
    pub source: String,
    /// Where the image expects it.
    pub dests: Vec<String>,
}

/// The config handed to a plugin's `validate(config)` and `publish(config)`: names, paths and
/// flags; never secret values (`env_keys` holds only the variables' names).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct PluginConfig {
    pub plugin: String,
    pub name: String,
    pub script_name: String,
    pub script_folder: String,
    pub main_script: String,
    pub script_path: String,
    pub image: String,
    /// `--platform` ("" for the engine's own).
    pub platform: String,
    pub port: u16,
    pub port_exact: bool,
    pub bind: String,
    pub pull: String,
    /// Seconds (the `--timeout` flag's unit).
    pub timeout: u64,
    pub env_keys: Vec<String>,
    pub config_files: Vec<ConfigFileRef>,
    pub warnings: Vec<String>,
    pub project_root: String,
    pub replicas: u32,
    pub registry: String,
    pub publish_mode: String,
    /// `--placement-pref`: `spread=...`, `none`, or `""` (not given: a new service gets
    /// Swarm's default spread, an update keeps the service's).
    pub placement_pref: String,
    /// `--max-replicas-per-node`: 0 (no limit) to 100, or -1 (not given: as for
    /// `placement_pref`).
    pub max_replicas_per_node: i64,
    /// Served through the front proxy: `"yes"`, `"no"`, or `""` (not given: a new deployment
    /// is not; an update keeps what the deployment has).
    pub proxy: String,
    /// `--domain` ("" for none).
    pub domain: String,
    /// `--tls`: `none`, `internal`, `acme`, `files`, or "" (not given).
    pub tls: String,
}

/// What a value must be.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Bool,
    Int,
    StrList,
    Map,
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::Bool => "true or false",
            Kind::Int => "an integer",
            Kind::StrList => "an array of strings",
            Kind::Map => "a map",
        }
    }
    fn fits(self, v: &Value) -> bool {
        match self {
            Kind::Str => v.is_string(),
            Kind::Bool => v.is_boolean(),
            Kind::Int => v.is_i64() || v.is_u64(),
            Kind::StrList => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            Kind::Map => v.is_object(),
        }
    }
}

/// Checks one result of one entry point of one plugin file.
struct Check<'a> {
    file: &'a str,
    entry: &'a str,
}

impl Check<'_> {
    fn error(&self, message: String) -> Error {
        Error::Plugin {
            location: self.file.to_string(),
            message: format!("{}() result: {message}", self.entry),
        }
    }

    /// The result as a JSON map (a plugin's maps hold only strings, numbers, bools, arrays,
    /// maps and ()).
    fn map(&self, v: &rhai::Dynamic) -> Result<Map<String, Value>> {
        if v.is_unit() {
            return Err(
                self.error("the entry point returned nothing (()); it must return a map".into())
            );
        }
        let j: Value = rhai::serde::from_dynamic(v)
            .map_err(|e| self.error(format!("cannot be read as data: {e}")))?;
        match j {
            Value::Object(m) => Ok(m),
            other => Err(self.error(format!("must be a map, not {}", type_name(&other)))),
        }
    }

    /// Every field in `spec` is checked: required ones must be there, present ones must have
    /// the right kind (`()` counts as absent).
    fn fields(&self, m: &Map<String, Value>, spec: &[(&str, Kind, bool)], at: &str) -> Result<()> {
        for (key, kind, required) in spec {
            match m.get(*key) {
                None | Some(Value::Null) if *required => {
                    return Err(self.error(format!(
                        "{at}field \"{key}\" is missing (it must be {})",
                        kind.what()
                    )))
                }
                None | Some(Value::Null) => {}
                Some(v) if !kind.fits(v) => {
                    return Err(self.error(format!(
                        "{at}field \"{key}\" must be {}, not {}",
                        kind.what(),
                        type_name(v)
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn typed<T: serde::de::DeserializeOwned>(&self, m: Map<String, Value>) -> Result<T> {
        serde_json::from_value(Value::Object(m)).map_err(|e| self.error(e.to_string()))
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "()",
        Value::Bool(_) => "a bool",
        Value::Number(n) if n.is_f64() => "a decimal number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a map",
    }
}

/// What `publish(config)` returns. `url` is required; the rest is optional and typed; every
/// other field the plugin reports is kept in `extra` (shown under `details.plugin_result`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct PublishResult {
    pub url: String,
    #[serde(default)]
    pub deployment_id: Option<String>,
    #[serde(default)]
    pub container: Option<String>,
    #[serde(default)]
    pub container_id: Option<String>,
    #[serde(default)]
    pub port: Option<i64>,
    #[serde(default)]
    pub bind: Option<String>,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub image_digest: Option<String>,
    #[serde(default)]
    pub image_cached: Option<bool>,
    #[serde(default)]
    pub files: Option<i64>,
    #[serde(default)]
    pub bytes: Option<i64>,
    /// Service name → its state ("healthy" ...).
    #[serde(default)]
    pub services: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    pub health_ms: Option<i64>,
    #[serde(default)]
    pub mcp_ms: Option<i64>,
    /// The whole result as the plugin returned it.
    #[serde(skip)]
    pub raw: Value,
}

/// Reads `publish()`'s result.
pub(crate) fn publish_result(file: &str, v: &rhai::Dynamic) -> Result<PublishResult> {
    let c = Check {
        file,
        entry: "publish",
    };
    let m = c.map(v)?;
    c.fields(
        &m,
        &[
            ("url", Kind::Str, true),
            ("deployment_id", Kind::Str, false),
            ("container", Kind::Str, false),
            ("container_id", Kind::Str, false),
            ("port", Kind::Int, false),
            ("bind", Kind::Str, false),
            ("image", Kind::Str, false),
            ("image_digest", Kind::Str, false),
            ("image_cached", Kind::Bool, false),
            ("files", Kind::Int, false),
            ("bytes", Kind::Int, false),
            ("services", Kind::Map, false),
            ("health_ms", Kind::Int, false),
            ("mcp_ms", Kind::Int, false),
        ],
        "",
    )?;
    if m["url"].as_str().is_some_and(str::is_empty) {
        return Err(
            c.error("field \"url\" is empty: it must say where the deployment answers".into())
        );
    }
    if let Some(Value::Object(s)) = m.get("services") {
        if let Some((k, v)) = s.iter().find(|(_, v)| !v.is_string()) {
            return Err(c.error(format!(
                "field \"services.{k}\" must be a string, not {}",
                type_name(v)
            )));
        }
    }
    let raw = Value::Object(m.clone());
    let mut r: PublishResult = c.typed(m)?;
    r.raw = raw;
    Ok(r)
}

/// What `lookup(name)` returns for a deployment it knows (it returns () for one it does not).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct LookupResult {
    /// The object's real name.
    pub name: String,
    /// Its `fractalic-publisher.plugin` label ("" when it has none).
    #[serde(default)]
    pub plugin: String,
    /// Whether this tool made it (its `fractalic-publisher.managed=true` label).
    pub managed: bool,
    /// Whether it runs now.
    pub running: bool,
    /// What it is, for messages ("container", "Swarm service").
    #[serde(default = "default_kind")]
    pub kind: String,
    /// The docker argv that stops it again: the undo of a `start` that fails.
    #[serde(default)]
    pub stop_args: Option<Vec<String>>,
}

fn default_kind() -> String {
    "object".into()
}

/// Reads `lookup(name)`'s result: None when the plugin answered ().
pub(crate) fn lookup_result(file: &str, v: &rhai::Dynamic) -> Result<Option<LookupResult>> {
    if v.is_unit() {
        return Ok(None);
    }
    let c = Check {
        file,
        entry: "lookup",
    };
    let m = c.map(v)?;
    c.fields(
        &m,
        &[
            ("name", Kind::Str, true),
            ("managed", Kind::Bool, true),
            ("running", Kind::Bool, true),
            ("plugin", Kind::Str, false),
            ("kind", Kind::Str, false),
            ("stop_args", Kind::StrList, false),
        ],
        "",
    )?;
    c.typed(m).map(Some)
}

/// One row of `ps`, as `list_all()` returns it. The table shows the named columns; `--json`
/// shows every field the plugin gave.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct ListEntry {
    pub name: String,
    pub plugin: String,
    pub state: String,
    #[serde(default)]
    pub script: String,
    #[serde(default)]
    pub health: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub age: String,
    /// Whatever else the plugin reports (port, image, replicas ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Reads `list_all()`'s result: an array of entries.
pub(crate) fn list_result(file: &str, v: &rhai::Dynamic) -> Result<Vec<ListEntry>> {
    let c = Check {
        file,
        entry: "list_all",
    };
    let Some(items) = v.clone().try_cast::<rhai::Array>() else {
        return Err(c.error(format!("must be an array of maps, not {}", v.type_name())));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let m = c.map(item).map_err(|_| {
                c.error(format!("item {i} must be a map, not {}", item.type_name()))
            })?;
            c.fields(
                &m,
                &[
                    ("name", Kind::Str, true),
                    ("plugin", Kind::Str, true),
                    ("state", Kind::Str, true),
                    ("script", Kind::Str, false),
                    ("health", Kind::Str, false),
                    ("url", Kind::Str, false),
                    ("age", Kind::Str, false),
                ],
                &format!("item {i}: "),
            )?;
            c.typed(m)
        })
        .collect()
}

/// What `status(name)` returns: `name` and `state` are required, the rest is shown as given.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct StatusResult {
    pub name: String,
    pub state: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What `start(name, opts)` returns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct StartResult {
    pub name: String,
    pub state: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub health_ms: Option<i64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What `stop(name)` returns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct StopResult {
    pub name: String,
    pub state: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What `delete(name, opts)` returns: what it removed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct DeleteResult {
    pub name: String,
    pub removed: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Reads a management entry point's result (`status`, `start`, `stop`, `delete`).
pub(crate) fn entry_result<T: serde::de::DeserializeOwned>(
    file: &str,
    entry: &str,
    v: &rhai::Dynamic,
) -> Result<T> {
    let c = Check { file, entry };
    let m = c.map(v)?;
    let spec: &[(&str, Kind, bool)] = match entry {
        "status" | "stop" => &[("name", Kind::Str, true), ("state", Kind::Str, true)],
        "start" => &[
            ("name", Kind::Str, true),
            ("state", Kind::Str, true),
            ("url", Kind::Str, false),
            ("health_ms", Kind::Int, false),
        ],
        "delete" => &[("name", Kind::Str, true), ("removed", Kind::StrList, true)],
        _ => &[],
    };
    c.fields(&m, spec, "")?;
    c.typed(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dynamic(v: Value) -> rhai::Dynamic {
        rhai::serde::to_dynamic(&v).unwrap()
    }

    #[test]
    fn publish_needs_a_string_url() {
        let e =
            publish_result("plugins/x.rhai", &dynamic(serde_json::json!({"url": 5}))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "plugins/x.rhai: publish() result: field \"url\" must be a string, not an integer"
        );
        let e =
            publish_result("plugins/x.rhai", &dynamic(serde_json::json!({"port": 1}))).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("publish() result: field \"url\" is missing (it must be a string)"),
            "{e}"
        );
        let e = publish_result("p.rhai", &rhai::Dynamic::UNIT).unwrap_err();
        assert!(e.to_string().contains("returned nothing"), "{e}");
        let e = publish_result(
            "p.rhai",
            &dynamic(serde_json::json!({"url": "http://h:1", "services": {"ai": 1}})),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("\"services.ai\" must be a string"),
            "{e}"
        );
        let r = publish_result(
            "p.rhai",
            &dynamic(serde_json::json!({"url": "http://h:1", "port": 1, "own": [1]})),
        )
        .unwrap();
        assert_eq!((r.url.as_str(), r.port), ("http://h:1", Some(1)));
        assert_eq!(r.raw["own"], serde_json::json!([1]));
    }

    #[test]
    fn list_items_are_checked_one_by_one() {
        let v = dynamic(serde_json::json!([
            {"name": "a", "plugin": "p", "state": "running", "port": "8001"},
            {"name": "b", "plugin": "p", "state": 3},
        ]));
        let e = list_result("x.rhai", &v).unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.rhai: list_all() result: item 1: field \"state\" must be a string, not an integer"
        );
        let ok = list_result(
            "x.rhai",
            &dynamic(serde_json::json!([{"name": "a", "plugin": "p", "state": "running", "port": "8001"}])),
        )
        .unwrap();
        assert_eq!(ok[0].extra["port"], "8001");
        assert_eq!(ok[0].health, "");
        let e = list_result("x.rhai", &dynamic(serde_json::json!({"a": 1}))).unwrap_err();
        assert!(e.to_string().contains("must be an array of maps"), "{e}");
    }

    #[test]
    fn lookup_unit_is_not_mine_and_fields_are_typed() {
        assert_eq!(lookup_result("x", &rhai::Dynamic::UNIT).unwrap(), None);
        let e = lookup_result(
            "x.rhai",
            &dynamic(serde_json::json!({"name": "a", "managed": "yes", "running": true})),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("lookup() result: field \"managed\" must be true or false, not a string"),
            "{e}"
        );
        let e = entry_result::<DeleteResult>(
            "x.rhai",
            "delete",
            &dynamic(serde_json::json!({"name": "a", "removed": [1]})),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("delete() result: field \"removed\" must be an array of strings"),
            "{e}"
        );
    }
}
