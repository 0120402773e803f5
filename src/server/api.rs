//! Routes of the REST API: deploy (blocking and as a Server-Sent-Event stream), re-attach to a
//! run's events, the management verbs, plugins, health and the OpenAPI document. Bad input is
//! an HTTP error with `{"detail": "..."}` decided before anything is touched.

use super::http::{self, Request, Response};
use super::runs::{Refused, Run};
use super::Server;
use crate::cli::{DeployArgs, PullPolicy};
use crate::error::Error;
use crate::manage::Manager;
use crate::plugin::{self, host::Host, Plugin};
use crate::progress::{self, Progress};
use serde_json::{json, Value};
use std::net::TcpStream;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The OpenAPI 3.1 document describing every route below.
pub(crate) const OPENAPI: &str = include_str!("openapi.json");

/// Every route: method and path pattern (`{x}` is one path segment).
pub(crate) const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/app.js"),
    ("GET", "/app.css"),
    ("GET", "/health"),
    ("GET", "/openapi.json"),
    ("GET", "/api/plugins"),
    ("POST", "/api/deploy/{plugin}"),
    ("POST", "/api/deploy/{plugin}/stream"),
    ("GET", "/api/deployments"),
    ("GET", "/api/deployments/{name}"),
    ("DELETE", "/api/deployments/{name}"),
    ("GET", "/api/deployments/{name}/logs"),
    ("POST", "/api/deployments/{name}/stop"),
    ("POST", "/api/deployments/{name}/start"),
    ("POST", "/api/deployments/{name}/rollback"),
    ("GET", "/api/deployments/{name}/history"),
    ("GET", "/api/deployments/{deployment_id}/events"),
];

/// Fields a deploy request may have, with the JSON type each must be.
pub(crate) const DEPLOY_FIELDS: &[(&str, &str)] = &[
    ("image_name", "string"),
    ("image_tag", "string"),
    ("script_name", "string"),
    ("script_folder", "string"),
    ("container_name", "string"),
    ("env_vars", "object of strings"),
    ("port", "integer 1-65535"),
    ("platform", "string"),
    ("pull", "\"always\", \"missing\" or \"never\""),
    ("timeout", "integer seconds 1-3600"),
    ("exclude", "array of strings"),
    ("replicas", "integer 1-100 (docker-swarm)"),
    ("registry", "string HOST:PORT (docker-swarm)"),
    ("publish_mode", "\"ingress\" or \"host\" (docker-swarm)"),
    ("dry_run", "boolean (true: answer the plan, change nothing)"),
    (
        "proxy",
        "boolean (true: behind the front proxy; false: a port of its own)",
    ),
    (
        "domain",
        "host name such as app.example.com (behind the proxy)",
    ),
    (
        "custom_domain",
        "host name such as app.example.com (the original's name for domain)",
    ),
    (
        "tls",
        "\"none\", \"internal\" or \"acme\" (behind the proxy)",
    ),
    (
        "placement_pref",
        "\"spread=node.labels.KEY\", \"spread=engine.labels.KEY\" or \"none\" (docker-swarm)",
    ),
    (
        "max_replicas_per_node",
        "integer 0-100, 0 no limit (docker-swarm)",
    ),
];

pub(super) fn matches(pattern: &str, path: &str) -> Option<Vec<String>> {
    let ps: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
    let xs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if ps.len() != xs.len() {
        return None;
    }
    let mut params = Vec::new();
    for (p, x) in ps.iter().zip(&xs) {
        if p.starts_with('{') {
            if x.is_empty() {
                return None;
            }
            params.push((*x).to_string());
        } else if p != x {
            return None;
        }
    }
    Some(params)
}

/// Adds CORS headers for an allowed `Origin`.
pub(crate) fn with_cors(server: &Server, req: &Request, resp: Response) -> Response {
    match req.header("origin") {
        Some(o) if server.cors_origins.iter().any(|a| a == o) => resp
            .with("Access-Control-Allow-Origin", o)
            .with("Vary", "Origin"),
        _ => resp,
    }
}

pub(crate) fn cors_headers(server: &Server, req: &Request) -> Vec<(String, String)> {
    match req.header("origin") {
        Some(o) if server.cors_origins.iter().any(|a| a == o) => vec![
            ("Access-Control-Allow-Origin".into(), o.into()),
            ("Vary".into(), "Origin".into()),
        ],
        _ => Vec::new(),
    }
}

fn preflight(server: &Server, req: &Request) -> Response {
    match req.header("origin") {
        Some(o) if server.cors_origins.iter().any(|a| a == o) => Response {
            status: 204,
            headers: Vec::new(),
            body: Vec::new(),
        }
        .with("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
        .with(
            "Access-Control-Allow-Headers",
            "Content-Type, Authorization, Accept, Last-Event-ID",
        )
        .with("Access-Control-Max-Age", "600"),
        Some(o) => Response::error(
            403,
            format!("origin {o:?} may not call this API; start the server with --cors-origin {o}"),
        ),
        None => Response::error(400, "a CORS preflight needs an Origin header"),
    }
}

fn authorised(server: &Server, req: &Request) -> bool {
    let Some(token) = &server.token else {
        return true;
    };
    // The scheme is case-insensitive (RFC 7235).
    let given = req
        .header("authorization")
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, t)| t);
    super::constant_time_eq(given.trim().as_bytes(), token.as_bytes())
}

