//! The deployment file (`fractalic-publish.toml`): found, parsed with positions, checked, and
//! merged under the command line into one [`DeployArgs`]; plus `deploy --print-config`.

use crate::cli::{DeployArgs, DeployFlags, EnvVar, PullPolicy};
use crate::config::{self, DeployConfig};
use crate::error::{Error, Field, Result};
use crate::ports::PortRequest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// The file looked for in the script folder, then in the project root.
pub(crate) const FILE_NAME: &str = "fractalic-publish.toml";

/// What `--print-config` shows instead of a secret value.
pub(crate) const REDACTED: &str = "<redacted>";

/// The keys a deployment file may hold (the seed's "Plugin Configuration" names where it has
/// one). Every value is optional; the command line wins over each.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    /// `deploy PLUGIN` (`plugin_name` as in the seed's DeploymentConfig is accepted too).
    #[serde(alias = "plugin_name")]
    pub plugin: Option<Spanned<String>>,
    /// `--script-name`.
    pub script_name: Option<Spanned<String>>,
    /// `--script-folder`; relative to the file's directory.
    pub script_folder: Option<Spanned<PathBuf>>,
    /// `--name`.
    pub container_name: Option<Spanned<String>>,
    /// `--image`.
    pub registry_image: Option<Spanned<String>>,
    /// `--platform` (the image platform, e.g. linux/arm64).
    pub platform: Option<Spanned<String>>,
    /// `[ports] ai_server` = `--port`.
    pub ports: Option<Ports>,
    /// `--bind`.
    pub bind: Option<Spanned<String>>,
    /// `--env`, one table entry per variable (values are secrets).
    pub environment: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    /// `--env-file`; relative to the file's directory.
    pub env_file: Option<Spanned<PathBuf>>,
    /// `--include`, default `["*"]`.
    pub include_files: Option<Spanned<Vec<Spanned<String>>>>,
    /// `--exclude`, on top of the built-in excludes.
    pub exclude_patterns: Option<Vec<Spanned<String>>>,
    /// `--pull`.
    pub pull: Option<PullPolicy>,
    /// `--timeout`, whole seconds.
    pub timeout: Option<Spanned<i64>>,
    /// `--replicas`.
    pub replicas: Option<Spanned<i64>>,
    /// `--registry`, HOST:PORT.
    pub registry: Option<Spanned<String>>,
    /// `--publish-mode`, ingress or host.
    pub publish_mode: Option<Spanned<String>>,
    /// `--placement-pref`, e.g. `spread=node.labels.zone`.
    pub placement_pref: Option<Spanned<String>>,
    /// `--max-replicas-per-node`, 0 (no limit) to 100.
    pub max_replicas_per_node: Option<Spanned<i64>>,
    /// `--proxy` (true) / `--no-proxy` (false).
    pub proxy: Option<bool>,
    /// `--domain`.
    pub domain: Option<Spanned<String>>,
    /// `--tls`.
    pub tls: Option<Spanned<String>>,
    /// `--tls-cert`, `--tls-key`; relative to the file's directory.
    pub tls_cert: Option<Spanned<PathBuf>>,
    pub tls_key: Option<Spanned<PathBuf>>,
}

/// `[ports]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Ports {
    /// The host port of the AI server (`--port`): exactly this one.
    pub ai_server: Option<Spanned<i64>>,
}

/// The merge's result: what to deploy and which file (if any) it came from.
#[derive(Debug)]
pub(crate) struct Merged {
    pub args: DeployArgs,
    pub file: Option<PathBuf>,
}

/// A parsed deployment file and where it is (for positions in errors).
struct Loaded {
    path: PathBuf,
    text: String,
    config: FileConfig,
}

impl Loaded {
    /// `path:line:col` of a byte offset.
    fn at(&self, offset: usize) -> String {
        let (l, c) = line_col(&self.text, offset);
        format!("{}:{l}:{c}", self.path.display())
    }

    /// A bad value of `key` at `span`: one line naming the place and key, never the value.
    fn bad(&self, span: std::ops::Range<usize>, key: &str, hint: impl Into<String>) -> Error {
        Error::input(format!("{}: bad {key}", self.at(span.start)), hint)
    }

    /// Relative paths in the file are relative to the file's directory.
    fn resolve(&self, p: &Path) -> PathBuf {
        match self.path.parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        }
    }
}

/// Line and column (1-based, in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The deployment file to use: `--config FILE`; else `fractalic-publish.toml` in the script
/// folder given on the command line (the working directory when none is); else in the project
/// root found from there ([`config::project_root`]). `None` when there is none.
pub(crate) fn locate(
    config: Option<&Path>,
    script_folder: Option<&Path>,
) -> Result<Option<PathBuf>> {
    if let Some(p) = config {
        if !p.is_file() {
            return Err(Error::input(
                format!("--config {} is not a file", p.display()),
                format!("give the path of a deployment file such as {FILE_NAME}"),
            ));
        }
        return Ok(Some(p.canonicalize().unwrap_or_else(|_| p.to_path_buf())));
    }
    let start = match script_folder {
        Some(f) => f.to_path_buf(),
        None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
    };
    let candidates = [
        start.join(FILE_NAME),
        config::project_root(&start).join(FILE_NAME),
    ];
    // A name that exists but is no regular file (a FIFO would block) is bad input, not
    // silently passed over.
    for p in candidates {
        match std::fs::metadata(&p) {
            Ok(m) if m.is_file() => return Ok(Some(p.canonicalize().unwrap_or(p))),
            Ok(_) => {
                return Err(Error::input(
                    format!("deployment file {} is not a regular file", p.display()),
                    "make it a regular TOML file, or remove it",
                ))
            }
            Err(_) => {}
        }
    }
    Ok(None)
}

