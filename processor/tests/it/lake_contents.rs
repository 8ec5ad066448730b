//! Events produced → rows in the Delta tables, fields as documented; duplicates
//! collapse; undecodable records are dead-lettered; no raw e-mail, visitor id or IP
//! anywhere in the lake's files.

use spur_schemas::record::Payload;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_become_pseudonymised_sessionised_rows() {
    let env = Env::new();
    let mut records = history(4, 6);
    let mut identify = record(
        "ev-identify-1",
        "visitor-0000",
        2,
        Payload::Identify {
            email: "alice@example.com".into(),
            form: Some("newsletter".into()),
            evidence: Some(spur_schemas::wire::ConsentEvidence {
                purposes: vec!["marketing".into()],
                text_id: Some("newsletter-v1".into()),
                policy_version: Some("2025-06".into()),
                ..Default::default()
            }),
        },
    );
    records.push(identify.clone());
    // Without consent evidence (and without a page): no link, so no pseudonym.
    identify.event_id = "ev-identify-2".into();
    identify.page = None;
    if let Payload::Identify {
        evidence, email, ..
    } = &mut identify.payload
    {
        *evidence = None;
        *email = "bob@example.com".into();
    }
    records.push(identify);
    let mut bot = record("ev-bot-0001", "visitor-bot", 1, Payload::Pageview);
    bot.agent.bot = Some("crawler:googlebot".into());
    records.push(bot);
    // A client retry: same event id again.
    records.push(records[0].clone());
    env.produce(&records).await;
    env.produce_raw("shop:x", b"{not a record").await;

    let config = env.config("lake", "g1");
    let lake = config.lake.clone();
    let keys_dir = config.keys_dir.clone();
    env.process_until(config, 27).await;

    assert_eq!(
        count(&lake, "SELECT count(*) FROM events").await,
        27,
        "24 pageviews + 2 identifies + bot, retry collapsed"
    );
    assert_eq!(
        count(&lake, "SELECT count(DISTINCT event_id) FROM events").await,
        27
    );
    let pv = rows(
        &lake,
        "SELECT * FROM events WHERE event_id = 'ev-0001-0000'",
    )
    .await;
    let pv = &pv[0];
    assert_eq!(pv["event_type"], "pageview");
    assert_eq!(pv["site_id"], "shop");
    assert_eq!(pv["dt"], "2025-11-29");
    assert_eq!(pv["visitor_kind"], "persistent");
    assert_eq!(pv["visitor_id"].as_str().map(str::len), Some(32));
    assert_ne!(pv["visitor_id"], "visitor-0001", "pseudonymised");
    assert_eq!(pv["country"], "DE");
    assert_eq!(pv["path"], "/p0");
    assert_eq!(pv["topics"], serde_json::json!(["boots"]));
    assert_eq!(pv["is_bot"], false);
    let ident = &rows(
        &lake,
        "SELECT email_hash, form FROM events WHERE event_id = 'ev-identify-1'",
    )
    .await[0];
    assert_eq!(ident["email_hash"].as_str().map(str::len), Some(32));
    assert_eq!(ident["form"], "newsletter");
    let refused = &rows(
        &lake,
        "SELECT email_hash FROM events WHERE event_id = 'ev-identify-2'",
    )
    .await[0];
    assert!(refused["email_hash"].is_null(), "{refused}");

    // The linked address is in the contact vault, sealed under A's data key; the
    // refused one is nowhere.
    assert_eq!(count(&lake, "SELECT count(*) FROM contacts").await, 1);
    let subject = ident["email_hash"].as_str().expect("subject").to_owned();
    let opened = spur_lake::Lake::open(&lake).await.expect("lake");
    let ctx = opened.session_context().await.expect("ctx");
    let sealed = spur_lake::contacts::sealed(&ctx, std::slice::from_ref(&subject), true)
        .await
        .expect("contacts");
    assert_eq!(sealed.len(), 1);
    assert_eq!(sealed[0].event_id, "ev-identify-1");
    assert!(!sealed[0].address.windows(5).any(|w| w == b"alice"));
    let keys = spur_keys::KeyRing::load(&keys_dir).expect("keys");
    let vault = spur_keys::vault::Vault::new(&keys_dir);
    assert_eq!(
        vault
            .open(&keys, &subject, &sealed[0].event_id, &sealed[0].address)
            .expect("opens")
            .as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM events WHERE is_bot AND bot_reason = 'crawler:googlebot'"
        )
        .await,
        1
    );

    // The undecodable record was dead-lettered with a reason, without its content.
    let dead = env.dead_letters();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["reason"], "undecodable");
    assert_eq!(dead[0]["stage"], "processor");
    assert!(!dead[0].to_string().contains("not a record"));

    // Two sessions per visitor (2-hour gap), each visitor's sessions disjoint.
    assert_eq!(
        count(&lake, "SELECT count(DISTINCT session_id) FROM events WHERE visitor_id = (SELECT visitor_id FROM events WHERE event_id = 'ev-0002-0000')").await,
        2
    );
    // Closed sessions are in `sessions` (the first half of each visitor is idle now).
    assert!(count(&lake, "SELECT count(*) FROM sessions").await >= 4);
    let s = &rows(
        &lake,
        "SELECT * FROM sessions ORDER BY start_time, session_id LIMIT 1",
    )
    .await[0];
    assert_eq!(s["closed_by"], "inactivity");
    assert_eq!(s["pageviews"], 3);
    assert_eq!(s["entry_path"], "/p0");
    assert_eq!(s["exit_path"], "/p2");

    // No raw personal data in any file: decoded rows and every non-Parquet file.
    let everything = rows(&lake, "SELECT * FROM events").await;
    let text = serde_json::to_string(&everything).expect("json");
    for canary in ["alice@example.com", "visitor-0000", "visitor-bot"] {
        assert!(!text.contains(canary), "{canary} in the events table");
    }
    for entry in walk(std::path::Path::new(&lake)) {
        if entry.extension().is_some_and(|e| e == "parquet") {
            continue;
        }
        let bytes = std::fs::read(&entry).expect("read");
        let text = String::from_utf8_lossy(&bytes);
        for canary in ["alice@example.com", "visitor-0000"] {
            assert!(!text.contains(canary), "{canary} in {}", entry.display());
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
