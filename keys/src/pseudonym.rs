//! The pseudonyms written to the lake: keyed HMACs over a [`KeyRing`], pure functions.
//!
//! - Visitor: `HMAC-SHA256(analytics key, site ‖ 0x00 ‖ kind ‖ 0x00 ‖ raw id)`.
//! - E-mail: `HMAC-SHA256(identity key, lower-cased, trimmed address)`.
//!
//! Both keep the first 16 bytes (128 bits: collisions are negligible at any traffic)
//! as 32 lower-case hex characters, and come with the key version that made them.
//!
//! Keyed, not a plain hash, because the inputs are guessable: an IPv4-derived id or a
//! list of known addresses can be enumerated in seconds against `SHA-256(input)`.
//! Without the key that enumeration finds nothing, and once a key version is retired
//! ([`crate::ring::KeyRing::retire`]) its pseudonyms cannot be recomputed by anyone.
//! The zero separators keep `("ab", "c")` and `("a", "bc")` apart; site ids and kinds
//! never contain a NUL, and the raw id comes last, so it needs no separator after it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ring::{KEY_LEN, KeyRing, Purpose};

/// Length of a pseudonym, bytes (twice that in hex characters).
pub const PSEUDONYM_BYTES: usize = 16;

/// The visitor pseudonym under the active analytics key, with that key's version.
pub fn visitor(keys: &KeyRing, site_id: &str, kind: &str, raw_id: &str) -> (u32, String) {
    let (version, key) = keys.active(Purpose::Analytics);
    (version, visitor_digest(key, site_id, kind, raw_id))
}

/// The visitor pseudonym under analytics key `version`, to match rows written before a
/// rotation. `None` once that version is retired: the link is gone for good.
pub fn visitor_with_version(
    keys: &KeyRing,
    version: u32,
    site_id: &str,
    kind: &str,
    raw_id: &str,
) -> Option<String> {
    let key = keys.version(Purpose::Analytics, version)?;
    Some(visitor_digest(key, site_id, kind, raw_id))
}

/// The e-mail pseudonym under the active identity key, with that key's version. The
/// address is trimmed and lower-cased first, so `" A@Example.com"` and
/// `"a@example.com"` get the same pseudonym.
pub fn email(keys: &KeyRing, email: &str) -> (u32, String) {
    let (version, key) = keys.active(Purpose::Identity);
    (version, email_digest(key, email))
}

/// The e-mail pseudonym under identity key `version`; `None` once it is retired.
pub fn email_with_version(keys: &KeyRing, version: u32, email: &str) -> Option<String> {
    let key = keys.version(Purpose::Identity, version)?;
    Some(email_digest(key, email))
}

fn visitor_digest(key: &[u8; KEY_LEN], site_id: &str, kind: &str, raw_id: &str) -> String {
    keyed(
        key,
        &[
            site_id.as_bytes(),
            &[0],
            kind.as_bytes(),
            &[0],
            raw_id.as_bytes(),
        ],
    )
}

fn email_digest(key: &[u8; KEY_LEN], email: &str) -> String {
    keyed(key, &[email.trim().to_lowercase().as_bytes()])
}

