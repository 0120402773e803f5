//! Readiness: proves that a container is stably up, not merely answering once. Its health URL
//! answers and (optionally) a command inside it succeeds, both watched by a look at the
//! container between probes: an exit, a restart by the restart policy or a supervisord program
//! that keeps crashing ends the wait at once with the reason. After success, a container this
//! run started must have stayed up for [`STABLE_FOR`] and still run, unrestarted.

use crate::docker::{Docker, ExecOutcome, ExecSignals};
use crate::error::{Error, Result};
use crate::health::{self, HealthError, Waited};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a container this run started must have been up before it counts as up: the
/// default `startsecs` of supervisord, which runs the Fractalic image's services.
pub(crate) const STABLE_FOR: Duration = Duration::from_secs(1);
/// How often the container is inspected while a service does not answer yet.
const INSPECT_EVERY: Duration = Duration::from_millis(500);
/// How long the command inside may take before the container is first looked at.
const EXEC_FIRST_LOOK: Duration = Duration::from_millis(200);
/// How often supervisord's log is read while waiting (the first read comes this long after the
/// wait began, so supervisord has written its start line by then).
const CRASH_LOG_EVERY: Duration = Duration::from_millis(1500);
/// Bounds of one docker call's deadline while watching (see `Monitor::call_timeout`).
const CALL_MIN: Duration = Duration::from_secs(2);
const CALL_MAX: Duration = Duration::from_secs(10);
/// supervisord's own log in the Fractalic image.
pub(crate) const SUPERVISORD_LOG: &str = "/tmp/supervisord.log";
/// Longest cause line quoted from a service's error log.
const CAUSE_MAX: usize = 300;

/// When this run started a container (`docker start` returned): its restart count is then 0,
/// and it must stay up [`STABLE_FOR`] from here.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Started {
    /// When `docker start` returned.
    pub at: Instant,
    /// Wall time just before `docker start` was called (for `docker events --since`).
    pub wall: SystemTime,
}

impl Started {
    /// Records a start that began at `wall` and has just returned.
    pub(crate) fn since(wall: SystemTime) -> Started {
        Started {
            at: Instant::now(),
            wall,
        }
    }
}

/// A container that is stably up.
#[derive(Debug)]
pub(crate) struct Ready {
    /// The health URL's first 2xx.
    pub health: Waited,
    /// The command inside the container (None when none was asked for). Its failure is
    /// reported here, not as an error, so the caller can say what the command stands for.
    pub exec: Option<ExecOutcome>,
}

/// Why a container is not ready.
#[derive(Debug)]
pub(crate) struct NotReady {
    /// Set when the health URL had answered before the failure.
    pub health: Option<Waited>,
    pub error: Error,
}

/// A program that supervisord saw crash repeatedly, from its log.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CrashLoop {
    pub program: String,
    /// Unexpected exits since supervisord last started.
    pub exits: usize,
    /// supervisord gave up on it (FATAL).
    pub fatal: bool,
}

/// The first program in a supervisord log that exited unexpectedly twice, or that supervisord
/// gave up on, counting only since the last `supervisord started` line (the log survives
/// container restarts). Lines look like `... WARN exited: mcp_manager (exit status 1; not
/// expected)` and `... INFO gave up: mcp_manager entered FATAL state, too many start retries
/// too quickly`.
pub(crate) fn crash_loop(log: &str) -> Option<CrashLoop> {
    let run = log
        .rfind("supervisord started with pid")
        .map_or(log, |i| &log[i..]);
    let mut exits: Vec<(String, usize)> = Vec::new();
    for line in run.lines() {
        let line = line.trim_end();
        if let Some(rest) = after(line, " exited: ") {
            if !line.ends_with("not expected)") {
                continue;
            }
            let Some(program) = program_name(rest.split(" (").next().unwrap_or("")) else {
                continue;
            };
            let n = match exits.iter_mut().find(|(p, _)| *p == program) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    exits.push((program.clone(), 1));
                    1
                }
            };
            if n >= 2 {
                return Some(CrashLoop {
                    program,
                    exits: n,
                    fatal: false,
                });
            }
        } else if let Some(rest) = after(line, " gave up: ") {
            if !rest.contains(" entered FATAL state") {
                continue;
            }
            let Some(program) = program_name(rest.split(' ').next().unwrap_or("")) else {
                continue;
            };
            let n = exits
                .iter()
                .find(|(p, _)| *p == program)
                .map_or(0, |(_, n)| *n);
            return Some(CrashLoop {
                program,
                exits: n,
                fatal: true,
            });
        }
    }
    None
}

fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| &line[i + marker.len()..])
}

