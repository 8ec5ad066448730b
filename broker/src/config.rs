use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[broker]`: the embedded broker of `spur up` and `spur broker`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on. Loopback only unless `allow_remote`.
    pub listen: SocketAddr,
    /// `host:port` clients are told to connect to (default: the listen address).
    pub advertised: Option<String>,
    /// Where topics, logs and committed offsets are kept.
    pub data_dir: PathBuf,
    /// Sync every acknowledged write to disk before answering (survives a power cut,
    /// not only a crash of the process). Off: faster, and still safe against
    /// `kill -9`, since written data is in the operating system's cache.
    pub fsync: bool,
    /// Partitions of a topic created without a count (auto-creation, `-1`).
    pub default_partitions: i32,
    /// Create a topic when a client asks for an unknown one (Kafka's
    /// `auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// A segment file is rolled at this size.
    pub segment_bytes: u64,
    /// Largest record batch accepted (Kafka's `message.max.bytes`).
    pub max_batch_bytes: usize,
    /// Listen on a non-loopback address. The broker has no authentication or TLS:
    /// only on a network where every host may read and write every topic.
    pub allow_remote: bool,
    /// How often retention (`retention.ms` of each topic) is applied.
    #[serde(with = "humantime_serde")]
    pub retention_check: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised: None,
            data_dir: PathBuf::from("spur-data/broker"),
            fsync: true,
            default_partitions: 1,
            auto_create_topics: true,
            segment_bytes: 64 * 1024 * 1024,
            max_batch_bytes: 8 * 1024 * 1024,
            allow_remote: false,
            retention_check: Duration::from_secs(30),
        }
    }
}
