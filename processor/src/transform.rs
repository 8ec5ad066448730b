//! From a Kafka record to a lake row: decode, pseudonymise, label bots. Pure: the key
//! ring comes in, the row goes out; no raw visitor id, e-mail address or IP leaves.

use spur_keys::{KeyRing, pseudonym};
use spur_lake::model::EventRow;
use spur_schemas::ReasonCode;
use spur_schemas::identify::link_verdict;
use spur_schemas::record::{
    EventRecord, Payload, SCHEMA_VERSION, TimeFlag, VisitorKind, is_subject_id,
};
use spur_schemas::time::date;

/// Why a record could not be turned into a row (it goes to the dead-letter topic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecodable {
    pub reason: ReasonCode,
    pub detail: String,
}

/// Decodes a record payload. Versions other than [`SCHEMA_VERSION`] are refused
/// rather than guessed at, and so is a [`VisitorKind::Subject`] visitor whose id is not
/// a subject id (32 lower-case hex characters): it is stored unchanged, so it must not
/// be able to carry anything else (an address, a raw id) into the lake.
pub fn decode(payload: &[u8]) -> Result<EventRecord, Undecodable> {
    let record: EventRecord = serde_json::from_slice(payload).map_err(|e| Undecodable {
        reason: ReasonCode::Undecodable,
        detail: format!("record: {}", class(&e)),
    })?;
    if record.v != SCHEMA_VERSION {
        return Err(Undecodable {
            reason: ReasonCode::Undecodable,
            detail: format!("record: schema version {} unknown", record.v),
        });
    }
    if record.visitor.kind == VisitorKind::Subject && !is_subject_id(&record.visitor.id) {
        return Err(Undecodable {
            reason: ReasonCode::Undecodable,
            detail: "record: subject id malformed".into(),
        });
    }
    Ok(record)
}

fn class(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "wrong type or value",
        serde_json::error::Category::Eof => "unexpected end",
    }
}

fn kind(k: VisitorKind) -> &'static str {
    match k {
        VisitorKind::Persistent => "persistent",
        VisitorKind::Cookieless => "cookieless",
        VisitorKind::Subject => "subject",
    }
}

fn flag(f: TimeFlag) -> &'static str {
    match f {
        TimeFlag::Invalid => "invalid",
        TimeFlag::Seconds => "seconds",
        TimeFlag::Future => "future",
        TimeFlag::TooOld => "too_old",
        TimeFlag::Skewed => "skewed",
    }
}

/// The address of an identify event that links with valid consent evidence (the same
/// verdict as its pseudonym in [`to_row`]): it goes, sealed, into table `contacts`.
/// Trimmed, otherwise as the person typed it.
pub fn contact_of(record: &EventRecord) -> Option<String> {
    let Payload::Identify {
        email, evidence, ..
    } = &record.payload
    else {
        return None;
    };
    let url = record
        .page
        .as_ref()
        .map(|p| p.url.as_str())
        .filter(|u| !u.is_empty());
    link_verdict(evidence.as_ref(), url)
        .is_ok()
        .then(|| email.trim().to_owned())
}

/// The row for a record, without its session id (the sessioniser assigns it).
///
/// A [`VisitorKind::Subject`] id is already a keyed pseudonym (checked by [`decode`]):
/// it is stored as it is, with key version 0, so that it matches the subject's
/// `email_hash` instead of being hashed a second time.
pub fn to_row(record: EventRecord, keys: &KeyRing, partition: i32, offset: i64) -> EventRow {
    let (key_version, visitor_id) = match record.visitor.kind {
        VisitorKind::Subject => (0, record.visitor.id.clone()),
        other => pseudonym::visitor(keys, &record.site_id, kind(other), &record.visitor.id),
    };
    let device = serde_json::to_value(record.agent.device)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "other".into());
    let page = record.page.unwrap_or_default();
    let has_page = !page.url.is_empty();
    let mut row = EventRow {
        event_type: record.payload.event_type().as_str().to_owned(),
        dt: date(record.event_time),
        event_id: record.event_id,
        site_id: record.site_id,
        event_time: record.event_time,
        received_at: record.received_at,
        visitor_id,
        visitor_kind: kind(record.visitor.kind).to_owned(),
        key_version: key_version as i32,
        session_id: String::new(),
        consent_analytics: record.consent.analytics,
        consent_marketing: record.consent.marketing,
        gpc: record.signals.gpc,
        dnt: record.signals.dnt,
        country: record.geo.country,
        region: record.geo.region,
        browser: record.agent.browser,
        browser_version: record.agent.browser_version,
        os: record.agent.os,
        device,
        is_bot: record.agent.bot.is_some(),
        bot_reason: record.agent.bot,
        url: has_page.then(|| page.url.clone()),
        host: has_page.then(|| page.host.clone()),
        path: has_page.then(|| page.path.clone()),
        referrer: page.referrer,
        title: page.title,
        topics: page.topics,
        engaged_ms: None,
        scroll_pct: None,
        email_hash: None,
        form: None,
        consent_purposes: None,
        consent_evidence: None,
        name: None,
        props: None,
        time_flags: (!record.time_flags.is_empty()).then(|| {
            record
                .time_flags
                .iter()
                .map(|f| flag(*f))
                .collect::<Vec<_>>()
                .join(",")
        }),
        kafka_partition: partition,
        kafka_offset: offset,
        redacted: Some(record.redacted),
    };
    match record.payload {
        Payload::Pageview => {}
        Payload::Engagement {
            engaged_ms,
            scroll_pct,
        } => {
            row.engaged_ms = Some(engaged_ms.min(i64::MAX as u64) as i64);
            row.scroll_pct = scroll_pct.map(i32::from);
        }
        Payload::Identify {
            email,
            form,
            evidence,
        } => {
            // The address itself stops here: only its keyed pseudonym is stored, and
            // only when the form collected the consent that allows the link
            // (`spur_schemas::identify`); otherwise nothing links the visitor to a
            // person, and the ledger records the refusal with its reason.
            if link_verdict(evidence.as_ref(), row.url.as_deref()).is_ok() {
                row.email_hash = Some(pseudonym::email(keys, &email).1);
            }
            row.form = form;
            row.consent_evidence = evidence.and_then(|e| serde_json::to_string(&e).ok());
        }
        Payload::Consent { purposes, evidence } => {
            row.consent_purposes = serde_json::to_string(&purposes).ok();
            row.consent_evidence = evidence.and_then(|e| serde_json::to_string(&e).ok());
        }
        Payload::Custom { name, props } => {
            row.name = Some(name);
            row.props = serde_json::to_string(&props).ok();
        }
    }
    row
}

