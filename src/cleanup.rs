//! Interrupt safety: containers a run is creating are registered here, and a Ctrl-C (or
//! SIGTERM) removes them before the process exits, so nothing half-made is left behind.

use crate::docker::Docker;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

static PENDING: Mutex<Vec<(Arc<Docker>, String)>> = Mutex::new(Vec::new());

/// Exit code after an interrupt (128 + SIGINT), as shells expect.
pub const INTERRUPTED_EXIT: i32 = 130;

/// Registers `name` to be removed if the process is interrupted.
pub fn register(docker: Arc<Docker>, name: &str) {
    let mut p = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    if !p.iter().any(|(_, n)| n == name) {
        p.push((docker, name.to_string()));
    }
}

/// The container is kept (or already removed): an interrupt no longer touches it.
pub fn forget(name: &str) {
    PENDING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(_, n)| n != name);
}

/// Removes everything still registered; returns the names removed.
pub fn remove_pending() -> Vec<String> {
    let items = std::mem::take(&mut *PENDING.lock().unwrap_or_else(|e| e.into_inner()));
    items
        .into_iter()
        .map(|(d, n)| {
            let _ = d.remove(&n);
            n
        })
        .collect()
}

static STOP_PENDING: Mutex<Vec<(Arc<Docker>, String)>> = Mutex::new(Vec::new());

/// Registers an existing container that `start` is bringing up: an interrupt stops it again
/// (it was stopped before), rather than removing a deployment that is not ours to destroy.
pub fn register_stop(docker: Arc<Docker>, name: &str) {
    let mut p = STOP_PENDING.lock().unwrap_or_else(|e| e.into_inner());
    if !p.iter().any(|(_, n)| n == name) {
        p.push((docker, name.to_string()));
    }
}

/// The start finished (either way): an interrupt no longer stops `name`.
pub fn forget_stop(name: &str) {
    STOP_PENDING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(_, n)| n != name);
}

/// Stops everything registered with [`register_stop`]; returns the names stopped.
pub fn stop_pending() -> Vec<String> {
    let items = std::mem::take(&mut *STOP_PENDING.lock().unwrap_or_else(|e| e.into_inner()));
    items
        .into_iter()
        .map(|(d, n)| {
            let _ = d.run(&["stop", "-t", "10", &n], None, crate::docker::QUICK);
            n
        })
        .collect()
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Has an interrupt arrived? Then the handler is cleaning up and will exit with 130.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Called before the main thread reports a result: once an interrupt has arrived, the work it
/// was doing fails as a side effect of the cleanup (its container vanished), so the handler,
/// not that failure, must have the last word. Blocks until the handler exits the process.
pub fn wait_if_interrupted() {
    while interrupted() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Installs the Ctrl-C / SIGTERM handler: remove pending containers (and stop the ones a
/// `start` was bringing up), say so, exit 130.
pub fn install_handler() {
    let _ = ctrlc::set_handler(|| {
        INTERRUPTED.store(true, Ordering::SeqCst);
        let removed = remove_pending();
        let stopped = stop_pending();
        let mut done = Vec::new();
        if !removed.is_empty() {
            done.push(format!("removed {}", removed.join(", ")));
        }
        if !stopped.is_empty() {
            done.push(format!("stopped {} again", stopped.join(", ")));
        }
        if done.is_empty() {
            eprintln!("interrupted");
        } else {
            eprintln!("interrupted: {}", done.join("; "));
        }
        std::process::exit(INTERRUPTED_EXIT);
    });
}
