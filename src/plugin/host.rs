//! The host state a plugin's calls share (docker, journal, port lock, readiness record) and the
//! implementations of the container, payload, port and readiness host functions. The functions
//! themselves are registered, with their documentation, in `plugin::api` (one module per
//! concern); `fractalic-publisher plugin api` prints that reference.

use crate::config::DeployConfig;
use crate::docker::{Docker, ExecOutcome, Refusal, QUICK};
use crate::error::{Error, Result};
use crate::journal::{Journal, Resource};
use crate::payload;
use crate::plugin::user_cache;
use crate::ports;
use crate::progress::Progress;
use crate::readiness::{self, Started};
use crate::sync::lock;
use rhai::{Array, Dynamic, EvalAltResult, Map, Position};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Label set on every container this tool creates; `ps` finds deployments by it.
pub(crate) const LABEL_MANAGED: &str = "fractalic-publisher.managed";
/// Label naming the plugin that owns a container.
pub(crate) const LABEL_PLUGIN: &str = "fractalic-publisher.plugin";
/// Label with the creation time (UTC, RFC 3339).
pub(crate) const LABEL_CREATED: &str = "fractalic-publisher.created";
/// Label with the host port a deployment publishes (a reservation, also while it is stopped).
pub(crate) const LABEL_PORT: &str = "fractalic-publisher.port";

/// How long a deploy waits for the host-wide port lock (held by others only from their port
/// choice to their `docker create`).
pub(crate) const PORT_LOCK_WAIT: Duration = Duration::from_secs(60);

pub(crate) type RhaiResult<T> = std::result::Result<T, Box<EvalAltResult>>;

/// Where a followed log goes when there is no terminal (the REST API): each line to `sink`
/// until it returns false or `stop` is set (from another thread, e.g. when the client left).
pub(crate) struct Follow {
    pub sink: Box<dyn Fn(&str) -> bool + Send + Sync>,
    pub stop: Arc<std::sync::atomic::AtomicBool>,
}

/// The first release of a deployment as `copy_payload` staged it: its folder under
/// `/payload/.releases`, what it holds (hashed on the way) and the owner of its files.
#[derive(Debug, Clone)]
pub(crate) struct Staged {
    pub dir: String,
    pub files: crate::release::Manifest,
    pub owner: payload::Owner,
}

/// State shared by the host functions during one command.
pub(crate) struct Host {
    /// Where progress, `print` and warnings go.
    pub progress: Progress,
    docker: std::sync::OnceLock<Arc<Docker>>,
    plugin: Mutex<String>,
    deploy: Option<DeployConfig>,
    /// The run changed the front proxy's routes: a failure re-syncs them after its undo.
    proxy_touched: std::sync::atomic::AtomicBool,
    pub(crate) journal: Arc<Journal>,
    /// The error a host function raised last, with the tag its Rhai value carries.
    failure: Mutex<Option<(i32, Error)>>,
    /// The tag of the next raised error.
    failure_tags: std::sync::atomic::AtomicU16,
    /// When set, output that would stream to the terminal (logs) is collected here instead.
    capture: Option<Mutex<String>>,
    /// When set, a followed log goes here line by line (the REST API's log stream).
    follow: Option<Follow>,
    /// Held from choose_port/next_port until the container recording the port is created.
    port_lock: Mutex<Option<ports::PortLock>>,
    /// The port-lock generation up to which the plugin's reservations are known complete.
    port_generation: Mutex<Option<u64>>,
    /// The in-container check of the main script after `copy_payload`: started on its own
    /// thread once `start_container` has started the container (so it runs beside the
    /// readiness wait and costs no wall time), and finished at the end of the deploy.
    main_check: Mutex<Option<MainCheck>>,
    /// Containers `start_container` started in this run, for readiness's stability proof.
    pub(crate) started: Mutex<HashMap<String, Started>>,
    /// The first release `copy_payload` staged.
    staged: Mutex<Option<Staged>>,
    /// What a platform's own module keeps for the run (docker-registry's update plan and the
    /// reads it begins early, src/update.rs), one value per type: the host knows none of them.
    platform: Mutex<Vec<Box<dyn std::any::Any + Send>>>,
    /// `deploy --dry-run`: what the host functions found on the way to the first change
    /// (the image, the port, the update's plan), for the plan the deploy prints.
    dry_facts: Mutex<serde_json::Map<String, Value>>,
    /// What the last `wait_http`/`wait_ready` saw (doctor reports its steps from it).
    readiness: Mutex<Option<ReadinessSeen>>,
}

/// What a plugin's last readiness wait (`wait_http`, `wait_ready`) saw, success or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadinessSeen {
    /// The container waited for.
    pub container: String,
    /// The health URL polled.
    pub url: String,
    /// When the wait began.
    pub began: std::time::SystemTime,
    /// Milliseconds until the URL answered 2xx (None: it never did).
    pub health_ms: Option<u64>,
    /// Whether the in-container command answered (None: none was asked for, or the wait
    /// failed before it was judged).
    pub exec_ok: Option<bool>,
}

