//! The consent and identity ledger (table `ledger`): append-only, hash-chained.
//!
//! **Entries** come from events (the follower, [`Ledger::step`]) and from operators
//! ([`Ledger::append_operator`], e.g. undoing a wrong merge):
//!
//! | kind | from | meaning |
//! |---|---|---|
//! | `link` | identify event with complete consent evidence, from a persistent visitor id | the visitor is the person `subject_id` |
//! | `link_refused` | identify event without that evidence, or from a visitor id that is not persistent | no link; `reason` says why |
//! | `unlink` | operator (`spur subject split`) | the visitor is no longer the person |
//! | `grant` | identify evidence or consent event | consent to `purpose` given |
//! | `confirm` | the double opt-in link (see below) | marketing consent confirmed |
//! | `confirm_refused` | a confirmation that does not hold | no confirmation; `reason` says why |
//! | `withdraw` | consent event | consent to `purpose` withdrawn |
//! | `unsubscribe` | one-click unsubscribe (RFC 8058) | marketing withdrawn from a mail |
//!
//! **Links only what belongs to the person**: an identify links its visitor id only
//! when that id is `persistent` (the tracker's own, with analytics consent). A
//! `cookieless` id is shared by everyone behind one address and browser that day, so
//! linking it would hand their browsing to the person: the identify then records the
//! person's grants (`subject_id`, no `visitor_id`) and `link_refused` with reason
//! `not_persistent_visitor`.
//!
//! **Double opt-in cannot be forged**: a `confirm` comes only from a consent event
//! of visitor kind `subject` (the collector's signed-link endpoint,
//! `spur_schemas::confirm`) granting marketing with evidence `confirmation: true`,
//! `method` = [`DOUBLE_OPT_IN_METHOD`] and `grant_seq` naming a marketing `grant` of
//! the subject, with no marketing `withdraw` or `unsubscribe` after it (later in
//! seq or in time; entries drafted earlier in the same step count). Any other claim
//! to confirm becomes `confirm_refused`: `not_signed_link` (another visitor kind,
//! method or no `confirmation`), `not_marketing_grant`, `unknown_grant` (no
//! `grant_seq`, or it names no marketing grant of the subject) or `stale_link` (a
//! withdrawal or unsubscribe came after; a newer grant does not count: banners grant
//! on every visit). A signed event that fails records only
//! that (a stale link must not revive consent); a website's consent event that claims
//! to confirm still records its grants and withdrawals. An identify's evidence never
//! confirms: it grants.
//!
//! **Tamper evidence**: `digest` = SHA-256 of the entry's content (the JSON array of
//! seq, at, kind, purpose, subject, visitor, site, event, evidence, reason), and
//! `chain` = SHA-256(previous `chain` ‖ `digest`), from a genesis of 64 zeros. Every
//! commit records the head it leaves (`txn` [`LEDGER_HEAD_APP_ID`] = last seq, and
//! `seq:chain` under [`HEAD_METADATA_KEY`] in its `commitInfo`). [`verify`] recomputes
//! digests and chain, and compares the table with every head still in the Delta log:
//! changing, inserting, removing (also the last entries) or re-chaining entries fails.
//! An erasure redacts entries (content NULL, `erased` true) but keeps `digest` and
//! `chain`; a redaction is valid only when an `erasures` row of the erasure lists its
//! seq ([`REDACTION_STATUS`]).
//!
//! **One writer at a time**: every commit carries the `txn` `spur-ledger-head` =
//! its last seq; a concurrent commit with the same app id makes delta-rs refuse the
//! second one (it then reloads and retries), so the chain never forks. Per partition
//! of the events topic, `spur-ledger-events-<p>` records the last event offset the
//! follower covered, in the same commit as the entries: restarts resume exactly.

use std::collections::BTreeMap;

