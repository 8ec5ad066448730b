//! The demo shop (`collector.demo`) in headless Chromium, driven over the DevTools
//! protocol as a person would use it: real mouse clicks on the banner's buttons and the
//! newsletter form, typed text, screenshots. Reject → the browser stores nothing and
//! the events carry no persistent id; choose analytics → pageviews with the product
//! topics under the stored visitor id; sign up → a marketing grant and an identify;
//! "Privacy settings" → reject → the browser is empty again.
//!
//! The browser is `crate::browser`'s. The screenshots are written to the test's
//! directory (`SPUR_IT_KEEP=1` keeps it) and decoded by the browser itself (an `<img>`
//! drawn on a canvas) to check they are not blank.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spur_schemas::kafka::TOPIC_EVENTS;

use crate::browser::{Browser, assert_not_blank};
use crate::client::read_topic;
use crate::harness::{Broker, Spur};

/// The demo's site, registered as `spur up` registers it.
const DEMO: &str = r#"
[[collector.sites]]
id = "demo"
hosts = ["localhost", "127.0.0.1"]
"#;

fn assert_nothing_stored(stored: &Value, when: &str) {
    assert_eq!(stored["cookies"], json!([]), "{when}: cookies: {stored}");
    assert_eq!(stored["script_cookie"], "", "{when}: {stored}");
    assert_eq!(stored["local"], json!({}), "{when}: localStorage: {stored}");
    assert_eq!(
        stored["session"],
        json!({}),
        "{when}: sessionStorage: {stored}"
    );
}

/// Records of `phase` (the `utm_content` of the page URL) and `type`.
fn of<'a>(records: &'a [Value], phase: &str, kind: &str) -> Vec<&'a Value> {
    let tag = format!("utm_content={phase}");
    records
        .iter()
        .filter(|r| {
            r["type"] == kind && r["page"]["url"].as_str().is_some_and(|u| u.contains(&tag))
        })
        .collect()
}

/// How many records of each phase and type (for failure messages).
fn summary(records: &[Value]) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for r in records {
        let url = r["page"]["url"].as_str().unwrap_or_default();
        let phase = url.split("utm_content=").nth(1).unwrap_or("?");
        let key = format!("{phase} {} {}", r["type"], r["page"]["path"]);
        *counts.entry(key).or_default() += 1;
    }
    counts
}

