//! What the broker keeps on disk, under one data directory:
//!
//! ```text
//! <data>/lock                      held while a broker runs on the directory
//! <data>/producer-ids              the next idempotent producer id
//! <data>/offsets.json              committed offsets of every group
//! <data>/topics/<topic>/topic.json id, partitions, configs
//! <data>/topics/<topic>/<n>/       partition n's log (crate::log)
//! ```
//!
//! Small files are replaced whole (temporary file, fsync, rename, directory fsync),
//! so a crash leaves the old version or the new one, never a mix.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::log::{self, PartitionLog};

/// Kafka's limits on topic names.
const MAX_TOPIC_NAME: usize = 249;
pub const MAX_PARTITIONS: i32 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("another broker is running on {0} (it holds the lock file)")]
    Locked(PathBuf),
    #[error(transparent)]
    Log(#[from] log::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Why a topic cannot be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicRefused {
    #[error("topic names are 1 to 249 of a-z A-Z 0-9 . _ - and not . or ..")]
    InvalidName,
    #[error("the topic already exists")]
    Exists,
    #[error("partitions must be between 1 and {MAX_PARTITIONS}")]
    Partitions,
    #[error("this broker is a single node: replication factor 1 only")]
    Replication,
    #[error("{0}")]
    Config(String),
}

/// A topic's settings as stored in `topic.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TopicMeta {
    id: uuid::Uuid,
    partitions: i32,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub id: uuid::Uuid,
    pub configs: BTreeMap<String, String>,
    /// `retention.ms`; `None` keeps records forever.
    pub retention: Option<Duration>,
    partitions: Vec<Mutex<PartitionLog>>,
}

impl Topic {
    pub fn partition_count(&self) -> i32 {
        self.partitions.len() as i32
    }

    /// The partition's log, or `None` when the topic has no such partition.
    pub fn partition(&self, index: i32) -> Option<MutexGuard<'_, PartitionLog>> {
        let p = self.partitions.get(usize::try_from(index).ok()?)?;
        Some(p.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// One group's committed offset of one partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Committed {
    pub offset: i64,
    #[serde(default)]
    pub metadata: Option<String>,
}

type Offsets = BTreeMap<String, BTreeMap<String, BTreeMap<i32, Committed>>>;

#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    segment_bytes: u64,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    next_producer_id: Mutex<i64>,
    offsets: Mutex<Offsets>,
    _lock: File,
}

impl Store {
    /// Opens the data directory, recovering every partition log.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<Store, Error> {
        fs::create_dir_all(dir.join("topics")).map_err(io_err(dir))?;
        let lock_path = dir.join("lock");
        let lock = File::create(&lock_path).map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(Error::Locked(dir.to_path_buf())),
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        let mut topics = BTreeMap::new();
        let mut max_producer = -1;
        let topics_dir = dir.join("topics");
        for entry in fs::read_dir(&topics_dir).map_err(io_err(&topics_dir))? {
            let path = entry.map_err(io_err(&topics_dir))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(String::from) else {
                continue;
            };
            let meta_path = path.join("topic.json");
            if !meta_path.exists() {
                continue; // a creation interrupted before its metadata was written
            }
            let meta: TopicMeta = read_json(&meta_path)?;
            let mut partitions = Vec::new();
            for p in 0..meta.partitions {
                let (log, cut) = PartitionLog::open(&path.join(p.to_string()), segment_bytes)?;
                if cut > 0 {
                    tracing::warn!(topic = %name, partition = p, bytes = cut, "recovered a torn log tail");
                }
                max_producer = max_producer.max(log.max_producer_id());
                partitions.push(Mutex::new(log));
            }
            let topic = build_topic(name.clone(), meta, partitions);
            topics.insert(name, Arc::new(topic));
        }
        let ids_path = dir.join("producer-ids");
        let stored: i64 = if ids_path.exists() {
            read_json(&ids_path)?
        } else {
            0
        };
        let offsets_path = dir.join("offsets.json");
        let offsets: Offsets = if offsets_path.exists() {
            read_json(&offsets_path)?
        } else {
            Offsets::new()
        };
        Ok(Store {
            dir: dir.to_path_buf(),
            segment_bytes,
            topics: RwLock::new(topics),
            next_producer_id: Mutex::new(stored.max(max_producer + 1)),
            offsets: Mutex::new(offsets),
            _lock: lock,
        })
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Checks a topic creation without doing it.
    pub fn check_topic(
        &self,
        name: &str,
        partitions: i32,
        replication: i16,
        configs: &BTreeMap<String, String>,
    ) -> Result<(), TopicRefused> {
        Self::validate_topic(name, partitions, replication, configs)?;
        if self.topic(name).is_some() {
            return Err(TopicRefused::Exists);
        }
        Ok(())
    }

