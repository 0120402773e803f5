//! Releases of a deployment: what one is made of (one hash over its payload files, config file
//! and environment hashes, image, port, bind), what changed between two, and the history kept
//! inside the container at `/payload/.releases/history.json` (Docker holds all state).
//! A release's per-file manifest is not in the history (it grows with the folder: 100,000
//! files made the history too large to read): it is kept beside the release's folder, at
//! [`manifest_path`], and read only to work out which files an update changes. The history
//! holds at most [`NAMES_KEPT`] names per list of changes, and counts.
//! Values of secrets never appear here: only SHA-256 hashes, in 0600 files.

use crate::config::DeployConfig;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Where releases live inside the container.
pub(crate) const RELEASES: &str = "/payload/.releases";
/// The history file inside the container.
pub(crate) const HISTORY: &str = "/payload/.releases/history.json";
/// How many payload releases are kept in the container (the live one included).
pub(crate) const KEEP: usize = 5;
/// Config files the AI server reads on every request (changed in place, no restart).
pub(crate) const READ_PER_REQUEST: &[&str] = &["settings.toml"];

/// `sha256:HEX` of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A release's payload files relative to the script folder: `sha256:HEX mode` or
/// `link -> TARGET`. Kept at [`manifest_path`], never in the history.
pub(crate) type Manifest = BTreeMap<String, String>;

/// Names kept per list of changes in the history (the rest are counted).
pub(crate) const NAMES_KEPT: usize = 20;

/// Where release `dir`'s manifest is kept in the container: in its config folder, which is
/// kept and pruned with the release folder.
pub(crate) fn manifest_path(dir: &str) -> String {
    format!("{RELEASES}/{dir}.config/manifest.json")
}

/// A manifest as the bytes of its file.
pub(crate) fn manifest_bytes(files: &Manifest) -> Result<Vec<u8>> {
    serde_json::to_vec(files).map_err(|e| Error::failed(format!("encoding a manifest: {e}")))
}

/// A manifest file's bytes; None when they are not one (then file changes are not named).
pub(crate) fn parse_manifest(bytes: &[u8]) -> Option<Manifest> {
    serde_json::from_slice(bytes).ok()
}

/// What a release is made of.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct State {
    /// One hash over the payload's [`Manifest`].
    pub payload_hash: String,
    /// How many entries the manifest has.
    #[serde(default)]
    pub file_count: usize,
    /// Config file name -> hash of its contents.
    pub config: BTreeMap<String, String>,
    /// Environment key -> hash of `KEY=VALUE`.
    pub env: BTreeMap<String, String>,
    pub image: String,
    /// The image's id (what a container runs); compared for "image changed".
    pub image_id: String,
    pub image_digest: String,
    pub port: u16,
    pub bind: String,
    pub script_name: String,
    pub main_script: String,
}

/// One release in the history. `S`: what the platform records a release is made of, `C`: what
/// changed from the release before (docker-registry: [`State`] and [`Changes`]; docker-swarm
/// keeps its own maps, as its plugin builds them, through the `history_*` host functions).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Release<S = State, C = Changes> {
    /// `r<seq>`.
    pub id: String,
    pub seq: u64,
    /// Its folder under [`RELEASES`] (docker-registry; a platform whose releases are images has
    /// none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dir: String,
    /// When it was made (UTC, RFC 3339).
    pub time: String,
    /// initial, in-place, container, update, rollback.
    pub kind: String,
    /// For a rollback: the release it went back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of: Option<String>,
    /// ok, or rolled back (the update failed, or was interrupted, and the release before was
    /// put back).
    pub outcome: String,
    /// Why, when it was rolled back.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    pub changes: C,
    pub state: S,
}

/// The outcome of a release that never went live, or was undone.
pub(crate) const ROLLED_BACK: &str = "rolled back";

impl<S, C> Release<S, C> {
    /// Served until it was replaced: not rolled back.
    pub(crate) fn good(&self) -> bool {
        self.outcome != ROLLED_BACK
    }
}

/// All releases of a deployment, oldest first, and which one is live.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct History<S = State, C = Changes> {
    pub current: String,
    pub releases: Vec<Release<S, C>>,
}

