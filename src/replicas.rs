//! Replicas of a proxied docker-registry deployment (`--proxy --replicas N`): the deployment's
//! live container `NAME` (the primary: its release history, kept containers and rollback are
//! as for one container) and followers `NAME.2` .. `NAME.N`, each a clone of the primary (its
//! image, environment, labels, `/payload` and config files), all upstreams of the proxy's
//! route. [`converge`] makes the followers match the primary after any deploy, update or
//! rollback, one at a time: the new clone is started beside the old one, proven healthy at its
//! own address, the route switches to it in one graceful reload, and the old one is drained
//! and stopped. Every step is in the run's undo journal. Docker's state is the only record: a
//! follower carries the label [`LABEL_OF`] naming the primary container and release it was
//! cloned from, so a follower that is running and current is left alone, and one that died
//! (or runs an older release) is replaced.

use crate::docker::{Docker, QUICK};
use crate::error::{Error, Result};
use crate::journal::Resource;
use crate::plugin::host::{self, Host};
use crate::progress::Stage;
use crate::proxy::{self, Proxy};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Label on a follower: `PRIMARY-ID/RELEASE`, what it was cloned from.
pub(crate) const LABEL_OF: &str = "fractalic-publisher.replica-of";
/// Label on a follower: its index (2..N).
pub(crate) const LABEL_INDEX: &str = "fractalic-publisher.replica";

/// The files a clone takes from the primary besides `/payload` (those that exist).
const CONFIG_PATHS: &[&str] = &[
    "/fractalic/settings.toml",
    "/settings.toml",
    "/fractalic/mcp_servers.json",
    "/mcp_servers.json",
    "/fractalic/.env",
    "/fractalic/payload",
];

/// One container of a deployment's replica set, as `docker ps -a` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub name: String,
    /// 1 for the primary, K for `NAME.K`.
    pub index: u16,
    /// `running`, `exited`, ...
    pub state: String,
    /// `docker ps` status text (`Exited (137) 3 seconds ago`).
    pub status: String,
    /// [`LABEL_OF`] ("" on the primary).
    pub of: String,
}

/// The primary and the followers of `name`, by index (one `docker ps -a`).
pub(crate) fn members(d: &Docker, name: &str) -> Result<Vec<Member>> {
    let filter = format!("label={}={name}", crate::update::LABEL_DEPLOYMENT);
    let format =
        format!("{{{{.Names}}}}\t{{{{.State}}}}\t{{{{.Status}}}}\t{{{{.Label \"{LABEL_OF}\"}}}}");
    let out = d.run(
        &["ps", "-a", "--filter", &filter, "--format", &format],
        None,
        QUICK,
    )?;
    Ok(parse_members(&out.stdout, name))
}

fn parse_members(text: &str, name: &str) -> Vec<Member> {
    let mut out: Vec<Member> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let n = f.first()?.trim();
            let index = if n == name {
                1
            } else {
                crate::config::replica_index(n, name)?
            };
            Some(Member {
                name: n.to_string(),
                index,
                state: f.get(1).unwrap_or(&"").trim().to_string(),
                status: f.get(2).unwrap_or(&"").trim().to_string(),
                of: f.get(3).unwrap_or(&"").trim().to_string(),
            })
        })
        .collect();
    out.sort_by_key(|m| m.index);
    out
}

/// The source of the clones: the primary's image, environment, labels and files.
struct Source {
    image: String,
    env: Vec<u8>,
    labels: rhai::Map,
    script: String,
    port: u16,
    /// `PRIMARY-ID/RELEASE`.
    key: String,
    /// Built on first use: `/payload` and the config files in one tar.
    tar: Option<Vec<u8>>,
}

