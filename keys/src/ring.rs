//! The secret keys behind every pseudonym the processor writes: one key ring per
//! [`Purpose`], each a set of numbered 32-byte keys with one active version.
//!
//! A key directory holds one file per purpose, `<dir>/<purpose>.json`:
//!
//! ```json
//! {"active": 2, "keys": {"1": "<64 hex chars>", "2": "<64 hex chars>"}}
//! ```
//!
//! - **Separate purposes, separate keys**: the analytics key cannot recompute or link
//!   identity (e-mail) pseudonyms and vice versa, so access to one does not grant the
//!   other.
//! - **Rotation** ([`KeyRing::rotate`]) adds a new version and makes it active. Old
//!   versions stay, so pseudonyms made with them can still be matched (a GDPR request
//!   for an old visitor, a returning address).
//! - **Retirement** ([`KeyRing::retire`]) deletes a non-active version. It is the
//!   documented way to make old data unlinkable: once the key is gone nobody, Spur
//!   included, can recompute those pseudonyms from a raw id or address, so the rows
//!   that carry them can no longer be tied to a person. The file is replaced
//!   atomically and the previous file's blocks are overwritten with zeros as a best
//!   effort; copy-on-write file systems, snapshots and backups can still hold the old
//!   key and must be purged separately. A processor that already loaded the ring keeps
//!   the key in memory until it is restarted.
//!
//! Files are written atomically (a private temporary file, then a rename) with mode
//! 0600, so a crash never leaves a half-written ring. Key bytes live in
//! [`Zeroizing`] buffers, are scrubbed from parsing buffers, and never appear in
//! `Debug` output or error messages. Administration (`init`, `rotate`, `retire`) is an
//! operator command: two of them racing on the same purpose file can lose one update.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use rand::RngCore;
use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::files::{self, create_private_dir, sync_dir, write_new_private as write_private};

/// Length of every key, bytes.
pub const KEY_LEN: usize = 32;

/// What a key is for. Each purpose has its own file and its own keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Purpose {
    /// Visitor pseudonyms in the analytics tables.
    Analytics,
    /// E-mail address pseudonyms (identify events).
    Identity,
    /// Wraps the per-subject data keys of the contact vault ([`crate::vault`]): an
    /// AES-256-GCM key, not an HMAC key. Retiring a version makes every address
    /// wrapped with it unreadable.
    Contacts,
}

impl Purpose {
    pub const ALL: [Purpose; 3] = [Purpose::Analytics, Purpose::Identity, Purpose::Contacts];

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Analytics => "analytics",
            Purpose::Identity => "identity",
            Purpose::Contacts => "contacts",
        }
    }
}

impl std::str::FromStr for Purpose {
    type Err = String;