impl<S, C> Default for History<S, C> {
    fn default() -> Self {
        History {
            current: String::new(),
            releases: Vec::new(),
        }
    }
}

/// The kinds of release a history may hold (both platforms').
pub(crate) const KINDS: &[&str] = &["initial", "in-place", "container", "update", "rollback"];

/// How many releases a history kept in a size-limited place holds (docker-swarm's service
/// label); the live one is never trimmed.
pub(crate) const HISTORY_MAX: usize = 10;

impl<S, C> History<S, C> {
    /// The live release.
    pub(crate) fn current(&self) -> Option<&Release<S, C>> {
        self.releases.iter().find(|r| r.id == self.current)
    }

    /// The next sequence number.
    pub(crate) fn next_seq(&self) -> u64 {
        self.releases.iter().map(|r| r.seq).max().unwrap_or(0) + 1
    }

    /// A new release after the newest: `r<next seq>`, made now, outcome ok.
    pub(crate) fn new_release(
        &self,
        kind: &str,
        of: Option<String>,
        dir: String,
        changes: C,
        state: S,
    ) -> Release<S, C> {
        let seq = self.next_seq();
        Release {
            id: format!("r{seq}"),
            seq,
            dir,
            time: crate::clock::now_utc(),
            kind: kind.to_string(),
            of,
            outcome: "ok".into(),
            error: String::new(),
            changes,
            state,
        }
    }

    /// Appends `r`; `live`: it is the current release now.
    pub(crate) fn push(&mut self, r: Release<S, C>, live: bool) {
        if live {
            self.current = r.id.clone();
        }
        self.releases.push(r);
    }

    /// Drops the oldest releases until at most `max` are left, never the live one (a history
    /// whose "current" names no release is no history: after ten failed updates in a row the
    /// live one would be the oldest).
    pub(crate) fn trim(&mut self, max: usize) {
        while self.releases.len() > max.max(1) {
            let Some(i) = self.releases.iter().position(|r| r.id != self.current) else {
                return;
            };
            self.releases.remove(i);
        }
    }

    /// A release by id (`r3`) or number (`3`).
    pub(crate) fn find(&self, want: &str) -> Option<&Release<S, C>> {
        let want = want.trim();
        let id = if want.starts_with('r') {
            want.to_string()
        } else {
            format!("r{want}")
        };
        self.releases.iter().find(|r| r.id == id)
    }

    /// The release a plain `rollback` goes back to: the newest good one before the live one
    /// that `differs` from it (runs something else).
    pub(crate) fn previous_by(
        &self,
        differs: impl Fn(&Release<S, C>, &Release<S, C>) -> bool,
    ) -> Option<&Release<S, C>> {
        let cur = self.current()?;
        self.good_newest_first()
            .filter(|r| r.seq < cur.seq)
            .find(|r| differs(r, cur))
    }

    /// The good releases, newest first.
    pub(crate) fn good_newest_first(&self) -> impl Iterator<Item = &Release<S, C>> {
        self.releases.iter().rev().filter(|r| r.good())
    }
}

impl History {
    /// The release a plain `rollback` goes back to: the newest good one before the live one
    /// whose payload differs from it (or whose container differs).
    pub(crate) fn previous(&self) -> Option<&Release> {
        self.previous_by(|r, cur| r.dir != cur.dir || r.state != cur.state)
    }

    /// Release dirs to keep in the container: the live one and the newest good ones, [`KEEP`]
    /// in all.
    pub(crate) fn keep_dirs(&self) -> Vec<String> {
        let mut keep: Vec<String> = Vec::new();
        if let Some(c) = self.current() {
            keep.push(c.dir.clone());
        }
        for r in self.good_newest_first() {
            if keep.len() >= KEEP {
                break;
            }
            if !keep.contains(&r.dir) {
                keep.push(r.dir.clone());
            }
        }
        keep
    }