/// A supervisord program name safe to put in a path (`/tmp/NAME_error.log`) and a message.
fn program_name(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !s.starts_with('.');
    ok.then(|| s.to_string())
}

/// What a Fractalic program is, for messages.
fn program_role(program: &str) -> Option<&'static str> {
    match program {
        "ai_server" => Some("the AI server"),
        "mcp_manager" => Some("the MCP manager"),
        "backend" | "backend_server" => Some("the backend"),
        _ => None,
    }
}

/// The last non-empty line of a text, trimmed and cut to [`CAUSE_MAX`] characters.
pub(crate) fn last_line(text: &str) -> Option<String> {
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    let mut cut: String = line.chars().take(CAUSE_MAX).collect();
    if line.chars().count() > CAUSE_MAX {
        cut.push_str("...");
    }
    Some(cut)
}

/// Whether a look at the container also reads supervisord's log.
#[derive(Clone, Copy)]
enum Log {
    Never,
    /// When [`CRASH_LOG_EVERY`] has passed since the last read.
    IfDue,
    Now,
}

/// Watches one container while it becomes ready; every look at it goes through here.
struct Monitor<'a> {
    d: &'a Docker,
    container: &'a str,
    started: Option<Started>,
    /// The restart count it must keep (0 after our `docker start`; else the first one seen).
    restarts: Option<i64>,
    /// `State.StartedAt` first seen: a restart changes it.
    started_at: Option<String>,
    began: Instant,
    /// The wait's deadline: docker calls made while watching end by then (give or take).
    deadline: Instant,
    last_inspect: Option<Instant>,
    last_log: Option<Instant>,
    /// Set as soon as a failure is seen, before its details are gathered, so a command
    /// retried beside the wait stops at once.
    stop: &'a AtomicBool,
}

impl<'a> Monitor<'a> {
    fn new(
        d: &'a Docker,
        container: &'a str,
        started: Option<Started>,
        deadline: Instant,
        stop: &'a AtomicBool,
    ) -> Self {
        Monitor {
            d,
            container,
            started,
            restarts: started.map(|_| 0),
            started_at: None,
            began: Instant::now(),
            deadline,
            last_inspect: None,
            last_log: None,
            stop,
        }
    }

    /// The deadline of one docker call made while watching: what is left of the wait, but at
    /// least [`CALL_MIN`] (so the look at the deadline can finish) and at most [`CALL_MAX`] (a
    /// hung docker does not stall readiness for long).
    fn call_timeout(&self) -> Duration {
        self.deadline
            .saturating_duration_since(Instant::now())
            .clamp(CALL_MIN, CALL_MAX)
    }

    fn inspect_due(&self) -> bool {
        self.last_inspect
            .is_none_or(|at| at.elapsed() >= INSPECT_EVERY)
    }

    fn log_due(&self) -> bool {
        self.began.elapsed() >= CRASH_LOG_EVERY
            && self
                .last_log
                .is_none_or(|at| at.elapsed() >= CRASH_LOG_EVERY)
    }

    /// Inspects the container (and reads supervisord's log as `log` says):
    /// an error when it is not running, was restarted, or a program in it keeps crashing.
    /// `phase` says in the message how far readiness had come. A docker call that fails is
    /// not held against the container, except an unreachable daemon and a failing `strict`
    /// look.
    fn check(&mut self, phase: &str, log: Log, strict: bool) -> Result<()> {
        self.last_inspect = Some(Instant::now());
        match self
            .d
            .container_inspect_within(self.container, self.call_timeout())
        {
            Ok(Some(v)) => self.judge(&v, phase)?,
            Ok(None) => {
                self.stop.store(true, Ordering::Relaxed);
                return Err(Error::failed(format!(
                    "container {} disappeared {phase}",
                    self.container
                )));
            }
            Err(e @ Error::DaemonDown { .. }) => return Err(e),
            Err(e) if strict => return Err(e),
            Err(_) => {}
        }
        let read = match log {
            Log::Never => false,
            Log::IfDue => self.log_due(),
            Log::Now => true,
        };
        if read {
            self.last_log = Some(Instant::now());
            self.crash_check(strict)?;
        }
        Ok(())
    }

