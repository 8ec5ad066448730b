//! Fixtures: a collector on a loopback port in front of librdkafka's mock cluster, a
//! small HTTP client, and a topic reader.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, Message, TopicPartitionList};
use spur_collector::api::App;
use spur_collector::config::{Config, SiteConfig};
use spur_schemas::kafka::{KafkaSettings, Topics};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

pub const UA_CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// A running collector and the mock broker behind it. Dropping it stops both.
pub struct Harness {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    pub kafka: KafkaSettings,
    pub mock: MockCluster<'static, DefaultProducerContext>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The default test configuration: site `shop` on `shop.example` and subdomains.
pub fn config() -> Config {
    let mut config = Config {
        sites: vec![SiteConfig {
            id: "shop".into(),
            hosts: vec!["shop.example".into(), "*.shop.example".into()],
        }],
        trusted_proxies: vec!["127.0.0.0/8".parse().expect("net")],
        ..Config::default()
    };
    config.delivery.ack_timeout = Duration::from_secs(2);
    config.delivery.retry_after = Duration::from_secs(3);
    config.delivery.health_interval = Duration::from_millis(200);
    config.delivery.create_topics = false;
    config
}

impl Harness {
    pub async fn start(config: Config) -> Harness {
        let mock = MockCluster::new(1).expect("mock cluster");
        let kafka = KafkaSettings {
            brokers: mock.bootstrap_servers(),
            topics: Topics::default(),
            ..KafkaSettings::default()
        };
        mock.create_topic(&kafka.topics.events, 3, 1)
            .expect("events topic");
        mock.create_topic(&kafka.topics.dead_letter, 1, 1)
            .expect("dead-letter topic");
        let app = Arc::new(App::new(config, &kafka).expect("app"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = {
            let app = app.clone();
            let kafka = kafka.clone();
            tokio::spawn(async move {
                spur_collector::serve(app, &kafka, listener, async {
                    let _ = stopped.await;
                })
                .await
                .expect("collector runs");
            })
        };
        let harness = Harness {
            addr,
            app,
            kafka,
            mock,
            stop: Some(stop),
            task: Some(task),
        };
        harness.wait_ready(true).await;
        harness
    }

    /// Waits until `/readyz` answers 200 (or 503 when `ready` is false).
    pub async fn wait_ready(&self, ready: bool) {
        let want = if ready { 200 } else { 503 };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = try_send(self.addr, Req::get("/readyz")).await
                && r.status == want
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "collector never became ready={ready}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn send(&self, req: Req) -> Resp {
        try_send(self.addr, req).await.expect("request")
    }

    /// Stops the collector gracefully and waits for it. Returns the mock broker, which
    /// lives on for reading what was delivered.
    pub async fn stop(mut self) -> MockCluster<'static, DefaultProducerContext> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("collector task");
        }
        self.mock
    }

    /// Sum of a metric's samples whose labels include all of `labels`.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&self.app.metrics.render(), name, labels)
    }
}

pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A request to send.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn get(path: &str) -> Req {
        Req {
            method: "GET",
            path: path.into(),
            headers: vec![],
            body: vec![],
        }
    }

    /// A batch post from a browser on `https://shop.example`.
    pub fn batch(body: serde_json::Value) -> Req {
        Req {
            method: "POST",
            path: "/v1/batch".into(),
            headers: vec![
                ("content-type".into(), "text/plain".into()),
                ("origin".into(), "https://shop.example".into()),
                ("user-agent".into(), UA_CHROME.into()),
            ],
            body: body.to_string().into_bytes(),
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Req {
        self.headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case(k));
        self.headers.push((k.into(), v.into()));
        self
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

pub async fn try_send(addr: SocketAddr, req: Req) -> anyhow::Result<Resp> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut builder = http::Request::builder()
        .method(req.method)
        .uri(&req.path)
        .header("host", "collector.test");
    for (k, v) in &req.headers {
        builder = builder.header(k, v);
    }
    let response = sender
        .send_request(builder.body(Full::new(Bytes::from(req.body)))?)
        .await?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// Reads every record of `topic` from the beginning until `want` records whose
/// payload contains `marker` were seen or `timeout` passed.
pub fn read_topic(
    brokers: &str,
    topic: &str,
    marker: &str,
    want: usize,
    timeout: Duration,
) -> Vec<serde_json::Value> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
                .expect("partition");
        }
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < want && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                let payload = msg.payload().unwrap_or_default();
                if std::str::from_utf8(payload).is_ok_and(|s| s.contains(marker)) {
                    let mut value: serde_json::Value =
                        serde_json::from_slice(payload).expect("json record");
                    let key = msg.key().map(|k| String::from_utf8_lossy(k).into_owned());
                    value["_key"] = key.into();
                    out.push(value);
                }
            }
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
    }
    out
}

pub fn now_ms() -> i64 {
    spur_collector::api::now_ms()
}

/// A fresh event id.
pub fn eid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
