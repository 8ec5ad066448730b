//! The GDPR crate's one error type. Each variant says what the caller must do:
//! correct the request or the configuration, or retry (erasure resumes where it
//! stopped).

use datafusion::error::DataFusionError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request or the configuration is wrong (unknown subject, a visitor not
    /// linked to it, a missing token): correct it. The admin endpoints answer 400.
    #[error("{0}")]
    Config(String),
    /// The lake could not be read or written: retry; an erasure resumes.
    #[error("lake unavailable")]
    Lake(#[from] spur_lake::Error),
    /// The ledger or an identity query failed: retry.
    #[error("audience data unavailable")]
    Audience(#[from] spur_audience::Error),
    /// A key file (the subject's contact data key) could not be read or deleted:
    /// fix the key directory, then retry; an erasure resumes.
    #[error("key files")]
    Keys(#[from] spur_keys::Error),
    /// A query over the lake failed.
    #[error("query failed")]
    Query(#[from] DataFusionError),
    /// A state file (the segment service's given-up log) could not be rewritten.
    #[error("state file {path}")]
    State {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The admin server could not start or accept: usually the listen address.
    #[error("server: {context}")]
    Server {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The full message with every source, on one line.
    pub fn chain(&self) -> String {
        spur_schemas::error_chain(self)
    }
}