    fn judge(&mut self, v: &Value, phase: &str) -> Result<()> {
        let state = &v["State"];
        let status = state["Status"].as_str().unwrap_or("");
        let count = v["RestartCount"].as_i64().unwrap_or(0);
        let started_at = state["StartedAt"].as_str().unwrap_or("").to_string();
        let expected = *self.restarts.get_or_insert(count);
        let first = self
            .started_at
            .get_or_insert_with(|| started_at.clone())
            .clone();
        let restarted = status == "restarting"
            || count > expected
            || (status == "running" && started_at != first);
        if restarted || status != "running" {
            self.stop.store(true, Ordering::Relaxed);
        }
        if restarted {
            let since = self.events_since(v, &first);
            let code = first_die_code(self.d, self.container, &since)
                .or_else(|| state["ExitCode"].as_i64().filter(|c| *c != 0));
            return Err(self.died(code, Some(count - expected), phase));
        }
        match status {
            "running" => Ok(()),
            "exited" | "dead" => Err(self.died(state["ExitCode"].as_i64(), None, phase)),
            other => Err(Error::failed(format!(
                "container {} is {other} {phase}, not running",
                self.container
            ))),
        }
    }

    /// `docker events --since` for this container's deaths: our `docker start`, else when it
    /// was first seen started, else its creation.
    fn events_since(&self, v: &Value, first_started_at: &str) -> String {
        if let Some(s) = self.started {
            let t = s.wall.duration_since(UNIX_EPOCH).unwrap_or_default();
            return format!("{}.{:09}", t.as_secs(), t.subsec_nanos());
        }
        if !first_started_at.is_empty() && !first_started_at.starts_with("0001-") {
            return first_started_at.to_string();
        }
        v["Created"].as_str().unwrap_or("").to_string()
    }

    fn died(&self, code: Option<i64>, restarts: Option<i64>, phase: &str) -> Error {
        let code = code.map_or("unknown".to_string(), |c| c.to_string());
        let when = self.started.map_or(String::new(), |s| {
            format!(
                " (noticed {:.1}s after it was started)",
                s.at.elapsed().as_secs_f64()
            )
        });
        let restarted = match restarts {
            Some(n) if n > 0 => format!(
                "; its restart policy restarted it ({n} time{}), so it is not stably up",
                if n == 1 { "" } else { "s" }
            ),
            Some(_) => "; it is restarting, so it is not stably up".to_string(),
            None => String::new(),
        };
        let logs = last_log_lines(self.d, self.container);
        Error::failed(format!(
            "container {} exited with code {code} {phase}{when}{restarted}; {logs}",
            self.container
        ))
    }

    /// Reads supervisord's log; a crash-looping program is an error naming it and quoting the
    /// last line of its error log.
    fn crash_check(&self, strict: bool) -> Result<()> {
        let text =
            match self
                .d
                .read_file_within(self.container, SUPERVISORD_LOG, self.call_timeout())
            {
                Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
                Ok(None) => return Ok(()),
                Err(e @ Error::DaemonDown { .. }) => return Err(e),
                Err(e) if strict => return Err(e),
                Err(_) => return Ok(()),
            };
        let Some(c) = crash_loop(&text) else {
            return Ok(());
        };
        self.stop.store(true, Ordering::Relaxed);
        let role = program_role(&c.program).map_or(String::new(), |r| format!(" ({r})"));
        let times = match c.exits {
            0 => String::new(),
            1 => " once".to_string(),
            n => format!(" {n} times"),
        };
        let what = match (c.exits, c.fatal) {
            (0, _) => "gave up on it (FATAL state)".to_string(),
            (_, true) => format!("saw it exit unexpectedly{times} and gave up on it (FATAL state)"),
            (_, false) => format!("saw it exit unexpectedly{times}"),
        };
        Err(Error::failed(format!(
            "{}{role} keeps crashing inside container {}: since the container started, supervisord {what}; {}",
            c.program,
            self.container,
            self.cause(&c.program)
        )))
    }

    /// The cause of a program's crash: the last non-empty line of its error log (its own log
    /// when that says nothing).
    fn cause(&self, program: &str) -> String {
        for file in [
            format!("/tmp/{program}_error.log"),
            format!("/tmp/{program}.log"),
        ] {
            if let Ok(Some(bytes)) =
                self.d
                    .read_file_within(self.container, &file, self.call_timeout())
            {
                if let Some(line) = last_line(&String::from_utf8_lossy(&bytes)) {
                    return format!("last line of {file}: {line}");
                }
            }
        }
        format!("/tmp/{program}_error.log and /tmp/{program}.log are empty or missing")
    }
}

/// `its last log lines: a | b` from `docker logs --tail 10`, or that it printed nothing.
fn last_log_lines(d: &Docker, container: &str) -> String {
    let text = d
        .run_unchecked(&["logs", "--tail", "10", container], None, CALL_MAX)
        .map(|(_, o)| format!("{}{}", o.stdout, o.stderr))
        .unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        "it printed nothing".to_string()
    } else {
        format!("its last log lines: {}", lines.join(" | "))
    }
}

