//! The pure core of interest scoring: views in, scores and contributions out. No I/O
//! and no clock: `as_of` is an argument, so a run is reproducible. The formulas are
//! documented in the parent module.

use std::collections::{BTreeMap, BTreeSet};

use super::config::{ScoringConfig, UrlRule};
use crate::error::{Error, Result};

/// Weight floor: a bounce still says a little about interest.
pub const MIN_WEIGHT: f64 = 0.25;
/// Weight of a view whose dwell time is unknown (`dwell_ms` NULL).
pub const UNKNOWN_DWELL_WEIGHT: f64 = 1.0;

/// One pageview of a subject, as the scoring reads it from `pageviews`.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub subject: String,
    pub event_id: String,
    /// Event time, ms since the epoch.
    pub time_ms: i64,
    /// Dwell time, ms; `None` when the lake does not know it.
    pub dwell_ms: Option<i64>,
    /// The page's own topics (from the tracker's page metadata).
    pub topics: Vec<String>,
    /// The page's path, matched against the URL rules.
    pub path: Option<String>,
}

/// A subject's interest in a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub subject: String,
    pub topic: String,
    /// `raw / (raw + saturation)`, in `[0, 1)`.
    pub score: f64,
    /// Σ weight · decay over the subject's views of the topic.
    pub raw: f64,
    pub views: i64,
    /// Time of the latest view of the topic, ms.
    pub last_view_ms: i64,
}

/// What one view added to one (subject, topic) raw score.
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    pub topic: String,
    pub event_id: String,
    pub time_ms: i64,
    pub dwell_ms: Option<i64>,
    pub weight: f64,
    pub decay: f64,
    /// `weight · decay`.
    pub contribution: f64,
}

/// A checked [`ScoringConfig`] with durations in milliseconds: every view can be
/// scored without a failure.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    half_life_ms: f64,
    reference_dwell_ms: f64,
    max_weight: f64,
    saturation: f64,
    url_rules: Vec<UrlRule>,
}

impl Model {
    /// Refuses settings that would make scores meaningless (zero half-life or
    /// reference dwell, a weight cap below the floor, no saturation).
    pub fn new(config: &ScoringConfig) -> Result<Model> {
        let fail = |message: &str| Err(Error::Config(format!("scoring.{message}")));
        if config.half_life.is_zero() {
            return fail("half_life must be more than 0s");
        }
        if config.reference_dwell.is_zero() {
            return fail("reference_dwell must be more than 0s");
        }
        if !(config.max_weight.is_finite() && config.max_weight >= MIN_WEIGHT) {
            return fail("max_weight must be a number of at least 0.25");
        }
        if !(config.saturation.is_finite() && config.saturation > 0.0) {
            return fail("saturation must be a number more than 0");
        }
        if let Some(rule) = config
            .url_rules
            .iter()
            .find(|r| r.topics.iter().any(|t| t.is_empty()))
        {
            return Err(Error::Config(format!(
                "scoring.url_rules: the rule for {:?} has an empty topic",
                rule.path_prefix
            )));
        }
        Ok(Model {
            half_life_ms: config.half_life.as_secs_f64() * 1_000.0,
            reference_dwell_ms: config.reference_dwell.as_secs_f64() * 1_000.0,
            max_weight: config.max_weight,
            saturation: config.saturation,
            url_rules: config.url_rules.clone(),
        })
    }

    /// `clamp(dwell / reference_dwell, 0.25, max_weight)`; unknown dwell → 1.
    pub fn weight(&self, dwell_ms: Option<i64>) -> f64 {
        match dwell_ms {
            Some(dwell) => {
                (dwell as f64 / self.reference_dwell_ms).clamp(MIN_WEIGHT, self.max_weight)
            }
            None => UNKNOWN_DWELL_WEIGHT,
        }
    }

