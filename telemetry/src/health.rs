//! The health registry: named components, each with a deadline, reporting from the
//! loop they watch.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Shared by the service's loops (through [`Component`]s) and the `/readyz` handler.
#[derive(Clone, Debug, Default)]
pub struct Health {
    inner: Arc<Mutex<BTreeMap<&'static str, State>>>,
}

#[derive(Debug)]
struct State {
    deadline: Duration,
    last: Option<Instant>,
    problem: Option<String>,
    /// Shown by `/readyz` without making the service unready (work waiting for an
    /// operator, e.g. parked webhook deliveries).
    note: Option<String>,
}

/// One loop's handle on the registry.
#[derive(Clone, Debug)]
pub struct Component {
    name: &'static str,
    health: Health,
}

/// What `/readyz` shows: ready when every component is.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthReport {
    pub ready: bool,
    /// Per component: `None` when healthy, or why not.
    pub components: Vec<(&'static str, Option<String>)>,
    /// Healthy components' notes for the operator ([`Component::healthy_noting`]).
    pub notes: Vec<(&'static str, String)>,
}

impl Health {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<&'static str, State>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a component that counts as unhealthy until its first report and
    /// whenever `deadline` passes without one.
    pub fn register(&self, name: &'static str, deadline: Duration) -> Component {
        self.lock().insert(
            name,
            State {
                deadline,
                last: None,
                problem: None,
                note: None,
            },
        );
        Component {
            name,
            health: self.clone(),
        }
    }

    pub fn report(&self) -> HealthReport {
        let now = Instant::now();
        let states = self.lock();
        let components: Vec<_> = states
            .iter()
            .map(|(name, s)| {
                let why = match (&s.problem, s.last) {
                    (Some(problem), _) => Some(problem.clone()),
                    (None, None) => Some("starting".to_owned()),
                    (None, Some(last)) if now.duration_since(last) > s.deadline => Some(format!(
                        "no progress report for {} s",
                        now.duration_since(last).as_secs()
                    )),
                    (None, Some(_)) => None,
                };
                (*name, why)
            })
            .collect();
        let notes = states
            .iter()
            .filter_map(|(name, s)| s.note.clone().map(|note| (*name, note)))
            .collect();
        HealthReport {
            ready: components.iter().all(|(_, why)| why.is_none()),
            components,
            notes,
        }
    }
}

impl Component {
    /// The loop made progress and is fine.
    pub fn healthy(&self) {
        if let Some(s) = self.health.lock().get_mut(self.name) {
            s.last = Some(Instant::now());
            s.problem = None;
            s.note = None;
        }
    }

    /// The loop is fine, but has something an operator should see in `/readyz`
    /// (`notes`); readiness is unaffected.
    pub fn healthy_noting(&self, note: impl Into<String>) {
        if let Some(s) = self.health.lock().get_mut(self.name) {
            s.last = Some(Instant::now());
            s.problem = None;
            s.note = Some(note.into());
        }
    }

    /// The loop runs but cannot do its job (e.g. its writes fail); `/readyz` shows
    /// `why` until the next [`Component::healthy`].
    pub fn unhealthy(&self, why: impl Into<String>) {
        if let Some(s) = self.health.lock().get_mut(self.name) {
            s.last = Some(Instant::now());
            s.problem = Some(why.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_component_reported_in_time_without_a_problem() {
        let health = Health::default();
        let consumer = health.register("consumer", Duration::from_secs(3600));
        let lake = health.register("lake", Duration::from_secs(3600));
        assert!(!health.report().ready, "nothing reported yet");
        consumer.healthy();
        assert_eq!(
            health.report().components,
            vec![("consumer", None), ("lake", Some("starting".into()))]
        );
        lake.healthy();
        assert!(health.report().ready);
        lake.unhealthy("commits failing");
        let report = health.report();
        assert!(!report.ready);
        assert_eq!(
            report.components[1],
            ("lake", Some("commits failing".into()))
        );
        lake.healthy();
        assert!(health.report().ready);
    }

    #[test]
    fn a_component_silent_past_its_deadline_is_not_ready() {
        let health = Health::default();
        let c = health.register("loop", Duration::ZERO);
        c.healthy();
        std::thread::sleep(Duration::from_millis(5));
        let report = health.report();
        assert!(!report.ready);
        assert!(
            report.components[0]
                .1
                .as_deref()
                .is_some_and(|w| w.starts_with("no progress"))
        );
    }

    #[test]
    fn a_note_is_shown_without_making_the_service_unready() {
        let health = Health::default();
        let webhook = health.register("webhook:crm", Duration::from_secs(3600));
        webhook.healthy_noting("2 changes parked");
        let report = health.report();
        assert!(report.ready, "{report:?}");
        assert_eq!(
            report.notes,
            [("webhook:crm", "2 changes parked".to_owned())]
        );
        webhook.healthy();
        assert!(health.report().notes.is_empty());
        webhook.unhealthy("down");
        assert!(!health.report().ready);
    }
}
