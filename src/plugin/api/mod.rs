//! The host API: every function a plugin script can call, grouped by concern, one module per
//! group. Each function is registered through [`Api::add`] together with its documentation
//! (signature, result, what it throws, what it does), so `fractalic-publisher plugin api` (and
//! docs/plugin-api.md's generated block, which is that output) is generated from the registration
//! itself and cannot drift from it.

mod containers;
mod docker;
mod exec;
mod http;
mod images;
mod logs;
mod payload;
mod ports;
mod progress;
mod proxy;
mod readiness;
mod releases;
mod secrets;
mod text;
mod undo;

use super::host::Host;
use rhai::Engine;
use serde::Serialize;
use std::sync::Arc;

/// The groups of the reference, in order: (key, title).
pub(crate) const GROUPS: &[(&str, &str)] = &[
    ("progress", "Progress, warnings and failure"),
    ("docker", "The engine and any docker subcommand"),
    ("undo", "The undo journal"),
    ("containers", "Containers"),
    ("images", "Images"),
    (
        "payload",
        "The payload and the deploy's labels and environment",
    ),
    ("secrets", "Secrets and configs"),
    ("ports", "Ports"),
    ("readiness", "Readiness"),
    ("proxy", "The front proxy"),
    ("releases", "Releases: updates, rollback, history"),
    ("exec", "Commands inside containers"),
    ("logs", "Logs"),
    ("http", "HTTP"),
    ("text", "Time and text"),
];

/// The rules every host function follows (the head of the reference).
pub(crate) const CONVENTIONS: &str = "\
- **Names** are `snake_case`, verb or noun first by what they act on (`create_container`, \
`docker_run`, `http_request`); a function that reads something the engine may not have returns \
`()` when it is absent (`container_inspect`, `image_inspect`, `read_container_file`, `next_port`).
- **Units**: durations are milliseconds, in arguments and results named `*_ms` (`timeout_ms`, \
`elapsed_ms`). Five functions from before this rule take seconds, and say so by the argument \
name `timeout_secs`: `stop_container`, `exec_once`, `exec_until_ok`, `wait_http`, `wait_ready` \
(the deploy's `config.timeout` is seconds too, the `--timeout` flag's unit).
- **Failures**: a function throws when the plugin cannot sensibly go on (Docker unreachable: exit \
3; a docker call Docker rejects; a timeout; an interrupt: exit 130; a bad argument); the entry \
point then fails and the run's undo journal removes what the run created. Where failing is an \
outcome a plugin branches on, the function returns a map with `ok` (and `error` or `stderr` \
saying why) instead of throwing: `docker_run`, `start_container`, `exec_once`, `exec_until_ok`, \
`http_probe`, `http_request`, and `wait_ready`'s `exec`. `bad_input` and `fail` end the entry \
point on purpose (exit 2 and 1).
- **Secrets** (settings.toml, .env values) never pass through a script: plugins name config \
files and the host reads them, and no host function puts a value on a docker command line.
- **Docker** calls all go to the engine `--context` / `DOCKER_HOST` name (every call gets \
`--context NAME` when the flag is given); `engine_info()` says whether it is remote.";

/// One host function's documentation, written beside its registration.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Doc {
    /// `name(arg, arg)`.
    pub sig: &'static str,
    /// What it returns (`()` for nothing).
    pub result: &'static str,
    /// What makes it throw ("never" when it does not).
    pub throws: &'static str,
    /// What it does.
    pub about: &'static str,
}

impl Doc {
    /// The function's name (the signature up to its parenthesis).
    pub(crate) fn name(&self) -> &'static str {
        self.sig.split('(').next().unwrap_or(self.sig)
    }

    /// Its arguments' names.
    pub(crate) fn args(&self) -> Vec<&'static str> {
        let inner = self
            .sig
            .split_once('(')
            .and_then(|(_, r)| r.rsplit_once(')'))
            .map_or("", |(a, _)| a);
        inner
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect()
    }
}

/// A registered function's documentation, with its group.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FnDoc {
    pub group: &'static str,
    pub name: &'static str,
    pub signature: &'static str,
    pub args: Vec<&'static str>,
    pub result: &'static str,
    pub throws: &'static str,
    pub about: &'static str,
}

/// Registers host functions on an engine and keeps their documentation.
pub(crate) struct Api<'e> {
    engine: &'e mut Engine,
    group: &'static str,
    docs: Vec<FnDoc>,
}