    /// [`Store::check_topic`] but for existence, which needs the topics' lock.
    fn validate_topic(
        name: &str,
        partitions: i32,
        replication: i16,
        configs: &BTreeMap<String, String>,
    ) -> Result<(), TopicRefused> {
        let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if name.is_empty()
            || name.len() > MAX_TOPIC_NAME
            || name == "."
            || name == ".."
            || !name.chars().all(legal)
        {
            return Err(TopicRefused::InvalidName);
        }
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(TopicRefused::Partitions);
        }
        if replication != 1 && replication != -1 {
            return Err(TopicRefused::Replication);
        }
        retention_of(configs).map_err(TopicRefused::Config)?;
        if configs
            .get("cleanup.policy")
            .is_some_and(|p| p.split(',').any(|p| p.trim() != "delete"))
        {
            return Err(TopicRefused::Config(
                "cleanup.policy: only `delete` is supported (no compaction)".into(),
            ));
        }
        Ok(())
    }

    /// Creates a topic (see [`Store::check_topic`] for what is refused).
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication: i16,
        configs: BTreeMap<String, String>,
    ) -> Result<Result<Arc<Topic>, TopicRefused>, Error> {
        let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
        if let Err(refused) = Self::validate_topic(name, partitions, replication, &configs) {
            return Ok(Err(refused));
        }
        if topics.contains_key(name) {
            return Ok(Err(TopicRefused::Exists));
        }
        let path = self.dir.join("topics").join(name);
        let meta = TopicMeta {
            id: uuid::Uuid::new_v4(),
            partitions,
            configs,
        };
        let mut logs = Vec::new();
        for p in 0..partitions {
            let (log, _) = PartitionLog::open(&path.join(p.to_string()), self.segment_bytes)?;
            logs.push(Mutex::new(log));
        }
        // The metadata last: a topic directory without it is ignored on the next start.
        write_json(&path.join("topic.json"), &meta)?;
        let topic = Arc::new(build_topic(name.to_string(), meta, logs));
        topics.insert(name.to_string(), topic.clone());
        tracing::info!(topic = name, partitions, "created topic");
        Ok(Ok(topic))
    }

    /// A new idempotent producer id, recorded before it is handed out.
    pub fn new_producer_id(&self) -> Result<i64, Error> {
        let mut next = self
            .next_producer_id
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let id = *next;
        write_json(&self.dir.join("producer-ids"), &(id + 1))?;
        *next = id + 1;
        Ok(id)
    }

    pub fn commit_offsets(
        &self,
        group: &str,
        offsets: Vec<(String, i32, Committed)>,
    ) -> Result<(), Error> {
        let mut all = self.offsets.lock().unwrap_or_else(|e| e.into_inner());
        let mut updated = all.clone();
        let entry = updated.entry(group.to_string()).or_default();
        for (topic, partition, committed) in offsets {
            entry.entry(topic).or_default().insert(partition, committed);
        }
        write_json(&self.dir.join("offsets.json"), &updated)?;
        *all = updated;
        Ok(())
    }

    /// The group's committed offsets: of the given partitions, or all when `None`.
    pub fn committed(&self, group: &str) -> BTreeMap<String, BTreeMap<i32, Committed>> {
        self.offsets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(group)
            .cloned()
            .unwrap_or_default()
    }

    /// Applies retention to every partition.
    pub fn expire(&self, now: SystemTime) {
        for topic in self.topics() {
            for p in 0..topic.partition_count() {
                let Some(mut log) = topic.partition(p) else {
                    continue;
                };
                if let Err(e) = log.expire(topic.retention, now) {
                    tracing::error!(topic = %topic.name, partition = p, error = %e, "retention failed");
                }
            }
        }
    }
}

