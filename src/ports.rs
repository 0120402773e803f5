//! Host-port choice for a deployment's published port, and the sentence that explains it.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::OnceLock;

/// How many ports, starting at the preferred one, are tried before giving up.
pub(crate) const SCAN_LIMIT: u16 = 100;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PortRequest {
    /// This port, or the next free one within [`SCAN_LIMIT`] ports.
    Preferred(u16),
    /// This port or an error (`--port`).
    Exact(u16),
}

/// Where a port's freedom is judged.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Vantage<'a> {
    /// This machine, by binding the address (a local engine).
    Local(IpAddr),
    /// A remote engine: the host ports its containers publish (from `docker ps`); a clash with
    /// anything else there shows at `docker start`, which the caller retries.
    Engine(&'a BTreeSet<u16>),
}

impl From<IpAddr> for Vantage<'static> {
    fn from(ip: IpAddr) -> Self {
        Vantage::Local(ip)
    }
}

/// Why a port was passed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PortBusy {
    /// A process listens on it (or otherwise holds it) on this host.
    InUse,
    /// A container on the (remote) engine publishes it.
    PublishedOnEngine,
    /// Another deployment has it recorded; it may be stopped and will want it back.
    Reserved,
}

impl PortBusy {
    fn describe(self) -> &'static str {
        match self {
            PortBusy::InUse => "in use",
            PortBusy::PublishedOnEngine => "published on the engine",
            PortBusy::Reserved => "reserved by another deployment",
        }
    }
}

/// The chosen port and the ports skipped on the way, in scan order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PortChoice {
    /// The port to publish.
    pub port: u16,
    /// Ports tried before `port`, each with why it was skipped.
    pub skipped: Vec<(u16, PortBusy)>,
}

impl PortChoice {
    /// One line for the user, e.g. "port 8001 in use, 8002 reserved by another deployment;
    /// using 8003" or "using preferred port 8001". Consecutive ports skipped for the same
    /// reason are shown as a range ("ports 8001-8005 in use").
    pub(crate) fn explain(&self) -> String {
        if self.skipped.is_empty() {
            return format!("using preferred port {}", self.port);
        }
        let mut runs: Vec<(u16, u16, PortBusy)> = Vec::new();
        for &(port, why) in &self.skipped {
            match runs.last_mut() {
                Some((_, end, w)) if *w == why && u32::from(*end) + 1 == u32::from(port) => {
                    *end = port;
                }
                _ => runs.push((port, port, why)),
            }
        }
        let parts: Vec<String> = runs
            .iter()
            .enumerate()
            .map(|(i, &(start, end, why))| {
                let word = match (i, start == end) {
                    (0, true) => "port ",
                    (0, false) => "ports ",
                    _ => "",
                };
                if start == end {
                    format!("{word}{start} {}", why.describe())
                } else {
                    format!("{word}{start}-{end} {}", why.describe())
                }
            })
            .collect();
        format!("{}; using {}", parts.join(", "), self.port)
    }
}

/// Why no port could be chosen.
#[derive(Debug)]
pub(crate) enum PortError {
    /// The exact port asked for is taken.
    Busy { port: u16, why: PortBusy },
    /// Every port in `from..=to` is taken.
    Exhausted { from: u16, to: u16 },
    /// Port 0 was requested; host ports are 1-65535.
    Invalid { port: u16 },
}

impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortError::Busy {
                port,
                why: PortBusy::InUse,
            } => write!(
                f,
                "port {port} is in use by another process on this host; \
                 pass another --port or omit --port to pick a free one"
            ),
            PortError::Busy {
                port,
                why: PortBusy::Reserved,
            } => write!(
                f,
                "port {port} is reserved by another deployment (it may be stopped); \
                 pass another --port or omit --port to pick a free one"
            ),
            PortError::Busy {
                port,
                why: PortBusy::PublishedOnEngine,
            } => write!(
                f,
                "port {port} is published by a container on the Docker engine; \
                 pass another --port or omit --port to pick a free one"
            ),
            PortError::Exhausted { from, to } => write!(
                f,
                "no free port in {from}-{to}; free one of them or pass --port with a free port"
            ),
            PortError::Invalid { port } => {
                write!(f, "port {port} is not a usable host port; use 1-65535")
            }
        }
    }
}

impl std::error::Error for PortError {}

