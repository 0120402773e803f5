//! fractalic-stand-in: plays the Fractalic production image in tests. As PID 1 it prints
//! supervisord-like lines and serves the AI server (0.0.0.0:8001), the backend (127.0.0.1:8000)
//! and the MCP manager (127.0.0.1:5859); run as `curl` (argv[0]) or `fractalic-stand-in curl ...`
//! it is a minimal curl; `fractalic-stand-in backend --listen ADDR --root DIR` is a fake of the
//! Fractalic backend alone (the UI's routes, for `serve --backend` tests; see `backend`).
//!
//! Failure switches, read from the environment:
//! - `STAND_IN_START_DELAY_MS=N`: listen only after N ms;
//! - `STAND_IN_HEALTH=unhealthy`: `/health` answers 503;
//! - `STAND_IN_EXIT_AFTER_MS=N`: exit with code 3 after N ms;
//! - `STAND_IN_MCP=down`: nothing listens on 5859;
//! - `STAND_IN_CRASHLOOP=NAME[,NAME]` (ai_server, backend, mcp_manager): that program never
//!   listens but "crashes" as supervisord would show it: four start attempts with 1, 2, 3 s
//!   back-off, each ending in an unexpected exit and a cause line in its error log, then FATAL.
//!
//! The same `K=V` lines in `/fractalic/stand-in.env` (read at start) win over the environment,
//! so a stopped container can be switched with `docker cp` before it starts again.
//!
//! Logs go to `$STAND_IN_LOG_DIR` (default `/tmp`), as the image's supervisord config puts
//! them: supervisord.log (the lines also printed on stdout), and per program NAME.log (request
//! lines) and NAME_error.log (start-up lines and errors).

mod backend;
mod clock;
mod curl;
mod execute;
mod http;
mod json;
mod server;

use server::{Kind, Service};
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The failure switches, parsed once at start.
#[derive(Debug, Default, PartialEq)]
struct Switches {
    start_delay: Option<Duration>,
    unhealthy: bool,
    exit_after: Option<Duration>,
    mcp_down: bool,
    crashloop: Vec<Kind>,
}

impl Switches {
    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let millis = |name: &str| -> Result<Option<Duration>, String> {
            match get(name) {
                None => Ok(None),
                Some(v) if v.trim().is_empty() => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .map(|ms| Some(Duration::from_millis(ms)))
                    .map_err(|_| format!("{name}={v:?} is not a number of milliseconds")),
            }
        };
        let word = |name: &str, expected: &str| -> Result<bool, String> {
            match get(name) {
                None => Ok(false),
                Some(v) if v.is_empty() => Ok(false),
                Some(v) if v.eq_ignore_ascii_case(expected) => Ok(true),
                Some(v) => Err(format!(
                    "{name}={v:?}: the only accepted value is {expected}"
                )),
            }
        };
        let programs = |name: &str| -> Result<Vec<Kind>, String> {
            let v = get(name).unwrap_or_default();
            v.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| {
                    Kind::from_name(p).ok_or_else(|| {
                        format!("{name}={v:?}: {p:?} is not ai_server, backend or mcp_manager")
                    })
                })
                .collect()
        };
        Ok(Switches {
            start_delay: millis("STAND_IN_START_DELAY_MS")?,
            unhealthy: word("STAND_IN_HEALTH", "unhealthy")?,
            exit_after: millis("STAND_IN_EXIT_AFTER_MS")?,
            mcp_down: word("STAND_IN_MCP", "down")?,
            crashloop: programs("STAND_IN_CRASHLOOP")?,
        })
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let argv0 = args.first().map(String::as_str).unwrap_or("");
    let name = Path::new(argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name == "curl" {
        std::process::exit(curl::main(&args[1..]));
    }
    if args.get(1).map(String::as_str) == Some("curl") {
        std::process::exit(curl::main(&args[2..]));
    }
    if args.get(1).map(String::as_str) == Some("backend") {
        std::process::exit(backend::main(&args[2..]));
    }
    if args.len() > 1 {
        eprintln!("usage: fractalic-stand-in [curl [-fsS] URL | backend [--listen ADDR:PORT] [--root DIR]]");
        std::process::exit(2);
    }
    // The switch file wins over the environment: a stopped container's environment is fixed,
    // but `docker cp` can give it new switches for its next start.
    let file = std::fs::read_to_string(SWITCH_FILE).unwrap_or_default();
    let switches =
        match Switches::from_lookup(|k| file_switch(&file, k).or_else(|| std::env::var(k).ok())) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("stand-in: {e}");
                std::process::exit(2);
            }
        };
    run_server(&switches);
}

