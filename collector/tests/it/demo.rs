//! The demo shop (`collector.demo`): its pages and files on the collector's port when
//! on, nothing of it when off.

use crate::common::*;

fn demo_config(on: bool) -> spur_collector::Config {
    let mut config = config();
    config.demo = on;
    config.sites.push(spur_collector::config::SiteConfig {
        id: "demo".into(),
        hosts: vec!["localhost".into(), "127.0.0.1".into()],
    });
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_shop_is_served_when_on() {
    let h = Harness::start(demo_config(true)).await;
    let home = h.send(Req::get("/demo/")).await;
    assert_eq!(home.status, 200);
    assert_eq!(home.headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(home.headers["cache-control"], "no-cache");
    assert!(home.headers["content-security-policy"].contains("script-src 'self'"));
    let html = String::from_utf8_lossy(&home.body);
    assert!(html.contains(r#"src="/spur.js" data-site="demo""#));
    assert!(html.contains(r#"id="newsletter-form""#));
    for product in ["/demo/boots", "/demo/tent", "/demo/jacket", "/demo/shoes"] {
        let page = h.send(Req::get(product)).await;
        assert_eq!(page.status, 200, "{product}");
        assert!(
            String::from_utf8_lossy(&page.body).contains(r#"<meta name="spur:topics""#),
            "{product} names its topics"
        );
    }
    for (path, kind) in [
        ("/demo/privacy", "text/html; charset=utf-8"),
        ("/demo/stored", "text/html; charset=utf-8"),
        ("/demo/shop.js", "text/javascript; charset=utf-8"),
        ("/demo/shop.css", "text/css; charset=utf-8"),
        ("/demo/img/tent.svg", "image/svg+xml"),
    ] {
        let r = h.send(Req::get(path)).await;
        assert_eq!(
            (r.status, r.headers["content-type"].as_str()),
            (200, kind),
            "{path}"
        );
    }
    let etag = home.headers["etag"].clone();
    let again = h
        .send(Req::get("/demo/").header("if-none-match", &etag))
        .await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());

    let bare = h.send(Req::get("/demo")).await;
    assert_eq!(
        (bare.status, bare.headers["location"].as_str()),
        (308, "/demo/")
    );
    let missing = h.send(Req::get("/demo/checkout")).await;
    assert_eq!(missing.status, 404);
    assert!(String::from_utf8_lossy(&missing.body).contains("Page not found"));
    let mut post = Req::get("/demo/");
    post.method = "POST";
    let refused = h.send(post).await;
    assert_eq!(refused.status, 405);
    assert_eq!(refused.headers["allow"], "GET, HEAD");
    assert_eq!(
        h.metric(
            "spur_collector_requests_total",
            &[("endpoint", "demo"), ("status", "200")]
        ),
        10.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_of_the_demo_is_served_when_off() {
    let h = Harness::start(demo_config(false)).await;
    for path in [
        "/demo",
        "/demo/",
        "/demo/boots",
        "/demo/shop.js",
        "/demo/img/boots.svg",
    ] {
        let r = h.send(Req::get(path)).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json()["error"], "not_found", "{path}");
    }
    // The default configuration has it off.
    assert!(!spur_collector::Config::default().demo);
    h.stop().await;
}
