//! The rows of the lake's tables: the processor writes one [`EventRow`] per accepted
//! event (table `events`) and one [`SessionRow`] per closed session (table
//! `sessions`); interest scoring writes one [`ScoreRow`] per subject, topic and run
//! (table `scores`); segment evaluation one [`SegmentChangeRow`] per entry or exit
//! (table `segment_changes`); the consent and identity ledger one [`LedgerRow`] per
//! entry (table `ledger`); erasure requests one [`ErasureRow`] per step (table
//! `erasures`). Every identifier in them is a keyed pseudonym; there is no IP
//! address, raw visitor id or e-mail address.
//! The column documentation lives in `docs/lake.md`; the Arrow schemas in
//! [`crate::lake::schema`] follow these structs field by field.

/// One processed event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub event_id: String,
    pub site_id: String,
    /// `pageview`, `engagement`, `identify`, `consent`, `custom`.
    pub event_type: String,
    /// When it happened, ms since the epoch (server clock, see the collector's clock rules).
    pub event_time: i64,
    pub received_at: i64,
    /// UTC date of `event_time`, `YYYY-MM-DD`: the partition column.
    pub dt: String,
    /// `HMAC(analytics key, site ‖ kind ‖ raw visitor id)`, hex.
    pub visitor_id: String,
    /// `persistent` or `cookieless`.
    pub visitor_kind: String,
    /// Version of the analytics key that made `visitor_id`.
    pub key_version: i32,
    pub session_id: String,
    pub consent_analytics: bool,
    pub consent_marketing: bool,
    pub gpc: bool,
    pub dnt: bool,
    pub country: Option<String>,
    pub region: Option<String>,
    pub browser: String,
    pub browser_version: String,
    pub os: String,
    pub device: String,
    pub is_bot: bool,
    pub bot_reason: Option<String>,
    pub url: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub referrer: Option<String>,
    pub title: Option<String>,
    pub topics: Vec<String>,
    /// `engagement`: visible time on the page.
    pub engaged_ms: Option<i64>,
    pub scroll_pct: Option<i32>,
    /// `identify`: `HMAC(identity key, lower-cased e-mail)`, hex.
    pub email_hash: Option<String>,
    pub form: Option<String>,
    /// `consent`: the purposes and their new state, JSON.
    pub consent_purposes: Option<String>,
    /// `identify`/`consent`: the evidence that came with it, JSON.
    pub consent_evidence: Option<String>,
    /// `custom`: event name and properties (JSON).
    pub name: Option<String>,
    pub props: Option<String>,
    /// The collector's clock flags (`seconds`, `future`, ...), comma-separated.
    pub time_flags: Option<String>,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    /// Whether the collector replaced personal data in the event's free text by a
    /// marker (`[email]`, …); `None` for rows written before scrubbing existed.
    pub redacted: Option<bool>,
}

/// One closed session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    pub session_id: String,
    pub site_id: String,
    pub visitor_id: String,
    /// UTC date of `start_time`: the partition column.
    pub dt: String,
    pub start_time: i64,
    pub end_time: i64,
    pub duration_ms: i64,
    pub events: i64,
    pub pageviews: i64,
    /// Sum of engaged time reported by engagement events.
    pub engaged_ms: i64,
    pub entry_path: Option<String>,
    pub exit_path: Option<String>,
    pub is_bot: bool,
    pub country: Option<String>,
    pub device: String,
    /// `inactivity`, `max_duration`, `evicted` (memory bound), `late` (a one-event
    /// session for an event older than the open sessions allow) or `flush`.
    pub closed_by: String,
    pub kafka_partition: i32,
    /// The dwell time of each of its pageviews ([`crate::dwell`]), in time order.
    pub pageview_dwell: Vec<PageviewDwell>,
}

/// One interest score of one scoring run: how interested a subject is in a topic, as
/// of a time. Formulas: the query layer's `score` module.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRow {
    /// The subject: the e-mail pseudonym of an identified visitor, else its visitor id.
    pub subject_id: String,
    pub topic: String,
    /// `raw / (raw + saturation)`, in `[0, 1)`.
    pub score: f64,
    /// Sum of the decayed, dwell-weighted views.
    pub raw: f64,
    /// Number of views that contributed.
    pub views: i64,
    /// Event time of the latest contributing view, ms since the epoch.
    pub last_view: i64,
    /// The time the run scored as of, ms since the epoch; one value per run.
    pub as_of: i64,
    /// UTC date of `as_of`, `YYYY-MM-DD`: the partition column.
    pub dt: String,
}

