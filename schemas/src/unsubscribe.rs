//! The one-click unsubscribe token (RFC 8058): names a subject without a database and
//! cannot be guessed or altered without the key.
//!
//! A mailing system puts
//! `List-Unsubscribe: <https://collector.example/v1/unsubscribe?token=…>` and
//! `List-Unsubscribe-Post: List-Unsubscribe=One-Click` into each e-mail; the mail
//! client POSTs `List-Unsubscribe=One-Click` to that URL, and the collector turns it
//! into a withdrawal of the marketing purpose for the subject the token names.
//!
//! Token layout, base64url without padding (43 characters):
//!
//! ```text
//! subject (16 bytes: the subject id's hex decoded)
//!   ‖ HMAC-SHA256(key, "spur-unsubscribe-v1" ‖ 0x00 ‖ subject)[..16]
//! ```
//!
//! The subject id is the 128-bit keyed pseudonym of an e-mail address
//! ([`crate::record::is_subject_id`]), not the address: the token carries no personal
//! data in clear. The tag is 128 bits and compared in constant time. The version is in
//! the MAC's domain string, so a later layout gets a new one and old tokens fail
//! instead of being misread. Tokens do not expire: an unsubscribe link must keep
//! working for as long as the e-mail is kept; changing the key invalidates all of them.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::record::is_subject_id;
use crate::secret::Secret;

/// `[unsubscribe]`: the one key of the one-click unsubscribe links, shared by the
/// collector (verifies tokens at `POST /v1/unsubscribe`) and the segment service
/// (puts a link into every change), and where recipients reach that endpoint.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnsubscribeConfig {
    /// The HMAC key of the tokens (its UTF-8 bytes): at least
    /// [`MIN_KEY_BYTES`] bytes, e.g. `openssl rand -hex 32`. Without it the
    /// collector answers 404 `unsubscribe_disabled` and changes carry no link.
    /// Changing it invalidates every link already sent.
    pub key: Option<Secret>,
    /// The collector's `/v1/unsubscribe` as mail recipients reach it (e.g.
    /// `https://t.example.com/v1/unsubscribe`): each change then carries
    /// `unsubscribe_url` for the mail's `List-Unsubscribe` header. Needs `key`.
    pub url: Option<String>,
}

/// The shortest accepted unsubscribe key, bytes: a guessable key would let anyone
/// unsubscribe anyone.
pub const MIN_KEY_BYTES: usize = 32;

impl UnsubscribeConfig {
    /// A key too short to be safe, or a URL without a key, is refused.
    pub fn validate(&self) -> Result<(), String> {
        check_link_key("unsubscribe", self.key.as_ref(), self.url.as_deref())
    }

    /// The link for `subject_id`, when a URL and a key are configured.
    pub fn link(&self, subject_id: &str) -> Option<String> {
        let (url, key) = (self.url.as_ref()?, self.key.as_ref()?);
        let token = token(key.expose().as_bytes(), subject_id)?;
        let separator = if url.contains('?') { '&' } else { '?' };
        Some(format!("{url}{separator}token={token}"))
    }
}

/// The checks every signed-link table (`[unsubscribe]`, `[confirm]`) shares: a key
/// of at least [`MIN_KEY_BYTES`] bytes, and no URL without a key.
pub(crate) fn check_link_key(
    table: &str,
    key: Option<&Secret>,
    url: Option<&str>,
) -> Result<(), String> {
    if key.is_some_and(|key| key.expose().len() < MIN_KEY_BYTES) {
        return Err(format!(
            "{table}.key must be at least {MIN_KEY_BYTES} bytes (e.g. openssl rand -hex 32)"
        ));
    }
    if url.is_some() && key.is_none() {
        return Err(format!(
            "{table}.url needs {table}.key (the key the collector verifies with)"
        ));
    }
    Ok(())
}

/// The consent evidence `method` of a withdrawal made by a one-click unsubscribe
/// ([`crate::wire::ConsentEvidence::method`]).
pub const UNSUBSCRIBE_METHOD: &str = "one_click_unsubscribe";

/// Domain separation of the token's MAC: a MAC over the same bytes made for another
/// purpose never verifies as a token.
const DOMAIN: &[u8] = b"spur-unsubscribe-v1\0";
/// Bytes of the subject in a token.
const SUBJECT_BYTES: usize = 16;
/// Bytes of the truncated tag in a token.
const TAG_BYTES: usize = 16;
/// Length of a token in characters: base64 of 32 bytes without padding.
pub const TOKEN_LEN: usize = 43;

fn mac(key: &[u8], subject: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("hmac accepts any key length");
    mac.update(DOMAIN);
    mac.update(subject);
    mac
}

/// The token for `subject_id` under `key`; `None` when the id is not 32 lower-case
/// hex characters.
pub fn token(key: &[u8], subject_id: &str) -> Option<String> {
    if !is_subject_id(subject_id) {
        return None;
    }
    let subject = hex::decode(subject_id).ok()?;
    let tag = mac(key, &subject).finalize().into_bytes();
    let mut raw = [0u8; SUBJECT_BYTES + TAG_BYTES];
    raw[..SUBJECT_BYTES].copy_from_slice(&subject);
    raw[SUBJECT_BYTES..].copy_from_slice(&tag[..TAG_BYTES]);
    Some(URL_SAFE_NO_PAD.encode(raw))
}

