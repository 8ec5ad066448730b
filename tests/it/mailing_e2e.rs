//! A lawful mailing end to end, as the mailing system sees it, against a real broker:
//! a visitor signs up for the newsletter (and its browser claims the double opt-in is
//! already confirmed — a forgery the collector drops); the mailer's webhook gets
//! `consent.confirmation_requested` with the address and a signed `confirm_url`; a
//! GET on it changes nothing, its POST confirms; only then `segment.entered` arrives,
//! carrying `contact.email`; the one-click unsubscribe ends it with
//! `segment.exited`, without the address. Every delivery is verified with the
//! Standard Webhooks reference library (`standardwebhooks`), not Spur's own code.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::client::{Req, eid};
use crate::harness::{Broker, Process, Spur, spur_once};

/// `whsec_` + base64 of the 32 bytes `0x01..=0x20`.
const SECRET: &str = "whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
const UNSUBSCRIBE_KEY: &str = "e2e-unsubscribe-key-0123456789abcdef0123456789abcdef";
const CONFIRM_KEY: &str = "e2e-confirm-key-0123456789abcdef0123456789abcdef01";

/// One request the mailer's endpoint received.
#[derive(Clone, Debug)]
struct Delivery {
    headers: http::HeaderMap,
    body: Bytes,
}

