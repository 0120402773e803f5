//! The only place that spawns `docker`: one method per verb, argv vectors, a deadline on every
//! call, and errors that keep the argv, the exit status and docker's stderr.

use crate::engine::Endpoint;
use crate::error::{Error, Result};
use crate::sync::lock;
use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Environment variable naming the docker binary (overridden by `--docker`).
pub(crate) const DOCKER_ENV: &str = "FRACTALIC_PUBLISHER_DOCKER";

/// Deadline for quick calls (ps, inspect, create, cp, start, rm ...).
pub(crate) const QUICK: Duration = Duration::from_secs(30);

/// What a finished docker command printed.
#[derive(Debug, Clone)]
pub(crate) struct Output {
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// What docker's stderr says went wrong (see [`refusal`]).
    pub(crate) fn refusal(&self) -> Refusal {
        refusal(&self.stderr)
    }
}

/// What a failed docker call's answer means. Docker says it only in English sentences; they
/// are read here, once, and every caller matches the kind, never the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No daemon answered (or the context names no engine).
    DaemonDown,
    /// The host port to publish is taken ("port is already allocated", "address already in use").
    PortAllocated,
    /// A container of that name exists ("is already in use").
    NameInUse,
    /// A secret, config, network or volume of that name exists ("already exists").
    AlreadyExists,
    /// A name that matches several objects ("ambiguous": networks may share a name).
    Ambiguous,
    /// `docker exec` into a container that is not running ("is not running").
    NotRunning,
    /// `docker exec`'s program is not in the container ("executable file not found").
    ProgramNotFound,
    /// A swarm command on an engine that is not a swarm manager (or in no swarm).
    NotSwarmManager,
    /// Swarm's scheduler finds no node a task may run on ("no suitable node").
    NoSuitableNode,
    /// An image could not be pulled ("pull access denied", "manifest unknown", "error pulling").
    PullFailed,
    /// The named container, image, service, secret, config or file does not exist.
    NoSuchObject,
    /// Anything else: the stderr itself is the message.
    Other,
}

impl Refusal {
    /// Every kind, in the order [`refusal`] tries them.
    #[cfg(test)]
    pub(crate) const ALL: [Refusal; 12] = [
        Refusal::DaemonDown,
        Refusal::PortAllocated,
        Refusal::NameInUse,
        Refusal::AlreadyExists,
        Refusal::Ambiguous,
        Refusal::NotRunning,
        Refusal::ProgramNotFound,
        Refusal::NotSwarmManager,
        Refusal::NoSuitableNode,
        Refusal::PullFailed,
        Refusal::NoSuchObject,
        Refusal::Other,
    ];

    /// The kind's name as plugins see it (`docker_run`'s `kind`, `docker_kind`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Refusal::DaemonDown => "daemon_down",
            Refusal::PortAllocated => "port_allocated",
            Refusal::NameInUse => "name_in_use",
            Refusal::AlreadyExists => "already_exists",
            Refusal::Ambiguous => "ambiguous",
            Refusal::NotRunning => "not_running",
            Refusal::ProgramNotFound => "program_not_found",
            Refusal::NotSwarmManager => "not_swarm_manager",
            Refusal::NoSuitableNode => "no_suitable_node",
            Refusal::PullFailed => "pull_failed",
            Refusal::NoSuchObject => "no_such_object",
            Refusal::Other => "other",
        }
    }
}

/// Classifies docker's stderr (the first kind that matches, in the order of [`Refusal`]).
pub(crate) fn refusal(stderr: &str) -> Refusal {
    let has = |s: &str| stderr.contains(s);
    if daemon_unreachable(stderr) {
        Refusal::DaemonDown
    } else if has("port is already allocated") || has("address already in use") {
        Refusal::PortAllocated
    } else if has("is already in use") {
        Refusal::NameInUse
    } else if has("already exists") || has("AlreadyExists") {
        Refusal::AlreadyExists
    } else if has("ambiguous") {
        Refusal::Ambiguous
    } else if has("is not running") {
        Refusal::NotRunning
    } else if has("executable file not found")
        || (has("OCI runtime exec failed") && has("no such file or directory"))
    {
        Refusal::ProgramNotFound
    } else if has("not a swarm manager") {
        Refusal::NotSwarmManager
    } else if has("no suitable node") {
        Refusal::NoSuitableNode
    } else if has("pull access denied") || has("manifest unknown") || has("error pulling") {
        Refusal::PullFailed
    } else if has("No such") || has("no such") || has("not found") || has("Could not find the file")
    {
        Refusal::NoSuchObject
    } else {
        Refusal::Other
    }
}

/// A handle on the docker CLI.
#[derive(Debug)]
pub(crate) struct Docker {
    bin: PathBuf,
    calls: AtomicU32,
    /// `--context NAME`, put before every call's arguments.
    context: Option<String>,
    /// Where the engine is (resolved on first use, without a docker call).
    endpoint: OnceLock<Endpoint>,
    /// `deploy --dry-run`: only calls that read run; the first that would change something
    /// fails with [`Error::DryRun`] instead of starting.
    dry: std::sync::atomic::AtomicBool,
    /// The first change a dry run stopped before.
    dry_stopped: std::sync::Mutex<Option<String>>,
}