/// Switches read at start in addition to the environment (`K=V` lines, `#` comments).
const SWITCH_FILE: &str = "/fractalic/stand-in.env";

/// The value of `key` in the switch file's text, if it sets it.
fn file_switch(text: &str, key: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
}

/// supervisord's own log file, once `run_server` has opened it.
static SUPERVISORD_LOG: OnceLock<Option<Mutex<File>>> = OnceLock::new();

/// `2024-05-01 12:00:00,123`, now.
fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    clock::supervisord(now)
}

/// A supervisord-style line on stdout (what `docker logs` shows of the real image) and in
/// supervisord.log (where the real image's supervisord also writes it).
fn supervisord(msg: &str) {
    let line = format!("{} {msg}", timestamp());
    println!("{line}");
    if let Some(log) = SUPERVISORD_LOG.get() {
        server::append(log, &format!("{line}\n"));
    }
}

/// Plays a program that dies at every start, as supervisord reports it (startretries 3,
/// back-off growing by a second): each attempt writes its cause to NAME_error.log and ends in
/// an unexpected exit; after the fourth, supervisord gives up (FATAL).
fn crash_loop(kind: Kind, log_dir: &Path, pid: u32) {
    let name = kind.name();
    let error_log = server::open_log(&log_dir.join(format!("{name}_error.log")));
    let port = match kind {
        Kind::AiServer => 8001,
        Kind::Backend => 8000,
        Kind::McpManager => 5859,
    };
    for attempt in 1..=4u32 {
        if attempt > 1 {
            supervisord(&format!(
                "INFO spawned: '{name}' with pid {}",
                pid + attempt
            ));
        }
        // The program runs briefly, says why it cannot go on (with a blank line after it, as
        // a traceback ends) and dies.
        thread::sleep(Duration::from_millis(100));
        let ts = timestamp();
        server::append(
            &error_log,
            &format!(
                "{ts} - __main__ - INFO - Starting {name} (stand-in: STAND_IN_CRASHLOOP, attempt {attempt})\n\
                 {ts} - __main__ - ERROR - Failed to start server: [Errno 99] error while attempting to bind on address ('::1', {port}, 0, 0): cannot assign requested address\n\n"
            ),
        );
        supervisord(&format!(
            "WARN exited: {name} (exit status 1; not expected)"
        ));
        if attempt == 4 {
            supervisord(&format!(
                "INFO gave up: {name} entered FATAL state, too many start retries too quickly"
            ));
            return;
        }
        thread::sleep(Duration::from_secs(u64::from(attempt)));
    }
}

