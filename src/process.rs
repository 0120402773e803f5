//! Processes of this tool seen from outside: is the one that wrote a journal, a lock or a list
//! of docker calls still alive, told apart from a later process that reuses its pid by its
//! start time (`/proc/PID/stat`).

/// The start time of process `pid` (field 22 of `/proc/PID/stat`), None when it cannot be read.
pub(crate) fn process_start(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Has `pid` exited, waiting only to be reaped (state `Z` in `/proc/PID/stat`)?
pub(crate) fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rfind(')')
            .and_then(|i| s[i + 1..].split_whitespace().next().map(|st| st == "Z"))
            .unwrap_or(false)
    })
}

/// Is the process that wrote a journal alive? Some(false): gone, or its pid now belongs to a
/// process started at another time; None: this system cannot tell (no /proc).
pub(crate) fn alive(pid: u32, start: Option<u64>) -> Option<bool> {
    match process_start(pid) {
        // A zombie has exited; only its parent's wait is still to come.
        Some(_) if zombie(pid) => Some(false),
        Some(now) => Some(start.is_none_or(|s| s == now)),
        None if process_start(std::process::id()).is_some() => Some(false),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_or_reused_pid_is_not_alive() {
        let me = std::process::id();
        let start = process_start(me);
        assert!(start.is_some(), "/proc is readable here");
        assert_eq!(alive(me, start), Some(true));
        // The same pid with another start time: a new process that reuses the number.
        assert_eq!(alive(me, start.map(|s| s + 1)), Some(false));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(alive(pid, None), Some(false));
        // Exited but not yet reaped (a zombie): not alive either, with its start time.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let start = process_start(pid);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !zombie(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(zombie(pid), "`true` exits at once");
        assert_eq!(alive(pid, start), Some(false));
        child.wait().unwrap();
    }
}