thread_local! {
    /// Inside [`reading`]: this thread's calls only read (an `exec` that reads a file).
    static READING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with this thread's docker calls declared read-only (the `docker exec`s that read
/// the live release for a plan): a dry run lets them through.
pub(crate) fn reading<T>(f: impl FnOnce() -> T) -> T {
    let before = READING.with(|r| r.replace(true));
    let out = f();
    READING.with(|r| r.set(before));
    out
}

/// Does `docker ARGS` only read? (Subcommands that list, inspect or print; `cp NAME:PATH -`.)
pub(crate) fn read_only(args: &[&str]) -> bool {
    let sub = args.first().copied().unwrap_or("");
    let verb = args.get(1).copied().unwrap_or("");
    match sub {
        "inspect" | "ps" | "images" | "version" | "info" | "logs" | "top" | "port" | "stats" => {
            true
        }
        "image" | "container" | "network" | "volume" | "secret" | "config" | "node" | "context" => {
            matches!(verb, "inspect" | "ls" | "ps" | "show")
        }
        "service" => matches!(verb, "inspect" | "ls" | "ps" | "logs"),
        "system" => matches!(verb, "info" | "df"),
        "manifest" => verb == "inspect",
        "buildx" => verb == "imagetools" && args.get(2) == Some(&"inspect"),
        "cp" => args.get(1).is_some_and(|a| a.contains(':')) && args.get(2) == Some(&"-"),
        _ => false,
    }
}

/// The process's `--context` flag (set once, at startup, before any docker handle is made).
static CONTEXT: OnceLock<Option<String>> = OnceLock::new();

/// The docker binary and `--context` the first [`Docker::locate`] of this process found.
static LOCATED: OnceLock<(PathBuf, Option<String>)> = OnceLock::new();

/// Sets the `--context NAME` every docker call of this process gets; a name docker would not
/// accept is bad input. Call once, before [`Docker::locate`].
pub(crate) fn set_context(name: Option<&str>) -> Result<()> {
    if let Some(n) = name {
        if !crate::engine::valid_context_name(n) {
            return Err(Error::input(
                format!("bad --context {n:?}"),
                "give the name of a docker context (letters, digits, '_', '.', '+', '-'; see `docker context ls`)",
            ));
        }
    }
    let _ = CONTEXT.set(name.map(str::to_string));
    Ok(())
}

impl Docker {
    /// Finds docker: `flag` (from `--docker`), else `FRACTALIC_PUBLISHER_DOCKER`, else `which docker`.
    pub(crate) fn locate(flag: Option<&Path>) -> Result<Docker> {
        let from_env = std::env::var_os(DOCKER_ENV).filter(|v| !v.is_empty());
        let bin = match (flag, from_env) {
            (Some(p), _) => resolve_given(p, "--docker")?,
            (None, Some(v)) => resolve_given(Path::new(&v), DOCKER_ENV)?,
            // (A bare `FROM scratch` job image may start us without PATH: the usual places.)
            (None, None) => which::which("docker")
                .ok()
                .or_else(|| {
                    ["/usr/local/bin/docker", "/usr/bin/docker", "/bin/docker"]
                        .into_iter()
                        .map(PathBuf::from)
                        .find(|p| std::env::var_os("PATH").is_none() && p.is_file())
                })
                .ok_or_else(|| Error::DockerMissing {
                    detail: "no `docker` on PATH".into(),
                })?,
        };
        let mut d = Docker::with_binary(bin);
        d.context = CONTEXT.get().cloned().flatten();
        let _ = LOCATED.set((d.bin.clone(), d.context.clone()));
        if d.context.is_none() && d.endpoint().remote_host().is_none() {
            crate::engine::socket_check()?;
        }
        Ok(d)
    }

    /// A handle on the docker CLI this process located first (for work that has no handle
    /// passed to it, such as probes that look up ports); None before any [`Docker::locate`].
    pub(crate) fn located() -> Option<Docker> {
        let (bin, context) = LOCATED.get()?;
        let d = Docker::with_binary(bin.clone());
        Some(match context {
            Some(c) => d.with_context(c),
            None => d,
        })
    }

    /// From now on, this handle runs only calls that read (see [`read_only`], [`reading`]).
    pub(crate) fn set_dry_run(&self) {
        self.dry.store(true, Ordering::SeqCst);
    }

    /// Is this handle in a dry run?
    pub(crate) fn dry_run(&self) -> bool {
        self.dry.load(Ordering::SeqCst)
    }

    /// In a dry run, refuses a call that would change something.
    fn dry_guard(&self, args: &[&str]) -> Result<()> {
        if self.dry_run() && !read_only(args) && !READING.with(std::cell::Cell::get) {
            return Err(self.dry_stop(format!("`{}`", self.argv(args))));
        }
        Ok(())
    }

    /// The [`Error::DryRun`] for the change `next`; the first one is remembered (a plugin
    /// may catch the error; the plan still ends where the first change would have been).
    pub(crate) fn dry_stop(&self, next: String) -> Error {
        let mut s = crate::sync::lock(&self.dry_stopped);
        if s.is_none() {
            *s = Some(next.clone());
        }
        Error::DryRun { next }
    }

    /// Where a dry run stopped (None: it never reached a change).
    pub(crate) fn dry_stopped(&self) -> Option<String> {
        crate::sync::lock(&self.dry_stopped).clone()
    }

    /// A handle on a known binary (tests use this with fake programs).
    pub(crate) fn with_binary(bin: PathBuf) -> Docker {
        Docker {
            bin,
            calls: AtomicU32::new(0),
            context: None,
            endpoint: OnceLock::new(),
            dry: std::sync::atomic::AtomicBool::new(false),
            dry_stopped: std::sync::Mutex::new(None),
        }
    }

    /// This handle with `--context NAME` before every call's arguments.
    pub(crate) fn with_context(mut self, name: &str) -> Docker {
        self.context = Some(name.to_string());
        self
    }

    /// This handle with the engine's location fixed (tests: a remote engine behind a fake).
    #[cfg(test)]
    pub(crate) fn with_endpoint(self, endpoint: Endpoint) -> Docker {
        let _ = self.endpoint.set(endpoint);
        self
    }

    /// The `--context` in use, if any.
    pub(crate) fn context(&self) -> Option<&str> {
        self.context.as_deref()
    }

    /// Where the engine is: from `--context`, `DOCKER_HOST`, `DOCKER_CONTEXT` or the CLI's
    /// current context (see [`crate::engine::resolve`]); resolved once, without a docker call.
    pub(crate) fn endpoint(&self) -> &Endpoint {
        self.endpoint.get_or_init(|| {
            crate::engine::resolve(&crate::engine::Sources::from_env(self.context()))
        })
    }

    /// `args` with the global flags (`--context NAME`) in front.
    fn full<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = Vec::with_capacity(args.len() + 2);
        if let Some(c) = &self.context {
            v.extend(["--context", c.as_str()]);
        }
        v.extend_from_slice(args);
        v
    }

    /// The binary in use.
    pub(crate) fn binary(&self) -> &Path {
        &self.bin
    }

    /// How many docker processes this handle has started.
    pub(crate) fn calls(&self) -> u32 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Runs `docker ARGS`, feeding `stdin` if given, killing it after `timeout`.
    /// A non-zero exit becomes [`Error::Docker`] (or [`Error::DaemonDown`] when the daemon is
    /// unreachable).
    pub(crate) fn run(
        &self,
        args: &[&str],
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Output> {
        let (status, out) = self.run_unchecked(args, stdin, timeout)?;
        if status == Some(0) {
            Ok(out)
        } else {
            Err(self.classify(args, status, out.stderr))
        }
    }

    /// Like [`Docker::run`] but returns the exit status (None: killed by a signal) instead of
    /// failing on non-zero. Failing to start docker or a timeout are still errors.
    pub(crate) fn run_unchecked(
        &self,
        args: &[&str],
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<(Option<i32>, Output)> {
        self.run_unchecked_env(args, stdin, &[], timeout)
    }

    /// Like [`Docker::run_unchecked`], with `env` added to the docker process's environment
    /// (values the CLI reads itself, e.g. `--env-add KEY` without a value, stay off argv).
    pub(crate) fn run_unchecked_env(
        &self,
        args: &[&str],
        stdin: Option<Vec<u8>>,
        env: &[(String, String)],
        timeout: Duration,
    ) -> Result<(Option<i32>, Output)> {
        let mut expr = duct::cmd(&self.bin, self.full(args))
            .stdout_capture()
            .stderr_capture()
            .unchecked();
        for (k, v) in env {
            expr = expr.env(k, v);
        }
        expr = match stdin {
            Some(bytes) => expr.stdin_bytes(bytes),
            None => expr.stdin_null(),
        };
        let o = self.finish(args, &expr, Some(timeout))?;
        Ok((
            o.status.code(),
            Output {
                stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            },
        ))
    }

    /// Starts `expr` (docker with `args`) and waits for it: until `timeout`, after which it is
    /// killed, or for as long as it runs when `timeout` is None. Counts the call.
    fn finish(
        &self,
        args: &[&str],
        expr: &duct::Expression,
        timeout: Option<Duration>,
    ) -> Result<std::process::Output> {
        self.finish_as(Call::of(args), args, expr, timeout)
    }

    fn finish_as(
        &self,
        call: Call,
        args: &[&str],
        expr: &duct::Expression,
        timeout: Option<Duration>,
    ) -> Result<std::process::Output> {
        self.dry_guard(args)?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        // Its own process group: a Ctrl-C at the terminal reaches only us, and the handler
        // decides whether this call is waited for (create, undo) or killed.
        let expr = expr.before_spawn(|cmd| {
            cmd.process_group(0);
            Ok(())
        });
        let (handle, _tracked) = track(call, &self.argv(args), || {
            expr.start().map(|h| {
                let h = Arc::new(h);
                (Arc::clone(&h), Killer::Duct(h))
            })
        })
        .map_err(|e| self.spawn_error(e))?;
        let waiting = |e: std::io::Error| Error::DockerMissing {
            detail: format!("waiting for {}: {e}", self.bin.display()),
        };
        let Some(timeout) = timeout else {
            return handle.wait().cloned().map_err(waiting);
        };
        let (tx, rx) = mpsc::channel();
        let waiter = Arc::clone(&handle);
        std::thread::spawn(move || {
            let _ = tx.send(waiter.wait().cloned());
        });
        match rx.recv_timeout(timeout) {
            Ok(r) => r.map_err(waiting),
            Err(_) => {
                let _ = handle.kill();
                Err(Error::DockerTimeout {
                    argv: self.argv(args),
                    secs: timeout.as_secs().max(1),
                })
            }
        }
    }

    /// `docker ARGS` fed by `produce` ([`Docker::stdin_stream`]) as one answer, the
    /// same for every streamed copy: docker's exit 0 gives the producer's result; otherwise
    /// the daemon being down is [`Error::DaemonDown`], a producer that failed on its own (an
    /// unreadable or shrinking file: it cut the stream, docker's complaint follows from that)
    /// gives its error, and one that only saw the pipe break (docker went first) gives
    /// docker's [`Error::Docker`].
    pub(crate) fn stream_into<T: Send>(
        &self,
        args: &[&str],
        idle: Duration,
        produce: impl FnOnce(&mut dyn std::io::Write) -> Result<T> + Send,
    ) -> Result<T> {
        let (status, out, produced, pipe_broke) = self.stdin_stream(args, idle, produce)?;
        if status == Some(0) {
            return produced;
        }
        if out.refusal() == Refusal::DaemonDown {
            return Err(Error::DaemonDown { detail: out.stderr });
        }
        match produced {
            Err(e) if !pipe_broke => Err(e),
            _ => Err(Error::Docker {
                argv: self.argv(args),
                status,
                stderr: out.stderr,
            }),
        }
    }

    /// Runs `docker ARGS` while `produce` (on its own thread) writes its stdin, so a large
    /// input is streamed instead of held in memory. The deadline is one of inactivity: docker is
    /// killed when it has taken no input for `idle`, or has not exited `idle` after the input
    /// ended. Returns the exit status, what docker printed, and what `produce` returned (a
    /// producer that stops early sees a broken pipe once docker has gone), and whether a write
    /// found the pipe broken (docker had stopped reading).
    fn stdin_stream<T: Send>(
        &self,
        args: &[&str],
        idle: Duration,
        produce: impl FnOnce(&mut dyn std::io::Write) -> T + Send,
    ) -> Result<(Option<i32>, Output, T, bool)> {
        use std::io::Read;
        use std::process::{Command, Stdio};
        use std::sync::atomic::AtomicU64;
        use std::time::Instant;

        self.dry_guard(args)?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let cannot_run = |e: std::io::Error| Error::DockerMissing {
            detail: format!("cannot run {}: {e}", self.bin.display()),
        };
        let (reader, writer) = std::io::pipe().map_err(cannot_run)?;
        // The Command (and with it our copy of the pipe's read end) is dropped right after the
        // spawn, so the producer gets a broken pipe, not a hang, if docker exits early.
        let (child, _tracked) = track(Call::of(args), &self.argv(args), || {
            let mut c = Command::new(&self.bin)
                .args(self.full(args))
                .stdin(Stdio::from(reader))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .spawn()?;
            let out = (c.stdout.take(), c.stderr.take());
            let c = Arc::new(Mutex::new(c));
            Ok(((Arc::clone(&c), out), Killer::Std(c)))
        })
        .map_err(|e| self.spawn_error(e))?;
        let (child, (mut stdout, mut stderr)) = child;
        let child_try_wait = || lock(&child).try_wait();
        let written = AtomicU64::new(0);
        let producing = std::sync::atomic::AtomicBool::new(true);
        let pipe_broke = std::sync::atomic::AtomicBool::new(false);

        struct Counting<'w> {
            inner: std::io::PipeWriter,
            written: &'w AtomicU64,
            broke: &'w std::sync::atomic::AtomicBool,
        }
        impl Counting<'_> {
            fn note<R>(&self, r: std::io::Result<R>) -> std::io::Result<R> {
                if r.as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
                {
                    self.broke.store(true, Ordering::Relaxed);
                }
                r
            }
        }
        impl std::io::Write for Counting<'_> {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let r = self.inner.write(buf);
                let n = self.note(r)?;
                self.written.fetch_add(n as u64, Ordering::Relaxed);
                Ok(n)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                let r = self.inner.flush();
                self.note(r)
            }
        }

        std::thread::scope(|scope| {
            let producer = scope.spawn(|| {
                let mut w = Counting {
                    inner: writer,
                    written: &written,
                    broke: &pipe_broke,
                };
                let r = produce(&mut w);
                drop(w);
                producing.store(false, Ordering::Relaxed);
                r
            });
            let out_reader = scope.spawn(move || {
                let mut buf = Vec::new();
                if let Some(s) = stdout.as_mut() {
                    let _ = s.read_to_end(&mut buf);
                }
                buf
            });
            let err_reader = scope.spawn(move || {
                let mut buf = Vec::new();
                if let Some(s) = stderr.as_mut() {
                    let _ = s.read_to_end(&mut buf);
                }
                buf
            });

            let mut last = (written.load(Ordering::Relaxed), Instant::now());
            let mut timed_out = false;
            let status = loop {
                match child_try_wait() {
                    Ok(Some(st)) => break Ok(st),
                    Ok(None) => {}
                    Err(e) => break Err(e),
                }
                let now_written = written.load(Ordering::Relaxed);
                if now_written != last.0 {
                    last = (now_written, Instant::now());
                } else if last.1.elapsed() >= idle {
                    timed_out = true;
                    let mut c = lock(&child);
                    let _ = c.kill();
                    break c.wait();
                }
                // While input flows the check is cheap; once it has ended, docker finishes
                // quickly, so a short poll keeps the added latency to a few milliseconds.
                let pause = if producing.load(Ordering::Relaxed) {
                    10
                } else {
                    2
                };
                std::thread::sleep(Duration::from_millis(pause));
            };
            let produced = producer
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            let stdout = out_reader.join().unwrap_or_default();
            let stderr = err_reader.join().unwrap_or_default();
            if timed_out {
                return Err(Error::DockerTimeout {
                    argv: self.argv(args),
                    secs: idle.as_secs().max(1),
                });
            }
            let status = status.map_err(|e| Error::DockerMissing {
                detail: format!("waiting for {}: {e}", self.bin.display()),
            })?;
            Ok((
                status.code(),
                Output {
                    stdout: String::from_utf8_lossy(&stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&stderr).into_owned(),
                },
                produced,
                pipe_broke.load(Ordering::Relaxed),
            ))
        })
    }

    /// `docker a b c` as shown in messages (never contains secrets: we never pass any on argv).
    pub(crate) fn argv(&self, args: &[&str]) -> String {
        let mut s = String::from("docker");
        for a in self.full(args) {
            s.push(' ');
            s.push_str(a);
        }
        s
    }

    /// Why a docker process could not be started: refused after an interrupt, or the binary
    /// cannot run.
    fn spawn_error(&self, e: SpawnError) -> Error {
        match e {
            SpawnError::Interrupted => Error::Interrupted,
            SpawnError::Io(e) => Error::DockerMissing {
                detail: format!("cannot run {}: {e}", self.bin.display()),
            },
        }
    }

    /// Runs `docker ARGS` as a step of an undo: allowed after an interrupt (when other calls
    /// are refused) and waited for, not killed, by the interrupt handler (only a second
    /// interrupt stops it). Returns the exit status and output like [`Docker::run_unchecked`].
    pub(crate) fn run_undo(
        &self,
        args: &[&str],
        timeout: Duration,
    ) -> Result<(Option<i32>, Output)> {
        let expr = duct::cmd(&self.bin, self.full(args))
            .stdout_capture()
            .stderr_capture()
            .stdin_null()
            .unchecked();
        let o = self.finish_as(Call::Undo, args, &expr, Some(timeout))?;
        Ok((
            o.status.code(),
            Output {
                stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            },
        ))
    }

    fn classify(&self, args: &[&str], status: Option<i32>, stderr: String) -> Error {
        if daemon_unreachable(&stderr) {
            Error::DaemonDown { detail: stderr }
        } else if status.is_some() && stderr.trim().is_empty() {
            // The docker CLI always says why it failed; a binary that fails without a word is
            // not docker (e.g. `--docker /bin/false`), and no retry or cleanup will help.
            Error::DockerUnusable {
                detail: format!(
                    "{} failed without a word (`docker {} ...` exited with code {})",
                    self.bin.display(),
                    args.first().copied().unwrap_or(""),
                    status.unwrap_or_default()
                ),
            }
        } else {
            Error::Docker {
                argv: self.argv(args),
                status,
                stderr,
            }
        }
    }

    /// `docker version` server version; fails with DaemonDown when no daemon answers.
    pub(crate) fn server_version(&self) -> Result<String> {
        let out = self.run(
            &["version", "--format", "{{.Server.Version}}"],
            None,
            Duration::from_secs(10),
        )?;
        Ok(out.stdout.trim().to_string())
    }

    /// `docker pull [--platform P] IMAGE` with the given deadline.
    pub(crate) fn pull(
        &self,
        image: &str,
        platform: Option<&str>,
        timeout: Duration,
    ) -> Result<()> {
        let mut args = vec!["pull", "--quiet"];
        if let Some(p) = platform {
            args.extend(["--platform", p]);
        }
        args.push(image);
        self.run(&args, None, timeout).map(|_| ())
    }

    /// `docker image inspect IMAGE`: None when the image is not in the local cache.
    pub(crate) fn image_inspect(&self, image: &str) -> Result<Option<Value>> {
        inspect_one(self, &["image", "inspect", image], QUICK)
    }

    /// `docker container inspect NAME`: None when no such container exists.
    pub(crate) fn container_inspect(&self, name: &str) -> Result<Option<Value>> {
        self.container_inspect_within(name, QUICK)
    }

    /// [`Docker::container_inspect`] with its own deadline.
    pub(crate) fn container_inspect_within(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<Value>> {
        inspect_one(self, &["container", "inspect", name], timeout)
    }

    /// `docker exec CONTAINER ARGV...`: exit status and output, without failing on non-zero.
    pub(crate) fn exec(
        &self,
        container: &str,
        argv: &[&str],
        timeout: Duration,
    ) -> Result<(Option<i32>, Output)> {
        let mut args = vec!["exec", container];
        args.extend_from_slice(argv);
        let (status, out) = self.run_unchecked(&args, None, timeout)?;
        if status != Some(0) && daemon_unreachable(&out.stderr) {
            return Err(Error::DaemonDown { detail: out.stderr });
        }
        Ok((status, out))
    }

    /// `docker rm -f NAME` (also removes anonymous volumes); a missing container is not an error.
    pub(crate) fn remove(&self, name: &str) -> Result<()> {
        let args = ["rm", "-f", "-v", name];
        let (status, out) = self.run_unchecked(&args, None, QUICK)?;
        if status == Some(0) || out.refusal() == Refusal::NoSuchObject {
            Ok(())
        } else {
            Err(self.classify(&args, status, out.stderr))
        }
    }

    /// Reads one regular file out of a container (`docker cp NAME:PATH -`): None if missing.
    pub(crate) fn read_file(&self, container: &str, path: &str) -> Result<Option<Vec<u8>>> {
        self.read_file_within(container, path, QUICK)
    }

    /// The raw tar stream of `docker cp CONTAINER:PATH -` (a file or a whole directory, owners
    /// and modes kept), or None when the container or the path does not exist.
    pub(crate) fn read_tar(&self, container: &str, path: &str) -> Result<Option<Vec<u8>>> {
        let src = format!("{container}:{path}");
        let args = ["cp", src.as_str(), "-"];
        let expr = duct::cmd(&self.bin, self.full(&args))
            .stdout_capture()
            .stderr_capture()
            .stdin_null()
            .unchecked();
        let out = self.finish(&args, &expr, Some(QUICK))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            if refusal(&stderr) == Refusal::NoSuchObject {
                return Ok(None);
            }
            return Err(self.classify(&args, out.status.code(), stderr));
        }
        Ok(Some(out.stdout))
    }

    /// [`Docker::read_file`] with its own deadline.
    pub(crate) fn read_file_within(
        &self,
        container: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<Option<Vec<u8>>> {
        let src = format!("{container}:{path}");
        let args = ["cp", src.as_str(), "-"];
        // Binary-safe: the raw bytes of the tar stream, not a lossy string.
        let expr = duct::cmd(&self.bin, self.full(&args))
            .stdout_capture()
            .stderr_capture()
            .stdin_null()
            .unchecked();
        let out = self.finish(&args, &expr, Some(timeout))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            if refusal(&stderr) == Refusal::NoSuchObject {
                return Ok(None);
            }
            return Err(self.classify(&args, out.status.code(), stderr));
        }
        let mut archive = tar::Archive::new(out.stdout.as_slice());
        let entries = archive
            .entries()
            .map_err(|e| Error::failed(format!("docker cp {src}: bad tar stream: {e}")))?;
        for entry in entries {
            let mut entry = entry
                .map_err(|e| Error::failed(format!("docker cp {src}: bad tar stream: {e}")))?;
            if entry.header().entry_type().is_file() {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut buf)
                    .map_err(|e| Error::failed(format!("docker cp {src}: {e}")))?;
                return Ok(Some(buf));
            }
        }
        Ok(None)
    }

    /// Runs `docker ARGS` with this process's stdout and stderr, so its output reaches the user
    /// as docker writes it (interleaved). `timeout` None waits for as long as docker runs: only
    /// for commands that end when the user says so (`docker logs --follow`, ended by Ctrl-C).
    /// Returns the exit status (None: killed by a signal); a non-zero exit whose stderr we
    /// cannot see is left to the caller to explain.
    pub(crate) fn stream(&self, args: &[&str], timeout: Option<Duration>) -> Result<Option<i32>> {
        let expr = duct::cmd(&self.bin, self.full(args))
            .stdin_null()
            .unchecked();
        Ok(self.finish(args, &expr, timeout)?.status.code())
    }
}

