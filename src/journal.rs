//! The undo journal: every resource a run creates is recorded as it is created (what it is, how
//! to remove it) and undone in reverse order on failure, Ctrl-C or SIGTERM; the report says
//! what the undo really did and what it could not do. Each run owns its journal; live journals
//! are also listed process-wide, so a signal handler can undo every run of the process (the
//! REST server runs several deploys at once).
//!
//! The journal is durable: from its first record on, it is a file `journals/RUN.jsonl` in the
//! state directory ([`crate::state::state_dir`], 0700; the file 0600), one JSON object a line:
//! a header (run id, pid and process start time, deployment name, command), then `add` (a
//! record, written and fsynced BEFORE the change it describes), `confirm` and `drop` lines. The
//! run holds an flock on it for its whole life and removes it when it ends (commit, or an undo
//! that left nothing). A file whose process is dead (the lock is free and the pid with that
//! start time is gone, so a reused pid is not taken for alive) is *unfinished work*: the next
//! command on that deployment adopts it ([`Journal::adopt`]) and undoes it (src/reconcile.rs).
//! The header reaches the disk whole (written beside, then renamed); a torn last line (a kill
//! during a write) is ignored, and it describes a change that had not begun.

use crate::docker::{Docker, Refusal, QUICK};
use crate::error::{Error, Result};
use crate::process::{alive, process_start};
use crate::sync::lock;
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

/// Label carrying the run id on everything a run creates, so an undo finds what an interrupted
/// create made even when its name is unknown or already somebody else's.
pub(crate) const LABEL_RUN: &str = "fractalic-publisher.run";

/// Something a run created (or is creating) and how it is undone.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Resource {
    /// A container, recorded before `docker create` runs. Until [`Journal::confirm`] it is
    /// undone only through the run label (the name may belong to someone else if the create
    /// failed); after it, `docker rm -f -v NAME` and the run label.
    Container { name: String },
    /// A file holding secrets (the env-file of `docker create`): deleted.
    TempFile { path: PathBuf },
    /// An existing container this run started (`start`): stopped again.
    StartedContainer { name: String },
    /// Any other Docker object (a Swarm service, secret, image ...): undone by running
    /// `docker REMOVE_ARGS`; success, or docker saying it does not exist, counts as removed.
    DockerObject {
        what: String,
        remove_args: Vec<String>,
    },
    /// A change that is undone only once it happened: `docker REMOVE_ARGS` runs only while
    /// `docker CHECK_ARGS` prints `expect` (trimmed); otherwise there is nothing to undo (a
    /// run killed after the record but before its change reached the engine, or an undo
    /// already done). A `docker service rollback` run for an update that never happened would
    /// put back the spec before the previous one.
    Guarded {
        what: String,
        check_args: Vec<String>,
        expect: String,
        remove_args: Vec<String>,
    },
}

impl Resource {
    /// What it is, for messages ("container fp-x", "temp file /tmp/fractalic-env-Ab12").
    pub(crate) fn describe(&self) -> String {
        match self {
            Resource::Container { name } => format!("container {name}"),
            Resource::TempFile { path } => format!("temp file {}", path.display()),
            Resource::StartedContainer { name } => format!("container {name} (started)"),
            Resource::DockerObject { what, .. } | Resource::Guarded { what, .. } => what.clone(),
        }
    }
}

/// A recorded resource, for [`Journal::confirm`], [`Journal::forget`] and [`Journal::undo_now`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token(u64);

impl Token {
    /// The number plugins hold for this record (see `docker_run` in the host API).
    pub(crate) fn id(self) -> u64 {
        self.0
    }

    /// The token of record number `id` (an unknown one is simply not found).
    pub(crate) fn from_id(id: u64) -> Token {
        Token(id)
    }
}

/// Something the undo could not remove.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Left {
    /// What it is ("container fp-x").
    pub what: String,
    /// Why it is still there (the failed command's message).
    pub error: String,
    /// The command that removes it by hand.
    pub remove_with: String,
}

/// What an undo did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct UndoReport {
    /// What was removed, in the order it happened ("removed container fp-x").
    pub undone: Vec<String>,
    /// What could not be removed.
    pub left: Vec<Left>,
}

impl UndoReport {
    /// Nothing is left.
    pub(crate) fn is_clean(&self) -> bool {
        self.left.is_empty()
    }

    /// Adds `other` to this report.
    pub(crate) fn merge(&mut self, other: UndoReport) {
        self.undone.extend(other.undone);
        self.left.extend(other.left);
    }

    /// One line: what was removed and what is left with the command that removes it, e.g.
    /// "removed container fp-x, deleted temp file /tmp/f; nothing of this run is left".
    pub(crate) fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.undone.is_empty() {
            parts.push(self.undone.join(", "));
        }
        if self.left.is_empty() {
            parts.push(if self.undone.is_empty() {
                "nothing had been created".to_string()
            } else {
                "nothing of this run is left".to_string()
            });
        } else {
            for l in &self.left {
                parts.push(format!(
                    "could not remove {} ({}); remove it with: {}",
                    l.what, l.error, l.remove_with
                ));
            }
        }
        parts.join("; ")
    }

    /// `{"removed": [...], "left": [{"what", "error", "remove_with"}]}` for `--json`.
    pub(crate) fn to_json(&self) -> Value {
        json!({ "removed": self.undone, "left": self.left })
    }
}

#[derive(Debug)]
struct Entry {
    id: u64,
    resource: Resource,
    /// For a container: the create succeeded, so the name is ours.
    confirmed: bool,
    /// Why the last attempt to undo it failed.
    last_error: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    entries: Vec<Entry>,
    /// Undone (or being undone) for good: nothing new may be recorded.
    closed: bool,
    next: u64,
    /// What every full undo so far removed.
    history: Vec<String>,
    /// What the last label sweep could not remove or list (not tied to a recorded entry).
    sweep_left: Vec<Left>,
    /// The journal's file, once something was recorded (the lock on it is held while open).
    disk: Option<Disk>,
    /// The file could not be written: nothing more may be recorded (see [`Journal::record`]).
    broken: Option<String>,
}

/// The open journal file of a run.
#[derive(Debug)]
struct Disk {
    path: PathBuf,
    file: std::fs::File,
}

/// One run's record of what it created. See the module docs.
#[derive(Debug)]
pub(crate) struct Journal {
    key: u64,
    run_id: String,
    docker: OnceLock<Arc<Docker>>,
    /// The deployment and command, for the file's header (see [`Journal::describe`]).
    about: OnceLock<(String, String)>,
    /// Where the file goes (the state directory's `journals`); tests give their own.
    dir: OnceLock<PathBuf>,
    state: Mutex<State>,
    /// Held for a whole undo, so two undos (the run's own and a signal handler's) never
    /// overlap and the second sees the first one's result.
    undoing: Mutex<()>,
}

static LIVE: Mutex<Vec<(u64, Weak<Journal>)>> = Mutex::new(Vec::new());
/// Reports of journals that ended after an interrupt arrived (their run undid them and
/// finished before the handler looked): the handler's message includes them.
static ENDED: Mutex<Vec<UndoReport>> = Mutex::new(Vec::new());
static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

