//! Host functions for updates, rollback and history of container deployments (README,
//! "Plugin API"): the mechanics live in src/update.rs; a plugin's `update`, `rollback` and
//! `history` entry points decide when to call them.

use crate::plugin::host::Host;
use crate::update;
use rhai::{Dynamic, Engine, EvalAltResult, Map};
use std::sync::Arc;

type RhaiResult<T> = std::result::Result<T, Box<EvalAltResult>>;

fn to_dynamic(v: &serde_json::Value) -> Dynamic {
    rhai::serde::to_dynamic(v).unwrap_or(Dynamic::UNIT)
}

fn get_str(m: &Map, k: &str) -> String {
    m.get(k).map(|v| v.to_string()).unwrap_or_default()
}

/// Registers the update host functions on `engine`.
pub fn register(engine: &mut Engine, host: &Arc<Host>) {
    // record_release(container, info): after a first deploy's start, writes the release
    // history (release r1: the payload manifest copy_payload staged, config and environment
    // hashes, image, port) into the container, on its own thread beside the readiness wait;
    // the deploy fails if that write failed. info: {image_id, image_digest, port}. Returns
    // "r1".
    let h = Arc::clone(host);
    engine.register_fn(
        "record_release",
        move |container: &str, info: Map| -> RhaiResult<String> {
            let d = h.docker_or_raise()?;
            let port = info
                .get("port")
                .and_then(|p| p.as_int().ok())
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(0);
            h.check(update::record_first(
                &h,
                &d,
                container,
                &get_str(&info, "image_id"),
                &get_str(&info, "image_digest"),
                port,
            ))
        },
    );

    // update_plan(config, image): what an update of the existing deployment config.name to
    // this deploy would change. image: pull_image's map. Returns {kind: none | in-place |
    // container, release, from, changes: {files_added, files_changed, files_removed, config,
    // env_added, env_changed, env_removed, image, port, bind, ...}, lines: [text], reasons:
    // [why a new container is needed]}. Keys only, never values.
    let h = Arc::clone(host);
    engine.register_fn(
        "update_plan",
        move |config: Map, image: Map| -> RhaiResult<Dynamic> {
            let d = h.docker_or_raise()?;
            let port_given = config
                .get("port_given")
                .and_then(|v| v.as_bool().ok())
                .unwrap_or(false);
            let plan = h.check(update::plan(
                &h,
                &d,
                port_given,
                &get_str(&image, "id"),
                &get_str(&image, "digest"),
            ))?;
            let v = plan.to_json();
            update::set_plan(&h, plan);
            Ok(to_dynamic(&v))
        },
    );

    // update_in_place(): applies the plan with no restart: the new release is copied beside
    // the live one, switched in with one atomic rename, verified (the script is there, the MCP
    // manager and /health answer); any failure switches back. Returns {release, kind,
    // restarted, elapsed_ms}.
    let h = Arc::clone(host);
    engine.register_fn("update_in_place", move || -> RhaiResult<Dynamic> {
        let d = h.docker_or_raise()?;
        let plan = h.check(update::the_plan(&h))?;
        h.check(update::apply_in_place(&h, &d, &plan))
            .map(|v| to_dynamic(&v))
    });

    // update_container(): applies the plan with a new container: proven on a spare port,
    // then the old one renamed aside and stopped (kept for rollback), a new one on the
    // deployment's port, proven again; any failure or Ctrl-C puts the old one back. Returns
    // {release, kind, restarted, kept, downtime_ms, elapsed_ms}.
    let h = Arc::clone(host);
    engine.register_fn("update_container", move || -> RhaiResult<Dynamic> {
        let d = h.docker_or_raise()?;
        let plan = h.check(update::the_plan(&h))?;
        h.check(update::apply_container(&h, &d, &plan))
            .map(|v| to_dynamic(&v))
    });

    // release_rollback(name, to, timeout_secs): back to release `to` ("" = the previous one):
    // in place when possible, else the kept container that ran it.
    let h = Arc::clone(host);
    engine.register_fn(
        "release_rollback",
        move |name: &str, to: &str, secs: i64| -> RhaiResult<Dynamic> {
            let d = h.docker_or_raise()?;
            let to = Some(to).filter(|t| !t.is_empty());
            h.check(update::rollback(&h, &d, name, to, secs))
                .map(|v| to_dynamic(&v))
        },
    );

    // release_history(name): {current, releases: [{id, time, kind, of, outcome, error,
    // changes, state: {payload_hash, image_digest, port, ...}}]} from the container. The
    // hashes of secrets (environment values, config files) are left out: keys only.
    let h = Arc::clone(host);
    engine.register_fn(
        "release_history",
        move |name: &str| -> RhaiResult<Dynamic> {
            let d = h.docker_or_raise()?;
            let hist = h.check(update::history(&d, name))?;
            Ok(to_dynamic(&update::history_public(&hist)))
        },
    );
}
