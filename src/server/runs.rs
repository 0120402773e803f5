//! Deploy runs the server knows: each keeps its whole event log so any client can (re-)attach
//! and replay it; names in flight are refused a second deploy; the number of concurrent deploys
//! is capped.

use crate::progress::Event;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Finished runs kept for re-attaching (oldest dropped first).
pub(crate) const KEEP_FINISHED: usize = 200;

/// One deploy's event log.
pub(crate) struct Run {
    pub id: String,
    name: std::sync::OnceLock<String>,
    state: Mutex<RunState>,
    changed: Condvar,
}

struct RunState {
    events: Vec<Event>,
    done: bool,
}

impl Run {
    /// A run with no events yet; its deployment name is set once validation found it.
    pub(crate) fn new(id: &str) -> Run {
        Run {
            id: id.to_string(),
            name: std::sync::OnceLock::new(),
            state: Mutex::new(RunState {
                events: Vec::new(),
                done: false,
            }),
            changed: Condvar::new(),
        }
    }

    /// The deployment's name ("" until known).
    pub(crate) fn name(&self) -> &str {
        self.name.get().map_or("", String::as_str)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RunState> {
        crate::sync::lock(&self.state)
    }

    /// Appends an event (the final one marks the run done) and wakes every reader.
    pub(crate) fn push(&self, e: Event) {
        let mut st = self.lock();
        if e.is_final() {
            st.done = true;
        }
        st.events.push(e);
        self.changed.notify_all();
    }

    /// Has the final event been recorded?
    #[cfg(test)]
    pub(crate) fn done(&self) -> bool {
        self.lock().done
    }

    /// Events with `seq > after`, waiting up to `wait` for one when there is none yet.
    /// Returns them and whether the run is done.
    pub(crate) fn events_after(&self, after: u64, wait: Duration) -> (Vec<Event>, bool) {
        let mut st = self.lock();
        let fresh = |st: &RunState| st.events.iter().any(|e| e.seq > after);
        if !fresh(&st) && !st.done {
            st = self
                .changed
                .wait_timeout_while(st, wait, |st| !fresh(st) && !st.done)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        let out = st
            .events
            .iter()
            .filter(|e| e.seq > after)
            .cloned()
            .collect();
        (out, st.done)
    }

    /// Waits until the run is done or `wait` passes; true when done.
    pub(crate) fn wait_done(&self, wait: Duration) -> bool {
        let st = self.lock();
        let st = self
            .changed
            .wait_timeout_while(st, wait, |st| !st.done)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0);
        st.done
    }

    /// Ends a run that has no final event yet with an `error` event saying `why` (the server
    /// is shutting down and rolled it back). Does nothing to a finished run.
    pub(crate) fn fail_unfinished(&self, why: &str) {
        let mut st = self.lock();
        if st.done {
            return;
        }
        let (seq, id) = match st.events.last() {
            Some(e) => (e.seq + 1, e.deployment_id.clone()),
            None => (1, self.id.clone()),
        };
        let failure = serde_json::json!({
            "success": false,
            "message": "Deployment failed",
            "deployment_id": self.name(),
            "run_id": id,
            "endpoint_url": null,
            "url": null,
            "error": why,
            "error_kind": "interrupted",
            "exit_code": crate::error::exit::INTERRUPTED,
            "metadata": null,
        });
        st.events.push(Event {
            deployment_id: id,
            seq,
            timestamp: crate::progress::timestamp(),
            stage: crate::progress::Stage::Error,
            progress: 100,
            kind: crate::progress::Kind::Error,
            message: format!("Deployment failed: {why}"),
            error: Some(why.to_string()),
            result: None,
            failure: Some(failure),
        });
        st.done = true;
        self.changed.notify_all();
    }

    /// The final event, once there is one.
    pub(crate) fn last(&self) -> Option<Event> {
        let st = self.lock();
        st.events.last().filter(|e| e.is_final()).cloned()
    }
}

/// Why a run could not begin.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// A deploy of this name is in flight (its run id).
    NameBusy(String),
    /// The server is shutting down.
    Closed,
    /// `--max-deploys` runs are in flight.
    Full(usize),
}

/// Every run of this server.
pub(crate) struct Runs {
    max: usize,
    /// Set when the server shuts down: no new run begins.
    closed: std::sync::atomic::AtomicBool,
    inner: Mutex<Inner>,
    idle: Condvar,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<String, Arc<Run>>,
    active: HashMap<String, Arc<Run>>,
    finished: VecDeque<String>,
}

