//! Spur's processor: consumes the collector's events from Kafka, pseudonymises them
//! with keyed HMACs, labels bots, sessionises, and writes Delta Lake tables exactly
//! once (Kafka offsets travel in the same Delta commit as the rows).
//!
//! Map: [`consumer`] runs the loop and the exactly-once protocol; [`restore`] rebuilds
//! a partition's state from the lake; [`transform`] turns a record into a row;
//! the keyed HMACs per purpose are the `spur-keys` crate's; [`sessions`] is the
//! pure sessioniser; [`state`] what is held per partition. The rows and the Delta
//! tables are the `spur-lake` crate's.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use spur_schemas::kafka::KafkaSettings;
use spur_telemetry::{Health, Metrics};

pub mod config;
pub mod consumer;
pub mod error;
pub mod metrics;
pub mod restore;
pub mod sessions;
pub mod state;
pub mod transform;

pub use config::Config;
pub use error::{Error, Result};

/// Runs the processor until `shutdown` resolves (then commits what it holds and
/// returns) or until it fails, with its operator endpoints on `config.listen`.
pub async fn run(
    config: Config,
    kafka: KafkaSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", config.listen)))?;
    run_with_listener(config, kafka, listener, shutdown).await
}

/// [`run`] with the operator endpoints (`/livez`, `/readyz`, `/metrics`) on a
/// listener the caller bound. The consumer runs on a thread of its own.
pub async fn run_with_listener(
    config: Config,
    kafka: KafkaSettings,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let health = Health::default();
    let metrics = Metrics::default();
    let handle_metrics = metrics.handle();
    tracing::info!(addr = %listener.local_addr()?, "processor operator endpoints listening");
    let (ops_stop, ops_stopped) = tokio::sync::oneshot::channel::<()>();
    let ops = tokio::spawn(spur_telemetry::serve(
        listener,
        health.clone(),
        handle_metrics,
        async {
            let _ = ops_stopped.await;
        },
    ));

    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let handle = tokio::runtime::Handle::current();
    let thread_stop = stop.clone();
    std::thread::Builder::new()
        .name("spur-processor".into())
        .spawn(move || {
            let _recorder = metrics.install_for_thread();
            let result = consumer::run_blocking(config, kafka, handle, thread_stop, health);
            let _ = done_tx.send(result);
        })?;
    tokio::pin!(done_rx);
    let result = tokio::select! {
        result = &mut done_rx => result,
        () = shutdown => {
            stop.store(true, Ordering::Relaxed);
            done_rx.await
        }
    };
    let _ = ops_stop.send(());
    let _ = ops.await;
    result.unwrap_or_else(|_| Err(Error::Config("processor thread died".into())))
}
