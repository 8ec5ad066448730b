//! The server loop: accepts connections up to the configured bound, serves HTTP/1.1
//! with a header-read timeout (slowloris guard), probes the broker, and shuts down
//! gracefully: readiness turns 503, accepting stops, in-flight requests finish within
//! the grace period, then the producer is flushed.

use std::future::Future;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use spur_schemas::kafka::KafkaSettings;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::api::App;
use crate::config::Config;
use crate::error::Result;

/// Runs the collector on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    kafka: KafkaSettings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let app = Arc::new(App::new(config, &kafka)?);
    serve(app, &kafka, listener, shutdown).await
}

/// Like [`run`], with an [`App`] the caller built (tests and benchmarks read its
/// metrics).
pub async fn serve(
    app: Arc<App>,
    kafka: &KafkaSettings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let config = app.config.clone();
    if config.delivery.create_topics {
        // Bounded: an unreachable broker must not keep the collector from listening
        // (it answers 503 and `/readyz` says why until the broker is there).
        let bound = config.delivery.ack_timeout;
        match tokio::time::timeout(bound, app.sink.ensure_topics(kafka, &config.delivery)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not ensure topics exist"),
            Err(_) => tracing::warn!(
                ?bound,
                "broker did not answer topic creation; starting anyway"
            ),
        }
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let probe = {
        let sink = app.sink.clone();
        let metrics = app.metrics.clone();
        let interval = config.delivery.health_interval;
        tokio::spawn(async move { sink.probe_loop(interval, metrics, stop_rx).await })
    };

    let permits = Arc::new(Semaphore::new(config.limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.limits.header_read_timeout)
        .max_buf_size(64 * 1024)
        .keep_alive(true);
    tracing::info!(addr = %listener.local_addr()?, sites = app.sites.ids().count(), "collector listening");

    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let peer_ip = peer.ip();
        let handler = app.clone();
        let service = service_fn(move |req| {
            let app = handler.clone();
            async move { Ok::<_, std::convert::Infallible>(app.handle(peer_ip, req).await) }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let metrics = app.metrics.clone();
        metrics.connections(1.0);
        tokio::spawn(async move {
            let _permit = permit;
            // Errors here are client-side (reset, timeout): not worth more than debug.
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            metrics.connections(-1.0);
        });
    }

    tracing::info!("shutting down: draining in-flight requests");
    app.begin_shutdown();
    drop(listener);
    let grace = config.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "in-flight requests did not finish within the grace period"
        );
    }
    app.sink.flush(grace).await;
    let _ = stop_tx.send(true);
    let _ = probe.await;
    tracing::info!("collector stopped");
    Ok(())
}
