//! `spur up` as a user runs it, on free ports (set through `SPUR_<SECTION>__LISTEN`
//! environment variables, so the generated configuration is the one under test):
//! a port already taken fails at once and names its key; SIGTERM and then SIGKILL
//! under traffic lose no acknowledged event and keep the broker's data; the README's
//! tour in headless Chromium, from the demo shop's consent banner to the inbox.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::browser::{Browser, assert_drawn, assert_not_blank};
use crate::client::{read_topic, try_send};
use crate::fault_run::{sender, stop_senders};
use crate::harness::free_port;
use crate::processor_e2e::{check_exactly_once, lake_rows};

/// The listen keys `spur up` binds, each with a free port.
struct Ports(Vec<(&'static str, u16)>);

impl Ports {
    fn free() -> Ports {
        Ports(
            [
                "BROKER",
                "COLLECTOR",
                "PROCESSOR",
                "SEGMENTS",
                "QUERY",
                "ADMIN",
                "CONSOLE",
            ]
            .into_iter()
            .map(|section| (section, free_port()))
            .collect(),
        )
    }

    fn of(&self, section: &str) -> u16 {
        self.0
            .iter()
            .find(|(s, _)| *s == section)
            .map(|(_, p)| *p)
            .expect("known section")
    }
}

/// A `spur up` process with its data directory and log.
struct Up {
    child: Option<Child>,
    data: PathBuf,
    log: PathBuf,
    collector: std::net::SocketAddr,
}

impl Up {
    fn spawn(dir: &Path, ports: &Ports) -> Up {
        let log = dir.join("up.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log");
        let data = dir.join("spur-data");
        let mut command = Command::new(env!("CARGO_BIN_EXE_spur"));
        command
            .args(["up", "--data-dir"])
            .arg(&data)
            .env("RUST_LOG", "info,buoyant_kernel=warn,deltalake_core=warn")
            .stdout(out.try_clone().expect("log"))
            .stderr(out);
        for (section, port) in &ports.0 {
            command.env(
                format!("SPUR_{section}__LISTEN"),
                format!("127.0.0.1:{port}"),
            );
        }
        let child = command.spawn().expect("spawn spur up");
        Up {
            child: Some(child),
            data,
            log,
            collector: ([127, 0, 0, 1], ports.of("COLLECTOR")).into(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the collector answers `/readyz` with 200.
    async fn ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(r) = try_send(self.collector, crate::client::Req::get("/readyz")).await
                && r.status == 200
            {
                return;
            }
            assert!(self.running(), "spur up exited:\n{}", self.log());
            assert!(
                Instant::now() < deadline,
                "spur up never ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM; waits for the exit and returns whether it was clean.
    fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        false
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_already_taken_fails_at_once_naming_its_key() {
    for (section, key) in [
        ("COLLECTOR", "collector.listen"),
        ("BROKER", "broker.listen"),
    ] {
        let dir = crate::harness::workdir();
        let ports = Ports::free();
        let taken = std::net::TcpListener::bind(("127.0.0.1", ports.of(section))).expect("bind");
        let mut up = Up::spawn(dir.path(), &ports);
        let status = up
            .child
            .as_mut()
            .expect("child")
            .wait()
            .expect("spur up exits by itself");
        drop(taken);
        let log = up.log();
        assert!(
            !status.success(),
            "{section}: started on a taken port:\n{log}"
        );
        let port = ports.of(section).to_string();
        assert!(
            log.contains(&format!("port {port} is already taken")) && log.contains(key),
            "{section}: the error names neither the port nor `{key}`:\n{log}"
        );
        assert!(
            !log.contains("Spur is running"),
            "{section}: printed a summary:\n{log}"
        );
    }
}

/// Four senders post to the demo site while `spur up` is stopped with SIGTERM and
/// later killed with SIGKILL, restarted each time on the same data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigkill_under_traffic_lose_no_acknowledged_event() {
    let dir = crate::harness::workdir();
    let ports = Ports::free();
    let mut up = Up::spawn(dir.path(), &ports);
    up.ready().await;
    assert!(
        up.log().contains("Spur is running"),
        "no summary:\n{}",
        up.log()
    );
    let config = std::fs::read_to_string(up.data.join("spur.toml")).expect("generated config");
    assert!(
        config.contains("[[query.users]]") && config.contains("whsec_"),
        "{config}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..4)
        .map(|i| tokio::spawn(sender(up.collector, ("demo", "localhost"), i, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(up.terminate(), "SIGTERM: not a clean exit:\n{}", up.log());
    let mut up = Up::spawn(dir.path(), &ports);
    up.ready().await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    up.kill();
    let mut up = Up::spawn(dir.path(), &ports);
    up.ready().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (acked, sent) = stop_senders(&stop, senders).await;
    assert!(acked.len() >= 500, "too little traffic: {}", acked.len());

    let lake = up.data.join("lake");
    let deadline = Instant::now() + Duration::from_secs(90);
    let (rows, map) = loop {
        let (rows, map) = lake_rows(&lake).await;
        let missing = acked.iter().filter(|id| !map.contains_key(*id)).count();
        if missing == 0 || Instant::now() > deadline {
            break (rows, map);
        }
        assert!(up.running(), "spur up exited:\n{}", up.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    check_exactly_once(rows, &map, &acked, &sent);
    // The broker's data survived both stops: the events topic still holds every
    // acknowledged event, read from its beginning.
    let brokers = format!("127.0.0.1:{}", ports.of("BROKER"));
    let acked_set: HashSet<&str> = acked.iter().map(String::as_str).collect();
    let records = tokio::task::spawn_blocking(move || {
        read_topic(
            &brokers,
            "spur.events.v1",
            "pageview",
            usize::MAX,
            Duration::from_secs(15),
        )
    })
    .await
    .expect("read");
    let on_topic: HashSet<&str> = records
        .iter()
        .filter_map(|r| r["event_id"].as_str())
        .collect();
    assert!(
        acked_set.is_subset(&on_topic),
        "{} acknowledged events missing from the broker's topic",
        acked_set.difference(&on_topic).count()
    );
    assert!(
        up.terminate(),
        "last SIGTERM: not a clean exit:\n{}",
        up.log()
    );
}

/// The README's tour, in headless Chromium against `spur up`: accept consent in the
/// demo shop, read the boots page, sign up; the confirmation request arrives in the
/// inbox, its link confirms; the `segment.entered` mailing arrives (signature
/// verified); its unsubscribe button leads to `segment.exited`. Screenshots of the
/// shop, the inbox and the dashboard, checked for their key elements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tour_in_chromium_from_the_demo_shop_to_the_inbox() {
    let dir = crate::harness::workdir();
    let ports = Ports::free();
    let mut up = Up::spawn(dir.path(), &ports);
    up.ready().await;
    let shop = format!("http://localhost:{}/demo/", ports.of("COLLECTOR"));
    let console = format!("http://localhost:{}", ports.of("CONSOLE"));
    let inbox = format!("{console}/inbox/");
    let work = dir.path().to_owned();
    let email = format!("tour-{}@example.com", &crate::client::eid()[..8]);
    let log = up.log.clone();
    let tour = tokio::task::spawn_blocking(move || {
        let mut b = Browser::launch(&work);
        // A person's browser: headless Chromium's own user agent is (rightly) labelled
        // a bot, and bots' sign-ups make no ledger entries.
        b.page(
            "Emulation.setUserAgentOverride",
            serde_json::json!({"userAgent": PERSON}),
        );
        // Consent: nothing is stored before it, a visitor id after "accept all".
        b.open(&shop);
        assert!(b.visible("#consent"), "the banner asks");
        let before = b.stored();
        assert_eq!(before["cookies"], serde_json::json!([]), "{before}");
        b.click("[data-consent=\"accept\"]");
        b.wait_for("document.getElementById('consent').hidden");
        assert!(
            b.stored()["local"]["spur_vid"].is_string(),
            "a visitor id after consent"
        );
        let shop_shot = work.join("tour-shop.png");
        assert_not_blank("shop", &b.screenshot(&shop_shot));
        // Long enough on the boots page for the view to count (reference_dwell 5 s).
        b.open(&format!("{shop}boots"));
        std::thread::sleep(Duration::from_secs(7));
        b.open(&shop);
        b.click("#newsletter-email");
        b.type_text(&email);
        b.click("#newsletter-consent");
        b.click("button[type=submit]");
        b.wait_for("!document.getElementById('newsletter-thanks').hidden");

        // The double opt-in request in the inbox; its link, then the page's button.
        let confirm = wait_in_inbox(
            &mut b,
            &inbox,
            "[...document.querySelectorAll('a.button')].map(a => a.href).find(h => h.includes('/v1/confirm')) || null",
            &log,
        );
        b.open(confirm.as_str().expect("confirm link"));
        b.click("button[name=confirm]");
        b.wait_for("document.body.innerText.toLowerCase().includes('confirmed')");

        // The segment mailing, verified, with its unsubscribe button.
        wait_in_inbox(
            &mut b,
            &inbox,
            "document.querySelector('form[action^=\"/inbox/unsubscribe\"]') ? true : null",
            &log,
        );
        let text = b.eval("document.body.innerText");
        let text = text.as_str().unwrap_or_default();
        assert!(text.contains("signature verified"), "{text}");
        assert!(text.contains(&email), "the mailing is addressed to the sign-up: {text}");
        assert!(!text.contains("Refused since start"), "a delivery was refused: {text}");
        let inbox_shot = work.join("tour-inbox.png");
        assert_drawn("inbox", &b.screenshot(&inbox_shot));
        // Submitted from script rather than clicked: the inbox reloads itself every
        // 5 s, and a reload between aiming and clicking loses a click.
        b.eval("document.querySelector('form[action^=\"/inbox/unsubscribe\"]').requestSubmit()");
        // The console sends the one-click POST and redirects back to the mail.
        b.wait_for("location.hash.length > 1 && document.readyState === 'complete'");
        wait_in_inbox(
            &mut b,
            &inbox,
            "document.body.innerText.includes('Left segment boot_fans') ? true : null",
            &log,
        );

        // The dashboard: its charts and the segment.
        b.open(&format!("{console}/dashboard/"));
        assert_eq!(
            b.eval("document.querySelectorAll('svg').length > 0"),
            serde_json::json!(true),
            "the dashboard draws its charts"
        );
        let dashboard = b.eval("document.body.innerText");
        assert!(
            dashboard.as_str().is_some_and(|t| t.contains("boot_fans")),
            "the dashboard shows the segment: {dashboard}"
        );
        let dashboard_shot = work.join("tour-dashboard.png");
        assert_drawn("dashboard", &b.screenshot(&dashboard_shot));
        [shop_shot, inbox_shot, dashboard_shot]
    })
    .await
    .expect("the tour");
    for shot in tour {
        println!("screenshot: {}", shot.display());
    }
    assert!(up.terminate(), "SIGTERM: not a clean exit:\n{}", up.log());
}

/// The user agent of Chrome on Linux, as a person's browser sends it.
const PERSON: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// Reloads the inbox until `expression` is not null (at most 90 s); returns its value.
fn wait_in_inbox(b: &mut Browser, inbox: &str, expression: &str, log: &Path) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        b.open(inbox);
        let value = b.eval(expression);
        if !value.is_null() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "not in the inbox within 90 s: {expression}\n{}\nspur up's log:\n{}",
            b.eval("document.body.innerText"),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}
