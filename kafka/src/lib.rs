//! Kafka plumbing every service shares, written once: the librdkafka client
//! configuration built from `[kafka]` ([`client_config`]) and topic creation
//! ([`create_topics`]). Each service sets its own delivery guarantees (idempotence,
//! acks, isolation) on top of [`client_config`], after the user's properties, so
//! those cannot be overridden.
//!
//! Must never: hold a service's logic (what to produce, when to commit) or depend on
//! anything of Spur's but `spur-schemas`. Standard Kafka only: what works here works
//! against Apache Kafka, Redpanda and tansu alike.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use spur_schemas::kafka::KafkaSettings;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong talking to the broker. Retry when the broker is back; a refused
/// topic needs the operator (permissions, an invalid setting).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client could not be created or the request failed (broker unreachable,
    /// timed out).
    #[error("kafka request failed")]
    Kafka(#[from] KafkaError),
    /// The broker refused to create a topic.
    #[error("could not create topic {topic}: {code}")]
    TopicRefused {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

/// The librdkafka configuration every client starts from: the user's extra and secret
/// properties, then `bootstrap.servers` ([`KafkaSettings::client_properties`]).
pub fn client_config(kafka: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in kafka.client_properties() {
        config.set(key, value);
    }
    config
}

/// A topic to create when missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec<'a> {
    pub name: &'a str,
    pub partitions: i32,
    pub replication: i32,
    /// `retention.ms`: raw records are personal data, so their topics have one.
    pub retention: Option<Duration>,
}

/// Creates the topics that do not exist yet (one that exists is left as it is).
/// Returns the names created; the first topic the broker refuses is an error.
pub async fn create_topics(
    client: &ClientConfig,
    topics: &[TopicSpec<'_>],
    timeout: Duration,
) -> Result<Vec<String>> {
    let admin: AdminClient<DefaultClientContext> = client.create()?;
    let retention: Vec<Option<String>> = topics
        .iter()
        .map(|t| t.retention.map(|r| r.as_millis().to_string()))
        .collect();
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .zip(&retention)
        .map(|(t, retention)| {
            let topic = NewTopic::new(t.name, t.partitions, TopicReplication::Fixed(t.replication));
            match retention {
                Some(ms) => topic.set("retention.ms", ms),
                None => topic,
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(timeout));
    let mut created = Vec::new();
    for result in admin.create_topics(&new, &options).await? {
        match result {
            Ok(topic) => {
                tracing::info!(topic, "created topic");
                created.push(topic);
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(Error::TopicRefused { topic, code }),
        }
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_properties_come_first_and_brokers_last() {
        let mut kafka = KafkaSettings {
            brokers: "b1:9092".into(),
            ..KafkaSettings::default()
        };
        kafka
            .properties
            .insert("bootstrap.servers".into(), "ignored:1".into());
        kafka
            .properties
            .insert("socket.timeout.ms".into(), "1234".into());
        let config = client_config(&kafka);
        assert_eq!(config.get("bootstrap.servers"), Some("b1:9092"));
        assert_eq!(config.get("socket.timeout.ms"), Some("1234"));
    }
}
