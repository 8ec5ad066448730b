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

use std::fmt::{self, Write as _};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use rand::Rng as _;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use spur_schemas::secret::Secret;
use tokio::sync::watch;

use super::change::{Change, rfc3339_ms};
use crate::Error;

/// The header carrying the change id, the receiver's idempotency key.
pub const HEADER_ID: &str = "webhook-id";
/// The header carrying the attempt's send time, Unix seconds.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// The header carrying the space-separated `v1,<base64>` signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// What a secret starts with, before the base64 of its key.
pub const SECRET_PREFIX: &str = "whsec_";
/// How far a `webhook-timestamp` may be from the receiver's clock: the
/// specification's recommendation.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The signature scheme: HMAC-SHA256.
const SIGNATURE_VERSION: &str = "v1";
/// Key sizes a secret may decode to: at least the 24 bytes Svix issues, at most the
/// SHA-256 block size (a longer key is hashed first, which adds nothing).
const KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;
/// How much of an error response's body an [`AttemptError`] keeps.
const ERROR_BODY_BYTES: usize = 200;
/// Each backoff is multiplied by a random factor in `1 ± JITTER`.
const JITTER: f64 = 0.2;
const USER_AGENT: &str = concat!("spur/", env!("CARGO_PKG_VERSION"));

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);
const DEFAULT_MAX_ATTEMPTS: u32 = 15;

type HmacSha256 = Hmac<Sha256>;

/// One webhook endpoint in the configuration. `name`, `url` and `secret` are
/// required; the rest have defaults. Check it with [`WebhookConfig::validate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Names the endpoint in logs and in its state files: 1 to 64 of `A-Z a-z 0-9 _ -`.
    /// Renaming an endpoint starts it over with a new cursor.
    pub name: String,
    /// Where changes are POSTed: an `http` or `https` URL.
    pub url: String,
    /// `whsec_` and the base64 of a 24 to 64 byte key, shared with the receiver.
    pub secret: Secret,
    /// The segments whose changes this endpoint receives; empty means every segment.
    #[serde(default)]
    pub segments: Vec<String>,
    /// How long one attempt may take, from connecting to the end of the response.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The wait after the first failed attempt; each later wait doubles.
    #[serde(default = "default_initial_backoff", with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// The longest wait between two attempts, `Retry-After` included.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Attempts per change, the first included, before it is given up and logged.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

fn default_initial_backoff() -> Duration {
    DEFAULT_INITIAL_BACKOFF
}

fn default_max_backoff() -> Duration {
    DEFAULT_MAX_BACKOFF
}

fn default_max_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}

impl WebhookConfig {
    /// An endpoint for every segment, with the default timeout and retries.
    pub fn new(name: impl Into<String>, url: impl Into<String>, secret: Secret) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            secret,
            segments: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// Whether this endpoint receives the changes of `segment`.
    pub fn wants(&self, segment: &str) -> bool {
        self.segments.is_empty() || self.segments.iter().any(|s| s == segment)
    }

    /// Checks what the types alone cannot. Messages name the webhook, never show the
    /// secret, and do not repeat the URL (it may carry a token).
    pub fn validate(&self) -> crate::Result<()> {
        if !valid_name(&self.name) {
            return Err(Error::Config(format!(
                "webhook name {:?} must be 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'",
                self.name
            )));
        }
        parse_url(&self.url).map_err(|why| self.error(why))?;
        let Some(encoded) = self.secret.expose().strip_prefix(SECRET_PREFIX) else {
            return Err(self.error(format!(
                "secret must be {SECRET_PREFIX} followed by the base64 of the key"
            )));
        };
        decode_key(encoded).map_err(|why| self.error(format!("secret {why}")))?;
        if self.segments.iter().any(|s| s.is_empty()) {
            return Err(self.error("segments holds an empty name".into()));
        }
        if self.timeout.is_zero() {
            return Err(self.error("timeout must be more than 0s".into()));
        }
        if self.initial_backoff.is_zero() {
            return Err(self.error("initial_backoff must be more than 0s".into()));
        }
        if self.max_backoff < self.initial_backoff {
            return Err(self.error("max_backoff must be at least initial_backoff".into()));
        }
        if self.max_attempts == 0 {
            return Err(self.error("max_attempts must be at least 1".into()));
        }
        Ok(())
    }

    /// The nominal wait after the `failed_attempts`-th failed attempt (from 1), before
    /// jitter: `initial_backoff × 2^(failed_attempts - 1)`, capped at `max_backoff`.
    pub fn backoff(&self, failed_attempts: u32) -> Duration {
        let doublings = failed_attempts.saturating_sub(1).min(31);
        self.initial_backoff
            .checked_mul(1 << doublings)
            .map_or(self.max_backoff, |wait| wait.min(self.max_backoff))
    }

    fn error(&self, what: String) -> Error {
        Error::Config(format!("webhook {:?}: {what}", self.name))
    }
}

/// `[A-Za-z0-9_-]{1,64}`: safe in a file name and a log field.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn parse_url(url: &str) -> Result<reqwest::Url, String> {
    // The URL itself stays out of the messages: it may carry a token.
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("url is not a valid URL ({e})"))?;
    match parsed.scheme() {
        "http" | "https" => Ok(parsed),
        other => Err(format!(
            "url must start with http:// or https://, not {other}:"
        )),
    }
}

/// The key a secret's base64 part decodes to. The reason on failure completes the
/// phrase "secret …" and never includes the secret.
fn decode_key(encoded: &str) -> Result<Vec<u8>, String> {
    let key = BASE64
        .decode(encoded)
        .map_err(|_| format!("is not valid base64 after {SECRET_PREFIX}"))?;
    if !KEY_BYTES.contains(&key.len()) {
        return Err(format!(
            "decodes to {} bytes; the key must be {} to {} bytes (e.g. {SECRET_PREFIX} and the base64 of 32 random bytes)",
            key.len(),
            KEY_BYTES.start(),
            KEY_BYTES.end()
        ));
    }
    Ok(key)
}

