//! Which Docker engine the docker CLI talks to, and whether it is this machine: from `--context`,
//! `DOCKER_HOST`, `DOCKER_CONTEXT` or the CLI's current context (read from the CLI's own
//! context store, so finding it costs no docker call). A remote engine's ports are chosen from
//! what its containers publish, and its deployments are probed at its host's address.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Where the engine is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// On this machine (a unix socket, a named pipe, or TCP/SSH to a loopback address): ports
    /// are chosen by binding local sockets, deployments are probed at `localhost`.
    Local,
    /// On another machine: `host` is its address as the endpoint names it (an IP or a name).
    Remote {
        /// The engine host's address (an IPv6 address without brackets).
        host: String,
        /// The endpoint as configured (`tcp://10.1.2.3:2376`, `ssh://me@box`).
        endpoint: String,
    },
}

impl Endpoint {
    /// The remote host's address, or None for a local engine.
    pub(crate) fn remote_host(&self) -> Option<&str> {
        match self {
            Endpoint::Local => None,
            Endpoint::Remote { host, .. } => Some(host),
        }
    }

    /// The host part of a URL that reaches a port the engine publishes: `localhost`, the remote
    /// host, or `[v6]`.
    pub(crate) fn url_host(&self) -> String {
        match self.remote_host() {
            None => "localhost".into(),
            Some(h) if h.contains(':') => format!("[{h}]"),
            Some(h) => h.to_string(),
        }
    }
}

/// What the engine's location is resolved from (the process's environment, or a test's).
#[derive(Debug, Clone, Default)]
pub(crate) struct Sources {
    /// `--context NAME`.
    pub context_flag: Option<String>,
    /// `DOCKER_HOST`.
    pub docker_host: Option<String>,
    /// `DOCKER_CONTEXT`.
    pub docker_context: Option<String>,
    /// The CLI's config directory (`DOCKER_CONFIG`, else `~/.docker`).
    pub config_dir: Option<PathBuf>,
}

impl Sources {
    /// From this process's environment and the `--context` flag.
    pub(crate) fn from_env(context_flag: Option<&str>) -> Sources {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Sources {
            context_flag: context_flag.map(str::to_string),
            docker_host: var("DOCKER_HOST"),
            docker_context: var("DOCKER_CONTEXT"),
            config_dir: var("DOCKER_CONFIG")
                .map(PathBuf::from)
                .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".docker"))),
        }
    }
}

/// Resolves the engine's location the way the docker CLI picks it: `--context` first, then
/// `DOCKER_HOST`, then `DOCKER_CONTEXT`, then the config's `currentContext`; the `default`
/// context is `DOCKER_HOST` or the local socket. A context whose endpoint cannot be read is
/// treated as local (docker itself then says what is wrong with it).
pub(crate) fn resolve(s: &Sources) -> Endpoint {
    let context = s.context_flag.clone().or_else(|| {
        if s.docker_host.is_some() {
            return None;
        }
        s.docker_context
            .clone()
            .or_else(|| s.config_dir.as_deref().and_then(current_context))
    });
    let endpoint = match context.as_deref() {
        None | Some("default") => s.docker_host.clone(),
        Some(name) => s
            .config_dir
            .as_deref()
            .and_then(|d| context_endpoint(d, name)),
    };
    endpoint.map_or(Endpoint::Local, |e| parse_endpoint(&e))
}

