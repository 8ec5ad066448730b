//! The operator endpoints of a running processor: `/readyz` turns ready once the
//! consumer loop and the lake report in, and `/metrics` counts what reached the lake.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nhost: ops\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut out = String::new();
    stream.read_to_string(&mut out).await.expect("read");
    out
}

/// The value of one sample line of the Prometheus text (`name{labels} value`).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_rows_duplicates_and_dead_letters_and_readyz_reports_health() {
    let env = Env::new();
    let mut records = history(3, 4); // 12 events
    records.push(records[0].clone()); // a client retry
    env.produce(&records).await;
    env.produce_raw("shop:x", b"{not a record").await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = env.config("lake", "ops");
    let lake = config.lake.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(spur_processor::run_with_listener(
        config,
        env.kafka.clone(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));

    assert!(get(addr, "/livez").await.starts_with("HTTP/1.1 200"));
    eventually("the lake holds every event", || {
        let lake = lake.clone();
        async move { count(&lake, "SELECT count(*) FROM events").await == 12 }
    })
    .await;
    eventually("the dead letter is counted", || async {
        let text = get(addr, "/metrics").await;
        sample(
            &text,
            "spur_processor_dead_lettered_total{reason=\"undecodable\"}",
        ) == Some(1.0)
    })
    .await;

    let ready = get(addr, "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(ready.contains(r#""consumer":"ok""#) && ready.contains(r#""lake":"ok""#));
    let text = get(addr, "/metrics").await;
    let value =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series} in:\n{text}"));
    assert_eq!(value("spur_processor_records_total{outcome=\"row\"}"), 12.0);
    assert_eq!(
        value("spur_processor_records_total{outcome=\"duplicate\"}"),
        1.0
    );
    assert_eq!(
        value("spur_processor_records_total{outcome=\"dead_letter\"}"),
        1.0
    );
    assert_eq!(
        value("spur_processor_rows_written_total{table=\"events\"}"),
        12.0
    );
    assert!(value("spur_processor_files_written_total{table=\"events\"}") >= 1.0);
    assert!(value("spur_processor_flush_duration_seconds_count") >= 1.0);
    assert_eq!(
        value("spur_processor_partitions_assigned"),
        f64::from(PARTITIONS)
    );
    // From librdkafka's statistics (every 5 s): nothing left outside the lake.
    eventually("the lag gauge shows every partition caught up", || async {
        let text = get(addr, "/metrics").await;
        (0..PARTITIONS).all(|p| {
            sample(
                &text,
                &format!("spur_processor_lag_records{{partition=\"{p}\"}}"),
            ) == Some(0.0)
        })
    })
    .await;

    stop.send(()).expect("running");
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("stops")
        .expect("join")
        .expect("clean stop");
}
