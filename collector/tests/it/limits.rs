//! Bad input: size limits, malformed bodies and media types get clear refusals.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_refused_before_it_is_read() {
    let mut cfg = config();
    cfg.limits.max_body_bytes = 1024;
    let h = Harness::start(cfg).await;

    // Declared too large: refused without reading.
    let big = Req::batch(json!({"site": "shop", "events": [], "pad": "x".repeat(2000)}));
    let r = h.send(big).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "body_too_large");

    // Chunked and endless: the answer comes while the client is still sending, i.e.
    // the collector stopped reading shortly past the limit.
    let mut stream = tokio::net::TcpStream::connect(h.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"POST /v1/batch HTTP/1.1\r\nhost: c\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .expect("headers");
    let chunk = format!("{:x}\r\n{}\r\n", 256, "y".repeat(256));
    let mut sent = 0usize;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // At most 1 MiB: far past the limit, so a collector reading it all would be caught.
    while sent < 1 << 20 {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
        sent += 256;
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(5), stream.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            break;
        }
    }
    if answer.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(
        sent < 64 * 1024,
        "collector kept reading: {sent} bytes sent before the answer"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_get_400_with_a_reason() {
    let h = Harness::start(config()).await;
    let cases: [&[u8]; 8] = [
        b"{not json",
        b"",
        b"\xff\xfe{}",
        b"[]",
        br#"{"site": "shop"}"#,
        br#"{"site": "shop", "events": {}}"#,
        br#"{"site": "shop", "events": []} trailing"#,
        br#"{"site": 12, "events": []}"#,
    ];
    for body in cases {
        let mut req = Req::batch(json!({}));
        req.body = body.to_vec();
        let r = h.send(req).await;
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(body));
        assert_eq!(r.json()["error"], "malformed");
        assert!(r.json()["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let missing = {
        let mut req = Req::batch(json!({}));
        req.body = br#"{"events": []}"#.to_vec();
        h.send(req).await
    };
    assert!(
        missing.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("missing field `site`")
    );

    // Deep nesting inside an event: that event is dead-lettered, nothing panics.
    let deep = format!("{}{}", "[".repeat(3000), "]".repeat(3000));
    let mut req = Req::batch(json!({}));
    req.body = format!(r#"{{"site":"shop","events":[{deep}]}}"#).into_bytes();
    let r = h.send(req).await;
    assert_eq!(r.status, 202, "deep nesting");
    assert_eq!(r.json()["dead_lettered"][0]["reason"], "malformed");

    let r = h
        .send(
            Req::batch(json!({"site": "shop", "events": []}))
                .header("content-type", "application/xml"),
        )
        .await;
    assert_eq!(r.status, 415);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_oversized_event_is_dead_lettered_the_rest_accepted() {
    let mut cfg = config();
    cfg.limits.max_event_bytes = 512;
    let h = Harness::start(cfg).await;
    let body = json!({"site": "shop", "events": [
        {"type": "pageview", "url": "https://shop.example/a"},
        {"type": "pageview", "url": "https://shop.example/b", "title": "t".repeat(600)},
        {"type": "pageview", "url": "https://shop.example/c", "ts": 0},
        {"type": "pageview", "url": "https://shop.example/d", "ts": 1e300},
        {"type": "pageview", "url": "https://shop.example/e", "ts": 123456789012345678901234567890u128.to_string()},
    ]});
    let r = h.send(Req::batch(body)).await;
    assert_eq!(r.status, 202);
    let answer = r.json();
    assert_eq!(answer["accepted"], 3, "{answer}");
    assert_eq!(
        answer["dead_lettered"][0],
        json!({"index": 1, "reason": "size", "detail": "event of 661 bytes exceeds 512"})
    );
    assert_eq!(answer["dead_lettered"][1]["reason"], "invalid_field");
    h.stop().await;
}
