//! The PostgreSQL-wire server (`spur serve-sql`): psql, BI tools and drivers connect
//! with a `query.users` login and run read-only SQL over the lake.
//!
//! - `auth.rs`: SCRAM-SHA-256 logins; `handler.rs`: simple and extended query
//!   protocol on top of [`Catalog`]; `session.rs`: the answers to session commands
//!   (transactions, `SET`/`SHOW`); `encode.rs`: Arrow → PostgreSQL types and rows;
//!   `tls.rs`: `query.tls`; `cancel.rs`: cancel requests.
//! - This file: the accept loop. Without TLS, only a loopback address is served
//!   unless `query.allow_plaintext`; with TLS, clients that do not negotiate it are
//!   refused unless `query.allow_plaintext`. At most `max_connections` connections are
//!   served; one more is answered with SQLSTATE 53300 and closed. A
//!   `CancelRequest` (its own short connection) stops the query of the connection
//!   whose key it carries. On shutdown the listener closes, queries still running
//!   get up to `shutdown_grace` to finish, then every connection is closed.

mod auth;
mod cancel;
mod encode;
mod handler;
mod session;
mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use pgwire::api::auth::DefaultServerParameterProvider;
use pgwire::api::auth::StartupHandler;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::cancel::CancelHandler;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::{ConnectionManager, PgWireServerHandlers};
use pgwire::error::ErrorInfo;
use pgwire::messages::Message;
use pgwire::messages::response::ErrorResponse;
use pgwire::tokio::process_socket;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::catalog::Catalog;
use crate::config::Config;
use crate::error::Result;
use handler::{ActiveQueries, Backend};

/// Serves `catalog` over the PostgreSQL wire protocol on `listener` until
/// `shutdown` resolves.
pub async fn serve(
    catalog: Arc<Catalog>,
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    config.validate()?;
    let local = listener
        .local_addr()
        .map_err(|source| crate::Error::Server {
            context: "reading the listen address".into(),
            source,
        })?;
    config.check_listen(local)?;
    if config.users.is_empty() {
        warn!("query.users is empty: nobody can log in to the SQL server");
    }
    if !catalog.has_lake().await {
        warn!("the SQL server starts with an empty catalog: no lake yet");
    }
    let tls = config.tls.as_ref().map(tls::load).transpose()?;
    let active = Arc::new(ActiveQueries::default());
    let manager = Arc::new(ConnectionManager::new());
    let cancels = Arc::new(cancel::Cancels::default());
    let handlers = Arc::new(Handlers {
        backend: Arc::new(Backend::new(catalog, active.clone(), cancels.clone())),
        startup: Arc::new(auth::RequireTls {
            inner: Arc::new(auth::startup_handler(
                Arc::new(auth::Users::new(&config.users)),
                tls.as_ref().map(|tls| tls.cert_pem.as_slice()),
                manager.clone(),
            )?),
            required: tls.is_some() && !config.allow_plaintext,
        }),
        cancel: Arc::new(cancel::Handler { manager, cancels }),
    });
    let acceptor = tls.map(|tls| tls.acceptor);
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let mut connections = JoinSet::new();
    info!(
        listen = %local,
        tls = acceptor.is_some(),
        max_connections = config.max_connections,
        "SQL server listening"
    );

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    match permits.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let handlers = handlers.clone();
                            let acceptor = acceptor.clone();
                            connections.spawn(async move {
                                let _permit = permit;
                                if let Err(error) = process_socket(socket, acceptor, handlers).await {
                                    debug!(%peer, %error, "connection ended with an error");
                                }
                            });
                        }
                        Err(_) => {
                            warn!(%peer, max_connections = config.max_connections, "connection refused: too many connections");
                            connections.spawn(refuse(socket));
                        }
                    }
                }
                Err(error) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }

    drop(listener);
    let running = active.count();
    info!(
        connections = connections.len(),
        running, "SQL server shutting down"
    );
    let deadline = tokio::time::Instant::now() + config.shutdown_grace;
    while active.count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    info!("SQL server stopped");
    Ok(())
}

/// Tells a client over the connection limit why, as PostgreSQL does, and closes.
async fn refuse(mut socket: TcpStream) {
    let info = ErrorInfo::new(
        "FATAL".into(),
        "53300".into(),
        "too many connections to the Spur SQL server".into(),
    );
    let mut buffer = BytesMut::new();
    if ErrorResponse::from(info).encode(&mut buffer).is_ok() {
        let _ = socket.write_all(&buffer).await;
    }
    let _ = socket.shutdown().await;
    // Read what the client sends (its startup message) before closing: closing with
    // unread input resets the connection, and the client might lose the error.
    let mut sink = [0_u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

struct Handlers {
    backend: Arc<Backend>,
    startup: Arc<auth::RequireTls<SASLAuthStartupHandler<DefaultServerParameterProvider>>>,
    cancel: Arc<cancel::Handler>,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handlers").finish_non_exhaustive()
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.backend.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.backend.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.cancel.clone()
    }
}
