//! Plugins: discovery (files on disk override the built-ins embedded in the binary), the
//! hardened Rhai engine, compilation, and calls into a plugin's named entry points.

pub(crate) mod api;
pub(crate) mod host;
pub(crate) mod host_generic;
pub(crate) mod host_manage;
pub(crate) mod user_cache;

use crate::error::{Error, Result};
use crate::progress::Progress;
use host::Host;
use rhai::{Dynamic, Engine, EvalAltResult, Position, Scope, AST};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Plugins compiled into the binary: (name, source).
pub(crate) const BUILTIN: &[(&str, &str)] = &[
    (
        "docker-registry",
        include_str!("../../plugins/docker-registry.rhai"),
    ),
    (
        "docker-swarm",
        include_str!("../../plugins/docker-swarm.rhai"),
    ),
];

/// Entry points every plugin must define.
pub(crate) const REQUIRED_FNS: &[&str] = &["info", "validate", "publish"];

/// Where a plugin's code came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A `.rhai` file on disk (re-read on every run).
    File(PathBuf),
    /// Embedded in the binary.
    BuiltIn,
}

/// A plugin's name, origin and source code.
#[derive(Debug, Clone)]
pub(crate) struct PluginSource {
    pub name: String,
    pub origin: Origin,
    pub code: String,
}

impl PluginSource {
    /// How errors and progress name this plugin's file: a path, or `<built-in>/NAME.rhai`.
    pub(crate) fn label(&self) -> String {
        match &self.origin {
            Origin::File(p) => p.display().to_string(),
            Origin::BuiltIn => format!("<built-in>/{}.rhai", self.name),
        }
    }
}

/// Directories searched for `NAME.rhai`, first match wins: `--plugins-dir` /
/// `FRACTALIC_PUBLISHER_PLUGINS`, then `./plugins`, then the user's config directory.
pub(crate) fn search_dirs(flag: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = flag {
        dirs.push(d.to_path_buf());
    }
    dirs.push(PathBuf::from("plugins"));
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(c) = config {
        dirs.push(c.join("fractalic-publisher").join("plugins"));
    }
    dirs
}

fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Finds plugin `name`: the first `DIR/name.rhai` in `dirs`, else the built-in.
pub(crate) fn find(name: &str, dirs: &[PathBuf]) -> Result<PluginSource> {
    if !valid_plugin_name(name) {
        return Err(Error::input(
            format!("bad plugin name {name:?}"),
            "plugin names use lowercase letters, digits, '-' and '_' (see `fractalic-publisher list`)",
        ));
    }
    for dir in dirs {
        let path = dir.join(format!("{name}.rhai"));
        if path.is_file() {
            let code = std::fs::read_to_string(&path).map_err(|e| Error::Io {
                path: path.clone(),
                source: e,
            })?;
            return Ok(PluginSource {
                name: name.to_string(),
                origin: Origin::File(path),
                code,
            });
        }
    }
    if let Some((_, code)) = BUILTIN.iter().find(|(n, _)| *n == name) {
        return Ok(PluginSource {
            name: name.to_string(),
            origin: Origin::BuiltIn,
            code: (*code).to_string(),
        });
    }
    let known: Vec<String> = available(dirs).into_iter().map(|p| p.name).collect();
    Err(Error::input(
        format!("unknown plugin {name:?}"),
        format!("choose one of: {}", known.join(", ")),
    ))
}

/// Every plugin that can be used: files in `dirs` (first wins) and the built-ins, by name.
pub(crate) fn available(dirs: &[PathBuf]) -> Vec<PluginSource> {
    let mut names: Vec<String> = BUILTIN.iter().map(|(n, _)| n.to_string()).collect();
    for dir in dirs {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in rd.flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "rhai") {
                if let Some(stem) = p.file_stem().and_then(|s| s.to_str()) {
                    if valid_plugin_name(stem) && !names.iter().any(|n| n == stem) {
                        names.push(stem.to_string());
                    }
                }
            }
        }
    }
    names.sort();
    names.iter().filter_map(|n| find(n, dirs).ok()).collect()
}

