//! The console's tests: the receiver's verification against vectors computed
//! elsewhere (the Standard Webhooks specification's example, Python's `hmac`, the
//! `standardwebhooks` crate), deliveries from Spur's own sender over HTTP, restart and
//! deduplication, the one-click unsubscribe as the collector checks it, the access
//! rule, and the dashboard over a small lake.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use spur_audience::change::Contact;
use spur_audience::{Change, ChangeKind};
use spur_dispatch::webhook::{Endpoint, Signer, WebhookConfig};
use spur_lake::TableKind;
use spur_schemas::Secret;
use spur_testkit::history::Writer;
use spur_testkit::rows::pageview;
use tokio::net::TcpListener;

use super::dashboard::{Dashboard, render, samples, size_series};
use super::inbox::{Accepted, Inbox, segment_subject, verify};
use super::*;

/// `whsec_` + base64 of the bytes 0x01..=0x20 (as in the end-to-end suite).
const SECRET: &str = "whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

/// A delivery signed with Python's standard library, not with Spur's code:
/// `base64(hmac.new(key, f"{id}.{ts}.{body}".encode(), sha256).digest())` with the
/// key of [`SECRET`].
const PY_ID: &str = "chg_5d41402abc4b2a76b9719d911017c592";
const PY_TS: i64 = 1_764_417_600;
const PY_BODY: &str = r#"{"type":"segment.entered","timestamp":"2025-11-29T12:00:00.000Z","data":{"id":"chg_5d41402abc4b2a76b9719d911017c592","seq":7,"segment":"boot_fans","subject_id":"9c1e","change":"entered","reason":"matched","contact":{"email":"alice@example.com"}}}"#;
const PY_SIGNATURE: &str = "v1,yx9xJ0c5UX3dxMtzkCJcLKfk2SbfLpEJYU8944PX4JY=";

fn signer(secret: &str) -> Signer {
    Signer::from_secret(secret).expect("valid secret")
}

fn headers(id: &str, ts: &str, signature: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in [
        ("webhook-id", id),
        ("webhook-timestamp", ts),
        ("webhook-signature", signature),
    ] {
        h.insert(name, HeaderValue::from_str(value).expect("header value"));
    }
    h
}

fn py_headers() -> HeaderMap {
    headers(PY_ID, &PY_TS.to_string(), PY_SIGNATURE)
}

