//! Where this process runs relative to the Docker engine, and how a probe reaches a port the
//! engine publishes. On the engine's host (or in a `--network host` container) loopback reaches
//! every published port, as it always did, and finding that out costs no docker call. In a
//! sibling container of the same engine (a socket-mounted CI job, the Fractalic image) our
//! loopback is our own: a probe of `http://localhost:PORT` goes to the deployment's address on
//! a network both containers share, else through the engine (`docker exec NAME curl`), and
//! fails at once, saying why and what to do, when neither can work. A remote engine's URLs name
//! its host already. The URLs shown to users stay the host's: only the probe moves.

use crate::docker::{Docker, Refusal};
use crate::error::Error;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a snapshot of the engine's published ports is trusted.
const SNAPSHOT_FRESH: Duration = Duration::from_millis(1000);
/// A port missing from a snapshot at least this old makes a new one (a container just started).
const SNAPSHOT_RETRY: Duration = Duration::from_millis(250);
/// Deadline of the docker calls made here.
const CALL: Duration = Duration::from_secs(10);

/// One network a container is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Net {
    /// The network's name (`bridge`).
    pub name: String,
    /// The network's id (empty when docker gave none).
    pub id: String,
    /// The container's IPv4 address on it (empty when it has none).
    pub ip: String,
}

/// This process's own container, as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Me {
    /// Container id.
    pub id: String,
    /// Container name, without the leading `/`.
    pub name: String,
    /// The networks it is on.
    pub networks: Vec<Net>,
}

/// Where this process runs relative to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// Loopback reaches what the engine publishes: the engine's host, a `--network host`
    /// container, or a container the engine does not know (its own engine inside).
    Host,
    /// The engine is elsewhere (`DOCKER_HOST`, `--context`): URLs name its host already.
    Remote,
    /// A container of the same engine with its own network namespace.
    Sibling(Me),
}

/// What the engine knows about a container that publishes a host port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// Container name, without the leading `/`.
    pub name: String,
    /// The container port the host port leads to.
    pub container_port: u16,
    /// The networks it is on.
    pub networks: Vec<Net>,
}

/// How to probe one URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// As given.
    Direct,
    /// At this URL instead; `note` says where that is, for progress and errors.
    Via { url: String, note: String },
    /// Through the engine: `docker exec TARGET curl -fsS -m SECS URL`.
    Exec {
        target: Target,
        url: String,
        note: String,
    },
    /// No running container publishes the port (yet): a failed probe, worth retrying.
    NotPublished(String),
}

impl Route {
    /// Where the probe goes when that is not the URL itself (None for [`Route::Direct`]).
    pub(crate) fn note(&self) -> Option<&str> {
        match self {
            Route::Via { note, .. } | Route::Exec { note, .. } => Some(note),
            _ => None,
        }
    }
}

static LOCATION: OnceLock<Location> = OnceLock::new();
static SNAPSHOT: Mutex<Option<(Instant, BTreeMap<u16, Target>)>> = Mutex::new(None);

/// The docker CLI the probes use: the one this process located ([`Docker::located`]).
fn docker() -> Option<Docker> {
    Docker::located()
}

/// Where this process runs, found once: no docker call on the engine's host.
pub(crate) fn location() -> &'static Location {
    LOCATION.get_or_init(|| match docker() {
        None => Location::Host,
        Some(d) => detect(&d),
    })
}

/// Whether host ports must be judged from the engine's view (what its containers publish)
/// rather than by binding here: a remote engine, or a sibling container.
pub(crate) fn ports_from_engine(d: &Docker) -> bool {
    d.endpoint().remote_host().is_some() || matches!(location(), Location::Sibling(_))
}

/// Whether the facts that need no docker call say this may be a sibling container (no engine
/// bridge in our network namespace, and a container id of our own): then binding a port here
/// says nothing about the engine's host.
pub(crate) fn maybe_sibling() -> bool {
    !engine_bridge_here(Path::new("/sys/class/net")) && !own_ids().is_empty()
}

