//! A webhook receiver refusing (500) for longer than `max_age`: the service parks
//! the subject's entry once it is `max_age` old; the receiver comes back, and the
//! subject's exit is parked behind the entry, unattempted (it must not overtake it);
//! `/readyz` and `/metrics` show them parked. `spur segments replay` (the library
//! call), run while the service runs, delivers both from table `segment_changes`, in
//! order, once each, with their original ids, valid signatures and exactly the bodies
//! the Kafka topic carries (both built by the live code path, `service::outgoing`).
//! Afterwards nothing is parked and the service is ready again.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rdkafka::mocking::MockCluster;
use spur_audience::LifecycleConfig;
use spur_dispatch::webhook::{DEFAULT_TOLERANCE, Signer, WebhookConfig};
use spur_dispatch::{Config, SegmentsConfig};
use spur_schemas::kafka::KafkaSettings;
use spur_schemas::secret::Secret;
use spur_testkit::{Writer, boot_views, consent, root, signup};

use crate::dispatch::{Receiver, SECRET, Service, boot_fans, read_topic};

/// Polls `check` for up to a minute.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> Result<bool>) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check().await? {
        ensure!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_changes_are_replayed_in_order_with_the_live_body() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = root(&dir)?;
    let state = tempfile::tempdir()?;
    let mock = MockCluster::new(1)?;
    mock.create_topic(&KafkaSettings::default().topics.segment_changes, 3, 1)?;
    let brokers = mock.bootstrap_servers();
    let kafka = KafkaSettings {
        brokers: brokers.clone(),
        ..KafkaSettings::default()
    };
    let receiver = Receiver::start().await?;
    receiver.set_refuse(true);
    let mut hook = WebhookConfig::new(
        "mailer",
        format!("http://{}/hooks/spur", receiver.addr),
        Secret::new(SECRET),
    );
    hook.initial_backoff = Duration::from_millis(50);
    hook.max_backoff = Duration::from_millis(100);
    hook.max_age = Duration::from_millis(800);
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
    let parked_file = state.path().join("webhook-mailer.parked.jsonl");
    let parked = || -> Result<Vec<serde_json::Value>> {
        match std::fs::read_to_string(&parked_file) {
            Ok(text) => Ok(text
                .lines()
                .map(serde_json::from_str)
                .collect::<Result<_, _>>()?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    };

    let now = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let mut writer = Writer::new(&root).await?;
    let mut rows = vec![signup("a-s", "va", now, "mail-a", true)];
    rows.extend(boot_views("a", "va", now, 4));
    writer.append(rows).await?;
    let service = Service::start(config.clone(), kafka.clone())?;

    // Every change is refused until it is max_age old, then parked; nothing is lost.
    let mut decided = 0;
    eventually("every decided change parked", async || {
        decided = read_topic(&brokers, &kafka.topics.segment_changes)?.len();
        Ok(decided > 0 && parked()?.len() == decided)
    })
    .await?;
    let refused = receiver.requests();
    ensure!(
        refused.iter().all(|r| r.status == Some(500)),
        "every attempt refused: {refused:?}"
    );
    let lines = parked()?;
    assert!(
        lines
            .iter()
            .all(|l| l["reason"] == "max_age" || l["reason"] == "subject_parked"),
        "{lines:?}"
    );
    let text = std::fs::read_to_string(&parked_file)?;
    assert!(
        !text.contains("unsubscribe") && !text.contains("\"data\""),
        "no body in the parking file: {text}"
    );
    receiver.set_refuse(false);

    // The receiver is back; the withdrawal's exit must wait behind the entry.
    writer
        .append(vec![consent("a-c", "va", now + 600_000, "withdrawn")])
        .await?;
    eventually("the exit parked behind the entry", async || {
        decided = read_topic(&brokers, &kafka.topics.segment_changes)?.len();
        Ok(decided > lines.len() && parked()?.len() == decided)
    })
    .await?;
    let behind = parked()?;
    let exit = behind.last().context("the exit")?;
    assert_eq!(exit["type"], "segment.exited", "{behind:?}");
    assert_eq!(exit["reason"], "subject_parked", "{behind:?}");
    assert_eq!(exit["behind"], behind[0]["seq"], "{behind:?}");
    assert_eq!(
        receiver.requests().len(),
        refused.len(),
        "the exit was not sent"
    );

    eventually(
        "/readyz notes the parked changes and stays ready",
        async || {
            let (status, body) = service.get("/readyz").await?;
            let body: serde_json::Value = serde_json::from_str(&body)?;
            Ok(status.contains("200")
                && body["components"]["webhook:mailer"] == "ok"
                && body["notes"]["webhook:mailer"]
                    .as_str()
                    .is_some_and(|note| note.starts_with(&format!("{decided} changes parked"))))
        },
    )
    .await?;
    let (_, metrics) = service.get("/metrics").await?;
    assert!(
        metrics.contains(&format!(
            "spur_segments_webhook_parked{{sink=\"webhook:mailer\"}} {decided}"
        )),
        "{metrics}"
    );

    // Replay while the service runs.
    let (_never, stop) = tokio::sync::watch::channel(false);
    let replayed = spur_dispatch::service::replay(&config, "mailer", stop).await?;
    assert_eq!(
        (
            replayed.delivered,
            replayed.gone,
            replayed.remaining,
            replayed.stopped
        ),
        (decided, 0, 0, None)
    );
    assert!(parked()?.is_empty());
    eventually("/readyz without the note", async || {
        let (status, body) = service.get("/readyz").await?;
        Ok(status.contains("200")
            && body.contains("\"webhook:mailer\":\"ok\"")
            && !body.contains("changes parked"))
    })
    .await?;
    service.stop().await?;

    // Once each, in order, with the topic's ids and bodies; every signature valid.
    let topic = read_topic(&brokers, &kafka.topics.segment_changes)?;
    ensure!(
        topic.len() == decided,
        "nothing decided after the parking: {topic:?}"
    );
    let accepted: Vec<_> = receiver
        .requests()
        .into_iter()
        .filter(|r| r.status == Some(204))
        .collect();
    let signer = Signer::from_secret(SECRET)?;
    let now_secs = chrono::Utc::now().timestamp();
    for request in &accepted {
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
    }
    let got: Vec<(String, serde_json::Value)> =
        accepted.iter().map(|r| (r.id.clone(), r.json())).collect();
    let expected: Vec<(String, serde_json::Value)> = topic
        .iter()
        .map(|(_, _, body)| {
            (
                body["data"]["id"].as_str().unwrap_or_default().to_owned(),
                body.clone(),
            )
        })
        .collect();
    assert_eq!(got, expected, "once each, in seq order, the live body");
    assert_eq!(
        got.first().map(|(_, b)| b["type"].clone()),
        Some("segment.entered".into())
    );
    assert_eq!(
        got.last().map(|(_, b)| b["type"].clone()),
        Some("segment.exited".into())
    );
    Ok(())
}
