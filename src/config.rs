//! Turns parsed deploy flags into a validated [`DeployConfig`]: names checked, paths resolved,
//! config files found and parsed, environment read. Nothing here touches Docker.

use crate::cli::{DeployArgs, PullPolicy};
use crate::error::{Error, Field, Result};
use crate::payload::Excludes;
use crate::ports::PortRequest;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The image deployed when `--image` is not given.
pub(crate) const DEFAULT_IMAGE: &str = "ghcr.io/fractalic-ai/fractalic:latest-production";
/// First host port tried when `--port` is not given.
pub(crate) const DEFAULT_PORT: u16 = 8001;
/// Main-script extensions tried in order before falling back to `SCRIPT.*`.
pub(crate) const SCRIPT_EXTENSIONS: &[&str] = &["md", "py", "sh", "txt"];

/// A config file found on disk, with its contents (which may be secret: never print them).
#[derive(Debug, Clone)]
pub(crate) struct ConfigFile {
    /// settings.toml, mcp_servers.json or .env.
    pub name: &'static str,
    pub source: PathBuf,
    pub contents: Vec<u8>,
    /// Absolute paths in the container it is copied to.
    pub dests: Vec<&'static str>,
}

/// Everything a deploy needs, validated.
#[derive(Debug)]
pub(crate) struct DeployConfig {
    pub plugin: String,
    pub name: String,
    pub script_name: String,
    pub script_folder: PathBuf,
    /// File name of the main script inside the folder, e.g. `my-script.md`.
    pub main_script: String,
    pub image: String,
    pub platform: String,
    pub port: PortRequest,
    pub bind: IpAddr,
    /// Container environment (values are secrets).
    pub env: Vec<(String, String)>,
    pub excludes: Excludes,
    pub pull: PullPolicy,
    pub timeout: Duration,
    pub project_root: PathBuf,
    pub config_files: Vec<ConfigFile>,
    pub warnings: Vec<String>,
    /// Tasks to run (`--replicas`, 1 to 100).
    pub replicas: u32,
    /// Registry `HOST:PORT` a baked image is pushed to (`--registry`).
    pub registry: String,
    /// `ingress` or `host` (`--publish-mode`).
    pub publish_mode: String,
    /// `--placement-pref`: `spread=node.labels.KEY`, `spread=engine.labels.KEY` or `none`
    /// (None: not given).
    pub placement_pref: Option<String>,
    /// `--max-replicas-per-node`, 0 (no limit) to 100 (None: not given).
    pub max_replicas_per_node: Option<u32>,
    /// `--proxy`, `--domain`, `--tls`.
    pub proxy: ProxySettings,
}

impl DeployConfig {
    /// The environment as `K=V` lines, the `--env-file` format (given to docker only
    /// through a pipe: `docker_run`'s `env_stdin`, `create_container`).
    pub(crate) fn env_text(&self) -> String {
        self.env.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
    }

    /// Path of the main script inside the container.
    pub(crate) fn script_path(&self) -> String {
        format!("/payload/{}/{}", self.script_name, self.main_script)
    }
}

/// Docker's container-name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub(crate) fn valid_docker_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Checks a container name given by the user.
pub(crate) fn check_container_name(name: &str) -> Result<()> {
    if valid_docker_name(name) && name.len() <= 128 {
        Ok(())
    } else {
        Err(Error::input(
            format!("bad container name {name:?}"),
            "use letters, digits, '_', '.', '-', starting with a letter or digit (at most 128)",
        ))
    }
}

/// Checks a script name: a Docker-style name without `..`.
pub(crate) fn check_script_name(name: &str) -> Result<()> {
    if valid_docker_name(name) && !name.contains("..") && name.len() <= 128 {
        Ok(())
    } else {
        Err(Error::input(
            format!("bad --script-name {name:?}"),
            "use letters, digits, '_', '.', '-', starting with a letter or digit, without '/' or '..'",
        ))
    }
}

/// Applies the original publisher's tag rule to `fractalic-ai/fractalic` images:
/// no tag or `latest` -> `latest-production`, another tag -> `TAG-production`.
pub(crate) fn production_tag(image: &str) -> String {
    if image.contains('@') {
        return image.to_string();
    }
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match image[slash..].find(':') {
        Some(i) => (&image[..slash + i], Some(&image[slash + i + 1..])),
        None => (image, None),
    };
    if !(repo == "fractalic-ai/fractalic" || repo.ends_with("/fractalic-ai/fractalic")) {
        return image.to_string();
    }
    match tag {
        None | Some("latest") => format!("{repo}:latest-production"),
        Some(t) if t.ends_with("-production") => image.to_string(),
        Some(t) => format!("{repo}:{t}-production"),
    }
}

/// Checks an image reference (after [`production_tag`]).
pub(crate) fn check_image(image: &str) -> Result<()> {
    match image_reference_problem(image) {
        None => Ok(()),
        Some(why) => Err(Error::input(
            format!("bad --image {image:?}"),
            format!("{why}; give an image reference like registry/name:tag, e.g. ghcr.io/fractalic-ai/fractalic:latest"),
        )),
    }
}

/// Why `image` is not a Docker image reference (`[domain[:port]/]path[:tag][@digest]`, the
/// distribution/reference grammar), or None when it is one.
pub(crate) fn image_reference_problem(image: &str) -> Option<String> {
    if image.is_empty() {
        return Some("it is empty".into());
    }
    if image.len() > 512 {
        return Some(format!(
            "it is {} characters long (at most 512)",
            image.len()
        ));
    }
    if let Some(c) = image.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Some(format!("it contains {c:?}"));
    }
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        if let Some(why) = digest_problem(d) {
            return Some(why);
        }
    }
    let last_slash = rest.rfind('/');
    let (name, tag) = match rest.rfind(':') {
        Some(i) if last_slash.is_none_or(|s| i > s) => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if let Some(t) = tag {
        let mut cs = t.chars();
        let ok = t.len() <= 128
            && matches!(cs.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
            && cs.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return Some(format!(
                "tag {t:?} is not valid (1-128 letters, digits, '_', '.', '-', not starting with '.' or '-')"
            ));
        }
    }
    if name.is_empty() {
        return Some("the repository name is empty".into());
    }
    if name.len() > 255 {
        return Some(format!(
            "the repository name is {} characters long (at most 255)",
            name.len()
        ));
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    // The first component is a registry host when it looks like one, as Docker decides it.
    if parts.len() > 1 {
        let first = parts[0];
        if first.contains(['.', ':'])
            || first == "localhost"
            || first.chars().any(|c| c.is_ascii_uppercase())
        {
            if let Some(why) = domain_problem(first) {
                return Some(why);
            }
            parts.remove(0);
        }
    }
    for part in parts {
        if part.chars().any(|c| c.is_ascii_uppercase()) {
            return Some(format!(
                "repository name component {part:?} has uppercase letters; repository names are lowercase"
            ));
        }
        if !valid_path_component(part) {
            return Some(format!(
                "repository name component {part:?} is not valid (lowercase letters and digits, separated by '.', '_', '__' or dashes)"
            ));
        }
    }
    None
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(part: &str) -> bool {
    let b = part.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &part[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}

/// A registry host: DNS labels or an IPv4 address or a bracketed IPv6 one, and an optional
/// `:port`.
fn domain_problem(domain: &str) -> Option<String> {
    let bad = || {
        Some(format!(
            "registry host {domain:?} is not a valid host[:port]"
        ))
    };
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return bad();
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return bad();
        }
        match after {
            "" => return None,
            a => match a.strip_prefix(':') {
                Some(p) => ("", Some(p)),
                None => return bad(),
            },
        }
    } else {
        match domain.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (domain, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|c| c.is_ascii_digit()) {
            return bad();
        }
    }
    if domain.starts_with('[') {
        return None;
    }
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
    };
    if host.split('.').all(label_ok) {
        None
    } else {
        bad()
    }
}

/// `algorithm:hex`, e.g. `sha256:` and 64 lowercase hex digits.
fn digest_problem(d: &str) -> Option<String> {
    let bad = |why: &str| Some(format!("digest {d:?} is not valid ({why})"));
    let Some((algo, hex)) = d.split_once(':') else {
        return bad("write ALGORITHM:HEX, e.g. sha256:<64 hex digits>");
    };
    let algo_ok = !algo.is_empty()
        && algo.starts_with(|c: char| c.is_ascii_lowercase())
        && algo
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c));
    if !algo_ok {
        return bad("the algorithm is lowercase letters and digits, e.g. sha256");
    }
    let hex_ok =
        |n: usize| hex.len() == n && hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let ok = match algo {
        "sha256" => hex_ok(64),
        "sha384" => hex_ok(96),
        "sha512" => hex_ok(128),
        _ => {
            hex.len() >= 32
                && hex
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"=_-".contains(&c))
        }
    };
    if ok {
        None
    } else {
        bad("sha256 takes 64 lowercase hex digits")
    }
}

/// The platform matching this host, as the original chose it.
pub(crate) fn host_platform() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" | "arm64" => "linux/arm64",
        _ => "linux/amd64",
    }
}

