//! The admin HTTP endpoints for GDPR requests (`spur admin`), on an operator-only
//! address. Every request needs `Authorization: Bearer <admin.token>`
//! (compared in constant time); there are no CORS headers and `OPTIONS` is refused,
//! so no web page can call them. The subject goes in the JSON body, never the URL
//! (an e-mail address must not land in access logs):
//!
//! - `POST /v1/subjects/export` `{"subject": "<id or e-mail>"}` → the export as JSON
//!   with a `summary` field (the readable version);
//! - `POST /v1/subjects/erase` `{"subject": …}` → the erasure receipt;
//! - `POST /v1/subjects/split` `{"subject": …, "visitor": "<visitor id>", "reason": …}`
//!   → the `unlink` ledger entry (undoes a wrong merge);
//! - `POST /v1/subjects/withdraw` `{"subject": …, "purpose": "marketing"}` → an
//!   operator `withdraw` entry in the consent ledger ([`withdraw`]: the mailing
//!   system's own unsubscribe), answered with its `seq`;
//! - `POST /v1/subjects/resolve` `{"emails": ["…", …]}` (at most
//!   [`MAX_EMAILS`](crate::resolve::MAX_EMAILS), 413 beyond) →
//!   `{"subjects": [{"email", "subject_id", "known"}, …]}` in the request's order;
//!   an invalid address gets `"subject_id": null` and an `error` on its entry
//!   ([`crate::resolve`]).
//!
//! Bodies are at most 4 KiB, a resolve request's at most 4 MiB. Nothing a request
//! names (a subject, an address) is written to a log line.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use spur_lake::Lake;
use spur_schemas::Secret;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tracing::{info, warn};

use spur_audience::ledger::{Draft, Ledger};

use crate::erase::{EraseOptions, erase};
use crate::error::{Error, Result};
use crate::export::export;
use crate::resolve::{MAX_EMAILS, resolve};

/// `[admin]`: the GDPR admin endpoints (`spur admin`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Operator-only address of the admin endpoints.
    pub listen: SocketAddr,
    /// The bearer token; `spur admin` refuses to start without one.
    pub token: Option<Secret>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9103)),
            token: None,
        }
    }
}

impl AdminConfig {
    /// The bearer token, refused unless it is at least 32 characters long.
    pub fn token(&self) -> Result<Secret> {
        self.token
            .clone()
            .filter(|t| t.expose().len() >= 32)
            .ok_or_else(|| {
                Error::Config(
                    "admin.token must be set to a secret of at least 32 characters (e.g. `openssl rand -hex 32`)"
                        .into(),
                )
            })
    }
}

/// Turns what an operator typed (a subject id, or an e-mail address) into a subject
/// id. The binary provides it (hashing an address needs the identity key).
pub type Resolver = Arc<dyn Fn(&str) -> std::result::Result<String, String> + Send + Sync>;

/// What the handlers share.
pub struct Admin {
    pub lake: Mutex<Lake>,
    pub token: Secret,
    pub resolve: Resolver,
    pub erase: EraseOptions,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("erase", &self.erase)
            .finish_non_exhaustive()
    }
}

/// Body limit of admin requests.
const MAX_BODY: usize = 4 * 1024;

/// Body limit of a resolve request: [`MAX_EMAILS`] addresses of up to 254
/// characters, JSON-quoted, fit with room to spare.
const MAX_RESOLVE_BODY: usize = 4 * 1024 * 1024;

/// The `method` of the evidence of a withdrawal the mailing system reports.
pub const MAILER_UNSUBSCRIBE_METHOD: &str = "mailer_unsubscribe";

/// How often a withdrawal is tried when another writer appends to the ledger at
/// the same moment.
const WITHDRAW_ATTEMPTS: u32 = 5;