impl Docker {
    /// Runs `docker ARGS` (a command that runs until stopped, such as `docker logs --follow`)
    /// and hands what it prints, stdout and stderr, to `sink` a line at a time (a line longer
    /// than 64 KiB in pieces). Ends when docker exits, when `sink` returns false, or when
    /// `stop` is set (docker is killed then; `stop` is polled every 50 ms, so a caller ends
    /// the follow from another thread). Returns docker's exit status (None: killed).
    pub(crate) fn follow(
        &self,
        args: &[&str],
        stop: &AtomicBool,
        sink: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Option<i32>> {
        use std::process::{Command, Stdio};
        self.calls.fetch_add(1, Ordering::Relaxed);
        let bin = self.bin.clone();
        let (child, _tracked) = track(Call::Ordinary, &self.argv(args), || {
            let c = Command::new(&bin)
                .args(self.full(args))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .spawn()?;
            let c = Arc::new(Mutex::new(c));
            Ok((Arc::clone(&c), Killer::Std(c)))
        })
        .map_err(|e| self.spawn_error(e))?;
        let (out, err) = {
            let mut c = lock(&child);
            (c.stdout.take(), c.stderr.take())
        };
        let done = AtomicBool::new(false);
        let status = std::thread::scope(|scope| {
            let pump = |r: Option<Box<dyn std::io::Read + Send>>| {
                let done = &done;
                scope.spawn(move || {
                    if let Some(r) = r {
                        if !pump_lines(r, sink) {
                            done.store(true, Ordering::SeqCst);
                        }
                    }
                })
            };
            let a = pump(out.map(|o| Box::new(o) as Box<dyn std::io::Read + Send>));
            let b = pump(err.map(|e| Box::new(e) as Box<dyn std::io::Read + Send>));
            let status = loop {
                if stop.load(Ordering::SeqCst) || done.load(Ordering::SeqCst) {
                    let mut c = lock(&child);
                    let _ = c.kill();
                    break c.wait().ok().and_then(|s| s.code());
                }
                match lock(&child).try_wait() {
                    Ok(Some(s)) => break s.code(),
                    Ok(None) => {}
                    Err(_) => break None,
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            let _ = a.join();
            let _ = b.join();
            status
        });
        Ok(status)
    }
}

/// Reads `r` to its end, calling `sink` with each line (newline kept); false when `sink`
/// asked to stop.
fn pump_lines(mut r: impl std::io::Read, sink: &(dyn Fn(&str) -> bool + Sync)) -> bool {
    const MAX_LINE: usize = 64 * 1024;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(i) = buf
            .iter()
            .position(|b| *b == b'\n')
            .or_else(|| (buf.len() >= MAX_LINE).then_some(MAX_LINE - 1))
        {
            let line: Vec<u8> = buf.drain(..=i).collect();
            if !sink(&String::from_utf8_lossy(&line)) {
                return false;
            }
        }
    }
    buf.is_empty() || sink(&String::from_utf8_lossy(&buf))
}

/// What [`Docker::exec_until_ok`] saw.
#[derive(Debug)]
pub(crate) struct ExecOutcome {
    pub ok: bool,
    /// The last attempt's stdout.
    pub stdout: String,
    pub attempts: u32,
    /// Why the last attempt failed (empty when `ok`).
    pub error: String,
    pub elapsed: Duration,
}

/// Signals between a readiness wait and an [`Docker::exec_until_ok`] running beside it.
#[derive(Debug, Default)]
pub(crate) struct ExecSignals {
    /// Give up now (the other wait failed).
    pub stop: AtomicBool,
    /// The other service just answered: retry at once instead of finishing the pause.
    pub wake: AtomicBool,
}

impl ExecSignals {
    /// Sleeps up to `total`, returning early on `stop`, or on the first `wake`.
    fn pause(&self, total: Duration, woken: &mut bool) {
        let end = std::time::Instant::now() + total;
        while std::time::Instant::now() < end {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            if !*woken && self.wake.load(Ordering::Relaxed) {
                *woken = true;
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Docker {
    /// Runs `docker exec CONTAINER ARGV...` until it exits 0, `timeout` passes, or
    /// `signals.stop` is set: about every 200 ms, or at once when `signals.wake` is first set.
    /// A command that keeps failing is reported in the outcome, not as an error; only an
    /// unreachable daemon is an error.
    pub(crate) fn exec_until_ok(
        &self,
        container: &str,
        argv: &[&str],
        timeout: Duration,
        signals: &ExecSignals,
    ) -> Result<ExecOutcome> {
        let start = std::time::Instant::now();
        let deadline = start + timeout;
        let mut woken = false;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let per_try = left.clamp(Duration::from_secs(1), Duration::from_secs(10));
            let (ok, stdout, error) = match self.exec(container, argv, per_try) {
                Ok((Some(0), out)) => (true, out.stdout, String::new()),
                Ok((status, out)) => {
                    let code = status.map_or("signal".into(), |c| c.to_string());
                    let line = out.stderr.lines().next().unwrap_or("").trim().to_string();
                    (false, out.stdout, format!("exit {code}: {line}"))
                }
                Err(e @ (Error::DaemonDown { .. } | Error::Interrupted)) => return Err(e),
                Err(e) => (false, String::new(), e.to_string()),
            };
            if ok
                || signals.stop.load(Ordering::Relaxed)
                || std::time::Instant::now() + Duration::from_millis(200) >= deadline
            {
                return Ok(ExecOutcome {
                    ok,
                    stdout,
                    attempts,
                    error,
                    elapsed: start.elapsed(),
                });
            }
            signals.pause(Duration::from_millis(200), &mut woken);
        }
    }
}

fn inspect_one(docker: &Docker, args: &[&str], timeout: Duration) -> Result<Option<Value>> {
    let (status, out) = docker.run_unchecked(args, None, timeout)?;
    if status != Some(0) {
        if out.refusal() == Refusal::NoSuchObject {
            return Ok(None);
        }
        return Err(docker.classify(args, status, out.stderr));
    }
    // The docker CLI always prints a JSON array here; anything else is not docker talking.
    let v: Value = serde_json::from_str(&out.stdout).map_err(|e| Error::DockerUnusable {
        detail: format!(
            "{}: `{}` printed no JSON ({e})",
            docker.bin.display(),
            docker.argv(args)
        ),
    })?;
    Ok(v.as_array().and_then(|a| a.first()).cloned())
}

fn resolve_given(p: &Path, source: &str) -> Result<PathBuf> {
    if p.components().count() > 1 || p.is_absolute() {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        return Err(Error::DockerMissing {
            detail: format!("{source} names {}, which is not a file", p.display()),
        });
    }
    which::which(p).map_err(|_| Error::DockerMissing {
        detail: format!("{source} names `{}`, which is not on PATH", p.display()),
    })
}

/// Does docker's stderr say the daemon could not be reached?
pub(crate) fn daemon_unreachable(stderr: &str) -> bool {
    stderr.contains("Cannot connect to the Docker daemon")
        || stderr.contains("Is the docker daemon running")
        || stderr.contains("error during connect")
        || (stderr.contains("dial unix") && stderr.contains("connect:"))
        // A --context or DOCKER_CONTEXT that names no context: no engine to talk to.
        || stderr.contains("unable to resolve docker endpoint")
}

// --- docker processes in flight ----------------------------------------------------------------

/// What a docker call does, which decides what an interrupt does to it while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// Reads or changes something that the undo covers anyway: killed on an interrupt.
    Ordinary,
    /// Creates something (`create`, `run`, `service create` ...): waited for on an interrupt,
    /// so what it makes exists (and is undone) or does not, never appears after the cleanup.
    Creates,
    /// A step of an undo: allowed after an interrupt, and waited for.
    Undo,
}

impl Call {
    /// The kind of `docker ARGS`.
    pub(crate) fn of(args: &[&str]) -> Call {
        match args {
            ["create" | "run", ..] => Call::Creates,
            ["container", "create" | "run", ..] => Call::Creates,
            ["service" | "secret" | "config" | "network" | "volume", "create", ..] => Call::Creates,
            // A commit or tag cut short could still make the image after the undo ran.
            ["commit" | "tag", ..] | ["image", "tag", ..] => Call::Creates,
            _ => Call::Ordinary,
        }
    }
}

enum Killer {
    Duct(Arc<duct::Handle>),
    Std(Arc<Mutex<std::process::Child>>),
}

impl Killer {
    fn pid(&self) -> Option<u32> {
        match self {
            Killer::Duct(h) => h.pids().first().copied(),
            Killer::Std(c) => Some(lock(c).id()),
        }
    }

    fn kill(&self) {
        // Both refuse to signal a process already reaped, so a reused pid is never hit.
        match self {
            Killer::Duct(h) => {
                let _ = h.kill();
            }
            Killer::Std(c) => {
                let _ = lock(c).kill();
            }
        }
    }
}

struct InFlight {
    id: u64,
    call: Call,
    argv: String,
    killer: Killer,
    /// Its pid and process start time, for the on-disk list (see [`note_children`]).
    pid: Option<(u32, Option<u64>)>,
}

struct Children {
    /// Set by an interrupt: only undo calls may start from now on.
    closed: bool,
    next: u64,
    list: Vec<InFlight>,
}

static CHILDREN: Mutex<Children> = Mutex::new(Children {
    closed: false,
    next: 0,
    list: Vec::new(),
});

enum SpawnError {
    Interrupted,
    Io(std::io::Error),
}

/// Unregisters a docker process when its call is over.
struct Tracked(u64);

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut c = lock(&CHILDREN);
        c.list.retain(|c| c.id != self.0);
        note_children(&c.list);
    }
}

/// The file listing this process's docker calls in flight: `children/PID-START.json` in the
/// state directory, a JSON array of `[pid, start]`. A process killed with SIGKILL leaves its
/// docker calls running as orphans; the next command's reconcile ([`settle_orphans`]) lets
/// them end (or kills them) before it undoes anything, so no orphaned `docker start` lands
/// after the undo. Rewritten by a rename at each change (no fsync: after a reboot no child
/// runs), removed while no call is in flight.
fn children_file() -> Option<&'static PathBuf> {
    static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();
    FILE.get_or_init(|| {
        let me = std::process::id();
        let start = crate::process::process_start(me)?;
        let dir = crate::state::state_dir().join("children");
        Some(dir.join(format!("{me}-{start}.json")))
    })
    .as_ref()
}

fn note_children(list: &[InFlight]) {
    let Some(path) = children_file() else { return };
    let pids: Vec<(u32, Option<u64>)> = list.iter().filter_map(|c| c.pid).collect();
    if pids.is_empty() {
        let _ = std::fs::remove_file(path);
        return;
    }
    let Some(dir) = path.parent() else { return };
    if !dir.is_dir()
        && (crate::state::ensure(dir.parent().unwrap_or(dir)).is_err()
            || crate::state::ensure(dir).is_err())
    {
        return;
    }
    let beside = path.with_extension("new");
    let text = serde_json::to_string(&pids).unwrap_or_default();
    if std::fs::write(&beside, text).is_ok() {
        let _ = std::fs::rename(&beside, path);
    }
}

/// Before a reconcile: the docker calls that dead processes of this tool left running (see
/// [`children_file`]) get until `deadline` to end, then are killed (their process group:
/// docker runs in its own); the lists are removed. Returns how many were still running.
pub(crate) fn settle_orphans(deadline: Instant) -> usize {
    settle_orphans_in(&crate::state::state_dir().join("children"), deadline)
}

/// [`settle_orphans`] for the lists in `dir`.
fn settle_orphans_in(dir: &Path, deadline: Instant) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut orphans: Vec<(u32, Option<u64>)> = Vec::new();
    let mut files = Vec::new();
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().to_string();
        // `PID-START.new`: a list written beside, not yet renamed into place when its
        // writer died; as much a list of its calls as the `.json` (and removed with it).
        let Some(stem) = name
            .strip_suffix(".json")
            .or_else(|| name.strip_suffix(".new"))
        else {
            continue;
        };
        let mut it = stem.splitn(2, '-');
        let owner = it.next().and_then(|p| p.parse::<u32>().ok());
        let start = it.next().and_then(|s| s.parse::<u64>().ok());
        let Some(owner) = owner else { continue };
        if crate::process::alive(owner, start) != Some(false) {
            continue;
        }
        if let Ok(text) = std::fs::read_to_string(e.path()) {
            if let Ok(v) = serde_json::from_str::<Vec<(u32, Option<u64>)>>(&text) {
                orphans.extend(v);
            }
        }
        files.push(e.path());
    }
    let running =
        |o: &(u32, Option<u64>)| crate::process::alive(o.0, o.1) == Some(true) && o.1.is_some();
    orphans.retain(running);
    let n = orphans.len();
    while !orphans.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        orphans.retain(running);
    }
    for (pid, _) in orphans.iter().filter(|o| running(o)) {
        if let Ok(pid) = i32::try_from(*pid) {
            // SAFETY: plain kill(2) on a pid whose start time was just checked.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    for f in files {
        let _ = std::fs::remove_file(f);
    }
    n
}

