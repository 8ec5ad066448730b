//! Views every SQL session over the lake has, defined once here so that analysts,
//! scoring and the docs agree on them.
//!
//! `pageviews`: one row per pageview (every column of `events`) plus its **dwell
//! time** (`dwell_ms`, `dwell_source`, `scroll_pct_max`), defined in [`crate::dwell`]
//! and stored by the processor with the session (`sessions.pageview_dwell`) when the
//! session closes. A plain join on `event_id`: no window over `events`. Pageviews of
//! sessions still open have NULL dwell until their session closes (at most
//! `processor.sessions.inactivity` after their last event).

/// Name of the view.
pub const PAGEVIEWS: &str = "pageviews";

macro_rules! dwell_sql {
    () => {
        "SELECT d['event_id'] AS event_id, d['dwell_ms'] AS dwell_ms,
       d['dwell_source'] AS dwell_source, d['scroll_pct_max'] AS scroll_pct_max
FROM (SELECT unnest(pageview_dwell) AS d FROM sessions)"
    };
}

/// The dwell of every pageview of a closed session (`event_id`, `dwell_ms`,
/// `dwell_source`, `scroll_pct_max`), unnested from `sessions.pageview_dwell`.
/// Portable: DuckDB runs the same text.
pub const DWELL_SQL: &str = dwell_sql!();

/// The view's query, over the tables `events` and `sessions`. Written as the dwell
/// RIGHT JOIN the events (not events LEFT JOIN dwell: the same rows) because
/// DataFusion builds its hash table from the join's left side when it has no
/// statistics to choose by: a table of event ids and dwell times (~0.5 GB for 8M
/// pageviews) instead of the pageviews with every column (3.4 GB).
pub const PAGEVIEWS_SQL: &str = concat!(
    "SELECT e.*, d.dwell_ms, d.dwell_source, d.scroll_pct_max
FROM (",
    dwell_sql!(),
    ") d
RIGHT JOIN events e ON d.event_id = e.event_id
WHERE e.event_type = 'pageview'"
);