/// Builds the hardened engine: limits on operations, depth and sizes, strict variables, no
/// `eval`, `print`/`debug` routed to progress output, and the host API registered.
pub(crate) fn engine(host: &Arc<Host>) -> Engine {
    let mut engine = Engine::new();
    engine
        .set_max_operations(10_000_000)
        .set_max_call_levels(32)
        .set_max_expr_depths(64, 32)
        // A docker listing carries every label of every deployment (`service ls` prints them
        // all): hand-written labels of tens of KB on tens of services must still list.
        .set_max_string_size(16 << 20)
        .set_max_array_size(100_000)
        .set_max_map_size(10_000)
        .set_max_variables(1_000)
        .set_strict_variables(true);
    engine.disable_symbol("eval");
    let p: Progress = host.progress.clone();
    engine.on_print(move |s| p.info(s));
    let p: Progress = host.progress.clone();
    engine.on_debug(move |s, _, pos| p.info(format!("debug {pos}: {s}")));
    api::register(&mut engine, host);
    engine
}

/// A compiled plugin bound to a host.
pub(crate) struct Plugin {
    pub source: PluginSource,
    engine: Engine,
    ast: AST,
    host: Arc<Host>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("source", &self.source.label())
            .finish()
    }
}

impl Plugin {
    /// Compiles `source` (syntax errors become `file:line:col: message`) and checks that the
    /// required entry points exist.
    pub(crate) fn load(source: PluginSource, host: Arc<Host>) -> Result<Plugin> {
        let engine = engine(&host);
        let label = source.label();
        let mut ast = engine
            .compile(&source.code)
            .map_err(|e| Error::PluginInvalid {
                location: location(&label, e.position()),
                message: format!("syntax error: {}", e.err_type()),
            })?;
        ast.set_source(label.clone());
        for f in REQUIRED_FNS {
            if !ast.iter_functions().any(|m| m.name == *f) {
                return Err(Error::Plugin {
                    location: label.clone(),
                    message: format!(
                        "the plugin does not define `fn {f}(...)`, which every plugin needs"
                    ),
                });
            }
        }
        Ok(Plugin {
            source,
            engine,
            ast,
            host,
        })
    }

    /// The host this plugin calls.
    pub(crate) fn host(&self) -> &Arc<Host> {
        &self.host
    }

    /// Does the plugin define entry point `name` (with any number of parameters)?
    pub(crate) fn has_fn(&self, name: &str) -> bool {
        self.ast.iter_functions().any(|m| m.name == name)
    }

    /// Calls entry point `name`. A structured error raised by a host function comes back as
    /// itself; anything else the script throws becomes [`Error::Plugin`] with its location.
    pub(crate) fn call(&self, name: &str, args: impl rhai::FuncArgs) -> Result<Dynamic> {
        let mut scope = Scope::new();
        self.engine
            .call_fn::<Dynamic>(&mut scope, &self.ast, name, args)
            .map_err(|e| self.script_error(*e))
    }

    fn script_error(&self, err: EvalAltResult) -> Error {
        let mut err = err;
        while let EvalAltResult::ErrorInFunctionCall(_, _, inner, _) = err {
            err = *inner;
        }
        if let Some(host_err) = self.host.take_failure(&err) {
            return host_err;
        }
        let pos = err.position();
        let message = match &err {
            EvalAltResult::ErrorRuntime(v, _) => {
                let s = v.to_string();
                if s.is_empty() {
                    "the plugin threw an error".to_string()
                } else {
                    s
                }
            }
            other => {
                let mut s = other.to_string();
                // rhai appends " (line L, position C)"; we print the location ourselves.
                if let Some(i) = s.rfind(" (line ") {
                    s.truncate(i);
                }
                s
            }
        };
        Error::Plugin {
            location: location(&self.source.label(), pos),
            message,
        }
    }
}

