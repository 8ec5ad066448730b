//! [`Change`]: one `segment.entered` / `segment.exited`, as every sink sends it.
//!
//! The body is the same JSON on the Kafka topic and in each webhook request, in the
//! Standard Webhooks shape (`type`, `timestamp`, `data`):
//!
//! ```json
//! {"type":"segment.entered","timestamp":"2026-11-29T12:00:00.000Z",
//!  "data":{"id":"chg_…","seq":42,"segment":"boot_fans","subject_id":"…",
//!          "change":"entered","reason":"matched"}}
//! ```
//!
//! `id` is the idempotency key: the same change always has the same id, on every
//! retry, after every restart, in every sink.

use serde::Serialize;
use sha2::{Digest, Sha256};
use spur_lake::model::SegmentChangeRow;
use spur_schemas::confirm::ConfirmConfig;
use spur_schemas::time::{date, rfc3339_ms};
use spur_schemas::unsubscribe::UnsubscribeConfig;

/// Entered or exited a segment, or a request to confirm marketing consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Entered,
    Exited,
    /// A marketing grant that waits for its double opt-in confirmation: the mailer
    /// sends `confirm_url` to `contact.email`. Its row has no segment, and `reason`
    /// `grant:<ledger seq>` names the grant.
    ConfirmationRequested,
}

impl ChangeKind {
    /// The column value in `segment_changes.change`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Entered => "entered",
            ChangeKind::Exited => "exited",
            ChangeKind::ConfirmationRequested => "confirmation_requested",
        }
    }

    /// The event type: `segment.entered`, `segment.exited` or
    /// `consent.confirmation_requested`.
    pub fn event_type(self) -> &'static str {
        match self {
            ChangeKind::Entered => "segment.entered",
            ChangeKind::Exited => "segment.exited",
            ChangeKind::ConfirmationRequested => "consent.confirmation_requested",
        }
    }

    pub fn parse(text: &str) -> Option<ChangeKind> {
        match text {
            "entered" => Some(ChangeKind::Entered),
            "exited" => Some(ChangeKind::Exited),
            "confirmation_requested" => Some(ChangeKind::ConfirmationRequested),
            _ => None,
        }
    }
}

/// The `reason` of a [`ChangeKind::ConfirmationRequested`] for grant `seq`.
pub fn grant_reason(seq: i64) -> String {
    format!("grant:{seq}")
}

/// Where the mailer sends: the subject's address, opened from the contact vault at
/// send time (only for subjects with valid marketing consent, or for a confirmation
/// request; only to sinks with `include_contact`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Contact {
    pub email: String,
}

/// One decided membership change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// `chg_` and 32 hex digits of SHA-256 over segment, subject, change and `seq`.
    pub id: String,
    /// Decision order, from 1, without gaps.
    pub seq: i64,
    /// Empty (and absent from the body) for a confirmation request.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub segment: String,
    pub subject_id: String,
    pub change: ChangeKind,
    /// `matched`, `no_longer_matched`, `consent_withdrawn`, `unsubscribed`,
    /// `subject_merged`, `segment_removed`.
    pub reason: String,
    /// The RFC 8058 one-click unsubscribe URL of the subject (for the mail's
    /// `List-Unsubscribe` header, with `List-Unsubscribe-Post:
    /// List-Unsubscribe=One-Click`), when `unsubscribe.url` is set.
    /// Deterministic, so a redelivery carries the same body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsubscribe_url: Option<String>,
    /// A confirmation request's signed, expiring link (`[confirm]`): a GET shows a
    /// button, its POST confirms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirm_url: Option<String>,
    /// When `confirm_url` stops working, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirm_expires_at: Option<String>,
    /// The address to send to; see [`Contact`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<Contact>,
    /// When the evaluation that decided it ran, ms since the epoch.
    #[serde(skip)]
    pub at_ms: i64,
}

impl Change {
    /// A change with its id derived from the other fields.
    pub fn new(
        seq: i64,
        segment: &str,
        subject_id: &str,
        change: ChangeKind,
        reason: &str,
        at_ms: i64,
    ) -> Change {
        let mut hash = Sha256::new();
        for part in [segment, subject_id, change.as_str(), &seq.to_string()] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        let digest = hash.finalize();
        Change {
            id: format!("chg_{}", hex::encode(&digest[..16])),
            seq,
            segment: segment.to_owned(),
            subject_id: subject_id.to_owned(),
            change,
            reason: reason.to_owned(),
            unsubscribe_url: None,
            confirm_url: None,
            confirm_expires_at: None,
            contact: None,
            at_ms,
        }
    }