/// The host name of a `Host` header value (`name:port`, `[v6]:port`, or bare).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// On a loopback listener, only requests addressed to a loopback name are answered: a site
/// that makes its own name resolve to 127.0.0.1 (DNS rebinding) is refused.
pub(super) fn host_allowed(server: &Server, req: &Request) -> bool {
    if !server.loopback {
        return true;
    }
    match req.header("host") {
        None => true,
        Some(h) => {
            let name = host_name(h).to_ascii_lowercase();
            name == "localhost"
                || name.ends_with(".localhost")
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    }
}

/// A request that changes something, sent by a browser page of another origin (a "simple"
/// cross-site request needs no preflight): refused unless that origin was allowed with
/// --cors-origin. Same-origin pages (the server's own page) and clients that send no Origin
/// (curl, scripts) pass.
fn cross_site_write(server: &Server, req: &Request) -> Option<String> {
    if !matches!(req.method.as_str(), "POST" | "DELETE" | "PUT" | "PATCH") {
        return None;
    }
    let origin = req.header("origin")?;
    if server.cors_origins.iter().any(|a| a == origin) {
        return None;
    }
    let same = req
        .header("host")
        .is_some_and(|h| origin == format!("http://{h}") || origin == format!("https://{h}"));
    (!same).then(|| origin.to_string())
}

/// Answers `req`; `None` when the handler already wrote a streamed response.
pub(crate) fn route(
    server: &Arc<Server>,
    req: &Request,
    stream: &mut TcpStream,
) -> Option<Response> {
    if !host_allowed(server, req) {
        return Some(Response::error(
            403,
            format!(
                "Host {:?} is not a loopback name; this server listens on loopback and answers only requests addressed to localhost or 127.0.0.1",
                req.header("host").unwrap_or("")
            ),
        ));
    }
    if req.method == "OPTIONS" {
        return Some(preflight(server, req));
    }
    if let Some(origin) = cross_site_write(server, req) {
        return Some(Response::error(
            403,
            format!("a page of origin {origin:?} may not change anything here; start the server with --cors-origin {origin} to allow it"),
        ));
    }
    // Every /api request needs the token, also one for a route that does not exist.
    if (req.path == "/api" || req.path.starts_with("/api/")) && !authorised(server, req) {
        return Some(
            Response::error(
                401,
                "this server needs `Authorization: Bearer <token>` (the token of its --token-file)",
            )
            .with("WWW-Authenticate", "Bearer"),
        );
    }
    let mut allowed = Vec::new();
    let mut found = None;
    for (m, p) in ROUTES {
        if let Some(params) = matches(p, &req.path) {
            allowed.push(*m);
            if *m == req.method {
                found = Some((*p, params));
                break;
            }
        }
    }
    let Some((pattern, params)) = found else {
        if allowed.is_empty() {
            return Some(Response::error(
                404,
                format!(
                    "no route {} {}; see GET /openapi.json",
                    req.method, req.path
                ),
            ));
        }
        allowed.dedup();
        return Some(
            Response::error(
                405,
                format!(
                    "{} is not allowed on {}; use {}",
                    req.method,
                    req.path,
                    allowed.join(", ")
                ),
            )
            .with("Allow", allowed.join(", ")),
        );
    };
    if pattern.starts_with("/api") && !authorised(server, req) {
        return Some(
            Response::error(
                401,
                "this server needs `Authorization: Bearer <token>` (the token of its --token-file)",
            )
            .with("WWW-Authenticate", "Bearer"),
        );
    }
    let p = |i: usize| params.get(i).map(String::as_str).unwrap_or("");
    match pattern {
        "/" | "/app.js" | "/app.css" => super::page::asset(pattern),
        "/health" => Some(Response::json(
            200,
            &json!({
                "status": "healthy",
                "version": env!("CARGO_PKG_VERSION"),
                "deploys_in_flight": server.runs.active(),
            }),
        )),
        "/openapi.json" => Some(Response::bytes(
            200,
            "application/json",
            OPENAPI.as_bytes().to_vec(),
        )),
        "/api/plugins" => Some(plugins(server)),
        "/api/deploy/{plugin}" => deploy(server, req, p(0), false, stream).map(with_field),
        "/api/deploy/{plugin}/stream" => deploy(server, req, p(0), true, stream).map(with_field),
        "/api/deployments" => Some(list(server, req)),
        "/api/deployments/{name}" if req.method == "GET" => Some(status(server, p(0))),
        "/api/deployments/{name}" => Some(remove(server, req, p(0))),
        "/api/deployments/{name}/logs" => logs(server, req, p(0), stream),
        "/api/deployments/{name}/stop" => Some(stop(server, p(0))),
        "/api/deployments/{name}/start" => Some(start(server, req, p(0))),
        "/api/deployments/{name}/rollback" => Some(rollback(server, req, p(0))),
        "/api/deployments/{name}/history" => Some(history(server, p(0))),
        "/api/deployments/{deployment_id}/events" => events(server, req, p(0), stream),
        _ => Some(Response::error(500, "route without a handler")),
    }
}

/// The error as JSON `{"detail"}`, with `"field"` when it is about one deploy input.
fn error_response(e: &Error) -> Response {
    match e.field() {
        Some(f) => Response::error_at(http::status_of(e), e.to_string(), f.rest_name()),
        None => Response::error(http::status_of(e), e.to_string()),
    }
}

fn manager(server: &Server) -> Result<Manager, Response> {
    Manager::new(
        server.docker_flag.as_deref(),
        server.plugins_dir.as_deref(),
        true,
    )
    .map_err(|e| error_response(&e))
}

fn plugins(server: &Server) -> Response {
    let dirs = plugin::search_dirs(server.plugins_dir.as_deref());
    let host = Arc::new(Host::new(Progress::silent(), None));
    let infos: Result<Vec<_>, Error> = plugin::available(&dirs)
        .into_iter()
        .map(|src| Plugin::load(src, Arc::clone(&host))?.info())
        .collect();
    match infos {
        Ok(i) => Response::json(200, &json!(i)),
        Err(e) => error_response(&e),
    }
}

/// The one rule for every boolean query flag (`all`, `follow`, `force`): `true` or `false`,
/// in any case; absent is false. Anything else, an empty value included, is 400.
pub(crate) fn parse_flag(name: &str, value: Option<&str>) -> Result<bool, String> {
    match value {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(format!(
            "bad query parameter {name}={v:?}: use {name}=true or {name}=false"
        )),
    }
}

fn bool_param(req: &Request, name: &str) -> Result<bool, Response> {
    parse_flag(name, req.param(name)).map_err(|d| Response::error(400, d))
}

fn num_param(
    req: &Request,
    name: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, Response> {
    match req.param(name) {
        None => Ok(None),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(Response::error(
                400,
                format!(
                    "bad query parameter {name}={v:?}: use a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )),
        },
    }
}

fn list(server: &Server, req: &Request) -> Response {
    let all = match bool_param(req, "all") {
        Ok(a) => a,
        Err(r) => return r,
    };
    let m = match manager(server) {
        Ok(m) => m,
        Err(r) => return r,
    };
    match m.ps(all) {
        Ok(v) => Response::json(200, &json!(v)),
        Err(e) => error_response(&e),
    }
}

fn status(server: &Server, name: &str) -> Response {
    let m = match manager(server) {
        Ok(m) => m,
        Err(r) => return r,
    };
    match m.status(name) {
        Ok(v) => Response::json(200, &v),
        Err(e) => error_response(&e),
    }
}

fn logs(server: &Server, req: &Request, name: &str, stream: &mut TcpStream) -> Option<Response> {
    let tail = match num_param(req, "tail", 0..=100_000) {
        Ok(t) => t.map(|t| t as u32),
        Err(r) => return Some(r),
    };
    let follow = match bool_param(req, "follow") {
        Ok(f) => f,
        Err(r) => return Some(r),
    };
    let service = match req.param("service") {
        None | Some("") => None,
        Some(s @ ("ai_server" | "mcp_manager" | "backend")) => Some(s),
        Some(s) => {
            return Some(Response::error(
                400,
                format!("bad service {s:?}: use ai_server, mcp_manager or backend"),
            ))
        }
    };
    if follow && service.is_some() {
        // Refused before the stream starts (a 200 then `event: error` is too late to act on).
        return Some(Response::error(
            400,
            "follow=true follows the container log only: leave out service (a service's log can be read without follow)",
        ));
    }
    let m = match manager(server) {
        Ok(m) => m,
        Err(r) => return Some(r),
    };
    if follow {
        let extra = cors_headers(server, req);
        return super::logstream::follow(m, name, tail, service, &extra, stream);
    }
    Some(match m.capturing().logs(name, tail, false, service) {
        Ok(text) => Response::bytes(200, "text/plain; charset=utf-8", text.into_bytes()),
        Err(e) => error_response(&e),
    })
}

fn in_flight(server: &Server, name: &str) -> Option<Response> {
    server.runs.busy(name).map(|id| {
        Response::error(
            409,
            format!("a deploy of {name} is in flight (run {id}); wait until it finishes"),
        )
    })
}

fn stop(server: &Server, name: &str) -> Response {
    if let Some(r) = in_flight(server, name) {
        return r;
    }
    let m = match manager(server) {
        Ok(m) => m,
        Err(r) => return r,
    };
    match m.stop(name) {
        Ok(v) => Response::json(200, &v),
        Err(e) => error_response(&e),
    }
}

/// `rollback`: back to the previous release, or `?to=RELEASE`; under the deployment's lock
/// (a deploy in flight is 409).
fn rollback(server: &Server, req: &Request, name: &str) -> Response {
    if let Some(r) = in_flight(server, name) {
        return r;
    }
    let timeout = match num_param(req, "timeout", 1..=3600) {
        Ok(t) => Duration::from_secs(t.unwrap_or(60)),
        Err(r) => return r,
    };
    // The CLI's rule: an empty --to is bad input, not "the previous release".
    let to = match req.param("to") {
        Some(t) if t.trim().is_empty() => {
            return Response::error(
                400,
                "bad query parameter to=\"\": give a release id such as r3 (or 3; see GET .../history), or leave `to` out to go back to the previous release",
            )
        }
        t => t,
    };
    let m = match manager(server) {
        Ok(m) => m,
        Err(r) => return r,
    };
    match m.rollback(name, to, timeout, Duration::ZERO) {
        Ok(v) => Response::json(200, &v),
        Err(e) => error_response(&e),
    }
}

/// `history`: the deployment's releases (as `history --json`).
fn history(server: &Server, name: &str) -> Response {
    let m = match manager(server) {
        Ok(m) => m,
        Err(r) => return r,
    };
    match m.history(name) {
        Ok(v) => Response::json(200, &v),
        Err(e) => error_response(&e),
    }
}

fn start(server: &Server, req: &Request, name: &str) -> Response {
    if let Some(r) = in_flight(server, name) {
        return r;
    }
    let timeout = match num_param(req, "timeout", 1..=3600) {
        Ok(t) => Duration::from_secs(t.unwrap_or(60)),
        Err(r) => return r,
    };
    let m = match manager(server) {
        Ok(m) => m,
        Err(r) => return r,
    };
    match m.start(name, timeout) {
        Ok(v) => Response::json(200, &v),
        Err(e) => error_response(&e),
    }
}

fn remove(server: &Server, req: &Request, name: &str) -> Response {
    if let Some(r) = in_flight(server, name) {
        return r;
    }
    let force = match bool_param(req, "force") {
        Ok(f) => f,
        Err(r) => return r,
    };
    let m = match manager(server) {
        Ok(m) => m,
        Err(r) => return r,
    };
    match m.owned(name) {
        Ok(o) if o.running && !force => {
            return Response::error(
                409,
                format!("deployment {name} is running: nothing was removed; stop it first or add ?force=true"),
            )
        }
        Ok(_) => {}
        Err(e) => return error_response(&e),
    }
    match m.rm(name, force) {
        Ok(v) => Response::json(200, &v),
        Err(e) => error_response(&e),
    }
}

/// A deploy route's 4xx JSON error in a REST client's words (its `"field"`, when it has one,
/// was set where the error was made).
fn with_field(mut r: Response) -> Response {
    if !(400..500).contains(&r.status) {
        return r;
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(&r.body) else {
        return r;
    };
    let Some(detail) = v["detail"].as_str().map(str::to_string) else {
        return r;
    };
    if let Some(obj) = v.as_object_mut() {
        obj.insert("detail".into(), json!(rest_words(&detail)));
    }
    if let Ok(body) = serde_json::to_vec_pretty(&v) {
        r.body = body;
    }
    r
}

/// The CLI flags the shared validation names, as the JSON fields a REST client sent.
const FLAG_FIELDS: &[(&str, &str)] = &[
    ("--script-folder", "script_folder"),
    ("--script-name", "script_name"),
    ("--publish-mode", "publish_mode"),
    ("--placement-pref", "placement_pref"),
    ("--max-replicas-per-node", "max_replicas_per_node"),
    ("--platform", "platform"),
    ("--replicas", "replicas"),
    ("--registry", "registry"),
    ("--timeout", "timeout"),
    ("--exclude", "exclude"),
    ("--image", "image_name"),
    ("--port", "port"),
    ("--name", "container_name"),
    ("--env", "env_vars"),
];

/// A deploy route's message in a REST client's words: `bad --image "x"` -> `bad image_name
/// "x"`, `pass the right --script-name` -> `give the right script_name`.
pub(crate) fn rest_words(detail: &str) -> String {
    let mut d = detail.replace("pass the right --", "give the right --");
    for (flag, field) in FLAG_FIELDS {
        let mut out = String::with_capacity(d.len());
        let mut rest = d.as_str();
        while let Some(i) = rest.find(flag) {
            let after = &rest[i + flag.len()..];
            // Whole flags only (`--env` is not the start of `--env-file`).
            let whole = !after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-');
            out.push_str(&rest[..i]);
            out.push_str(if whole { field } else { flag });
            rest = after;
        }
        out.push_str(rest);
        d = out;
    }
    d
}

fn bad(detail: impl Into<String>) -> Response {
    Response::error(400, detail)
}

/// 400 about the request body's field `field`.
fn bad_at(field: &str, detail: impl Into<String>) -> Response {
    Response::error_at(400, detail, field)
}

/// Turns a deploy request body into the CLI's flags, checking every field's type first.
pub(crate) fn deploy_args(plugin: &str, body: &Value) -> Result<DeployArgs, Response> {
    let Some(obj) = body.as_object() else {
        return Err(bad("the body must be a JSON object, e.g. {\"script_name\": \"s\", \"script_folder\": \"/path\"}"));
    };
    for (k, _) in obj {
        if !DEPLOY_FIELDS.iter().any(|(f, _)| f == k) {
            let known: Vec<&str> = DEPLOY_FIELDS.iter().map(|(f, _)| *f).collect();
            return Err(bad(format!(
                "unknown field {k:?}; the fields are {}",
                known.join(", ")
            )));
        }
    }
    let wrong = |k: &str| {
        let want = DEPLOY_FIELDS
            .iter()
            .find(|(f, _)| *f == k)
            .map_or("", |(_, t)| *t);
        bad_at(k, format!("field {k:?} must be {want}"))
    };
    let string = |k: &str| -> Result<Option<String>, Response> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(wrong(k)),
        }
    };
    let int = |k: &str, lo: u64, hi: u64| -> Result<Option<u64>, Response> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
                _ => Err(wrong(k)),
            },
        }
    };
    let required = |k: &str, what: &str| -> Result<String, Response> {
        match string(k)? {
            None => Err(bad_at(k, format!("field {k:?} is required ({what})"))),
            Some(s) if s.trim().is_empty() => {
                Err(bad_at(k, format!("field {k:?} is empty: give {what}")))
            }
            Some(s) => Ok(s),
        }
    };
    let script_name = required("script_name", "the main script's name without extension")?;
    let script_folder = required("script_folder", "the folder holding the script")?;
    let image = match (string("image_name")?, string("image_tag")?) {
        (None, None) => None,
        (Some(n), None) => Some(n),
        (Some(n), Some(t)) if t.is_empty() => Some(n),
        (Some(n), Some(t)) => {
            let last = n.rsplit('/').next().unwrap_or("");
            if last.contains(':') || n.contains('@') {
                return Err(bad_at("image_tag", format!(
                    "image_name {n:?} already has a tag or digest; leave out image_tag or the tag in image_name"
                )));
            }
            Some(format!("{n}:{t}"))
        }
        (None, Some(_)) => {
            return Err(bad_at(
                "image_tag",
                "field \"image_tag\" needs \"image_name\" (e.g. ghcr.io/fractalic-ai/fractalic)",
            ))
        }
    };
    let mut env = Vec::new();
    match obj.get("env_vars") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                // A key with '=' would set another variable ("K=x": "v" is K=x=v).
                if !crate::config::valid_env_key(k) {
                    let shown: String = k.chars().take(64).collect();
                    return Err(bad_at("env_vars", format!(
                        "env_vars key {shown:?} is not a variable name: use letters, digits and '_', not starting with a digit"
                    )));
                }
                match v {
                    // The value is a secret: the message names the key only.
                    Value::String(s) if s.contains(['\n', '\r', '\0']) => {
                        return Err(bad_at(
                            "env_vars",
                            format!(
                                "env_vars.{k} has a newline or NUL byte: put the value on one line"
                            ),
                        ))
                    }
                    Value::String(s) => env.push(crate::cli::EnvVar {
                        key: k.clone(),
                        value: s.clone(),
                        origin: format!("env_vars.{k}"),
                    }),
                    _ => return Err(bad_at("env_vars", format!("env_vars.{k} must be a string"))),
                }
            }
        }
        Some(_) => return Err(wrong("env_vars")),
    }
    let mut exclude = Vec::new();
    match obj.get("exclude") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for (i, v) in a.iter().enumerate() {
                match v {
                    Value::String(s) => exclude.push(s.clone()),
                    _ => return Err(bad_at("exclude", format!("exclude[{i}] must be a string"))),
                }
            }
        }
        Some(_) => return Err(wrong("exclude")),
    }
    let proxy = match obj.get("proxy") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(wrong("proxy")),
    };
    let domain = match (string("domain")?, string("custom_domain")?) {
        (Some(a), Some(b)) if a != b => {
            return Err(bad_at(
                "custom_domain",
                format!(
                    "field \"custom_domain\" {b:?} differs from \"domain\" {a:?}: send one of them"
                ),
            ))
        }
        (Some(d), _) | (None, Some(d)) => {
            if !crate::proxy::valid_domain(&d) {
                let k = if obj.get("domain").is_some_and(|v| !v.is_null()) {
                    "domain"
                } else {
                    "custom_domain"
                };
                let shown: String = d.chars().take(64).collect();
                return Err(bad_at(k, format!(
                    "field \"{k}\" {shown:?} is not a host name: use letters, digits, '-' and '.', such as app.example.com"
                )));
            }
            Some(d)
        }
        (None, None) => None,
    };
    let tls = match string("tls")?.as_deref() {
        None => None,
        Some(t @ ("none" | "internal" | "acme")) => Some(t.to_string()),
        Some("files") => {
            return Err(bad_at(
                "tls",
                "field \"tls\" \"files\" needs a certificate and key file, which a request cannot send: use the CLI's --tls-cert/--tls-key, or \"internal\" or \"acme\"",
            ))
        }
        Some(_) => return Err(wrong("tls")),
    };
    if proxy == Some(false) && (domain.is_some() || tls.as_deref().is_some_and(|t| t != "none")) {
        return Err(bad_at(
            "proxy",
            "field \"proxy\" is false, but \"domain\"/\"tls\" are served only by the front proxy: leave them out or send \"proxy\": true",
        ));
    }
    let pull = match string("pull")?.as_deref() {
        None | Some("always") => PullPolicy::Always,
        Some("missing") => PullPolicy::Missing,
        Some("never") => PullPolicy::Never,
        Some(_) => return Err(wrong("pull")),
    };
    Ok(DeployArgs {
        plugin: plugin.to_string(),
        script_name,
        script_folder: PathBuf::from(script_folder),
        name: string("container_name")?,
        image,
        platform: string("platform")?,
        port: int("port", 1, 65535)?.and_then(|p| u16::try_from(p).ok()),
        env,
        exclude,
        pull,
        timeout: std::time::Duration::from_secs(
            int("timeout", 1, 3600)?.unwrap_or(crate::cli::DEFAULT_TIMEOUT),
        ),
        replicas: int("replicas", 1, 100)?
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(crate::cli::DEFAULT_REPLICAS),
        registry: string("registry")?.unwrap_or_else(|| DeployArgs::default().registry),
        publish_mode: match string("publish_mode")?.as_deref() {
            None => DeployArgs::default().publish_mode,
            Some(m @ ("ingress" | "host")) => m.to_string(),
            Some(_) => return Err(wrong("publish_mode")),
        },
        dry_run: match obj.get("dry_run") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(wrong("dry_run")),
        },
        proxy,
        domain,
        tls,
        placement_pref: match string("placement_pref")? {
            Some(p) if crate::config::check_placement_pref(&p).is_err() => {
                return Err(wrong("placement_pref"))
            }
            p => p,
        },
        max_replicas_per_node: int("max_replicas_per_node", 0, 100)?
            .and_then(|n| u32::try_from(n).ok()),
        quiet: true,
        ..DeployArgs::default()
    })
}

