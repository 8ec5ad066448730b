//! The segment-changes topic: every committed change produced exactly once, keyed by
//! subject, in `seq` order per subject.
//!
//! **Partitioning.** The sink picks the partition itself: the first four bytes of
//! SHA-256 of the subject id, modulo the topic's partition count. All changes of a
//! subject share a partition, and the sink can tell, for any change, where it went.
//!
//! **Exactly once without transactions.** Records carry their `seq` in the header
//! `spur-change-seq`; the producer is idempotent (`acks=all`), so within a partition
//! records land in the order produced, without gaps or duplicates. On start the sink
//! reads the last record of every partition: a change is already on the topic if and
//! only if its `seq` is at most the last `seq` of its partition. After a failed
//! delivery the sink is rebuilt the same way, so a crash or a broker outage at any
//! point neither loses nor repeats a change. This relies on one sink writing the
//! topic (one segment service), and on the partition count not changing.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sha2::{Digest, Sha256};
use spur_schemas::kafka::{HEADER_CONTENT_TYPE, KafkaSettings};
use tracing::{debug, info};

use spur_audience::Change;

use crate::error::{Error, Result};

/// Header carrying the change's `seq`, decimal.
pub const HEADER_SEQ: &str = "spur-change-seq";
/// Header carrying the change's id (the body has it too).
pub const HEADER_ID: &str = "spur-change-id";

/// Where and how the sink produces.
#[derive(Debug, Clone)]
pub struct KafkaSinkConfig {
    pub topic: String,
    /// Used only when the sink creates the topic.
    pub partitions: i32,
    pub replication: i32,
    /// Longest wait for an acknowledgement (`message.timeout.ms`), and for metadata.
    pub ack_timeout: Duration,
    /// Whether records carry `contact.email` (`segments.include_contact`).
    pub include_contact: bool,
}

/// The producer and, per partition, the last `seq` on the topic.
pub struct KafkaSink {
    producer: FutureProducer,
    config: KafkaSinkConfig,
    last_seq: Vec<i64>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.config.topic)
            .field("last_seq", &self.last_seq)
            .finish_non_exhaustive()
    }
}

fn kafka(context: &str) -> impl FnOnce(KafkaError) -> Error + '_ {
    move |e| Error::Kafka(format!("{context}: {e}"))
}

/// The partition of `subject` among `partitions`.
pub fn partition_of(subject: &str, partitions: i32) -> i32 {
    let digest = Sha256::digest(subject.as_bytes());
    let head = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    let count = u32::try_from(partitions.max(1)).unwrap_or(1);
    i32::try_from(head % count).unwrap_or(0)
}

