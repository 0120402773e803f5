//! `serve`: the REST API over HTTP, synchronous (a thread per connection and per deploy), on
//! the same deploy path and progress events as the CLI. The HTTP layer only parses, authorises
//! and streams; `api` maps routes onto deploy/manage calls.

pub(crate) mod access;
pub(crate) mod api;
pub(crate) mod forward;
pub(crate) mod http;
pub(crate) mod logstream;
pub(crate) mod page;
pub(crate) mod runs;

use crate::cli::{Auth, Cli, ServeArgs};
use crate::error::{Error, Result};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Environment variable holding the bearer token (when `--token-file` is not given).
pub(crate) const TOKEN_ENV: &str = "FRACTALIC_PUBLISHER_TOKEN";
/// Connections served at once; more go to the overflow (see [`overflow`]).
pub(crate) const MAX_CONNECTIONS: usize = 512;
/// Connections served at once for one peer address; more go to the overflow.
pub(crate) const MAX_PER_PEER: usize = 256;
/// Connections over the limits waiting to be read and answered (`/health` normally, the rest
/// 503); when more come, the oldest waiting one is answered 503 to make room.
pub(crate) const OVERFLOW_CONNECTIONS: usize = 64;
/// How long an overflow connection may take to send its request head.
pub(crate) const OVERFLOW_DEADLINE: Duration = Duration::from_secs(1);
/// How long a shutdown waits for running deploys before rolling them back.
pub(crate) const SHUTDOWN_WAIT: Duration = Duration::from_secs(60);

/// Everything a request handler needs.
pub(crate) struct Server {
    pub docker_flag: Option<PathBuf>,
    pub plugins_dir: Option<PathBuf>,
    /// Canonical directories a script_folder must lie in.
    pub roots: Vec<PathBuf>,
    pub token: Option<String>,
    pub cors_origins: Vec<String>,
    pub runs: runs::Runs,
    /// Listening on a loopback address (or `--auth none`): then only loopback `Host` names are
    /// answered (a page elsewhere cannot reach the API through DNS rebinding).
    pub loopback: bool,
    /// `--backend`: where requests without a route of ours go.
    pub backend: Option<forward::Backend>,
    connections: AtomicUsize,
    /// Open connections per peer address.
    peers: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

fn parse_listen(s: &str) -> Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            Error::input(
                format!("bad --listen {s:?}"),
                "give ADDR:PORT, e.g. 127.0.0.1:8090 (port 0 picks a free one)",
            )
        })
}

fn read_token(a: &ServeArgs) -> Result<Option<String>> {
    let (token, from) = match &a.token_file {
        Some(f) => {
            let bytes = crate::config::read_small(f, "--token-file")?;
            let t = String::from_utf8(bytes).map_err(|_| {
                Error::input(
                    format!("--token-file {} is not UTF-8 text", f.display()),
                    "give a file holding the token",
                )
            })?;
            (t, format!("--token-file {}", f.display()))
        }
        None => match std::env::var(TOKEN_ENV) {
            Ok(t) => (t, TOKEN_ENV.to_string()),
            Err(_) => return Ok(None),
        },
    };
    let token = token.trim().to_string();
    if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::input(
            format!("the token from {from} is unusable"),
            "use at least 16 characters without spaces, e.g. the output of `openssl rand -hex 32`",
        ));
    }
    Ok(Some(token))
}

fn check_origin(o: &str) -> Result<String> {
    let ok = (o.starts_with("http://") || o.starts_with("https://"))
        && !o.ends_with('/')
        && o.split_once("://")
            .is_some_and(|(_, rest)| !rest.is_empty() && !rest.contains('/'));
    if ok {
        Ok(o.to_string())
    } else {
        Err(Error::input(
            format!("bad --cors-origin {o:?}"),
            "give a browser origin: scheme://host[:port] without a path, e.g. http://localhost:3000",
        ))
    }
}

