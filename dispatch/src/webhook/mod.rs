//! Signed webhooks: each [`Change`] POSTed to an operator's endpoint in the
//! [Standard Webhooks](https://www.standardwebhooks.com/) format (the convention Svix
//! uses), retried with backoff until `max_age`, with a durable cursor per endpoint,
//! and a parking for the changes that could not be delivered in time, which
//! `spur segments replay --webhook NAME` sends again.
//!
//! # The request
//!
//! Each attempt is one `POST` to the endpoint's `url`, whose body is
//! [`Change::body`] (JSON), with these headers:
//!
//! | header              | value                                                 |
//! |---------------------|-------------------------------------------------------|
//! | `content-type`      | `application/json`                                    |
//! | `webhook-id`        | the change id, `chg_…`                                |
//! | `webhook-timestamp` | when this attempt was sent, in Unix seconds           |
//! | `webhook-signature` | `v1,` and the base64 of the HMAC-SHA256 (see below)   |
//!
//! The secret is `whsec_` and the base64 (standard alphabet) of a 24 to 64 byte key.
//! The signature is HMAC-SHA256 under that key over the signing string
//! `{webhook-id}.{webhook-timestamp}.{body}`: the two header values as sent and the
//! raw body bytes, joined with `.`. Every attempt has a new timestamp and so a new
//! signature, as the specification asks; the id stays the same.
//!
//! # Retries
//!
//! Any 2xx response means delivered. Anything else fails the attempt: another status
//! (redirects are not followed), no response within `timeout`, or a connection that
//! could not be made. After the n-th failed attempt the next one waits
//! `initial_backoff × 2^(n-1)`, capped at `max_backoff`, each wait jittered by ±20 % so
//! that many changes waiting on an endpoint that comes back do not hit it in
//! lockstep. A `429` or `503` with `Retry-After: <seconds>` waits that long instead
//! (also capped at `max_backoff`).
//!
//! A change is retried until it is `max_age` old (default 3 days), **measured from
//! when it was decided** (`segment_changes.at`, the evaluation that committed it), not
//! from its first attempt: changes wait for one another (see below), so a change's
//! first attempt may come long after its decision, and an age from the first attempt
//! would let each change behind a dead receiver wait `max_age` anew, holding the
//! queue for ever. A wait that would cross the deadline is shortened so that one last
//! attempt falls on it; a failed attempt that ends at or after the deadline is the
//! last. Every change gets at least one attempt, however old (after a long stop of
//! the service the backlog is tried, not parked unseen). `max_attempts`, unset by
//! default, is an additional bound: if set, a change is also parked after that many
//! failed attempts (the first included), whichever comes first. With the defaults
//! (1s, doubling to 5 min) a receiver down for hours or a weekend loses nothing and
//! needs nothing from the operator: delivery resumes, in order, within 5 minutes of
//! its return.
//!
//! # Ordering, cursor and parking
//!
//! The caller delivers one change at a time per endpoint, in `seq` order, and moves on
//! only when [`Endpoint::deliver`] returns [`Outcome::Delivered`] or
//! [`Outcome::Failed`] (then the change is **parked**: appended to the endpoint's
//! [`Parking`], `webhook-<name>.parked.jsonl`). [`Cursor`] persists the last `seq`
//! handled (delivered or parked) so that a restart resumes after it. Delivery is at
//! least once: a crash between a delivery and the cursor store, or a response lost
//! after the receiver acted, sends the change again.
//!
//! **The order guarantee, per subject:** the endpoint receives each subject's changes
//! in increasing `seq` order (the order they were decided); a change may arrive more
//! than once (at least once), but a later change of a subject never arrives before an
//! earlier one that has not been delivered. To keep this across parking: once a
//! change of subject S is parked, every later change of S for this endpoint is parked
//! too, behind it, without an attempt (reason `subject_parked`, `behind` naming the
//! first parked seq), until a replay has delivered all of S's parked changes. Changes
//! of other subjects are not held back: they go on live, so **between subjects** there
//! is no order (a replayed change of S arrives after later changes of T). Subjects are
//! matched by `subject_id`, across segments.
//!
//! # Parking and replay
//!
//! A parked entry holds the seq, the change id, segment, subject id, type, why it
//! was parked (`max_age`, `max_attempts`, `subject_parked`), the first attempt's time,
//! the attempts, the last error and when it was parked — never the body, which may
//! carry contact data. [`replay`] (`spur segments replay --webhook NAME`) reads the
//! parked changes again from table `segment_changes` through the segment service's
//! own reading, so the body is rebuilt exactly as live delivery builds it, and sends
//! them in `seq` order with their original ids (the same `webhook-id`, freshly
//! signed). Each delivered change is removed from the parking file before the next
//! is sent (rewritten, synced, renamed): a crash mid-replay sends at most that one
//! change again. A change whose rows are gone from the lake (erased, or past
//! retention) is dropped from the parking, not sent. The replay stops at the first
//! change that still fails after [`REPLAY_ATTEMPTS`] attempts, leaving it and the
//! rest parked, and reports how many it delivered.
//!
//! Replay is safe while `spur segments` runs. Every write to the parking file (the
//! service's appends, replay's removals, erasure's scrubbing) holds an exclusive
//! `flock` on `webhook-<name>.parked.jsonl.lock`; the service reads the file again
//! whenever it changed, before each change and at least every 10 s when idle. The
//! ordering holds across the two processes because a parked change is removed only
//! after replay delivered it: while any change of S is still in the file the service
//! parks S's new changes behind it, and replay, going on past what it first read,
//! delivers those too, in order. Two replays of one webhook at once are refused
//! (`webhook-<name>.replay.lock`).
//!
//! `/readyz` of the segment service has a component `webhook:<name>` per endpoint,
//! and while changes are parked a note under `notes` with their count and the replay
//! command. Parked changes do not make the service unready: new changes keep flowing
//! to every sink, and restarting the service would not deliver them. The gauge
//! `spur_segments_webhook_parked{sink="webhook:<name>"}` counts them too.
//!
//! # Idempotency
//!
//! Receivers deduplicate on `webhook-id`: the same change always has the same id, on
//! every attempt, after every restart, and on the Kafka topic.
//!
//! # Verifying, on the receiving side
//!
//! 1. Take the three headers and the raw body bytes, before any JSON parsing
//!    (re-serialised JSON would not match).
//! 2. Reject a `webhook-timestamp` more than a few minutes from now
//!    ([`DEFAULT_TOLERANCE`]): it stops replays of a captured request.
//! 3. Compute the signature of `{webhook-id}.{webhook-timestamp}.{body}` and compare
//!    it, in constant time, with each space-separated `v1,` entry of
//!    `webhook-signature`; one match suffices (several entries allow rotating a
//!    secret).
//!
//! [`Signer::verify`] does exactly this, and so does any Standard Webhooks or Svix
//! library given the same `whsec_` secret.
//!
//! Logs name the webhook, the change id, the attempt and the error; never the secret,
//! the body, or the URL (which may carry a token).
//!
//! # Layout
//!
//! - `config`: [`WebhookConfig`], its defaults and validation, parsing the `url` and
//!   decoding the secret.
//! - `signing`: the header names, [`Signer`] (sign and verify) and [`VerifyError`].
//! - `delivery`: [`Endpoint`], one attempt and the retries around it (backoff,
//!   jitter, `Retry-After`, [`Retry`] with its bounds), [`Outcome`] and
//!   [`AttemptError`].
//! - `state`: [`Cursor`] and [`Parking`], an endpoint's files under `state_dir`.
//! - `task`: the live delivery of one endpoint inside the segment service (outbox,
//!   cursor, parking, ordering rule, metrics and readiness).
//! - `replay`: [`replay`].
//!
//! They depend one way, `config` ← `signing` ← `delivery` ← `state` ← `task`,
//! `replay`; everything public is re-exported here.
//!
//! [`Change`]: spur_audience::Change
//! [`Change::body`]: spur_audience::Change::body

mod config;
mod delivery;
mod replay;
mod signing;
mod state;
mod task;
#[cfg(test)]
mod tests;

pub use config::{SECRET_PREFIX, WebhookConfig};
pub use delivery::{AttemptError, Bound, Endpoint, Outcome, Retry};
pub use replay::{REPLAY_ATTEMPTS, Replayed, replay};
pub use signing::{
    DEFAULT_TOLERANCE, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, Signer, VerifyError,
};
pub use state::{Cursor, ParkReason, Parked, Parking};
pub(crate) use task::WebhookSink;
