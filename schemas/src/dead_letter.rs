//! Dead letters and the accounting vocabulary.
//!
//! A [`DeadLetter`] goes to [`crate::kafka::TOPIC_DEAD_LETTER`] for every event that
//! was received but refused. It says why ([`ReasonCode`]) and where, and carries no
//! personal data: no body, no field values, no IP, no user agent; `detail` names a
//! field path and an error class only.
//!
//! The collector's counters obey `received = accepted + dead_lettered + dropped`,
//! where dropped events are counted by [`DropReason`].

use serde::{Deserialize, Serialize};

/// Why an event was dead-lettered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// The event is larger than the per-event limit.
    Size,
    /// The event is not a JSON object of the expected shape.
    Malformed,
    /// A field the event type requires is missing.
    MissingField,
    /// A field has a value outside what is allowed (wrong type, range, length).
    InvalidField,
    /// `type` names no known event type.
    UnknownType,
    /// The event's page is on a host the site has not registered.
    HostNotAllowed,
    /// The request's `visitor_id` is present but not a well-formed id (8 to 64 of
    /// `[A-Za-z0-9_-]`). Refused rather than replaced by the cookieless id, which
    /// would silently merge unrelated visitors.
    InvalidVisitorId,
    /// The processor could not decode the record (wrong version, corrupt JSON).
    Undecodable,
}

impl ReasonCode {
    pub const ALL: [ReasonCode; 8] = [
        ReasonCode::Size,
        ReasonCode::Malformed,
        ReasonCode::MissingField,
        ReasonCode::InvalidField,
        ReasonCode::UnknownType,
        ReasonCode::HostNotAllowed,
        ReasonCode::InvalidVisitorId,
        ReasonCode::Undecodable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::Size => "size",
            ReasonCode::Malformed => "malformed",
            ReasonCode::MissingField => "missing_field",
            ReasonCode::InvalidField => "invalid_field",
            ReasonCode::UnknownType => "unknown_type",
            ReasonCode::HostNotAllowed => "host_not_allowed",
            ReasonCode::InvalidVisitorId => "invalid_visitor_id",
            ReasonCode::Undecodable => "undecodable",
        }
    }
}

/// Why received events were neither accepted nor dead-lettered. The client is told
/// (an HTTP status); nothing about the events is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// The site id is not registered (HTTP 404 is not used, to avoid probing: 403).
    UnknownSite,
    /// The request's `Origin`/`Referer` is not a registered host of the site (403).
    OriginNotAllowed,
    /// More events in one request than the batch limit (413).
    BatchTooLarge,
    /// `DNT: 1` with the collector configured to drop such requests (204).
    DoNotTrack,
    /// The broker is known to be down; the client was told to retry (503).
    BrokerUnavailable,
    /// The broker did not acknowledge in time or refused the record; the client was
    /// told to retry (503). The record may still arrive later: downstream
    /// de-duplicates by event id.
    NotAcknowledged,
}

impl DropReason {
    pub const ALL: [DropReason; 6] = [
        DropReason::UnknownSite,
        DropReason::OriginNotAllowed,
        DropReason::BatchTooLarge,
        DropReason::DoNotTrack,
        DropReason::BrokerUnavailable,
        DropReason::NotAcknowledged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::UnknownSite => "unknown_site",
            DropReason::OriginNotAllowed => "origin_not_allowed",
            DropReason::BatchTooLarge => "batch_too_large",
            DropReason::DoNotTrack => "do_not_track",
            DropReason::BrokerUnavailable => "broker_unavailable",
            DropReason::NotAcknowledged => "not_acknowledged",
        }
    }
}

/// One refused event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// [`crate::record::SCHEMA_VERSION`].
    pub v: u16,
    pub reason: ReasonCode,
    /// Which field and what class of error, e.g. `"ts: invalid type"`. Never a value.
    pub detail: String,
    /// Which service refused it (`collector`, `processor`).
    pub stage: String,
    /// The registered site the event was sent for, if the envelope named one.
    pub site_id: Option<String>,
    /// The event id, only when it is a well-formed id.
    pub event_id: Option<String>,
    /// The event type, only when it is a known type.
    pub event_type: Option<String>,
    /// Position of the event in its batch.
    pub index: u32,
    /// Size of the refused event in bytes.
    pub size: u64,
    /// Server receive time, ms since the epoch.
    pub received_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialise_as_their_names() {
        for code in ReasonCode::ALL {
            assert_eq!(
                serde_json::to_value(code).expect("serialise"),
                serde_json::Value::String(code.as_str().to_owned())
            );
        }
        for reason in DropReason::ALL {
            assert_eq!(
                serde_json::to_value(reason).expect("serialise"),
                serde_json::Value::String(reason.as_str().to_owned())
            );
        }
    }
}
