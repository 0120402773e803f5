//! The shared front proxy: one Caddy 2 container per Docker engine, driven only through docker
//! (`docker create/cp/start/exec`), so it works on remote engines too. It runs in the engine's
//! host network namespace, so it can listen on any host port a deployment is given (a port a
//! container publishes is fixed when it is created; the proxy must gain ports as deployments
//! come) and reach every container on the tool's network by its address. Its admin API listens
//! on a unix socket inside the container, never on a TCP port of the host.
//!
//! The routes are a pure function of Docker's state: every running container labelled
//! `fractalic-publisher.proxy=true` that is its deployment's live container (named exactly as
//! the deployment) is an upstream of its deployment's route. [`Proxy::apply`] writes the whole
//! Caddy configuration in one `docker exec` and reloads it gracefully (in-flight requests finish
//! on the old upstream); a proxy removed by hand is re-created with every route by
//! [`Proxy::ensure_up`].

/// The `--tls` mode and the host-name rule are deploy settings ([`crate::config`]).
pub(crate) use crate::config::{valid_domain, Tls};
use crate::docker::{Docker, Refusal, QUICK};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The proxy container's name (one per engine).
pub(crate) const PROXY_NAME: &str = "fractalic-publisher-proxy";
/// The docker network proxied deployments join.
pub(crate) const NETWORK: &str = "fractalic-publisher";
/// Label on the proxy container and the network: what it is to this tool.
pub(crate) const LABEL_ROLE: &str = "fractalic-publisher.role";
/// Label on a deployment's containers: it is served through the proxy.
pub(crate) const LABEL_PROXY: &str = "fractalic-publisher.proxy";
/// Label on a deployment's containers: the host name the proxy routes to it (`--domain`).
pub(crate) const LABEL_DOMAIN: &str = "fractalic-publisher.domain";
/// Label on a deployment's containers: the proxy's TLS mode for it (`none`, `internal`, `acme`,
/// `files`).
pub(crate) const LABEL_TLS: &str = "fractalic-publisher.tls";
/// The image users get by default (the official Caddy 2 image).
pub(crate) const DEFAULT_IMAGE: &str = "caddy:2";
/// Environment variable choosing the proxy image (overridden by `--proxy-image`).
pub(crate) const IMAGE_ENV: &str = "FRACTALIC_PUBLISHER_PROXY_IMAGE";

/// The Caddy configuration inside the proxy container.
const CONFIG: &str = "/etc/caddy/fractalic-publisher.json";
/// The routes it was generated from (ours, for `proxy status` and reconciling).
const ROUTES: &str = "/etc/caddy/fractalic-publisher.routes.json";
/// Caddy's admin API: a unix socket inside the container (the container shares the host's
/// network, so a TCP admin port would be open to every local user).
const ADMIN_SOCKET: &str = "/data/fractalic-publisher-admin.sock";
/// Where Caddy's internal CA puts its root certificate (for `--tls internal`).
pub(crate) const CA_CERT: &str = "/data/caddy/pki/authorities/local/root.crt";
/// The container port every Fractalic deployment serves on.
pub(crate) const UPSTREAM_PORT: u16 = 8001;

/// One upstream of a route: a container on the tool's network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Upstream {
    /// The container's name.
    pub container: String,
    /// `IP:PORT` the proxy dials.
    pub dial: String,
}

/// What the proxy serves for one deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Route {
    /// The deployment's name.
    pub deployment: String,
    /// The host address and port the proxy listens on for it (the deployment's URL).
    pub bind: Option<IpAddr>,
    pub port: Option<u16>,
    /// A host name routed to it (`--domain`), on ports 80/443.
    pub domain: Option<String>,
    #[serde(default)]
    pub tls: Tls,
    /// The live container(s); several are load balanced with health checks.
    pub upstreams: Vec<Upstream>,
}