impl Host {
    /// Runs `f` on this run's value of type `T` (made with `T::default()` on first use):
    /// state a platform's own module keeps on the host without the host knowing its type.
    pub(crate) fn with_state<T: Default + Send + 'static, R>(
        &self,
        f: impl FnOnce(&mut T) -> R,
    ) -> R {
        let mut all = lock(&self.platform);
        let at = match all.iter().position(|b| (**b).is::<T>()) {
            Some(i) => i,
            None => {
                all.push(Box::new(T::default()));
                all.len() - 1
            }
        };
        f(all[at]
            .downcast_mut::<T>()
            .expect("the value was found by its type"))
    }

    /// The first release `copy_payload` staged in this run, if it did.
    pub(crate) fn staged(&self) -> Option<Staged> {
        lock(&self.staged).clone()
    }

    /// A host; `docker` is None for commands that never need Docker (list, info).
    pub(crate) fn new(progress: Progress, docker: Option<Arc<Docker>>) -> Host {
        let cell = std::sync::OnceLock::new();
        let journal = Journal::new();
        if let Some(d) = docker {
            journal.set_docker(Arc::clone(&d));
            let _ = cell.set(d);
        }
        Host {
            progress,
            docker: cell,
            plugin: Mutex::new(String::new()),
            deploy: None,
            proxy_touched: Default::default(),
            journal,
            failure: Mutex::new(None),
            failure_tags: Default::default(),
            capture: None,
            follow: None,
            port_lock: Mutex::new(None),
            port_generation: Mutex::new(None),
            main_check: Mutex::new(None),
            started: Mutex::new(HashMap::new()),
            staged: Mutex::new(None),
            platform: Mutex::new(Vec::new()),
            readiness: Mutex::new(None),
            dry_facts: Mutex::new(serde_json::Map::new()),
        }
    }

    /// Is this a dry run (`deploy --dry-run`: only reads reach Docker)?
    pub(crate) fn dry_run(&self) -> bool {
        self.docker.get().is_some_and(|d| d.dry_run())
    }

    /// In a dry run, notes `key` of the plan (the last value wins).
    pub(crate) fn dry_fact(&self, key: &str, value: Value) {
        if self.dry_run() {
            lock(&self.dry_facts).insert(key.to_string(), value);
        }
    }

    /// What a dry run noted (see [`Host::dry_fact`]).
    pub(crate) fn dry_facts(&self) -> serde_json::Map<String, Value> {
        lock(&self.dry_facts).clone()
    }

    /// What the plugin's last readiness wait saw (None: it never waited).
    pub(crate) fn readiness_seen(&self) -> Option<ReadinessSeen> {
        lock(&self.readiness).clone()
    }

    /// Collects streamed output (logs) instead of writing it to stdout (the REST API).
    pub(crate) fn with_capture(mut self) -> Host {
        self.capture = Some(Mutex::new(String::new()));
        self
    }

    /// Sends a followed log (`logs --follow`) to `follow` instead of stdout (the REST API).
    pub(crate) fn with_follow(mut self, follow: Follow) -> Host {
        self.follow = Some(follow);
        self
    }

    /// Where a followed log goes, when not to stdout.
    pub(crate) fn follower(&self) -> Option<&Follow> {
        self.follow.as_ref()
    }

    /// Appends to the capture buffer; false when this host does not capture.
    pub(crate) fn capture(&self, text: &str) -> bool {
        match &self.capture {
            Some(c) => {
                lock(c).push_str(text);
                true
            }
            None => false,
        }
    }

    /// Does this host capture streamed output?
    pub(crate) fn capturing(&self) -> bool {
        self.capture.is_some()
    }

    /// Takes what was captured.
    pub(crate) fn take_captured(&self) -> String {
        self.capture
            .as_ref()
            .map(|c| std::mem::take(&mut *lock(c)))
            .unwrap_or_default()
    }

    /// Stages a validated deploy: `copy_payload` and `create_container` read it (secrets stay
    /// on this side; scripts see only names and paths).
    pub(crate) fn with_deploy(mut self, cfg: DeployConfig) -> Host {
        self.deploy = Some(cfg);
        // Read before the plugin lists deployments: containers created after this moment
        // bump the generation, so choose_port knows when to look again.
        *lock(&self.port_generation) = ports::PortLock::peek_generation(&ports::PortLock::path());
        self
    }

    /// Names the plugin on whose behalf containers are created (the plugin label).
    pub(crate) fn set_plugin(&self, name: &str) {
        *lock(&self.plugin) = name.to_string();
    }

    /// The plugin on whose behalf this host works ("" before [`Host::set_plugin`]).
    pub(crate) fn plugin_name(&self) -> String {
        lock(&self.plugin).clone()
    }

    /// The staged deploy, if any.
    /// Notes that this run routes through the front proxy.
    pub(crate) fn touch_proxy(&self) {
        self.proxy_touched
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether this run changed the front proxy's routes.
    pub(crate) fn proxy_touched(&self) -> bool {
        self.proxy_touched
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn deploy(&self) -> Option<&DeployConfig> {
        self.deploy.as_ref()
    }

    /// The docker handle, if this command has one.
    pub(crate) fn docker(&self) -> Option<&Arc<Docker>> {
        self.docker.get()
    }

    /// Gives the host its docker handle (once; later calls are ignored).
    pub(crate) fn set_docker(&self, docker: Arc<Docker>) {
        self.journal.set_docker(Arc::clone(&docker));
        let _ = self.docker.set(docker);
    }

    /// This run's undo journal: what the plugin created so far, undone on failure or interrupt.
    pub(crate) fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// Remembers that this run started container `name` at `wall` (for the readiness proof).
    pub(crate) fn mark_started(&self, name: &str, wall: std::time::SystemTime) {
        lock(&self.started).insert(name.to_string(), Started::since(wall));
    }

    /// Lets go of the host-wide port lock (a run that ends holding it, e.g. on failure).
    pub(crate) fn release_port_lock(&self) {
        lock(&self.port_lock).take();
    }

    /// Takes the host-wide port lock (if not held) and returns the ports that deployments
    /// created since this run's reservations were read have recorded (a `docker ps` only
    /// when some were created).
    pub(crate) fn lock_ports(&self) -> Result<BTreeSet<u16>> {
        let mut held = lock(&self.port_lock);
        if held.is_none() {
            *held = Some(ports::PortLock::acquire(PORT_LOCK_WAIT).map_err(Error::failed)?);
        }
        let now = held.as_ref().map(ports::PortLock::generation);
        let mut known = lock(&self.port_generation);
        if *known == now {
            return Ok(BTreeSet::new());
        }
        let d = self.docker_or_fail()?;
        let filter = format!("label={LABEL_MANAGED}=true");
        let format = format!("{{{{.Label \"{LABEL_PORT}\"}}}}");
        let out = d.run(
            &["ps", "--all", "--filter", &filter, "--format", &format],
            None,
            QUICK,
        )?;
        *known = now;
        Ok(out
            .stdout
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect())
    }

    fn docker_or_fail(&self) -> Result<Arc<Docker>> {
        self.docker
            .get()
            .cloned()
            .ok_or_else(|| Error::failed("this command has no Docker access"))
    }

    /// Finishes the main-script check of the last `copy_payload`, if there was one: waits for
    /// it, or runs it now if no start has begun it. An error when the main script is not in
    /// the container as a regular file.
    pub(crate) fn finish_main_check(&self) -> Result<()> {
        match lock(&self.main_check).take() {
            None => Ok(()),
            Some(MainCheck::Pending(job)) => job.run(),
            Some(MainCheck::Running(handle)) => handle
                .join()
                .unwrap_or_else(|_| Err(Error::failed("the main-script check panicked"))),
        }
    }

    /// Starts a pending main-script check on its own thread (the container has started).
    pub(crate) fn begin_main_check(&self) {
        let mut slot = lock(&self.main_check);
        if let Some(MainCheck::Pending(job)) = slot.take() {
            *slot = Some(MainCheck::Running(std::thread::spawn(move || job.run())));
        }
    }

    /// If `err` is the error a host function raised (the value it threw, carrying its tag:
    /// passed through or re-thrown by the script as it is), hands back the structured
    /// original. A message the script made itself, even with the same words, is not it.
    pub(crate) fn take_failure(&self, err: &EvalAltResult) -> Option<Error> {
        let EvalAltResult::ErrorRuntime(v, _) = err else {
            return None;
        };
        let mut slot = lock(&self.failure);
        match slot.as_ref() {
            Some((tag, _)) if v.tag() == *tag => slot.take().map(|(_, e)| e),
            _ => None,
        }
    }

    /// The Rhai error for `e`: its message as a string (what a script that catches it sees),
    /// tagged so that [`Host::take_failure`] knows it again.
    pub(crate) fn raise(&self, e: Error) -> Box<EvalAltResult> {
        use std::sync::atomic::Ordering;
        // Never 0, the tag of every value nobody tagged.
        let n = self.failure_tags.fetch_add(1, Ordering::Relaxed);
        let tag = i32::from(n % i16::MAX as u16) + 1;
        let mut v = Dynamic::from(e.to_string());
        v.set_tag(tag);
        *lock(&self.failure) = Some((tag, e));
        EvalAltResult::ErrorRuntime(v, Position::NONE).into()
    }

    pub(crate) fn check<T>(&self, r: Result<T>) -> RhaiResult<T> {
        r.map_err(|e| self.raise(e))
    }

    pub(crate) fn docker_or_raise(&self) -> RhaiResult<Arc<Docker>> {
        match self.docker.get() {
            Some(d) => Ok(Arc::clone(d)),
            None => Err(self.raise(Error::failed(
                "this command has no Docker access; plugins may use Docker only in deploy and management commands",
            ))),
        }
    }
}

/// Reading the main script back out of the container after the payload copy.
struct MainCheckJob {
    docker: Arc<Docker>,
    container: String,
    path: String,
}

impl MainCheckJob {
    /// One `docker cp CONTAINER:PATH -`: fine when it yields a regular file.
    fn run(self) -> Result<()> {
        match self.docker.read_file(&self.container, &self.path)? {
            Some(_) => Ok(()),
            None => Err(Error::failed(format!(
                "after the copy, {} has no regular file {}; the payload did not arrive as sent",
                self.container, self.path
            ))),
        }
    }
}

enum MainCheck {
    /// Copied, not started yet.
    Pending(MainCheckJob),
    /// Running beside the readiness wait.
    Running(std::thread::JoinHandle<Result<()>>),
}

pub(crate) fn json_to_dynamic(v: &Value) -> Dynamic {
    rhai::serde::to_dynamic(v).unwrap_or(Dynamic::UNIT)
}

pub(crate) fn map_str(m: &Map, key: &str) -> Option<String> {
    m.get(key)
        .filter(|v| !v.is_unit())
        .map(|v| v.to_string())
        .filter(|s| !s.is_empty())
}

pub(crate) fn map_int(m: &Map, key: &str) -> Option<i64> {
    m.get(key).and_then(|v| v.as_int().ok())
}

pub(crate) fn valid_label_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 128
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
}