/// Checks an image platform: OS/ARCH[/VARIANT].
pub(crate) fn check_platform(p: &str) -> Result<()> {
    let parts: Vec<&str> = p.split('/').collect();
    let ok = (2..=3).contains(&parts.len())
        && parts.iter().all(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::input(
            format!("bad --platform {p:?}"),
            "use OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64",
        ))
    }
}

/// Parses a port given by the user: 1-65535.
pub(crate) fn parse_port(s: &str, flag: &str) -> Result<u16> {
    match s.trim().parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(Error::input(
            format!("bad {flag} {s:?}"),
            "use a port number from 1 to 65535",
        )),
    }
}

/// `--timeout`: whole seconds from 1 to 3600.
pub(crate) fn parse_timeout(s: &str) -> Result<Duration> {
    match s.trim().parse::<u64>() {
        Ok(n) if (1..=3600).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(Error::input(
            format!("bad --timeout {s:?}"),
            "use a whole number of seconds from 1 to 3600",
        )),
    }
}

/// `--replicas`: a whole number from 1 to 100.
pub(crate) fn parse_replicas(s: &str) -> Result<u32> {
    match s.trim().parse::<u32>() {
        Ok(n) if (1..=100).contains(&n) => Ok(n),
        _ => Err(Error::input(
            format!("bad --replicas {s:?}"),
            "use a whole number of tasks from 1 to 100",
        )),
    }
}

/// `--registry`: `HOST:PORT` (a host name or IPv4 address, no scheme or path).
pub(crate) fn check_registry(s: &str) -> Result<()> {
    let bad = || {
        Error::input(
            format!("bad --registry {s:?}"),
            "give the registry as HOST:PORT, e.g. 127.0.0.1:5000 or registry.example.com:443 (no http://, no path)",
        )
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    match port.parse::<u16>() {
        Ok(p) if p > 0 && host_ok => Ok(()),
        _ => Err(bad()),
    }
}

/// `--publish-mode`: `ingress` or `host`.
pub(crate) fn check_publish_mode(s: &str) -> Result<()> {
    match s {
        "ingress" | "host" => Ok(()),
        _ => Err(Error::input(
            format!("bad --publish-mode {s:?}"),
            "use ingress (Swarm's routing mesh, the production default) or host (each task on its node's own port)",
        )),
    }
}

/// `--placement-pref`: `spread=node.labels.KEY`, `spread=engine.labels.KEY` (the only
/// descriptors Swarm's scheduler honours; it silently ignores any other) or `none`.
pub(crate) fn check_placement_pref(s: &str) -> Result<()> {
    if s == "none" {
        return Ok(());
    }
    let key = s
        .strip_prefix("spread=node.labels.")
        .or_else(|| s.strip_prefix("spread=engine.labels."));
    match key {
        Some(k)
            if !k.is_empty()
                && k.len() <= 128
                && k
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) =>
        {
            Ok(())
        }
        _ => Err(Error::input(
            format!("bad --placement-pref {s:?}"),
            "use spread=node.labels.KEY or spread=engine.labels.KEY (Swarm spreads only over a label's values; \
             spreading over nodes, the one with the fewest tasks first, is its default without --placement-pref), or none to drop one",
        )),
    }
}

/// `--max-replicas-per-node`: a whole number from 0 (no limit) to 100.
pub(crate) fn parse_max_replicas_per_node(s: &str) -> Result<u32> {
    match s.trim().parse::<u32>() {
        Ok(n) if n <= 100 => Ok(n),
        _ => Err(Error::input(
            format!("bad --max-replicas-per-node {s:?}"),
            "use a whole number of tasks from 0 (no limit) to 100",
        )),
    }
}

/// `--domain`: a host name the proxy can route and certify.
pub(crate) fn check_domain(s: &str) -> Result<()> {
    if valid_domain(s) {
        Ok(())
    } else {
        Err(Error::input(
            format!("bad --domain {s:?}"),
            "give a host name such as app.example.com (letters, digits, '-' and '.'; no wildcard, no port)",
        ))
    }
}

/// `--tls`.
pub(crate) fn parse_tls(s: &str) -> Result<Tls> {
    Tls::parse(s).ok_or_else(|| {
        Error::input(
            format!("bad --tls {s:?}"),
            "use none, internal (Caddy's own CA), acme (with --domain) or files (with --tls-cert and --tls-key)",
        )
    })
}

/// The front-proxy settings of a deploy, checked: whether it is proxied (None: as it is),
/// the host name, the TLS mode and, for `files`, the certificate and key (secret) read now.
fn proxy_settings(args: &DeployArgs) -> Result<ProxySettings> {
    let domain = match &args.domain {
        Some(d) => {
            check_domain(d).map_err(|e| e.at(Field::Domain))?;
            Some(d.clone())
        }
        None => None,
    };
    let files = args.tls_cert.is_some() || args.tls_key.is_some();
    let tls = match &args.tls {
        Some(t) => Some(parse_tls(t)?),
        None if files => Some(Tls::Files),
        None => None,
    };
    let wants_proxy = domain.is_some() || tls.is_some_and(|t| t != Tls::None);
    if wants_proxy && args.proxy == Some(false) {
        return Err(Error::input(
            "--no-proxy with --domain or --tls",
            "a host name and HTTPS are served by the front proxy: drop --no-proxy, or drop --domain/--tls",
        )
        .at(Field::Proxy));
    }
    if tls == Some(Tls::Acme) && domain.is_none() {
        return Err(Error::input(
            "--tls acme without --domain",
            "an ACME CA certifies a host name: pass --domain HOST (reachable from the internet), or use --tls internal",
        ));
    }
    let tls_files = if tls == Some(Tls::Files) {
        let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
            return Err(Error::input(
                "--tls files needs both --tls-cert and --tls-key",
                "give the PEM certificate (chain) and its PEM private key",
            ));
        };
        let cert_pem = read_small(cert, "--tls-cert")?;
        let key_pem = read_small(key, "--tls-key")?;
        if !cert_pem.starts_with(b"-----BEGIN CERTIFICATE") {
            return Err(Error::input(
                format!("--tls-cert {} is not a PEM certificate", cert.display()),
                "give a file starting with -----BEGIN CERTIFICATE-----",
            ));
        }
        if !key_pem.starts_with(b"-----BEGIN") || !key_pem.windows(11).any(|w| w == b"PRIVATE KEY")
        {
            // Never quote the key: only its path is named.
            return Err(Error::input(
                format!("--tls-key {} is not a PEM private key", key.display()),
                "give a file starting with -----BEGIN PRIVATE KEY----- (or RSA/EC PRIVATE KEY)",
            ));
        }
        Some(TlsFiles {
            cert: cert_pem,
            key: key_pem,
        })
    } else {
        if files {
            return Err(Error::input(
                "--tls-cert/--tls-key without --tls files",
                "pass --tls files with them, or drop them",
            ));
        }
        None
    };
    Ok(ProxySettings {
        proxy: if wants_proxy { Some(true) } else { args.proxy },
        domain,
        tls,
        tls_files,
    })
}

/// How a route is served to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Tls {
    /// Plain HTTP.
    #[default]
    None,
    /// HTTPS with Caddy's internal CA (`curl --cacert` the CA certificate).
    Internal,
    /// HTTPS with certificates from an ACME CA (needs `--domain` reachable from the internet).
    Acme,
    /// HTTPS with a certificate and key the user gave (kept inside the proxy container).
    Files,
}

impl Tls {
    /// Parses the `--tls` value (and the label).
    pub(crate) fn parse(s: &str) -> Option<Tls> {
        match s {
            "" | "none" => Some(Tls::None),
            "internal" => Some(Tls::Internal),
            "acme" => Some(Tls::Acme),
            "files" => Some(Tls::Files),
            _ => None,
        }
    }

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Tls::None => "none",
            Tls::Internal => "internal",
            Tls::Acme => "acme",
            Tls::Files => "files",
        }
    }
}

/// A host name Caddy may route and certify: letters, digits, hyphens, dots; no wildcard.
pub(crate) fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// `NAME.K` -> Some(K) for K >= 2: the name of a further replica of deployment `deployment`
/// (`--replicas`, docker-registry).
pub(crate) fn replica_index(container: &str, deployment: &str) -> Option<u16> {
    container
        .strip_prefix(deployment)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|n| n.parse::<u16>().ok())
        .filter(|n| *n >= 2 && !container[deployment.len() + 1..].starts_with('0'))
}

/// The certificate and key of `--tls files` (the key is a secret: never printed).
#[derive(Clone)]
pub(crate) struct TlsFiles {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TlsFiles {{ cert: {} bytes, key: (redacted) }}",
            self.cert.len()
        )
    }
}

/// The front-proxy part of a [`DeployConfig`].
#[derive(Debug, Clone, Default)]
pub(crate) struct ProxySettings {
    /// Served through the proxy: Some(true/false) as asked, None: as the deployment is (a new
    /// one: not).
    pub proxy: Option<bool>,
    pub domain: Option<String>,
    pub tls: Option<Tls>,
    pub tls_files: Option<TlsFiles>,
}

