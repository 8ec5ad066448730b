//! Dwell time: how long each pageview of a session held the visitor. The one
//! definition, computed by the processor when it closes a session and stored with the
//! session row (`sessions.pageview_dwell`), so no reader needs window functions over
//! `events` (the `pageviews` view joins it; `docs/lake.md`).
//!
//! Within one session, in the order (event time, pageviews before other events at the
//! same time, event id):
//! - a **visit** of a page is a pageview and every later event on the same path until
//!   the next pageview of that path (`path` NULL counts as the empty path);
//! - `engagement`: the sum of `engaged_ms` of the visit's `engagement` events that
//!   report one (the tracker sends the engaged time in parts, on every
//!   `visibilitychange`/`pagehide`); `scroll_pct_max` is the deepest `scroll_pct` among
//!   them;
//! - `next_pageview`: without engagement, the time until the session's next pageview
//!   (any path);
//! - neither (the last page of a session, no engagement reported): `dwell_ms` and
//!   `dwell_source` are NULL — unknown, not zero.
//!
//! Pure: the same events give the same result in any input order, so a replay writes
//! identical rows.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::model::{EventRow, PageviewDwell};

/// `dwell_source` when the visit reported engaged time.
pub const ENGAGEMENT: &str = "engagement";
/// `dwell_source` when the time comes from the session's next pageview.
pub const NEXT_PAGEVIEW: &str = "next_pageview";

/// One `pageview` or `engagement` event of a session, as dwell needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageEvent {
    pub event_id: String,
    /// Event time, ms since the epoch.
    pub time_ms: i64,
    /// `true` for a pageview, `false` for an engagement event.
    pub pageview: bool,
    pub path: Option<String>,
    pub engaged_ms: Option<i64>,
    pub scroll_pct: Option<i32>,
}

impl PageEvent {
    /// The page event of a lake row; `None` unless it is a pageview or an engagement.
    pub fn of(row: &EventRow) -> Option<PageEvent> {
        matches!(row.event_type.as_str(), "pageview" | "engagement").then(|| PageEvent {
            event_id: row.event_id.clone(),
            time_ms: row.event_time,
            pageview: row.event_type == "pageview",
            path: row.path.clone(),
            engaged_ms: row.engaged_ms,
            scroll_pct: row.scroll_pct,
        })
    }
}

/// The dwell of every pageview among `events` (one session's), ordered by time and
/// event id.
pub fn pageview_dwell(events: &[PageEvent]) -> Vec<PageviewDwell> {
    let mut ordered: Vec<&PageEvent> = events.iter().collect();
    ordered.sort_by(|a, b| {
        (a.time_ms, !a.pageview, a.event_id.as_str()).cmp(&(
            b.time_ms,
            !b.pageview,
            b.event_id.as_str(),
        ))
    });
    // Per path, the index (into `out`) of its current visit's pageview.
    let mut visit: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<(i64, PageviewDwell)> = Vec::new();
    let mut engaged: Vec<Option<(i64, Option<i32>)>> = Vec::new();
    for event in ordered {
        let page = event.path.as_deref().unwrap_or("");
        if event.pageview {
            visit.insert(page, out.len());
            out.push((
                event.time_ms,
                PageviewDwell {
                    event_id: event.event_id.clone(),
                    dwell_ms: None,
                    dwell_source: None,
                    scroll_pct_max: None,
                },
            ));
            engaged.push(None);
        } else if let (Some(&at), Some(ms)) = (visit.get(page), event.engaged_ms) {
            let (sum, scroll) = engaged[at].get_or_insert((0, None));
            *sum = sum.saturating_add(ms);
            *scroll = (*scroll).max(event.scroll_pct);
        }
    }
    let next_times: Vec<Option<i64>> = (0..out.len())
        .map(|i| out.get(i + 1).map(|(t, _)| *t))
        .collect();
    out.into_iter()
        .zip(engaged)
        .zip(next_times)
        .map(|(((time, mut dwell), engaged), next)| {
            match (engaged, next) {
                (Some((ms, scroll)), _) => {
                    dwell.dwell_ms = Some(ms);
                    dwell.dwell_source = Some(ENGAGEMENT.to_owned());
                    dwell.scroll_pct_max = scroll;
                }
                (None, Some(next)) => {
                    dwell.dwell_ms = Some(next.saturating_sub(time));
                    dwell.dwell_source = Some(NEXT_PAGEVIEW.to_owned());
                }
                (None, None) => {}
            }
            dwell
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, minute: i64, path: &str, engaged: Option<(i64, i32)>) -> PageEvent {
        PageEvent {
            event_id: id.into(),
            time_ms: minute * 60_000,
            pageview: engaged.is_none(),
            path: Some(path.into()),
            engaged_ms: engaged.map(|(ms, _)| ms),
            scroll_pct: engaged.map(|(_, pct)| pct),
        }
    }

    fn render(dwell: &[PageviewDwell]) -> Vec<String> {
        dwell
            .iter()
            .map(|d| {
                format!(
                    "{} {} {} {}",
                    d.event_id,
                    d.dwell_ms.map_or("-".into(), |v| v.to_string()),
                    d.dwell_source.as_deref().unwrap_or("-"),
                    d.scroll_pct_max.map_or("-".into(), |v| v.to_string()),
                )
            })
            .collect()
    }

    #[test]
    fn engagement_sums_per_visit_else_next_pageview_else_unknown() {
        // /a (engaged 3 s + 2 s, in two parts), /b, back to /a, then /c last.
        let session = [
            event("a1", 0, "/a", None),
            event("e1", 5, "/a", Some((3_000, 40))),
            event("e2", 20, "/a", Some((2_000, 80))),
            event("b1", 30, "/b", None),
            event("a2", 90, "/a", None),
            event("e3", 95, "/a", Some((4_000, 10))),
            event("c1", 120, "/c", None),
        ];
        let want = [
            "a1 5000 engagement 80",
            "b1 3600000 next_pageview -",
            "a2 4000 engagement 10",
            "c1 - - -",
        ];
        assert_eq!(render(&pageview_dwell(&session)), want);
        // Any input order gives the same result.
        let mut reversed = session.to_vec();
        reversed.reverse();
        assert_eq!(render(&pageview_dwell(&reversed)), want);
    }

    #[test]
    fn ties_put_the_pageview_first_and_engagement_without_a_pageview_is_ignored() {
        let session = [
            // Engagement on /x before any pageview of /x: no visit to count it for.
            event("e0", 0, "/x", Some((9_000, 90))),
            // Same minute: the pageview opens the visit, the engagement joins it.
            event("e1", 1, "/x", Some((1_000, 5))),
            event("x1", 1, "/x", None),
            PageEvent {
                engaged_ms: None,
                ..event("e2", 2, "/x", Some((0, 50)))
            },
        ];
        assert_eq!(
            render(&pageview_dwell(&session)),
            ["x1 1000 engagement 5"],
            "an engagement event without engaged_ms adds nothing"
        );
        assert!(pageview_dwell(&[]).is_empty());
    }
}
