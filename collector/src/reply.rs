//! HTTP answers: every refusal the collector gives is a [`Rejection`], mapped to a
//! status, a machine-readable code and a sentence in exactly one place
//! ([`Rejection::into_response`], or [`Rejection::into_page`] for the pages a person
//! sees). Also the body reader with its size limit.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::json;

pub type Body = Full<Bytes>;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    BodyTooLarge {
        limit: usize,
    },
    BodyTimeout,
    BodyUnreadable,
    UnsupportedMediaType,
    Malformed(String),
    UnknownSite,
    OriginNotAllowed,
    BatchTooLarge {
        limit: usize,
    },
    BrokerUnavailable {
        retry_after: Duration,
    },
    NotAcknowledged {
        accepted: usize,
        retry_after: Duration,
    },
    NotFound,
    MethodNotAllowed {
        allow: &'static str,
    },
    /// `/v1/unsubscribe` without `unsubscribe.key` configured.
    UnsubscribeDisabled,
    /// An unsubscribe token that is missing, malformed or not signed by the key: one
    /// answer for all, so a client learns nothing about which part was wrong.
    InvalidToken,
    /// An unsubscribe POST whose body is not `List-Unsubscribe=One-Click`.
    NotOneClick(&'static str),
    /// Any method but POST on `/v1/unsubscribe`: link scanners open links, and opening
    /// one must not unsubscribe anyone (RFC 8058 §3).
    OneClickOnly,
    /// `/v1/confirm` without `confirm.key` configured.
    ConfirmDisabled,
    /// A confirmation token that is missing, malformed or not signed by the key.
    ConfirmInvalid,
    /// A confirmation token signed by the key whose time is over. Told apart from
    /// [`Rejection::ConfirmInvalid`] only after the signature verified, so it reveals
    /// nothing to someone without a real link.
    ConfirmExpired,
    /// A confirmation POST whose body is neither empty nor a form.
    ConfirmNotForm,
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::BodyTooLarge { .. } | Rejection::BatchTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Rejection::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Rejection::BodyUnreadable | Rejection::Malformed(_) | Rejection::NotOneClick(_) => {
                StatusCode::BAD_REQUEST
            }
            Rejection::UnsupportedMediaType | Rejection::ConfirmNotForm => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Rejection::UnknownSite
            | Rejection::OriginNotAllowed
            | Rejection::InvalidToken
            | Rejection::ConfirmInvalid
            | Rejection::ConfirmExpired => StatusCode::FORBIDDEN,
            Rejection::BrokerUnavailable { .. } | Rejection::NotAcknowledged { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Rejection::NotFound | Rejection::UnsubscribeDisabled | Rejection::ConfirmDisabled => {
                StatusCode::NOT_FOUND
            }
            Rejection::MethodNotAllowed { .. } | Rejection::OneClickOnly => {
                StatusCode::METHOD_NOT_ALLOWED
            }
        }
    }

    /// The machine-readable code and the sentence of the answer.
    pub fn code_and_message(&self) -> (&'static str, String) {
        match self {
            Rejection::BodyTooLarge { limit } => (
                "body_too_large",
                format!("request body exceeds {limit} bytes"),
            ),
            Rejection::BodyTimeout => ("body_timeout", "request body not received in time".into()),
            Rejection::BodyUnreadable => {
                ("body_unreadable", "request body could not be read".into())
            }
            Rejection::UnsupportedMediaType => (
                "unsupported_media_type",
                "content-type must be application/json or text/plain".into(),
            ),
            Rejection::Malformed(why) => ("malformed", why.clone()),
            Rejection::UnknownSite => ("unknown_site", "site is not registered".into()),
            Rejection::OriginNotAllowed => (
                "origin_not_allowed",
                "origin is not a registered host of the site".into(),
            ),
            Rejection::BatchTooLarge { limit } => (
                "batch_too_large",
                format!("more than {limit} events in one request"),
            ),
            Rejection::BrokerUnavailable { .. } => (
                "broker_unavailable",
                "events cannot be stored right now; retry later".into(),
            ),
            Rejection::NotAcknowledged { accepted, .. } => (
                "not_acknowledged",
                format!(
                    "{accepted} events were stored, the rest were not acknowledged in time; retry the request"
                ),
            ),
            Rejection::NotFound => ("not_found", "no such endpoint".into()),
            Rejection::MethodNotAllowed { .. } => {
                ("method_not_allowed", "method not allowed here".into())
            }
            Rejection::UnsubscribeDisabled => (
                "unsubscribe_disabled",
                "one-click unsubscribe is not enabled on this collector".into(),
            ),
            Rejection::InvalidToken => (
                "invalid_token",
                "this unsubscribe link is not valid".into(),
            ),
            Rejection::NotOneClick(why) => ("not_one_click", (*why).to_owned()),
            Rejection::OneClickOnly => (
                "method_not_allowed",
                "unsubscribing takes the mail program's one-click unsubscribe (a POST, RFC 8058); opening this link changes nothing".into(),
            ),
            Rejection::ConfirmDisabled => (
                "confirm_disabled",
                "double opt-in confirmation is not enabled on this collector".into(),
            ),
            Rejection::ConfirmInvalid => (
                "invalid_token",
                "this confirmation link is not valid".into(),
            ),
            Rejection::ConfirmExpired => (
                "expired_token",
                "this confirmation link has expired; sign up again to get a new one".into(),
            ),
            Rejection::ConfirmNotForm => (
                "unsupported_media_type",
                "a confirmation is an empty body or a form (application/x-www-form-urlencoded or multipart/form-data)".into(),
            ),
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let (code, message) = self.code_and_message();
        let response = json_response(status, &json!({ "error": code, "message": message }));
        self.with_headers(response)
    }

    /// The same refusal (status and headers) as an HTML page for a person in a
    /// browser; `render` makes the page from the code and the sentence.
    pub fn into_page(self, render: impl FnOnce(&'static str, &str) -> String) -> Response<Body> {
        let (code, message) = self.code_and_message();
        let response = html_response(self.status(), render(code, &message));
        self.with_headers(response)
    }

    /// The headers a refusal carries besides its body: `Retry-After`, `Allow`,
    /// `Connection: close`.
    fn with_headers(self, mut response: Response<Body>) -> Response<Body> {
        let headers = response.headers_mut();
        match self {
            Rejection::BrokerUnavailable { retry_after }
            | Rejection::NotAcknowledged { retry_after, .. } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after.as_secs().max(1)),
                );
            }
            Rejection::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            Rejection::OneClickOnly => {
                headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            Rejection::BodyTooLarge { .. } | Rejection::BodyTimeout => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The policy of every HTML page the collector serves: nothing may load, run, frame
/// or be framed; forms post to the collector only; the one inline style block is
/// allowed by its hash ([`PAGE_STYLE`]).
pub const PAGE_CSP: &str = "default-src 'none'; style-src 'sha256-Bf8biWZvvuunYfo38X8PZ0w3pCrXzm0gI7aJyBO/O2g='; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The style block of the collector's HTML pages, allowed by hash in [`PAGE_CSP`]:
/// change both together (a unit test checks the hash).
pub const PAGE_STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;margin:0;padding:2rem 1rem;color:#222;background:#f6f6f4}main{max-width:32rem;margin:auto;background:#fff;padding:1.5rem 2rem;border-radius:8px}button{font:inherit;padding:.6rem 1.2rem;border:0;border-radius:6px;background:#1d5fd1;color:#fff;cursor:pointer}.note{color:#666;font-size:.9rem}";

/// A self-contained HTML page (no external resource, no script): never cached,
/// framed, indexed or sent as a referrer.
pub fn html_response(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    page_headers(headers, PAGE_CSP, "no-referrer");
    response
}

/// What every page the collector serves carries: its content security policy, its
/// referrer policy, and that it is never framed or indexed.
pub fn page_headers(headers: &mut HeaderMap, csp: &'static str, referrer: &'static str) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static(referrer));
    headers.insert("x-robots-tag", HeaderValue::from_static("noindex"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

pub fn text_response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// A strong entity tag for a body served from memory: the first 8 bytes of its
/// SHA-256, in hex.
pub fn etag_of(body: &[u8]) -> HeaderValue {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(body);
    HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..8])))
        .expect("hex is a valid header")
}