/// Merges `args` (from the request `body`) over the script folder's deployment `file` as the
/// CLI merges its flags: a field the request sent wins, the file fills the rest, then the
/// defaults. An `env_file` the file names must lie inside the server's root.
fn with_deploy_file(
    body: &Value,
    args: &DeployArgs,
    file: &Path,
    root: Option<&Path>,
) -> Result<DeployArgs, Response> {
    let given = |k: &str| body.get(k).is_some_and(|v| !v.is_null());
    let pick = |k: &str, v: &Option<String>| if given(k) { v.clone() } else { None };
    let over = crate::deploy_file::Over {
        plugin: Some(args.plugin.clone()),
        config: Some(file.to_path_buf()),
        script_name: Some(args.script_name.clone()),
        script_folder: Some(args.script_folder.clone()),
        name: pick("container_name", &args.name),
        image: pick("image_name", &args.image),
        platform: pick("platform", &args.platform),
        port: args.port.filter(|_| given("port")),
        env: args.env.clone(),
        exclude: if given("exclude") {
            args.exclude.clone()
        } else {
            Vec::new()
        },
        pull: given("pull").then_some(args.pull),
        timeout: given("timeout").then_some(args.timeout),
        replicas: given("replicas").then_some(args.replicas),
        registry: given("registry").then(|| args.registry.clone()),
        publish_mode: given("publish_mode").then(|| args.publish_mode.clone()),
        proxy: args.proxy,
        domain: args.domain.clone(),
        tls: args.tls.clone(),
        placement_pref: pick("placement_pref", &args.placement_pref),
        max_replicas_per_node: args
            .max_replicas_per_node
            .filter(|_| given("max_replicas_per_node")),
        quiet: true,
        ..Default::default()
    };
    let merged = crate::deploy_file::merge_over(&over).map_err(|e| error_response(&e))?;
    let mut out = merged.args;
    out.quiet = true;
    if let (Some(f), Some(root)) = (&out.env_file, root) {
        let inside = f.canonicalize().is_ok_and(|c| c.starts_with(root));
        if !inside {
            return Err(Response::error(
                403,
                format!(
                    "{}: env_file {} is outside the folders this server may read ({})",
                    file.display(),
                    f.display(),
                    root.display()
                ),
            ));
        }
    }
    Ok(out)
}