impl Route {
    /// The URL a client opens (what `deploy` prints for a proxied deployment).
    pub(crate) fn url(&self) -> Option<String> {
        let scheme = if self.tls == Tls::None {
            "http"
        } else {
            "https"
        };
        if let Some(d) = &self.domain {
            return Some(format!("{scheme}://{d}"));
        }
        let (bind, port) = (self.bind?, self.port?);
        // Spelled as an unproxied deployment's URL is (moving behind the proxy keeps the URL).
        let host = match bind {
            a if a.is_unspecified() || a.is_loopback() => "localhost".to_string(),
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        Some(format!("{scheme}://{host}:{port}"))
    }
}

/// The reverse-proxy handler for a route's upstreams: health-checked load balancing, and a
/// failed dial retried on another upstream (the request has not been sent yet, so this is
/// safe for POST too): a replica that dies costs no request.
fn reverse_proxy(route: &Route) -> Value {
    let upstreams: Vec<Value> = route
        .upstreams
        .iter()
        .map(|u| json!({ "dial": u.dial }))
        .collect();
    json!({
        "handler": "reverse_proxy",
        "upstreams": upstreams,
        "load_balancing": {
            "selection_policy": { "policy": "round_robin" },
            "try_duration": "5s",
            "try_interval": "50ms"
        },
        // A killed replica's address stops answering without a refusal (its veth is gone):
        // a short dial timeout lets the retry above reach a live one well within try_duration.
        "transport": { "protocol": "http", "dial_timeout": "1s" },
        "health_checks": {
            "active": { "uri": "/health", "interval": "1s", "timeout": "1s" },
            "passive": { "fail_duration": "5s", "max_fails": 1, "unhealthy_status": [502, 503, 504] }
        },
        "headers": { "request": { "set": { "X-Forwarded-Host": ["{http.request.host}"] } } }
    })
}

/// A route with no upstream answers 503 with a one-line reason instead of a connection refusal.
fn no_upstream(route: &Route) -> Value {
    json!({
        "handler": "static_response",
        "status_code": 503,
        "headers": { "Content-Type": ["application/json"] },
        "body": format!(
            "{{\"detail\": \"deployment {} has no running container behind the proxy\"}}",
            route.deployment
        )
    })
}

fn handler(route: &Route) -> Value {
    if route.upstreams.is_empty() {
        no_upstream(route)
    } else {
        reverse_proxy(route)
    }
}

/// The whole Caddy configuration (JSON) for `routes`: one server per listening host port, one
/// server for the routes by host name. Deterministic: the same routes give the same bytes.
pub(crate) fn caddy_config(routes: &[Route]) -> Value {
    let mut servers = serde_json::Map::new();
    let mut internal_subjects: Vec<String> = Vec::new();
    let mut acme_subjects: Vec<String> = Vec::new();
    let mut file_certs: Vec<Value> = Vec::new();
    let mut domain_routes: Vec<Value> = Vec::new();
    let mut domain_tls = false;
    let mut sorted: Vec<&Route> = routes.iter().collect();
    sorted.sort_by(|a, b| a.deployment.cmp(&b.deployment));
    for r in &sorted {
        if let (Some(bind), Some(port)) = (r.bind, r.port) {
            let listen = match bind {
                IpAddr::V6(a) => format!("[{a}]:{port}"),
                IpAddr::V4(a) => format!("{a}:{port}"),
            };
            let mut server = json!({
                "listen": [listen],
                "routes": [{ "handle": [handler(r)] }],
            });
            if r.tls == Tls::None {
                server["automatic_https"] = json!({ "disable": true });
            } else {
                // A client that dials the address sends no SNI: give it the certificate of the
                // address itself (and of `localhost`, for the 127.0.0.1 default).
                let sni = if bind.is_unspecified() {
                    "localhost".to_string()
                } else {
                    bind.to_string()
                };
                server["tls_connection_policies"] = json!([{ "default_sni": sni }]);
                server["automatic_https"] = json!({ "disable_redirects": true });
                if r.tls == Tls::Internal {
                    for s in [sni.clone(), "localhost".to_string()] {
                        if !internal_subjects.contains(&s) {
                            internal_subjects.push(s);
                        }
                    }
                }
            }
            servers.insert(format!("port-{port}"), server);
        }
        if let Some(domain) = &r.domain {
            domain_routes.push(json!({
                "match": [{ "host": [domain] }],
                "handle": [handler(r)],
                "terminal": true
            }));
            match r.tls {
                Tls::None => {}
                Tls::Internal => {
                    domain_tls = true;
                    internal_subjects.push(domain.clone());
                }
                Tls::Acme => {
                    domain_tls = true;
                    acme_subjects.push(domain.clone());
                }
                Tls::Files => {
                    domain_tls = true;
                    file_certs.push(json!({
                        "certificate": format!("/etc/caddy/certs/{}.crt", r.deployment),
                        "key": format!("/etc/caddy/certs/{}.key", r.deployment),
                        "tags": [r.deployment]
                    }));
                }
            }
        }
    }
    if !domain_routes.is_empty() {
        let mut server = json!({
            "listen": [if domain_tls { ":443" } else { ":80" }],
            "routes": domain_routes,
        });
        if !domain_tls {
            server["automatic_https"] = json!({ "disable": true });
        }
        servers.insert("domains".into(), server);
    }
    let mut policies: Vec<Value> = Vec::new();
    if !internal_subjects.is_empty() {
        policies
            .push(json!({ "subjects": internal_subjects, "issuers": [{ "module": "internal" }] }));
    }
    if !acme_subjects.is_empty() {
        policies.push(json!({ "subjects": acme_subjects, "issuers": [{ "module": "acme" }] }));
    }
    let mut config = json!({
        "admin": { "listen": format!("unix/{ADMIN_SOCKET}") },
        "apps": { "http": { "servers": Value::Object(servers) } }
    });
    if !policies.is_empty() || !file_certs.is_empty() {
        let mut tls = json!({});
        if !policies.is_empty() {
            let mut automate: Vec<Value> = Vec::new();
            for p in &policies {
                automate.extend(p["subjects"].as_array().cloned().unwrap_or_default());
            }
            tls["automation"] = json!({ "policies": policies });
            tls["certificates"] = json!({ "automate": automate });
        }
        if !file_certs.is_empty() {
            let certs = tls["certificates"].as_object().cloned().unwrap_or_default();
            let mut certs = Value::Object(certs);
            certs["load_files"] = Value::Array(file_certs);
            tls["certificates"] = certs;
        }
        config["apps"]["tls"] = tls;
        // The internal CA lives in the container: there is no trust store to install it into
        // (users take the root certificate with `proxy status`).
        config["apps"]["pki"] =
            json!({ "certificate_authorities": { "local": { "install_trust": false } } });
    }
    config
}

/// What `proxy status` reports.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Status {
    pub name: &'static str,
    /// `running`, `exited`, ..., or `missing`.
    pub state: String,
    pub image: Option<String>,
    pub network: &'static str,
    pub routes: Vec<RouteStatus>,
}

/// One route with the health of its upstreams, probed from inside the proxy container.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RouteStatus {
    #[serde(flatten)]
    pub route: Route,
    pub url: Option<String>,
    /// Per upstream container: does its `/health` answer from the proxy?
    pub upstream_health: Vec<(String, bool)>,
}