fn location(label: &str, pos: Position) -> String {
    match (pos.line(), pos.position()) {
        (Some(l), Some(c)) => format!("{label}:{l}:{c}"),
        (Some(l), None) => format!("{label}:{l}"),
        _ => label.to_string(),
    }
}

/// A plugin's self-description (`info()`), shown by `list` and `info`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PluginInfo {
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub difficulty: String,
    #[serde(default)]
    pub deploy_time: String,
    #[serde(default)]
    pub homepage: String,
    /// Where the plugin was loaded from (filled in by us, not the plugin).
    #[serde(default)]
    pub source: String,
}

impl Plugin {
    /// Calls `info()` and checks its shape.
    pub(crate) fn info(&self) -> Result<PluginInfo> {
        let v = self.call("info", ())?;
        let mut info: PluginInfo = rhai::serde::from_dynamic(&v).map_err(|e| Error::Plugin {
            location: self.source.label(),
            message: format!("info() must return a map with name, display_name, description, version, capabilities ...: {e}"),
        })?;
        info.source = self.source.label();
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn host() -> Arc<Host> {
        Arc::new(Host::new(Progress::silent(), None))
    }

    fn src(code: &str) -> PluginSource {
        PluginSource {
            name: "t".into(),
            origin: Origin::File(PathBuf::from("plugins/t.rhai")),
            code: code.into(),
        }
    }

    const OK: &str =
        "fn info() { #{ name: \"t\" } }\nfn validate(c) { [] }\nfn publish(c) { c.x + 1 }\n";

    #[test]
    fn syntax_errors_name_file_line_col() {
        let e = Plugin::load(src("fn info() {\n  let x = ;\n}"), host()).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("plugins/t.rhai:2:"), "{s}");
        assert!(s.contains("syntax error"), "{s}");
    }

