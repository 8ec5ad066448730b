//! Finding the subject of a request, and what an erasure receipt says about the
//! copies outside the lake.
//!
//! An operator names a subject by its id (32 hex digits) or by the person's e-mail
//! address; the address is turned into its pseudonym with the active identity key
//! (`spur-keys`), so the address itself is never looked up or stored.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use spur_schemas::kafka::KafkaSettings;

use crate::admin::Resolver;
use crate::erase::EraseOptions;

/// Subject ids are 32 lower-case hex digits; anything with an `@` is an e-mail
/// address, pseudonymised with the active identity key in `keys_dir`.
pub fn resolver(keys_dir: &Path) -> Resolver {
    let dir = keys_dir.to_owned();
    Arc::new(move |input: &str| {
        if input.contains('@') {
            let keys = spur_keys::KeyRing::load(&dir)
                .map_err(|e| format!("identity key in {}: {e}", dir.display()))?;
            Ok(spur_keys::pseudonym::email(&keys, input).1)
        } else if input.len() == 32 && input.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(input.to_ascii_lowercase())
        } else {
            Err("expected a subject id (32 hex digits) or an e-mail address".into())
        }
    })
}

/// The e-mail pseudonym function for many addresses at once: the key ring in
/// `keys_dir` is loaded once (the [`resolver`] loads it per call, for one subject).
pub fn email_pseudonyms(
    keys_dir: &Path,
) -> Result<impl Fn(&str) -> Result<String, String> + Sync + use<>, String> {
    let keys = spur_keys::KeyRing::load(keys_dir)
        .map_err(|e| format!("identity key in {}: {e}", keys_dir.display()))?;
    Ok(move |email: &str| Ok(spur_keys::pseudonym::email(&keys, email).1))
}

/// What the receipt says about copies on Kafka: the events topic holds raw records
/// (identify events carry the address in clear) until its retention deletes them.
pub fn outside_lake(kafka: &KafkaSettings, now_ms: i64) -> Vec<String> {
    let retention = kafka.events_retention;
    let until = spur_schemas::time::rfc3339_ms(
        now_ms.saturating_add(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX)),
    );
    vec![
        format!(
            "topic {}: raw records are deleted by the broker's retention ({}); the last copy of this subject's records expires by {until} at the latest",
            kafka.topics.events,
            humantime_serde::re::humantime::format_duration(retention)
        ),
        format!(
            "topic {}: dead letters carry no personal data",
            kafka.topics.dead_letter
        ),
        format!(
            "topic {}: segment changes already delivered to the mailing system are the receiver's to delete; records expire with the topic's retention",
            kafka.topics.segment_changes
        ),
    ]
}

/// The erasure options of a deployment: the segment service's state directory (its
/// given-up logs are scrubbed too) and the receipt's notes on Kafka.
pub fn erase_options(
    segments_state_dir: PathBuf,
    kafka: &KafkaSettings,
    now_ms: i64,
) -> EraseOptions {
    EraseOptions {
        state_dir: Some(segments_state_dir),
        outside_lake: outside_lake(kafka, now_ms),
        interrupt_after: None,
        keys_dir: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_pass_through_and_other_text_is_refused() {
        let resolve = resolver(Path::new("/nonexistent"));
        assert_eq!(
            resolve("0123456789ABCDEF0123456789abcdef").as_deref(),
            Ok("0123456789abcdef0123456789abcdef")
        );
        assert!(resolve("not-an-id").is_err());
        // An address needs the identity key, which is not there.
        assert!(
            resolve("a@example.com")
                .expect_err("no key")
                .contains("identity key")
        );
        assert!(email_pseudonyms(Path::new("/nonexistent")).is_err());
    }

    #[test]
    fn bulk_pseudonyms_are_the_resolvers_and_ignore_case_and_spaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        spur_keys::KeyRing::init(dir.path()).expect("keys");
        let one = resolver(dir.path());
        let many = email_pseudonyms(dir.path()).expect("keys load");
        let id = one("alice@example.com").expect("resolves");
        assert_eq!(id.len(), 32);
        assert_eq!(many("alice@example.com").as_deref(), Ok(id.as_str()));
        assert_eq!(many(" Alice@EXAMPLE.com ").as_deref(), Ok(id.as_str()));
        assert_ne!(many("bob@example.com").as_deref(), Ok(id.as_str()));
    }
}
