//! `[lifecycle]` (stage rules, purchases, double opt-in) and the segment definitions
//! of `[segments]` (`define`). Defaults live in the `Default` impls; unknown keys are
//! rejected; the `validate` functions check what types cannot (SQL is checked when
//! the engine loads, against the profile columns).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

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
    /// Marketing consent counts only once confirmed (double opt-in: the POST behind
    /// the signed link of a `consent.confirmation_requested`, `[confirm]`). On by
    /// default; turn off only where single opt-in is lawful for you.
    pub double_opt_in: bool,
    /// While a subject's marketing consent waits for confirmation, at most one
    /// `consent.confirmation_requested` per this interval, however often the
    /// consent is granted again (banners resend it).
    #[serde(with = "humantime_serde")]
    pub confirmation_interval: std::time::Duration,
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
            confirmation_interval: std::time::Duration::from_secs(86_400),
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
                    "lifecycle.stages: {:?} is not a valid name (letters, digits, _ and -, at most 64)",
                    stage.name
                )));
            }
            if !seen.insert(stage.name.as_str()) {
                return Err(Error::Config(format!(
                    "lifecycle.stages: stage {:?} appears twice (anonymous is implicit)",
                    stage.name
                )));
            }
            if stage.when.trim().is_empty() {
                return Err(Error::Config(format!(
                    "lifecycle.stages: stage {:?} has an empty condition",
                    stage.name
                )));
            }
        }
        Ok(())
    }
}

/// Checks segment definitions: valid, distinct names and non-empty conditions.
/// Returns the names.
pub fn validate_segments(define: &[SegmentDef]) -> Result<HashSet<&str>> {
    let mut names = HashSet::new();
    for segment in define {
        if !valid_name(&segment.name) {
            return Err(Error::Config(format!(
                "segments.define: {:?} is not a valid name (letters, digits, _ and -, at most 64)",
                segment.name
            )));
        }
        if !names.insert(segment.name.as_str()) {
            return Err(Error::Config(format!(
                "segments.define: segment {:?} is defined twice",
                segment.name
            )));
        }
        if segment.condition.trim().is_empty() {
            return Err(Error::Config(format!(
                "segments.define: segment {:?} has an empty condition",
                segment.name
            )));
        }
    }
    Ok(names)
}

/// `[A-Za-z0-9_-]{1,64}`: safe in a file name and a log field (stage, segment and
/// webhook names).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_duplicates_and_empty_conditions_are_refused() {
        LifecycleConfig::default().validate().expect("lifecycle");
        let segment = |name: &str| SegmentDef {
            name: name.to_owned(),
            condition: "true".to_owned(),
        };
        assert!(validate_segments(&[segment("a b")]).is_err());
        assert!(validate_segments(&[segment("a"), segment("a")]).is_err());
        assert!(validate_segments(&[segment("a"), segment("b")]).is_ok());
        let mut lifecycle = LifecycleConfig::default();
        lifecycle.stages[1].name = "lead".to_owned();
        assert!(lifecycle.validate().is_err());
        lifecycle.stages[1].name = "anonymous".to_owned();
        assert!(lifecycle.validate().is_err());
        assert!(valid_name("boot_fans-2"));
        assert!(!valid_name("../x"));
        assert!(!valid_name(&"a".repeat(65)));
    }
}
