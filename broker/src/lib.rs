//! Spur's embedded broker: a single-node, durable Kafka-API broker so that `spur up`
//! and the test suites need nothing installed. Standard Kafka clients (librdkafka,
//! and so every Spur service) talk to it as to any Kafka broker; production
//! deployments point the same services at Apache Kafka or Redpanda instead.
//!
//! - [`batch`]: record batches, checked (CRC, framing) and stored verbatim.
//! - [`log`]: a partition's segment files, recovery after a crash, retention, and
//!   the idempotent producers' sequences.
//! - [`store`]: the data directory — topics, committed offsets, producer ids.
//! - [`group`]: the consumer-group coordinator.
//! - [`api`]: the Kafka APIs answered; `server` (here): connections and framing.
//!
//! Guarantees: a produce is answered only after its batches are written to the
//! partition's file (and, with `fsync = true`, synced), so an acknowledged record
//! survives `kill -9` of the broker (and, with fsync, a power cut). Retries of an
//! idempotent producer are recognised from the log itself, also after a restart.
//!
//! Must never: listen on a non-loopback address without `allow_remote` (it has no
//! authentication), or decode the records it stores.

pub mod api;
pub mod batch;
mod config;
pub mod group;
pub mod log;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};

pub use config::Config;

/// The cluster id clients see.
pub const CLUSTER_ID: &str = "spur-embedded";
/// Kafka's `socket.request.max.bytes`: a larger frame closes the connection.
const MAX_FRAME: usize = 100 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr} (set `broker.listen` or pass --listen): {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "refusing to listen on {0}: the embedded broker has no authentication; listen on a loopback address or set `broker.allow_remote = true` on a trusted network"
    )]
    Remote(SocketAddr),
    #[error("broker data directory: {0}")]
    Store(#[from] store::Error),
}

/// State shared by every connection.
#[derive(Debug)]
pub struct Shared {
    store: store::Store,
    groups: group::Coordinator,
    /// Woken after every append: fetches waiting for data look again.
    appended: Notify,
    config: Config,
    /// (host, port) clients are told to connect to.
    advertised: (String, i32),
}

/// A broker bound to its port, its data recovered, not yet serving.
#[derive(Debug)]
pub struct Broker {
    shared: Arc<Shared>,
    listener: TcpListener,
}

impl Broker {
    /// Opens the data directory (recovering every log) and binds the listener.
    pub async fn bind(config: Config) -> Result<Broker, Error> {
        if !config.listen.ip().is_loopback() && !config.allow_remote {
            return Err(Error::Remote(config.listen));
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        let local = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
        let dir = config.data_dir.clone();
        let segment_bytes = config.segment_bytes;
        let started = Instant::now();
        let store = tokio::task::spawn_blocking(move || store::Store::open(&dir, segment_bytes))
            .await
            .map_err(|e| store::Error::Corrupt {
                path: config.data_dir.clone(),
                reason: e.to_string(),
            })??;
        let advertised = match &config.advertised {
            Some(a) => split_host_port(a).unwrap_or_else(|| (a.clone(), i32::from(local.port()))),
            None if local.ip().is_unspecified() => ("localhost".into(), i32::from(local.port())),
            None => (local.ip().to_string(), i32::from(local.port())),
        };
        tracing::info!(
            listen = %local, data = %config.data_dir.display(), topics = store.topics().len(),
            recovered_in = ?started.elapsed(), fsync = config.fsync, "broker ready"
        );
        Ok(Broker {
            shared: Arc::new(Shared {
                store,
                groups: group::Coordinator::default(),
                appended: Notify::new(),
                config,
                advertised,
            }),
            listener,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// `host:port` for clients' `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("{}:{}", self.shared.advertised.0, self.shared.advertised.1)
    }

    /// Serves until `shutdown` completes, then closes every connection.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Broker { shared, listener } = self;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let ticker = {
            let shared = shared.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                let mut last_retention = Instant::now();
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.changed() => return,
                    }
                    shared.groups.tick(Instant::now());
                    if last_retention.elapsed() >= shared.config.retention_check {
                        last_retention = Instant::now();
                        let shared = shared.clone();
                        let _ = tokio::task::spawn_blocking(move || {
                            shared.store.expire(SystemTime::now())
                        })
                        .await;
                    }
                }
            })
        };
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let shared = shared.clone();
                        let stop = stop_rx.clone();
                        tokio::spawn(async move {
                            if let Err(e) = serve_connection(shared, stream, stop).await {
                                tracing::debug!(%peer, error = %e, "connection closed");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        let _ = stop_tx.send(true);
        let _ = ticker.await;
        tracing::info!("broker stopped");
    }
}

fn split_host_port(addr: &str) -> Option<(String, i32)> {
    let (host, port) = addr.rsplit_once(':')?;
    Some((
        host.trim_matches(['[', ']']).to_string(),
        port.parse().ok()?,
    ))
}

#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Fatal(#[from] api::Fatal),
    #[error("a frame of {0} bytes is over the limit")]
    Frame(i64),
}

/// One client connection: requests are answered one at a time, in order (as Kafka
/// does). A reader task watches the socket meanwhile, so a request still waiting
/// (a JoinGroup, a long fetch) is dropped as soon as the client goes away — that is
/// how the group coordinator learns that a member died while it waited.
async fn serve_connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ConnectionError> {
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let (frames_tx, mut frames) = mpsc::channel::<Result<Bytes, ConnectionError>>(16);
    let (closed_tx, mut closed) = oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            let frame = read_frame(&mut reader).await;
            let end = !matches!(frame, Ok(Some(_)));
            let item = match frame {
                Ok(Some(f)) => Ok(f),
                Ok(None) => break,
                Err(e) => Err(e),
            };
            if frames_tx.send(item).await.is_err() || end {
                break;
            }
        }
        let _ = closed_tx.send(());
    });
    loop {
        let frame = tokio::select! {
            f = frames.recv() => match f {
                Some(f) => f?,
                None => return Ok(()),
            },
            _ = stop.changed() => return Ok(()),
        };
        let answer = tokio::select! {
            a = api::handle(&shared, frame) => a?,
            _ = &mut closed, if frames.is_empty() => return Ok(()),
            _ = stop.changed() => return Ok(()),
        };
        if let Some(body) = answer {
            let mut out = BytesMut::with_capacity(4 + body.len());
            out.extend_from_slice(&(body.len() as u32).to_be_bytes());
            out.extend_from_slice(&body);
            writer.write_all(&out).await?;
        }
    }
}

async fn read_frame(
    reader: &mut tokio::net::tcp::OwnedReadHalf,
) -> Result<Option<Bytes>, ConnectionError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = i32::from_be_bytes(len);
    if len < 0 || len as usize > MAX_FRAME {
        return Err(ConnectionError::Frame(i64::from(len)));
    }
    let mut frame = BytesMut::zeroed(len as usize);
    reader.read_exact(&mut frame).await?;
    Ok(Some(frame.freeze()))
}