impl KafkaSink {
    /// Creates the topic if missing, learns its partitions and where each one ends.
    pub async fn connect(settings: &KafkaSettings, config: KafkaSinkConfig) -> Result<KafkaSink> {
        let client = spur_kafka::client_config(settings);
        ensure_topic(&client, &config).await?;
        let timeout = config.ack_timeout.as_millis().to_string();
        let producer: FutureProducer = client
            .clone()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "5")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set("message.timeout.ms", &timeout)
            .create()
            .map_err(kafka("creating the producer"))?;
        let (client_for_tail, topic, wait) = (client, config.topic.clone(), config.ack_timeout);
        let last_seq =
            tokio::task::spawn_blocking(move || read_tail(&client_for_tail, &topic, wait))
                .await
                .map_err(|e| Error::Kafka(format!("reading the topic's end: {e}")))??;
        info!(topic = %config.topic, ?last_seq, "segment-changes topic position");
        Ok(KafkaSink {
            producer,
            config,
            last_seq,
        })
    }

    /// The topic's partition count.
    pub fn partitions(&self) -> i32 {
        i32::try_from(self.last_seq.len()).unwrap_or(i32::MAX)
    }

    /// Every change with `seq` at most this is on the topic.
    pub fn done_through(&self) -> i64 {
        self.last_seq.iter().copied().min().unwrap_or(0)
    }

    /// Whether `change` still has to be produced.
    pub fn pending(&self, change: &Change) -> bool {
        let partition = partition_of(&change.subject_id, self.partitions());
        let index = usize::try_from(partition).unwrap_or(0);
        self.last_seq
            .get(index)
            .is_none_or(|last| change.seq > *last)
    }

    /// Produces the pending ones of `changes` (in `seq` order) and waits for every
    /// acknowledgement. On error some may have landed: rebuild the sink with
    /// [`KafkaSink::connect`] before trying again.
    pub async fn send(&mut self, changes: &[Change]) -> Result<usize> {
        let partitions = self.partitions();
        let mut waits = Vec::new();
        let mut produced = Vec::new();
        for change in changes.iter().filter(|c| self.pending(c)) {
            let partition = partition_of(&change.subject_id, partitions);
            let body = if self.config.include_contact {
                change.body()
            } else {
                change.body_without_contact()
            };
            let seq = change.seq.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: HEADER_CONTENT_TYPE,
                    value: Some("application/json"),
                })
                .insert(Header {
                    key: HEADER_SEQ,
                    value: Some(seq.as_str()),
                })
                .insert(Header {
                    key: HEADER_ID,
                    value: Some(change.id.as_str()),
                });
            let record = FutureRecord::to(&self.config.topic)
                .partition(partition)
                .key(change.subject_id.as_bytes())
                .payload(&body)
                .headers(headers);
            match self.producer.send_result(record) {
                Ok(wait) => waits.push(wait),
                Err((e, _)) => return Err(kafka("producing a segment change")(e)),
            }
            produced.push((partition, change.seq));
        }
        for result in join_all(waits).await {
            match result {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(kafka("delivering a segment change")(e)),
                Err(_) => {
                    return Err(Error::Kafka("producer closed while delivering".into()));
                }
            }
        }
        for (partition, seq) in &produced {
            if let Some(last) = usize::try_from(*partition)
                .ok()
                .and_then(|i| self.last_seq.get_mut(i))
            {
                *last = (*last).max(*seq);
            }
        }
        debug!(records = produced.len(), "segment changes produced");
        Ok(produced.len())
    }

    /// Waits for everything in flight (shutdown).
    pub fn flush(&self) {
        let _ = self.producer.flush(self.config.ack_timeout);
    }
}

/// Creates the topic unless the broker already has it.
async fn ensure_topic(client: &ClientConfig, config: &KafkaSinkConfig) -> Result<()> {
    let admin: std::sync::Arc<AdminClient<DefaultClientContext>> = std::sync::Arc::new(
        client
            .create()
            .map_err(kafka("creating the admin client"))?,
    );
    let exists = {
        let (admin, topic, wait) = (admin.clone(), config.topic.clone(), config.ack_timeout);
        tokio::task::spawn_blocking(move || {
            admin
                .inner()
                .fetch_metadata(Some(&topic), wait)
                .map(|metadata| {
                    metadata.topics().iter().any(|t| {
                        t.name() == topic && t.error().is_none() && !t.partitions().is_empty()
                    })
                })
        })
        .await
        .map_err(|e| Error::Kafka(format!("reading topic metadata: {e}")))?
        .map_err(kafka("reading topic metadata"))?
    };
    if exists {
        return Ok(());
    }
    let topic = spur_kafka::TopicSpec {
        name: &config.topic,
        partitions: config.partitions,
        replication: config.replication,
        retention: None,
    };
    spur_kafka::create_topics(client, &[topic], config.ack_timeout)
        .await
        .map_err(|e| {
            Error::Kafka(format!(
                "creating the segment-changes topic: {}",
                spur_schemas::error_chain(&e)
            ))
        })?;
    Ok(())
}

