//! Progress events and their renderings: plain `[ NN%] message` lines, a bar on a TTY, NDJSON
//! for machines, or a callback (the REST API streams them). Percentages never go backwards.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

/// One thing worth telling the user while work is under way.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A step began; `percent` is 0-100 and never lower than the previous step's.
    Step { percent: u8, message: String },
    /// Something to know (plugin `print`, chosen files ...).
    Info { message: String },
    /// Something that may need action.
    Warn { message: String },
}

type Callback = dyn Fn(&Event) + Send + Sync;

enum Sink {
    Silent,
    Lines,
    Bar,
    Callback(Box<Callback>),
}

/// Shared progress reporter (cheap to clone).
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Mutex<State>>,
}

struct State {
    sink: Sink,
    percent: u8,
    bar_drawn: bool,
    warnings: Vec<String>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

impl Progress {
    fn with(sink: Sink) -> Self {
        Progress {
            inner: Arc::new(Mutex::new(State {
                sink,
                percent: 0,
                bar_drawn: false,
                warnings: Vec::new(),
            })),
        }
    }

    /// Progress on stderr: a bar on a TTY, plain lines otherwise (also when [`no_color`]),
    /// nothing when `quiet`.
    pub fn stderr(quiet: bool) -> Self {
        Self::with(choose(quiet, std::io::stderr().is_terminal(), no_color()))
    }

    /// Plain lines on stderr whatever the terminal.
    pub fn lines() -> Self {
        Self::with(Sink::Lines)
    }

    /// Nothing at all.
    pub fn silent() -> Self {
        Self::with(Sink::Silent)
    }

    /// Every event goes to `f` (after the monotonic clamp).
    pub fn callback(f: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        Self::with(Sink::Callback(Box::new(f)))
    }

    /// Reports a step at `percent` (clamped to 0-100 and to at least the last step's).
    pub fn step(&self, percent: i64, message: impl Into<String>) {
        let mut st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let pct = (percent.clamp(0, 100) as u8).max(st.percent);
        st.percent = pct;
        st.emit(Event::Step {
            percent: pct,
            message: message.into(),
        });
    }

    /// Reports an informational line.
    pub fn info(&self, message: impl Into<String>) {
        let mut st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        st.emit(Event::Info {
            message: message.into(),
        });
    }

    /// Reports a warning (also kept, even when silent: see [`Progress::warnings`]).
    pub fn warn(&self, message: impl Into<String>) {
        let message = message.into();
        let mut st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        st.warnings.push(message.clone());
        st.emit(Event::Warn { message });
    }

    /// Every warning reported so far, so a `--json` result can carry them.
    pub fn warnings(&self) -> Vec<String> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .warnings
            .clone()
    }

    /// Ends a bar line so later output starts on a fresh line.
    pub fn finish(&self) {
        let mut st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if st.bar_drawn {
            let _ = writeln!(std::io::stderr());
            st.bar_drawn = false;
        }
    }

    /// The highest percentage reported so far.
    pub fn percent(&self) -> u8 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).percent
    }
}

/// Whether `NO_COLOR` asks for no colour or terminal decoration: set and not empty
/// (<https://no-color.org>, the same rule clap applies to its help and errors).
pub fn no_color() -> bool {
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
pub fn plain_line(e: &Event) -> String {
    match e {
        Event::Step { percent, message } => format!("[{percent:>3}%] {message}"),
        Event::Info { message } => format!("       {message}"),
        Event::Warn { message } => format!("warning: {message}"),
    }
}

impl State {
    fn emit(&mut self, e: Event) {
        match &self.sink {
            Sink::Silent => {}
            Sink::Callback(f) => f(&e),
            Sink::Lines => {
                let _ = writeln!(std::io::stderr().lock(), "{}", plain_line(&e));
            }
            Sink::Bar => {
                let mut err = std::io::stderr().lock();
                match &e {
                    Event::Step { percent, message } => {
                        let filled = usize::from(*percent) / 5;
                        let _ = write!(
                            err,
                            "\r\x1b[2K[{}{}] {percent:>3}% {message}",
                            "#".repeat(filled),
                            "-".repeat(20 - filled)
                        );
                        self.bar_drawn = true;
                    }
                    other => {
                        let _ = writeln!(err, "\r\x1b[2K{}", plain_line(other));
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
                }
                let _ = err.flush();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_never_go_backwards() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = Arc::clone(&seen);
        let p = Progress::callback(move |e| s2.lock().unwrap().push(e.clone()));
        p.step(10, "a");
        p.step(5, "b");
        p.step(150, "c");
        p.info("i");
        p.warn("w");
        assert_eq!(p.warnings(), vec!["w".to_string()]);
        assert_eq!(Progress::silent().warnings(), Vec::<String>::new());
        let got = seen.lock().unwrap().clone();
        assert_eq!(
            got[..3],
            [
                Event::Step {
                    percent: 10,
                    message: "a".into()
                },
                Event::Step {
                    percent: 10,
                    message: "b".into()
                },
                Event::Step {
                    percent: 100,
                    message: "c".into()
                },
            ]
        );
        assert_eq!(plain_line(&got[0]), "[ 10%] a");
        assert_eq!(plain_line(&got[3]), "       i");
    }

    #[test]
    fn no_color_turns_the_bar_into_plain_lines() {
        let kind = |s: Sink| match s {
            Sink::Silent => "silent",
            Sink::Lines => "lines",
            Sink::Bar => "bar",
            Sink::Callback(_) => "callback",
        };
        assert_eq!(kind(choose(false, true, false)), "bar");
        assert_eq!(kind(choose(false, true, true)), "lines");
        assert_eq!(kind(choose(false, false, false)), "lines");
        assert_eq!(kind(choose(true, true, false)), "silent");
        // Plain lines carry no escape codes.
        for e in [
            Event::Step {
                percent: 5,
                message: "m".into(),
            },
            Event::Warn {
                message: "w".into(),
            },
        ] {
            assert!(!plain_line(&e).contains('\x1b'));
        }
    }

    #[test]
    fn events_serialize_for_streams() {
        let e = Event::Step {
            percent: 7,
            message: "m".into(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"step","percent":7,"message":"m"}"#
        );
    }
}
