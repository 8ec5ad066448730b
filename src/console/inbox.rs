//! The demo inbox: a Standard Webhooks receiver for the segment service and the
//! page that shows what it received as mails.
//!
//! A delivery is accepted when the three headers are there, `webhook-timestamp` is
//! within [`DEFAULT_TOLERANCE`] of now and one `v1,` entry of `webhook-signature` is
//! the HMAC-SHA256 of `{id}.{timestamp}.{body}` under the secret — the receiver's
//! side of `spur_dispatch::webhook`, checked with the same [`Signer::verify`]. A
//! refusal is 400 (a malformed request) or 401 (a signature or timestamp that does
//! not hold), with the reason. Deliveries are deduplicated on `webhook-id` (a
//! redelivery is answered 200 and shown once) and appended to `inbox.jsonl` before
//! the 2xx, so they are there again after a restart.
//!
//! The unsubscribe button posts to `/inbox/unsubscribe?mail=<webhook-id>`, and the
//! console makes the RFC 8058 one-click `POST` to the mail's `unsubscribe_url`
//! itself, as a mail provider does for its `List-Unsubscribe-Post` button (a browser
//! form could post there directly, but would leave the person on the collector's
//! JSON answer instead of the inbox, and the inbox would not know the outcome).

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use spur_dispatch::webhook::{
    DEFAULT_TOLERANCE, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, Signer, VerifyError,
};
use tracing::{info, warn};

use super::{esc, json as json_response, page, redirect, refuse};

/// The file under the inbox directory.
const FILE: &str = "inbox.jsonl";

/// How long the one-click `POST` to the collector may take.
const UNSUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// One line of `inbox.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Line {
    /// A verified delivery, its body as received (parsed JSON).
    Delivery {
        id: String,
        timestamp: i64,
        received_at_ms: i64,
        body: Value,
    },
    /// The answer to a one-click unsubscribe made from mail `mail`.
    Unsubscribe {
        mail: String,
        at_ms: i64,
        status: u16,
        answer: String,
    },
}

/// A delivery as kept.
#[derive(Debug, Clone)]
struct Mail {
    id: String,
    received_at_ms: i64,
    body: Value,
}

/// The outcome of an unsubscribe made from a mail.
#[derive(Debug, Clone)]
struct Unsubscribed {
    at_ms: i64,
    status: u16,
    answer: String,
}

#[derive(Debug)]
struct State {
    /// In arrival order.
    mails: Vec<Mail>,
    ids: HashSet<String>,
    unsubscribed: HashMap<String, Unsubscribed>,
    /// Refused since start, and the latest refusal's reason and time.
    refused: u64,
    last_refusal: Option<(String, i64)>,
    file: File,
}

/// The inbox: verified deliveries in memory and in `inbox.jsonl`.
#[derive(Debug)]
pub(super) struct Inbox {
    signer: Signer,
    path: PathBuf,
    state: Mutex<State>,
    client: reqwest::Client,
}

/// Why a delivery is refused: the status and the sentence the sender gets.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refusal {
    pub status: StatusCode,
    pub reason: String,
}

impl Refusal {
    fn bad(reason: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            reason: reason.into(),
        }
    }
}

/// What became of an accepted delivery.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Accepted {
    New,
    /// Same `webhook-id` as one already kept: not kept again.
    Duplicate,
}

/// Checks a delivery's headers and signature at `now_secs`, and that its body is a
/// JSON object with a `type`: the pure part of [`Inbox::receive`].
pub(super) fn verify(
    signer: &Signer,
    headers: &HeaderMap,
    body: &[u8],
    now_secs: i64,
) -> Result<(String, i64, Value), Refusal> {
    let id = header(headers, HEADER_ID)?.trim();
    let timestamp = header(headers, HEADER_TIMESTAMP)?;
    let signature = header(headers, HEADER_SIGNATURE)?;
    signer
        .verify(id, timestamp, signature, body, now_secs, DEFAULT_TOLERANCE)
        .map_err(|e| Refusal {
            status: match e {
                VerifyError::BadTimestamp => StatusCode::BAD_REQUEST,
                _ => StatusCode::UNAUTHORIZED,
            },
            reason: e.to_string(),
        })?;
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| Refusal::bad(format!("the body is not JSON: {e}")))?;
    if !body.get("type").is_some_and(Value::is_string)
        || !body.get("data").is_some_and(Value::is_object)
    {
        return Err(Refusal::bad(
            "the body is not a Standard Webhooks event (`type` and `data`)",
        ));
    }
    // Verified above, so it parses.
    let timestamp = timestamp.trim().parse().unwrap_or_default();
    Ok((id.to_owned(), timestamp, body))
}

