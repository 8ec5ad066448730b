//! The demo shop (`collector.demo`) in headless Chromium, driven over the DevTools
//! protocol as a person would use it: real mouse clicks on the banner's buttons and the
//! newsletter form, typed text, screenshots. Reject → the browser stores nothing and
//! the events carry no persistent id; choose analytics → pageviews with the product
//! topics under the stored visitor id; sign up → a marketing grant and an identify;
//! "Privacy settings" → reject → the browser is empty again.
//!
//! Chromium is started with `--remote-debugging-pipe` (commands on its fd 3, answers
//! on fd 4, `\0`-separated JSON), wired by `sh` to the child's stdin and stdout. The
//! screenshots are written to the test's directory (`SPUR_IT_KEEP=1` keeps it) and
//! decoded by the browser itself (an `<img>` drawn on a canvas) to check they are not
//! blank.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spur_schemas::kafka::TOPIC_EVENTS;

use crate::client::read_topic;
use crate::harness::{Broker, Spur};

/// The demo's site, registered as `spur up` registers it.
const DEMO: &str = r#"
[[collector.sites]]
id = "demo"
hosts = ["localhost", "127.0.0.1"]
"#;

/// How long one browser step (a navigation, a script) may take before the test fails.
const STEP: Duration = Duration::from_secs(30);

/// Headless Chromium and one page in it, over the DevTools pipe. Killed on drop.
struct Browser {
    child: Child,
    commands: ChildStdin,
    messages: Receiver<Value>,
    next_id: u64,
    /// The shop's tab.
    session: String,
    /// A blank tab where screenshots are decoded, so the shop's tab never navigates
    /// away for it.
    scratch: String,
    /// The status of every answer to the tracker's `/v1/batch` posts, in order.
    batch_statuses: Vec<u64>,
}

