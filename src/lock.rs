//! One lock per deployment name, taken by every command that changes a deployment (deploy,
//! update, rollback, stop, start, rm) in the CLI and the REST server alike, so two of them never
//! interleave on one name. An flock on `NAME.lock` in the user's cache directory: the kernel
//! drops it when the holder dies (even by SIGKILL), so a dead holder's lock is simply free.
//! The file also says who holds it (pid, command, since) for the message of the one refused.
//! A holder that dies leaves its line; the next holder sees it ([`DeployLock::died_holding`])
//! and, unless its reconcile repaired what the dead one left ([`DeployLock::mark_repaired`]),
//! puts that line back when it lets go: releasing a lock never erases that record.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A held deployment lock; dropping it lets go.
#[derive(Debug)]
pub(crate) struct DeployLock {
    file: File,
    name: String,
    existed: bool,
    stale: Option<String>,
    /// The dead holder's line as it was, put back on release unless repaired.
    stale_raw: Option<String>,
    repaired: bool,
}

impl DeployLock {
    /// The directory holding the lock files: next to the port lock.
    pub(crate) fn dir() -> PathBuf {
        crate::ports::PortLock::path()
            .parent()
            .map_or_else(std::env::temp_dir, Path::to_path_buf)
            .join("locks")
    }

    /// Takes the lock of deployment `name` for `command` (e.g. "deploy"), waiting up to
    /// `wait` (zero: fail at once). Refused: [`Error::Locked`] (exit 2) naming the holder.
    pub(crate) fn acquire(name: &str, command: &str, wait: Duration) -> Result<DeployLock> {
        Self::acquire_in(&Self::dir(), name, command, wait)
    }

    /// [`DeployLock::acquire`] with the lock files in `dir`.
    pub(crate) fn acquire_in(
        dir: &Path,
        name: &str,
        command: &str,
        wait: Duration,
    ) -> Result<Self> {
        crate::config::check_container_name(name)?;
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let path = dir.join(format!("{name}.lock"));
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::Io {
                path: path.clone(),
                source: e,
            })?;
        let end = Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(Error::Io { path, source: e });
                }
            }
            if Instant::now() >= end {
                let holder = holder_of(&path);
                let waited = if wait.is_zero() {
                    "nothing was changed; wait for it to finish, or pass --lock-wait SECS to wait for it".to_string()
                } else {
                    format!(
                        "waited {}s (--lock-wait); nothing was changed; try again later",
                        wait.as_secs()
                    )
                };
                return Err(Error::Locked {
                    what: format!("deployment {name} is locked by {holder}"),
                    hint: waited,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // A holder that finished empties the file; one that still names a holder died holding
        // it (SIGKILL): what it was doing may need repair (see update::recover).
        let stale = Some(holder_of(&path)).filter(|h| h != "another command");
        let stale_raw = stale
            .as_ref()
            .and_then(|_| std::fs::read_to_string(&path).ok());
        let mut lock = DeployLock {
            file,
            name: name.to_string(),
            existed,
            stale,
            stale_raw,
            repaired: false,
        };
        lock.write_holder(command);
        Ok(lock)
    }

    /// The deployment this lock is for.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Some command of this tool took this name's lock before on this host (so the name is
    /// likely deployed: worth reading its live release early).
    pub(crate) fn seen_before(&self) -> bool {
        self.existed
    }

    /// The holder that died holding the lock (its pid, command and time), if one did.
    pub(crate) fn died_holding(&self) -> Option<&str> {
        self.stale.as_deref()
    }

    /// The command (`deploy`, `rm` ...) of the holder that died holding the lock, if one did.
    pub(crate) fn died_command(&self) -> Option<String> {
        let raw = self.stale_raw.as_deref()?;
        let v: serde_json::Value = serde_json::from_str(raw).ok()?;
        v["command"].as_str().map(str::to_string)
    }

    /// What the dead holder left was repaired (or there was nothing to repair): on release the
    /// file is emptied.
    pub(crate) fn mark_repaired(&mut self) {
        self.repaired = true;
    }

    /// Would taking this name's lock find a holder's line (one running now, or one that died)?
    /// A cheap look (one read) for commands that only reconcile when something may be wrong.
    pub(crate) fn may_be_stale(name: &str) -> bool {
        std::fs::metadata(Self::dir().join(format!("{name}.lock"))).is_ok_and(|m| m.len() > 0)
    }

    /// The names whose lock file holds a holder's line (running or dead).
    pub(crate) fn names_with_holders() -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(Self::dir()) else {
            return Vec::new();
        };
        let mut v: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.metadata().is_ok_and(|m| m.len() > 0))
            .filter_map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_suffix(".lock")
                    .map(str::to_string)
            })
            .collect();
        v.sort();
        v
    }

    fn write_holder(&mut self, command: &str) {
        let text = serde_json::json!({
            "pid": std::process::id(),
            "command": command,
            "since": crate::clock::now_utc(),
        })
        .to_string();
        self.write_text(&text);
    }

    fn write_text(&mut self, text: &str) {
        let f = &mut self.file;
        let _ = f
            .rewind()
            .and_then(|()| f.set_len(0))
            .and_then(|()| f.write_all(text.as_bytes()))
            .and_then(|()| f.flush());
    }
}

