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

use std::collections::{BTreeMap, HashMap, HashSet};

use datafusion::prelude::SessionContext;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use spur_lake::model::LedgerRow;
use spur_lake::positions::{
    LEDGER_HEAD_APP_ID, event_partitions, ledger_app_id, new_positions, past_positions,
};
use spur_lake::read::{booleans, collect, int64s, quote, strings};
use spur_lake::{Lake, TableKind, ledger_batch};
use spur_schemas::confirm::DOUBLE_OPT_IN_METHOD;
use spur_schemas::identify::{PURPOSES, link_verdict};
use spur_schemas::unsubscribe::UNSUBSCRIBE_METHOD;
use spur_schemas::wire::ConsentEvidence;
use tracing::{debug, info};

use crate::error::Result;
use crate::identity::LINKS_SQL;

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
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Draft {
    pub at: i64,
    pub kind: &'static str,
    pub purpose: Option<String>,
    pub subject_id: Option<String>,
    pub visitor_id: Option<String>,
    pub site_id: Option<String>,
    pub event_id: Option<String>,
    pub evidence: Option<String>,
    pub reason: Option<String>,
}

/// How a head is recorded in a commit: `<seq>:<chain>`.
fn head_record(head: &(i64, String)) -> String {
    format!("{}:{}", head.0, head.1)
}

/// SHA-256 of an entry's content, hex.
fn digest(seq: i64, d: &Draft) -> String {
    let content = json!([
        seq,
        d.at,
        d.kind,
        d.purpose,
        d.subject_id,
        d.visitor_id,
        d.site_id,
        d.event_id,
        d.evidence,
        d.reason
    ]);
    hex::encode(Sha256::digest(content.to_string().as_bytes()))
}

fn link(previous: &str, digest: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(previous.as_bytes());
    hasher.update(digest.as_bytes());
    hex::encode(hasher.finalize())
}

/// Places drafts after `head` (last seq and chain), returning the rows.
pub fn chain(head: &(i64, String), drafts: Vec<Draft>, recorded_at: i64) -> Vec<LedgerRow> {
    let (mut seq, mut previous) = head.clone();
    let dt = spur_schemas::time::date(recorded_at);
    drafts
        .into_iter()
        .map(|d| {
            seq += 1;
            let digest = digest(seq, &d);
            let chain = link(&previous, &digest);
            previous.clone_from(&chain);
            LedgerRow {
                seq,
                at: d.at,
                recorded_at,
                kind: d.kind.to_owned(),
                purpose: d.purpose,
                subject_id: d.subject_id,
                visitor_id: d.visitor_id,
                site_id: d.site_id,
                event_id: d.event_id,
                evidence: d.evidence,
                reason: d.reason,
                digest,
                chain,
                erased: false,
                dt: dt.clone(),
            }
        })
        .collect()
}

/// The event columns the follower reads.
#[derive(Debug, Clone, Default)]
pub struct SourceEvent {
    pub event_id: String,
    pub event_type: String,
    pub event_time: i64,
    pub site_id: String,
    pub visitor_id: String,
    pub visitor_kind: String,
    pub email_hash: Option<String>,
    pub url: Option<String>,
    pub form: Option<String>,
    pub consent_purposes: Option<String>,
    pub consent_evidence: Option<String>,
}

/// The ledger's evidence JSON: what the event's evidence said, plus the source page
/// and form.
fn evidence_json(event: &SourceEvent, evidence: Option<&ConsentEvidence>) -> Option<String> {
    let mut object = match evidence.map(serde_json::to_value) {
        Some(Ok(Value::Object(map))) => map,
        _ => serde_json::Map::new(),
    };
    if let Some(url) = &event.url {
        object.insert("source_url".into(), Value::String(url.clone()));
    }
    if let Some(form) = &event.form {
        object.insert("form".into(), Value::String(form.clone()));
    }
    (!object.is_empty()).then(|| Value::Object(object).to_string())
}

/// One of a subject's marketing `grant`, `withdraw` or `unsubscribe` entries: what a
/// confirmation is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarketingEntry {
    pub seq: i64,
    /// Event time, ms.
    pub at: i64,
    pub kind: &'static str,
}

/// What the follower knows while it turns events into entries: the person each
/// visitor is linked to, each subject's marketing entries, and the seq the next entry
/// gets. [`Known::record`] adds drafted entries, so later events of the same step see
/// them as if committed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Known {
    /// Visitor id → the person it is linked to.
    pub links: HashMap<String, String>,
    /// Subject → its marketing grants, withdrawals and unsubscribes.
    pub marketing: HashMap<String, Vec<MarketingEntry>>,
    /// The seq the next entry gets.
    pub next_seq: i64,
}