fn build_topic(name: String, meta: TopicMeta, partitions: Vec<Mutex<PartitionLog>>) -> Topic {
    let retention = retention_of(&meta.configs).unwrap_or_else(|e| {
        tracing::warn!(topic = %name, error = %e, "ignoring an invalid retention.ms");
        None
    });
    Topic {
        name,
        id: meta.id,
        configs: meta.configs,
        retention,
        partitions,
    }
}

fn retention_of(configs: &BTreeMap<String, String>) -> Result<Option<Duration>, String> {
    match configs.get("retention.ms").map(|v| v.trim()) {
        None | Some("-1") => Ok(None),
        Some(v) => match v.parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(Some(Duration::from_millis(ms))),
            _ => Err(format!(
                "retention.ms must be a positive number of milliseconds or -1, not {v:?}"
            )),
        },
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Replaces a small file atomically and durably.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(&bytes).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_offsets_and_producer_ids_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 1 << 20).expect("open");
        let configs = BTreeMap::from([("retention.ms".to_string(), "60000".to_string())]);
        let topic = store
            .create_topic("t.1", 3, 1, configs)
            .expect("io")
            .expect("created");
        assert_eq!(topic.retention, Some(Duration::from_secs(60)));
        assert_eq!(
            store
                .create_topic("t.1", 3, 1, BTreeMap::new())
                .expect("io")
                .expect_err("refused"),
            TopicRefused::Exists
        );
        assert_eq!(store.new_producer_id().expect("id"), 0);
        assert_eq!(store.new_producer_id().expect("id"), 1);
        store
            .commit_offsets(
                "g",
                vec![(
                    "t.1".into(),
                    2,
                    Committed {
                        offset: 42,
                        metadata: None,
                    },
                )],
            )
            .expect("commit");
        assert!(matches!(
            Store::open(dir.path(), 1 << 20),
            Err(Error::Locked(_))
        ));
        drop(store);
        let store = Store::open(dir.path(), 1 << 20).expect("reopen");
        let topic = store.topic("t.1").expect("kept");
        assert_eq!(
            (topic.partition_count(), topic.retention),
            (3, Some(Duration::from_secs(60)))
        );
        assert_eq!(store.new_producer_id().expect("id"), 2);
        assert_eq!(store.committed("g")["t.1"][&2].offset, 42);
    }

    #[test]
    fn invalid_topics_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 1 << 20).expect("open");
        let none = BTreeMap::new();
        assert_eq!(
            store.check_topic("../x", 1, 1, &none),
            Err(TopicRefused::InvalidName)
        );
        assert_eq!(
            store.check_topic("", 1, 1, &none),
            Err(TopicRefused::InvalidName)
        );
        assert_eq!(
            store.check_topic("a", 0, 1, &none),
            Err(TopicRefused::Partitions)
        );
        assert_eq!(
            store.check_topic("a", 1, 3, &none),
            Err(TopicRefused::Replication)
        );
        let compact = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
        assert!(matches!(
            store.check_topic("a", 1, 1, &compact),
            Err(TopicRefused::Config(_))
        ));
        let bad = BTreeMap::from([("retention.ms".to_string(), "soon".to_string())]);
        assert!(matches!(
            store.check_topic("a", 1, 1, &bad),
            Err(TopicRefused::Config(_))
        ));
        assert_eq!(store.check_topic("a", 1, -1, &none), Ok(()));
    }
}
