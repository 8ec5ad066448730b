//! The processor's error type. Variants say what the caller must do.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is wrong: fix it and start again.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A key file is missing, unreadable or malformed: fix it (or run `spur keys init`).
    #[error(transparent)]
    Keys(#[from] spur_keys::Error),
    /// The Delta table could not be read or written. Retry: nothing partial is visible.
    #[error("lake operation failed")]
    Lake(#[from] spur_lake::Error),
    /// Building or reading Arrow data failed: a bug or a schema mismatch.
    #[error("arrow data error")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// A query over the lake failed.
    #[error("lake query failed")]
    Query(#[from] datafusion::error::DataFusionError),
    /// The Kafka client failed. Retry for transient errors; fatal at start-up.
    #[error("kafka error")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("i/o error")]
    Io(#[from] std::io::Error),
}