/// The `currentContext` of the CLI's config.json, if any.
fn current_context(config_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(config_dir.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["currentContext"]
        .as_str()
        .filter(|c| !c.is_empty())
        .map(str::to_string)
}

/// A context's docker endpoint, from the CLI's context store
/// (`contexts/meta/<sha256 of the name>/meta.json`).
pub(crate) fn context_endpoint(config_dir: &Path, name: &str) -> Option<String> {
    let digest = Sha256::digest(name.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let meta = config_dir
        .join("contexts")
        .join("meta")
        .join(hex)
        .join("meta.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(meta).ok()?).ok()?;
    v["Endpoints"]["docker"]["Host"]
        .as_str()
        .map(str::to_string)
}

/// Local or remote, from an endpoint URL: `unix://`, `npipe://`, `fd://` and loopback
/// addresses are this machine; `tcp://HOST:PORT`, `ssh://[USER@]HOST[:PORT]` elsewhere are
/// remote.
pub(crate) fn parse_endpoint(endpoint: &str) -> Endpoint {
    let e = endpoint.trim();
    let Some((scheme, rest)) = e.split_once("://") else {
        return Endpoint::Local;
    };
    if !matches!(scheme, "tcp" | "ssh" | "http" | "https") {
        return Endpoint::Local;
    }
    let authority = rest.split('/').next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("").to_string()
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(h, port)| {
                if port.chars().all(|c| c.is_ascii_digit()) {
                    h
                } else {
                    authority
                }
            })
            .to_string()
    };
    if host.is_empty() || is_loopback(&host) {
        return Endpoint::Local;
    }
    Endpoint::Remote {
        host,
        endpoint: e.to_string(),
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether `name` is a valid docker context name (as `docker context create` accepts).
pub(crate) fn valid_context_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-'))
        && name.len() <= 200
}

/// Host ports the engine's containers publish, from `docker ps --format '{{.Ports}}'` lines
/// such as `0.0.0.0:8001->8001/tcp, :::8001->8001/tcp` or `0.0.0.0:9000-9002->9000-9002/tcp`.
pub(crate) fn published_ports(ps_ports: &str) -> std::collections::BTreeSet<u16> {
    let mut out = std::collections::BTreeSet::new();
    for item in ps_ports.split([',', '\n']) {
        let Some((host, _)) = item.trim().split_once("->") else {
            continue;
        };
        let Some((_, ports)) = host.rsplit_once(':') else {
            continue;
        };
        let (a, b) = ports.split_once('-').unwrap_or((ports, ports));
        if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) {
            if a <= b && b - a < 4096 {
                out.extend(a..=b);
            }
        }
    }
    out
}

/// The Docker socket this process would use, when that is a local unix socket.
fn socket_path() -> Option<PathBuf> {
    match std::env::var("DOCKER_HOST").ok().filter(|v| !v.is_empty()) {
        Some(h) => h.strip_prefix("unix://").map(PathBuf::from),
        None => Some(PathBuf::from("/var/run/docker.sock")),
    }
}

/// At `deploy`/`serve` start: a Docker socket this user may not open is one clear line naming
/// the fix (`--group-add` with the socket's group), instead of docker's long message later.
pub(crate) fn socket_check() -> crate::error::Result<()> {
    let Some(path) = socket_path() else {
        return Ok(());
    };
    match std::os::unix::net::UnixStream::connect(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(crate::error::Error::SocketDenied {
                detail: socket_advice(&path),
            })
        }
        _ => Ok(()),
    }
}

/// The advice for a socket this process may not open.
pub(crate) fn socket_advice(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let (gid, mode) = std::fs::metadata(path)
        .map(|m| (m.gid(), m.mode() & 0o777))
        .unwrap_or((0, 0));
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc_getuid() };
    format!(
        "permission denied on the Docker socket {} (group {gid}, mode {mode:04o}; this process runs as uid {uid}, not in that group): run the container with --group-add {gid} (docker run ... --group-add $(stat -c %g {})), or add the user to group {gid}",
        path.display(),
        path.display()
    )
}

