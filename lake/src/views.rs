//! Views every SQL session over the lake has, defined once here so that analysts,
//! scoring and the docs agree on them.
//!
//! `pageviews`: one row per pageview (every column of `events`) plus its **dwell
//! time**, derived from the events of its session:
//! - `engagement`: the engaged time the tracker reported for that page view — the sum
//!   of `engaged_ms` of the session's engagement events on the same path, from the
//!   pageview up to the next pageview of that path (the tracker sends the engaged time
//!   in parts, on every `visibilitychange`/`pagehide`). `scroll_pct_max` is the
//!   deepest scroll they reported.
//! - `next_pageview`: without engagement events, the time until the session's next
//!   pageview (a session never has a gap of the inactivity timeout, so this is bounded).
//! - neither (the last page of a session, no engagement reported): `dwell_ms` is NULL
//!   and `dwell_source` is NULL — unknown, not zero.
//!
//! Ties in time are broken by event id, so the result is deterministic and the same
//! after a replay. The view covers open sessions too: the events table carries the
//! session id of every event as soon as it is written.

/// Name of the view.
pub const PAGEVIEWS: &str = "pageviews";

/// The view's query, over the table `events`.
pub const PAGEVIEWS_SQL: &str = "
WITH marked AS (
    SELECT event_id, session_id, COALESCE(path, '') AS page, event_type, engaged_ms, scroll_pct,
           SUM(CASE WHEN event_type = 'pageview' THEN 1 ELSE 0 END) OVER (
               PARTITION BY session_id, COALESCE(path, '')
               ORDER BY event_time, CASE WHEN event_type = 'pageview' THEN 0 ELSE 1 END, event_id
               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS visit
    FROM events
    WHERE event_type IN ('pageview', 'engagement')
),
engaged AS (
    SELECT session_id, page, visit, SUM(engaged_ms) AS engaged_ms, MAX(scroll_pct) AS scroll_pct_max
    FROM marked
    WHERE event_type = 'engagement' AND visit > 0 AND engaged_ms IS NOT NULL
    GROUP BY session_id, page, visit
),
views AS (
    SELECT e.*, m.page AS page_key, m.visit,
           LEAD(e.event_time) OVER (
               PARTITION BY e.session_id ORDER BY e.event_time, e.event_id) AS next_view_time
    FROM events e JOIN marked m ON e.event_id = m.event_id
    WHERE e.event_type = 'pageview'
)
SELECT v.* EXCLUDE (page_key, visit, next_view_time),
       CASE WHEN g.engaged_ms IS NOT NULL THEN g.engaged_ms
            WHEN v.next_view_time IS NOT NULL
                THEN (CAST(v.next_view_time AS BIGINT) - CAST(v.event_time AS BIGINT)) / 1000
       END AS dwell_ms,
       CASE WHEN g.engaged_ms IS NOT NULL THEN 'engagement'
            WHEN v.next_view_time IS NOT NULL THEN 'next_pageview'
       END AS dwell_source,
       g.scroll_pct_max
FROM views v
LEFT JOIN engaged g
  ON g.session_id = v.session_id AND g.page = v.page_key AND g.visit = v.visit
";