/// Signs and verifies Standard Webhooks signatures with one secret.
#[derive(Clone)]
pub struct Signer {
    /// HMAC state keyed with the secret, cloned for each message.
    keyed: HmacSha256,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer").finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer for a `whsec_<base64>` secret. As in the reference implementations
    /// the prefix may be left out; the base64 (standard alphabet) must decode to a key
    /// of 24 to 64 bytes.
    pub fn from_secret(secret: &str) -> crate::Result<Signer> {
        let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
        let key =
            decode_key(encoded).map_err(|why| Error::Config(format!("webhook secret {why}")))?;
        let keyed = HmacSha256::new_from_slice(&key)
            .map_err(|_| Error::Config("webhook secret: key of an unusable length".into()))?;
        Ok(Signer { keyed })
    }

    /// The `webhook-signature` value for a message: `v1,` and the base64 of
    /// HMAC-SHA256 over `{msg_id}.{timestamp_secs}.{body}`.
    pub fn sign(&self, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> String {
        let tag = self
            .mac(msg_id, timestamp_secs, body)
            .finalize()
            .into_bytes();
        format!("{SIGNATURE_VERSION},{}", BASE64.encode(tag))
    }

    /// What a receiver does with a request: checks that `timestamp_header` is within
    /// `tolerance` of `now_secs` (either way) and that one of the `v1,` entries of
    /// `signature_header` is the signature of `msg_id`, the timestamp and `body`.
    /// Entries of other versions are ignored; tags are compared in constant time.
    pub fn verify(
        &self,
        msg_id: &str,
        timestamp_header: &str,
        signature_header: &str,
        body: &[u8],
        now_secs: i64,
        tolerance: Duration,
    ) -> Result<(), VerifyError> {
        let timestamp: i64 = timestamp_header
            .trim()
            .parse()
            .map_err(|_| VerifyError::BadTimestamp)?;
        if now_secs.abs_diff(timestamp) > tolerance.as_secs() {
            return Err(VerifyError::OutsideTolerance {
                timestamp,
                now: now_secs,
            });
        }
        let expected = self.mac(msg_id, timestamp, body);
        let mut candidates = 0;
        for entry in signature_header.split_whitespace() {
            let Some((SIGNATURE_VERSION, encoded)) = entry.split_once(',') else {
                continue;
            };
            candidates += 1;
            let Ok(tag) = BASE64.decode(encoded) else {
                continue;
            };
            if expected.clone().verify_slice(&tag).is_ok() {
                return Ok(());
            }
        }
        Err(if candidates == 0 {
            VerifyError::NoSignature
        } else {
            VerifyError::Mismatch
        })
    }

    fn mac(&self, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_secs.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

/// Why [`Signer::verify`] refused a request. A receiver answers any of them with a
/// 4xx and does not act on the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("webhook-timestamp is not a Unix time in seconds")]
    BadTimestamp,
    #[error(
        "webhook-timestamp {timestamp} is too far from now ({now}): a replayed request or a skewed clock"
    )]
    OutsideTolerance { timestamp: i64, now: i64 },
    #[error("webhook-signature holds no v1 signature")]
    NoSignature,
    #[error("no signature matches: a different secret, or a changed body or header")]
    Mismatch,
}

/// One failed attempt, as logged and as kept when delivery gives up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{description}")]
pub struct AttemptError {
    /// The status and the start of the response body, or what went wrong in
    /// transport. Never the URL.
    pub description: String,
    /// The response status; `None` when there was no response (timeout, connection).
    pub status: Option<u16>,
    /// From `Retry-After: <seconds>` on a 429 or 503: the wait the receiver asked for.
    pub retry_after: Option<Duration>,
}

impl AttemptError {
    fn transport(error: reqwest::Error, timeout: Duration) -> AttemptError {
        let description = if error.is_timeout() {
            format!("no response within {timeout:?}")
        } else if error.is_builder() {
            format!("the request could not be built: {}", chain(error))
        } else {
            format!("request failed: {}", chain(error))
        };
        AttemptError {
            description,
            status: None,
            retry_after: None,
        }
    }

    fn status(status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> AttemptError {
        let mut description = format!("HTTP {status}");
        if status.is_redirection() {
            description.push_str(" (redirects are not followed: set url to the final address)");
        }
        let body = String::from_utf8_lossy(body);
        let body = body.trim();
        if !body.is_empty() {
            // Debug formatting escapes quotes and line breaks: one log line.
            let _ = write!(description, ": {body:?}");
        }
        AttemptError {
            description,
            status: Some(status.as_u16()),
            retry_after,
        }
    }
}

/// An error and its sources on one line, without the URL reqwest would include.
fn chain(error: reqwest::Error) -> String {
    crate::error::chain(&error.without_url())
}

/// How [`Endpoint::deliver`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answered attempt number `attempts`.
    Delivered { attempts: u32 },
    /// Every attempt failed; `error` describes the last one. The caller logs the
    /// change in the [`GiveUpLog`] and moves on.
    GaveUp { attempts: u32, error: String },
    /// A stop was requested before delivery succeeded or gave up: the change is
    /// neither delivered nor given up, and is sent again after a restart.
    Stopped,
}

/// One configured endpoint, ready to send: its HTTP client and its signer.
#[derive(Debug)]
pub struct Endpoint {
    config: WebhookConfig,
    url: reqwest::Url,
    signer: Signer,
    client: reqwest::Client,
}

