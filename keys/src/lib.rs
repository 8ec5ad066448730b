//! Spur's secret material on disk, in one place for every service.
//!
//! - [`ring`]: the key rings, one per [`Purpose`] (`analytics` and `identity` for
//!   pseudonyms, `contacts` for the vault), with rotation and retirement (`spur keys …`).
//! - [`pseudonym`]: the keyed pseudonyms made with them (visitor ids, e-mail
//!   addresses): the processor writes them, the GDPR commands recompute them to find
//!   a person.
//! - [`vault`]: the contact vault's data keys, one per subject, wrapped by the
//!   `contacts` key; sealing and opening e-mail addresses; destroying a subject's key
//!   (crypto-shredding, on erasure).
//! - [`config`]: `[keys]`, the directory of all of it.
//! - [`files`]: private files written atomically (0600, temporary file, rename,
//!   directory sync), used by the key rings, the collector's salt and the segment
//!   service's delivery cursors.
//!
//! Must never: print or log key bytes, write a key file in place, or depend on a
//! service crate. No network I/O.

pub mod config;
pub mod error;
pub mod files;
pub mod pseudonym;
pub mod ring;
pub mod vault;

pub use config::KeysConfig;
pub use error::{Error, Result};
pub use ring::{KEY_LEN, KeyRing, Purpose};
