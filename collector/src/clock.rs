//! Placing a client's event on the server's clock.
//!
//! The server receive time is authoritative. When the client sends both the event's
//! own time (`ts`) and the batch's send time (`sent_at`), the event happened
//! `sent_at - ts` before the batch was received; that offset survives any client clock
//! error. Client times that are zero, negative, in seconds instead of milliseconds,
//! in the future or absurdly old are flagged and never break the order of events.

use std::time::Duration;

use spur_schemas::record::TimeFlag;

/// Below this a client timestamp is read as seconds (1e11 ms is March 1973; 1e11 s is
/// the year 5138).
const SECONDS_THRESHOLD: i64 = 100_000_000_000;

#[derive(Debug, Clone, Copy)]
pub struct ClockRules {
    pub skew_tolerance: Duration,
    pub max_age: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub event_time: i64,
    pub client_ts: Option<i64>,
    pub clock_skew_ms: Option<i64>,
    pub flags: Vec<TimeFlag>,
}

/// A client time in ms, or the flag saying why it is unusable. Seconds are converted
/// (and flagged by the caller).
fn normalise(n: &serde_json::Number) -> Result<(i64, bool), TimeFlag> {
    let ms = match n.as_i64() {
        Some(v) => v,
        None => match n.as_f64() {
            Some(f) if f.is_finite() && f.abs() < 9.0e15 => f as i64,
            _ => return Err(TimeFlag::Invalid),
        },
    };
    if ms <= 0 {
        Err(TimeFlag::Invalid)
    } else if ms < SECONDS_THRESHOLD {
        Ok((ms.saturating_mul(1000), true))
    } else {
        Ok((ms, false))
    }
}

fn push(flags: &mut Vec<TimeFlag>, flag: TimeFlag) {
    if !flags.contains(&flag) {
        flags.push(flag);
    }
}

/// Where an event with client time `ts`, in a batch sent at `sent_at`, received at
/// `received_at` (ms), goes on the server's clock.
pub fn place(
    received_at: i64,
    sent_at: Option<&serde_json::Number>,
    ts: Option<&serde_json::Number>,
    rules: ClockRules,
) -> Placement {
    let tolerance = rules.skew_tolerance.as_millis() as i64;
    let max_age = rules.max_age.as_millis() as i64;
    let mut flags = Vec::new();

    let sent_at = sent_at.and_then(|n| normalise(n).ok()).map(|(ms, _)| ms);
    let clock_skew_ms = sent_at.map(|s| s.saturating_sub(received_at));
    if clock_skew_ms.is_some_and(|skew| skew.abs() > tolerance) {
        push(&mut flags, TimeFlag::Skewed);
    }

    let client_ts = match ts.map(normalise) {
        None => None,
        Some(Err(flag)) => {
            push(&mut flags, flag);
            None
        }
        Some(Ok((ms, was_seconds))) => {
            if was_seconds {
                push(&mut flags, TimeFlag::Seconds);
            }
            Some(ms)
        }
    };

    let event_time = match client_ts {
        None => received_at,
        Some(ts) => {
            // How long before the batch left the client the event happened, by the
            // client's own clock; without `sent_at`, by the server's.
            let age = match sent_at {
                Some(sent) => sent.saturating_sub(ts),
                None => received_at.saturating_sub(ts),
            };
            if age < -tolerance || (sent_at.is_some() && age < 0) {
                push(&mut flags, TimeFlag::Future);
                received_at
            } else if age > max_age {
                push(&mut flags, TimeFlag::TooOld);
                received_at
            } else {
                received_at.saturating_sub(age.max(0))
            }
        }
    };

    Placement {
        event_time,
        client_ts,
        clock_skew_ms,
        flags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_426_000_000;
    const RULES: ClockRules = ClockRules {
        skew_tolerance: Duration::from_secs(120),
        max_age: Duration::from_secs(86_400),
    };

    fn n(v: i64) -> serde_json::Number {
        v.into()
    }

    #[test]
    fn uses_offset_from_sent_at_whatever_the_client_clock() {
        // Client clock one hour behind; event 10 s before sending.
        let sent = NOW - 3_600_000;
        let p = place(NOW, Some(&n(sent)), Some(&n(sent - 10_000)), RULES);
        assert_eq!(p.event_time, NOW - 10_000);
        assert_eq!(p.clock_skew_ms, Some(-3_600_000));
        assert_eq!(p.flags, vec![TimeFlag::Skewed]);
    }

    #[test]
    fn flags_absurd_times_and_keeps_receive_time() {
        let cases = [
            (0, TimeFlag::Invalid),
            (-5, TimeFlag::Invalid),
            (NOW + 86_400_000, TimeFlag::Future),
            (NOW - 40 * 86_400_000, TimeFlag::TooOld),
        ];
        for (ts, flag) in cases {
            let p = place(NOW, None, Some(&n(ts)), RULES);
            assert_eq!(p.event_time, NOW, "{ts}");
            assert_eq!(p.flags, vec![flag], "{ts}");
        }
        let huge: serde_json::Number = serde_json::from_str("1e300").expect("number");
        assert_eq!(
            place(NOW, None, Some(&huge), RULES).flags,
            vec![TimeFlag::Invalid]
        );
    }

    #[test]
    fn converts_seconds() {
        let p = place(NOW, None, Some(&n(NOW / 1000 - 5)), RULES);
        assert_eq!(p.event_time, NOW - 5000);
        assert_eq!(p.client_ts, Some(NOW - 5000));
        assert_eq!(p.flags, vec![TimeFlag::Seconds]);
    }

    #[test]
    fn event_time_never_after_receipt() {
        for ts in [NOW - 1, NOW, NOW + 1, NOW + 60_000] {
            assert!(place(NOW, None, Some(&n(ts)), RULES).event_time <= NOW);
            assert!(place(NOW, Some(&n(NOW)), Some(&n(ts)), RULES).event_time <= NOW);
        }
    }
}
