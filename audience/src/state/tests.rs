//! The incremental state against the closed form of [`crate::score`]: any order of
//! views and dwell settlements gives the scores `Model::score` computes from the
//! final views, and folding visitors equals scoring their union.

use proptest::prelude::*;

use super::*;
use crate::score::{ScoringConfig, View};

const T0: i64 = 1_764_417_600_000;
const HOUR: i64 = 3_600_000;

fn model() -> Model {
    Model::new(&ScoringConfig::default()).expect("default config")
}

fn pageview<'a>(id: &'a str, time_ms: i64, topics: &[&str]) -> Observed<'a> {
    Observed {
        event_id: id,
        time_ms,
        event_type: "pageview",
        session_id: "s",
        identifies: false,
        purchase: false,
        country: None,
        topics: topics.iter().map(|t| (*t).to_owned()).collect(),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn a_settled_view_weighs_its_dwell_and_an_open_one_weighs_one() {
    let m = model();
    let mut state = VisitorState::default();
    state.observe(&pageview("a", T0, &["boots"]), &m);
    state.observe(&pageview("b", T0 + HOUR, &["boots", "sale"]), &m);
    // `a`'s session closed with 60 s on the page (weight 2); `b`'s is still open.
    assert!(state.settle("a", Some(60_000), &m));
    assert!(!state.settle("a", Some(60_000), &m), "settled once");
    let p = fold([&state], T0 + HOUR, &m);
    let boots = &p.interest["boots"];
    assert!(
        close(boots.raw, 2.0 * m.decay(T0, T0 + HOUR) + 1.0),
        "{boots:?}"
    );
    assert_eq!((boots.views, boots.last_view), (2, T0 + HOUR));
    assert!(close(p.interest["sale"].raw, 1.0));
    assert_eq!(state.pending.len(), 1);
}

#[test]
fn counts_sessions_purchases_and_the_latest_country() {
    let m = model();
    let mut state = VisitorState::default();
    let mut ev = pageview("a", T0, &[]);
    ev.country = Some("DE");
    state.observe(&ev, &m);
    let mut ev = pageview("b", T0 - HOUR, &[]);
    ev.country = Some("FR");
    ev.session_id = "s0";
    state.observe(&ev, &m);
    let mut buy = pageview("c", T0 + HOUR, &[]);
    buy.event_type = "custom";
    buy.purchase = true;
    state.observe(&buy, &m);
    assert_eq!((state.events, state.pageviews, state.sessions), (3, 2, 2));
    assert_eq!(
        (state.first_seen, state.last_seen),
        (Some(T0 - HOUR), Some(T0 + HOUR))
    );
    assert_eq!(
        (state.purchases, state.first_purchase),
        (1, Some(T0 + HOUR))
    );
    assert_eq!(
        state.country.as_ref().map(|c| c.2.as_str()),
        Some("DE"),
        "the latest event's country, whatever the arrival order"
    );
}

/// One generated view: visitor 0..3, time, dwell (None: unknown), topics.
fn views() -> impl Strategy<Value = Vec<(usize, i64, Option<i64>, Vec<&'static str>)>> {
    prop::collection::vec(
        (
            0usize..3,
            0i64..(60 * 24 * HOUR),
            prop::option::of(0i64..600_000),
            prop::sample::subsequence(vec!["boots", "sale", "hats"], 0..=3),
        ),
        0..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Views observed in any order, each settled at a random later point (or never:
    /// its session is still open), give per visitor and per subject (the fold of all
    /// three) the raw score, views and latest view of the closed form.
    #[test]
    fn incremental_interest_equals_the_closed_form(
        views in views(),
        settle_order in prop::collection::vec(any::<prop::sample::Index>(), 40),
        as_of_extra in 0i64..(30 * 24 * HOUR),
    ) {
        let m = model();
        let mut states: Vec<VisitorState> = vec![VisitorState::default(); 3];
        let ids: Vec<String> = (0..views.len()).map(|i| format!("e{i}")).collect();
        for (i, (visitor, time, _, topics)) in views.iter().enumerate() {
            states[*visitor].observe(&pageview(&ids[i], T0 + time, topics), &m);
        }
        // Settle the closed sessions' views in a shuffled order: those with a dwell.
        let mut order: Vec<usize> = (0..views.len()).collect();
        for (i, index) in settle_order.iter().enumerate().take(views.len()) {
            let j = index.index(views.len().max(1));
            order.swap(i, j);
        }
        for i in order {
            let (visitor, _, dwell, _) = &views[i];
            if dwell.is_some() {
                states[*visitor].settle(&ids[i], *dwell, &m);
            }
        }
        let as_of = T0 + 60 * 24 * HOUR + as_of_extra;
        let closed: Vec<View> = views
            .iter()
            .enumerate()
            .map(|(i, (visitor, time, dwell, topics))| View {
                subject: format!("v{visitor}"),
                event_id: ids[i].clone(),
                time_ms: T0 + time,
                dwell_ms: *dwell,
                topics: topics.iter().map(|t| (*t).to_owned()).collect(),
                path: None,
            })
            .collect();
        let expected = m.score(&closed, as_of);
        for (v, state) in states.iter().enumerate() {
            let profile = fold([state], as_of, &m);
            let want: Vec<_> = expected.iter().filter(|s| s.subject == format!("v{v}")).collect();
            prop_assert_eq!(profile.interest.len(), want.len());
            for score in want {
                let got = &profile.interest[&score.topic];
                prop_assert!(close(got.raw, score.raw), "{} {}: {} vs {}", v, score.topic, got.raw, score.raw);
                prop_assert_eq!((got.views, got.last_view), (score.views, score.last_view_ms));
            }
        }
        // One subject of all three visitors: the fold equals scoring all views as one.
        let merged: Vec<View> = closed.iter().cloned().map(|mut v| { v.subject = "p".into(); v }).collect();
        let profile = fold(states.iter(), as_of, &m);
        for score in m.score(&merged, as_of) {
            let got = &profile.interest[&score.topic];
            prop_assert!(close(got.raw, score.raw), "{}: {} vs {}", score.topic, got.raw, score.raw);
            prop_assert_eq!(got.views, score.views);
        }
    }
}
