//! Entries: what one identify or consent event makes (links, grants, confirmations
//! and their refusals), and their place in the hash chain.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use spur_lake::model::LedgerRow;
use spur_schemas::confirm::DOUBLE_OPT_IN_METHOD;
use spur_schemas::identify::{PURPOSES, link_verdict};
use spur_schemas::unsubscribe::UNSUBSCRIBE_METHOD;
use spur_schemas::wire::ConsentEvidence;

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
pub(super) fn head_record(head: &(i64, String)) -> String {
    format!("{}:{}", head.0, head.1)
}

/// SHA-256 of an entry's content, hex.
pub(super) fn digest(seq: i64, d: &Draft) -> String {
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

pub(super) fn link(previous: &str, digest: &str) -> String {
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
    if entries
        .iter()
        .any(|e| e.kind != "grant" && e.seq != grant.seq && (e.seq > grant.seq || e.at > grant.at))
    {
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
