//! The query tests' lake and server: the fixture lake of `spur_testkit` (its
//! contents are listed in `spur_testkit::fixture`), the query configuration the tests
//! start from, a catalog over the lake and a running SQL server over it.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use spur_audience::LifecycleConfig;
use spur_query::config::{ByteSize, User};
use spur_query::{Catalog, Config};
use spur_schemas::secret::Secret;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use spur_testkit::{DAY0, DAY1, Fixture, event};

pub const USER: &str = "analyst";
pub const PASSWORD: &str = "correct horse battery";

/// The query configuration tests start from: every query sees the newest commit,
/// one user, a limit large enough for the fixture queries.
pub fn config() -> Config {
    Config {
        users: vec![User {
            name: USER.into(),
            password: Secret::new(PASSWORD),
        }],
        memory_limit: ByteSize(64 << 20),
        refresh_interval: std::time::Duration::ZERO,
        ..Config::default()
    }
}

/// A catalog over the fixture lake with the default lifecycle rules.
pub async fn catalog(fixture: &Fixture, config: &Config) -> Result<Catalog> {
    Ok(Catalog::open(&fixture.root()?, &LifecycleConfig::default(), config).await?)
}

/// A running `serve` on a loopback port.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<spur_query::Result<()>>,
}

impl Server {
    /// Serves a catalog of `fixture`'s lake with `config`.
    pub async fn start(fixture: &Fixture, config: Config) -> Result<Server> {
        let catalog = catalog(fixture, &config).await?;
        Server::serve(catalog, config).await
    }

    /// Serves `catalog` with `config`.
    pub async fn serve(catalog: Catalog, config: Config) -> Result<Server> {
        let catalog = Arc::new(catalog);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            spur_query::serve(catalog, &config, listener, async move {
                let _ = stopped.await;
            })
            .await
        });
        Ok(Server {
            addr,
            stop: Some(stop),
            task,
        })
    }

    pub async fn connect_as(
        &self,
        user: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::Config::new()
            .host(self.addr.ip().to_string())
            .port(self.addr.port())
            .user(user)
            .password(password)
            .dbname("spur")
            .connect(tokio_postgres::NoTls)
            .await?;
        tokio::spawn(connection);
        Ok(client)
    }

    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        Ok(self.connect_as(USER, PASSWORD).await?)
    }

    /// Signals shutdown and waits for `serve` to return (a generous bound: a hang
    /// is a failure, not a slow machine).
    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(std::time::Duration::from_secs(60), &mut self.task)
            .await
            .context("serve did not return after shutdown")??;
        Ok(result?)
    }
}
