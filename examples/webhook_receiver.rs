//! A standalone receiver for Spur's segment webhooks — a starting point for your own
//! mailing-system integration. It verifies each delivery as the Standard Webhooks
//! specification asks (and as `spur_dispatch::webhook` signs it), deduplicates on
//! `webhook-id`, and prints the event on a line. Only std, tokio, hyper, hmac, sha2
//! and base64: nothing of Spur's, so it can be copied out of the repository.
//!
//! Run it with the secret the segment service signs with:
//!
//! ```sh
//! SPUR_WEBHOOK_SECRET=whsec_… cargo run --example webhook_receiver -- 127.0.0.1:9200
//! ```
//!
//! and point a webhook at it in Spur's configuration (same secret; a new one is
//! `whsec_` and the base64 of 32 random bytes, e.g. `echo whsec_$(openssl rand -base64 32)`):
//!
//! ```toml
//! [[segments.webhooks]]
//! name = "my-receiver"
//! url = "http://127.0.0.1:9200/webhook"
//! secret = "whsec_…"
//! ```
//!
//! What it checks, in order (a refusal is 400 or 401 with the reason as the body, so
//! the segment service retries and logs it):
//!
//! 1. the headers `webhook-id`, `webhook-timestamp` and `webhook-signature` are there;
//! 2. `webhook-timestamp` (Unix seconds) is within 5 minutes of this machine's clock,
//!    either way — an older request is a replay or a skewed clock;
//! 3. one of the space-separated `v1,<base64>` entries of `webhook-signature` is the
//!    HMAC-SHA256, under the base64-decoded part of the `whsec_` secret, of
//!    `{webhook-id}.{webhook-timestamp}.{body}` — the raw body bytes, before any JSON
//!    parsing — compared in constant time.
//!
//! Then a `webhook-id` already seen is answered 200 and not acted on again: the
//! segment service delivers at least once, so a change can come twice. (Keep the seen
//! ids in your database in a real receiver; here they live in memory.)
//!
//! The body is `{"type": "segment.entered" | "segment.exited" |
//! "consent.confirmation_requested", "timestamp": …, "data": {"id", "seq", "segment",
//! "subject_id", "change", "reason", "unsubscribe_url"?, "confirm_url"?,
//! "contact": {"email"}?}}` (`docs/segments.md`, "Delivery").

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::net::TcpListener;

/// How far `webhook-timestamp` may be from now.
const TOLERANCE_SECS: u64 = 5 * 60;
/// Largest body read (deliveries are well under a kilobyte).
const MAX_BODY: usize = 256 * 1024;

struct Receiver {
    /// The decoded key of the `whsec_` secret.
    key: Vec<u8>,
    seen: Mutex<HashSet<String>>,
}

/// Why a delivery is refused: the status and a sentence.
type Refusal = (StatusCode, String);

impl Receiver {
    fn from_secret(secret: &str) -> Result<Receiver, String> {
        let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
        let key = BASE64
            .decode(encoded)
            .map_err(|_| "the secret is not whsec_ followed by base64".to_owned())?;
        if key.is_empty() {
            return Err("the secret's key is empty".to_owned());
        }
        Ok(Receiver {
            key,
            seen: Mutex::new(HashSet::new()),
        })
    }

    /// Steps 1–3 of the module documentation; the id on success.
    fn verify(&self, headers: &hyper::HeaderMap, body: &[u8], now: u64) -> Result<String, Refusal> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or((StatusCode::BAD_REQUEST, format!("missing header {name}")))
        };
        let id = header("webhook-id")?;
        let timestamp = header("webhook-timestamp")?;
        let signatures = header("webhook-signature")?;
        let sent: u64 = timestamp.trim().parse().map_err(|_| {
            (
                StatusCode::BAD_REQUEST,
                "webhook-timestamp is not Unix seconds".to_owned(),
            )
        })?;
        if now.abs_diff(sent) > TOLERANCE_SECS {
            return Err((
                StatusCode::UNAUTHORIZED,
                format!("webhook-timestamp {sent} is more than 5 minutes from now ({now})"),
            ));
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key)
            .map_err(|_| (StatusCode::INTERNAL_SERVER_ERROR, "unusable key".to_owned()))?;
        mac.update(format!("{id}.{sent}.").as_bytes());
        mac.update(body);
        let matches = signatures
            .split_whitespace()
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .filter_map(|encoded| BASE64.decode(encoded).ok())
            // `verify_slice` compares in constant time.
            .any(|tag| mac.clone().verify_slice(&tag).is_ok());
        if !matches {
            return Err((
                StatusCode::UNAUTHORIZED,
                "no v1 signature matches: another secret, or a changed body".to_owned(),
            ));
        }
        Ok(id.to_owned())
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::POST {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "POST a webhook delivery here",
            );
        }
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => return reply(StatusCode::BAD_REQUEST, &format!("unreadable body: {e}")),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let id = match self.verify(&parts.headers, &body, now) {
            Ok(id) => id,
            Err((status, why)) => {
                eprintln!("refused ({status}): {why}");
                return reply(status, &why);
            }
        };
        let first = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone());
        if first {
            // Act on it here: send the mail, update your list. Printed as received.
            println!("{id} {}", String::from_utf8_lossy(&body));
        } else {
            eprintln!("{id}: already received, not acted on again");
        }
        reply(StatusCode::OK, "ok")
    }
}