/// Reads and parses a deployment file. Unknown keys, wrong types and bad TOML are bad input
/// naming `file:line:col` and the key, on one line, without the value.
fn load(path: &Path) -> Result<Loaded> {
    let bytes = config::read_small(path, "deployment file")?;
    let text = String::from_utf8(bytes).map_err(|_| {
        Error::input(
            format!("deployment file {} is not UTF-8 text", path.display()),
            "save it as UTF-8 TOML",
        )
    })?;
    match toml::from_str::<FileConfig>(&text) {
        Ok(config) => Ok(Loaded {
            path: path.to_path_buf(),
            text,
            config,
        }),
        Err(e) => Err(toml_error(path, &text, &e)),
    }
}

/// One line for a TOML parse or type error. serde's messages quote offending values
/// ("invalid type: integer `123`"), which may be secrets: those quotes are cut.
fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> Error {
    let start = e.span().map_or(0, |s| s.start);
    let (l, c) = line_col(text, start);
    let at = format!("{}:{l}:{c}", path.display());
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let key = rest.split('`').next().unwrap_or("");
        let key = qualified(text, start, key);
        return Error::input(
            format!("{at}: unknown key {key:?}"),
            "known keys: plugin, script_name, script_folder, container_name, registry_image, \
             platform, [ports] ai_server, bind, [environment], env_file, include_files, \
             exclude_patterns, pull, timeout, replicas, registry, publish_mode, placement_pref, max_replicas_per_node, proxy, domain, tls, tls_cert, tls_key (see docs/deployment-file.md)",
        );
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            // "integer `123`, expected a string" -> "integer, expected a string"
            let (kind, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
            // The value follows the kind in quotes: cut it.
            let kind = kind.split(['`', '"', '\'']).next().unwrap_or(kind).trim();
            let expected = expected.replace("i64", "an integer");
            let key = key_at(text, start);
            let expected = if expected.is_empty() {
                String::new()
            } else {
                format!(", expected {expected}")
            };
            let found = if prefix == "invalid type: " {
                format!("found {kind}")
            } else {
                format!("invalid value ({kind})")
            };
            return Error::input(
                format!("{at}: wrong type for {key:?}"),
                format!("{found}{expected}"),
            );
        }
    }
    let message: String = message.replace('`', "'");
    Error::input(
        format!("{at}: not a valid deployment file"),
        format!("{message}; fix the TOML (see docs/deployment-file.md)"),
    )
}

/// The dotted name of the table a byte offset lies in (`""` at top level).
fn table_at(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
        .unwrap_or_default()
}

/// `key` qualified by its table, e.g. `environment.API_KEY`.
fn qualified(text: &str, offset: usize, key: &str) -> String {
    let table = table_at(text, offset);
    if table.is_empty() {
        key.to_string()
    } else {
        format!("{table}.{key}")
    }
}

/// The key whose value starts at `offset`: the name before the last '=' on that line before the
/// value (after a '{' or ',' for inline tables), qualified by its table.
fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let before = &text[line_start..offset];
    let key = match before.rfind('=') {
        Some(eq) => {
            let lhs = &before[..eq];
            let from = lhs.rfind(['{', ',']).map_or(0, |i| i + 1);
            lhs[from..].trim().trim_matches(['"', '\'']).to_string()
        }
        None => String::new(),
    };
    // Inline table `ports = { ai_server = ... }`: qualify by the outer key.
    let inline = before
        .rfind('{')
        .and_then(|brace| before[..brace].rfind('='))
        .map(|eq| before[..eq].trim().to_string());
    match inline {
        Some(outer) if !key.is_empty() => format!("{outer}.{key}"),
        _ => qualified(text, offset, &key),
    }
}

