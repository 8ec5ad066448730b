//! GeoIP from a small `.mmdb` the test writes: a known address resolves to its
//! country and region, and the address itself is not in the record.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::common::*;

#[derive(Serialize)]
struct Country {
    iso_code: &'static str,
    names: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Subdivision {
    iso_code: &'static str,
}

#[derive(Serialize)]
struct City {
    country: Country,
    subdivisions: Vec<Subdivision>,
}

/// A City database: 192.0.2.0/24 in Bavaria, 198.51.100.0/24 in France.
pub fn write_mmdb(path: &std::path::Path) {
    let mut writer = mmdb_writer::Writer::new("GeoIP2-City");
    for (net, country, region) in [
        ("192.0.2.0/24", "DE", "BY"),
        ("198.51.100.0/24", "FR", "IDF"),
    ] {
        let record = City {
            country: Country {
                iso_code: country,
                names: [("en".to_owned(), country.to_owned())].into(),
            },
            subdivisions: vec![Subdivision { iso_code: region }],
        };
        writer
            .insert(net.parse::<ipnet::IpNet>().expect("net"), &record)
            .expect("insert");
    }
    std::fs::write(path, writer.to_bytes().expect("mmdb")).expect("write mmdb");
}

#[test]
fn lookup_resolves_country_and_region() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("city.mmdb");
    write_mmdb(&path);
    let geo = spur_collector::geo::GeoLookup::open(Some(&path)).expect("open");
    let de = geo.lookup("192.0.2.77".parse().expect("ip"));
    assert_eq!(de.country.as_deref(), Some("DE"));
    assert_eq!(de.region.as_deref(), Some("BY"));
    let none = geo.lookup("203.0.113.1".parse().expect("ip"));
    assert_eq!(none.country, None);
    assert!(spur_collector::geo::GeoLookup::open(Some(&dir.path().join("missing.mmdb"))).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_carry_geo_but_not_the_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("city.mmdb");
    write_mmdb(&path);
    let mut cfg = config();
    cfg.geoip = Some(path);
    let h = Harness::start(cfg).await;
    let id = eid();
    let body = json!({"site": "shop", "events": [{"type": "pageview", "id": id, "url": "https://shop.example/"}]});
    assert_eq!(
        h.send(Req::batch(body).header("x-forwarded-for", "198.51.100.42"))
            .await
            .status,
        202
    );
    let brokers = h.kafka.brokers.clone();
    let r = tokio::task::spawn_blocking(move || {
        read_topic(
            &brokers,
            spur_schemas::kafka::TOPIC_EVENTS,
            &id,
            1,
            Duration::from_secs(20),
        )
    })
    .await
    .expect("reader");
    assert_eq!(r[0]["geo"], json!({"country": "FR", "region": "IDF"}));
    assert!(!r[0].to_string().contains("198.51.100"));
    h.stop().await;
}
