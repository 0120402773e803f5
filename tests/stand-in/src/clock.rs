//! UTC timestamps without a date crate: supervisord's log format and Fractalic's branch prefix.

use std::time::Duration;

/// (year, month, day, hour, minute, second, millisecond) for a time since the Unix epoch.
fn parts(since_epoch: Duration) -> (i64, u32, u32, u64, u64, u64, u32) {
    let secs = since_epoch.as_secs();
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    (
        y,
        m,
        d,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since_epoch.subsec_millis(),
    )
}

/// `2024-05-01 12:00:00,123`, supervisord's format.
pub fn supervisord(since_epoch: Duration) -> String {
    let (y, mo, d, h, mi, s, ms) = parts(since_epoch);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02},{ms:03}")
}

/// `20240501120000`.
pub fn compact(since_epoch: Duration) -> String {
    let (y, mo, d, h, mi, s, _) = parts(since_epoch);
    format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}")
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(
            supervisord(Duration::from_millis(0)),
            "1970-01-01 00:00:00,000"
        );
        // 2024-02-29T23:59:58.5Z, a leap day.
        assert_eq!(
            supervisord(Duration::from_millis(1_709_251_198_500)),
            "2024-02-29 23:59:58,500"
        );
        assert_eq!(
            compact(Duration::from_secs(1_709_251_198)),
            "20240229235958"
        );
    }
}