impl Server {
    /// Builds the server's settings from the flags (bad ones are exit 2).
    pub(crate) fn new(cli: &Cli, a: &ServeArgs, listen: &SocketAddr) -> Result<Server> {
        let no_auth = a.auth == Auth::None;
        if no_auth && (a.token_file.is_some() || std::env::var_os(TOKEN_ENV).is_some()) {
            let given = if a.token_file.is_some() {
                "--token-file".to_string()
            } else {
                TOKEN_ENV.to_string()
            };
            return Err(Error::input(
                format!("--auth none and {given} contradict each other"),
                format!(
                    "drop --auth none to require the token, or drop {given} to run without one"
                ),
            ));
        }
        let token = if no_auth { None } else { read_token(a)? };
        if token.is_none() && !no_auth && !listen.ip().is_loopback() {
            return Err(Error::input(
                format!("--listen {listen} is reachable from other machines and no token is set"),
                format!("pass --token-file FILE (or set {TOKEN_ENV}), or listen on 127.0.0.1, or pass --auth none on purpose (inside a container whose port is published on the host's loopback)"),
            ));
        }
        let given = if a.roots.is_empty() {
            vec![std::env::current_dir().map_err(|e| Error::Io {
                path: PathBuf::from("."),
                source: e,
            })?]
        } else {
            a.roots.clone()
        };
        let mut roots = Vec::new();
        for r in &given {
            let c = r
                .canonicalize()
                .ok()
                .filter(|c| c.is_dir())
                .ok_or_else(|| {
                    Error::input(
                        format!("--root {} is not a directory", r.display()),
                        "give a directory holding the script folders the API may deploy",
                    )
                })?;
            roots.push(c);
        }
        let cors_origins = a
            .cors_origins
            .iter()
            .map(|o| check_origin(o))
            .collect::<Result<Vec<_>>>()?;
        Ok(Server {
            docker_flag: cli.docker.clone(),
            plugins_dir: cli.plugins_dir.clone(),
            roots,
            token,
            cors_origins,
            runs: runs::Runs::new(usize::from(a.max_deploys)),
            // Without a token, the Host check is what keeps other web sites out.
            loopback: listen.ip().is_loopback() || no_auth,
            backend: a
                .backend
                .as_deref()
                .map(forward::Backend::parse)
                .transpose()?,
            connections: AtomicUsize::new(0),
            peers: Default::default(),
        })
    }
}

impl Server {
    /// Takes a connection slot for `stream`'s peer, unless the server ([`MAX_CONNECTIONS`]) or
    /// that peer ([`MAX_PER_PEER`]) is at its limit.
    fn admit(&self, stream: &TcpStream) -> Option<Option<std::net::IpAddr>> {
        let ip = stream.peer_addr().ok().map(|a| a.ip());
        let mut peers = crate::sync::lock(&self.peers);
        let mine = ip.map_or(0, |ip| peers.get(&ip).copied().unwrap_or(0));
        if self.connections.load(Ordering::SeqCst) >= MAX_CONNECTIONS || mine >= MAX_PER_PEER {
            return None;
        }
        self.connections.fetch_add(1, Ordering::SeqCst);
        if let Some(ip) = ip {
            *peers.entry(ip).or_insert(0) += 1;
        }
        Some(ip)
    }

    /// Gives back the slot [`Server::admit`] took.
    fn leave(&self, ip: Option<std::net::IpAddr>) {
        self.connections.fetch_sub(1, Ordering::SeqCst);
        if let Some(ip) = ip {
            let mut peers = crate::sync::lock(&self.peers);
            if let Some(n) = peers.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    peers.remove(&ip);
                }
            }
        }
    }
}

/// A connection over the limits: queued for the one overflow thread, which answers `GET
/// /health` as always (monitoring keeps working while idle connections hold the slots) and
/// anything else 503. The queue holds at most [`OVERFLOW_CONNECTIONS`]; when it is full the
/// oldest connection (the one most likely idle, a slowloris) is answered 503 and closed to make
/// room, so a fresh `/health` is never locked out by a flood of silent connections.
fn overflow(server: &Arc<Server>, stream: TcpStream) {
    static QUEUE: OnceLock<Arc<Overflow>> = OnceLock::new();
    let q = QUEUE.get_or_init(|| {
        let q = Arc::new(Overflow {
            waiting: Mutex::new(std::collections::VecDeque::new()),
            ready: std::sync::Condvar::new(),
        });
        let (q2, srv) = (Arc::clone(&q), Arc::clone(server));
        let _ = std::thread::Builder::new()
            .name("overflow".into())
            .spawn(move || q2.run(&srv));
        q
    });
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let mut w = crate::sync::lock(&q.waiting);
    if w.len() >= OVERFLOW_CONNECTIONS {
        if let Some((mut old, _)) = w.pop_front() {
            let _ = old.set_nonblocking(false);
            let _ = old.set_write_timeout(Some(Duration::from_millis(100)));
            let _ = http::write_response(&mut old, &overflow_busy());
        }
    }
    w.push_back((stream, std::time::Instant::now()));
    q.ready.notify_one();
}