fn reply(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *response.status_mut() = status;
    response
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9200".to_owned())
        .parse()?;
    let secret = std::env::var("SPUR_WEBHOOK_SECRET")
        .map_err(|_| "set SPUR_WEBHOOK_SECRET to the webhook's whsec_… secret")?;
    let receiver = Arc::new(Receiver::from_secret(&secret)?);
    let listener = TcpListener::bind(addr).await?;
    eprintln!("receiving webhooks on http://{addr}/ (any path)");
    loop {
        let (stream, _) = listener.accept().await?;
        let receiver = receiver.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let receiver = receiver.clone();
                async move { Ok::<_, Infallible>(receiver.handle(req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection: {e}");
            }
        });
    }
}

// Run by `cargo test --workspace` (`test = true` for this example in Cargo.toml).
#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

    fn headers(id: &str, ts: u64, signature: &str) -> hyper::HeaderMap {
        let mut h = hyper::HeaderMap::new();
        for (name, value) in [
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", signature.to_owned()),
        ] {
            h.insert(name, value.parse().expect("header value"));
        }
        h
    }

    /// Signed with Python's `hmac` (the console's tests use the same vector).
    #[test]
    fn verifies_an_independently_signed_delivery_and_refuses_changes() {
        let receiver = Receiver::from_secret(SECRET).expect("secret");
        let body = br#"{"type":"segment.entered","timestamp":"2025-11-29T12:00:00.000Z","data":{"id":"chg_5d41402abc4b2a76b9719d911017c592","seq":7,"segment":"boot_fans","subject_id":"9c1e","change":"entered","reason":"matched","contact":{"email":"alice@example.com"}}}"#;
        let (id, ts) = ("chg_5d41402abc4b2a76b9719d911017c592", 1_764_417_600);
        let h = headers(id, ts, "v1,yx9xJ0c5UX3dxMtzkCJcLKfk2SbfLpEJYU8944PX4JY=");
        assert_eq!(receiver.verify(&h, body, ts + 299), Ok(id.to_owned()));
        let refused = |r: Result<String, Refusal>| r.map_err(|e| e.0);
        assert_eq!(
            refused(receiver.verify(&h, &body[1..], ts)),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            refused(receiver.verify(&h, body, ts + 301)),
            Err(StatusCode::UNAUTHORIZED)
        );
        let other =
            Receiver::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        assert_eq!(
            refused(other.verify(&h, body, ts)),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            refused(receiver.verify(&headers(id, ts, ""), body, ts)),
            Err(StatusCode::UNAUTHORIZED)
        );
    }

    /// What Spur's segment service sends verifies here.
    #[test]
    fn accepts_what_spur_signs() {
        let receiver = Receiver::from_secret(SECRET).expect("secret");
        let signer = spur_dispatch::webhook::Signer::from_secret(SECRET).expect("secret");
        let body = br#"{"type":"segment.exited","data":{}}"#;
        let ts = 1_800_000_000;
        let signature = format!("v1,AAAA {}", signer.sign("chg_1", ts, body));
        let h = headers("chg_1", ts.unsigned_abs(), &signature);
        assert_eq!(
            receiver.verify(&h, body, ts.unsigned_abs()),
            Ok("chg_1".to_owned())
        );
    }
}