/// Serves the admin endpoints until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    admin: Arc<Admin>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let address = listener.local_addr().map_err(|source| Error::Server {
        context: "admin listener".into(),
        source,
    })?;
    info!(%address, "admin endpoints listening");
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(handle(&admin, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let mut response = reply(status, json!({"error": code, "message": message}));
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// Constant-time comparison of the presented token with the configured one.
fn authorised(req: &Request<Incoming>, token: &Secret) -> bool {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let expected = token.expose().as_bytes();
    let presented = presented.as_bytes();
    let mut diff = expected.len() ^ presented.len();
    for (i, byte) in expected.iter().enumerate() {
        diff |= usize::from(byte ^ presented.get(i).copied().unwrap_or(0));
    }
    diff == 0 && !expected.is_empty()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectRequest {
    subject: String,
    #[serde(default)]
    visitor: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    purpose: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveRequest {
    emails: Vec<String>,
}

async fn handle(admin: &Admin, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if !authorised(&req, &admin.token) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        );
    }
    let path = req.uri().path().to_owned();
    let action = match (req.method(), path.as_str()) {
        (&Method::POST, "/v1/subjects/export") => "export",
        (&Method::POST, "/v1/subjects/erase") => "erase",
        (&Method::POST, "/v1/subjects/split") => "split",
        (&Method::POST, "/v1/subjects/withdraw") => "withdraw",
        (&Method::POST, "/v1/subjects/resolve") => "resolve",
        (
            _,
            "/v1/subjects/export"
            | "/v1/subjects/erase"
            | "/v1/subjects/split"
            | "/v1/subjects/withdraw"
            | "/v1/subjects/resolve",
        ) => {
            let mut response = refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use POST",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
            return response;
        }
        _ => return refuse(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
    };
    let (limit, limit_text) = if action == "resolve" {
        (MAX_RESOLVE_BODY, "4 MiB")
    } else {
        (MAX_BODY, "4 KiB")
    };
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                &format!("the request body exceeds {limit_text}"),
            );
        }
    };
    if action == "resolve" {
        return handle_resolve(admin, &body).await;
    }
    let request: SubjectRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                &format!("expected {{\"subject\": ...}}: {e}"),
            );
        }
    };
    let subject = match (admin.resolve)(request.subject.trim()) {
        Ok(subject) => subject,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "invalid_subject", &e),
    };
    let now = chrono::Utc::now().timestamp_millis();
    let mut lake = admin.lake.lock().await;
    // The handle was opened at start-up: read what other writers committed since.
    if let Err(e) = lake.refresh().await {
        return answer(action, Err(e.into()));
    }
    let result = match action {
        "export" => export(&lake, &subject, now, admin.erase.keys_dir.as_deref())
            .await
            .map(|export| {
                if request.format.as_deref() == Some("summary") {
                    json!({"summary": export.summary()})
                } else {
                    let mut value = export.to_json();
                    value["summary"] = Value::String(export.summary());
                    value
                }
            }),
        "erase" => erase(&mut lake, &subject, now, &admin.erase)
            .await
            .and_then(|r| serde_json::to_value(r).map_err(|e| Error::Config(e.to_string()))),
        "withdraw" => withdraw(&mut lake, &subject, request.purpose, now).await,
        _ => split(&mut lake, &subject, request.visitor, request.reason, now).await,
    };
    answer(action, result)
}

/// The reply to a request that ran: 200 with its value, 400 when the request was
/// wrong, 503 (safe to retry) when the lake failed.
fn answer(action: &str, result: Result<Value>) -> Response<Full<Bytes>> {
    match result {
        Ok(value) => reply(StatusCode::OK, value),
        Err(Error::Config(message)) => refuse(StatusCode::BAD_REQUEST, "refused", &message),
        Err(e) => {
            warn!(error = %e.chain(), action, "admin request failed");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "failed",
                "the request failed; it is safe to retry",
            )
        }
    }
}

