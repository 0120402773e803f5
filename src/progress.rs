//! Progress events and their renderings: plain `[ NN%] message` lines, a bar on a TTY, NDJSON
//! for machines (`deploy --progress json`), or a callback (the REST API streams them as SSE).
//! One event type serves all of them. Percentages and stages never go backwards.

use serde::{Deserialize, Serialize};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Where a deploy is, in the Fractalic UI's words (its `getStageInfo` knows exactly these).
/// The order is the order a deploy goes through them; a run's stage never moves backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Stage {
    Validating,
    PullingImage,
    PreparingFiles,
    CreatingContainer,
    StartingContainer,
    Completed,
    Error,
}

impl Stage {
    /// Every stage, in order.
    pub(crate) const ALL: [Stage; 7] = [
        Stage::Validating,
        Stage::PullingImage,
        Stage::PreparingFiles,
        Stage::CreatingContainer,
        Stage::StartingContainer,
        Stage::Completed,
        Stage::Error,
    ];

    /// The wire name (`pulling_image` ...).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Stage::Validating => "validating",
            Stage::PullingImage => "pulling_image",
            Stage::PreparingFiles => "preparing_files",
            Stage::CreatingContainer => "creating_container",
            Stage::StartingContainer => "starting_container",
            Stage::Completed => "completed",
            Stage::Error => "error",
        }
    }

    /// Parses a wire name; `completed` and `error` are not for plugins to set.
    pub(crate) fn parse_step(name: &str) -> Option<Stage> {
        Stage::ALL[..5].iter().copied().find(|s| s.as_str() == name)
    }

    /// The stage a step's percentage implies when a plugin does not name one (the two-argument
    /// `progress(percent, message)` of plugins written before stages were said):
    /// 0-9 validating, 10-39 pulling_image, 40-44 preparing_files, 45-59 creating_container,
    /// 60-100 starting_container (health waiting included).
    pub(crate) fn for_percent(p: u8) -> Stage {
        match p {
            0..=9 => Stage::Validating,
            10..=39 => Stage::PullingImage,
            40..=44 => Stage::PreparingFiles,
            45..=59 => Stage::CreatingContainer,
            _ => Stage::StartingContainer,
        }
    }
}

/// What kind of event it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// A step began.
    Step,
    /// Something to know (plugin `print`, chosen files ...).
    Info,
    /// Something that may need action.
    Warn,
    /// The last event of a successful run: `result` holds the outcome.
    Completed,
    /// The last event of a failed run: `error` says what failed and what was cleaned up.
    Error,
}

/// One progress event: the CLI's NDJSON lines, the REST API's SSE `data:` lines and the
/// re-attach log all carry exactly this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Event {
    /// The run this event belongs to (the id to re-attach with).
    pub deployment_id: String,
    /// 1, 2, 3 ... within the run (the SSE `id:`).
    pub seq: u64,
    /// ISO 8601 UTC with milliseconds.
    pub timestamp: String,
    pub stage: Stage,
    /// 0-100, never lower than the previous event's.
    pub progress: u8,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The outcome, on the final `completed` event only. A failed run has none: the Fractalic
    /// UI draws its URL box whenever an event has a `result`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// On the final `error` event: the failure object (what `deploy --json` prints on failure,
    /// the blocking endpoint's answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<serde_json::Value>,
}

impl Event {
    /// Is this the last event of its run?
    pub(crate) fn is_final(&self) -> bool {
        matches!(self.kind, Kind::Completed | Kind::Error)
    }
}

/// ISO 8601 / RFC 3339 UTC time with milliseconds, e.g. `2026-11-27T15:41:30.123Z`.
pub(crate) fn timestamp() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// A new run id: 16 hex digits, unique within and across processes.
pub(crate) fn new_run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded from the OS once per process; mixing in time, pid and a counter
    // keeps ids distinct even between processes started in the same instant.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}

type Callback = dyn Fn(&Event) + Send + Sync;

enum Sink {
    Silent,
    Lines,
    Bar,
    Ndjson,
    Callback(Box<Callback>),
}

/// Shared progress reporter (cheap to clone).
#[derive(Clone)]
pub(crate) struct Progress {
    inner: Arc<Mutex<State>>,
}

