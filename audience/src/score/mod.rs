//! Interest scoring: how interested each subject is in each topic, from the pages
//! they viewed, and which views made it so.
//!
//! # Inputs
//! - **Views**: rows of the lake view `pageviews` with `is_bot = false` and
//!   `event_time ≤ as_of`; dwell is NULL (weight 1) while the view's session is open. Each belongs to a **subject**: the e-mail pseudonym
//!   (`email_hash`) of the visitor's latest `identify` event if it has one, else its
//!   `visitor_id` ([`SUBJECTS_SQL`], the only definition).
//! - **Topics of a view**: the page's `topics` ∪ the `topics` of every URL rule
//!   (`scoring.url_rules`) whose `path_prefix` the page's `path` starts with;
//!   each topic counted once per view.
//!
//! # Formulas
//! With `reference_dwell` (default 30 s), `max_weight` (default 3), `half_life`
//! (default 14 days) and `saturation` (default 5) from `[scoring]`:
//!
//! ```text
//! weight(view)      = clamp(dwell_ms / reference_dwell, 0.25, max_weight)
//!                     1                      when dwell_ms is NULL (unknown)
//! decay(view)       = 2^(−(as_of − event_time) / half_life)
//!                     1                      when event_time > as_of
//! contribution      = weight · decay
//! raw(subject, t)   = Σ contribution over the subject's views tagged with topic t
//! score(subject, t) = raw / (raw + saturation)            ∈ [0, 1)
//! ```
//!
//! So a 60 s view today weighs 2; a view of unknown dwell one half-life ago adds
//! 1 · 0.5; together raw 2.5 and score 2.5 / 7.5 ≈ 0.33. A view's weight is at least
//! 0.25 (a bounce still counts a little) and at most `max_weight` (a tab left open
//! does not dominate). The score reaches 0.5 at `raw = saturation`, so it reads as a
//! probability-like interest level that several strong, recent views push towards 1.
//!
//! # Output
//! One [`Score`] per (subject, topic) with at least one view, appended as one Delta
//! commit to the lake table `scores` with the run's `as_of`; the latest run is
//! `WHERE as_of = (SELECT max(as_of) FROM scores)` (`docs/lake.md`). [`explain`]
//! lists the [`Contribution`] of every view, which sum to `raw`.
//!
//! # Two implementations of one formula
//! [`model`] is the pure core, view by view (`--explain`, and the segment engine's
//! incremental state, `crate::state`). [`sql::interest_sql`] is the same formula in
//! closed form, `Σ weight · 2^(−(as_of − t)/half_life)` grouped by subject (or
//! visitor) and topic: `spur score` runs it ([`sql::score_all`]), the engine
//! bootstraps its state with it, and DuckDB runs the same text in the benchmark.
//! Tests hold the two to the same numbers.

mod config;
pub mod model;
pub mod sql;

use std::io::Write;

use spur_lake::Lake;
use tracing::info;

pub use config::{ScoringConfig, UrlRule};
pub use model::{Contribution, Model, Score, View};
pub use sql::{
    Per, datafusion_ms, interest_session, interest_sql, load_views, score_all, write_scores,
};

use crate::error::{Error, Result};

/// What a scoring run did.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    pub as_of_ms: i64,
    /// Views counted, once per topic (a view of two topics counts twice).
    pub views: usize,
    pub subjects: usize,
    pub topics: usize,
    pub rows: usize,
    /// Version of table `scores` after the run; `None` if there was nothing to write.
    pub version: Option<i64>,
}

/// The as-of time of a run: an RFC 3339 time (`2025-11-29T12:00:00Z`), or now.
pub fn as_of_ms(text: Option<&str>) -> Result<i64> {
    match text {
        None => Ok(chrono::Utc::now().timestamp_millis()),
        Some(text) => chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.timestamp_millis())
            .map_err(|e| Error::Config(format!("--as-of {text:?} is not an RFC 3339 time: {e}"))),
    }
}

/// Computes every subject's scores as of `as_of_ms` from the lake at `lake_root`
/// and appends them to table `scores` in one commit.
pub async fn run(lake_root: &str, scoring: &ScoringConfig, as_of_ms: i64) -> Result<RunSummary> {
    let model = Model::new(scoring)?;
    let mut lake = Lake::open(lake_root).await?;
    // Subjects come from the identity ledger: bring it up to date first.
    let now = chrono::Utc::now().timestamp_millis();
    crate::ledger::Ledger::load(&lake)
        .await?
        .step(&mut lake, now, None)
        .await?;
    let ctx = lake.session_context().await?;
    let scores = score_all(&ctx, &model, as_of_ms).await?;
    let version = write_scores(&mut lake, &scores, as_of_ms).await?;
    let distinct = |key: fn(&Score) -> &str| {
        scores
            .iter()
            .map(key)
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    let summary = RunSummary {
        as_of_ms,
        views: scores.iter().map(|s| s.views).sum::<i64>() as usize,
        subjects: distinct(|s| s.subject.as_str()),
        topics: distinct(|s| s.topic.as_str()),
        rows: scores.len(),
        version,
    };
    info!(
        as_of_ms,
        views = summary.views,
        rows = summary.rows,
        version = ?version,
        "scores written"
    );
    Ok(summary)
}

/// The contributions behind `subject`'s scores as of `as_of_ms` (only `topic`'s when
/// given), from the lake at `lake_root`. Writes nothing.
pub async fn explain(
    lake_root: &str,
    scoring: &ScoringConfig,
    subject: &str,
    topic: Option<&str>,
    as_of_ms: i64,
) -> Result<Vec<Contribution>> {
    let model = Model::new(scoring)?;
    let lake = Lake::open(lake_root).await?;
    let ctx = lake.session_context().await?;
    let views = load_views(&ctx, as_of_ms, Some(&[subject.to_owned()])).await?;
    Ok(model.explain(&views, subject, topic, as_of_ms))
}

/// Prints contributions as a table, with each topic's `raw` and `score` under its
/// views (`saturation` from the configuration that produced them).
pub fn write_contributions<W: Write>(
    out: &mut W,
    contributions: &[Contribution],
    scoring: &ScoringConfig,
) -> Result<()> {
    let model = Model::new(scoring)?;
    let time = spur_schemas::time::rfc3339_ms;
    let io = |r: std::io::Result<()>| r.map_err(Error::Output);
    io(writeln!(
        out,
        "{:<16} {:<24} {:<24} {:>10} {:>7} {:>8} {:>12}",
        "topic", "event_id", "time", "dwell_ms", "weight", "decay", "contribution"
    ))?;
    let mut rest = contributions;
    while let Some(first) = rest.first() {
        let end = rest
            .iter()
            .position(|c| c.topic != first.topic)
            .unwrap_or(rest.len());
        let (group, tail) = rest.split_at(end);
        for c in group {
            let dwell = c
                .dwell_ms
                .map_or_else(|| "NULL".to_owned(), |d| d.to_string());
            io(writeln!(
                out,
                "{:<16} {:<24} {:<24} {:>10} {:>7.3} {:>8.5} {:>12.6}",
                c.topic,
                c.event_id,
                time(c.time_ms),
                dwell,
                c.weight,
                c.decay,
                c.contribution
            ))?;
        }
        let raw: f64 = group.iter().map(|c| c.contribution).sum();
        io(writeln!(
            out,
            "{:<16} {} views, raw {raw:.6}, score {:.6}",
            first.topic,
            group.len(),
            model.normalise(raw)
        ))?;
        rest = tail;
    }
    Ok(())
}
