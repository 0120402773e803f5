//! Host functions: logs. Registered with their documentation (see the
//! module above); the implementations they share live in `plugin::host*`.

use super::prelude::*;
use crate::plugin::host::*;
use crate::plugin::host_manage::*;

/// Registers the logs functions.
pub(super) fn register(api: &mut Api, host: &Arc<Host>) {
    let h = Arc::clone(host);
    api.add(
        Doc {
            sig: "container_logs(name, tail)",
            result: "text",
            throws: "Docker unavailable, `docker logs` failing",
            about: "The last `tail` lines of `docker logs` (stdout and stderr).",
        },
        |e, n| {
            e.register_fn(n, move |name: &str, tail: i64| -> RhaiResult<String> {
                let d = h.docker_or_raise()?;
                h.check(logs_tail(&d, name, tail))
            });
        },
    );

    let h = Arc::clone(host);
    api.add(Doc {
            sig: "stream_logs(container, tail, follow)",
            result: "()",
            throws: "a non-zero exit, Docker unavailable",
            about: "`docker logs [--tail N] [--follow] CONTAINER` straight to the user's terminal, stdout and stderr interleaved; `tail` < 0 = all lines; with `follow` no deadline.",
        }, |e, n| {
        e.register_fn(n, move |container: &str, tail: i64, follow: bool| -> RhaiResult<()> {
            let d = h.docker_or_raise()?;
            let tail_s = tail.to_string();
            let mut args = vec!["logs"];
            if tail >= 0 {
                args.extend(["--tail", tail_s.as_str()]);
            }
            if follow {
                args.push("--follow");
            }
            args.push(container);
            if h.capturing() {
                return capture_run(&h, &d, &args, follow);
            }
            let timeout = if follow { None } else { Some(LOGS_TIMEOUT) };
            let status = h.check(d.stream(&args, timeout))?;
            if status != Some(0) {
                return Err(h.raise(Error::Docker {
                    argv: d.argv(&args),
                    status,
                    stderr: "see the messages above".into(),
                }));
            }
            Ok(())
        });
    });
}