/// The fixed columns of a `docker ps` row, in [`ps_format`] order (labels follow).
pub(crate) const PS_FIELDS: &[(&str, &str)] = &[
    ("id", ".ID"),
    ("name", ".Names"),
    ("state", ".State"),
    ("status", ".Status"),
    ("image", ".Image"),
    ("created_at", ".CreatedAt"),
    ("ports", ".Ports"),
];

/// Parses `docker ps` output produced by [`ps_format`]: one JSON array of strings per line.
/// Every value is JSON-escaped by docker, so no label value (a file name with tabs, newlines or
/// commas) can split a row or shift a column. A line that is not such an array is an error.
pub(crate) fn parse_ps(stdout: &str, labels: &[String]) -> Result<Array> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let cols: Vec<String> = serde_json::from_str(line).map_err(|e| {
                Error::failed(format!(
                    "`docker ps` printed a row that is not the JSON asked for ({e}): {:?}",
                    line.chars().take(200).collect::<String>()
                ))
            })?;
            if cols.len() != PS_FIELDS.len() + labels.len() {
                return Err(Error::failed(format!(
                    "`docker ps` printed {} columns, expected {}",
                    cols.len(),
                    PS_FIELDS.len() + labels.len()
                )));
            }
            let mut m = Map::new();
            for (i, (key, _)) in PS_FIELDS.iter().enumerate() {
                m.insert((*key).into(), cols[i].clone().into());
            }
            let mut lm = Map::new();
            for (i, key) in labels.iter().enumerate() {
                lm.insert(
                    key.as_str().into(),
                    cols[PS_FIELDS.len() + i].clone().into(),
                );
            }
            m.insert("labels".into(), lm.into());
            Ok(Dynamic::from_map(m))
        })
        .collect()
}

