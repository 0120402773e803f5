//! Host functions: releases of a container deployment (updates in place or by a new
//! container, rollback, history). Registered with their documentation (see the module above);
//! the mechanics live in `crate::update`.

use super::prelude::*;
use crate::plugin::host::{Host, RhaiResult};
use crate::release;
use crate::update;

fn to_dynamic(v: &serde_json::Value) -> Dynamic {
    rhai::serde::to_dynamic(v).unwrap_or(Dynamic::UNIT)
}

/// A release history of plugin-built maps (docker-swarm's), as the model holds it.
type PluginHistory = release::History<serde_json::Value, serde_json::Value>;
type PluginRelease = release::Release<serde_json::Value, serde_json::Value>;

fn history_of(h: &Host, v: &Dynamic, what: &str) -> RhaiResult<PluginHistory> {
    rhai::serde::from_dynamic(v).map_err(|e| {
        h.raise(crate::error::Error::failed(format!(
            "{what}: not a release history ({e}); read it with history_parse first"
        )))
    })
}

fn release_of(h: &Host, v: &Dynamic, what: &str) -> RhaiResult<PluginRelease> {
    rhai::serde::from_dynamic(v).map_err(|e| {
        h.raise(crate::error::Error::failed(format!(
            "{what}: not a release ({e}); make it with history_release"
        )))
    })
}

fn dynamic_of<T: serde::Serialize>(v: &T) -> Dynamic {
    rhai::serde::to_dynamic(v).unwrap_or(Dynamic::UNIT)
}

/// The history model's functions for a plugin that keeps its own history (docker-swarm).
fn register_model(api: &mut Api, host: &Arc<Host>) {
    api.add(Doc {
        sig: "history_parse(text)",
        result: "{history, problem}",
        throws: "never",
        about: "Reads a release history kept as JSON text (docker-swarm: a service label). `problem` is `\"\"`, or what is wrong as far as the model goes (not JSON; ids and `seq` that do not agree; an unknown kind or outcome; a field of the wrong type; a release twice; `current` naming no release), and `history` then `()`. Each release's `state` is the plugin's to check.",
    }, |e, n| {
        e.register_fn(n, |text: &str| -> Map {
            let mut m = Map::new();
            let (history, problem) = match serde_json::from_str::<serde_json::Value>(text) {
                Err(e) => (Dynamic::UNIT, format!("not JSON ({e})")),
                Ok(v) => match release::problem(&v) {
                    Some(p) => (Dynamic::UNIT, p),
                    None => (to_dynamic(&v), String::new()),
                },
            };
            m.insert("history".into(), history);
            m.insert("problem".into(), problem.into());
            m
        });
    });

    let h = Arc::clone(host);
    api.add(Doc {
        sig: "history_release(history, kind, of, changes, state)",
        result: "{id, seq, time, kind, outcome, changes, state, of?}",
        throws: "`history` not a history",
        about: "A new release after the newest of `history`: `r<seq>`, made now, outcome `ok`; `of` (`\"\"` = none): the release a rollback goes back to. `changes` and `state` are the plugin's maps.",
    }, |e, n| {
        e.register_fn(n, move |hist: Dynamic, kind: &str, of: &str, changes: Dynamic, state: Dynamic| -> RhaiResult<Dynamic> {
            let hist = history_of(&h, &hist, "history_release")?;
            let json = |v: &Dynamic| rhai::serde::from_dynamic::<serde_json::Value>(v).unwrap_or_default();
            let of = Some(of.to_string()).filter(|o| !o.is_empty());
            let r = hist.new_release(kind, of, String::new(), json(&changes), json(&state));
            Ok(dynamic_of(&r))
        });
    });

    let h = Arc::clone(host);
    api.add(Doc {
        sig: "history_with(history, release, live)",
        result: "{current, releases}",
        throws: "`history` not a history, `release` not a release",
        about: "`history` with `release` appended (`live`: it is the current release now), trimmed to the newest 10; the live release is never trimmed, however old.",
    }, |e, n| {
        e.register_fn(n, move |hist: Dynamic, r: Dynamic, live: bool| -> RhaiResult<Dynamic> {
            let mut hist = history_of(&h, &hist, "history_with")?;
            hist.push(release_of(&h, &r, "history_with")?, live);
            hist.trim(release::HISTORY_MAX);
            Ok(dynamic_of(&hist))
        });
    });

    let h = Arc::clone(host);
    api.add(
        Doc {
            sig: "history_find(history, want)",
            result: "release or ()",
            throws: "`history` not a history",
            about: "The release `want` names: an id (`\"r3\"`) or a number (`\"3\"`).",
        },
        |e, n| {
            e.register_fn(n, move |hist: Dynamic, want: &str| -> RhaiResult<Dynamic> {
                let hist = history_of(&h, &hist, "history_find")?;
                Ok(hist.find(want).map_or(Dynamic::UNIT, dynamic_of))
            });
        },
    );

    let h = Arc::clone(host);
    api.add(Doc {
        sig: "history_previous(history, keys)",
        result: "release or ()",
        throws: "`history` not a history",
        about: "The release a plain rollback goes back to: the newest good (not rolled back) release before the live one whose `state` differs from the live one's in one of the fields `keys` (what decides that two releases run the same thing).",
    }, |e, n| {
        e.register_fn(n, move |hist: Dynamic, keys: Array| -> RhaiResult<Dynamic> {
            let hist = history_of(&h, &hist, "history_previous")?;
            let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            let prev = hist.previous_by(|r, cur| keys.iter().any(|k| r.state.get(k) != cur.state.get(k)));
            Ok(prev.map_or(Dynamic::UNIT, dynamic_of))
        });
    });

    let h = Arc::clone(host);
    api.add(Doc {
        sig: "history_good(history, n)",
        result: "[release, ...]",
        throws: "`history` not a history",
        about: "The newest `n` good (not rolled back) releases, newest first: the ones whose objects are kept for a rollback.",
    }, |e, n| {
        e.register_fn(n, move |hist: Dynamic, n: i64| -> RhaiResult<Array> {
            let hist = history_of(&h, &hist, "history_good")?;
            let n = usize::try_from(n).unwrap_or(0);
            Ok(hist.good_newest_first().take(n).map(dynamic_of).collect())
        });
    });
}

