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

#[derive(Serialize)]
struct Asn {
    autonomous_system_number: u32,
    autonomous_system_organization: &'static str,
}

/// An ASN database: 203.0.113.0/24 in Amazon's AS16509 (a data centre), 198.51.100.0/24
/// in a consumer ISP's AS3320.
fn write_asn_mmdb(path: &std::path::Path) {
    let mut writer = mmdb_writer::Writer::new("GeoLite2-ASN");
    for (net, number, org) in [
        ("203.0.113.0/24", 16509, "AMAZON-02"),
        ("198.51.100.0/24", 3320, "Deutsche Telekom AG"),
    ] {
        let record = Asn {
            autonomous_system_number: number,
            autonomous_system_organization: org,
        };
        writer
            .insert(net.parse::<ipnet::IpNet>().expect("net"), &record)
            .expect("insert");
    }
    std::fs::write(path, writer.to_bytes().expect("mmdb")).expect("write mmdb");
}

#[test]
fn datacenter_lookup_knows_only_the_listed_networks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("asn.mmdb");
    write_asn_mmdb(&path);
    let dc = spur_collector::geo::DatacenterLookup::open(
        Some(&path),
        spur_collector::config::DATACENTER_ASNS,
    )
    .expect("open");
    assert_eq!(
        dc.datacenter_asn("203.0.113.9".parse().expect("ip")),
        Some(16509)
    );
    assert_eq!(dc.datacenter_asn("198.51.100.9".parse().expect("ip")), None);
    assert_eq!(dc.datacenter_asn("192.0.2.9".parse().expect("ip")), None);
    let none = spur_collector::geo::DatacenterLookup::open(None, &[16509]).expect("open");
    assert_eq!(
        none.datacenter_asn("203.0.113.9".parse().expect("ip")),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn human_agents_from_data_centres_are_labelled_bots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("asn.mmdb");
    write_asn_mmdb(&path);
    let mut cfg = config();
    cfg.asn_database = Some(path);
    let h = Harness::start(cfg).await;
    let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
    let mut ids = Vec::new();
    for ip in ["203.0.113.7", "198.51.100.7"] {
        let id = eid();
        let body = json!({"site": "shop", "events": [{"type": "pageview", "id": id, "url": "https://shop.example/"}]});
        let req = Req::batch(body)
            .header("x-forwarded-for", ip)
            .header("user-agent", firefox);
        assert_eq!(h.send(req).await.status, 202);
        ids.push(id);
    }
    let brokers = h.kafka.brokers.clone();
    let records: Vec<_> = tokio::task::spawn_blocking(move || {
        ids.iter()
            .map(|id| {
                read_topic(
                    &brokers,
                    spur_schemas::kafka::TOPIC_EVENTS,
                    id,
                    1,
                    Duration::from_secs(20),
                )
                .remove(0)
            })
            .collect()
    })
    .await
    .expect("reader");
    assert_eq!(records[0]["agent"]["bot"], json!("datacenter:AS16509"));
    assert_eq!(records[0]["agent"]["browser"], json!("Firefox"));
    assert_eq!(records[1]["agent"]["bot"], json!(null), "{}", records[1]);
    h.stop().await;
}
