//! Host functions: the shared front proxy (`--proxy`). Registered with their documentation
//! (see the module above); the proxy itself is `crate::proxy`.

use super::prelude::*;
use crate::plugin::host::*;
use crate::proxy::{self, Proxy};

/// Registers the proxy functions.
pub(super) fn register(api: &mut Api, host: &Arc<Host>) {
    let h = Arc::clone(host);
    api.add(Doc {
            sig: "proxy_network()",
            result: "network name",
            throws: "the network cannot be created; Docker unavailable",
            about: "The docker network proxied containers join (created, labelled as this tool's, when missing). Pass it as `network` to `create_container` with `publish: false`.",
        }, |e, n| {
        e.register_fn(n, move || -> RhaiResult<String> {
            let d = h.docker_or_raise()?;
            h.check(Proxy::new(&d, proxy::image(None)).network().map(str::to_string))
        });
    });

    let h = Arc::clone(host);
    api.add(Doc {
            sig: "proxy_sync()",
            result: "[what it did]",
            throws: "the proxy refuses the configuration; Docker unavailable",
            about: "Re-applies the routes Docker's state calls for, e.g. after removing a proxied container (its route goes). Starts the proxy only when a proxied deployment still needs it. A failed deploy that used the proxy is synced by the host after its undo.",
        }, |e, n| {
        e.register_fn(n, move || -> RhaiResult<Array> {
            let d = h.docker_or_raise()?;
            let done = h.check(Proxy::new(&d, proxy::image(None)).sync())?;
            Ok(done.into_iter().map(Dynamic::from).collect())
        });
    });

    let h = Arc::clone(host);
    api.add(Doc {
            sig: "proxy_status(name)",
            result: "{proxy, route, upstreams, tls, ca_cert}",
            throws: "Docker unavailable",
            about: "A proxied deployment as `status` shows it: the proxy container's state, the route's URL, each upstream container with its health as the proxy sees it, and for `--tls internal` the host path of the CA certificate (copied out of the proxy) for `curl --cacert`.",
        }, |e, n| {
        e.register_fn(n, move |name: &str| -> RhaiResult<Map> {
            let d = h.docker_or_raise()?;
            let replicas = h.check(crate::replicas::report(&d, name))?;
            let v = h.check(Proxy::new(&d, proxy::image(None)).deployment_status(name, replicas))?;
            h.check(
                rhai::serde::to_dynamic(v)
                    .map_err(|e| Error::failed(format!("proxy_status: {e}"))),
            )
            .map(|v| v.cast::<Map>())
        });
    });

    let h = Arc::clone(host);
    api.add(Doc {
            sig: "proxy_replicas(name, count, timeout_secs)",
            result: "{replicas, replaced, added, removed, current}",
            throws: "count > 1 for a deployment not behind the proxy (bad input); a new replica not healthy within the timeout (every step undone)",
            about: "Makes proxied deployment `name` run `count` replicas (-1: as many as it has): `name` itself and clones `name.2` .. `name.N` of it (its image, environment, labels, /payload and config files), load balanced by the front proxy. One replica at a time: a follower that runs the live release is left alone; any other (dead, older, missing) gets a new clone, proven healthy at its own address, then the route switches to it in one graceful reload and the old one is drained and stopped; followers beyond `count` leave the route first, then are drained and removed. Every step is in the undo journal.",
        }, |e, n| {
        e.register_fn(n, move |name: &str, count: i64, secs: i64| -> RhaiResult<Map> {
            let d = h.docker_or_raise()?;
            let want = if count < 0 {
                None
            } else {
                Some(h.check(u16::try_from(count).ok().filter(|c| (1..=100).contains(c)).ok_or_else(|| {
                    Error::input(format!("--replicas {count}"), "use 1-100")
                }))?)
            };
            let v = h.check(crate::replicas::converge(&h, &d, name, want, secs))?;
            h.check(
                rhai::serde::to_dynamic(v)
                    .map_err(|e| Error::failed(format!("proxy_replicas: {e}"))),
            )
            .map(|v| v.cast::<Map>())
        });
    });

    let h = Arc::clone(host);
    api.add(Doc {
            sig: "replicas_of(name)",
            result: "{replicas, running, down: [\"NAME.K state\"], containers: [{container, state, status}]}",
            throws: "Docker unavailable",
            about: "The replica set of a docker-registry deployment (`name` and its followers `name.2` ..) as `docker ps -a` shows it, in one call; `down` names each one that is not running (or missing below the highest).",
        }, |e, n| {
        e.register_fn(n, move |name: &str| -> RhaiResult<Map> {
            let d = h.docker_or_raise()?;
            let v = h.check(crate::replicas::report(&d, name))?;
            h.check(
                rhai::serde::to_dynamic(v)
                    .map_err(|e| Error::failed(format!("replicas_of: {e}"))),
            )
            .map(|v| v.cast::<Map>())
        });
    });

    let h = Arc::clone(host);
    api.add(Doc {
            sig: "container_address(name)",
            result: "IP address or ()",
            throws: "Docker unavailable",
            about: "The container's address on the proxy network (where the proxy, and a readiness probe from the engine's host, dial it), or `()` when it is not attached.",
        }, |e, n| {
        e.register_fn(n, move |name: &str| -> RhaiResult<Dynamic> {
            let d = h.docker_or_raise()?;
            Ok(h.check(proxy::container_address(&d, name))?
                .map_or(Dynamic::UNIT, |ip| ip.to_string().into()))
        });
    });

    let h = Arc::clone(host);
    api.add(Doc {
            sig: "proxy_route(name)",
            result: "{url, upstreams: [{container, dial}], tls, ca_cert}",
            throws: "the proxy cannot be started, or refuses the configuration (e.g. the port is taken); no route for `name`",
            about: "Starts the proxy when it is missing (re-creating every route), installs this deploy's `--tls-cert`/`--tls-key` into it (as files of its own, never on a command line), and applies the routes Docker's state calls for, in one graceful reload: requests in flight finish where they started. Returns `name`'s route: its public URL and the live container(s) behind it; `ca_cert` is where `--tls internal`'s root certificate is inside the proxy (\"\" otherwise).",
        }, |e, n| {
        e.register_fn(n, move |name: &str| -> RhaiResult<Map> {
            let d = h.docker_or_raise()?;
            h.touch_proxy();
            let p = Proxy::new(&d, proxy::image(None));
            if let Some(files) = h.deploy().and_then(|c| c.proxy.tls_files.clone()) {
                h.check(p.ensure_up())?;
                h.check(p.install_tls(name, &files))?;
            }
            let route = h.check(p.route(name))?;
            h.check(rhai::serde::to_dynamic(route_map(&route)).map_err(|e| {
                Error::failed(format!("proxy_route: {e}"))
            }))
            .map(|v| v.cast::<Map>())
        });
    });
}

fn route_map(r: &proxy::Route) -> serde_json::Value {
    serde_json::json!({
        "url": r.url().unwrap_or_default(),
        "upstreams": r.upstreams,
        "tls": r.tls.as_str(),
        "ca_cert": if r.tls == proxy::Tls::Internal { proxy::CA_CERT } else { "" },
        "port": r.port.map_or(0, i64::from),
        "domain": r.domain.clone().unwrap_or_default(),
    })
}