/// One change of a subject's membership in a segment: the membership history, and the
/// outbox the dispatcher delivers from (Kafka topic, webhooks). Written before any
/// delivery, so `change_id` and `seq` are fixed before anyone sees the change.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentChangeRow {
    /// Stable id of the change, the idempotency key of every delivery (`chg_…`).
    pub change_id: String,
    /// Position in the order changes were decided, from 1, without gaps.
    pub seq: i64,
    pub segment: String,
    pub subject_id: String,
    /// `entered` or `exited`.
    pub change: String,
    /// Why: `matched` (entered), `no_longer_matched`, `consent_withdrawn`,
    /// `subject_merged`, `segment_removed` (exited).
    pub reason: String,
    /// When the evaluation that decided it ran, ms since the epoch.
    pub at: i64,
    /// UTC date of `at`, `YYYY-MM-DD`: the partition column.
    pub dt: String,
}

/// One entry of the consent and identity ledger (table `ledger`): a grant, withdrawal,
/// confirmation or unsubscribe of a purpose, or a link between a visitor and a person
/// (made, refused or undone). Append-only and hash-chained: `digest` covers the
/// entry's content, `chain` = SHA-256(previous `chain` ‖ `digest`). An erasure
/// redacts an entry (content set to NULL, `erased` true) and keeps `digest` and
/// `chain`, so the chain still verifies. The rules: the query layer's `privacy`
/// module.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerRow {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// When the decision was made (the source event's time), ms since the epoch.
    pub at: i64,
    /// When the entry was written, ms since the epoch.
    pub recorded_at: i64,
    /// `grant`, `withdraw`, `confirm`, `unsubscribe`, `link`, `link_refused`, `unlink`.
    pub kind: String,
    /// `analytics` or `marketing` for consent entries; NULL for link entries.
    pub purpose: Option<String>,
    /// The person: the e-mail pseudonym, when known.
    pub subject_id: Option<String>,
    /// The browser's visitor id the entry came from or links.
    pub visitor_id: Option<String>,
    pub site_id: Option<String>,
    /// The event the entry was derived from; NULL for operator entries.
    pub event_id: Option<String>,
    /// The proof, JSON: text or text id, policy version/URL, source page, form, method.
    pub evidence: Option<String>,
    /// Why a link was refused or undone.
    pub reason: Option<String>,
    /// SHA-256 of the entry's content (hex).
    pub digest: String,
    /// SHA-256 of the previous entry's `chain` and this `digest` (hex).
    pub chain: String,
    /// Redacted by an erasure: content fields are NULL, `digest` and `chain` remain.
    pub erased: bool,
    /// UTC date of `recorded_at`, `YYYY-MM-DD`: the partition column.
    pub dt: String,
}

/// One step of an erasure request (table `erasures`): `requested` (what will be
/// erased, as digests), then `completed` with the receipt. What remains of an erased
/// subject forever is this: SHA-256 digests of its pseudonyms (needed to keep its
/// future events out), never the pseudonyms or the e-mail address.
#[derive(Debug, Clone, PartialEq)]
pub struct ErasureRow {
    /// `era_` + 128 random bits, hex.
    pub erasure_id: String,
    /// `requested` or `completed`.
    pub status: String,
    /// When this step was written, ms since the epoch.
    pub at: i64,
    /// SHA-256 (hex) of every pseudonym erased: the subject's and its visitors'.
    pub digests: Vec<String>,
    /// `completed`: the receipt, JSON.
    pub receipt: Option<String>,
    /// UTC date of `at`, `YYYY-MM-DD`: the partition column.
    pub dt: String,
}

/// One e-mail address of a person, sealed (table `contacts`): written by the
/// processor for every identify event that links with valid consent evidence. The
/// address is AES-256-GCM under the subject's data key, which lives outside the lake
/// (`spur_keys::vault`): destroying that key makes every copy unreadable.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactRow {
    /// The subject: the keyed pseudonym of the address (`events.email_hash`).
    pub subject_id: String,
    /// The identify event that carried the address (bound into the seal).
    pub event_id: String,
    pub site_id: String,
    /// `0x01 ‖ nonce ‖ ciphertext ‖ tag` (`spur_keys::vault`); never the address.
    pub address: Vec<u8>,
    /// The identify event's time, ms since the epoch.
    pub recorded_at: i64,
    /// UTC date of `recorded_at`, `YYYY-MM-DD`: the partition column.
    pub dt: String,
}

/// The dwell time of one pageview (`sessions.pageview_dwell`; computed by
/// `dwell::pageview_dwell`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageviewDwell {
    pub event_id: String,
    /// NULL when unknown.
    pub dwell_ms: Option<i64>,
    /// `engagement`, `next_pageview` or NULL with `dwell_ms`.
    pub dwell_source: Option<String>,
    /// Deepest scroll the visit's engagement events reported.
    pub scroll_pct_max: Option<i32>,
}

/// One visitor's state in the segment engine's checkpoint (table `audience_state`).
/// The state's format belongs to the audience crate (`spur_audience::state`); the
/// lake stores it as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudienceStateRow {
    pub visitor_id: String,
    /// UTC date of the checkpoint: the partition column.
    pub dt: String,
    pub state: String,
}
