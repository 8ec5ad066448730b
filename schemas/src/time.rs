//! Milliseconds since the Unix epoch, written the two ways Spur writes times: an
//! RFC 3339 timestamp for people and JSON bodies, and the `YYYY-MM-DD` UTC date of a
//! lake partition (`dt`). Times outside chrono's range print as the epoch.

use chrono::DateTime;

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// The UTC date, `YYYY-MM-DD`: the `dt` partition of a row at `ms`.
pub fn date(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_dates_are_utc() {
        assert_eq!(rfc3339_ms(1_764_417_600_123), "2025-11-29T12:00:00.123Z");
        assert_eq!(date(1_764_417_600_123), "2025-11-29");
        assert_eq!(date(-1), "1969-12-31");
        assert_eq!(rfc3339_ms(i64::MAX), "1970-01-01T00:00:00.000Z");
    }
}