/// `docker ps --format`: each field and each label through `json`, as one JSON array per row.
pub(crate) fn ps_format(labels: &[String]) -> String {
    let mut cols: Vec<String> = PS_FIELDS
        .iter()
        .map(|(_, field)| format!("{{{{json {field}}}}}"))
        .collect();
    for l in labels {
        cols.push(format!("{{{{json (.Label \"{l}\")}}}}"));
    }
    format!("[{}]", cols.join(","))
}

/// Where ports are judged: this machine, or the ports a remote engine's containers publish.
pub(crate) fn vantage(bind: IpAddr, published: Option<&BTreeSet<u16>>) -> ports::Vantage<'_> {
    match published {
        Some(p) => ports::Vantage::Engine(p),
        None => ports::Vantage::Local(bind),
    }
}

/// The host ports the engine's containers publish (one `docker ps`) when this process cannot
/// judge them by binding here (a remote engine, or a sibling container: see
/// [`crate::reach::ports_from_engine`]); None on the engine's host.
pub(crate) fn engine_ports(d: &Docker) -> Result<Option<BTreeSet<u16>>> {
    if !crate::reach::ports_from_engine(d) {
        return Ok(None);
    }
    let out = d.run(&["ps", "--format", "{{.Ports}}"], None, QUICK)?;
    Ok(Some(crate::engine::published_ports(&out.stdout)))
}

/// `engine_info()`: {remote, host, url_host, context, endpoint}.
pub(crate) fn engine_map(d: &Docker) -> Map {
    let e = d.endpoint();
    let mut m = Map::new();
    m.insert("remote".into(), e.remote_host().is_some().into());
    m.insert(
        "host".into(),
        e.remote_host().unwrap_or("localhost").to_string().into(),
    );
    m.insert("url_host".into(), e.url_host().into());
    m.insert(
        "context".into(),
        d.context().unwrap_or("").to_string().into(),
    );
    let endpoint = match e {
        crate::engine::Endpoint::Local => String::new(),
        crate::engine::Endpoint::Remote { endpoint, .. } => endpoint.clone(),
    };
    m.insert("endpoint".into(), endpoint.into());
    m
}