/// Picks the host port for `req` on address `bind`.
///
/// `reserved`: ports recorded on other deployments (they may be stopped and will want their
/// port back); the caller leaves out the deployment being replaced. A reserved port counts as
/// [`PortBusy::Reserved`] even when it is also in use.
pub(crate) fn choose<'a>(
    req: PortRequest,
    bind: impl Into<Vantage<'a>>,
    reserved: &BTreeSet<u16>,
) -> Result<PortChoice, PortError> {
    let bind = bind.into();
    match req {
        PortRequest::Exact(0) | PortRequest::Preferred(0) => Err(PortError::Invalid { port: 0 }),
        PortRequest::Exact(port) => match busy(bind, port, reserved) {
            Some(why) => Err(PortError::Busy { port, why }),
            None => Ok(PortChoice {
                port,
                skipped: Vec::new(),
            }),
        },
        PortRequest::Preferred(first) => {
            let mut skipped = Vec::new();
            for port in window(first, first) {
                match busy(bind, port, reserved) {
                    Some(why) => skipped.push((port, why)),
                    None => return Ok(PortChoice { port, skipped }),
                }
            }
            Err(PortError::Exhausted {
                from: first,
                to: last_in_window(first),
            })
        }
    }
}

/// The next free port strictly after `after` within the scan window that starts at `first`
/// (same rules as [`choose`]); `None` once the window is used up. For retrying when
/// `docker start` reports "port is already allocated".
pub(crate) fn next_free<'a>(
    first: u16,
    after: u16,
    bind: impl Into<Vantage<'a>>,
    reserved: &BTreeSet<u16>,
) -> Option<u16> {
    let bind = bind.into();
    if first == 0 || after == u16::MAX {
        return None;
    }
    window(first, (after + 1).max(first)).find(|&port| busy(bind, port, reserved).is_none())
}

/// Whether a process could listen on (`bind`, `port`) now: `bind` itself and every interface
/// (so a listener on 0.0.0.0 or another address also counts). Port 0 is never free.
pub(crate) fn is_free(bind: IpAddr, port: u16) -> bool {
    port != 0 && TcpListener::bind(SocketAddr::new(bind, port)).is_ok() && free_everywhere(port)
}

fn free_everywhere(port: u16) -> bool {
    if portpicker::is_free_tcp(port) {
        return true;
    }
    // portpicker also binds [::]; on hosts with IPv6 disabled that always fails, which would
    // make every port look busy, so there only the IPv4 wildcard decides.
    !ipv6_available() && TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
}

fn ipv6_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0)).is_ok())
}

fn busy(at: Vantage<'_>, port: u16, reserved: &BTreeSet<u16>) -> Option<PortBusy> {
    if reserved.contains(&port) {
        return Some(PortBusy::Reserved);
    }
    match at {
        Vantage::Local(bind) if !is_free(bind, port) => Some(PortBusy::InUse),
        Vantage::Engine(published) if published.contains(&port) => {
            Some(PortBusy::PublishedOnEngine)
        }
        _ => None,
    }
}

fn last_in_window(first: u16) -> u16 {
    first.saturating_add(SCAN_LIMIT - 1)
}

/// Ports `start..=` the end of the window that begins at `first` (empty if `start` is past it).
fn window(first: u16, start: u16) -> std::ops::RangeInclusive<u16> {
    start..=last_in_window(first)
}

/// Why [`PortLock::acquire_at`] did not take the lock.
#[derive(Debug)]
pub(crate) enum LockError {
    /// Another process held it until the deadline.
    Held(String),
    /// The lock file could not be created, opened or locked there.
    Unusable(String),
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Held(m) | LockError::Unusable(m) => f.write_str(m),
        }
    }
}

/// A host-wide lock held from choosing a port until the container that records it (in its
/// `fractalic-publisher.port` label) exists, so parallel deploys (processes or threads) never
/// pick the same port. An flock on `ports.lock` in the user's cache directory; the file also
/// holds a generation number that each holder bumps after creating a container, so a chooser
/// knows whether the reservations it read before taking the lock are still complete.
#[derive(Debug)]
pub(crate) struct PortLock {
    file: std::fs::File,
}