/// Whether a request's `If-None-Match` names `etag` (or is `*`). The comparison is
/// weak, as RFC 9110 §13.1.2 asks: `W/"x"` matches `"x"`.
fn none_match(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    let ours = strip(etag.to_str().unwrap_or_default());
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == "*" || strip(tag) == ours)
}

/// A body held in memory, served with its `ETag` and `Cache-Control`; `304 Not
/// Modified` with the same two headers and no body when the request's
/// `If-None-Match` names the tag.
pub fn cached_response(
    request: &HeaderMap,
    content_type: &'static str,
    body: &Bytes,
    etag: &HeaderValue,
    cache_control: &'static str,
) -> Response<Body> {
    let (status, body) = if none_match(request, etag) {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else {
        (StatusCode::OK, body.clone())
    };
    let mut response = text_response(status, content_type, body);
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag.clone());
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    response
}

/// Reads a request body of at most `limit` bytes. A declared `Content-Length` over the
/// limit is refused before reading; otherwise reading stops at the first chunk that
/// takes the total past the limit, so at most one chunk past `limit` is ever held.
pub async fn read_body<B>(
    body: B,
    declared: Option<u64>,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, Rejection>
where
    B: hyper::body::Body + Unpin,
    B::Data: Into<Bytes>,
{
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(Rejection::BodyTooLarge { limit });
    }
    let read = async move {
        let mut body = body;
        let mut buf = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| Rejection::BodyUnreadable)?;
            if let Ok(data) = frame.into_data() {
                let data: Bytes = data.into();
                if buf.len() + data.len() > limit {
                    return Err(Rejection::BodyTooLarge { limit });
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf.freeze())
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| Rejection::BodyTimeout)?
}