impl Drop for DeployLock {
    fn drop(&mut self) {
        match self.stale_raw.take() {
            // Not repaired: the record that a holder died stays for the next command.
            Some(raw) if !self.repaired => self.write_text(&raw),
            _ => {
                let _ = self.file.set_len(0);
            }
        }
        let _ = self.file.unlock();
    }
}

/// "pid 123 (deploy, since 2026-11-27T10:00:00Z)" from the lock file, or a plain "another
/// command" when it cannot be read (it is being written).
fn holder_of(path: &Path) -> String {
    let mut s = String::new();
    let read = File::open(path).and_then(|mut f| f.read_to_string(&mut s));
    match read
        .ok()
        .and_then(|_| serde_json::from_str::<serde_json::Value>(&s).ok())
    {
        Some(v) => format!(
            "pid {} ({}, since {})",
            v["pid"],
            v["command"].as_str().unwrap_or("?"),
            v["since"].as_str().unwrap_or("?")
        ),
        None => "another command".to_string(),
    }
}

/// Parses `--lock-wait SECS`: a whole number of seconds from 0 (fail at once) to 3600.
pub(crate) fn parse_wait(s: &str) -> Result<Duration> {
    match s.trim().parse::<u64>() {
        Ok(n) if n <= 3600 => Ok(Duration::from_secs(n)),
        _ => Err(Error::input(
            format!("bad --lock-wait {s:?}"),
            "give a whole number of seconds from 0 (fail at once) to 3600",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_first_named_then_waits() {
        let dir = tempfile::tempdir().unwrap();
        let a = DeployLock::acquire_in(dir.path(), "fp-x", "deploy", Duration::ZERO).unwrap();
        let e = DeployLock::acquire_in(dir.path(), "fp-x", "rollback", Duration::ZERO).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let s = e.to_string();
        assert!(s.contains(&format!("pid {}", std::process::id())), "{s}");
        assert!(s.contains("(deploy, since "), "{s}");
        assert!(a.died_holding().is_none() && !a.seen_before());
        // Another name is independent.
        let _b = DeployLock::acquire_in(dir.path(), "fp-y", "deploy", Duration::ZERO).unwrap();
        // A waiter gets it once the holder lets go.
        let d = dir.path().to_path_buf();
        let (started, is_started) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            started.send(()).unwrap();
            DeployLock::acquire_in(&d, "fp-x", "deploy", Duration::from_secs(10)).map(|_| ())
        });
        is_started.recv().unwrap();
        // While `a` holds it, the waiter keeps waiting (watched for a few of its polls).
        let watch = Instant::now();
        while watch.elapsed() < Duration::from_millis(150) {
            assert!(!t.is_finished(), "the waiter got a held lock");
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(a);
        t.join().unwrap().unwrap();
    }

    #[test]
    fn a_holder_that_died_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        // What a holder killed with SIGKILL leaves: its line in a file nobody locks.
        std::fs::write(
            dir.path().join("fp-x.lock"),
            r#"{"pid":99999,"command":"deploy","since":"2026-11-27T10:00:00Z"}"#,
        )
        .unwrap();
        let l = DeployLock::acquire_in(dir.path(), "fp-x", "deploy", Duration::ZERO).unwrap();
        assert!(l.seen_before());
        assert_eq!(
            l.died_holding(),
            Some("pid 99999 (deploy, since 2026-11-27T10:00:00Z)")
        );
        // Released before a repair ran (a `stop` that did not reconcile): the record stays.
        drop(l);
        let mut l = DeployLock::acquire_in(dir.path(), "fp-x", "stop", Duration::ZERO).unwrap();
        assert_eq!(
            l.died_holding(),
            Some("pid 99999 (deploy, since 2026-11-27T10:00:00Z)")
        );
        l.mark_repaired();
        drop(l);
        let l = DeployLock::acquire_in(dir.path(), "fp-x", "deploy", Duration::ZERO).unwrap();
        assert!(
            l.died_holding().is_none(),
            "a release after the repair leaves nothing stale"
        );
    }

    #[test]
    fn bad_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = DeployLock::acquire_in(dir.path(), "../x", "deploy", Duration::ZERO).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
