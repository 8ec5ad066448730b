//! Topic names and the broker settings every service shares.
//!
//! Keys of records on [`TOPIC_EVENTS`] are `"{site_id}:{visitor_id}"` (see
//! [`record_key`]), so all events of one visitor land in one partition, in order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Secret;

/// Accepted, enriched events ([`crate::EventRecord`] as JSON).
pub const TOPIC_EVENTS: &str = "spur.events.v1";
/// Refused events ([`crate::DeadLetter`] as JSON): reason codes, never personal data.
pub const TOPIC_DEAD_LETTER: &str = "spur.deadletter.v1";

/// Kafka header carrying [`crate::record::SCHEMA_VERSION`] on every record.
pub const HEADER_SCHEMA: &str = "spur-schema";
/// Kafka header naming the record's content type.
pub const HEADER_CONTENT_TYPE: &str = "content-type";

/// The Kafka record key of an event: site and visitor, so one visitor's events keep
/// their order in one partition.
pub fn record_key(site_id: &str, visitor_id: &str) -> String {
    format!("{site_id}:{visitor_id}")
}

/// Segment changes (`segment.entered` / `segment.exited`, JSON), keyed by subject.
pub const TOPIC_SEGMENT_CHANGES: &str = "spur.segments.v1";

/// Topic names, overridable for multi-tenant clusters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    pub events: String,
    pub dead_letter: String,
    pub segment_changes: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            events: TOPIC_EVENTS.to_owned(),
            dead_letter: TOPIC_DEAD_LETTER.to_owned(),
            segment_changes: TOPIC_SEGMENT_CHANGES.to_owned(),
        }
    }
}

/// Broker settings shared by the collector, processor and query services.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    pub brokers: String,
    pub topics: Topics,
    /// Extra librdkafka properties (`security.protocol`, `sasl.mechanism`, ...). They
    /// cannot override the delivery guarantees a service sets itself.
    pub properties: BTreeMap<String, String>,
    /// Secret librdkafka properties (`sasl.password`, `ssl.key.password`, ...): kept
    /// apart so that they are redacted whenever the configuration is printed.
    pub secret_properties: BTreeMap<String, Secret>,
    /// `retention.ms` the collector gives the events and dead-letter topics it
    /// creates: raw records (identify events carry the e-mail address in clear) are
    /// deleted by the broker after this. An erasure receipt states it as the time by
    /// which the last raw copy is gone. Keep it short; the lake is the archive.
    #[serde(with = "humantime_serde")]
    pub events_retention: std::time::Duration,
}

impl KafkaSettings {
    /// The librdkafka properties every client starts from: the extra and secret
    /// properties, then `bootstrap.servers`. Each service sets its delivery
    /// guarantees on top, after these, so they cannot be overridden.
    pub fn client_properties(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = self
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        out.extend(
            self.secret_properties
                .iter()
                .map(|(k, v)| (k.as_str(), v.expose())),
        );
        out.push(("bootstrap.servers", self.brokers.as_str()));
        out
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".to_owned(),
            topics: Topics::default(),
            properties: BTreeMap::new(),
            secret_properties: BTreeMap::new(),
            events_retention: std::time::Duration::from_secs(7 * 86_400),
        }
    }
}
