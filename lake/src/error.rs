//! The lake's error type. Variants say what the caller must do.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lake root or a table definition is wrong: fix the configuration.
    #[error("invalid lake configuration: {0}")]
    Config(String),
    /// The Delta table could not be read or written. Retry: nothing partial is visible.
    #[error("lake operation failed")]
    Delta(#[from] deltalake::DeltaTableError),
    /// Building or reading Arrow data failed: a bug or a schema mismatch.
    #[error("arrow data error")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// A query result lacks a column the caller reads: a bug (the SQL and the reader
    /// disagree).
    #[error("query result has no column {0}")]
    MissingColumn(String),
    /// A query over the lake failed.
    #[error("lake query failed")]
    Query(#[from] datafusion::error::DataFusionError),
}