/// HMAC-SHA256 of the concatenated `parts`, first [`PSEUDONYM_BYTES`] bytes in hex.
fn keyed(key: &[u8; KEY_LEN], parts: &[&[u8]]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("hmac accepts any key length");
    for part in parts {
        mac.update(part);
    }
    hex::encode(&mac.finalize().into_bytes()[..PSEUDONYM_BYTES])
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::Ipv4Addr;

    use proptest::prelude::*;
    use sha2::Digest;

    use super::*;

    fn ring() -> KeyRing {
        KeyRing::from_keys([0x11; 32], [0x22; 32])
    }

    fn is_pseudonym(s: &str) -> bool {
        s.len() == PSEUDONYM_BYTES * 2
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    #[test]
    fn known_answer() {
        // Pins the construction (message layout, truncation): a change here would
        // silently split every visitor in the lake into two.
        let key = [0x11; 32];
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("key");
        mac.update(b"shop\0persistent\0abc");
        let full = hex::encode(mac.finalize().into_bytes());
        let (version, id) = visitor(&ring(), "shop", "persistent", "abc");
        assert_eq!(version, 1);
        assert_eq!(id, full[..32]);
    }

    #[test]
    fn purposes_use_different_keys_for_the_same_input() {
        let keys = ring();
        let input = "a@example.com";
        let (_, by_identity) = email(&keys, input);
        let by_analytics = keyed(keys.active(Purpose::Analytics).1, &[input.as_bytes()]);
        assert_ne!(by_identity, by_analytics);
        assert_eq!(
            by_identity,
            keyed(keys.active(Purpose::Identity).1, &[input.as_bytes()])
        );
    }

    #[test]
    fn email_is_normalised() {
        let keys = ring();
        assert_eq!(
            email(&keys, "  Alice@Example.COM\n"),
            email(&keys, "alice@example.com")
        );
        assert_ne!(
            email(&keys, "alice@example.com"),
            email(&keys, "alice@example.org")
        );
    }

    #[test]
    fn separators_keep_fields_apart() {
        let keys = ring();
        assert_ne!(
            visitor(&keys, "ab", "c", "d"),
            visitor(&keys, "a", "bc", "d")
        );
        assert_ne!(
            visitor(&keys, "a", "b", "cd"),
            visitor(&keys, "a", "bc", "d")
        );
    }

    /// The threat a keyed hash defends against: the inputs are guessable. An attacker
    /// who has the lake but not the key enumerates a /22 of IPv4 addresses and a list
    /// of addresses, hashing each with a key of their own and with plain SHA-256, and
    /// finds none of the pseudonyms. With the real key (the only thing they lack) the
    /// same enumeration finds all of them, which is why the key is the secret.
    #[test]
    fn enumeration_without_the_key_finds_nothing() {
        let keys = ring();
        let attacker = KeyRing::from_keys([0x99; 32], [0x98; 32]);
        let ips: Vec<String> = (0..1024u32)
            .map(|i| Ipv4Addr::from(0xc0a8_0000 + i).to_string())
            .collect();
        let emails: Vec<String> = (0..1024).map(|i| format!("user{i}@example.com")).collect();

        let targets: HashSet<String> = ips
            .iter()
            .step_by(97)
            .map(|ip| visitor(&keys, "shop", "cookieless", ip).1)
            .chain(emails.iter().step_by(97).map(|e| email(&keys, e).1))
            .collect();
        assert!(targets.len() >= 20);

        let plain = |parts: &[&[u8]]| {
            let mut h = Sha256::new();
            parts.iter().for_each(|p| h.update(p));
            hex::encode(&h.finalize()[..16])
        };
        let mut guesses = HashSet::new();
        for ip in &ips {
            guesses.insert(visitor(&attacker, "shop", "cookieless", ip).1);
            guesses.insert(plain(&[b"shop\0cookieless\0", ip.as_bytes()]));
            guesses.insert(plain(&[ip.as_bytes()]));
        }
        for e in &emails {
            guesses.insert(email(&attacker, e).1);
            guesses.insert(plain(&[e.as_bytes()]));
        }
        assert_eq!(guesses.intersection(&targets).count(), 0);

        let with_key: HashSet<String> = ips
            .iter()
            .map(|ip| visitor(&keys, "shop", "cookieless", ip).1)
            .chain(emails.iter().map(|e| email(&keys, e).1))
            .collect();
        assert!(targets.is_subset(&with_key));
    }

    #[test]
    fn rotation_changes_the_pseudonym_and_retirement_ends_matching() {
        let dir = tempfile::tempdir().expect("tempdir");
        let before = KeyRing::init(dir.path()).expect("init");
        let (v1, old) = visitor(&before, "shop", "persistent", "abc");
        let (e1, old_email) = email(&before, "a@example.com");

        let v2 = KeyRing::rotate(dir.path(), Purpose::Analytics).expect("rotate");
        let after = KeyRing::load(dir.path()).expect("load");
        let (version, new) = visitor(&after, "shop", "persistent", "abc");
        assert_eq!(version, v2);
        assert_ne!(new, old);
        // The old version still matches old rows.
        assert_eq!(
            visitor_with_version(&after, v1, "shop", "persistent", "abc"),
            Some(old)
        );
        // Rotating analytics leaves identity pseudonyms alone.
        assert_eq!(email(&after, "a@example.com"), (e1, old_email.clone()));
        assert_eq!(
            email_with_version(&after, e1, "a@example.com"),
            Some(old_email)
        );

        KeyRing::retire(dir.path(), Purpose::Analytics, v1).expect("retire");
        let retired = KeyRing::load(dir.path()).expect("load");
        assert_eq!(
            visitor_with_version(&retired, v1, "shop", "persistent", "abc"),
            None
        );
        assert_eq!(visitor(&retired, "shop", "persistent", "abc"), (v2, new));
    }

    proptest! {
        // Inputs start with a non-hex letter and are at least 8 characters long, so that
        // neither they nor their hex encoding can appear in 32 hex characters by chance.
        #[test]
        fn deterministic_fixed_length_and_never_contains_the_input(
            site in "[a-z]{1,12}",
            raw in "[g-z][a-z0-9@._-]{7,40}",
        ) {
            let keys = ring();
            let (v, a) = visitor(&keys, &site, "persistent", &raw);
            prop_assert_eq!((v, a.clone()), visitor(&keys, &site, "persistent", &raw));
            prop_assert!(is_pseudonym(&a), "{}", a);
            prop_assert!(!a.contains(&raw));
            prop_assert!(!a.contains(&hex::encode(raw.as_bytes())));
            let (_, e) = email(&keys, &raw);
            prop_assert!(is_pseudonym(&e), "{}", e);
            prop_assert!(!e.contains(&raw));
            prop_assert_ne!(e, a);
        }

        #[test]
        fn different_site_kind_or_key_gives_a_different_pseudonym(
            site in "[a-z]{1,12}",
            other in "[a-z]{1,12}",
            raw in ".{0,40}",
            seed in any::<[u8; 32]>(),
        ) {
            prop_assume!(site != other && seed != [0x11; 32]);
            let keys = ring();
            let (_, a) = visitor(&keys, &site, "persistent", &raw);
            prop_assert_ne!(&a, &visitor(&keys, &other, "persistent", &raw).1);
            prop_assert_ne!(&a, &visitor(&keys, &site, "cookieless", &raw).1);
            let rekeyed = KeyRing::from_keys(seed, [0x22; 32]);
            prop_assert_ne!(&a, &visitor(&rekeyed, &site, "persistent", &raw).1);
        }
    }
}