/// `path` with `.` and `..` folded away, without touching the file system.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Resolves a request's script_folder: relative to the first root, symlinks followed; it must
/// end up inside a root (403 otherwise).
pub(crate) fn resolve_folder(server: &Server, given: &Path) -> Result<PathBuf, Response> {
    let joined = if given.is_absolute() {
        given.to_path_buf()
    } else {
        server.roots[0].join(given)
    };
    let inside = |p: &Path| server.roots.iter().any(|r| p.starts_with(r));
    let outside = |_resolved: &Path| {
        Response::error_at(
            403,
            format!(
                "script_folder {} is outside the folders this server may deploy from ({}); start it with --root for that folder",
                given.display(),
                server
                    .roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "script_folder",
        )
    };
    match joined.canonicalize() {
        Ok(c) if inside(&c) => Ok(c),
        Ok(c) => Err(outside(&c)),
        Err(e) => {
            let l = lexical(&joined);
            if inside(&l) {
                Err(bad_at(
                    "script_folder",
                    format!("script_folder {} cannot be used: {e}", given.display()),
                ))
            } else {
                Err(outside(&l))
            }
        }
    }
}

fn deploy(
    server: &Arc<Server>,
    req: &Request,
    plugin_name: &str,
    streaming: bool,
    stream: &mut TcpStream,
) -> Option<Response> {
    if super::shutting_down() {
        return Some(Response::error(
            503,
            "the server is shutting down and starts no new deploys",
        ));
    }
    let dirs = plugin::search_dirs(server.plugins_dir.as_deref());
    if let Err(e) = plugin::find(plugin_name, &dirs) {
        return Some(Response::error(404, e.to_string()));
    }
    let ct = req.header("content-type").unwrap_or("");
    if !ct
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    {
        return Some(Response::error(
            415,
            format!("send the body as Content-Type: application/json (got {ct:?})"),
        ));
    }
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => {
            return Some(bad(format!(
                "the body is not valid JSON (line {}, column {}): send one JSON object",
                e.line(),
                e.column()
            )))
        }
    };
    let mut args = match deploy_args(plugin_name, &body) {
        Ok(a) => a,
        Err(r) => return Some(r),
    };
    args.script_folder = match resolve_folder(server, &args.script_folder) {
        Ok(f) => f,
        Err(r) => return Some(r),
    };
    // The settings.toml / mcp_servers.json search never leaves the root (the server's own
    // working directory may hold the operator's keys).
    let confine = server
        .roots
        .iter()
        .filter(|r| args.script_folder.starts_with(r))
        .max_by_key(|r| r.as_os_str().len())
        .cloned();
    // The script folder's deployment file, as the CLI reads it: the request's fields win.
    let file = args.script_folder.join(crate::deploy_file::FILE_NAME);
    if file.is_file() {
        args = match with_deploy_file(&body, &args, &file, confine.as_deref()) {
            Ok(a) => a,
            Err(r) => return Some(r),
        };
    }
    args.confine = confine;
    if body["dry_run"] == true && streaming {
        return Some(bad_at(
            "dry_run",
            "field \"dry_run\" is answered by POST /api/deploy/{plugin} (one JSON plan, no event stream)",
        ));
    }
    if body["dry_run"] == true {
        // The plan, answered at once (no run, no events): computed by the deploy's own code
        // on a docker handle that only reads.
        args.dry_run = true;
        let plan = crate::deploy::prepare(
            server.docker_flag.as_deref(),
            server.plugins_dir.as_deref(),
            &args,
            Progress::silent(),
        )
        .and_then(crate::deploy::plan);
        return Some(match plan {
            Ok(p) => Response::json(200, &p),
            Err(e) => error_response(&e),
        });
    }

    let id = progress::new_run_id();
    let run = Arc::new(Run::new(&id));
    let sink = Arc::clone(&run);
    let progress = Progress::callback(move |e| sink.push(e.clone())).with_run_id(&id);
    let prepared = match crate::deploy::prepare(
        server.docker_flag.as_deref(),
        server.plugins_dir.as_deref(),
        &args,
        progress.clone(),
    ) {
        Ok(p) => p,
        Err(e) => return Some(error_response(&e)),
    };
    let name = prepared.name().to_string();
    match server.runs.begin(&run, &name) {
        Ok(()) => {}
        Err(Refused::NameBusy(other)) => {
            return Some(Response::error(
                409,
                format!("a deploy of {name} is already in flight (run {other}); wait for it or re-attach at /api/deployments/{other}/events"),
            ))
        }
        Err(Refused::Closed) => {
            return Some(Response::error(
                503,
                "the server is shutting down and starts no new deploys",
            ))
        }
        Err(Refused::Full(n)) => {
            return Some(Response::error(
                429,
                format!("{n} deploys are already running (serve --max-deploys {n}); try again when one finishes"),
            ))
        }
    }
    // The deploy runs on its own thread: a client that goes away never stops or harms it.
    let srv = Arc::clone(server);
    let worker_run = Arc::clone(&run);
    let spawned = std::thread::Builder::new()
        .name(format!("deploy-{id}"))
        .spawn(move || {
            match crate::deploy::run(prepared) {
                Ok(report) => {
                    let v = crate::deploy::render_json(&report);
                    progress.complete("Fractalic AI Server deployed successfully", v);
                }
                Err(e) => {
                    let run_id = progress.run_id();
                    let v = crate::outcome::failure(&e, Some(&name), Some(&run_id));
                    progress.fail(e.to_string(), v);
                }
            }
            srv.runs.end(&worker_run);
        });
    if let Err(e) = spawned {
        server.runs.end(&run);
        return Some(Response::error(
            500,
            format!("cannot start the deploy: {e}"),
        ));
    }
    if streaming {
        sse(server, req, &run, 0, stream);
        None
    } else {
        run.wait_done(Duration::from_secs(24 * 3600));
        let result = run
            .last()
            .and_then(|e| e.result.or(e.failure))
            .unwrap_or_else(
                || json!({"success": false, "error": "the deploy ended without a result"}),
            );
        Some(Response::json(200, &result))
    }
}

