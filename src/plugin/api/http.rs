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
        probe_map(probe_one(url, probe_timeout(timeout_ms)))
    });
    });

    api.add(Doc {
            sig: "http_probe_all(urls, timeout_ms)",
            result: "[{ok, status, body, error, elapsed_ms}] (in the order of `urls`)",
            throws: "an item of `urls` that is not a string",
            about: "`http_probe` of every URL at once (up to 64 in flight), so a list of N deployments costs about one probe, not N: what `list_all` uses for its health column.",
        }, |e, n| {
        e.register_fn(n, |urls: Array, timeout_ms: i64| -> RhaiResult<Array> {
            let urls = urls
                .into_iter()
                .enumerate()
                .map(|(i, u)| {
                    u.into_string()
                        .map_err(|t| format!("http_probe_all: urls[{i}] must be a string, not {t}").into())
                })
                .collect::<RhaiResult<Vec<String>>>()?;
            let timeout = probe_timeout(timeout_ms);
            Ok(probe_all(&urls, timeout)
                .into_iter()
                .map(|p| Dynamic::from_map(probe_map(p)))
                .collect())
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

/// One GET's outcome, before it becomes a Rhai map (maps are not `Send`).
struct Probe {
    status: i64,
    body: String,
    error: String,
    elapsed_ms: i64,
}

fn probe_timeout(timeout_ms: i64) -> Duration {
    Duration::from_millis(timeout_ms.clamp(50, 60_000) as u64)
}

fn probe_one(url: &str, timeout: Duration) -> Probe {
    let t0 = Instant::now();
    let (status, body, error) = match health::probe(url, timeout) {
        Ok((status, body)) => (i64::from(status), body, String::new()),
        Err(reason) => (0, String::new(), reason),
    };
    Probe {
        status,
        body,
        error,
        elapsed_ms: t0.elapsed().as_millis() as i64,
    }
}

fn probe_map(p: Probe) -> Map {
    let mut m = Map::new();
    m.insert("ok".into(), (200..300).contains(&p.status).into());
    m.insert("status".into(), p.status.into());
    m.insert("body".into(), p.body.into());
    m.insert("error".into(), p.error.into());
    m.insert("elapsed_ms".into(), p.elapsed_ms.into());
    m
}

/// Probes every URL with up to `MAX_IN_FLIGHT` worker threads taking the next URL as each
/// finishes (so one slow URL holds up one worker, not a batch); results in the order of `urls`.
fn probe_all(urls: &[String], timeout: Duration) -> Vec<Probe> {
    const MAX_IN_FLIGHT: usize = 64;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let done: Vec<Mutex<Option<Probe>>> = urls.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..urls.len().min(MAX_IN_FLIGHT) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(url) = urls.get(i) else { break };
                let p = probe_one(url, timeout);
                if let Ok(mut slot) = done[i].lock() {
                    *slot = Some(p);
                }
            });
        }
    });
    done.into_iter()
        .map(|m| {
            m.into_inner().ok().flatten().unwrap_or_else(|| Probe {
                status: 0,
                body: String::new(),
                error: "the probe failed".into(),
                elapsed_ms: 0,
            })
        })
        .collect()
}
