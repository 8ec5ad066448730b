//! The query layer's one error type. Each variant says what the caller must do:
//! fix the configuration, rewrite the query, retry, or give up.

use datafusion::error::DataFusionError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is wrong (or the lake is not where it says): fix it.
    #[error("configuration: {0}")]
    Config(String),
    /// The lake could not be opened or refreshed: check the root, or retry if the
    /// storage was unreachable.
    #[error("lake unavailable")]
    Lake(#[from] spur_lake::Error),
    /// The SQL is refused by the read-only rules (`guard`): the analyst must ask
    /// something else. Not retryable.
    #[error("{0}")]
    Refused(#[from] crate::guard::Refusal),
    /// The query needed more memory than `query.memory_limit` allows: narrow it
    /// (filter on `dt`, aggregate first) or raise the limit.
    #[error(
        "query exceeded the memory limit of {limit}: narrow it (e.g. filter on dt) or raise query.memory_limit"
    )]
    MemoryLimit {
        limit: crate::config::ByteSize,
        #[source]
        source: DataFusionError,
    },
    /// The SQL is invalid or failed while running (unknown column, bad cast, ...):
    /// fix the query.
    #[error("query failed")]
    Query(#[source] DataFusionError),
    /// Writing the results failed (closed pipe, full disk): nothing to retry here.
    #[error("writing the results")]
    Output(#[source] std::io::Error),
    /// The server could not start or accept: usually the listen address.
    #[error("server: {context}")]
    Server {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Classifies an error DataFusion returned for a query.
    pub(crate) fn from_query(error: DataFusionError, limit: crate::config::ByteSize) -> Error {
        if matches!(error.find_root(), DataFusionError::ResourcesExhausted(_)) {
            Error::MemoryLimit {
                limit,
                source: error,
            }
        } else {
            Error::Query(error)
        }
    }

    /// The full message with every source, on one line: what a client is shown.
    pub fn chain(&self) -> String {
        spur_schemas::error_chain(self)
    }
}