impl Endpoint {
    /// Validates `config` and builds the endpoint's HTTP client: `timeout` per
    /// attempt, user agent `spur/<version>`, redirects not followed (a redirect is a
    /// misconfigured `url`, and following one would resend the signed body elsewhere).
    pub fn new(config: WebhookConfig) -> crate::Result<Endpoint> {
        config.validate()?;
        let url = parse_url(&config.url).map_err(|why| config.error(why))?;
        let signer = Signer::from_secret(config.secret.expose())?;
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                config.error(format!("the HTTP client could not be built: {}", chain(e)))
            })?;
        Ok(Endpoint {
            config,
            url,
            signer,
            client,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    /// One signed `POST` of `body` (the change's [`Change::body`]), timestamped now.
    /// `Ok` on a 2xx response; any other status, a timeout or a transport failure is
    /// an [`AttemptError`].
    pub async fn attempt(&self, change: &Change, body: &[u8]) -> Result<(), AttemptError> {
        let timestamp = chrono::Utc::now().timestamp();
        let response = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(HEADER_ID, change.id.as_str())
            .header(HEADER_TIMESTAMP, timestamp.to_string())
            .header(
                HEADER_SIGNATURE,
                self.signer.sign(&change.id, timestamp, body),
            )
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| AttemptError::transport(e, self.config.timeout))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = retry_after(status, response.headers());
        let body = body_prefix(response, ERROR_BODY_BYTES).await;
        Err(AttemptError::status(status, &body, retry_after))
    }

    /// Delivers `change`, retrying as the module documentation describes, until it is
    /// delivered, `max_attempts` attempts have failed, or `stop` becomes `true`.
    ///
    /// A stop ends a wait between attempts at once; an attempt in flight is finished
    /// (it is bounded by `timeout`) so that a delivery that succeeds is reported as
    /// such. A dropped `stop` sender counts as a stop: nobody is left to ask for one.
    pub async fn deliver(&self, change: &Change, stop: &mut watch::Receiver<bool>) -> Outcome {
        let body = change.body();
        let mut attempts = 0;
        loop {
            if *stop.borrow() {
                return Outcome::Stopped;
            }
            attempts += 1;
            let error = match self.attempt(change, &body).await {
                Ok(()) => {
                    tracing::debug!(
                        webhook = %self.config.name,
                        change_id = %change.id,
                        attempts,
                        "Webhook delivered the change."
                    );
                    return Outcome::Delivered { attempts };
                }
                Err(error) => error,
            };
            if attempts >= self.config.max_attempts {
                tracing::warn!(
                    webhook = %self.config.name,
                    change_id = %change.id,
                    attempt = attempts,
                    error = %error,
                    "Webhook delivery attempt failed, the last allowed: giving up on the change."
                );
                return Outcome::GaveUp {
                    attempts,
                    error: error.description,
                };
            }
            let wait = self.wait_before_retry(attempts, error.retry_after);
            tracing::warn!(
                webhook = %self.config.name,
                change_id = %change.id,
                attempt = attempts,
                error = %error,
                retry_in = ?wait,
                "Webhook delivery attempt failed; retrying."
            );
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stopped(stop) => return Outcome::Stopped,
            }
        }
    }

    /// The wait after `failed_attempts` failures: the receiver's `Retry-After` if it
    /// sent one, else the jittered backoff; never more than `max_backoff`.
    fn wait_before_retry(&self, failed_attempts: u32, retry_after: Option<Duration>) -> Duration {
        let wait = retry_after.unwrap_or_else(|| jitter(self.config.backoff(failed_attempts)));
        wait.min(self.config.max_backoff)
    }
}

/// Resolves once `stop` holds `true` or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender was dropped, which counts as a stop.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// `wait` times a random factor in `1 ± JITTER`.
fn jitter(wait: Duration) -> Duration {
    let factor = rand::rng().random_range(1.0 - JITTER..=1.0 + JITTER);
    Duration::try_from_secs_f64(wait.as_secs_f64() * factor).unwrap_or(wait)
}

/// `Retry-After` in seconds, honoured on 429 and 503 only. The HTTP-date form is
/// ignored: the ordinary backoff applies.
fn retry_after(status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let seconds: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

/// The first `limit` bytes of a response body, reading no further than needed;
/// whatever arrived before a read error.
async fn body_prefix(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut prefix = Vec::new();
    while prefix.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => prefix.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    prefix.truncate(limit);
    prefix
}

/// The last `seq` an endpoint handled (delivered or given up), in
/// `<state_dir>/webhook-<name>.cursor` as one decimal number, so that a restart
/// resumes after it. The file is replaced atomically and durably on every store.
///
/// Blocking file I/O: a few syscalls and two fsyncs per store.
#[derive(Debug)]
pub struct Cursor {
    dir: PathBuf,
    path: PathBuf,
    seq: i64,
}

impl Cursor {
    /// Reads the cursor of endpoint `name`, creating `state_dir` if needed. A missing
    /// file is seq 0 (nothing handled yet); a file that does not hold a non-negative
    /// decimal number is an error, not 0, since 0 would resend every change.
    pub fn open(state_dir: &Path, name: &str) -> io::Result<Cursor> {
        let path = state_file(state_dir, name, "cursor")?;
        let seq = match fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|seq| *seq >= 0)
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "webhook cursor {} does not hold a sequence number; fix it, or delete it to resend from the start",
                            path.display()
                        ),
                    )
                })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(Cursor {
            dir: state_dir.to_owned(),
            path,
            seq,
        })
    }

    /// The last seq handled; 0 when none was.
    pub fn seq(&self) -> i64 {
        self.seq
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records `seq` as handled. When this returns, the new value survives a crash or
    /// power loss: it is written to a temporary file in the same directory, synced,
    /// renamed over the cursor, and the directory is synced. On error the file still
    /// holds the old value or the new one, never a mix.
    pub fn store(&mut self, seq: i64) -> io::Result<()> {
        let temporary = self.path.with_extension("cursor.tmp");
        let mut file = File::create(&temporary)?;
        file.write_all(format!("{seq}\n").as_bytes())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temporary, &self.path)?;
        sync_dir(&self.dir)?;
        self.seq = seq;
        Ok(())
    }
}