    /// Parses the history file's bytes.
    pub(crate) fn parse(bytes: &[u8]) -> Result<History> {
        let bad = |e: String| {
            Error::failed(format!(
                "{HISTORY} in the container is not a release history ({e}); move it aside to let the next deploy start a new one"
            ))
        };
        let h: History = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if let Some(r) = h.releases.iter().find(|r| r.dir.is_empty()) {
            return Err(bad(format!("release {} has no \"dir\"", r.id)));
        }
        Ok(h)
    }
}

/// What is wrong with a release history read from where a platform keeps it (`None`: nothing),
/// as far as the model goes: ids and sequence numbers, kinds, outcomes, the live release. Each
/// release's `state` is the platform's to check. Read from JSON, so a hand-edited history is a
/// clear message, never a crash or an odd argv.
pub(crate) fn problem(h: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    let Value::Object(h) = h else {
        return Some("it is not a JSON object".into());
    };
    let Some(current) = h.get("current").and_then(Value::as_str) else {
        return Some("\"current\" is not a string".into());
    };
    let releases = match h.get("releases") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        _ => return Some("\"releases\" is not a non-empty array".into()),
    };
    let mut ids: Vec<&str> = Vec::new();
    for r in releases {
        let Value::Object(r) = r else {
            return Some("a release is not a JSON object".into());
        };
        let seq = r.get("seq").and_then(Value::as_u64).filter(|s| *s >= 1);
        let id = r.get("id").and_then(Value::as_str).unwrap_or("");
        let Some(seq) = seq.filter(|s| id == format!("r{s}")) else {
            return Some("a release's \"id\" and \"seq\" do not agree (want \"r<seq>\" and an integer seq from 1)".into());
        };
        let w = format!("release r{seq}");
        for k in ["time", "kind", "outcome"] {
            if !r.get(k).is_some_and(Value::is_string) {
                return Some(format!("{w}: \"{k}\" is not a string"));
            }
        }
        let kind = r["kind"].as_str().unwrap_or("");
        if !KINDS.contains(&kind) {
            return Some(format!(
                "{w}: unknown kind {kind:?} (want {})",
                KINDS.join(", ")
            ));
        }
        if !["ok", ROLLED_BACK].contains(&r["outcome"].as_str().unwrap_or("")) {
            return Some(format!("{w}: unknown outcome (want ok or {ROLLED_BACK})"));
        }
        for k in ["error", "of", "dir"] {
            if r.get(k).is_some_and(|v| !v.is_null() && !v.is_string()) {
                return Some(format!("{w}: \"{k}\" is not a string"));
            }
        }
        if !r.get("changes").is_some_and(Value::is_object) {
            return Some(format!("{w}: \"changes\" is not an object"));
        }
        if !r.get("state").is_some_and(Value::is_object) {
            return Some(format!("{w}: \"state\" is not an object"));
        }
        if ids.contains(&id) {
            return Some(format!("{w} is in it twice"));
        }
        ids.push(id);
    }
    if !ids.contains(&current) {
        return Some("\"current\" names no release in it".into());
    }
    None
}

/// A changed value (image, port, bind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FromTo {
    pub from: String,
    pub to: String,
}

/// What differs between two releases. Names and keys only, never values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Changes {
    #[serde(default)]
    pub files_added: Vec<String>,
    #[serde(default)]
    pub files_changed: Vec<String>,
    #[serde(default)]
    pub files_removed: Vec<String>,
    /// "settings.toml changed", "mcp_servers.json added" ...
    #[serde(default)]
    pub config: Vec<String>,
    #[serde(default)]
    pub env_added: Vec<String>,
    #[serde(default)]
    pub env_changed: Vec<String>,
    #[serde(default)]
    pub env_removed: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<FromTo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<FromTo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<FromTo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<FromTo>,
    /// Tasks of a Swarm service (docker-swarm's releases; a container deployment has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<FromTo>,
    /// Set when the old release is not known (a deployment made before releases existed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unknown: String,
    /// How many names each list really had, for a list cut to [`NAMES_KEPT`] in the history
    /// (`files_added` -> 3000), or when the file lists could not be worked out (`payload`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, usize>,
}

impl Changes {
    /// Nothing differs.
    pub(crate) fn is_empty(&self) -> bool {
        *self == Changes::default()
    }

