//! Access (GDPR Art. 15): everything the lake holds about one subject, as JSON and
//! as a readable summary.
//!
//! The subject's rows: `events` of its visitors (the subject itself and every
//! visitor currently linked to it) and identify events carrying its e-mail
//! pseudonym; their `sessions`; `scores` and `segment_changes` (what was sent to the
//! mailing system) of the subject and its visitors; `ledger` entries naming the
//! subject or one of its visitors; and, opened from the contact vault, the e-mail
//! addresses the person gave (`contacts`: address, site, identify event, time).
//! Nothing else: the filters are exact matches on those ids.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use datafusion::arrow::json::ArrayWriter;
use serde_json::{Value, json};
use spur_lake::Lake;

use spur_audience::LINKS_SQL;
use spur_lake::read::{collect, quote, strings};
use spur_schemas::time::rfc3339_ms;

use crate::error::{Error, Result};

/// The export of one subject.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    pub subject_id: String,
    /// ms since the epoch.
    pub generated_at: i64,
    /// The visitor ids that are this subject (itself included).
    pub visitors: Vec<String>,
    /// Table name → its rows of the subject, as JSON objects.
    pub tables: BTreeMap<String, Vec<Value>>,
}

/// The visitor ids that are `subject` now: itself and every visitor linked to it.
pub(crate) async fn visitors_of(
    ctx: &datafusion::prelude::SessionContext,
    subject: &str,
) -> Result<Vec<String>> {
    let mut visitors = vec![subject.to_owned()];
    for batch in &collect(
        ctx,
        &format!(
            "SELECT DISTINCT visitor_id FROM ({LINKS_SQL}) WHERE subject_id = {}",
            quote(subject)
        ),
    )
    .await?
    {
        visitors.extend(strings(batch, "visitor_id")?.into_iter().flatten());
    }
    visitors.sort();
    visitors.dedup();
    Ok(visitors)
}

/// Collects the subject's rows from every table; with `keys_dir` (`keys.dir`), its
/// addresses decrypted from the contact vault (without, the `contacts` list is empty:
/// the export says so in its summary).
pub async fn export(
    lake: &Lake,
    subject: &str,
    now_ms: i64,
    keys_dir: Option<&Path>,
) -> Result<Export> {
    let ctx = lake.session_context().await?;
    let visitors = visitors_of(&ctx, subject).await?;
    let ids = visitors
        .iter()
        .map(|v| quote(v))
        .collect::<Vec<_>>()
        .join(", ");
    let s = quote(subject);
    let queries = [
        (
            "events",
            format!(
                "SELECT * FROM events WHERE visitor_id IN ({ids}) OR email_hash = {s}
                 ORDER BY event_time, event_id"
            ),
        ),
        (
            "sessions",
            format!("SELECT * FROM sessions WHERE visitor_id IN ({ids}) ORDER BY start_time"),
        ),
        (
            "scores",
            format!("SELECT * FROM scores WHERE subject_id IN ({ids}) ORDER BY as_of, topic"),
        ),
        (
            "segment_changes",
            format!("SELECT * FROM segment_changes WHERE subject_id IN ({ids}) ORDER BY seq"),
        ),
        (
            "ledger",
            format!(
                "SELECT * FROM ledger WHERE subject_id = {s} OR visitor_id IN ({ids}) ORDER BY seq"
            ),
        ),
    ];
    let mut tables = BTreeMap::new();
    for (name, sql) in queries {
        let batches = collect(&ctx, &sql).await?;
        let mut writer = ArrayWriter::new(Vec::new());
        for batch in &batches {
            writer.write(batch).map_err(|e| Error::Query(e.into()))?;
        }
        writer.finish().map_err(|e| Error::Query(e.into()))?;
        let bytes = writer.into_inner();
        let rows: Vec<Value> = if bytes.is_empty() {
            Vec::new()
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|e| Error::Config(format!("export of {name}: {e}")))?
        };
        tables.insert(name.to_owned(), rows);
    }
    let mut contacts = Vec::new();
    if let Some(dir) = keys_dir {
        let keys = spur_keys::KeyRing::load(dir)?;
        let vault = spur_keys::vault::Vault::new(dir);
        for sealed in spur_lake::contacts::sealed(&ctx, &[subject.to_owned()], false).await? {
            let email = vault.open(&keys, subject, &sealed.event_id, &sealed.address)?;
            contacts.push(json!({
                // `null`: the data key is gone (erased), the address unreadable.
                "email": email,
                "site_id": sealed.site_id,
                "event_id": sealed.event_id,
                "recorded_at": rfc3339_ms(sealed.recorded_at),
            }));
        }
    }
    tables.insert("contacts".to_owned(), contacts);
    Ok(Export {
        subject_id: subject.to_owned(),
        generated_at: now_ms,
        visitors,
        tables,
    })
}

