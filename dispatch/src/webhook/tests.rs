//! Delivery tests: [`Endpoint`] against a scripted local HTTP receiver that records
//! every request, for the headers and signature, retries, `Retry-After`, the bounds
//! (`max_age`, `max_attempts`), stopping, transport failures, timeouts and redirects;
//! then the live task and [`replay`] together: a receiver down longer than `max_age`
//! loses nothing, and per-subject order holds across parking and replay.

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
/// Retries enough for any scripted receiver here, whatever the change's age.
const PATIENT: Retry = Retry {
    until_ms: None,
    max_attempts: Some(20),
};

/// Change `seq` of `subject`, decided now.
fn fresh(seq: i64, subject: &str) -> spur_audience::Change {
    spur_audience::Change::new(
        seq,
        "boot_fans",
        subject,
        spur_audience::ChangeKind::Entered,
        "matched",
        chrono::Utc::now().timestamp_millis(),
    )
}

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
    /// The status it was answered with.
    status: u16,
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

    /// From now on, answer from `replies` instead.
    fn set_replies(&self, replies: Vec<Reply>) {
        self.take(|script| script.replies = replies.into());
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
        let reply = if script.replies.len() > 1 {
            script.replies.pop_front()
        } else {
            script.replies.front().cloned()
        }
        .unwrap_or_else(|| Reply::status(200));
        script.requests.push(Recorded {
            headers: parts.headers,
            body,
            status: reply.status,
        });
        reply
    };
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

    let outcome = guarded(endpoint.deliver(&change, PATIENT, &mut stop)).await?;

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

    let outcome = guarded(endpoint.deliver(&change, PATIENT, &mut stop)).await?;

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
    let outcome = guarded(endpoint.deliver(&change(), PATIENT, &mut stop)).await?;
    assert_eq!(outcome, Outcome::Delivered { attempts: 3 });
    assert_eq!(receiver.count(), 3);

    // An hour's Retry-After is capped at max_backoff (20ms here).
    let receiver = Receiver::start(vec![
        Reply::status(429).header("retry-after", "3600"),
        Reply::status(200),
    ])
    .await?;
    let endpoint = Endpoint::new(config(&receiver.url))?;
    let outcome = guarded(endpoint.deliver(&change(), PATIENT, &mut stop)).await?;
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
        max_attempts: Some(3),
        ..config(&receiver.url)
    })?;
    let (_stop, mut stop) = watch::channel(false);
    let change = fresh(1, "subject-1");

    let outcome =
        guarded(endpoint.deliver(&change, Retry::live(endpoint.config(), &change), &mut stop))
            .await?;

    let Outcome::Failed {
        attempts,
        error,
        bound,
        ..
    } = outcome
    else {
        anyhow::bail!("{outcome:?}, expected Failed");
    };
    assert_eq!(bound, Bound::MaxAttempts, "max_age is 3 days away");
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
        guarded(async { tokio::join!(endpoint.deliver(&change, PATIENT, &mut stopping), stopper) })
            .await?;

    sent?;
    assert_eq!(outcome, Outcome::Stopped);
    assert_eq!(receiver.count(), 1);
    // Stopped before it starts: nothing is sent.
    let outcome = guarded(endpoint.deliver(&change, PATIENT, &mut stopping)).await?;
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
        max_attempts: Some(2),
        ..config(&format!("http://127.0.0.1:{port}/hook?token=sekrit"))
    })?;
    let change = fresh(1, "subject-1");

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
    let retry = Retry::live(endpoint.config(), &change);
    let outcome = guarded(endpoint.deliver(&change, retry, &mut stop)).await?;
    assert!(
        matches!(outcome, Outcome::Failed { attempts: 2, .. }),
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

#[tokio::test]
async fn a_change_is_retried_until_max_age_from_its_decision() -> anyhow::Result<()> {
    let receiver = Receiver::start(vec![Reply::status(500)]).await?;
    let endpoint = Endpoint::new(WebhookConfig {
        max_age: Duration::from_millis(300),
        ..config(&receiver.url)
    })?;
    let (_stop, mut stop) = watch::channel(false);

    let change = fresh(1, "subject-1");
    let started = std::time::Instant::now();
    let retry = Retry::live(endpoint.config(), &change);
    let outcome = guarded(endpoint.deliver(&change, retry, &mut stop)).await?;
    let took = started.elapsed();
    let Outcome::Failed {
        attempts,
        bound,
        first_attempt_ms,
        ..
    } = outcome
    else {
        anyhow::bail!("{outcome:?}, expected Failed");
    };
    assert_eq!(bound, Bound::MaxAge);
    assert!(attempts >= 5, "retried with 10-20ms waits: {attempts}");
    assert_eq!(receiver.count(), attempts as usize);
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(5),
        "retried until max_age, not past it: {took:?}"
    );
    assert!((change.at_ms..=change.at_ms + 100).contains(&first_attempt_ms));

    // Decided longer ago than max_age: one attempt, then parked.
    let old = spur_audience::Change {
        at_ms: chrono::Utc::now().timestamp_millis() - 3_600_000,
        ..fresh(2, "subject-1")
    };
    let retry = Retry::live(endpoint.config(), &old);
    let outcome = guarded(endpoint.deliver(&old, retry, &mut stop)).await?;
    assert!(
        matches!(
            outcome,
            Outcome::Failed {
                attempts: 1,
                bound: Bound::MaxAge,
                ..
            }
        ),
        "{outcome:?}"
    );
    Ok(())
}