impl Known {
    /// Nothing known yet, after the chain's last seq `head_seq`.
    pub fn after(head_seq: i64) -> Known {
        Known {
            next_seq: head_seq + 1,
            ..Known::default()
        }
    }

    /// Takes in entries drafted for the chain, in order (each gets the next seq).
    pub fn record(&mut self, drafts: &[Draft]) {
        for d in drafts {
            let seq = self.next_seq;
            self.next_seq += 1;
            match (d.kind, &d.visitor_id, &d.subject_id) {
                ("link", Some(visitor), Some(subject)) => {
                    self.links.insert(visitor.clone(), subject.clone());
                }
                ("unlink", Some(visitor), _) => {
                    self.links.remove(visitor);
                }
                _ => {}
            }
            if d.purpose.as_deref() == Some("marketing")
                && MARKETING_KINDS.contains(&d.kind)
                && let Some(subject) = d.subject_id.clone().or_else(|| {
                    d.visitor_id
                        .as_ref()
                        .and_then(|v| self.links.get(v).cloned())
                })
            {
                self.marketing
                    .entry(subject)
                    .or_default()
                    .push(MarketingEntry {
                        seq,
                        at: d.at,
                        kind: d.kind,
                    });
            }
        }
    }
}

/// The entry kinds a double opt-in confirmation is checked against.
const MARKETING_KINDS: [&str; 3] = ["grant", "withdraw", "unsubscribe"];

/// Whether a confirmation of grant `grant_seq` holds for `subject`: the seq names a
/// marketing grant of the subject, and no withdrawal or unsubscribe of it is later
/// (in seq or in event time). A later grant does not make the link stale: banners
/// grant again on every visit, and the mailed link names the grant the request was
/// for. `Err` is the `confirm_refused` reason.
pub fn confirm_verdict(
    known: &Known,
    subject: &str,
    grant_seq: Option<i64>,
) -> Result<(), &'static str> {
    let entries = known.marketing.get(subject).map_or(&[][..], Vec::as_slice);
    let grant = grant_seq
        .and_then(|seq| entries.iter().find(|e| e.seq == seq && e.kind == "grant"))
        .ok_or("unknown_grant")?;
    if entries.iter().any(|e| {
        e.kind != "grant" && e.seq != grant.seq && (e.seq > grant.seq || e.at > grant.at)
    }) {
        return Err("stale_link");
    }
    Ok(())
}

