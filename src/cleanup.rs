//! Interrupt safety: containers a run is creating are registered here, and a Ctrl-C (or
//! SIGTERM) removes them before the process exits, so nothing half-made is left behind.

use crate::docker::Docker;
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

/// Installs the Ctrl-C / SIGTERM handler: remove pending containers, say so, exit 130.
pub fn install_handler() {
    let _ = ctrlc::set_handler(|| {
        let removed = remove_pending();
        if !removed.is_empty() {
            eprintln!("interrupted: removed {}", removed.join(", "));
        } else {
            eprintln!("interrupted");
        }
        std::process::exit(INTERRUPTED_EXIT);
    });
}