extern "C" {
    #[link_name = "getuid"]
    fn libc_getuid() -> u32;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(host: &str, endpoint: &str) -> Endpoint {
        Endpoint::Remote {
            host: host.into(),
            endpoint: endpoint.into(),
        }
    }

    #[test]
    fn endpoints_are_local_or_remote() {
        assert_eq!(
            parse_endpoint("unix:///var/run/docker.sock"),
            Endpoint::Local
        );
        assert_eq!(
            parse_endpoint("npipe:////./pipe/docker_engine"),
            Endpoint::Local
        );
        assert_eq!(parse_endpoint("tcp://127.0.0.1:2375"), Endpoint::Local);
        assert_eq!(parse_endpoint("tcp://localhost:2375"), Endpoint::Local);
        assert_eq!(parse_endpoint("tcp://[::1]:2375"), Endpoint::Local);
        assert_eq!(
            parse_endpoint("tcp://10.1.2.3:2376"),
            remote("10.1.2.3", "tcp://10.1.2.3:2376")
        );
        assert_eq!(
            parse_endpoint("ssh://deploy@build-box.example:2222"),
            remote("build-box.example", "ssh://deploy@build-box.example:2222")
        );
        assert_eq!(parse_endpoint("ssh://box"), remote("box", "ssh://box"));
        let v6 = parse_endpoint("tcp://[fd00::7]:2376");
        assert_eq!(v6.remote_host(), Some("fd00::7"));
        assert_eq!(v6.url_host(), "[fd00::7]");
        assert_eq!(Endpoint::Local.url_host(), "localhost");
    }

    #[test]
    fn resolution_follows_the_cli_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = |name: &str, host: &str| {
            let hex: String = Sha256::digest(name.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let d = dir.path().join("contexts/meta").join(hex);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("meta.json"),
                format!(r#"{{"Name":"{name}","Endpoints":{{"docker":{{"Host":"{host}"}}}}}}"#),
            )
            .unwrap();
        };
        store("far", "tcp://10.9.8.7:2376");
        store("near", "unix:///var/run/docker.sock");
        let s = |flag: Option<&str>, host: Option<&str>, ctx: Option<&str>| Sources {
            context_flag: flag.map(Into::into),
            docker_host: host.map(Into::into),
            docker_context: ctx.map(Into::into),
            config_dir: Some(dir.path().to_path_buf()),
        };
        assert_eq!(resolve(&s(None, None, None)), Endpoint::Local);
        assert_eq!(
            resolve(&s(None, Some("tcp://10.1.2.3:2376"), None)).remote_host(),
            Some("10.1.2.3")
        );
        // --context wins over DOCKER_HOST, as in the CLI.
        assert_eq!(
            resolve(&s(Some("near"), Some("tcp://10.1.2.3:2376"), None)),
            Endpoint::Local
        );
        assert_eq!(
            resolve(&s(Some("far"), None, None)).remote_host(),
            Some("10.9.8.7")
        );
        // DOCKER_HOST wins over DOCKER_CONTEXT and currentContext.
        assert_eq!(
            resolve(&s(None, Some("unix:///x.sock"), Some("far"))),
            Endpoint::Local
        );
        assert_eq!(
            resolve(&s(None, None, Some("far"))).remote_host(),
            Some("10.9.8.7")
        );
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"currentContext":"far"}"#,
        )
        .unwrap();
        assert_eq!(
            resolve(&s(None, None, None)).remote_host(),
            Some("10.9.8.7")
        );
        // An unknown context: local (docker reports the real problem).
        assert_eq!(resolve(&s(Some("nope"), None, None)), Endpoint::Local);
    }

    #[test]
    fn published_ports_are_parsed() {
        let p = published_ports(
            "0.0.0.0:8001->8001/tcp, :::8001->8001/tcp\n127.0.0.1:9000-9002->9000-9002/tcp\n5000/tcp\n\n[::1]:7000->80/tcp",
        );
        assert_eq!(
            p.into_iter().collect::<Vec<_>>(),
            vec![7000, 8001, 9000, 9001, 9002]
        );
    }

    #[test]
    fn context_names() {
        assert!(valid_context_name("fp-test"));
        assert!(valid_context_name("a.b+c_d"));
        assert!(!valid_context_name("-x"));
        assert!(!valid_context_name(""));
        assert!(!valid_context_name("a b"));
    }

    #[test]
    fn socket_advice_names_the_group_add_fix() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("docker.sock");
        std::fs::write(&p, "").unwrap();
        let a = socket_advice(&p);
        assert!(a.contains("--group-add"), "{a}");
        assert!(a.contains("permission denied on the Docker socket"), "{a}");
        assert!(!a.contains('\n'));
    }
}