fn overflow_busy() -> http::Response {
    http::Response::error(503, "the server is busy (too many connections, or too many from your address); try again shortly").with("Retry-After", "1")
}

/// The overflow queue: connections over the limits, with when each came.
struct Overflow {
    waiting: Mutex<std::collections::VecDeque<(TcpStream, std::time::Instant)>>,
    ready: std::sync::Condvar,
}

impl Overflow {
    /// Looks at every queued connection (peeking, without blocking): one whose request head
    /// has arrived is read and answered; one silent past [`OVERFLOW_DEADLINE`] gets 503; one
    /// closed by its client is dropped. Waits on the condvar while the queue is empty; while it
    /// is not, looks again every 2 ms (a poll interval, bounded by the deadline of each entry).
    fn run(&self, server: &Arc<Server>) {
        let mut buf = [0u8; http::MAX_HEAD];
        loop {
            let mut due = Vec::new();
            {
                let mut w = crate::sync::lock(&self.waiting);
                while w.is_empty() {
                    w = self.ready.wait(w).unwrap_or_else(|p| p.into_inner());
                }
                let mut keep = std::collections::VecDeque::with_capacity(w.len());
                while let Some((stream, since)) = w.pop_front() {
                    match stream.peek(&mut buf) {
                        Ok(0) => {}
                        Ok(n)
                            if n == buf.len() || buf[..n].windows(4).any(|x| x == b"\r\n\r\n") =>
                        {
                            due.push((stream, true));
                        }
                        Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => {}
                        _ if since.elapsed() >= OVERFLOW_DEADLINE => due.push((stream, false)),
                        _ => keep.push_back((stream, since)),
                    }
                }
                *w = keep;
            }
            for (mut stream, arrived) in due {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                let short = Duration::from_millis(100);
                match arrived.then(|| http::read_request_within(&mut stream, short, short)) {
                    Some(Ok(req)) if req.method == "GET" && req.path == "/health" => {
                        if let Some(resp) = api::route(server, &req, &mut stream) {
                            let _ = http::write_response(&mut stream, &resp);
                        }
                    }
                    Some(Err(http::ReadError::Gone)) => {}
                    _ => {
                        let _ = http::write_response(&mut stream, &overflow_busy());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

static SHUTDOWN: AtomicBool = AtomicBool::new(false);

/// Has a shutdown begun? (Open log streams end then.)
pub(crate) fn shutting_down() -> bool {
    SHUTDOWN.load(Ordering::SeqCst)
}

/// Runs the server until SIGINT/SIGTERM; then stops accepting, waits (at most
/// [`SHUTDOWN_WAIT`]) for running deploys, rolls back any still running, and returns 0.
pub(crate) fn serve(cli: &Cli, a: &ServeArgs) -> Result<i32> {
    let listen = parse_listen(&a.listen)?;
    let server = Arc::new(Server::new(cli, a, &listen)?);
    let listener = TcpListener::bind(listen).map_err(|e| {
        Error::input(
            format!("cannot listen on {listen}"),
            format!("{e}; choose another --listen address or port"),
        )
    })?;
    let local = listener.local_addr().map_err(|e| Error::Io {
        path: PathBuf::from(a.listen.clone()),
        source: e,
    })?;
    if let Some(b) = &server.backend {
        if b.is_self(local) {
            return Err(Error::input(
                format!(
                    "--backend {} is this server itself (listening on {local})",
                    b.url
                ),
                "give the Fractalic backend's own address (move it to another port first)",
            ));
        }
    }
    install_signals(local)?;
    // Reconcile first: the deploys a killed server (or CLI) left half-way are finished or
    // undone before any request is served (docs/crash-safety.md).
    if let Ok(d) = crate::docker::Docker::locate(cli.docker.as_deref()) {
        let m = crate::manage::Manager::over(
            Arc::new(d),
            crate::plugin::search_dirs(cli.plugins_dir.as_deref()),
            crate::progress::Progress::stderr(true),
        );
        let r = crate::reconcile::all(m.docker(), &m);
        for f in &r.fixed {
            eprintln!("warning: repaired: {f}");
        }
        for u in &r.unfinished {
            eprintln!("warning: {}", r.problem(&u.name).unwrap_or_default());
        }
    }
    {
        let mut err = std::io::stderr().lock();
        if a.auth == Auth::None {
            let _ = writeln!(
                err,
                "WARNING: --auth none: no token is asked for; anyone who can reach http://{local} can deploy, stop and remove deployments. Publish the port on the host's loopback only (docker run -p 127.0.0.1:{port}:{port} ...)",
                port = local.port()
            );
        }
        if let Some(b) = &server.backend {
            let _ = writeln!(
                err,
                "forwarding every request without a route here to the Fractalic backend {}",
                b.url
            );
            if server.cors_origins.is_empty() {
                let _ = writeln!(
                    err,
                    "note: no --cors-origin given: browser pages of other origins (the Fractalic UI at http://localhost:3000) are refused"
                );
            }
        }
    }
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on http://{local}");
        let _ = out.flush();
    }
    for stream in listener.incoming() {
        if SHUTDOWN.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let Some(peer) = server.admit(&stream) else {
            overflow(&server, stream);
            continue;
        };
        let srv = Arc::clone(&server);
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .spawn(move || {
                handle(&srv, stream);
                srv.leave(peer);
            });
        if spawned.is_err() {
            server.leave(peer);
        }
    }
    // Until the process exits, new connections are answered 503 (not refused by the OS).
    refuse_while_draining(listener);
    server.runs.close();
    let active = server.runs.active();
    if active > 0 {
        let _ = writeln!(
            std::io::stderr(),
            "shutting down: waiting up to {}s for {active} running deploy(s)",
            SHUTDOWN_WAIT.as_secs()
        );
    }
    if !server.runs.wait_idle(SHUTDOWN_WAIT) {
        // Stop the deploys where they are (no new docker call starts; the one in flight may
        // finish), then undo every run's journal.
        crate::docker::refuse_new_calls();
        let stop = AtomicBool::new(false);
        crate::docker::settle_children(std::time::Instant::now() + Duration::from_secs(30), &stop);
        let report = crate::journal::Journal::undo_all_live();
        let why = format!(
            "the server shut down and the deploy was still running after {}s; rolled back: {}",
            SHUTDOWN_WAIT.as_secs(),
            report.summary()
        );
        let _ = writeln!(std::io::stderr(), "shutting down: {why}");
        // Every client still attached gets the outcome, not a cut-off stream.
        server.runs.fail_unfinished(&why);
    }
    // The deploys are over; their final events may still be on their way to the clients
    // (streams and blocking requests): let the connection threads finish writing them.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.connections.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Open log streams see the shutdown within a moment and kill their `docker logs`.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while logstream::OPEN.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = writeln!(std::io::stderr(), "stopped");
    Ok(crate::error::exit::OK)
}

/// Connections answered 503 at once during a shutdown; more wait in the backlog.
const DRAIN_CONNECTIONS: usize = 64;

/// During a shutdown: every new connection gets `503 the server is shutting down`, read and
/// answered on a thread of its own (at most [`DRAIN_CONNECTIONS`] at once), until the process
/// exits. Nothing new is started.
fn refuse_while_draining(listener: TcpListener) {
    static OPEN: AtomicUsize = AtomicUsize::new(0);
    let _ = std::thread::Builder::new()
        .name("drain".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                if OPEN.fetch_add(1, Ordering::SeqCst) >= DRAIN_CONNECTIONS {
                    OPEN.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                let spawned =
                    std::thread::Builder::new()
                        .name("drain-conn".into())
                        .spawn(move || {
                            // Read the request first: closing on unread bytes would reset the
                            // connection before the client reads the answer.
                            if !matches!(
                                http::read_request(&mut stream),
                                Err(http::ReadError::Gone)
                            ) {
                                let _ = http::write_response(
                                    &mut stream,
                                    &http::Response::error(
                                        503,
                                        "the server is shutting down and takes no new requests",
                                    )
                                    .with("Retry-After", "5"),
                                );
                            }
                            OPEN.fetch_sub(1, Ordering::SeqCst);
                        });
                if spawned.is_err() {
                    OPEN.fetch_sub(1, Ordering::SeqCst);
                }
            }
        });
}

/// First signal: stop accepting (wake the accept loop with a connection of our own).
/// Second signal: roll back whatever is still being deployed and exit 130 at once.
fn install_signals(local: SocketAddr) -> Result<()> {
    ctrlc::set_handler(move || {
        if SHUTDOWN.swap(true, Ordering::SeqCst) {
            crate::docker::refuse_new_calls();
            crate::docker::kill_children();
            let report = crate::journal::Journal::undo_all_live();
            let _ = writeln!(
                std::io::stderr(),
                "interrupted again: rolled back: {}",
                report.summary()
            );
            std::process::exit(crate::cleanup::INTERRUPTED_EXIT);
        }
        let mut wake = local;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
    })
    .map_err(|e| Error::failed(format!("cannot install the signal handler: {e}")))
}

/// The answer for a request that could not be read (None: nobody to answer).
fn read_error(e: http::ReadError) -> Option<http::Response> {
    Some(match e {
        http::ReadError::Gone => return None,
        http::ReadError::Bad(d) => http::Response::error(400, d),
        http::ReadError::Timeout => http::Response::error(
            408,
            format!(
                "the request did not arrive in time (head within {}s, body within {}s)",
                http::HEAD_DEADLINE.as_secs(),
                http::BODY_DEADLINE.as_secs()
            ),
        ),
        http::ReadError::TooLarge(n) => http::Response::error(
            413,
            format!(
                "the body has {n} bytes; at most {} are accepted",
                http::MAX_BODY
            ),
        ),
        http::ReadError::HeadTooLarge => http::Response::error(
            431,
            format!("the request head is over {} bytes", http::MAX_HEAD),
        ),
        http::ReadError::LengthRequired => http::Response::error(
            411,
            "send the body with a Content-Length header (chunked bodies are not accepted)",
        ),
    })
}

fn handle(server: &Arc<Server>, mut stream: TcpStream) {
    let started = std::time::Instant::now();
    let peer = stream.peer_addr().ok();
    let meter = access::begin();
    let _ = stream.set_nodelay(true);
    let done = |method: &str, path: &str| {
        let (status, bytes) = meter.get();
        access::log(peer, method, path, status, bytes, started, false);
    };
    let head = match http::read_head(&mut stream) {
        Ok(h) => h,
        Err(e) => {
            if let Some(resp) = read_error(e) {
                let _ = http::write_response(&mut stream, &resp);
                done("-", "-");
            }
            return;
        }
    };
    let method = head.method.clone();
    let path = access::loggable(&head.target).to_string();
    if let Some(backend) = &server.backend {
        if !forward::owns(&head) {
            let o = forward::handle(server, backend, head, &mut stream);
            access::log(peer, &method, &path, o.status, o.bytes, started, true);
            return;
        }
    }
    let req = match http::read_body(&mut stream, head) {
        Ok(r) => r,
        Err(e) => {
            if let Some(resp) = read_error(e) {
                let _ = http::write_response(&mut stream, &resp);
            }
            done(&method, &path);
            return;
        }
    };
    if let Some(resp) = api::route(server, &req, &mut stream) {
        let resp = api::with_cors(server, &req, resp);
        let _ = http::write_response(&mut stream, &resp);
    }
    done(&method, &path);
}

/// Compares two secrets in time that depends neither on where they differ nor on their
/// lengths: both are hashed (SHA-256) and the digests, always 32 bytes, compared in full.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (x, y) = (Sha256::digest(a), Sha256::digest(b));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn origins_and_listen_addresses() {
        assert!(check_origin("http://localhost:3000").is_ok());
        assert!(check_origin("https://ui.example.com").is_ok());
        for bad in [
            "localhost:3000",
            "http://x/",
            "http://x/path",
            "*",
            "http://",
        ] {
            assert_eq!(check_origin(bad).unwrap_err().exit_code(), 2, "{bad}");
        }
        assert_eq!(parse_listen("127.0.0.1:0").unwrap().port(), 0);
        assert_eq!(parse_listen("nonsense").unwrap_err().exit_code(), 2);
    }
}