/// An environment variable name: letters, digits and `_`, not starting with a digit.
pub(crate) fn valid_env_key(k: &str) -> bool {
    let mut c = k.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// The longest `KEY=VALUE` line Docker's `--env-file` reader accepts (its line scanner holds
/// 64 KiB including the newline).
pub(crate) const ENV_LINE_MAX: usize = 65_535;
/// The most environment, in bytes, a deploy passes (Linux limits a process's environment to a
/// few MiB in all; beyond this a container would fail to start).
pub(crate) const ENV_TOTAL_MAX: usize = 1 << 20;

/// What an env item may show of itself in an error: the text before its first separator
/// (`=`, `:` or whitespace) when that is a plain name; never anything after it, which may be a
/// secret, and nothing at all when there is no separator (the whole item may be the secret).
fn env_lead(item: &str) -> String {
    match item.find(|c: char| c == '=' || c == ':' || c.is_whitespace()) {
        Some(i) if i > 0 && valid_env_key_chars(&item[..i]) => {
            let lead: String = item[..i].chars().take(64).collect();
            format!(" (it starts with {lead:?})")
        }
        _ => String::new(),
    }
}

/// Letters, digits and '_' only (a digit first is allowed here: showing `1BAD` is harmless).
fn valid_env_key_chars(k: &str) -> bool {
    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses one `K=V` item. `origin` says where it came from (`--env #2`, `FILE:LINE`); the
/// error names it and never shows the value or anything after the first separator.
pub(crate) fn parse_env_item(item: &str, origin: &str) -> Result<(String, String)> {
    let Some((k, v)) = item.split_once('=') else {
        return Err(Error::input(
            format!("bad env item at {origin}{}: it has no '='", env_lead(item)),
            "write KEY=VALUE (the item itself is not shown: it may hold a secret)",
        ));
    };
    if !valid_env_key(k) {
        return Err(Error::input(
            format!("bad env name at {origin}{}", env_lead(item)),
            "names use letters, digits and '_' and do not start with a digit; write KEY=VALUE",
        ));
    }
    if v.contains('\n') || v.contains('\r') || v.contains('\0') {
        return Err(Error::input(
            format!("env value of {k} ({origin}) has a newline or NUL byte"),
            "put it on one line",
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Checks that the container environment fits what Docker and Linux accept: each `K=V` at most
/// [`ENV_LINE_MAX`] bytes, all of it at most [`ENV_TOTAL_MAX`]. Names only in errors.
pub(crate) fn check_env_sizes(env: &[(String, String, String)]) -> Result<()> {
    let mut total = 0;
    for (k, v, origin) in env {
        let line = k.len() + 1 + v.len();
        if line > ENV_LINE_MAX {
            return Err(Error::input(
                format!("env value of {k} ({origin}) is too long: {line} bytes as {k}=VALUE"),
                format!("Docker accepts at most {ENV_LINE_MAX} bytes per variable; put large data in a file in the script folder instead"),
            ));
        }
        total += line + 1;
    }
    if total > ENV_TOTAL_MAX {
        return Err(Error::input(
            format!("the container environment is too large: {total} bytes in {} variables", env.len()),
            format!("keep it under {ENV_TOTAL_MAX} bytes; put large data in a file in the script folder instead"),
        ));
    }
    Ok(())
}

/// Reads an env file: `K=V` lines, `#` comments, blank lines, optional `export `, and one pair
/// of matching surrounding quotes stripped from the value.
pub(crate) fn parse_env_file(path: &Path) -> Result<Vec<(String, String)>> {
    Ok(parse_env_file_at(path)?
        .into_iter()
        .map(|(k, v, _)| (k, v))
        .collect())
}

/// Like [`parse_env_file`], with each item's `FILE:LINE`.
fn parse_env_file_at(path: &Path) -> Result<Vec<(String, String, String)>> {
    let bytes = read_small(path, "--env-file")?;
    // Not `read_to_string`: its error would not say where, and the line is not ours to show.
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        Error::input(
            format!("{}:{line} is not UTF-8 text", path.display()),
            "save the file as UTF-8 KEY=VALUE lines",
        )
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let origin = format!("{}:{}", path.display(), i + 1);
        let (k, v) = parse_env_item(line, &origin)?;
        let v = strip_quotes(&v).to_string();
        out.push((k, v, origin));
    }
    Ok(out)
}

fn strip_quotes(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

/// A main script's path inside the folder (`My Script.md`, `tasks/run.md`): '/'-separated
/// names, each the script-name rule (Docker-name characters, no `..`) with single spaces
/// allowed inside (the Fractalic UI's files are named `My Script.md`), so it is safe in a
/// label, a path, a JSON sample and a shell-quoted curl.
fn valid_main_script_name(name: &str) -> bool {
    name.len() <= 255
        && !name.contains("..")
        && name.split('/').all(|part| {
            !part.ends_with(' ')
                && !part.contains("  ")
                && valid_docker_name(&part.replace(' ', "_"))
        })
}

/// The name the Fractalic UI gives a script file (`getScriptNameFromPath` in its
/// `utils/deployUtils.ts`): the file name without its last extension, lower-cased, every run
/// of characters other than `a-z0-9` one hyphen, none at either end (`My Script.md` ->
/// `my-script`, `Hello_World.md` -> `hello-world`). Applied to a given script name too, it
/// compares names case-, space-, underscore- and hyphen-insensitively.
pub(crate) fn ui_script_name(file_name: &str) -> String {
    let stem = match file_name.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => file_name,
    };
    let mut out = String::new();
    for c in stem.to_lowercase().chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(out.trim_end_matches('-').len());
    out
}

/// Directories searched below the folder for a script the UI named (its repository may hold
/// the file in a subfolder); deeper ones are not looked at.
const UI_NAME_DEPTH: usize = 6;
/// Entries looked at in that search, at most (a monorepo is not walked whole for a name).
const UI_NAME_ENTRIES: usize = 200_000;

/// Files in `folder` (and its subfolders, excludes applied) with a script extension whose
/// [`ui_script_name`] is `want`: their paths relative to `folder`, sorted.
fn ui_name_candidates(folder: &Path, want: &str, excludes: &Excludes) -> Vec<String> {
    let mut found = Vec::new();
    let mut seen = 0usize;
    let mut stack = vec![(folder.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, rel, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in rd.flatten() {
            seen += 1;
            if seen > UI_NAME_ENTRIES {
                break;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if excludes.is_excluded(&child) {
                continue;
            }
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                if depth < UI_NAME_DEPTH {
                    stack.push((entry.path(), child, depth + 1));
                }
                continue;
            }
            let ext_ok = name
                .rsplit_once('.')
                .is_some_and(|(_, e)| SCRIPT_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
            if ext_ok && ui_script_name(&name) == want && excludes.takes(&child) {
                found.push(child);
            }
        }
    }
    found.sort();
    found
}

/// Finds the main script as [`find_main_script`] does; when no file has exactly that name,
/// the one file the name can only mean as the Fractalic UI makes names (`my-script` for
/// `My Script.md`, maybe in a subfolder: the UI sends its repository as the folder), with a
/// warning saying so (second element). Several such files are bad input naming them.
pub(crate) fn resolve_main_script(
    folder: &Path,
    script: &str,
    excludes: &Excludes,
) -> Result<(String, Option<String>)> {
    let exact = match lookup_main_script(folder, script, excludes)? {
        Some(m) => return Ok((m, None)),
        None => Err(no_main_script(folder, script)),
    };
    let want = ui_script_name(script);
    if want.is_empty() {
        return exact.map(|m| (m, None));
    }
    let mut found = ui_name_candidates(folder, &want, excludes);
    match found.len() {
        0 => exact.map(|m| (m, None)),
        1 => {
            let m = found.remove(0);
            match main_candidate(folder, &m, excludes)? {
                Candidate::Found => {}
                Candidate::Rejected(e) => return Err(e),
                Candidate::Absent => return exact.map(|m| (m, None)),
            }
            let warning = format!(
                "no file is named {script}.md (or .py, .sh, .txt) in {}; deploying {m:?}, the one file that name can mean (names compared as the Fractalic UI makes them: case, spaces, '_' and '-' ignored)",
                folder.display()
            );
            Ok((m, Some(warning)))
        }
        n => {
            let shown: Vec<String> = found.iter().take(10).map(|f| format!("{f:?}")).collect();
            let more = if n > 10 {
                format!(" and {} more", n - 10)
            } else {
                String::new()
            };
            Err(Error::input(
                format!(
                    "the main script {script:?} could be any of {n} files in {}: {}{more}",
                    folder.display(),
                    shown.join(", ")
                ),
                "give the script name exactly as one file is named (without the extension), or rename the others",
            ))
        }
    }
}

/// `cannot read PATH` as bad input (exit 2): the script folder, or something in it.
pub(crate) fn unreadable(path: &Path, e: &std::io::Error) -> Error {
    Error::input(
        format!("cannot read {}", path.display()),
        format!(
            "{e}; make it readable by this user, or leave it out with --exclude if it is inside the script folder"
        ),
    )
}

/// Whether a top-level entry can be the main script.
enum Candidate {
    /// There is no such file (or it is a directory): try the next name.
    Absent,
    /// It is the main script.
    Found,
    /// It would be the main script, but cannot be: this says why.
    Rejected(Error),
}

/// Checks `folder/name` as the main script: a regular file (or a symlink to one inside the
/// folder), with a safe name, that the excludes keep in the payload.
fn main_candidate(folder: &Path, name: &str, excludes: &Excludes) -> Result<Candidate> {
    let path = folder.join(name);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Candidate::Absent),
        Err(e) => return Err(unreadable(&path, &e)),
    };
    let reject = |what: String, hint: &str| Ok(Candidate::Rejected(Error::input(what, hint)));
    let shown = path.display();
    if meta.is_dir() {
        return Ok(Candidate::Absent);
    }
    if !valid_main_script_name(name) {
        return reject(
            format!("bad main script name {name:?} in {}", folder.display()),
            "rename it to letters, digits, '_', '.', '-' (starting with a letter or digit), or pass --script-name for another script",
        );
    }
    if let Some(pattern) = excludes.matching(name) {
        let by = if Excludes::is_default(pattern) {
            format!("the default exclude pattern {pattern:?}")
        } else {
            format!("--exclude {pattern:?}")
        };
        return reject(
            format!("the main script {shown} is left out of the payload by {by}"),
            "the deploy would serve nothing: rename the script, or drop that --exclude",
        );
    }
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(&path)
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        let Ok(real) = std::fs::canonicalize(&path) else {
            return reject(
                format!("the main script {shown} is a symlink to {target:?}, which does not exist"),
                "point it at a file in the script folder, or put the script itself there",
            );
        };
        let Ok(inner) = real.strip_prefix(folder) else {
            return reject(
                format!("the main script {shown} is a symlink to {target:?}, outside the script folder"),
                "symlinks that leave the folder are not copied (they could leak host files): copy the script into the folder",
            );
        };
        let inner = inner.to_string_lossy();
        if excludes.is_excluded(&inner) || inner == ".env" {
            return reject(
                format!("the main script {shown} is a symlink to {inner:?}, which the payload leaves out"),
                "point it at a file that is deployed, or put the script itself in the folder",
            );
        }
        return Ok(match std::fs::metadata(&real) {
            Ok(m) if m.is_file() => Candidate::Found,
            Ok(m) if m.is_dir() => Candidate::Absent,
            _ => Candidate::Rejected(Error::input(
                format!("the main script {shown} is a symlink to {target:?}, which is not a regular file"),
                "point it at a regular file in the script folder",
            )),
        });
    }
    if !meta.is_file() {
        return reject(
            format!("the main script {shown} is not a regular file"),
            "make it a regular file (FIFOs, sockets and devices are not copied)",
        );
    }
    Ok(Candidate::Found)
}

/// Finds the main script: `S.md`, `.py`, `.sh`, `.txt`, then the first usable `S.*` in name
/// order. It must end up in the payload as a regular file: one that an exclude pattern drops,
/// a symlink leaving the folder or dangling, or a name outside the script-name rule is bad
/// input, named with the reason.
#[cfg(test)]
pub(crate) fn find_main_script(folder: &Path, script: &str, excludes: &Excludes) -> Result<String> {
    lookup_main_script(folder, script, excludes)?.ok_or_else(|| no_main_script(folder, script))
}

/// The "no main script" error: no file of the folder has the name `script` with any extension.
fn no_main_script(folder: &Path, script: &str) -> Error {
    Error::input(
        format!("no main script {script:?} in {}", folder.display()),
        format!("add {script}.md (or .py, .sh, .txt), or pass the right --script-name"),
    )
}

/// [`find_main_script`]'s search: Ok(None) when no file has that name at all (a file that has
/// it but cannot be the main script is an error naming why).
fn lookup_main_script(folder: &Path, script: &str, excludes: &Excludes) -> Result<Option<String>> {
    for ext in SCRIPT_EXTENSIONS {
        let name = format!("{script}.{ext}");
        match main_candidate(folder, &name, excludes)? {
            Candidate::Absent => {}
            Candidate::Found => return Ok(Some(name)),
            Candidate::Rejected(e) => return Err(e),
        }
    }
    let prefix = format!("{script}.");
    let mut others: Vec<std::ffi::OsString> = std::fs::read_dir(folder)
        .map_err(|e| unreadable(folder, &e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.as_encoded_bytes().starts_with(prefix.as_bytes()))
        .collect();
    others.sort();
    let mut first_rejection = None;
    for name in others {
        let Some(name) = name.to_str() else {
            first_rejection.get_or_insert_with(|| {
                Error::input(
                    format!("bad main script name {name:?} in {}", folder.display()),
                    "rename it to letters, digits, '_', '.', '-'",
                )
            });
            continue;
        };
        match main_candidate(folder, name, excludes)? {
            Candidate::Absent => {}
            Candidate::Found => return Ok(Some(name.to_string())),
            Candidate::Rejected(e) => {
                first_rejection.get_or_insert(e);
            }
        }
    }
    match first_rejection {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

/// The project root of a deploy confined to `root` (the REST API's `--root`): the nearest
/// directory holding `fractalic.py` from the script folder up to `root`, never above it; else
/// the script folder itself (then only its own config files are used).
pub(crate) fn project_root_within(script_folder: &Path, root: &Path) -> PathBuf {
    script_folder
        .ancestors()
        .take_while(|d| d.starts_with(root))
        .find(|d| d.join("fractalic.py").is_file())
        .map_or_else(|| script_folder.to_path_buf(), Path::to_path_buf)
}

/// The Fractalic project root: walk up to a directory holding `fractalic.py`, from the script
/// folder, then the working directory, then the binary's location; else the working directory.
pub(crate) fn project_root(script_folder: &Path) -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let starts = [
        Some(script_folder.to_path_buf()),
        Some(cwd.clone()),
        exe_dir,
    ];
    for start in starts.iter().flatten() {
        if let Some(root) = start.ancestors().find(|d| d.join("fractalic.py").is_file()) {
            return root.to_path_buf();
        }
    }
    cwd
}

/// Line and column (1-based) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Checks that settings.toml parses. The error names the file and position, never its text.
pub(crate) fn check_settings_toml(path: &Path, contents: &[u8]) -> Result<()> {
    let text = std::str::from_utf8(contents).map_err(|_| {
        Error::input(
            format!("{} is not UTF-8 text", path.display()),
            "save settings.toml as UTF-8 TOML",
        )
    })?;
    match text.parse::<toml::Table>() {
        Ok(_) => Ok(()),
        Err(e) => {
            let at = e
                .span()
                .map(|s| {
                    let (l, c) = line_col(text, s.start);
                    format!(" at line {l}, column {c}")
                })
                .unwrap_or_default();
            Err(Error::input(
                format!("{} is not valid TOML{at}", path.display()),
                format!(
                    "{}; fix the file (see settings.toml in the Fractalic docs)",
                    crate::error::one_line(e.message())
                ),
            ))
        }
    }
}

/// Checks that mcp_servers.json parses. serde_json's message carries only the position.
pub(crate) fn check_mcp_json(path: &Path, contents: &[u8]) -> Result<()> {
    serde_json::from_slice::<serde_json::Value>(contents)
        .map(|_| ())
        .map_err(|e| {
            Error::input(
                format!(
                    "{} is not valid JSON at line {}, column {}",
                    path.display(),
                    e.line(),
                    e.column()
                ),
                "fix the file: it must be one JSON document",
            )
        })
}

/// Largest config, env or token file read (settings.toml, mcp_servers.json, .env,
/// --env-file, the deployment file, --token-file).
pub(crate) const MAX_SMALL_FILE: u64 = 1024 * 1024;

/// Reads a small file the user pointed at (`what` names it in messages): it must be a regular
/// file (a FIFO would block and /dev/zero never ends) of at most [`MAX_SMALL_FILE`] bytes.
/// Problems are bad input naming the path.
pub(crate) fn read_small(path: &Path, what: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::input(
            format!("cannot read {what} {}", path.display()),
            format!("{e}; give a readable file"),
        )
    })?;
    if !meta.is_file() {
        return Err(Error::input(
            format!("{what} {} is not a regular file", path.display()),
            "give a regular file (not a FIFO, device or directory)",
        ));
    }
    let f = std::fs::File::open(path).map_err(|e| {
        Error::input(
            format!("cannot read {what} {}", path.display()),
            format!("{e}; give a readable file"),
        )
    })?;
    let mut buf = Vec::new();
    f.take(MAX_SMALL_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| {
            Error::input(
                format!("cannot read {what} {}", path.display()),
                format!("{e}; give a readable file"),
            )
        })?;
    if buf.len() as u64 > MAX_SMALL_FILE {
        return Err(Error::input(
            format!(
                "{what} {} is larger than {MAX_SMALL_FILE} bytes",
                path.display()
            ),
            "give a smaller file",
        ));
    }
    Ok(buf)
}

fn read_config(path: &Path) -> Result<Vec<u8>> {
    read_small(path, "config file")
}

/// Whether a config file candidate may be used: present as a regular file, and, for one in
/// the script folder, not a symlink that leaves the folder (the payload's symlink rule: such a
/// link could put any host file into the container). Otherwise a warning says why it is
/// passed over, or None when there is simply no such file.
fn usable_config(path: &Path, confine: Option<&Path>) -> std::result::Result<(), Option<String>> {
    let Ok(lmeta) = std::fs::symlink_metadata(path) else {
        return Err(None);
    };
    if lmeta.file_type().is_symlink() {
        let target = std::fs::read_link(path)
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        match (std::fs::canonicalize(path), confine) {
            (Err(_), _) => {
                return Err(Some(format!(
                    "{} is a symlink to {target:?}, which does not exist; not used",
                    path.display()
                )))
            }
            (Ok(real), Some(folder)) if !real.starts_with(folder) => {
                return Err(Some(format!(
                    "{} is a symlink to {target:?}, which leaves the script folder; not followed and not used (copy the file into the folder)",
                    path.display()
                )))
            }
            _ => {}
        }
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(Some(format!(
            "{} is not a regular file (a FIFO, device or directory); not used",
            path.display()
        ))),
        Err(e) => Err(Some(format!(
            "{} cannot be read ({e}); not used",
            path.display()
        ))),
    }
}

/// settings.toml and mcp_servers.json from the project root and the top of the script folder
/// (which wins), plus the folder's `.env`. Each is parsed; contents stay in memory only. A
/// candidate that is not a regular file, or (in the script folder) a symlink leaving the
/// folder, is passed over with a warning (second element).
pub(crate) fn find_config_files(
    root: &Path,
    folder: &Path,
) -> Result<(Vec<ConfigFile>, Vec<String>)> {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    let canon_folder = folder
        .canonicalize()
        .unwrap_or_else(|_| folder.to_path_buf());
    let mut usable = |path: &Path, confine: Option<&Path>| match usable_config(path, confine) {
        Ok(()) => true,
        Err(Some(w)) => {
            if !warnings.contains(&w) {
                warnings.push(w);
            }
            false
        }
        Err(None) => false,
    };
    let specs: [(&'static str, Vec<&'static str>); 2] = [
        (
            "settings.toml",
            vec!["/fractalic/settings.toml", "/settings.toml"],
        ),
        (
            "mcp_servers.json",
            vec!["/fractalic/mcp_servers.json", "/mcp_servers.json"],
        ),
    ];
    for (name, dests) in specs {
        let in_folder = folder.join(name);
        let source = if usable(&in_folder, Some(&canon_folder)) {
            Some(in_folder)
        } else {
            let at_root = root.join(name);
            usable(&at_root, None).then_some(at_root)
        };
        if let Some(source) = source {
            let contents = read_config(&source)?;
            if name == "settings.toml" {
                check_settings_toml(&source, &contents)?;
            } else {
                check_mcp_json(&source, &contents)?;
            }
            out.push(ConfigFile {
                name,
                source,
                contents,
                dests,
            });
        }
    }
    let dotenv = folder.join(".env");
    if usable(&dotenv, Some(&canon_folder)) {
        // Same syntax rules as --env-file, so a broken .env is caught before deploying.
        parse_env_file(&dotenv)?;
        out.push(ConfigFile {
            name: ".env",
            contents: read_config(&dotenv)?,
            source: dotenv,
            dests: vec!["/fractalic/.env"],
        });
    }
    Ok((out, warnings))
}

/// Most files a script folder may hold after the excludes (a whole monorepo is not copied).
pub(crate) const MAX_PAYLOAD_FILES: u64 = 20_000;
/// Most bytes a script folder may hold after the excludes.
pub(crate) const MAX_PAYLOAD_BYTES: u64 = 512 << 20;

/// Counts the files and bytes under `folder` that the payload would take (excludes applied),
/// stopping as soon as either limit is passed: Some((files, bytes)) then, so a folder far too
/// big is refused after reading only the part that passes the limit.
pub(crate) fn over_ceiling(
    folder: &Path,
    excludes: &Excludes,
    max_files: u64,
    max_bytes: u64,
) -> Option<(u64, u64)> {
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut stack = vec![(folder.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if excludes.is_excluded(&child) {
                continue;
            }
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                stack.push((entry.path(), child));
            } else if ft.is_file() && excludes.is_included(&child) {
                files += 1;
                bytes += entry.metadata().map_or(0, |m| m.len());
                if files > max_files || bytes > max_bytes {
                    return Some((files, bytes));
                }
            }
        }
    }
    None
}

/// The bad-input error for a folder over the ceiling.
fn too_big(folder: &Path, files: u64, bytes: u64) -> Error {
    Error::input(
        format!(
            "--script-folder {} is too big to deploy: it holds more than {MAX_PAYLOAD_FILES} files or {} MiB after the excludes (counting stopped at {files} files, {} MiB)",
            folder.display(),
            MAX_PAYLOAD_BYTES >> 20,
            bytes >> 20
        ),
        "narrow it: give the folder of the script itself, or leave parts out with --exclude (e.g. --exclude 'data' --exclude '*.csv'); .git, node_modules, .venv and __pycache__ are left out already",
    )
}

/// How many skipped payload entries are warned about one by one; the rest are counted.
const SKIP_WARNINGS_MAX: usize = 20;

/// Validates deploy flags into a [`DeployConfig`]. Any problem is [`Error::Input`] (exit 2).
/// Docker is not run here: everything a user can get wrong is found before it is.
pub(crate) fn deploy_config(args: &DeployArgs) -> Result<DeployConfig> {
    let cfg = deploy_config_own_port(args)?;
    match port_taken(&cfg) {
        Some((_, e)) => Err(e),
        None => Ok(cfg),
    }
}

/// An exact `--port` that another process holds now, and the error that says so. A port
/// another deployment has recorded is found later, from the containers' labels; from a
/// sibling container binding here says nothing about the engine's host, so nothing is known.
/// (The deploy keeps the error: the port may be held by the very deployment it updates.)
pub(crate) fn port_taken(cfg: &DeployConfig) -> Option<(u16, Error)> {
    let PortRequest::Exact(p) = cfg.port else {
        return None;
    };
    if crate::reach::maybe_sibling() {
        return None;
    }
    crate::ports::choose(PortRequest::Exact(p), cfg.bind, &Default::default())
        .err()
        .map(|e| {
            let e = Error::input(format!("--port {p}"), e.to_string()).at(Field::Port);
            (p, e)
        })
}

/// [`deploy_config`] without the check that `--port` is free now ([`port_taken`]): for an
/// update of a deployment that already holds that port.
pub(crate) fn deploy_config_own_port(args: &DeployArgs) -> Result<DeployConfig> {
    check_script_name(&args.script_name).map_err(|e| e.at(Field::ScriptName))?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("fractalic-{}", args.script_name));
    check_container_name(&name).map_err(|e| e.at(Field::ContainerName))?;

    let folder = &args.script_folder;
    if !folder.is_dir() {
        return Err(Error::input(
            format!("--script-folder {} is not a directory", folder.display()),
            "give the folder that holds your script",
        )
        .at(Field::ScriptFolder));
    }
    let script_folder = folder
        .canonicalize()
        .map_err(|e| unreadable(folder, &e).at(Field::ScriptFolder))?;
    // Listing it is what every later step needs; say so about the folder itself.
    std::fs::read_dir(&script_folder)
        .map_err(|e| unreadable(&script_folder, &e).at(Field::ScriptFolder))?;
    let excludes = Excludes::with_includes(&args.include, &args.exclude)
        .map_err(|e| match e {
            crate::payload::PayloadError::BadPattern {
                list,
                pattern,
                message,
            } => Error::input(
                format!("bad --{list} pattern {pattern:?}"),
                format!("{message}; use a glob such as '*.log' or 'data/*.csv'"),
            ),
            other => Error::input("bad --exclude pattern", other.to_string()),
        })
        .map_err(|e| e.at(Field::Exclude))?;
    let (main_script, resolved) = resolve_main_script(&script_folder, &args.script_name, &excludes)
        .map_err(|e| e.at(Field::ScriptName))?;
    if !excludes.is_included(&main_script) {
        return Err(Error::input(
            format!("the main script {main_script:?} is left out of the payload"),
            format!(
                "include_files {:?} must take it: change them (or --include)",
                excludes.include_patterns(),
            ),
        )
        .at(Field::Exclude));
    }

    let image = production_tag(args.image.as_deref().unwrap_or(DEFAULT_IMAGE));
    check_image(&image).map_err(|e| e.at(Field::ImageName))?;
    let platform = args
        .platform
        .clone()
        .unwrap_or_else(|| host_platform().to_string());
    check_platform(&platform).map_err(|e| e.at(Field::Platform))?;

    let bind: IpAddr = args.bind.parse().map_err(|_| {
        Error::input(
            format!("bad --bind {:?}", args.bind),
            "give an IP address such as 127.0.0.1 or 0.0.0.0",
        )
        .at(Field::Bind)
    })?;
    if let Err(e) = std::net::TcpListener::bind((bind, 0)) {
        if e.kind() == std::io::ErrorKind::AddrNotAvailable {
            return Err(Error::input(
                format!("bad --bind {bind}: it is not an address of this host"),
                "give one of this host's addresses, e.g. 127.0.0.1 (the default) or 0.0.0.0",
            )
            .at(Field::Bind));
        }
    }
    // Numbers and the environment were parsed where they entered (flags, file, request).
    let port = match args.port {
        Some(p) => PortRequest::Exact(p),
        None => PortRequest::Preferred(DEFAULT_PORT),
    };
    check_registry(&args.registry).map_err(|e| e.at(Field::Registry))?;
    check_publish_mode(&args.publish_mode).map_err(|e| e.at(Field::PublishMode))?;
    if let Some(p) = &args.placement_pref {
        check_placement_pref(p).map_err(|e| e.at(Field::PlacementPref))?;
    }
    // What names no other field is about TLS (the mode, its files).
    let proxy = proxy_settings(args).map_err(|e| e.at(Field::Tls))?;

    let mut env_at = Vec::new();
    if let Some(f) = &args.env_file {
        env_at.extend(parse_env_file_at(f).map_err(|e| e.at(Field::EnvVars))?);
    }
    env_at.extend(
        args.env
            .iter()
            .map(|e| (e.key.clone(), e.value.clone(), e.origin.clone())),
    );
    check_env_sizes(&env_at).map_err(|e| e.at(Field::EnvVars))?;
    let env = env_at.into_iter().map(|(k, v, _)| (k, v)).collect();

    let project_root = match &args.confine {
        Some(root) => project_root_within(&script_folder, root),
        None => project_root(&script_folder),
    };
    let (config_files, config_warnings) =
        find_config_files(&project_root, &script_folder).map_err(|e| e.at(Field::ScriptFolder))?;
    let mut warnings = config_warnings;
    warnings.extend(resolved);
    if !config_files.iter().any(|c| c.name == "settings.toml") {
        warnings.push(format!(
            "no settings.toml in {} or {}: /execute will answer \"No model specified and no defaultProvider in settings.toml\"",
            script_folder.display(),
            project_root.display()
        ));
    }
    if let Some((files, bytes)) = over_ceiling(
        &script_folder,
        &excludes,
        MAX_PAYLOAD_FILES,
        MAX_PAYLOAD_BYTES,
    ) {
        return Err(too_big(&script_folder, files, bytes).at(Field::ScriptFolder));
    }
    // The whole folder once, as the copy will walk it: unreadable parts are bad input now,
    // and what the payload leaves out is said, not silently dropped.
    let survey = crate::payload::survey(&script_folder, &excludes, Some(&main_script))
        .map_err(|e| match e {
            crate::payload::PayloadError::Io { path, source } => unreadable(&path, &source),
            other => Error::input(
                format!("cannot read --script-folder {}", script_folder.display()),
                other.to_string(),
            ),
        })
        .map_err(|e| e.at(Field::ScriptFolder))?;
    let skipped = survey.skipped.len();
    for s in survey.skipped.iter().take(SKIP_WARNINGS_MAX) {
        warnings.push(s.to_string());
    }
    if skipped > SKIP_WARNINGS_MAX {
        warnings.push(format!(
            "{} more entries of {} are left out of the payload (special files or symlinks that dangle or leave the folder)",
            skipped - SKIP_WARNINGS_MAX,
            script_folder.display()
        ));
    }

    Ok(DeployConfig {
        plugin: args.plugin.clone(),
        name,
        script_name: args.script_name.clone(),
        script_folder,
        main_script,
        image,
        platform,
        port,
        bind,
        env,
        excludes,
        pull: args.pull,
        timeout: args.timeout,
        project_root,
        config_files,
        warnings,
        replicas: args.replicas,
        registry: args.registry.clone(),
        publish_mode: args.publish_mode.clone(),
        placement_pref: args.placement_pref.clone(),
        max_replicas_per_node: args.max_replicas_per_node,
        proxy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_name_rule() {
        assert!(valid_docker_name("fractalic-my_script.1"));
        assert!(!valid_docker_name("-x"));
        assert!(!valid_docker_name("../x"));
        assert!(!valid_docker_name(""));
        assert!(!valid_docker_name("a b"));
        assert!(check_script_name("a..b").is_err());
        assert!(check_script_name("a/b").is_err());
    }

    #[test]
    fn production_tag_rule() {
        let r = "ghcr.io/fractalic-ai/fractalic";
        assert_eq!(production_tag(r), format!("{r}:latest-production"));
        assert_eq!(
            production_tag(&format!("{r}:latest")),
            format!("{r}:latest-production")
        );
        assert_eq!(
            production_tag(&format!("{r}:1.2")),
            format!("{r}:1.2-production")
        );
        assert_eq!(
            production_tag(&format!("{r}:1.2-production")),
            format!("{r}:1.2-production")
        );
        assert_eq!(
            production_tag("localhost:5000/other:latest"),
            "localhost:5000/other:latest"
        );
        assert_eq!(
            production_tag("fractalic-ai/fractalic"),
            "fractalic-ai/fractalic:latest-production"
        );
    }

    #[test]
    fn ports_and_timeouts() {
        assert_eq!(parse_port("8001", "--port").unwrap(), 8001);
        for bad in ["0", "65536", "-1", "http", ""] {
            let e = parse_port(bad, "--port").unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains("1 to 65535"), "{e}");
        }
        assert!(parse_timeout("0").is_err());
        assert_eq!(parse_timeout("5").unwrap(), Duration::from_secs(5));
    }

    #[test]
    fn env_items_and_files_keep_values_out_of_errors() {
        assert_eq!(
            parse_env_item("A_1=x=y", "--env").unwrap(),
            ("A_1".to_string(), "x=y".to_string())
        );
        let e = parse_env_item("1A=secret", "--env").unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(parse_env_item("NOEQUALS", "--env").is_err());

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("env");
        std::fs::write(&f, "# c\n\nexport A=\"q v\"\nB='x'\nC=plain\n").unwrap();
        let env = parse_env_file(&f).unwrap();
        assert_eq!(
            env,
            vec![
                ("A".into(), "q v".into()),
                ("B".into(), "x".into()),
                ("C".into(), "plain".into())
            ]
        );
        std::fs::write(&f, "GOOD=1\nbad line with hunter2\n").unwrap();
        let e = parse_env_file(&f).unwrap_err();
        assert!(e.to_string().contains(":2"), "{e}");
    }

    #[test]
    fn swarm_flags() {
        assert_eq!(parse_replicas("3").unwrap(), 3);
        for bad in ["0", "101", "-1", "x", ""] {
            assert_eq!(parse_replicas(bad).unwrap_err().exit_code(), 2, "{bad}");
        }
        for good in [
            "127.0.0.1:5000",
            "localhost:5000",
            "registry.example.com:443",
        ] {
            assert!(check_registry(good).is_ok(), "{good}");
        }
        for bad in [
            "http://x:5000",
            "x",
            "x:0",
            "x:99999",
            ":5000",
            "a/b:1",
            "-x:1",
        ] {
            let e = check_registry(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
            assert!(e.to_string().contains("HOST:PORT"), "{e}");
        }
        assert!(check_publish_mode("ingress").is_ok() && check_publish_mode("host").is_ok());
        for ok in [
            "spread=node.labels.zone",
            "spread=engine.labels.rack-1",
            "none",
        ] {
            assert!(check_placement_pref(ok).is_ok(), "{ok}");
        }
        for bad in [
            "spread=node.hostname",
            "spread=node.labels.",
            "zone",
            "spread=node.labels.a b",
            "",
        ] {
            let e = check_placement_pref(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
            assert!(
                e.to_string()
                    .contains(&format!("bad --placement-pref {bad:?}")),
                "{e}"
            );
        }
        assert_eq!(parse_max_replicas_per_node("0").unwrap(), 0);
        assert_eq!(parse_max_replicas_per_node("1").unwrap(), 1);
        for bad in ["-1", "101", "x", ""] {
            let e = parse_max_replicas_per_node(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
            assert!(e.to_string().contains("bad --max-replicas-per-node"), "{e}");
        }
        let e = check_publish_mode("mesh").unwrap_err();
        assert!(e.to_string().contains("ingress"), "{e}");
    }

    #[test]
    fn main_script_order() {
        let dir = tempfile::tempdir().unwrap();
        let ex = Excludes::new(&[]).unwrap();
        let d = dir.path().canonicalize().unwrap();
        std::fs::write(d.join("s.zzz"), "").unwrap();
        assert_eq!(find_main_script(&d, "s", &ex).unwrap(), "s.zzz");
        std::fs::write(d.join("s.txt"), "").unwrap();
        assert_eq!(find_main_script(&d, "s", &ex).unwrap(), "s.txt");
        std::fs::write(d.join("s.md"), "").unwrap();
        assert_eq!(find_main_script(&d, "s", &ex).unwrap(), "s.md");
        assert_eq!(find_main_script(&d, "t", &ex).unwrap_err().exit_code(), 2);
    }

    /// A canonical temp folder holding `files`.
    fn folder(files: &[&str]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().canonicalize().unwrap();
        for f in files {
            std::fs::write(d.join(f), "a = 1\n").unwrap();
        }
        (dir, d)
    }

    #[test]
    fn main_script_must_reach_the_payload_as_a_file() {
        use std::os::unix::fs::symlink;
        let none = Excludes::new(&[]).unwrap();
        // Dropped by a user's --exclude, or by a default exclude.
        let (_t, d) = folder(&["demo.md"]);
        let ex = Excludes::new(&["demo.md".to_string()]).unwrap();
        let e = find_main_script(&d, "demo", &ex).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("--exclude \"demo.md\""), "{e}");
        let (_t, d) = folder(&["run.ctx"]);
        let e = find_main_script(&d, "run", &none).unwrap_err().to_string();
        assert!(e.contains("default exclude pattern \"*.ctx\""), "{e}");
        // The fallback passes over an excluded S.* for a usable one.
        let (_t, d) = folder(&["run.ctx", "run.yaml"]);
        assert_eq!(find_main_script(&d, "run", &none).unwrap(), "run.yaml");
        // A symlink leaving the folder, a dangling one, one to an excluded file.
        let (_t, d) = folder(&["x.ctx"]);
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("real.md"), "x").unwrap();
        symlink(outside.path().join("real.md"), d.join("out.md")).unwrap();
        symlink("gone.md", d.join("dang.md")).unwrap();
        symlink("x.ctx", d.join("exc.md")).unwrap();
        for (script, want) in [
            ("out", "outside the script folder"),
            ("dang", "which does not exist"),
            ("exc", "which the payload leaves out"),
        ] {
            let e = find_main_script(&d, script, &none).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{script}");
            assert!(e.to_string().contains(want), "{script}: {e}");
        }
        // A symlink to a file inside the folder is fine.
        std::fs::create_dir(d.join("v")).unwrap();
        std::fs::write(d.join("v/2.md"), "x").unwrap();
        symlink("v/2.md", d.join("in.md")).unwrap();
        assert_eq!(find_main_script(&d, "in", &none).unwrap(), "in.md");
    }

    #[test]
    fn ui_script_names_resolve_to_the_one_file_they_can_mean() {
        for (file, ui) in [
            ("My Script.md", "my-script"),
            ("Hello.md", "hello"),
            ("hello_world.v2.md", "hello-world-v2"),
            ("--a__b--.md", "a-b"),
            ("noext", "noext"),
            ("\u{e9}t\u{e9}.md", "t"),
        ] {
            assert_eq!(ui_script_name(file), ui, "{file}");
        }
        let none = Excludes::new(&[]).unwrap();
        let (_t, d) = folder(&["My Script.md", "notes.txt"]);
        let (m, w) = resolve_main_script(&d, "my-script", &none).unwrap();
        assert_eq!(m, "My Script.md");
        let w = w.expect("a warning says which file");
        assert!(w.contains("\"My Script.md\""), "{w}");
        // A name that matches exactly needs no guessing.
        assert_eq!(
            resolve_main_script(&d, "notes", &none).unwrap(),
            ("notes.txt".into(), None)
        );
        // In a subfolder (the UI sends its repository as the folder), excludes applied.
        let (_t, d) = folder(&["README.md"]);
        std::fs::create_dir_all(d.join("tasks/deep")).unwrap();
        std::fs::create_dir_all(d.join("node_modules")).unwrap();
        std::fs::write(d.join("tasks/deep/Daily_Report.md"), "x").unwrap();
        std::fs::write(d.join("node_modules/daily-report.md"), "x").unwrap();
        std::fs::write(d.join("tasks/daily report.ctx"), "x").unwrap();
        let (m, _) = resolve_main_script(&d, "daily-report", &none).unwrap();
        assert_eq!(m, "tasks/deep/Daily_Report.md");
        // Several candidates: bad input naming them.
        std::fs::write(d.join("tasks/daily-Report.md"), "x").unwrap();
        let e = resolve_main_script(&d, "daily-report", &none).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(
            msg.contains("\"tasks/daily-Report.md\", \"tasks/deep/Daily_Report.md\""),
            "{msg}"
        );
        // Nothing that fits: the usual message.
        let e = resolve_main_script(&d, "nope", &none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no main script \"nope\""), "{e}");
        // A name the rule cannot carry stays refused.
        let (_t, d) = folder(&["My  Script.md"]);
        assert!(resolve_main_script(&d, "my-script", &none).is_err());
    }

    #[test]
    fn a_folder_over_the_ceiling_is_refused_early_saying_how_to_narrow_it() {
        let (_t, d) = folder(&["s.md"]);
        std::fs::create_dir_all(d.join("data")).unwrap();
        std::fs::create_dir_all(d.join(".git")).unwrap();
        for i in 0..30 {
            std::fs::write(d.join(format!("data/{i}.csv")), "x".repeat(100)).unwrap();
            std::fs::write(d.join(format!(".git/{i}")), "x").unwrap();
        }
        let none = Excludes::new(&[]).unwrap();
        assert_eq!(over_ceiling(&d, &none, 100, 1 << 20), None);
        assert_eq!(
            over_ceiling(&d, &none, 10, 1 << 20),
            Some((11, over_ceiling(&d, &none, 10, 1 << 20).unwrap().1))
        );
        assert!(over_ceiling(&d, &none, 1000, 500).is_some_and(|(_, b)| b > 500));
        let narrowed = Excludes::new(&["data".to_string()]).unwrap();
        assert_eq!(
            over_ceiling(&d, &narrowed, 10, 1 << 20),
            None,
            ".git and data left out"
        );
        let e = too_big(&d, 20_001, 3 << 20).to_string();
        assert!(
            e.contains("more than 20000 files or 512 MiB")
                && e.contains("stopped at 20001 files, 3 MiB")
                && e.contains("--exclude"),
            "{e}"
        );
    }

    #[test]
    fn main_script_names_follow_the_script_name_rule() {
        let none = Excludes::new(&[]).unwrap();
        let (_t, d) = folder(&["s.\tx\n8009", "s.a\u{1b}b"]);
        let e = find_main_script(&d, "s", &none).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(
            msg.contains("bad main script name \"s.\\tx\\n8009\""),
            "{msg}"
        );
        assert!(!msg.contains('\n') && !msg.contains('\t'), "{msg}");
        // A valid candidate after the bad ones is taken.
        std::fs::write(d.join("s.yaml"), "x").unwrap();
        assert_eq!(find_main_script(&d, "s", &none).unwrap(), "s.yaml");
    }

    #[test]
    fn env_errors_name_the_place_and_never_the_secret() {
        for (item, must_not, must) in [
            (
                "OPENAI_API_KEY: sk-proj-abcdef123",
                "sk-proj",
                "\"OPENAI_API_KEY\"",
            ),
            ("sk-proj-abcdef123", "sk-proj", "no '='"),
            ("sk_proj_abcdef123", "sk_proj", "no '='"),
            ("API KEY=sk-zzz", "sk-zzz", "bad env name"),
            ("API_KEY: sk=yy", "sk", "\"API_KEY\""),
            ("1BAD=hunter2", "hunter2", "\"1BAD\""),
        ] {
            let e = parse_env_item(item, "--env #3").unwrap_err();
            let msg = e.to_string();
            assert_eq!(e.exit_code(), 2);
            assert!(msg.contains("--env #3"), "{item}: {msg}");
            assert!(msg.contains(must), "{item}: {msg}");
            assert!(!msg.contains(must_not), "{item}: {msg}");
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.env");
        std::fs::write(&f, "A=1\n\nOPENAI_API_KEY: sk-proj-LEAK\n").unwrap();
        let msg = parse_env_file(&f).unwrap_err().to_string();
        assert!(msg.contains("x.env:3"), "{msg}");
        assert!(!msg.contains("LEAK"), "{msg}");
        std::fs::write(&f, b"A=1\nB=\xff\xfe-sk-LEAK\n").unwrap();
        let msg = parse_env_file(&f).unwrap_err().to_string();
        assert!(msg.contains("x.env:2 is not UTF-8"), "{msg}");
        assert!(!msg.contains("LEAK"), "{msg}");
    }

    #[test]
    fn env_sizes_are_checked_before_docker() {
        let item = |k: &str, n: usize| (k.to_string(), "v".repeat(n), "--env #1".to_string());
        assert!(check_env_sizes(&[item("A", ENV_LINE_MAX - 2)]).is_ok());
        let e = check_env_sizes(&[item("A", ENV_LINE_MAX - 1)]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(
            msg.contains("env value of A (--env #1) is too long"),
            "{msg}"
        );
        assert!(!msg.contains("vvvv"), "{msg}");
        let many: Vec<_> = (0..20).map(|i| item(&format!("K{i}"), 60_000)).collect();
        let msg = check_env_sizes(&many).unwrap_err().to_string();
        assert!(msg.contains("environment is too large"), "{msg}");
    }

    #[test]
    fn image_references_follow_the_docker_grammar() {
        for good in [
            "ghcr.io/fractalic-ai/fractalic:latest-production",
            "127.0.0.1:5000/fractalic-stand-in:latest-production",
            "localhost/a/b",
            "ubuntu",
            "library/ubuntu:22.04",
            "Registry.Example.com:443/team/app_x__y.z-w:v1.2_3",
            "[::1]:5000/app:tag",
            "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "app:1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(image_reference_problem(good), None, "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("Ubuntu", "uppercase"),
            ("ghcr.io/Fractalic-AI/fractalic:latest", "uppercase"),
            ("ghcr.io/fractalic-ai/fractalic:", "tag"),
            ("app:-x", "tag"),
            ("app:a/b", "registry host"),
            ("a//b", "not valid"),
            ("a/-b", "not valid"),
            ("a/b_", "not valid"),
            ("a/b...c", "not valid"),
            ("app@sha256:abc", "digest"),
            ("app@md5", "digest"),
            ("bad_host.io:x/app", "registry host"),
            ("app name", "contains"),
        ] {
            let p = image_reference_problem(bad).unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(p.contains(why), "{bad:?}: {p}");
        }
        let e = check_image("Ubuntu").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().starts_with("bad --image \"Ubuntu\""), "{e}");
    }

    /// Deploy flags as the command line gives them (robust to flags added later).
    fn args(extra: &[&str]) -> DeployArgs {
        use clap::Parser;
        let mut argv = vec!["fp", "deploy", "docker-registry"];
        argv.extend_from_slice(extra);
        let crate::cli::Command::Deploy(a) = crate::cli::Cli::try_parse_from(argv).unwrap().command
        else {
            panic!("`fp deploy` parsed as another command");
        };
        crate::deploy_file::merge(&a).unwrap().args
    }

    #[test]
    fn deploy_config_finds_bad_ports_binds_and_excludes_before_docker() {
        let (_t, d) = folder(&["hello.md", "settings.toml"]);
        let f = d.to_str().unwrap();
        let base = ["--script-name", "hello", "--script-folder", f];
        let hold = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let busy = hold.local_addr().unwrap().port().to_string();
        let mut a = base.to_vec();
        a.extend(["--port", &busy]);
        let e = deploy_config(&args(&a)).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains(&format!("--port {busy}")), "{e}");
        assert!(e.to_string().contains("in use"), "{e}");

        let mut a = base.to_vec();
        a.extend(["--bind", "192.0.2.77"]);
        let e = deploy_config(&args(&a)).unwrap_err().to_string();
        assert!(e.contains("not an address of this host"), "{e}");

        let mut a = base.to_vec();
        a.extend(["--exclude", "a["]);
        let e = deploy_config(&args(&a)).unwrap_err().to_string();
        assert_eq!(e.matches("use a glob such as").count(), 1, "{e}");
        assert!(e.starts_with("bad --exclude pattern \"a[\""), "{e}");

        let mut a = base.to_vec();
        let big = format!("BIG={}", "x".repeat(70_000));
        a.extend(["--env", "A=1", "--env", &big]);
        let e = deploy_config(&args(&a)).unwrap_err().to_string();
        assert!(e.contains("BIG (--env #2) is too long"), "{e}");
        assert!(e.len() < 400, "{e}");
    }

    #[test]
    fn deploy_config_warns_about_what_the_payload_leaves_out() {
        use std::os::unix::fs::symlink;
        let (_t, d) = folder(&["hello.md", "settings.toml"]);
        symlink("/etc/hostname", d.join("host-file")).unwrap();
        symlink("missing", d.join("broken")).unwrap();
        let f = d.to_str().unwrap();
        let cfg = deploy_config(&args(&["--script-name", "hello", "--script-folder", f])).unwrap();
        let w = cfg.warnings.join("\n");
        assert!(
            w.contains("\"host-file\" -> \"/etc/hostname\" leaves the script folder"),
            "{w}"
        );
        assert!(
            w.contains("\"broken\" -> \"missing\" points at nothing"),
            "{w}"
        );

        // Many losses: each of the first 20 is named, the rest counted in one more line.
        for i in 0..25 {
            symlink(format!("gone{i}"), d.join(format!("dead{i:02}"))).unwrap();
        }
        let cfg = deploy_config(&args(&["--script-name", "hello", "--script-folder", f])).unwrap();
        assert_eq!(
            cfg.warnings.len(),
            SKIP_WARNINGS_MAX + 1,
            "{:#?}",
            cfg.warnings
        );
        let last = cfg.warnings.last().unwrap();
        assert!(last.starts_with("7 more entries of"), "{last}");
    }

    #[test]
    fn bad_toml_error_hides_contents() {
        let p = Path::new("settings.toml");
        let e =
            check_settings_toml(p, b"[settings.x]\napiKey = \"sk-SECRET\nmodel=1\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("line 2"), "{msg}");
        assert!(!msg.contains("sk-SECRET"), "{msg}");
        let e = check_mcp_json(Path::new("m.json"), b"{\"a\": tok}").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn script_folder_config_wins_over_root() {
        let root = tempfile::tempdir().unwrap();
        let folder = root.path().join("scripts");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(root.path().join("fractalic.py"), "").unwrap();
        std::fs::write(root.path().join("settings.toml"), "a = 1").unwrap();
        std::fs::write(root.path().join("mcp_servers.json"), "{}").unwrap();
        std::fs::write(folder.join("settings.toml"), "a = 2").unwrap();
        assert_eq!(project_root(&folder), root.path());
        // Confined to a root below the project: the walk stops there, no fallback.
        let inner = root.path().join("scripts");
        std::fs::create_dir_all(&inner).unwrap();
        let lone = inner.join("lone");
        std::fs::create_dir_all(&lone).unwrap();
        assert_eq!(project_root_within(&lone, &inner), lone);
        assert_eq!(project_root_within(&folder, root.path()), root.path());
        let (files, _) = find_config_files(root.path(), &folder).unwrap();
        let s = files.iter().find(|f| f.name == "settings.toml").unwrap();
        assert_eq!(s.contents, b"a = 2");
        let m = files.iter().find(|f| f.name == "mcp_servers.json").unwrap();
        assert_eq!(m.source, root.path().join("mcp_servers.json"));
    }

    #[test]
    fn small_files_must_be_regular_and_small() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        for (path, needle) in [
            (fifo.as_path(), "not a regular file"),
            (Path::new("/dev/zero"), "not a regular file"),
            (dir.path(), "not a regular file"),
        ] {
            let e = read_small(path, "env file").unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains(needle), "{e}");
        }
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; MAX_SMALL_FILE as usize + 1]).unwrap();
        assert!(read_small(&big, "x")
            .unwrap_err()
            .to_string()
            .contains("larger than"));
        let e = parse_env_file(&fifo).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn config_symlinks_leaving_the_folder_and_special_files_are_passed_over_with_a_warning() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let folder = root.path().join("scripts");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(outside.path().join("s.toml"), "leaked = true").unwrap();
        std::fs::write(outside.path().join("x.env"), "LEAKED=1").unwrap();
        std::fs::write(root.path().join("settings.toml"), "root = true").unwrap();
        std::os::unix::fs::symlink(outside.path().join("s.toml"), folder.join("settings.toml"))
            .unwrap();
        std::os::unix::fs::symlink(outside.path().join("x.env"), folder.join(".env")).unwrap();
        assert!(std::process::Command::new("mkfifo")
            .arg(folder.join("mcp_servers.json"))
            .status()
            .unwrap()
            .success());
        let (files, warnings) = find_config_files(root.path(), &folder).unwrap();
        let s = files.iter().find(|f| f.name == "settings.toml").unwrap();
        assert_eq!(
            s.contents, b"root = true",
            "the escaping link is not followed"
        );
        assert!(files.iter().all(|f| f.name != ".env"));
        assert!(files.iter().all(|f| f.name != "mcp_servers.json"));
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings
            .iter()
            .any(|w| w.contains("leaves the script folder")));
        assert!(warnings.iter().any(|w| w.contains("not a regular file")));
        // A link inside the folder is fine.
        std::fs::remove_file(folder.join("settings.toml")).unwrap();
        std::fs::write(folder.join("real.toml"), "inside = true").unwrap();
        std::os::unix::fs::symlink("real.toml", folder.join("settings.toml")).unwrap();
        let (files, _) = find_config_files(root.path(), &folder).unwrap();
        let s = files.iter().find(|f| f.name == "settings.toml").unwrap();
        assert_eq!(s.contents, b"inside = true");
    }
}
