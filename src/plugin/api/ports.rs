//! Host functions: ports. Registered with their documentation (see the
//! module above); the implementations they share live in `plugin::host*`.

use super::prelude::*;
use crate::plugin::host::*;

/// Registers the ports functions.
pub(super) fn register(api: &mut Api, host: &Arc<Host>) {
    let h = Arc::clone(host);
    api.add(Doc {
            sig: "choose_port(preferred, exact, bind, reserved)",
            result: "{port, explain}",
            throws: "bad input (exit 2) for an exact port that is busy; no free port in the window; the port lock not acquired within 60 s",
            about: "A free host port: `preferred` or the next free one (`exact` false), or exactly `preferred`. `reserved` lists ports other deployments hold. Takes a host-wide lock (held until the next `create_container`) and counts the ports recorded by deployments created since the run began, so parallel deploys pick distinct ports. On a remote engine, or from a sibling container of the engine (see docs/engines.md, \"Inside a container\"), a port is free when no container there publishes it (one `docker ps`), instead of when it can be bound here.",
        }, |e, n| {
        e.register_fn(n, move |preferred: i64, exact: bool, bind: &str, reserved: Array| -> RhaiResult<Map> {
            let bind_ip = h.check(parse_bind(bind))?;
            let p = h.check(port_arg(preferred))?;
            let req = if exact {
                PortRequest::Exact(p)
            } else {
                PortRequest::Preferred(p)
            };
            let mut reserved = port_set(&reserved);
            reserved.extend(h.check(h.lock_ports())?);
            let d = h.docker_or_raise()?;
            let published = h.check(engine_ports(&d))?;
            let at = vantage(bind_ip, published.as_ref());
            let choice = ports::choose(req, at, &reserved).map_err(|e| {
                let err = match e {
                    ports::PortError::Busy { .. } => {
                        Error::input(format!("--port {p}"), e.to_string())
                    }
                    _ => Error::failed(e.to_string()),
                };
                h.raise(err)
            })?;
            h.dry_fact(
                "port",
                serde_json::json!({"port": choice.port, "explain": choice.explain()}),
            );
            let mut m = Map::new();
            m.insert("port".into(), i64::from(choice.port).into());
            m.insert("explain".into(), choice.explain().into());
            Ok(m)
        });
    });

    let h = Arc::clone(host);
    api.add(Doc {
            sig: "next_port(first, after, bind, reserved)",
            result: "port or ()",
            throws: "as `choose_port`",
            about: "The next free port after `after` within the scan window that starts at `first`, or `()` when there is none (for retrying after a `port_clash`). Locks and judges like `choose_port`.",
        }, |e, n| {
        e.register_fn(n, move |first: i64, after: i64, bind: &str, reserved: Array| -> RhaiResult<Dynamic> {
            let bind_ip = h.check(parse_bind(bind))?;
            let first = h.check(port_arg(first))?;
            let after = h.check(port_arg(after))?;
            let mut reserved = port_set(&reserved);
            reserved.extend(h.check(h.lock_ports())?);
            let d = h.docker_or_raise()?;
            let published = h.check(engine_ports(&d))?;
            let at = vantage(bind_ip, published.as_ref());
            Ok(ports::next_free(first, after, at, &reserved)
                .map_or(Dynamic::UNIT, |p| i64::from(p).into()))
        });
    });
}