    /// The lists of names, by field name.
    fn lists_mut(&mut self) -> [(&'static str, &mut Vec<String>); 7] {
        [
            ("files_added", &mut self.files_added),
            ("files_changed", &mut self.files_changed),
            ("files_removed", &mut self.files_removed),
            ("config", &mut self.config),
            ("env_added", &mut self.env_added),
            ("env_changed", &mut self.env_changed),
            ("env_removed", &mut self.env_removed),
        ]
    }

    /// As kept in the history: at most [`NAMES_KEPT`] names per list, with the real count in
    /// `counts` for each list that was cut.
    pub(crate) fn for_history(&self) -> Changes {
        let mut c = self.clone();
        let mut counts = std::mem::take(&mut c.counts);
        for (k, v) in c.lists_mut() {
            if v.len() > NAMES_KEPT {
                counts.entry(k.to_string()).or_insert(v.len());
                v.truncate(NAMES_KEPT);
            }
        }
        c.counts = counts;
        c
    }

    /// How many names list `k` has (its count when it was cut).
    fn count(&self, k: &str, v: &[String]) -> usize {
        self.counts.get(k).copied().unwrap_or(v.len()).max(v.len())
    }

    /// Why this change needs a new container (empty: it can go in place).
    pub(crate) fn restart_reasons(&self) -> Vec<String> {
        let mut r = Vec::new();
        if !self.unknown.is_empty() {
            r.push(self.unknown.clone());
        }
        if let Some(i) = &self.image {
            r.push(format!("image {} -> {}", short(&i.from), short(&i.to)));
        }
        if !self.env_added.is_empty()
            || !self.env_changed.is_empty()
            || !self.env_removed.is_empty()
        {
            r.push("the environment is fixed when a container is created".into());
        }
        if let Some(p) = &self.port {
            r.push(format!("port {} -> {}", p.from, p.to));
        }
        if let Some(b) = &self.bind {
            r.push(format!("bind {} -> {}", b.from, b.to));
        }
        if let Some(s) = &self.script {
            r.push(format!("script name {} -> {}", s.from, s.to));
        }
        for c in &self.config {
            let name = c.split(' ').next().unwrap_or("");
            if !READ_PER_REQUEST.contains(&name) {
                r.push(format!("{c}: read only when the services start"));
            }
        }
        r
    }

    /// One line per kind of change, for progress and text output.
    pub(crate) fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        // A line names at most LINE_NAMES names; the rest are counted (the full lists are in
        // `--json`'s `changes`).
        const LINE_NAMES: usize = 5;
        let list = |key: &str, label: &str, v: &[String], out: &mut Vec<String>| {
            let n = self.count(key, v);
            if n == 0 {
                return;
            }
            let shown: Vec<&str> = v.iter().take(LINE_NAMES).map(String::as_str).collect();
            let more = n - shown.len();
            if more == 0 {
                out.push(format!("{label}: {}", shown.join(", ")));
            } else {
                out.push(format!(
                    "{label} ({n}): {} and {more} more",
                    shown.join(", ")
                ));
            }
        };
        list("files_added", "files added", &self.files_added, &mut out);
        list(
            "files_changed",
            "files changed",
            &self.files_changed,
            &mut out,
        );
        list(
            "files_removed",
            "files removed",
            &self.files_removed,
            &mut out,
        );
        if let Some(n) = self.counts.get("payload") {
            out.push(format!(
                "payload changed ({n} files; which ones is not known: the old release's file list is no longer kept)"
            ));
        }
        list("config", "config", &self.config, &mut out);
        list("env_added", "environment added", &self.env_added, &mut out);
        list(
            "env_changed",
            "environment changed",
            &self.env_changed,
            &mut out,
        );
        list(
            "env_removed",
            "environment removed",
            &self.env_removed,
            &mut out,
        );
        if let Some(i) = &self.image {
            out.push(format!("image: {} -> {}", short(&i.from), short(&i.to)));
        }
        if let Some(p) = &self.port {
            out.push(format!("port: {} -> {}", p.from, p.to));
        }
        if let Some(b) = &self.bind {
            out.push(format!("bind: {} -> {}", b.from, b.to));
        }
        if let Some(s) = &self.script {
            out.push(format!("script: {} -> {}", s.from, s.to));
        }
        if let Some(r) = &self.replicas {
            out.push(format!("replicas: {} -> {}", r.from, r.to));
        }
        if !self.unknown.is_empty() {
            out.push(self.unknown.clone());
        }
        out
    }
}

