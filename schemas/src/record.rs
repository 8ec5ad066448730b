//! The record the collector produces to [`crate::kafka::TOPIC_EVENTS`], one per
//! accepted event, as JSON. It carries no IP address: geography is resolved to country
//! and region before the record is built, and the user agent is reduced to classes.
//!
//! Versioned by [`SCHEMA_VERSION`] (field `v` and the `spur-schema` header); a reader
//! refuses versions it does not know instead of guessing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::wire::{ConsentAction, ConsentEvidence, ConsentFlags};

/// Version of [`EventRecord`]'s JSON layout.
pub const SCHEMA_VERSION: u16 = 1;

/// The event types Spur knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Pageview,
    Engagement,
    Identify,
    Consent,
    Custom,
}

impl EventType {
    pub const ALL: [EventType; 5] = [
        EventType::Pageview,
        EventType::Engagement,
        EventType::Identify,
        EventType::Consent,
        EventType::Custom,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Pageview => "pageview",
            EventType::Engagement => "engagement",
            EventType::Identify => "identify",
            EventType::Consent => "consent",
            EventType::Custom => "custom",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// One accepted, enriched event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// [`SCHEMA_VERSION`].
    pub v: u16,
    /// The client's id for the event (or a random one the collector assigned): the
    /// key for de-duplicating retries downstream.
    pub event_id: String,
    pub site_id: String,
    /// Server receive time, ms since the epoch: authoritative.
    pub received_at: i64,
    /// When the event happened on the server's clock, ms since the epoch: derived from
    /// the client's `ts` and `sent_at` when both are sane, else `received_at`.
    pub event_time: i64,
    /// The client's own time for the event as sent (ms; seconds converted).
    pub client_ts: Option<i64>,
    /// Client clock minus server clock, ms, when the client sent its clock.
    pub clock_skew_ms: Option<i64>,
    /// What was odd about the client's time (empty when nothing was).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub time_flags: Vec<TimeFlag>,
    pub visitor: Visitor,
    /// Consent in force for this event, after `Sec-GPC` and DNT were applied.
    pub consent: ConsentFlags,
    pub signals: PrivacySignals,
    pub geo: Geo,
    pub agent: Agent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<Page>,
    /// Whether the collector replaced personal data in the event's free text by a
    /// marker (`[email]`, `[phone]`, `[iban]`, `[card]`, …); never what it was.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redacted: bool,
    #[serde(flatten)]
    pub payload: Payload,
}

impl EventRecord {
    pub fn event_type(&self) -> EventType {
        self.payload.event_type()
    }
}

/// Oddities of the client's clock. Flagged, never fatal: the server time rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFlag {
    /// `ts` was zero, negative or not an integer: ignored.
    Invalid,
    /// `ts` looked like seconds, not milliseconds: converted.
    Seconds,
    /// `ts` was later than the server's clock allows: ignored.
    Future,
    /// `ts` was older than the collector accepts: ignored.
    TooOld,
    /// The client's clock differs from the server's by more than the tolerance.
    Skewed,
}

/// Who the event is about, pseudonymously.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Visitor {
    pub kind: VisitorKind,
    pub id: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisitorKind {
    /// The tracker's own id, stored in the browser after analytics consent.
    Persistent,
    /// A keyed hash of a daily salt, site, IP and user agent: changes every day and
    /// cannot be linked across days once the salt is destroyed.
    Cookieless,
    /// The id is already a subject pseudonym (32 lower-case hex characters, see
    /// [`is_subject_id`]), used by requests that name a person rather than a browser
    /// (one-click unsubscribe); the processor stores it unchanged.
    Subject,
}

/// Length of a subject id: the 128-bit keyed pseudonym of an e-mail address, in hex.
pub const SUBJECT_ID_LEN: usize = 32;

/// Whether `id` is a well-formed subject id: exactly [`SUBJECT_ID_LEN`] lower-case
/// hex characters.
pub fn is_subject_id(id: &str) -> bool {
    id.len() == SUBJECT_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Browser privacy signals as received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivacySignals {
    /// `Sec-GPC: 1`.
    pub gpc: bool,
    /// `DNT: 1`.
    pub dnt: bool,
}

/// Coarse location: country and first-level subdivision, ISO 3166 codes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Geo {
    pub country: Option<String>,
    pub region: Option<String>,
}

/// The user agent reduced to classes; the raw string is not kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    pub browser: String,
    /// Major version only.
    pub browser_version: String,
    pub os: String,
    pub device: DeviceClass,
    /// Why the collector thinks this is a bot; `None` for a human-looking agent.
    pub bot: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceClass {
    Desktop,
    Mobile,
    Tablet,
    Bot,
    #[default]
    Other,
}

