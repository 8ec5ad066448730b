//! Delivery to Kafka: an idempotent librdkafka producer (`acks=all`), a per-request
//! wait for every record's acknowledgement with a deadline, and a probe loop that
//! tells `/readyz` and the request path whether the broker is reachable.
//!
//! Records are enqueued without awaiting each other, so librdkafka batches them
//! (`linger.ms`); memory is bounded by librdkafka's queue limits, and a full queue
//! answers 503 at once instead of growing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use spur_kafka::{TopicSpec, client_config};
use spur_schemas::kafka::{HEADER_CONTENT_TYPE, HEADER_SCHEMA, KafkaSettings};
use spur_schemas::record::SCHEMA_VERSION;
use tokio::time::Instant;

use crate::config::Delivery;
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// Which topic a record goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    Events,
    DeadLetter,
}

/// A serialised record ready to produce.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub dest: Dest,
    pub key: String,
    pub payload: Vec<u8>,
}

/// Why a record was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendFailure {
    /// librdkafka's queue is full: the broker is not keeping up.
    QueueFull,
    /// No acknowledgement before the deadline.
    Timeout,
    /// The broker refused the record or the client gave up on it.
    Refused(String),
}

/// The producer and the broker's health.
#[derive(Clone)]
pub struct Sink {
    /// Replaced after an outage in which deliveries failed, and after a fatal
    /// idempotence error (see [`Sink::probe_loop`]).
    producer: Arc<RwLock<FutureProducer<Quiet>>>,
    config: Arc<ClientConfig>,
    /// Deliveries failed since the producer was created.
    failed: Arc<AtomicBool>,
    events_topic: Arc<str>,
    dead_letter_topic: Arc<str>,
    ack_timeout: Duration,
    up: Arc<AtomicBool>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("events_topic", &self.events_topic)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

/// Routes librdkafka's own logging into `tracing` at debug level (its connection
/// errors repeat many times a second during an outage); the probe loop reports the
/// broker's state once per change instead. Only librdkafka's critical messages stay
/// errors.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                tracing::error!(target: "librdkafka", fac, message)
            }
            _ => tracing::debug!(target: "librdkafka", fac, message),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(target: "librdkafka", error = %error, reason, "kafka client error");
    }
}