#[test]
fn python_signed_delivery_is_accepted_and_every_tampering_refused() {
    let s = signer(SECRET);
    let (id, ts, body) = verify(&s, &py_headers(), PY_BODY.as_bytes(), PY_TS + 10).expect("valid");
    assert_eq!((id.as_str(), ts), (PY_ID, PY_TS));
    assert_eq!(body["data"]["segment"], "boot_fans");
    // Within the tolerance either way, up to 5 minutes.
    assert!(verify(&s, &py_headers(), PY_BODY.as_bytes(), PY_TS - 300).is_ok());
    assert!(verify(&s, &py_headers(), PY_BODY.as_bytes(), PY_TS + 300).is_ok());

    let status = |result: Result<(String, i64, serde_json::Value), inbox::Refusal>| {
        result.map(|_| ()).map_err(|r| (r.status, r.reason))
    };
    let tampered = PY_BODY.replace("boot_fans", "boot_fanz");
    let refused = status(verify(&s, &py_headers(), tampered.as_bytes(), PY_TS));
    assert!(
        matches!(&refused, Err((code, why)) if *code == StatusCode::UNAUTHORIZED && why.contains("no signature matches")),
        "{refused:?}"
    );
    for now in [PY_TS + 301, PY_TS - 301] {
        let refused = status(verify(&s, &py_headers(), PY_BODY.as_bytes(), now));
        assert!(
            matches!(&refused, Err((code, why)) if *code == StatusCode::UNAUTHORIZED && why.contains("too far from now")),
            "{refused:?}"
        );
    }
    // Another secret of the right form.
    let other = signer("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    let refused = status(verify(&other, &py_headers(), PY_BODY.as_bytes(), PY_TS));
    assert_eq!(refused.map_err(|e| e.0), Err(StatusCode::UNAUTHORIZED));
    // The id and the timestamp are signed too.
    let moved = headers("chg_other", &PY_TS.to_string(), PY_SIGNATURE);
    assert_eq!(
        status(verify(&s, &moved, PY_BODY.as_bytes(), PY_TS)).map_err(|e| e.0),
        Err(StatusCode::UNAUTHORIZED)
    );
    // Several signatures (a secret being rotated): one that matches suffices.
    let several = headers(
        PY_ID,
        &PY_TS.to_string(),
        &format!("v1,AAAA v2,whatever {PY_SIGNATURE}"),
    );
    assert!(verify(&s, &several, PY_BODY.as_bytes(), PY_TS).is_ok());
    // Malformed requests are 400.
    let bad_ts = headers(PY_ID, "yesterday", PY_SIGNATURE);
    assert_eq!(
        status(verify(&s, &bad_ts, PY_BODY.as_bytes(), PY_TS)).map_err(|e| e.0),
        Err(StatusCode::BAD_REQUEST)
    );
    let mut missing = py_headers();
    missing.remove("webhook-signature");
    let refused = status(verify(&s, &missing, PY_BODY.as_bytes(), PY_TS));
    assert_eq!(
        refused,
        Err((
            StatusCode::BAD_REQUEST,
            "missing header webhook-signature".into()
        ))
    );
}

/// The specification's own example (standardwebhooks.com, reference libraries): the
/// signature holds — the refusal is about the body, which is not an event — and a
/// changed body is a signature failure.
#[test]
fn the_specification_example_verifies() {
    let s = signer("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    let h = headers(
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "1614265330",
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    );
    let refused = verify(&s, &h, br#"{"test": 2432232314}"#, 1_614_265_330).map(|_| ());
    assert!(
        matches!(&refused, Err(r) if r.status == StatusCode::BAD_REQUEST && r.reason.contains("not a Standard Webhooks event")),
        "{refused:?}"
    );
    let refused = verify(&s, &h, br#"{"test": 2432232315}"#, 1_614_265_330).map(|_| ());
    assert!(matches!(&refused, Err(r) if r.status == StatusCode::UNAUTHORIZED));
}

#[test]
fn a_signature_of_the_standardwebhooks_crate_is_accepted() {
    let reference = standardwebhooks::Webhook::new(SECRET).expect("secret");
    let ts = 1_800_000_000;
    let signature = reference
        .sign("chg_abc", ts, PY_BODY.as_bytes())
        .expect("sign");
    let h = headers("chg_abc", &ts.to_string(), &signature);
    assert!(verify(&signer(SECRET), &h, PY_BODY.as_bytes(), ts).is_ok());
}

#[test]
fn generated_secrets_are_valid_and_fresh() {
    let (a, b) = (generate_webhook_secret(), generate_webhook_secret());
    assert_ne!(a, b);
    assert!(a.starts_with("whsec_"));
    let config = WebhookConfig::new("inbox", "http://127.0.0.1:1/inbox/webhook", Secret::new(a));
    config
        .validate()
        .expect("a secret the segment service accepts");
    // Both ends agree on it.
    let s = signer(config.secret.expose());
    let reference = standardwebhooks::Webhook::new(config.secret.expose()).expect("secret");
    let signature = reference
        .sign("chg_1", PY_TS, PY_BODY.as_bytes())
        .expect("sign");
    assert!(
        verify(
            &s,
            &headers("chg_1", &PY_TS.to_string(), &signature),
            PY_BODY.as_bytes(),
            PY_TS
        )
        .is_ok()
    );
}

#[test]
fn segment_mailings_are_named_after_their_topic() {
    assert_eq!(segment_subject("boot_fans"), "You might like our boots…");
    assert_eq!(
        segment_subject("sandals_lovers"),
        "You might like our sandals…"
    );
    assert_eq!(
        segment_subject("lapsed_customers"),
        "News for you (segment lapsed_customers)"
    );
}

#[test]
fn the_inbox_deduplicates_and_keeps_its_mails_across_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let inbox = Inbox::open(dir.path(), signer(SECRET))?;
    assert_eq!(
        inbox.accept(&py_headers(), PY_BODY.as_bytes(), PY_TS),
        Ok(Accepted::New)
    );
    // A redelivery of the same change, freshly signed at another time.
    let ts = PY_TS + 60;
    let again = headers(
        PY_ID,
        &ts.to_string(),
        &signer(SECRET).sign(PY_ID, ts, PY_BODY.as_bytes()),
    );
    assert_eq!(
        inbox.accept(&again, PY_BODY.as_bytes(), ts),
        Ok(Accepted::Duplicate)
    );
    // A refused one is not kept, and is reported.
    assert!(inbox.accept(&py_headers(), b"{}", PY_TS).is_err());
    let page = inbox.page(PY_TS * 1000);
    assert_eq!(page.matches("You might like our boots…").count(), 1);
    assert!(page.contains("Refused since start: 1"), "{page}");
    drop(inbox);

    let lines = std::fs::read_to_string(dir.path().join("inbox.jsonl"))?;
    assert_eq!(lines.lines().count(), 1, "{lines}");
    let reopened = Inbox::open(dir.path(), signer(SECRET))?;
    let page = reopened.page(PY_TS * 1000);
    assert_eq!(
        page.matches("You might like our boots…").count(),
        1,
        "{page}"
    );
    assert!(page.contains("alice@example.com"));
    assert_eq!(
        reopened.accept(&py_headers(), PY_BODY.as_bytes(), PY_TS),
        Ok(Accepted::Duplicate)
    );
    Ok(())
}

/// A one-route HTTP server on a free port answering every request with `status` and
/// `body`, recording each request's headers and body.
async fn fake_server(
    status: StatusCode,
    body: &'static str,
) -> anyhow::Result<(SocketAddr, Arc<Mutex<Vec<(HeaderMap, Bytes)>>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let record = record.clone();
                    async move {
                        let (parts, incoming) = req.into_parts();
                        let bytes = incoming
                            .collect()
                            .await
                            .map(|c| c.to_bytes())
                            .unwrap_or_default();
                        record
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((parts.headers, bytes));
                        let mut response =
                            Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                        *response.status_mut() = status;
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((addr, seen))
}

/// The console on a free port with its inbox in `dir`, stopped when the returned
/// sender is dropped.
async fn start_console(
    dir: &std::path::Path,
    lake_root: String,
    collector_url: String,
) -> anyhow::Result<(SocketAddr, tokio::sync::oneshot::Sender<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = ConsoleConfig {
        lake_root,
        inbox_dir: dir.to_path_buf(),
        webhook_secret: Secret::new(SECRET),
        admin_token: None,
        processor_metrics_url: None,
        collector_url,
    };
    tokio::spawn(serve(listener, config, async move {
        let _ = stopped.await;
    }));
    Ok((addr, stop))
}

fn change(seq: i64, kind: ChangeKind, segment: &str) -> Change {
    let mut change = Change::new(seq, segment, "9c1e0000aaaa", kind, "matched", PY_TS * 1000);
    change.contact = Some(Contact {
        email: "alice@example.com".into(),
    });
    change
}

#[tokio::test]
async fn deliveries_from_spurs_sender_arrive_and_unsubscribe_works_one_click() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let (collector, posts) = fake_server(StatusCode::OK, r#"{"unsubscribed":true}"#).await?;
    let (addr, _stop) = start_console(
        dir.path(),
        dir.path().join("no-lake").display().to_string(),
        format!("http://{collector}"),
    )
    .await?;
    let url = format!("http://{addr}/inbox/webhook");
    let endpoint = Endpoint::new(WebhookConfig::new(
        "inbox",
        url.clone(),
        Secret::new(SECRET),
    ))?;

    let mut confirm = change(1, ChangeKind::ConfirmationRequested, "");
    confirm.reason = "grant:3".into();
    confirm.confirm_url = Some("http://localhost:8080/v1/confirm?token=abc".into());
    let mut entered = change(2, ChangeKind::Entered, "boot_fans");
    entered.unsubscribe_url = Some(format!("http://{collector}/v1/unsubscribe?token=t0k%2Ben"));
    let mut exited = change(3, ChangeKind::Exited, "boot_fans");
    exited.reason = "unsubscribed".into();
    exited.contact = None;
    for c in [&confirm, &entered, &exited] {
        endpoint
            .attempt(c, &c.body())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    // Sent again (a crash before the cursor write): accepted, kept once.
    endpoint
        .attempt(&entered, &entered.body())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    // The same sender with another secret is refused with the reason.
    let wrong = Endpoint::new(WebhookConfig::new(
        "inbox",
        url,
        Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    ))?;
    let refused = wrong.attempt(&entered, &entered.body()).await;
    let why = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        why.contains("401") && why.contains("no signature matches"),
        "{why}"
    );

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let page = client
        .get(format!("http://{addr}/inbox/"))
        .send()
        .await?
        .text()
        .await?;
    assert_eq!(page.matches("✓ signature verified").count(), 3, "{page}");
    assert!(page.contains("Please confirm your subscription"));
    assert!(page.contains(r#"href="http://localhost:8080/v1/confirm?token=abc""#));
    assert_eq!(page.matches("You might like our boots…").count(), 1);
    assert!(page.contains("Left segment boot_fans"));
    assert!(page.contains("To: alice@example.com"));
    // Newest first.
    let (exit_at, entry_at, confirm_at) = (
        page.find("Left segment").unwrap_or(usize::MAX),
        page.find("You might like").unwrap_or(usize::MAX),
        page.find("Please confirm").unwrap_or(usize::MAX),
    );
    assert!(exit_at < entry_at && entry_at < confirm_at);
    let form = format!(r#"action="/inbox/unsubscribe?mail={}""#, entered.id);
    assert!(page.contains(&form), "{page}");

    // A page of another site cannot make the browser unsubscribe.
    let forged = client
        .post(format!(
            "http://{addr}/inbox/unsubscribe?mail={}",
            entered.id
        ))
        .header("origin", "http://evil.example")
        .send()
        .await?;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(posts.lock().unwrap_or_else(|e| e.into_inner()).is_empty());

    // The button: the console posts the one-click form to the mail's link.
    let clicked = client
        .post(format!(
            "http://{addr}/inbox/unsubscribe?mail={}",
            entered.id
        ))
        .header("origin", format!("http://{addr}"))
        .form(&[("ignored", "")])
        .send()
        .await?;
    assert_eq!(clicked.status(), StatusCode::SEE_OTHER);
    let seen = posts.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(seen.len(), 1);
    let (post_headers, post_body) = &seen[0];
    let content_type = post_headers
        .get("content-type")
        .and_then(|v| v.to_str().ok());
    // What the collector's /v1/unsubscribe checks.
    assert_eq!(
        spur_collector::unsubscribe::check_body(content_type, post_body),
        Ok(())
    );
    let page = client
        .get(format!("http://{addr}/inbox/"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        page.contains("Unsubscribed") && page.contains("the collector answered 200"),
        "{page}"
    );
    // An unknown mail is 404 and posts nothing.
    let unknown = client
        .post(format!("http://{addr}/inbox/unsubscribe?mail=chg_none"))
        .send()
        .await?;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(posts.lock().unwrap_or_else(|e| e.into_inner()).len(), 1);
    Ok(())
}

fn make_console(
    dir: &std::path::Path,
    lake_root: String,
    token: Option<&str>,
) -> anyhow::Result<Console> {
    Console::new(ConsoleConfig {
        lake_root,
        inbox_dir: dir.to_path_buf(),
        webhook_secret: Secret::new(SECRET),
        admin_token: token.map(Secret::new),
        processor_metrics_url: None,
        collector_url: "http://127.0.0.1:1".into(),
    })
}

fn get(path: &str, token: Option<&str>) -> Request<Full<Bytes>> {
    let mut builder = Request::get(path);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    builder.body(Full::new(Bytes::new())).expect("request")
}

#[tokio::test]
async fn pages_need_a_loopback_peer_or_the_admin_token() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let token = "0123456789abcdef0123456789abcdef";
    let root = dir.path().join("lake").display().to_string();
    let console = make_console(dir.path(), root.clone(), Some(token))?;
    let remote: SocketAddr = "192.0.2.7:40000".parse()?;
    let mapped: SocketAddr = "[::ffff:127.0.0.1]:40000".parse()?;
    for path in ["/dashboard/", "/inbox/"] {
        let status = |r: Response<Full<Bytes>>| r.status();
        assert_eq!(
            status(console.handle(get(path, None), remote).await),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(
                console
                    .handle(get(path, Some("0123456789abcdef0123456789abcdeX")), remote)
                    .await
            ),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(console.handle(get(path, Some(token)), remote).await),
            StatusCode::OK
        );
        assert_eq!(
            status(console.handle(get(path, None), mapped).await),
            StatusCode::OK
        );
    }
    let unsubscribe = Request::post("/inbox/unsubscribe?mail=x").body(Full::new(Bytes::new()))?;
    assert_eq!(
        console.handle(unsubscribe, remote).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // The receiver is open to any peer: it trusts signatures (here: none, so 400).
    let webhook = Request::post("/inbox/webhook").body(Full::new(Bytes::from_static(b"{}")))?;
    assert_eq!(
        console.handle(webhook, remote).await.status(),
        StatusCode::BAD_REQUEST
    );

    // Without a token configured, only loopback.
    let open = make_console(dir.path(), root, None)?;
    assert_eq!(
        open.handle(get("/dashboard/", Some(token)), remote)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // Before the lake exists the dashboard says so instead of failing.
    let response = open
        .handle(get("/dashboard/", None), "127.0.0.1:1".parse()?)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = String::from_utf8(response.into_body().collect().await?.to_bytes().to_vec())?;
    assert!(page.contains("No data yet"), "{page}");
    Ok(())
}

#[test]
fn prometheus_samples_are_read_with_their_labels() {
    let text = r#"# HELP spur_processor_lag_records Records in a partition not yet in the lake.
# TYPE spur_processor_lag_records gauge
spur_processor_lag_records{partition="0"} 12
spur_processor_lag_records{partition="1"} 3.5
spur_processor_lag_records_other 99
spur_collector_events_dead_lettered_total{site="demo",reason="quote\"d, odd"} 2 1700000000
spur_collector_events_dead_lettered_total{site="shop",reason="invalid_type"} 4
"#;
    let lag = samples(text, "spur_processor_lag_records");
    assert_eq!(lag.iter().map(|s| s.1).sum::<f64>(), 15.5);
    let dead = samples(text, "spur_collector_events_dead_lettered_total");
    assert_eq!(dead.len(), 2);
    assert_eq!(
        dead[0].0,
        vec![
            ("site".to_owned(), "demo".to_owned()),
            ("reason".to_owned(), "quote\"d, odd".to_owned())
        ]
    );
    assert_eq!(dead[0].1, 2.0);
}

#[test]
fn segment_sizes_are_running_totals_clipped_to_the_last_day() {
    let now = 100 * 86_400;
    let sizes = vec![
        // Before the window: folded into its first point.
        ("a".to_owned(), (now - 2 * 86_400) / 60, 2),
        ("a".to_owned(), (now - 3_600) / 60, 1),
        ("a".to_owned(), (now - 60) / 60, -2),
        ("b".to_owned(), (now - 120) / 60, 1),
    ];
    let (series, x0) = size_series(&sizes, now);
    assert_eq!(x0, (now - 86_400) as f64);
    assert_eq!(series.len(), 2);
    assert_eq!(
        series[0].points,
        vec![
            (x0, 2.0),
            ((now - 3_600) as f64, 3.0),
            ((now - 60) as f64, 1.0)
        ]
    );
    assert_eq!(series[1].points, vec![((now - 120) as f64, 1.0)]);
}

/// The dashboard over a small lake: events in the last hour (two pages, a topic,
/// a bot), segment changes, and counters from fake `/metrics` endpoints.
#[tokio::test]
async fn the_dashboard_draws_the_lake_and_the_counters() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = spur_testkit::history::root(&dir)?;
    // 2026-01-15T10:30:00Z: the page is drawn as of then.
    let now_ms = 1_768_473_000_000;
    let mut writer = Writer::new(&root).await?;
    let mut rows = Vec::new();
    for i in 0..5 {
        // 5 boots views, one per minute, ending 10 minutes ago.
        let t = now_ms - (14 - i) * 60_000;
        rows.push(pageview(
            &format!("b{i}"),
            "v1",
            "s1",
            t,
            "/boots/hiking",
            &["boots"],
        ));
    }
    let mut other = pageview("h0", "v2", "s2", now_ms - 30 * 60_000, "/", &[]);
    other.consent_marketing = false;
    other.consent_analytics = false;
    rows.push(other);
    let mut bot = pageview("bot0", "v3", "s3", now_ms - 60_000, "/robots", &[]);
    bot.is_bot = true;
    rows.push(bot);
    // Two days old: neither in the hour nor in the 24 h lists.
    rows.push(pageview(
        "old",
        "v1",
        "s0",
        now_ms - 2 * 86_400_000,
        "/old",
        &["sale"],
    ));
    writer.append(rows).await?;
    let changes = [
        Change::new(
            1,
            "",
            "subj-a",
            ChangeKind::ConfirmationRequested,
            "grant:1",
            now_ms - 20 * 60_000,
        ),
        Change::new(
            2,
            "boot_fans",
            "subj-a",
            ChangeKind::Entered,
            "matched",
            now_ms - 9 * 60_000,
        ),
        Change::new(
            3,
            "boot_fans",
            "subj-b",
            ChangeKind::Entered,
            "matched",
            now_ms - 8 * 60_000,
        ),
        Change::new(
            4,
            "boot_fans",
            "subj-b",
            ChangeKind::Exited,
            "unsubscribed",
            now_ms - 2 * 60_000,
        ),
    ];
    let rows: Vec<_> = changes.iter().map(Change::to_row).collect();
    writer
        .lake
        .append(
            TableKind::SegmentChanges,
            spur_lake::segment_changes_batch(&rows)?,
            &[],
        )
        .await?;

    let (processor, _) = fake_server(
        StatusCode::OK,
        "spur_processor_lag_records{partition=\"0\"} 7\nspur_processor_lag_records{partition=\"1\"} 5\nspur_processor_dead_lettered_total{reason=\"undecodable\"} 1\n",
    )
    .await?;
    let (collector, _) = fake_server(
        StatusCode::OK,
        "spur_collector_events_dead_lettered_total{site=\"demo\",reason=\"invalid_type\"} 3\nspur_collector_events_dead_lettered_total{site=\"shop\",reason=\"invalid_type\"} 2\n",
    )
    .await?;
    let dashboard = Dashboard::new(
        root.clone(),
        Some(format!("http://{processor}/metrics")),
        format!("http://{collector}"),
    )?;
    let lake = dashboard.lake(now_ms).await;
    let data = lake.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(
        data.consent
            .as_ref()
            .ok()
            .map(|c| (c.pageviews, c.analytics, c.marketing)),
        Some((6, 5, 5))
    );
    let counters = dashboard.counters().await;
    assert_eq!(
        counters.lag.as_ref().and_then(|l| l.as_ref().ok()),
        Some(&12.0)
    );
    assert_eq!(counters.dead_letters.get("invalid_type"), Some(&(5.0, 0.0)));
    assert_eq!(counters.dead_letters.get("undecodable"), Some(&(0.0, 1.0)));

    let page = render(&lake, &counters, &root, "http://shop", now_ms);
    // 7 events in the hour (the bot's included), 1 member now, lag 12, 6 dead letters.
    assert!(page.contains(r#"id="events-hour">7<"#), "{page}");
    assert!(page.contains(r#"id="members">1<"#), "{page}");
    assert!(page.contains(r#"id="lag">12<"#), "{page}");
    assert!(page.contains(r#"id="dead-letters">6<"#), "{page}");
    // The chart: one bar per minute that had events (5 boots minutes, the home
    // page, the bot).
    let chart_start = page.find(r#"aria-label="events per minute""#).unwrap_or(0);
    let chart = &page[chart_start
        ..page[chart_start..]
            .find("</svg>")
            .map_or(page.len(), |e| chart_start + e)];
    assert_eq!(chart.matches(r#"<rect class="col""#).count(), 7, "{chart}");
    assert!(
        chart.contains(">09:31<") && chart.contains(">now<"),
        "{chart}"
    );
    // Top pages and topics, the old event left out.
    assert!(
        page.contains("<td>/boots/hiking</td><td class=\"n\">5</td>"),
        "{page}"
    );
    assert!(
        page.contains("<td>boots</td><td class=\"n\">5</td>"),
        "{page}"
    );
    assert!(!page.contains("/old") && !page.contains("<td>sale</td>") && !page.contains("/robots"));
    // Consent: 5 of 6 human pageviews.
    assert!(page.contains(r#"id="consent-analytics">83 %<"#), "{page}");
    // Segment sizes: boot_fans went 1, 2, 1.
    assert!(page.contains(r#"aria-label="segment sizes""#));
    assert!(page.contains("boot_fans (1)"), "{page}");
    // Latest changes, newest first.
    let (exit_at, entry_at) = (
        page.find("<td>unsubscribed</td>").unwrap_or(usize::MAX),
        page.find("<td>matched</td>").unwrap_or(usize::MAX),
    );
    assert!(exit_at < entry_at, "{page}");
    assert!(
        page.contains("<td>invalid_type</td><td class=\"n\">5</td><td class=\"n\">0</td>"),
        "{page}"
    );
    Ok(())
}
