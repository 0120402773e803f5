//! Updates of a docker-registry deployment in place or by a new container, rollback, history.
//! The plugin's `update`, `rollback` and `history` entry points call these through host
//! functions (src/plugin/api/releases.rs); a Swarm plugin maps the same entry points onto Swarm's
//! own verbs instead. Every step that changes something is recorded in the run's undo journal
//! first, so a failure or Ctrl-C at any point puts the old release back (docs/updates.md).

use crate::config::DeployConfig;
use crate::docker::{Docker, Refusal, QUICK};
use crate::error::{Error, Result};
use crate::journal::Resource;
use crate::payload::{self, ExtraFile, Owner, PayloadSpec};
use crate::plugin::host::{self, Host};
use crate::progress::Stage;
use crate::release::{self, Changes, History, Manifest, Release, State, HISTORY};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Label naming the deployment a container belongs to (a kept old container keeps it).
pub(crate) const LABEL_DEPLOYMENT: &str = "fractalic-publisher.deployment";
/// How many stopped old containers of a deployment are kept for `rollback`.
pub(crate) const KEEP_CONTAINERS: usize = 2;
/// Seconds an old container gets to finish requests when it is replaced.
const STOP_GRACE: &str = "3";

/// Switches `/payload/<script>` to release `$1`, verified first. With `FP_STDIN_TAR=1` it first
/// unpacks the release from stdin into a clean folder (so copy, check and switch are one
/// `docker exec`). Nothing live changes until the release is proven complete: its manifest
/// (`DIR.sha256`, the payload's last entry, so its presence proves the whole stream arrived) is
/// there and every file matches it (`sha256sum -c`), the main script is a file and the MCP
/// manager answers. Then the staged history becomes the live one, the settings.toml copies
/// go over the live ones (one rename each), and last the live link flips with one rename.
/// Old releases are pruned after that. A release folder without a manifest (made by a version
/// before manifests) is accepted only when it is already in the container (a rollback).
/// Args: DIR SCRIPT MAIN KEEP-DIRS...
const SWITCH_IN: &str = r#"set -e
rel=$1; script=$2; main=$3; shift 3
# Marks a switch in progress, with this shell's pid: a switch-back (a dead run's undo) stops
# it first, so a switch whose docker client was killed but which runs on in the container can
# never flip the link after the switch-back put the old release back. Only one run holds the
# deployment's lock, so a marker left behind is stale.
busy=/payload/.releases/.switching
rm -rf "$busy"; mkdir -p "$busy"; echo $$ >"$busy/pid"; trap 'rm -rf "$busy"' EXIT
cd /payload
h=.releases/history.json
m=".releases/$rel.sha256"
# The history this switch replaces, stamped with the run that made it (FP_RUN): a switch-back
# restores only its own run's copy, never one a finished earlier switch left behind.
rm -f "$h.prev" "$h.prev.run"
if [ -n "${FP_STDIN_TAR:-}" ]; then
  if [ "$(readlink "$script" || true)" = ".releases/$rel" ]; then
    echo "release folder $rel is the live one; it is not overwritten" >&2; exit 3
  fi
  # A folder left by a cut-short run must not lend files to this one.
  rm -rf ".releases/$rel" ".releases/$rel.config" "$m" "$h.next"
  tar -xf - -C / || { echo "copying release $rel into the container failed" >&2; exit 6; }
  if [ ! -f "$m" ] || [ ! -f "$h.next" ]; then
    echo "release $rel did not arrive whole (the copy stopped before its end); nothing was switched" >&2; exit 6
  fi
fi
[ -d ".releases/$rel" ] || { echo "release folder /payload/.releases/$rel is missing" >&2; exit 3; }
if [ -f "$m" ]; then
  bad=$(cd .releases && sha256sum -c "$rel.sha256" 2>&1) || {
    printf '%s\n' "$bad" | grep -v ': OK$' | head -n 3 >&2
    echo "release $rel does not match its manifest; nothing was switched" >&2; exit 7
  }
elif [ -n "${FP_STDIN_TAR:-}" ]; then
  echo "release $rel has no manifest; nothing was switched" >&2; exit 7
fi
[ -f ".releases/$rel/$main" ] || { echo "release $rel has no main script $main; nothing was switched" >&2; exit 4; }
curl -fsS http://localhost:5859/status >/dev/null || { echo "the MCP manager does not answer; nothing was switched" >&2; exit 5; }
c=".releases/$rel.config/settings.toml"
if [ -f "$c" ]; then
  for d in /fractalic ""; do cp -p "$c" "$d/.settings.toml.next"; done
fi
if [ -f "$h.next" ]; then
  if [ -f "$h" ]; then cp -p "$h" "$h.prev"; printf '%s\n' "${FP_RUN:-}" >"$h.prev.run"; fi
  mv -f "$h.next" "$h"
fi
if [ -f "$c" ]; then
  for d in /fractalic ""; do mv -f "$d/.settings.toml.next" "$d/settings.toml"; done
fi
ln -sfn ".releases/$rel" ".$script.next"
mv -T ".$script.next" "$script"
cd .releases
for d in r*; do
  keep=
  for k in "$@"; do
    if [ "$d" = "$k" ] || [ "$d" = "$k.config" ] || [ "$d" = "$k.sha256" ]; then keep=1; fi
  done
  [ -n "$keep" ] || rm -rf "$d"
done
"#;

/// Puts release `$1` back (the undo of [`SWITCH_IN`]), with the history as it was: the copy
/// the switch of run `$3` saved, when that switch got so far (a journal of a version before
/// run stamps gives no `$3`: any saved copy is taken). Args: DIR SCRIPT [RUN].
const SWITCH_BACK: &str = r#"set -e
rel=$1; script=$2; run=${3-}
b=/payload/.releases/.switching
# A switch still running (its run is dead: this is the undo) is stopped and waited for (a
# zombie counts as gone); a marker of an older version (no pid) is waited on for 10 s.
p=$(cat "$b/pid" 2>/dev/null || true)
alive() { [ -d "/proc/$1" ] && [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]; }
i=0
if [ -n "$p" ] && alive "$p"; then
  kill "$p" 2>/dev/null || true
  while alive "$p" && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
  kill -9 "$p" 2>/dev/null || true
  while alive "$p" && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
