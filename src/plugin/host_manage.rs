//! Implementations behind the host functions the management entry points use (`status`,
//! `logs` ...): captured log streams and small text and time helpers. Registered, with their
//! documentation, in `plugin::api`.

use super::host::{Host, RhaiResult};
use crate::error::Error;
use std::time::Duration;

/// Deadline of a `logs` call without `--follow` (a big log still arrives well within it).
pub(crate) const LOGS_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `docker ARGS` into the host's capture buffer (the REST API has no terminal). A
/// follow cannot be captured: it would never end.
pub(crate) fn capture_run(
    h: &Host,
    d: &crate::docker::Docker,
    args: &[&str],
    follow: bool,
) -> RhaiResult<()> {
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
pub(crate) fn last_lines(text: &str, n: i64) -> String {
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
pub(crate) fn parse_utc(ts: &str) -> Option<u64> {
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
pub(crate) fn human_age(secs: u64) -> String {
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
    use crate::clock::format_utc;

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
