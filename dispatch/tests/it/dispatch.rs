//! The segment service end to end inside one process: a real lake, librdkafka's mock
//! cluster as the broker and a webhook receiver on loopback. A subject enters a
//! segment, then withdraws consent; the service is crashed (its runtime dropped)
//! while the exit's webhook request is in flight, and restarted. Exactly the two
//! changes reach the topic, once each and in order; the receiver sees exactly those
//! two ids (the interrupted one again, with the same id and body), every signature
//! valid; the subject without consent never appears.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use spur_audience::{LifecycleConfig, SegmentDef};
use spur_dispatch::sink::HEADER_SEQ;
use spur_dispatch::webhook::{DEFAULT_TOLERANCE, Signer, WebhookConfig};
use spur_dispatch::{Config, SegmentsConfig};
use spur_schemas::kafka::KafkaSettings;
use spur_schemas::secret::Secret;
use spur_testkit::{BOOT_FANS, Writer, boot_views, consent, root, signup};

pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The testkit's `boot_fans` and `customers` segments, as the engine takes them.
pub(crate) fn boot_fans() -> Vec<SegmentDef> {
    BOOT_FANS
        .iter()
        .map(|(name, condition)| SegmentDef {
            name: (*name).into(),
            condition: (*condition).into(),
        })
        .collect()
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) id: String,
    pub(crate) timestamp: String,
    pub(crate) signature: String,
    pub(crate) body: Vec<u8>,
    /// The status it was answered with (none: left hanging).
    pub(crate) status: Option<u16>,
}

impl Received {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

#[derive(Default)]
struct ReceiverState {
    requests: Vec<Received>,
    /// While set, a `segment.exited` request is never answered.
    hang_on_exit: bool,
    /// While set, every request is answered 500.
    refuse: bool,
}

/// A webhook receiver that records every request and answers 204, except that it
/// can be told to leave exit notifications hanging.
pub(crate) struct Receiver {
    pub(crate) addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    pub(crate) async fn start() -> Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(req, state).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Receiver { addr, state })
    }

    pub(crate) fn requests(&self) -> Vec<Received> {
        self.state.lock().expect("receiver state").requests.clone()
    }

    fn set_hang_on_exit(&self, hang: bool) {
        self.state.lock().expect("receiver state").hang_on_exit = hang;
    }

    pub(crate) fn set_refuse(&self, refuse: bool) {
        self.state.lock().expect("receiver state").refuse = refuse;
    }

    pub(crate) async fn wait_for(
        &self,
        what: &str,
        check: impl Fn(&[Received]) -> bool,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        while !check(&self.requests()) {
            if tokio::time::Instant::now() > deadline {
                bail!("receiver never saw {what}: {:?}", self.requests());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

async fn answer(req: Request<Incoming>, state: Arc<Mutex<ReceiverState>>) -> Response<Full<Bytes>> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let mut received = Received {
        id,
        timestamp,
        signature,
        body,
        status: None,
    };
    let (hang, status) = {
        let mut state = state.lock().expect("receiver state");
        let hang = state.hang_on_exit && received.json()["type"] == "segment.exited";
        let status = if state.refuse { 500 } else { 204 };
        if !hang {
            received.status = Some(status);
        }
        state.requests.push(received);
        (hang, status)
    };
    if hang {
        std::future::pending::<()>().await;
    }
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::new()))
        .unwrap_or_default()
}

