//! The collector's error type. Variants say what the caller must do: fix the
//! configuration, or treat the failure as fatal at start-up. Per-request problems are
//! not errors of this kind: they are answers ([`crate::api`]).

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is wrong: fix it and start again.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The GeoIP database cannot be opened: fix the path or the file.
    #[error("cannot open geoip database {path}")]
    GeoIp {
        path: PathBuf,
        #[source]
        source: maxminddb::MaxMindDbError,
    },
    /// The Kafka client cannot be created (bad properties): fix the configuration.
    #[error("cannot create kafka client")]
    Kafka(#[source] rdkafka::error::KafkaError),
    /// The salt file cannot be read or written: fix permissions or the path.
    #[error("cannot use salt file {path}")]
    Salt {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The listener failed: fatal.
    #[error("cannot serve http")]
    Io(#[from] std::io::Error),
}
