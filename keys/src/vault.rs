//! The contact vault's keys: every subject's e-mail address is stored sealed under a
//! data key of its own, and that key is kept only here, wrapped by the `contacts` key
//! ([`Purpose::Contacts`]).
//!
//! - **Data keys** are random AES-256-GCM keys, one per subject, in
//!   `<keys_dir>/contacts/<2 hex>/<subject id>.key` (JSON: the `contacts` key version,
//!   the nonce and the wrapped key, hex; mode 0600). The wrap binds the subject id, so
//!   a key file renamed to another subject does not open.
//! - **Sealed addresses** (the `contacts` table's `address` column) are
//!   `0x01 ‖ nonce (12) ‖ AES-256-GCM(data key, address)`, bound to the subject and the
//!   event that carried the address: a sealed value copied to another row does not
//!   open.
//! - **Crypto-shredding**: [`Vault::destroy`] deletes the subject's key file (and
//!   syncs the directory). Every sealed copy of the address — in the table, in older
//!   Delta versions, in a backup of the lake — is unreadable from then on; erasure
//!   also deletes the rows.
//!
//! The data keys live beside the key rings rather than in the lake on purpose: a copy
//! of the lake alone never holds what opens an address.

use std::io;
use std::path::{Path, PathBuf};

use rand::RngCore as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::files::{create_private_dir, parent, sync_dir, temporary_beside, write_new_private};
use crate::ring::{KEY_LEN, KeyRing, Purpose};

/// The format byte leading a sealed address.
const SEALED_V1: u8 = 1;
const KEY_DOMAIN: &[u8] = b"spur-contact-key-v1\0";
const ADDRESS_DOMAIN: &[u8] = b"spur-contact-v1\0";

/// A key file: the data key wrapped by `contacts` key `version`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    version: u32,
    nonce: String,
    wrapped: String,
}

/// The data keys under one keys directory.
#[derive(Debug, Clone)]
pub struct Vault {
    dir: PathBuf,
}

impl Vault {
    /// The vault of `keys_dir` (the directory of the key rings).
    pub fn new(keys_dir: &Path) -> Vault {
        Vault {
            dir: keys_dir.join("contacts"),
        }
    }

