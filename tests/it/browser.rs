//! Headless Chromium over the DevTools protocol, driven as a person would use a page:
//! real mouse clicks and typed text, what the page stored, screenshots checked not to
//! be blank. Chromium is started with `--remote-debugging-pipe` (commands on its fd 3,
//! answers on fd 4, `\0`-separated JSON), wired by `sh` to the child's stdin and
//! stdout. Used by the demo shop's test and `spur up`'s tour.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Headless Chromium as it runs on these machines: no sandbox (root in a container),
/// no GPU, no QUIC and nothing it would fetch for itself.
pub(crate) const HEADLESS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// How long one browser step (a navigation, a script) may take before the test fails.
const STEP: Duration = Duration::from_secs(30);

/// Headless Chromium and one page in it, over the DevTools pipe. Killed on drop.
pub(crate) struct Browser {
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
    pub(crate) batch_statuses: Vec<u64>,
}

impl Browser {
    pub(crate) fn launch(dir: &Path) -> Browser {
        let chromium =
            std::env::var("SPUR_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let log = std::fs::File::create(dir.join("chromium.log")).expect("chromium log");
        let mut child = Command::new("sh")
            // fd 3 ← our stdin (commands), fd 4 → our stdout (answers and events).
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null"#)
            .arg(&chromium)
            .args(HEADLESS)
            .args([
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
    pub(crate) fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(Some(&session), method, params)
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    pub(crate) fn eval(&mut self, expression: &str) -> Value {
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
    pub(crate) fn wait_for(&mut self, expression: &str) {
        let deadline = Instant::now() + STEP;
        while self.eval(expression) != json!(true) {
            assert!(Instant::now() < deadline, "never true: {expression}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Opens `url` and waits until it has loaded (the deferred tracker has run by then).
    pub(crate) fn open(&mut self, url: &str) {
        self.page("Page.navigate", json!({"url": url}));
        let url = serde_json::to_string(url).expect("json");
        self.wait_for(&format!(
            "location.href === {url} && document.readyState === 'complete'"
        ));
    }

    /// Whether the element is rendered and at least partly inside the viewport.
    pub(crate) fn visible(&mut self, selector: &str) -> bool {
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
    pub(crate) fn click(&mut self, selector: &str) {
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
    pub(crate) fn type_text(&mut self, text: &str) {
        self.page("Input.insertText", json!({"text": text}));
    }

    /// Everything this origin stored: cookies (from the browser, not only what script
    /// can read), local and session storage.
    pub(crate) fn stored(&mut self) -> Value {
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
    pub(crate) fn screenshot(&mut self, path: &Path) -> Value {
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

/// Asserts a screenshot of a page of text and charts: the window's size and many
/// colours (a blank page has a handful).
pub(crate) fn assert_drawn(name: &str, stats: &Value) {
    assert_eq!(
        (stats["width"].as_u64(), stats["height"].as_u64()),
        (Some(1280), Some(900)),
        "{name}: {stats}"
    );
    assert!(
        stats["colours"].as_u64().is_some_and(|n| n >= 24),
        "{name} looks blank: {stats}"
    );
}

/// [`assert_drawn`], and no colour covering nearly everything (a one-colour page): for
/// pages with pictures, like the shop's.
pub(crate) fn assert_not_blank(name: &str, stats: &Value) {
    assert_drawn(name, stats);
    assert!(
        stats["dominant"].as_f64().is_some_and(|d| d < 0.85),
        "{name} is mostly one colour: {stats}"
    );
}

#[test]
fn base64_decodes_with_and_without_padding() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode("aGV5"), b"hey");
    assert_eq!(base64_decode("iVBORw0KGgo="), b"\x89PNG\r\n\x1a\n");
}