    fn from_str(name: &str) -> Result<Purpose, String> {
        Purpose::ALL
            .into_iter()
            .find(|p| p.as_str() == name)
            .ok_or_else(|| format!("unknown purpose {name:?}: analytics, identity or contacts"))
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The versions of one purpose's key. Invariant (checked on load and kept by every
/// change): `keys` contains `active`.
struct Ring {
    active: u32,
    keys: BTreeMap<u32, Zeroizing<[u8; KEY_LEN]>>,
}

impl fmt::Debug for Ring {
    // Versions only: the key bytes must never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("active", &self.active)
            .field("versions", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Ring {
    fn fresh() -> Self {
        Ring {
            active: 1,
            keys: BTreeMap::from([(1, random_key())]),
        }
    }

    fn active_key(&self) -> &[u8; KEY_LEN] {
        self.keys
            .get(&self.active)
            .expect("a ring always contains its active version (checked on load)")
    }
}

/// The loaded keys of every purpose.
pub struct KeyRing {
    analytics: Ring,
    identity: Ring,
    contacts: Ring,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("analytics", &self.analytics)
            .field("identity", &self.identity)
            .field("contacts", &self.contacts)
            .finish()
    }
}

impl KeyRing {
    /// The file holding `purpose`'s keys in `dir`.
    pub fn file(dir: &Path, purpose: Purpose) -> PathBuf {
        dir.join(format!("{}.json", purpose.as_str()))
    }

    /// Loads every purpose's keys from `dir`. Fails, naming the file, if one is missing,
    /// unreadable or malformed, or if its active version is not among its keys.
    pub fn load(dir: &Path) -> Result<KeyRing> {
        Ok(KeyRing {
            analytics: read_ring(&Self::file(dir, Purpose::Analytics))?,
            identity: read_ring(&Self::file(dir, Purpose::Identity))?,
            contacts: read_ring(&Self::file(dir, Purpose::Contacts))?,
        })
    }

    /// Creates `dir` and, for each purpose without a file, a file with a fresh random
    /// key as version 1; then loads the ring. An existing file is never overwritten
    /// (not even by a concurrent `init`): that would destroy keys.
    pub fn init(dir: &Path) -> Result<KeyRing> {
        create_private_dir(dir).map_err(|e| keys_err(dir, format!("cannot create: {e}")))?;
        for purpose in Purpose::ALL {
            let path = Self::file(dir, purpose);
            if !path.exists() {
                write_ring(&path, &Ring::fresh(), Replace::Never)?;
            }
        }
        Self::load(dir)
    }

    /// Adds a new random key for `purpose` and makes it active; older versions stay so
    /// that pseudonyms made with them can still be matched. Returns the new version:
    /// one more than the highest version in the file (normally the active one).
    pub fn rotate(dir: &Path, purpose: Purpose) -> Result<u32> {
        let path = Self::file(dir, purpose);
        let mut ring = read_ring(&path)?;
        let highest = ring.keys.keys().next_back().copied().unwrap_or(0);
        let version = highest
            .checked_add(1)
            .ok_or_else(|| keys_err(&path, "no key version left after u32::MAX".into()))?;
        ring.keys.insert(version, random_key());
        ring.active = version;
        write_ring(&path, &ring, Replace::Atomically)?;
        Ok(version)
    }

    /// Deletes key `version` of `purpose`. Afterwards pseudonyms made with it can never
    /// again be linked to a raw id or address (see the module documentation for what
    /// that does not cover). The active version cannot be retired: rotate first.
    pub fn retire(dir: &Path, purpose: Purpose, version: u32) -> Result<()> {
        let path = Self::file(dir, purpose);
        let mut ring = read_ring(&path)?;
        if version == ring.active {
            return Err(keys_err(
                &path,
                format!("version {version} is the active {purpose} key; rotate before retiring it"),
            ));
        }
        if ring.keys.remove(&version).is_none() {
            return Err(keys_err(
                &path,
                format!("there is no version {version} (already retired?)"),
            ));
        }
        write_ring(&path, &ring, Replace::Atomically)
    }

    /// The active version of `purpose` and its key: what new pseudonyms are made with.
    pub fn active(&self, purpose: Purpose) -> (u32, &[u8; KEY_LEN]) {
        let ring = self.ring(purpose);
        (ring.active, ring.active_key())
    }

    /// Key `v` of `purpose`, if it exists (it may have been retired).
    pub fn version(&self, purpose: Purpose, v: u32) -> Option<&[u8; KEY_LEN]> {
        self.ring(purpose).keys.get(&v).map(|k| &**k)
    }

    /// The versions of `purpose` that still exist, ascending.
    pub fn versions(&self, purpose: Purpose) -> impl Iterator<Item = u32> + '_ {
        self.ring(purpose).keys.keys().copied()
    }

    fn ring(&self, purpose: Purpose) -> &Ring {
        match purpose {
            Purpose::Analytics => &self.analytics,
            Purpose::Identity => &self.identity,
            Purpose::Contacts => &self.contacts,
        }
    }

    /// A ring with fixed pseudonym keys (version 1 each), not backed by files: for
    /// tests (the processor's among them) and for keys held elsewhere. Its contacts
    /// key is random; [`KeyRing::with_contacts_key`] fixes it.
    pub fn from_keys(analytics: [u8; KEY_LEN], identity: [u8; KEY_LEN]) -> KeyRing {
        KeyRing {
            analytics: fixed(analytics),
            identity: fixed(identity),
            contacts: Ring::fresh(),
        }
    }

    /// This ring with `key` as contacts key version 1.
    pub fn with_contacts_key(mut self, key: [u8; KEY_LEN]) -> KeyRing {
        self.contacts = fixed(key);
        self
    }
}

fn fixed(key: [u8; KEY_LEN]) -> Ring {
    Ring {
        active: 1,
        keys: BTreeMap::from([(1, Zeroizing::new(key))]),
    }
}

fn keys_err(path: &Path, reason: String) -> Error {
    Error::Keys {
        path: path.to_owned(),
        reason,
    }
}

fn random_key() -> Zeroizing<[u8; KEY_LEN]> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    // `rand::rng()` is a CSPRNG seeded from the operating system.
    rand::rng().fill_bytes(key.as_mut());
    key
}

/// A parsed JSON document whose strings (and object keys) are zeroed when it is
/// dropped: the key file's hex strings pass through it.
struct Scrubbed(Value);

impl Drop for Scrubbed {
    fn drop(&mut self) {
        scrub(&mut self.0);
    }
}

fn scrub(value: &mut Value) {
    match value {
        Value::String(s) => s.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(scrub),
        Value::Object(map) => {
            for (mut k, mut v) in std::mem::take(map) {
                k.zeroize();
                scrub(&mut v);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Reads and validates one purpose file. Error reasons never quote the file's values:
/// a misplaced key would otherwise end up in a log.
fn read_ring(path: &Path) -> Result<Ring> {
    let err = |reason: String| keys_err(path, reason);
    let bytes = match std::fs::read(path) {
        Ok(b) => Zeroizing::new(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(err("the file does not exist (run `spur keys init`)".into()));
        }
        Err(e) => return Err(err(format!("cannot read: {e}"))),
    };
    warn_if_not_private(path);
    // Parsing into a `Value` can only fail on syntax, and serde_json's syntax errors
    // name a position, never the text.
    let doc = Scrubbed(
        serde_json::from_slice::<Value>(&bytes).map_err(|e| err(format!("not JSON: {e}")))?,
    );
    let Value::Object(top) = &doc.0 else {
        return Err(err("expected a JSON object".into()));
    };
    if top.keys().any(|k| k != "active" && k != "keys") {
        return Err(err("unexpected field (allowed: `active`, `keys`)".into()));
    }
    let active = match top.get("active") {
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v > 0)
            .ok_or_else(|| err("`active` is not a version number (1 to 2^32-1)".into()))?,
        Some(_) => return Err(err("`active` is not a number".into())),
        None => return Err(err("missing field `active`".into())),
    };
    let Some(Value::Object(entries)) = top.get("keys") else {
        return Err(err("missing or non-object field `keys`".into()));
    };
    let mut keys = BTreeMap::new();
    for (name, hex_key) in entries {
        // Canonical decimal only, so "1" and "01" cannot name the same version twice.
        let version = name
            .parse::<u32>()
            .ok()
            .filter(|v| *v > 0 && v.to_string() == *name)
            .ok_or_else(|| err("a name in `keys` is not a version number (1, 2, ...)".into()))?;
        let Value::String(hex_key) = hex_key else {
            return Err(err(format!("key version {version} is not a string")));
        };
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        hex::decode_to_slice(hex_key.as_bytes(), key.as_mut()).map_err(|_| {
            err(format!(
                "key version {version} is not {} hex characters",
                KEY_LEN * 2
            ))
        })?;
        keys.insert(version, key);
    }
    if !keys.contains_key(&active) {
        return Err(err(format!(
            "the active version {active} is not among the keys"
        )));
    }
    Ok(Ring { active, keys })
}

#[cfg(unix)]
fn warn_if_not_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            "key file is readable by group or others; it should have mode 0600"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_not_private(_path: &Path) {}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Replace {
    /// Create the file only if it does not exist yet (`init`).
    Never,
    /// Replace the file in one step (`rotate`, `retire`).
    Atomically,
}

/// Writes `ring` to `path` through a private temporary file in the same directory, so
/// readers see either the old or the new file, never a partial one.
fn write_ring(path: &Path, ring: &Ring, replace: Replace) -> Result<()> {
    let err = |what: &str, e: std::io::Error| keys_err(path, format!("{what}: {e}"));
    let body = serialise(ring);
    let dir = files::parent(path);
    // A random suffix: concurrent writers never share a temporary file.
    let tmp = files::temporary_beside(path);
    if let Err(e) = write_private(&tmp, &body) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err("cannot write a temporary file", e));
    }
    let result = match replace {
        // A hard link fails if the target exists, unlike a rename: no overwriting, even
        // when another `init` created the file since we looked.
        Replace::Never => match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(err("cannot create", e)),
        },
        Replace::Atomically => {
            // Opened before the rename: afterwards it is the only way to reach the old
            // file's blocks and overwrite them.
            let old = std::fs::OpenOptions::new().write(true).open(path).ok();
            let renamed = std::fs::rename(&tmp, path).map_err(|e| err("cannot replace", e));
            if renamed.is_ok()
                && let Some(old) = old
                && let Err(e) = overwrite_with_zeros(old)
            {
                tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "could not overwrite the previous key file's contents"
                );
            }
            renamed
        }
    };
    let _ = std::fs::remove_file(&tmp);
    result?;
    sync_dir(dir).map_err(|e| err("written, but cannot sync the directory", e))
}

