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
            e.register_fn(n, crate::clock::now_utc);
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

    api.add(Doc {
            sig: "go_string_map(text, at)",
            result: "{key: value} or ()",
            throws: "never",
            about: "Reads the Go `%#v` rendering of a `map[string]string` that starts at character `at` of `text` (`map[string]string{\"k\":\"v\", ...}`, keys and values quoted by strconv.Quote, every escape undone; `map[string]string(nil)` is an empty map). `()` when the text there has another shape. For labels that a docker CLI template prints only this way; read in Rust, so no value's size or content costs script operations.",
        }, |e, n| {
        e.register_fn(n, |text: &str, at: i64| -> Dynamic {
            let start = usize::try_from(at).ok().and_then(|at| {
                text.char_indices().nth(at).map(|(b, _)| b)
            });
            match start.and_then(|b| go_string_map(&text[b..])) {
                Some(m) => Dynamic::from_map(
                    m.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
                ),
                None => Dynamic::UNIT,
            }
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

/// A Go `%#v` `map[string]string` literal at the start of `text`, or None for another shape.
fn go_string_map(text: &str) -> Option<Vec<(String, String)>> {
    let rest = text.strip_prefix("map[string]string")?;
    if rest.starts_with("(nil)") {
        return Some(Vec::new());
    }
    let mut rest = rest.strip_prefix('{')?;
    let mut out = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if rest.starts_with('}') {
            return Some(out);
        }
        let (key, r) = go_quoted(rest)?;
        let r = r.strip_prefix(':')?;
        let (value, r) = go_quoted(r)?;
        out.push((key, value));
        rest = r;
    }
}

/// One strconv.Quote'd string at the start of `text` (unquoted) and what follows it.
fn go_quoted(text: &str) -> Option<(String, &str)> {
    let body = text.strip_prefix('"')?;
    let mut out = String::new();
    let mut bytes: Vec<u8> = Vec::new(); // \x escapes may spell a multi-byte character
    let mut chars = body.char_indices();
    let flush = |bytes: &mut Vec<u8>, out: &mut String| {
        if !bytes.is_empty() {
            out.push_str(&String::from_utf8_lossy(bytes));
            bytes.clear();
        }
    };
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                flush(&mut bytes, &mut out);
                return Some((out, &body[i + 1..]));
            }
            '\\' => {
                let (_, e) = chars.next()?;
                let hex = |chars: &mut std::str::CharIndices, n: usize| -> Option<u32> {
                    let mut v = 0u32;
                    for _ in 0..n {
                        v = v * 16 + chars.next()?.1.to_digit(16)?;
                    }
                    Some(v)
                };
                if e == 'x' {
                    bytes.push(u8::try_from(hex(&mut chars, 2)?).ok()?);
                    continue;
                }
                flush(&mut bytes, &mut out);
                out.push(match e {
                    'a' => '\u{7}',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'v' => '\u{b}',
                    '\\' | '"' | '\'' => e,
                    'u' => char::from_u32(hex(&mut chars, 4)?)?,
                    'U' => char::from_u32(hex(&mut chars, 8)?)?,
                    _ => return None,
                });
            }
            c => {
                flush(&mut bytes, &mut out);
                out.push(c);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_string_maps_undo_every_strconv_quote_escape() {
        let m = go_string_map(
            r#"map[string]string{"a":"b", "q":"he\"l}lo, x:y \\ {\"z\":1}", "c":"\a\b\f\n\r\t\v\x01\x1b\u2028\U0001f600\xff", "é":"ü"}, Next:1"#,
        )
        .unwrap();
        assert_eq!(
            m,
            vec![
                ("a".into(), "b".into()),
                ("q".into(), r#"he"l}lo, x:y \ {"z":1}"#.into()),
                (
                    "c".into(),
                    "\u{7}\u{8}\u{c}\n\r\t\u{b}\u{1}\u{1b}\u{2028}\u{1f600}\u{fffd}".into()
                ),
                ("é".into(), "ü".into()),
            ]
        );
        assert_eq!(go_string_map("map[string]string(nil), x"), Some(vec![]));
        assert_eq!(go_string_map("map[string]string{}"), Some(vec![]));
        for bad in [
            "",
            "map[string]int{}",
            r#"map[string]string{"a":"b""#,
            r#"map[string]string{"a":"b"#,
            r#"map[string]string{"a" "b"}"#,
            r#"map[string]string{a:"b"}"#,
            r#"map[string]string{"a":"\q"}"#,
        ] {
            assert_eq!(go_string_map(bad), None, "{bad}");
        }
        let long = "y".repeat(200_000);
        let m = go_string_map(&format!(r#"map[string]string{{"n":"{long}"}}"#)).unwrap();
        assert_eq!(m[0].1.len(), 200_000);
    }
}