/// Checks the file's values, each error at its own position, and resolves relative paths.
fn check(f: &Loaded) -> Result<()> {
    let c = &f.config;
    let wrap = |s: &Spanned<String>, key: &str, r: Result<()>| -> Result<()> {
        r.map_err(|e| match e {
            Error::Input { hint, .. } => Error::input(
                format!("{}: bad {key} {:?}", f.at(s.span().start), s.get_ref()),
                hint,
            ),
            other => other,
        })
    };
    if let Some(s) = &c.script_name {
        wrap(s, "script_name", config::check_script_name(s.get_ref()))?;
    }
    if let Some(s) = &c.container_name {
        wrap(
            s,
            "container_name",
            config::check_container_name(s.get_ref()),
        )?;
    }
    if let Some(s) = &c.registry_image {
        let image = config::production_tag(s.get_ref());
        wrap(s, "registry_image", config::check_image(&image))?;
    }
    if let Some(s) = &c.platform {
        wrap(s, "platform", config::check_platform(s.get_ref()))?;
    }
    if let Some(s) = &c.bind {
        if s.get_ref().parse::<IpAddr>().is_err() {
            return Err(f.bad(
                s.span(),
                &format!("bind {:?}", s.get_ref()),
                "give an IP address such as 127.0.0.1 or 0.0.0.0",
            ));
        }
    }
    if let Some(p) = c.ports.as_ref().and_then(|p| p.ai_server.as_ref()) {
        if !(1..=65535).contains(p.get_ref()) {
            return Err(f.bad(
                p.span(),
                &format!("ports.ai_server {}", p.get_ref()),
                "use a port number from 1 to 65535",
            ));
        }
    }
    if let Some(t) = &c.timeout {
        if !(1..=3600).contains(t.get_ref()) {
            return Err(f.bad(
                t.span(),
                &format!("timeout {}", t.get_ref()),
                "use a whole number of seconds from 1 to 3600",
            ));
        }
    }
    if let Some(r) = &c.replicas {
        if !(1..=100).contains(r.get_ref()) {
            return Err(f.bad(
                r.span(),
                &format!("replicas {}", r.get_ref()),
                "use a whole number of tasks from 1 to 100",
            ));
        }
    }
    if let Some(s) = &c.registry {
        wrap(s, "registry", config::check_registry(s.get_ref()))?;
    }
    if let Some(s) = &c.domain {
        wrap(s, "domain", config::check_domain(s.get_ref()))?;
    }
    if let Some(s) = &c.tls {
        wrap(s, "tls", config::parse_tls(s.get_ref()).map(|_| ()))?;
    }
    if let Some(s) = &c.publish_mode {
        wrap(s, "publish_mode", config::check_publish_mode(s.get_ref()))?;
    }
    if let Some(s) = &c.placement_pref {
        wrap(
            s,
            "placement_pref",
            config::check_placement_pref(s.get_ref()),
        )?;
    }
    if let Some(r) = &c.max_replicas_per_node {
        if !(0..=100).contains(r.get_ref()) {
            return Err(f.bad(
                r.span(),
                &format!("max_replicas_per_node {}", r.get_ref()),
                "use a whole number of tasks from 0 (no limit) to 100",
            ));
        }
    }
    if let Some(s) = &c.script_folder {
        let dir = f.resolve(s.get_ref());
        if !dir.is_dir() {
            return Err(f.bad(
                s.span(),
                &format!("script_folder {:?}", dir.display().to_string()),
                "not a directory; give the folder that holds your script (relative to this file)",
            ));
        }
    }
    if let Some(s) = &c.env_file {
        let p = f.resolve(s.get_ref());
        if !p.is_file() {
            return Err(f.bad(
                s.span(),
                &format!("env_file {:?}", p.display().to_string()),
                "not a file; give a file of KEY=VALUE lines (relative to this file)",
            ));
        }
    }
    for (k, v) in c.environment.iter().flatten() {
        if !config::valid_env_key(k.get_ref()) {
            return Err(f.bad(
                k.span(),
                &format!("environment key {:?}", k.get_ref()),
                "names use letters, digits and '_' and do not start with a digit",
            ));
        }
        if v.get_ref().contains(['\n', '\r', '\0']) {
            return Err(f.bad(
                v.span(),
                &format!("environment.{}", k.get_ref()),
                "the value has a newline or NUL byte; put it on one line",
            ));
        }
    }
    if let Some(list) = &c.include_files {
        if list.get_ref().is_empty() {
            return Err(f.bad(
                list.span(),
                "include_files []",
                "list at least one glob; [\"*\"] (the default) takes everything",
            ));
        }
    }
    let includes = c.include_files.iter().flat_map(|l| l.get_ref().iter());
    let globs = includes.map(|p| ("include_files", p)).chain(
        c.exclude_patterns
            .iter()
            .flatten()
            .map(|p| ("exclude_patterns", p)),
    );
    for (key, p) in globs {
        let one = std::slice::from_ref(p.get_ref());
        let r = if key == "include_files" {
            crate::payload::Excludes::with_includes(one, &[])
        } else {
            crate::payload::Excludes::new(one)
        };
        if let Err(e) = r {
            return Err(f.bad(p.span(), &format!("{key} entry"), e.to_string()));
        }
    }
    Ok(())
}

/// Where a missing setting can be given, for the error.
fn places(file: Option<&Loaded>, flag: &str, key: &str) -> String {
    match file {
        Some(f) => format!("pass {flag} or set {key} in {}", f.path.display()),
        None => format!(
            "pass {flag} or set {key} in a {FILE_NAME} (in the script folder or project root, or --config FILE)"
        ),
    }
}

/// What one source gives over the deployment file, typed where it entered: the command line
/// ([`Over::from_flags`]) or a REST body. `None` (or empty) where it gives nothing.
#[derive(Debug, Clone, Default)]
pub(crate) struct Over {
    pub plugin: Option<String>,
    /// The deployment file to read (`--config`); `None`: looked for ([`locate`]).
    pub config: Option<PathBuf>,
    pub script_name: Option<String>,
    pub script_folder: Option<PathBuf>,
    pub name: Option<String>,
    pub image: Option<String>,
    pub platform: Option<String>,
    pub port: Option<u16>,
    pub bind: Option<String>,
    /// Merged over the file's `[environment]` by name (these win).
    pub env: Vec<EnvVar>,
    pub env_file: Option<PathBuf>,
    /// Replaces the file's `include_files` when not empty.
    pub include: Vec<String>,
    /// Replaces the file's `exclude_patterns` when not empty.
    pub exclude: Vec<String>,
    pub pull: Option<PullPolicy>,
    pub timeout: Option<Duration>,
    pub replicas: Option<u32>,
    pub registry: Option<String>,
    pub publish_mode: Option<String>,
    pub placement_pref: Option<String>,
    pub max_replicas_per_node: Option<u32>,
    pub proxy: Option<bool>,
    pub domain: Option<String>,
    pub tls: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub json: bool,
    pub quiet: bool,
    pub lock_wait: Option<Duration>,
    pub dry_run: bool,
}