    /// Where `subject_id`'s data key lives; an error for anything but a subject id
    /// (32 lower-case hex digits), so no input can name another path.
    pub fn key_path(&self, subject_id: &str) -> Result<PathBuf> {
        if subject_id.len() != 32
            || !subject_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Error::Sealed("not a subject id"));
        }
        Ok(self
            .dir
            .join(&subject_id[..2])
            .join(format!("{subject_id}.key")))
    }

    /// Seals `address` for `subject_id`, carried by event `event_id`, under the
    /// subject's data key (created, wrapped with the active `contacts` key, on first
    /// use; concurrent writers agree on one key).
    pub fn seal(
        &self,
        ring: &KeyRing,
        subject_id: &str,
        event_id: &str,
        address: &str,
    ) -> Result<Vec<u8>> {
        let key = self.data_key(ring, subject_id)?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut out = address.as_bytes().to_vec();
        aead(&key)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(address_aad(subject_id, event_id)),
                &mut out,
            )
            .map_err(|_| Error::Sealed("sealing failed"))?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + out.len());
        sealed.push(SEALED_V1);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&out);
        Ok(sealed)
    }

    /// Opens a sealed address; `Ok(None)` when the subject's data key no longer
    /// exists (destroyed by an erasure, or its `contacts` key version retired).
    pub fn open(
        &self,
        ring: &KeyRing,
        subject_id: &str,
        event_id: &str,
        sealed: &[u8],
    ) -> Result<Option<String>> {
        let Some(key) = self.existing_key(ring, subject_id)? else {
            return Ok(None);
        };
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != SEALED_V1 {
            return Err(Error::Sealed("unknown format"));
        }
        let (nonce, body) = sealed[1..].split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Error::Sealed("nonce"))?;
        let mut buffer = Zeroizing::new(body.to_vec());
        let plain = aead(&key)
            .open_in_place(
                nonce,
                Aad::from(address_aad(subject_id, event_id)),
                &mut buffer,
            )
            .map_err(|_| Error::Sealed("altered, or not this subject's or event's"))?;
        String::from_utf8(plain.to_vec())
            .map(Some)
            .map_err(|_| Error::Sealed("not UTF-8"))
    }

    /// Deletes `subject_id`'s data key (crypto-shredding): every address sealed for
    /// the subject is unreadable afterwards. `true` when a key existed.
    pub fn destroy(&self, subject_id: &str) -> Result<bool> {
        let path = self.key_path(subject_id)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(parent(&path)).map_err(|e| io_err(&path, e))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    /// Whether `subject_id` has a data key.
    pub fn has_key(&self, subject_id: &str) -> Result<bool> {
        Ok(self.key_path(subject_id)?.exists())
    }

    fn existing_key(
        &self,
        ring: &KeyRing,
        subject_id: &str,
    ) -> Result<Option<Zeroizing<[u8; KEY_LEN]>>> {
        let path = self.key_path(subject_id)?;
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path, e)),
        };
        let bad = |reason: &str| Error::Keys {
            path: path.clone(),
            reason: reason.to_owned(),
        };
        let file: KeyFile = serde_json::from_slice(&bytes).map_err(|_| bad("not a key file"))?;
        let wrapping = ring
            .version(Purpose::Contacts, file.version)
            .ok_or_else(|| {
                bad("its contacts key version was retired: the address cannot be opened")
            })?;
        let mut nonce = [0u8; NONCE_LEN];
        hex::decode_to_slice(&file.nonce, &mut nonce).map_err(|_| bad("nonce is not hex"))?;
        let mut buffer = Zeroizing::new(hex::decode(&file.wrapped).map_err(|_| bad("not hex"))?);
        let plain = aead(wrapping)
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key_aad(subject_id)),
                &mut buffer,
            )
            .map_err(|_| bad("does not unwrap (altered, or another subject's)"))?;
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if plain.len() != KEY_LEN {
            return Err(bad("wrapped key has the wrong length"));
        }
        key.copy_from_slice(plain);
        Ok(Some(key))
    }

    /// The subject's data key, created if it has none. Creation writes a private
    /// temporary file and hard-links it into place, which fails if another writer
    /// got there first: then that writer's key is used.
    fn data_key(&self, ring: &KeyRing, subject_id: &str) -> Result<Zeroizing<[u8; KEY_LEN]>> {
        if let Some(key) = self.existing_key(ring, subject_id)? {
            return Ok(key);
        }
        let path = self.key_path(subject_id)?;
        let dir = parent(&path);
        create_private_dir(dir).map_err(|e| io_err(dir, e))?;
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rand::rng().fill_bytes(key.as_mut());
        let (version, wrapping) = ring.active(Purpose::Contacts);
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut wrapped = Zeroizing::new(key.to_vec());
        aead(wrapping)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key_aad(subject_id)),
                &mut *wrapped,
            )
            .map_err(|_| Error::Sealed("wrapping failed"))?;
        let file = KeyFile {
            version,
            nonce: hex::encode(nonce),
            wrapped: hex::encode(&*wrapped),
        };
        let json = serde_json::to_vec(&file).map_err(|_| Error::Sealed("key file"))?;
        let temporary = temporary_beside(&path);
        write_new_private(&temporary, &json).map_err(|e| io_err(&temporary, e))?;
        let linked = std::fs::hard_link(&temporary, &path);
        let _ = std::fs::remove_file(&temporary);
        match linked {
            Ok(()) => {
                sync_dir(dir).map_err(|e| io_err(dir, e))?;
                Ok(key)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => self
                .existing_key(ring, subject_id)?
                .ok_or_else(|| io_err(&path, e)),
            Err(e) => Err(io_err(&path, e)),
        }
    }
}

fn aead(key: &[u8; KEY_LEN]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte AES-256 key"))
}

fn key_aad(subject_id: &str) -> Vec<u8> {
    [KEY_DOMAIN, subject_id.as_bytes()].concat()
}

fn address_aad(subject_id: &str, event_id: &str) -> Vec<u8> {
    [
        ADDRESS_DOMAIN,
        subject_id.as_bytes(),
        b"\0",
        event_id.as_bytes(),
    ]
    .concat()
}