struct State {
    sink: Sink,
    run_id: String,
    seq: u64,
    percent: u8,
    stage: Stage,
    bar_drawn: bool,
    warnings: Vec<String>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

/// How `deploy` shows progress on stderr (`--progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Style {
    /// A bar on a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// Plain `[ NN%] message` lines.
    Plain,
    /// One JSON event per line (the REST API's event type).
    Json,
    /// Nothing.
    None,
}

impl Progress {
    fn with(sink: Sink) -> Self {
        Progress {
            inner: Arc::new(Mutex::new(State {
                sink,
                run_id: new_run_id(),
                seq: 0,
                percent: 0,
                stage: Stage::Validating,
                bar_drawn: false,
                warnings: Vec::new(),
            })),
        }
    }

    /// Progress on stderr: a bar on a TTY, plain lines otherwise (also when [`no_color`]),
    /// nothing when `quiet`.
    pub(crate) fn stderr(quiet: bool) -> Self {
        Self::styled(if quiet { Style::None } else { Style::Auto })
    }

    /// Progress on stderr in `style`.
    pub(crate) fn styled(style: Style) -> Self {
        match style {
            Style::None => Self::with(Sink::Silent),
            Style::Json => Self::with(Sink::Ndjson),
            Style::Plain => Self::with(Sink::Lines),
            Style::Auto => Self::with(choose(false, std::io::stderr().is_terminal(), no_color())),
        }
    }

    /// Plain lines on stderr whatever the terminal.
    pub(crate) fn lines() -> Self {
        Self::with(Sink::Lines)
    }

    /// Nothing at all.
    pub(crate) fn silent() -> Self {
        Self::with(Sink::Silent)
    }

    /// Every event goes to `f` (after the monotonic clamp).
    pub(crate) fn callback(f: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        Self::with(Sink::Callback(Box::new(f)))
    }

    /// Uses `id` as this run's id (the REST API picks it before the run starts).
    pub(crate) fn with_run_id(self, id: &str) -> Self {
        self.lock().run_id = id.to_string();
        self
    }

    /// This run's id (every event's `deployment_id`).
    pub(crate) fn run_id(&self) -> String {
        self.lock().run_id.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crate::sync::lock(&self.inner)
    }

    /// Reports a step at `percent` (clamped to 0-100 and to at least the last step's) in
    /// `stage` (never before the last step's stage).
    pub(crate) fn step(&self, percent: i64, stage: Stage, message: impl Into<String>) {
        let mut st = self.lock();
        let pct = (percent.clamp(0, 100) as u8).max(st.percent);
        st.percent = pct;
        st.stage = st.stage.max(stage.min(Stage::StartingContainer));
        st.emit(Kind::Step, message.into(), None, None);
    }

    /// A step whose stage the percentage implies ([`Stage::for_percent`]): only for plugins
    /// that call the two-argument `progress(percent, message)`.
    pub(crate) fn step_by_percent(&self, percent: i64, message: impl Into<String>) {
        let pct = percent.clamp(0, 100) as u8;
        self.step(percent, Stage::for_percent(pct), message)
    }

    /// Moves to `stage` (never backwards) without an event of its own.
    #[cfg(test)]
    pub(crate) fn set_stage(&self, stage: Stage) {
        let mut st = self.lock();
        st.stage = st.stage.max(stage);
    }

    /// Reports an informational line.
    pub(crate) fn info(&self, message: impl Into<String>) {
        self.lock().emit(Kind::Info, message.into(), None, None);
    }

    /// Reports a warning (also kept, even when silent: see [`Progress::warnings`]).
    pub(crate) fn warn(&self, message: impl Into<String>) {
        let message = message.into();
        let mut st = self.lock();
        st.warnings.push(message.clone());
        st.emit(Kind::Warn, message, None, None);
    }

    /// The last event of a successful run: stage `completed`, 100 %, with the outcome.
    pub(crate) fn complete(&self, message: impl Into<String>, result: serde_json::Value) {
        let mut st = self.lock();
        st.percent = 100;
        st.stage = Stage::Completed;
        st.emit_final(Kind::Completed, message.into(), None, Some(result), None);
        st.end_bar();
    }

    /// The last event of a failed run: stage `error`, 100 %, with the error and the failure
    /// object (as `failure`, never as `result`).
    pub(crate) fn fail(&self, error: impl Into<String>, failure: serde_json::Value) {
        let error = error.into();
        let mut st = self.lock();
        st.percent = 100;
        st.stage = Stage::Error;
        let message = format!("Deployment failed: {error}");
        st.emit_final(Kind::Error, message, Some(error), None, Some(failure));
        st.end_bar();
    }

