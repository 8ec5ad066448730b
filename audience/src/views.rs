//! The views analysts get on top of the lake tables, defined here once:
//!
//! - `subjects` (`visitor_id`, `subject_id`): who each visitor is ([`SUBJECTS_SQL`]);
//! - `profiles`: one row per subject with its lifecycle `stage` ([`profile_sql`]);
//! - `segment_members` (`segment`, `subject_id`, `since`): current membership, from
//!   the latest change per segment and subject;
//! - `timeline` (`subject_id`, `at`, `kind`, `detail`): per subject, in time order,
//!   `first_contact`, `identified` (a `link` in the ledger; detail: the form),
//!   `consent` (each ledger entry for a purpose: `grant marketing`, `confirm
//!   marketing`, `withdraw analytics`, `unsubscribe marketing`, ...), `purchase` (the event's properties), `segment_entered` and
//!   `segment_exited` (detail: `segment: reason`) — the last two are what the mailing
//!   system was sent.

use datafusion::prelude::SessionContext;

use crate::config::LifecycleConfig;
use crate::identity::SUBJECTS_SQL;
use crate::profile::{profile_sql, purchase_condition};

const SEGMENT_MEMBERS_SQL: &str = "
SELECT segment, subject_id, at AS since FROM (
    SELECT segment, subject_id, change, at, ROW_NUMBER() OVER (
        PARTITION BY segment, subject_id ORDER BY seq DESC) AS rn
    FROM segment_changes)
WHERE rn = 1 AND change = 'entered'";

fn timeline_sql(lifecycle: &LifecycleConfig) -> String {
    let purchase = purchase_condition(lifecycle);
    format!(
        "SELECT subject_id, at, kind, detail FROM (
            SELECT s.subject_id, min(e.event_time) AS at, 'first_contact' AS kind,
                   CAST(NULL AS VARCHAR) AS detail
            FROM events e JOIN subjects s ON s.visitor_id = e.visitor_id
            WHERE e.is_bot = false GROUP BY s.subject_id
          UNION ALL
            SELECT c.subject_id, c.at, 'identified', regexp_match(c.evidence, '\"form\":\"([^\"]*)\"')[1]
            FROM ledger c WHERE c.kind = 'link' AND c.erased = false
          UNION ALL
            SELECT COALESCE(c.subject_id, s.subject_id, c.visitor_id), c.at, 'consent',
                   c.kind || ' ' || c.purpose
            FROM ledger c LEFT JOIN subjects s ON s.visitor_id = c.visitor_id
            WHERE c.purpose IS NOT NULL AND c.erased = false
          UNION ALL
            SELECT s.subject_id, e.event_time, 'purchase', e.props
            FROM events e JOIN subjects s ON s.visitor_id = e.visitor_id
            WHERE {purchase} AND e.is_bot = false
          UNION ALL
            SELECT subject_id, at, 'segment_' || change, segment || ': ' || reason
            FROM segment_changes
        )"
    )
}

/// Creates the views in a session over the lake (`Lake::session_context`).
pub async fn register_views(
    ctx: &SessionContext,
    lifecycle: &LifecycleConfig,
) -> datafusion::error::Result<()> {
    for (name, sql) in [
        ("subjects", SUBJECTS_SQL.to_owned()),
        ("profiles", profile_sql(lifecycle)),
        ("segment_members", SEGMENT_MEMBERS_SQL.to_owned()),
        ("timeline", timeline_sql(lifecycle)),
    ] {
        ctx.sql(&format!("CREATE VIEW {name} AS {sql}")).await?;
    }
    Ok(())
}
