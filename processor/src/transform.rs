//! From a Kafka record to a lake row: decode, pseudonymise, label bots. Pure: the key
//! ring comes in, the row goes out; no raw visitor id, e-mail address or IP leaves.

use spur_schemas::ReasonCode;
use spur_schemas::record::{EventRecord, Payload, SCHEMA_VERSION, TimeFlag, VisitorKind};

use crate::keys::KeyRing;
use crate::pseudonym;
use spur_lake::model::EventRow;

/// Why a record could not be turned into a row (it goes to the dead-letter topic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecodable {
    pub reason: ReasonCode,
    pub detail: String,
}

/// Decodes a record payload. Versions other than [`SCHEMA_VERSION`] are refused
/// rather than guessed at.
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

/// UTC date of a ms timestamp, `YYYY-MM-DD`.
pub fn date_of(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string()
}

fn kind(k: VisitorKind) -> &'static str {
    match k {
        VisitorKind::Persistent => "persistent",
        VisitorKind::Cookieless => "cookieless",
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

/// The row for a record, without its session id (the sessioniser assigns it).
pub fn to_row(record: EventRecord, keys: &KeyRing, partition: i32, offset: i64) -> EventRow {
    let (key_version, visitor_id) = pseudonym::visitor(
        keys,
        &record.site_id,
        kind(record.visitor.kind),
        &record.visitor.id,
    );
    let device = serde_json::to_value(record.agent.device)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "other".into());
    let page = record.page.unwrap_or_default();
    let has_page = !page.url.is_empty();
    let mut row = EventRow {
        event_type: record.payload.event_type().as_str().to_owned(),
        dt: date_of(record.event_time),
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
            // The address itself stops here: only its keyed pseudonym is stored.
            row.email_hash = Some(pseudonym::email(keys, &email).1);
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
