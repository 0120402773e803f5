//! Reconcile first: before a command reads or changes a deployment, the unfinished work of runs
//! that died on it (SIGKILL, OOM, a reboot) is finished: each dead run's durable journal
//! (src/journal.rs) is adopted and undone, newest record first, under the deployment's lock,
//! so the deployment is back on the complete release it was on before that run. A lock whose
//! holder died without a journal (an older version of this tool) gets the older repair
//! ([`crate::update::recover`]). What cannot be undone now (the Docker daemon down, a step that
//! fails) stays in the journal, and the command says so with the command that repairs it
//! (docs/crash-safety.md).

use crate::docker::Docker;
use crate::journal::{self, Journal, Left};
use crate::lock::DeployLock;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Unfinished work that a reconcile could not finish.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Unrepaired {
    /// The deployment.
    pub name: String,
    /// Which run left it ("deploy of fp-x by pid 123 (killed; began ...)").
    pub what: String,
    /// What is still recorded, why it could not be undone, and how to do it by hand.
    pub left: Vec<Left>,
    /// The command that repairs it once the cause is gone.
    pub repair: String,
}

/// What a reconcile did and what it could not do.
#[derive(Debug, Clone, Default)]
pub(crate) struct Repair {
    /// What was repaired, one line each.
    pub fixed: Vec<String>,
    /// What is still unfinished.
    pub unfinished: Vec<Unrepaired>,
}

impl Repair {
    /// Adds `other`.
    pub(crate) fn merge(&mut self, other: Repair) {
        self.fixed.extend(other.fixed);
        self.unfinished.extend(other.unfinished);
    }

    /// The unfinished work of `name`, as one line ("" when there is none).
    pub(crate) fn problem(&self, name: &str) -> Option<String> {
        let u: Vec<&Unrepaired> = self.unfinished.iter().filter(|u| u.name == name).collect();
        let first = u.first()?;
        let mut s = format!("unfinished work of a dead run on {name}: {}", first.what);
        for l in u.iter().flat_map(|u| &u.left) {
            s.push_str(&format!(
                "; not yet undone: {} ({}; by hand: {})",
                l.what, l.error, l.remove_with
            ));
        }
        s.push_str(&format!("; repair it with: {}", first.repair));
        Some(s)
    }

    /// `{"unfinished": ..., "repair": ...}` fields for `status`/`ps` JSON.
    pub(crate) fn to_json(&self, name: &str) -> Value {
        let u: Vec<&Unrepaired> = self.unfinished.iter().filter(|u| u.name == name).collect();
        json!({
            "unfinished": u,
            "repair": u.first().map(|u| u.repair.clone()),
        })
    }
}

/// How long a reconcile lets a dead run's orphaned docker calls finish before killing them.
const ORPHAN_WAIT: Duration = Duration::from_secs(10);

fn repair_command(name: &str) -> String {
    format!("fractalic-publisher status {name} (once Docker answers; it runs the undo again)")
}

/// Finishes what only a platform can: an `rm` that died half-way is carried to its end (the
/// user asked for the deployment to go; undoing half a removal cannot bring back what went).
/// Provided by the caller that loads plugins ([`crate::manage::Manager`]).
pub(crate) trait Finisher {
    /// Removes whatever is left of deployment `name` (nothing left: `Ok(empty)`); returns what
    /// it removed.
    fn finish_removal(&self, name: &str) -> crate::error::Result<Vec<String>>;
}

/// Reconciles `lock`'s deployment, whose lock the caller holds: every dead run's journal for
/// it is undone; a dead `rm` is finished by `fin`; a dead holder without a journal gets
/// [`crate::update::recover`]. When nothing is left unfinished the lock is marked repaired.
pub(crate) fn under_lock(
    docker: &Arc<Docker>,
    lock: &mut DeployLock,
    fin: &dyn Finisher,
) -> Repair {
    let name = lock.name().to_string();
    let mut r = Repair::default();
    // Docker calls a dead run left running end (or are killed) before its undo starts.
    // The orphans may be any dead run's (the lists do not say for which deployment), and
    // letting them end changes nothing of this one: said first, but no cause for a proxy resync.
    let orphans = crate::docker::settle_orphans(std::time::Instant::now() + ORPHAN_WAIT);
    for f in journal::unfinished(Some(&name), true) {
        let what = f.describe();
        let j = Journal::adopt(f, Arc::clone(docker));
        let undo = j.undo();
        if undo.is_clean() {
            r.fixed.push(format!(
                "finished the unfinished {what}: {}",
                undo.summary()
            ));
        } else {
            r.unfinished.push(Unrepaired {
                name: name.clone(),
                what,
                left: undo.left,
                repair: repair_command(&name),
            });
        }
    }
    let holder = lock.died_holding().map(str::to_string);
    if let (Some(holder), Some("rm")) = (&holder, lock.died_command().as_deref()) {
        match fin.finish_removal(&name) {
            Ok(done) if done.is_empty() => {}
            Ok(done) => r.fixed.push(format!(
                "finished the removal {holder} began: removed {}",
                done.join(", ")
            )),
            Err(e) => r.unfinished.push(Unrepaired {
                name: name.clone(),
                what: format!("the removal {holder} began"),
                left: vec![Left {
                    what: format!("what is left of {name}"),
                    error: e.to_string(),
                    remove_with: format!("fractalic-publisher rm --force {name}"),
                }],
                repair: format!("fractalic-publisher rm --force {name}"),
            }),
        }
    } else if let Some(holder) = holder {
        // The live container of an update killed half-way may be renamed aside (a run of a
        // version without journals, or one killed before its first record).
        match crate::update::recover(docker, &name) {
            Ok(done) => r.fixed.extend(done),
            Err(e) => r.unfinished.push(Unrepaired {
                name: name.clone(),
                what: format!("the command {holder} died holding the lock"),
                left: vec![Left {
                    what: format!("the containers of {name}"),
                    error: format!("cannot check them: {e}"),
                    remove_with: format!(
                        "docker ps -a --filter label=fractalic-publisher.deployment={name}"
                    ),
                }],
                repair: repair_command(&name),
            }),
        }
    }
    if !r.fixed.is_empty() {
        resync_proxy(docker, &name, &mut r);
    }
    if orphans > 0 {
        r.fixed.insert(
            0,
            format!("waited for {orphans} docker call(s) a killed run left running"),
        );
    }
    if r.unfinished.is_empty() {
        lock.mark_repaired();
    }
    r
}

