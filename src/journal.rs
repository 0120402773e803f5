//! The undo journal: every resource a run creates is recorded as it is created (what it is, how
//! to remove it) and undone in reverse order on failure, Ctrl-C or SIGTERM; the report says
//! what the undo really did and what it could not do. Each run owns its journal; live journals
//! are also listed process-wide, so a signal handler can undo every run of the process (the
//! REST server runs several deploys at once).

use crate::docker::{Docker, QUICK};
use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

/// Label carrying the run id on everything a run creates, so an undo finds what an interrupted
/// create made even when its name is unknown or already somebody else's.
pub const LABEL_RUN: &str = "fractalic-publisher.run";

/// Something a run created (or is creating) and how it is undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
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
}

impl Resource {
    /// What it is, for messages ("container fp-x", "temp file /tmp/fractalic-env-Ab12").
    pub fn describe(&self) -> String {
        match self {
            Resource::Container { name } => format!("container {name}"),
            Resource::TempFile { path } => format!("temp file {}", path.display()),
            Resource::StartedContainer { name } => format!("container {name} (started)"),
            Resource::DockerObject { what, .. } => what.clone(),
        }
    }
}

/// A recorded resource, for [`Journal::confirm`], [`Journal::forget`] and [`Journal::undo_now`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token(u64);

impl Token {
    /// The number plugins hold for this record (see `docker_run` in the host API).
    pub fn id(self) -> u64 {
        self.0
    }

    /// The token of record number `id` (an unknown one is simply not found).
    pub fn from_id(id: u64) -> Token {
        Token(id)
    }
}

/// Something the undo could not remove.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Left {
    /// What it is ("container fp-x").
    pub what: String,
    /// Why it is still there (the failed command's message).
    pub error: String,
    /// The command that removes it by hand.
    pub remove_with: String,
}

/// What an undo did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UndoReport {
    /// What was removed, in the order it happened ("removed container fp-x").
    pub undone: Vec<String>,
    /// What could not be removed.
    pub left: Vec<Left>,
}

impl UndoReport {
    /// Nothing is left.
    pub fn is_clean(&self) -> bool {
        self.left.is_empty()
    }

    /// Adds `other` to this report.
    pub fn merge(&mut self, other: UndoReport) {
        self.undone.extend(other.undone);
        self.left.extend(other.left);
    }

    /// One line: what was removed and what is left with the command that removes it, e.g.
    /// "removed container fp-x, deleted temp file /tmp/f; nothing of this run is left".
    pub fn summary(&self) -> String {
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
    pub fn to_json(&self) -> Value {
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
}

/// One run's record of what it created. See the module docs.
#[derive(Debug)]
pub struct Journal {
    key: u64,
    run_id: String,
    docker: OnceLock<Arc<Docker>>,
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A run id unique on this host: process id, a per-process counter and the time.
fn new_run_id(key: u64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000_000_000);
    format!("{}-{key}-{nanos:x}", std::process::id())
}

impl Journal {
    /// A new, empty journal, listed among the live ones until it is dropped.
    pub fn new() -> Arc<Journal> {
        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed) + 1;
        let j = Arc::new(Journal {
            key,
            run_id: new_run_id(key),
            docker: OnceLock::new(),
            state: Mutex::new(State::default()),
            undoing: Mutex::new(()),
        });
        let mut live = lock(&LIVE);
        live.retain(|(_, w)| w.strong_count() > 0);
        live.push((key, Arc::downgrade(&j)));
        j
    }

    /// The docker handle undo steps use (the first one given wins).
    pub fn set_docker(&self, docker: Arc<Docker>) {
        let _ = self.docker.set(docker);
    }

    /// This run's id, the value of [`LABEL_RUN`].
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// `fractalic-publisher.run=ID`, for `--label` and `--filter label=`.
    pub fn run_label(&self) -> String {
        format!("{LABEL_RUN}={}", self.run_id)
    }

    /// Records a resource about to be created (record first, then create, so an interrupt in
    /// between undoes it too). Fails with [`Error::Interrupted`] once the journal was undone.
    pub fn record(&self, resource: Resource) -> Result<Token> {
        let mut s = lock(&self.state);
        if s.closed {
            return Err(Error::Interrupted);
        }
        s.next += 1;
        let id = s.next;
        s.entries.push(Entry {
            id,
            resource,
            confirmed: false,
            last_error: None,
        });
        Ok(Token(id))
    }

    /// Creates a temp file (mode 0600) holding `contents` and records it, atomically with the
    /// check that the journal is still open: the file never exists unrecorded.
    pub fn temp_file(&self, prefix: &str, contents: &[u8]) -> Result<(Token, PathBuf)> {
        use std::io::Write;
        let mut s = lock(&self.state);
        if s.closed {
            return Err(Error::Interrupted);
        }
        let io = |path: &Path, e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        };
        let mut f = tempfile::Builder::new()
            .prefix(prefix)
            .tempfile()
            .map_err(|e| io(&std::env::temp_dir(), e))?;
        let path = f.path().to_path_buf();
        if let Err(e) = f.write_all(contents).and_then(|()| f.flush()) {
            return Err(io(&path, e)); // dropping `f` deletes the file
        }
        let path = f.into_temp_path().keep().map_err(|e| io(&path, e.error))?;
        s.next += 1;
        let id = s.next;
        s.entries.push(Entry {
            id,
            resource: Resource::TempFile { path: path.clone() },
            confirmed: true,
            last_error: None,
        });
        Ok((Token(id), path))
    }