fn source(d: &Docker, name: &str) -> Result<Source> {
    let v = d
        .container_inspect(name)?
        .ok_or_else(|| Error::failed(format!("{name} has no container to clone replicas from")))?;
    if v["State"]["Running"].as_bool() != Some(true) {
        return Err(Error::failed(format!(
            "{name} is not running, so no replica can be cloned from it; start it (fractalic-publisher start {name}) or deploy again"
        )));
    }
    let labels_v = &v["Config"]["Labels"];
    let mut labels = rhai::Map::new();
    for (k, val) in labels_v.as_object().into_iter().flatten() {
        let ours = k.starts_with("fractalic-publisher.") || k == "fractalic-deploy";
        if ours
            && k != host::LABEL_CREATED
            && k != crate::journal::LABEL_RUN
            && k != LABEL_OF
            && k != LABEL_INDEX
        {
            labels.insert(k.as_str().into(), val.as_str().unwrap_or("").into());
        }
    }
    let label = |k: &str| labels_v[k].as_str().unwrap_or("").to_string();
    let mut env = String::new();
    for e in v["Config"]["Env"].as_array().into_iter().flatten() {
        let e = e.as_str().unwrap_or("");
        if e.contains('\n') {
            let key = e.split('=').next().unwrap_or("");
            return Err(Error::failed(format!(
                "the environment variable {key} of {name} holds a newline, which an env file cannot carry; replicas cannot be cloned from it"
            )));
        }
        env.push_str(e);
        env.push('\n');
    }
    let id = v["Id"]
        .as_str()
        .unwrap_or("")
        .chars()
        .take(12)
        .collect::<String>();
    let release = crate::update::history(d, name)
        .map(|h| h.current)
        .unwrap_or_default();
    Ok(Source {
        image: v["Image"].as_str().unwrap_or("").to_string(),
        env: env.into_bytes(),
        labels,
        script: label("fractalic-publisher.script"),
        port: label(host::LABEL_PORT)
            .parse()
            .unwrap_or(proxy::UPSTREAM_PORT),
        key: format!("{id}/{release}"),
        tar: None,
    })
}

impl Source {
    /// `/payload` and the config files of the primary as one tar (owners and modes kept).
    fn tar(&mut self, d: &Docker, name: &str) -> Result<Vec<u8>> {
        if let Some(t) = &self.tar {
            return Ok(t.clone());
        }
        let mut b = tar::Builder::new(Vec::new());
        let bad = |e: std::io::Error| Error::failed(format!("cloning the files of {name}: {e}"));
        let payload = d
            .read_tar(name, "/payload")?
            .ok_or_else(|| Error::failed(format!("{name} has no /payload to clone")))?;
        append_all(&mut b, &payload, "").map_err(bad)?;
        for path in CONFIG_PATHS {
            if let Some(t) = d.read_tar(name, path)? {
                let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
                append_all(&mut b, &t, dir.trim_start_matches('/')).map_err(bad)?;
            }
        }
        let t = b.into_inner().map_err(bad)?;
        self.tar = Some(t.clone());
        Ok(t)
    }

    fn spec(&self, container: &str, index: u16) -> rhai::Map {
        let mut labels = self.labels.clone();
        labels.insert(LABEL_OF.into(), self.key.clone().into());
        labels.insert(LABEL_INDEX.into(), index.to_string().into());
        let mut m = rhai::Map::new();
        m.insert("name".into(), container.to_string().into());
        m.insert("image".into(), self.image.clone().into());
        m.insert("port".into(), i64::from(self.port).into());
        m.insert(
            "container_port".into(),
            i64::from(proxy::UPSTREAM_PORT).into(),
        );
        m.insert("restart".into(), "unless-stopped".into());
        m.insert("labels".into(), labels.into());
        m.insert("publish".into(), false.into());
        m.insert("network".into(), proxy::NETWORK.into());
        m
    }
}

/// Appends every entry of the tar `src` to `b`, under `prefix` (a directory, "" for `/`).
fn append_all(b: &mut tar::Builder<Vec<u8>>, src: &[u8], prefix: &str) -> std::io::Result<()> {
    let mut a = tar::Archive::new(src);
    for e in a.entries()? {
        let mut e = e?;
        let path = e.path()?.into_owned();
        let path = if prefix.is_empty() {
            path
        } else {
            std::path::Path::new(prefix).join(path)
        };
        let mut h = e.header().clone();
        if let Some(link) = e.link_name()?.map(|l| l.into_owned()) {
            b.append_link(&mut h, &path, &link)?;
        } else {
            b.append_data(&mut h, &path, &mut e)?;
        }
    }
    Ok(())
}

/// What [`converge`] did.
#[derive(Debug, Default)]
struct Done {
    replaced: Vec<String>,
    added: Vec<String>,
    removed: Vec<String>,
    current: Vec<String>,
}