/// Every accepted (2xx) request: (webhook-id, body), signatures checked.
fn accepted(receiver: &Receiver) -> anyhow::Result<Vec<(String, Bytes)>> {
    let signer = Signer::from_secret(VECTOR_SECRET)?;
    let now = chrono::Utc::now().timestamp();
    receiver.take(|script| {
        script
            .requests
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .map(|r| {
                let header = |name: &str| -> anyhow::Result<&str> {
                    Ok(r.headers.get(name).context(name.to_owned())?.to_str()?)
                };
                signer.verify(
                    header(HEADER_ID)?,
                    header(HEADER_TIMESTAMP)?,
                    header(HEADER_SIGNATURE)?,
                    &r.body,
                    now,
                    DEFAULT_TOLERANCE,
                )?;
                Ok((header(HEADER_ID)?.to_owned(), r.body.clone()))
            })
            .collect()
    })
}

async fn eventually(what: &str, check: impl Fn() -> bool) -> anyhow::Result<()> {
    guarded(async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .with_context(|| format!("never: {what}"))
}

fn parked_seqs(state: &std::path::Path) -> anyhow::Result<Vec<i64>> {
    Ok(Parking::open(state, "crm")?
        .entries()
        .map(|e| e.seq)
        .collect())
}

/// The `/readyz` note of `webhook:crm` (`None`: none), once the component is ready
/// (parked changes never make the service unready).
fn readiness(health: &spur_telemetry::Health) -> Option<Option<String>> {
    let report = health.report();
    let ready = report
        .components
        .iter()
        .any(|(name, why)| *name == "webhook:crm" && why.is_none());
    ready.then(|| {
        report
            .notes
            .into_iter()
            .find(|(name, _)| *name == "webhook:crm")
            .map(|(_, note)| note)
    })
}

#[tokio::test]
async fn a_receiver_down_past_max_age_loses_nothing_and_replay_keeps_subject_order()
-> anyhow::Result<()> {
    let receiver = Receiver::start(vec![Reply::status(500)]).await?;
    let dir = tempfile::tempdir()?;
    let state = dir.path().to_path_buf();
    let config = WebhookConfig {
        max_age: Duration::from_millis(150),
        ..config(&receiver.url)
    };
    let outbox = crate::outbox::Outbox::new(1);
    let metrics = Arc::new(spur_telemetry::Metrics::default());
    let health = spur_telemetry::Health::default();
    let (stop, stopping) = watch::channel(false);
    let sink = WebhookSink::open(&config, &state)?;
    let task = tokio::spawn(sink.run(
        0,
        outbox.clone(),
        stopping.clone(),
        metrics.clone(),
        health.clone(),
    ));

    // The receiver refuses everything for longer than max_age.
    let (a, b, c, d) = ("subject-a", "subject-b", "subject-c", "subject-d");
    let mut all = vec![fresh(1, a), fresh(2, b), fresh(3, a), fresh(4, c)];
    outbox.push(all.clone());
    eventually("four changes parked", || {
        parked_seqs(&state).is_ok_and(|s| s == [1, 2, 3, 4])
    })
    .await?;
    let entries: Vec<Parked> = Parking::open(&state, "crm")?.entries().cloned().collect();
    assert_eq!(entries[0].reason, ParkReason::MaxAge);
    assert!(entries[0].attempts >= 2, "{:?}", entries[0]);
    assert!(entries[0].first_attempt_at.is_some() && entries[0].error.is_some());
    assert_eq!(
        entries[2].reason,
        ParkReason::SubjectParked,
        "a's second waits"
    );
    assert_eq!(entries[2].behind, Some(1));
    assert_eq!(entries[2].attempts, 0);
    let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, all.iter().map(|c| c.id.as_str()).collect::<Vec<_>>());
    let seq3_attempts = receiver.take(|script| {
        script
            .requests
            .iter()
            .filter(|r| {
                r.headers
                    .get(HEADER_ID)
                    .is_some_and(|v| v == all[2].id.as_str())
            })
            .count()
    });
    assert_eq!(seq3_attempts, 0, "parked behind a's first, never attempted");

    // Back up: a's next change is parked behind its first, d's goes live.
    receiver.set_replies(vec![Reply::status(204)]);
    let later = vec![fresh(5, a), fresh(6, d)];
    all.extend(later.clone());
    outbox.push(later);
    eventually("d delivered live", || {
        receiver.count() > 0 && accepted(&receiver).is_ok_and(|r| r.len() == 1)
    })
    .await?;
    eventually("a's third parked", || {
        parked_seqs(&state).is_ok_and(|s| s == [1, 2, 3, 4, 5])
    })
    .await?;
    eventually("readiness shows five parked", || {
        readiness(&health)
            .flatten()
            .is_some_and(|why| why.starts_with("5 changes parked"))
    })
    .await?;
    assert!(
        metrics
            .render()
            .contains("spur_segments_webhook_parked{sink=\"webhook:crm\"} 5"),
        "{}",
        metrics.render()
    );

    // Replay, with the lake played by the changes themselves; seq 4 was erased.
    let lake: Vec<spur_audience::Change> = all.iter().filter(|c| c.seq != 4).cloned().collect();
    let load = async |seqs: &[i64]| -> crate::Result<Vec<spur_audience::Change>> {
        Ok(lake
            .iter()
            .filter(|c| seqs.contains(&c.seq))
            .cloned()
            .collect())
    };
    let (_never, no_stop) = watch::channel(false);
    let replayed = guarded(replay(&config, &state, load, no_stop)).await??;
    assert_eq!(
        replayed,
        Replayed {
            webhook: "crm".into(),
            delivered: 4,
            gone: 1,
            remaining: 0,
            stopped: None,
        }
    );
    assert!(parked_seqs(&state)?.is_empty());

    // a's next change is live again: after its replayed ones.
    let last = fresh(7, a);
    all.push(last.clone());
    outbox.push(vec![last]);
    eventually("a's last delivered live", || {
        accepted(&receiver).is_ok_and(|r| r.len() == 6)
    })
    .await?;

    // Every change exactly once, except the erased one; original ids and bodies.
    let by_seq = |seq: i64| all.iter().find(|c| c.seq == seq).context("seq");
    let got = accepted(&receiver)?;
    let mut expected = Vec::new();
    for seq in [6, 1, 2, 3, 5, 7] {
        let change = by_seq(seq)?;
        expected.push((change.id.clone(), Bytes::from(change.body())));
    }
    assert_eq!(got, expected);
    let of_a: Vec<&str> = got
        .iter()
        .filter(|(_, body)| String::from_utf8_lossy(body).contains(a))
        .map(|(id, _)| id.as_str())
        .collect();
    let a_ids: Vec<&str> = [1, 3, 5, 7]
        .into_iter()
        .map(|seq| by_seq(seq).map(|c| c.id.as_str()))
        .collect::<anyhow::Result<_>>()?;
    assert_eq!(of_a, a_ids, "a's changes in seq order");
    eventually("readiness fine again", || readiness(&health) == Some(None)).await?;
    assert!(
        metrics
            .render()
            .contains("spur_segments_webhook_parked{sink=\"webhook:crm\"} 0")
    );

    stop.send(true)?;
    guarded(task).await??;
    Ok(())
}