impl Browser {
    fn launch(dir: &Path) -> Browser {
        let chromium =
            std::env::var("SPUR_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let log = std::fs::File::create(dir.join("chromium.log")).expect("chromium log");
        let mut child = Command::new("sh")
            // fd 3 ← our stdin (commands), fd 4 → our stdout (answers and events).
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null"#)
            .arg(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=1280,900",
                "--remote-debugging-pipe",
            ])
            .arg(format!(
                "--user-data-dir={}",
                dir.join("chromium-profile").display()
            ))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {chromium}: {e} (apt-get install chromium)"));
        let commands = child.stdin.take().expect("stdin");
        let mut answers = BufReader::new(child.stdout.take().expect("stdout"));
        let (tx, messages) = channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            while answers.read_until(0, &mut buf).is_ok_and(|n| n > 0) {
                if buf.last() == Some(&0) {
                    buf.pop();
                }
                if let Ok(message) = serde_json::from_slice::<Value>(&buf)
                    && tx.send(message).is_err()
                {
                    return;
                }
                buf.clear();
            }
        });
        let mut browser = Browser {
            child,
            commands,
            messages,
            next_id: 0,
            session: String::new(),
            scratch: String::new(),
            batch_statuses: Vec::new(),
        };
        browser.scratch = browser.new_tab();
        browser.session = browser.new_tab();
        // A desktop viewport of a known size, whatever the window around it.
        browser.page(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        );
        browser.page("Network.enable", json!({}));
        browser
    }

    /// A new blank tab (in front); its session id.
    fn new_tab(&mut self) -> String {
        let target = self.send(None, "Target.createTarget", json!({"url": "about:blank"}));
        let attached = self.send(
            None,
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        attached["sessionId"]
            .as_str()
            .expect("session id")
            .to_owned()
    }

    /// One command; its result. Of the events in between only the answers to
    /// `/v1/batch` are kept ([`Browser::batch_statuses`]).
    fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = session.into();
        }
        let mut bytes = serde_json::to_vec(&message).expect("json");
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .and_then(|()| self.commands.flush())
            .unwrap_or_else(|e| panic!("chromium's pipe closed: {e}"));
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok(answer) if answer["id"] == id => {
                    assert!(
                        answer.get("error").is_none(),
                        "{method} failed: {}",
                        answer["error"]
                    );
                    return answer["result"].clone();
                }
                Ok(event) => {
                    let response = &event["params"]["response"];
                    if event["method"] == "Network.responseReceived"
                        && response["url"]
                            .as_str()
                            .is_some_and(|u| u.ends_with("/v1/batch"))
                    {
                        self.batch_statuses
                            .push(response["status"].as_u64().unwrap_or_default());
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!("{method}: no answer from chromium"),
                Err(RecvTimeoutError::Disconnected) => panic!("{method}: chromium exited"),
            }
        }
    }

    /// A command to the page.
    fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(Some(&session), method, params)
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    fn eval(&mut self, expression: &str) -> Value {
        let session = self.session.clone();
        self.eval_in(&session, expression)
    }

    fn eval_in(&mut self, session: &str, expression: &str) -> Value {
        let result = self.send(
            Some(session),
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page.
    fn wait_for(&mut self, expression: &str) {
        let deadline = Instant::now() + STEP;
        while self.eval(expression) != json!(true) {
            assert!(Instant::now() < deadline, "never true: {expression}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Opens `url` and waits until it has loaded (the deferred tracker has run by then).
    fn open(&mut self, url: &str) {
        self.page("Page.navigate", json!({"url": url}));
        let url = serde_json::to_string(url).expect("json");
        self.wait_for(&format!(
            "location.href === {url} && document.readyState === 'complete'"
        ));
    }

    /// Whether the element is rendered and at least partly inside the viewport.
    fn visible(&mut self, selector: &str) -> bool {
        let selector = serde_json::to_string(selector).expect("json");
        self.eval(&format!(
            "(() => {{ const e = document.querySelector({selector}); if (!e) return false;
              const r = e.getBoundingClientRect();
              return r.width > 0 && r.height > 0 && r.bottom > 0 && r.top < innerHeight
                && getComputedStyle(e).visibility !== 'hidden'; }})()"
        )) == json!(true)
    }

    /// A left click in the middle of the element, which must be visible and on top
    /// (not covered by the banner or anything else).
    fn click(&mut self, selector: &str) {
        let quoted = serde_json::to_string(selector).expect("json");
        let at = self.eval(&format!(
            "(() => {{ const e = document.querySelector({quoted}); if (!e) return null;
              e.scrollIntoView({{block: 'center'}});
              const r = e.getBoundingClientRect(), x = r.left + r.width / 2, y = r.top + r.height / 2;
              const top = document.elementFromPoint(x, y);
              return {{x, y, shown: r.width > 0 && r.height > 0, onTop: !!top && (top === e || e.contains(top) || top.contains(e))}}; }})()"
        ));
        assert!(
            at["shown"] == json!(true) && at["onTop"] == json!(true),
            "{selector} cannot be clicked: {at}"
        );
        for kind in ["mousePressed", "mouseReleased"] {
            self.page(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": at["x"], "y": at["y"], "button": "left", "clickCount": 1}),
            );
        }
    }

    /// Types `text` into the focused element.
    fn type_text(&mut self, text: &str) {
        self.page("Input.insertText", json!({"text": text}));
    }

    /// Everything this origin stored: cookies (from the browser, not only what script
    /// can read), local and session storage.
    fn stored(&mut self) -> Value {
        let cookies = self.send(None, "Storage.getCookies", json!({}))["cookies"].clone();
        let storage = self.eval(
            "(() => { const all = s => Object.fromEntries(Array.from({length: s.length}, (_, i) => [s.key(i), s.getItem(s.key(i))]));
               return {cookie: document.cookie, local: all(localStorage), session: all(sessionStorage)}; })()",
        );
        json!({"cookies": cookies, "script_cookie": storage["cookie"], "local": storage["local"], "session": storage["session"]})
    }

    /// A PNG of the page's viewport, written to `path`, and its statistics: decoded
    /// on a canvas in the scratch tab (width, height, colours, share of the most
    /// frequent colour).
    fn screenshot(&mut self, path: &Path) -> Value {
        let shot = self.page("Page.captureScreenshot", json!({"format": "png"}));
        let data = shot["data"].as_str().expect("png data").to_owned();
        std::fs::write(path, base64_decode(&data)).expect("write screenshot");
        let scratch = self.scratch.clone();
        self.eval_in(&scratch, &format!(
            "(async () => {{ const img = new Image(); img.src = 'data:image/png;base64,{data}'; await img.decode();
              const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
              const g = c.getContext('2d'); g.drawImage(img, 0, 0);
              const px = g.getImageData(0, 0, c.width, c.height).data, counts = new Map();
              for (let i = 0; i < px.length; i += 4) {{
                const k = (px[i] >> 4) << 8 | (px[i + 1] >> 4) << 4 | px[i + 2] >> 4;
                counts.set(k, (counts.get(k) || 0) + 1);
              }}
              return {{width: c.width, height: c.height, colours: counts.size,
                       dominant: Math.max(...counts.values()) / (px.length / 4)}}; }})()"
        ))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard base64 with padding (DevTools' binary data) to bytes.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | u32::from(d) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// Asserts a screenshot's statistics: the window's size, many colours, no colour
/// covering nearly everything (a blank or one-colour page).
fn assert_not_blank(name: &str, stats: &Value) {
    assert_eq!(
        (stats["width"].as_u64(), stats["height"].as_u64()),
        (Some(1280), Some(900)),
        "{name}: {stats}"
    );
    assert!(
        stats["colours"].as_u64().is_some_and(|n| n >= 24),
        "{name} looks blank: {stats}"
    );
    assert!(
        stats["dominant"].as_f64().is_some_and(|d| d < 0.85),
        "{name} is mostly one colour: {stats}"
    );
}

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

#[test]
fn base64_decodes_with_and_without_padding() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode("aGV5"), b"hey");
    assert_eq!(base64_decode("iVBORw0KGgo="), b"\x89PNG\r\n\x1a\n");
}
