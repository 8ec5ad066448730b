//! The keys crate's error: a key file that cannot be used. The operator must fix the
//! file or the directory (or run `spur keys init`); retrying does not help.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key file is missing, unreadable or malformed.
    #[error("cannot use key file {path}: {reason}")]
    Keys { path: PathBuf, reason: String },
    /// A sealed address does not open: altered, for another subject or event, or
    /// sealed under a data key this one is not. Not retryable.
    #[error("sealed contact does not open: {0}")]
    Sealed(&'static str),
}