/// Makes `name` run `want` replicas (`None`: as many as it has), the followers clones of the
/// live primary, one at a time with the route switched per replica. `want` above 1 needs a
/// proxied primary. Returns `{replicas, replaced, added, removed, current}`.
pub(crate) fn converge(
    host: &Host,
    d: &Arc<Docker>,
    name: &str,
    want: Option<u16>,
    secs: i64,
) -> Result<Value> {
    let now = members(d, name)?;
    let want = want.unwrap_or_else(|| now.iter().map(|m| m.index).max().unwrap_or(1));
    let followers: Vec<&Member> = now.iter().filter(|m| m.index >= 2).collect();
    if want <= 1 && followers.is_empty() {
        return Ok(
            json!({"replicas": 1, "replaced": [], "added": [], "removed": [], "current": []}),
        );
    }
    let primary_proxied = d
        .container_inspect(name)?
        .is_some_and(|v| v["Config"]["Labels"][proxy::LABEL_PROXY].as_str() == Some("true"));
    if want > 1 && !primary_proxied {
        return Err(Error::input(
            format!("--replicas {want} for {name}, which is not behind the front proxy"),
            "add --proxy: replicas of a docker-registry deployment are load balanced by the proxy",
        ));
    }
    let p = Proxy::new(d, proxy::image(None));
    host.touch_proxy();
    let j = host.journal();
    let suffix = short_suffix();
    let mut src: Option<Source> = None;
    let mut done = Done::default();
    // Old containers out of the route: removed once every replica is in place.
    let mut retired: Vec<String> = Vec::new();
    let drain = Duration::from_secs(secs.clamp(1, 600) as u64);
    let steps = |src: &mut Option<Source>, done: &mut Done, retired: &mut Vec<String>| {
        for k in 2..=want.max(1) {
            let live = followers.iter().find(|m| m.index == k);
            if src.is_none() {
                *src = Some(source(d, name)?);
            }
            let s = src.as_mut().expect("source");
            if let Some(m) = live {
                if m.state == "running" && m.of == s.key {
                    done.current.push(m.name.clone());
                    continue;
                }
            }
            let replica = format!("{name}.{k}");
            let proof = format!("{name}.next-{k}-{suffix}");
            let why = match live {
                None => format!("adding replica {replica}"),
                Some(m) if m.state != "running" => {
                    format!("replacing replica {replica} ({})", m.status)
                }
                Some(_) => format!("rolling replica {replica} onto {}", s.key),
            };
            host.progress.step(
                92,
                Stage::StartingContainer,
                format!("Replicas: {why}: starting {proof} beside it on the proxy network"),
            );
            let tar = s.tar(d, name)?;
            host::create_container_env(host, d, &s.spec(&proof, k), Some(s.env.clone()))?;
            // As the first copy was made: ownership goes to the image's user, modes stay.
            d.run(&["cp", "-", &format!("{proof}:/")], Some(tar), QUICK)?;
            let wall = SystemTime::now();
            d.run(&["start", &proof], None, QUICK)?;
            host.mark_started(&proof, wall);
            let ip = proxy::container_address(d, &proof)?.ok_or_else(|| {
                Error::failed(format!("{proof} is not attached to {}", proxy::NETWORK))
            })?;
            let direct = format!("http://{ip}:{}", proxy::UPSTREAM_PORT);
            crate::update::ready_at(host, d, &proof, &s.script, &direct, secs)?;
            if let Some(m) = live {
                let old = format!("{name}.next-old{k}-{suffix}");
                j.record(Resource::DockerObject {
                    what: format!("{replica} renamed to {old}"),
                    remove_args: vec!["rename".into(), old.clone(), replica.clone()],
                })?;
                d.run(&["rename", &replica, &old], None, QUICK)?;
                j.record(Resource::DockerObject {
                    what: format!("{proof} renamed to {replica}"),
                    remove_args: vec!["rename".into(), replica.clone(), proof.clone()],
                })?;
                d.run(&["rename", &proof, &replica], None, QUICK)?;
                p.ensure_up()?;
                if m.state == "running" {
                    j.record(Resource::DockerObject {
                        what: format!("{old} stopped"),
                        remove_args: vec!["start".into(), old.clone()],
                    })?;
                    drain_and_stop(d, &old, drain)?;
                }
                retired.push(old);
                done.replaced.push(replica);
            } else {
                j.record(Resource::DockerObject {
                    what: format!("{proof} renamed to {replica}"),
                    remove_args: vec!["rename".into(), replica.clone(), proof.clone()],
                })?;
                d.run(&["rename", &proof, &replica], None, QUICK)?;
                p.ensure_up()?;
                done.added.push(replica);
            }
        }
        for m in followers.iter().filter(|m| m.index > want) {
            host.progress.step(
                96,
                Stage::StartingContainer,
                format!("Replicas: taking {} out of the route", m.name),
            );
            let old = format!("{name}.next-old{}-{suffix}", m.index);
            j.record(Resource::DockerObject {
                what: format!("{} renamed to {old}", m.name),
                remove_args: vec!["rename".into(), old.clone(), m.name.clone()],
            })?;
            d.run(&["rename", &m.name, &old], None, QUICK)?;
            p.ensure_up()?;
            if m.state == "running" {
                j.record(Resource::DockerObject {
                    what: format!("{old} stopped"),
                    remove_args: vec!["start".into(), old.clone()],
                })?;
                drain_and_stop(d, &old, drain)?;
            }
            retired.push(old);
            done.removed.push(m.name.clone());
        }
        Ok::<(), Error>(())
    };
    if let Err(e) = steps(&mut src, &mut done, &mut retired) {
        let undo = j.undo();
        let _ = p.sync();
        let note = if undo.is_clean() {
            format!("the replicas of {name} are as they were")
        } else {
            format!("putting the replicas back failed: {}", undo.summary())
        };
        return Err(Error::failed(format!("{e}; {note}")));
    }
    for old in &retired {
        if let Err(e) = d.remove(old) {
            host.progress
                .warn(format!("could not remove the old replica {old}: {e}"));
        }
    }
    Ok(json!({
        "replicas": want,
        "replaced": done.replaced,
        "added": done.added,
        "removed": done.removed,
        "current": done.current,
    }))
}