impl Runs {
    /// A registry allowing `max` concurrent deploys.
    pub(crate) fn new(max: usize) -> Runs {
        Runs {
            max: max.max(1),
            closed: std::sync::atomic::AtomicBool::new(false),
            inner: Mutex::new(Inner::default()),
            idle: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }

    /// Registers `run` as the deploy of `name`, unless that name is in flight or the server is
    /// at its limit.
    pub(crate) fn begin(&self, run: &Arc<Run>, name: &str) -> Result<(), Refused> {
        let mut g = self.lock();
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Refused::Closed);
        }
        if let Some(r) = g.active.get(name) {
            return Err(Refused::NameBusy(r.id.clone()));
        }
        if g.active.len() >= self.max {
            return Err(Refused::Full(self.max));
        }
        let _ = run.name.set(name.to_string());
        g.active.insert(name.to_string(), Arc::clone(run));
        g.by_id.insert(run.id.clone(), Arc::clone(run));
        Ok(())
    }

    /// The run is over (or never started): the name is free again; the log stays for replays.
    pub(crate) fn end(&self, run: &Run) {
        let mut g = self.lock();
        if g.active.get(run.name()).is_some_and(|r| r.id == run.id) {
            g.active.remove(run.name());
        }
        g.finished.push_back(run.id.clone());
        while g.finished.len() > KEEP_FINISHED {
            if let Some(old) = g.finished.pop_front() {
                g.by_id.remove(&old);
            }
        }
        self.idle.notify_all();
    }

    /// No new run begins from now on (the server is shutting down).
    pub(crate) fn close(&self) {
        let _g = self.lock();
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Ends every run still in flight with an error event saying `why`.
    pub(crate) fn fail_unfinished(&self, why: &str) {
        let active: Vec<Arc<Run>> = self.lock().active.values().cloned().collect();
        for r in active {
            r.fail_unfinished(why);
        }
    }

    /// The run with this id (running or finished).
    pub(crate) fn get(&self, id: &str) -> Option<Arc<Run>> {
        self.lock().by_id.get(id).cloned()
    }

    /// Is a deploy of `name` in flight?
    pub(crate) fn busy(&self, name: &str) -> Option<String> {
        self.lock().active.get(name).map(|r| r.id.clone())
    }

    /// How many deploys are in flight.
    pub(crate) fn active(&self) -> usize {
        self.lock().active.len()
    }

    /// Waits until no deploy is in flight or `wait` passes; true when idle.
    pub(crate) fn wait_idle(&self, wait: Duration) -> bool {
        let g = self.lock();
        let g = self
            .idle
            .wait_timeout_while(g, wait, |g| !g.active.is_empty())
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0);
        g.active.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Progress;

    fn events(n: usize) -> Vec<Event> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = Arc::clone(&seen);
        let p = Progress::callback(move |e| s2.lock().unwrap().push(e.clone()));
        for i in 0..n {
            p.step_by_percent(i as i64 * 10, format!("step {i}"));
        }
        p.complete("done", serde_json::json!({"success": true}));
        let v = seen.lock().unwrap().clone();
        v
    }

    #[test]
    fn names_in_flight_and_limits() {
        let runs = Runs::new(2);
        let run = |id: &str| Arc::new(Run::new(id));
        let a = run("1");
        runs.begin(&a, "a").unwrap();
        assert_eq!(a.name(), "a");
        assert_eq!(
            runs.begin(&run("2"), "a").err(),
            Some(Refused::NameBusy("1".into()))
        );
        runs.begin(&run("3"), "b").unwrap();
        assert_eq!(runs.begin(&run("4"), "c").err(), Some(Refused::Full(2)));
        assert_eq!(runs.busy("b").as_deref(), Some("3"));
        runs.end(&a);
        assert!(runs.begin(&run("5"), "a").is_ok());
        runs.close();
        assert_eq!(runs.begin(&run("6"), "z").err(), Some(Refused::Closed));
        // A run cut off by the shutdown still ends with an error event for its clients.
        let b = runs.get("3").unwrap();
        runs.fail_unfinished("shut down");
        assert!(b.done());
        let last = b.last().unwrap();
        assert_eq!(last.stage, crate::progress::Stage::Error);
        assert!(last.result.is_none(), "no result on an error event");
        assert_eq!(last.failure.unwrap()["success"], false);
        assert!(runs.get("1").is_some(), "finished runs stay for replays");
        assert_eq!(runs.active(), 2);
    }

    #[test]
    fn readers_replay_and_wait_for_new_events() {
        let run = Arc::new(Run::new("r"));
        let evs = events(3);
        run.push(evs[0].clone());
        let (got, done) = run.events_after(0, Duration::from_millis(1));
        assert_eq!((got.len(), done), (1, false));
        let r2 = Arc::clone(&run);
        let rest = evs[1..].to_vec();
        let t = std::thread::spawn(move || {
            for e in rest {
                r2.push(e);
            }
        });
        let mut seen = 1;
        let mut last = 1;
        loop {
            let (got, done) = run.events_after(last, Duration::from_secs(5));
            seen += got.len();
            if let Some(e) = got.last() {
                last = e.seq;
            }
            if done && run.events_after(last, Duration::ZERO).0.is_empty() {
                break;
            }
        }
        t.join().unwrap();
        assert_eq!(seen, evs.len());
        assert!(run.done() && run.wait_done(Duration::ZERO));
        assert_eq!(run.last().unwrap().stage, crate::progress::Stage::Completed);
    }
}
