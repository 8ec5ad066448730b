//! HTTP answers: every refusal the collector gives is a [`Rejection`], mapped to a
//! status, a machine-readable code and a sentence in exactly one place
//! ([`Rejection::into_response`]). Also the body reader with its size limit.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
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
            Rejection::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Rejection::UnknownSite | Rejection::OriginNotAllowed | Rejection::InvalidToken => {
                StatusCode::FORBIDDEN
            }
            Rejection::BrokerUnavailable { .. } | Rejection::NotAcknowledged { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Rejection::NotFound | Rejection::UnsubscribeDisabled => StatusCode::NOT_FOUND,
            Rejection::MethodNotAllowed { .. } | Rejection::OneClickOnly => {
                StatusCode::METHOD_NOT_ALLOWED
            }
        }
    }

    fn code_and_message(&self) -> (&'static str, String) {
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
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let (code, message) = self.code_and_message();
        let mut response = json_response(status, &json!({ "error": code, "message": message }));
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
    fn unavailable_answers_carry_retry_after() {
        let response = Rejection::BrokerUnavailable {
            retry_after: Duration::from_secs(7),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    }
}