    #[test]
    fn json_parse_is_strict_and_catchable_and_json_text_reads_back() {
        let code = format!(
            "{OK}fn parse(t) {{ try {{ return json_parse(t); }} catch (e) {{ return `caught: ${{e}}`; }} }}\nfn text(v) {{ json_text(v) }}\n"
        );
        let p = Plugin::load(src(&code), host()).unwrap();
        let parse = |t: &str| p.call("parse", (t.to_string(),)).unwrap();
        let v = parse(r#"{"a": [1, "x", null], "b": {"c": true}}"#);
        let m = v.read_lock::<rhai::Map>().unwrap().clone();
        assert_eq!(m["a"].clone().into_array().unwrap().len(), 3);
        assert_eq!(parse("[1, 2]").into_array().unwrap().len(), 2);
        // Rhai code in the text is not evaluated; bad text is a catchable error naming why.
        for bad in [r#"{"a": 1 + 2}"#, r#"{"a": now_utc()}"#, "{", "garbage"] {
            let s = parse(bad).to_string();
            assert!(s.starts_with("caught: not JSON: "), "{bad}: {s}");
        }
        // Control characters come out as JSON escapes that parse back.
        let mut m = rhai::Map::new();
        m.insert("e".into(), "a\u{1b}b\n\"c\"".into());
        let t = p.call("text", (Dynamic::from(m),)).unwrap().to_string();
        let back: serde_json::Value = serde_json::from_str(&t).unwrap();
        assert_eq!(back["e"], "a\u{1b}b\n\"c\"");
    }

    /// A host function's error comes back as itself, through a script that passes it on or
    /// catches and re-throws it; a script's own throw of the same words is the plugin's error.
    #[test]
    fn a_host_error_travels_through_rhai_as_itself_not_as_its_words() {
        let code = format!(
            "{OK}fn direct() {{ exec_once(\"c\", [\"true\"], 5) }}\n\
             fn rethrown() {{ try {{ exec_once(\"c\", [\"true\"], 5) }} catch (e) {{ throw e; }} }}\n\
             fn copied() {{ let m = \"\"; try {{ exec_once(\"c\", [\"true\"], 5) }} catch (e) {{ m = `${{e}}`; }} throw m; }}\n\
             fn words(m) {{ throw m; }}\n"
        );
        let p = Plugin::load(src(&code), host()).unwrap();
        // No docker in this command: the host raises Error::Failed.
        let direct = p.call("direct", ()).unwrap_err();
        assert!(matches!(direct, Error::Failed { .. }), "{direct:?}");
        let words = direct.to_string();
        assert!(words.contains("no Docker access"), "{words}");
        let rethrown = p.call("rethrown", ()).unwrap_err();
        assert!(matches!(rethrown, Error::Failed { .. }), "{rethrown:?}");
        let copied = p.call("copied", ()).unwrap_err();
        assert!(matches!(copied, Error::Plugin { .. }), "{copied:?}");
        // A failure raised, then the same words thrown by the script: not the host's error.
        let _ = p.call("direct", ());
        let same = p.call("words", (words.clone(),)).unwrap_err();
        assert!(matches!(same, Error::Plugin { .. }), "{same:?}");
    }

    #[test]
    fn missing_entry_point_is_reported() {
        let e = Plugin::load(src("fn info() { 1 }"), host()).unwrap_err();
        assert!(e.to_string().contains("fn validate"), "{e}");
    }

    #[test]
    fn runtime_errors_point_into_the_script() {
        let p = Plugin::load(src(OK), host()).unwrap();
        let mut m = rhai::Map::new();
        m.insert("x".into(), Dynamic::from(41_i64));
        assert_eq!(p.call("publish", (m,)).unwrap().as_int().unwrap(), 42);
        let code = format!(
            "{OK}fn boom() {{\n    throw \"no way\";\n}}\nfn strict() {{ undefined_var }}\n"
        );
        let p = Plugin::load(src(&code), host());
        // strict variables: an undefined variable is a compile error
        let e = p.unwrap_err();
        assert!(e.to_string().contains("plugins/t.rhai:7:"), "{e}");
        let code = format!("{OK}fn boom() {{\n    throw \"no way\";\n}}\n");
        let p = Plugin::load(src(&code), host()).unwrap();
        let e = p.call("boom", ()).unwrap_err();
        assert_eq!(e.to_string(), "plugins/t.rhai:5:5: no way");
    }

    #[test]
    fn runaway_scripts_are_stopped() {
        let code = format!("{OK}fn spin() {{ loop {{ }} }}\n");
        let p = Plugin::load(src(&code), host()).unwrap();
        let e = p.call("spin", ()).unwrap_err();
        assert!(
            e.to_string().to_lowercase().contains("too many operations"),
            "{e}"
        );
    }

    #[test]
    fn eval_is_disabled() {
        let code = format!("{OK}fn e() {{ eval(\"1\") }}\n");
        assert!(Plugin::load(src(&code), host()).is_err());
    }

    #[test]
    fn builtin_is_found_and_files_override() {
        let dir = tempfile::tempdir().unwrap();
        let s = find("docker-registry", &[dir.path().to_path_buf()]).unwrap();
        assert_eq!(s.origin, Origin::BuiltIn);
        std::fs::write(dir.path().join("docker-registry.rhai"), OK).unwrap();
        let s = find("docker-registry", &[dir.path().to_path_buf()]).unwrap();
        assert_eq!(
            s.origin,
            Origin::File(dir.path().join("docker-registry.rhai"))
        );
        assert_eq!(find("../x", &[]).unwrap_err().exit_code(), 2);
        let e = find("nope", &[]).unwrap_err();
        assert!(e.to_string().contains("docker-registry"), "{e}");
    }

    #[test]
    fn builtin_docker_swarm_compiles_and_has_its_entry_points() {
        let s = find("docker-swarm", &[]).unwrap();
        let p = Plugin::load(s, host()).unwrap();
        assert_eq!(p.info().unwrap().name, "docker-swarm");
        for f in [
            "list_all", "lookup", "status", "logs", "stop", "start", "delete",
        ] {
            assert!(p.has_fn(f), "{f}");
        }
    }

    #[test]
    fn swarm_reads_labels_from_the_go_rendering_of_a_service_row() {
        let p = Plugin::load(find("docker-swarm", &[]).unwrap(), host()).unwrap();
        let labels = |text: &str| -> Option<BTreeMap<String, String>> {
            let v = p.call("go_labels", (text.to_string(),)).unwrap();
            if v.is_unit() {
                return None;
            }
            Some(rhai::serde::from_dynamic(&v).unwrap())
        };
        // As docker 28 prints `{{printf "%#v" .}}` of a `service ls` row (abridged).
        let row = r#"&service.serviceContext{HeaderContext:formatter.HeaderContext{Header:interface {}(nil)}, service:swarm.Service{ID:"agf", Meta:swarm.Meta{Version:swarm.Version{Index:0xd6f}}, Spec:swarm.ServiceSpec{Annotations:swarm.Annotations{Name:"probe", Labels:map[string]string{"a":"b", "fractalic-publisher.script":"he\"l}lo, x:y \\ {\"z\":1}", "t":"tab\there"}}, TaskTemplate:swarm.TaskSpec{ContainerSpec:(*swarm.ContainerSpec)(0xc000222380)}}}"#;
        let l = labels(row).unwrap();
        assert_eq!(l.len(), 3, "{l:?}");
        assert_eq!(l["a"], "b");
        assert_eq!(l["fractalic-publisher.script"], r#"he"l}lo, x:y \ {"z":1}"#);
        assert_eq!(l["t"], "tab\there");
        let none = row.replace(
            r#"Labels:map[string]string{"a":"b", "fractalic-publisher.script":"he\"l}lo, x:y \\ {\"z\":1}", "t":"tab\there"}"#,
            "Labels:map[string]string(nil)",
        );
        assert_eq!(labels(&none).unwrap().len(), 0);
        // Another shape (a future CLI): () and the caller falls back to service inspect.
        assert!(labels(r#"{"ID":"x","Name":"probe"}"#).is_none());
        assert!(labels(&row.replace("Labels:map[string]string{", "Labels:{")).is_none());
        assert!(labels(&row[..row.find("\"a\":\"b").unwrap() + 4]).is_none());

        let counts = |t: &str| -> (i64, i64) {
            let m = p.call("replica_counts", (t.to_string(),)).unwrap();
            let m = m.cast::<rhai::Map>();
            (m["running"].as_int().unwrap(), m["want"].as_int().unwrap())
        };
        assert_eq!(counts("2/3"), (2, 3));
        assert_eq!(counts("0/0"), (0, 0));
        assert_eq!(counts("1/1 (max 1 per node)"), (1, 1));
        assert_eq!(counts(""), (0, 0));
        let port = |t: &str| {
            p.call("ai_port_of", (t.to_string(),))
                .unwrap()
                .as_int()
                .unwrap()
        };
        assert_eq!(port("*:30000->8001/tcp"), 30000);
        assert_eq!(port("*:9000->9000/tcp, *:8950->8001/tcp"), 8950);
        assert_eq!(port("*:30000-30001->8001-8002/tcp"), 0);
        assert_eq!(port(""), 0);
        assert_eq!(
            port("*:39001->5859/tcp,*:39001->5859/tcp,*:39002->8001/tcp,*:39002->8001/tcp"),
            39002
        );
        assert_eq!(port("*:39001->5859/tcp"), 0);
        let number = |t: &str| {
            p.call("port_number", (t.to_string(),))
                .unwrap()
                .as_int()
                .unwrap()
        };
        assert_eq!(number("8001"), 8001);
        for bad in [
            "",
            "abc",
            "-5",
            "0",
            "70000",
            "99999999999999999999",
            "80 ",
            "８０",
        ] {
            assert_eq!(number(bad), 0, "{bad}");
        }
    }

    #[test]
    fn http_probe_all_answers_in_order_and_names_a_bad_item() {
        use std::io::{Read, Write};
        let serve = |status: &'static str| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            std::thread::spawn(move || {
                for mut c in l.incoming().flatten() {
                    let mut buf = [0u8; 1024];
                    let _ = c.read(&mut buf);
                    let _ = write!(
                        c,
                        "HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                    );
                }
            });
            format!("http://127.0.0.1:{port}/health")
        };
        let ok = serve("200 OK");
        let bad = serve("503 Service Unavailable");
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://127.0.0.1:{}/health", l.local_addr().unwrap().port())
        };
        let code = format!("{OK}fn probe(urls) {{ http_probe_all(urls, 2000) }}\n");
        let p = Plugin::load(src(&code), host()).unwrap();
        let mut urls = rhai::Array::new();
        for _ in 0..20 {
            urls.push(ok.clone().into());
        }
        urls.push(bad.clone().into());
        urls.push(closed.into());
        urls.push(ok.clone().into());
        let got = p.call("probe", (urls,)).unwrap().into_array().unwrap();
        assert_eq!(got.len(), 23);
        let status: Vec<i64> = got
            .iter()
            .map(|m| m.clone().cast::<rhai::Map>()["status"].as_int().unwrap())
            .collect();
        assert!(status[..20].iter().all(|s| *s == 200), "{status:?}");
        assert_eq!(&status[20..], &[503, 0, 200]);
        let refused = got[21].clone().cast::<rhai::Map>();
        assert!(!refused["ok"].as_bool().unwrap());
        assert!(!refused["error"].clone().into_string().unwrap().is_empty());
        let empty = p.call("probe", (rhai::Array::new(),)).unwrap();
        assert!(empty.into_array().unwrap().is_empty());
        let mixed: rhai::Array = vec![ok.into(), Dynamic::from(7_i64)];
        let e = p.call("probe", (mixed,)).unwrap_err();
        assert!(e.to_string().contains("urls[1] must be a string"), "{e}");
    }

    #[test]
    fn builtin_docker_registry_compiles_and_describes_itself() {
        let s = find("docker-registry", &[]).unwrap();
        let p = Plugin::load(s, host()).unwrap();
        let info = p.info().unwrap();
        assert_eq!(info.name, "docker-registry");
        assert!(!info.capabilities.is_empty());
    }

    #[test]
    fn a_remote_engine_gets_ports_from_its_containers_and_urls_at_its_host() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("calls");
        let fake = dir.path().join("docker");
        // The engine's containers publish 8001 and 8002 (whatever is bound on this machine).
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\necho \"$*\" >> '{}'\ncase \"$*\" in *'{{{{.Ports}}}}'*) echo '0.0.0.0:8001->8001/tcp, :::8001->8001/tcp'; echo '0.0.0.0:8002->8001/tcp';; esac\nexit 0\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let docker = crate::docker::Docker::with_binary(fake)
            .with_context("far")
            .with_endpoint(crate::engine::parse_endpoint("tcp://10.1.2.3:2376"));
        let h = Arc::new(Host::new(Progress::silent(), Some(Arc::new(docker))));
        let code = format!("{OK}fn pick(e) {{ choose_port(8001, e, \"0.0.0.0\", []) }}\nfn engine() {{ engine_info() }}\n");
        let p = Plugin::load(src(&code), Arc::clone(&h)).unwrap();
        let m: serde_json::Value =
            rhai::serde::from_dynamic(&p.call("pick", (false,)).unwrap()).unwrap();
        assert_eq!(m["port"], 8003, "{m}");
        assert!(
            m["explain"]
                .as_str()
                .unwrap()
                .contains("8001-8002 published on the engine"),
            "{m}"
        );
        h.release_port_lock();
        let e = p.call("pick", (true,)).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        assert!(
            e.to_string()
                .contains("port 8001 is published by a container on the Docker engine"),
            "{e}"
        );
        h.release_port_lock();
        let info: serde_json::Value =
            rhai::serde::from_dynamic(&p.call("engine", ()).unwrap()).unwrap();
        assert_eq!(
            info,
            serde_json::json!({"remote": true, "host": "10.1.2.3", "url_host": "10.1.2.3",
                "context": "far", "endpoint": "tcp://10.1.2.3:2376"})
        );
        // Every docker call carried --context far.
        let calls = std::fs::read_to_string(&log).unwrap();
        assert!(calls.lines().count() >= 2, "{calls}");
        assert!(
            calls.lines().all(|l| l.starts_with("--context far ")),
            "{calls}"
        );

        // docker-registry: its deployments' URLs (and so its probes) go to the engine host, and
        // a loopback --bind, unreachable from here, is refused before anything is created.
        let r = Plugin::load(find("docker-registry", &[]).unwrap(), Arc::clone(&h)).unwrap();
        let url = r.call("deployment_url", ("127.0.0.1", 8005_i64)).unwrap();
        assert_eq!(url.to_string(), "http://10.1.2.3:8005");
        let mut m = rhai::Map::new();
        m.insert("image".into(), Dynamic::from("fractalic:x".to_string()));
        m.insert("replicas".into(), Dynamic::from(1_i64));
        m.insert("bind".into(), Dynamic::from("127.0.0.1".to_string()));
        let problems = r
            .call("validate", (m.clone(),))
            .unwrap()
            .into_array()
            .unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0]
                .to_string()
                .contains("remote engine (tcp://10.1.2.3:2376)"),
            "{problems:?}"
        );
        m.insert("bind".into(), Dynamic::from("0.0.0.0".to_string()));
        let problems = r.call("validate", (m,)).unwrap().into_array().unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        // docker-swarm: host-mode task URLs at the engine host too when the node advertises a
        // loopback address (or is unknown), else at the task's node address.
        let s = Plugin::load(find("docker-swarm", &[]).unwrap(), h).unwrap();
        let task = |node: &str| {
            let mut t = rhai::Map::new();
            t.insert("port".into(), Dynamic::from(30001_i64));
            t.insert("node".into(), Dynamic::from(node.to_string()));
            Dynamic::from(t)
        };
        let node = |addr: &str| {
            let mut n = rhai::Map::new();
            n.insert("addr".into(), Dynamic::from(addr.to_string()));
            Dynamic::from(n)
        };
        let mut nodes = rhai::Map::new();
        nodes.insert("lo".into(), node("127.0.0.1"));
        nodes.insert("n2".into(), node("10.231.0.12"));
        nodes.insert("n6".into(), node("fd00::6"));
        let urls = s
            .call(
                "urls_of",
                (
                    "host",
                    rhai::Map::new(),
                    vec![task("lo"), task("gone"), task("n2"), task("n6")],
                    nodes,
                ),
            )
            .unwrap();
        assert_eq!(
            urls.to_string(),
            "[\"http://10.1.2.3:30001\", \"http://10.1.2.3:30001\", \"http://10.231.0.12:30001\", \"http://[fd00::6]:30001\"]"
        );
    }

    #[test]
    fn the_fractalic_image_check_ignores_case() {
        let s = find("docker-registry", &[]).unwrap();
        let progress = Progress::silent();
        let h = Arc::new(Host::new(progress.clone(), None));
        let p = Plugin::load(s, h).unwrap();
        let validate = |image: &str| {
            let mut m = rhai::Map::new();
            m.insert("image".into(), Dynamic::from(image.to_string()));
            m.insert("replicas".into(), Dynamic::from(1_i64));
            let problems = p.call("validate", (m,)).unwrap();
            assert_eq!(problems.into_array().unwrap().len(), 0, "{image}");
        };
        validate("FRACTALIC.example.com/app:1");
        validate("registry.local/Fractalic-Mirror/x:1");
        assert_eq!(progress.warnings(), Vec::<String>::new());
        validate("example.com/app:1");
        let w = progress.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("does not look like a Fractalic image"),
            "{w:?}"
        );
    }
}