/// Spawns through `spawn` and registers the process, atomically with the interrupt check: a
/// call either starts before an interrupt (and the handler sees it) or is refused.
fn track<T>(
    call: Call,
    argv: &str,
    spawn: impl FnOnce() -> std::io::Result<(T, Killer)>,
) -> std::result::Result<(T, Tracked), SpawnError> {
    let mut c = lock(&CHILDREN);
    if c.closed && call != Call::Undo {
        return Err(SpawnError::Interrupted);
    }
    let (value, killer) = spawn().map_err(SpawnError::Io)?;
    c.next += 1;
    let id = c.next;
    let pid = killer.pid().map(|p| (p, crate::process::process_start(p)));
    c.list.push(InFlight {
        id,
        call,
        argv: argv.to_string(),
        killer,
        pid,
    });
    note_children(&c.list);
    Ok((value, Tracked(id)))
}

/// After an interrupt: refuses every new docker call except undo steps.
pub(crate) fn refuse_new_calls() {
    lock(&CHILDREN).closed = true;
}

/// Whether new docker calls are refused (an interrupt arrived).
pub(crate) fn refusing() -> bool {
    lock(&CHILDREN).closed
}

/// After an interrupt: kills the docker calls that can simply stop, and waits for the ones
/// that create something or undo something until they end, `deadline` passes or `stop` is
/// set (a second interrupt); those still running then are killed. Returns the argv of the
/// calls that had to be killed while creating or undoing.
pub(crate) fn settle_children(deadline: Instant, stop: &AtomicBool) -> Vec<String> {
    for c in lock(&CHILDREN)
        .list
        .iter()
        .filter(|c| c.call == Call::Ordinary)
    {
        c.killer.kill();
    }
    loop {
        let waiting = lock(&CHILDREN)
            .list
            .iter()
            .any(|c| c.call != Call::Ordinary);
        if !waiting {
            return Vec::new();
        }
        if Instant::now() >= deadline || stop.load(Ordering::SeqCst) {
            return kill_children();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills every docker call in flight; returns the argv of those that were creating or undoing.
pub(crate) fn kill_children() -> Vec<String> {
    let c = lock(&CHILDREN);
    c.list.iter().for_each(|c| c.killer.kill());
    c.list
        .iter()
        .filter(|c| c.call != Call::Ordinary)
        .map(|c| c.argv.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_answers_are_classified_once_into_kinds() {
        use Refusal::*;
        for (stderr, kind) in [
            ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?", DaemonDown),
            ("error during connect: Get \"http://%2Fvar%2Frun%2Fdocker.sock/v1.45/containers/json\": dial unix /var/run/docker.sock: connect: no such file or directory", DaemonDown),
            ("Error response from daemon: driver failed programming external connectivity on endpoint fp (1a2b): Bind for 0.0.0.0:8001 failed: port is already allocated", PortAllocated),
            ("Error starting userland proxy: listen tcp4 0.0.0.0:8001: bind: address already in use", PortAllocated),
            ("Error response from daemon: Conflict. The container name \"/fp\" is already in use by container \"3f2c\". You have to remove (or rename) that container to be able to reuse that name.", NameInUse),
            ("Error response from daemon: rpc error: code = AlreadyExists desc = secret fp.settings.0a1b2c3d4e5f already exists", AlreadyExists),
            ("Error response from daemon: network fractalic-proxy is ambiguous (2 matches found based on name)", Ambiguous),
            ("Error response from daemon: container 3f2c is not running", NotRunning),
            ("OCI runtime exec failed: exec failed: unable to start container process: exec: \"curl\": executable file not found in $PATH: unknown", ProgramNotFound),
            ("OCI runtime exec failed: exec failed: unable to start container process: exec: \"/bin/nope\": stat /bin/nope: no such file or directory: unknown", ProgramNotFound),
            ("Error response from daemon: No such container: fp", NoSuchObject),
            ("Error: No such object: fp", NoSuchObject),
            ("Error response from daemon: service fp not found", NoSuchObject),
            ("Error response from daemon: Could not find the file /payload/x in container fp", NoSuchObject),
            ("Error response from daemon: This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.", NotSwarmManager),
            ("Error response from daemon: pull access denied for nope, repository does not exist or may require 'docker login'", PullFailed),
            ("No such image: 127.0.0.1:5999/x:y", NoSuchObject),
            ("no suitable node (max replicas per node limit exceed; scheduling constraints not satisfied on 1 node)", NoSuitableNode),
            ("error pulling image configuration: manifest unknown", PullFailed),
            ("Error response from daemon: manifest for x:y unknown", Other),
            ("", Other),
        ] {
            assert_eq!(refusal(stderr), kind, "{stderr}");
        }
        let names: std::collections::BTreeSet<&str> =
            Refusal::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), Refusal::ALL.len(), "two kinds share a name");
    }
    use std::os::unix::fs::PermissionsExt;

    fn fake(dir: &Path, body: &str) -> PathBuf {
        let p = dir.join("docker");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn a_dead_runs_orphaned_docker_call_is_waited_for_then_killed() {
        let dir = tempfile::tempdir().unwrap();
        // The owner: a process that is gone. Its orphan: a live process (in its own group,
        // as docker calls are), listed with its start time.
        let mut owner = std::process::Command::new("true").spawn().unwrap();
        let owner_pid = owner.id();
        owner.wait().unwrap();
        let mut orphan = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let start = crate::process::process_start(orphan.id());
        let list = dir.path().join(format!("{owner_pid}-1.json"));
        std::fs::write(&list, serde_json::json!([[orphan.id(), start]]).to_string()).unwrap();
        // Its list written beside but not renamed into place when it died.
        let beside = dir.path().join(format!("{owner_pid}-1.new"));
        std::fs::write(&beside, "[]").unwrap();
        // A live owner's list is not touched.
        let me = std::process::id();
        let mine = dir.path().join(format!(
            "{me}-{}.json",
            crate::process::process_start(me).unwrap()
        ));
        std::fs::write(&mine, "[]").unwrap();
        let t0 = Instant::now();
        assert_eq!(settle_orphans_in(dir.path(), Instant::now()), 1);
        let status = orphan.wait().unwrap();
        assert!(!status.success(), "the orphan was killed");
        assert!(t0.elapsed() < Duration::from_secs(20));
        assert!(!list.exists(), "the dead run's list is removed");
        assert!(!beside.exists(), "and the one it wrote beside");
        assert!(mine.exists(), "a live run's list stays");
    }

    #[test]
    fn keeps_argv_status_and_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let d = Docker::with_binary(fake(
            dir.path(),
            "echo 'Error response from daemon: nope' >&2; exit 4",
        ));
        let e = d.run(&["start", "x"], None, QUICK).unwrap_err();
        match &e {
            Error::Docker { argv, status, .. } => {
                assert_eq!(argv, "docker start x");
                assert_eq!(*status, Some(4));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(e.to_string(), "`docker start x` failed (exit 4): nope");
        assert_eq!(d.calls(), 1);
    }

    #[test]
    fn daemon_down_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let d = Docker::with_binary(fake(
            dir.path(),
            "echo 'Cannot connect to the Docker daemon at unix:///x.sock. Is the docker daemon running?' >&2; exit 1",
        ));
        let e = d.run(&["ps"], None, QUICK).unwrap_err();
        assert_eq!(e.exit_code(), 3, "{e}");
    }

    #[test]
    fn a_binary_that_fails_without_a_word_is_not_docker() {
        // Like `--docker /bin/false`: exit 1, nothing on stderr.
        let dir = tempfile::tempdir().unwrap();
        let d = Docker::with_binary(fake(dir.path(), "exit 1"));
        let e = d.run(&["ps", "-a"], None, QUICK).unwrap_err();
        assert!(matches!(e, Error::DockerUnusable { .. }), "{e:?}");
        assert_eq!(e.exit_code(), 3);
        assert_eq!(e.kind(), "docker_unusable");
        let msg = e.to_string();
        assert!(
            msg.contains("failed without a word (`docker ps ...` exited with code 1)")
                && msg.contains("does not behave like the docker CLI"),
            "{msg}"
        );
    }

    #[test]
    fn timeout_kills_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let d = Docker::with_binary(fake(dir.path(), "exec sleep 30"));
        let t0 = std::time::Instant::now();
        let e = d
            .run(&["pull", "x"], None, Duration::from_millis(200))
            .unwrap_err();
        assert!(matches!(e, Error::DockerTimeout { .. }), "{e:?}");
        assert!(t0.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn stdin_is_fed() {
        let dir = tempfile::tempdir().unwrap();
        let d = Docker::with_binary(fake(dir.path(), "cat"));
        let out = d.run(&["cp"], Some(b"hello".to_vec()), QUICK).unwrap();
        assert_eq!(out.stdout, "hello");
    }

    #[test]
    fn streamed_stdin_reaches_docker_and_the_producer_result_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let sink = dir.path().join("sink");
        let d = Docker::with_binary(fake(dir.path(), &format!("cat > '{}'", sink.display())));
        let big = vec![7u8; 300_000]; // larger than a pipe buffer
        let (status, _, n, broke) = d
            .stdin_stream(&["cp", "-", "x:/"], QUICK, |w| {
                w.write_all(&big).map(|_| big.len())
            })
            .unwrap();
        assert!(!broke);
        assert_eq!(status, Some(0));
        assert_eq!(n.unwrap(), 300_000);
        assert_eq!(std::fs::read(&sink).unwrap(), big);
    }

    #[test]
    fn streamed_stdin_to_a_docker_that_dies_is_a_broken_pipe_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let d = Docker::with_binary(fake(
            dir.path(),
            "echo 'Error: No such container: x' >&2; exit 1",
        ));
        let big = vec![0u8; 4_000_000];
        let (status, out, r, broke) = d
            .stdin_stream(&["cp", "-", "x:/"], QUICK, |w| w.write_all(&big))
            .unwrap();
        assert!(broke);
        assert_eq!(status, Some(1));
        assert!(out.stderr.contains("No such container"));
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn a_streamed_copy_answers_with_the_side_that_failed_first() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![0u8; 4_000_000];
        // Docker went first: the producer only saw the pipe break, so docker's words.
        let d = Docker::with_binary(fake(
            dir.path(),
            "echo 'Error: No such container: x' >&2; exit 1",
        ));
        let e = d
            .stream_into(&["cp", "-", "x:/"], QUICK, |w| {
                w.write_all(&big)
                    .map_err(|e| Error::failed(format!("writing: {e}")))
            })
            .unwrap_err();
        assert!(
            matches!(&e, Error::Docker { stderr, .. } if stderr.contains("No such container")),
            "{e:?}"
        );
        // The producer failed on its own (a file it could not read) and cut the stream: its
        // error, not docker's complaint about the short input.
        let d2 = Docker::with_binary(fake(
            dir.path(),
            "cat >/dev/null; echo 'Error: unexpected EOF' >&2; exit 1",
        ));
        let e = d2
            .stream_into(&["cp", "-", "x:/"], QUICK, |w| {
                w.write_all(b"part").unwrap();
                Err::<(), _>(Error::failed("reading a.md: permission denied"))
            })
            .unwrap_err();
        assert!(e.to_string().contains("permission denied"), "{e}");
        // The daemon is down: that, whatever the producer said.
        let d3 = Docker::with_binary(fake(
            dir.path(),
            "cat >/dev/null; echo 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?' >&2; exit 1",
        ));
        let e = d3
            .stream_into(&["cp", "-", "x:/"], QUICK, |_| {
                Err::<(), _>(Error::failed("reading a.md: permission denied"))
            })
            .unwrap_err();
        assert!(matches!(e, Error::DaemonDown { .. }), "{e:?}");
        // Exit 0: the producer's result, error or not.
        let ok = Docker::with_binary(fake(dir.path(), "cat >/dev/null"));
        assert_eq!(
            ok.stream_into(&["cp", "-", "x:/"], QUICK, |w| w
                .write_all(b"x")
                .map(|_| 7)
                .map_err(|e| Error::failed(e.to_string())))
                .unwrap(),
            7
        );
        let e = ok
            .stream_into(&["cp", "-", "x:/"], QUICK, |_| {
                Err::<(), _>(Error::failed("the folder changed"))
            })
            .unwrap_err();
        assert!(e.to_string().contains("the folder changed"), "{e}");
    }

    #[test]
    fn streamed_stdin_that_stalls_is_stopped_by_the_idle_deadline() {
        let dir = tempfile::tempdir().unwrap();
        // Never reads its stdin: the writer fills the pipe and makes no more progress.
        let d = Docker::with_binary(fake(dir.path(), "exec sleep 30"));
        let big = vec![0u8; 4_000_000];
        let e = d
            .stdin_stream(&["cp", "-", "x:/"], Duration::from_millis(300), |w| {
                w.write_all(&big)
            })
            .unwrap_err();
        assert!(matches!(e, Error::DockerTimeout { .. }), "{e:?}");
    }

    #[test]
    fn missing_binary_is_docker_missing() {
        let e = Docker::locate(Some(Path::new("/nonexistent/docker"))).unwrap_err();
        assert_eq!(e.exit_code(), 3);
        assert!(e.to_string().contains("/nonexistent/docker"), "{e}");
    }
}
