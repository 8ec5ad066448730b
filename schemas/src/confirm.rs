//! The double opt-in confirmation link: names a subject and the marketing grant it
//! confirms, expires, and cannot be forged or altered without the key.
//!
//! A marketing grant makes the segment service emit `consent.confirmation_requested`
//! with `confirm_url` = `[confirm] url` + `?token=…`; the mailing system sends it to
//! the address. `GET` on that URL (the collector's `/v1/confirm`) answers a page with
//! a button — link scanners prefetch GETs, so a GET changes nothing — and the button's
//! `POST` produces a consent event granting marketing with evidence
//! `{confirmation: true, method: "double_opt_in_link", grant_seq}`, which the ledger
//! records as `confirm`. A website cannot send that evidence: the collector clears
//! `confirmation`, `method` and `grant_seq` on everything a browser sends.
//!
//! Token layout, base64url without padding (54 characters):
//!
//! ```text
//! subject (16 bytes: the subject id's hex decoded)
//!   ‖ grant seq (8 bytes, big-endian: the ledger seq of the grant being confirmed)
//!   ‖ expires (8 bytes, big-endian: seconds since the epoch)
//!   ‖ HMAC-SHA256(key, "spur-confirm-v1" ‖ 0x00 ‖ the 32 bytes before)[..16]
//! ```
//!
//! Like the unsubscribe token it carries no personal data in clear; its domain string
//! differs, so neither token verifies as the other even under one key. The grant seq
//! lets the ledger refuse a link issued before a later withdrawal: confirming must
//! never revive consent the person took back.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::record::is_subject_id;
use crate::secret::Secret;
use crate::unsubscribe::check_link_key;

/// The consent evidence `method` of a confirmation made through the signed link
/// ([`crate::wire::ConsentEvidence::method`]).
pub const DOUBLE_OPT_IN_METHOD: &str = "double_opt_in_link";

/// `[confirm]`: the key of the confirmation links, shared by the collector (verifies
/// them at `/v1/confirm`) and the segment service (puts a link into each
/// `consent.confirmation_requested`), where recipients reach that endpoint, and how
/// long a link stays valid.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfirmConfig {
    /// The HMAC key of the tokens (its UTF-8 bytes): at least 32 bytes, e.g.
    /// `openssl rand -hex 32`. Without it the collector answers 404
    /// `confirm_disabled` and no confirmation is requested. Changing it invalidates
    /// every link already sent.
    pub key: Option<Secret>,
    /// The collector's `/v1/confirm` as recipients reach it (e.g.
    /// `https://t.example.com/v1/confirm`). Needs `key`.
    pub url: Option<String>,
    /// How long a link is valid after the grant it confirms (default 7 days).
    #[serde(with = "humantime_serde")]
    pub valid_for: Duration,
}

impl Default for ConfirmConfig {
    fn default() -> Self {
        ConfirmConfig {
            key: None,
            url: None,
            valid_for: Duration::from_secs(7 * 86_400),
        }
    }
}

impl ConfirmConfig {
    /// A key too short to be safe, a URL without a key, or a validity of zero is
    /// refused.
    pub fn validate(&self) -> Result<(), String> {
        check_link_key("confirm", self.key.as_ref(), self.url.as_deref())?;
        if self.valid_for.is_zero() {
            return Err("confirm.valid_for must be longer than zero".to_owned());
        }
        Ok(())
    }

    /// When a link for a grant made at `granted_at_ms` expires, seconds since the
    /// epoch.
    pub fn expires_at(&self, granted_at_ms: i64) -> i64 {
        let valid = i64::try_from(self.valid_for.as_secs()).unwrap_or(i64::MAX);
        granted_at_ms.div_euclid(1000).saturating_add(valid)
    }

    /// The link confirming grant `grant_seq` (made at `granted_at_ms`) of
    /// `subject_id`, when a URL and a key are configured. Deterministic: the same
    /// grant always gets the same link.
    pub fn link(&self, subject_id: &str, grant_seq: i64, granted_at_ms: i64) -> Option<String> {
        let (url, key) = (self.url.as_ref()?, self.key.as_ref()?);
        let expires = self.expires_at(granted_at_ms);
        let token = token(key.expose().as_bytes(), subject_id, grant_seq, expires)?;
        let separator = if url.contains('?') { '&' } else { '?' };
        Some(format!("{url}{separator}token={token}"))
    }
}

/// What a valid token names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirmation {
    pub subject_id: String,
    /// The ledger seq of the grant the link was issued for.
    pub grant_seq: i64,
    /// Seconds since the epoch.
    pub expires_at: i64,
}

/// Why a token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not a token made with this key (altered, truncated, forged, another key).
    Invalid,
    /// Made with this key, but its time is over.
    Expired,
}

/// Domain separation of the token's MAC.
const DOMAIN: &[u8] = b"spur-confirm-v1\0";
const SUBJECT_BYTES: usize = 16;
const BODY_BYTES: usize = SUBJECT_BYTES + 8 + 8;
const TAG_BYTES: usize = 16;
/// Length of a token in characters: base64 of 48 bytes without padding.
pub const TOKEN_LEN: usize = 64;

