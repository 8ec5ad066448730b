//! Signed webhooks: each [`Change`] POSTed to an operator's endpoint in the
//! [Standard Webhooks](https://www.standardwebhooks.com/) format (the convention Svix
//! uses), retried with backoff, with a durable cursor per endpoint and a log of the
//! changes that could not be delivered.
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
//! (also capped at `max_backoff`). After `max_attempts` attempts delivery gives up.
//! With the defaults (1s, doubling to 5min, 15 attempts) the waits are 1s, 2s, 4s, …,
//! 256s, then 300s five times: about 34 minutes from the first attempt to the last.
//!
//! # Ordering, cursor and give-ups
//!
//! The caller delivers one change at a time per endpoint, in `seq` order, and moves on
//! only when [`Endpoint::deliver`] returns [`Outcome::Delivered`] or
//! [`Outcome::GaveUp`], so each subject's changes reach the endpoint in the order they
//! were decided. A change that gives up is appended to the endpoint's [`GiveUpLog`]
//! and skipped: it is kept for the operator, never silently dropped, and later changes
//! are not held back forever behind it. [`Cursor`] persists the last `seq` handled so
//! that a restart resumes after it. Delivery is at least once: a crash between a
//! delivery and the cursor store, or a response lost after the receiver acted, sends
//! the change again.
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
//!   jitter, `Retry-After`), [`Outcome`] and [`AttemptError`].
//! - `state`: [`Cursor`] and [`GiveUpLog`], an endpoint's files under `state_dir`.
//!
//! They depend one way, `config` ← `signing` ← `delivery`, and `state` on none of
//! them; everything public is re-exported here.
//!
//! [`Change`]: spur_audience::Change
//! [`Change::body`]: spur_audience::Change::body

mod config;
mod delivery;
mod signing;
mod state;
#[cfg(test)]
mod tests;

pub use config::{SECRET_PREFIX, WebhookConfig};
pub use delivery::{AttemptError, Endpoint, Outcome};
pub use signing::{
    DEFAULT_TOLERANCE, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, Signer, VerifyError,
};
pub use state::{Cursor, GiveUpLog};