/// [`readiness::wait`] for a plugin: `{elapsed_ms, attempts[, exec]}`.
pub(crate) fn wait_ready(
    host: &Host,
    d: &Docker,
    container: &str,
    url: &str,
    argv: Option<&[String]>,
    secs: i64,
) -> Result<Map> {
    let started = lock(&host.started).get(container).copied();
    let argv: Option<Vec<&str>> = argv.map(|a| a.iter().map(String::as_str).collect());
    let began = std::time::SystemTime::now();
    // From a sibling container the URL (the host's) is probed elsewhere: say where.
    if let Some(note) = crate::reach::route(url).note() {
        host.progress.info(format!("Probing {url} at {note}"));
    }
    let waited = readiness::wait(d, container, started, url, argv.as_deref(), secs_arg(secs));
    let ms = |w: &crate::health::Waited| w.elapsed.as_millis() as u64;
    *lock(&host.readiness) = Some(ReadinessSeen {
        container: container.to_string(),
        url: url.to_string(),
        began,
        health_ms: match &waited {
            Ok(r) => Some(ms(&r.health)),
            Err(n) => n.health.as_ref().map(ms),
        },
        exec_ok: waited
            .as_ref()
            .ok()
            .and_then(|r| r.exec.as_ref().map(|o| o.ok)),
    });
    let ready = waited.map_err(|e| e.error)?;
    let mut m = Map::new();
    m.insert(
        "elapsed_ms".into(),
        (ready.health.elapsed.as_millis() as i64).into(),
    );
    m.insert("attempts".into(), i64::from(ready.health.attempts).into());
    if let Some(o) = ready.exec {
        m.insert("exec".into(), exec_map(o).into());
    }
    Ok(m)
}

/// A plugin's timeout in seconds, kept within 1 s - 1 h.
pub(crate) fn secs_arg(secs: i64) -> Duration {
    Duration::from_secs(secs.clamp(1, 3600) as u64)
}

pub(crate) fn parse_bind(bind: &str) -> Result<IpAddr> {
    bind.parse().map_err(|_| {
        Error::input(
            format!("bad bind address {bind:?}"),
            "give an IP address such as 127.0.0.1",
        )
    })
}

pub(crate) fn port_arg(p: i64) -> Result<u16> {
    u16::try_from(p)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| Error::input(format!("port {p}"), "use a port number from 1 to 65535"))
}

pub(crate) fn port_set(a: &Array) -> BTreeSet<u16> {
    a.iter()
        .filter_map(|v| {
            v.as_int()
                .ok()
                .or_else(|| v.to_string().trim().parse().ok())
        })
        .filter_map(|p| u16::try_from(p).ok())
        .collect()
}

pub(crate) fn create_container(host: &Host, d: &Docker, spec: &Map) -> Result<String> {
    let env = host
        .deploy
        .as_ref()
        .filter(|cfg| !cfg.env.is_empty())
        .map(|cfg| cfg.env_text().into_bytes());
    create_container_env(host, d, spec, env)
}