    /// The resource exists for sure (the create succeeded): its name is ours to remove.
    pub fn confirm(&self, token: Token) {
        if let Some(e) = lock(&self.state)
            .entries
            .iter_mut()
            .find(|e| e.id == token.0)
        {
            e.confirmed = true;
        }
    }

    /// Drops the record without undoing it (the create failed and made nothing, or the
    /// resource is no longer this run's concern).
    pub fn forget(&self, token: Token) {
        lock(&self.state).entries.retain(|e| e.id != token.0);
    }

    /// The token of the recorded container `name`, if any.
    pub fn container(&self, name: &str) -> Option<Token> {
        lock(&self.state)
            .entries
            .iter()
            .find(|e| matches!(&e.resource, Resource::Container { name: n } if n == name))
            .map(|e| Token(e.id))
    }

    /// Undoes one resource now (a temp file that has served its purpose, a container the
    /// plugin removes to retry). On failure it stays recorded, so the final undo tries again.
    pub fn undo_now(&self, token: Token) -> UndoReport {
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
    pub fn commit(&self) -> Result<UndoReport> {
        let temp: Vec<Token> = {
            let mut s = lock(&self.state);
            if s.closed {
                return Err(Error::Interrupted);
            }
            s.entries
                .retain(|e| matches!(e.resource, Resource::TempFile { .. }));
            s.entries.iter().map(|e| Token(e.id)).collect()
        };
        let mut r = UndoReport::default();
        for t in temp {
            r.merge(self.undo_now(t));
        }
        Ok(r)
    }

    /// Undoes everything recorded, newest first, then removes whatever still carries the run
    /// label and checks that nothing does; closes the journal. Returns what this pass did and
    /// what is left.
    pub fn undo(&self) -> UndoReport {
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
        lock(&self.state).history.extend(report.undone.clone());
        report.left = self.report().left;
        report
    }

    /// Everything undone so far by full undos, and what is still recorded (with the last
    /// error, if an undo failed), without running anything.
    pub fn report(&self) -> UndoReport {
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
    pub fn undo_all_live() -> UndoReport {
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
    pub fn report_all_live() -> UndoReport {
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
            Outcome::Done(_) => s.entries.retain(|e| e.id != id),
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
            // Not known to exist, and the name may be someone else's: the label sweep finds it.
            Resource::Container { .. } if !confirmed => Outcome::Done(Vec::new()),
            Resource::Container { name } => {
                let args = ["rm", "-f", "-v", name.as_str()];
                match self.docker_undo(&args, QUICK, "No such container") {
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
                match self.docker_undo(&args, QUICK + Duration::from_secs(10), "No such container")
                {
                    Ok(()) => Outcome::Done(vec![format!("stopped {name} again")]),
                    Err(e) => failed(e, format!("docker stop {name}")),
                }
            }
            Resource::DockerObject { what, remove_args } => {
                let args: Vec<&str> = remove_args.iter().map(String::as_str).collect();
                match self.docker_undo(&args, QUICK, "No such") {
                    Ok(()) => Outcome::Done(vec![format!("removed {what}")]),
                    Err(e) => failed(e, format!("docker {}", remove_args.join(" "))),
                }
            }
        }
    }

    /// Runs an undo step; `absent` in docker's stderr means there was nothing to remove.
    fn docker_undo(
        &self,
        args: &[&str],
        timeout: Duration,
        absent: &str,
    ) -> std::result::Result<(), String> {
        let Some(d) = self.docker.get() else {
            return Err("no docker handle to undo with".into());
        };
        match d.run_undo(args, timeout) {
            Ok((Some(0), _)) => Ok(()),
            Ok((_, out)) if out.stderr.contains(absent) || out.stderr.contains("not found") => {
                Ok(())
            }
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

    fn sweep_label_pass(&self) -> UndoReport {
        let mut r = UndoReport::default();
        let label = self.run_label();
        let filter = format!("label={label}");
        let list = |d: &Docker| -> std::result::Result<Vec<String>, String> {
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
        };
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
            match self.docker_undo(&["rm", "-f", "-v", name], QUICK, "No such container") {
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
        if !lock(&self.state).entries.is_empty() {
            self.undo();
        }
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

    fn calls(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn temp_files_are_0600_and_deleted_by_the_undo() {
        let j = Journal::new();
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
        let j = Journal::new();
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
        let j = Journal::new();
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
        let j = Journal::new();
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
        let j = Journal::new();
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
        let j = Journal::new();
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
        let j = Journal::new();
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
        let j1 = Journal::new();
        let j2 = Journal::new();
        let (_, p1) = j1.temp_file("fractalic-test-", b"1").unwrap();
        let (_, p2) = j2.temp_file("fractalic-test-", b"2").unwrap();
        let all = Journal::report_all_live();
        for p in [&p1, &p2] {
            assert!(all
                .left
                .iter()
                .any(|l| l.what == format!("temp file {}", p.display())));
        }
        let j3 = Journal::new();
        let (_, p3) = j3.temp_file("fractalic-test-", b"3").unwrap();
        drop(j3);
        assert!(!p3.exists(), "a dropped journal undoes what it still holds");
        // (undo_all_live would also undo other tests' journals in this process.)
        j1.undo();
        j2.undo();
        assert!(!p1.exists() && !p2.exists());
        assert!(j1.record(Resource::Container { name: "x".into() }).is_err());
    }
}
