//! The Standard Webhooks signature: the header names, [`Signer`] (HMAC-SHA256 over
//! `{webhook-id}.{webhook-timestamp}.{body}`, signing and verifying) and
//! [`VerifyError`], why a receiver refuses a request.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::config::{SECRET_PREFIX, decode_key};
use crate::Error;

/// The header carrying the change id, the receiver's idempotency key.
pub const HEADER_ID: &str = "webhook-id";
/// The header carrying the attempt's send time, Unix seconds.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// The header carrying the space-separated `v1,<base64>` signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// How far a `webhook-timestamp` may be from the receiver's clock: the
/// specification's recommendation.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The signature scheme: HMAC-SHA256.
const SIGNATURE_VERSION: &str = "v1";

type HmacSha256 = Hmac<Sha256>;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::config::test_support::{
        VECTOR_BODY, VECTOR_ID, VECTOR_SECRET, VECTOR_SIGNATURE, VECTOR_TIMESTAMP, change,
        secret_of,
    };

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
}