/// [`create_container`] with the environment given as `K=V` lines (a replica cloned from its
/// deployment's live container takes that one's environment, not a deploy's).
pub(crate) fn create_container_env(
    host: &Host,
    d: &Docker,
    spec: &Map,
    env: Option<Vec<u8>>,
) -> Result<String> {
    let need = |k: &str| {
        map_str(spec, k).ok_or_else(|| Error::failed(format!("create_container: spec needs `{k}`")))
    };
    let name = need("name")?;
    let image = need("image")?;
    let port = map_int(spec, "port")
        .ok_or_else(|| Error::failed("create_container: spec needs `port`"))?;
    let port = port_arg(port)?;
    let cport = port_arg(map_int(spec, "container_port").unwrap_or(8001))?;
    let bind = parse_bind(&map_str(spec, "bind").unwrap_or_else(|| "127.0.0.1".into()))?;
    let restart = map_str(spec, "restart").unwrap_or_else(|| "unless-stopped".into());
    crate::config::check_container_name(&name)?;

    let mut labels: Vec<(String, String)> = vec![
        (LABEL_MANAGED.into(), "true".into()),
        (LABEL_PLUGIN.into(), lock(&host.plugin).clone()),
        (LABEL_CREATED.into(), crate::clock::now_utc()),
    ];
    if let Some(l) = spec
        .get("labels")
        .and_then(|v| v.read_lock::<Map>().map(|m| m.clone()))
    {
        for (k, v) in l {
            if !valid_label_key(&k) {
                return Err(Error::failed(format!(
                    "create_container: bad label key {k:?}"
                )));
            }
            labels.retain(|(ek, _)| ek != k.as_str());
            labels.push((k.to_string(), v.to_string()));
        }
    }
    // Last, so no plugin label can replace it: the undo finds the container by it.
    labels.retain(|(k, _)| k != crate::journal::LABEL_RUN);
    labels.push((
        crate::journal::LABEL_RUN.into(),
        host.journal.run_id().to_string(),
    ));

    let bind_s = match bind {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    let mut args: Vec<String> = vec![
        "create".into(),
        "--name".into(),
        name.clone(),
        "--restart".into(),
        restart,
    ];
    // A proxied container publishes nothing: the front proxy listens on its port and dials it
    // on the tool's network.
    if spec.get("publish").and_then(|p| p.as_bool().ok()) != Some(false) {
        args.extend(["--publish".into(), format!("{bind_s}:{port}:{cport}")]);
    }
    if let Some(net) = map_str(spec, "network").filter(|n| !n.is_empty()) {
        if !crate::config::valid_docker_name(&net) {
            return Err(Error::failed(format!(
                "create_container: bad network name {net:?}"
            )));
        }
        args.extend(["--network".into(), net]);
    }
    if let Some(p) = map_str(spec, "platform") {
        args.extend(["--platform".into(), p]);
    }
    for (k, v) in &labels {
        args.extend(["--label".into(), format!("{k}={v}")]);
    }
    // The environment goes in through a pipe (`--env-file /dev/stdin`, the content on the
    // child's stdin): never on argv and never in a file, so a kill at any instant leaves no
    // secret on this host's disk.
    let env_text = env;
    if env_text.is_some() {
        args.extend(["--env-file".into(), "/dev/stdin".into()]);
    }
    args.push("--".into());
    args.push(image);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    // Recorded before `docker create` runs, so an interrupt during the call removes it too
    // (through the run label until the create is known to have succeeded).
    let token = host
        .journal
        .record(Resource::Container { name: name.clone() });
    let created = match &token {
        Ok(_) => d.run_unchecked(&argv, env_text, QUICK),
        Err(_) => Err(Error::Interrupted),
    };
    if let Ok(t) = token {
        match &created {
            Ok((Some(0), _)) => {
                host.journal.confirm(t);
                // Other deploys choosing a port now must see this one's label.
                if let Some(l) = lock(&host.port_lock).take() {
                    *lock(&host.port_generation) = Some(l.bump());
                }
            }
            // Nothing was created (a name clash means the container is somebody else's); a
            // timed-out or killed create is left to the label sweep.
            Ok(_) => host.journal.forget(t),
            Err(_) => {}
        }
    }
    host.release_port_lock();
    let (status, out) = created?;
    if status != Some(0) {
        if out.refusal() == Refusal::NameInUse {
            return Err(Error::input(
                format!("container name {name:?} is already in use"),
                format!("choose another --name, or remove it first: docker rm -f {name}"),
            ));
        }
        if out.refusal() == Refusal::DaemonDown {
            return Err(Error::DaemonDown { detail: out.stderr });
        }
        return Err(Error::Docker {
            argv: d.argv(&argv),
            status,
            stderr: out.stderr,
        });
    }
    Ok(out.stdout.trim().to_string())
}

/// `{uid, gid}` of `user` in the container, through the per-image cache when `image_id` is
/// given.
pub(crate) fn user_ids(
    d: &Docker,
    container: &str,
    user: &str,
    image_id: Option<&str>,
) -> Result<Map> {
    let cache = image_id.and_then(|id| Some((id, user_cache::UserCache::default_location()?)));
    let cached = cache.as_ref().and_then(|(id, c)| c.get(id, user));
    let (uid, gid) = match cached {
        Some(ids) => ids,
        None => {
            let ids = container_user(d, container, user)?;
            if let Some((id, c)) = &cache {
                c.put(id, user, ids);
            }
            ids
        }
    };
    let mut m = Map::new();
    m.insert("uid".into(), (uid as i64).into());
    m.insert("gid".into(), (gid as i64).into());
    Ok(m)
}

/// Looks USER up in /etc/passwd and /etc/group read out of the container.
pub(crate) fn container_user(d: &Docker, container: &str, user: &str) -> Result<(u64, u64)> {
    let user = user.trim();
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let uid_num = u.parse::<u64>().ok();
    let gid_num = g.and_then(|g| g.parse::<u64>().ok());
    if let (Some(uid), Some(gid)) = (uid_num, gid_num) {
        return Ok((uid, gid));
    }
    let passwd = d.read_file(container, "/etc/passwd")?.unwrap_or_default();
    let passwd = String::from_utf8_lossy(&passwd);
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == u || uid_num.is_some_and(|n| f[2] == n.to_string())));
    let (uid, primary_gid) = match (entry, uid_num) {
        (Some(f), _) => (
            f[2].parse::<u64>().unwrap_or(0),
            f[3].parse::<u64>().unwrap_or(0),
        ),
        (None, Some(n)) => (n, n),
        (None, None) => {
            return Err(Error::failed(format!(
                "user {u:?} of the image is not in its /etc/passwd; cannot give the payload to it"
            )))
        }
    };
    let gid = match g {
        None => primary_gid,
        Some(_) if gid_num.is_some() => gid_num.unwrap_or(primary_gid),
        Some(gname) => {
            let group = d.read_file(container, "/etc/group")?.unwrap_or_default();
            let group = String::from_utf8_lossy(&group);
            group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == gname)
                .and_then(|f| f[2].parse().ok())
                .unwrap_or(primary_gid)
        }
    };
    Ok((uid, gid))
}

/// The config files a release keeps beside its folder (`RELEASES/DIR.config/NAME`), so a
/// rollback brings back the settings it ran with.
pub(crate) fn config_copies(cfg: &DeployConfig, dir: &str) -> Vec<payload::ExtraFile> {
    cfg.config_files
        .iter()
        .map(|c| payload::ExtraFile {
            path: format!("{}/{dir}.config/{}", crate::release::RELEASES, c.name),
            contents: c.contents.clone(),
            mode: 0o600,
        })
        .collect()
}

