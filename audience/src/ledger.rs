//! The consent and identity ledger (table `ledger`): append-only, hash-chained.
//!
//! **Entries** come from events (the follower, [`Ledger::step`]) and from operators
//! ([`Ledger::append_operator`], e.g. undoing a wrong merge):
//!
//! | kind | from | meaning |
//! |---|---|---|
//! | `link` | identify event with complete consent evidence | the visitor is the person `subject_id` |
//! | `link_refused` | identify event without it | no link; `reason` says what was missing |
//! | `unlink` | operator (`spur subject split`) | the visitor is no longer the person |
//! | `grant` | identify evidence or consent event | consent to `purpose` given |
//! | `confirm` | evidence with `confirmation` (the double opt-in click) | marketing consent confirmed |
//! | `withdraw` | consent event | consent to `purpose` withdrawn |
//! | `unsubscribe` | one-click unsubscribe (RFC 8058) | marketing withdrawn from a mail |
//!
//! **Tamper evidence**: `digest` = SHA-256 of the entry's content (the JSON array of
//! seq, at, kind, purpose, subject, visitor, site, event, evidence, reason), and
//! `chain` = SHA-256(previous `chain` ‖ `digest`), from a genesis of 64 zeros.
//! Changing, inserting or removing a past entry breaks [`verify`]. An erasure
//! redacts entries (content NULL, `erased` true) but keeps `digest` and `chain`, so
//! the rest of the chain still verifies.
//!
//! **One writer at a time**: every commit carries the `txn` `spur-ledger-head` =
//! its last seq; a concurrent commit with the same app id makes delta-rs refuse the
//! second one (it then reloads and retries), so the chain never forks. Per partition
//! of the events topic, `spur-ledger-events-<p>` records the last event offset the
//! follower covered, in the same commit as the entries: restarts resume exactly.

use std::collections::{BTreeMap, HashMap};

use datafusion::prelude::SessionContext;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use spur_lake::model::LedgerRow;
use spur_lake::positions::{
    LEDGER_HEAD_APP_ID, event_partitions, ledger_app_id, new_positions, past_positions,
};
use spur_lake::read::{booleans, collect, int64s, quote, strings};
use spur_lake::{Lake, TableKind, ledger_batch};
use spur_schemas::identify::{PURPOSES, link_verdict};
use spur_schemas::unsubscribe::UNSUBSCRIBE_METHOD;
use spur_schemas::wire::ConsentEvidence;
use tracing::{debug, info};

use crate::error::Result;
use crate::identity::LINKS_SQL;

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

/// The entries one event makes. `links` maps visitor ids to the person they are
/// linked to (as far as known); identify events update it.
pub fn entries_for(event: &SourceEvent, links: &mut HashMap<String, String>) -> Vec<Draft> {
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
            links.insert(event.visitor_id.clone(), subject.clone());
            let evidence = evidence.unwrap_or_default();
            let mut out = vec![Draft {
                kind: "link",
                subject_id: Some(subject.clone()),
                visitor_id: Some(event.visitor_id.clone()),
                ..base.clone()
            }];
            for purpose in PURPOSES
                .iter()
                .filter(|p| evidence.purposes.iter().any(|e| e == *p))
            {
                let kind = if evidence.confirmation && *purpose == "marketing" {
                    "confirm"
                } else {
                    "grant"
                };
                out.push(Draft {
                    kind,
                    purpose: Some((*purpose).to_owned()),
                    subject_id: Some(subject.clone()),
                    visitor_id: Some(event.visitor_id.clone()),
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
            let (subject, visitor) = if event.visitor_kind == "subject" {
                (Some(event.visitor_id.clone()), None)
            } else {
                (
                    links.get(&event.visitor_id).cloned(),
                    Some(event.visitor_id.clone()),
                )
            };
            purposes
                .iter()
                .filter(|(p, _)| PURPOSES.contains(&p.as_str()))
                .filter_map(|(purpose, action)| {
                    let kind = match action.as_str() {
                        "granted" if evidence.confirmation && purpose == "marketing" => "confirm",
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
                        subject_id: subject.clone(),
                        visitor_id: visitor.clone(),
                        ..base.clone()
                    })
                })
                .collect()
        }
        _ => Vec::new(),
    }
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
        let mut links = known_links(&ctx, &sources).await?;
        let drafts: Vec<Draft> = sources
            .iter()
            .flat_map(|e| entries_for(e, &mut links))
            .collect();
        let rows = chain(&self.head, drafts, now_ms);
        let new_head = rows
            .last()
            .map_or_else(|| self.head.clone(), |r| (r.seq, r.chain.clone()));
        let mut txns: Vec<(String, i64)> =
            marks.iter().map(|(p, o)| (ledger_app_id(*p), *o)).collect();
        txns.push((LEDGER_HEAD_APP_ID.to_owned(), new_head.0));
        lake.append(TableKind::Ledger, ledger_batch(&rows)?, &txns)
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
        let last = rows.last().map_or(head.0, |r| r.seq);
        lake.append(
            TableKind::Ledger,
            ledger_batch(&rows)?,
            &[(LEDGER_HEAD_APP_ID.to_owned(), last)],
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

/// The current link of each visitor of `sources`, from the ledger.
async fn known_links(
    ctx: &SessionContext,
    sources: &[SourceEvent],
) -> Result<HashMap<String, String>> {
    let mut visitors: Vec<String> = sources.iter().map(|s| quote(&s.visitor_id)).collect();
    visitors.sort();
    visitors.dedup();
    let mut links = HashMap::new();
    if visitors.is_empty() {
        return Ok(links);
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
                links.insert(v, s);
            }
        }
    }
    Ok(links)
}