    /// The ledger seq of the grant a confirmation request is for.
    pub fn grant_seq(&self) -> Option<i64> {
        if self.change != ChangeKind::ConfirmationRequested {
            return None;
        }
        self.reason.strip_prefix("grant:")?.parse().ok()
    }

    /// Whether the mailer may get the subject's address with this change: a
    /// confirmation request, an entry (members have valid consent), or an exit that
    /// is not about consent ending.
    pub fn may_carry_contact(&self) -> bool {
        match self.change {
            ChangeKind::ConfirmationRequested | ChangeKind::Entered => true,
            ChangeKind::Exited => !matches!(
                self.reason.as_str(),
                "consent_withdrawn" | "unsubscribed" | "erased"
            ),
        }
    }

    /// Adds the confirmation link of a confirmation request (`[confirm]`), expiring
    /// `valid_for` after the request was decided. Deterministic, like the unsubscribe
    /// link.
    pub fn with_confirm_link(mut self, confirm: &ConfirmConfig) -> Change {
        if let Some(grant) = self.grant_seq() {
            self.confirm_url = confirm.link(&self.subject_id, grant, self.at_ms);
            if self.confirm_url.is_some() {
                self.confirm_expires_at = Some(rfc3339_ms(
                    confirm.expires_at(self.at_ms).saturating_mul(1000),
                ));
            }
        }
        self
    }

    /// The body without the address, for sinks without `include_contact`.
    pub fn body_without_contact(&self) -> Vec<u8> {
        if self.contact.is_none() {
            return self.body();
        }
        Change {
            contact: None,
            ..self.clone()
        }
        .body()
    }

    /// Adds the subject's one-click unsubscribe URL (`url?token=…`, the token binding
    /// the subject id under the key, `spur_schemas::unsubscribe`), when `[unsubscribe]`
    /// has both. Anonymous subjects get one too; only identified ones can be mailed.
    pub fn with_unsubscribe(mut self, unsubscribe: &UnsubscribeConfig) -> Change {
        self.unsubscribe_url = unsubscribe.link(&self.subject_id);
        self
    }

    /// The JSON body every sink sends (see the module documentation).
    pub fn body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Envelope<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            timestamp: String,
            data: &'a Change,
        }
        let envelope = Envelope {
            kind: self.change.event_type(),
            timestamp: rfc3339_ms(self.at_ms),
            data: self,
        };
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_vec(&envelope).unwrap_or_default()
    }

    /// The lake row of this change.
    pub fn to_row(&self) -> SegmentChangeRow {
        SegmentChangeRow {
            change_id: self.id.clone(),
            seq: self.seq,
            segment: self.segment.clone(),
            subject_id: self.subject_id.clone(),
            change: self.change.as_str().to_owned(),
            reason: self.reason.clone(),
            at: self.at_ms,
            dt: date(self.at_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_differ_per_field() {
        let a = Change::new(7, "fans", "s1", ChangeKind::Entered, "matched", 1_000);
        let again = Change::new(7, "fans", "s1", ChangeKind::Entered, "matched", 99_999);
        assert_eq!(a.id, again.id, "the id does not depend on the time");
        assert!(a.id.starts_with("chg_") && a.id.len() == 36, "{}", a.id);
        for other in [
            Change::new(8, "fans", "s1", ChangeKind::Entered, "matched", 1_000),
            Change::new(7, "fan", "s1", ChangeKind::Entered, "matched", 1_000),
            Change::new(7, "fans", "s2", ChangeKind::Entered, "matched", 1_000),
            Change::new(7, "fans", "s1", ChangeKind::Exited, "matched", 1_000),
        ] {
            assert_ne!(a.id, other.id);
        }
    }

    #[test]
    fn body_is_a_standard_webhooks_envelope() {
        let change = Change::new(3, "fans", "s1", ChangeKind::Exited, "consent_withdrawn", 0);
        let body: serde_json::Value = serde_json::from_slice(&change.body()).expect("json");
        assert_eq!(body["type"], "segment.exited");
        assert_eq!(body["timestamp"], "1970-01-01T00:00:00.000Z");
        assert_eq!(body["data"]["id"], change.id.as_str());
        assert_eq!(body["data"]["seq"], 3);
        assert_eq!(body["data"]["change"], "exited");
        assert_eq!(body["data"]["reason"], "consent_withdrawn");
        assert_eq!(change.to_row().dt, "1970-01-01");
    }
}
