//! What a website sends: the JSON batch accepted by `POST /v1/batch` (also the body of
//! `navigator.sendBeacon`, as `text/plain`).
//!
//! ```json
//! { "site": "shop", "sent_at": 1764426000000,
//!   "consent": { "analytics": true, "marketing": false },
//!   "visitor_id": "3f0c...",
//!   "events": [ { "type": "pageview", "id": "e1", "ts": 1764425999000,
//!                 "url": "https://shop.example/boots", "topics": ["boots"] } ] }
//! ```
//!
//! The envelope is decoded first; each event stays raw JSON until it is decoded and
//! validated on its own, so one bad event is dead-lettered while the rest of the batch
//! goes through. Unknown fields are ignored (older collectors accept newer trackers).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The batch envelope.
#[derive(Debug, Deserialize)]
pub struct Batch {
    /// The registered site id.
    pub site: String,
    /// The consent the site's banner collected, as the tracker knows it now. Absent
    /// means no consent for any purpose.
    #[serde(default)]
    pub consent: Option<ConsentFlags>,
    /// The tracker's persistent visitor id. Honoured only with analytics consent.
    #[serde(default)]
    pub visitor_id: Option<String>,
    /// The client clock when the batch was sent (ms since the epoch), used with each
    /// event's `ts` to place events on the server's clock.
    #[serde(default)]
    pub sent_at: Option<serde_json::Number>,
    pub events: Vec<Box<RawValue>>,
}

/// Consent per purpose, as a yes/no per purpose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsentFlags {
    pub analytics: bool,
    pub marketing: bool,
}

/// One event as sent. Which fields are required depends on `type`; the collector's
/// validator checks them and names the missing one in the dead-letter reason.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WireEvent {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub id: Option<String>,
    /// Client time of the event, ms since the epoch (seconds are detected and flagged).
    pub ts: Option<serde_json::Number>,
    pub url: Option<String>,
    pub referrer: Option<String>,
    pub title: Option<String>,
    pub topics: Option<Vec<String>>,
    /// `engagement`: milliseconds the page was visible and in use.
    pub engaged_ms: Option<u64>,
    /// `engagement`: deepest scroll position reached, percent of the page.
    pub scroll_pct: Option<u64>,
    /// `identify`: the address the visitor typed into the form.
    pub email: Option<String>,
    /// `identify`: which form was submitted.
    pub form: Option<String>,
    /// `identify` and `consent`: what the visitor agreed to, and where.
    pub evidence: Option<ConsentEvidence>,
    /// `consent`: the new state per purpose.
    pub purposes: Option<BTreeMap<String, ConsentAction>>,
    /// `custom`: the event name.
    pub name: Option<String>,
    /// `custom`: flat properties (strings, numbers, booleans).
    pub props: Option<BTreeMap<String, serde_json::Value>>,
}

/// A grant or withdrawal of one purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentAction {
    Granted,
    Withdrawn,
}

/// The proof that goes with a consent: the text or checkbox the visitor saw, the
/// privacy-policy version, and for double opt-in whether this is the confirmation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsentEvidence {
    /// Purposes this evidence covers (`analytics`, `marketing`).
    pub purposes: Vec<String>,
    /// The checkbox or banner text shown, or its id in the site's text catalogue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_url: Option<String>,
    /// `true` on the event that confirms a double opt-in (the click on the signed link
    /// in the e-mail, [`crate::confirm`]). Set by the collector only: it clears it on
    /// evidence sent by a website, so a browser cannot confirm.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub confirmation: bool,
    /// How the decision was made when not through the site's own form, e.g.
    /// `one_click_unsubscribe` ([`crate::unsubscribe::UNSUBSCRIBE_METHOD`]). Set by the
    /// collector only: the collector clears it on evidence sent by a website.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The ledger seq of the marketing grant a double opt-in link confirms
    /// ([`crate::confirm`]). Set by the collector only, like `method`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_seq: Option<i64>,
}
