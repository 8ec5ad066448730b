//! Sending: [`Endpoint`] (one configured receiver with its HTTP client and signer),
//! one signed attempt and the retry loop around it, with backoff, jitter and
//! `Retry-After`; [`Outcome`] and [`AttemptError`] report how it went.

use std::fmt::Write as _;
use std::time::Duration;

use rand::Rng as _;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use spur_audience::Change;

use super::config::{WebhookConfig, parse_url};
use super::signing::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, Signer};

/// How much of an error response's body an [`AttemptError`] keeps.
const ERROR_BODY_BYTES: usize = 200;
/// Each backoff is multiplied by a random factor in `1 ± JITTER`.
const JITTER: f64 = 0.2;
const USER_AGENT: &str = concat!("spur/", env!("CARGO_PKG_VERSION"));

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
    spur_schemas::error_chain(&error.without_url())
}

/// How [`Endpoint::deliver`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answered attempt number `attempts`.
    Delivered { attempts: u32 },
    /// Every attempt failed and `bound` says no more may be made; `error` describes
    /// the last one. The caller parks the change.
    Failed {
        attempts: u32,
        /// When the first attempt started, ms since the epoch.
        first_attempt_ms: i64,
        bound: Bound,
        error: String,
    },
    /// A stop was requested before delivery succeeded or failed for good: the change
    /// is neither delivered nor parked, and is sent again after a restart.
    Stopped,
}

/// Which bound of a [`Retry`] ended the attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// The change reached `max_age` (measured from its decision).
    MaxAge,
    /// `max_attempts` attempts failed.
    MaxAttempts,
}

impl Bound {
    pub fn as_str(self) -> &'static str {
        match self {
            Bound::MaxAge => "max_age",
            Bound::MaxAttempts => "max_attempts",
        }
    }
}

/// How long [`Endpoint::deliver`] keeps trying one change. At least one attempt is
/// always made; after a failed one, delivery ends when either bound is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// No attempt starts after this time (ms since the epoch): a failed attempt that
    /// ended at or after it is the last, and a wait that would cross it is shortened
    /// so that one last attempt falls on it.
    pub until_ms: Option<i64>,
    /// At most this many attempts.
    pub max_attempts: Option<u32>,
}

impl Retry {
    /// Live delivery of `change`: until `max_age` after the change was decided
    /// (`Change::at_ms`), and at most `max_attempts` attempts if that is set.
    pub fn live(config: &WebhookConfig, change: &Change) -> Retry {
        let max_age = i64::try_from(config.max_age.as_millis()).unwrap_or(i64::MAX);
        Retry {
            until_ms: Some(change.at_ms.saturating_add(max_age)),
            max_attempts: config.max_attempts,
        }
    }

    /// At most `attempts` attempts, whatever the change's age (replay).
    pub fn attempts(attempts: u32) -> Retry {
        Retry {
            until_ms: None,
            max_attempts: Some(attempts.max(1)),
        }
    }

    /// After `attempts` failed attempts, the last ending at `now_ms`: the bound that
    /// forbids another, if any.
    fn exhausted(self, attempts: u32, now_ms: i64) -> Option<Bound> {
        if self.max_attempts.is_some_and(|max| attempts >= max) {
            return Some(Bound::MaxAttempts);
        }
        if self.until_ms.is_some_and(|until| now_ms >= until) {
            return Some(Bound::MaxAge);
        }
        None
    }

    /// `wait`, shortened so that the next attempt starts no later than `until_ms`.
    fn clip(self, wait: Duration, now_ms: i64) -> Duration {
        match self.until_ms {
            Some(until) => {
                let left = Duration::from_millis(u64::try_from(until - now_ms).unwrap_or(0));
                wait.min(left)
            }
            None => wait,
        }
    }
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

    /// Delivers `change`, retrying as the [`webhook`](super) module documentation
    /// describes, until it is delivered, `retry` says to stop (see [`Retry`]), or
    /// `stop` becomes `true`. There is always at least one attempt.
    ///
    /// A stop ends a wait between attempts at once; an attempt in flight is finished
    /// (it is bounded by `timeout`) so that a delivery that succeeds is reported as
    /// such. A dropped `stop` sender counts as a stop: nobody is left to ask for one.
    pub async fn deliver(
        &self,
        change: &Change,
        retry: Retry,
        stop: &mut watch::Receiver<bool>,
    ) -> Outcome {
        let body = if self.config.include_contact {
            change.body()
        } else {
            change.body_without_contact()
        };
        let mut attempts = 0;
        let mut first_attempt_ms = None;
        loop {
            if *stop.borrow() {
                return Outcome::Stopped;
            }
            attempts += 1;
            let started_ms = chrono::Utc::now().timestamp_millis();
            let first_attempt_ms = *first_attempt_ms.get_or_insert(started_ms);
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
            let now_ms = chrono::Utc::now().timestamp_millis();
            if let Some(bound) = retry.exhausted(attempts, now_ms) {
                tracing::warn!(
                    webhook = %self.config.name,
                    change_id = %change.id,
                    attempt = attempts,
                    error = %error,
                    bound = bound.as_str(),
                    "Webhook delivery attempt failed, the last allowed: the change is parked."
                );
                return Outcome::Failed {
                    attempts,
                    first_attempt_ms,
                    bound,
                    error: error.description,
                };
            }
            let wait = retry.clip(self.wait_before_retry(attempts, error.retry_after), now_ms);
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

#[cfg(test)]
mod tests {
    use spur_schemas::secret::Secret;

    use super::*;
    use crate::webhook::config::test_support::VECTOR_SECRET;

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
}