fn detect(d: &Docker) -> Location {
    if d.endpoint().remote_host().is_some() {
        return Location::Remote;
    }
    if engine_bridge_here(Path::new("/sys/class/net")) {
        return Location::Host;
    }
    let ids = own_ids();
    if ids.is_empty() {
        return Location::Host;
    }
    let mut args = vec!["container", "inspect"];
    args.extend(ids.iter().map(String::as_str));
    // Found or not, docker prints what it found; a missing candidate is no error here.
    let Ok((_, out)) = d.run_unchecked(&args, None, CALL) else {
        return Location::Host;
    };
    let Ok(Value::Array(found)) = serde_json::from_str::<Value>(&out.stdout) else {
        return Location::Host;
    };
    let Some(me) = found.first() else {
        return Location::Host;
    };
    let mode = me["HostConfig"]["NetworkMode"].as_str().unwrap_or("");
    if mode == "host" {
        return Location::Host;
    }
    let mut networks = networks_of(&me["NetworkSettings"]["Networks"]);
    if let Some(other) = mode.strip_prefix("container:") {
        // We share another container's network namespace: its networks are ours.
        if let Ok(Some(v)) = d.container_inspect_within(other, CALL) {
            networks = networks_of(&v["NetworkSettings"]["Networks"]);
        }
    }
    Location::Sibling(Me {
        id: me["Id"].as_str().unwrap_or("").to_string(),
        name: me["Name"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches('/')
            .to_string(),
        networks,
    })
}

/// Whether a Docker bridge (`docker0`, `br-<id>`) is an interface of our network namespace:
/// then this is the engine's host (or shares its network), and loopback reaches its ports.
pub(crate) fn engine_bridge_here(sys_class_net: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(sys_class_net) else {
        return false;
    };
    entries.flatten().any(|e| {
        let n = e.file_name();
        let n = n.to_string_lossy();
        n == "docker0" || n == "docker_gwbridge" || is_bridge_name(&n)
    })
}

fn is_bridge_name(name: &str) -> bool {
    name.strip_prefix("br-")
        .is_some_and(|h| h.len() == 12 && h.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Candidates for our own container id: from the mounts Docker makes (`/etc/hostname` comes
/// from `.../containers/<id>/hostname`), the cgroup path (cgroup v1), and, in a container
/// (`/.dockerenv`), the hostname, which Docker sets to the short id.
fn own_ids() -> Vec<String> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mut ids = Vec::new();
    ids.extend(id_from_mountinfo(&read("/proc/self/mountinfo")));
    ids.extend(id_from_cgroup(&read("/proc/self/cgroup")));
    if ids.is_empty() && Path::new("/.dockerenv").exists() {
        let h = read("/etc/hostname");
        let h = h.trim();
        if !h.is_empty() && h.len() <= 64 && h.chars().all(|c| c.is_ascii_alphanumeric()) {
            ids.push(h.to_string());
        }
    }
    ids.dedup();
    ids
}

/// The container id in the source of the `/etc/hostname`, `/etc/hosts` or `/etc/resolv.conf`
/// bind mount (`/var/lib/docker/containers/<64 hex>/hostname`), if any.
pub(crate) fn id_from_mountinfo(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (root, point) = (fields.get(3)?, fields.get(4)?);
        if !matches!(*point, "/etc/hostname" | "/etc/hosts" | "/etc/resolv.conf") {
            return None;
        }
        let (_, rest) = root.split_once("/containers/")?;
        let id = rest.split('/').next()?;
        is_full_id(id).then(|| id.to_string())
    })
}

/// The container id in a cgroup v1 path (`/docker/<id>`, `docker-<id>.scope`), if any.
pub(crate) fn id_from_cgroup(cgroup: &str) -> Option<String> {
    cgroup.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        path.split('/').find_map(|part| {
            let part = part
                .strip_prefix("docker-")
                .and_then(|p| p.strip_suffix(".scope"))
                .unwrap_or(part);
            is_full_id(part).then(|| part.to_string())
        })
    })
}

fn is_full_id(s: &str) -> bool {
    s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit())
}

fn networks_of(v: &Value) -> Vec<Net> {
    let Some(m) = v.as_object() else {
        return Vec::new();
    };
    m.iter()
        .map(|(name, n)| Net {
            name: name.clone(),
            id: n["NetworkID"].as_str().unwrap_or("").to_string(),
            ip: n["IPAddress"].as_str().unwrap_or("").to_string(),
        })
        .collect()
}