/// A run id unique on this host: process id, a per-process counter and the time.
fn new_run_id(key: u64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000_000_000);
    format!("{}-{key}-{nanos:x}", std::process::id())
}

impl Journal {
    /// A new, empty journal, listed among the live ones until it is dropped.
    pub(crate) fn new() -> Arc<Journal> {
        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed) + 1;
        Self::listed(Journal {
            key,
            run_id: new_run_id(key),
            docker: OnceLock::new(),
            about: OnceLock::new(),
            dir: OnceLock::new(),
            state: Mutex::new(State::default()),
            undoing: Mutex::new(()),
        })
    }

    fn listed(j: Journal) -> Arc<Journal> {
        let j = Arc::new(j);
        let mut live = lock(&LIVE);
        live.retain(|(_, w)| w.strong_count() > 0);
        live.push((j.key, Arc::downgrade(&j)));
        j
    }

    /// Names the deployment and the command this run is for (the file's header, so the next
    /// command on that deployment finds it). The first call wins; call it before recording.
    pub(crate) fn describe(&self, name: &str, command: &str) {
        let _ = self.about.set((name.to_string(), command.to_string()));
    }

    /// Uses `dir` instead of the state directory (tests).
    #[cfg(test)]
    pub(crate) fn set_state_dir(&self, dir: &Path) {
        let _ = self.dir.set(dir.to_path_buf());
    }

    fn state_dir(&self) -> PathBuf {
        self.dir
            .get()
            .cloned()
            .unwrap_or_else(crate::state::state_dir)
    }

    /// The journal's file, if something was recorded and it is not removed yet.
    #[cfg(test)]
    pub(crate) fn path(&self) -> Option<PathBuf> {
        lock(&self.state).disk.as_ref().map(|d| d.path.clone())
    }

    /// Takes over the unfinished journal `found` of a dead run (its lock is held by `found`):
    /// a journal holding its records, writing to its file, for [`Journal::undo`]. The run id is
    /// the dead run's, so the label sweep finds what its cut-short creates made.
    pub(crate) fn adopt(found: Found, docker: Arc<Docker>) -> Arc<Journal> {
        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed) + 1;
        let next = found.entries.iter().map(|e| e.0).max().unwrap_or(0);
        let state = State {
            entries: found
                .entries
                .into_iter()
                .map(|(id, resource, confirmed)| Entry {
                    id,
                    resource,
                    confirmed,
                    last_error: None,
                })
                .collect(),
            next,
            disk: found.file.map(|file| Disk {
                path: found.path.clone(),
                file,
            }),
            ..State::default()
        };
        let j = Journal {
            key,
            run_id: found.run,
            docker: OnceLock::new(),
            about: OnceLock::new(),
            dir: OnceLock::new(),
            state: Mutex::new(state),
            undoing: Mutex::new(()),
        };
        let _ = j.docker.set(docker);
        let _ = j.about.set((found.name, found.command));
        Self::listed(j)
    }

    /// Appends one line to the file (creating it, with its header, first), synced to disk
    /// before this returns.
    fn persist(&self, s: &mut State, line: &Value) -> Result<()> {
        if let Some(b) = &s.broken {
            return Err(Error::failed(b.clone()));
        }
        if s.disk.is_none() {
            let dir = self.state_dir().join("journals");
            s.disk = Some(self.create_file(&dir)?);
        }
        let Some(d) = s.disk.as_mut() else {
            return Ok(());
        };
        let mut text = line.to_string();
        text.push('\n');
        let r = d
            .file
            .write_all(text.as_bytes())
            .and_then(|()| d.file.sync_data());
        r.map_err(|e| {
            let msg = format!(
                "cannot write the undo journal {}: {e}; nothing more is changed",
                d.path.display()
            );
            s.broken = Some(msg.clone());
            Error::failed(msg)
        })
    }

    /// Creates `DIR/RUN.jsonl` holding the header: written beside and renamed into place (so a
    /// header is never torn), the directory synced, the file locked for this run's life.
    fn create_file(&self, dir: &Path) -> Result<Disk> {
        crate::state::ensure(dir.parent().unwrap_or(dir))?;
        crate::state::ensure(dir)?;
        let path = dir.join(format!("{}.jsonl", self.run_id));
        let beside = dir.join(format!(".{}.jsonl.new", self.run_id));
        let io = |p: &Path, e| Error::Io {
            path: p.to_path_buf(),
            source: e,
        };
        let (name, command) = self.about.get().cloned().unwrap_or_default();
        let header = json!({
            "journal": 1,
            "run": self.run_id,
            "pid": std::process::id(),
            "start": process_start(std::process::id()),
            "name": name,
            "command": command,
            "since": crate::clock::now_utc(),
        });
        // One descriptor from creation on: it holds the lock, and the rename keeps its inode.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&beside)
            .map_err(|e| io(&beside, e))?;
        let _ = file.try_lock();
        file.write_all(format!("{header}\n").as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| {
                let _ = std::fs::remove_file(&beside);
                io(&beside, e)
            })?;
        std::fs::rename(&beside, &path).map_err(|e| io(&path, e))?;
        crate::state::sync_dir(dir);
        Ok(Disk { path, file })
    }

    /// Removes the file: nothing is left to undo.
    fn remove_file(s: &mut State) {
        if let Some(d) = s.disk.take() {
            let _ = std::fs::remove_file(&d.path);
            if let Some(dir) = d.path.parent() {
                crate::state::sync_dir(dir);
            }
        }
    }

    /// Writes `line` when the file exists (confirm and drop lines: losing one only makes an
    /// undo of a dead run try something that is already done, which counts as done).
    fn persist_if_open(&self, s: &mut State, line: &Value) {
        if s.disk.is_some() {
            let _ = self.persist(s, line);
        }
    }

    /// The docker handle undo steps use (the first one given wins).
    pub(crate) fn set_docker(&self, docker: Arc<Docker>) {
        let _ = self.docker.set(docker);
    }

    /// This run's id, the value of [`LABEL_RUN`].
    pub(crate) fn run_id(&self) -> &str {
        &self.run_id
    }

    /// `fractalic-publisher.run=ID`, for `--label` and `--filter label=`.
    pub(crate) fn run_label(&self) -> String {
        format!("{LABEL_RUN}={}", self.run_id)
    }

    /// Records a resource about to be created (record first, then create, so an interrupt in
    /// between undoes it too). Fails with [`Error::Interrupted`] once the journal was undone.
    pub(crate) fn record(&self, resource: Resource) -> Result<Token> {
        self.dry_stop(&resource.describe())?;
        let mut s = lock(&self.state);
        if s.closed {
            return Err(Error::Interrupted);
        }
        let id = s.next + 1;
        // On disk first: the change it describes happens only after this returns.
        self.persist(
            &mut s,
            &json!({"add": id, "res": resource, "confirmed": false}),
        )?;
        s.next = id;
        s.entries.push(Entry {
            id,
            resource,
            confirmed: false,
            last_error: None,
        });
        Ok(Token(id))
    }

    /// In a dry run (the docker handle says so) nothing is recorded: every record comes just
    /// before the change it describes, so the first one is where the plan stops.
    fn dry_stop(&self, what: &str) -> Result<()> {
        match self.docker.get() {
            Some(d) if d.dry_run() => Err(d.dry_stop(format!("making {what}"))),
            _ => Ok(()),
        }
    }

    /// Creates a temp file (mode 0600) holding `contents` and records it, atomically with the
    /// check that the journal is still open: the file never exists unrecorded.
    #[cfg(test)]
    pub(crate) fn temp_file(&self, prefix: &str, contents: &[u8]) -> Result<(Token, PathBuf)> {
        use std::io::Write;
        self.dry_stop(&format!("a temp file {prefix}*"))?;
        let mut s = lock(&self.state);
        if s.closed {
            return Err(Error::Interrupted);
        }
        let io = |path: &Path, e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        };
        // Recorded while still empty, then written: a kill at any moment leaves no secret in
        // a file that the next command's reconcile does not delete. (In the temp directory,
        // where docker's own tools expect it; the pipe that replaces it is issue 16's too.)
        let tmp = std::env::temp_dir();
        let mut f = tempfile::Builder::new()
            .prefix(prefix)
            .tempfile_in(&tmp)
            .map_err(|e| io(&tmp, e))?;
        let path = f.path().to_path_buf();
        let id = s.next + 1;
        let rec =
            json!({"add": id, "res": Resource::TempFile { path: path.clone() }, "confirmed": true});
        self.persist(&mut s, &rec)?; // on failure, dropping `f` deletes the file
        if let Err(e) = f.write_all(contents).and_then(|()| f.flush()) {
            return Err(io(&path, e)); // dropping `f` deletes the file
        }
        let path = f.into_temp_path().keep().map_err(|e| io(&path, e.error))?;
        s.next = id;
        s.entries.push(Entry {
            id,
            resource: Resource::TempFile { path: path.clone() },
            confirmed: true,
            last_error: None,
        });
        Ok((Token(id), path))
    }

    /// The resource exists for sure (the create succeeded): its name is ours to remove.
    pub(crate) fn confirm(&self, token: Token) {
        let mut s = lock(&self.state);
        if let Some(e) = s.entries.iter_mut().find(|e| e.id == token.0) {
            e.confirmed = true;
            self.persist_if_open(&mut s, &json!({ "confirm": token.0 }));
        }
    }

    /// Drops the record without undoing it (the create failed and made nothing, or the
    /// resource is no longer this run's concern).
    pub(crate) fn forget(&self, token: Token) {
        let mut s = lock(&self.state);
        s.entries.retain(|e| e.id != token.0);
        self.persist_if_open(&mut s, &json!({ "drop": token.0 }));
    }

    /// The token of the recorded container `name`, if any.
    pub(crate) fn container(&self, name: &str) -> Option<Token> {
        lock(&self.state)
            .entries
            .iter()
            .find(|e| matches!(&e.resource, Resource::Container { name: n } if n == name))
            .map(|e| Token(e.id))
    }

    /// Undoes one resource now (a temp file that has served its purpose, a container the
    /// plugin removes to retry). On failure it stays recorded, so the final undo tries again.
    pub(crate) fn undo_now(&self, token: Token) -> UndoReport {
        // Never beside a full undo (a signal handler's): the same container removed twice at
        // once makes docker fail one of them.
        let _one_at_a_time = lock(&self.undoing);
        let entry = lock(&self.state)
            .entries
            .iter()
            .find(|e| e.id == token.0)
            .map(|e| (e.resource.clone(), e.confirmed));
        let Some((resource, confirmed)) = entry else {
            return UndoReport::default();
        };
        let outcome = self.undo_one(&resource, confirmed);
        self.settle(token.0, &outcome);
        let mut r = UndoReport::default();
        match outcome {
            Outcome::Done(d) => r.undone.extend(d),
            Outcome::Failed(l) => r.left.push(l),
        }
        r
    }

    /// The run succeeded: keeps what it created (nothing is undone later), except temp files,
    /// which are deleted now (they hold secrets). Fails with [`Error::Interrupted`] when an
    /// interrupt's undo got there first.
    pub(crate) fn commit(&self) -> Result<UndoReport> {
        let temp: Vec<Token> = {
            let mut s = lock(&self.state);
            if s.closed {
                return Err(Error::Interrupted);
            }
            let kept: Vec<u64> = s
                .entries
                .iter()
                .filter(|e| !matches!(e.resource, Resource::TempFile { .. }))
                .map(|e| e.id)
                .collect();
            s.entries
                .retain(|e| matches!(e.resource, Resource::TempFile { .. }));
            // Kept for good: no reconcile may undo them should this run die now. One line for
            // all of them: a kill between per-record lines would leave a reconcile undoing
            // half a swap (the kept container renamed back, the live one left aside).
            if !kept.is_empty() {
                self.persist_if_open(&mut s, &json!({ "drop": kept }));
            }
            s.entries.iter().map(|e| Token(e.id)).collect()
        };
        let mut r = UndoReport::default();
        for t in temp {
            r.merge(self.undo_now(t));
        }
        let mut s = lock(&self.state);
        // A temp file that could not be deleted stays recorded: a reconcile deletes it.
        if s.entries.is_empty() {
            Self::remove_file(&mut s);
        }
        Ok(r)
    }

    /// Undoes everything recorded, newest first, then removes whatever still carries the run
    /// label and checks that nothing does; closes the journal. Returns what this pass did and
    /// what is left.
    pub(crate) fn undo(&self) -> UndoReport {
        let _one_at_a_time = lock(&self.undoing);
        let snapshot: Vec<(u64, Resource, bool)> = {
            let mut s = lock(&self.state);
            s.closed = true;
            s.entries
                .iter()
                .rev()
                .map(|e| (e.id, e.resource.clone(), e.confirmed))
                .collect()
        };
        let had_container = snapshot
            .iter()
            .any(|(_, r, _)| matches!(r, Resource::Container { .. }));
        let mut report = UndoReport::default();
        for (id, resource, confirmed) in snapshot {
            let outcome = self.undo_one(&resource, confirmed);
            self.settle(id, &outcome);
            match outcome {
                Outcome::Done(d) => report.undone.extend(d),
                Outcome::Failed(l) => report.left.push(l),
            }
        }
        if had_container {
            let swept = self.sweep_label();
            report.merge(swept);
        }
        {
            let mut s = lock(&self.state);
            s.history.extend(report.undone.clone());
            if s.entries.is_empty() && s.sweep_left.is_empty() {
                Self::remove_file(&mut s);
            }
        }
        report.left = self.report().left;
        report
    }

    /// Everything undone so far by full undos, and what is still recorded (with the last
    /// error, if an undo failed), without running anything.
    pub(crate) fn report(&self) -> UndoReport {
        let s = lock(&self.state);
        UndoReport {
            undone: s.history.clone(),
            left: s
                .entries
                .iter()
                .map(|e| self.left_of(e))
                .chain(s.sweep_left.iter().cloned())
                .collect(),
        }
    }

    /// Undoes every live journal of the process (see [`Journal::undo`]) and returns, per
    /// journal, everything undone and what is left.
    pub(crate) fn undo_all_live() -> UndoReport {
        let mut all = UndoReport::default();
        let (journals, ended) = live_and_ended();
        for j in journals {
            j.undo();
            all.merge(j.report());
        }
        ended.into_iter().for_each(|r| all.merge(r));
        all
    }

    /// What every live journal still holds, without running anything (for a second
    /// interrupt that does not wait any more).
    pub(crate) fn report_all_live() -> UndoReport {
        let mut all = UndoReport::default();
        let (journals, ended) = live_and_ended();
        for j in journals {
            all.merge(j.report());
        }
        ended.into_iter().for_each(|r| all.merge(r));
        all
    }

    fn left_of(&self, e: &Entry) -> Left {
        let remove_with = match &e.resource {
            Resource::Container { name } if e.confirmed => format!("docker rm -f -v {name}"),
            Resource::Container { .. } => self.label_command(),
            Resource::TempFile { path } => format!("rm -f '{}'", path.display()),
            Resource::StartedContainer { name } => format!("docker stop {name}"),
            Resource::DockerObject { remove_args, .. } => {
                format!("docker {}", remove_args.join(" "))
            }
            Resource::Guarded {
                check_args,
                expect,
                remove_args,
                ..
            } => format!(
                "docker {} (only while `docker {}` prints {expect})",
                remove_args.join(" "),
                check_args.join(" ")
            ),
        };
        let error = e.last_error.clone().unwrap_or_else(|| {
            if matches!(e.resource, Resource::Container { .. }) && !e.confirmed {
                "its `docker create` had not finished".to_string()
            } else {
                "not undone yet".to_string()
            }
        });
        Left {
            what: e.resource.describe(),
            error,
            remove_with,
        }
    }

    fn label_command(&self) -> String {
        format!(
            "docker ps -aq --filter label={} | xargs -r docker rm -f -v",
            self.run_label()
        )
    }

    /// Removes the entry when its undo worked; keeps it with the error otherwise.
    fn settle(&self, id: u64, outcome: &Outcome) {
        let mut s = lock(&self.state);
        match outcome {
            Outcome::Done(_) => {
                s.entries.retain(|e| e.id != id);
                self.persist_if_open(&mut s, &json!({ "drop": id }));
            }
            Outcome::Failed(l) => {
                if let Some(e) = s.entries.iter_mut().find(|e| e.id == id) {
                    e.last_error = Some(l.error.clone());
                }
            }
        }
    }

    fn undo_one(&self, resource: &Resource, confirmed: bool) -> Outcome {
        let failed = |error: String, remove_with: String| {
            Outcome::Failed(Left {
                what: resource.describe(),
                error,
                remove_with,
            })
        };
        match resource {
            // Not known to exist, and the name may be someone else's: removed only if the
            // container of that name carries this run's label. Now, not at the sweep: an older
            // record's undo (the old container renamed back) may need the name free.
            Resource::Container { name } if !confirmed => match self.labelled_names() {
                Ok(names) if names.iter().any(|n| n == name) => {
                    let args = ["rm", "-f", "-v", name.as_str()];
                    match self.docker_undo(&args, QUICK) {
                        Ok(()) => Outcome::Done(vec![format!("removed container {name}")]),
                        Err(e) => failed(e, format!("docker rm -f -v {name}")),
                    }
                }
                Ok(_) => Outcome::Done(Vec::new()),
                Err(e) => failed(format!("cannot list them: {e}"), self.label_command()),
            },
            Resource::Container { name } => {
                let args = ["rm", "-f", "-v", name.as_str()];
                match self.docker_undo(&args, QUICK) {
                    Ok(()) => Outcome::Done(vec![format!("removed container {name}")]),
                    Err(e) => failed(e, format!("docker rm -f -v {name}")),
                }
            }
            Resource::TempFile { path } => match std::fs::remove_file(path) {
                Ok(()) => Outcome::Done(vec![format!("deleted temp file {}", path.display())]),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Outcome::Done(Vec::new()),
                Err(e) => failed(e.to_string(), format!("rm -f '{}'", path.display())),
            },
            Resource::StartedContainer { name } => {
                let args = ["stop", "-t", "10", name.as_str()];
                match self.docker_undo(&args, QUICK + Duration::from_secs(10)) {
                    Ok(()) => Outcome::Done(vec![format!("stopped {name} again")]),
                    Err(e) => failed(e, format!("docker stop {name}")),
                }
            }
            Resource::DockerObject { what, remove_args } => {
                let args: Vec<&str> = remove_args.iter().map(String::as_str).collect();
                match self.docker_undo(&args, QUICK) {
                    Ok(()) => Outcome::Done(vec![format!("removed {what}")]),
                    Err(e) => failed(e, format!("docker {}", remove_args.join(" "))),
                }
            }
            Resource::Guarded {
                what,
                check_args,
                expect,
                remove_args,
            } => {
                let Some(d) = self.docker.get() else {
                    return failed(
                        "no docker handle to undo with".into(),
                        format!("docker {}", remove_args.join(" ")),
                    );
                };
                let check: Vec<&str> = check_args.iter().map(String::as_str).collect();
                match d.run_undo(&check, QUICK) {
                    Ok((Some(0), out)) if out.stdout.trim() == expect.trim() => {
                        let args: Vec<&str> = remove_args.iter().map(String::as_str).collect();
                        match self.docker_undo(&args, QUICK) {
                            Ok(()) => Outcome::Done(vec![format!("undid {what}")]),
                            Err(e) => failed(e, format!("docker {}", remove_args.join(" "))),
                        }
                    }
                    // The change never reached the engine, or was undone already.
                    Ok((Some(0), _)) => Outcome::Done(Vec::new()),
                    Ok((_, out)) if out.refusal() == Refusal::NoSuchObject => {
                        Outcome::Done(Vec::new())
                    }
                    Ok((status, out)) => failed(
                        Error::Docker {
                            argv: d.argv(&check),
                            status,
                            stderr: out.stderr,
                        }
                        .to_string(),
                        format!("docker {}", remove_args.join(" ")),
                    ),
                    Err(e) => failed(e.to_string(), format!("docker {}", remove_args.join(" "))),
                }
            }
        }
    }

    /// Runs an undo step; docker saying there is no such object means there was nothing to
    /// remove.
    fn docker_undo(&self, args: &[&str], timeout: Duration) -> std::result::Result<(), String> {
        let Some(d) = self.docker.get() else {
            return Err("no docker handle to undo with".into());
        };
        match d.run_undo(args, timeout) {
            Ok((Some(0), _)) => Ok(()),
            Ok((_, out)) if out.refusal() == Refusal::NoSuchObject => Ok(()),
            Ok((status, out)) => Err(Error::Docker {
                argv: d.argv(args),
                status,
                stderr: out.stderr,
            }
            .to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Removes every container that carries this run's label (one a cut-short create made,
    /// or one whose removal by name failed), then checks that none is left.
    fn sweep_label(&self) -> UndoReport {
        let r = self.sweep_label_pass();
        // A container that is also a recorded entry is reported once, through the entry.
        let mut s = lock(&self.state);
        let mut loose = Vec::new();
        for l in &r.left {
            let entry = s.entries.iter_mut().find(
                |e| matches!(&e.resource, Resource::Container { name } if l.what == format!("container {name}")),
            );
            match entry {
                Some(e) => {
                    e.confirmed = true;
                    e.last_error = Some(l.error.clone());
                }
                None => loose.push(l.clone()),
            }
        }
        s.sweep_left = loose;
        r
    }

    /// The names of the containers that carry this run's label.
    fn labelled_names(&self) -> std::result::Result<Vec<String>, String> {
        let Some(d) = self.docker.get() else {
            return Err("no docker handle to undo with".into());
        };
        let filter = format!("label={}", self.run_label());
        match d.run_undo(
            &["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"],
            QUICK,
        ) {
            Ok((Some(0), out)) => Ok(out
                .stdout
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()),
            Ok((status, out)) => Err(Error::Docker {
                argv: format!("docker ps -a --filter {filter}"),
                status,
                stderr: out.stderr,
            }
            .to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn sweep_label_pass(&self) -> UndoReport {
        let mut r = UndoReport::default();
        let label = self.run_label();
        let list = |_: &Docker| self.labelled_names();
        let Some(d) = self.docker.get() else {
            return r;
        };
        let found = match list(d) {
            Ok(found) => found,
            Err(e) => {
                r.left.push(Left {
                    what: format!("containers labelled {label}"),
                    error: format!("cannot list them: {e}"),
                    remove_with: self.label_command(),
                });
                return r;
            }
        };
        if found.is_empty() {
            return r;
        }
        for name in &found {
            match self.docker_undo(&["rm", "-f", "-v", name], QUICK) {
                Ok(()) => {
                    r.undone.push(format!("removed container {name}"));
                    // A container recorded under this name is gone too.
                    lock(&self.state).entries.retain(
                        |e| !matches!(&e.resource, Resource::Container { name: n } if n == name),
                    );
                }
                Err(e) => r.left.push(Left {
                    what: format!("container {name}"),
                    error: e,
                    remove_with: format!("docker rm -f -v {name}"),
                }),
            }
        }
        // Verify: the label must be on nothing now.
        if let Ok(still) = list(d) {
            for name in still {
                if !r.left.iter().any(|l| l.what == format!("container {name}")) {
                    r.left.push(Left {
                        what: format!("container {name}"),
                        error: "still there after `docker rm -f`".into(),
                        remove_with: format!("docker rm -f -v {name}"),
                    });
                }
            }
        }
        // Containers recorded but never confirmed and not found: nothing was created.
        if r.left.is_empty() {
            lock(&self.state)
                .entries
                .retain(|e| !matches!(e.resource, Resource::Container { .. }) || e.confirmed);
        }
        r
    }
}

enum Outcome {
    Done(Vec<String>),
    Failed(Left),
}

/// The live journals, and the reports of those that ended after an interrupt; read together
/// under one lock, so a journal is always in one or the other.
fn live_and_ended() -> (Vec<Arc<Journal>>, Vec<UndoReport>) {
    let live = lock(&LIVE);
    let journals = live.iter().filter_map(|(_, w)| w.upgrade()).collect();
    (journals, lock(&ENDED).clone())
}

impl Drop for Journal {
    fn drop(&mut self) {
        // A run that ended without commit or undo (a panic, an early return) still cleans up.
        let (pending, closed) = {
            let s = lock(&self.state);
            (!s.entries.is_empty(), s.closed)
        };
        if pending && !closed {
            self.undo();
        }
        // Nothing left: no file. Something left (an undo that failed): the file stays, and
        // its dead process makes it unfinished work for the next command.
        let mut s = lock(&self.state);
        if s.entries.is_empty() && s.sweep_left.is_empty() {
            Self::remove_file(&mut s);
        }
        drop(s);
        let mut live = lock(&LIVE);
        if crate::docker::refusing() {
            let r = self.report();
            if !r.undone.is_empty() || !r.left.is_empty() {
                lock(&ENDED).push(r);
            }
        }
        live.retain(|(k, _)| *k != self.key);
    }
}

/// A journal file read back: its header, the records still to undo, and (when taken by
/// [`unfinished`] with `take`) the open file holding its lock.
#[derive(Debug)]
pub(crate) struct Found {
    /// The file.
    pub path: PathBuf,
    /// The run id (its containers carry it in [`LABEL_RUN`]).
    pub run: String,
    /// The process that wrote it.
    pub pid: u32,
    /// That process's start time (clock ticks after boot, `/proc/PID/stat` field 22).
    pub start: Option<u64>,
    /// The deployment ("" when the run never named one).
    pub name: String,
    /// The command ("deploy", "rollback", "start" ...).
    pub command: String,
    /// When the run began writing it.
    pub since: String,
    /// Records not undone, dropped or kept: (id, what, confirmed), oldest first.
    pub entries: Vec<(u64, Resource, bool)>,
    /// The last line was torn (a kill during its write) and was ignored (read by the tests).
    #[cfg_attr(not(test), allow(dead_code))]
    pub torn: bool,
    file: Option<std::fs::File>,
}

impl Found {
    /// "run 123-1-ab (deploy of fp-x by pid 123, since T)" for messages.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} of {} by pid {} (its process is gone; began {}, run {})",
            if self.command.is_empty() {
                "a run"
            } else {
                &self.command
            },
            if self.name.is_empty() {
                "?"
            } else {
                &self.name
            },
            self.pid,
            self.since,
            self.run
        )
    }
}

/// Reads a journal file; None when it has no whole header (not a journal).
pub(crate) fn read(path: &Path) -> Option<Found> {
    let bytes = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.split('\n').collect();
    // Only lines ended by a newline were written whole.
    let torn = lines.pop().is_some_and(|l| !l.is_empty());
    let mut it = lines.into_iter();
    let h: Value = serde_json::from_str(it.next()?).ok()?;
    if h["journal"].as_u64() != Some(1) {
        return None;
    }
    let mut f = Found {
        path: path.to_path_buf(),
        run: h["run"].as_str()?.to_string(),
        pid: u32::try_from(h["pid"].as_u64()?).ok()?,
        start: h["start"].as_u64(),
        name: h["name"].as_str().unwrap_or("").to_string(),
        command: h["command"].as_str().unwrap_or("").to_string(),
        since: h["since"].as_str().unwrap_or("").to_string(),
        entries: Vec::new(),
        torn,
        file: None,
    };
    for l in it {
        let Ok(v) = serde_json::from_str::<Value>(l) else {
            continue;
        };
        if let Some(id) = v["add"].as_u64() {
            if let Ok(r) = serde_json::from_value::<Resource>(v["res"].clone()) {
                let confirmed = v["confirmed"].as_bool().unwrap_or(false);
                f.entries.push((id, r, confirmed));
            }
        } else if let Some(id) = v["confirm"].as_u64() {
            if let Some(e) = f.entries.iter_mut().find(|e| e.0 == id) {
                e.2 = true;
            }
        } else if let Some(id) = v["drop"].as_u64() {
            f.entries.retain(|e| e.0 != id);
        } else if let Some(ids) = v["drop"].as_array() {
            // A commit: every record it names dropped at once.
            let ids: Vec<u64> = ids.iter().filter_map(Value::as_u64).collect();
            f.entries.retain(|e| !ids.contains(&e.0));
        }
    }
    Some(f)
}

/// The journals in `dir` whose process is dead (for deployment `name`, or every one), oldest
/// first. With `take`, each comes with its file's lock held (for [`Journal::adopt`]); without,
/// the lock is only tried. Files that are not journals are left alone, except the leftovers of
/// a header that never got renamed into place (nothing was recorded in them).
pub(crate) fn unfinished_in(dir: &Path, name: Option<&str>, take: bool) -> Vec<Found> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let fname = path.file_name().map(|f| f.to_string_lossy().to_string());
        let Some(fname) = fname else { continue };
        if fname.starts_with('.') && fname.ends_with(".jsonl.new") {
            remove_dead_header(&path);
            continue;
        }
        if !fname.ends_with(".jsonl") || fname.starts_with('.') {
            continue;
        }
        let Some(mut f) = read(&path) else { continue };
        if name.is_some_and(|n| !f.name.is_empty() && f.name != n) {
            continue;
        }
        if alive(f.pid, f.start) == Some(true) {
            continue;
        }
        // The writer holds an flock on it while it lives; a free lock confirms it is dead
        // (and, taken, keeps two reconciles from adopting it at once).
        let Ok(file) = std::fs::OpenOptions::new().append(true).open(&path) else {
            continue;
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => continue,
            // No flock on this file system: the pid check alone decides.
            Err(_) if alive(f.pid, f.start).is_none() => continue,
            Err(_) => {}
        }
        // Re-read under the lock: what the last holder wrote before it let go counts.
        let Some(mut again) = read(&path) else {
            continue;
        };
        if take {
            again.file = Some(file);
        }
        f = again;
        out.push(f);
    }
    out
}

/// Deletes `.RUN.jsonl.new`, a header that was never renamed into place, when its writer is
/// dead: it was killed between creating the header and its first record, so nothing of that
/// record was done (a record is written before the change it describes). A writer holds the
/// file's lock from its creation on; a header too torn to name its writer goes once its lock is
/// free and it is a minute old (the instant between `open` and `try_lock`).
fn remove_dead_header(path: &Path) {
    let Ok(file) = std::fs::OpenOptions::new().append(true).open(path) else {
        return;
    };
    if file.try_lock().is_err() {
        return;
    }
    // A run id starts with its writer's pid ([`new_run_id`]): a torn header still names it.
    let pid_of_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix('.'))
        .and_then(|n| n.split('-').next())
        .and_then(|p| p.parse::<u32>().ok());
    let dead = match (read(path), pid_of_name) {
        (Some(f), _) => alive(f.pid, f.start) == Some(false),
        (None, Some(pid)) if alive(pid, None) == Some(false) => true,
        (None, _) => std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(60)),
    };
    if dead {
        let _ = std::fs::remove_file(path);
        if let Some(dir) = path.parent() {
            crate::state::sync_dir(dir);
        }
    }
}

