//! Host functions: readiness. Registered with their documentation (see the
//! module above); the implementations they share live in `plugin::host*`.

use super::prelude::*;
use crate::plugin::host::*;

/// Registers the readiness functions.
pub(super) fn register(api: &mut Api, host: &Arc<Host>) {
    let h = Arc::clone(host);
    api.add(Doc {
            sig: "wait_http(container, url, timeout_secs)",
            result: "{elapsed_ms, attempts}",
            throws: "the deadline; the container exiting or restarting (with its exit code and last log lines); a supervisord program that keeps crashing (named, quoting its error log); Docker unavailable",
            about: "Polls `GET url` about every 50 ms until it answers 2xx, then proves the container stably up: not restarted, still running, and up for a second when this run started it. Fails fast, within about a second, when the container dies.",
        }, |e, n| {
        e.register_fn(n, move |container: &str, url: &str, secs: i64| -> RhaiResult<Map> {
            let d = h.docker_or_raise()?;
            h.check(wait_ready(&h, &d, container, url, None, secs))
        });
    });

    let h = Arc::clone(host);
    api.add(Doc {
            sig: "wait_ready(container, url, exec_argv, timeout_secs)",
            result: "{elapsed_ms, attempts, exec: {ok, stdout, attempts, error, elapsed_ms}}",
            throws: "as `wait_http`, also while the exec is still retried",
            about: "`wait_http` and `exec_until_ok(container, exec_argv, ...)` at the same time (e.g. the MCP manager's status inside the container), so readiness costs the slower of the two, not their sum. Leaves an exec that never succeeded (`exec.ok` false) to the plugin.",
        }, |e, n| {
        e.register_fn(n, move |container: &str, url: &str, argv: Array, secs: i64| -> RhaiResult<Map> {
            let d = h.docker_or_raise()?;
            let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
            h.check(wait_ready(&h, &d, container, url, Some(&argv), secs))
        });
    });
}