/// The host ports a `docker inspect` array's containers publish, each with its container port
/// and networks.
pub(crate) fn published_targets(inspect: &Value) -> BTreeMap<u16, Target> {
    let mut out = BTreeMap::new();
    for c in inspect.as_array().into_iter().flatten() {
        let name = c["Name"].as_str().unwrap_or("").trim_start_matches('/');
        let networks = networks_of(&c["NetworkSettings"]["Networks"]);
        let Some(ports) = c["NetworkSettings"]["Ports"].as_object() else {
            continue;
        };
        for (spec, bindings) in ports {
            let Some(cport) = spec
                .strip_suffix("/tcp")
                .and_then(|p| p.parse::<u16>().ok())
            else {
                continue;
            };
            for b in bindings.as_array().into_iter().flatten() {
                if let Some(hp) = b["HostPort"].as_str().and_then(|p| p.parse::<u16>().ok()) {
                    out.entry(hp).or_insert_with(|| Target {
                        name: name.to_string(),
                        container_port: cport,
                        networks: networks.clone(),
                    });
                }
            }
        }
    }
    out
}

/// How `me` reaches `target`'s container port: on a network both are attached to, else
/// through the engine with `docker exec`. `path` is the URL's path and query.
pub(crate) fn plan(me: &Me, target: &Target, path: &str) -> Route {
    let shared = target.networks.iter().find(|t| {
        !t.ip.is_empty()
            && me.networks.iter().any(|m| {
                (!m.id.is_empty() && m.id == t.id) || (t.id.is_empty() && m.name == t.name)
            })
    });
    if let Some(n) = shared {
        return Route::Via {
            url: format!("http://{}:{}{path}", n.ip, target.container_port),
            note: format!(
                "{}:{} (container {} on network {}, which this container {} shares)",
                n.ip, target.container_port, target.name, n.name, me.name
            ),
        };
    }
    Route::Exec {
        target: target.clone(),
        url: format!("http://127.0.0.1:{}{path}", target.container_port),
        note: format!(
            "`docker exec {} curl http://127.0.0.1:{}{path}` (this container {} shares no network with it)",
            target.name, target.container_port, me.name
        ),
    }
}

