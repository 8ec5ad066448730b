//! Property tests for the decoder and validator: arbitrary bytes and arbitrary JSON
//! never panic; every batch is either refused as a whole (400) or yields exactly one
//! outcome per event.

use std::time::Duration;

use proptest::prelude::*;
use serde_json::Value;
use serde_json::value::RawValue;
use spur_collector::api::decode_envelope;
use spur_collector::clock::ClockRules;
use spur_collector::config::SiteConfig;
use spur_collector::ingest::{self, Context};
use spur_collector::reply::Rejection;
use spur_collector::sites::Sites;
use spur_collector::validate::Rules;
use spur_schemas::record::{Agent, Geo, PrivacySignals};
use spur_schemas::wire::ConsentFlags;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just("pageview".to_owned()),
            Just("engagement".to_owned()),
            Just("identify".to_owned()),
            Just("consent".to_owned()),
            Just("custom".to_owned()),
            Just("https://shop.example/a?b=c".to_owned()),
            Just("granted".to_owned()),
            any::<String>(),
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("type".to_owned()),
                    Just("id".to_owned()),
                    Just("ts".to_owned()),
                    Just("url".to_owned()),
                    Just("engaged_ms".to_owned()),
                    Just("scroll_pct".to_owned()),
                    Just("email".to_owned()),
                    Just("purposes".to_owned()),
                    Just("props".to_owned()),
                    Just("name".to_owned()),
                    Just("topics".to_owned()),
                    any::<String>(),
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn check_batch(body: &[u8]) {
    let sites = Sites::new(&[SiteConfig {
        id: "shop".into(),
        hosts: vec!["shop.example".into()],
    }])
    .expect("sites");
    match decode_envelope(body) {
        Err(Rejection::Malformed(msg)) => assert!(!msg.is_empty()),
        Err(other) => panic!("unexpected rejection {other:?}"),
        Ok(batch) => {
            let ctx = Context {
                site: sites.get("shop").expect("site"),
                received_at: 1_764_426_000_000,
                sent_at: batch.sent_at.clone(),
                consent: batch.consent.unwrap_or(ConsentFlags::default()),
                signals: PrivacySignals::default(),
                visitor_id: batch.visitor_id.clone(),
                cookieless_id: "c".repeat(32),
                geo: Geo::default(),
                agent: Agent::default(),
            };
            let rules = Rules {
                max_event_bytes: 2048,
                allowed_query_params: vec!["utm_*".into()],
                scrub: Default::default(),
            };
            let clock = ClockRules {
                skew_tolerance: Duration::from_secs(120),
                max_age: Duration::from_secs(86_400),
            };
            let items = ingest::build(&ctx, &batch.events, &rules, clock);
            assert_eq!(items.len(), batch.events.len(), "one outcome per event");
            for item in &items {
                let out = item.to_outgoing();
                assert!(serde_json::from_slice::<Value>(&out.payload).is_ok());
                if let ingest::Item::Event(record, _) = item {
                    assert!(record.event_time <= ctx.received_at);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        check_batch(&body);
    }

    #[test]
    fn arbitrary_events_never_panic(events in prop::collection::vec(json_value(), 0..8), sent_at in json_value()) {
        let body = serde_json::json!({"site": "shop", "sent_at": sent_at, "events": events});
        check_batch(body.to_string().as_bytes());
    }
}

#[test]
fn hostile_shapes_are_handled() {
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let huge_number = format!("1{}", "0".repeat(5000));
    let bodies = [
        format!(r#"{{"site":"shop","events":[{deep}]}}"#),
        format!(r#"{{"site":"shop","events":[{{"type":"pageview","url":"https://shop.example/","ts":{huge_number}}}]}}"#),
        r#"{"site":"shop","site":"evil","events":[]}"#.to_owned(),
        r#"{"site":"shop","events":[{"type":"pageview","type":"identify","url":"https://shop.example/"}]}"#.to_owned(),
        "{\"site\":\"shop\",\"events\":[{\"type\":\"pageview\",\"url\":\"https://shop.example/\u{0}\"}]}".to_owned(),
        r#"{"site":"shop","events":[{"type":"custom","name":"=HYPERLINK(\"x\")","props":{"a":"<script>alert(1)</script>"}}]}"#.to_owned(),
    ];
    for body in bodies {
        check_batch(body.as_bytes());
    }
    let raw = RawValue::from_string("{}".into()).expect("raw");
    assert_eq!(raw.get(), "{}");
}