pub(crate) fn copy_payload(
    host: &Host,
    d: &Arc<Docker>,
    container: &str,
    uid: i64,
    gid: i64,
) -> Result<Map> {
    let cfg = host
        .deploy
        .as_ref()
        .ok_or_else(|| Error::failed("copy_payload: only a deploy has a payload to copy"))?;
    let owner = payload::Owner {
        uid: u64::try_from(uid).unwrap_or(0),
        gid: u64::try_from(gid).unwrap_or(0),
    };
    let mut extra_files: Vec<payload::ExtraFile> = cfg
        .config_files
        .iter()
        .flat_map(|c| {
            c.dests.iter().map(|dest| payload::ExtraFile {
                path: (*dest).to_string(),
                contents: c.contents.clone(),
                mode: 0o600,
            })
        })
        .collect();
    // The first release of the deployment (docs/updates.md): the folder in
    // /payload/.releases/DIR, /payload/<script> a link to it, its config files beside it.
    let dir = crate::release::dir_name(1);
    extra_files.extend(config_copies(cfg, &dir));
    let spec = payload::PayloadSpec {
        script_name: &cfg.script_name,
        script_folder: &cfg.script_folder,
        excludes: &cfg.excludes,
        owner,
        extra_files,
        link_fractalic_payload: true,
        main_script: Some(&cfg.main_script),
        release_dir: Some(&dir),
        link_script: true,
    };
    let dest = format!("{container}:/");
    let args = ["cp", "-", dest.as_str()];
    // The tar stream goes straight into `docker cp` as it is built: nothing is held in
    // memory, and docker starts extracting while we still read files.
    let (files, dirs, bytes, staged, copy) = d.stream_into(&args, QUICK, |w| {
        // The release is hashed on the way (its manifest); nothing of it is kept.
        payload::build_into(&spec, w)
            .map(|p| {
                (
                    p.files,
                    p.dirs,
                    p.bytes,
                    p.main_script_staged,
                    p.release_files,
                )
            })
            .map_err(|e| Error::failed(format!("staging the payload: {e}")))
    })?;
    *lock(&host.staged) = Some(Staged {
        dir: dir.clone(),
        files: copy,
        owner,
    });
    let script_path = cfg.script_path();
    if !staged {
        return Err(Error::failed(format!(
            "the main script {} was not in the payload (it changed or disappeared while the folder was read); nothing runs without it",
            cfg.script_folder.join(&cfg.main_script).display()
        )));
    }
    // Proof from the container itself that the script arrived as a file the server can open:
    // one `docker cp` of that file, begun by start_container (see `finish_main_check`).
    *lock(&host.main_check) = Some(MainCheck::Pending(MainCheckJob {
        docker: Arc::clone(d),
        container: container.to_string(),
        path: script_path,
    }));
    let mut m = Map::new();
    m.insert("files".into(), (files as i64).into());
    m.insert("dirs".into(), (dirs as i64).into());
    m.insert("bytes".into(), (bytes as i64).into());
    Ok(m)
}

pub(crate) fn logs_tail(d: &Docker, name: &str, tail: i64) -> Result<String> {
    let t = tail.clamp(1, 10_000).to_string();
    let (status, out) = d.run_unchecked(&["logs", "--tail", &t, name], None, QUICK)?;
    if status != Some(0) && out.refusal() == Refusal::DaemonDown {
        return Err(Error::DaemonDown { detail: out.stderr });
    }
    // docker logs replays the container's stdout on stdout and its stderr on stderr.
    let mut s = out.stdout;
    s.push_str(&out.stderr);
    Ok(s)
}

/// `{ok, stdout, attempts, error, elapsed_ms}` for plugins.
pub(crate) fn exec_map(o: ExecOutcome) -> Map {
    let mut m = Map::new();
    m.insert("ok".into(), o.ok.into());
    m.insert("stdout".into(), o.stdout.into());
    m.insert("attempts".into(), i64::from(o.attempts).into());
    m.insert("error".into(), o.error.into());
    m.insert("elapsed_ms".into(), (o.elapsed.as_millis() as i64).into());
    m
}