/// A segment service on a runtime of its own, so that dropping the runtime kills it
/// and every task it started, as a crash would.
pub(crate) struct Service {
    /// The operator endpoints.
    ops: SocketAddr,
    /// Always `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Service {
    pub(crate) fn start(config: Config, kafka: KafkaSettings) -> Result<Service> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let ops = listener.local_addr()?;
        let task = runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let result = spur_dispatch::run(config, kafka, listener, async {
                let _ = stopped.await;
            })
            .await;
            if let Err(e) = &result {
                // Otherwise only visible at stop(), after the test timed out waiting.
                eprintln!("the segment service failed: {}", e.chain());
            }
            result?;
            Ok(())
        });
        Ok(Service {
            ops,
            runtime: Some(runtime),
            stop: Some(stop),
            task,
        })
    }

    /// `GET path` on the operator endpoints: (status line, body).
    pub(crate) async fn get(&self, path: &str) -> Result<(String, String)> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(self.ops).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: ops\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let (head, body) = response.split_once("\r\n\r\n").context("no HTTP head")?;
        Ok((
            head.lines().next().unwrap_or_default().to_owned(),
            body.to_owned(),
        ))
    }

    /// Drops the runtime without waiting for anything.
    fn crash(self) {}

    pub(crate) async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(60), &mut self.task)
            .await
            .context("service did not stop")?;
        result??;
        Ok(())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Every record on `topic`: (key, seq header, body).