/// The subject id a token names, when its tag is right under `key`. Anything else —
/// wrong length, characters outside base64url, padding, a non-canonical encoding, a
/// wrong tag — is `None`, and the caller cannot tell which.
pub fn verify(key: &[u8], token: &str) -> Option<String> {
    if token.len() != TOKEN_LEN {
        return None;
    }
    // The engine refuses padding and set trailing bits, so each token has exactly one
    // spelling.
    let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
    if raw.len() != SUBJECT_BYTES + TAG_BYTES {
        return None;
    }
    let (subject, tag) = raw.split_at(SUBJECT_BYTES);
    mac(key, subject).verify_truncated_left(tag).ok()?;
    Some(hex::encode(subject))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const SUBJECT: &str = "00112233445566778899aabbccddeeff";

    #[test]
    fn round_trip() {
        let t = token(KEY, SUBJECT).expect("token");
        assert_eq!(t.len(), TOKEN_LEN);
        assert!(
            t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{t}"
        );
        assert_eq!(verify(KEY, &t).as_deref(), Some(SUBJECT));
        // Deterministic: the same subject always gets the same link.
        assert_eq!(token(KEY, SUBJECT), Some(t));
        let other = token(KEY, "ffeeddccbbaa99887766554433221100").expect("token");
        assert_eq!(
            verify(KEY, &other).as_deref(),
            Some("ffeeddccbbaa99887766554433221100")
        );
    }

    #[test]
    fn known_answer() {
        // Pins the layout: a change here breaks every link already sent.
        let subject = hex::decode(SUBJECT).expect("hex");
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(KEY).expect("key");
        mac.update(b"spur-unsubscribe-v1\0");
        mac.update(&subject);
        let tag = mac.finalize().into_bytes();
        let mut raw = subject.clone();
        raw.extend_from_slice(&tag[..16]);
        assert_eq!(token(KEY, SUBJECT), Some(URL_SAFE_NO_PAD.encode(raw)));
    }

    #[test]
    fn any_changed_character_fails() {
        let t = token(KEY, SUBJECT).expect("token");
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for i in 0..t.len() {
            for &c in ALPHABET {
                if c == t.as_bytes()[i] {
                    continue;
                }
                let mut forged = t.clone().into_bytes();
                forged[i] = c;
                let forged = String::from_utf8(forged).expect("ascii");
                assert_eq!(verify(KEY, &forged), None, "position {i}, {}", c as char);
            }
        }
    }

    #[test]
    fn any_changed_byte_fails() {
        let t = token(KEY, SUBJECT).expect("token");
        let raw = URL_SAFE_NO_PAD.decode(&t).expect("base64");
        for i in 0..raw.len() {
            for bit in 0..8 {
                let mut forged = raw.clone();
                forged[i] ^= 1 << bit;
                assert_eq!(
                    verify(KEY, &URL_SAFE_NO_PAD.encode(&forged)),
                    None,
                    "byte {i} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn wrong_key_fails() {
        let t = token(KEY, SUBJECT).expect("token");
        assert_eq!(verify(b"0123456789abcdef0123456789abcdee", &t), None);
        assert_eq!(verify(b"", &t), None);
        // Another key gives another tag for the same subject.
        assert_ne!(
            token(b"another key of enough length......", SUBJECT),
            Some(t)
        );
    }

    #[test]
    fn malformed_subject_ids_get_no_token() {
        for bad in [
            "",
            "0011223344556677",
            "00112233445566778899AABBCCDDEEFF",
            "00112233445566778899aabbccddeef",
            "00112233445566778899aabbccddeeff0",
            "00112233445566778899aabbccddeefg",
            "a@example.com",
        ] {
            assert_eq!(token(KEY, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn malformed_tokens_are_refused_without_panicking() {
        let t = token(KEY, SUBJECT).expect("token");
        let padded = format!("{t}=");
        let truncated = &t[..TOKEN_LEN - 1];
        let longer = format!("{t}A");
        let standard_alphabet = t.replace('-', "+").replace('_', "/");
        let mut inputs: Vec<String> = vec![
            String::new(),
            "=".into(),
            padded,
            truncated.into(),
            longer,
            " ".repeat(TOKEN_LEN),
            "é".repeat(TOKEN_LEN),
            format!("{}é", &t[..TOKEN_LEN - 2]),
            "\0".repeat(TOKEN_LEN),
            "A".repeat(10_000),
            URL_SAFE_NO_PAD.encode([0u8; 31]),
            URL_SAFE_NO_PAD.encode([0u8; 33]),
            URL_SAFE_NO_PAD.encode([0u8; 32]),
        ];
        if standard_alphabet != t {
            inputs.push(standard_alphabet);
        }
        // Every length around the real one, with every kind of character.
        for len in 0..=64 {
            for c in ['A', '_', '-', '=', '+', '/', '.', '~', '%'] {
                inputs.push(c.to_string().repeat(len));
            }
        }
        for input in &inputs {
            assert_eq!(verify(KEY, input), None, "{input:?}");
        }
    }

    #[test]
    fn non_canonical_spellings_are_refused() {
        // The last character of 32 bytes in base64 carries 2 unused bits: setting them
        // must not give a second valid spelling of the same token.
        let t = token(KEY, SUBJECT).expect("token");
        let last = t.as_bytes()[TOKEN_LEN - 1];
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let index = ALPHABET.iter().position(|&c| c == last).expect("alphabet");
        for low in 1..4usize {
            let mut forged = t.clone().into_bytes();
            forged[TOKEN_LEN - 1] = ALPHABET[(index & !3) | ((index + low) & 3)];
            let forged = String::from_utf8(forged).expect("ascii");
            assert_eq!(verify(KEY, &forged), None, "{forged}");
        }
    }
}
