//! Delivery tests: [`Endpoint`] against a scripted local HTTP receiver that records
//! every request, for the headers and signature, retries, `Retry-After`, giving up,
//! stopping, transport failures, timeouts and redirects.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use super::config::test_support::{VECTOR_SECRET, change, config};
use super::*;

/// Only a guard against a hang: no test should come near it.
const HANG_GUARD: Duration = Duration::from_secs(30);
const HOUR: Duration = Duration::from_secs(3600);

/// One scripted answer of the test receiver.
#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, &'static str)>,
    body: String,
    delay: Duration,
}

impl Reply {
    fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Reply {
        self.headers.push((name, value));
        self
    }
}

struct Recorded {
    headers: hyper::HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct Script {
    replies: VecDeque<Reply>,
    requests: Vec<Recorded>,
}

/// A local HTTP server that records every request and answers from a script;
/// the last reply repeats.
struct Receiver {
    url: String,
    script: Arc<Mutex<Script>>,
}

impl Receiver {
    async fn start(replies: Vec<Reply>) -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let script = Arc::new(Mutex::new(Script {
            replies: replies.into(),
            requests: Vec::new(),
        }));
        let shared = Arc::clone(&script);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let script = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |request| answer(Arc::clone(&script), request));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Receiver {
            url: format!("http://{addr}/hooks/spur"),
            script,
        })
    }

    fn take<T>(&self, read: impl FnOnce(&mut Script) -> T) -> T {
        read(&mut self.script.lock().expect("receiver lock"))
    }

    fn count(&self) -> usize {
        self.take(|script| script.requests.len())
    }

    async fn wait_for_requests(&self, count: usize) {
        while self.count() < count {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn answer(
    script: Arc<Mutex<Script>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let reply = {
        let mut script = script.lock().expect("receiver lock");
        script.requests.push(Recorded {
            headers: parts.headers,
            body,
        });
        if script.replies.len() > 1 {
            script.replies.pop_front()
        } else {
            script.replies.front().cloned()
        }
    }
    .unwrap_or_else(|| Reply::status(200));
    tokio::time::sleep(reply.delay).await;
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() = hyper::StatusCode::from_u16(reply.status).expect("scripted status");
    for (name, value) in reply.headers {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    Ok(response)
}

async fn guarded<T>(future: impl Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(HANG_GUARD, future)
        .await
        .context("hung: no result within the hang guard")
}

#[tokio::test]
async fn delivery_sends_the_body_with_verifiable_standard_headers() -> anyhow::Result<()> {
    let receiver = Receiver::start(vec![Reply::status(204)]).await?;
    let endpoint = Endpoint::new(config(&receiver.url))?;
    let change = change();
    let (_stop, mut stop) = watch::channel(false);

    let outcome = guarded(endpoint.deliver(&change, &mut stop)).await?;

    assert_eq!(outcome, Outcome::Delivered { attempts: 1 });
    let now = chrono::Utc::now().timestamp();
    receiver.take(|script| -> anyhow::Result<()> {
        let [request] = script.requests.as_slice() else {
            anyhow::bail!("{} requests, expected 1", script.requests.len());
        };
        let header = |name: &str| -> anyhow::Result<&str> {
            let value = request.headers.get(name).context(name.to_owned())?;
            Ok(value.to_str()?)
        };
        assert_eq!(request.body.as_ref(), change.body().as_slice());
        assert_eq!(header("content-type")?, "application/json");
        assert_eq!(header(HEADER_ID)?, change.id);
        assert!(header("user-agent")?.starts_with("spur/"));
        Signer::from_secret(VECTOR_SECRET)?.verify(
            header(HEADER_ID)?,
            header(HEADER_TIMESTAMP)?,
            header(HEADER_SIGNATURE)?,
            &request.body,
            now,
            DEFAULT_TOLERANCE,
        )?;
        Ok(())
    })
}

#[tokio::test]
async fn failures_are_retried_with_the_same_id_and_a_fresh_signature() -> anyhow::Result<()> {
    let receiver = Receiver::start(vec![
        Reply::status(500),
        Reply::status(500),
        Reply::status(200),
    ])
    .await?;
    let endpoint = Endpoint::new(config(&receiver.url))?;
    let change = change();
    let (_stop, mut stop) = watch::channel(false);

    let outcome = guarded(endpoint.deliver(&change, &mut stop)).await?;

    assert_eq!(outcome, Outcome::Delivered { attempts: 3 });
    let signer = Signer::from_secret(VECTOR_SECRET)?;
    let now = chrono::Utc::now().timestamp();
    receiver.take(|script| -> anyhow::Result<()> {
        assert_eq!(script.requests.len(), 3);
        for request in &script.requests {
            let header = |name: &str| -> anyhow::Result<&str> {
                Ok(request
                    .headers
                    .get(name)
                    .context(name.to_owned())?
                    .to_str()?)
            };
            assert_eq!(header(HEADER_ID)?, change.id);
            signer.verify(
                &change.id,
                header(HEADER_TIMESTAMP)?,
                header(HEADER_SIGNATURE)?,
                &request.body,
                now,
                DEFAULT_TOLERANCE,
            )?;
        }
        Ok(())
    })
}

#[tokio::test]
async fn retry_after_replaces_the_backoff_up_to_the_cap() -> anyhow::Result<()> {
    // With an hour of backoff, only Retry-After can bring the retries inside the
    // hang guard.
    let receiver = Receiver::start(vec![
        Reply::status(429).header("retry-after", "0"),
        Reply::status(503).header("retry-after", "1"),
        Reply::status(200),
    ])
    .await?;
    let slow = WebhookConfig {
        initial_backoff: HOUR,
        max_backoff: HOUR,
        ..config(&receiver.url)
    };
    let endpoint = Endpoint::new(slow)?;
    let (_stop, mut stop) = watch::channel(false);
    let outcome = guarded(endpoint.deliver(&change(), &mut stop)).await?;
    assert_eq!(outcome, Outcome::Delivered { attempts: 3 });
    assert_eq!(receiver.count(), 3);

    // An hour's Retry-After is capped at max_backoff (20ms here).
    let receiver = Receiver::start(vec![
        Reply::status(429).header("retry-after", "3600"),
        Reply::status(200),
    ])
    .await?;
    let endpoint = Endpoint::new(config(&receiver.url))?;
    let outcome = guarded(endpoint.deliver(&change(), &mut stop)).await?;
    assert_eq!(outcome, Outcome::Delivered { attempts: 2 });
    Ok(())
}

#[tokio::test]
async fn delivery_gives_up_after_max_attempts_with_the_last_error() -> anyhow::Result<()> {
    let receiver = Receiver::start(vec![Reply {
        body: "x".repeat(300),
        ..Reply::status(500)
    }])
    .await?;
    let endpoint = Endpoint::new(WebhookConfig {
        max_attempts: 3,
        ..config(&receiver.url)
    })?;
    let (_stop, mut stop) = watch::channel(false);

    let outcome = guarded(endpoint.deliver(&change(), &mut stop)).await?;

    let Outcome::GaveUp { attempts, error } = outcome else {
        anyhow::bail!("{outcome:?}, expected GaveUp");
    };
    assert_eq!(attempts, 3);
    assert_eq!(receiver.count(), 3);
    assert!(
        error.starts_with("HTTP 500 Internal Server Error"),
        "{error}"
    );
    assert!(error.contains(&"x".repeat(200)), "{error}");
    assert!(!error.contains(&"x".repeat(201)), "{error}");
    Ok(())
}

#[tokio::test]
async fn a_stop_ends_a_backoff_at_once() -> anyhow::Result<()> {
    let receiver = Receiver::start(vec![Reply::status(500)]).await?;
    let endpoint = Endpoint::new(WebhookConfig {
        initial_backoff: HOUR,
        max_backoff: HOUR,
        ..config(&receiver.url)
    })?;
    let change = change();
    let (stop, mut stopping) = watch::channel(false);
    let stopper = async {
        receiver.wait_for_requests(1).await;
        stop.send(true)
    };

    let (outcome, sent) =
        guarded(async { tokio::join!(endpoint.deliver(&change, &mut stopping), stopper) }).await?;

    sent?;
    assert_eq!(outcome, Outcome::Stopped);
    assert_eq!(receiver.count(), 1);
    // Stopped before it starts: nothing is sent.
    let outcome = guarded(endpoint.deliver(&change, &mut stopping)).await?;
    assert_eq!(outcome, Outcome::Stopped);
    assert_eq!(receiver.count(), 1);
    Ok(())
}

#[tokio::test]
async fn transport_failures_fail_the_attempt_without_showing_the_url() -> anyhow::Result<()> {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let endpoint = Endpoint::new(WebhookConfig {
        max_attempts: 2,
        ..config(&format!("http://127.0.0.1:{port}/hook?token=sekrit"))
    })?;
    let change = change();

    let error = guarded(endpoint.attempt(&change, &change.body()))
        .await?
        .err()
        .context("nothing listens, yet the attempt succeeded")?;
    assert_eq!(error.status, None);
    assert_eq!(error.retry_after, None);
    assert!(
        error.description.starts_with("request failed: ")
            && error.description.to_lowercase().contains("connect"),
        "{error}"
    );
    assert!(!error.description.contains("sekrit"), "{error}");

    let (_stop, mut stop) = watch::channel(false);
    let outcome = guarded(endpoint.deliver(&change, &mut stop)).await?;
    assert!(
        matches!(outcome, Outcome::GaveUp { attempts: 2, .. }),
        "{outcome:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_slow_receiver_times_out_and_a_redirect_is_not_followed() -> anyhow::Result<()> {
    let receiver = Receiver::start(vec![Reply {
        delay: Duration::from_secs(20),
        ..Reply::status(200)
    }])
    .await?;
    let endpoint = Endpoint::new(WebhookConfig {
        timeout: Duration::from_millis(100),
        ..config(&receiver.url)
    })?;
    let change = change();
    let error = guarded(endpoint.attempt(&change, &change.body()))
        .await?
        .err()
        .context("the receiver never answered, yet the attempt succeeded")?;
    assert_eq!(error.description, "no response within 100ms");
    assert_eq!(error.status, None);

    let receiver = Receiver::start(vec![
        Reply::status(302).header("location", "http://127.0.0.1:9/elsewhere"),
    ])
    .await?;
    let endpoint = Endpoint::new(config(&receiver.url))?;
    let error = guarded(endpoint.attempt(&change, &change.body()))
        .await?
        .err()
        .context("a redirect is not a delivery")?;
    assert_eq!(error.status, Some(302));
    assert!(
        error.description.contains("redirects are not followed"),
        "{error}"
    );
    assert_eq!(receiver.count(), 1);
    Ok(())
}
