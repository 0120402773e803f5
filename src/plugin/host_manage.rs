//! The host functions the management entry points (`list`, `status`, `logs`, `stop`, `start`,
//! `delete`) use on top of the deploy API in `host.rs`: one-shot probes and execs, reading a
//! file out of a (possibly stopped) container, streaming `docker logs`, and small text helpers.

use super::host::Host;
use crate::error::Error;
use crate::health;
use rhai::{Array, Dynamic, Engine, EvalAltResult, Map};
use std::sync::Arc;
use std::time::{Duration, Instant};

type RhaiResult<T> = std::result::Result<T, Box<EvalAltResult>>;

/// Deadline of a `logs` call without `--follow` (a big log still arrives well within it).
const LOGS_TIMEOUT: Duration = Duration::from_secs(120);

/// Registers the management host API on `engine`.
pub fn register(engine: &mut Engine, host: &Arc<Host>) {
    // http_probe(url, timeout_ms): one GET. Returns {ok (2xx), status (0 = no answer), body,
    // error (why there was no answer), elapsed_ms}. Never throws.
    engine.register_fn("http_probe", |url: &str, timeout_ms: i64| -> Map {
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

    // exec_once(container, argv, timeout_secs): `docker exec CONTAINER ARGV...` once. Returns
    // {ok, status (-1 = killed), stdout, stderr}; a command that fails is reported, not thrown.
    let h = Arc::clone(host);
    engine.register_fn(
        "exec_once",
        move |container: &str, argv: Array, secs: i64| -> RhaiResult<Map> {
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
        },
    );

    // read_container_file(container, path): a file's text read out of the container with
    // `docker cp` (works on stopped containers too), or () when there is no such file.
    let h = Arc::clone(host);
    engine.register_fn(
        "read_container_file",
        move |container: &str, path: &str| -> RhaiResult<Dynamic> {
            let d = h.docker_or_raise()?;
            let bytes = h.check(d.read_file(container, path))?;
            Ok(bytes.map_or(Dynamic::UNIT, |b| {
                String::from_utf8_lossy(&b).into_owned().into()
            }))
        },
    );

    // stream_logs(container, tail, follow): `docker logs [--tail N] [--follow] CONTAINER` written
    // straight to the user's terminal, stdout and stderr interleaved as Docker gives them.
    // tail < 0 means all lines. With follow it runs until the user interrupts it (no deadline).
    let h = Arc::clone(host);
    engine.register_fn(
        "stream_logs",
        move |container: &str, tail: i64, follow: bool| -> RhaiResult<()> {
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
        },
    );

    // stream_exec(container, argv): `docker exec CONTAINER ARGV...` written straight to the
    // user's terminal, for commands that run until the user interrupts them (`tail -f`): no
    // deadline. Throws when the command exits non-zero.
    let h = Arc::clone(host);
    engine.register_fn(
        "stream_exec",
        move |container: &str, argv: Array| -> RhaiResult<()> {
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
        },
    );

    // last_lines(text, n): the last n lines of text (all of it when n < 0).
    engine.register_fn("last_lines", |text: &str, n: i64| -> String {
        last_lines(text, n)
    });

    // age_of(timestamp): how long ago an RFC 3339 UTC time (the `created` label) was, as
    // "42s", "5m", "3h" or "2d"; "" when it cannot be read.
    engine.register_fn("age_of", |ts: &str| -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        parse_utc(ts).map_or(String::new(), |t| human_age(now.saturating_sub(t)))
    });
}

/// Runs `docker ARGS` into the host's capture buffer (the REST API has no terminal). A
/// follow cannot be captured: it would never end.
fn capture_run(h: &Host, d: &crate::docker::Docker, args: &[&str], follow: bool) -> RhaiResult<()> {
    if follow {
        let Some(f) = h.follower() else {
            return Err(h.raise(Error::input(
                "follow",
                "following a log is not available here; ask for the tail again instead",
            )));
        };
        // Killing a `docker exec` client leaves its command running in the container, so
        // only `docker logs --follow` (which ends with its client) is streamed this way.
        if args.first() == Some(&"exec") {
            return Err(h.raise(Error::input(
                "following this log",
                "it is read by a command inside the container, which would outlive the stream; follow the container log (no service) or use `fractalic-publisher logs --follow` in a terminal",
            )));
        }
        let status = h.check(d.follow(args, &f.stop, &*f.sink))?;
        let stopped = f.stop.load(std::sync::atomic::Ordering::SeqCst);
        if status != Some(0) && !stopped && status.is_some() {
            return Err(h.raise(Error::Docker {
                argv: d.argv(args),
                status,
                stderr: "see the lines above".into(),
            }));
        }
        return Ok(());
    }
    let (status, out) = h.check(d.run_unchecked(args, None, LOGS_TIMEOUT))?;
    if status != Some(0) {
        return Err(h.raise(Error::Docker {
            argv: d.argv(args),
            status,
            stderr: out.stderr,
        }));
    }
    h.capture(&out.stdout);
    h.capture(&out.stderr);
    Ok(())
}

/// The last `n` lines of `text` (all when `n < 0`), keeping a final newline.
pub fn last_lines(text: &str, n: i64) -> String {
    if n < 0 {
        return text.to_string();
    }
    let body = text.strip_suffix('\n').unwrap_or(text);
    if body.is_empty() || n == 0 {
        return String::new();
    }
    let lines: Vec<&str> = body.split('\n').collect();
    let start = lines.len().saturating_sub(n as usize);
    let mut s = lines[start..].join("\n");
    s.push('\n');
    s
}

/// Reads `YYYY-MM-DDTHH:MM:SS` (RFC 3339 UTC; a space instead of `T` is accepted) as Unix
/// seconds.
pub fn parse_utc(ts: &str) -> Option<u64> {
    let ts = ts.trim();
    if ts.len() < 19 {
        return None;
    }
    let b = ts.as_bytes();
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| ts.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Howard Hinnant's days-from-civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// "42s", "5m", "3h", "2d".
pub fn human_age(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs / 60),
        3600..=86_399 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::host::format_utc;

    #[test]
    fn utc_round_trips() {
        for secs in [0, 951_782_400, 1_795_746_600] {
            assert_eq!(parse_utc(&format_utc(secs)), Some(secs));
        }
        assert_eq!(
            parse_utc("2026-11-27 02:30:00 +0000 UTC"),
            Some(1_795_746_600)
        );
        assert_eq!(parse_utc("yesterday"), None);
    }

    #[test]
    fn ages_read_well() {
        assert_eq!(human_age(5), "5s");
        assert_eq!(human_age(300), "5m");
        assert_eq!(human_age(7200), "2h");
        assert_eq!(human_age(200_000), "2d");
    }

    #[test]
    fn tails() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(last_lines("a\nb\nc", 5), "a\nb\nc\n");
        assert_eq!(last_lines("a\nb\n", -1), "a\nb\n");
        assert_eq!(last_lines("", 3), "");
    }
}
