//! Scripted histories: events appended as the processor would (increasing offsets
//! in partition 0, the offset committed with the rows), sign-ups, consent changes and
//! interest in `boots`, from [`T0`] on.

use anyhow::{Context, Result};
use spur_lake::model::EventRow;
use spur_lake::{Lake, TableKind};

use crate::rows::{identify, pageview};

/// 2025-12-10T00:00:00Z.
pub const T0: i64 = 1_765_324_800_000;

/// The segments the histories are written for, as `(name, condition)` (a test
/// turns them into the audience crate's segment definitions): `boot_fans` (interest
/// in `boots` of at least 0.3) and `customers` (stage `customer` or `retained`).
pub const BOOT_FANS: [(&str, &str); 2] = [
    ("boot_fans", "interest['boots'] >= 0.3"),
    ("customers", "stage IN ('customer', 'retained')"),
];

/// Appends events to the lake with increasing offsets in partition 0, as the
/// processor would.
#[derive(Debug)]
pub struct Writer {
    pub lake: Lake,
    offset: i64,
}

impl Writer {
    pub async fn new(root: &str) -> Result<Writer> {
        Ok(Writer {
            lake: Lake::open(root).await?,
            offset: 0,
        })
    }

    pub async fn append(&mut self, mut rows: Vec<EventRow>) -> Result<()> {
        for row in &mut rows {
            row.kafka_partition = 0;
            row.kafka_offset = self.offset;
            self.offset += 1;
        }
        let batch = spur_lake::events_batch(&rows)?;
        self.lake
            .append(
                TableKind::Events,
                batch,
                &[("spur-processor-events-test-0".to_owned(), self.offset - 1)],
            )
            .await?;
        Ok(())
    }

    /// Closes the sessions of `events` (all of each session's events): their rows,
    /// with dwell times, as the processor writes them when they close.
    pub async fn close(&mut self, events: &[EventRow]) -> Result<()> {
        append_closed_sessions(&mut self.lake, events).await
    }
}

/// Appends the sessions of `events`, closed ([`crate::rows::closed_sessions`]: one
/// row per session with its pageviews' dwell), to table `sessions` in one commit, as
/// the processor writes them when they close.
pub async fn append_closed_sessions(lake: &mut Lake, events: &[EventRow]) -> Result<()> {
    let rows = crate::rows::closed_sessions(events);
    lake.append(TableKind::Sessions, spur_lake::sessions_batch(&rows)?, &[])
        .await?;
    Ok(())
}

/// An `identify` of `visitor` as `email_hash` whose form collected marketing
/// consent (or not). Under double opt-in the marketing grant is pending until a
/// [`confirm`]; with `lifecycle.double_opt_in = false` it is valid at once.
pub fn signup(id: &str, visitor: &str, time: i64, email_hash: &str, marketing: bool) -> EventRow {
    let mut row = identify(id, visitor, time, email_hash);
    row.form = Some("newsletter".into());
    row.consent_evidence = Some(if marketing {
        r#"{"purposes":["analytics","marketing"],"text_id":"newsletter-v2","policy_version":"2025-06"}"#.into()
    } else {
        r#"{"purposes":["analytics"],"text_id":"marketing","policy_version":"2025-06"}"#.into()
    });
    row
}

/// A `consent` event of `visitor` (a site's banner) setting marketing to `action`.
/// A grant is pending under double opt-in, like a sign-up's.
pub fn consent(id: &str, visitor: &str, time: i64, action: &str) -> EventRow {
    let mut row = pageview(id, visitor, "s-consent", time, "/privacy", &[]);
    row.event_type = "consent".into();
    row.path = None;
    row.consent_purposes = Some(format!(r#"{{"marketing":"{action}"}}"#));
    row.consent_evidence =
        (action == "granted").then(|| r#"{"purposes":["marketing"]}"#.to_owned());
    row
}

/// The consent event the collector's `/v1/confirm` produces when `subject` confirms
/// marketing grant `grant_seq` (the ledger seq a confirmation request names): visitor
/// kind `subject`, no site, evidence only the collector can set.
pub fn confirm(id: &str, subject: &str, time: i64, grant_seq: i64) -> EventRow {
    let mut row = pageview(id, subject, "s-confirm", time, "/", &[]);
    row.event_type = "consent".into();
    row.visitor_kind = "subject".into();
    row.site_id = String::new();
    row.url = None;
    row.path = None;
    row.consent_purposes = Some(r#"{"marketing":"granted"}"#.into());
    row.consent_evidence = Some(format!(
        r#"{{"purposes":["marketing"],"confirmation":true,"method":"{}","grant_seq":{grant_seq}}}"#,
        spur_schemas::confirm::DOUBLE_OPT_IN_METHOD
    ));
    row
}

/// `n` views of boots pages by `visitor`, a minute apart from `time`.
pub fn boot_views(prefix: &str, visitor: &str, time: i64, n: i64) -> Vec<EventRow> {
    (0..n)
        .map(|i| {
            pageview(
                &format!("{prefix}-{i}"),
                visitor,
                &format!("s-{prefix}"),
                time + i * 60_000,
                &format!("/boots/{i}"),
                &["boots"],
            )
        })
        .collect()
}

/// A temporary directory's path as a lake root.
pub fn root(dir: &tempfile::TempDir) -> Result<String> {
    dir.path()
        .to_str()
        .map(str::to_owned)
        .context("non-UTF-8 temp dir")
}