/// The entries one event makes, given what is known so far (call [`Known::record`]
/// with them before the next event).
pub fn entries_for(event: &SourceEvent, known: &Known) -> Vec<Draft> {
    let evidence: Option<ConsentEvidence> = event
        .consent_evidence
        .as_deref()
        .and_then(|e| serde_json::from_str(e).ok());
    let base = Draft {
        at: event.event_time,
        site_id: (!event.site_id.is_empty()).then(|| event.site_id.clone()),
        event_id: Some(event.event_id.clone()),
        evidence: evidence_json(event, evidence.as_ref()),
        ..Draft::default()
    };
    match event.event_type.as_str() {
        "identify" => {
            let verdict = link_verdict(evidence.as_ref(), event.url.as_deref());
            let (Ok(()), Some(subject)) = (verdict, &event.email_hash) else {
                let reason = verdict.err().map_or("no_email", |r| r.code());
                return vec![Draft {
                    kind: "link_refused",
                    visitor_id: Some(event.visitor_id.clone()),
                    reason: Some(reason.to_owned()),
                    ..base
                }];
            };
            // Only the visitor's own id may carry its history over to the person.
            let persistent = event.visitor_kind == "persistent";
            let linked = persistent.then(|| event.visitor_id.clone());
            let mut out = vec![if persistent {
                Draft {
                    kind: "link",
                    subject_id: Some(subject.clone()),
                    visitor_id: linked.clone(),
                    ..base.clone()
                }
            } else {
                Draft {
                    kind: "link_refused",
                    subject_id: Some(subject.clone()),
                    visitor_id: Some(event.visitor_id.clone()),
                    reason: Some("not_persistent_visitor".to_owned()),
                    ..base.clone()
                }
            }];
            // The form's evidence grants; it never confirms (only the signed link does).
            let evidence = evidence.unwrap_or_default();
            for purpose in PURPOSES
                .iter()
                .filter(|p| evidence.purposes.iter().any(|e| e == *p))
            {
                out.push(Draft {
                    kind: "grant",
                    purpose: Some((*purpose).to_owned()),
                    subject_id: Some(subject.clone()),
                    visitor_id: linked.clone(),
                    ..base.clone()
                });
            }
            out
        }
        "consent" => {
            let purposes: BTreeMap<String, String> = event
                .consent_purposes
                .as_deref()
                .and_then(|p| serde_json::from_str(p).ok())
                .unwrap_or_default();
            let evidence = evidence.unwrap_or_default();
            let signed = event.visitor_kind == "subject";
            let (subject, visitor) = if signed {
                (Some(event.visitor_id.clone()), None)
            } else {
                (
                    known.links.get(&event.visitor_id).cloned(),
                    Some(event.visitor_id.clone()),
                )
            };
            let base = Draft {
                subject_id: subject.clone(),
                visitor_id: visitor,
                ..base
            };
            let claims_confirmation = evidence.confirmation
                || evidence.method.as_deref() == Some(DOUBLE_OPT_IN_METHOD)
                || evidence.grant_seq.is_some();
            if claims_confirmation && signed {
                // The signed link: `confirm` if it holds, else `confirm_refused` (never
                // a grant: a stale link must not revive consent taken back).
                let verdict = if !(evidence.confirmation
                    && evidence.method.as_deref() == Some(DOUBLE_OPT_IN_METHOD))
                {
                    Err("not_signed_link")
                } else if purposes.get("marketing").map(String::as_str) != Some("granted") {
                    Err("not_marketing_grant")
                } else {
                    confirm_verdict(known, &event.visitor_id, evidence.grant_seq)
                };
                return vec![Draft {
                    kind: if verdict.is_ok() {
                        "confirm"
                    } else {
                        "confirm_refused"
                    },
                    purpose: Some("marketing".to_owned()),
                    reason: verdict.err().map(str::to_owned),
                    ..base
                }];
            }
            // From a website: its grants and withdrawals count as such; a claim to
            // confirm is recorded as refused.
            let refused = claims_confirmation.then(|| Draft {
                kind: "confirm_refused",
                purpose: Some("marketing".to_owned()),
                reason: Some("not_signed_link".to_owned()),
                ..base.clone()
            });
            purposes
                .iter()
                .filter(|(p, _)| PURPOSES.contains(&p.as_str()))
                .filter_map(|(purpose, action)| {
                    let kind = match action.as_str() {
                        "granted" => "grant",
                        "withdrawn" if evidence.method.as_deref() == Some(UNSUBSCRIBE_METHOD) => {
                            "unsubscribe"
                        }
                        "withdrawn" => "withdraw",
                        _ => return None,
                    };
                    Some(Draft {
                        kind,
                        purpose: Some(purpose.clone()),
                        ..base.clone()
                    })
                })
                .chain(refused)
                .collect()
        }
        _ => Vec::new(),
    }
}

