//! The processor's configuration (`[processor]` in the TOML file). Defaults live in
//! the `Default` impls; unknown keys are rejected.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Root of the Delta tables (`[lake] root`, shared by every service): not part
    /// of `[processor]`; whoever starts the processor hands it over.
    #[serde(skip)]
    pub lake: String,
    /// Directory of the key files (`keys.dir`): not part of `[processor]`; whoever
    /// starts the processor hands it over.
    #[serde(skip)]
    pub keys_dir: PathBuf,
    /// Kafka consumer group; every processor of one pipeline uses the same.
    pub group_id: String,
    /// How long the group waits for a silent processor before giving its partitions
    /// to the others (`session.timeout.ms`; the broker bounds it, 6 s minimum by
    /// default).
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// Longest time between two Delta commits while events arrive.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Most events held before a commit.
    pub flush_max_events: usize,
    pub sessions: SessionConfig,
    /// How many records before its resume point a partition is read from when it is
    /// assigned; those records are skipped. Real Kafka needs 0, but a broker that
    /// answers a fetch inside a record batch with the following batch (tansu 0.6) would
    /// otherwise lose the rest of that batch. Must be at least the producer's largest
    /// batch (librdkafka `batch.num.messages`, 10,000 by default).
    pub resume_rewind: u32,
    /// How far back duplicate event ids (client retries) are recognised, by event time.
    #[serde(with = "humantime_serde")]
    pub dedupe_window: Duration,
    /// How many times a failed lake commit is retried (after 0.5 s, doubling up to
    /// 15 s) before the processor exits with the error, for its supervisor to restart
    /// it. The default, 5, rides out about 15 s of storage trouble.
    pub commit_retries: u32,
    /// Operator endpoints `/livez`, `/readyz`, `/metrics` (port 0: any free port,
    /// logged at start).
    pub listen: SocketAddr,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            lake: "./lake".into(),
            keys_dir: PathBuf::from("./keys"),
            group_id: "spur-processor".into(),
            session_timeout: Duration::from_secs(10),
            flush_interval: Duration::from_secs(5),
            flush_max_events: 50_000,
            sessions: SessionConfig::default(),
            resume_rewind: 10_000,
            dedupe_window: Duration::from_secs(24 * 3600),
            commit_retries: 5,
            listen: SocketAddr::from(([127, 0, 0, 1], 9101)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// A session ends after this long without events.
    #[serde(with = "humantime_serde")]
    pub inactivity: Duration,
    /// A session never lasts longer than this.
    #[serde(with = "humantime_serde")]
    pub max_duration: Duration,
    /// Most open sessions held in memory per partition; beyond it the least recently
    /// active one is closed early (`closed_by = "evicted"`).
    pub max_open: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            inactivity: Duration::from_secs(30 * 60),
            max_duration: Duration::from_secs(24 * 3600),
            max_open: 1_000_000,
        }
    }
}