/// `POST /v1/subjects/resolve`: the subject id of every address of the body.
async fn handle_resolve(admin: &Admin, body: &[u8]) -> Response<Full<Bytes>> {
    let request: ResolveRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                &format!("expected {{\"emails\": [...]}}: {e}"),
            );
        }
    };
    if request.emails.len() > MAX_EMAILS {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_emails",
            &format!("at most {MAX_EMAILS} addresses per request"),
        );
    }
    let mut lake = admin.lake.lock().await;
    if let Err(e) = lake.refresh().await {
        return answer("resolve", Err(e.into()));
    }
    let result = resolve(&lake, &request.emails, &|email: &str| {
        (admin.resolve)(email)
    })
    .await
    .map(|subjects| json!({ "subjects": subjects }));
    answer("resolve", result)
}

/// Records that the subject withdrew consent to `purpose` (`marketing` when not
/// given) through the mailing system: an operator `withdraw` entry with evidence
/// `{"method": "mailer_unsubscribe", "purposes": [purpose]}`, at `now_ms`. The
/// segment service's next step reads it and the subject's members exit with reason
/// `consent_withdrawn`. A subject the lake does not know yet is recorded all the
/// same (the withdrawal then already stands when it links). Another writer
/// appending at the same moment makes the commit conflict; it is retried on the new
/// head.
pub async fn withdraw(
    lake: &mut Lake,
    subject: &str,
    purpose: Option<String>,
    now_ms: i64,
) -> Result<Value> {
    let purpose = purpose.unwrap_or_else(|| "marketing".into());
    if !spur_schemas::identify::PURPOSES.contains(&purpose.as_str()) {
        return Err(Error::Config(format!(
            "unknown purpose {purpose:?}: one of {}",
            spur_schemas::identify::PURPOSES.join(", ")
        )));
    }
    let draft = Draft {
        at: now_ms,
        kind: "withdraw",
        purpose: Some(purpose.clone()),
        subject_id: Some(subject.to_owned()),
        evidence: Some(
            json!({"method": MAILER_UNSUBSCRIBE_METHOD, "purposes": [purpose]}).to_string(),
        ),
        ..Draft::default()
    };
    let mut attempt = 1;
    let rows = loop {
        match Ledger::append_operator(lake, vec![draft.clone()], now_ms).await {
            Ok(rows) => break rows,
            // `append_operator` reloads the head each time: a conflict with another
            // writer's commit succeeds on the next try; anything else fails alike.
            Err(e) if attempt < WITHDRAW_ATTEMPTS => {
                warn!(error = %spur_schemas::error_chain(&e), attempt, "ledger append failed; retrying");
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    };
    Ok(json!({
        "withdrawn": purpose,
        "subject_id": subject,
        "seq": rows.last().map(|r| r.seq),
    }))
}

/// Undoes the link of `visitor` to `subject`: an `unlink` entry. The visitor's
/// history is then its own anonymous subject again.
pub async fn split(
    lake: &mut Lake,
    subject: &str,
    visitor: Option<String>,
    reason: Option<String>,
    now_ms: i64,
) -> Result<Value> {
    let visitor = visitor.ok_or_else(|| Error::Config("split needs a visitor id".into()))?;
    let ctx = lake.session_context().await?;
    let linked = crate::export::visitors_of(&ctx, subject).await?;
    if visitor == subject || !linked.contains(&visitor) {
        return Err(Error::Config(format!(
            "visitor {visitor} is not linked to subject {subject}"
        )));
    }
    let draft = Draft {
        at: now_ms,
        kind: "unlink",
        subject_id: Some(subject.to_owned()),
        visitor_id: Some(visitor),
        reason: Some(reason.unwrap_or_else(|| "operator_split".into())),
        ..Draft::default()
    };
    let rows = Ledger::append_operator(lake, vec![draft], now_ms).await?;
    Ok(json!({"unlinked": rows.len(), "seq": rows.last().map(|r| r.seq)}))
}