fn short(id: &str) -> String {
    let s = id.strip_prefix("sha256:").unwrap_or(id);
    s.chars().take(12).collect()
}

/// The differences from `old` to `new`; the files by name when both manifests are known,
/// else (payload hashes differ) counted as `counts.payload`.
pub(crate) fn diff(
    old: &State,
    old_files: Option<&Manifest>,
    new: &State,
    new_files: Option<&Manifest>,
) -> Changes {
    let mut c = Changes::default();
    match (old_files, new_files) {
        (Some(o), Some(n)) => keyed(o, n, |k, kind| match kind {
            Diff::Added => c.files_added.push(k.into()),
            Diff::Changed => c.files_changed.push(k.into()),
            Diff::Removed => c.files_removed.push(k.into()),
        }),
        _ if old.payload_hash != new.payload_hash => {
            c.counts.insert("payload".into(), new.file_count);
        }
        _ => {}
    }
    keyed(&old.config, &new.config, |k, kind| {
        c.config.push(format!("{k} {}", kind.word()));
    });
    keyed(&old.env, &new.env, |k, kind| match kind {
        Diff::Added => c.env_added.push(k.into()),
        Diff::Changed => c.env_changed.push(k.into()),
        Diff::Removed => c.env_removed.push(k.into()),
    });
    let from_to = |a: &str, b: &str| {
        (a != b).then(|| FromTo {
            from: a.to_string(),
            to: b.to_string(),
        })
    };
    c.image = if old.image_id != new.image_id {
        let name = |s: &State| {
            if s.image_digest.is_empty() {
                s.image_id.clone()
            } else {
                s.image_digest.clone()
            }
        };
        from_to(&name(old), &name(new)).or_else(|| from_to(&old.image_id, &new.image_id))
    } else {
        None
    };
    c.port = from_to(&old.port.to_string(), &new.port.to_string());
    c.bind = from_to(&old.bind, &new.bind);
    c.script = from_to(&old.script_name, &new.script_name)
        .or_else(|| from_to(&old.main_script, &new.main_script));
    c
}

enum Diff {
    Added,
    Changed,
    Removed,
}

impl Diff {
    fn word(&self) -> &'static str {
        match self {
            Diff::Added => "added",
            Diff::Changed => "changed",
            Diff::Removed => "removed",
        }
    }
}

fn keyed(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    mut f: impl FnMut(&str, Diff),
) {
    for (k, v) in new {
        match old.get(k) {
            None => f(k, Diff::Added),
            Some(o) if o != v => f(k, Diff::Changed),
            _ => {}
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            f(k, Diff::Removed);
        }
    }
}

/// The manifest of the files under `top/` in a tar archive (paths relative to `top`).
#[cfg(test)]
pub(crate) fn manifest_of_tar(tar: &[u8], top: &str) -> Result<BTreeMap<String, String>> {
    use std::io::Read;
    let bad = |e: std::io::Error| Error::failed(format!("reading back the staged payload: {e}"));
    let mut out = BTreeMap::new();
    let prefix = format!("{}/", top.trim_end_matches('/'));
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        let Some(rel) = path.strip_prefix(&prefix) else {
            continue;
        };
        let rel = rel.trim_end_matches('/').to_string();
        if rel.is_empty() {
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            let target = entry
                .link_name()
                .map_err(bad)?
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.insert(rel, format!("link -> {target}"));
        } else if kind.is_file() {
            let mode = entry.header().mode().map_err(bad)?;
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(bad)?;
            out.insert(rel, format!("{} {:o}", sha256(&bytes), mode & 0o777));
        }
    }
    Ok(out)
}

