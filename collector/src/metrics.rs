//! The collector's metrics, through the `metrics` facade into a Prometheus recorder
//! owned by this collector instance (so several collectors in one test process do not
//! share counters). Names follow `spur_<noun>_<unit>_total`; labels are low
//! cardinality: endpoint, status, reason and the *registered* site id (`unknown` for
//! anything else, so a client cannot create label values).
//!
//! Accounting: `received = accepted + dead_lettered + dropped` per site, exactly.

use std::time::Duration;

use metrics::{Label, Recorder};
use spur_schemas::{DropReason, ReasonCode};

pub const EVENTS_RECEIVED: &str = "spur_collector_events_received_total";
pub const EVENTS_ACCEPTED: &str = "spur_collector_events_accepted_total";
pub const EVENTS_DEAD_LETTERED: &str = "spur_collector_events_dead_lettered_total";
pub const EVENTS_DROPPED: &str = "spur_collector_events_dropped_total";
pub const REQUESTS: &str = "spur_collector_requests_total";
pub const REQUEST_DURATION: &str = "spur_collector_request_duration_seconds";
pub const BROKER_UP: &str = "spur_collector_broker_up";
pub const OPEN_CONNECTIONS: &str = "spur_collector_open_connections";
pub const REDACTIONS: &str = "spur_collector_redactions_total";

/// The label value used for site ids that are not registered.
pub const UNKNOWN_SITE: &str = "unknown";

/// Buckets of [`REQUEST_DURATION`]: from 0.5 ms, since most requests take a few ms.
const REQUEST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub struct Metrics {
    inner: spur_telemetry::Metrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Self {
            inner: spur_telemetry::Metrics::with_seconds_buckets(REQUEST_BUCKETS),
        };
        metrics.describe();
        metrics
    }
}

impl Metrics {
    fn describe(&self) {
        self.inner.with(|| {
            metrics::describe_counter!(EVENTS_RECEIVED, "Events in decoded request envelopes.");
            metrics::describe_counter!(
                EVENTS_ACCEPTED,
                "Events acknowledged by the broker on the events topic."
            );
            metrics::describe_counter!(
                EVENTS_DEAD_LETTERED,
                "Events acknowledged on the dead-letter topic, by reason."
            );
            metrics::describe_counter!(
                EVENTS_DROPPED,
                "Received events neither accepted nor dead-lettered, by reason."
            );
            metrics::describe_counter!(REQUESTS, "HTTP requests by endpoint and status.");
            metrics::describe_histogram!(
                REQUEST_DURATION,
                metrics::Unit::Seconds,
                "HTTP request latency."
            );
            metrics::describe_gauge!(BROKER_UP, "1 when the broker answered the last probe.");
            metrics::describe_gauge!(OPEN_CONNECTIONS, "Open client connections.");
            metrics::describe_counter!(
                REDACTIONS,
                "Personal data replaced in accepted events' free text, by field and kind."
            );
        });
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>, n: u64) {
        if n == 0 {
            return;
        }
        let key = metrics::Key::from_parts(name, labels);
        let meta = metrics::Metadata::new(module_path!(), metrics::Level::INFO, None);
        self.inner
            .recorder()
            .register_counter(&key, &meta)
            .increment(n);
    }

    pub fn received(&self, site: &str, n: u64) {
        self.counter(
            EVENTS_RECEIVED,
            vec![Label::new("site", site.to_owned())],
            n,
        );
    }

    pub fn accepted(&self, site: &str, n: u64) {
        self.counter(
            EVENTS_ACCEPTED,
            vec![Label::new("site", site.to_owned())],
            n,
        );
    }

    /// What was scrubbed from one accepted event.
    pub fn redactions(&self, redactions: &crate::scrub::Redactions) {
        for (field, kind, n) in redactions.iter() {
            let labels = vec![
                Label::new("field", field.as_str()),
                Label::new("kind", kind.as_str()),
            ];
            self.counter(REDACTIONS, labels, n);
        }
    }

    pub fn dead_lettered(&self, site: &str, reason: ReasonCode, n: u64) {
        let labels = vec![
            Label::new("site", site.to_owned()),
            Label::new("reason", reason.as_str()),
        ];
        self.counter(EVENTS_DEAD_LETTERED, labels, n);
    }

    pub fn dropped(&self, site: &str, reason: DropReason, n: u64) {
        let labels = vec![
            Label::new("site", site.to_owned()),
            Label::new("reason", reason.as_str()),
        ];
        self.counter(EVENTS_DROPPED, labels, n);
    }

    pub fn request(&self, endpoint: &'static str, status: u16, elapsed: Duration) {
        let labels = vec![
            Label::new("endpoint", endpoint),
            Label::new("status", status.to_string()),
        ];
        self.counter(REQUESTS, labels, 1);
        let key =
            metrics::Key::from_parts(REQUEST_DURATION, vec![Label::new("endpoint", endpoint)]);
        let meta = metrics::Metadata::new(module_path!(), metrics::Level::INFO, None);
        self.inner
            .recorder()
            .register_histogram(&key, &meta)
            .record(elapsed.as_secs_f64());
    }

    pub fn broker_up(&self, up: bool) {
        let key = metrics::Key::from_name(BROKER_UP);
        let meta = metrics::Metadata::new(module_path!(), metrics::Level::INFO, None);
        self.inner
            .recorder()
            .register_gauge(&key, &meta)
            .set(if up { 1.0 } else { 0.0 });
    }

    pub fn connections(&self, delta: f64) {
        let key = metrics::Key::from_name(OPEN_CONNECTIONS);
        let meta = metrics::Metadata::new(module_path!(), metrics::Level::INFO, None);
        self.inner
            .recorder()
            .register_gauge(&key, &meta)
            .increment(delta);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.inner.render()
    }
}