impl Over {
    /// The command line's deploy flags, each parsed once here: a bad number or `--env` item is
    /// bad input naming the flag (and for `--env`, its place among the `--env` flags).
    pub(crate) fn from_flags(flags: &DeployFlags) -> Result<Over> {
        let port = flags
            .port
            .as_deref()
            .map(|p| config::parse_port(p, "--port").map_err(|e| e.at(Field::Port)))
            .transpose()?;
        let timeout = flags
            .timeout
            .as_deref()
            .map(|t| config::parse_timeout(t).map_err(|e| e.at(Field::Timeout)))
            .transpose()?;
        let replicas = flags
            .replicas
            .as_deref()
            .map(|r| config::parse_replicas(r).map_err(|e| e.at(Field::Replicas)))
            .transpose()?;
        let max_replicas_per_node = flags
            .max_replicas_per_node
            .as_deref()
            .map(|m| {
                config::parse_max_replicas_per_node(m).map_err(|e| e.at(Field::MaxReplicasPerNode))
            })
            .transpose()?;
        let lock_wait = flags
            .lock_wait
            .as_deref()
            .map(crate::lock::parse_wait)
            .transpose()?;
        let mut env = Vec::with_capacity(flags.env.len());
        for (i, item) in flags.env.iter().enumerate() {
            let origin = format!("--env #{}", i + 1);
            let (key, value) =
                config::parse_env_item(item, &origin).map_err(|e| e.at(Field::EnvVars))?;
            env.push(EnvVar { key, value, origin });
        }
        Ok(Over {
            plugin: flags.plugin.clone(),
            config: flags.config.clone(),
            script_name: flags.script_name.clone(),
            script_folder: flags.script_folder.clone(),
            name: flags.name.clone(),
            image: flags.image.clone(),
            platform: flags.platform.clone(),
            port,
            bind: flags.bind.clone(),
            env,
            env_file: flags.env_file.clone(),
            include: flags.include.clone(),
            exclude: flags.exclude.clone(),
            pull: flags.pull,
            timeout,
            replicas,
            registry: flags.registry.clone(),
            publish_mode: flags.publish_mode.clone(),
            placement_pref: flags.placement_pref.clone(),
            max_replicas_per_node,
            proxy: if flags.proxy {
                Some(true)
            } else if flags.no_proxy {
                Some(false)
            } else {
                None
            },
            domain: flags.domain.clone(),
            tls: flags.tls.clone(),
            tls_cert: flags.tls_cert.clone(),
            tls_key: flags.tls_key.clone(),
            json: flags.json,
            quiet: flags.quiet,
            lock_wait,
            dry_run: flags.dry_run,
        })
    }
}

/// Merges the command line over the deployment file (if any): see [`merge_over`].
pub(crate) fn merge(flags: &DeployFlags) -> Result<Merged> {
    merge_over(&Over::from_flags(flags)?)
}

/// Merges `over` over the deployment file (if any): a value given wins; environment
/// variables merge by name (`over`'s win); lists given replace the file's. Then the defaults
/// fill what neither gives. Bad or missing values are bad input (exit 2).
pub(crate) fn merge_over(over: &Over) -> Result<Merged> {
    let loaded = match locate(over.config.as_deref(), over.script_folder.as_deref())? {
        Some(p) => {
            let l = load(&p)?;
            check(&l)?;
            Some(l)
        }
        None => None,
    };
    let file = loaded.as_ref().map(|l| &l.config);
    let string = |given: &Option<String>, key: Option<&Option<Spanned<String>>>| {
        given
            .clone()
            .or_else(|| key.and_then(|k| k.as_ref().map(|s| s.get_ref().clone())))
    };
    // `check` kept the file's numbers in range.
    let number = |key: Option<&Spanned<i64>>| key.and_then(|n| u32::try_from(*n.get_ref()).ok());

    let plugin = string(&over.plugin, file.map(|c| &c.plugin)).ok_or_else(|| {
        Error::input(
            "no plugin given",
            places(
                loaded.as_ref(),
                "it as `deploy PLUGIN` (e.g. docker-registry)",
                "plugin",
            ),
        )
    })?;
    let script_name = string(&over.script_name, file.map(|c| &c.script_name)).ok_or_else(|| {
        Error::input(
            "no script name given",
            places(loaded.as_ref(), "--script-name NAME", "script_name"),
        )
    })?;
    let script_folder = match (&over.script_folder, &loaded) {
        (Some(f), _) => f.clone(),
        (None, Some(l)) if l.config.script_folder.is_some() => {
            l.resolve(l.config.script_folder.as_ref().unwrap().get_ref())
        }
        _ => {
            return Err(Error::input(
                "no script folder given",
                places(loaded.as_ref(), "--script-folder DIR", "script_folder"),
            ))
        }
    };

    let d = DeployArgs::default();
    let env_file = over.env_file.clone().or_else(|| {
        loaded
            .as_ref()
            .and_then(|l| l.config.env_file.as_ref().map(|p| l.resolve(p.get_ref())))
    });
    // The file's [environment] first, then the given ones, so those win per name.
    let mut env: Vec<EnvVar> = match (&loaded, file.and_then(|c| c.environment.as_ref())) {
        (Some(l), Some(m)) => m
            .iter()
            .map(|(k, v)| EnvVar {
                key: k.get_ref().clone(),
                value: v.get_ref().clone(),
                origin: format!("environment.{} at {}", k.get_ref(), l.at(k.span().start)),
            })
            .collect(),
        _ => Vec::new(),
    };
    env.extend(over.env.iter().cloned());
    let list = |given: &Vec<String>, key: Option<&Vec<Spanned<String>>>| -> Option<Vec<String>> {
        if !given.is_empty() {
            return Some(given.clone());
        }
        key.map(|v| v.iter().map(|s| s.get_ref().clone()).collect())
    };

    let args = DeployArgs {
        lock_wait: over.lock_wait.unwrap_or(d.lock_wait),
        dry_run: over.dry_run,
        confine: None,
        plugin,
        script_name,
        script_folder,
        name: string(&over.name, file.map(|c| &c.container_name)),
        image: string(&over.image, file.map(|c| &c.registry_image)),
        platform: string(&over.platform, file.map(|c| &c.platform)),
        port: over.port.or_else(|| {
            file.and_then(|c| c.ports.as_ref())
                .and_then(|p| p.ai_server.as_ref())
                .and_then(|p| u16::try_from(*p.get_ref()).ok())
        }),
        bind: string(&over.bind, file.map(|c| &c.bind)).unwrap_or(d.bind),
        env,
        env_file,
        include: list(
            &over.include,
            file.and_then(|c| c.include_files.as_ref())
                .map(|l| l.get_ref()),
        )
        .unwrap_or(d.include),
        exclude: list(
            &over.exclude,
            file.and_then(|c| c.exclude_patterns.as_ref()),
        )
        .unwrap_or(d.exclude),
        pull: over.pull.or(file.and_then(|c| c.pull)).unwrap_or(d.pull),
        timeout: over
            .timeout
            .or_else(|| {
                file.and_then(|c| c.timeout.as_ref())
                    .and_then(|t| u64::try_from(*t.get_ref()).ok())
                    .map(Duration::from_secs)
            })
            .unwrap_or(d.timeout),
        replicas: over
            .replicas
            .or_else(|| number(file.and_then(|c| c.replicas.as_ref())))
            .unwrap_or(d.replicas),
        registry: string(&over.registry, file.map(|c| &c.registry)).unwrap_or(d.registry),
        publish_mode: string(&over.publish_mode, file.map(|c| &c.publish_mode))
            .unwrap_or(d.publish_mode),
        placement_pref: string(&over.placement_pref, file.map(|c| &c.placement_pref)),
        max_replicas_per_node: over
            .max_replicas_per_node
            .or_else(|| number(file.and_then(|c| c.max_replicas_per_node.as_ref()))),
        proxy: over.proxy.or_else(|| file.and_then(|c| c.proxy)),
        domain: string(&over.domain, file.map(|c| &c.domain)),
        tls: string(&over.tls, file.map(|c| &c.tls)),
        tls_cert: over.tls_cert.clone().or_else(|| {
            loaded
                .as_ref()
                .and_then(|l| l.config.tls_cert.as_ref().map(|p| l.resolve(p.get_ref())))
        }),
        tls_key: over.tls_key.clone().or_else(|| {
            loaded
                .as_ref()
                .and_then(|l| l.config.tls_key.as_ref().map(|p| l.resolve(p.get_ref())))
        }),
        json: over.json,
        quiet: over.quiet,
    };
    let mut args = args;
    if let Some(pattern) = loaded
        .as_ref()
        .and_then(|l| inside_pattern(&l.path, &args.script_folder))
    {
        // The deployment file holds settings (and maybe secrets), not part of the script.
        args.exclude.push(pattern);
    }
    Ok(Merged {
        args,
        file: loaded.map(|l| l.path),
    })
}