    /// `2^(−(as_of − time) / half_life)`; a view after `as_of` counts fully (1).
    pub fn decay(&self, time_ms: i64, as_of_ms: i64) -> f64 {
        let age = as_of_ms.saturating_sub(time_ms).max(0) as f64;
        (-age / self.half_life_ms).exp2()
    }

    /// `raw / (raw + saturation)`.
    pub fn normalise(&self, raw: f64) -> f64 {
        raw / (raw + self.saturation)
    }

    /// [`Model::weight`] in SQL, of a dwell column in ms (nullable).
    pub fn weight_sql(&self, dwell_ms: &str) -> String {
        format!(
            "CASE WHEN {dwell_ms} IS NULL THEN {UNKNOWN_DWELL_WEIGHT:?} \
             ELSE LEAST(GREATEST(CAST({dwell_ms} AS DOUBLE) / {:?}, {MIN_WEIGHT:?}), {:?}) END",
            self.reference_dwell_ms, self.max_weight
        )
    }

    /// [`Model::decay`] in SQL, of a time column in ms as of `as_of_ms`.
    pub fn decay_sql(&self, time_ms: &str, as_of_ms: i64) -> String {
        format!(
            "POWER(2.0, -CAST(GREATEST({as_of_ms} - {time_ms}, 0) AS DOUBLE) / {:?})",
            self.half_life_ms
        )
    }

    /// `raw / (raw + saturation)` in SQL.
    pub fn normalise_sql(&self, raw: &str) -> String {
        format!("{raw} / ({raw} + {:?})", self.saturation)
    }

    /// The URL rules (topics by path prefix).
    pub fn url_rules(&self) -> &[UrlRule] {
        &self.url_rules
    }

