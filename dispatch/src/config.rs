//! `[segments]`: the segment service's configuration — how often it steps and sweeps,
//! the segment definitions it hands to the audience engine, the segment-changes
//! topic, the webhooks and where their delivery state is kept. Defaults live in the
//! `Default` impl; unknown keys are rejected; [`SegmentsConfig::validate`] checks
//! what types cannot.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spur_audience::SegmentDef;
use spur_audience::config::validate_segments;

use crate::error::{Error, Result};
use crate::webhook::WebhookConfig;

/// `[segments]`: the segment service (`spur segments`) — its timing, the segments
/// ([`SegmentDef`], evaluated by the audience engine) and where changes go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SegmentsConfig {
    /// How often the service looks for new events and evaluates their subjects.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How often every subject is evaluated, new events or not (scores decay, and
    /// conditions on time change with the clock).
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// Where delivery cursors and given-up webhook deliveries are kept.
    pub state_dir: PathBuf,
    /// Partitions of the segment-changes topic when the service creates it.
    pub topic_partitions: i32,
    pub topic_replication: i32,
    /// How long a produce may wait for the broker's acknowledgement.
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// `host:port` of the service's `/livez`, `/readyz` and `/metrics`.
    pub listen: std::net::SocketAddr,
    /// The segments.
    pub define: Vec<SegmentDef>,
    /// Webhooks every change is delivered to (signed, Standard Webhooks).
    pub webhooks: Vec<WebhookConfig>,
    /// Whether the changes on the Kafka topic carry `contact.email` (off by default:
    /// a topic is read by more systems than the mailer; webhooks have their own
    /// `include_contact`, on by default).
    pub include_contact: bool,
}

impl Default for SegmentsConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            sweep_interval: Duration::from_secs(600),
            state_dir: PathBuf::from("./state/segments"),
            topic_partitions: 6,
            topic_replication: 1,
            ack_timeout: Duration::from_secs(30),
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9102)),
            define: Vec::new(),
            webhooks: Vec::new(),
            include_contact: false,
        }
    }
}

impl SegmentsConfig {
    pub fn validate(&self) -> Result<()> {
        let names = validate_segments(&self.define)?;
        let mut hooks = HashSet::new();
        for hook in &self.webhooks {
            hook.validate()?;
            if !hooks.insert(hook.name.as_str()) {
                return Err(Error::Config(format!(
                    "segments.webhooks: webhook {:?} is defined twice",
                    hook.name
                )));
            }
            if let Some(unknown) = hook.segments.iter().find(|s| !names.contains(s.as_str())) {
                return Err(Error::Config(format!(
                    "segments.webhooks: webhook {:?} names segment {unknown:?}, which is not defined",
                    hook.name
                )));
            }
        }
        if self.interval.is_zero() || self.sweep_interval < self.interval {
            return Err(Error::Config(
                "segments: interval must be positive and sweep_interval at least interval"
                    .to_owned(),
            ));
        }
        if self.topic_partitions < 1 || self.topic_replication < 1 {
            return Err(Error::Config(
                "segments: topic_partitions and topic_replication must be at least 1".to_owned(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_toml_parses_segments() {
        SegmentsConfig::default().validate().expect("segments");
        let config: SegmentsConfig = toml::from_str(
            "interval = \"1s\"\n[[define]]\nname = \"boot_fans\"\n\
             where = \"interest['boots'] >= 0.5\"\n",
        )
        .expect("parse");
        assert_eq!(config.define[0].condition, "interest['boots'] >= 0.5");
        config.validate().expect("valid");
        assert!(
            toml::from_str::<SegmentsConfig>("[[define]]\nname = \"a\"\nwhen = \"x\"").is_err()
        );
    }

    #[test]
    fn bad_names_duplicates_and_unknown_segments_are_refused() {
        let segment = |name: &str| SegmentDef {
            name: name.to_owned(),
            condition: "true".to_owned(),
        };
        let mut config = SegmentsConfig {
            define: vec![segment("a b")],
            ..SegmentsConfig::default()
        };
        assert!(config.validate().is_err());
        config.define = vec![segment("a"), segment("a")];
        assert!(config.validate().is_err());
        config.define = vec![segment("a")];
        config.sweep_interval = Duration::from_millis(1);
        assert!(config.validate().is_err());
    }
}
