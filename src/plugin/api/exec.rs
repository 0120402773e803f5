//! Host functions: commands inside containers. Registered with their documentation (see the
//! module above); the implementations they share live in `plugin::host*`.

use super::prelude::*;
use crate::plugin::host::*;
use crate::plugin::host_manage::*;

/// Registers the exec functions.
pub(super) fn register(api: &mut Api, host: &Arc<Host>) {
    let h = Arc::clone(host);
    api.add(Doc {
            sig: "exec_until_ok(container, argv, timeout_secs)",
            result: "{ok, stdout, attempts, error, elapsed_ms}",
            throws: "Docker unavailable, an interrupt",
            about: "Runs `docker exec CONTAINER ARGV...` about every 200 ms until it exits 0 or the deadline passes; a command that keeps failing is reported, not thrown.",
        }, |e, n| {
        e.register_fn(n, move |container: &str, argv: Array, secs: i64| -> RhaiResult<Map> {
            let d = h.docker_or_raise()?;
            let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let signals = ExecSignals::default();
            h.check(d.exec_until_ok(container, &argv, secs_arg(secs), &signals))
                .map(exec_map)
        });
    });

    let h = Arc::clone(host);
    api.add(Doc {
            sig: "exec_once(container, argv, timeout_secs)",
            result: "{ok, status, stdout, stderr}",
            throws: "Docker unavailable",
            about: "`docker exec CONTAINER ARGV...` once; `status` -1 = killed. A command that fails is reported, not thrown.",
        }, |e, n| {
        e.register_fn(n, move |container: &str, argv: Array, secs: i64| -> RhaiResult<Map> {
            let d = h.docker_or_raise()?;
            let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
            let args: Vec<&str> = argv.iter().map(String::as_str).collect();
            let timeout = Duration::from_secs(secs.clamp(1, 600) as u64);
            let mut m = Map::new();
            match d.exec(container, &args, timeout) {
                Ok((status, out)) => {
                    m.insert("ok".into(), (status == Some(0)).into());
                    m.insert("status".into(), i64::from(status.unwrap_or(-1)).into());
                    m.insert("stdout".into(), out.stdout.into());
                    m.insert("stderr".into(), out.stderr.into());
                }
                Err(e @ (Error::DaemonDown { .. } | Error::DockerMissing { .. })) => {
                    return Err(h.raise(e))
                }
                Err(e) => {
                    m.insert("ok".into(), false.into());
                    m.insert("status".into(), (-1_i64).into());
                    m.insert("stdout".into(), "".into());
                    m.insert("stderr".into(), e.to_string().into());
                }
            }
            Ok(m)
        });
    });

    let h = Arc::clone(host);
    api.add(Doc {
            sig: "read_container_file(container, path)",
            result: "text or ()",
            throws: "Docker unavailable",
            about: "A file's text read out of the container with `docker cp` (stopped containers too), or `()` when there is no such file.",
        }, |e, n| {
        e.register_fn(n, move |container: &str, path: &str| -> RhaiResult<Dynamic> {
            let d = h.docker_or_raise()?;
            let bytes = h.check(d.read_file(container, path))?;
            Ok(bytes.map_or(Dynamic::UNIT, |b| {
                String::from_utf8_lossy(&b).into_owned().into()
            }))
        });
    });

    let h = Arc::clone(host);
    api.add(Doc {
            sig: "stream_exec(container, argv)",
            result: "()",
            throws: "a non-zero exit, Docker unavailable",
            about: "`docker exec CONTAINER ARGV...` written straight to the user's terminal, without a deadline (for `tail -f` until the user interrupts it).",
        }, |e, n| {
        e.register_fn(n, move |container: &str, argv: Array| -> RhaiResult<()> {
            let d = h.docker_or_raise()?;
            let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
            let mut args = vec!["exec", container];
            args.extend(argv.iter().map(String::as_str));
            if h.capturing() {
                return capture_run(&h, &d, &args, true);
            }
            let status = h.check(d.stream(&args, None))?;
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
