//! Host functions: the engine and any docker subcommand. Registered with their documentation (see the
//! module above); the implementations they share live in `plugin::host*`.

use super::prelude::*;
use crate::plugin::host::*;
use crate::plugin::host_generic::*;

/// Registers the docker functions.
pub(super) fn register(api: &mut Api, host: &Arc<Host>) {
    let h = Arc::clone(host);
    api.add(Doc {
            sig: "engine_info()",
            result: "{remote, host, url_host, context, endpoint}",
            throws: "never",
            about: "Where the Docker engine is, from `--context`, `DOCKER_HOST`, `DOCKER_CONTEXT` or the CLI's current context (read without a docker call). `host` is `localhost` or the engine host's address, `url_host` the same as a URL needs it (`[fd00::7]`). Build deployment URLs with `url_host`, so probes reach a remote engine's published ports.",
        }, |e, n| {
        e.register_fn(n, move || -> Map {
        match h.docker() {
            Some(d) => engine_map(d),
            // No docker handle (a plugin checked without Docker): as the environment says.
            None => engine_map(&Docker::with_binary("docker".into())),
        }
    });
    });

    let h = Arc::clone(host);
    api.add(Doc {
            sig: "docker_ps(all, filters, label_keys)",
            result: "[{id, name, state, status, image, created_at, ports, labels: {key: value}}]",
            throws: "Docker unavailable, `docker ps` failing, a bad label key",
            about: "Containers, from one `docker ps` (`all`: stopped ones too; `filters`: `--filter` values). Each field and label is read JSON-escaped, so no label value can split a row or shift a column.",
        }, |e, n| {
        e.register_fn(n, move |all: bool, filters: Array, label_keys: Array| -> RhaiResult<Array> {
            let d = h.docker_or_raise()?;
            let keys: Vec<String> = label_keys.iter().map(|k| k.to_string()).collect();
            if let Some(bad) = keys.iter().find(|k| !valid_label_key(k)) {
                return Err(h.raise(Error::failed(format!(
                    "docker_ps: bad label key {bad:?}: use letters, digits, '.', '-', '_', '/'"
                ))));
            }
            let format = ps_format(&keys);
            let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
            let mut args: Vec<&str> = vec!["ps", "--no-trunc", "--format", &format];
            if all {
                args.push("--all");
            }
            for f in &filters {
                args.extend(["--filter", f.as_str()]);
            }
            let out = h.check(d.run(&args, None, QUICK))?;
            h.check(parse_ps(&out.stdout, &keys))
        });
    });

    let h = Arc::clone(host);
    api.add(Doc {
            sig: "docker_run(argv, opts)",
            result: "{ok, code, stdout, stderr, kind, undo_id}",
            throws: "docker not runnable, Docker unavailable, the timeout, an interrupt, a `deploy_env` name the CLI reads itself",
            about: "Runs `docker ARGV...` once. `opts` (all optional): `stdin` (string fed to docker), `timeout_ms` (100 ms - 1 h, default 30000), `undo` (argv that removes what the call creates: recorded in the undo journal before the call, forgotten when it exits non-zero), `undo_when` (`#{argv, stdout}`: the undo runs only while `docker ARGV` prints `stdout`, trimmed, so an undo recorded for a change that never reached the engine does nothing), `what` (how messages name that object), `deploy_env` (true: the deploy's environment is handed to the docker process, for `--env-add KEY`, so values stay off argv), `env_stdin` (true: the deploy's environment as `K=V` lines on docker's stdin, for `--env-file /dev/stdin`: values never on argv, in the plugin or in a file; not with `stdin`). `ok` = exit 0; `code` -1 = killed; `kind`: what a failure means, as `docker_kind(stderr)` says (`\"\"` on success); `undo_id` -1 without `undo`.",
        }, |e, n| {
        e.register_fn(n, move |argv: Array, opts: Map| -> RhaiResult<Map> {
            let d = h.docker_or_raise()?;
            h.check(docker_run(&h, &d, &strings(&argv), &opts))
        });
    });

    api.add(Doc {
            sig: "docker_kind(text)",
            result: "string",
            throws: "never",
            about: "What a docker error message means, read once by the host the way every Rust caller reads it: `daemon_down`, `port_allocated`, `name_in_use`, `already_exists`, `ambiguous`, `not_running`, `program_not_found`, `not_swarm_manager`, `no_suitable_node`, `pull_failed`, `no_such_object` or `other`. For messages docker prints elsewhere than a call's stderr (a task's error in `docker service ps`); a plugin branches on the kind, never on docker's words.",
        }, |e, n| {
        e.register_fn(n, |text: &str| -> String { crate::docker::refusal(text).name().to_string() });
    });

    let h = Arc::clone(host);
    api.add(Doc {
            sig: "docker_stream(argv, timeout_ms)",
            result: "()",
            throws: "a non-zero exit, docker not runnable, the timeout",
            about: "Runs `docker ARGV...` with its output straight to the user's terminal (collected under the REST API). `timeout_ms` 0 = no deadline (a `--follow` that runs until the user interrupts it).",
        }, |e, n| {
        e.register_fn(n, move |argv: Array, timeout_ms: i64| -> RhaiResult<()> {
            let d = h.docker_or_raise()?;
            h.check(docker_stream(&h, &d, &strings(&argv), timeout_ms))
        });
    });
}