#[tokio::test]
async fn replay_stops_at_a_refusal_keeps_the_rest_and_runs_alone() -> anyhow::Result<()> {
    let receiver = Receiver::start(vec![Reply::status(204), Reply::status(500)]).await?;
    let dir = tempfile::tempdir()?;
    let config = config(&receiver.url);
    let changes = [
        fresh(1, "subject-a"),
        fresh(2, "subject-b"),
        fresh(3, "subject-a"),
    ];
    let mut parking = Parking::open(dir.path(), "crm")?;
    for change in &changes {
        parking.park(Parked::new(change, ParkReason::MaxAge))?;
    }
    let load = async |seqs: &[i64]| -> crate::Result<Vec<spur_audience::Change>> {
        Ok(changes
            .iter()
            .filter(|c| seqs.contains(&c.seq))
            .cloned()
            .collect())
    };

    // A second replay of the same webhook is refused while one runs.
    let held = super::replay::exclusive(dir.path(), "crm")?;
    let (_never, no_stop) = watch::channel(false);
    let refused = replay(&config, dir.path(), &load, no_stop.clone()).await;
    let message = refused.err().context("a concurrent replay ran")?.chain();
    assert!(message.contains("another replay"), "{message}");
    assert_eq!(receiver.count(), 0);
    drop(held);

    // The first is delivered; the second refused REPLAY_ATTEMPTS times: stop there.
    let replayed = guarded(replay(&config, dir.path(), &load, no_stop.clone())).await??;
    assert_eq!((replayed.delivered, replayed.remaining), (1, 2));
    let why = replayed.stopped.context("stopped")?;
    assert!(
        why.contains(&changes[1].id) && why.contains("HTTP 500"),
        "{why}"
    );
    assert_eq!(receiver.count(), 1 + REPLAY_ATTEMPTS as usize);
    assert_eq!(parked_seqs(dir.path())?, [2, 3]);

    // Again, once the receiver takes them: the rest, in order, once each.
    receiver.set_replies(vec![Reply::status(200)]);
    let replayed = guarded(replay(&config, dir.path(), &load, no_stop)).await??;
    assert_eq!(
        (replayed.delivered, replayed.remaining, replayed.stopped),
        (2, 0, None)
    );
    let ids: Vec<String> = accepted(&receiver)?.into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        ids,
        changes.iter().map(|c| c.id.clone()).collect::<Vec<_>>()
    );
    Ok(())
}