fn get_str(m: &Map, k: &str) -> String {
    m.get(k).map(|v| v.to_string()).unwrap_or_default()
}

/// Registers the release functions.
pub(super) fn register(api: &mut Api, host: &Arc<Host>) {
    register_model(api, host);
    let h = Arc::clone(host);
    api.add(Doc {
        sig: "record_release(container, info)",
        result: "\"r1\"",
        throws: "a first deploy's payload not staged by `copy_payload`; the write itself fails the deploy at its end",
        about: "After a first deploy's start: writes the release history (release r1: the manifest `copy_payload` staged, config and environment hashes, image, port) into the container as `/payload/.releases/history.json` (0600), on its own thread beside the readiness wait. `info`: `{image_id, image_digest, port}`.",
    }, |e, n| {
        e.register_fn(n, move |container: &str, info: Map| -> RhaiResult<String> {
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
        });
    });

    api.add(Doc {
        sig: "release_check(script)",
        result: "[\"sh\", \"-c\", \"...\", \"sh\", script]",
        throws: "nothing",
        about: "The argv of the readiness `docker exec` of a container deployment (give it to `wait_ready`): it proves the live release of `script` complete (every file matches the manifest its copy ended with; a release from before manifests must have its history) and then asks the MCP manager's `/status`. So a container whose copy was cut short is never reported healthy.",
    }, |e, n| {
        e.register_fn(n, |script: &str| -> Array {
            update::live_check_argv(script)
                .into_iter()
                .map(Dynamic::from)
                .collect()
        });
    });

    let h = Arc::clone(host);
    api.add(Doc {
        sig: "update_plan(config, image)",
        result: "{kind, release, from, port, changes, lines, reasons, payload_hash}",
        throws: "Docker unavailable, the live release unreadable, the payload unreadable",
        about: "What an update of the existing deployment `config.name` to this deploy changes (`image`: `pull_image`'s map): `kind` `none`, `in-place` (payload, settings.toml) or `container` (image, environment, port, bind, mcp_servers.json, .env; `reasons` says why). `changes`: files added/changed/removed, config files, environment keys, image, port, bind: names and keys only.",
    }, |e, n| {
        e.register_fn(n, move |config: Map, image: Map| -> RhaiResult<Dynamic> {
            let d = h.docker_or_raise()?;
            let port_given = config
                .get("port_given")
                .and_then(|v| v.as_bool().ok())
                .unwrap_or(false);
            // Working out the plan only reads (a dry run lets its `docker exec`s through).
            let plan = h.check(crate::docker::reading(|| {
                update::plan(
                    &h,
                    &d,
                    port_given,
                    &get_str(&image, "id"),
                    &get_str(&image, "digest"),
                )
            }))?;
            let v = plan.to_json();
            h.dry_fact("update", v.clone());
            update::set_plan(&h, plan);
            Ok(to_dynamic(&v))
        });
    });

    let h = Arc::clone(host);
    api.add(Doc {
        sig: "update_in_place()",
        result: "{release, kind, restarted, elapsed_ms}",
        throws: "any step failing (after switching back: the old release is live again), an interrupt",
        about: "Applies the plan with no restart, in one `docker exec -i`: the new release unpacked beside the live one, switched in with one atomic rename, checked (the script is there, the MCP manager and `/health` answer). Any failure or Ctrl-C switches back. Keeps the last 5 releases.",
    }, |e, n| {
        e.register_fn(n, move || -> RhaiResult<Dynamic> {
            let d = h.docker_or_raise()?;
            let plan = h.check(update::the_plan(&h))?;
            h.check(update::apply_in_place(&h, &d, &plan)).map(|v| to_dynamic(&v))
        });
    });

    let h = Arc::clone(host);
    api.add(Doc {
        sig: "update_container()",
        result: "{release, kind, restarted, kept, downtime_ms, elapsed_ms}",
        throws: "any step failing (after putting the old container back on its port, running), an interrupt",
        about: "Applies the plan with a new container: proven on a spare port first, then the old one renamed aside (kept, stopped, for rollback), a new one created on the deployment's port, the old one stopped and the new one started and proven. Any failure or Ctrl-C puts the old one back.",
    }, |e, n| {
        e.register_fn(n, move || -> RhaiResult<Dynamic> {
            let d = h.docker_or_raise()?;
            let plan = h.check(update::the_plan(&h))?;
            h.check(update::apply_container(&h, &d, &plan)).map(|v| to_dynamic(&v))
        });
    });

    let h = Arc::clone(host);
    api.add(Doc {
        sig: "release_rollback(name, to, timeout_secs)",
        result: "{name, release, of, kind, restarted}",
        throws: "no such release kept (exit 2), a failing step (after restoring the current one), an interrupt",
        about: "Back to release `to` (`\"\"` = the previous one): in place when its folder is still in the container and nothing needing a restart differs, else the kept container that ran it is swapped in.",
    }, |e, n| {
        e.register_fn(n, move |name: &str, to: &str, secs: i64| -> RhaiResult<Dynamic> {
            let d = h.docker_or_raise()?;
            let to = Some(to).filter(|t| !t.is_empty());
            h.check(update::rollback(&h, &d, name, to, secs)).map(|v| to_dynamic(&v))
        });
    });

    let h = Arc::clone(host);
    api.add(Doc {
        sig: "release_history(name)",
        result: "{current, releases: [...]}",
        throws: "Docker unavailable, no history in the container (exit 2)",
        about: "The release history kept in the container; config files and environment keys are listed without the hashes of their contents.",
    }, |e, n| {
        e.register_fn(n, move |name: &str| -> RhaiResult<Dynamic> {
            let d = h.docker_or_raise()?;
            let hist = h.check(update::history(&d, name))?;
            Ok(to_dynamic(&update::history_public(&hist)))
        });
    });
}