impl Delivery {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

/// The mailing system's webhook endpoint: records every request, answers 204.
async fn receiver() -> (SocketAddr, Arc<Mutex<Vec<Delivery>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let got: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let store = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let store = store.clone();
                    async move {
                        let headers = req.headers().clone();
                        let body = req.into_body().collect().await?.to_bytes();
                        store.lock().expect("lock").push(Delivery { headers, body });
                        Ok::<_, hyper::Error>(
                            Response::builder()
                                .status(204)
                                .body(Full::new(Bytes::new()))
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, got)
}

fn config(dir: &Path, hook: SocketAddr) -> String {
    format!(
        r#"
[unsubscribe]
key = "{UNSUBSCRIBE_KEY}"
url = "http://collector.example/v1/unsubscribe"

[confirm]
key = "{CONFIRM_KEY}"
url = "http://collector.example/v1/confirm"
valid_for = "1h"

[lake]
root = "{lake}"

[keys]
dir = "{keys}"

[processor]
group_id = "mailing-e2e"
flush_interval = "200ms"
listen = "127.0.0.1:0"

[segments]
interval = "200ms"
state_dir = "{state}"
listen = "127.0.0.1:0"
topic_partitions = 3

[[segments.define]]
name = "boot_fans"
where = "interest['boots'] >= 0.2"

[[segments.webhooks]]
name = "mailer"
url = "http://{hook}/hooks/spur"
secret = "{SECRET}"
initial_backoff = "100ms"
"#,
        lake = dir.join("lake").display(),
        keys = dir.join("keys").display(),
        state = dir.join("state").display(),
    )
}

/// Waits until a delivery of `kind` arrives (120 s at most).
async fn wait_for(got: &Arc<Mutex<Vec<Delivery>>>, kind: &str, dir: &Path) -> Delivery {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(found) = got
            .lock()
            .expect("lock")
            .iter()
            .find(|d| d.json()["type"] == kind)
        {
            return found.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} at the webhook; segments log:\n{}",
            std::fs::read_to_string(dir.join("segments.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn path_of(url: &str) -> &str {
    url.strip_prefix("http://collector.example")
        .expect("a link under the configured base")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_confirm_mail_and_unsubscribe_through_the_webhook() {
    let dir = crate::harness::workdir();
    let broker = Broker::embedded(dir.path());
    let brokers = broker.brokers();
    let (hook, got) = receiver().await;
    let collector = Spur::start(dir.path(), &brokers, &config(dir.path(), hook)).await;
    let keys = spur_once(dir.path(), &["keys", "init"]);
    assert!(keys.status.success(), "keys init: {keys:?}");
    let mut processor = Process::spawn(dir.path(), &["process"], "processor.log");
    let mut segments = Process::spawn(dir.path(), &["segments"], "segments.log");

    // Four boots pages and the sign-up. The browser also claims the confirmation
    // click happened: the collector drops that claim.
    let mut events: Vec<_> = (0..4)
        .map(|i| {
            serde_json::json!({"type": "pageview", "id": eid(),
                "url": format!("https://shop.example/boots/{i}"), "topics": ["boots"]})
        })
        .collect();
    events.push(serde_json::json!({"type": "identify", "id": eid(),
        "url": "https://shop.example/newsletter",
        "email": "carol@example.com", "form": "newsletter",
        "evidence": {"purposes": ["analytics", "marketing"], "text": "Send me news about boots",
                     "policy_version": "2026-01", "confirmation": true}}));
    let signup = serde_json::json!({"site": "shop", "visitor_id": "e2e-carol-browser",
        "consent": {"analytics": true, "marketing": true}, "events": events});
    assert_eq!(collector.send(Req::batch(signup)).await.status, 202);

    // 1. The confirmation request, with the address and the signed link.
    let request = wait_for(&got, "consent.confirmation_requested", dir.path()).await;
    let data = request.json()["data"].clone();
    assert_eq!(data["contact"]["email"], "carol@example.com", "{data}");
    let subject = data["subject_id"].as_str().expect("subject").to_owned();
    let confirm_url = data["confirm_url"]
        .as_str()
        .expect("confirm_url")
        .to_owned();
    assert!(confirm_url.starts_with("http://collector.example/v1/confirm?token="));
    assert!(data["confirm_expires_at"].is_string(), "{data}");

    // The forged confirmation made nobody a member: nothing but the request so far.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        got.lock()
            .expect("lock")
            .iter()
            .all(|d| d.json()["type"] != "segment.entered"),
        "a browser's confirmation: true made the subject a member"
    );

    // 2. A link scanner's GET changes nothing; the person's POST confirms.
    let page = collector.send(Req::get(path_of(&confirm_url))).await;
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("<form"));
    let mut altered = path_of(&confirm_url).to_owned();
    altered.pop();
    altered.push(if confirm_url.ends_with('A') { 'B' } else { 'A' });
    let mut forged = Req::get(&altered);
    forged.method = "POST";
    assert_eq!(collector.send(forged).await.status, 403, "an altered token");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        got.lock()
            .expect("lock")
            .iter()
            .all(|d| d.json()["type"] != "segment.entered"),
        "a GET or a forged token confirmed"
    );
    let mut post = Req::get(path_of(&confirm_url));
    post.method = "POST";
    post.headers = vec![(
        "content-type".into(),
        "application/x-www-form-urlencoded".into(),
    )];
    let confirmed = collector.send(post).await;
    assert_eq!(confirmed.status, 200, "{:?}", confirmed.body);
    let clicked = Instant::now();

    // 3. Now a member, and the mailer learns where to send.
    let entered = wait_for(&got, "segment.entered", dir.path()).await;
    let data = entered.json()["data"].clone();
    println!(
        "double opt-in: confirm POST 200 → segment.entered at the webhook in {:.2} s",
        clicked.elapsed().as_secs_f64()
    );
    assert_eq!(data["segment"], "boot_fans");
    assert_eq!(data["subject_id"], subject.as_str());
    assert_eq!(data["contact"]["email"], "carol@example.com");
    let unsubscribe = data["unsubscribe_url"]
        .as_str()
        .expect("unsubscribe_url")
        .to_owned();

    // 4. The one-click unsubscribe from the mail ends it; the exit has no address.
    let mut post = Req::get(path_of(&unsubscribe));
    post.method = "POST";
    post.headers = vec![(
        "content-type".into(),
        "application/x-www-form-urlencoded".into(),
    )];
    post.body = b"List-Unsubscribe=One-Click".to_vec();
    assert_eq!(collector.send(post).await.status, 200);
    let exited = wait_for(&got, "segment.exited", dir.path()).await;
    let data = exited.json()["data"].clone();
    assert_eq!(data["reason"], "unsubscribed");
    assert_eq!(data["subject_id"], subject.as_str());
    assert!(
        data.get("contact").is_none(),
        "an unsubscribed address: {data}"
    );

    // Every delivery verifies with the reference library, and none repeats an id.
    let verifier = standardwebhooks::Webhook::new(SECRET).expect("secret");
    let all = got.lock().expect("lock").clone();
    let mut ids = HashMap::new();
    for delivery in &all {
        verifier
            .verify(&delivery.body, &delivery.headers)
            .unwrap_or_else(|e| panic!("signature of {:?}: {e}", delivery.body));
        let id = delivery.headers["webhook-id"]
            .to_str()
            .expect("id")
            .to_owned();
        *ids.entry(id).or_insert(0) += 1;
    }
    assert!(ids.values().all(|n| *n == 1), "{ids:?}");
    let types: Vec<_> = all.iter().map(|d| d.json()["type"].clone()).collect();
    assert_eq!(
        types,
        [
            "consent.confirmation_requested",
            "segment.entered",
            "segment.exited"
        ],
        "{types:?}"
    );
    assert!(!segments.exited(), "segment service died");
    assert!(!processor.exited(), "processor died");
    segments.kill();
}