fn events(server: &Server, req: &Request, id: &str, stream: &mut TcpStream) -> Option<Response> {
    let Some(run) = server.runs.get(id) else {
        return Some(Response::error(
            404,
            format!("no deploy run {id:?} on this server (runs are kept until {} newer ones finished, and not across restarts)", super::runs::KEEP_FINISHED),
        ));
    };
    let after = match req.header("last-event-id") {
        None => 0,
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                return Some(bad(format!(
                    "bad Last-Event-ID {v:?}: send the id: of the last event received"
                )))
            }
        },
    };
    sse(server, req, &run, after, stream);
    None
}

/// Streams a run's events after `after` as SSE until its final event; keep-alive comments
/// while nothing happens. A write error (the client left) just ends the stream.
fn sse(server: &Server, req: &Request, run: &Run, after: u64, stream: &mut TcpStream) {
    if http::start_sse(stream, &cors_headers(server, req)).is_err() {
        return;
    }
    let mut last = after;
    loop {
        let (evs, done) = run.events_after(last, http::KEEP_ALIVE);
        if evs.is_empty() {
            if done {
                return;
            }
            if http::write_keep_alive(stream).is_err() {
                return;
            }
            continue;
        }
        for e in evs {
            last = e.seq;
            let data = serde_json::to_string(&e).unwrap_or_default();
            if http::write_event(stream, e.seq, &data).is_err() {
                return;
            }
            if e.is_final() {
                return;
            }
        }
    }
}