fn mac(key: &[u8], body: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("hmac accepts any key length");
    mac.update(DOMAIN);
    mac.update(body);
    mac
}

/// The token for grant `grant_seq` of `subject_id`, expiring at `expires_at` (seconds
/// since the epoch); `None` when the id is not 32 lower-case hex characters.
pub fn token(key: &[u8], subject_id: &str, grant_seq: i64, expires_at: i64) -> Option<String> {
    if !is_subject_id(subject_id) {
        return None;
    }
    let mut raw = Vec::with_capacity(BODY_BYTES + TAG_BYTES);
    raw.extend(hex::decode(subject_id).ok()?);
    raw.extend(grant_seq.to_be_bytes());
    raw.extend(expires_at.to_be_bytes());
    let tag = mac(key, &raw).finalize().into_bytes();
    raw.extend(&tag[..TAG_BYTES]);
    Some(URL_SAFE_NO_PAD.encode(raw))
}

/// What `token` names, when its tag is right under `key` and it has not expired at
/// `now_secs`. An altered token is [`Refused::Invalid`] whatever its expiry says: the
/// expiry is only read after the tag verified.
pub fn verify(key: &[u8], token: &str, now_secs: i64) -> Result<Confirmation, Refused> {
    if token.len() != TOKEN_LEN {
        return Err(Refused::Invalid);
    }
    let raw = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| Refused::Invalid)?;
    if raw.len() != BODY_BYTES + TAG_BYTES {
        return Err(Refused::Invalid);
    }
    let (body, tag) = raw.split_at(BODY_BYTES);
    mac(key, body)
        .verify_truncated_left(tag)
        .map_err(|_| Refused::Invalid)?;
    let number = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&body[at..at + 8]);
        i64::from_be_bytes(bytes)
    };
    let confirmation = Confirmation {
        subject_id: hex::encode(&body[..SUBJECT_BYTES]),
        grant_seq: number(SUBJECT_BYTES),
        expires_at: number(SUBJECT_BYTES + 8),
    };
    if now_secs >= confirmation.expires_at {
        return Err(Refused::Expired);
    }
    Ok(confirmation)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const SUBJECT: &str = "00112233445566778899aabbccddeeff";

    #[test]
    fn round_trip_until_expiry() {
        let t = token(KEY, SUBJECT, 42, 1_000).expect("token");
        assert_eq!(t.len(), TOKEN_LEN);
        let ok = verify(KEY, &t, 999).expect("valid");
        assert_eq!(ok.subject_id, SUBJECT);
        assert_eq!((ok.grant_seq, ok.expires_at), (42, 1_000));
        assert_eq!(verify(KEY, &t, 1_000), Err(Refused::Expired));
    }

    #[test]
    fn altered_forged_or_foreign_tokens_are_invalid() {
        let t = token(KEY, SUBJECT, 42, 1_000).expect("token");
        // Every single-character change, including one that pushes the expiry out.
        for i in 0..t.len() {
            let mut chars: Vec<char> = t.chars().collect();
            chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
            let altered: String = chars.into_iter().collect();
            assert_eq!(verify(KEY, &altered, 0), Err(Refused::Invalid), "{i}");
        }
        let other_key = b"ffffffffffffffffffffffffffffffff";
        assert_eq!(verify(other_key, &t, 0), Err(Refused::Invalid));
        assert_eq!(verify(KEY, &t[..40], 0), Err(Refused::Invalid));
        assert_eq!(verify(KEY, "", 0), Err(Refused::Invalid));
        let unsubscribe = crate::unsubscribe::token(KEY, SUBJECT).expect("token");
        assert_eq!(verify(KEY, &unsubscribe, 0), Err(Refused::Invalid));
        assert_eq!(token(KEY, "not-a-subject", 1, 1), None);
    }

    #[test]
    fn links_are_deterministic_and_expire_after_the_grant() {
        let config = ConfirmConfig {
            key: Some(Secret::new(String::from_utf8(KEY.to_vec()).expect("utf8"))),
            url: Some("https://t.example/v1/confirm".into()),
            valid_for: Duration::from_secs(3_600),
        };
        config.validate().expect("valid");
        let link = config.link(SUBJECT, 7, 10_000).expect("link");
        assert_eq!(config.link(SUBJECT, 7, 10_000).as_deref(), Some(&*link));
        let token = link.split("token=").nth(1).expect("token");
        let ok = verify(KEY, token, 10).expect("valid");
        assert_eq!((ok.grant_seq, ok.expires_at), (7, 3_610));
        let no_key = ConfirmConfig {
            key: None,
            ..config.clone()
        };
        assert!(no_key.validate().is_err());
        let short = ConfirmConfig {
            key: Some(Secret::new("short".to_owned())),
            ..config
        };
        assert!(short.validate().is_err());
    }
}