/// Text for HTML content and attribute values: `&`, `<`, `>`, `"` and `'` as
/// character references. The one escaper of Spur's own pages (the confirmation page
/// here, `spur up`'s console).
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    #[tokio::test]
    async fn limits_body_size() {
        let ok = read_body(
            Full::new(Bytes::from_static(b"12345")),
            Some(5),
            5,
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(ok.expect("fits"), Bytes::from_static(b"12345"));
        let declared = read_body(Full::new(Bytes::new()), Some(6), 5, Duration::from_secs(1)).await;
        assert_eq!(declared, Err(Rejection::BodyTooLarge { limit: 5 }));
        // An endless body is refused once past the limit, not read to the end.
        let endless = futures::stream::repeat_with(|| {
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from_static(b"xx")))
        });
        let refused = read_body(StreamBody::new(endless), None, 5, Duration::from_secs(5)).await;
        assert_eq!(refused, Err(Rejection::BodyTooLarge { limit: 5 }));
    }

    #[test]
    fn the_page_policy_allows_exactly_the_page_style() {
        use sha2::{Digest, Sha256};
        // Standard base64 with padding, as CSP hash sources are written.
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let digest = Sha256::digest(PAGE_STYLE.as_bytes());
        let mut encoded = String::new();
        for chunk in digest.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..4 {
                if i <= chunk.len() {
                    encoded.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    encoded.push('=');
                }
            }
        }
        assert!(
            PAGE_CSP.contains(&format!("style-src 'sha256-{encoded}';")),
            "update PAGE_CSP: style-src 'sha256-{encoded}'"
        );
        let response = html_response(StatusCode::OK, "<p>x</p>".into());
        let h = response.headers();
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], PAGE_CSP);
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(h["x-robots-tag"], "noindex");
    }

    #[test]
    fn pages_keep_the_status_and_headers_of_the_refusal() {
        let page = Rejection::BrokerUnavailable {
            retry_after: Duration::from_secs(7),
        }
        .into_page(|code, message| format!("<p>{code}: {message}</p>"));
        assert_eq!(page.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(page.headers()[header::RETRY_AFTER], "7");
        assert_eq!(
            page.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let page = Rejection::MethodNotAllowed {
            allow: "GET, HEAD, POST",
        }
        .into_page(|code, _| code.to_owned());
        assert_eq!(page.headers()[header::ALLOW], "GET, HEAD, POST");
    }

    #[test]
    fn cached_bodies_answer_not_modified_to_their_tag() {
        let body = Bytes::from_static(b"body");
        let etag = etag_of(&body);
        let fresh = cached_response(&HeaderMap::new(), "text/css", &body, &etag, "no-cache");
        assert_eq!(fresh.status(), StatusCode::OK);
        assert_eq!(fresh.headers()[header::ETAG], etag);
        assert_eq!(fresh.headers()[header::CACHE_CONTROL], "no-cache");
        let tag = etag.to_str().expect("ascii");
        for sent in [
            tag.to_owned(),
            format!("W/{tag}"),
            format!("\"x\", {tag}"),
            "*".into(),
        ] {
            let mut request = HeaderMap::new();
            request.insert(header::IF_NONE_MATCH, sent.parse().expect("header"));
            let cached = cached_response(&request, "text/css", &body, &etag, "no-cache");
            assert_eq!(cached.status(), StatusCode::NOT_MODIFIED, "{sent}");
            assert_eq!(cached.headers()[header::ETAG], etag);
            assert_eq!(cached.headers()[header::CACHE_CONTROL], "no-cache");
        }
        let mut other = HeaderMap::new();
        other.insert(header::IF_NONE_MATCH, "\"other\"".parse().expect("header"));
        let changed = cached_response(&other, "text/css", &body, &etag, "no-cache");
        assert_eq!(changed.status(), StatusCode::OK);
    }

    #[test]
    fn unavailable_answers_carry_retry_after() {
        let response = Rejection::BrokerUnavailable {
            retry_after: Duration::from_secs(7),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    }
}