fn io_err(path: &Path, e: io::Error) -> Error {
    Error::Keys {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBJECT: &str = "00112233445566778899aabbccddeeff";
    const OTHER: &str = "ffeeddccbbaa99887766554433221100";

    fn setup() -> (tempfile::TempDir, Vault, KeyRing) {
        let dir = tempfile::tempdir().expect("tempdir");
        let ring = KeyRing::init(dir.path()).expect("keys");
        let vault = Vault::new(dir.path());
        (dir, vault, ring)
    }

    #[test]
    fn sealed_addresses_open_only_for_their_subject_and_event() {
        let (_dir, vault, ring) = setup();
        let sealed = vault
            .seal(&ring, SUBJECT, "e1", "a@example.com")
            .expect("seal");
        assert!(
            !sealed.windows(13).any(|w| w == b"a@example.com"),
            "no clear text"
        );
        assert_eq!(
            vault.open(&ring, SUBJECT, "e1", &sealed).expect("open"),
            Some("a@example.com".to_owned())
        );
        assert!(
            vault.open(&ring, SUBJECT, "e2", &sealed).is_err(),
            "event bound"
        );
        let mut altered = sealed.clone();
        *altered.last_mut().expect("bytes") ^= 1;
        assert!(vault.open(&ring, SUBJECT, "e1", &altered).is_err());
        // Another subject has another key (created on its first seal).
        vault
            .seal(&ring, OTHER, "e3", "b@example.com")
            .expect("seal");
        assert!(vault.open(&ring, OTHER, "e1", &sealed).is_err());
        // One key per subject: a second seal reuses it.
        let again = vault
            .seal(&ring, SUBJECT, "e4", "a@example.com")
            .expect("seal");
        assert_ne!(sealed, again, "fresh nonce");
        assert!(
            vault
                .open(&ring, SUBJECT, "e4", &again)
                .expect("open")
                .is_some()
        );
        assert!(
            vault
                .open(&ring, SUBJECT, "e1", &sealed)
                .expect("open")
                .is_some()
        );
    }

    #[test]
    fn destroying_the_key_makes_every_copy_unreadable() {
        let (_dir, vault, ring) = setup();
        let sealed = vault
            .seal(&ring, SUBJECT, "e1", "a@example.com")
            .expect("seal");
        let path = vault.key_path(SUBJECT).expect("path");
        let file = std::fs::read(&path).expect("key file");
        assert!(vault.destroy(SUBJECT).expect("destroy"));
        assert!(!path.exists());
        assert_eq!(
            vault.open(&ring, SUBJECT, "e1", &sealed).expect("open"),
            None
        );
        assert!(!vault.destroy(SUBJECT).expect("again"), "idempotent");
        // A new key for the subject does not open the old copies either.
        vault
            .seal(&ring, SUBJECT, "e2", "a@example.com")
            .expect("seal");
        assert!(vault.open(&ring, SUBJECT, "e1", &sealed).is_err());
        // A key file moved to another subject does not unwrap.
        let other = vault.key_path(OTHER).expect("path");
        std::fs::create_dir_all(other.parent().expect("dir")).expect("dir");
        std::fs::write(&other, file).expect("write");
        assert!(vault.open(&ring, OTHER, "e1", &sealed).is_err());
    }

    #[test]
    fn keys_follow_rotation_and_retirement_of_the_contacts_key() {
        let (dir, vault, ring) = setup();
        let old = vault
            .seal(&ring, SUBJECT, "e1", "a@example.com")
            .expect("seal");
        let version = KeyRing::rotate(dir.path(), Purpose::Contacts).expect("rotate");
        let ring = KeyRing::load(dir.path()).expect("load");
        // Existing data keys stay wrapped with version 1; new ones use the new version.
        vault
            .seal(&ring, OTHER, "e2", "b@example.com")
            .expect("seal");
        assert!(
            vault
                .open(&ring, SUBJECT, "e1", &old)
                .expect("open")
                .is_some()
        );
        KeyRing::retire(dir.path(), Purpose::Contacts, version - 1).expect("retire");
        let ring = KeyRing::load(dir.path()).expect("load");
        assert!(
            vault.open(&ring, SUBJECT, "e1", &old).is_err(),
            "retired wrap"
        );
    }

    #[test]
    fn only_subject_ids_name_key_files() {
        let vault = Vault::new(Path::new("/k"));
        for bad in [
            "",
            "../../etc/passwd",
            "00112233445566778899AABBCCDDEEFF",
            "0011",
        ] {
            assert!(vault.key_path(bad).is_err(), "{bad}");
        }
        assert_eq!(
            vault.key_path(SUBJECT).expect("path"),
            Path::new("/k/contacts/00").join(format!("{SUBJECT}.key"))
        );
    }
}