/// A JSON object's keys (for tests of the document).
#[cfg(test)]
pub(crate) fn keys(v: &Value) -> Vec<String> {
    v.as_object()
        .map(|m: &serde_json::Map<String, Value>| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        assert_eq!(host_name("localhost:8090"), "localhost");
        assert_eq!(host_name("[::1]:8090"), "::1");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_name("evil.example:80"), "evil.example");
    }

    #[test]
    fn routes_match_segments() {
        assert_eq!(
            matches("/api/deploy/{plugin}", "/api/deploy/docker-registry"),
            Some(vec!["docker-registry".to_string()])
        );
        assert_eq!(matches("/api/deploy/{plugin}", "/api/deploy/"), None);
        assert_eq!(matches("/api/deploy/{plugin}", "/api/deploy/a/b"), None);
        assert_eq!(matches("/health", "/health"), Some(vec![]));
    }

    #[test]
    fn proxy_fields_reach_the_deploy_flags_and_bad_ones_are_400() {
        let a = deploy_args(
            "docker-registry",
            &json!({"script_name": "s", "script_folder": "/x", "proxy": true, "custom_domain": "app.example.com", "tls": "internal", "replicas": 3}),
        )
        .unwrap();
        assert_eq!(
            (a.proxy, a.domain.as_deref(), a.tls.as_deref(), a.replicas),
            (Some(true), Some("app.example.com"), Some("internal"), 3)
        );
        let off = deploy_args(
            "p",
            &json!({"script_name": "s", "script_folder": "/x", "proxy": false}),
        )
        .unwrap();
        assert_eq!(off.proxy, Some(false));
        for (body, field, says) in [
            (json!({"proxy": "yes"}), "proxy", "must be boolean"),
            (
                json!({"domain": "evil.com/\"x"}),
                "domain",
                "is not a host name",
            ),
            (
                json!({"custom_domain": "*.x.com"}),
                "custom_domain",
                "is not a host name",
            ),
            (
                json!({"domain": "a.com", "custom_domain": "b.com"}),
                "custom_domain",
                "differs",
            ),
            (json!({"tls": "ssl"}), "tls", "must be \"none\""),
            (json!({"tls": "files"}), "tls", "--tls-cert"),
            (
                json!({"proxy": false, "tls": "internal"}),
                "proxy",
                "only by the front proxy",
            ),
        ] {
            let mut b = json!({"script_name": "s", "script_folder": "/x"});
            for (k, v) in body.as_object().unwrap() {
                b[k] = v.clone();
            }
            let r = with_field(deploy_args("p", &b).unwrap_err());
            assert_eq!(r.status, 400, "{b}");
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert!(v["detail"].as_str().unwrap().contains(says), "{b}: {v}");
            assert_eq!(v["field"], field, "{b}: {v}");
        }
    }

    #[test]
    fn swarm_fields_reach_the_deploy_flags() {
        let a = deploy_args(
            "docker-swarm",
            &json!({"script_name": "s", "script_folder": "/x", "replicas": 3, "registry": "127.0.0.1:5000", "publish_mode": "host"}),
        )
        .unwrap();
        assert_eq!((a.replicas, a.publish_mode.as_str()), (3, "host"));
        let d = deploy_args(
            "p",
            &json!({"script_name": "s", "script_folder": "/x", "publish_mode": "mesh"}),
        )
        .unwrap_err();
        assert_eq!(d.status, 400);
        let v: Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(v["field"], "publish_mode", "{v}");
        let plain = deploy_args("p", &json!({"script_name": "s", "script_folder": "/x"})).unwrap();
        assert_eq!(plain.replicas, DeployArgs::default().replicas);
        assert_eq!(
            (plain.placement_pref, plain.max_replicas_per_node),
            (None, None)
        );
        let p = deploy_args(
            "p",
            &json!({"script_name": "s", "script_folder": "/x", "placement_pref": "spread=node.labels.zone", "max_replicas_per_node": 1}),
        )
        .unwrap();
        assert_eq!(
            (p.placement_pref.as_deref(), p.max_replicas_per_node),
            (Some("spread=node.labels.zone"), Some(1))
        );
        for bad in [
            json!({"script_name": "s", "script_folder": "/x", "placement_pref": "spread=node.hostname"}),
            json!({"script_name": "s", "script_folder": "/x", "max_replicas_per_node": 101}),
            json!({"script_name": "s", "script_folder": "/x", "max_replicas_per_node": "1"}),
        ] {
            let r = deploy_args("p", &bad).unwrap_err();
            assert_eq!(r.status, 400, "{bad}");
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            let sent = ["placement_pref", "max_replicas_per_node"]
                .into_iter()
                .find(|k| bad.get(k).is_some())
                .unwrap();
            assert_eq!(v["field"], sent, "{bad}: {v}");
        }
    }

    #[test]
    fn deploy_bodies_are_checked_field_by_field() {
        let ok = json!({"image_name": "ghcr.io/fractalic-ai/fractalic", "image_tag": "latest", "script_name": "s", "script_folder": "/x", "env_vars": {"A": "secret-value"}, "port": 8100, "exclude": ["*.log"], "pull": "missing", "timeout": 30});
        let a = deploy_args("docker-registry", &ok).unwrap();
        assert_eq!(
            a.image.as_deref(),
            Some("ghcr.io/fractalic-ai/fractalic:latest")
        );
        assert_eq!(
            a.env,
            [crate::cli::EnvVar {
                key: "A".into(),
                value: "secret-value".into(),
                origin: "env_vars.A".into()
            }]
        );
        assert_eq!(a.port, Some(8100));
        assert_eq!(a.timeout, std::time::Duration::from_secs(30));
        assert_eq!(a.pull, PullPolicy::Missing);
        let detail = |v: Value| {
            let r = deploy_args("p", &v).unwrap_err();
            assert_eq!(r.status, 400);
            let d: Value = serde_json::from_slice(&r.body).unwrap();
            d["detail"].as_str().unwrap().to_string()
        };
        assert!(
            detail(json!({"script_name": "s", "script_folder": "/x", "nope": 1}))
                .contains("\"nope\"")
        );
        assert!(
            detail(json!({"script_name": 5, "script_folder": "/x"})).contains("\"script_name\"")
        );
        assert!(
            detail(json!({"script_name": "s", "script_folder": "/x", "port": "80"}))
                .contains("\"port\"")
        );
        assert!(
            detail(json!({"script_name": "s", "script_folder": "/x", "port": 70000}))
                .contains("\"port\"")
        );
        assert!(detail(json!({"script_folder": "/x"})).contains("script_name"));
        assert!(detail(json!([])).contains("JSON object"));
        let d = detail(json!({"script_name": "s", "script_folder": "/x", "env_vars": {"K": 5}}));
        assert!(d.contains("env_vars.K"), "{d}");
        let d = detail(
            json!({"script_name": "s", "script_folder": "/x", "image_name": "a/b:1", "image_tag": "2"}),
        );
        assert!(d.contains("already has a tag"), "{d}");
    }

    #[test]
    fn rest_messages_name_json_fields_not_flags() {
        assert_eq!(
            rest_words("bad --image \"::\": give an image reference"),
            "bad image_name \"::\": give an image reference"
        );
        assert_eq!(
            rest_words("no main script \"x\" in /s: add x.md (or .py, .sh, .txt), or pass the right --script-name"),
            "no main script \"x\" in /s: add x.md (or .py, .sh, .txt), or give the right script_name"
        );
        assert_eq!(
            rest_words("--port 80 --env-file x --name y"),
            "port 80 --env-file x container_name y"
        );
        let r = with_field(bad_at(
            "script_name",
            "bad --script-name \"a/b\": use letters",
        ));
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["detail"], "bad script_name \"a/b\": use letters");
        assert_eq!(v["field"], "script_name");
        let d = deploy_args("p", &json!({"script_name": "", "script_folder": "/x"})).unwrap_err();
        let v: Value = serde_json::from_slice(&d.body).unwrap();
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .contains("\"script_name\" is empty"),
            "{v}"
        );
        for (v, want) in [
            (None, Ok(false)),
            (Some("true"), Ok(true)),
            (Some("True"), Ok(true)),
            (Some("FALSE"), Ok(false)),
        ] {
            assert_eq!(parse_flag("all", v), want);
        }
        for bad_value in ["", "1", "0", "yes", "maybe"] {
            let e = parse_flag("force", Some(bad_value)).unwrap_err();
            assert!(e.contains("force=true or force=false"), "{e}");
        }
    }

    /// The field a deploy error names is set where the error is made: by the body's checks,
    /// and by the deploy flags' validation for each flag (never found in the message).
    #[test]
    fn errors_name_the_field_they_are_about() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.md"), "# s\n").unwrap();
        let folder = dir.path().to_string_lossy().into_owned();
        for (extra, want) in [
            (json!({"script_name": "a/b"}), "script_name"),
            (json!({"script_name": "nope"}), "script_name"),
            (json!({"container_name": "-x"}), "container_name"),
            (json!({"image_name": "::"}), "image_name"),
            (json!({"env_vars": {"A": "1", "1A": "x"}}), "env_vars"),
            (json!({"exclude": ["[abc"]}), "exclude"),
            (json!({"platform": "not a platform"}), "platform"),
            (json!({"registry": "no spaces allowed"}), "registry"),
            (
                json!({"script_folder": "/nonexistent/folder"}),
                "script_folder",
            ),
        ] {
            let mut b = json!({"script_name": "s", "script_folder": folder});
            for (k, v) in extra.as_object().unwrap() {
                b[k] = v.clone();
            }
            let r = match deploy_args("docker-registry", &b) {
                Err(r) => r,
                Ok(args) => {
                    let e = crate::config::deploy_config(&args).unwrap_err();
                    error_response(&e)
                }
            };
            let v: Value = serde_json::from_slice(&with_field(r).body).unwrap();
            assert_eq!(v["field"], want, "{b}: {v}");
        }
        let r = with_field(bad_at("port", "field \"port\" must be integer 1-65535"));
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["field"], "port");
        // Not about a field: none named, whatever the words.
        for r in [
            Response::error(409, "a deploy of x is already in flight (port 8001)"),
            bad("unknown field \"port\"; the fields are ..."),
            error_response(&Error::failed("--port 8001 would not start")),
        ] {
            let v: Value = serde_json::from_slice(&with_field(r).body).unwrap();
            assert!(v.get("field").is_none(), "{v}");
        }
    }

    #[test]
    fn openapi_describes_every_route() {
        let doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json parses");
        assert_eq!(doc["openapi"], "3.1.0");
        for (m, p) in ROUTES {
            let op = &doc["paths"][*p][m.to_ascii_lowercase()];
            assert!(op.is_object(), "openapi.json lacks {m} {p}");
            assert!(op["responses"].is_object(), "{m} {p} has no responses");
        }
        // Nothing documented that does not exist.
        for (p, item) in doc["paths"].as_object().unwrap() {
            for m in keys(item) {
                if m == "parameters" {
                    continue;
                }
                assert!(
                    ROUTES
                        .iter()
                        .any(|(rm, rp)| rp == p && rm.eq_ignore_ascii_case(&m)),
                    "{m} {p} documented but not routed"
                );
            }
        }
        let fields = keys(&doc["components"]["schemas"]["DeployRequest"]["properties"]);
        for (f, _) in DEPLOY_FIELDS {
            assert!(fields.contains(&f.to_string()), "DeployRequest lacks {f}");
        }
        assert_eq!(fields.len(), DEPLOY_FIELDS.len());
        let named: Vec<&str> = doc["components"]["schemas"]["Error"]["properties"]["field"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        for (f, _) in DEPLOY_FIELDS {
            assert!(named.contains(f), "Error.field lacks {f}");
        }
        let stages: Vec<String> = doc["components"]["schemas"]["Event"]["properties"]["stage"]
            ["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        let ours: Vec<String> = progress::Stage::ALL
            .iter()
            .map(|s| s.as_str().to_string())
            .collect();
        assert_eq!(stages, ours);
        // Every {name} has the name rule; required strings may not be empty; an SSE body is
        // described as a stream whose `data` is JSON, not as one Event document.
        for (p, item) in doc["paths"].as_object().unwrap() {
            for prm in item["parameters"].as_array().into_iter().flatten() {
                if prm["name"] == "name" {
                    assert!(
                        prm["schema"]["pattern"].is_string(),
                        "{p}: name has no pattern"
                    );
                }
            }
            for (m, op) in item.as_object().unwrap() {
                for (code, resp) in op["responses"].as_object().into_iter().flatten() {
                    let sse = &resp["content"]["text/event-stream"];
                    if sse.is_object() {
                        assert_eq!(sse["schema"]["type"], "object", "{m} {p} {code}");
                        let data = &sse["schema"]["properties"]["data"];
                        assert_eq!(data["contentMediaType"], "application/json");
                        assert!(data["contentSchema"].is_object(), "{m} {p} {code}");
                    }
                }
            }
        }
        let req = &doc["components"]["schemas"]["DeployRequest"]["properties"];
        assert_eq!(req["script_name"]["minLength"], 1);
        assert_eq!(req["script_folder"]["minLength"], 1);
    }
}