/// The exit code of the container's first `die` event since `since` (RFC 3339 or Unix time).
fn first_die_code(d: &Docker, container: &str, since: &str) -> Option<i64> {
    if since.is_empty() {
        return None;
    }
    // Now, to the nanosecond (docker accepts fractional Unix times): RFC 3339 seconds would
    // cut off a death in the current second, and a future time would make `events` wait.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let until = format!("{}.{:09}", now.as_secs(), now.subsec_nanos());
    let name_filter = format!("container={container}");
    let out = d
        .run(
            &[
                "events",
                "--since",
                since,
                "--until",
                &until,
                "--filter",
                &name_filter,
                "--filter",
                "event=die",
                "--format",
                "{{index .Actor.Attributes \"exitCode\"}}",
            ],
            None,
            Duration::from_secs(10),
        )
        .ok()?;
    out.stdout.lines().find_map(|l| l.trim().parse().ok())
}

/// Waits until `url` answers 2xx and, at the same time, `exec` (if given) exits 0 inside the
/// container, each within `timeout`; then, for a container this run `started`, until it has
/// been up [`STABLE_FOR`], and looks at it once more: still running, not restarted.
///
/// Between probes the container is inspected about every 500 ms (first right after the first
/// failed probe) and supervisord's log read about every 1.5 s: an exit or a restart fails the
/// wait within about a second with the exit code and last log lines, a crash-looping program
/// within about 1.5 s of its second unexpected exit, naming it and quoting its error log. When
/// everything answers at once this costs one `docker container inspect`, and a second when the
/// container was not started by this run (its restart count and start time are then taken as
/// they are when the wait begins).
pub(crate) fn wait(
    d: &Docker,
    container: &str,
    started: Option<Started>,
    url: &str,
    exec: Option<&[&str]>,
    timeout: Duration,
) -> std::result::Result<Ready, NotReady> {
    let deadline = Instant::now() + timeout;
    let signals = ExecSignals::default();
    let mut mon = Monitor::new(d, container, started, deadline, &signals.stop);
    let fail = |health: Option<&Waited>, error: Error| NotReady {
        health: health.cloned(),
        error,
    };
    if started.is_none() {
        // The baseline a restart is measured against.
        let phase = format!("before {url} was probed");
        mon.check(&phase, Log::Never, true)
            .map_err(|e| fail(None, e))?;
    }
    thread::scope(|scope| {
        let exec_thread = exec.map(|argv| {
            let signals = &signals;
            scope.spawn(move || d.exec_until_ok(container, argv, timeout, signals))
        });
        let stop_exec = |h: Option<thread::ScopedJoinHandle<'_, Result<ExecOutcome>>>| {
            signals.stop.store(true, Ordering::Relaxed);
            if let Some(h) = h {
                let _ = h.join();
            }
        };

        let before = format!("before {url} answered");
        let mut failure: Option<Error> = None;
        let waited = {
            let mut watch = || match mon.check(&before, Log::IfDue, false) {
                Ok(()) => None,
                Err(e) => {
                    failure = Some(e);
                    Some(None)
                }
            };
            health::wait_http_ok(
                url,
                deadline,
                Duration::from_millis(50),
                INSPECT_EVERY,
                &mut watch,
            )
        };
        let health = match waited {
            Ok(w) => w,
            Err(e) => {
                stop_exec(exec_thread);
                let error = match (failure, e) {
                    (Some(f), _) => f,
                    // One more look with supervisord's log: a crashing service explains a
                    // silent URL better than the timeout does.
                    (None, e @ HealthError::Timeout { .. }) => {
                        match mon.check(&before, Log::Now, false) {
                            Err(f) => f,
                            Ok(()) => Error::failed(e.to_string()),
                        }
                    }
                    (None, e) => Error::failed(e.to_string()),
                };
                return Err(fail(None, error));
            }
        };
        signals.wake.store(true, Ordering::Relaxed);

        let outcome = match exec_thread {
            None => None,
            Some(h) => {
                let phase = format!(
                    "after {url} answered, while `{}` was retried inside it",
                    exec.unwrap_or_default().join(" ")
                );
                // A command that answers at once needs no look at the container.
                let first_look = Instant::now() + EXEC_FIRST_LOOK;
                while !h.is_finished() {
                    if Instant::now() >= first_look && mon.inspect_due() {
                        if let Err(e) = mon.check(&phase, Log::IfDue, false) {
                            stop_exec(Some(h));
                            return Err(fail(Some(&health), e));
                        }
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                let o = match h.join() {
                    Ok(Ok(o)) => o,
                    Ok(Err(e)) => return Err(fail(Some(&health), e)),
                    Err(_) => {
                        return Err(fail(
                            Some(&health),
                            Error::failed("the readiness exec thread panicked"),
                        ))
                    }
                };
                if !o.ok {
                    // The caller says what the command stands for, unless the container or a
                    // crashing program explains it.
                    mon.check(&phase, Log::Now, false)
                        .map_err(|e| fail(Some(&health), e))?;
                    return Ok(Ready {
                        health,
                        exec: Some(o),
                    });
                }
                Some(o)
            }
        };

        prove_stable(&mut mon).map_err(|e| fail(Some(&health), e))?;
        Ok(Ready {
            health,
            exec: outcome,
        })
    })
}

/// Waits out [`STABLE_FOR`] since our start, then inspects the container once more: still
/// running, with the restart count and start time it had.
fn prove_stable(mon: &mut Monitor<'_>) -> Result<()> {
    if let Some(s) = mon.started {
        // Nothing to poll meanwhile: probes would only fill the service's log, and the one
        // look at the end sees any exit or restart before it.
        thread::sleep((s.at + STABLE_FOR).saturating_duration_since(Instant::now()));
    }
    mon.check("after its services had answered", Log::Never, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: &str = "\
2026-11-27 15:07:16,101 INFO supervisord started with pid 1
2026-11-27 15:07:17,110 INFO spawned: 'ai_server' with pid 7
2026-11-27 15:07:17,112 INFO spawned: 'mcp_manager' with pid 9
2026-11-27 15:07:18,654 WARN exited: mcp_manager (exit status 1; not expected)
2026-11-27 15:07:19,660 INFO spawned: 'mcp_manager' with pid 18
2026-11-27 15:07:19,661 INFO success: ai_server entered RUNNING state, process has stayed up for > than 1 seconds (startsecs)
2026-11-27 15:07:21,200 WARN exited: mcp_manager (exit status 1; not expected)
";

    #[test]
    fn second_unexpected_exit_is_a_crash_loop() {
        assert_eq!(
            crash_loop(REAL),
            Some(CrashLoop {
                program: "mcp_manager".into(),
                exits: 2,
                fatal: false
            })
        );
        // One exit is not yet a loop.
        let once: String = REAL.lines().take(5).map(|l| format!("{l}\n")).collect();
        assert_eq!(crash_loop(&once), None);
    }

    #[test]
    fn expected_exits_and_other_programs_do_not_add_up() {
        let log = "\
x INFO supervisord started with pid 1
x INFO exited: backend (exit status 0; expected)
x INFO exited: backend (exit status 0; expected)
x WARN exited: ai_server (exit status 1; not expected)
x WARN exited: mcp_manager (terminated by SIGKILL; not expected)
";
        assert_eq!(crash_loop(log), None);
    }

    #[test]
    fn fatal_counts_at_once_and_only_the_last_run_counts() {
        let earlier = format!(
            "{REAL}x INFO gave up: mcp_manager entered FATAL state, too many start retries too quickly\n"
        );
        assert_eq!(
            crash_loop(&earlier),
            Some(CrashLoop {
                program: "mcp_manager".into(),
                exits: 2,
                fatal: false
            })
        );
        let fatal_only = "x INFO supervisord started with pid 1\n\
            x INFO gave up: mcp_manager entered FATAL state, too many start retries too quickly\n";
        assert_eq!(
            crash_loop(fatal_only),
            Some(CrashLoop {
                program: "mcp_manager".into(),
                exits: 0,
                fatal: true
            })
        );
        // A restart of the container starts a new log section: the old loop is history.
        let restarted = format!("{earlier}y INFO supervisord started with pid 1\n");
        assert_eq!(crash_loop(&restarted), None);
    }

    #[test]
    fn hostile_program_names_are_ignored() {
        let log = "x WARN exited: ../../etc/passwd (exit status 1; not expected)\n\
                   x WARN exited: ../../etc/passwd (exit status 1; not expected)\n\
                   x INFO gave up: a/b entered FATAL state\n";
        assert_eq!(crash_loop(log), None);
    }

    #[test]
    fn cause_is_the_last_non_empty_line() {
        let text = "INFO start\nERROR - Failed to start server: [Errno 99] bind\n\n  \n";
        assert_eq!(
            last_line(text).as_deref(),
            Some("ERROR - Failed to start server: [Errno 99] bind")
        );
        assert_eq!(last_line("\n\n"), None);
        let long = "x".repeat(1000);
        assert_eq!(last_line(&long).unwrap().chars().count(), CAUSE_MAX + 3);
    }
}
