//! Connection handling: slow clients are cut off by the header-read timeout, idle
//! connections beyond the bound wait instead of exhausting the server, and a graceful
//! shutdown lets in-flight requests finish.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_off_and_normal_traffic_still_served() {
    let mut cfg = config();
    cfg.limits.header_read_timeout = Duration::from_millis(500);
    cfg.limits.max_connections = 8;
    let h = Harness::start(cfg).await;
    // Eight clients that never finish their headers occupy every connection slot.
    let mut slow = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(h.addr).await.expect("connect");
        s.write_all(b"POST /v1/batch HTTP/1.1\r\nhost: c\r\n")
            .await
            .expect("partial headers");
        slow.push(s);
    }
    // A normal request still gets through once the slow ones are timed out.
    let body =
        json!({"site": "shop", "events": [{"type": "pageview", "url": "https://shop.example/"}]});
    let served = tokio::time::timeout(Duration::from_secs(20), h.send(Req::batch(body))).await;
    assert_eq!(served.expect("served despite slow clients").status, 202);
    // And the slow ones were disconnected.
    for mut s in slow {
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
        assert!(closed.is_ok(), "a slow client was never disconnected");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let h = Harness::start(config()).await;
    let id = eid();
    let body = json!({"site": "shop", "events": [{"type": "pageview", "id": id, "url": "https://shop.example/"}]}).to_string();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut s = TcpStream::connect(h.addr).await.expect("connect");
    let head = format!(
        "POST /v1/batch HTTP/1.1\r\nhost: c\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{first}",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("first half");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let addr = h.addr;
    let brokers = h.kafka.brokers.clone();
    let client = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // New connections are no longer accepted...
        assert!(
            try_send(addr, Req::get("/livez")).await.is_err(),
            "listener closed during shutdown"
        );
        // ...but the request in flight completes.
        s.write_all(rest.as_bytes()).await.expect("second half");
        let mut answer = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut answer))
            .await
            .expect("answered")
            .expect("read");
        drop(s);
        String::from_utf8_lossy(&answer[..n]).into_owned()
    };
    let (_mock, text) = tokio::time::timeout(Duration::from_secs(40), async {
        tokio::join!(h.stop(), client)
    })
    .await
    .expect("stopped in time");
    assert!(text.starts_with("HTTP/1.1 202"), "{text}");
    let found = tokio::task::spawn_blocking(move || {
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
    assert_eq!(found.len(), 1, "the in-flight event was delivered");
}
