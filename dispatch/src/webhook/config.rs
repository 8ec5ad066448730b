//! One webhook endpoint's configuration: [`WebhookConfig`] with its defaults and
//! [`WebhookConfig::validate`], the nominal backoff, and the checks shared with the
//! rest of the module: parsing the `url` and decoding the `whsec_` secret to its key.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use spur_schemas::secret::Secret;

use spur_audience::config::valid_name;

use crate::Error;

/// What a secret starts with, before the base64 of its key.
pub const SECRET_PREFIX: &str = "whsec_";

/// Key sizes a secret may decode to: at least the 24 bytes Svix issues, at most the
/// SHA-256 block size (a longer key is hashed first, which adds nothing).
const KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);
/// Three days: a receiver down over a long weekend loses nothing to parking.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3 * 24 * 3600);

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
    /// Confirmation requests (no segment) go to every endpoint.
    #[serde(default)]
    pub segments: Vec<String>,
    /// Whether bodies carry `contact.email` (the subject's address, for subjects with
    /// valid marketing consent and in confirmation requests). On by default: a
    /// webhook is how a mailing system learns where to send.
    #[serde(default = "default_include_contact")]
    pub include_contact: bool,
    /// How long one attempt may take, from connecting to the end of the response.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The wait after the first failed attempt; each later wait doubles.
    #[serde(default = "default_initial_backoff", with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// The longest wait between two attempts, `Retry-After` included.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// How long a change is retried, measured from when it was decided (its
    /// `segment_changes.at`), before it is parked for `spur segments replay`. A change
    /// older than this still gets one attempt.
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// An additional bound, unset by default: park a change after this many failed
    /// attempts (the first included) even before `max_age`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

fn default_include_contact() -> bool {
    true
}

fn default_initial_backoff() -> Duration {
    DEFAULT_INITIAL_BACKOFF
}

fn default_max_backoff() -> Duration {
    DEFAULT_MAX_BACKOFF
}

fn default_max_age() -> Duration {
    DEFAULT_MAX_AGE
}

impl WebhookConfig {
    /// An endpoint for every segment, with the default timeout and retries.
    pub fn new(name: impl Into<String>, url: impl Into<String>, secret: Secret) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            secret,
            segments: Vec::new(),
            include_contact: true,
            timeout: DEFAULT_TIMEOUT,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            max_age: DEFAULT_MAX_AGE,
            max_attempts: None,
        }
    }

    /// Whether this endpoint receives the changes of `segment`.
    pub fn wants(&self, segment: &str) -> bool {
        segment.is_empty() || self.segments.is_empty() || self.segments.iter().any(|s| s == segment)
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
        if self.max_age.is_zero() {
            return Err(self.error("max_age must be more than 0s".into()));
        }
        if self.max_attempts == Some(0) {
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

    pub(super) fn error(&self, what: String) -> Error {
        Error::Config(format!("webhook {:?}: {what}", self.name))
    }
}

pub(super) fn parse_url(url: &str) -> Result<reqwest::Url, String> {
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
pub(super) fn decode_key(encoded: &str) -> Result<Vec<u8>, String> {
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

/// Fixtures shared by the tests of every part of the webhook module. They live here,
/// in the module every other part builds on, so that no test module makes two files
/// depend on each other.
#[cfg(test)]
pub(super) mod test_support {
    use super::*;
    use spur_audience::{Change, ChangeKind};

    // The Standard Webhooks test vector, as in the reference libraries' tests.
    pub(crate) const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    pub(crate) const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    pub(crate) const VECTOR_TIMESTAMP: i64 = 1_614_265_330;
    pub(crate) const VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;
    pub(crate) const VECTOR_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    pub(crate) fn secret_of(key: &[u8]) -> String {
        format!("{SECRET_PREFIX}{}", BASE64.encode(key))
    }

    pub(crate) fn change() -> Change {
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
    pub(crate) fn config(url: &str) -> WebhookConfig {
        WebhookConfig {
            timeout: Duration::from_secs(5),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
            ..WebhookConfig::new("crm", url, Secret::new(VECTOR_SECRET))
        }
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    use super::test_support::{VECTOR_SECRET, config, secret_of};
    use super::*;

    #[test]
    fn toml_fills_defaults_and_rejects_unknown_keys() -> anyhow::Result<()> {
        let parsed: WebhookConfig = toml::from_str(&format!(
            "name = \"crm\"\nurl = \"https://crm.example/hooks/spur\"\nsecret = \"{VECTOR_SECRET}\"\n"
        ))?;
        parsed.validate()?;
        assert_eq!(parsed.timeout, Duration::from_secs(10));
        assert_eq!(parsed.initial_backoff, Duration::from_secs(1));
        assert_eq!(parsed.max_backoff, Duration::from_secs(300));
        assert_eq!(parsed.max_age, Duration::from_secs(3 * 24 * 3600));
        assert_eq!(parsed.max_attempts, None);
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
             max_backoff = \"1m\"\nmax_age = \"6h\"\nmax_attempts = 4\n"
        ))?;
        parsed.validate()?;
        assert_eq!(parsed.timeout, Duration::from_secs(3));
        assert_eq!(parsed.initial_backoff, Duration::from_millis(250));
        assert_eq!(parsed.max_backoff, Duration::from_secs(60));
        assert_eq!(parsed.max_age, Duration::from_secs(6 * 3600));
        assert_eq!(parsed.max_attempts, Some(4));
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
            (with(&|c| c.max_attempts = Some(0)), "max_attempts"),
            (with(&|c| c.max_age = Duration::ZERO), "max_age"),
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
}