/// The proxy of one engine.
pub(crate) struct Proxy<'a> {
    docker: &'a Docker,
    image: String,
}

/// The image to use: `flag`, else `$FRACTALIC_PUBLISHER_PROXY_IMAGE`, else `caddy:2`.
pub(crate) fn image(flag: Option<&str>) -> String {
    flag.map(str::to_string)
        .or_else(|| std::env::var(IMAGE_ENV).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| DEFAULT_IMAGE.to_string())
}

impl<'a> Proxy<'a> {
    pub(crate) fn new(docker: &'a Docker, image: String) -> Self {
        Proxy { docker, image }
    }

    /// The proxy container's state (`None`: it does not exist).
    pub(crate) fn state(&self) -> Result<Option<String>> {
        Ok(self
            .docker
            .container_inspect(PROXY_NAME)?
            .and_then(|v| v["State"]["Status"].as_str().map(str::to_string)))
    }

    /// Makes sure the network and a running proxy exist, then applies every route Docker's
    /// state calls for. Returns what it had to do (empty: the proxy was up).
    pub(crate) fn ensure_up(&self) -> Result<Vec<String>> {
        let mut done = Vec::new();
        self.ensure_running(&mut done)?;
        let routes = self.desired_routes()?;
        let fresh = !done.is_empty();
        if fresh || self.current_routes()? != routes {
            self.apply(&routes)?;
            if fresh && !routes.is_empty() {
                done.push(format!("restored {} route(s)", routes.len()));
            } else if !fresh {
                done.push(format!("applied {} route(s)", routes.len()));
            }
        }
        Ok(done)
    }

    /// For deployment `name` moving behind the proxy while its old container still holds its
    /// port: makes sure the proxy runs and serves every other route, and returns all the
    /// routes, `name`'s included, for one [`Proxy::apply`] as soon as the port is free (the
    /// move's only gap is that one `docker exec`).
    pub(crate) fn prepare_move(&self, name: &str) -> Result<Vec<Route>> {
        let mut done = Vec::new();
        self.ensure_running(&mut done)?;
        let routes = self.desired_routes()?;
        let others: Vec<Route> = routes
            .iter()
            .filter(|r| r.deployment != name)
            .cloned()
            .collect();
        if !done.is_empty() || self.current_routes()? != others {
            self.apply(&others)?;
        }
        Ok(routes)
    }

    /// The network and a running proxy container (created or started when needed; what it
    /// did goes to `done`).
    fn ensure_running(&self, done: &mut Vec<String>) -> Result<()> {
        self.ensure_network(done)?;
        match self.state()?.as_deref() {
            Some("running") => {}
            Some(_) => {
                self.docker.run(&["start", PROXY_NAME], None, QUICK)?;
                self.wait_admin()?;
                done.push(format!("started the stopped proxy {PROXY_NAME}"));
            }
            None => {
                self.create()?;
                done.push(format!(
                    "created the proxy {PROXY_NAME} ({}) on the host network",
                    self.image
                ));
            }
        }
        Ok(())
    }

