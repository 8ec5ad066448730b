//! The tracker in a real browser: headless Chromium loads a page on `localhost` that
//! embeds `/spur.js` from the collector (cross-origin, as on a real site). Before
//! consent nothing is in cookies or storage; the pageview, an SPA navigation, the
//! engagement beacon and the consent event all arrive in Kafka.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use spur_schemas::kafka::TOPIC_EVENTS;

use crate::client::read_topic;
use crate::harness::{Broker, Spur};

fn page(collector: SocketAddr, run: &str) -> String {
    format!(
        r#"<!doctype html><html><head><title>Boots {run}</title>
<meta name="spur:topics" content="Boots, winter">
<script>window.spur=window.spur||function(){{(spur.q=spur.q||[]).push(arguments)}};</script>
<script defer src="http://{collector}/spur.js" data-site="local"></script>
</head><body><div id="out">pending</div><script>
window.addEventListener('load', function () {{
  var before = {{cookie: document.cookie, local: localStorage.length, session: sessionStorage.length}};
  setTimeout(function () {{
    history.pushState({{}}, '', '/spa-{run}');
    setTimeout(function () {{
      window.dispatchEvent(new Event('pagehide'));
      spur('consent', {{analytics: true, marketing: true}}, {{purposes: ['analytics', 'marketing'], text_id: 'banner-v1'}});
      var after = {{cookie: document.cookie, local: localStorage.length, vid: localStorage.getItem('spur_vid')}};
      document.getElementById('out').textContent = JSON.stringify({{before: before, after: after}});
    }}, 300);
  }}, 300);
}});
</script></body></html>"#
    )
}

/// Serves `html` at every path on a loopback port.
async fn serve_page(html: String) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let html = Bytes::from(html);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let html = html.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let html = html.clone();
                    async move {
                        let mut r = hyper::Response::new(Full::new(html));
                        r.headers_mut()
                            .insert("content-type", "text/html".parse().expect("header"));
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracker_in_chromium_sends_pageviews_engagement_and_consent() {
    let dir = crate::harness::workdir();
    let (_broker, brokers) = Broker::shared_or_embedded(dir.path());
    let spur = Spur::start(dir.path(), &brokers, "").await;
    let run = crate::client::eid();
    let page_addr = serve_page(page(spur.addr, &run)).await;
    let url = format!("http://localhost:{}/page-{run}", page_addr.port());

    let chromium = std::env::var("SPUR_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let profile = dir.path().join("chromium-profile");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&chromium)
            .args(crate::browser::HEADLESS)
            .args(["--virtual-time-budget=5000", "--dump-dom"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(&url)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {chromium}: {e} (apt-get install chromium)"))
    })
    .await
    .expect("chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    let state = dom
        .split("<div id=\"out\">")
        .nth(1)
        .and_then(|rest| rest.split("</div>").next())
        .unwrap_or_default()
        .replace("&quot;", "\"");
    let state: serde_json::Value = serde_json::from_str(&state).unwrap_or_else(|_| {
        panic!(
            "page did not finish: {dom}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(state["before"]["cookie"], "", "no cookie before consent");
    assert_eq!(
        state["before"]["local"], 0,
        "no localStorage before consent"
    );
    assert_eq!(
        state["before"]["session"], 0,
        "no sessionStorage before consent"
    );
    assert_eq!(
        state["after"]["cookie"], "",
        "the tracker never sets cookies"
    );
    let vid = state["after"]["vid"]
        .as_str()
        .expect("visitor id stored after analytics consent")
        .to_owned();

    let brokers = brokers.clone();
    let marker = run.clone();
    let records = tokio::task::spawn_blocking(move || {
        read_topic(&brokers, TOPIC_EVENTS, &marker, 5, Duration::from_secs(30))
    })
    .await
    .expect("reader");
    let of = |kind: &str| {
        records
            .iter()
            .filter(|r| r["type"] == kind)
            .cloned()
            .collect::<Vec<_>>()
    };
    let pageviews = of("pageview");
    assert_eq!(pageviews.len(), 2, "load + SPA navigation: {records:#?}");
    let first = pageviews
        .iter()
        .find(|r| r["page"]["path"] == format!("/page-{run}"))
        .expect("first pageview");
    assert_eq!(
        first["page"]["topics"],
        serde_json::json!(["boots", "winter"])
    );
    assert_eq!(first["page"]["title"], format!("Boots {run}"));
    assert_eq!(first["visitor"]["kind"], "cookieless", "no consent yet");
    assert!(
        pageviews
            .iter()
            .any(|r| r["page"]["path"] == format!("/spa-{run}")),
        "SPA navigation tracked"
    );
    let engagement = of("engagement");
    assert!(!engagement.is_empty(), "engagement beacon: {records:#?}");
    assert!(
        engagement
            .iter()
            .all(|r| r["data"]["engaged_ms"].as_u64().is_some_and(|ms| ms > 0))
    );
    let consent = of("consent");
    assert_eq!(consent.len(), 1);
    assert_eq!(
        consent[0]["data"]["purposes"],
        serde_json::json!({"analytics": "granted", "marketing": "granted"})
    );
    assert_eq!(consent[0]["data"]["evidence"]["text_id"], "banner-v1");
    assert_eq!(
        consent[0]["visitor"],
        serde_json::json!({"kind": "persistent", "id": vid})
    );
    assert_eq!(
        consent[0]["consent"],
        serde_json::json!({"analytics": true, "marketing": true})
    );
    spur.stop();
}