/// One hash over a manifest.
pub(crate) fn payload_hash(files: &BTreeMap<String, String>) -> String {
    let mut text = String::new();
    for (k, v) in files {
        text.push_str(k);
        text.push('\0');
        text.push_str(v);
        text.push('\n');
    }
    sha256(text.as_bytes())
}

/// The config and environment hashes of a deploy.
pub(crate) fn config_hashes(
    cfg: &DeployConfig,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let config = cfg
        .config_files
        .iter()
        .map(|c| (c.name.to_string(), sha256(&c.contents)))
        .collect();
    let env = cfg
        .env
        .iter()
        .map(|(k, v)| (k.clone(), sha256(format!("{k}={v}").as_bytes())))
        .collect();
    (config, env)
}

/// A release folder name: `r<seq>-<6 hex>` (unique, so a copy cut short never collides).
pub(crate) fn dir_name(seq: u64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mix = u64::from(nanos) ^ (u64::from(std::process::id()) << 20) ^ seq;
    format!("r{seq}-{:06x}", mix & 0xff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        let mut s = State {
            image_id: "sha256:aaa".into(),
            port: 8001,
            bind: "127.0.0.1".into(),
            script_name: "demo".into(),
            main_script: "demo.md".into(),
            ..State::default()
        };
        s.config.insert("settings.toml".into(), "sha256:s".into());
        s.env.insert("API_KEY".into(), "sha256:k".into());
        s
    }

    fn files() -> Manifest {
        let mut m = Manifest::new();
        m.insert("demo.md".into(), "sha256:1 644".into());
        m.insert("lib/x.md".into(), "sha256:2 644".into());
        m
    }

    type Plain = History<serde_json::Value, serde_json::Value>;

    fn plain(n: u64, current: u64) -> Plain {
        let mut h = Plain::default();
        for i in 1..=n {
            let r = h.new_release(
                if i == 1 { "initial" } else { "update" },
                None,
                String::new(),
                serde_json::json!({}),
                serde_json::json!({"image": format!("img:{}", i % 3), "n": i}),
            );
            h.push(r, i == current);
        }
        h
    }

    #[test]
    fn the_model_numbers_finds_and_trims_releases_never_dropping_the_live_one() {
        let mut h = plain(12, 2);
        assert_eq!(h.next_seq(), 13);
        assert_eq!(h.find("3").map(|r| r.id.as_str()), Some("r3"));
        assert_eq!(h.find(" r12").map(|r| r.seq), Some(12));
        assert!(h.find("r99").is_none());
        h.trim(HISTORY_MAX);
        let ids: Vec<&str> = h.releases.iter().map(|r| r.id.as_str()).collect();
        // The two oldest that are not live go (r1, r3); r2 stays: it is live.
        assert_eq!(
            ids,
            ["r2", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12"]
        );
        assert_eq!(h.current().map(|r| r.seq), Some(2));
    }

    #[test]
    fn a_rollback_goes_to_the_newest_good_release_that_runs_something_else() {
        let mut h = plain(5, 5);
        let differs = |a: &Release<serde_json::Value, serde_json::Value>,
                       b: &Release<serde_json::Value, serde_json::Value>| {
            a.state["image"] != b.state["image"]
        };
        // r5 runs img:2, r4 img:1: r4.
        assert_eq!(h.previous_by(differs).map(|r| r.id.as_str()), Some("r4"));
        h.releases[3].outcome = ROLLED_BACK.into();
        // r4 never went live; r3 runs img:0.
        assert_eq!(h.previous_by(differs).map(|r| r.id.as_str()), Some("r3"));
        let good: Vec<u64> = h.good_newest_first().map(|r| r.seq).collect();
        assert_eq!(good, [5, 3, 2, 1]);
        h.current = "r1".into();
        assert!(h.previous_by(differs).is_none());
        h.current = "r9".into();
        assert!(
            h.previous_by(differs).is_none(),
            "no live release, no previous"
        );
    }

    #[test]
    fn a_hand_edited_history_is_named_by_what_is_wrong_with_it() {
        let good = serde_json::to_value(plain(2, 2)).unwrap();
        assert_eq!(problem(&good), None);
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = good.clone();
            f(&mut v);
            problem(&v).unwrap_or_default()
        };
        assert_eq!(
            problem(&serde_json::json!([1, 2])).unwrap(),
            "it is not a JSON object"
        );
        assert!(with(&|v| v["current"] = 3.into()).contains("\"current\" is not a string"));
        assert!(with(&|v| v["releases"] = serde_json::json!([])).contains("non-empty array"));
        assert!(with(&|v| v["releases"][0]["seq"] = "1".into()).contains("\"seq\""));
        assert!(with(&|v| v["releases"][1]["id"] = "r7".into()).contains("do not agree"));
        assert!(with(&|v| v["releases"][0]["kind"] = "sideways".into())
            .contains("release r1: unknown kind \"sideways\""));
        assert!(with(&|v| v["releases"][0]["outcome"] = "meh".into()).contains("unknown outcome"));
        assert!(with(&|v| v["releases"][0]["of"] = 1.into()).contains("\"of\" is not a string"));
        assert!(with(&|v| v["releases"][0]["changes"] = "x".into())
            .contains("\"changes\" is not an object"));
        assert!(
            with(&|v| v["releases"][0]["state"] = serde_json::Value::Null)
                .contains("\"state\" is not an object")
        );
        assert!(with(&|v| v["current"] = "r9".into()).contains("names no release"));
        assert!(with(&|v| {
            let r = v["releases"][0].clone();
            v["releases"].as_array_mut().unwrap().push(r);
        })
        .contains("release r1 is in it twice"));
    }

    #[test]
    fn a_container_history_without_release_folders_is_refused() {
        let mut h = History::default();
        let r = h.new_release(
            "initial",
            None,
            String::new(),
            Changes::default(),
            State::default(),
        );
        h.push(r, true);
        let e = History::parse(&serde_json::to_vec(&h).unwrap()).unwrap_err();
        assert!(e.to_string().contains("release r1 has no \"dir\""), "{e}");
        h.releases[0].dir = dir_name(1);
        assert_eq!(
            History::parse(&serde_json::to_vec(&h).unwrap())
                .unwrap()
                .releases
                .len(),
            1
        );
    }

    fn d(old: &State, new: &State) -> Changes {
        diff(old, Some(&files()), new, Some(&files()))
    }

    #[test]
    fn nothing_changed_is_empty() {
        assert!(d(&state(), &state()).is_empty());
    }

    #[test]
    fn history_keeps_no_file_map_and_few_names_but_lines_count_them() {
        let old = state();
        let mut new = state();
        let mut many = Manifest::new();
        for i in 0..3000 {
            many.insert(format!("f{i:04}.md"), "sha256:x 644".into());
        }
        new.payload_hash = payload_hash(&many);
        new.file_count = many.len();
        let c = diff(&old, Some(&files()), &new, Some(&many));
        assert_eq!(c.files_added.len(), 3000);
        let lines = c.lines();
        assert_eq!(
            lines[0],
            "files added (3000): f0000.md, f0001.md, f0002.md, f0003.md, f0004.md and 2995 more"
        );
        assert!(lines.iter().all(|l| l.len() < 200), "{lines:?}");
        let h = c.for_history();
        assert_eq!(h.files_added.len(), NAMES_KEPT);
        assert_eq!(h.counts["files_added"], 3000);
        assert_eq!(h.lines()[0], lines[0], "the history says the same");
        let json = serde_json::to_string(&new).unwrap();
        assert!(!json.contains("f0001"), "no file map in a release: {json}");
        // Without the old manifest: counted, not named.
        let c = diff(&old, None, &new, Some(&many));
        assert!(
            c.files_added.is_empty() && c.counts["payload"] == 3000,
            "{c:?}"
        );
        assert!(
            c.lines()[0].contains("payload changed (3000 files"),
            "{:?}",
            c.lines()
        );
        assert!(c.restart_reasons().is_empty());
        assert!(diff(&old, None, &old, None).is_empty());
        let m = manifest_bytes(&many).unwrap();
        assert_eq!(parse_manifest(&m).unwrap(), many);
        assert_eq!(
            manifest_path("r2-abc"),
            "/payload/.releases/r2-abc.config/manifest.json"
        );
    }

    #[test]
    fn payload_and_settings_go_in_place_the_rest_needs_a_container() {
        let old = state();
        let mut new = state();
        let mut nf = files();
        nf.insert("demo.md".into(), "sha256:9 644".into());
        nf.remove("lib/x.md");
        nf.insert("new.md".into(), "sha256:3 644".into());
        new.config.insert("settings.toml".into(), "sha256:t".into());
        let c = diff(&old, Some(&files()), &new, Some(&nf));
        assert_eq!(c.files_changed, vec!["demo.md"]);
        assert_eq!(c.files_removed, vec!["lib/x.md"]);
        assert_eq!(c.files_added, vec!["new.md"]);
        assert_eq!(c.config, vec!["settings.toml changed"]);
        assert!(c.restart_reasons().is_empty(), "{:?}", c.restart_reasons());

        for change in [
            |s: &mut State| s.image_id = "sha256:bbb".into(),
            |s: &mut State| {
                s.env.insert("API_KEY".into(), "sha256:other".into());
            },
            |s: &mut State| s.port = 8002,
            |s: &mut State| s.bind = "0.0.0.0".into(),
            |s: &mut State| {
                s.config
                    .insert("mcp_servers.json".into(), "sha256:m".into());
            },
            |s: &mut State| {
                s.config.insert(".env".into(), "sha256:e".into());
            },
        ] {
            let mut new = state();
            change(&mut new);
            let c = d(&old, &new);
            assert!(!c.is_empty());
            assert_eq!(c.restart_reasons().len(), 1, "{c:?}");
        }
    }

    #[test]
    fn env_changes_name_keys_never_values() {
        let old = state();
        let mut new = state();
        new.env.insert("API_KEY".into(), sha256(b"API_KEY=s3cret"));
        new.env.insert("NEW".into(), sha256(b"NEW=x"));
        let c = d(&old, &new);
        let text = format!(
            "{}{}",
            serde_json::to_string(&c).unwrap(),
            c.lines().join("\n")
        );
        assert!(!text.contains("s3cret"), "{text}");
        assert_eq!(c.env_changed, vec!["API_KEY"]);
        assert_eq!(c.env_added, vec!["NEW"]);
    }

    #[test]
    fn history_keeps_five_and_finds_the_previous() {
        let mut h = History::default();
        for seq in 1..=7 {
            let mut s = state();
            s.payload_hash = format!("h{seq}");
            h.releases.push(Release {
                id: format!("r{seq}"),
                seq,
                dir: format!("r{seq}-x"),
                time: String::new(),
                kind: "in-place".into(),
                of: None,
                outcome: if seq == 6 { "rolled back" } else { "ok" }.into(),
                error: String::new(),
                changes: Changes::default(),
                state: s,
            });
        }
        h.current = "r7".into();
        assert_eq!(h.previous().unwrap().id, "r5");
        assert_eq!(h.keep_dirs(), vec!["r7-x", "r5-x", "r4-x", "r3-x", "r2-x"]);
        assert_eq!(h.find("3").unwrap().id, "r3");
        assert_eq!(h.find("r4").unwrap().id, "r4");
        assert!(h.find("r99").is_none());
        assert_eq!(h.next_seq(), 8);
    }

    #[test]
    fn tar_manifest_hashes_files_under_the_top() {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8], mode: u32| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, data).unwrap();
        };
        add("payload/.releases/r1-a/demo.md", b"hello", 0o644);
        add("payload/.releases/r1-a/sub/x.sh", b"echo", 0o755);
        add("fractalic/settings.toml", b"secret", 0o600);
        let tar = b.into_inner().unwrap();
        let m = manifest_of_tar(&tar, "payload/.releases/r1-a").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m["demo.md"], format!("{} 644", sha256(b"hello")));
        assert_eq!(m["sub/x.sh"], format!("{} 755", sha256(b"echo")));
        assert_ne!(payload_hash(&m), payload_hash(&BTreeMap::new()));
    }
}
