//! `[query.lifecycle]` and `[query.segments]`: lifecycle stage rules, segment
//! definitions, the segment service's timing and its webhooks. Defaults live in the
//! `Default` impls; unknown keys are rejected; [`SegmentsConfig::validate`] checks
//! what types cannot (SQL is checked when the service starts, against the profiles).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::dispatch::webhook::{WebhookConfig, valid_name};
use crate::error::{Error, Result};

/// Lifecycle: which `custom` events are purchases, and the stages after `anonymous`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// Names of `custom` events that count as a purchase.
    pub purchase_events: Vec<String>,
    /// Stages after `anonymous`, in order: a subject is in the last stage whose rule
    /// holds (an SQL condition over the profile columns), else `anonymous`.
    pub stages: Vec<Stage>,
    /// Marketing consent counts only once confirmed (double opt-in: the click in the
    /// confirmation e-mail, sent as evidence with `confirmation: true`). On by
    /// default; turn off only where single opt-in is lawful for you.
    pub double_opt_in: bool,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        let stage = |name: &str, when: &str| Stage {
            name: name.to_owned(),
            when: when.to_owned(),
        };
        Self {
            purchase_events: vec!["purchase".to_owned()],
            stages: vec![
                stage("lead", "identified"),
                stage("customer", "purchases >= 1"),
                stage(
                    "retained",
                    "purchases >= 2 AND last_purchase - first_purchase >= INTERVAL '30 days'",
                ),
            ],
            double_opt_in: true,
        }
    }
}

/// One lifecycle stage and the condition that puts a subject in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub name: String,
    pub when: String,
}

/// The segment service (`spur segments`).
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
    /// The collector's one-click unsubscribe endpoint as mail recipients reach it
    /// (e.g. `https://t.example.com/v1/unsubscribe`): each change then carries
    /// `unsubscribe_url` for the mail's `List-Unsubscribe` header.
    pub unsubscribe_url: Option<String>,
    /// The key of the links; taken from `collector.privacy.unsubscribe_key` when unset.
    pub unsubscribe_key: Option<spur_schemas::Secret>,
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
            unsubscribe_url: None,
            unsubscribe_key: None,
        }
    }
}

/// One segment: the subjects whose profile satisfies `where` (an SQL condition over
/// the profile columns, `docs/segments.md`) and who have marketing consent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentDef {
    pub name: String,
    #[serde(rename = "where")]
    pub condition: String,
}

impl LifecycleConfig {
    pub fn validate(&self) -> Result<()> {
        let mut seen = HashSet::from(["anonymous"]);
        for stage in &self.stages {
            if !valid_name(&stage.name) {
                return Err(Error::Config(format!(
                    "query.lifecycle.stages: {:?} is not a valid name (letters, digits, _ and -, at most 64)",
                    stage.name
                )));
            }
            if !seen.insert(stage.name.as_str()) {
                return Err(Error::Config(format!(
                    "query.lifecycle.stages: stage {:?} appears twice (anonymous is implicit)",
                    stage.name
                )));
            }
            if stage.when.trim().is_empty() {
                return Err(Error::Config(format!(
                    "query.lifecycle.stages: stage {:?} has an empty condition",
                    stage.name
                )));
            }
        }
        Ok(())
    }
}

impl SegmentsConfig {
    pub fn validate(&self) -> Result<()> {
        if self.unsubscribe_url.is_some() && self.unsubscribe_key.is_none() {
            return Err(Error::Config(
                "query.segments.unsubscribe_url needs collector.privacy.unsubscribe_key (the same key the collector verifies with)".into(),
            ));
        }
        let mut names = HashSet::new();
        for segment in &self.define {
            if !valid_name(&segment.name) {
                return Err(Error::Config(format!(
                    "query.segments.define: {:?} is not a valid name (letters, digits, _ and -, at most 64)",
                    segment.name
                )));
            }
            if !names.insert(segment.name.as_str()) {
                return Err(Error::Config(format!(
                    "query.segments.define: segment {:?} is defined twice",
                    segment.name
                )));
            }
            if segment.condition.trim().is_empty() {
                return Err(Error::Config(format!(
                    "query.segments.define: segment {:?} has an empty condition",
                    segment.name
                )));
            }
        }
        let mut hooks = HashSet::new();
        for hook in &self.webhooks {
            hook.validate()?;
            if !hooks.insert(hook.name.as_str()) {
                return Err(Error::Config(format!(
                    "query.segments.webhooks: webhook {:?} is defined twice",
                    hook.name
                )));
            }
            if let Some(unknown) = hook.segments.iter().find(|s| !names.contains(s.as_str())) {
                return Err(Error::Config(format!(
                    "query.segments.webhooks: webhook {:?} names segment {unknown:?}, which is not defined",
                    hook.name
                )));
            }
        }
        if self.interval.is_zero() || self.sweep_interval < self.interval {
            return Err(Error::Config(
                "query.segments: interval must be positive and sweep_interval at least interval"
                    .to_owned(),
            ));
        }
        if self.topic_partitions < 1 || self.topic_replication < 1 {
            return Err(Error::Config(
                "query.segments: topic_partitions and topic_replication must be at least 1"
                    .to_owned(),
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
        LifecycleConfig::default().validate().expect("lifecycle");
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
        let mut lifecycle = LifecycleConfig::default();
        lifecycle.stages[1].name = "lead".to_owned();
        assert!(lifecycle.validate().is_err());
        lifecycle.stages[1].name = "anonymous".to_owned();
        assert!(lifecycle.validate().is_err());
    }
}
