//! The console of `spur up`: one small HTTP server with the pages a person trying
//! Spur looks at.
//!
//! - `/inbox/`: a demo mailing system ([`inbox`]). `POST /inbox/webhook` is a
//!   Standard Webhooks receiver for the segment service's deliveries (signature,
//!   timestamp tolerance, deduplication on `webhook-id`); `GET /inbox/` shows what it
//!   received as mails — the double opt-in request with its link, the segment
//!   mailings with their one-click unsubscribe button, the exits as notes.
//! - `/dashboard/`: the pipeline at a glance ([`dashboard`]), from the same SQL the
//!   analysts run (`spur_query::Catalog`) and the services' Prometheus counters,
//!   drawn as inline SVG ([`svg`]); no JavaScript, no CDN.
//!
//! Only the webhook receiver is open to any peer (it trusts signatures, not
//! addresses). The pages show contact addresses and subject ids, so they answer a
//! loopback peer, or one presenting `Authorization: Bearer <admin.token>`; anyone else
//! gets 401. A `POST` from a page must come from the console's own origin (when the
//! browser says where it comes from): another site cannot make a visitor's browser
//! unsubscribe somebody.

mod dashboard;
mod inbox;
mod svg;

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use spur_schemas::Secret;
use tokio::net::TcpListener;
use tracing::{info, warn};

use dashboard::Dashboard;
use inbox::Inbox;

/// What the console needs; `spur up` fills it from its settings.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// The lake the dashboard reads (`lake.root`); it may not exist yet.
    pub lake_root: String,
    /// Where the inbox keeps what it received (`inbox.jsonl`), across restarts.
    pub inbox_dir: PathBuf,
    /// The `whsec_…` secret of the `[[segments.webhooks]]` entry pointing at
    /// `/inbox/webhook`.
    pub webhook_secret: Secret,
    /// `admin.token`: lets a non-loopback peer see the pages.
    pub admin_token: Option<Secret>,
    /// The processor's `/metrics` (e.g. `http://127.0.0.1:9101/metrics`), for its
    /// lag and dead letters; without it the dashboard says it does not know.
    pub processor_metrics_url: Option<String>,
    /// The collector's base URL (e.g. `http://localhost:8080`): links to the demo
    /// shop, and its `/metrics` for the dead letters it produced.
    pub collector_url: String,
}

/// Largest request body the console reads: a webhook delivery is a few hundred
/// bytes; the Standard Webhooks libraries accept far less than this.
const MAX_BODY: usize = 256 * 1024;

/// What the handlers share.
struct Console {
    inbox: Inbox,
    dashboard: Dashboard,
    admin_token: Option<Secret>,
}