#[cfg(test)]
mod tests {
    use spur_schemas::record::{Agent, Geo, PrivacySignals, Visitor};
    use spur_schemas::unsubscribe::UNSUBSCRIBE_METHOD;
    use spur_schemas::wire::{ConsentAction, ConsentEvidence, ConsentFlags};

    use super::*;

    const SUBJECT: &str = "00112233445566778899aabbccddeeff";

    fn ring() -> KeyRing {
        KeyRing::from_keys([0x11; 32], [0x22; 32])
    }

    /// A one-click unsubscribe as the collector produces it.
    fn withdrawal(kind: VisitorKind, id: &str) -> EventRecord {
        EventRecord {
            v: SCHEMA_VERSION,
            event_id: "e1".into(),
            site_id: String::new(),
            received_at: 1_764_426_000_000,
            event_time: 1_764_426_000_000,
            client_ts: None,
            clock_skew_ms: None,
            time_flags: vec![],
            visitor: Visitor {
                kind,
                id: id.into(),
            },
            consent: ConsentFlags::default(),
            signals: PrivacySignals::default(),
            geo: Geo::default(),
            agent: Agent::default(),
            page: None,
            redacted: false,
            payload: Payload::Consent {
                purposes: [("marketing".to_owned(), ConsentAction::Withdrawn)].into(),
                evidence: Some(ConsentEvidence {
                    purposes: vec!["marketing".into()],
                    method: Some(UNSUBSCRIBE_METHOD.into()),
                    ..Default::default()
                }),
            },
        }
    }

    fn encode(record: &EventRecord) -> Vec<u8> {
        serde_json::to_vec(record).expect("serialise")
    }

    #[test]
    fn subject_ids_are_stored_unchanged_with_key_version_0() {
        let record = decode(&encode(&withdrawal(VisitorKind::Subject, SUBJECT))).expect("decode");
        let row = to_row(record, &ring(), 2, 40);
        assert_eq!(row.visitor_id, SUBJECT);
        assert_eq!(row.visitor_kind, "subject");
        assert_eq!(row.key_version, 0);
        assert_eq!(row.site_id, "");
        assert_eq!(row.event_type, "consent");
        assert_eq!(
            row.consent_purposes.as_deref(),
            Some(r#"{"marketing":"withdrawn"}"#)
        );
        let evidence: serde_json::Value =
            serde_json::from_str(row.consent_evidence.as_deref().expect("evidence")).expect("json");
        assert_eq!(evidence["method"], UNSUBSCRIBE_METHOD);
        assert_eq!(evidence["purposes"], serde_json::json!(["marketing"]));
        assert!(!row.consent_marketing && !row.consent_analytics);
        assert_eq!(row.url, None);
    }

    #[test]
    fn other_kinds_are_still_pseudonymised() {
        for (kind, name) in [
            (VisitorKind::Persistent, "persistent"),
            (VisitorKind::Cookieless, "cookieless"),
        ] {
            let row = to_row(withdrawal(kind, SUBJECT), &ring(), 0, 0);
            assert_eq!(row.visitor_kind, name);
            assert_eq!(row.key_version, 1);
            assert_ne!(
                row.visitor_id, SUBJECT,
                "{name}: an id must never pass through"
            );
            assert_eq!(
                row.visitor_id,
                pseudonym::visitor(&ring(), "", name, SUBJECT).1
            );
        }
    }

    #[test]
    fn malformed_subject_ids_are_undecodable() {
        for bad in [
            "",
            "a@example.com",
            "00112233445566778899AABBCCDDEEFF",
            "00112233445566778899aabbccddeef",
            "00112233445566778899aabbccddeeff00",
            "00112233445566778899aabbccddeefg",
            "198.51.100.20",
        ] {
            let refused = decode(&encode(&withdrawal(VisitorKind::Subject, bad)));
            assert_eq!(
                refused,
                Err(Undecodable {
                    reason: ReasonCode::Undecodable,
                    detail: "record: subject id malformed".into(),
                }),
                "{bad:?}"
            );
        }
        // The same ids under another kind are ordinary raw ids: pseudonymised later.
        assert!(
            decode(&encode(&withdrawal(
                VisitorKind::Persistent,
                "a@example.com"
            )))
            .is_ok()
        );
    }

    #[test]
    fn unknown_versions_are_undecodable() {
        let mut record = withdrawal(VisitorKind::Subject, SUBJECT);
        record.v = SCHEMA_VERSION + 1;
        let refused = decode(&encode(&record)).expect_err("refused");
        assert_eq!(refused.reason, ReasonCode::Undecodable);
        assert!(
            refused.detail.contains("schema version"),
            "{}",
            refused.detail
        );
        let garbage = decode(b"{not json").expect_err("refused");
        assert_eq!(garbage.detail, "record: syntax error");
    }
}