fn run_server(switches: &Switches) -> ! {
    install_signal_handlers();
    let log_dir =
        PathBuf::from(std::env::var("STAND_IN_LOG_DIR").unwrap_or_else(|_| "/tmp".into()));
    let _ = SUPERVISORD_LOG.set(server::open_log(&log_dir.join("supervisord.log")));
    let pid = std::process::id();
    supervisord(&format!("INFO supervisord started with pid {pid}"));
    let programs = [
        (Kind::AiServer, "0.0.0.0:8001"),
        (Kind::Backend, "127.0.0.1:8000"),
        (Kind::McpManager, "127.0.0.1:5859"),
    ];
    for (i, (kind, _)) in programs.iter().enumerate() {
        supervisord(&format!(
            "INFO spawned: '{}' with pid {}",
            kind.name(),
            pid + 1 + i as u32
        ));
    }

    if let Some(after) = switches.exit_after {
        thread::spawn(move || {
            thread::sleep(after);
            eprintln!(
                "stand-in: STAND_IN_EXIT_AFTER_MS={} elapsed, exiting with code 3",
                after.as_millis()
            );
            supervisord("WARN received SIGTERM indicating exit request");
            std::process::exit(3);
        });
    }
    if let Some(delay) = switches.start_delay {
        thread::sleep(delay);
    }

    let mut handles = Vec::new();
    for (i, (kind, addr)) in programs.into_iter().enumerate() {
        if switches.crashloop.contains(&kind) {
            let dir = log_dir.clone();
            let first_pid = pid + 1 + i as u32;
            thread::spawn(move || crash_loop(kind, &dir, first_pid));
            continue;
        }
        if kind == Kind::McpManager && switches.mcp_down {
            supervisord("WARN exited: mcp_manager (exit status 1; not expected)");
            supervisord(
                "INFO gave up: mcp_manager entered FATAL state, too many start retries too quickly",
            );
            continue;
        }
        let listener = match TcpListener::bind(addr) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("stand-in: {}: cannot listen on {addr}: {e}", kind.name());
                std::process::exit(1);
            }
        };
        let service = Arc::new(Service::new(
            kind,
            !(kind == Kind::AiServer && switches.unhealthy),
            PathBuf::from("/fractalic"),
            &log_dir,
        ));
        // uvicorn writes its start-up lines to stderr, which supervisord puts in NAME_error.log.
        service.error_log(&format!(
            "INFO:     Started server process [{}]",
            pid + 1 + i as u32
        ));
        service.error_log("INFO:     Waiting for application startup.");
        service.error_log("INFO:     Application startup complete.");
        service.error_log(&format!(
            "INFO:     Uvicorn running on http://{addr} (Press CTRL+C to quit)"
        ));
        handles.push(thread::spawn(move || server::serve(listener, service)));
        supervisord(&format!(
            "INFO success: {} entered RUNNING state, process has stayed up for > than 1 seconds (startsecs)",
            kind.name()
        ));
    }
    if handles.is_empty() {
        // Every program crash-loops: supervisord itself stays up, and so do we.
        loop {
            thread::park();
        }
    }
    for h in handles {
        let _ = h.join();
    }
    std::process::exit(1);
}

extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
    fn _exit(status: i32) -> !;
}

extern "C" fn on_terminate(_signum: i32) {
    // Only async-signal-safe calls here.
    unsafe { _exit(0) }
}

/// As PID 1 the kernel ignores SIGTERM without a handler; supervisord exits 0 on it, so do we
/// (and `docker stop` returns at once).
fn install_signal_handlers() {
    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;
    let handler = on_terminate as extern "C" fn(i32) as usize;
    unsafe {
        signal(SIGINT, handler);
        signal(SIGTERM, handler);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_parse() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            Switches::from_lookup(env(&[])).unwrap(),
            Switches::default()
        );
        let s = Switches::from_lookup(env(&[
            ("STAND_IN_START_DELAY_MS", "1500"),
            ("STAND_IN_HEALTH", "unhealthy"),
            ("STAND_IN_EXIT_AFTER_MS", "20"),
            ("STAND_IN_MCP", "down"),
            ("STAND_IN_CRASHLOOP", "mcp_manager, backend"),
        ]))
        .unwrap();
        assert_eq!(
            s,
            Switches {
                start_delay: Some(Duration::from_millis(1500)),
                unhealthy: true,
                exit_after: Some(Duration::from_millis(20)),
                mcp_down: true,
                crashloop: vec![Kind::McpManager, Kind::Backend],
            }
        );
        let e = Switches::from_lookup(env(&[("STAND_IN_CRASHLOOP", "frontend")])).unwrap_err();
        assert!(e.contains("\"frontend\" is not ai_server"), "{e}");
        assert!(Switches::from_lookup(env(&[("STAND_IN_MCP", "up")])).is_err());
        let file = "# switches\nSTAND_IN_HEALTH = unhealthy\n";
        assert_eq!(
            file_switch(file, "STAND_IN_HEALTH").as_deref(),
            Some("unhealthy")
        );
        assert_eq!(file_switch(file, "STAND_IN_MCP"), None);
        assert!(Switches::from_lookup(env(&[("STAND_IN_EXIT_AFTER_MS", "soon")])).is_err());
    }
}
