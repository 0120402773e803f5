//! Host functions: time and text. Registered with their documentation (see the
//! module above); the implementations they share live in `plugin::host*`.

use super::prelude::*;
use crate::plugin::host::*;
use crate::plugin::host_manage::*;
use sha2::{Digest, Sha256};

/// Registers the text functions.
pub(super) fn register(api: &mut Api, _host: &Arc<Host>) {
    api.add(
        Doc {
            sig: "now_utc()",
            result: "string",
            throws: "never",
            about: "The current UTC time, RFC 3339.",
        },
        |e, n| {
            e.register_fn(n, now_utc);
        },
    );

    api.add(
        Doc {
            sig: "last_lines(text, n)",
            result: "text",
            throws: "never",
            about: "The last `n` lines of `text` (all of it when `n` < 0).",
        },
        |e, n| {
            e.register_fn(n, |text: &str, n: i64| -> String { last_lines(text, n) });
        },
    );

    api.add(Doc {
            sig: "age_of(timestamp)",
            result: "string",
            throws: "never",
            about: "How long ago an RFC 3339 UTC time (the `created` label) was: `\"42s\"`, `\"5m\"`, `\"3h\"`, `\"2d\"`; `\"\"` when it cannot be read.",
        }, |e, n| {
        e.register_fn(n, |ts: &str| -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        parse_utc(ts).map_or(String::new(), |t| human_age(now.saturating_sub(t)))
    });
    });

    let t0 = Instant::now();
    api.add(
        Doc {
            sig: "clock_ms()",
            result: "int",
            throws: "never",
            about: "Milliseconds since this plugin's engine was built (monotonic), for deadlines.",
        },
        |e, n| {
            e.register_fn(n, move || -> i64 { t0.elapsed().as_millis() as i64 });
        },
    );

    api.add(Doc {
            sig: "pause_ms(ms)",
            result: "()",
            throws: "never",
            about: "Waits `ms` milliseconds (1 - 5000): the interval of a poll loop that has a deadline.",
        }, |e, n| {
        e.register_fn(n, |ms: i64| {
        std::thread::sleep(Duration::from_millis(ms.clamp(1, 5000) as u64));
    });
    });

    api.add(
        Doc {
            sig: "sha256_hex(text)",
            result: "string",
            throws: "never",
            about: "The 64 hex digits of the SHA-256 of `text` (e.g. to name objects by content).",
        },
        |e, n| {
            e.register_fn(n, |text: &str| -> String {
                let mut h = Sha256::new();
                h.update(text.as_bytes());
                h.finalize().iter().map(|b| format!("{b:02x}")).collect()
            });
        },
    );

    api.add(Doc {
            sig: "json_parse(text)",
            result: "map, array, string, int, float, bool or ()",
            throws: "text that is not JSON: a plain error a script can `catch` (`not JSON: WHY at line L column C`), never echoing the text",
            about: "Parses JSON strictly (serde_json; `null` becomes `()`), for text from outside such as a label's value. Unlike Rhai's `parse_json`, the text is never read as Rhai code (no expressions evaluated), arrays parse too, and a bad text is an error the script can catch instead of a syntax error of the plugin.",
        }, |e, n| {
        e.register_fn(n, |text: &str| -> RhaiResult<Dynamic> {
            let v: serde_json::Value = serde_json::from_str(text).map_err(|err| {
                Box::new(rhai::EvalAltResult::ErrorRuntime(
                    format!("not JSON: {err}").into(),
                    rhai::Position::NONE,
                ))
            })?;
            rhai::serde::to_dynamic(v)
        });
    });

    api.add(Doc {
            sig: "json_text(value)",
            result: "string",
            throws: "a value JSON cannot hold (a function pointer, a timestamp)",
            about: "Compact JSON text of a map, array or plain value (serde_json), with every control character escaped as JSON requires (a map's own `to_json()` writes Rust escapes such as `\\u{1b}`, which JSON cannot read back).",
        }, |e, n| {
        e.register_fn(n, |value: Dynamic| -> RhaiResult<String> {
            serde_json::to_string(&value).map_err(|err| {
                Box::new(rhai::EvalAltResult::ErrorRuntime(
                    format!("json_text: {err}").into(),
                    rhai::Position::NONE,
                ))
            })
        });
    });
}