elif [ -z "$p" ]; then
  while [ -d "$b" ] && [ ! -f "$b/pid" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
fi
rm -rf "$b"
cd /payload
ln -sfn ".releases/$rel" ".$script.back"
mv -T ".$script.back" "$script"
if [ -f ".releases/$rel.config/settings.toml" ]; then
  for d in /fractalic ""; do
    cp -p ".releases/$rel.config/settings.toml" "$d/.settings.toml.back"
    mv -f "$d/.settings.toml.back" "$d/settings.toml"
  done
fi
h=.releases/history.json
# A run killed before its switch began finds the copy an earlier, finished switch left: the
# history it holds is older than the live one, so it stays where it is.
if [ -f "$h.prev" ] && { [ -z "$run" ] || [ "$(cat "$h.prev.run" 2>/dev/null || true)" = "$run" ]; }; then
  mv -f "$h.prev" "$h"; rm -f "$h.prev.run"
fi
rm -f "$h.next"
"#;

/// The readiness exec of a container deployment (the MCP manager's `/status` from inside), run
/// only once the live release of script `$1` is proven complete: it matches its manifest, or,
/// made by a version before manifests, it has a history (which only a finished deploy writes).
/// So a container whose copy was cut short (a killed deploy's, never started by it) is never
/// reported healthy when someone starts it. Args: SCRIPT.
const LIVE_CHECK: &str = r#"cd /payload
l=$(readlink "$1" 2>/dev/null) || l=
case "$l" in
.releases/*)
  r=${l#.releases/}
  if [ -f ".releases/$r.sha256" ]; then
    (cd .releases && sha256sum -c "$r.sha256" >/dev/null 2>&1) || {
      echo "the live release $r of $1 does not match its manifest: its copy never finished; deploy again" >&2; exit 9; }
  elif [ ! -f .releases/history.json ]; then
    echo "the live release $r of $1 has no manifest and no history: its copy never finished; deploy again" >&2; exit 9
  fi;;
esac
exec curl -fsS http://localhost:5859/status
"#;

/// The argv of [`LIVE_CHECK`] for script `script` (the `release_check` host function).
pub(crate) fn live_check_argv(script: &str) -> Vec<String> {
    ["sh", "-c", LIVE_CHECK, "sh", script]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// What an update found: the live release, the new one, and what differs.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub name: String,
    pub history: History,
    /// The new release (outcome filled in when it is applied).
    pub release: Release,
    /// Why a new container is needed (empty: in place).
    pub reasons: Vec<String>,
    owner: Owner,
    running: bool,
    /// The live release folder, if the deployment has the release layout.
    live_dir: Option<String>,
    /// What runs now: the live container's id, image and image digest (its labels).
    live: Value,
    /// The new release's manifest (kept beside its folder, not in the history).
    files: Manifest,
    /// The front proxy: how the deployment is served now, and how it will be.
    pub proxy: ProxyPlan,
}

/// The front-proxy part of an update plan.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProxyPlan {
    /// The live container is served through the proxy.
    pub was: bool,
    /// The new one will be (`--proxy`/`--no-proxy`, else as it was).
    pub will: bool,
    pub domain: Option<String>,
    pub tls: crate::proxy::Tls,
}

impl std::fmt::Debug for UpdateState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateState")
            .field("plan", &self.plan.as_ref().map(|p| &p.release.id))
            .finish()
    }
}

impl Plan {
    /// none, in-place or container.
    pub(crate) fn kind(&self) -> &'static str {
        if self.release.changes.is_empty() && self.reasons.is_empty() {
            "none"
        } else if self.reasons.is_empty() {
            "in-place"
        } else {
            "container"
        }
    }

    /// `{kind, release, changes, lines, reasons, from}` for the plugin and `--json`.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "kind": self.kind(),
            "release": self.release.id,
            "from": self.history.current,
            // Cut to a few names per list (the plugin's engine bounds its maps and arrays; a
            // 100,000-file change would not fit): the full lists reach `--json` through
            // [`plan_changes`].
            "changes": self.release.changes.for_history(),
            "lines": self.release.changes.lines(),
            "reasons": self.reasons,
            "payload_hash": self.release.state.payload_hash,
            "port": self.release.state.port,
            "live": self.live,
            "proxied": self.proxy.will,
            "was_proxied": self.proxy.was,
        })
    }
}

fn cfg_of(host: &Host) -> Result<&DeployConfig> {
    host.deploy()
        .ok_or_else(|| Error::failed("only a deploy can update a deployment"))
}

fn url(bind: &str, port: u16) -> String {
    let host = match bind {
        "" | "0.0.0.0" | "127.0.0.1" | "::" | "::1" => "localhost".to_string(),
        b if b.contains(':') => format!("[{b}]"),
        b => b.to_string(),
    };
    format!("http://{host}:{port}")
}

/// Separates the history from the live release's manifest in [`read_live`]'s output.
const MANIFEST_MARK: &str = "\n=== manifest ===\n";

/// One `docker exec` that reads the history, the payload owner, the live link and the live
/// release's manifest.
fn read_live(d: &Docker, name: &str, script: &str) -> LiveRead {
    let (status, out) = d.exec(
        name,
        &[
            "sh",
            "-c",
            "stat -c '%u %g' /payload; l=$(readlink \"/payload/$1\") || l=; echo \"$l\"; echo ===; cat /payload/.releases/history.json 2>/dev/null || true; printf '\\n=== manifest ===\\n'; [ -z \"$l\" ] || cat \"/payload/$l.config/manifest.json\" 2>/dev/null || true",
            "sh",
            script,
        ],
        QUICK,
    )?;
    if status != Some(0) {
        return Err(Error::failed(format!(
            "cannot read the live release of {name}: {}",
            crate::error::one_line(&out.stderr)
        )));
    }
    let (head, rest) = out.stdout.split_once("===\n").unwrap_or((&out.stdout, ""));
    let (hist, manifest) = rest.rsplit_once(MANIFEST_MARK).unwrap_or((rest, ""));
    let manifest = release::parse_manifest(manifest.as_bytes());
    let mut lines = head.lines();
    let ids: Vec<u64> = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let owner = Owner {
        uid: ids.first().copied().unwrap_or(0),
        gid: ids.get(1).copied().unwrap_or(0),
    };
    let link = lines
        .next()
        .map(str::trim)
        .and_then(|l| l.strip_prefix(".releases/"))
        .map(str::to_string);
    let history = if hist.trim().is_empty() {
        None
    } else {
        Some(History::parse(hist.as_bytes())?)
    };
    Ok((history, owner, link, manifest))
}

fn config_dests(cfg: &DeployConfig) -> Vec<ExtraFile> {
    cfg.config_files
        .iter()
        .flat_map(|c| {
            c.dests.iter().map(|dest| ExtraFile {
                path: (*dest).to_string(),
                contents: c.contents.clone(),
                mode: 0o600,
            })
        })
        .collect()
}

/// Streams the tar of release `dir` into `out` as the folder is read (nothing of it is held
/// in memory); `full` adds what a new container needs (the live link, the config files at
/// their places, /fractalic/payload), `more` the files this step writes beside the release
/// (the history, the release's manifest). Returns what the release holds, hashed on the way.
fn stream_release(
    cfg: &DeployConfig,
    dir: &str,
    owner: Owner,
    full: bool,
    more: &[ExtraFile],
    out: &mut dyn std::io::Write,
) -> Result<Manifest> {
    let mut extra = host::config_copies(cfg, dir);
    if full {
        extra.extend(config_dests(cfg));
    }
    extra.extend(more.iter().cloned());
    let spec = PayloadSpec {
        script_name: &cfg.script_name,
        script_folder: &cfg.script_folder,
        excludes: &cfg.excludes,
        owner,
        extra_files: extra,
        link_fractalic_payload: full,
        main_script: Some(&cfg.main_script),
        release_dir: Some(dir),
        link_script: full,
    };
    let p = payload::build_into(&spec, out)
        .map_err(|e| Error::failed(format!("staging the payload: {e}")))?;
    if !p.main_script_staged {
        return Err(Error::failed(format!(
            "the main script {} was not in the payload (it changed or disappeared while the folder was read)",
            cfg.script_folder.join(&cfg.main_script).display()
        )));
    }
    Ok(p.release_files)
}

/// The release `plan` names, streamed into `out` (see [`stream_release`]), checked to hold
/// the files the plan hashed: a folder edited between the plan and the copy would otherwise go
/// live under the plan's history and manifest.
fn stream_planned(
    cfg: &DeployConfig,
    plan: &Plan,
    full: bool,
    more: &[ExtraFile],
    out: &mut dyn std::io::Write,
) -> Result<()> {
    let files = stream_release(cfg, &plan.release.dir, plan.owner, full, more, out)?;
    if files != plan.files {
        let changed = files
            .iter()
            .find(|(k, v)| plan.files.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .or_else(|| plan.files.keys().find(|k| !files.contains_key(*k)).cloned())
            .unwrap_or_default();
        return Err(Error::failed(format!(
            "the script folder changed while release {} was copied ({changed:?} differs from when the update was planned); deploy again once it is settled",
            plan.release.id
        )));
    }
    Ok(())
}

/// The files an update writes beside its release: `history` at `history_path` and the
/// release's manifest.
fn beside(plan: &Plan, history_path: &str, h: &History) -> Result<Vec<ExtraFile>> {
    Ok(vec![
        ExtraFile {
            path: format!("/{}", history_path.trim_start_matches('/')),
            contents: history_bytes(h)?,
            mode: 0o600,
        },
        ExtraFile {
            path: format!(
                "/{}",
                release::manifest_path(&plan.release.dir).trim_start_matches('/')
            ),
            contents: release::manifest_bytes(&plan.files)?,
            mode: 0o600,
        },
    ])
}

/// `tar` with one more file appended (the archive's end marker moved after it).
fn append_file(mut tar: Vec<u8>, path: &str, contents: &[u8], owner: Owner) -> Result<Vec<u8>> {
    let end = tar.len().saturating_sub(1024);
    if tar.len() < 1024 || tar[end..].iter().any(|b| *b != 0) {
        return Err(Error::failed(
            "the staged payload archive has no end marker",
        ));
    }
    tar.truncate(end);
    let mut b = tar::Builder::new(tar);
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o600);
    h.set_size(contents.len() as u64);
    h.set_uid(owner.uid);
    h.set_gid(owner.gid);
    h.set_mtime(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    b.append_data(&mut h, path.trim_start_matches('/'), contents)
        .and_then(|()| b.into_inner())
        .map_err(|e| Error::failed(format!("staging {path}: {e}")))
}

/// Works out what an update of the deployment `host.deploy()` names would change.
/// `port_given`: the user asked for a port (else the deployment keeps its own).
pub(crate) fn plan(
    host: &Host,
    d: &Docker,
    port_given: bool,
    image_id: &str,
    image_digest: &str,
) -> Result<Plan> {
    let cfg = cfg_of(host)?;
    let name = cfg.name.clone();
    let prefetched = host.with_state(|u: &mut UpdateState| u.prefetch.take());
    let (v, live) = match prefetched {
        Some((v, job)) => (
            v,
            Some(
                job.join()
                    .unwrap_or_else(|_| Err(Error::failed("reading the live release panicked"))),
            ),
        ),
        None => (
            d.container_inspect(&name)?.ok_or_else(|| {
                Error::failed(format!("{name} disappeared while it was being updated"))
            })?,
            None,
        ),
    };
    let labels = v["Config"]["Labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let label = |k: &str| {
        labels
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let running = v["State"]["Running"].as_bool().unwrap_or(false);
    let live_port: u16 = label(host::LABEL_PORT).parse().unwrap_or(0);
    let (history, owner, live_dir, old_files) = if running {
        match live {
            Some(r) => r?,
            None => read_live(d, &name, &cfg.script_name)?,
        }
    } else {
        let h = d.read_file(&name, HISTORY)?;
        let h = h.map(|b| History::parse(&b)).transpose()?;
        let old_files = match h.as_ref().and_then(History::current) {
            Some(c) => d
                .read_file(&name, &release::manifest_path(&c.dir))?
                .and_then(|b| release::parse_manifest(&b)),
            None => None,
        };
        // Stopped: the payload's owner is the image's user, from the container's /etc/passwd.
        let user = v["Config"]["User"].as_str().unwrap_or("");
        let ids = host::user_ids(d, &name, user, None)?;
        let id = |k: &str| ids.get(k).and_then(|v| v.as_int().ok()).unwrap_or(0) as u64;
        (
            h,
            Owner {
                uid: id("uid"),
                gid: id("gid"),
            },
            None,
            old_files,
        )
    };
    let (mut history, old_state, unknown) = match history {
        Some(h) => {
            let s = h.current().map(|r| r.state.clone()).unwrap_or_default();
            (h, s, String::new())
        }
        None => (
            History::default(),
            State::default(),
            "deployed by a version without releases, so what it holds is unknown".to_string(),
        ),
    };
    let seq = history.next_seq();
    let dir = release::dir_name(seq);
    let port = match (port_given, cfg.port) {
        (true, crate::ports::PortRequest::Exact(p) | crate::ports::PortRequest::Preferred(p)) => p,
        _ => live_port,
    };
    // Read and hashed, not kept: the apply streams the folder again and checks it still holds
    // these files (memory does not grow with the payload).
    let files = stream_release(cfg, &dir, owner, false, &[], &mut std::io::sink())?;
    let state = state_of(cfg, &files, image_id, image_digest, port);
    let mut changes = release::diff(&old_state, old_files.as_ref(), &state, Some(&files));
    changes.unknown = unknown;
    if !changes.unknown.is_empty() {
        // Only what can be read from the container itself is compared.
        changes.files_added.clear();
        changes.counts.clear();
        changes.config.clear();
        changes.env_added.clear();
        let live_image = v["Image"].as_str().unwrap_or("").to_string();
        changes.image = (live_image != image_id).then(|| release::FromTo {
            from: live_image,
            to: image_id.to_string(),
        });
        changes.port = (live_port != port).then(|| release::FromTo {
            from: live_port.to_string(),
            to: port.to_string(),
        });
        changes.bind = None;
        changes.script = None;
    }
    let mut reasons = changes.restart_reasons();
    let proxy = proxy_plan(cfg, &label);
    if proxy.was != proxy.will {
        reasons.push(if proxy.will {
            "it moves behind the front proxy (one short gap while its port passes from the container to the proxy)".into()
        } else {
            "it moves off the front proxy to a port of its own (one short gap while the port passes back)".into()
        });
    } else if proxy.will
        && (proxy.domain.as_deref().unwrap_or("") != label(crate::proxy::LABEL_DOMAIN)
            || proxy.tls.as_str()
                != crate::proxy::Tls::parse(&label(crate::proxy::LABEL_TLS))
                    .unwrap_or_default()
                    .as_str())
    {
        reasons.push("its proxy route changes (domain or TLS)".into());
    }
    if !running && !changes.is_empty() {
        reasons.push("the deployment is stopped".into());
    }
    // A live link that is not the history's current release means a run was cut short after
    // its switch: switching again from wherever the link points converges all the same.
    let in_layout = live_dir.as_deref().is_some_and(|l| !l.is_empty());
    if reasons.is_empty() && !changes.is_empty() && !in_layout {
        reasons.push("its payload is not in the release layout (or was switched by a run that did not finish)".into());
    }
    if history.releases.is_empty() && !changes.unknown.is_empty() {
        history.current.clear();
    }
    let kind = if reasons.is_empty() {
        "in-place"
    } else {
        "container"
    };
    let release = history.new_release(kind, None, dir, changes, state);
    let live = json!({
        "container_id": v["Id"].as_str().unwrap_or(""),
        "image": label("fractalic-publisher.image"),
        "image_digest": label("fractalic-publisher.image-digest"),
    });
    Ok(Plan {
        name,
        history,
        release,
        reasons,
        owner,
        running,
        live_dir,
        live,
        files,
        proxy,
    })
}

/// What the front proxy does for the deployment after this update: as asked, else as it is
/// (the domain and TLS mode too).
fn proxy_plan(cfg: &DeployConfig, label: &dyn Fn(&str) -> String) -> ProxyPlan {
    use crate::proxy::{Tls, LABEL_DOMAIN, LABEL_PROXY, LABEL_TLS};
    let was = label(LABEL_PROXY) == "true";
    let will = cfg.proxy.proxy.unwrap_or(was);
    let live_domain = Some(label(LABEL_DOMAIN)).filter(|d| crate::proxy::valid_domain(d));
    let live_tls = Tls::parse(&label(LABEL_TLS)).unwrap_or_default();
    ProxyPlan {
        was,
        will,
        domain: if will {
            cfg.proxy
                .domain
                .clone()
                .or(if was { live_domain } else { None })
        } else {
            None
        },
        tls: if will {
            cfg.proxy
                .tls
                .unwrap_or(if was { live_tls } else { Tls::None })
        } else {
            Tls::None
        },
    }
}

/// The history file's bytes: each release's changes as [`Changes::for_history`] keeps them.
fn history_bytes(h: &History) -> Result<Vec<u8>> {
    let mut h = h.clone();
    for r in &mut h.releases {
        r.changes = r.changes.for_history();
    }
    serde_json::to_vec_pretty(&h).map_err(|e| Error::failed(format!("encoding the history: {e}")))
}

/// Records a failed attempt in the live container's history (best effort: a warning).
fn record_failure(host: &Host, d: &Docker, plan: &Plan, error: &Error) {
    let mut h = plan.history.clone();
    let mut r = plan.release.clone();
    r.outcome = release::ROLLED_BACK.into();
    r.error = crate::error::one_line(&error.to_string());
    h.push(r, false);
    let written = history_bytes(&h).and_then(|b| write_history(d, &plan.name, &b, plan.owner));
    if let Err(e) = written {
        host.progress.warn(format!(
            "could not record the failed update in the history: {e}"
        ));
    }
}

/// Writes the history file into `container` with one `docker cp`.
pub(crate) fn write_history(d: &Docker, container: &str, bytes: &[u8], owner: Owner) -> Result<()> {
    // An empty archive is its end marker alone.
    let tar = append_file(vec![0u8; 1024], HISTORY, bytes, owner)?;
    let dest = format!("{container}:/");
    d.run(&["cp", "-", &dest], Some(tar), QUICK)?;
    Ok(())
}

/// Polls GET `url` until it answers 2xx or `timeout` passes.
fn health_within(url: &str, timeout: Duration) -> Result<()> {
    let end = Instant::now() + timeout;
    loop {
        let last = match crate::health::probe(url, Duration::from_secs(2)) {
            Ok((s, _)) if (200..300).contains(&s) => return Ok(()),
            Ok((s, body)) => format!("HTTP {s}: {}", crate::error::one_line(&body)),
            Err(e) => e,
        };
        if Instant::now() >= end {
            return Err(Error::failed(format!(
                "{url} did not answer healthy: {last}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Applies an in-place plan: copy the release beside the live one, switch with one rename,
/// verify; any failure switches back. Returns `{release, kind, elapsed_ms, ...}`.
pub(crate) fn apply_in_place(host: &Host, d: &Arc<Docker>, plan: &Plan) -> Result<Value> {
    let cfg = cfg_of(host)?;
    let name = plan.name.as_str();
    let t0 = Instant::now();
    let old_dir = plan
        .live_dir
        .clone()
        .ok_or_else(|| Error::failed("no live release to switch from"))?;
    let mut h = plan.history.clone();
    h.push(plan.release.clone(), true);
    let keep = h.keep_dirs();
    let more = beside(plan, &format!("{HISTORY}.next"), &h)?;
    let dir = plan.release.dir.clone();
    let steps = || -> Result<()> {
        let j = host.journal();
        j.record(Resource::DockerObject {
            what: format!("release folder {dir} in {name}"),
            remove_args: [
                "exec",
                "-u",
                "0",
                name,
                "rm",
                "-rf",
                &format!("{}/{dir}", release::RELEASES),
                &format!("{}/{dir}.config", release::RELEASES),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        })?;
        j.record(switch_back(name, &old_dir, &cfg.script_name, j.run_id()))?;
        host.progress.step(
            70,
            Stage::PreparingFiles,
            format!(
                "Copying release {} beside {old_dir} and switching to it (one rename)",
                plan.release.id
            ),
        );
        // One `docker exec -i`: unpack from stdin, switch, check; no `docker cp` beside it.
        let run_env = format!("FP_RUN={}", host.journal().run_id());
        let mut argv = vec![
            "-i",
            "-u",
            "0",
            "-e",
            "FP_STDIN_TAR=1",
            "-e",
            &run_env,
            name,
            "sh",
            "-c",
            SWITCH_IN,
            "sh",
            &dir,
            &cfg.script_name,
            &cfg.main_script,
        ];
        argv.extend(keep.iter().map(String::as_str));
        let mut args = vec!["exec"];
        args.extend(argv);
        // The release streams into the exec as the folder is read; a stream cut short lacks
        // its manifest (the last entry), so the script refuses to switch.
        // A folder that changed on the way fails it even after the switch (the undo switches
        // back); our side's error (a file that shrank, an unreadable one) says more than the
        // script's "manifest missing" that followed it.
        d.stream_into(&args, QUICK, |w| stream_planned(cfg, plan, false, &more, w))
            .map_err(|e| match e {
                Error::Docker { stderr, .. } => Error::failed(format!(
                    "switching {name} to release {} failed: {}",
                    plan.release.id,
                    crate::error::one_line(&stderr)
                )),
                other => other,
            })?;
        host.progress.step(
            90,
            Stage::StartingContainer,
            "Checking /health after the switch",
        );
        let port = plan.release.state.port;
        health_within(
            &format!("{}/health", url(&cfg.bind.to_string(), port)),
            cfg.timeout.min(Duration::from_secs(10)),
        )
    };
    match steps() {
        Ok(()) => {
            host.progress.step(
                100,
                Stage::StartingContainer,
                format!("Release {} is live", plan.release.id),
            );
            Ok(json!({
                "release": plan.release.id,
                "kind": "in-place",
                "restarted": false,
                "elapsed_ms": t0.elapsed().as_millis() as u64,
            }))
        }
        Err(e) => {
            let undo = host.journal().undo();
            if !matches!(e, Error::Interrupted) {
                record_failure(host, d, plan, &e);
            }
            let note = if undo.is_clean() {
                format!(
                    "{name} is back on release {} ({old_dir})",
                    plan.history.current
                )
            } else {
                format!("putting the old release back failed: {}", undo.summary())
            };
            Err(Error::failed(format!("{e}; {note}")))
        }
    }
}

/// The undo of a release switch: the live link of container `name` back to release folder `dir`.
fn switch_back(name: &str, dir: &str, script: &str, run: &str) -> Resource {
    Resource::DockerObject {
        what: format!("{name} switched back to {dir}"),
        remove_args: [
            "exec",
            "-u",
            "0",
            name,
            "sh",
            "-c",
            SWITCH_BACK,
            "sh",
            dir,
            script,
            run,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    }
}

fn free_port(bind: std::net::IpAddr) -> Result<u16> {
    std::net::TcpListener::bind((bind, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::failed(format!("no spare port on {bind}: {e}")))
}

fn short_suffix() -> String {
    let n = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:04x}", (n ^ std::process::id()) & 0xffff)
}

fn spec(plan: &Plan, cfg: &DeployConfig, name: &str, port: u16) -> rhai::Map {
    let mut labels = rhai::Map::new();
    let mut put = |k: &str, v: String| {
        labels.insert(k.into(), v.into());
    };
    put("fractalic-publisher.script", cfg.script_name.clone());
    put("fractalic-publisher.script-path", cfg.script_path());
    put(host::LABEL_PORT, port.to_string());
    put("fractalic-publisher.bind", cfg.bind.to_string());
    put("fractalic-publisher.image", cfg.image.clone());
    put(
        "fractalic-publisher.image-digest",
        plan.release.state.image_digest.clone(),
    );
    put(LABEL_DEPLOYMENT, plan.name.clone());
    put("fractalic-deploy", "true".into());
    if plan.proxy.will {
        put(crate::proxy::LABEL_PROXY, "true".into());
        put(crate::proxy::LABEL_TLS, plan.proxy.tls.as_str().into());
        if let Some(d) = &plan.proxy.domain {
            put(crate::proxy::LABEL_DOMAIN, d.clone());
        }
    }
    let mut m = rhai::Map::new();
    m.insert("name".into(), name.to_string().into());
    m.insert("image".into(), cfg.image.clone().into());
    m.insert("platform".into(), cfg.platform.clone().into());
    m.insert("port".into(), i64::from(port).into());
    m.insert("bind".into(), cfg.bind.to_string().into());
    m.insert("container_port".into(), 8001_i64.into());
    m.insert("restart".into(), "unless-stopped".into());
    m.insert("labels".into(), labels.into());
    if plan.proxy.will {
        m.insert("publish".into(), false.into());
        m.insert("network".into(), crate::proxy::NETWORK.into());
    }
    m
}

/// Streams the planned release (with `more` beside it) into the created container `name`
/// with one `docker cp`, the folder read as it goes.
fn copy_release(
    d: &Docker,
    cfg: &DeployConfig,
    plan: &Plan,
    name: &str,
    more: &[ExtraFile],
) -> Result<()> {
    let dest = format!("{name}:/");
    let args = ["cp", "-", dest.as_str()];
    d.stream_into(&args, QUICK, |w| stream_planned(cfg, plan, true, more, w))
}

/// Creates `name` on `port`, streams the planned release (with `more` beside it) into it and
/// starts it; Ok(false) on a port clash.
fn create_and_start(
    host: &Host,
    d: &Docker,
    plan: &Plan,
    name: &str,
    port: u16,
    more: &[ExtraFile],
) -> Result<bool> {
    let cfg = cfg_of(host)?;
    host::create_container(host, d, &spec(plan, cfg, name, port))?;
    copy_release(d, cfg, plan, name, more)?;
    let wall = SystemTime::now();
    let (status, out) = d.run_unchecked(&["start", name], None, QUICK)?;
    if status == Some(0) {
        host.mark_started(name, wall);
        return Ok(true);
    }
    if out.refusal() == Refusal::PortAllocated {
        return Ok(false);
    }
    Err(Error::Docker {
        argv: d.argv(&["start", name]),
        status,
        stderr: out.stderr,
    })
}

fn ready(
    host: &Host,
    d: &Docker,
    name: &str,
    script: &str,
    bind: &str,
    port: u16,
    secs: i64,
) -> Result<()> {
    ready_at(host, d, name, script, &url(bind, port), secs)
}

/// [`ready`] for a container reached at `base` (a proxied one: its address on the network).
pub(crate) fn ready_at(
    host: &Host,
    d: &Docker,
    name: &str,
    script: &str,
    base: &str,
    secs: i64,
) -> Result<()> {
    let argv = live_check_argv(script);
    let m = host::wait_ready(host, d, name, &format!("{base}/health"), Some(&argv), secs)?;
    let exec = m
        .get("exec")
        .and_then(|e| e.read_lock::<rhai::Map>().map(|e| e.clone()));
    let field = |k: &str| exec.as_ref().and_then(|e| e.get(k).cloned());
    if !field("ok").and_then(|o| o.as_bool().ok()).unwrap_or(false) {
        let why = field("error").map(|e| e.to_string()).unwrap_or_default();
        return Err(Error::failed(format!(
            "the AI server of {name} answers but its live release or MCP manager was not proven within {secs}s ({why})"
        )));
    }
    Ok(())
}

/// Applies a plan that needs a new container: the new one is proven on a spare port first,
/// then the old one is renamed aside and stopped, a second new one takes the deployment's
/// port, and is proven again. Any failure (or Ctrl-C) puts the old one back, running.
pub(crate) fn apply_container(host: &Host, d: &Arc<Docker>, plan: &Plan) -> Result<Value> {
    if plan.proxy.will {
        return apply_container_proxied(host, d, plan);
    }
    let cfg = cfg_of(host)?;
    let name = plan.name.clone();
    let t0 = Instant::now();
    let secs = cfg.timeout.as_secs() as i64;
    let bind = cfg.bind.to_string();
    let port = plan.release.state.port;
    let mut h = plan.history.clone();
    h.push(plan.release.clone(), true);
    let full = beside(plan, HISTORY, &h)?;
    let suffix = short_suffix();
    let next = format!("{name}.next-{suffix}");
    let from = if plan.history.current.is_empty() {
        "r0".to_string()
    } else {
        plan.history.current.clone()
    };
    let aside = format!("{name}.{from}-{suffix}");
    let steps = || -> Result<(Duration, String)> {
        let j = host.journal();
        // 1. The new container on a spare port, proven.
        let mut spare = free_port(cfg.bind)?;
        host.progress.step(
            50,
            Stage::CreatingContainer,
            format!("Starting the new container {next} on spare port {spare}"),
        );
        if !create_and_start(host, d, plan, &next, spare, &full)? {
            if let Some(t) = j.container(&next) {
                j.undo_now(t);
            }
            spare = free_port(cfg.bind)?;
            if !create_and_start(host, d, plan, &next, spare, &full)? {
                return Err(Error::failed(format!(
                    "spare port {spare} was taken twice while starting {next}"
                )));
            }
        }
        host.progress.step(
            60,
            Stage::StartingContainer,
            format!("Waiting for {next} on port {spare}"),
        );
        ready(host, d, &next, &cfg.script_name, &bind, spare, secs)?;
        // 2. The old one aside (still serving), then the final one created on the real port.
        j.record(Resource::DockerObject {
            what: format!("{name} renamed to {aside}"),
            remove_args: vec!["rename".into(), aside.clone(), name.clone()],
        })?;
        d.run(&["rename", &name, &aside], None, QUICK)?;
        if plan.running {
            j.record(Resource::DockerObject {
                what: format!("{aside} stopped"),
                remove_args: vec!["start".into(), aside.clone()],
            })?;
        }
        host.progress.step(
            70,
            Stage::StartingContainer,
            format!("Creating the new {name} on port {port}"),
        );
        let new_id = host::create_container(host, d, &spec(plan, cfg, &name, port))?;
        copy_release(d, cfg, plan, &name, &full)?;
        // 3. The switch: the only downtime is from here until the new one answers.
        host.progress.step(
            75,
            Stage::StartingContainer,
            format!("Stopping the old container (now {aside})"),
        );
        // The old one answers until its stop returns (the image ignores SIGTERM, so through
        // the grace period); the gap is from then until the new one answers.
        // Off the proxy: its route goes (the live name is an unproxied container now), so the
        // proxy lets go of the port the new one publishes. Worked out before the stop: the gap
        // holds one `docker exec` of the proxy, not the reading of Docker's state too.
        let off = if plan.proxy.was {
            host.touch_proxy();
            let p = crate::proxy::Proxy::new(d, crate::proxy::image(None));
            let routes = p.desired_routes()?;
            Some((p, routes))
        } else {
            None
        };
        if plan.running {
            d.run(
                &["stop", "-t", STOP_GRACE, &aside],
                None,
                QUICK + Duration::from_secs(5),
            )?;
        }
        let down = Instant::now();
        if let Some((p, routes)) = off {
            // A proxy removed by hand meanwhile holds no port: rebuilding it is enough.
            if p.apply(&routes).is_err() {
                p.sync()?;
            }
        }
        let wall = SystemTime::now();
        let (status, out) = d.run_unchecked(&["start", &name], None, QUICK)?;
        if status != Some(0) {
            return Err(Error::failed(format!(
                "the new {name} could not start on port {port}: {}",
                crate::error::one_line(&out.stderr)
            )));
        }
        host.mark_started(&name, wall);
        host.progress.step(
            85,
            Stage::StartingContainer,
            format!("Waiting for the new {name} on port {port}"),
        );
        ready(host, d, &name, &cfg.script_name, &bind, port, secs)?;
        let downtime = down.elapsed();
        // 4. The proof container has served its purpose.
        if let Some(t) = j.container(&next) {
            j.undo_now(t);
        }
        Ok((downtime, new_id))
    };
    match steps() {
        Ok((downtime, new_id)) => {
            prune_containers(host, d, &name);
            host.progress.step(
                100,
                Stage::StartingContainer,
                format!(
                    "Release {} is live in a new container; the old one is kept as {aside}",
                    plan.release.id
                ),
            );
            Ok(json!({
                "release": plan.release.id,
                "kind": "container",
                "restarted": true,
                "kept": aside,
                // What runs now: the new container, made from this deploy's image.
                "live": {
                    "container_id": new_id,
                    "image": cfg.image,
                    "image_digest": plan.release.state.image_digest,
                },
                "downtime_ms": downtime.as_millis() as u64,
                "elapsed_ms": t0.elapsed().as_millis() as u64,
            }))
        }
        Err(e) => {
            let undo = host.journal().undo();
            if !matches!(e, Error::Interrupted) && undo.is_clean() {
                record_failure(host, d, plan, &e);
            }
            let note = if undo.is_clean() {
                format!("the old {name} is back on port {port}")
            } else {
                format!("putting the old container back failed: {}", undo.summary())
            };
            Err(Error::failed(format!("{e}; {note}")))
        }
    }
}

/// The owner of `/payload` in `name` (the image's user), for files written beside it.
fn payload_owner(d: &Docker, name: &str) -> Result<Owner> {
    let (_, out) = d.exec(name, &["stat", "-c", "%u %g", "/payload"], QUICK)?;
    let ids: Vec<u64> = out
        .stdout
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    Ok(Owner {
        uid: ids.first().copied().unwrap_or(0),
        gid: ids.get(1).copied().unwrap_or(0),
    })
}

/// Stops a container the proxy no longer routes to, once the requests it was serving are done:
/// polls its TCP table (`/proc/net/tcp*`, readable in any image) until no connection to the AI
/// server's port is established (the proxy closes its idle ones when the old route goes), for
/// at most `limit`, then stops it at once (nothing is left for a grace period to finish).
pub(crate) fn drain_and_stop(d: &Docker, container: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let (status, out) = d.exec(
            container,
            &["cat", "/proc/net/tcp", "/proc/net/tcp6"],
            QUICK,
        )?;
        if status != Some(0) || established_on(&out.stdout, crate::proxy::UPSTREAM_PORT) == 0 {
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    d.run(&["stop", "-t", "0", container], None, QUICK)
        .map(|_| ())
}

/// Established connections whose local port is `port`, in `/proc/net/tcp` text.
fn established_on(table: &str, port: u16) -> usize {
    let want = format!("{port:04X}");
    table
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 3).then(|| (f[1], f[3]))
        })
        .filter(|(local, state)| {
            *state == "01"
                && local
                    .rsplit(':')
                    .next()
                    .is_some_and(|p| p.eq_ignore_ascii_case(&want))
        })
        .count()
}

/// A proxied deployment's new container: started on the proxy network beside the live one,
/// proven healthy at its own address, renamed into place, then the route moves to it in one
/// graceful reload (requests in flight finish on the old one), then the old one is stopped and
/// kept. No port changes hands, so no request fails. A deployment moving behind the proxy has
/// one short gap: from the old one's stop (which frees its port) until the proxy listens.
fn apply_container_proxied(host: &Host, d: &Arc<Docker>, plan: &Plan) -> Result<Value> {
    use crate::proxy::{self, Proxy};
    let cfg = cfg_of(host)?;
    let name = plan.name.clone();
    let t0 = Instant::now();
    let secs = cfg.timeout.as_secs() as i64;
    let port = plan.release.state.port;
    let mut h = plan.history.clone();
    h.push(plan.release.clone(), true);
    // The history and the release's manifest, as an unproxied container update writes them:
    // what `history` names as the files of the release (and what a later in-place update
    // compares with).
    let full = beside(plan, HISTORY, &h)?;
    let suffix = short_suffix();
    let next = format!("{name}.next-{suffix}");
    let from = if plan.history.current.is_empty() {
        "r0".to_string()
    } else {
        plan.history.current.clone()
    };
    let aside = format!("{name}.{from}-{suffix}");
    let p = Proxy::new(d, proxy::image(None));
    host.touch_proxy();
    let steps = || -> Result<Duration> {
        let j = host.journal();
        p.network()?;
        host.progress.step(
            50,
            Stage::CreatingContainer,
            format!("Starting the new container {next} beside {name} on the proxy network"),
        );
        if !create_and_start(host, d, plan, &next, port, &full)? {
            return Err(Error::failed(format!(
                "{next} publishes no port, yet docker reported a port clash starting it"
            )));
        }
        let ip = proxy::container_address(d, &next)?.ok_or_else(|| {
            Error::failed(format!(
                "{next} is not attached to the network {}",
                proxy::NETWORK
            ))
        })?;
        let direct = format!("http://{ip}:{}", proxy::UPSTREAM_PORT);
        host.progress.step(
            60,
            Stage::StartingContainer,
            format!("Waiting for {next} at {direct}"),
        );
        ready_at(host, d, &next, &cfg.script_name, &direct, secs)?;
        // The names move; the route still points at the old one's address meanwhile.
        j.record(Resource::DockerObject {
            what: format!("{name} renamed to {aside}"),
            remove_args: vec!["rename".into(), aside.clone(), name.clone()],
        })?;
        d.run(&["rename", &name, &aside], None, QUICK)?;
        j.record(Resource::DockerObject {
            what: format!("{next} renamed to {name}"),
            remove_args: vec!["rename".into(), name.clone(), next.clone()],
        })?;
        d.run(&["rename", &next, &name], None, QUICK)?;
        if plan.running {
            j.record(Resource::DockerObject {
                what: format!("{aside} stopped"),
                remove_args: vec!["start".into(), aside.clone()],
            })?;
        }
        let mut gap = Duration::ZERO;
        if plan.proxy.was {
            host.progress.step(
                75,
                Stage::StartingContainer,
                format!("Switching the proxy's route to the new {name} (one graceful reload)"),
            );
            p.ensure_up()?;
            if plan.running {
                host.progress.step(
                    85,
                    Stage::StartingContainer,
                    format!("Draining and stopping the old container (now {aside})"),
                );
                drain_and_stop(d, &aside, Duration::from_secs(secs.clamp(1, 600) as u64))?;
            }
        } else {
            host.progress.step(
                75,
                Stage::StartingContainer,
                format!(
                    "Moving port {port} from the old container (now {aside}) to the front proxy"
                ),
            );
            // The proxy runs with every other route before the stop; the gap is the one reload
            // that adds this port once the old container let go of it.
            let routes = p.prepare_move(&name)?;
            if plan.running {
                d.run(
                    &["stop", "-t", STOP_GRACE, &aside],
                    None,
                    QUICK + Duration::from_secs(5),
                )?;
            }
            let down = Instant::now();
            let deadline = down + Duration::from_secs(5);
            // The engine may release the published port a moment after the stop returns.
            while let Err(e) = p.apply(&routes) {
                if Instant::now() >= deadline {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            gap = down.elapsed();
        }
        // The routes were applied just now: what the proxy serves is read back (one exec), not
        // worked out from Docker's state once more.
        let route = p
            .current_routes()?
            .into_iter()
            .find(|r| r.deployment == name)
            .ok_or_else(|| Error::failed(format!("the proxy has no route for {name}")))?;
        if !route.upstreams.iter().any(|u| u.container == name) {
            return Err(Error::failed(format!(
                "the proxy's route for {name} does not lead to the new container"
            )));
        }
        if let (Some(u), proxy::Tls::None) = (route.url(), route.tls) {
            health_within(&format!("{u}/health"), Duration::from_secs(10))?;
        }
        Ok(gap)
    };
    match steps() {
        Ok(downtime) => {
            prune_containers(host, d, &name);
            host.progress.step(
                100, Stage::StartingContainer,
                format!(
                    "Release {} is live in a new container behind the proxy; the old one is kept as {aside}",
                    plan.release.id
                ),
            );
            Ok(json!({
                "release": plan.release.id,
                "kind": "container",
                "restarted": true,
                "kept": aside,
                "downtime_ms": downtime.as_millis() as u64,
                "elapsed_ms": t0.elapsed().as_millis() as u64,
            }))
        }
        Err(e) => {
            let undo = host.journal().undo();
            let synced = p.sync();
            if !matches!(e, Error::Interrupted) && undo.is_clean() {
                record_failure(host, d, plan, &e);
            }
            let note = match (undo.is_clean(), synced) {
                (true, Ok(_)) => format!("the old {name} serves again through the proxy"),
                (true, Err(s)) => {
                    format!("the old {name} is back, but re-syncing the proxy's routes failed: {s}")
                }
                (false, _) => format!("putting the old container back failed: {}", undo.summary()),
            };
            Err(Error::failed(format!("{e}; {note}")))
        }
    }
}

/// Puts a deployment back together after an update or rollback that was killed (SIGKILL)
/// half-way: proof containers (`NAME.next-*`) are removed, and when `name` is missing or not
/// running while one of its renamed old containers runs (the live one, renamed aside by the
/// cut-short run), an unstarted `name` is removed and that one renamed back. Returns what it
/// did (nothing, normally: one `docker ps`). The task containers of a Swarm service of that
/// name (docker-swarm labels them too) are Swarm's, never touched.
pub(crate) fn recover(d: &Docker, name: &str) -> Result<Vec<String>> {
    let filter = format!("label={LABEL_DEPLOYMENT}={name}");
    let out = d.run(
        &[
            "ps",
            "-a",
            "--filter",
            &filter,
            "--format",
            "{{.Names}}\t{{.State}}\t{{.Label \"com.docker.swarm.task.id\"}}",
        ],
        None,
        QUICK,
    )?;
    let rows: Vec<(String, String)> = out
        .stdout
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (n, st, task) = (f.next()?, f.next()?, f.next().unwrap_or(""));
            task.trim()
                .is_empty()
                .then(|| (n.trim().to_string(), st.trim().to_string()))
        })
        .collect();
    let mut done = Vec::new();
    for (n, _) in rows
        .iter()
        .filter(|(n, _)| n.starts_with(&format!("{name}.next-")))
    {
        d.remove(n)?;
        done.push(format!(
            "removed the proof container {n} of an update that was cut short"
        ));
    }
    let live = rows.iter().find(|(n, _)| n == name);
    let live_running = live.is_some_and(|(_, st)| st == "running");
    // Replicas (`NAME.2` ..) run beside the live one: they are not renamed-aside releases.
    let aside_running = rows.iter().find(|(n, st)| {
        n != name
            && !n.contains(".next-")
            && crate::config::replica_index(n, name).is_none()
            && st == "running"
    });
    if let (false, Some((aside, _))) = (live_running, aside_running) {
        if live.is_some() {
            d.remove(name)?;
            done.push(format!(
                "removed the unproven new {name} of an update that was cut short"
            ));
        }
        d.run(&["rename", aside, name], None, QUICK)?;
        done.push(format!("renamed {aside} (still serving) back to {name}"));
    } else if live.is_some_and(|(_, st)| st == "created") {
        // Created but never started: the new container of an update killed between stopping
        // the old one and starting it. The old one is the aside stopped last.
        let mut last: Option<(String, String)> = None;
        for (n, _) in rows.iter().filter(|(n, _)| {
            n != name && !n.contains(".next-") && crate::config::replica_index(n, name).is_none()
        }) {
            if let Some(v) = d.container_inspect(n)? {
                let at = v["State"]["FinishedAt"].as_str().unwrap_or("").to_string();
                if last.as_ref().is_none_or(|(_, t)| at > *t) {
                    last = Some((n.clone(), at));
                }
            }
        }
        if let Some((aside, _)) = last {
            d.remove(name)?;
            d.run(&["rename", &aside, name], None, QUICK)?;
            d.run(&["start", name], None, QUICK)?;
            done.push(format!(
                "removed the never-started new {name} of an update that was cut short, renamed {aside} back to {name} and started it"
            ));
        }
    }
    Ok(done)
}

/// Kept (stopped, renamed) old containers of `name`, newest first.
fn kept_containers(d: &Docker, name: &str) -> Result<Vec<String>> {
    let filter = format!("label={LABEL_DEPLOYMENT}={name}");
    let out = d.run(
        &["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"],
        None,
        QUICK,
    )?;
    // docker ps lists newest first.
    Ok(out
        .stdout
        .lines()
        .map(str::trim)
        .filter(|n| {
            !n.is_empty()
                && *n != name
                && !n.contains(".next-")
                && crate::config::replica_index(n, name).is_none()
        })
        .map(str::to_string)
        .collect())
}

/// Removes kept containers beyond [`KEEP_CONTAINERS`] (a failure is a warning).
fn prune_containers(host: &Host, d: &Docker, name: &str) {
    match kept_containers(d, name) {
        Ok(kept) => {
            for old in kept.iter().skip(KEEP_CONTAINERS) {
                if let Err(e) = d.remove(old) {
                    host.progress
                        .warn(format!("could not remove the old container {old}: {e}"));
                }
            }
        }
        Err(e) => host
            .progress
            .warn(format!("could not list the kept containers of {name}: {e}")),
    }
}

/// The history as `history` shows it: config files and environment keys are listed, but not
/// the hashes of their contents (a hash of a short secret can be guessed back).
pub(crate) fn history_public(h: &History) -> Value {
    let mut v = serde_json::to_value(h).unwrap_or_default();
    for r in v["releases"].as_array_mut().into_iter().flatten() {
        for k in ["env", "config"] {
            if let Some(m) = r["state"][k].as_object_mut() {
                for val in m.values_mut() {
                    *val = Value::String("set".into());
                }
            }
        }
    }
    v
}

/// `history NAME`: the live container's release history.
pub(crate) fn history(d: &Docker, name: &str) -> Result<History> {
    match d.read_file(name, HISTORY)? {
        Some(b) => History::parse(&b),
        None => Err(Error::NotFound {
            what: format!("deployment {name} has no release history"),
            hint: "it was deployed by a version without releases; the next `deploy` starts one"
                .into(),
        }),
    }
}

/// `rollback NAME [--to R]`: back to the previous (or the given) release: in place when the
/// release folder is still in the container and nothing else differs, else by swapping in the
/// kept container that ran it.
pub(crate) fn rollback(
    host: &Host,
    d: &Arc<Docker>,
    name: &str,
    to: Option<&str>,
    secs: i64,
) -> Result<Value> {
    let h = history(d, name)?;
    let cur = h
        .current()
        .cloned()
        .ok_or_else(|| Error::failed(format!("the history of {name} names no live release")))?;
    let target = match to {
        Some(t) => h.find(t).cloned().ok_or_else(|| {
            Error::input(
                format!("--to {t}: {name} has no release {t}"),
                format!("see `fractalic-publisher history {name}` for its releases"),
            )
        })?,
        None => h.previous().cloned().ok_or_else(|| {
            Error::input(
                format!("{name} has no earlier release to go back to"),
                format!("see `fractalic-publisher history {name}`"),
            )
        })?,
    };
    if !target.good() {
        return Err(Error::input(
            format!(
                "release {} never went live (its update was rolled back)",
                target.id
            ),
            "choose another release with --to",
        ));
    }
    let same_container = {
        let (a, b) = (&cur.state, &target.state);
        let starts = |s: &State| {
            s.config
                .iter()
                .filter(|(k, _)| !release::READ_PER_REQUEST.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>()
        };
        a.image_id == b.image_id
            && a.env == b.env
            && a.port == b.port
            && a.bind == b.bind
            && a.script_name == b.script_name
            && starts(a) == starts(b)
    };
    let mut new_h = h.clone();
    let changes = {
        // The two manifests, when they are still kept beside their release folders.
        let read = |dir: &str| -> Result<Option<Manifest>> {
            Ok(d.read_file(name, &release::manifest_path(dir))?
                .and_then(|b| release::parse_manifest(&b)))
        };
        let (a, b) = if cur.state.payload_hash == target.state.payload_hash {
            (None, None)
        } else {
            (read(&cur.dir)?, read(&target.dir)?)
        };
        release::diff(&cur.state, a.as_ref(), &target.state, b.as_ref())
    };
    let entry = h.new_release(
        "rollback",
        Some(target.id.clone()),
        target.dir.clone(),
        changes,
        target.state.clone(),
    );
    new_h.push(entry.clone(), true);
    let bytes = history_bytes(&new_h)?;
    let v = d.container_inspect(name)?.unwrap_or(Value::Null);
    let running = v["State"]["Running"].as_bool().unwrap_or(false);
    let dir_there = running
        && d.exec(
            name,
            &[
                "test",
                "-d",
                &format!("{}/{}", release::RELEASES, target.dir),
            ],
            QUICK,
        )?
        .0 == Some(0);
    let bind = cur.state.bind.clone();
    if same_container && dir_there {
        host.progress.step(
            30,
            Stage::PreparingFiles,
            format!("Switching {name} back to {} in place", target.id),
        );
        let (_, owner_out) = d.exec(name, &["stat", "-c", "%u %g", "/payload"], QUICK)?;
        let ids: Vec<u64> = owner_out
            .stdout
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        let owner = Owner {
            uid: ids.first().copied().unwrap_or(0),
            gid: ids.get(1).copied().unwrap_or(0),
        };
        let mut empty = Vec::new();
        empty.extend_from_slice(&[0u8; 1024]);
        let tar = append_file(empty, &format!("{HISTORY}.next"), &bytes, owner)?;
        let j = host.journal();
        j.record(switch_back(
            name,
            &cur.dir,
            &cur.state.script_name,
            j.run_id(),
        ))?;
        let steps = || -> Result<()> {
            d.run(&["cp", "-", &format!("{name}:/")], Some(tar), QUICK)?;
            let keep = new_h.keep_dirs();
            let run_env = format!("FP_RUN={}", j.run_id());
            let mut args = vec![
                "exec",
                "-u",
                "0",
                "-e",
                &run_env,
                name,
                "sh",
                "-c",
                SWITCH_IN,
                "sh",
                &target.dir,
                &target.state.script_name,
                &target.state.main_script,
            ];
            args.extend(keep.iter().map(String::as_str));
            let (status, out) = d.run_unchecked(&args, None, QUICK)?;
            if status != Some(0) {
                return Err(Error::failed(format!(
                    "switching {name} to {} failed: {}",
                    target.dir,
                    crate::error::one_line(&out.stderr)
                )));
            }
            health_within(
                &format!("{}/health", url(&bind, cur.state.port)),
                Duration::from_secs(secs.clamp(1, 60) as u64),
            )
        };
        return match steps() {
            Ok(()) => Ok(
                json!({"name": name, "release": entry.id, "of": target.id, "kind": "in-place", "restarted": false}),
            ),
            Err(e) => {
                let undo = j.undo();
                Err(Error::failed(format!(
                    "{e}; {}",
                    if undo.is_clean() {
                        format!("{name} stays on {}", cur.id)
                    } else {
                        undo.summary()
                    }
                )))
            }
        };
    }
    // A kept container that ran the target release.
    let mut found = None;
    for k in kept_containers(d, name)? {
        if let Some(b) = d.read_file(&k, HISTORY)? {
            if let Ok(kh) = History::parse(&b) {
                if kh
                    .current()
                    .is_some_and(|c| c.dir == target.dir && c.state == target.state)
                {
                    found = Some(k);
                    break;
                }
            }
        }
    }
    let Some(kept) = found else {
        return Err(Error::input(
            format!("release {} of {name} is no longer kept", target.id),
            format!("its folder is gone from the container and no kept container ran it; deploy that version again, or choose another with --to (see `fractalic-publisher history {name}`)"),
        ));
    };
    host.progress.step(
        30,
        Stage::StartingContainer,
        format!(
            "Swapping in the kept container {kept} (release {})",
            target.id
        ),
    );
    let aside = format!("{name}.{}-{}", cur.id, short_suffix());
    let j = host.journal();
    let port: u16 = target.state.port;
    let proxied = |c: &str| -> Result<bool> {
        Ok(d.container_inspect(c)?.is_some_and(|v| {
            v["Config"]["Labels"][crate::proxy::LABEL_PROXY].as_str() == Some("true")
        }))
    };
    if proxied(name)? && proxied(&kept)? {
        // Behind the proxy no port changes hands: the kept one starts beside the live one, is
        // proven at its own address, and the route moves to it in one graceful reload.
        let p = crate::proxy::Proxy::new(d, crate::proxy::image(None));
        host.touch_proxy();
        let steps = || -> Result<()> {
            j.record(Resource::DockerObject {
                what: format!("{kept} started"),
                remove_args: vec!["stop".into(), "-t".into(), "1".into(), kept.clone()],
            })?;
            let wall = SystemTime::now();
            d.run(&["start", &kept], None, QUICK)?;
            host.mark_started(&kept, wall);
            let ip = crate::proxy::container_address(d, &kept)?.ok_or_else(|| {
                Error::failed(format!(
                    "{kept} is not attached to {}",
                    crate::proxy::NETWORK
                ))
            })?;
            ready_at(
                host,
                d,
                &kept,
                &target.state.script_name,
                &format!("http://{ip}:{}", crate::proxy::UPSTREAM_PORT),
                secs,
            )?;
            j.record(Resource::DockerObject {
                what: format!("{name} renamed to {aside}"),
                remove_args: vec!["rename".into(), aside.clone(), name.to_string()],
            })?;
            d.run(&["rename", name, &aside], None, QUICK)?;
            j.record(Resource::DockerObject {
                what: format!("{kept} renamed to {name}"),
                remove_args: vec!["rename".into(), name.to_string(), kept.clone()],
            })?;
            d.run(&["rename", &kept, name], None, QUICK)?;
            host.progress.step(
                70,
                Stage::StartingContainer,
                format!(
                    "Switching the proxy's route to {name} (was {kept}) in one graceful reload"
                ),
            );
            p.ensure_up()?;
            if running {
                j.record(Resource::DockerObject {
                    what: format!("{aside} stopped"),
                    remove_args: vec!["start".into(), aside.clone()],
                })?;
                drain_and_stop(d, &aside, Duration::from_secs(secs.clamp(1, 600) as u64))?;
            }
            write_history(d, name, &bytes, payload_owner(d, name)?)
        };
        return match steps() {
            Ok(()) => Ok(
                json!({"name": name, "release": entry.id, "of": target.id, "kind": "container", "restarted": true, "kept": aside}),
            ),
            Err(e) => {
                let undo = j.undo();
                let _ = p.sync();
                Err(Error::failed(format!(
                    "{e}; {}",
                    if undo.is_clean() {
                        format!("{name} stays on {}", cur.id)
                    } else {
                        undo.summary()
                    }
                )))
            }
        };
    }
    let steps = || -> Result<()> {
        j.record(Resource::DockerObject {
            what: format!("{name} renamed to {aside}"),
            remove_args: vec!["rename".into(), aside.clone(), name.to_string()],
        })?;
        d.run(&["rename", name, &aside], None, QUICK)?;
        if running {
            j.record(Resource::DockerObject {
                what: format!("{aside} stopped"),
                remove_args: vec!["start".into(), aside.clone()],
            })?;
        }
        j.record(Resource::DockerObject {
            what: format!("{kept} renamed to {name}"),
            remove_args: vec!["rename".into(), name.to_string(), kept.clone()],
        })?;
        d.run(&["rename", &kept, name], None, QUICK)?;
        j.record(Resource::DockerObject {
            what: format!("{name} ({kept}) started"),
            remove_args: vec!["stop".into(), "-t".into(), "1".into(), name.to_string()],
        })?;
        if running {
            d.run(
                &["stop", "-t", STOP_GRACE, &aside],
                None,
                QUICK + Duration::from_secs(5),
            )?;
        }
        let wall = SystemTime::now();
        d.run(&["start", name], None, QUICK)?;
        host.mark_started(name, wall);
        ready(
            host,
            d,
            name,
            &target.state.script_name,
            &target.state.bind,
            port,
            secs,
        )?;
        write_history(d, name, &bytes, payload_owner(d, name)?)
    };
    match steps() {
        Ok(()) => Ok(
            json!({"name": name, "release": entry.id, "of": target.id, "kind": "container", "restarted": true, "kept": aside}),
        ),
        Err(e) => {
            let undo = j.undo();
            Err(Error::failed(format!(
                "{e}; {}",
                if undo.is_clean() {
                    format!("{name} stays on {}", cur.id)
                } else {
                    undo.summary()
                }
            )))
        }
    }
}

/// Per-run update state, kept on the host ([`Host::with_state`]): the plan an update works
/// from and the reads begun early.
#[derive(Default)]
struct UpdateState {
    plan: Option<Plan>,
    /// The deployment's `docker inspect` and the read of its live release, begun as soon as
    /// the deploy knew it would update (beside the plugin's image pull).
    prefetch: Option<(Value, std::thread::JoinHandle<LiveRead>)>,
    /// The history write of a first deploy, running beside the readiness wait.
    recording: Option<std::thread::JoinHandle<Result<()>>>,
    /// The read of the live release begun beside the deploy's `docker inspect`.
    early: Option<std::thread::JoinHandle<LiveRead>>,
}

type LiveRead = Result<(Option<History>, Owner, Option<String>, Option<Manifest>)>;

/// Begins reading the live release of `name` (one `docker exec`) on its own thread, and keeps
/// `inspect` for the plan: called by the deploy when it knows it will update.
pub(crate) fn prefetch(host: &Host, d: &Arc<Docker>, name: &str, inspect: Value) {
    let Some(cfg) = host.deploy() else { return };
    let early = host.with_state(|u: &mut UpdateState| u.early.take());
    if inspect["State"]["Running"].as_bool() != Some(true) {
        return;
    }
    let job = early.unwrap_or_else(|| {
        let (d, name, script) = (Arc::clone(d), name.to_string(), cfg.script_name.clone());
        std::thread::spawn(move || read_live(&d, &name, &script))
    });
    host.with_state(|u: &mut UpdateState| u.prefetch = Some((inspect, job)));
}

/// Begins reading the live release of the deploy's name before it is known to exist (beside
/// the deploy's `docker inspect`, so an update does not wait for one and then the other); a
/// fresh deploy's read fails at once and is dropped.
pub(crate) fn read_early(host: &Host, d: &Arc<Docker>) {
    let Some(cfg) = host.deploy() else { return };
    let (d, name, script) = (Arc::clone(d), cfg.name.clone(), cfg.script_name.clone());
    let job = std::thread::spawn(move || read_live(&d, &name, &script));
    host.with_state(|u: &mut UpdateState| u.early = Some(job));
}

/// Writes the history of a first deploy (release r1) into `container`.
pub(crate) fn record_first(
    host: &Host,
    d: &Arc<Docker>,
    container: &str,
    image_id: &str,
    image_digest: &str,
    port: u16,
) -> Result<String> {
    let cfg = cfg_of(host)?;
    let Some(host::Staged { dir, files, owner }) = host.staged() else {
        return Err(Error::failed(
            "record_release: copy_payload has not staged a release",
        ));
    };
    let state = state_of(cfg, &files, image_id, image_digest, port);
    let manifest = (
        release::manifest_path(&dir),
        release::manifest_bytes(&files)?,
    );
    let mut h = History::default();
    let r = h.new_release("initial", None, dir, Changes::default(), state);
    h.push(r, true);
    // Written beside the readiness wait (its own thread); the deploy waits for it at its end.
    let bytes = history_bytes(&h)?;
    let (d, c) = (Arc::clone(d), container.to_string());
    let job = std::thread::spawn(move || {
        let tar = append_file(vec![0u8; 1024], HISTORY, &bytes, owner)?;
        let tar = append_file(tar, &manifest.0, &manifest.1, owner)?;
        d.run(&["cp", "-", &format!("{c}:/")], Some(tar), QUICK)?;
        Ok(())
    });
    host.with_state(|u: &mut UpdateState| u.recording = Some(job));
    Ok(h.current)
}

/// Waits for the history write `record_release` began (if any): an error when it failed.
pub(crate) fn finish_record(host: &Host) -> Result<()> {
    let job = host.with_state(|u: &mut UpdateState| u.recording.take());
    match job {
        None => Ok(()),
        Some(j) => j
            .join()
            .unwrap_or_else(|_| Err(Error::failed("writing the release history panicked"))),
    }
}

/// Stores the plan of this run's update.
/// The full changes of this run's update plan (every name), for the deploy's `--json`.
pub(crate) fn plan_changes(host: &Host) -> Option<Value> {
    host.with_state(|u: &mut UpdateState| {
        u.plan
            .as_ref()
            .and_then(|p| serde_json::to_value(&p.release.changes).ok())
    })
}

pub(crate) fn set_plan(host: &Host, plan: Plan) {
    host.with_state(|u: &mut UpdateState| u.plan = Some(plan));
}

/// The plan of this run's update.
pub(crate) fn the_plan(host: &Host) -> Result<Plan> {
    host.with_state(|u: &mut UpdateState| u.plan.clone())
        .ok_or_else(|| Error::failed("update_plan must run before the update is applied"))
}

/// `history NAME` as text: one line per release, newest last.
pub(crate) fn render_history(v: &Value) -> String {
    let mut o = format!(
        "{:<5} {:<20} {:<10} {:<14} {:<14} {:<12} CHANGES\n",
        "", "TIME", "KIND", "PAYLOAD", "IMAGE", "OUTCOME"
    );
    let current = v["current"].as_str().unwrap_or("");
    for r in v["releases"].as_array().into_iter().flatten() {
        let id = r["id"].as_str().unwrap_or("");
        let mark = if id == current { "*" } else { " " };
        let short = |s: &str| {
            s.strip_prefix("sha256:")
                .unwrap_or(s)
                .chars()
                .take(12)
                .collect::<String>()
        };
        let changes: Changes = serde_json::from_value(r["changes"].clone()).unwrap_or_default();
        let mut what = changes.lines().join("; ");
        if let Some(of) = r["of"].as_str() {
            what = format!("back to {of}; {what}");
        }
        if what.is_empty() {
            what = "-".into();
        }
        let mut outcome = r["outcome"].as_str().unwrap_or("").to_string();
        if let Some(e) = r["error"].as_str().filter(|e| !e.is_empty()) {
            what = format!("{what} (error: {e})");
        }
        if outcome.is_empty() {
            outcome = "?".into();
        }
        let image = r["state"]["image_digest"]
            .as_str()
            .filter(|d| !d.is_empty())
            .or_else(|| r["state"]["image_id"].as_str())
            .unwrap_or("");
        o.push_str(&format!(
            "{mark}{id:<4} {:<20} {:<10} {:<14} {:<14} {:<12} {what}\n",
            r["time"].as_str().unwrap_or(""),
            r["kind"].as_str().unwrap_or(""),
            short(r["state"]["payload_hash"].as_str().unwrap_or("")),
            short(image),
            outcome,
        ));
    }
    o
}

/// What a release is made of: the staged payload's manifest, the config and environment
/// hashes, the image and where it is published.
fn state_of(
    cfg: &DeployConfig,
    files: &Manifest,
    image_id: &str,
    image_digest: &str,
    port: u16,
) -> State {
    let (config, env) = release::config_hashes(cfg);
    State {
        payload_hash: release::payload_hash(files),
        file_count: files.len(),
        config,
        env,
        image: cfg.image.clone(),
        image_id: image_id.to_string(),
        image_digest: image_digest.to_string(),
        port,
        bind: cfg.bind.to_string(),
        script_name: cfg.script_name.clone(),
        main_script: cfg.main_script.clone(),
    }
}

#[cfg(test)]
mod drain_tests {
    #[test]
    fn counts_established_connections_on_the_port() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F41 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1
   1: 0200A8C0:1F41 0100A8C0:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 2 1
   2: 0200A8C0:1F41 0100A8C0:D2F2 06 00000000:00000000 00:00000000 00000000  1000        0 3 1
   3: 0200A8C0:9C40 0100A8C0:1F41 01 00000000:00000000 00:00000000 00000000  1000        0 4 1
";
        assert_eq!(super::established_on(t, 8001), 1);
        assert_eq!(super::established_on("", 8001), 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::host::Host;
    use crate::progress::Progress;

    /// A history of `n` releases of a folder of `files` files, each update changing all.
    fn big_history(n: u64, files: usize) -> History {
        let mut h = History::default();
        let mut old: Option<(State, Manifest)> = None;
        for seq in 1..=n {
            let m: Manifest = (0..files)
                .map(|i| {
                    (
                        format!("dir{}/file{i:06}.md", i % 100),
                        format!("sha256:{seq} 644"),
                    )
                })
                .collect();
            let state = State {
                payload_hash: release::payload_hash(&m),
                file_count: m.len(),
                ..State::default()
            };
            let changes = match &old {
                Some((s, om)) => release::diff(s, Some(om), &state, Some(&m)),
                None => Changes::default(),
            };
            h.releases.push(Release {
                id: format!("r{seq}"),
                seq,
                dir: release::dir_name(seq),
                time: String::new(),
                kind: "in-place".into(),
                of: None,
                outcome: "ok".into(),
                error: String::new(),
                changes,
                state: state.clone(),
            });
            h.current = format!("r{seq}");
            old = Some((state, m));
        }
        h
    }

    #[test]
    fn a_history_of_100000_files_and_10_releases_reaches_the_plugin() {
        let h = big_history(10, 100_000);
        let bytes = history_bytes(&h).unwrap();
        assert!(
            bytes.len() < 200_000,
            "history.json is {} bytes",
            bytes.len()
        );
        let back = History::parse(&bytes).unwrap();
        assert_eq!(back.releases[9].changes.counts["files_changed"], 100_000);
        assert_eq!(back.releases[9].state.file_count, 100_000);
        // What `release_history` gives the plugin, under the plugin engine's limits.
        let v = rhai::serde::to_dynamic(history_public(&back)).unwrap();
        let host = Arc::new(Host::new(Progress::silent(), None));
        let mut engine = crate::plugin::engine(&host);
        engine.register_fn("hist", move || v.clone());
        let n: i64 = engine
            .eval("let h = hist(); h.releases.len() + h.releases[9].changes.files_changed.len()")
            .unwrap();
        assert_eq!(n, 10 + release::NAMES_KEPT as i64);
        // The limit is real: a per-file map of 10,001 entries is refused.
        let big: rhai::Map = (0..10_001)
            .map(|i| (format!("f{i}").into(), rhai::Dynamic::from(1_i64)))
            .collect();
        let mut engine = crate::plugin::engine(&host);
        engine.register_fn("big", move || big.clone());
        let e = engine.eval::<i64>("let m = big(); m.len()").unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
    }
}