impl Api<'_> {
    /// Registers a function under the name in `doc.sig`, documented by `doc`: `register`
    /// gets the engine and that name (`|e, n| { e.register_fn(n, ...); }`). A test checks each
    /// signature's argument count against what was registered.
    pub(crate) fn add(&mut self, doc: Doc, register: impl FnOnce(&mut Engine, &'static str)) {
        register(self.engine, doc.name());
        self.docs.push(FnDoc {
            group: self.group,
            name: doc.name(),
            signature: doc.sig,
            args: doc.args(),
            result: doc.result,
            throws: doc.throws,
            about: doc.about,
        });
    }

    fn group(&mut self, g: &'static str) -> &mut Self {
        debug_assert!(GROUPS.iter().any(|(k, _)| *k == g), "{g}");
        self.group = g;
        self
    }
}

/// Registers the whole host API on `engine`; returns its documentation, in reference order.
pub(crate) fn register(engine: &mut Engine, host: &Arc<Host>) -> Vec<FnDoc> {
    let mut api = Api {
        engine,
        group: "progress",
        docs: Vec::new(),
    };
    progress::register(api.group("progress"), host);
    docker::register(api.group("docker"), host);
    undo::register(api.group("undo"), host);
    containers::register(api.group("containers"), host);
    images::register(api.group("images"), host);
    payload::register(api.group("payload"), host);
    secrets::register(api.group("secrets"), host);
    ports::register(api.group("ports"), host);
    readiness::register(api.group("readiness"), host);
    proxy::register(api.group("proxy"), host);
    releases::register(api.group("releases"), host);
    exec::register(api.group("exec"), host);
    logs::register(api.group("logs"), host);
    http::register(api.group("http"), host);
    text::register(api.group("text"), host);
    api.docs
}

/// The documentation of every host function, from a registration on a throwaway engine.
pub(crate) fn reference() -> Vec<FnDoc> {
    let host = Arc::new(Host::new(crate::progress::Progress::silent(), None));
    register(&mut Engine::new(), &host)
}

/// The reference as Markdown: the plugin contract (entry points, `config`), then the host
/// functions: the conventions and each group's functions. What `plugin api` prints, and
/// the generated block of docs/plugin-api.md verbatim.
pub(crate) fn render_text(docs: &[FnDoc]) -> String {
    let mut o = String::from(crate::contract::ENTRY_POINTS_MD);
    o.push_str("\n### Host functions\n\n");
    o.push_str(
        "Generated from the registration by `fractalic-publisher plugin api` (`--json` for \
         machines); everything a plugin can do: there is no raw file or process access.\n\n",
    );
    o.push_str(CONVENTIONS);
    o.push('\n');
    for (key, title) in GROUPS {
        let in_group: Vec<&FnDoc> = docs.iter().filter(|d| d.group == *key).collect();
        if in_group.is_empty() {
            continue;
        }
        o.push_str(&format!("\n#### {title}\n\n"));
        for d in in_group {
            o.push_str(&format!("- `{}` → `{}`  \n", d.signature, d.result));
            o.push_str(&format!("  {}  \n", d.about));
            o.push_str(&format!("  Throws: {}.\n", d.throws.trim_end_matches('.')));
        }
    }
    o
}