fn drain_and_stop(d: &Docker, container: &str, limit: Duration) -> Result<()> {
    crate::update::drain_and_stop(d, container, limit)
}

fn short_suffix() -> String {
    let n = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:04x}", (n ^ std::process::id()) & 0xffff)
}

/// A replica set as `status` shows it: each container with its state, the ones not running
/// named in `degraded`.
pub(crate) fn report(d: &Docker, name: &str) -> Result<Value> {
    let list = members(d, name)?;
    let want = list.iter().map(|m| m.index).max().unwrap_or(1);
    let down: Vec<String> = (1..=want)
        .filter_map(|k| match list.iter().find(|m| m.index == k) {
            Some(m) if m.state == "running" => None,
            Some(m) => Some(format!("{} {}", m.name, m.status.to_lowercase())),
            None => Some(format!(
                "{} missing",
                if k == 1 {
                    name.to_string()
                } else {
                    format!("{name}.{k}")
                }
            )),
        })
        .collect();
    Ok(json!({
        "replicas": want,
        "running": want as usize - down.len(),
        "down": down,
        "containers": list.iter().map(|m| json!({"container": m.name, "state": m.state, "status": m.status})).collect::<Vec<_>>(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn followers_are_name_dot_index() {
        assert_eq!(crate::config::replica_index("web.2", "web"), Some(2));
        assert_eq!(crate::config::replica_index("web.12", "web"), Some(12));
        for other in [
            "web",
            "web.1",
            "web.0",
            "web.02",
            "web.next-2-ab12",
            "web.r3-ab12",
            "web2",
            "webx.2",
        ] {
            assert_eq!(crate::config::replica_index(other, "web"), None, "{other}");
        }
    }

    #[test]
    fn members_are_the_replica_set_only() {
        let ps = "web.3\texited\tExited (137) 2 seconds ago\tabc/r2\n\
                  web.r1-ab12\texited\tExited (0) 1 minute ago\t\n\
                  web\trunning\tUp 5 minutes\t\n\
                  web.next-2-ff00\trunning\tUp 1 second\tabc/r2\n\
                  web.2\trunning\tUp 1 minute\tabc/r2\n";
        let m = parse_members(ps, "web");
        let names: Vec<&str> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["web", "web.2", "web.3"]);
        assert_eq!(m[2].state, "exited");
        assert_eq!(m[1].of, "abc/r2");
    }

    #[test]
    fn a_clone_tar_keeps_owners_links_and_places() {
        let mut src = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o600);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_cksum();
        src.append_data(&mut h, "settings.toml", &b"a=1"[..])
            .unwrap();
        let mut l = tar::Header::new_gnu();
        l.set_entry_type(tar::EntryType::Symlink);
        l.set_size(0);
        l.set_mode(0o777);
        l.set_uid(0);
        l.set_gid(0);
        l.set_mtime(0);
        src.append_link(&mut l, "payload", "/payload").unwrap();
        let src = src.into_inner().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        append_all(&mut b, &src, "fractalic").unwrap();
        let out = b.into_inner().unwrap();
        let mut a = tar::Archive::new(out.as_slice());
        let got: Vec<(String, u64, u32, Option<String>)> = a
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().uid().unwrap(),
                    e.header().mode().unwrap(),
                    e.link_name().unwrap().map(|l| l.display().to_string()),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("fractalic/settings.toml".into(), 1000, 0o600, None),
                (
                    "fractalic/payload".into(),
                    0,
                    0o777,
                    Some("/payload".into())
                )
            ]
        );
    }
}
