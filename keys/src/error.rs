//! The keys crate's error: a key file that cannot be used. The operator must fix the
//! file or the directory (or run `spur keys init`); retrying does not help.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key file is missing, unreadable or malformed.
    #[error("cannot use key file {path}: {reason}")]
    Keys { path: PathBuf, reason: String },
}