impl Sink {
    pub fn new(kafka: &KafkaSettings, delivery: &Delivery) -> Result<Self> {
        let mut config = client_config(kafka);
        // Set last: the delivery guarantees are not user-configurable.
        config
            .set("client.id", "spur-collector")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            .set("linger.ms", delivery.linger.as_millis().to_string())
            .set(
                "message.timeout.ms",
                delivery.ack_timeout.as_millis().max(1).to_string(),
            )
            .set(
                "queue.buffering.max.messages",
                delivery.max_queued_records.to_string(),
            )
            .set(
                "queue.buffering.max.kbytes",
                delivery.max_queued_kbytes.to_string(),
            );
        let producer: FutureProducer<Quiet> =
            config.create_with_context(Quiet).map_err(Error::Kafka)?;
        Ok(Self {
            producer: Arc::new(RwLock::new(producer)),
            config: Arc::new(config),
            failed: Arc::new(AtomicBool::new(false)),
            events_topic: kafka.topics.events.as_str().into(),
            dead_letter_topic: kafka.topics.dead_letter.as_str().into(),
            ack_timeout: delivery.ack_timeout,
            up: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Whether the broker answered the last probe and no delivery failed since.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn producer(&self) -> FutureProducer<Quiet> {
        self.producer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Swaps in a fresh producer (a new producer id). The old one is dropped once its
    /// last user is done; records it still holds fail and their requests get 503.
    fn reset_producer(&self, why: &str) {
        match self
            .config
            .create_with_context::<_, FutureProducer<Quiet>>(Quiet)
        {
            Ok(fresh) => {
                *self.producer.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                self.failed.store(false, Ordering::Relaxed);
                tracing::info!(why, "created a new kafka producer");
            }
            Err(e) => tracing::error!(error = %e, "could not create a new kafka producer"),
        }
    }

    /// Enqueues every record, then waits for each acknowledgement until the deadline.
    /// The result has one entry per record, in order.
    pub async fn send_all(&self, records: &[Outgoing]) -> Vec<Result<(), SendFailure>> {
        let deadline = Instant::now() + self.ack_timeout;
        let mut pending = Vec::with_capacity(records.len());
        let producer = self.producer();
        for record in records {
            let topic: &str = match record.dest {
                Dest::Events => &self.events_topic,
                Dest::DeadLetter => &self.dead_letter_topic,
            };
            let version = SCHEMA_VERSION.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: HEADER_SCHEMA,
                    value: Some(version.as_str()),
                })
                .insert(Header {
                    key: HEADER_CONTENT_TYPE,
                    value: Some("application/json"),
                });
            let fr = FutureRecord::to(topic)
                .key(record.key.as_bytes())
                .payload(&record.payload)
                .headers(headers);
            pending.push(match producer.send_result(fr) {
                Ok(delivery) => Some(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => None,
                Err((e, _)) => {
                    tracing::warn!(error = %e, "record refused by the kafka client");
                    None
                }
            });
        }
        let waits = pending.into_iter().map(|delivery| async move {
            let Some(delivery) = delivery else {
                return Err(SendFailure::QueueFull);
            };
            match tokio::time::timeout_at(deadline, delivery).await {
                Err(_) => Err(SendFailure::Timeout),
                Ok(Err(_canceled)) => Err(SendFailure::Refused("producer closed".into())),
                Ok(Ok(Err((e, _)))) => Err(SendFailure::Refused(e.to_string())),
                Ok(Ok(Ok(_))) => Ok(()),
            }
        });
        let results = join_all(waits).await;
        if results
            .iter()
            .any(|r| matches!(r, Err(SendFailure::Timeout | SendFailure::Refused(_))))
        {
            self.up.store(false, Ordering::Relaxed);
            self.failed.store(true, Ordering::Relaxed);
        }
        results
    }

    /// Creates the events and dead-letter topics when missing. A topic the broker
    /// refuses is logged, not fatal: it may exist under other permissions.
    pub async fn ensure_topics(&self, kafka: &KafkaSettings, delivery: &Delivery) -> Result<()> {
        // Raw records are personal data: the broker deletes them after this.
        let topic = |name, partitions| TopicSpec {
            name,
            partitions,
            replication: delivery.topic_replication,
            retention: Some(kafka.events_retention),
        };
        let topics = [
            topic(kafka.topics.events.as_str(), delivery.topic_partitions),
            topic(
                kafka.topics.dead_letter.as_str(),
                delivery.topic_partitions.min(3),
            ),
        ];
        match spur_kafka::create_topics(&client_config(kafka), &topics, delivery.ack_timeout).await
        {
            Ok(_) => Ok(()),
            Err(spur_kafka::Error::Kafka(e)) => Err(Error::Kafka(e)),
            Err(refused) => {
                tracing::warn!(error = %refused, "could not create topic");
                Ok(())
            }
        }
    }

    /// Probes the broker every `interval` until `stop` resolves, keeping `is_up` and the
    /// `spur_collector_broker_up` gauge current.
    ///
    /// When the broker is back after deliveries failed, or librdkafka reports a fatal
    /// (idempotence) error, the producer is replaced before traffic resumes: a broker
    /// that lost its producer state (restarted from an old snapshot, or a broker that
    /// mishandles an unknown producer id) then sees a fresh producer id instead of
    /// sequence numbers it cannot place. Requests whose records failed were answered
    /// 503 and are retried by clients; downstream de-duplicates by event id.
    pub async fn probe_loop(
        &self,
        interval: Duration,
        metrics: Arc<Metrics>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            if let Some((code, reason)) = self.producer().client().fatal_error() {
                tracing::error!(error = %code, reason, "fatal kafka producer error");
                self.failed.store(true, Ordering::Relaxed);
            }
            let producer = self.producer();
            let topic = self.events_topic.clone();
            let timeout = interval.max(Duration::from_millis(500));
            let ok = tokio::task::spawn_blocking(move || {
                producer
                    .client()
                    .fetch_metadata(Some(&topic), timeout)
                    .map(|md| {
                        md.topics()
                            .iter()
                            .any(|t| t.error().is_none() && !t.partitions().is_empty())
                    })
                    .unwrap_or(false)
            })
            .await
            .unwrap_or(false);
            if ok && self.failed.load(Ordering::Relaxed) {
                self.reset_producer("deliveries failed since the producer was created");
            }
            let was = self.up.swap(ok, Ordering::Relaxed);
            if was != ok {
                if ok {
                    tracing::info!("broker reachable");
                } else {
                    tracing::warn!("broker unreachable; answering 503 until it returns");
                }
            }
            metrics.broker_up(ok);
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Waits for everything enqueued to be acknowledged, at most `timeout`.
    pub async fn flush(&self, timeout: Duration) {
        let producer = self.producer();
        let result = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
        match result {
            Ok(Ok(())) => tracing::info!("producer flushed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "producer flush incomplete"),
            Err(e) => tracing::warn!(error = %e, "producer flush task failed"),
        }
    }
}