use datafusion::prelude::SessionContext;
use spur_lake::model::LedgerRow;
use spur_lake::positions::{
    LEDGER_HEAD_APP_ID, event_partitions, ledger_app_id, new_positions, past_positions,
};
use spur_lake::read::{collect, int64s, quote, strings};
use spur_lake::{Lake, TableKind, ledger_batch};
use tracing::{debug, info};

use crate::error::Result;
use crate::identity::{Identity, LINKS_SQL};

mod entries;
#[cfg(test)]
mod tests;
mod verify;

use entries::head_record;
pub use entries::{
    Draft, Known, MarketingEntry, SourceEvent, chain, confirm_verdict, entries, entries_for,
};
use verify::kind_name;
pub use verify::{Verification, verify};

/// The `commitInfo` key under which every ledger commit records the head it leaves,
/// as `<seq>:<chain>` ([`verify`] compares the table with each).
pub const HEAD_METADATA_KEY: &str = "spurLedgerHead";

/// The `erasures` status of the row with which an erasure lists the ledger seqs it
/// redacts, written before the redaction: receipt `["ledger", {"seqs": [...], ...}]`
/// (`spur_gdpr::erase`). A redacted entry no such row lists fails [`verify`].
pub const REDACTION_STATUS: &str = "table_done";

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Content columns an erasure sets to NULL.
pub const REDACTED_COLUMNS: [&str; 6] = [
    "subject_id",
    "visitor_id",
    "site_id",
    "event_id",
    "evidence",
    "reason",
];

/// An entry before it has its place in the chain.
/// What one follower step wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LedgerStep {
    /// Events past the position the step covered.
    pub events: u64,
    /// Entries appended.
    pub entries: Vec<LedgerRow>,
}

/// The follower's state: the chain's head and its position in the events table.
#[derive(Debug)]
pub struct Ledger {
    head: (i64, String),
    watermarks: BTreeMap<i32, i64>,
    events_seen: Option<i64>,
}

impl Ledger {
    /// Loads the head and the position from the lake.
    pub async fn load(lake: &Lake) -> Result<Ledger> {
        let ctx = lake.session_context().await?;
        let head = head(&ctx).await?;
        let mut watermarks = BTreeMap::new();
        for partition in event_partitions(&ctx).await? {
            if let Some(offset) = lake
                .txn_version(TableKind::Ledger, &ledger_app_id(partition))
                .await?
            {
                watermarks.insert(partition, offset);
            }
        }
        debug!(seq = head.0, partitions = watermarks.len(), "ledger loaded");
        Ok(Ledger {
            head,
            watermarks,
            events_seen: None,
        })
    }

    /// The last seq written.
    pub fn head_seq(&self) -> i64 {
        self.head.0
    }

    fn new_rows(&self) -> String {
        past_positions(&self.watermarks)
    }

