//! The audience crate's one error type. Each variant says what the caller must do:
//! fix the configuration (a rule or a segment condition), retry (the lake was
//! unreachable or a concurrent writer won), or report a bug.

use datafusion::error::DataFusionError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A rule, segment condition or scoring setting is wrong: fix the configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// The lake could not be read or written: retry; nothing partial is visible.
    #[error("lake unavailable")]
    Lake(#[from] spur_lake::Error),
    /// A query over the lake failed (an invalid condition, an unreachable file).
    #[error("query failed")]
    Query(#[from] DataFusionError),
    /// Writing a report (`spur score --explain`) failed: nothing to retry here.
    #[error("writing the output")]
    Output(#[source] std::io::Error),
}

impl Error {
    /// The full message with every source, on one line.
    pub fn chain(&self) -> String {
        spur_schemas::error_chain(self)
    }
}