fn pageview_of<'a>(records: &'a [Value], phase: &str, path: &str) -> &'a Value {
    let views = of(records, phase, "pageview");
    let found: Vec<_> = views.iter().filter(|r| r["page"]["path"] == path).collect();
    assert_eq!(found.len(), 1, "{phase} {path}: {:?}", summary(records));
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_shop_in_chromium_consent_pageviews_and_sign_up() {
    let dir = crate::harness::workdir();
    let (_broker, brokers) = Broker::shared_or_embedded(dir.path());
    let mut spur = Spur::start(dir.path(), &brokers, DEMO).await;
    // The harness writes `[collector]` itself and puts extra text after a sub-table,
    // where no key of `[collector]` can go: the demo is switched on in the written
    // file, and the collector restarted on it. The broker probe gets the default
    // interval (and so a 2 s timeout) instead of the harness's 250 ms: a browser does
    // not retry an event refused with 503 while a probe is late on a loaded machine,
    // and this test counts every event.
    let config = dir.path().join("spur.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    assert!(text.contains("\n[collector]\n") && text.contains("health_interval = \"250ms\""));
    let text = text
        .replacen("\n[collector]\n", "\n[collector]\ndemo = true\n", 1)
        .replacen("health_interval = \"250ms\"", "health_interval = \"2s\"", 1);
    std::fs::write(&config, text).expect("config");
    spur.restart();
    spur.wait_ready(true).await;
    let run = crate::client::eid();
    let base = format!("http://localhost:{}/demo/", spur.addr.port());
    let marker = run.clone();
    let at = move |page: &str, phase: &str| {
        format!("{base}{page}?utm_campaign={marker}&utm_content={phase}")
    };
    let email = format!("walker-{}@example.com", &crate::client::eid()[..8]);
    let work = dir.path().to_owned();
    let signup_email = email.clone();

    let (vid, shots, statuses) = tokio::task::spawn_blocking(move || {
        let email = signup_email;
        let mut b = Browser::launch(&work);
        // First visit: the banner asks, the shop is there behind it.
        b.open(&at("", "reject"));
        assert!(b.visible("#consent"), "the banner asks on the first visit");
        assert!(b.visible(".hero h1"));
        assert_eq!(
            b.eval("[...document.querySelectorAll('.card')].filter(c => c.getBoundingClientRect().width > 0).length"),
            json!(4),
            "four product cards"
        );
        assert_eq!(
            b.eval("[...document.images].every(i => i.complete && i.naturalWidth > 0)"),
            json!(true),
            "every image loads under the page policy"
        );
        let banner_shot = work.join("demo-home-banner.png");
        let banner_stats = b.screenshot(&banner_shot);
        assert_not_blank("home with banner", &banner_stats);
        assert_nothing_stored(&b.stored(), "first visit");

        // Reject all: nothing is stored, so the next page asks again.
        b.click("[data-consent=\"reject\"]");
        b.wait_for("document.getElementById('consent').hidden");
        assert_nothing_stored(&b.stored(), "after reject");
        b.open(&at("boots", "reject"));
        assert!(b.visible("#consent"), "without storage the banner asks again");
        assert_nothing_stored(&b.stored(), "after reject, next page");
        b.open(&at("stored", "reject"));
        assert_eq!(
            b.eval("[...document.querySelectorAll('[data-store]')].map(e => e.dataset.count + ':' + e.textContent.trim())"),
            json!(["0:Nothing stored.", "0:Nothing stored.", "0:Nothing stored."]),
            "the storage page lists nothing"
        );

        // Choose: analytics only.
        b.open(&at("", "accept"));
        assert!(b.visible("#consent"));
        assert!(!b.visible("#consent-choices"), "purposes hidden until asked for");
        b.click("[data-consent=\"choose\"]");
        b.click("#consent-analytics");
        b.click("[data-consent=\"save\"]");
        b.wait_for("document.getElementById('consent').hidden");
        let stored = b.stored();
        assert_eq!(stored["cookies"], json!([]), "never a cookie: {stored}");
        let vid = stored["local"]["spur_vid"]
            .as_str()
            .unwrap_or_else(|| panic!("visitor id stored after analytics consent: {stored}"))
            .to_owned();
        assert_eq!(
            stored["local"]["trailhead_consent"],
            r#"{"analytics":true,"marketing":false}"#
        );
        b.open(&at("boots", "accept"));
        assert!(!b.visible("#consent"), "the choice is remembered");
        b.click("[data-add]");
        b.wait_for("!document.getElementById('toast').hidden");
        let product_shot = work.join("demo-boots.png");
        assert_not_blank("boots", &b.screenshot(&product_shot));
        b.open(&at("tent", "accept"));
        b.open(&at("stored", "accept"));
        let stored_shot = work.join("demo-stored.png");
        assert_not_blank("stored", &b.screenshot(&stored_shot));
        assert_eq!(
            b.eval("document.querySelector('#stored-local').dataset.count"),
            json!("3")
        );
        assert!(
            b.eval("document.querySelector('#stored-local').textContent")
                .as_str()
                .is_some_and(|t| t.contains(&vid)),
            "the storage page shows the visitor id"
        );

        // The newsletter: e-mail, the consent box, sign up.
        b.open(&at("", "signup"));
        let home_shot = work.join("demo-home.png");
        let home_stats = b.screenshot(&home_shot);
        assert_not_blank("home", &home_stats);
        b.click("#newsletter-email");
        b.type_text(&email);
        b.click("button[type=submit]");
        b.wait_for("!document.getElementById('newsletter-error').hidden");
        assert!(
            b.eval("document.getElementById('newsletter-thanks').hidden") == json!(true),
            "no sign-up without the consent box"
        );
        b.click("#newsletter-consent");
        b.click("button[type=submit]");
        b.wait_for("!document.getElementById('newsletter-thanks').hidden");
        assert_eq!(
            b.stored()["local"]["trailhead_consent"],
            r#"{"analytics":true,"marketing":true}"#
        );
        let signed_up_shot = work.join("demo-home-signed-up.png");
        assert_not_blank("signed up", &b.screenshot(&signed_up_shot));

        // Privacy settings, later: the current choice ticked; reject empties the browser.
        b.click("#privacy-settings");
        b.wait_for("!document.getElementById('consent-choices').hidden");
        assert!(b.visible("[data-consent=\"save\"]"), "the settings open at the purposes");
        assert_eq!(
            b.eval("['consent-analytics', 'consent-marketing'].map(id => document.getElementById(id).checked).join()"),
            json!("true,true"),
            "the settings show the current choice"
        );
        b.click("[data-consent=\"reject\"]");
        b.wait_for("document.getElementById('consent').hidden");
        assert_nothing_stored(&b.stored(), "after withdrawing");
        let shots = [banner_shot, product_shot, stored_shot, home_shot, signed_up_shot];
        (vid, shots, b.batch_statuses.clone())
    })
    .await
    .expect("browser steps");
    for shot in &shots {
        println!("screenshot: {}", shot.display());
    }

    // 3 pageviews (reject); pageview, consent, 2 pageviews, basket, pageview (accept);
    // pageview, consent, identify, consent (sign-up and withdrawal); engagement extra.
    let complete = |r: &[Value]| {
        of(r, "reject", "pageview").len() == 3
            && of(r, "accept", "pageview").len() == 4
            && of(r, "accept", "consent").len() == 1
            && of(r, "accept", "custom").len() == 1
            && of(r, "signup", "pageview").len() == 1
            && of(r, "signup", "consent").len() == 2
            && of(r, "signup", "identify").len() == 1
    };
    let records = tokio::task::spawn_blocking({
        let brokers = brokers.clone();
        let run = run.clone();
        move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let records = read_topic(
                    &brokers,
                    TOPIC_EVENTS,
                    &run,
                    usize::MAX,
                    Duration::from_secs(5),
                );
                if complete(&records) || Instant::now() > deadline {
                    return records;
                }
            }
        }
    })
    .await
    .expect("reader");
    assert!(
        complete(&records),
        "events missing: {:?}\nanswers to the browser's posts: {statuses:?}\n{}",
        summary(&records),
        serde_json::to_string_pretty(&records).unwrap_or_default()
    );
    assert!(
        !statuses.is_empty() && statuses.iter().all(|&s| s == 202),
        "the collector accepts the demo's posts: {statuses:?}"
    );
    let persistent = json!({"kind": "persistent", "id": vid});

    // Rejected: no consent event, and nothing with a persistent id.
    for r in records.iter().filter(|r| {
        r["page"]["url"]
            .as_str()
            .is_some_and(|u| u.contains("utm_content=reject"))
    }) {
        assert_eq!(r["visitor"]["kind"], "cookieless", "{r:#}");
        assert_eq!(
            r["consent"],
            json!({"analytics": false, "marketing": false}),
            "{r:#}"
        );
    }
    assert!(of(&records, "reject", "consent").is_empty());
    assert_eq!(
        pageview_of(&records, "reject", "/demo/boots")["page"]["topics"],
        json!(["boots", "winter"])
    );

    // Analytics chosen: the grant with the banner's evidence, then pageviews with
    // their topics under the stored id.
    let grant = of(&records, "accept", "consent")[0];
    assert_eq!(grant["visitor"], persistent);
    assert_eq!(
        grant["data"]["purposes"],
        json!({"analytics": "granted", "marketing": "withdrawn"})
    );
    assert_eq!(grant["data"]["evidence"]["text_id"], "trailhead-banner-v1");
    assert_eq!(grant["data"]["evidence"]["policy_version"], "2026-01");
    assert!(
        grant["data"]["evidence"]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("We would like to measure"))
    );
    for (path, topics) in [
        ("/demo/boots", json!(["boots", "winter"])),
        ("/demo/tent", json!(["tents", "camping"])),
    ] {
        let view = pageview_of(&records, "accept", path);
        assert_eq!(view["visitor"], persistent, "{view:#}");
        assert_eq!(view["page"]["topics"], topics);
        assert_eq!(
            view["consent"],
            json!({"analytics": true, "marketing": false})
        );
    }
    assert_eq!(
        pageview_of(&records, "accept", "/demo/")["visitor"]["kind"],
        "cookieless",
        "the page that asked was viewed before the choice"
    );
    let basket = of(&records, "accept", "custom")[0];
    assert_eq!(basket["data"]["name"], "add_to_basket");
    assert_eq!(
        basket["data"]["props"],
        json!({"product": "Alpine Winter Boots", "price": 149})
    );

    // The sign-up: a marketing grant with the checkbox's text, and the identify.
    let consents = of(&records, "signup", "consent");
    let marketing = consents
        .iter()
        .find(|r| r["data"]["purposes"]["marketing"] == "granted")
        .expect("marketing grant");
    assert_eq!(marketing["visitor"], persistent);
    assert_eq!(
        marketing["data"]["purposes"],
        json!({"analytics": "granted", "marketing": "granted"})
    );
    let identify = of(&records, "signup", "identify")[0];
    assert_eq!(identify["visitor"], persistent);
    assert_eq!(identify["data"]["email"], email);
    assert_eq!(identify["data"]["form"], "newsletter");
    assert_eq!(
        identify["consent"],
        json!({"analytics": true, "marketing": true})
    );
    let evidence = &identify["data"]["evidence"];
    assert_eq!(evidence["purposes"], json!(["marketing"]));
    assert!(
        evidence["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Yes, send me the Trailhead newsletter")
                && t.contains("privacy policy")),
        "{evidence}"
    );
    assert_eq!(evidence["policy_version"], "2026-01");
    assert_eq!(
        evidence["policy_url"],
        format!("http://localhost:{}/demo/privacy", spur.addr.port())
    );
    assert_eq!(marketing["data"]["evidence"], *evidence);
    // Withdrawn again through the privacy settings: it names the visitor it concerns.
    let withdrawal = consents
        .iter()
        .find(|r| r["data"]["purposes"]["marketing"] == "withdrawn")
        .expect("withdrawal");
    assert_eq!(withdrawal["visitor"], persistent);
    assert_eq!(
        withdrawal["data"]["purposes"],
        json!({"analytics": "withdrawn", "marketing": "withdrawn"})
    );
    spur.stop();
}
