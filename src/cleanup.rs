//! Ctrl-C and SIGTERM: the first one stops new docker calls, waits for the in-flight ones that
//! create or undo something (kills the rest), undoes every live journal of the process, says
//! what that really did (one JSON object with `--json`) and exits 130. A second one stops
//! waiting: it kills what is still running, says what is left and how to remove it, and exits
//! 130 at once.

use crate::docker;
use crate::error::exit;
use crate::journal::{Journal, UndoReport};
use crate::sync::lock;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Exit code after an interrupt (128 + SIGINT), as shells expect.
pub(crate) const INTERRUPTED_EXIT: i32 = exit::INTERRUPTED;

/// How long the first interrupt waits for an in-flight create or undo step.
const SETTLE: Duration = Duration::from_secs(30);

/// How the final words of an interrupt are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    /// A line on stderr.
    Text,
    /// `deploy --json`: the deploy error object on stdout.
    DeployJson,
    /// A management command's `--json`: its error object on stdout.
    Json,
}

static OUTPUT: Mutex<Output> = Mutex::new(Output::Text);
static SIGNALS: AtomicU32 = AtomicU32::new(0);
static STOP_WAITING: AtomicBool = AtomicBool::new(false);
/// Who has the last word: `Some(false)` the main thread (it is printing its result),
/// `Some(true)` the interrupt handler.
static FINAL_WORD: Mutex<Option<bool>> = Mutex::new(None);
/// Held while the final message is printed, so only one is.
static EXITING: Mutex<()> = Mutex::new(());

/// How an interrupt reports (set once the command line is known).
pub(crate) fn set_output(o: Output) {
    *lock(&OUTPUT) = o;
}

/// Called by the main thread before it prints its result. False once an interrupt arrived:
/// then the handler has the last word and the caller must not print; [`park`] instead.
pub(crate) fn claim_final_word() -> bool {
    let mut w = lock(&FINAL_WORD);
    match *w {
        Some(true) => false,
        _ => {
            *w = Some(false);
            true
        }
    }
}

/// [`claim_final_word`], or [`park`] when an interrupt has it.
pub(crate) fn claim_or_park() {
    if !claim_final_word() {
        park();
    }
}

/// Blocks the calling thread for good (the interrupt handler exits the process).
pub(crate) fn park() -> ! {
    loop {
        std::thread::park();
    }
}

/// Installs the Ctrl-C / SIGTERM handler described in the module docs.
pub(crate) fn install_handler() {
    let _ = ctrlc::set_handler(on_signal);
}

fn on_signal() {
    if SIGNALS.fetch_add(1, Ordering::SeqCst) == 0 {
        {
            let mut w = lock(&FINAL_WORD);
            if *w == Some(false) {
                // The work is done and its result is being printed; the process ends now.
                SIGNALS.store(0, Ordering::SeqCst);
                return;
            }
            *w = Some(true);
        }
        docker::refuse_new_calls();
        // The cleanup runs on its own thread so that this handler can take a second signal.
        std::thread::spawn(|| {
            let killed = docker::settle_children(Instant::now() + SETTLE, &STOP_WAITING);
            let report = Journal::undo_all_live();
            finish(&report, &killed, false);
        });
    } else {
        STOP_WAITING.store(true, Ordering::SeqCst);
        let killed = docker::kill_children();
        let report = Journal::report_all_live();
        finish(&report, &killed, true);
    }
}

/// The one-line message of an interrupt.
pub(crate) fn message(report: &UndoReport, killed: &[String], second: bool) -> String {
    let mut s = String::from(if second {
        "interrupted again: stopped waiting"
    } else {
        "interrupted"
    });
    let mut killed = killed.to_vec();
    killed.sort();
    killed.dedup();
    if !killed.is_empty() {
        s.push_str(&format!(
            "; stopped {} before it finished",
            killed
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if second && report.undone.is_empty() && report.left.is_empty() {
        s.push_str("; nothing of this run is left");
    } else if second {
        if !report.undone.is_empty() {
            s.push_str(&format!("; {}", report.undone.join(", ")));
        }
        for l in &report.left {
            s.push_str(&format!(
                "; left behind: {} ({}); remove it with: {}",
                l.what, l.error, l.remove_with
            ));
        }
    } else {
        s.push_str(&format!(": {}", report.summary()));
    }
    s
}

/// The `--json` object of an interrupt, in the shape of the command's other errors plus
/// `cleanup: {removed, left}`.
pub(crate) fn json_object(output: Output, message: &str, report: &UndoReport) -> Value {
    let mut v = json!({
        "success": false,
        "error": message,
        "error_kind": "interrupted",
        "exit_code": exit::INTERRUPTED,
        "cleanup": report.to_json(),
    });
    if output == Output::DeployJson {
        v["deployment_id"] = Value::Null;
        v["message"] = "deploy interrupted".into();
        v["url"] = Value::Null;
        v["metadata"] = Value::Null;
    }
    v
}

fn finish(report: &UndoReport, killed: &[String], second: bool) -> ! {
    let _only_one = lock(&EXITING);
    let msg = message(report, killed, second);
    let output = *lock(&OUTPUT);
    // Not eprintln!/println!: they panic when the stream is gone (a parent that was killed
    // closed our pipes), and a panic here would leave the parked main thread waiting forever.
    use std::io::Write;
    if output == Output::Text {
        let _ = writeln!(std::io::stderr(), "{msg}");
    } else {
        let _ = writeln!(std::io::stdout(), "{}", json_object(output, &msg, report));
        let _ = std::io::stdout().flush();
    }
    std::process::exit(INTERRUPTED_EXIT);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Left;

    #[test]
    fn messages_say_what_was_removed_and_what_is_left() {
        let mut r = UndoReport::default();
        r.undone.push("removed container a".into());
        assert_eq!(
            message(&r, &[], false),
            "interrupted: removed container a; nothing of this run is left"
        );
        r.left.push(Left {
            what: "container b".into(),
            error: "`docker rm -f -v b` failed (exit 1): boom".into(),
            remove_with: "docker rm -f -v b".into(),
        });
        let m = message(&r, &["docker rm -f -v b".into()], true);
        assert!(m.starts_with("interrupted again: stopped waiting"), "{m}");
        assert!(m.contains("left behind: container b"), "{m}");
        assert!(m.contains("remove it with: docker rm -f -v b"), "{m}");
        let j = json_object(Output::DeployJson, &m, &r);
        assert_eq!(j["error_kind"], "interrupted");
        assert_eq!(j["exit_code"], 130);
        assert_eq!(j["success"], false);
        assert_eq!(j["cleanup"]["left"][0]["what"], "container b");
        assert!(j["deployment_id"].is_null());
        assert!(json_object(Output::Json, &m, &r).get("url").is_none());
    }
}