/// Serves the console on `listener` until `shutdown` resolves. Fails at once on a
/// webhook secret that is not `whsec_` and the base64 of a 24 to 64 byte key, or an
/// inbox directory that cannot be created or read.
pub async fn serve(
    listener: TcpListener,
    config: ConsoleConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let console = Arc::new(Console::new(config)?);
    let address = listener.local_addr().context("console listener")?;
    info!(%address, "console listening: /inbox/ and /dashboard/");
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "console accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let console = console.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let console = console.clone();
                async move { Ok::<_, Infallible>(console.handle(req, peer).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A fresh webhook secret for the inbox: `whsec_` and the base64 of 32 random bytes
/// (what `[[segments.webhooks]].secret` takes).
pub fn generate_webhook_secret() -> String {
    use base64::Engine as _;
    let key: [u8; 32] = rand::random();
    format!(
        "{}{}",
        spur_dispatch::webhook::SECRET_PREFIX,
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

impl Console {
    fn new(config: ConsoleConfig) -> anyhow::Result<Console> {
        let signer = spur_dispatch::webhook::Signer::from_secret(config.webhook_secret.expose())
            .context("the console's webhook secret")?;
        Ok(Console {
            inbox: Inbox::open(&config.inbox_dir, signer)?,
            dashboard: Dashboard::new(
                config.lake_root,
                config.processor_metrics_url,
                config.collector_url,
            )?,
            admin_token: config.admin_token,
        })
    }

    async fn handle<B>(&self, req: Request<B>, peer: SocketAddr) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        let page = matches!(
            (&method, path.as_str()),
            (&Method::GET | &Method::HEAD, "/inbox/" | "/dashboard/")
                | (&Method::POST, "/inbox/unsubscribe")
        );
        if page && !allowed(peer.ip(), req.headers(), self.admin_token.as_ref()) {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "the console's pages answer loopback clients, or Authorization: Bearer <admin.token>",
            );
        }
        match (method, path.as_str()) {
            (Method::GET | Method::HEAD, "/") => html(StatusCode::OK, &index_page()),
            (Method::GET | Method::HEAD, "/inbox" | "/dashboard") => {
                redirect(StatusCode::PERMANENT_REDIRECT, &format!("{path}/"))
            }
            (Method::POST, "/inbox/webhook") => {
                let headers = req.headers().clone();
                match read_body(req).await {
                    Ok(body) => self.inbox.receive(&headers, &body, now_secs()),
                    Err(response) => response,
                }
            }
            (Method::GET | Method::HEAD, "/inbox/") => {
                html(StatusCode::OK, &self.inbox.page(now_secs() * 1000))
            }
            (Method::POST, "/inbox/unsubscribe") => {
                if !same_origin(req.headers()) {
                    return refuse(
                        StatusCode::FORBIDDEN,
                        "a POST to the console must come from the console's own pages",
                    );
                }
                let mail = query_param(req.uri().query(), "mail").unwrap_or_default();
                self.inbox.unsubscribe(&mail).await
            }
            (Method::GET | Method::HEAD, "/dashboard/") => html(
                StatusCode::OK,
                &self
                    .dashboard
                    .page(chrono::Utc::now().timestamp_millis())
                    .await,
            ),
            (_, "/" | "/inbox/" | "/dashboard/") => method_not_allowed("GET, HEAD"),
            (_, "/inbox/webhook" | "/inbox/unsubscribe") => method_not_allowed("POST"),
            _ => refuse(StatusCode::NOT_FOUND, "no such page"),
        }
    }
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Whether a peer may see the pages: a loopback address (IPv4-mapped included), or
/// the admin token, compared in constant time.
fn allowed(peer: IpAddr, headers: &HeaderMap, token: Option<&Secret>) -> bool {
    let loopback = match peer {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    };
    if loopback {
        return true;
    }
    let Some(token) = token.map(Secret::expose).filter(|t| !t.is_empty()) else {
        return false;
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(presented.as_bytes(), token.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, byte) in b.iter().enumerate() {
        diff |= usize::from(byte ^ a.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// A form post from a browser names its origin; it must be the host the request
/// was sent to. Requests without `Origin` (curl, older browsers) pass: the peer
/// check already applies to them.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

/// Query parameter `name`, percent-decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The body, at most [`MAX_BODY`] bytes; a refusal response otherwise.
async fn read_body<B>(req: Request<B>) -> Result<Bytes, Response<Full<Bytes>>>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the body is larger than the console accepts",
        )),
        Err(e) => Err(refuse(
            StatusCode::BAD_REQUEST,
            &format!("the body could not be read: {e}"),
        )),
    }
}

fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    // The pages load nothing from anywhere: no script, no frame, no outside style.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    // No referrer leaves the console; `same-origin`, not `no-referrer`: with the
    // latter a browser sends `Origin: null` on the unsubscribe form's POST, which the
    // same-origin check must then refuse (found by the tour in Chromium).
    headers.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("same-origin"),
    );
    response
}

fn html(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    response(status, "text/html; charset=utf-8", body.to_owned())
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    response(status, "application/json", body.to_string())
}

/// A refusal: the status, a code for programs and a sentence for people.
fn refuse(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let code = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase()
        .replace(' ', "_");
    let mut response = json(
        status,
        &serde_json::json!({ "error": code, "message": message }),
    );
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

fn redirect(status: StatusCode, location: &str) -> Response<Full<Bytes>> {
    let mut response = response(status, "text/plain; charset=utf-8", String::new());
    if let Ok(value) = header::HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = refuse(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here");
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    response
}

/// Text for HTML content and attribute values.
fn esc(text: &str) -> String {
    spur_collector::reply::escape_html(text)
}

/// A whole page: the shared style, the navigation, `body`; reloaded every
/// `refresh` seconds when given.
fn page(title: &str, refresh: Option<u32>, body: &str) -> String {
    let refresh = refresh
        .map(|s| format!(r#"<meta http-equiv="refresh" content="{s}">"#))
        .unwrap_or_default();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{refresh}<title>{title} · Spur</title>
<style>{STYLE}</style></head>
<body><header><strong>Spur</strong> <nav><a href="/inbox/">Inbox</a> <a href="/dashboard/">Dashboard</a></nav></header>
<main>{body}</main></body></html>
"#,
        title = esc(title),
    )
}

const STYLE: &str = "
body{margin:0;font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d2330;background:#f3f4f7}
header{display:flex;gap:1.5em;align-items:baseline;padding:.7em 1.5em;background:#1d2330;color:#fff}
header a{color:#cfd6ff;margin-right:1em;text-decoration:none}
main{max-width:1100px;margin:0 auto;padding:1em 1.5em 3em}
h1{font-size:1.4em;margin:.6em 0}
h2{font-size:1.05em;margin:0 0 .6em}
.muted{color:#687086}.small{font-size:.85em}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:1em}
.card{background:#fff;border:1px solid #dde1ea;border-radius:8px;padding:1em 1.2em;margin-bottom:1em}
.wide{grid-column:1/-1}
.kpis{grid-template-columns:repeat(auto-fit,minmax(200px,1fr))}
.kpi{font-size:1.8em;font-weight:600}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.25em .4em;border-bottom:1px solid #eef0f4;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.bar{background:#4c6ef5;height:.6em;border-radius:3px;min-width:1px}
.mail header{background:none;color:inherit;padding:0;display:block}
.mail .subject{font-size:1.15em;font-weight:600}
.verified{color:#13795b;font-weight:600}
.note{border-style:dashed;background:#fafbfc}
.button{display:inline-block;background:#4c6ef5;color:#fff;border:0;border-radius:6px;padding:.5em 1em;font:inherit;cursor:pointer;text-decoration:none}
.button.secondary{background:#e9ecf5;color:#1d2330}
code{font-size:.85em;word-break:break-all}
svg text{font:11px system-ui,sans-serif;fill:#687086}
";

fn index_page() -> String {
    page(
        "Console",
        None,
        r#"<h1>Spur console</h1><div class="grid">
<div class="card"><h2><a href="/inbox/">Inbox</a></h2><p>The demo mailing system: the double opt-in request, segment mailings and their one-click unsubscribe, as the segment service delivers them (signed webhooks).</p></div>
<div class="card"><h2><a href="/dashboard/">Dashboard</a></h2><p>Events per minute, top pages and topics, consent, segments, processor lag and dead letters.</p></div>
</div>"#,
    )
}

#[cfg(test)]
mod tests;