/// A header's value; missing, empty or not text is a refusal.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, Refusal> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| Refusal::bad(format!("missing header {name}")))
}

impl Inbox {
    /// Opens the inbox in `dir` (created if missing), reading back what an earlier
    /// run received. A line that does not parse (a torn last write) is skipped with a
    /// warning.
    pub(super) fn open(dir: &Path, signer: Signer) -> anyhow::Result<Inbox> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the inbox directory {}", dir.display()))?;
        let path = dir.join(FILE);
        let mut state = State {
            mails: Vec::new(),
            ids: HashSet::new(),
            unsubscribed: HashMap::new(),
            refused: 0,
            last_refusal: None,
            file: open_append(&path)?,
        };
        let reader = BufReader::new(
            File::open(&path).with_context(|| format!("reading {}", path.display()))?,
        );
        for (n, line) in reader.lines().enumerate() {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Line>(&line) {
                Ok(line) => state.apply(line),
                Err(e) => {
                    warn!(file = %path.display(), line = n + 1, error = %e, "inbox line skipped")
                }
            }
        }
        let client = reqwest::Client::builder()
            .timeout(UNSUBSCRIBE_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("the inbox's HTTP client")?;
        Ok(Inbox {
            signer,
            path,
            state: Mutex::new(state),
            client,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `POST /inbox/webhook`: verifies, deduplicates and keeps a delivery.
    pub(super) fn receive(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_secs: i64,
    ) -> Response<Full<Bytes>> {
        match self.accept(headers, body, now_secs) {
            Ok(Accepted::New) => json_response(StatusCode::OK, &json!({ "received": true })),
            Ok(Accepted::Duplicate) => json_response(
                StatusCode::OK,
                &json!({ "received": true, "duplicate": true }),
            ),
            Err(refusal) => refuse(refusal.status, &refusal.reason),
        }
    }

    pub(super) fn accept(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_secs: i64,
    ) -> Result<Accepted, Refusal> {
        let verified = verify(&self.signer, headers, body, now_secs);
        let mut state = self.state();
        let (id, timestamp, body) = match verified {
            Ok(verified) => verified,
            Err(refusal) => {
                warn!(reason = %refusal.reason, "inbox refused a delivery");
                state.refused += 1;
                state.last_refusal = Some((refusal.reason.clone(), now_secs * 1000));
                return Err(refusal);
            }
        };
        if state.ids.contains(&id) {
            return Ok(Accepted::Duplicate);
        }
        let line = Line::Delivery {
            id,
            timestamp,
            received_at_ms: now_secs * 1000,
            body,
        };
        state.write(&line).map_err(|e| Refusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason: format!("the inbox could not store the delivery: {e:#}"),
        })?;
        state.apply(line);
        Ok(Accepted::New)
    }

    /// `POST /inbox/unsubscribe?mail=<id>`: the RFC 8058 one-click `POST` to the
    /// mail's `unsubscribe_url`, then back to the inbox, where the mail shows the
    /// collector's answer.
    pub(super) async fn unsubscribe(&self, mail: &str) -> Response<Full<Bytes>> {
        let url = {
            let state = self.state();
            let Some(found) = state.mails.iter().find(|m| m.id == mail) else {
                return refuse(StatusCode::NOT_FOUND, "no such mail in the inbox");
            };
            match View::of(found).unsubscribe_url {
                Some(url) if url.starts_with("http://") || url.starts_with("https://") => url,
                _ => {
                    return refuse(
                        StatusCode::NOT_FOUND,
                        "this mail has no unsubscribe link (set [unsubscribe] url and key)",
                    );
                }
            }
        };
        let (status, answer) = match self
            .client
            .post(url)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
        {
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                (status, text.chars().take(300).collect())
            }
            Err(e) => (0, format!("no answer from the collector: {e}")),
        };
        info!(status, "one-click unsubscribe sent from the inbox");
        let line = Line::Unsubscribe {
            mail: mail.to_owned(),
            at_ms: chrono::Utc::now().timestamp_millis(),
            status,
            answer,
        };
        let mut state = self.state();
        if let Err(e) = state.write(&line) {
            warn!(error = %format!("{e:#}"), file = %self.path.display(), "inbox could not record an unsubscribe");
        }
        state.apply(line);
        redirect(StatusCode::SEE_OTHER, &format!("/inbox/#{}", anchor(mail)))
    }

    /// `GET /inbox/`: the mails, newest first.
    pub(super) fn page(&self, now_ms: i64) -> String {
        let state = self.state();
        let mut body = String::from("<h1>Inbox</h1>");
        body.push_str(&format!(
            r#"<p class="muted">The demo mailing system: what the segment service delivered to <code>POST /inbox/webhook</code>, as a mailer would send it. {} deliveries, every one with a verified signature; kept in <code>{}</code>. Reloads every 5 s.</p>"#,
            state.mails.len(),
            esc(&self.path.display().to_string()),
        ));
        if let Some((reason, at)) = &state.last_refusal {
            body.push_str(&format!(
                r#"<div class="card note"><strong>Refused since start: {}</strong>; the latest {} ago: {}</div>"#,
                state.refused,
                ago(now_ms - at),
                esc(reason)
            ));
        }
        if state.mails.is_empty() {
            body.push_str(r#"<div class="card note"><p>No mail yet. Sign up for the newsletter in the demo shop with the marketing box ticked: the confirmation request arrives here within seconds.</p></div>"#);
        }
        for mail in state.mails.iter().rev() {
            body.push_str(&render(mail, state.unsubscribed.get(&mail.id), now_ms));
        }
        page("Inbox", Some(5), &body)
    }
}

impl State {
    fn apply(&mut self, line: Line) {
        match line {
            Line::Delivery {
                id,
                received_at_ms,
                body,
                ..
            } => {
                if self.ids.insert(id.clone()) {
                    self.mails.push(Mail {
                        id,
                        received_at_ms,
                        body,
                    });
                }
            }
            Line::Unsubscribe {
                mail,
                at_ms,
                status,
                answer,
            } => {
                self.unsubscribed.insert(
                    mail,
                    Unsubscribed {
                        at_ms,
                        status,
                        answer,
                    },
                );
            }
        }
    }

    /// Appends one line and flushes it to the operating system (a process crash
    /// keeps it; the sender's redelivery after a lost answer is deduplicated).
    fn write(&mut self, line: &Line) -> anyhow::Result<()> {
        let mut text = serde_json::to_string(line)?;
        text.push('\n');
        self.file.write_all(text.as_bytes())?;
        self.file.flush()?;
        Ok(())
    }
}

/// The file, created owner-only: it holds contact addresses.
fn open_append(path: &Path) -> anyhow::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// The fields of a delivery a mail shows.
#[derive(Debug, Default)]
struct View {
    kind: String,
    timestamp: String,
    segment: String,
    subject_id: String,
    reason: String,
    email: Option<String>,
    confirm_url: Option<String>,
    confirm_expires_at: Option<String>,
    unsubscribe_url: Option<String>,
}

impl View {
    fn of(mail: &Mail) -> View {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let data = mail.body.get("data");
        let field = |name: &str| text(data.and_then(|d| d.get(name)));
        View {
            kind: text(mail.body.get("type")).unwrap_or_default(),
            timestamp: text(mail.body.get("timestamp")).unwrap_or_default(),
            segment: field("segment").unwrap_or_default(),
            subject_id: field("subject_id").unwrap_or_default(),
            reason: field("reason").unwrap_or_default(),
            email: text(
                data.and_then(|d| d.get("contact"))
                    .and_then(|c| c.get("email")),
            ),
            confirm_url: field("confirm_url"),
            confirm_expires_at: field("confirm_expires_at"),
            unsubscribe_url: field("unsubscribe_url"),
        }
    }
}

/// The subject line of a segment mailing: `boot_fans` → "You might like our
/// boots…"; other names are shown as they are.
pub(super) fn segment_subject(segment: &str) -> String {
    let topic = ["_fans", "_fan", "_lovers", "_buyers"]
        .iter()
        .find_map(|suffix| segment.strip_suffix(suffix))
        .filter(|t| !t.is_empty());
    match topic {
        Some(topic) => {
            let topic = topic.replace('_', " ");
            let plural = if topic.ends_with('s') {
                topic
            } else {
                format!("{topic}s")
            };
            format!("You might like our {plural}…")
        }
        None => format!("News for you (segment {segment})"),
    }
}

fn anchor(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

fn short(subject: &str) -> String {
    match subject.get(..12) {
        Some(prefix) if subject.len() > 12 => format!("{prefix}…"),
        _ => subject.to_owned(),
    }
}

fn ago(ms: i64) -> String {
    let s = (ms / 1000).max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

fn render(mail: &Mail, unsubscribed: Option<&Unsubscribed>, now_ms: i64) -> String {
    let view = View::of(mail);
    let to = match &view.email {
        Some(email) => esc(email),
        // Exits about consent never carry the address (docs/segments.md).
        None if view.kind == "segment.exited" => {
            format!("subject <code>{}</code>", esc(&short(&view.subject_id)))
        }
        None => format!(
            r#"<span class="muted">subject {} (no <code>contact.email</code>: the webhook has <code>include_contact = false</code>, or the address is gone)</span>"#,
            esc(&short(&view.subject_id))
        ),
    };
    let received = format!(
        r#"<span class="verified">✓ signature verified</span> <span class="muted small">· {} · received {} ago · <code>{}</code></span>"#,
        esc(&view.timestamp),
        ago(now_ms - mail.received_at_ms),
        esc(&mail.id)
    );
    let id = anchor(&mail.id);
    match view.kind.as_str() {
        "consent.confirmation_requested" => {
            let link = match &view.confirm_url {
                Some(url) => format!(
                    r#"<p><a class="button" href="{}" target="_blank" rel="noopener">Yes, subscribe me</a></p><p class="small muted">The link opens the shop's confirmation page; its button confirms.{}</p>"#,
                    esc(url),
                    view.confirm_expires_at
                        .as_deref()
                        .map(|at| format!(" It works until {}.", esc(at)))
                        .unwrap_or_default()
                ),
                None => r#"<p class="muted">No confirmation link: <code>[confirm]</code> has no <code>url</code>.</p>"#.to_owned(),
            };
            format!(
                r#"<article class="card mail" id="{id}"><header><div class="subject">Please confirm your subscription</div><div class="small">From: Spur demo shop · To: {to}</div>{received}</header>
<p>You asked for our newsletter. Please confirm that this is your address — until you do, we send you nothing else.</p>{link}</article>"#
            )
        }
        "segment.entered" => {
            let unsubscribe = match (&view.unsubscribe_url, unsubscribed) {
                (_, Some(done)) if (200..300).contains(&done.status) => format!(
                    r#"<p class="verified">Unsubscribed {} ago: the collector answered {}.</p>"#,
                    ago(now_ms - done.at_ms),
                    done.status
                ),
                (Some(url), done) => {
                    let failed = done
                        .map(|d| {
                            format!(
                                r#"<p class="small">The last attempt failed ({}): <code>{}</code></p>"#,
                                d.status,
                                esc(&d.answer)
                            )
                        })
                        .unwrap_or_default();
                    format!(
                        r#"<form method="post" action="/inbox/unsubscribe?mail={mail_id}"><button class="button secondary" type="submit">Unsubscribe</button></form>{failed}
<p class="small muted">List-Unsubscribe: &lt;<code>{url}</code>&gt;<br>List-Unsubscribe-Post: List-Unsubscribe=One-Click</p>"#,
                        mail_id = esc(&mail.id),
                        url = esc(url),
                    )
                }
                (None, _) => r#"<p class="small muted">No unsubscribe link: <code>[unsubscribe]</code> has no <code>url</code>.</p>"#.to_owned(),
            };
            format!(
                r#"<article class="card mail" id="{id}"><header><div class="subject">{subject}</div><div class="small">From: Spur demo shop · To: {to}</div>{received}</header>
<p>Sent because you entered the segment <strong>{segment}</strong> ({reason}).</p>{unsubscribe}</article>"#,
                subject = esc(&segment_subject(&view.segment)),
                segment = esc(&view.segment),
                reason = esc(&view.reason),
            )
        }
        "segment.exited" => format!(
            r#"<article class="card mail note" id="{id}"><header><div class="subject">Left segment {segment}</div><div class="small">Not a mail: the mailer stops sending this segment's mailings to {to} (reason <strong>{reason}</strong>).</div>{received}</header></article>"#,
            segment = esc(&view.segment),
            reason = esc(&view.reason),
        ),
        other => format!(
            r#"<article class="card mail note" id="{id}"><header><div class="subject">{}</div>{received}</header><pre class="small">{}</pre></article>"#,
            esc(other),
            esc(&mail.body.to_string())
        ),
    }
}