/// The result of [`verify`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Verification {
    pub entries: u64,
    pub erased: u64,
    /// The first problem found, if any (`None`: the chain is intact).
    pub problem: Option<String>,
}

/// Recomputes every digest (of entries not erased) and every link, in seq order.
pub async fn verify(lake: &Lake) -> Result<Verification> {
    let ctx = lake.session_context().await?;
    let batches = collect(
        &ctx,
        "SELECT seq, CAST(at AS BIGINT) / 1000 AS at, kind, purpose, subject_id, visitor_id,
                site_id, event_id, evidence, reason, digest, chain, erased
         FROM ledger ORDER BY seq",
    )
    .await?;
    let mut previous = GENESIS.to_owned();
    let mut expected_seq = 1;
    let mut report = Verification {
        entries: 0,
        erased: 0,
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
        let (events, evidence, reasons, digests, chains) = (
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
            if seq != expected_seq {
                report.problem = fail(format!(
                    "expected seq {expected_seq} (entries missing or reordered)"
                ));
                return Ok(report);
            }
            expected_seq += 1;
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
            if chains[i].as_deref() != Some(expected.as_str()) {
                report.problem =
                    fail("chain link broken (an earlier entry or this digest was altered)".into());
                return Ok(report);
            }
            previous = expected;
        }
    }
    Ok(report)
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

    const FULL: &str = r#"{"purposes":["marketing"],"text_id":"nl-3","policy_version":"7"}"#;

    #[test]
    fn identify_with_evidence_links_and_grants() {
        let mut links = HashMap::new();
        let drafts = entries_for(&identify(FULL, Some("https://s/f")), &mut links);
        let kinds: Vec<_> = drafts.iter().map(|d| d.kind).collect();
        assert_eq!(kinds, ["link", "grant"]);
        assert_eq!(drafts[1].purpose.as_deref(), Some("marketing"));
        assert_eq!(links.get("v1").map(String::as_str), Some("s1"));
        let evidence: Value =
            serde_json::from_str(drafts[0].evidence.as_deref().expect("test")).expect("test");
        assert_eq!(evidence["source_url"], "https://s/f");
        assert_eq!(evidence["policy_version"], "7");
    }

    #[test]
    fn identify_without_policy_is_refused_with_reason() {
        let mut links = HashMap::new();
        let drafts = entries_for(
            &identify(
                r#"{"purposes":["marketing"],"text_id":"x"}"#,
                Some("https://s/f"),
            ),
            &mut links,
        );
        assert_eq!(drafts.len(), 1);
        assert_eq!(drafts[0].kind, "link_refused");
        assert_eq!(drafts[0].reason.as_deref(), Some("no_policy_reference"));
        assert_eq!(drafts[0].subject_id, None);
        assert!(links.is_empty());
    }

    #[test]
    fn consent_events_map_to_kinds() {
        let mut links = HashMap::from([("v1".to_owned(), "s1".to_owned())]);
        let event = |purposes: &str, evidence: Option<&str>, kind: &str| SourceEvent {
            event_type: "consent".into(),
            visitor_id: "v1".into(),
            visitor_kind: kind.into(),
            consent_purposes: Some(purposes.into()),
            consent_evidence: evidence.map(str::to_owned),
            ..SourceEvent::default()
        };
        let d = entries_for(
            &event(
                r#"{"marketing":"granted","analytics":"withdrawn"}"#,
                None,
                "persistent",
            ),
            &mut links,
        );
        let kinds: Vec<_> = d
            .iter()
            .map(|d| (d.kind, d.subject_id.as_deref()))
            .collect();
        assert_eq!(kinds, [("withdraw", Some("s1")), ("grant", Some("s1"))]);
        let d = entries_for(
            &event(
                r#"{"marketing":"granted"}"#,
                Some(r#"{"confirmation":true}"#),
                "persistent",
            ),
            &mut links,
        );
        assert_eq!(d[0].kind, "confirm");
        let d = entries_for(
            &event(
                r#"{"marketing":"withdrawn"}"#,
                Some(r#"{"method":"one_click_unsubscribe"}"#),
                "subject",
            ),
            &mut links,
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
