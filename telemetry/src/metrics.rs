//! A Prometheus recorder per service instance (so that several instances in one test
//! process keep their own counters). Install it for the threads that record, with
//! [`Metrics::install_for_thread`], or wrap calls in [`Metrics::with`].

use metrics::LocalRecorderGuard;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Histogram buckets of every `*_seconds` metric: 1 ms to 2 minutes.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::with_seconds_buckets(SECONDS_BUCKETS)
    }
}

impl Metrics {
    /// A recorder whose `*_seconds` histograms use `buckets` (in seconds): the
    /// collector's request latencies want finer ones than the default's 1 ms to 2 min.
    pub fn with_seconds_buckets(buckets: &[f64]) -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                buckets,
            )
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        let handle = recorder.handle();
        Self { recorder, handle }
    }

    /// The recorder itself, for callers that register metrics with explicit keys.
    pub fn recorder(&self) -> &PrometheusRecorder {
        &self.recorder
    }

    /// Makes this recorder the one `metrics::counter!` and friends use on the current
    /// thread while the guard lives.
    pub fn install_for_thread(&self) -> LocalRecorderGuard<'_> {
        metrics::set_default_local_recorder(&self.recorder)
    }

    /// Runs `f` with this recorder as the current one.
    pub fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    /// A cheap handle that renders the exposition text.
    pub fn handle(&self) -> PrometheusHandle {
        self.handle.clone()
    }

    /// The Prometheus text exposition of everything recorded.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_keep_their_own_counters() {
        let (a, b) = (Metrics::default(), Metrics::default());
        a.with(|| metrics::counter!("spur_test_things_total").increment(3));
        {
            let _guard = b.install_for_thread();
            metrics::counter!("spur_test_things_total").increment(1);
            metrics::histogram!("spur_test_wait_seconds").record(0.2);
        }
        assert!(a.render().contains("spur_test_things_total 3"));
        let b = b.render();
        assert!(b.contains("spur_test_things_total 1"), "{b}");
        assert!(
            b.contains("spur_test_wait_seconds_bucket{le=\"0.25\"} 1"),
            "{b}"
        );
    }
}
