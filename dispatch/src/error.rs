//! The dispatch crate's one error type. Each variant says what the caller must do:
//! fix the configuration, check the broker or the receiver (the service retries),
//! or check the state directory.

use datafusion::error::DataFusionError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `[segments]` or a webhook is configured wrongly: fix it.
    #[error("configuration: {0}")]
    Config(String),
    /// The audience engine failed (lake unreachable, a condition that does not run):
    /// the service retries at the next interval.
    #[error("segment evaluation failed")]
    Audience(#[from] spur_audience::Error),
    /// The lake could not be read: the service retries.
    #[error("lake unavailable")]
    Lake(#[from] spur_lake::Error),
    /// Reading committed changes failed.
    #[error("query failed")]
    Query(#[source] DataFusionError),
    /// A Kafka operation failed (broker unreachable, topic missing, delivery timed
    /// out): check the broker; the service retries.
    #[error("kafka: {0}")]
    Kafka(String),
    /// A state file (delivery cursor, given-up log) could not be read or written.
    #[error("state file {path}")]
    State {
        path: String,
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
