//! The other endpoints: pixel, Plausible compatibility, tracker script, CORS, health
//! and metrics, unknown paths and methods.

use std::time::Duration;

use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pixel_and_plausible_events_arrive() {
    let h = Harness::start(config()).await;
    let id = eid();
    let mut pixel = Req::get(&format!(
        "/p.gif?s=shop&t=custom&n=email_open&id={id}&p.campaign=nov"
    ));
    pixel
        .headers
        .push(("referer".into(), "https://shop.example/mail".into()));
    let r = h.send(pixel).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "image/gif");
    assert_eq!(&r.body[..6], b"GIF89a");
    assert!(!r.headers.contains_key("set-cookie"));

    let plausible = Req {
        method: "POST",
        path: "/api/event".into(),
        headers: vec![("content-type".into(), "text/plain".into()), ("user-agent".into(), UA_CHROME.into())],
        body: json!({"name": "pageview", "url": "https://shop.example/plausible-page", "domain": "shop.example"})
            .to_string()
            .into_bytes(),
    };
    assert_eq!(h.send(plausible).await.status, 202);

    let brokers = h.kafka.brokers.clone();
    let pixel_id = id.clone();
    let (px, pl) = tokio::task::spawn_blocking(move || {
        let topic = spur_schemas::kafka::TOPIC_EVENTS;
        (
            read_topic(&brokers, topic, &pixel_id, 1, Duration::from_secs(20)),
            read_topic(
                &brokers,
                topic,
                "plausible-page",
                1,
                Duration::from_secs(20),
            ),
        )
    })
    .await
    .expect("reader");
    assert_eq!(px[0]["type"], "custom");
    assert_eq!(
        px[0]["data"],
        json!({"name": "email_open", "props": {"campaign": "nov"}})
    );
    assert_eq!(px[0]["visitor"]["kind"], "cookieless");
    assert_eq!(pl[0]["type"], "pageview");
    assert_eq!(pl[0]["page"]["path"], "/plausible-page");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracker_cors_health_and_errors() {
    let h = Harness::start(config()).await;
    let js = h.send(Req::get("/spur.js")).await;
    assert_eq!(js.status, 200);
    assert!(js.headers["content-type"].starts_with("application/javascript"));
    assert!(js.body.len() < 2400, "tracker is {} bytes", js.body.len());
    let etag = js.headers["etag"].clone();
    assert_eq!(
        h.send(Req::get("/spur.js").header("if-none-match", &etag))
            .await
            .status,
        304
    );

    let preflight = |origin: &str| Req {
        method: "OPTIONS",
        path: "/v1/batch".into(),
        headers: vec![
            ("origin".into(), origin.into()),
            ("access-control-request-method".into(), "POST".into()),
            (
                "access-control-request-headers".into(),
                "content-type".into(),
            ),
        ],
        body: vec![],
    };
    let ok = h.send(preflight("https://shop.example")).await;
    assert_eq!(ok.status, 204);
    assert_eq!(
        ok.headers["access-control-allow-origin"],
        "https://shop.example"
    );
    assert!(!ok.headers.contains_key("access-control-allow-credentials"));
    assert_eq!(h.send(preflight("https://evil.example")).await.status, 403);

    let post = h.send(Req::batch(json!({"site": "shop", "events": [{"type": "pageview", "url": "https://shop.example/"}]}))).await;
    assert_eq!(post.status, 202);
    assert_eq!(
        post.headers["access-control-allow-origin"],
        "https://shop.example"
    );
    assert!(
        !post
            .headers
            .contains_key("access-control-allow-credentials")
    );
    assert!(!post.headers.contains_key("set-cookie"));

    for path in ["/livez", "/readyz", "/metrics"] {
        let r = h
            .send(Req::get(path).header("origin", "https://shop.example"))
            .await;
        assert_eq!(r.status, 200, "{path}");
        assert!(
            !r.headers.contains_key("access-control-allow-origin"),
            "{path} must not be CORS-open"
        );
    }
    let metrics = String::from_utf8_lossy(&h.send(Req::get("/metrics")).await.body).into_owned();
    assert!(metrics.contains("spur_collector_requests_total"));
    assert!(metrics.contains("spur_collector_broker_up 1"));

    assert_eq!(h.send(Req::get("/nope")).await.status, 404);
    let wrong = h.send(Req::get("/v1/batch")).await;
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.headers["allow"], "POST, OPTIONS");
    h.stop().await;
}
