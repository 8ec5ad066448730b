//! Retention (`[retention]`, `spur lake retention`): rows older than each table's
//! period are removed physically — whole `dt` partitions deleted, then their files
//! vacuumed. The ledger (proof of consent) and `erasures` (proof of erasure) have
//! no period.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use spur_lake::{ExpireSummary, Lake, TableKind};

use crate::error::{Error, Result};

/// `[retention]`: how long each table keeps rows, by partition date; zero keeps them.
/// The ledger (proof of consent) and `erasures` (proof of erasure) have none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    #[serde(with = "humantime_serde")]
    pub events: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub sessions: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub scores: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub segment_changes: Option<Duration>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let days = |d: u64| Some(Duration::from_secs(d * 86_400));
        Self {
            // 13 months of behaviour, the common ceiling for audience measurement.
            events: days(395),
            sessions: days(395),
            scores: days(90),
            // The record of what the mailing system was told.
            segment_changes: days(730),
        }
    }
}

impl RetentionConfig {
    pub fn periods(&self) -> [(TableKind, Option<Duration>); 4] {
        [
            (TableKind::Events, self.events),
            (TableKind::Sessions, self.sessions),
            (TableKind::Scores, self.scores),
            (TableKind::SegmentChanges, self.segment_changes),
        ]
    }
}

/// Removes from every table the partitions dated before `now_ms` minus its period;
/// one summary per table that has a period.
pub async fn apply(
    lake: &mut Lake,
    retention: &RetentionConfig,
    now_ms: i64,
) -> Result<Vec<ExpireSummary>> {
    let mut out = Vec::new();
    for (kind, period) in retention.periods() {
        let Some(period) = period.filter(|p| !p.is_zero()) else {
            continue;
        };
        let period = i64::try_from(period.as_millis())
            .map_err(|_| Error::Config(format!("retention period of {kind:?} is too long")))?;
        let before = spur_schemas::time::date(now_ms.saturating_sub(period));
        out.push(lake.expire(kind, &before).await?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_keep_behaviour_13_months_and_changes_two_years() {
        let periods = RetentionConfig::default().periods();
        let days = |d: Option<Duration>| d.map(|d| d.as_secs() / 86_400);
        assert_eq!(days(periods[0].1), Some(395));
        assert_eq!(days(periods[3].1), Some(730));
        let config: RetentionConfig = toml::from_str("scores = \"7d\"").expect("parse");
        assert_eq!(days(config.scores), Some(7));
        assert!(toml::from_str::<RetentionConfig>("ledger = \"1d\"").is_err());
    }
}