    /// Every warning reported so far, so a `--json` result can carry them.
    pub(crate) fn warnings(&self) -> Vec<String> {
        self.lock().warnings.clone()
    }

    /// Ends a bar line so later output starts on a fresh line.
    pub(crate) fn finish(&self) {
        self.lock().end_bar();
    }
}

/// Whether `NO_COLOR` asks for no colour or terminal decoration: set and not empty
/// (<https://no-color.org>, the same rule clap applies to its help and errors).
pub(crate) fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// The stderr rendering: the bar (which redraws its line with escape codes) only on a terminal
/// and without `NO_COLOR`.
fn choose(quiet: bool, terminal: bool, no_color: bool) -> Sink {
    match (quiet, terminal && !no_color) {
        (true, _) => Sink::Silent,
        (false, true) => Sink::Bar,
        (false, false) => Sink::Lines,
    }
}

/// `[ 40%] message`, as printed in plain mode.
pub(crate) fn plain_line(e: &Event) -> String {
    match e.kind {
        Kind::Step => format!("[{:>3}%] {}", e.progress, e.message),
        Kind::Info => format!("       {}", e.message),
        Kind::Warn => format!("warning: {}", e.message),
        Kind::Completed | Kind::Error => String::new(),
    }
}

impl State {
    fn end_bar(&mut self) {
        if self.bar_drawn {
            let _ = writeln!(std::io::stderr());
            self.bar_drawn = false;
        }
    }

    fn emit(
        &mut self,
        kind: Kind,
        message: String,
        error: Option<String>,
        result: Option<serde_json::Value>,
    ) {
        self.emit_final(kind, message, error, result, None);
    }