/// The page an event happened on. The URL keeps scheme, host, path and only the query
/// parameters the site allows (campaign tags by default); fragments are dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub url: String,
    pub host: String,
    pub path: String,
    /// Referring URL reduced to scheme, host and path.
    pub referrer: Option<String>,
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
}

/// What only some event types carry. Serialised as `"type"` plus `"data"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Payload {
    Pageview,
    Engagement {
        engaged_ms: u64,
        scroll_pct: Option<u8>,
    },
    /// A form submission linking the visitor to an e-mail address. The address is in
    /// clear here, on the raw topic only; the processor replaces it with a keyed HMAC.
    Identify {
        email: String,
        form: Option<String>,
        evidence: Option<ConsentEvidence>,
    },
    Consent {
        purposes: BTreeMap<String, ConsentAction>,
        evidence: Option<ConsentEvidence>,
    },
    Custom {
        name: String,
        props: BTreeMap<String, serde_json::Value>,
    },
}

impl Payload {
    pub fn event_type(&self) -> EventType {
        match self {
            Payload::Pageview => EventType::Pageview,
            Payload::Engagement { .. } => EventType::Engagement,
            Payload::Identify { .. } => EventType::Identify,
            Payload::Consent { .. } => EventType::Consent,
            Payload::Custom { .. } => EventType::Custom,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(payload: Payload) -> EventRecord {
        EventRecord {
            v: SCHEMA_VERSION,
            event_id: "e1".into(),
            site_id: "shop".into(),
            received_at: 1_764_426_000_000,
            event_time: 1_764_425_999_000,
            client_ts: Some(1_764_425_999_500),
            clock_skew_ms: Some(500),
            time_flags: vec![],
            visitor: Visitor {
                kind: VisitorKind::Cookieless,
                id: "c0ffee".into(),
            },
            consent: ConsentFlags::default(),
            signals: PrivacySignals::default(),
            geo: Geo {
                country: Some("DE".into()),
                region: Some("BY".into()),
            },
            agent: Agent::default(),
            page: None,
            redacted: false,
            payload,
        }
    }

    #[test]
    fn round_trips_every_payload() {
        let payloads = [
            Payload::Pageview,
            Payload::Engagement {
                engaged_ms: 1200,
                scroll_pct: Some(40),
            },
            Payload::Identify {
                email: "a@example.com".into(),
                form: Some("newsletter".into()),
                evidence: Some(ConsentEvidence::default()),
            },
            Payload::Consent {
                purposes: [("marketing".to_owned(), ConsentAction::Granted)].into(),
                evidence: None,
            },
            Payload::Custom {
                name: "purchase".into(),
                props: [("value".to_owned(), serde_json::json!(42))].into(),
            },
        ];
        for payload in payloads {
            let record = sample(payload);
            let json = serde_json::to_string(&record).expect("serialise");
            let back: EventRecord = serde_json::from_str(&json).expect("deserialise");
            assert_eq!(back, record, "{json}");
        }
    }

    #[test]
    fn type_is_a_top_level_field() {
        let json = serde_json::to_value(sample(Payload::Pageview)).expect("serialise");
        assert_eq!(json["type"], "pageview");
        assert_eq!(json["v"], 1);
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
    }

    #[test]
    fn subject_visitors_and_method_serialise() {
        let mut record = sample(Payload::Consent {
            purposes: [("marketing".to_owned(), ConsentAction::Withdrawn)].into(),
            evidence: Some(ConsentEvidence {
                purposes: vec!["marketing".into()],
                method: Some(crate::unsubscribe::UNSUBSCRIBE_METHOD.into()),
                ..Default::default()
            }),
        });
        record.visitor = Visitor {
            kind: VisitorKind::Subject,
            id: "0123456789abcdef0123456789abcdef".into(),
        };
        let json = serde_json::to_value(&record).expect("serialise");
        assert_eq!(json["visitor"]["kind"], "subject");
        assert_eq!(
            json["data"]["evidence"]["method"],
            crate::unsubscribe::UNSUBSCRIBE_METHOD
        );
        let back: EventRecord = serde_json::from_value(json).expect("deserialise");
        assert_eq!(back, record);
        // Absent method: not serialised at all, so older readers see the same JSON.
        let plain = serde_json::to_value(ConsentEvidence::default()).expect("serialise");
        assert!(plain.get("method").is_none(), "{plain}");
    }

    #[test]
    fn subject_ids_are_32_lower_case_hex() {
        assert!(is_subject_id("0123456789abcdef0123456789abcdef"));
        for bad in [
            "",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789ABCDEF0123456789abcdef",
            "0123456789abcdef0123456789abcdeg",
            "0123456789abcdef0123456789abcdé",
        ] {
            assert!(!is_subject_id(bad), "{bad:?}");
        }
    }
}
