//! Host functions: http. Registered with their documentation (see the
//! module above); the implementations they share live in `plugin::host*`.

use super::prelude::*;
use crate::plugin::host::*;
use crate::plugin::host_generic::*;

/// Registers the http functions.
pub(super) fn register(api: &mut Api, host: &Arc<Host>) {
    api.add(Doc {
            sig: "http_probe(url, timeout_ms)",
            result: "{ok, status, body, error, elapsed_ms}",
            throws: "never",
            about: "One GET (50 ms - 60 s): `ok` = a 2xx status, `status` 0 = no answer (`error` says why).",
        }, |e, n| {
        e.register_fn(n, |url: &str, timeout_ms: i64| -> Map {
        let t0 = Instant::now();
        let timeout = Duration::from_millis(timeout_ms.clamp(50, 60_000) as u64);
        let (status, body, error) = match health::probe(url, timeout) {
            Ok((status, body)) => (i64::from(status), body, String::new()),
            Err(reason) => (0, String::new(), reason),
        };
        let mut m = Map::new();
        m.insert("ok".into(), (200..300).contains(&status).into());
        m.insert("status".into(), status.into());
        m.insert("body".into(), body.into());
        m.insert("error".into(), error.into());
        m.insert(
            "elapsed_ms".into(),
            (t0.elapsed().as_millis() as i64).into(),
        );
        m
    });
    });

    let h = Arc::clone(host);
    api.add(Doc {
            sig: "http_request(method, url, opts)",
            result: "{ok, status, body, error, elapsed_ms}",
            throws: "a method other than GET, HEAD, POST, PUT, PATCH, DELETE",
            about: "One HTTP request. `opts`: `body` (string), `headers` (map), `timeout_ms` (default 5000, 50 ms - 10 min; connecting takes at most 2000 of it). `ok` = a 2xx status; `status` 0 = no answer (`error` says why).",
        }, |e, n| {
        e.register_fn(n, move |method: &str, url: &str, opts: Map| -> RhaiResult<Map> {
            h.check(http_request(method, url, &opts))
        });
    });
}