    fn emit_final(
        &mut self,
        kind: Kind,
        message: String,
        error: Option<String>,
        result: Option<serde_json::Value>,
        failure: Option<serde_json::Value>,
    ) {
        if matches!(self.sink, Sink::Silent) {
            return;
        }
        self.seq += 1;
        let e = Event {
            deployment_id: self.run_id.clone(),
            seq: self.seq,
            timestamp: timestamp(),
            stage: self.stage,
            progress: self.percent,
            kind,
            message,
            error,
            result,
            failure,
        };
        match &self.sink {
            Sink::Silent => {}
            Sink::Callback(f) => f(&e),
            Sink::Ndjson => {
                if let Ok(line) = serde_json::to_string(&e) {
                    let _ = writeln!(std::io::stderr().lock(), "{line}");
                }
            }
            // The final event's outcome is printed by the command itself (text or --json).
            Sink::Lines | Sink::Bar if e.is_final() => {}
            Sink::Lines => {
                let _ = writeln!(std::io::stderr().lock(), "{}", plain_line(&e));
            }
            Sink::Bar => {
                let mut err = std::io::stderr().lock();
                if e.kind == Kind::Step {
                    let filled = usize::from(e.progress) / 5;
                    let _ = write!(
                        err,
                        "\r\x1b[2K[{}{}] {:>3}% {}",
                        "#".repeat(filled),
                        "-".repeat(20 - filled),
                        e.progress,
                        e.message
                    );
                    self.bar_drawn = true;
                } else {
                    let _ = writeln!(err, "\r\x1b[2K{}", plain_line(&e));
                    if self.bar_drawn {
                        let pct = self.percent;
                        let filled = usize::from(pct) / 5;
                        let _ = write!(
                            err,
                            "[{}{}] {pct:>3}%",
                            "#".repeat(filled),
                            "-".repeat(20 - filled)
                        );
                    }
                }
                let _ = err.flush();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder() -> (Progress, Arc<Mutex<Vec<Event>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = Arc::clone(&seen);
        let p = Progress::callback(move |e| s2.lock().unwrap().push(e.clone()));
        (p, seen)
    }

    #[test]
    fn percentages_and_stages_never_go_backwards() {
        let (p, seen) = recorder();
        p.step_by_percent(10, "a");
        p.step(5, Stage::Validating, "b");
        p.step_by_percent(50, "c");
        p.set_stage(Stage::PullingImage);
        p.step(150, Stage::StartingContainer, "d");
        p.info("i");
        p.warn("w");
        assert_eq!(p.warnings(), vec!["w".to_string()]);
        assert_eq!(Progress::silent().warnings(), Vec::<String>::new());
        let got = seen.lock().unwrap().clone();
        let pct: Vec<u8> = got.iter().map(|e| e.progress).collect();
        assert_eq!(pct, [10, 10, 50, 100, 100, 100]);
        let stages: Vec<Stage> = got.iter().map(|e| e.stage).collect();
        assert_eq!(
            stages,
            [
                Stage::PullingImage,
                Stage::PullingImage,
                Stage::CreatingContainer,
                Stage::StartingContainer,
                Stage::StartingContainer,
                Stage::StartingContainer
            ]
        );
        let seqs: Vec<u64> = got.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
        assert!(got.iter().all(|e| e.deployment_id == p.run_id()));
        assert_eq!(plain_line(&got[0]), "[ 10%] a");
        assert_eq!(plain_line(&got[4]), "       i");
        assert_eq!(plain_line(&got[5]), "warning: w");
    }

    #[test]
    fn a_named_stage_is_the_stage_whatever_the_percentage() {
        let (p, seen) = recorder();
        // The swarm plugin's bake comes at 20 %, which the percentage alone would call
        // pulling_image.
        p.step(8, Stage::PullingImage, "pull");
        p.step(20, Stage::PreparingFiles, "bake");
        p.step(25, Stage::PullingImage, "earlier stage: stays");
        p.step(30, Stage::Completed, "only complete() completes");
        let stages: Vec<&str> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.stage.as_str())
            .collect();
        assert_eq!(
            stages,
            [
                "pulling_image",
                "preparing_files",
                "preparing_files",
                "starting_container"
            ]
        );
    }

    #[test]
    fn final_events_carry_result_or_error() {
        let (p, seen) = recorder();
        p.step(3, Stage::Validating, "start");
        p.fail("boom; removed x", serde_json::json!({"success": false}));
        let got = seen.lock().unwrap().clone();
        let last = got.last().unwrap();
        assert_eq!(last.stage, Stage::Error);
        assert_eq!(last.kind, Kind::Error);
        assert_eq!(last.progress, 100);
        assert_eq!(last.error.as_deref(), Some("boom; removed x"));
        assert!(last.is_final());
        let v = serde_json::to_value(last).unwrap();
        assert_eq!(v["stage"], "error");
        assert_eq!(v["type"], "error");
        assert!(v.get("result").is_none(), "a failed run has no result: {v}");
        assert_eq!(v["failure"]["success"], false);
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn no_color_turns_the_bar_into_plain_lines() {
        let kind = |s: Sink| match s {
            Sink::Silent => "silent",
            Sink::Lines => "lines",
            Sink::Bar => "bar",
            Sink::Ndjson => "ndjson",
            Sink::Callback(_) => "callback",
        };
        assert_eq!(kind(choose(false, true, false)), "bar");
        assert_eq!(kind(choose(false, true, true)), "lines");
        assert_eq!(kind(choose(false, false, false)), "lines");
        assert_eq!(kind(choose(true, true, false)), "silent");
        // Plain lines carry no escape codes.
        let (p, seen) = recorder();
        p.step(5, Stage::Validating, "m");
        p.warn("w");
        for e in seen.lock().unwrap().iter() {
            assert!(!plain_line(e).contains('\x1b'));
        }
    }

    #[test]
    fn events_serialize_for_streams() {
        let (p, seen) = recorder();
        let p = p.with_run_id("abc");
        p.step(7, Stage::Validating, "m");
        let e = seen.lock().unwrap()[0].clone();
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["deployment_id"], "abc");
        assert_eq!(v["stage"], "validating");
        assert_eq!(v["progress"], 7);
        assert_eq!(v["type"], "step");
        assert_eq!(v["message"], "m");
        assert!(v.get("result").is_none() && v.get("error").is_none());
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn stage_mapping_covers_every_percent_in_order() {
        let mut last = Stage::Validating;
        for p in 0..=100u8 {
            let s = Stage::for_percent(p);
            assert!(s >= last, "{p}");
            last = s;
        }
        assert_eq!(
            Stage::parse_step("pulling_image"),
            Some(Stage::PullingImage)
        );
        assert_eq!(Stage::parse_step("completed"), None);
        assert_eq!(Stage::parse_step("nope"), None);
        assert!(new_run_id() != new_run_id());
        assert_eq!(new_run_id().len(), 16);
    }
}