pub(crate) fn image_map(v: &Value, pulled: bool, cached: bool) -> Map {
    let digest = v["RepoDigests"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(|d| d.as_str())
        .and_then(|d| d.split_once('@').map(|(_, h)| h.to_string()))
        .unwrap_or_default();
    let mut m = Map::new();
    m.insert("id".into(), v["Id"].as_str().unwrap_or("").into());
    m.insert("digest".into(), digest.into());
    m.insert(
        "user".into(),
        v["Config"]["User"].as_str().unwrap_or("").into(),
    );
    m.insert("pulled".into(), pulled.into());
    m.insert("cached".into(), cached.into());
    m
}

/// `pull_image` in a dry run: the image is only looked up in the engine's cache, never
/// pulled; the plan says when its digest (and so what an update would do) is not known.
fn dry_image(host: &Host, d: &Docker, image: &str, policy: &str) -> Result<Map> {
    let cached = d.image_inspect(image)?;
    let note = match (&cached, policy) {
        (None, "never") => {
            return Err(Error::failed(format!(
                "image {image} is not cached and --pull never forbids pulling it; run `docker pull {image}` or use --pull missing"
            )))
        }
        (None, _) => format!(
            "{image} is not cached: the deploy would pull it; its id and digest cannot be read without pulling, so the plan assumes the image changes"
        ),
        (Some(_), "always") => format!(
            "{image} is cached; the deploy would pull it first (--pull always), and a newer image there would change the plan to a new container"
        ),
        (Some(_), _) => format!("{image} is cached and would be used as it is (--pull {policy})"),
    };
    let m = match &cached {
        Some(v) => image_map(v, false, true),
        None => {
            let mut m = Map::new();
            for k in ["id", "digest", "user"] {
                m.insert(k.into(), "".into());
            }
            m.insert("pulled".into(), false.into());
            m.insert("cached".into(), false.into());
            m
        }
    };
    let text = |k: &str| m.get(k).map(|v| v.to_string()).unwrap_or_default();
    host.dry_fact(
        "image",
        serde_json::json!({
            "name": image,
            "pull": policy,
            "cached": cached.is_some(),
            "id": text("id"),
            "digest": text("digest"),
            "digest_known": cached.is_some() && !text("digest").is_empty(),
            "note": note,
        }),
    );
    Ok(m)
}

pub(crate) fn pull_image(
    host: &Host,
    d: &Docker,
    image: &str,
    platform: &str,
    policy: &str,
) -> Result<Map> {
    let platform = Some(platform).filter(|p| !p.is_empty());
    const PULL_TIMEOUT: Duration = Duration::from_secs(600);
    if host.dry_run() {
        return dry_image(host, d, image, policy);
    }
    match policy {
        "never" => match d.image_inspect(image)? {
            Some(v) => Ok(image_map(&v, false, true)),
            None => Err(Error::failed(format!(
                "image {image} is not cached and --pull never forbids pulling it; run `docker pull {image}` or use --pull missing"
            ))),
        },
        "missing" => {
            if let Some(v) = d.image_inspect(image)? {
                return Ok(image_map(&v, false, true));
            }
            d.pull(image, platform, PULL_TIMEOUT)?;
            let v = d.image_inspect(image)?.ok_or_else(|| {
                Error::failed(format!("image {image} was pulled but cannot be inspected"))
            })?;
            Ok(image_map(&v, true, false))
        }
        "always" => match d.pull(image, platform, PULL_TIMEOUT) {
            Ok(()) => {
                let v = d.image_inspect(image)?.ok_or_else(|| {
                    Error::failed(format!("image {image} was pulled but cannot be inspected"))
                })?;
                Ok(image_map(&v, true, false))
            }
            Err(e @ Error::DaemonDown { .. }) => Err(e),
            Err(pull_err) => match d.image_inspect(image)? {
                Some(v) => {
                    host.progress.warn(format!(
                        "pulling {image} failed ({pull_err}); deploying the cached image"
                    ));
                    Ok(image_map(&v, false, true))
                }
                None => Err(Error::failed(format!(
                    "cannot pull {image} and no copy is cached: {pull_err}"
                ))),
            },
        },
        other => Err(Error::input(
            format!("bad pull policy {other:?}"),
            "use always, missing or never",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_lines_parse_with_labels() {
        let keys = vec!["a.b".to_string(), "c".to_string()];
        let fmt = ps_format(&keys);
        assert!(fmt.starts_with("[{{json .ID}},{{json .Names}},"), "{fmt}");
        assert!(
            fmt.ends_with(",{{json (.Label \"a.b\")}},{{json (.Label \"c\")}}]"),
            "{fmt}"
        );
        let rows = parse_ps(
            "[\"id1\",\"n1\",\"running\",\"Up 1s\",\"img\",\"2026\",\"127.0.0.1:8001->8001/tcp\",\"x\",\"\"]\n",
            &keys,
        )
        .unwrap();
        assert_eq!(rows.len(), 1);
        let m = rows[0].read_lock::<Map>().unwrap();
        assert_eq!(m["name"].to_string(), "n1");
        assert_eq!(m["ports"].to_string(), "127.0.0.1:8001->8001/tcp");
        let l = m["labels"].read_lock::<Map>().unwrap();
        assert_eq!(l["a.b"].to_string(), "x");
        assert_eq!(l["c"].to_string(), "");
    }

    #[test]
    fn ps_label_values_cannot_break_rows() {
        // What docker prints for a label holding a tab, a newline, a comma and '=': one line.
        let keys = vec!["s".to_string(), "port".to_string()];
        let line = r#"["id","n","running","Up","img","t","","x\tfake\n8009,k=v","8001"]"#;
        let rows = parse_ps(&format!("{line}\n"), &keys).unwrap();
        assert_eq!(rows.len(), 1);
        let m = rows[0].read_lock::<Map>().unwrap();
        let l = m["labels"].read_lock::<Map>().unwrap();
        assert_eq!(l["s"].to_string(), "x\tfake\n8009,k=v");
        assert_eq!(l["port"].to_string(), "8001");
        // Anything else is an error, not a guessed row.
        assert!(parse_ps("id\tn\trunning\n", &keys).is_err());
        assert!(parse_ps("[\"too\",\"few\"]\n", &keys).is_err());
    }

    #[test]
    fn label_keys_are_checked() {
        assert!(valid_label_key("fractalic-publisher.port"));
        assert!(!valid_label_key("a\"}}{{"));
    }
}
