//! `[scoring]`: the parameters of interest scoring. Defaults live in the
//! `Default` impl; unknown keys are rejected; [`super::Model::new`] checks the values.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoringConfig {
    /// After this long, a view counts half as much (`"14days"`, `"36h"`).
    #[serde(with = "humantime_serde")]
    pub half_life: Duration,
    /// Dwell time that gives a view weight 1.
    #[serde(with = "humantime_serde")]
    pub reference_dwell: Duration,
    /// Largest weight one view can have, however long it was open (at least 0.25).
    pub max_weight: f64,
    /// Raw score at which the score is 0.5: `score = raw / (raw + saturation)`.
    pub saturation: f64,
    /// Topics for pages by path, added to the topics the page itself declares.
    pub url_rules: Vec<UrlRule>,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        Self {
            half_life: Duration::from_secs(14 * 24 * 3600),
            reference_dwell: Duration::from_secs(30),
            max_weight: 3.0,
            saturation: 5.0,
            url_rules: Vec::new(),
        }
    }
}

/// Every page whose path starts with `path_prefix` is about `topics`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlRule {
    pub path_prefix: String,
    pub topics: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_parses_durations_and_rules_and_refuses_unknown_keys() {
        let config: ScoringConfig = toml::from_str(
            "half_life = \"7days\"\nsaturation = 2.0\n\
             [[url_rules]]\npath_prefix = \"/boots/\"\ntopics = [\"boots\"]\n",
        )
        .expect("parse");
        assert_eq!(config.half_life, Duration::from_secs(7 * 86_400));
        assert_eq!(config.reference_dwell, Duration::from_secs(30));
        assert_eq!(config.saturation, 2.0);
        assert_eq!(config.url_rules[0].topics, ["boots"]);
        assert!(toml::from_str::<ScoringConfig>("half_lfie = \"1d\"").is_err());
        assert!(
            toml::from_str::<ScoringConfig>(
                "[[url_rules]]\npath_prefix = \"/\"\ntopics = []\nx = 1"
            )
            .is_err()
        );
    }
}