/// Why an exec probe cannot work (a fatal probe failure).
pub(crate) fn unreachable(me: &Me, target: &Target, url: &str, why: &str) -> String {
    let names = |n: &[Net]| {
        if n.is_empty() {
            "none".to_string()
        } else {
            n.iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let connect = target
        .networks
        .first()
        .map_or("a network of the deployment".to_string(), |n| {
            n.name.clone()
        });
    format!(
        "{url} cannot be reached from here: this tool runs in container {} (networks: {}), which shares no network with {} (networks: {}), and a probe through the engine failed ({why}); connect them with `docker network connect {connect} {}`, or run this tool on the Docker host",
        me.name,
        names(&me.networks),
        target.name,
        names(&target.networks),
        me.name
    )
}

/// `(host, port, path)` of an `http://` URL whose host is loopback; None for any other URL.
pub(crate) fn loopback_parts(url: &str) -> Option<(u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6.split_once("]:")?;
        (h, p)
    } else {
        authority.rsplit_once(':')?
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return None;
    }
    Some((port.parse().ok()?, path))
}

/// How to probe `url` from where this process runs.
pub(crate) fn route(url: &str) -> Route {
    let Location::Sibling(me) = location() else {
        return Route::Direct;
    };
    let Some((port, path)) = loopback_parts(url) else {
        return Route::Direct;
    };
    match target(port) {
        Ok(Some(t)) => plan(me, &t, &path),
        Ok(None) => Route::NotPublished(format!(
            "no running container publishes port {port} on the engine (this tool runs in container {}, so {url} is probed at the deployment's own address)",
            me.name
        )),
        Err(e) => Route::NotPublished(format!(
            "could not look up what publishes port {port}: {}",
            crate::error::one_line(&e.to_string())
        )),
    }
}

/// The container that publishes host `port`, from a snapshot of every running container's
/// ports (one `docker ps` and one `docker inspect`, shared by all probes for about a second).
fn target(port: u16) -> crate::error::Result<Option<Target>> {
    let mut snap = crate::sync::lock(&SNAPSHOT);
    if let Some((at, map)) = snap.as_ref() {
        let age = at.elapsed();
        if let Some(t) = map.get(&port).filter(|_| age < SNAPSHOT_FRESH) {
            return Ok(Some(t.clone()));
        }
        if age < SNAPSHOT_RETRY {
            return Ok(None);
        }
    }
    let d = docker().ok_or_else(|| Error::failed("no docker CLI to look up ports with"))?;
    let ids = d.run(&["ps", "--no-trunc", "--format", "{{.ID}}"], None, CALL)?;
    let ids: Vec<&str> = ids.stdout.split_whitespace().collect();
    let map = if ids.is_empty() {
        BTreeMap::new()
    } else {
        let mut args = vec!["container", "inspect"];
        args.extend(ids);
        // A container gone between the two calls is left out, not an error.
        let (_, out) = d.run_unchecked(&args, None, CALL)?;
        published_targets(&serde_json::from_str(&out.stdout).unwrap_or(Value::Null))
    };
    let found = map.get(&port).cloned();
    *snap = Some((Instant::now(), map));
    Ok(found)
}

/// One probe through the engine: `docker exec TARGET curl -fsS -m SECS URL` for `shown` (the
/// URL as the user knows it). `Ok((status, body))` when it answered, `Err((reason, fatal))`
/// otherwise; fatal when the container cannot run curl at all, so no retry will help (the
/// reason then says why nothing reaches it, and the fix).
pub(crate) fn exec_probe(
    target: &Target,
    url: &str,
    shown: &str,
    timeout: Duration,
) -> std::result::Result<(u16, String), (String, bool)> {
    let Some(d) = docker() else {
        return Err(("no docker CLI to probe through".into(), true));
    };
    let container = target.name.as_str();
    let secs = format!("{}", timeout.as_secs_f64().clamp(0.1, 60.0));
    let argv = ["curl", "-fsS", "-m", &secs, url];
    match d.exec(container, &argv, timeout + Duration::from_secs(5)) {
        Ok((Some(0), out)) => Ok((200, out.stdout)),
        Ok((Some(22), out)) => {
            let status = out
                .stderr
                .rsplit("error: ")
                .next()
                .and_then(|s| s.trim().get(..3))
                .and_then(|s| s.parse().ok())
                .unwrap_or(500);
            Ok((status, String::new()))
        }
        Ok((code, out)) => {
            let msg = crate::error::one_line(&out.stderr);
            let refusal = crate::docker::refusal(&out.stderr);
            let fatal = matches!(code, Some(126 | 127)) || refusal == Refusal::ProgramNotFound;
            let why = format!("`docker exec {container} curl` failed: {msg}");
            match location() {
                Location::Sibling(me) if fatal && refusal != Refusal::NotRunning => {
                    Err((unreachable(me, target, shown, &why), true))
                }
                _ => Err((why, false)),
            }
        }
        Err(e) => Err((crate::error::one_line(&e.to_string()), false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str, id: &str, ip: &str) -> Net {
        Net {
            name: name.into(),
            id: id.into(),
            ip: ip.into(),
        }
    }

    fn me(networks: Vec<Net>) -> Me {
        Me {
            id: "a".repeat(64),
            name: "ci-job".into(),
            networks,
        }
    }

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn own_id_from_the_hostname_mount() {
        let mi = format!(
            "600 580 0:50 / / rw,relatime - overlay overlay rw\n\
             612 600 254:1 /var/lib/docker/containers/{ID}/resolv.conf /etc/resolv.conf rw - ext4 /dev/vda1 rw\n\
             613 600 254:1 /var/lib/docker/containers/{ID}/hostname /etc/hostname rw - ext4 /dev/vda1 rw\n"
        );
        assert_eq!(id_from_mountinfo(&mi).as_deref(), Some(ID));
        // The host's own mounts name no container.
        assert_eq!(
            id_from_mountinfo("22 1 254:1 / / rw - ext4 /dev/vda1 rw\n"),
            None
        );
        // A volume that merely lives under a containers/ folder is not /etc/hostname.
        let vol = format!("70 60 254:1 /srv/containers/{ID}/x /data rw - ext4 /dev/vda1 rw\n");
        assert_eq!(id_from_mountinfo(&vol), None);
    }

    #[test]
    fn own_id_from_a_v1_cgroup() {
        assert_eq!(
            id_from_cgroup(&format!("12:memory:/docker/{ID}\n")).as_deref(),
            Some(ID)
        );
        assert_eq!(
            id_from_cgroup(&format!("1:name=systemd:/system.slice/docker-{ID}.scope\n")).as_deref(),
            Some(ID)
        );
        // cgroup v2 in a private namespace, and this machine's shape: no id.
        assert_eq!(id_from_cgroup("0::/\n"), None);
        assert_eq!(
            id_from_cgroup("4:memory:/process_api/d46f7f84dd06\n0::/\n"),
            None
        );
    }

    #[test]
    fn a_bridge_in_our_namespace_means_the_engine_host() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["lo", "eth0"] {
            std::fs::create_dir(dir.path().join(n)).unwrap();
        }
        assert!(!engine_bridge_here(dir.path()));
        std::fs::create_dir(dir.path().join("br-0123456789ab")).unwrap();
        assert!(engine_bridge_here(dir.path()));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("docker0")).unwrap();
        assert!(engine_bridge_here(dir.path()));
        assert!(!engine_bridge_here(&dir.path().join("missing")));
        assert!(!is_bridge_name("br-lan"));
    }

    #[test]
    fn loopback_urls_are_split_and_others_left_alone() {
        assert_eq!(
            loopback_parts("http://localhost:8002/health"),
            Some((8002, "/health".into()))
        );
        assert_eq!(
            loopback_parts("http://127.0.0.1:8002"),
            Some((8002, "/".into()))
        );
        assert_eq!(
            loopback_parts("http://[::1]:9/x?y=1"),
            Some((9, "/x?y=1".into()))
        );
        assert_eq!(loopback_parts("http://10.1.2.3:8002/health"), None);
        assert_eq!(loopback_parts("http://box.example:8002/health"), None);
        assert_eq!(loopback_parts("https://localhost:8002/health"), None);
        assert_eq!(loopback_parts("http://localhost/health"), None);
    }

    fn inspect() -> Value {
        serde_json::json!([
            {"Name": "/fractalic-hello", "NetworkSettings": {
                "Ports": {"8001/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8002"}], "9/udp": null},
                "Networks": {"bridge": {"NetworkID": "n-bridge", "IPAddress": "172.17.0.5"}}}},
            {"Name": "/other", "NetworkSettings": {
                "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "9000"}, {"HostIp": "::", "HostPort": "9000"}], "443/tcp": null},
                "Networks": {"apps": {"NetworkID": "n-apps", "IPAddress": "172.20.0.2"}}}}
        ])
    }

    #[test]
    fn published_ports_lead_to_their_containers() {
        let m = published_targets(&inspect());
        assert_eq!(m.keys().copied().collect::<Vec<_>>(), vec![8002, 9000]);
        assert_eq!(m[&8002].name, "fractalic-hello");
        assert_eq!(m[&8002].container_port, 8001);
        assert_eq!(
            m[&8002].networks,
            vec![net("bridge", "n-bridge", "172.17.0.5")]
        );
        assert_eq!(m[&9000].container_port, 80);
        assert!(published_targets(&Value::Null).is_empty());
    }

    #[test]
    fn a_shared_network_is_probed_at_the_deployment_address() {
        let m = published_targets(&inspect());
        let job = me(vec![net("bridge", "n-bridge", "172.17.0.9")]);
        match plan(&job, &m[&8002], "/health") {
            Route::Via { url, note } => {
                assert_eq!(url, "http://172.17.0.5:8001/health");
                assert!(note.contains("network bridge"), "{note}");
            }
            other => panic!("{other:?}"),
        }
        // Not on the deployment's network: through the engine, at its own loopback.
        match plan(&job, &m[&9000], "/health") {
            Route::Exec { target, url, .. } => {
                assert_eq!(target.name, "other");
                assert_eq!(url, "http://127.0.0.1:80/health");
            }
            other => panic!("{other:?}"),
        }
        // Same network name but another network (another engine's "bridge" id): no match.
        let stranger = me(vec![net("bridge", "n-elsewhere", "10.0.0.2")]);
        assert!(matches!(
            plan(&stranger, &m[&8002], "/health"),
            Route::Exec { .. }
        ));
        // `--network none`: nothing shared.
        let none = me(vec![net("none", "n-none", "")]);
        assert!(matches!(plan(&none, &m[&8002], "/"), Route::Exec { .. }));
    }

    #[test]
    fn unreachable_names_both_sides_and_the_fix() {
        let m = published_targets(&inspect());
        let job = me(vec![net("ci", "n-ci", "172.30.0.2")]);
        let why = unreachable(&job, &m[&9000], "http://localhost:9000/health", "no curl");
        assert!(why.contains("ci-job (networks: ci)"), "{why}");
        assert!(why.contains("other (networks: apps)"), "{why}");
        assert!(why.contains("docker network connect apps ci-job"), "{why}");
        assert!(!why.contains('\n'));
    }

    #[test]
    fn the_engine_host_probes_as_given() {
        // No docker handle registered in unit tests: the host, and every URL direct.
        assert_eq!(route("http://localhost:8001/health"), Route::Direct);
        assert_eq!(Route::Direct.note(), None);
    }
}