/// [`unfinished_in`] in the state directory's `journals`.
pub(crate) fn unfinished(name: Option<&str>, take: bool) -> Vec<Found> {
    unfinished_in(&crate::state::state_dir().join("journals"), name, take)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fake docker that logs its argv to `calls.log` and runs `body` (sh, sees "$@").
    fn fake_docker(dir: &Path, body: &str) -> Arc<Docker> {
        let p = dir.join("docker");
        let log = dir.join("calls.log");
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\n{body}\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        Arc::new(Docker::with_binary(p))
    }

    /// A journal whose file goes in a directory of this test process (never the real state
    /// directory), kept for the process's life.
    fn journal() -> Arc<Journal> {
        static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
        let d = DIR.get_or_init(|| tempfile::tempdir().unwrap());
        let j = Journal::new();
        j.set_state_dir(d.path());
        j
    }

    fn calls(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn temp_files_are_0600_and_deleted_by_the_undo() {
        let j = journal();
        let (_, path) = j
            .temp_file("fractalic-test-", b"SECRET_X=s3cret\n")
            .unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"SECRET_X=s3cret\n");
        let r = j.undo();
        assert!(!path.exists());
        assert_eq!(
            r.undone,
            vec![format!("deleted temp file {}", path.display())]
        );
        assert!(r.is_clean());
        assert!(
            r.summary().ends_with("nothing of this run is left"),
            "{}",
            r.summary()
        );
    }

    #[test]
    fn nothing_is_recorded_after_the_undo() {
        let j = journal();
        assert!(j.undo().undone.is_empty());
        assert!(matches!(
            j.record(Resource::Container { name: "x".into() }),
            Err(Error::Interrupted)
        ));
        assert!(matches!(
            j.temp_file("fractalic-test-", b"x"),
            Err(Error::Interrupted)
        ));
        assert!(matches!(j.commit(), Err(Error::Interrupted)));
        assert_eq!(j.undo().summary(), "nothing had been created");
    }

    #[test]
    fn undo_runs_newest_first_then_sweeps_the_run_label() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal();
        j.set_docker(fake_docker(dir.path(), "exit 0"));
        let a = j.record(Resource::Container { name: "a".into() }).unwrap();
        j.confirm(a);
        j.record(Resource::DockerObject {
            what: "secret s".into(),
            remove_args: vec!["secret".into(), "rm".into(), "s".into()],
        })
        .unwrap();
        // Never confirmed: its create may have failed on a name that is somebody else's.
        j.record(Resource::Container { name: "b".into() }).unwrap();
        let r = j.undo();
        let label = format!("label={}", j.run_label());
        assert_eq!(
            calls(dir.path()),
            vec![
                format!("ps -a --filter {label} --format {{{{.Names}}}}"),
                "secret rm s".to_string(),
                "rm -f -v a".to_string(),
                format!("ps -a --filter {label} --format {{{{.Names}}}}"),
            ]
        );
        assert_eq!(r.undone, vec!["removed secret s", "removed container a"]);
        assert!(r.is_clean(), "{r:?}");
        assert!(j.report().left.is_empty());
    }

    #[test]
    fn a_container_found_by_the_run_label_is_removed_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        // The first `ps` finds the cut-short create's container, the second finds nothing.
        let j = journal();
        j.set_docker(fake_docker(
            dir.path(),
            &format!(
                "if [ \"$1\" = ps ]; then if [ ! -e '{0}/listed' ]; then touch '{0}/listed'; echo b; fi; fi",
                dir.path().display()
            ),
        ));
        j.record(Resource::Container { name: "b".into() }).unwrap();
        let r = j.undo();
        assert_eq!(r.undone, vec!["removed container b"]);
        assert!(r.is_clean(), "{r:?}");
        assert!(calls(dir.path()).contains(&"rm -f -v b".to_string()));
    }

    #[test]
    fn a_failing_rm_is_reported_with_its_cause_and_the_command_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal();
        j.set_docker(fake_docker(
            dir.path(),
            "case \"$1\" in rm) echo 'Error response from daemon: device or resource busy' >&2; exit 1;; ps) echo a;; esac",
        ));
        let a = j.record(Resource::Container { name: "a".into() }).unwrap();
        j.confirm(a);
        let (_, path) = j.temp_file("fractalic-test-", b"K=V\n").unwrap();
        let r = j.undo();
        assert_eq!(
            r.undone,
            vec![format!("deleted temp file {}", path.display())]
        );
        assert_eq!(r.left.len(), 1, "{r:?}");
        let l = &r.left[0];
        assert_eq!(l.what, "container a");
        assert!(l.error.contains("device or resource busy"), "{}", l.error);
        assert_eq!(l.remove_with, "docker rm -f -v a");
        let s = r.summary();
        assert!(s.contains("could not remove container a"), "{s}");
        assert!(!s.contains("nothing of this run is left"), "{s}");
        // Still recorded: a later undo (the signal handler's) tries again and says the same.
        assert_eq!(j.report().left, r.left);
    }

    #[test]
    fn commit_keeps_containers_and_deletes_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal();
        j.set_docker(fake_docker(dir.path(), "exit 0"));
        let a = j.record(Resource::Container { name: "a".into() }).unwrap();
        j.confirm(a);
        let (_, path) = j.temp_file("fractalic-test-", b"K=V\n").unwrap();
        j.commit().unwrap();
        assert!(!path.exists());
        assert!(j.undo().undone.is_empty());
        assert!(calls(dir.path()).is_empty(), "{:?}", calls(dir.path()));
    }

    #[test]
    fn undo_now_and_forget() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal();
        j.set_docker(fake_docker(dir.path(), "exit 0"));
        let a = j.record(Resource::Container { name: "a".into() }).unwrap();
        j.confirm(a);
        assert_eq!(j.container("a"), Some(a));
        assert_eq!(j.undo_now(a).undone, vec!["removed container a"]);
        assert_eq!(j.container("a"), None);
        let b = j
            .record(Resource::StartedContainer { name: "b".into() })
            .unwrap();
        j.forget(b);
        assert!(j.report().left.is_empty());
        assert_eq!(calls(dir.path()), vec!["rm -f -v a"]);
    }

    #[test]
    fn live_journals_are_undone_together_and_dropped_ones_clean_up() {
        let j1 = journal();
        let j2 = journal();
        let (_, p1) = j1.temp_file("fractalic-test-", b"1").unwrap();
        let (_, p2) = j2.temp_file("fractalic-test-", b"2").unwrap();
        let all = Journal::report_all_live();
        for p in [&p1, &p2] {
            assert!(all
                .left
                .iter()
                .any(|l| l.what == format!("temp file {}", p.display())));
        }
        let j3 = journal();
        let (_, p3) = j3.temp_file("fractalic-test-", b"3").unwrap();
        drop(j3);
        assert!(!p3.exists(), "a dropped journal undoes what it still holds");
        // (undo_all_live would also undo other tests' journals in this process.)
        j1.undo();
        j2.undo();
        assert!(!p1.exists() && !p2.exists());
        assert!(j1.record(Resource::Container { name: "x".into() }).is_err());
    }

    fn in_dir(dir: &Path) -> Arc<Journal> {
        let j = Journal::new();
        j.set_state_dir(dir);
        j.describe("fp-x", "deploy");
        j
    }

    #[test]
    fn each_record_is_on_disk_before_record_returns_and_the_file_goes_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let j = in_dir(dir.path());
        j.set_docker(fake_docker(dir.path(), "exit 0"));
        assert!(j.path().is_none(), "nothing recorded, no file");
        let a = j.record(Resource::Container { name: "a".into() }).unwrap();
        let path = j.path().unwrap();
        // A reader that is not this process sees the record already.
        let f = read(&path).unwrap();
        assert_eq!(f.name, "fp-x");
        assert_eq!(f.command, "deploy");
        assert_eq!(f.pid, std::process::id());
        assert_eq!(f.start, process_start(std::process::id()));
        assert_eq!(
            f.entries,
            vec![(1, Resource::Container { name: "a".into() }, false)]
        );
        j.confirm(a);
        assert!(read(&path).unwrap().entries[0].2, "confirmed on disk");
        let b = j
            .record(Resource::StartedContainer { name: "b".into() })
            .unwrap();
        j.forget(b);
        assert_eq!(read(&path).unwrap().entries.len(), 1);
        // 0700 directories, a 0600 file.
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(mode(&path), 0o600);
        // A live run's journal is not unfinished work.
        assert!(unfinished_in(path.parent().unwrap(), None, false).is_empty());
        j.commit().unwrap();
        assert!(!path.exists(), "a committed run leaves no journal");
        let j = in_dir(dir.path());
        let (_, tmp) = j.temp_file("fractalic-test-", b"K=V\n").unwrap();
        assert_eq!(mode(&tmp), 0o600);
        let path = j.path().unwrap();
        j.undo();
        assert!(
            !path.exists() && !tmp.exists(),
            "a clean undo leaves nothing"
        );
    }

    /// A journal as a run killed with SIGKILL leaves it: written by a process now gone.
    fn dead_journal(dir: &Path, run: &str, lines: &str) -> PathBuf {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let d = dir.join("journals");
        crate::state::ensure(dir).unwrap();
        crate::state::ensure(&d).unwrap();
        let p = d.join(format!("{run}.jsonl"));
        let header = json!({"journal": 1, "run": run, "pid": pid, "start": 1,
            "name": "fp-x", "command": "deploy", "since": "2026-12-03T10:00:00Z"});
        std::fs::write(&p, format!("{header}\n{lines}")).unwrap();
        p
    }

    #[test]
    fn a_guarded_undo_runs_only_while_its_change_is_there() {
        let guarded = || Resource::Guarded {
            what: "the update of service s".into(),
            check_args: vec!["service".into(), "inspect".into(), "s".into()],
            expect: "r4 2026-12-04T05:00:00Z".into(),
            remove_args: vec!["service".into(), "rollback".into(), "s".into()],
        };
        // The update reached Swarm: the spec carries its labels, so it is rolled back.
        let dir = tempfile::tempdir().unwrap();
        let j = in_dir(dir.path());
        j.set_docker(fake_docker(
            dir.path(),
            r#"case "$1" in inspect|service) [ "$2" = inspect ] && echo "r4 2026-12-04T05:00:00Z";; esac; exit 0"#,
        ));
        j.record(guarded()).unwrap();
        let r = j.undo();
        assert!(r.is_clean(), "{r:?}");
        assert_eq!(
            calls(dir.path()),
            vec!["service inspect s", "service rollback s"]
        );
        // Killed before the update reached Swarm: the spec is the previous one; nothing runs.
        let dir = tempfile::tempdir().unwrap();
        let j = in_dir(dir.path());
        j.set_docker(fake_docker(
            dir.path(),
            r#"[ "$2" = inspect ] && echo "r3 2026-12-04T04:00:00Z"; exit 0"#,
        ));
        j.record(guarded()).unwrap();
        let r = j.undo();
        assert!(r.is_clean(), "{r:?}");
        assert_eq!(calls(dir.path()), vec!["service inspect s"]);
        // The check cannot run: the record stays, naming the command and its condition.
        let dir = tempfile::tempdir().unwrap();
        let j = in_dir(dir.path());
        j.set_docker(fake_docker(
            dir.path(),
            "echo 'Cannot connect to the Docker daemon' >&2; exit 1",
        ));
        j.record(guarded()).unwrap();
        let r = j.undo();
        assert_eq!(r.left.len(), 1, "{r:?}");
        assert!(
            r.left[0]
                .remove_with
                .contains("docker service rollback s (only while"),
            "{r:?}"
        );
    }

    #[test]
    fn a_commit_drops_every_record_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let j = in_dir(dir.path());
        j.set_docker(fake_docker(dir.path(), "exit 0"));
        for what in ["a renamed to a.r1", "b renamed to a", "a started"] {
            let t = j
                .record(Resource::DockerObject {
                    what: what.into(),
                    remove_args: vec!["rename".into(), "x".into(), "y".into()],
                })
                .unwrap();
            j.confirm(t);
        }
        // A temp file that cannot be deleted (a directory) keeps the journal on disk.
        let stuck = dir.path().join("stuck");
        std::fs::create_dir(&stuck).unwrap();
        std::fs::write(stuck.join("f"), "x").unwrap();
        j.record(Resource::TempFile {
            path: stuck.clone(),
        })
        .unwrap();
        let path = j.path().unwrap();
        j.commit().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let drops: Vec<&str> = text.lines().filter(|l| l.contains("\"drop\"")).collect();
        assert_eq!(
            drops.len(),
            1,
            "one commit line, not one per record: {text}"
        );
        let f = read(&path).unwrap();
        assert_eq!(
            f.entries.len(),
            1,
            "only the temp file is left: {:?}",
            f.entries
        );
        assert!(matches!(f.entries[0].1, Resource::TempFile { .. }));
    }

    #[test]
    fn a_commit_line_read_back_drops_all_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let add = |id: u64, n: &str| json!({"add": id, "res": {"kind": "container", "name": n}, "confirmed": true});
        let p = dead_journal(
            dir.path(),
            "1-1-c",
            &format!(
                "{}\n{}\n{}\n{}\n",
                add(1, "a"),
                add(2, "b"),
                add(3, "c"),
                json!({"drop": [1, 3]})
            ),
        );
        let f = read(&p).unwrap();
        let ids: Vec<u64> = f.entries.iter().map(|e| e.0).collect();
        assert_eq!(ids, vec![2]);
    }

    #[test]
    fn a_torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let add = |id: u64, n: &str| json!({"add": id, "res": {"kind": "container", "name": n}, "confirmed": true});
        let p = dead_journal(
            dir.path(),
            "1-1-a",
            &format!(
                "{}\n{}\n{{\"add\":3,\"res\":{{\"kind\":\"cont",
                add(1, "a"),
                add(2, "b")
            ),
        );
        let f = read(&p).unwrap();
        assert!(f.torn);
        assert_eq!(f.entries.len(), 2, "{:?}", f.entries);
        // A garbage line in the middle is skipped too; a file without a header is no journal.
        std::fs::write(
            &p,
            format!(
                "{{\"journal\":1,\"run\":\"r\",\"pid\":1}}\nxx\n{}\n",
                add(1, "a")
            ),
        )
        .unwrap();
        let f = read(&p).unwrap();
        assert!(!f.torn);
        assert_eq!(f.entries.len(), 1);
        std::fs::write(&p, "{\"jour").unwrap();
        assert!(read(&p).is_none());
    }

    #[test]
    fn a_header_never_renamed_into_place_goes_when_its_writer_is_dead() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dead_journal(dir.path(), "9-2-c", "");
        let jdir = dir.path().join("journals");
        let beside = jdir.join(".9-2-c.jsonl.new");
        std::fs::rename(&dead, &beside).unwrap();
        // A live writer's header (this process) stays, and so does a file that is no header.
        let live = jdir.join(".9-3-d.jsonl.new");
        let me = std::process::id();
        let header = json!({"journal": 1, "run": "9-3-d", "pid": me, "start": process_start(me),
            "name": "fp-x", "command": "deploy", "since": "2026-12-03T10:00:00Z"});
        std::fs::write(&live, format!("{header}\n")).unwrap();
        let torn = jdir.join(format!(".{me}-4-e.jsonl.new"));
        std::fs::write(&torn, "{\"journal\": 1, \"ru").unwrap();
        // Torn too, but its name says its writer (a pid above any pid_max) is gone.
        let torn_dead = jdir.join(".4000000000-5-f.jsonl.new");
        std::fs::write(&torn_dead, "{\"journal\": 1, \"ru").unwrap();
        assert!(unfinished_in(&jdir, Some("fp-x"), false).is_empty());
        assert!(!beside.exists(), "the dead writer's header is removed");
        assert!(live.exists(), "a live writer's header is left alone");
        assert!(
            torn.exists(),
            "a torn header of a live writer is left alone"
        );
        assert!(
            !torn_dead.exists(),
            "a torn header of a dead writer is removed"
        );
    }

    #[test]
    fn a_dead_runs_journal_is_found_adopted_and_undone() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("fractalic-env-x");
        std::fs::write(&secret, "K=V\n").unwrap();
        let add = |id: u64, res: Value| json!({"add": id, "res": res, "confirmed": true});
        dead_journal(
            dir.path(),
            "9-1-b",
            &format!(
                "{}\n{}\n{}\n{}\n",
                add(1, json!({"kind": "temp_file", "path": secret})),
                add(2, json!({"kind": "container", "name": "a"})),
                json!({"drop": 2}),
                add(
                    3,
                    json!({"kind": "docker_object", "what": "a renamed", "remove_args": ["rename", "x", "a"]})
                ),
            ),
        );
        let jdir = dir.path().join("journals");
        assert!(unfinished_in(&jdir, Some("fp-other"), false).is_empty());
        let found = unfinished_in(&jdir, Some("fp-x"), true);
        assert_eq!(found.len(), 1);
        let f = found.into_iter().next().unwrap();
        assert_eq!(f.entries.len(), 2);
        assert!(f.describe().contains("deploy of fp-x"), "{}", f.describe());
        // Taken: a second reconcile does not get it at the same time.
        assert!(unfinished_in(&jdir, None, true).is_empty());
        let path = f.path.clone();
        let j = Journal::adopt(f, fake_docker(dir.path(), "exit 0"));
        assert_eq!(j.run_id(), "9-1-b");
        let r = j.undo();
        assert!(r.is_clean(), "{r:?}");
        assert_eq!(calls(dir.path()), vec!["rename x a"]);
        assert!(!secret.exists(), "the dead run's secret file is deleted");
        assert!(!path.exists(), "a finished reconcile leaves no journal");
    }

    #[test]
    fn an_undo_that_cannot_run_keeps_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let j = in_dir(dir.path());
        j.set_docker(fake_docker(
            dir.path(),
            "echo 'Cannot connect to the Docker daemon' >&2; exit 1",
        ));
        let a = j.record(Resource::Container { name: "a".into() }).unwrap();
        j.confirm(a);
        let path = j.path().unwrap();
        let r = j.undo();
        assert!(r.left.iter().any(|l| l.what == "container a"), "{r:?}");
        drop(j);
        assert!(path.exists(), "what could not be undone stays recorded");
        let f = unfinished_in(path.parent().unwrap(), Some("fp-x"), false);
        // Our own process is alive: a journal it dropped is found only once it is dead, but
        // its records are still there for that moment.
        assert!(f.is_empty());
        assert_eq!(read(&path).unwrap().entries.len(), 1);
    }
}
