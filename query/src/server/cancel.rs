//! Cancel requests (`pg_cancel_backend` from psql's Ctrl-C, drivers' `cancel()`):
//! a client opens a second connection and sends the running connection's process
//! id and secret key. pgwire's connection manager stops a statement still being
//! planned; [`Cancels`] stops one whose rows are being sent — the long part for
//! analyst SQL, which pgwire does not see since rows stream after `do_query`
//! returns. Each connection's signal is a generation counter: a result stream
//! stops when the counter moves past the value it started with, so a cancel that
//! arrives between queries affects none.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use pgwire::api::cancel::CancelHandler;
use pgwire::api::{ClientInfo, ConnectionManager};
use pgwire::messages::cancel::CancelRequest;
use tokio::sync::watch;
use tracing::debug;

type Key = (i32, Bytes);

/// The cancel signals of all connections, by their key.
#[derive(Debug, Default)]
pub(crate) struct Cancels {
    signals: Mutex<HashMap<Key, Weak<Signal>>>,
}

/// One connection's signal; unregistered when the connection (which holds it in its
/// session extensions) ends.
#[derive(Debug)]
struct Signal {
    key: Key,
    generation: watch::Sender<u64>,
    registry: Weak<Cancels>,
}

impl Drop for Signal {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.upgrade() {
            registry
                .signals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&self.key);
        }
    }
}

impl Cancels {
    /// A future that resolves when the client cancels what it runs from now on.
    pub(crate) fn watch<C: ClientInfo>(self: &Arc<Self>, client: &C) -> BoxFuture<'static, ()> {
        let (pid, secret) = client.pid_and_secret_key();
        let key = (pid, secret.to_bytes());
        let signal = client.session_extensions().get_or_insert_with(|| Signal {
            key: key.clone(),
            generation: watch::Sender::new(0),
            registry: Arc::downgrade(self),
        });
        self.signals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert_with(|| Arc::downgrade(&signal));
        let mut receiver = signal.generation.subscribe();
        receiver.mark_unchanged();
        async move {
            // An error means the connection is gone: nothing left to cancel.
            if receiver.changed().await.is_err() {
                futures::future::pending::<()>().await;
            }
        }
        .boxed()
    }

    fn cancel(&self, key: &Key) -> bool {
        let signal = self
            .signals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .and_then(Weak::upgrade);
        match signal {
            Some(signal) => {
                signal.generation.send_modify(|generation| *generation += 1);
                true
            }
            None => false,
        }
    }
}

/// Answers a `CancelRequest`: both the statement being planned (pgwire's manager)
/// and the result being sent ([`Cancels`]). A request with an unknown key is
/// ignored, as PostgreSQL does.
#[derive(Debug)]
pub(crate) struct Handler {
    pub(crate) manager: Arc<ConnectionManager>,
    pub(crate) cancels: Arc<Cancels>,
}

#[async_trait]
impl CancelHandler for Handler {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let key = (request.pid, request.secret_key.to_bytes());
        let planning = self.manager.cancel(request.pid, &request.secret_key).await;
        let streaming = self.cancels.cancel(&key);
        debug!(
            pid = request.pid,
            known = planning || streaming,
            "cancel request"
        );
    }
}