    /// The proxy network, created when missing.
    pub(crate) fn network(&self) -> Result<&'static str> {
        self.ensure_network(&mut Vec::new())?;
        Ok(NETWORK)
    }

    /// Makes sure the proxy is up and serves what Docker's state calls for, then returns the
    /// route of deployment `name`.
    pub(crate) fn route(&self, name: &str) -> Result<Route> {
        self.ensure_up()?;
        self.current_routes()?
            .into_iter()
            .find(|r| r.deployment == name)
            .ok_or_else(|| {
                Error::failed(format!(
                    "the proxy has no route for {name}: no running container named {name} with the label {LABEL_PROXY}=true on the network {NETWORK}"
                ))
            })
    }

    /// Puts a deployment's `--tls-cert`/`--tls-key` into the proxy as
    /// `/etc/caddy/certs/NAME.crt|.key` (the key 0600), through one `docker cp` of a tar on
    /// stdin: the key is never on a command line or in a host file.
    pub(crate) fn install_tls(&self, name: &str, files: &crate::config::TlsFiles) -> Result<()> {
        let mut b = tar::Builder::new(Vec::new());
        let entries = [
            (format!("etc/caddy/certs/{name}.crt"), &files.cert, 0o644),
            (format!("etc/caddy/certs/{name}.key"), &files.key, 0o600),
        ];
        for (path, body, mode) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(mode);
            h.set_mtime(0);
            h.set_cksum();
            b.append_data(&mut h, path, body.as_slice())
                .map_err(|e| Error::failed(format!("building the TLS files: {e}")))?;
        }
        let tar = b
            .into_inner()
            .map_err(|e| Error::failed(format!("building the TLS files: {e}")))?;
        self.docker
            .run(&["cp", "-", &format!("{PROXY_NAME}:/")], Some(tar), QUICK)
            .map(|_| ())
    }

    /// Re-applies the routes Docker's state calls for (after a proxied container went away):
    /// starts the proxy only when some deployment still needs it.
    pub(crate) fn sync(&self) -> Result<Vec<String>> {
        if self.state()?.is_none() && self.desired_routes()?.is_empty() {
            return Ok(Vec::new());
        }
        self.ensure_up()
    }

    fn ensure_network(&self, done: &mut Vec<String>) -> Result<()> {
        let (status, out) =
            self.docker
                .run_unchecked(&["network", "inspect", NETWORK], None, QUICK)?;
        if status == Some(0) {
            return Ok(());
        }
        if out.refusal() == Refusal::Ambiguous {
            return self.dedupe_network(done);
        }
        let role = format!("{LABEL_ROLE}=network");
        let (status, out) = self.docker.run_unchecked(
            &["network", "create", "--label", &role, NETWORK],
            None,
            QUICK,
        )?;
        // A parallel run may have created it meanwhile.
        if status != Some(0) && out.refusal() != Refusal::AlreadyExists {
            return Err(Error::failed(format!(
                "could not create the docker network {NETWORK}: {}",
                crate::error::one_line(&out.stderr)
            )));
        }
        done.push(format!("created the docker network {NETWORK}"));
        // Two runs that both found no network may both have created one (Docker lets names
        // repeat): then `--network NAME` is ambiguous for everyone.
        self.dedupe_network(done)
    }

    /// Keeps the oldest of several networks named [`NETWORK`] and removes the others (an
    /// empty one goes; one with containers attached stays, and the name stays ambiguous: said
    /// with what to do).
    fn dedupe_network(&self, done: &mut Vec<String>) -> Result<()> {
        let filter = format!("name=^{NETWORK}$");
        let out = self.docker.run(
            &[
                "network",
                "ls",
                "--no-trunc",
                "--filter",
                &filter,
                "--format",
                "{{.CreatedAt}}\t{{.ID}}\t{{.Name}}",
            ],
            None,
            QUICK,
        )?;
        let mut rows: Vec<(String, String)> = out
            .stdout
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f.len() == 3 && f[2] == NETWORK).then(|| (f[0].to_string(), f[1].to_string()))
            })
            .collect();
        rows.sort();
        let mut stuck = Vec::new();
        for (_, id) in rows.iter().skip(1) {
            let (status, _) = self
                .docker
                .run_unchecked(&["network", "rm", id], None, QUICK)?;
            if status == Some(0) {
                done.push(format!(
                    "removed a duplicate docker network {NETWORK} ({id:.12})"
                ));
            } else {
                stuck.push(id.clone());
            }
        }
        if stuck.is_empty() {
            Ok(())
        } else {
            Err(Error::failed(format!(
                "there are several docker networks named {NETWORK} and containers use more than one ({}); move them to one (docker network disconnect) and remove the others",
                stuck.iter().map(|i| format!("{i:.12}")).collect::<Vec<_>>().join(", ")
            )))
        }
    }

    fn create(&self) -> Result<()> {
        if self.docker.image_inspect(&self.image)?.is_none() {
            self.docker
                .pull(&self.image, None, Duration::from_secs(300))
                .map_err(|e| {
                    Error::failed(format!(
                        "the proxy image {} is not here and could not be pulled ({}); pass --proxy-image or set {IMAGE_ENV}",
                        self.image,
                        crate::error::one_line(&e.to_string())
                    ))
                })?;
        }
        let role = format!("{LABEL_ROLE}=proxy");
        let (status, out) = self.docker.run_unchecked(
            &[
                "create",
                "--name",
                PROXY_NAME,
                "--network",
                "host",
                "--restart",
                "unless-stopped",
                "--label",
                &role,
                "--label",
                "fractalic-publisher.image-role=proxy",
                // Not `managed` (it is no deployment), but the plugin whose deployments it
                // serves: `ps` lists it from the same `docker ps` call as those.
                "--label",
                "fractalic-publisher.plugin=docker-registry",
                &self.image,
                "caddy",
                "run",
                "--config",
                CONFIG,
            ],
            None,
            QUICK,
        )?;
        if status != Some(0) {
            // Another run created it first: use that one.
            if out.refusal() == Refusal::NameInUse {
                return Ok(());
            }
            return Err(Error::failed(format!(
                "could not create the proxy container: {}",
                crate::error::one_line(&out.stderr)
            )));
        }
        let result = (|| {
            let tar = config_tar(&[])?;
            self.docker.run(
                &["cp", "-a", "-", &format!("{PROXY_NAME}:/")],
                Some(tar),
                QUICK,
            )?;
            self.docker.run(&["start", PROXY_NAME], None, QUICK)?;
            self.wait_admin()
        })();
        if result.is_err() {
            let _ = self.docker.remove(PROXY_NAME);
        }
        result
    }

    /// Polls until Caddy's admin socket exists (it loaded its configuration).
    fn wait_admin(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (status, _) = self
                .docker
                .exec(PROXY_NAME, &["test", "-S", ADMIN_SOCKET], QUICK)?;
            if status == Some(0) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let logs = self
                    .docker
                    .run_unchecked(&["logs", "--tail", "5", PROXY_NAME], None, QUICK)
                    .map(|(_, o)| crate::error::one_line(&format!("{}{}", o.stdout, o.stderr)))
                    .unwrap_or_default();
                return Err(Error::failed(format!(
                    "the proxy {PROXY_NAME} did not load its configuration within 15 s; its log: {logs}"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The routes Docker's state calls for: every proxied deployment, its live container(s).
    pub(crate) fn desired_routes(&self) -> Result<Vec<Route>> {
        let filter = format!("label={LABEL_PROXY}=true");
        let format = "{{.ID}}\t{{.Label \"fractalic-publisher.deployment\"}}";
        let out = self.docker.run(
            &[
                "ps",
                "-a",
                "--no-trunc",
                "--filter",
                &filter,
                "--format",
                format,
            ],
            None,
            QUICK,
        )?;
        let mut ids: Vec<String> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for line in out.stdout.lines() {
            let (id, dep) = line.split_once('\t').unwrap_or((line, ""));
            ids.push(id.trim().to_string());
            if crate::config::valid_docker_name(dep) && !names.iter().any(|n| n == dep) {
                names.push(dep.to_string());
            }
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // The containers named as those deployments too: a live one that is not proxied (the
        // deployment moved off the proxy) takes its route away.
        let mut args: Vec<String> = vec!["ps".into(), "-a".into(), "--no-trunc".into()];
        for n in &names {
            args.extend([
                "--filter".into(),
                format!("name=^/?{}$", n.replace('.', "\\.")),
            ]);
        }
        args.extend(["--format".into(), "{{.ID}}".into()]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        for id in self
            .docker
            .run(&argv, None, QUICK)?
            .stdout
            .split_whitespace()
        {
            if !ids.iter().any(|i| i == id) {
                ids.push(id.to_string());
            }
        }
        let mut args = vec!["container", "inspect"];
        args.extend(ids.iter().map(String::as_str));
        let (_, out) = self.docker.run_unchecked(&args, None, QUICK)?;
        let list: Vec<Value> = serde_json::from_str(&out.stdout).unwrap_or_default();
        Ok(routes_from_inspect(&list))
    }

    /// The routes the proxy serves now (its own record; empty when it has none).
    pub(crate) fn current_routes(&self) -> Result<Vec<Route>> {
        let (status, out) = self.docker.exec(PROXY_NAME, &["cat", ROUTES], QUICK)?;
        if status != Some(0) {
            return Ok(Vec::new());
        }
        Ok(serde_json::from_str(&out.stdout).unwrap_or_default())
    }

    /// Writes the configuration for `routes` and reloads Caddy gracefully, in one `docker exec`:
    /// the new file is loaded first and becomes the saved one only once Caddy took it, so a
    /// refused configuration leaves the proxy serving what it served.
    pub(crate) fn apply(&self, routes: &[Route]) -> Result<()> {
        let mut input = serde_json::to_string(routes).expect("routes serialize");
        input.push('\n');
        input.push_str(&caddy_config(routes).to_string());
        // One apply at a time (flock, released when its shell dies), each with its own files:
        // the shell of a killed run's apply runs on in the container, and two sharing the
        // `.next` files and the log swapped each other's halves and emptied each other's errors.
        let script = format!(
            "set -e; if command -v flock >/dev/null 2>&1; then exec 9>/tmp/fp-apply.lock; flock -w 20 9 || {{ echo \"another apply of the routes held the lock for 20 s\" >&2; exit 7; }}; fi; \
             IFS= read -r routes; printf '%s\\n' \"$routes\" > {ROUTES}.next.$$; cat > {CONFIG}.next.$$; \
             caddy reload --config {CONFIG}.next.$$ --address unix/{ADMIN_SOCKET} --force >/tmp/fp-reload.$$.log 2>&1 || {{ cat /tmp/fp-reload.$$.log >&2; rm -f /tmp/fp-reload.$$.log {CONFIG}.next.$$ {ROUTES}.next.$$; exit 7; }}; \
             rm -f /tmp/fp-reload.$$.log; mv -f {CONFIG}.next.$$ {CONFIG}; mv -f {ROUTES}.next.$$ {ROUTES}"
        );
        let (status, out) = self.docker.run_unchecked(
            &["exec", "-i", PROXY_NAME, "sh", "-c", &script],
            Some(input.into_bytes()),
            QUICK,
        )?;
        if status == Some(0) {
            Ok(())
        } else {
            Err(Error::failed(format!(
                "the proxy refused the new routes: {}",
                crate::error::one_line(&out.stderr)
            )))
        }
    }

    /// `proxy status`: the container, and each route with its upstreams' health as the proxy
    /// sees it.
    pub(crate) fn status(&self) -> Result<Status> {
        let inspect = self.docker.container_inspect(PROXY_NAME)?;
        let state = inspect
            .as_ref()
            .and_then(|v| v["State"]["Status"].as_str())
            .unwrap_or("missing")
            .to_string();
        let image = inspect
            .as_ref()
            .and_then(|v| v["Config"]["Image"].as_str())
            .map(str::to_string);
        let routes = if state == "running" {
            self.current_routes()?
        } else {
            self.desired_routes()?
        };
        let mut out = Vec::new();
        for r in routes {
            let mut health = Vec::new();
            for u in &r.upstreams {
                let ok = state == "running" && self.probe(&format!("http://{}/health", u.dial));
                health.push((u.container.clone(), ok));
            }
            out.push(RouteStatus {
                url: r.url(),
                route: r,
                upstream_health: health,
            });
        }
        Ok(Status {
            name: PROXY_NAME,
            state,
            image,
            network: NETWORK,
            routes: out,
        })
    }

    /// One proxied deployment as `status` shows it: the proxy's state and health (its route
    /// answers `/health` through it, probed from inside the proxy), the route (URL, domain,
    /// TLS), each upstream with its health as the proxy sees it, the replica set (`replicas`,
    /// [`crate::replicas::report`]) with the containers that are down (`degraded`), and (`--tls internal`) the CA certificate copied
    /// to a host file for `curl --cacert`.
    pub(crate) fn deployment_status(&self, name: &str, replicas: Value) -> Result<Value> {
        let state = self.state()?.unwrap_or_else(|| "missing".into());
        let down: Vec<String> = replicas["down"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        let routes = if state == "running" {
            self.current_routes()?
        } else {
            Vec::new()
        };
        let Some(r) = routes.into_iter().find(|r| r.deployment == name) else {
            return Ok(json!({
                "proxy": state,
                "proxy_health": if state == "running" { "running, but without a route for this deployment" } else { "not running" },
                "route": "none (run `fractalic-publisher proxy up` to restore the routes)",
                "replicas": replicas,
            }));
        };
        let mut list = Vec::new();
        let ups: Vec<String> = r
            .upstreams
            .iter()
            .map(|u| {
                let ok = self.probe(&format!("http://{}/health", u.dial));
                let health = if ok { "healthy" } else { "unhealthy" };
                list.push(json!({"container": u.container, "dial": u.dial, "health": health}));
                format!("{} {health}", u.container)
            })
            .collect();
        let proxy_health = match (r.tls, r.bind, r.port) {
            (Tls::None, Some(bind), Some(port)) => {
                let host = match bind {
                    IpAddr::V4(a) if a.is_unspecified() => "127.0.0.1".to_string(),
                    IpAddr::V6(a) if a.is_unspecified() => "[::1]".to_string(),
                    IpAddr::V6(a) => format!("[{a}]"),
                    a => a.to_string(),
                };
                if self.probe(&format!("http://{host}:{port}/health")) {
                    "healthy (the route answers /health)".to_string()
                } else {
                    format!("unhealthy (http://{host}:{port}/health does not answer through it)")
                }
            }
            _ if state == "running" => {
                "running (an HTTPS or host-name route is not probed from inside)".to_string()
            }
            _ => "not running".to_string(),
        };
        let mut v = json!({
            "proxy": state,
            "proxy_health": proxy_health,
            "route": r.url().unwrap_or_default(),
            "domain": r.domain.clone().unwrap_or_default(),
            "tls": r.tls.as_str(),
            "upstreams": if ups.is_empty() { "none (the route answers 503)".to_string() } else { ups.join(", ") },
            "upstream_health": list,
            "replicas": replicas,
        });
        if !down.is_empty() {
            v["degraded"] = json!(format!(
                "{} of {} replica(s) down: {}",
                down.len(),
                replicas["replicas"],
                down.join(", ")
            ));
        }
        if r.tls == Tls::Internal {
            if let Some(path) = self.export_ca()? {
                v["ca_cert"] = json!(path.display().to_string());
            }
        }
        Ok(v)
    }

    /// Copies the internal CA's root certificate out of the proxy into
    /// `$XDG_STATE_HOME/fractalic-publisher/proxy-root-ca.crt` (or under ~/.local/state);
    /// None while Caddy has not made it yet.
    pub(crate) fn export_ca(&self) -> Result<Option<std::path::PathBuf>> {
        let Some(pem) = self.docker.read_file(PROXY_NAME, CA_CERT)? else {
            return Ok(None);
        };
        let dir = std::env::var_os("XDG_STATE_HOME")
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/state"))
            })
            .unwrap_or_else(std::env::temp_dir)
            .join("fractalic-publisher");
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
            path: dir.clone(),
            source: e,
        })?;
        let path = dir.join("proxy-root-ca.crt");
        std::fs::write(&path, pem).map_err(|e| Error::Io {
            path: path.clone(),
            source: e,
        })?;
        Ok(Some(path))
    }

    /// GET `url` from inside the proxy container (busybox/alpine `wget`): true on 2xx. No `-T`:
    /// Debian's static busybox crashes with it; the `docker exec` deadline bounds the wait.
    fn probe(&self, url: &str) -> bool {
        matches!(
            self.docker.exec(
                PROXY_NAME,
                &["wget", "-q", "-O", "/dev/null", url],
                Duration::from_secs(5),
            ),
            Ok((Some(0), _))
        )
    }

    /// `proxy down`: removes the proxy (and its network when nothing else uses it). Refused
    /// while deployments are routed through it, unless `force`.
    pub(crate) fn down(&self, force: bool) -> Result<Vec<String>> {
        let routes = self.desired_routes()?;
        if !routes.is_empty() && !force {
            let names: Vec<&str> = routes.iter().map(|r| r.deployment.as_str()).collect();
            return Err(Error::input(
                format!(
                    "the proxy serves {} deployment(s): {}",
                    names.len(),
                    names.join(", ")
                ),
                "remove them first, or pass --force (they stop answering until the proxy is up again)",
            ));
        }
        let mut done = Vec::new();
        if self.state()?.is_some() {
            self.docker.remove(PROXY_NAME)?;
            done.push(format!("removed {PROXY_NAME}"));
        }
        let (status, _) = self
            .docker
            .run_unchecked(&["network", "rm", NETWORK], None, QUICK)?;
        if status == Some(0) {
            done.push(format!("removed the network {NETWORK}"));
        }
        Ok(done)
    }
}

/// Brings the proxy back (with every route) when deployment `name` is proxied and the proxy
/// is missing or stopped (removed by hand, `docker rm -f`): what every command on a deployment
/// does first. One `docker container inspect` of both when all is well. Returns what it did.
pub(crate) fn heal_for(d: &Docker, name: &str) -> Result<Vec<String>> {
    let (_, out) = d.run_unchecked(&["container", "inspect", name, PROXY_NAME], None, QUICK)?;
    if out.refusal() == Refusal::DaemonDown {
        return Err(Error::DaemonDown { detail: out.stderr });
    }
    let list: Vec<Value> = serde_json::from_str(&out.stdout).unwrap_or_default();
    let find = |n: &str| {
        list.iter()
            .find(|c| c["Name"].as_str().map(|x| x.trim_start_matches('/')) == Some(n))
    };
    let proxied =
        find(name).is_some_and(|c| c["Config"]["Labels"][LABEL_PROXY].as_str() == Some("true"));
    let proxy_runs = find(PROXY_NAME).is_some_and(|c| c["State"]["Running"] == true);
    if !proxied || proxy_runs {
        return Ok(Vec::new());
    }
    Proxy::new(d, image(None)).ensure_up()
}

/// [`heal_for`] for every deployment (`ps`): when the proxy is not running but some proxied
/// container exists, it is brought back with every route.
pub(crate) fn heal_all(d: &Docker) -> Result<Vec<String>> {
    let p = Proxy::new(d, image(None));
    if p.state()?.as_deref() == Some("running") {
        return Ok(Vec::new());
    }
    p.sync()
}

/// `name`'s address on [`NETWORK`], or None when it is not attached (or does not exist).
pub(crate) fn container_address(d: &Docker, name: &str) -> Result<Option<IpAddr>> {
    Ok(d.container_inspect(name)?.and_then(|v| {
        v["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]
            .as_str()
            .and_then(|s| s.parse().ok())
    }))
}

/// The routes from `docker container inspect` of the proxied containers: a container is an
/// upstream when it runs, is attached to [`NETWORK`] and is named as its deployment (the live
/// one; kept releases are renamed aside).
pub(crate) fn routes_from_inspect(list: &[Value]) -> Vec<Route> {
    let mut routes: Vec<Route> = Vec::new();
    // Deployments whose live container (named as the deployment) is not proxied.
    let off: Vec<&str> = list
        .iter()
        .filter(|c| c["Config"]["Labels"][LABEL_PROXY].as_str() != Some("true"))
        .filter_map(|c| c["Name"].as_str())
        .map(|n| n.trim_start_matches('/'))
        .collect();
    for c in list {
        let labels = &c["Config"]["Labels"];
        let label = |k: &str| labels[k].as_str().unwrap_or("").to_string();
        let deployment = label("fractalic-publisher.deployment");
        if label(LABEL_PROXY) != "true"
            || !crate::config::valid_docker_name(&deployment)
            || off.contains(&deployment.as_str())
        {
            continue;
        }
        let name = c["Name"].as_str().unwrap_or("").trim_start_matches('/');
        let running = c["State"]["Running"].as_bool().unwrap_or(false);
        let ip = c["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]
            .as_str()
            .unwrap_or("")
            .parse::<IpAddr>()
            .ok();
        let bind = label("fractalic-publisher.bind").parse::<IpAddr>().ok();
        let port = label("fractalic-publisher.port").parse::<u16>().ok();
        let domain = Some(label(LABEL_DOMAIN)).filter(|d| valid_domain(d));
        let tls = Tls::parse(&label(LABEL_TLS)).unwrap_or_default();
        let idx = match routes.iter().position(|r| r.deployment == deployment) {
            Some(i) => i,
            None => {
                routes.push(Route {
                    deployment: deployment.clone(),
                    bind: None,
                    port: None,
                    domain: None,
                    tls,
                    upstreams: Vec::new(),
                });
                routes.len() - 1
            }
        };
        let live = name == deployment || is_replica_of(name, &deployment);
        if !live {
            continue;
        }
        let r = &mut routes[idx];
        r.bind = r.bind.or(bind);
        r.port = r.port.or(port);
        r.domain = r.domain.clone().or(domain);
        r.tls = tls;
        if let (true, Some(ip)) = (running, ip) {
            r.upstreams.push(Upstream {
                container: name.to_string(),
                dial: format!("{ip}:{UPSTREAM_PORT}"),
            });
        }
    }
    for r in &mut routes {
        r.upstreams.sort_by(|a, b| a.container.cmp(&b.container));
    }
    routes.sort_by(|a, b| a.deployment.cmp(&b.deployment));
    routes
}

/// `NAME.2`, `NAME.3` ...: the further replicas of a proxied deployment.
fn is_replica_of(container: &str, deployment: &str) -> bool {
    crate::config::replica_index(container, deployment).is_some()
}

/// The initial files of a new proxy container: an empty configuration and no routes.
fn config_tar(routes: &[Route]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let files = [
        (CONFIG, caddy_config(routes).to_string()),
        (
            ROUTES,
            serde_json::to_string(routes).expect("routes serialize"),
        ),
    ];
    for (path, body) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, path.trim_start_matches('/'), body.as_bytes())
            .map_err(|e| Error::failed(format!("building the proxy's files: {e}")))?;
    }
    b.into_inner()
        .map_err(|e| Error::failed(format!("building the proxy's files: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, port: u16, ups: &[(&str, &str)]) -> Route {
        Route {
            deployment: name.into(),
            bind: Some("127.0.0.1".parse().unwrap()),
            port: Some(port),
            domain: None,
            tls: Tls::None,
            upstreams: ups
                .iter()
                .map(|(c, d)| Upstream {
                    container: c.to_string(),
                    dial: d.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn one_server_per_port_with_its_upstreams() {
        let c = caddy_config(&[
            route("b", 8002, &[("b", "172.18.0.3:8001")]),
            route(
                "a",
                8001,
                &[("a", "172.18.0.2:8001"), ("a.2", "172.18.0.4:8001")],
            ),
        ]);
        let servers = c["apps"]["http"]["servers"].as_object().unwrap();
        assert_eq!(servers.len(), 2);
        let a = &servers["port-8001"];
        assert_eq!(a["listen"][0], "127.0.0.1:8001");
        assert_eq!(a["automatic_https"]["disable"], true);
        let rp = &a["routes"][0]["handle"][0];
        assert_eq!(rp["handler"], "reverse_proxy");
        assert_eq!(rp["upstreams"].as_array().unwrap().len(), 2);
        assert_eq!(rp["health_checks"]["active"]["uri"], "/health");
        assert_eq!(c["admin"]["listen"], format!("unix/{ADMIN_SOCKET}"));
        assert!(c["apps"].get("tls").is_none());
    }

    #[test]
    fn deterministic_whatever_the_order() {
        let a = route("a", 8001, &[("a", "172.18.0.2:8001")]);
        let b = route("b", 8002, &[("b", "172.18.0.3:8001")]);
        assert_eq!(
            caddy_config(&[a.clone(), b.clone()]).to_string(),
            caddy_config(&[b, a]).to_string()
        );
    }

    #[test]
    fn a_route_without_upstream_answers_503() {
        let c = caddy_config(&[route("a", 8001, &[])]);
        let h = &c["apps"]["http"]["servers"]["port-8001"]["routes"][0]["handle"][0];
        assert_eq!(h["handler"], "static_response");
        assert_eq!(h["status_code"], 503);
    }

    #[test]
    fn internal_tls_certifies_the_address() {
        let mut r = route("a", 8443, &[("a", "172.18.0.2:8001")]);
        r.tls = Tls::Internal;
        let c = caddy_config(&[r.clone()]);
        let s = &c["apps"]["http"]["servers"]["port-8443"];
        assert_eq!(s["tls_connection_policies"][0]["default_sni"], "127.0.0.1");
        let p = &c["apps"]["tls"]["automation"]["policies"][0];
        assert_eq!(p["issuers"][0]["module"], "internal");
        assert!(p["subjects"]
            .as_array()
            .unwrap()
            .contains(&json!("127.0.0.1")));
        assert_eq!(r.url().unwrap(), "https://localhost:8443");
    }

    #[test]
    fn domains_share_one_server_with_host_matchers() {
        let mut a = route("a", 8001, &[("a", "172.18.0.2:8001")]);
        a.domain = Some("a.example.com".into());
        a.tls = Tls::Acme;
        let c = caddy_config(&[a.clone()]);
        let d = &c["apps"]["http"]["servers"]["domains"];
        assert_eq!(d["listen"][0], ":443");
        assert_eq!(d["routes"][0]["match"][0]["host"][0], "a.example.com");
        let p = &c["apps"]["tls"]["automation"]["policies"][0];
        assert_eq!(p["issuers"][0]["module"], "acme");
        assert_eq!(a.url().unwrap(), "https://a.example.com");
    }

    fn container(name: &str, dep: &str, running: bool, ip: &str) -> Value {
        json!({
            "Name": format!("/{name}"),
            "State": { "Running": running },
            "Config": { "Labels": {
                "fractalic-publisher.deployment": dep,
                "fractalic-publisher.proxy": "true",
                "fractalic-publisher.bind": "127.0.0.1",
                "fractalic-publisher.port": "8005",
            }},
            "NetworkSettings": { "Networks": { NETWORK: { "IPAddress": ip } } }
        })
    }

    #[test]
    fn routes_follow_the_live_containers_only() {
        let list = vec![
            container("web", "web", true, "172.18.0.2"),
            container("web.2", "web", true, "172.18.0.5"),
            container("web-r3-kept", "web", false, "172.18.0.9"),
            container("web-new-x1", "web", true, "172.18.0.7"),
            container("stopped", "stopped", false, "172.18.0.3"),
        ];
        let mut moved_off = container("old", "old", false, "172.18.0.8");
        moved_off["Name"] = json!("/old.r1-ab12");
        let mut live_unproxied = container("old", "old", true, "");
        live_unproxied["Config"]["Labels"]
            .as_object_mut()
            .unwrap()
            .remove("fractalic-publisher.proxy");
        let mut list = list;
        list.extend([moved_off, live_unproxied]);
        let routes = routes_from_inspect(&list);
        assert_eq!(
            routes.len(),
            2,
            "a deployment moved off the proxy has no route: {routes:?}"
        );
        let web = &routes[1];
        assert_eq!(web.deployment, "web");
        assert_eq!(web.port, Some(8005));
        let dials: Vec<&str> = web.upstreams.iter().map(|u| u.dial.as_str()).collect();
        assert_eq!(dials, ["172.18.0.2:8001", "172.18.0.5:8001"]);
        assert!(
            routes[0].upstreams.is_empty(),
            "a stopped deployment has no upstream"
        );
    }

    #[test]
    fn hostile_labels_make_no_route() {
        let mut c = container("x", "x", true, "172.18.0.2");
        c["Config"]["Labels"]["fractalic-publisher.domain"] = json!("evil.com\"}]}");
        c["Config"]["Labels"]["fractalic-publisher.port"] = json!("99999");
        let routes = routes_from_inspect(&[c]);
        assert_eq!(routes[0].domain, None);
        assert_eq!(routes[0].port, None);
        let mut c = container("../x", "../x", true, "172.18.0.2");
        c["Name"] = json!("/../x");
        assert!(routes_from_inspect(&[c]).is_empty());
    }

    #[test]
    fn domains() {
        assert!(valid_domain("a.example.com"));
        assert!(valid_domain("localhost"));
        for bad in ["", "*.x.com", "a..b", "-a.com", "a b", "a/b", "ä.com"] {
            assert!(!valid_domain(bad), "{bad}");
        }
    }
}