    /// Turns the identify and consent events past the position into entries and
    /// commits them with the new position. On error nothing changed: [`Ledger::load`]
    /// again (another writer may have committed).
    ///
    /// Who is linked comes from `identity` when it has taken in every entry up to the
    /// head (the audience engine keeps one), else from [`LINKS_SQL`] over the ledger.
    pub async fn step(
        &mut self,
        lake: &mut Lake,
        now_ms: i64,
        identity: Option<&Identity>,
    ) -> Result<LedgerStep> {
        lake.refresh().await?;
        // Another writer (an operator's split, a second follower) moved the head: go
        // on from theirs, or the chain would fork.
        if lake
            .txn_version(TableKind::Ledger, LEDGER_HEAD_APP_ID)
            .await?
            .unwrap_or(0)
            != self.head.0
        {
            *self = Ledger::load(lake).await?;
        }
        let events_version = lake.version(TableKind::Events)?;
        if self.events_seen == Some(events_version) {
            return Ok(LedgerStep::default());
        }
        let ctx = lake.session_context().await?;
        let new_rows = self.new_rows();
        let (marks, events) = new_positions(&ctx, &new_rows).await?;
        if marks.is_empty() {
            self.events_seen = Some(events_version);
            return Ok(LedgerStep::default());
        }
        let sources = source_events(&ctx, &new_rows).await?;
        let identity = identity.filter(|i| i.seq() == self.head.0);
        let mut known = known(&ctx, &sources, self.head.0, identity).await?;
        let drafts = entries(&sources, &mut known);
        let rows = chain(&self.head, drafts, now_ms);
        let new_head = rows
            .last()
            .map_or_else(|| self.head.clone(), |r| (r.seq, r.chain.clone()));
        let mut txns: Vec<(String, i64)> =
            marks.iter().map(|(p, o)| (ledger_app_id(*p), *o)).collect();
        txns.push((LEDGER_HEAD_APP_ID.to_owned(), new_head.0));
        lake.append_with_metadata(
            TableKind::Ledger,
            ledger_batch(&rows)?,
            &txns,
            &[(HEAD_METADATA_KEY, head_record(&new_head))],
        )
        .await?;
        if !rows.is_empty() {
            info!(
                entries = rows.len(),
                seq = new_head.0,
                "ledger entries appended"
            );
        }
        self.head = new_head;
        self.watermarks.extend(marks);
        self.events_seen = Some(events_version);
        Ok(LedgerStep {
            events,
            entries: rows,
        })
    }

    /// Appends operator entries (e.g. `unlink`) after the current head, in one
    /// commit. Fails with a conflict if another writer appended meanwhile; the caller
    /// retries with a fresh [`Ledger::load`].
    pub async fn append_operator(
        lake: &mut Lake,
        drafts: Vec<Draft>,
        now_ms: i64,
    ) -> Result<Vec<LedgerRow>> {
        lake.refresh().await?;
        let ctx = lake.session_context().await?;
        let head = head(&ctx).await?;
        let rows = chain(&head, drafts, now_ms);
        let last = rows
            .last()
            .map_or_else(|| head.clone(), |r| (r.seq, r.chain.clone()));
        lake.append_with_metadata(
            TableKind::Ledger,
            ledger_batch(&rows)?,
            &[(LEDGER_HEAD_APP_ID.to_owned(), last.0)],
            &[(HEAD_METADATA_KEY, head_record(&last))],
        )
        .await?;
        Ok(rows)
    }
}

/// The chain's last seq and link (genesis when empty).
async fn head(ctx: &SessionContext) -> Result<(i64, String)> {
    let batches = collect(
        ctx,
        "SELECT seq, chain FROM ledger ORDER BY seq DESC LIMIT 1",
    )
    .await?;
    for batch in &batches {
        if batch.num_rows() > 0 {
            let seq = int64s(batch, "seq")?[0];
            let chain = strings(batch, "chain")?.swap_remove(0).unwrap_or_default();
            return Ok((seq, chain));
        }
    }
    Ok((0, GENESIS.to_owned()))
}

/// Identify and consent events past the position, in partition and offset order.
async fn source_events(ctx: &SessionContext, new_rows: &str) -> Result<Vec<SourceEvent>> {
    let batches = collect(
        ctx,
        &format!(
            "SELECT event_id, event_type, CAST(event_time AS BIGINT) / 1000 AS event_time,
                    site_id, visitor_id, visitor_kind, email_hash, url, form,
                    consent_purposes, consent_evidence
             FROM events
             WHERE event_type IN ('identify', 'consent') AND is_bot = false AND {new_rows}
             ORDER BY kafka_partition, kafka_offset, event_time, event_id"
        ),
    )
    .await?;
    let mut out = Vec::new();
    for batch in &batches {
        let column = |name: &str| strings(batch, name);
        let (ids, types, sites, visitors, kinds) = (
            column("event_id")?,
            column("event_type")?,
            column("site_id")?,
            column("visitor_id")?,
            column("visitor_kind")?,
        );
        let (emails, urls, forms, purposes, evidence) = (
            column("email_hash")?,
            column("url")?,
            column("form")?,
            column("consent_purposes")?,
            column("consent_evidence")?,
        );
        let times = int64s(batch, "event_time")?;
        for i in 0..batch.num_rows() {
            out.push(SourceEvent {
                event_id: ids[i].clone().unwrap_or_default(),
                event_type: types[i].clone().unwrap_or_default(),
                event_time: times[i],
                site_id: sites[i].clone().unwrap_or_default(),
                visitor_id: visitors[i].clone().unwrap_or_default(),
                visitor_kind: kinds[i].clone().unwrap_or_default(),
                email_hash: emails[i].clone(),
                url: urls[i].clone(),
                form: forms[i].clone(),
                consent_purposes: purposes[i].clone(),
                consent_evidence: evidence[i].clone(),
            });
        }
    }
    Ok(out)
}