/// The front proxy's routes follow the containers, but only when they are applied: an undone
/// or finished proxied run may have left the route on a container it removed or renamed (the
/// route of a killed update already on the new container, which the undo removed). Applies
/// what Docker's state calls for (nothing when the proxy is missing and nothing is proxied);
/// a failure is unfinished work whose repair is `proxy up`.
fn resync_proxy(docker: &Arc<Docker>, name: &str, r: &mut Repair) {
    let p = crate::proxy::Proxy::new(docker, crate::proxy::image(None));
    match p.sync() {
        Ok(done) => r
            .fixed
            .extend(done.into_iter().map(|d| format!("front proxy: {d}"))),
        Err(e) => r.unfinished.push(Unrepaired {
            name: name.to_string(),
            what: "the front proxy's routes after the repair".into(),
            left: vec![Left {
                what: format!("the proxy's route of {name}"),
                error: e.to_string(),
                remove_with: "fractalic-publisher proxy up".into(),
            }],
            repair: "fractalic-publisher proxy up".into(),
        }),
    }
}

/// For a command that only reads `name` (`status`, `history`, `ps`): when a dead run may have
/// left work on it (a dead journal, or a lock file naming a holder), takes the lock without
/// waiting and reconciles. A lock held by a live command is left alone: that command finishes
/// or undoes its own work (and reconciled before it began).
pub(crate) fn first(docker: &Arc<Docker>, name: &str, fin: &dyn Finisher) -> Repair {
    if crate::config::check_container_name(name).is_err() {
        return Repair::default();
    }
    if journal::unfinished(Some(name), false).is_empty() && !DeployLock::may_be_stale(name) {
        return Repair::default();
    }
    match DeployLock::acquire(name, "reconcile", Duration::ZERO) {
        Ok(mut l) => under_lock(docker, &mut l, fin),
        Err(_) => Repair::default(),
    }
}

/// [`first`] for every name with unfinished work (`ps`, `serve` at start-up).
pub(crate) fn all(docker: &Arc<Docker>, fin: &dyn Finisher) -> Repair {
    let mut names: Vec<String> = journal::unfinished(None, false)
        .into_iter()
        .map(|f| f.name)
        .filter(|n| !n.is_empty())
        .collect();
    names.extend(DeployLock::names_with_holders());
    names.sort();
    names.dedup();
    let mut r = Repair::default();
    for n in names {
        r.merge(first(docker, &n, fin));
    }
    r
}

/// Says what a reconcile under a command's lock repaired (warnings), and fails with what it
/// could not: a command that changes a deployment does not build on unfinished work.
pub(crate) fn report(
    name: &str,
    r: &Repair,
    progress: &crate::progress::Progress,
) -> crate::error::Result<()> {
    for f in &r.fixed {
        progress.warn(format!("repaired {name}: {f}"));
    }
    match r.problem(name) {
        None => Ok(()),
        Some(p) => Err(crate::error::Error::failed(format!(
            "{p}; nothing else was changed"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfinished_work_is_said_with_what_is_left_and_the_repair() {
        let mut r = Repair::default();
        assert!(r.problem("fp-x").is_none());
        r.unfinished.push(Unrepaired {
            name: "fp-x".into(),
            what: "deploy of fp-x by pid 7 (its process is gone; began T, run 7-1-a)".into(),
            left: vec![Left {
                what: "fp-x renamed to fp-x.r1-ab".into(),
                error: "Cannot connect to the Docker daemon".into(),
                remove_with: "docker rename fp-x.r1-ab fp-x".into(),
            }],
            repair: repair_command("fp-x"),
        });
        assert!(r.problem("fp-y").is_none(), "another name is not affected");
        let p = r.problem("fp-x").unwrap();
        assert!(
            p.starts_with("unfinished work of a dead run on fp-x: deploy of fp-x by pid 7"),
            "{p}"
        );
        assert!(
            p.contains("not yet undone: fp-x renamed to fp-x.r1-ab (Cannot connect"),
            "{p}"
        );
        assert!(p.contains("by hand: docker rename fp-x.r1-ab fp-x"), "{p}");
        assert!(
            p.contains("repair it with: fractalic-publisher status fp-x"),
            "{p}"
        );
        let j = r.to_json("fp-x");
        assert_eq!(
            j["unfinished"][0]["left"][0]["remove_with"],
            "docker rename fp-x.r1-ab fp-x"
        );
        assert!(j["repair"]
            .as_str()
            .unwrap()
            .starts_with("fractalic-publisher status fp-x"));
        let progress = crate::progress::Progress::stderr(true);
        let e = report("fp-x", &r, &progress).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("nothing else was changed"), "{e}");
    }
}