/// The changes an endpoint gave up on, one JSON object per line in
/// `<state_dir>/webhook-<name>.failed.jsonl`, for the operator to inspect and replay:
///
/// ```json
/// {"id":"chg_…","seq":42,"segment":"fans","subject_id":"…","type":"segment.entered",
///  "attempts":15,"error":"HTTP 500 Internal Server Error","at":"2026-11-29T12:34:56.789Z"}
/// ```
///
/// `at` is when delivery gave up. Blocking file I/O, synced on every append.
#[derive(Debug)]
pub struct GiveUpLog {
    dir: PathBuf,
    path: PathBuf,
}

impl GiveUpLog {
    /// The log of endpoint `name`, creating `state_dir` if needed; the file itself is
    /// created by the first append.
    pub fn open(state_dir: &Path, name: &str) -> io::Result<GiveUpLog> {
        Ok(GiveUpLog {
            dir: state_dir.to_owned(),
            path: state_file(state_dir, name, "failed.jsonl")?,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line for `change` and syncs it to disk before returning.
    pub fn append(&self, change: &Change, attempts: u32, error: &str) -> io::Result<()> {
        #[derive(Serialize)]
        struct Line<'a> {
            id: &'a str,
            seq: i64,
            segment: &'a str,
            subject_id: &'a str,
            #[serde(rename = "type")]
            kind: &'static str,
            attempts: u32,
            error: &'a str,
            at: String,
        }
        let mut line = serde_json::to_vec(&Line {
            id: &change.id,
            seq: change.seq,
            segment: &change.segment,
            subject_id: &change.subject_id,
            kind: change.change.event_type(),
            attempts,
            error,
            at: rfc3339_ms(chrono::Utc::now().timestamp_millis()),
        })
        .map_err(io::Error::other)?;
        line.push(b'\n');
        let created = !self.path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        // One write per line: concurrent appends cannot interleave within a line.
        file.write_all(&line)?;
        file.sync_data()?;
        if created {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// `<state_dir>/webhook-<name>.<suffix>`, after checking the name cannot escape the
/// directory and creating the directory.
fn state_file(state_dir: &Path, name: &str, suffix: &str) -> io::Result<PathBuf> {
    if !valid_name(name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "webhook name {name:?} cannot name a state file: use 1 to 64 of A-Z, a-z, 0-9, '_' and '-'"
            ),
        ));
    }
    fs::create_dir_all(state_dir)?;
    Ok(state_dir.join(format!("webhook-{name}.{suffix}")))
}

/// Makes a rename or a file creation in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        // Directories cannot be opened for syncing here; the rename is atomic anyway.
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use anyhow::Context as _;
    use http_body_util::{BodyExt as _, Full};
    use hyper::body::{Bytes, Incoming};
    use hyper::header::HeaderValue;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;

    use super::*;
    use crate::dispatch::ChangeKind;

    // The Standard Webhooks test vector, as in the reference libraries' tests.
    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TIMESTAMP: i64 = 1_614_265_330;
    const VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const VECTOR_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    /// Only a guard against a hang: no test should come near it.
    const HANG_GUARD: Duration = Duration::from_secs(30);
    const HOUR: Duration = Duration::from_secs(3600);

    fn secret_of(key: &[u8]) -> String {
        format!("{SECRET_PREFIX}{}", BASE64.encode(key))
    }

    fn change() -> Change {
        Change::new(
            42,
            "boot_fans",
            "subject-1",
            ChangeKind::Entered,
            "matched",
            1_764_417_600_000,
        )
    }

    /// A valid configuration with quick retries, for the endpoint at `url`.
    fn config(url: &str) -> WebhookConfig {
        WebhookConfig {
            timeout: Duration::from_secs(5),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
            ..WebhookConfig::new("crm", url, Secret::new(VECTOR_SECRET))
        }
    }

    #[test]
    fn signature_matches_the_standard_webhooks_test_vector() -> anyhow::Result<()> {
        let signer = Signer::from_secret(VECTOR_SECRET)?;
        assert_eq!(
            signer.sign(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY),
            VECTOR_SIGNATURE
        );
        signer.verify(
            VECTOR_ID,
            "1614265330",
            VECTOR_SIGNATURE,
            VECTOR_BODY,
            VECTOR_TIMESTAMP,
            DEFAULT_TOLERANCE,
        )?;
        // The reference libraries accept the key without its prefix too.
        let bare = Signer::from_secret(&VECTOR_SECRET[SECRET_PREFIX.len()..])?;
        assert_eq!(
            bare.sign(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY),
            VECTOR_SIGNATURE
        );
        Ok(())
    }

    #[test]
    fn verify_accepts_what_sign_produces_and_nothing_else() -> anyhow::Result<()> {
        let signer = Signer::from_secret(&secret_of(&[7; 32]))?;
        let now = 1_800_000_000;
        let body = change().body();
        let signature = signer.sign("chg_1", now, &body);
        let verify = |id: &str, timestamp: &str, signature: &str, body: &[u8], now: i64| {
            signer.verify(id, timestamp, signature, body, now, DEFAULT_TOLERANCE)
        };
        let stamp = now.to_string();

        verify("chg_1", &stamp, &signature, &body, now)?;
        verify("chg_1", &stamp, &signature, &body, now + 300)?;

        let mut changed = body.clone();
        changed[10] ^= 1;
        assert_eq!(
            verify("chg_1", &stamp, &signature, &changed, now),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify("chg_2", &stamp, &signature, &body, now),
            Err(VerifyError::Mismatch)
        );
        let other = Signer::from_secret(&secret_of(&[8; 32]))?;
        assert_eq!(
            other.verify("chg_1", &stamp, &signature, &body, now, DEFAULT_TOLERANCE),
            Err(VerifyError::Mismatch)
        );
        // Replays, and timestamps from the future, are outside the tolerance even
        // with a valid signature.
        for at in [now + 301, now - 301] {
            assert_eq!(
                verify("chg_1", &stamp, &signature, &body, at),
                Err(VerifyError::OutsideTolerance {
                    timestamp: now,
                    now: at
                })
            );
        }
        assert_eq!(
            verify("chg_1", "yesterday", &signature, &body, now),
            Err(VerifyError::BadTimestamp)
        );
        assert_eq!(
            verify("chg_1", &stamp, "garbage", &body, now),
            Err(VerifyError::NoSignature)
        );
        assert_eq!(
            verify("chg_1", &stamp, "v1,not*base64 v1,", &body, now),
            Err(VerifyError::Mismatch)
        );
        Ok(())
    }

    #[test]
    fn verify_accepts_a_header_where_any_v1_entry_matches() -> anyhow::Result<()> {
        let signer = Signer::from_secret(VECTOR_SECRET)?;
        let stale = signer.sign(VECTOR_ID, VECTOR_TIMESTAMP - 1, VECTOR_BODY);
        let good = &VECTOR_SIGNATURE["v1,".len()..];
        for header in [
            format!("v1,bm9wZQ== {stale} {VECTOR_SIGNATURE}"),
            format!("{VECTOR_SIGNATURE} v1,bm9wZQ=="),
            // Other versions are skipped even when their value would match.
            format!("v1a,{good}  {VECTOR_SIGNATURE}"),
        ] {
            signer.verify(
                VECTOR_ID,
                "1614265330",
                &header,
                VECTOR_BODY,
                VECTOR_TIMESTAMP,
                DEFAULT_TOLERANCE,
            )?;
        }
        assert_eq!(
            signer.verify(
                VECTOR_ID,
                "1614265330",
                &format!("v1a,{good} v2,{good}"),
                VECTOR_BODY,
                VECTOR_TIMESTAMP,
                DEFAULT_TOLERANCE
            ),
            Err(VerifyError::NoSignature)
        );
        Ok(())
    }

    #[test]
    fn toml_fills_defaults_and_rejects_unknown_keys() -> anyhow::Result<()> {
        let parsed: WebhookConfig = toml::from_str(&format!(
            "name = \"crm\"\nurl = \"https://crm.example/hooks/spur\"\nsecret = \"{VECTOR_SECRET}\"\n"
        ))?;
        parsed.validate()?;
        assert_eq!(parsed.timeout, Duration::from_secs(10));
        assert_eq!(parsed.initial_backoff, Duration::from_secs(1));
        assert_eq!(parsed.max_backoff, Duration::from_secs(300));
        assert_eq!(parsed.max_attempts, 15);
        assert!(parsed.segments.is_empty() && parsed.wants("anything"));
        assert_eq!(
            parsed,
            WebhookConfig::new(
                "crm",
                "https://crm.example/hooks/spur",
                Secret::new(VECTOR_SECRET)
            ),
            "new() and the TOML defaults agree"
        );

        let parsed: WebhookConfig = toml::from_str(&format!(
            "name = \"crm\"\nurl = \"http://10.0.0.5:8080/in\"\nsecret = \"{VECTOR_SECRET}\"\n\
             segments = [\"boot_fans\"]\ntimeout = \"3s\"\ninitial_backoff = \"250ms\"\n\
             max_backoff = \"1m\"\nmax_attempts = 4\n"
        ))?;
        parsed.validate()?;
        assert_eq!(parsed.timeout, Duration::from_secs(3));
        assert_eq!(parsed.initial_backoff, Duration::from_millis(250));
        assert_eq!(parsed.max_backoff, Duration::from_secs(60));
        assert_eq!(parsed.max_attempts, 4);
        assert!(parsed.wants("boot_fans") && !parsed.wants("sandal_fans"));

        let unknown = toml::from_str::<WebhookConfig>(&format!(
            "name = \"crm\"\nurl = \"https://x.example\"\nsecret = \"{VECTOR_SECRET}\"\nretries = 3\n"
        ));
        let message = unknown
            .err()
            .context("an unknown key is rejected")?
            .to_string();
        assert!(message.contains("retries"), "{message}");
        Ok(())
    }

    #[test]
    fn validation_names_the_problem_and_never_the_secret() {
        let key = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let base = config("https://crm.example/hook");
        assert!(base.validate().is_ok(), "{:?}", base.validate());
        let with = |change: &dyn Fn(&mut WebhookConfig)| {
            let mut config = base.clone();
            change(&mut config);
            config
        };
        let cases: Vec<(WebhookConfig, &str)> = vec![
            (with(&|c| c.name = String::new()), "webhook name \"\""),
            (with(&|c| c.name = "has space".into()), "must be 1 to 64"),
            (with(&|c| c.name = "../etc".into()), "must be 1 to 64"),
            (with(&|c| c.name = "x".repeat(65)), "must be 1 to 64"),
            (with(&|c| c.url = "ftp://crm.example/".into()), "not ftp:"),
            (
                with(&|c| c.url = "crm.example/hook".into()),
                "not a valid URL",
            ),
            (with(&|c| c.secret = Secret::new(key)), "must be whsec_"),
            (
                with(&|c| c.secret = Secret::new(format!("whsec_{key}!"))),
                "not valid base64",
            ),
            (
                with(&|c| c.secret = Secret::new(secret_of(&[1; 23]))),
                "decodes to 23 bytes",
            ),
            (
                with(&|c| c.secret = Secret::new(secret_of(&[1; 65]))),
                "decodes to 65 bytes",
            ),
            (with(&|c| c.max_attempts = 0), "max_attempts"),
            (with(&|c| c.timeout = Duration::ZERO), "timeout"),
            (
                with(&|c| c.initial_backoff = Duration::ZERO),
                "initial_backoff",
            ),
            (
                with(&|c| c.max_backoff = Duration::from_millis(1)),
                "max_backoff",
            ),
            (with(&|c| c.segments = vec![String::new()]), "segments"),
        ];
        for (config, expected) in cases {
            let message = match config.validate() {
                Err(Error::Config(message)) => message,
                other => panic!("{config:?} gave {other:?}, expected a configuration error"),
            };
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
            if valid_name(&config.name) {
                assert!(message.starts_with("webhook \"crm\":"), "{message}");
            }
            assert!(!message.contains(key), "the secret leaked into {message:?}");
        }
        // The bounds themselves are allowed.
        for (name, key_bytes) in [("x".repeat(64), 64), ("a-Z_9".into(), 24)] {
            let edge = with(&|c| {
                c.name = name.clone();
                c.secret = Secret::new(secret_of(&vec![1; key_bytes]));
            });
            assert!(edge.validate().is_ok(), "{:?}", edge.validate());
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_jitter_stays_within_a_fifth() {
        let defaults = WebhookConfig::new("crm", "https://x.example", Secret::new(VECTOR_SECRET));
        let waits: Vec<u64> = (1..=14).map(|n| defaults.backoff(n).as_secs()).collect();
        assert_eq!(
            waits,
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300, 300, 300]
        );
        assert_eq!(defaults.backoff(u32::MAX), Duration::from_secs(300));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let wait = jitter(Duration::from_secs(100));
            assert!(
                (Duration::from_secs(80)..=Duration::from_secs(120)).contains(&wait),
                "{wait:?}"
            );
            seen.insert(wait);
        }
        assert!(seen.len() > 1, "the jitter varies");
    }

    #[test]
    fn retry_after_is_read_in_seconds_on_429_and_503_only() {
        let headers = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                RETRY_AFTER,
                reqwest::header::HeaderValue::from_static(value),
            );
            headers
        };
        let seconds = Some(Duration::from_secs(7));
        assert_eq!(
            retry_after(StatusCode::TOO_MANY_REQUESTS, &headers("7")),
            seconds
        );
        assert_eq!(
            retry_after(StatusCode::SERVICE_UNAVAILABLE, &headers(" 7 ")),
            seconds
        );
        assert_eq!(
            retry_after(StatusCode::INTERNAL_SERVER_ERROR, &headers("7")),
            None
        );
        assert_eq!(
            retry_after(
                StatusCode::TOO_MANY_REQUESTS,
                &headers("Wed, 21 Oct 2015 07:28:00 GMT")
            ),
            None
        );
        assert_eq!(
            retry_after(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new()),
            None
        );
    }

    /// One scripted answer of the test receiver.
    #[derive(Clone)]
    struct Reply {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: String,
        delay: Duration,
    }

    impl Reply {
        fn status(status: u16) -> Reply {
            Reply {
                status,
                headers: Vec::new(),
                body: String::new(),
                delay: Duration::ZERO,
            }
        }

        fn header(mut self, name: &'static str, value: &'static str) -> Reply {
            self.headers.push((name, value));
            self
        }
    }

    struct Recorded {
        headers: hyper::HeaderMap,
        body: Bytes,
    }

    #[derive(Default)]
    struct Script {
        replies: VecDeque<Reply>,
        requests: Vec<Recorded>,
    }

    /// A local HTTP server that records every request and answers from a script;
    /// the last reply repeats.
    struct Receiver {
        url: String,
        script: Arc<Mutex<Script>>,
    }

    impl Receiver {
        async fn start(replies: Vec<Reply>) -> anyhow::Result<Receiver> {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr: SocketAddr = listener.local_addr()?;
            let script = Arc::new(Mutex::new(Script {
                replies: replies.into(),
                requests: Vec::new(),
            }));
            let shared = Arc::clone(&script);
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let script = Arc::clone(&shared);
                    tokio::spawn(async move {
                        let service =
                            service_fn(move |request| answer(Arc::clone(&script), request));
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            Ok(Receiver {
                url: format!("http://{addr}/hooks/spur"),
                script,
            })
        }

        fn take<T>(&self, read: impl FnOnce(&mut Script) -> T) -> T {
            read(&mut self.script.lock().expect("receiver lock"))
        }

        fn count(&self) -> usize {
            self.take(|script| script.requests.len())
        }

        async fn wait_for_requests(&self, count: usize) {
            while self.count() < count {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    async fn answer(
        script: Arc<Mutex<Script>>,
        request: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, hyper::Error> {
        let (parts, body) = request.into_parts();
        let body = body.collect().await?.to_bytes();
        let reply = {
            let mut script = script.lock().expect("receiver lock");
            script.requests.push(Recorded {
                headers: parts.headers,
                body,
            });
            if script.replies.len() > 1 {
                script.replies.pop_front()
            } else {
                script.replies.front().cloned()
            }
        }
        .unwrap_or_else(|| Reply::status(200));
        tokio::time::sleep(reply.delay).await;
        let mut response = Response::new(Full::new(Bytes::from(reply.body)));
        *response.status_mut() =
            hyper::StatusCode::from_u16(reply.status).expect("scripted status");
        for (name, value) in reply.headers {
            response
                .headers_mut()
                .insert(name, HeaderValue::from_static(value));
        }
        Ok(response)
    }

    async fn guarded<T>(future: impl Future<Output = T>) -> anyhow::Result<T> {
        tokio::time::timeout(HANG_GUARD, future)
            .await
            .context("hung: no result within the hang guard")
    }

    #[tokio::test]
    async fn delivery_sends_the_body_with_verifiable_standard_headers() -> anyhow::Result<()> {
        let receiver = Receiver::start(vec![Reply::status(204)]).await?;
        let endpoint = Endpoint::new(config(&receiver.url))?;
        let change = change();
        let (_stop, mut stop) = watch::channel(false);

        let outcome = guarded(endpoint.deliver(&change, &mut stop)).await?;

        assert_eq!(outcome, Outcome::Delivered { attempts: 1 });
        let now = chrono::Utc::now().timestamp();
        receiver.take(|script| -> anyhow::Result<()> {
            let [request] = script.requests.as_slice() else {
                anyhow::bail!("{} requests, expected 1", script.requests.len());
            };
            let header = |name: &str| -> anyhow::Result<&str> {
                let value = request.headers.get(name).context(name.to_owned())?;
                Ok(value.to_str()?)
            };
            assert_eq!(request.body.as_ref(), change.body().as_slice());
            assert_eq!(header("content-type")?, "application/json");
            assert_eq!(header(HEADER_ID)?, change.id);
            assert!(header("user-agent")?.starts_with("spur/"));
            Signer::from_secret(VECTOR_SECRET)?.verify(
                header(HEADER_ID)?,
                header(HEADER_TIMESTAMP)?,
                header(HEADER_SIGNATURE)?,
                &request.body,
                now,
                DEFAULT_TOLERANCE,
            )?;
            Ok(())
        })
    }

    #[tokio::test]
    async fn failures_are_retried_with_the_same_id_and_a_fresh_signature() -> anyhow::Result<()> {
        let receiver = Receiver::start(vec![
            Reply::status(500),
            Reply::status(500),
            Reply::status(200),
        ])
        .await?;
        let endpoint = Endpoint::new(config(&receiver.url))?;
        let change = change();
        let (_stop, mut stop) = watch::channel(false);

        let outcome = guarded(endpoint.deliver(&change, &mut stop)).await?;

        assert_eq!(outcome, Outcome::Delivered { attempts: 3 });
        let signer = Signer::from_secret(VECTOR_SECRET)?;
        let now = chrono::Utc::now().timestamp();
        receiver.take(|script| -> anyhow::Result<()> {
            assert_eq!(script.requests.len(), 3);
            for request in &script.requests {
                let header = |name: &str| -> anyhow::Result<&str> {
                    Ok(request
                        .headers
                        .get(name)
                        .context(name.to_owned())?
                        .to_str()?)
                };
                assert_eq!(header(HEADER_ID)?, change.id);
                signer.verify(
                    &change.id,
                    header(HEADER_TIMESTAMP)?,
                    header(HEADER_SIGNATURE)?,
                    &request.body,
                    now,
                    DEFAULT_TOLERANCE,
                )?;
            }
            Ok(())
        })
    }

    #[tokio::test]
    async fn retry_after_replaces_the_backoff_up_to_the_cap() -> anyhow::Result<()> {
        // With an hour of backoff, only Retry-After can bring the retries inside the
        // hang guard.
        let receiver = Receiver::start(vec![
            Reply::status(429).header("retry-after", "0"),
            Reply::status(503).header("retry-after", "1"),
            Reply::status(200),
        ])
        .await?;
        let slow = WebhookConfig {
            initial_backoff: HOUR,
            max_backoff: HOUR,
            ..config(&receiver.url)
        };
        let endpoint = Endpoint::new(slow)?;
        let (_stop, mut stop) = watch::channel(false);
        let outcome = guarded(endpoint.deliver(&change(), &mut stop)).await?;
        assert_eq!(outcome, Outcome::Delivered { attempts: 3 });
        assert_eq!(receiver.count(), 3);

        // An hour's Retry-After is capped at max_backoff (20ms here).
        let receiver = Receiver::start(vec![
            Reply::status(429).header("retry-after", "3600"),
            Reply::status(200),
        ])
        .await?;
        let endpoint = Endpoint::new(config(&receiver.url))?;
        let outcome = guarded(endpoint.deliver(&change(), &mut stop)).await?;
        assert_eq!(outcome, Outcome::Delivered { attempts: 2 });
        Ok(())
    }

    #[tokio::test]
    async fn delivery_gives_up_after_max_attempts_with_the_last_error() -> anyhow::Result<()> {
        let receiver = Receiver::start(vec![Reply {
            body: "x".repeat(300),
            ..Reply::status(500)
        }])
        .await?;
        let endpoint = Endpoint::new(WebhookConfig {
            max_attempts: 3,
            ..config(&receiver.url)
        })?;
        let (_stop, mut stop) = watch::channel(false);

        let outcome = guarded(endpoint.deliver(&change(), &mut stop)).await?;

        let Outcome::GaveUp { attempts, error } = outcome else {
            anyhow::bail!("{outcome:?}, expected GaveUp");
        };
        assert_eq!(attempts, 3);
        assert_eq!(receiver.count(), 3);
        assert!(
            error.starts_with("HTTP 500 Internal Server Error"),
            "{error}"
        );
        assert!(error.contains(&"x".repeat(200)), "{error}");
        assert!(!error.contains(&"x".repeat(201)), "{error}");
        Ok(())
    }

    #[tokio::test]
    async fn a_stop_ends_a_backoff_at_once() -> anyhow::Result<()> {
        let receiver = Receiver::start(vec![Reply::status(500)]).await?;
        let endpoint = Endpoint::new(WebhookConfig {
            initial_backoff: HOUR,
            max_backoff: HOUR,
            ..config(&receiver.url)
        })?;
        let change = change();
        let (stop, mut stopping) = watch::channel(false);
        let stopper = async {
            receiver.wait_for_requests(1).await;
            stop.send(true)
        };

        let (outcome, sent) =
            guarded(async { tokio::join!(endpoint.deliver(&change, &mut stopping), stopper) })
                .await?;

        sent?;
        assert_eq!(outcome, Outcome::Stopped);
        assert_eq!(receiver.count(), 1);
        // Stopped before it starts: nothing is sent.
        let outcome = guarded(endpoint.deliver(&change, &mut stopping)).await?;
        assert_eq!(outcome, Outcome::Stopped);
        assert_eq!(receiver.count(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn transport_failures_fail_the_attempt_without_showing_the_url() -> anyhow::Result<()> {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let endpoint = Endpoint::new(WebhookConfig {
            max_attempts: 2,
            ..config(&format!("http://127.0.0.1:{port}/hook?token=sekrit"))
        })?;
        let change = change();

        let error = guarded(endpoint.attempt(&change, &change.body()))
            .await?
            .err()
            .context("nothing listens, yet the attempt succeeded")?;
        assert_eq!(error.status, None);
        assert_eq!(error.retry_after, None);
        assert!(
            error.description.starts_with("request failed: ")
                && error.description.to_lowercase().contains("connect"),
            "{error}"
        );
        assert!(!error.description.contains("sekrit"), "{error}");

        let (_stop, mut stop) = watch::channel(false);
        let outcome = guarded(endpoint.deliver(&change, &mut stop)).await?;
        assert!(
            matches!(outcome, Outcome::GaveUp { attempts: 2, .. }),
            "{outcome:?}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_slow_receiver_times_out_and_a_redirect_is_not_followed() -> anyhow::Result<()> {
        let receiver = Receiver::start(vec![Reply {
            delay: Duration::from_secs(20),
            ..Reply::status(200)
        }])
        .await?;
        let endpoint = Endpoint::new(WebhookConfig {
            timeout: Duration::from_millis(100),
            ..config(&receiver.url)
        })?;
        let change = change();
        let error = guarded(endpoint.attempt(&change, &change.body()))
            .await?
            .err()
            .context("the receiver never answered, yet the attempt succeeded")?;
        assert_eq!(error.description, "no response within 100ms");
        assert_eq!(error.status, None);

        let receiver = Receiver::start(vec![
            Reply::status(302).header("location", "http://127.0.0.1:9/elsewhere"),
        ])
        .await?;
        let endpoint = Endpoint::new(config(&receiver.url))?;
        let error = guarded(endpoint.attempt(&change, &change.body()))
            .await?
            .err()
            .context("a redirect is not a delivery")?;
        assert_eq!(error.status, Some(302));
        assert!(
            error.description.contains("redirects are not followed"),
            "{error}"
        );
        assert_eq!(receiver.count(), 1);
        Ok(())
    }

    #[test]
    fn cursor_starts_at_zero_and_survives_a_reopen() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("state");

        let mut cursor = Cursor::open(&state, "crm")?;
        assert_eq!(cursor.seq(), 0);
        assert!(state.is_dir(), "the state directory is created");
        cursor.store(41)?;
        cursor.store(42)?;
        assert_eq!(cursor.seq(), 42);

        assert_eq!(Cursor::open(&state, "crm")?.seq(), 42);
        assert_eq!(
            fs::read_to_string(state.join("webhook-crm.cursor"))?,
            "42\n"
        );
        assert_eq!(
            Cursor::open(&state, "other")?.seq(),
            0,
            "one cursor per name"
        );
        let mut names: Vec<_> = fs::read_dir(&state)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        assert_eq!(names, ["webhook-crm.cursor"], "no temporary file is left");
        Ok(())
    }

    #[test]
    fn a_corrupt_cursor_is_an_error_not_zero() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        for text in ["forty-two", "", "-3", "4 2"] {
            fs::write(dir.path().join("webhook-crm.cursor"), text)?;
            let error = Cursor::open(dir.path(), "crm")
                .err()
                .with_context(|| format!("{text:?} was accepted"))?;
            assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        }
        let error = Cursor::open(dir.path(), "../crm")
            .err()
            .context("a name with a path was accepted")?;
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        Ok(())
    }

    #[test]
    fn give_up_log_appends_one_json_line_per_change() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let log = GiveUpLog::open(dir.path(), "crm")?;
        let first = change();
        let second = Change::new(
            43,
            "boot_fans",
            "subject-2",
            ChangeKind::Exited,
            "consent_withdrawn",
            0,
        );
        log.append(&first, 15, "HTTP 500 Internal Server Error")?;
        log.append(&second, 3, "request failed: \"quoted\"\nnewline")?;

        let text = fs::read_to_string(dir.path().join("webhook-crm.failed.jsonl"))?;
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["id"], first.id.as_str());
        assert_eq!(lines[0]["seq"], 42);
        assert_eq!(lines[0]["segment"], "boot_fans");
        assert_eq!(lines[0]["subject_id"], "subject-1");
        assert_eq!(lines[0]["type"], "segment.entered");
        assert_eq!(lines[0]["attempts"], 15);
        assert_eq!(lines[0]["error"], "HTTP 500 Internal Server Error");
        assert!(lines[0]["at"].as_str().is_some_and(|at| at.ends_with('Z')));
        assert_eq!(lines[1]["type"], "segment.exited");
        assert_eq!(lines[1]["error"], "request failed: \"quoted\"\nnewline");
        Ok(())
    }
}