/// The reference as JSON: `{conventions, groups: [{key, title, functions: [...]}]}`.
pub(crate) fn render_json(docs: &[FnDoc]) -> serde_json::Value {
    let groups: Vec<serde_json::Value> = GROUPS
        .iter()
        .map(|(key, title)| {
            serde_json::json!({
                "key": key,
                "title": title,
                "functions": docs.iter().filter(|d| d.group == *key).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "contract": crate::contract::ENTRY_POINTS_MD,
        "conventions": CONVENTIONS,
        "groups": groups,
    })
}

/// Imports every api module uses.
mod prelude {
    pub(super) use super::{Api, Doc};
    pub(super) use crate::docker::{self, Docker, ExecSignals, QUICK};
    pub(super) use crate::error::Error;
    pub(super) use crate::health;
    pub(super) use crate::journal::Token;
    pub(super) use crate::ports::{self, PortRequest};
    pub(super) use crate::readiness::Started;
    pub(super) use rhai::{Array, Dynamic, Map};
    pub(super) use std::sync::Arc;
    pub(super) use std::time::{Duration, Instant, SystemTime};
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_function_is_documented_once_per_arity_and_in_a_group() {
        let docs = reference();
        assert!(docs.len() >= 40, "{}", docs.len());
        let mut seen = std::collections::BTreeSet::new();
        for d in &docs {
            assert!(
                seen.insert((d.name, d.args.len())),
                "{} registered twice",
                d.signature
            );
            assert!(!d.about.is_empty() && !d.result.is_empty() && !d.throws.is_empty());
            assert!(GROUPS.iter().any(|(k, _)| *k == d.group));
            // The units rule: a duration argument says its unit.
            for a in &d.args {
                assert!(
                    !a.contains("timeout") || a.ends_with("_ms") || a.ends_with("_secs"),
                    "{}: {a}",
                    d.signature
                );
            }
        }
    }

    /// (name, argument count) of every function registered directly on an engine.
    fn registered(engine: &Engine, packages: bool) -> BTreeSet<(String, usize)> {
        engine
            .gen_fn_signatures(packages)
            .iter()
            .filter_map(|sig| {
                let (name, rest) = sig.split_once('(')?;
                let params = rest
                    .split(") ->")
                    .next()
                    .unwrap_or(rest)
                    .trim_end_matches(')');
                let n = if params.trim().is_empty() {
                    0
                } else {
                    params.split(',').count()
                };
                Some((name.trim().to_string(), n))
            })
            .collect()
    }

    #[test]
    fn docs_and_registrations_match_name_for_name_and_arity() {
        let host = Arc::new(Host::new(crate::progress::Progress::silent(), None));
        let mut engine = Engine::new_raw();
        let docs = register(&mut engine, &host);
        let documented: BTreeSet<(String, usize)> = docs
            .iter()
            .map(|d| (d.name.to_string(), d.args.len()))
            .collect();
        assert_eq!(registered(&engine, false), documented);
    }

    #[test]
    fn every_function_the_builtin_plugins_call_exists() {
        let host = Arc::new(Host::new(crate::progress::Progress::silent(), None));
        let engine = crate::plugin::engine(&host);
        let known: BTreeSet<String> = registered(&engine, true)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        const KEYWORDS: &[&str] = &[
            "if",
            "while",
            "for",
            "loop",
            "switch",
            "return",
            "throw",
            "fn",
            "let",
            "in",
            "type_of",
            "print",
            "debug",
            "Fn",
            "call",
            "curry",
            "is_def_var",
            "is_def_fn",
        ];
        for (plugin, code) in crate::plugin::BUILTIN {
            let defined: BTreeSet<String> = code
                .lines()
                .filter_map(|l| l.strip_prefix("fn "))
                .filter_map(|l| l.split('(').next())
                .map(str::to_string)
                .collect();
            for called in calls(code) {
                assert!(
                    defined.contains(&called)
                        || known.contains(&called)
                        || KEYWORDS.contains(&called.as_str()),
                    "{plugin}.rhai calls {called}(), which no plugin function, host function or Rhai built-in provides"
                );
            }
        }
    }

    /// Identifiers followed by `(` in Rhai code (comments and strings roughly skipped).
    fn calls(code: &str) -> Vec<String> {
        let mut out = Vec::new();
        for line in code.lines() {
            let line = line.split("//").next().unwrap_or("");
            // Drop string contents ("...", `...`) so words in messages are not taken as calls.
            let mut clean = String::new();
            let mut quote: Option<char> = None;
            for c in line.chars() {
                match quote {
                    Some(q) if c == q => quote = None,
                    Some(_) => {}
                    None if c == '"' || c == '`' => quote = Some(c),
                    None => clean.push(c),
                }
            }
            let bytes: Vec<char> = clean.chars().collect();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i].is_ascii_alphabetic() || bytes[i] == '_' {
                    let start = i;
                    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == '_') {
                        i += 1;
                    }
                    let preceded_by_dot = start > 0 && bytes[start - 1] == '.';
                    if i < bytes.len() && bytes[i] == '(' && !preceded_by_dot {
                        out.push(bytes[start..i].iter().collect());
                    }
                } else {
                    i += 1;
                }
            }
        }
        out
    }

    #[test]
    fn the_reference_names_groups_and_conventions() {
        let docs = reference();
        let text = render_text(&docs);
        assert!(text.starts_with("A plugin is a Rhai script"), "{text}");
        assert!(text.contains("\n### Host functions\n"), "{text}");
        assert!(text.contains("- **Units**: durations are milliseconds"));
        assert!(text.contains("#### Containers\n"));
        assert!(
            text.contains(
                "- `docker_run(argv, opts)` → `{ok, code, stdout, stderr, kind, undo_id}`"
            ),
            "{text}"
        );
        let j = render_json(&docs);
        assert_eq!(j["groups"][0]["key"], "progress");
        assert_eq!(j["groups"][0]["functions"][0]["name"], "progress");
    }
}