/// An anchored exclude pattern for `file` when it lies inside `folder` under another name
/// than `fractalic-publish.toml` (which the built-in excludes already leave out).
fn inside_pattern(file: &Path, folder: &Path) -> Option<String> {
    let folder = folder.canonicalize().ok()?;
    let rel = file.strip_prefix(&folder).ok()?;
    if rel.file_name()? == FILE_NAME {
        return None;
    }
    let rel = rel.to_str()?;
    let escaped: String = rel
        .chars()
        .flat_map(|c| {
            let special = "*?[]{}\\".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect();
    Some(format!("/{escaped}"))
}

/// What `--print-config` shows: the file's keys, resolved and validated, secrets redacted.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Printed {
    /// The deployment file merged in, if any (JSON only; a comment in TOML).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_file: Option<String>,
    pub plugin: String,
    pub script_name: String,
    pub script_folder: String,
    pub container_name: String,
    pub registry_image: String,
    pub platform: String,
    pub bind: String,
    pub pull: PullPolicy,
    pub timeout: u64,
    pub replicas: u32,
    pub registry: String,
    pub publish_mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement_pref: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_replicas_per_node: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env_file: Option<String>,
    pub include_files: Vec<String>,
    pub exclude_patterns: Vec<String>,
    /// Only when an exact port was asked for; otherwise 8001 or the next free one is chosen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<PrintedPorts>,
    /// Every variable the container gets (env_file's, the file's, --env), values redacted.
    pub environment: BTreeMap<String, String>,
}

/// `[ports]` of [`Printed`].
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PrintedPorts {
    pub ai_server: u16,
}

/// The merged settings after validation (the same checks a deploy makes, without Docker).
pub(crate) fn printed(merged: &Merged, cfg: &DeployConfig) -> Printed {
    let a = &merged.args;
    Printed {
        config_file: merged.file.as_ref().map(|p| p.display().to_string()),
        plugin: cfg.plugin.clone(),
        script_name: cfg.script_name.clone(),
        script_folder: cfg.script_folder.display().to_string(),
        container_name: cfg.name.clone(),
        registry_image: cfg.image.clone(),
        platform: cfg.platform.clone(),
        bind: cfg.bind.to_string(),
        pull: cfg.pull,
        timeout: cfg.timeout.as_secs(),
        replicas: cfg.replicas,
        registry: cfg.registry.clone(),
        publish_mode: cfg.publish_mode.clone(),
        placement_pref: cfg.placement_pref.clone(),
        max_replicas_per_node: cfg.max_replicas_per_node,
        env_file: a.env_file.as_ref().map(|p| p.display().to_string()),
        include_files: cfg.excludes.include_patterns().to_vec(),
        exclude_patterns: a.exclude.clone(),
        ports: match cfg.port {
            PortRequest::Exact(p) => Some(PrintedPorts { ai_server: p }),
            PortRequest::Preferred(_) => None,
        },
        environment: cfg
            .env
            .iter()
            .map(|(k, _)| (k.clone(), REDACTED.to_string()))
            .collect(),
    }
}

/// `--print-config` text: TOML (a comment names the file) or pretty JSON.
pub(crate) fn render(p: &Printed, json: bool) -> Result<String> {
    if json {
        return serde_json::to_string_pretty(p)
            .map(|s| s + "\n")
            .map_err(|e| Error::failed(format!("cannot encode JSON: {e}")));
    }
    let from = match &p.config_file {
        Some(f) => format!("{f} and the command line"),
        None => "the command line (no deployment file)".to_string(),
    };
    let mut out = format!("# fractalic-publisher deploy settings, from {from}\n");
    let body = Printed {
        config_file: None,
        ..p.clone()
    };
    out.push_str(
        &toml::to_string(&body).map_err(|e| Error::failed(format!("cannot encode TOML: {e}")))?,
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `K=V` of each variable, to compare.
    fn pairs(env: &[EnvVar]) -> Vec<String> {
        env.iter()
            .map(|e| format!("{}={}", e.key, e.value))
            .collect()
    }
    use std::fs;

    /// A project: `root/fractalic.py`, `root/scripts/hello.md`.
    struct Project {
        dir: tempfile::TempDir,
    }

    impl Project {
        fn new() -> Project {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join("fractalic.py"), "").unwrap();
            fs::create_dir(dir.path().join("scripts")).unwrap();
            fs::write(dir.path().join("scripts/hello.md"), "# hi\n").unwrap();
            Project { dir }
        }
        fn root(&self) -> &Path {
            self.dir.path()
        }
        fn scripts(&self) -> PathBuf {
            self.dir.path().join("scripts")
        }
        fn write(&self, rel: &str, text: &str) -> PathBuf {
            let p = self.root().join(rel);
            fs::write(&p, text).unwrap();
            p
        }
    }

    fn with_config(p: &Path) -> DeployFlags {
        DeployFlags {
            config: Some(p.to_path_buf()),
            ..Default::default()
        }
    }

    fn err(flags: &DeployFlags) -> String {
        let e = merge(flags).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "not one line: {msg}");
        msg
    }

    const FULL: &str = r#"plugin = "docker-registry"
script_name = "hello"
script_folder = "scripts"
container_name = "from-file"
registry_image = "127.0.0.1:5000/x:latest"
platform = "linux/arm64"
bind = "0.0.0.0"
env_file = "secrets.env"
include_files = ["*.md"]
exclude_patterns = ["*.log"]
pull = "missing"
timeout = 30

[ports]
ai_server = 8100

[environment]
A = "from-file"
B = "file-only"
"#;

    #[test]
    fn file_alone_gives_every_setting_with_paths_relative_to_the_file() {
        let p = Project::new();
        p.write("secrets.env", "S=1\n");
        let file = p.write("other.toml", FULL);
        // The working directory is elsewhere: relative paths follow the file, not it.
        let m = merge(&with_config(&file)).unwrap();
        let a = &m.args;
        assert_eq!(
            m.file.as_deref(),
            Some(file.canonicalize().unwrap().as_path())
        );
        assert_eq!(a.plugin, "docker-registry");
        assert_eq!(a.script_name, "hello");
        assert_eq!(
            a.script_folder,
            file.parent()
                .unwrap()
                .canonicalize()
                .unwrap()
                .join("scripts")
        );
        assert_eq!(a.name.as_deref(), Some("from-file"));
        assert_eq!(a.image.as_deref(), Some("127.0.0.1:5000/x:latest"));
        assert_eq!(a.platform.as_deref(), Some("linux/arm64"));
        assert_eq!(a.port, Some(8100));
        assert_eq!(a.bind, "0.0.0.0");
        assert_eq!(
            a.env_file.as_deref(),
            Some(
                p.root()
                    .canonicalize()
                    .unwrap()
                    .join("secrets.env")
                    .as_path()
            )
        );
        assert_eq!(a.include, ["*.md"]);
        assert_eq!(a.exclude, ["*.log"]);
        assert_eq!(a.pull, PullPolicy::Missing);
        assert_eq!(a.timeout, Duration::from_secs(30));
        assert_eq!(pairs(&a.env), ["A=from-file", "B=file-only"]);
        // Where each came from, for errors: the file's key and place.
        assert!(
            a.env[0].origin.starts_with("environment.A at ") && a.env[0].origin.contains(".toml:"),
            "{}",
            a.env[0].origin
        );
        // And it validates as a deploy would.
        let cfg = config::deploy_config(a).unwrap();
        assert_eq!(cfg.main_script, "hello.md");
    }

    #[test]
    fn flags_override_the_file_and_env_merges_by_name() {
        let p = Project::new();
        p.write("secrets.env", "S=1\n");
        let file = p.write("fractalic-publish.toml", FULL);
        let flags = DeployFlags {
            config: Some(file),
            plugin: Some("other-plugin".into()),
            script_name: Some("flag-script".into()),
            script_folder: Some(PathBuf::from("rel/dir")),
            name: Some("from-flag".into()),
            image: Some("img:1".into()),
            platform: Some("linux/amd64".into()),
            port: Some("9000".into()),
            bind: Some("127.0.0.1".into()),
            env: vec!["A=from-flag".into()],
            env_file: Some(PathBuf::from("flag.env")),
            include: vec!["*".into()],
            exclude: vec!["*.tmp".into()],
            pull: Some(PullPolicy::Never),
            timeout: Some("5".into()),
            ..Default::default()
        };
        let a = merge(&flags).unwrap().args;
        assert_eq!(a.plugin, "other-plugin");
        assert_eq!(a.script_name, "flag-script");
        // A relative flag path stays relative to the working directory.
        assert_eq!(a.script_folder, PathBuf::from("rel/dir"));
        assert_eq!(a.env_file, Some(PathBuf::from("flag.env")));
        assert_eq!(a.name.as_deref(), Some("from-flag"));
        assert_eq!(a.image.as_deref(), Some("img:1"));
        assert_eq!(a.platform.as_deref(), Some("linux/amd64"));
        assert_eq!(a.port, Some(9000));
        assert_eq!(a.bind, "127.0.0.1");
        assert_eq!(
            (a.include.clone(), a.exclude.clone()),
            (vec!["*".to_string()], vec!["*.tmp".to_string()])
        );
        assert_eq!(
            (a.pull, a.timeout),
            (PullPolicy::Never, Duration::from_secs(5))
        );
        // Later items win in the container's environment: the flag's A, the file's B.
        assert_eq!(pairs(&a.env), ["A=from-file", "B=file-only", "A=from-flag"]);
        // The flag is the first --env, whatever the file held.
        assert_eq!(a.env[2].origin, "--env #1");
    }

    #[test]
    fn the_deployment_file_is_never_part_of_the_payload() {
        let p = Project::new();
        let text = "plugin = \"docker-registry\"\nscript_name = \"hello\"\nscript_folder = \".\"\n";
        fs::write(p.scripts().join("hello.md"), "# hi\n").unwrap();
        let named = p.scripts().join("deploy [prod]*.toml");
        fs::write(&named, text).unwrap();
        fs::write(p.scripts().join(FILE_NAME), text).unwrap();
        let cfg = config::deploy_config(&merge(&with_config(&named)).unwrap().args).unwrap();
        assert!(!cfg.excludes.takes("deploy [prod]*.toml"));
        assert!(!cfg.excludes.takes(FILE_NAME));
        assert!(cfg.excludes.takes("deploy x.toml") && cfg.excludes.takes("hello.md"));
    }

    #[test]
    fn defaults_apply_only_when_neither_gives_a_value() {
        let p = Project::new();
        let file = p.write(
            "f.toml",
            "plugin = \"docker-registry\"\nscript_name = \"hello\"\nscript_folder = \"scripts\"\n",
        );
        let a = merge(&with_config(&file)).unwrap().args;
        let d = DeployArgs::default();
        assert_eq!(
            (a.bind, a.timeout, a.pull, a.include),
            (d.bind, d.timeout, d.pull, d.include)
        );
        assert_eq!((a.name, a.image, a.port), (None, None, None));
    }

    #[test]
    fn found_in_the_script_folder_before_the_project_root() {
        let p = Project::new();
        p.write(
            "fractalic-publish.toml",
            "plugin = \"docker-registry\"\ncontainer_name = \"root\"\n",
        );
        let flags = DeployFlags {
            script_name: Some("hello".into()),
            script_folder: Some(p.scripts()),
            ..Default::default()
        };
        let m = merge(&flags).unwrap();
        assert_eq!(m.args.name.as_deref(), Some("root"));
        assert_eq!(
            m.file,
            Some(p.root().canonicalize().unwrap().join(FILE_NAME))
        );
        fs::write(p.scripts().join(FILE_NAME), "container_name = \"folder\"\n").unwrap();
        // Only one file is used: the script folder's, which has no plugin.
        let e = err(&flags);
        assert!(
            e.contains("no plugin given") && e.contains("deploy PLUGIN"),
            "{e}"
        );
        assert!(
            e.contains(
                &p.scripts()
                    .join(FILE_NAME)
                    .canonicalize()
                    .unwrap()
                    .display()
                    .to_string()
            ),
            "{e}"
        );
        let flags = DeployFlags {
            plugin: Some("docker-registry".into()),
            ..flags
        };
        assert_eq!(merge(&flags).unwrap().args.name.as_deref(), Some("folder"));
    }

    #[test]
    fn missing_required_settings_name_both_places() {
        let p = Project::new();
        let file = p.write("f.toml", "plugin = \"docker-registry\"\n");
        let e = err(&with_config(&file));
        assert!(
            e.contains("no script name given")
                && e.contains("--script-name")
                && e.contains("script_name in")
                && e.contains("f.toml"),
            "{e}"
        );
        let flags = DeployFlags {
            script_name: Some("hello".into()),
            ..with_config(&file)
        };
        let e = err(&flags);
        assert!(
            e.contains("--script-folder") && e.contains("script_folder in"),
            "{e}"
        );
        let e = err(&DeployFlags {
            config: Some(p.root().join("missing.toml")),
            ..Default::default()
        });
        assert!(
            e.contains("missing.toml") && e.contains("not a file"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_file_line_col_and_key() {
        let p = Project::new();
        let cases: &[(&str, &str)] = &[
            (
                "plugin = \"x\"\nscrpt_name = \"y\"\n",
                ":2:1: unknown key \"scrpt_name\"",
            ),
            ("[ports]\nweb = 1\n", ":2:1: unknown key \"ports.web\""),
            (
                "timeout = \"60\"\n",
                ":1:11: wrong type for \"timeout\": found string, expected an integer",
            ),
            (
                "ports = { ai_server = \"8001\" }\n",
                ":1:23: wrong type for \"ports.ai_server\"",
            ),
            (
                "include_files = \"*\"\n",
                ":1:17: wrong type for \"include_files\"",
            ),
            ("[ports]\nai_server = 0\n", ":2:13: bad ports.ai_server 0"),
            ("timeout = 0\n", ":1:11: bad timeout 0"),
            ("bind = \"localhost\"\n", ":1:8: bad bind \"localhost\""),
            (
                "pull = \"sometimes\"\n",
                ":1:8: not a valid deployment file: unknown variant",
            ),
            ("include_files = []\n", ":1:17: bad include_files []"),
            (
                "exclude_patterns = [\"ok\", \"[ab\"]\n",
                ":1:27: bad exclude_patterns entry",
            ),
            ("script_folder = \"nowhere\"\n", ":1:17: bad script_folder"),
            (
                "container_name = \"-x\"\n",
                ":1:18: bad container_name \"-x\"",
            ),
            ("x", ":1:2: not a valid deployment file"),
            (
                "max_replicas_per_node = 101\n",
                ":1:25: bad max_replicas_per_node 101",
            ),
            (
                "placement_pref = \"spread=node.hostname\"\n",
                ":1:18: bad placement_pref",
            ),
        ];
        for (text, want) in cases {
            let file = p.write("bad.toml", text);
            let e = err(&with_config(&file));
            assert!(e.contains(&format!("bad.toml{want}")), "{text:?}: {e}");
        }
    }

    #[test]
    fn placement_keys_come_from_the_file_unless_a_flag_gives_them() {
        let p = Project::new();
        let file = p.write(
            "p.toml",
            "plugin = \"docker-swarm\"\nscript_name = \"hello\"\nscript_folder = \"scripts\"\n\
             placement_pref = \"spread=node.labels.zone\"\nmax_replicas_per_node = 1\n",
        );
        let a = merge(&with_config(&file)).unwrap().args;
        assert_eq!(
            (a.placement_pref.as_deref(), a.max_replicas_per_node),
            (Some("spread=node.labels.zone"), Some(1))
        );
        let flags = DeployFlags {
            max_replicas_per_node: Some("2".into()),
            ..with_config(&file)
        };
        assert_eq!(merge(&flags).unwrap().args.max_replicas_per_node, Some(2));
        let plain = p.write(
            "plain.toml",
            "plugin = \"docker-swarm\"\nscript_name = \"hello\"\nscript_folder = \"scripts\"\n",
        );
        let d = merge(&with_config(&plain)).unwrap().args;
        assert_eq!((d.placement_pref, d.max_replicas_per_node), (None, None));
    }

    #[test]
    fn environment_values_never_appear_in_errors() {
        let p = Project::new();
        for text in [
            "[environment]\nKEY = 1234567\n",
            "[environment]\nKEY = true\n",
            "[environment]\nKEY = 12.5e3\n",
            "[environment]\nKEY = sk-proj-SECRETVALUE\n",
            "[environment]\nKEY = \"sk-proj-SECRETVALUE\n",
            "[environment]\nKEY = [\"sk-proj-SECRETVALUE\"]\n",
            "[environment]\nKEY = { v = \"sk-proj-SECRETVALUE\" }\n",
            "[environment]\nKEY = \"sk-proj-SECRETVALUE\\nline\"\n",
            "[environment]\nKEY = \"sk-proj-SECRETVALUE\"\nKEY = \"sk-proj-SECRETVALUE\"\n",
            "environment = \"sk-proj-SECRETVALUE\"\n",
            "environment = { KEY = 1234567 }\n",
        ] {
            let file = p.write("bad.toml", text);
            let e = err(&with_config(&file));
            for secret in ["SECRETVALUE", "1234567", "12.5", "true"] {
                assert!(!e.contains(secret), "{text:?} leaks {secret}: {e}");
            }
            assert!(e.contains("bad.toml:"), "{e}");
        }
        let file = p.write("bad.toml", "[environment]\nKEY = 1234567\n");
        assert!(err(&with_config(&file)).contains("wrong type for \"environment.KEY\""));
    }

    #[test]
    fn include_files_reach_the_payload_and_must_take_the_main_script() {
        let p = Project::new();
        fs::write(p.scripts().join("notes.txt"), "n").unwrap();
        let file = p.write(
            "f.toml",
            "plugin = \"docker-registry\"\nscript_name = \"hello\"\nscript_folder = \"scripts\"\ninclude_files = [\"*.md\"]\n",
        );
        let cfg = config::deploy_config(&merge(&with_config(&file)).unwrap().args).unwrap();
        assert!(cfg.excludes.takes("hello.md") && !cfg.excludes.takes("notes.txt"));
        let file = p.write(
            "f.toml",
            "plugin = \"docker-registry\"\nscript_name = \"hello\"\nscript_folder = \"scripts\"\ninclude_files = [\"*.txt\"]\n",
        );
        let e = config::deploy_config(&merge(&with_config(&file)).unwrap().args).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("\"hello.md\" is left out"), "{e}");
    }

    #[test]
    fn print_config_redacts_environment_and_env_file_values() {
        let p = Project::new();
        p.write("secrets.env", "FROM_FILE=sk-envfile-SECRET\n");
        let file = p.write(
            "fractalic-publish.toml",
            &FULL.replace("127.0.0.1:5000/x:latest", "fractalic-ai/fractalic:1.0"),
        );
        let flags = DeployFlags {
            env: vec!["FLAG=sk-flag-SECRET".into()],
            ..with_config(&file)
        };
        let m = merge(&flags).unwrap();
        let cfg = config::deploy_config(&m.args).unwrap();
        let printed = printed(&m, &cfg);
        for json in [false, true] {
            let text = render(&printed, json).unwrap();
            assert!(
                !text.contains("SECRET") && !text.contains("file-only"),
                "{text}"
            );
            for key in ["FROM_FILE", "FLAG", "A", "B"] {
                assert!(
                    text.contains(&format!("\"{key}\""))
                        || text.contains(&format!("{key} = \"{REDACTED}\"")),
                    "{key}: {text}"
                );
            }
        }
        let toml_text = render(&printed, false).unwrap();
        // The TOML is a deployment file again (the comment names the source).
        assert!(toml_text.starts_with("# fractalic-publisher deploy settings, from "));
        let back: FileConfig = toml::from_str(&toml_text).unwrap();
        assert_eq!(
            back.registry_image.unwrap().into_inner(),
            "fractalic-ai/fractalic:1.0-production"
        );
        assert_eq!(back.ports.unwrap().ai_server.unwrap().into_inner(), 8100);
        let v: serde_json::Value = serde_json::from_str(&render(&printed, true).unwrap()).unwrap();
        assert_eq!(v["environment"]["FLAG"], REDACTED);
        assert_eq!(
            v["config_file"],
            file.canonicalize().unwrap().display().to_string()
        );
    }
}