/// What the ledger knows about the visitors and subjects of `sources`: the current
/// link of each visitor, and the marketing entries of each subject a signed consent
/// event names (the confirmations to check).
async fn known(
    ctx: &SessionContext,
    sources: &[SourceEvent],
    head_seq: i64,
    identity: Option<&Identity>,
) -> Result<Known> {
    let mut known = Known::after(head_seq);
    if let Some(identity) = identity {
        let links = &identity.subjects().person_of;
        for source in sources {
            if let Some(person) = links.get(&source.visitor_id) {
                known
                    .links
                    .insert(source.visitor_id.clone(), person.clone());
            }
        }
    } else {
        let mut visitors: Vec<String> = sources.iter().map(|s| quote(&s.visitor_id)).collect();
        visitors.sort();
        visitors.dedup();
        if visitors.is_empty() {
            return Ok(known);
        }
        let sql = format!(
            "SELECT visitor_id, subject_id FROM ({}) WHERE visitor_id IN ({})",
            LINKS_SQL,
            visitors.join(", ")
        );
        for batch in &collect(ctx, &sql).await? {
            let visitor = strings(batch, "visitor_id")?;
            let subject = strings(batch, "subject_id")?;
            for (v, s) in visitor.into_iter().zip(subject) {
                if let (Some(v), Some(s)) = (v, s) {
                    known.links.insert(v, s);
                }
            }
        }
    }
    let mut subjects: Vec<String> = sources
        .iter()
        .filter(|s| s.event_type == "consent" && s.visitor_kind == "subject")
        .map(|s| quote(&s.visitor_id))
        .collect();
    subjects.sort();
    subjects.dedup();
    if subjects.is_empty() {
        return Ok(known);
    }
    // Attributed as `consent_sql` attributes them: the subject the entry names, else
    // the person its visitor is linked to now.
    let sql = format!(
        "SELECT subject_id, seq, at, kind FROM (
            SELECT COALESCE(c.subject_id, l.subject_id) AS subject_id, c.seq,
                   CAST(c.at AS BIGINT) / 1000 AS at, c.kind
            FROM ledger c LEFT JOIN ({LINKS_SQL}) l ON l.visitor_id = c.visitor_id
            WHERE c.purpose = 'marketing' AND c.erased = false
              AND c.kind IN ('grant', 'withdraw', 'unsubscribe'))
         WHERE subject_id IN ({})
         ORDER BY seq",
        subjects.join(", ")
    );
    for batch in &collect(ctx, &sql).await? {
        let (subject, kind) = (strings(batch, "subject_id")?, strings(batch, "kind")?);
        let (seq, at) = (int64s(batch, "seq")?, int64s(batch, "at")?);
        for i in 0..batch.num_rows() {
            if let (Some(subject), Some(kind)) = (&subject[i], &kind[i]) {
                known
                    .marketing
                    .entry(subject.clone())
                    .or_default()
                    .push(MarketingEntry {
                        seq: seq[i],
                        at: at[i],
                        kind: kind_name(kind),
                    });
            }
        }
    }
    Ok(known)
}