fn serialise(ring: &Ring) -> Zeroizing<Vec<u8>> {
    #[derive(serde::Serialize)]
    struct KeyFile<'a> {
        active: u32,
        // serde_json writes integer map keys as strings: `"1": "..."`.
        keys: BTreeMap<u32, &'a str>,
    }
    let hex_keys: Vec<(u32, Zeroizing<String>)> = ring
        .keys
        .iter()
        .map(|(v, k)| (*v, Zeroizing::new(hex::encode(k.as_ref()))))
        .collect();
    let file = KeyFile {
        active: ring.active,
        keys: hex_keys.iter().map(|(v, k)| (*v, k.as_str())).collect(),
    };
    // Reserved up front so that the buffer never reallocates and leaves a copy behind.
    let mut out = Zeroizing::new(Vec::with_capacity(128 + ring.keys.len() * 128));
    serde_json::to_writer_pretty(&mut *out, &file).expect("the key file serialises");
    out.push(b'\n');
    out
}

fn overwrite_with_zeros(mut file: std::fs::File) -> std::io::Result<()> {
    let len = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
    file.write_all(&vec![0u8; len.min(1 << 20)])?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reason(e: Error) -> (PathBuf, String) {
        match e {
            Error::Keys { path, reason } => (path, reason),
            other => panic!("not a key file error: {other}"),
        }
    }

    #[test]
    fn init_then_load_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let made = KeyRing::init(dir.path()).expect("init");
        let loaded = KeyRing::load(dir.path()).expect("load");
        for p in Purpose::ALL {
            assert_eq!(made.active(p).0, 1);
            assert_eq!(made.active(p), loaded.active(p));
            assert_eq!(loaded.versions(p).collect::<Vec<_>>(), vec![1]);
        }
        assert_ne!(
            made.active(Purpose::Analytics).1,
            made.active(Purpose::Identity).1,
            "each purpose gets its own random key"
        );
    }

    #[test]
    fn init_creates_missing_directories_and_never_overwrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("a/b");
        let first = KeyRing::init(&keys).expect("init");
        let rotated = KeyRing::rotate(&keys, Purpose::Identity).expect("rotate");
        let again = KeyRing::init(&keys).expect("init again");
        assert_eq!(
            again.active(Purpose::Analytics),
            first.active(Purpose::Analytics)
        );
        assert_eq!(again.active(Purpose::Identity).0, rotated);
        // Only the three key files: no temporary file is left behind.
        let mut names: Vec<_> = std::fs::read_dir(&keys)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        names.sort();
        assert_eq!(names, ["analytics.json", "contacts.json", "identity.json"]);
    }

    #[test]
    fn init_keeps_an_existing_file_and_creates_the_missing_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hex_key = "ab".repeat(32);
        std::fs::write(
            KeyRing::file(dir.path(), Purpose::Analytics),
            format!(r#"{{"active": 7, "keys": {{"7": "{hex_key}"}}}}"#),
        )
        .expect("write");
        let ring = KeyRing::init(dir.path()).expect("init");
        assert_eq!(ring.active(Purpose::Analytics), (7, &[0xab; 32]));
        assert_eq!(ring.active(Purpose::Identity).0, 1);
    }

    #[test]
    fn rotate_activates_a_new_version_and_keeps_the_old_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let before = KeyRing::init(dir.path()).expect("init");
        let (v1, k1) = before.active(Purpose::Analytics);
        let v2 = KeyRing::rotate(dir.path(), Purpose::Analytics).expect("rotate");
        assert_eq!(v2, v1 + 1);
        let after = KeyRing::load(dir.path()).expect("load");
        let (active, k2) = after.active(Purpose::Analytics);
        assert_eq!(active, v2);
        assert_ne!(k2, k1);
        assert_eq!(after.version(Purpose::Analytics, v1), Some(k1));
        // The other purpose is untouched.
        assert_eq!(
            after.active(Purpose::Identity),
            before.active(Purpose::Identity)
        );
    }

    #[test]
    fn retire_deletes_an_old_version_and_refuses_the_active_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        KeyRing::init(dir.path()).expect("init");
        let v2 = KeyRing::rotate(dir.path(), Purpose::Identity).expect("rotate");

        let (path, why) =
            reason(KeyRing::retire(dir.path(), Purpose::Identity, v2).expect_err("active refused"));
        assert_eq!(path, KeyRing::file(dir.path(), Purpose::Identity));
        assert!(why.contains("active"), "{why}");

        KeyRing::retire(dir.path(), Purpose::Identity, 1).expect("retire v1");
        let ring = KeyRing::load(dir.path()).expect("load");
        assert_eq!(ring.version(Purpose::Identity, 1), None);
        assert_eq!(ring.versions(Purpose::Identity).collect::<Vec<_>>(), [v2]);
        assert_eq!(ring.active(Purpose::Identity).0, v2);

        let (_, why) =
            reason(KeyRing::retire(dir.path(), Purpose::Identity, 1).expect_err("already gone"));
        assert!(why.contains("no version 1"), "{why}");
        // The retired key's hex is gone from the file.
        let text =
            std::fs::read_to_string(KeyRing::file(dir.path(), Purpose::Identity)).expect("read");
        assert!(!text.contains("\"1\""), "{text}");
    }

    #[test]
    fn missing_or_malformed_files_are_errors_naming_the_path() {
        let secret = "c0".repeat(32);
        let cases = [
            ("not json", "not JSON".to_owned()),
            ("[]", "object".to_owned()),
            (r#"{"keys": {}}"#, "missing field `active`".to_owned()),
            (
                &format!(r#"{{"active": "{secret}", "keys": {{}}}}"#),
                "`active` is not a number".to_owned(),
            ),
            (
                &format!(r#"{{"active": 2, "keys": {{"1": "{secret}"}}}}"#),
                "active version 2".to_owned(),
            ),
            (
                r#"{"active": 1, "keys": {"1": "abcd"}}"#,
                "64 hex characters".to_owned(),
            ),
            (
                &format!(r#"{{"active": 1, "keys": {{"01": "{secret}"}}}}"#),
                "version number".to_owned(),
            ),
            (
                &format!(r#"{{"active": 0, "keys": {{"0": "{secret}"}}}}"#),
                "version number".to_owned(),
            ),
            (
                &format!(r#"{{"active": 1, "keys": {{"1": "{secret}"}}, "x": 1}}"#),
                "unexpected field".to_owned(),
            ),
        ];
        for (body, expected) in &cases {
            let dir = tempfile::tempdir().expect("tempdir");
            KeyRing::init(dir.path()).expect("init");
            let file = KeyRing::file(dir.path(), Purpose::Identity);
            std::fs::write(&file, body).expect("write");
            let e = KeyRing::load(dir.path()).expect_err(body);
            let shown = e.to_string();
            let (path, why) = reason(e);
            assert_eq!(path, file, "{body}");
            assert!(shown.contains(&file.display().to_string()), "{shown}");
            assert!(why.contains(expected.as_str()), "{body}: {why}");
            assert!(
                !shown.contains(&secret),
                "error leaks key material: {shown}"
            );
        }

        let dir = tempfile::tempdir().expect("tempdir");
        let (path, why) = reason(KeyRing::load(dir.path()).expect_err("missing"));
        assert_eq!(path, KeyRing::file(dir.path(), Purpose::Analytics));
        assert!(why.contains("does not exist"), "{why}");
    }

    #[test]
    fn debug_output_hides_the_key_bytes() {
        let ring = KeyRing::from_keys([0xaa; 32], [0xbb; 32]);
        let shown = format!("{ring:?}");
        assert!(shown.contains("active: 1"), "{shown}");
        for needle in ["aa", "170", "bb", "187"] {
            assert!(!shown.contains(needle), "{needle} in {shown}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("keys");
        KeyRing::init(&keys).expect("init");
        KeyRing::rotate(&keys, Purpose::Analytics).expect("rotate");
        KeyRing::retire(&keys, Purpose::Analytics, 1).expect("retire");
        for p in Purpose::ALL {
            let mode = std::fs::metadata(KeyRing::file(&keys, p))
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{p}: {mode:o}");
        }
        let mode = std::fs::metadata(&keys)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "directory: {mode:o}");
    }

    #[derive(Clone, Debug)]
    enum Op {
        Rotate(Purpose),
        /// Retire the n-th (modulo) existing version.
        Retire(Purpose, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        let purpose = prop_oneof![Just(Purpose::Analytics), Just(Purpose::Identity)];
        prop_oneof![
            purpose.clone().prop_map(Op::Rotate),
            (purpose, any::<usize>()).prop_map(|(p, n)| Op::Retire(p, n)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Any sequence of rotations and retirements leaves loadable files whose keys
        /// are exactly the ones expected: the active one is the newest, retired ones
        /// are gone, the others are unchanged byte for byte.
        #[test]
        fn rotate_and_retire_keep_the_ring_consistent(ops in proptest::collection::vec(op(), 0..12)) {
            let dir = tempfile::tempdir().expect("tempdir");
            let first = KeyRing::init(dir.path()).expect("init");
            let mut model: BTreeMap<Purpose, (u32, BTreeMap<u32, [u8; 32]>)> = Purpose::ALL
                .into_iter()
                .map(|p| {
                    let (v, k) = first.active(p);
                    (p, (v, BTreeMap::from([(v, *k)])))
                })
                .collect();
            for op in ops {
                match op {
                    Op::Rotate(p) => {
                        let v = KeyRing::rotate(dir.path(), p).expect("rotate");
                        let ring = KeyRing::load(dir.path()).expect("load");
                        let (active, key) = ring.active(p);
                        prop_assert_eq!(active, v);
                        let entry = model.get_mut(&p).expect("purpose");
                        prop_assert!(!entry.1.values().any(|k| k == key), "a fresh key");
                        entry.0 = v;
                        entry.1.insert(v, *key);
                    }
                    Op::Retire(p, n) => {
                        let entry = model.get_mut(&p).expect("purpose");
                        let versions: Vec<u32> = entry.1.keys().copied().collect();
                        let v = versions[n % versions.len()];
                        let result = KeyRing::retire(dir.path(), p, v);
                        if v == entry.0 {
                            prop_assert!(result.is_err());
                        } else {
                            result.expect("retire");
                            entry.1.remove(&v);
                        }
                    }
                }
                let ring = KeyRing::load(dir.path()).expect("load");
                for (p, (active, keys)) in &model {
                    prop_assert_eq!(ring.active(*p).0, *active);
                    prop_assert_eq!(ring.versions(*p).collect::<Vec<_>>(), keys.keys().copied().collect::<Vec<_>>());
                    for (v, k) in keys {
                        prop_assert_eq!(ring.version(*p, *v), Some(k));
                    }
                }
            }
        }
    }
}