    /// The view's topics: its own ∪ those of every URL rule whose prefix its path
    /// starts with; sorted, without duplicates or empty names.
    pub fn topics<'a>(&'a self, view: &'a View) -> BTreeSet<&'a str> {
        let path = view.path.as_deref().unwrap_or("");
        let from_rules = self
            .url_rules
            .iter()
            .filter(|rule| path.starts_with(rule.path_prefix.as_str()))
            .flat_map(|rule| rule.topics.iter());
        view.topics
            .iter()
            .chain(from_rules)
            .map(String::as_str)
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// Scores of every (subject, topic) that has at least one view, ordered by
    /// subject, then score (highest first), then topic.
    pub fn score(&self, views: &[View], as_of_ms: i64) -> Vec<Score> {
        let mut sums: BTreeMap<(&str, &str), Score> = BTreeMap::new();
        // Views in a fixed order, so the floating-point sums are the same whatever
        // order the lake returned them in.
        for view in sorted(views.iter()) {
            let contribution = self.weight(view.dwell_ms) * self.decay(view.time_ms, as_of_ms);
            for topic in self.topics(view) {
                let entry = sums
                    .entry((view.subject.as_str(), topic))
                    .or_insert_with(|| Score {
                        subject: view.subject.clone(),
                        topic: topic.to_owned(),
                        score: 0.0,
                        raw: 0.0,
                        views: 0,
                        last_view_ms: view.time_ms,
                    });
                entry.raw += contribution;
                entry.views += 1;
                entry.last_view_ms = entry.last_view_ms.max(view.time_ms);
            }
        }
        let mut scores: Vec<Score> = sums
            .into_values()
            .map(|mut s| {
                s.score = self.normalise(s.raw);
                s
            })
            .collect();
        scores.sort_by(|a, b| {
            a.subject
                .cmp(&b.subject)
                .then(b.score.total_cmp(&a.score))
                .then_with(|| a.topic.cmp(&b.topic))
        });
        scores
    }

    /// Per view, what it added to `subject`'s raw score of each topic (only `topic`
    /// when given), ordered by topic, time and event id. Per topic the contributions
    /// sum to [`Score::raw`] of [`Model::score`] (same order of additions).
    pub fn explain(
        &self,
        views: &[View],
        subject: &str,
        topic: Option<&str>,
        as_of_ms: i64,
    ) -> Vec<Contribution> {
        let mut out = Vec::new();
        for view in sorted(views.iter().filter(|v| v.subject == subject)) {
            let weight = self.weight(view.dwell_ms);
            let decay = self.decay(view.time_ms, as_of_ms);
            for tagged in self.topics(view) {
                if topic.is_some_and(|t| t != tagged) {
                    continue;
                }
                out.push(Contribution {
                    topic: tagged.to_owned(),
                    event_id: view.event_id.clone(),
                    time_ms: view.time_ms,
                    dwell_ms: view.dwell_ms,
                    weight,
                    decay,
                    contribution: weight * decay,
                });
            }
        }
        // Stable: within a topic the views keep the order they were summed in.
        out.sort_by(|a, b| a.topic.cmp(&b.topic));
        out
    }
}

fn sorted<'a>(views: impl Iterator<Item = &'a View>) -> Vec<&'a View> {
    let mut views: Vec<&View> = views.collect();
    views.sort_by(|a, b| {
        (a.subject.as_str(), a.time_ms, a.event_id.as_str()).cmp(&(
            b.subject.as_str(),
            b.time_ms,
            b.event_id.as_str(),
        ))
    });
    views
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const AS_OF: i64 = 1_764_417_600_000;
    const DAY: i64 = 86_400_000;
    const HALF_LIFE: i64 = 14 * DAY;

    fn view(subject: &str, id: &str, time_ms: i64, dwell_ms: Option<i64>, topics: &[&str]) -> View {
        View {
            subject: subject.into(),
            event_id: id.into(),
            time_ms,
            dwell_ms,
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            path: None,
        }
    }

    fn model() -> Model {
        Model::new(&ScoringConfig::default()).expect("default config is valid")
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn two_views_one_half_life_apart_give_the_documented_score() {
        let views = [
            view("s", "e1", AS_OF, Some(60_000), &["boots"]),
            view("s", "e2", AS_OF - HALF_LIFE, None, &["boots"]),
        ];
        let scores = model().score(&views, AS_OF);
        assert_eq!(scores.len(), 1);
        let s = &scores[0];
        assert_eq!((s.subject.as_str(), s.topic.as_str()), ("s", "boots"));
        assert!(close(s.raw, 2.5), "raw {}", s.raw);
        assert!(close(s.score, 2.5 / 7.5), "score {}", s.score);
        assert_eq!(s.views, 2);
        assert_eq!(s.last_view_ms, AS_OF);
    }

    #[test]
    fn weight_is_clamped_and_unknown_dwell_weighs_one() {
        let m = model();
        assert!(close(m.weight(Some(0)), 0.25));
        assert!(close(m.weight(Some(3_000)), 0.25));
        assert!(close(m.weight(Some(15_000)), 0.5));
        assert!(close(m.weight(Some(30_000)), 1.0));
        assert!(close(m.weight(Some(10 * 60_000)), 3.0));
        assert!(close(m.weight(None), 1.0));
        let capped = Model::new(&ScoringConfig {
            max_weight: 1.5,
            ..ScoringConfig::default()
        })
        .expect("valid");
        assert!(close(capped.weight(Some(60_000)), 1.5));
    }

    #[test]
    fn decay_halves_per_half_life_and_future_views_count_fully() {
        let m = model();
        assert!(close(m.decay(AS_OF, AS_OF), 1.0));
        assert!(close(m.decay(AS_OF - HALF_LIFE, AS_OF), 0.5));
        assert!(close(m.decay(AS_OF - 3 * HALF_LIFE, AS_OF), 0.125));
        assert!(close(m.decay(AS_OF + DAY, AS_OF), 1.0));
    }

    #[test]
    fn url_rules_add_topics_without_duplicates() {
        let config = ScoringConfig {
            url_rules: vec![
                UrlRule {
                    path_prefix: "/shop/boots".into(),
                    topics: vec!["boots".into(), "outdoor".into()],
                },
                UrlRule {
                    path_prefix: "/shop/".into(),
                    topics: vec!["shopping".into()],
                },
                UrlRule {
                    path_prefix: "/blog/".into(),
                    topics: vec!["reading".into()],
                },
            ],
            ..ScoringConfig::default()
        };
        let m = Model::new(&config).expect("valid");
        let mut v = view("s", "e1", AS_OF, Some(30_000), &["boots"]);
        v.path = Some("/shop/boots/alpine".into());
        let topics: Vec<&str> = m.topics(&v).into_iter().collect();
        assert_eq!(topics, ["boots", "outdoor", "shopping"]);

        let scores = m.score(&[v], AS_OF);
        let tagged: Vec<(&str, f64)> = scores.iter().map(|s| (s.topic.as_str(), s.raw)).collect();
        // `boots` counted once although both the page and a rule name it.
        assert_eq!(tagged.len(), 3);
        assert!(tagged.iter().all(|(_, raw)| close(*raw, 1.0)), "{tagged:?}");
    }

    #[test]
    fn contributions_sum_to_raw() {
        let views = [
            view("s", "e3", AS_OF - 2 * DAY, Some(12_345), &["boots", "sale"]),
            view("s", "e1", AS_OF - 40 * DAY, None, &["boots"]),
            view("s", "e2", AS_OF - 5 * DAY, Some(200_000), &["boots"]),
            view("t", "e4", AS_OF, Some(60_000), &["boots"]),
        ];
        let m = model();
        let scores = m.score(&views, AS_OF);
        for score in scores.iter().filter(|s| s.subject == "s") {
            let parts = m.explain(&views, "s", Some(&score.topic), AS_OF);
            assert_eq!(parts.len() as i64, score.views);
            let sum: f64 = parts.iter().map(|c| c.contribution).sum();
            assert!(
                close(sum, score.raw),
                "{}: {sum} vs {}",
                score.topic,
                score.raw
            );
            for c in &parts {
                assert!(close(c.contribution, c.weight * c.decay));
            }
        }
        let boots = m.explain(&views, "s", Some("boots"), AS_OF);
        let ids: Vec<&str> = boots.iter().map(|c| c.event_id.as_str()).collect();
        assert_eq!(
            ids,
            ["e1", "e2", "e3"],
            "ordered by time, other subjects left out"
        );
        assert_eq!(m.explain(&views, "s", None, AS_OF).len(), 4);
    }

    #[test]
    fn scores_are_in_zero_one_and_sorted_deterministically() {
        let views = [
            view("b", "e1", AS_OF, Some(90_000), &["x"]),
            view("a", "e2", AS_OF, Some(1_000), &["x"]),
            view("a", "e3", AS_OF, Some(90_000), &["y"]),
            view("a", "e4", AS_OF, Some(90_000), &["z"]),
        ];
        let m = model();
        let forward = m.score(&views, AS_OF);
        let mut reversed = views.to_vec();
        reversed.reverse();
        assert_eq!(forward, m.score(&reversed, AS_OF));
        let order: Vec<(&str, &str)> = forward
            .iter()
            .map(|s| (s.subject.as_str(), s.topic.as_str()))
            .collect();
        assert_eq!(order, [("a", "y"), ("a", "z"), ("a", "x"), ("b", "x")]);
        assert!(forward.iter().all(|s| (0.0..1.0).contains(&s.score)));
    }

    #[test]
    fn invalid_settings_are_refused() {
        let zero = ScoringConfig {
            half_life: Duration::ZERO,
            ..ScoringConfig::default()
        };
        assert!(Model::new(&zero).is_err());
        let low = ScoringConfig {
            max_weight: 0.1,
            ..ScoringConfig::default()
        };
        assert!(Model::new(&low).is_err());
        let flat = ScoringConfig {
            saturation: 0.0,
            ..ScoringConfig::default()
        };
        assert!(Model::new(&flat).is_err());
    }
}