impl Export {
    /// The machine-readable export.
    pub fn to_json(&self) -> Value {
        json!({
            "subject_id": self.subject_id,
            "generated_at": rfc3339_ms(self.generated_at),
            "visitors": self.visitors,
            "counts": self.tables.iter().map(|(k, v)| (k.clone(), v.len())).collect::<BTreeMap<_, _>>(),
            "tables": self.tables,
        })
    }

    fn rows(&self, table: &str) -> &[Value] {
        self.tables.get(table).map_or(&[], Vec::as_slice)
    }

    /// A summary a person can read: what is held, consents given, segment history.
    pub fn summary(&self) -> String {
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Data held about subject {} (as of {})",
            self.subject_id,
            rfc3339_ms(self.generated_at)
        );
        let _ = writeln!(
            out,
            "\nBrowsers and devices recognised as this person: {}",
            self.visitors.len()
        );
        let _ = writeln!(out, "\nE-mail addresses given:");
        for c in self.rows("contacts") {
            let _ = writeln!(
                out,
                "  {} (on {}, {})",
                text(c, "email"),
                text(c, "site_id"),
                text(c, "recorded_at")
            );
        }
        let events = self.rows("events");
        let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
        for e in events {
            *by_type.entry(text(e, "event_type")).or_default() += 1;
        }
        let _ = writeln!(out, "\nEvents recorded: {}", events.len());
        for (kind, n) in &by_type {
            let _ = writeln!(out, "  {kind}: {n}");
        }
        if let (Some(first), Some(last)) = (events.first(), events.last()) {
            let _ = writeln!(
                out,
                "  first {}, last {}",
                text(first, "event_time"),
                text(last, "event_time")
            );
        }
        let _ = writeln!(out, "\nVisits (sessions): {}", self.rows("sessions").len());
        let scores = self.rows("scores");
        if !scores.is_empty() {
            let _ = writeln!(out, "\nInterest scores (per scoring run):");
            for s in scores {
                let _ = writeln!(
                    out,
                    "  {} {}: {:.3}",
                    text(s, "as_of"),
                    text(s, "topic"),
                    s.get("score").and_then(Value::as_f64).unwrap_or_default()
                );
            }
        }
        let _ = writeln!(out, "\nConsent and identity record:");
        for l in self.rows("ledger") {
            let purpose = text(l, "purpose");
            let _ = writeln!(
                out,
                "  {} {}{}{} {}",
                text(l, "at"),
                text(l, "kind"),
                if purpose.is_empty() { "" } else { " " },
                purpose,
                text(l, "evidence")
            );
        }
        let _ = writeln!(out, "\nSegment changes sent to the mailing system:");
        for c in self.rows("segment_changes") {
            let _ = writeln!(
                out,
                "  {} {} {} ({})",
                text(c, "at"),
                text(c, "change"),
                text(c, "segment"),
                text(c, "reason")
            );
        }
        out
    }
}