impl PortLock {
    /// `$XDG_CACHE_HOME` (else `~/.cache`)`/fractalic-publisher/ports.lock`, else in the temp
    /// directory.
    pub(crate) fn path() -> std::path::PathBuf {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| std::path::PathBuf::from(h).join(".cache"))
            });
        match base {
            Some(b) => b.join("fractalic-publisher").join("ports.lock"),
            None => std::env::temp_dir().join("fractalic-publisher-ports.lock"),
        }
    }

    /// Takes the lock at [`PortLock::path`], polling until `deadline` passes. Where that
    /// cannot be created (a `FROM scratch` job container: no HOME, no writable /tmp), the lock
    /// lives in `/dev/shm`, which every container has.
    pub(crate) fn acquire(deadline: std::time::Duration) -> Result<PortLock, String> {
        let path = Self::path();
        match Self::acquire_at(&path, deadline) {
            Ok(l) => Ok(l),
            Err(LockError::Held(e)) => Err(e),
            Err(LockError::Unusable(e)) => {
                let shm = std::path::Path::new("/dev/shm");
                if shm.is_dir() {
                    Self::acquire_at(&shm.join("fractalic-publisher-ports.lock"), deadline)
                        .map_err(|e2| format!("{e}; {e2}"))
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Takes the lock at `path`, polling until `deadline` passes.
    ///
    /// [`LockError::Held`]: another process held it all that time; [`LockError::Unusable`]:
    /// the file could not be made or locked (another place may do).
    pub(crate) fn acquire_at(
        path: &std::path::Path,
        deadline: std::time::Duration,
    ) -> Result<PortLock, LockError> {
        let unusable = LockError::Unusable;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| unusable(format!("cannot create {}: {e}", dir.display())))?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| unusable(format!("cannot open the port lock {}: {e}", path.display())))?;
        let end = std::time::Instant::now() + deadline;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(PortLock { file }),
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(unusable(format!("cannot lock {}: {e}", path.display())))
                }
            }
            if std::time::Instant::now() >= end {
                return Err(LockError::Held(format!(
                    "another deploy has held the port lock {} for {}s; try again (the lock is let go when the process holding it ends: removing the file does not help)",
                    path.display(),
                    deadline.as_secs()
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The generation number in the lock file (0 when empty).
    pub(crate) fn generation(&self) -> u64 {
        use std::io::{Read, Seek};
        let mut f = &self.file;
        let mut s = String::new();
        let _ = f.rewind().and_then(|()| f.read_to_string(&mut s));
        s.trim().parse().unwrap_or(0)
    }

    /// Records that a container with a port label was created; returns the new generation.
    pub(crate) fn bump(&self) -> u64 {
        use std::io::{Seek, Write};
        let next = self.generation().wrapping_add(1);
        let mut f = &self.file;
        let _ = f
            .rewind()
            .and_then(|()| self.file.set_len(0))
            .and_then(|()| write!(f, "{next}"))
            .and_then(|()| f.flush());
        next
    }

    /// The generation number as it is now, read without the lock (None when unreadable).
    pub(crate) fn peek_generation(path: &std::path::Path) -> Option<u64> {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().parse().unwrap_or(0))
    }
}

impl Drop for PortLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// A port some listener holds for as long as the returned listener lives.
    fn busy_port() -> (TcpListener, u16) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        (listener, port)
    }

    /// A listener on `port` and the first port after it that is free, or None if the
    /// neighbourhood is crowded (the caller retries with another port).
    fn busy_then_free() -> (TcpListener, u16, u16) {
        for _ in 0..50 {
            let (listener, port) = busy_port();
            if port < u16::MAX - SCAN_LIMIT && is_free(LOCAL, port + 1) {
                return (listener, port, port + 1);
            }
        }
        panic!("no busy port followed by a free one found");
    }

    #[test]
    fn listening_port_is_not_free() {
        let (_listener, port) = busy_port();
        assert!(!is_free(LOCAL, port));
        // A listener on 127.0.0.1 also blocks the wildcard address.
        assert!(!is_free(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }

    #[test]
    fn port_zero_is_never_free_or_chosen() {
        assert!(!is_free(LOCAL, 0));
        let none = BTreeSet::new();
        assert!(matches!(
            choose(PortRequest::Exact(0), LOCAL, &none),
            Err(PortError::Invalid { port: 0 })
        ));
        assert!(matches!(
            choose(PortRequest::Preferred(0), LOCAL, &none),
            Err(PortError::Invalid { port: 0 })
        ));
        assert_eq!(next_free(0, 0, LOCAL, &none), None);
    }

    #[test]
    fn preferred_skips_a_busy_port() {
        let (_listener, port, free) = busy_then_free();
        let choice = choose(PortRequest::Preferred(port), LOCAL, &BTreeSet::new()).unwrap();
        assert_eq!(choice.port, free);
        assert_eq!(choice.skipped, vec![(port, PortBusy::InUse)]);
    }

    #[test]
    fn exact_busy_port_is_an_error_naming_it() {
        let (_listener, port) = busy_port();
        let err = choose(PortRequest::Exact(port), LOCAL, &BTreeSet::new()).unwrap_err();
        assert!(matches!(
            err,
            PortError::Busy { port: p, why: PortBusy::InUse } if p == port
        ));
        let msg = err.to_string();
        assert!(msg.contains(&port.to_string()), "{msg}");
        assert!(msg.contains("omit --port"), "{msg}");
    }

    #[test]
    fn exact_free_port_is_used() {
        let (listener, port) = busy_port();
        drop(listener);
        let choice = choose(PortRequest::Exact(port), LOCAL, &BTreeSet::new()).unwrap();
        assert_eq!(choice.port, port);
        assert!(choice.skipped.is_empty());
    }

    #[test]
    fn reserved_ports_are_skipped_and_reported() {
        let (listener, port) = busy_port();
        drop(listener);
        // Make `port` and the next one reserved: the choice must move past both.
        let reserved: BTreeSet<u16> = [port, port + 1].into_iter().collect();
        let choice = choose(PortRequest::Preferred(port), LOCAL, &reserved).unwrap();
        assert!(choice.port > port + 1);
        assert_eq!(choice.skipped[0], (port, PortBusy::Reserved));
        assert_eq!(choice.skipped[1], (port + 1, PortBusy::Reserved));

        let err = choose(PortRequest::Exact(port), LOCAL, &reserved).unwrap_err();
        assert!(matches!(
            err,
            PortError::Busy {
                why: PortBusy::Reserved,
                ..
            }
        ));
        assert!(err.to_string().contains("another deployment"));
    }

    #[test]
    fn whole_window_reserved_is_exhausted() {
        let reserved: BTreeSet<u16> = (20000..20000 + SCAN_LIMIT).collect();
        let err = choose(PortRequest::Preferred(20000), LOCAL, &reserved).unwrap_err();
        assert!(matches!(
            err,
            PortError::Exhausted { from: 20000, to } if to == 20000 + SCAN_LIMIT - 1
        ));
    }

    #[test]
    fn scanning_stops_at_65535() {
        let reserved: BTreeSet<u16> = (65530..=u16::MAX).collect();
        let err = choose(PortRequest::Preferred(65530), LOCAL, &reserved).unwrap_err();
        assert!(matches!(
            err,
            PortError::Exhausted {
                from: 65530,
                to: 65535
            }
        ));
        assert_eq!(next_free(65530, u16::MAX, LOCAL, &reserved), None);
        assert_eq!(next_free(65530, 65533, LOCAL, &reserved), None);
    }

    #[test]
    fn next_free_starts_after_the_given_port_and_stays_in_the_window() {
        let none = BTreeSet::new();
        let (_listener, port, free) = busy_then_free();
        assert_eq!(next_free(port, port - 1, LOCAL, &none), Some(free));
        // `after` before the window start still begins at the window start.
        assert_eq!(next_free(port, 1, LOCAL, &none), Some(free));
        let later = next_free(port, free, LOCAL, &none).unwrap();
        assert!(later > free);

        let reserved: BTreeSet<u16> = (port..port + SCAN_LIMIT).collect();
        assert_eq!(next_free(port, port, LOCAL, &reserved), None);
        // Past the end of the window there is nothing, even if ports there are free.
        assert_eq!(next_free(port, port + SCAN_LIMIT - 1, LOCAL, &none), None);
    }

    #[test]
    fn port_lock_excludes_a_second_holder_and_counts_generations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("ports.lock");
        let secs = std::time::Duration::from_secs;
        let a = PortLock::acquire_at(&path, secs(5)).unwrap();
        assert_eq!(a.generation(), 0);
        assert_eq!(a.bump(), 1);
        assert_eq!(a.bump(), 2);
        // A second open file description (another deploy, thread or process) must wait.
        let e = PortLock::acquire_at(&path, std::time::Duration::from_millis(50)).unwrap_err();
        assert!(
            matches!(&e, LockError::Held(m) if m.contains("held the port lock")),
            "{e}"
        );
        assert_eq!(PortLock::peek_generation(&path), Some(2));
        drop(a);
        let b = PortLock::acquire_at(&path, secs(5)).unwrap();
        assert_eq!(b.generation(), 2);
    }

    #[test]
    fn explain_preferred() {
        let choice = PortChoice {
            port: 8001,
            skipped: vec![],
        };
        assert_eq!(choice.explain(), "using preferred port 8001");
    }

    #[test]
    fn explain_mixed_reasons() {
        let choice = PortChoice {
            port: 8003,
            skipped: vec![(8001, PortBusy::InUse), (8002, PortBusy::Reserved)],
        };
        assert_eq!(
            choice.explain(),
            "port 8001 in use, 8002 reserved by another deployment; using 8003"
        );
    }

    #[test]
    fn explain_groups_runs() {
        let choice = PortChoice {
            port: 8006,
            skipped: vec![
                (8001, PortBusy::InUse),
                (8002, PortBusy::InUse),
                (8003, PortBusy::InUse),
                (8004, PortBusy::Reserved),
                (8005, PortBusy::InUse),
            ],
        };
        assert_eq!(
            choice.explain(),
            "ports 8001-8003 in use, 8004 reserved by another deployment, 8005 in use; using 8006"
        );
    }
}