/// The entries of `events`, in order, updating `known` as each is drafted.
pub fn entries(events: &[SourceEvent], known: &mut Known) -> Vec<Draft> {
    let mut out = Vec::new();
    for event in events {
        let drafts = entries_for(event, known);
        known.record(&drafts);
        out.extend(drafts);
    }
    out
}

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
    pub async fn step(&mut self, lake: &mut Lake, now_ms: i64) -> Result<LedgerStep> {
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
        let mut known = known(&ctx, &sources, self.head.0).await?;
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
async fn known(ctx: &SessionContext, sources: &[SourceEvent], head_seq: i64) -> Result<Known> {
    let mut known = Known::after(head_seq);
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

/// The result of [`verify`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Verification {
    pub entries: u64,
    pub erased: u64,
    /// Heads recorded by commits still in the Delta log that were compared.
    pub heads: u64,
    /// The table's head, `<seq>:<chain>` (seq 0 and the genesis when empty): kept
    /// elsewhere, it lets a later run show that nothing up to it was rewritten.
    pub head: String,
    /// The first problem found, if any (`None`: the chain is intact).
    pub problem: Option<String>,
}

/// Checks the ledger as this `Lake` holds it:
/// 1. in seq order from 1, every digest (of entries not erased) and every chain link;
///    an erased entry must hold no content and be listed by an erasure
///    ([`REDACTION_STATUS`]);
/// 2. every head a commit still in the Delta log recorded (`seq:chain` under
///    [`HEAD_METADATA_KEY`], and the `txn` [`LEDGER_HEAD_APP_ID`]) is in the table
///    with the same chain — entries removed from the end or a chain rewritten from
///    some entry on fail here;
/// 3. the last commit's `txn` head is the table's last seq (nothing appended outside
///    the ledger's writers).
///
/// The problem names the first entry concerned (`entry <seq>: ...`).
pub async fn verify(lake: &Lake) -> Result<Verification> {
    let ctx = lake.session_context().await?;
    let accounted = redactions(&ctx).await?;
    let batches = collect(
        &ctx,
        "SELECT seq, CAST(at AS BIGINT) / 1000 AS at, kind, purpose, subject_id, visitor_id,
                site_id, event_id, evidence, reason, digest, chain, erased
         FROM ledger ORDER BY seq",
    )
    .await?;
    let mut previous = GENESIS.to_owned();
    // chains[i] is the chain of entry i + 1 (seqs are checked to run from 1).
    let mut chains: Vec<String> = Vec::new();
    let mut report = Verification {
        entries: 0,
        erased: 0,
        heads: 0,
        head: head_record(&(0, GENESIS.to_owned())),
        problem: None,
    };
    for batch in &batches {
        let column = |name: &str| strings(batch, name);
        let (kinds, purposes, subjects, visitors, sites) = (
            column("kind")?,
            column("purpose")?,
            column("subject_id")?,
            column("visitor_id")?,
            column("site_id")?,
        );
        let (events, evidence, reasons, digests, chain_column) = (
            column("event_id")?,
            column("evidence")?,
            column("reason")?,
            column("digest")?,
            column("chain")?,
        );
        let (seqs, ats, erased) = (
            int64s(batch, "seq")?,
            int64s(batch, "at")?,
            booleans(batch, "erased")?,
        );
        for i in 0..batch.num_rows() {
            report.entries += 1;
            let seq = seqs[i];
            let fail = |what: String| Some(format!("entry {seq}: {what}"));
            let expected_seq = chains.len() as i64 + 1;
            if seq != expected_seq {
                report.problem = fail(format!(
                    "expected seq {expected_seq} (entries missing or reordered)"
                ));
                return Ok(report);
            }
            let stored = digests[i].clone().unwrap_or_default();
            if erased[i] {
                report.erased += 1;
                let content = [
                    &subjects[i],
                    &visitors[i],
                    &sites[i],
                    &events[i],
                    &evidence[i],
                    &reasons[i],
                ];
                if content.iter().any(|c| c.is_some()) {
                    report.problem = fail("marked erased but holds content".into());
                    return Ok(report);
                }
                if !accounted.contains(&seq) {
                    report.problem =
                        fail("redacted, but no erasure in table erasures lists it".into());
                    return Ok(report);
                }
            } else {
                let draft = Draft {
                    at: ats[i],
                    kind: kind_name(kinds[i].as_deref().unwrap_or_default()),
                    purpose: purposes[i].clone(),
                    subject_id: subjects[i].clone(),
                    visitor_id: visitors[i].clone(),
                    site_id: sites[i].clone(),
                    event_id: events[i].clone(),
                    evidence: evidence[i].clone(),
                    reason: reasons[i].clone(),
                };
                if kinds[i].as_deref() != Some(draft.kind) || digest(seq, &draft) != stored {
                    report.problem = fail("content does not match its digest (altered)".into());
                    return Ok(report);
                }
            }
            let expected = link(&previous, &stored);
            if chain_column[i].as_deref() != Some(expected.as_str()) {
                report.problem =
                    fail("chain link broken (an earlier entry or this digest was altered)".into());
                return Ok(report);
            }
            chains.push(expected.clone());
            previous = expected;
        }
    }
    let mut records: Vec<RecordedHead> = lake
        .commit_records(TableKind::Ledger)
        .await?
        .into_iter()
        .map(|r| RecordedHead {
            version: r.version,
            txn: r.txns.get(LEDGER_HEAD_APP_ID).copied(),
            head: r.metadata.get(HEAD_METADATA_KEY).cloned(),
        })
        .collect();
    if records.iter().all(|r| r.txn.is_none()) {
        // The log no longer holds a commit with the head's `txn` (expired): the
        // table's state still knows the last one.
        records.push(RecordedHead {
            version: lake.version(TableKind::Ledger)?,
            txn: lake
                .txn_version(TableKind::Ledger, LEDGER_HEAD_APP_ID)
                .await?,
            head: None,
        });
    }
    let (heads, problem) = check_heads(&records, &chains);
    report.heads = heads;
    if let Some(last) = chains.last() {
        report.head = head_record(&(chains.len() as i64, last.clone()));
    }
    report.problem = problem;
    Ok(report)
}

/// What one ledger commit recorded about the head it left.
#[derive(Debug, Clone, PartialEq)]
struct RecordedHead {
    /// The table version of the commit.
    version: i64,
    /// Its `txn` [`LEDGER_HEAD_APP_ID`]: the last seq.
    txn: Option<i64>,
    /// Its `commitInfo` [`HEAD_METADATA_KEY`]: `<seq>:<chain>`.
    head: Option<String>,
}

/// Compares the heads the commits recorded (oldest first) with the table's chains
/// (`chains[i]`: the chain of entry i + 1). Returns how many heads were compared and
/// the problem with the lowest seq, if any.
fn check_heads(records: &[RecordedHead], chains: &[String]) -> (u64, Option<String>) {
    let last = chains.len() as i64;
    let mut compared = 0;
    let mut problems: Vec<(i64, String)> = Vec::new();
    let missing = |version: i64, seq: i64, problems: &mut Vec<(i64, String)>| {
        problems.push((
            last + 1,
            format!(
                "entry {}: missing, but commit {version} recorded the head at seq {seq} \
                 (entries after {last} removed)",
                last + 1
            ),
        ));
    };
    for record in records {
        if let Some(seq) = record.txn
            && seq > last
        {
            missing(record.version, seq, &mut problems);
        }
        let Some(head) = &record.head else {
            continue;
        };
        compared += 1;
        let parsed = head
            .split_once(':')
            .and_then(|(seq, chain)| Some((seq.parse::<i64>().ok()?, chain)));
        let Some((seq, chain)) = parsed else {
            problems.push((
                0,
                format!(
                    "commit {}: unreadable recorded head {head:?}",
                    record.version
                ),
            ));
            continue;
        };
        if seq > last {
            missing(record.version, seq, &mut problems);
        } else if seq >= 1 && chains[(seq - 1) as usize] != chain {
            problems.push((
                seq,
                format!(
                    "entry {seq}: its chain differs from the one commit {} recorded \
                     (entries up to here rewritten)",
                    record.version
                ),
            ));
        } else if seq == 0 && chain != GENESIS {
            problems.push((
                0,
                format!(
                    "commit {}: recorded an empty ledger with a chain",
                    record.version
                ),
            ));
        }
    }
    // The newest commit that recorded a head must have recorded this table's last
    // entry: later entries were appended by no ledger writer.
    if let Some(seq) = records.iter().rev().find_map(|r| r.txn)
        && seq < last
    {
        problems.push((
            seq + 1,
            format!(
                "entry {}: after the head the last ledger commit recorded ({seq}): \
                 appended outside the ledger's writers",
                seq + 1
            ),
        ));
    }
    let problem = problems
        .into_iter()
        .min_by_key(|(seq, _)| *seq)
        .map(|(_, p)| p);
    (compared, problem)
}

/// The ledger seqs the erasures list as redacted by them.
async fn redactions(ctx: &SessionContext) -> Result<HashSet<i64>> {
    let batches = collect(
        ctx,
        &format!(
            "SELECT receipt FROM erasures WHERE status = {} AND receipt IS NOT NULL",
            quote(REDACTION_STATUS)
        ),
    )
    .await?;
    let mut seqs = HashSet::new();
    for batch in &batches {
        for receipt in strings(batch, "receipt")?.into_iter().flatten() {
            seqs.extend(redacted_seqs(&receipt));
        }
    }
    Ok(seqs)
}

/// The seqs an erasure's receipt `["ledger", {"seqs": [...]}]` lists (none for
/// another table's).
fn redacted_seqs(receipt: &str) -> Vec<i64> {
    let Ok(Value::Array(parts)) = serde_json::from_str::<Value>(receipt) else {
        return Vec::new();
    };
    match parts.as_slice() {
        [Value::String(table), detail, ..] if table == TableKind::Ledger.name() => detail["seqs"]
            .as_array()
            .map(|seqs| seqs.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The static name of a known entry kind ("" for an unknown one, which then fails
/// verification).
fn kind_name(kind: &str) -> &'static str {
    [
        "link",
        "link_refused",
        "unlink",
        "grant",
        "confirm",
        "confirm_refused",
        "withdraw",
        "unsubscribe",
    ]
    .into_iter()
    .find(|k| *k == kind)
    .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identify(evidence: &str, url: Option<&str>) -> SourceEvent {
        SourceEvent {
            event_id: "e1".into(),
            event_type: "identify".into(),
            event_time: 1_000,
            site_id: "shop".into(),
            visitor_id: "v1".into(),
            visitor_kind: "persistent".into(),
            email_hash: Some("s1".into()),
            url: url.map(str::to_owned),
            consent_evidence: Some(evidence.into()),
            ..SourceEvent::default()
        }
    }

    /// A consent event of `visitor` (of `kind`) at `at`.
    fn consent(visitor: &str, kind: &str, at: i64, purposes: &str, evidence: &str) -> SourceEvent {
        SourceEvent {
            event_id: format!("c{at}"),
            event_type: "consent".into(),
            event_time: at,
            visitor_id: visitor.into(),
            visitor_kind: kind.into(),
            consent_purposes: Some(purposes.into()),
            consent_evidence: Some(evidence.into()),
            ..SourceEvent::default()
        }
    }

    /// The consent event the collector's signed-link endpoint makes for `grant_seq`.
    fn signed_confirm(subject: &str, at: i64, grant_seq: i64) -> SourceEvent {
        consent(
            subject,
            "subject",
            at,
            r#"{"marketing":"granted"}"#,
            &format!(
                r#"{{"purposes":["marketing"],"confirmation":true,"method":"double_opt_in_link","grant_seq":{grant_seq}}}"#
            ),
        )
    }

    fn kinds(drafts: &[Draft]) -> Vec<(&'static str, Option<&str>)> {
        drafts
            .iter()
            .map(|d| (d.kind, d.reason.as_deref()))
            .collect()
    }

    const FULL: &str = r#"{"purposes":["marketing"],"text_id":"nl-3","policy_version":"7"}"#;
    const GRANTED: &str = r#"{"marketing":"granted"}"#;
    const WITHDRAWN: &str = r#"{"marketing":"withdrawn"}"#;

    #[test]
    fn identify_with_evidence_links_and_grants() {
        let mut known = Known::after(0);
        let drafts = entries(&[identify(FULL, Some("https://s/f"))], &mut known);
        let kinds: Vec<_> = drafts.iter().map(|d| d.kind).collect();
        assert_eq!(kinds, ["link", "grant"]);
        assert_eq!(drafts[1].purpose.as_deref(), Some("marketing"));
        assert_eq!(drafts[1].visitor_id.as_deref(), Some("v1"));
        assert_eq!(known.links.get("v1").map(String::as_str), Some("s1"));
        assert_eq!(known.next_seq, 3);
        assert_eq!(
            known.marketing["s1"],
            [MarketingEntry {
                seq: 2,
                at: 1_000,
                kind: "grant"
            }]
        );
        let evidence: Value =
            serde_json::from_str(drafts[0].evidence.as_deref().expect("test")).expect("test");
        assert_eq!(evidence["source_url"], "https://s/f");
        assert_eq!(evidence["policy_version"], "7");
    }

    #[test]
    fn identify_without_policy_is_refused_with_reason() {
        let known = Known::after(0);
        let drafts = entries_for(
            &identify(
                r#"{"purposes":["marketing"],"text_id":"x"}"#,
                Some("https://s/f"),
            ),
            &known,
        );
        assert_eq!(drafts.len(), 1);
        assert_eq!(drafts[0].kind, "link_refused");
        assert_eq!(drafts[0].reason.as_deref(), Some("no_policy_reference"));
        assert_eq!(drafts[0].subject_id, None);
    }

    /// Regression: any browser could send `confirmation: true` with a sign-up and
    /// skip the double opt-in.
    #[test]
    fn an_identify_never_confirms() {
        let mut known = Known::after(0);
        let forged = r#"{"purposes":["marketing"],"text_id":"nl","policy_version":"7","confirmation":true,"method":"double_opt_in_link","grant_seq":2}"#;
        let drafts = entries(&[identify(forged, Some("https://s/f"))], &mut known);
        assert_eq!(kinds(&drafts), [("link", None), ("grant", None)]);
    }

    #[test]
    fn a_cookieless_identify_records_the_person_but_links_nothing() {
        let mut known = Known::after(0);
        let mut event = identify(
            r#"{"purposes":["analytics","marketing"],"text_id":"nl","policy_version":"7"}"#,
            Some("https://s/f"),
        );
        event.visitor_kind = "cookieless".into();
        let drafts = entries(&[event], &mut known);
        assert_eq!(
            kinds(&drafts),
            [
                ("link_refused", Some("not_persistent_visitor")),
                ("grant", None),
                ("grant", None)
            ]
        );
        assert_eq!(drafts[0].visitor_id.as_deref(), Some("v1"));
        for grant in &drafts[1..] {
            assert_eq!(
                (grant.subject_id.as_deref(), grant.visitor_id.as_deref()),
                (Some("s1"), None)
            );
        }
        assert!(known.links.is_empty(), "{:?}", known.links);
        // Later consent events of the shared id name no person.
        let later = entries(
            &[consent("v1", "cookieless", 2_000, WITHDRAWN, "{}")],
            &mut known,
        );
        assert_eq!(later[0].subject_id, None);
    }

    #[test]
    fn consent_events_map_to_kinds() {
        let mut known = Known::after(0);
        known.links.insert("v1".into(), "s1".into());
        let d = entries(
            &[consent(
                "v1",
                "persistent",
                1,
                r#"{"marketing":"granted","analytics":"withdrawn"}"#,
                "{}",
            )],
            &mut known,
        );
        let kinds: Vec<_> = d
            .iter()
            .map(|d| (d.kind, d.subject_id.as_deref()))
            .collect();
        assert_eq!(kinds, [("withdraw", Some("s1")), ("grant", Some("s1"))]);
        let d = entries(
            &[consent(
                "v1",
                "subject",
                2,
                WITHDRAWN,
                r#"{"method":"one_click_unsubscribe"}"#,
            )],
            &mut known,
        );
        assert_eq!(
            (
                d[0].kind,
                d[0].subject_id.as_deref(),
                d[0].visitor_id.as_deref()
            ),
            ("unsubscribe", Some("v1"), None)
        );
    }

    #[test]
    fn only_the_signed_link_for_a_standing_grant_confirms() {
        // seq 1 link, 2 grant (marketing) of s1 at t = 1000.
        let signup = identify(FULL, Some("https://s/f"));
        let mut known = Known::after(0);
        entries(std::slice::from_ref(&signup), &mut known);
        let d = entries(&[signed_confirm("s1", 5_000, 2)], &mut known);
        assert_eq!(kinds(&d), [("confirm", None)]);
        assert_eq!(
            (d[0].subject_id.as_deref(), d[0].visitor_id.as_deref()),
            (Some("s1"), None)
        );
        let evidence: Value =
            serde_json::from_str(d[0].evidence.as_deref().expect("test")).expect("test");
        assert_eq!(evidence["method"], DOUBLE_OPT_IN_METHOD);
        assert_eq!(evidence["grant_seq"], 2);

        // What a browser could send (the collector clears these fields, but the ledger
        // does not rely on it): refused, never a confirmation.
        let cases = [
            (
                consent(
                    "v1",
                    "persistent",
                    6_000,
                    GRANTED,
                    r#"{"purposes":["marketing"],"confirmation":true}"#,
                ),
                "not_signed_link",
            ),
            (
                consent(
                    "v1",
                    "persistent",
                    6_000,
                    GRANTED,
                    r#"{"confirmation":true,"method":"double_opt_in_link","grant_seq":2}"#,
                ),
                "not_signed_link",
            ),
            (
                consent(
                    "s1",
                    "subject",
                    6_000,
                    GRANTED,
                    r#"{"confirmation":true,"method":"one_click_unsubscribe","grant_seq":2}"#,
                ),
                "not_signed_link",
            ),
            (
                consent(
                    "s1",
                    "subject",
                    6_000,
                    GRANTED,
                    r#"{"method":"double_opt_in_link","grant_seq":2}"#,
                ),
                "not_signed_link",
            ),
            (
                consent(
                    "s1",
                    "subject",
                    6_000,
                    WITHDRAWN,
                    r#"{"confirmation":true,"method":"double_opt_in_link","grant_seq":2}"#,
                ),
                "not_marketing_grant",
            ),
            (
                consent(
                    "s1",
                    "subject",
                    6_000,
                    GRANTED,
                    r#"{"confirmation":true,"method":"double_opt_in_link"}"#,
                ),
                "unknown_grant",
            ),
            (signed_confirm("s1", 6_000, 1), "unknown_grant"),
            (signed_confirm("s2", 6_000, 2), "unknown_grant"),
        ];
        for (event, reason) in cases {
            let mut known = known.clone();
            let from_website = event.visitor_kind != "subject";
            let d = entries(&[event], &mut known);
            let refused = ("confirm_refused", Some(reason));
            if from_website {
                // The banner's grant still counts, as a grant (pending).
                assert_eq!(kinds(&d), [("grant", None), refused], "{reason}");
            } else {
                assert_eq!(kinds(&d), [refused], "{reason}");
            }
        }

        // A withdrawal after the grant, earlier in the same step: the link is stale.
        let mut stale = Known::after(0);
        let d = entries(
            &[
                signup.clone(),
                consent("v1", "persistent", 2_000, WITHDRAWN, "{}"),
                signed_confirm("s1", 3_000, 2),
            ],
            &mut stale,
        );
        assert_eq!(d[3].kind, "confirm_refused");
        assert_eq!(d[3].reason.as_deref(), Some("stale_link"));
        // A newer grant (the banner on the next visit) leaves the mailed link valid.
        let mut newer = Known::after(0);
        let d = entries(
            &[
                signup.clone(),
                consent("v1", "persistent", 2_000, GRANTED, "{}"),
                signed_confirm("s1", 3_000, 2),
                signed_confirm("s1", 3_000, 3),
            ],
            &mut newer,
        );
        assert_eq!(kinds(&d[3..]), [("confirm", None), ("confirm", None)]);
        // A withdrawal recorded before the grant but made after it (event time).
        let mut known = Known::after(10);
        known.marketing.insert(
            "s1".into(),
            vec![
                MarketingEntry {
                    seq: 4,
                    at: 9_000,
                    kind: "withdraw",
                },
                MarketingEntry {
                    seq: 7,
                    at: 1_000,
                    kind: "grant",
                },
            ],
        );
        assert_eq!(confirm_verdict(&known, "s1", Some(7)), Err("stale_link"));
        assert_eq!(confirm_verdict(&known, "s1", Some(4)), Err("unknown_grant"));
    }

    fn head(version: i64, txn: Option<i64>, head: Option<String>) -> RecordedHead {
        RecordedHead { version, txn, head }
    }

    #[test]
    fn recorded_heads_catch_truncation_rewrites_and_foreign_appends() {
        let chains: Vec<String> = (1..=4).map(|i| format!("c{i}")).collect();
        let records = [
            head(0, None, None),
            head(1, Some(0), Some(format!("0:{GENESIS}"))),
            head(2, Some(2), Some("2:c2".into())),
            head(3, None, None),
            head(4, Some(4), Some("4:c4".into())),
        ];
        assert_eq!(check_heads(&records, &chains), (3, None));
        // The last two entries deleted.
        let (_, problem) = check_heads(&records, &chains[..2]);
        let problem = problem.expect("truncation");
        assert!(problem.starts_with("entry 3: missing"), "{problem}");
        // Only the txn of a commit whose metadata was lost still says 4.
        let (_, problem) = check_heads(&[head(4, Some(4), None)], &chains[..3]);
        assert!(problem.expect("truncation").starts_with("entry 4:"));
        // Entry 2 altered and every chain recomputed.
        let mut rewritten = chains.clone();
        for c in &mut rewritten[1..] {
            c.push('x');
        }
        let (_, problem) = check_heads(&records, &rewritten);
        let problem = problem.expect("rewrite");
        assert!(
            problem.starts_with("entry 2: its chain differs"),
            "{problem}"
        );
        // An entry appended without the ledger's head.
        let mut more = chains.clone();
        more.push("c5".into());
        let (_, problem) = check_heads(&records, &more);
        assert!(
            problem
                .expect("append")
                .starts_with("entry 5: after the head")
        );
    }

    #[test]
    fn erasure_receipts_list_the_redacted_seqs() {
        assert_eq!(
            redacted_seqs(
                r#"["ledger",{"rows":2,"files_rewritten":0,"files_deleted":0,"seqs":[3,7]}]"#
            ),
            [3, 7]
        );
        assert!(redacted_seqs(r#"["events",{"rows":2,"seqs":[3]}]"#).is_empty());
        assert!(redacted_seqs(r#"{"erasure_id":"x"}"#).is_empty());
        assert!(redacted_seqs("not json").is_empty());
    }

    #[test]
    fn chain_links_each_entry_to_the_previous() {
        let drafts = vec![
            Draft {
                at: 1,
                kind: "grant",
                ..Draft::default()
            },
            Draft {
                at: 2,
                kind: "withdraw",
                ..Draft::default()
            },
        ];
        let rows = chain(&(0, GENESIS.to_owned()), drafts.clone(), 5);
        assert_eq!(rows[0].seq, 1);
        assert_eq!(rows[1].chain, link(&rows[0].chain, &rows[1].digest));
        assert_eq!(rows[0].digest, digest(1, &drafts[0]));
        // The same drafts after another head chain differently.
        let other = chain(&(1, rows[0].chain.clone()), drafts, 5);
        assert_ne!(other[0].chain, rows[0].chain);
    }
}