/// Per partition, the `seq` header of its last record (0 for an empty partition).
fn read_tail(client: &ClientConfig, topic: &str, wait: Duration) -> Result<Vec<i64>> {
    let consumer: BaseConsumer = client
        .clone()
        .set("group.id", "spur-segments-tail")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(kafka("creating the tail reader"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), wait)
        .map_err(kafka("reading topic metadata"))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    if partitions == 0 {
        return Err(Error::Kafka(format!(
            "topic {topic} has no partitions (or does not exist)"
        )));
    }
    let mut last = vec![0i64; partitions];
    let mut wanted: BTreeMap<i32, i64> = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for index in 0..partitions {
        let partition = i32::try_from(index).unwrap_or(i32::MAX);
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, wait)
            .map_err(kafka("reading partition offsets"))?;
        if high > low {
            wanted.insert(partition, high - 1);
            assignment
                .add_partition_offset(topic, partition, Offset::Offset(high - 1))
                .map_err(kafka("assigning"))?;
        }
    }
    if wanted.is_empty() {
        return Ok(last);
    }
    consumer
        .assign(&assignment)
        .map_err(kafka("assigning partitions"))?;
    let deadline = std::time::Instant::now() + wait;
    while !wanted.is_empty() {
        let remaining = deadline.saturating_duration_since(std::time::Instant::now());
        if remaining.is_zero() {
            return Err(Error::Kafka(format!(
                "could not read the last record of {topic} partitions {:?} in {wait:?}",
                wanted.keys().collect::<Vec<_>>()
            )));
        }
        let Some(message) = consumer.poll(remaining.min(Duration::from_millis(500))) else {
            continue;
        };
        let message = message.map_err(kafka("reading the topic's end"))?;
        let partition = message.partition();
        if wanted
            .get(&partition)
            .is_some_and(|o| message.offset() >= *o)
        {
            wanted.remove(&partition);
            let seq = message
                .headers()
                .and_then(|headers| {
                    headers
                        .iter()
                        .find(|h| h.key == HEADER_SEQ)
                        .and_then(|h| h.value)
                })
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse::<i64>().ok())
                .ok_or_else(|| {
                    Error::Kafka(format!(
                        "the last record of {topic} partition {partition} has no {HEADER_SEQ} \
                         header: the topic is written by something else than the segment service"
                    ))
                })?;
            if let Some(slot) = usize::try_from(partition)
                .ok()
                .and_then(|i| last.get_mut(i))
            {
                *slot = seq;
            }
        }
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;
    use spur_audience::ChangeKind;

    /// Against librdkafka's mock cluster: the topic is created, changes land once,
    /// and a new sink learns from the topic which ones are there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_sink_knows_what_is_already_on_the_topic() {
        let mock = MockCluster::new(1).expect("mock cluster");
        // The mock cluster does not implement CreateTopics.
        mock.create_topic("segments-test", 3, 1).expect("topic");
        let settings = KafkaSettings {
            brokers: mock.bootstrap_servers(),
            ..KafkaSettings::default()
        };
        let config = KafkaSinkConfig {
            topic: "segments-test".into(),
            partitions: 3,
            replication: 1,
            ack_timeout: Duration::from_secs(10),
            include_contact: false,
        };
        let change = |seq: i64, subject: &str| {
            Change::new(seq, "fans", subject, ChangeKind::Entered, "matched", 0)
        };
        let first: Vec<Change> = (1..=6).map(|i| change(i, &format!("s{i}"))).collect();
        let mut sink = KafkaSink::connect(&settings, config.clone())
            .await
            .expect("connect");
        assert_eq!(sink.partitions(), 3);
        assert_eq!(sink.done_through(), 0);
        assert_eq!(sink.send(&first).await.expect("send"), 6);

        let mut again = KafkaSink::connect(&settings, config)
            .await
            .expect("reconnect");
        assert!(first.iter().all(|c| !again.pending(c)));
        let later = [change(7, "s1"), change(8, "s2")];
        assert!(later.iter().all(|c| again.pending(c)));
        // Re-sending the first batch produces nothing; the later ones once.
        assert_eq!(again.send(&first).await.expect("resend"), 0);
        assert_eq!(again.send(&later).await.expect("later"), 2);
        assert!(later.iter().all(|c| !again.pending(c)));
    }

    #[test]
    fn partitions_are_stable_and_spread() {
        assert_eq!(partition_of("a", 6), partition_of("a", 6));
        let used: std::collections::HashSet<i32> = (0..600)
            .map(|i| partition_of(&format!("s{i}"), 6))
            .collect();
        assert_eq!(used.len(), 6);
        assert!((0..100).all(|i| partition_of(&format!("s{i}"), 1) == 0));
    }
}