pub(crate) fn read_topic(
    brokers: &str,
    topic: &str,
) -> Result<Vec<(String, i64, serde_json::Value)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "dispatch-test-reader")
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    let mut assignment = TopicPartitionList::new();
    let mut expected = 0;
    for p in 0..i32::try_from(partitions)? {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        expected += high - low;
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while i64::try_from(out.len())? < expected {
        ensure!(
            std::time::Instant::now() < deadline,
            "read {} of {expected}",
            out.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message?;
        let seq = message
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == HEADER_SEQ).and_then(|h| h.value))
            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
            .context("record without seq")?;
        out.push((
            String::from_utf8(message.key().unwrap_or_default().to_vec())?,
            seq,
            serde_json::from_slice(message.payload().unwrap_or_default())?,
        ));
    }
    out.sort_by_key(|(_, seq, _)| *seq);
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_topic_and_webhook_once_across_a_crash() -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir()?;
    let root = root(&dir)?;
    let state = tempfile::tempdir()?;
    let mock = MockCluster::new(1)?;
    // The mock cluster does not implement CreateTopics.
    mock.create_topic(&KafkaSettings::default().topics.segment_changes, 3, 1)?;
    let brokers = mock.bootstrap_servers();
    let kafka = KafkaSettings {
        brokers: brokers.clone(),
        ..KafkaSettings::default()
    };
    let receiver = Receiver::start().await?;
    let mut hook = WebhookConfig::new(
        "mailer",
        format!("http://{}/hooks/spur", receiver.addr),
        Secret::new(SECRET),
    );
    hook.initial_backoff = Duration::from_millis(50);
    hook.max_backoff = Duration::from_millis(500);
    hook.timeout = Duration::from_secs(120);
    // No contact vault here: bodies without `contact.email`.
    hook.include_contact = false;
    let config = Config {
        lake: root.clone(),
        // Single opt-in: the sign-up's grant is consent (double opt-in has its own
        // tests in spur-audience).
        lifecycle: LifecycleConfig {
            double_opt_in: false,
            ..LifecycleConfig::default()
        },
        segments: SegmentsConfig {
            interval: Duration::from_millis(200),
            sweep_interval: Duration::from_secs(3600),
            state_dir: state.path().to_path_buf(),
            topic_partitions: 3,
            define: boot_fans(),
            webhooks: vec![hook],
            ..SegmentsConfig::default()
        },
        ..Config::default()
    };

    // mail-a: marketing consent and boots views (enters); mail-b: no consent.
    let now = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let mut writer = Writer::new(&root).await?;
    let mut rows = vec![signup("a-s", "va", now, "mail-a", true)];
    rows.extend(boot_views("a", "va", now, 4));
    rows.push(signup("b-s", "vb", now, "mail-b", false));
    rows.extend(boot_views("b", "vb", now, 4));
    writer.append(rows).await?;

    let first = Service::start(config.clone(), kafka.clone())?;
    receiver
        .wait_for("the entry", |r| {
            r.iter().any(|r| r.json()["type"] == "segment.entered")
        })
        .await?;

    // The withdrawal; the exit's webhook request hangs; the service crashes.
    receiver.set_hang_on_exit(true);
    writer
        .append(vec![consent("a-c", "va", now + 600_000, "withdrawn")])
        .await?;
    receiver
        .wait_for("the exit", |r| {
            r.iter().any(|r| r.json()["type"] == "segment.exited")
        })
        .await?;
    // Crash once the topic has both (so the restarted service must not produce again).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while read_topic(&brokers, &kafka.topics.segment_changes)?.len() < 2 {
        ensure!(
            std::time::Instant::now() < deadline,
            "the exit never reached the topic"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.crash();

    receiver.set_hang_on_exit(false);
    let second = Service::start(config.clone(), kafka.clone())?;
    receiver
        .wait_for("the exit again", |r| {
            r.iter()
                .filter(|r| r.json()["type"] == "segment.exited")
                .count()
                >= 2
        })
        .await?;
    // Give a wrongly repeated delivery the time to show up before stopping.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The second incarnation decided nothing new; the first had produced both changes
    // to Kafka before it crashed, so it produced none and redelivered the exit to the
    // webhook only.
    // Ready once its first evaluation (a full sweep) finished: poll, generously.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (status, ready) = loop {
        let (status, ready) = second.get("/readyz").await?;
        if status.contains("200") || tokio::time::Instant::now() > deadline {
            break (status, ready);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.contains("200"), "{status} {ready}");
    let (_, metrics) = second.get("/metrics").await?;
    for (line, expected) in [
        ("spur_segments_delivered_total{sink=\"kafka\"}", "0"),
        (
            "spur_segments_delivered_total{sink=\"webhook:mailer\"}",
            "1",
        ),
        ("spur_segments_members{segment=\"boot_fans\"}", "0"),
        ("spur_segments_evaluations_total{kind=\"sweep\"}", "1"),
    ] {
        // A counter never incremented is not exported.
        let value = metrics
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .map_or("0", str::trim);
        assert_eq!(value, expected, "{line} in\n{metrics}");
    }
    assert!(
        !metrics.contains("spur_segments_changes_total"),
        "{metrics}"
    );
    second.stop().await?;

    // The topic: the two changes, once each, in order, keyed by subject.
    let records = read_topic(&brokers, &kafka.topics.segment_changes)?;
    let summary: Vec<_> = records
        .iter()
        .map(|(key, seq, body)| {
            (
                key.as_str(),
                *seq,
                body["type"].as_str().unwrap_or_default().to_owned(),
                body["data"]["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "mail-a",
                1,
                "segment.entered".to_owned(),
                "matched".to_owned()
            ),
            (
                "mail-a",
                2,
                "segment.exited".to_owned(),
                "consent_withdrawn".to_owned()
            ),
        ]
    );
    let topic_ids: Vec<String> = records
        .iter()
        .map(|(_, _, body)| body["data"]["id"].as_str().unwrap_or_default().to_owned())
        .collect();

    // The webhook: the same two ids, every request signed, the repeat identical.
    let signer = Signer::from_secret(SECRET)?;
    let requests = receiver.requests();
    let now_secs = chrono::Utc::now().timestamp();
    for request in &requests {
        signer
            .verify(
                &request.id,
                &request.timestamp,
                &request.signature,
                &request.body,
                now_secs,
                DEFAULT_TOLERANCE,
            )
            .with_context(|| format!("signature of {}", request.id))?;
        assert_eq!(request.json()["data"]["id"], request.id.as_str());
        assert_eq!(request.json()["data"]["subject_id"], "mail-a");
    }
    let ids: BTreeSet<&str> = requests.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, topic_ids.iter().map(String::as_str).collect());
    let exits: Vec<&Received> = requests
        .iter()
        .filter(|r| r.json()["type"] == "segment.exited")
        .collect();
    assert_eq!(exits.len(), 2, "the interrupted exit and its redelivery");
    assert_eq!(exits[0].body, exits[1].body);
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.json()["type"] == "segment.entered")
            .count(),
        1
    );
    // The cursor file says both are done.
    let cursor = std::fs::read_to_string(state.path().join("webhook-mailer.cursor"))?;
    assert_eq!(cursor.trim(), "2");
    Ok(())
}
