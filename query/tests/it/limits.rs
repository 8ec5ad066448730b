//! Resource bounds: the per-query memory limit (the query fails, everything else
//! goes on), the connection limit, and graceful shutdown.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use spur_query::config::ByteSize;
use spur_query::{Error, Format};
use tokio_postgres::error::SqlState;

use crate::fixture::{self, Fixture, Server};
use crate::sql::run;

/// About a million groups of a hash aggregate: far more than the limit below holds.
const TOO_BIG: &str = "SELECT value % 1000003 AS k, count(*) AS n \
                       FROM generate_series(1, 3000000) GROUP BY k ORDER BY n DESC, k LIMIT 3";
const NORMAL: &str = "SELECT dt, count(*) AS n FROM events GROUP BY dt ORDER BY dt";
const LIMIT: ByteSize = ByteSize(16 << 20);

#[tokio::test]
async fn a_query_over_the_memory_limit_fails_and_the_next_one_runs() -> Result<()> {
    let fixture = Fixture::new().await?;
    let mut config = fixture::config();
    config.memory_limit = LIMIT;
    let catalog = fixture::catalog(&fixture, &config).await?;
    match run(&catalog, TOO_BIG, Format::Csv).await {
        Err(error @ Error::MemoryLimit { .. }) => {
            let message = error.chain();
            ensure!(
                message.contains("exceeded the memory limit of 16MiB"),
                "{message}"
            );
        }
        Err(other) => bail!("wrong error: {}", other.chain()),
        Ok(output) => bail!("ran within {LIMIT}: {output}"),
    }
    assert_eq!(
        run(&catalog, NORMAL, Format::Csv).await?,
        "dt,n\n2025-11-29,6\n2025-11-30,4\n"
    );
    Ok(())
}

#[tokio::test]
async fn the_server_survives_a_query_over_the_memory_limit() -> Result<()> {
    let fixture = Fixture::new().await?;
    let mut config = fixture::config();
    config.memory_limit = LIMIT;
    let server = Server::start(&fixture, config).await?;
    let client = server.connect().await?;
    for protocol in ["extended", "simple"] {
        let error = if protocol == "extended" {
            client.query(TOO_BIG, &[]).await.map(drop)
        } else {
            client.simple_query(TOO_BIG).await.map(drop)
        }
        .err()
        .with_context(|| format!("{protocol}: ran within the limit"))?;
        let db = error.as_db_error().context("not a server error")?;
        ensure!(db.code() == &SqlState::OUT_OF_MEMORY, "{protocol}: {db:?}");
        ensure!(db.message().contains("memory limit"), "{}", db.message());
        // The same connection answers a normal query.
        let rows = client.query(NORMAL, &[]).await?;
        assert_eq!(rows.len(), 2);
    }
    // And so does a new one.
    let other = server.connect().await?;
    assert_eq!(
        other
            .query_one("SELECT count(*) FROM sessions", &[])
            .await?
            .get::<_, i64>(0),
        5
    );
    server.stop().await
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_until_one_closes() -> Result<()> {
    let fixture = Fixture::new().await?;
    let mut config = fixture::config();
    config.max_connections = 2;
    let server = Server::start(&fixture, config).await?;
    let first = server.connect().await?;
    let second = server.connect().await?;
    match server.connect().await {
        Ok(_) => bail!("a third connection was accepted"),
        Err(error) => {
            let code = error
                .chain()
                .find_map(|e| e.downcast_ref::<tokio_postgres::Error>())
                .and_then(|e| e.as_db_error())
                .map(|db| db.code().clone());
            ensure!(code == Some(SqlState::TOO_MANY_CONNECTIONS), "{error:?}");
        }
    }
    // Those connected are served.
    first.simple_query("SELECT 1").await?;
    second.simple_query("SELECT 1").await?;
    drop(first);
    // The server notices the close asynchronously: retry a bounded number of times.
    let mut third = None;
    for _ in 0..200 {
        if let Ok(client) = server.connect().await {
            third = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let third = third.context("no connection after one closed")?;
    third.simple_query("SELECT 1").await?;
    server.stop().await
}

#[tokio::test]
async fn shutdown_stops_the_server_and_closes_idle_connections() -> Result<()> {
    let fixture = Fixture::new().await?;
    let server = Server::start(&fixture, fixture::config()).await?;
    let addr = server.addr;
    let client = server.connect().await?;
    client.simple_query("SELECT 1").await?;
    server.stop().await?;
    ensure!(
        client.simple_query("SELECT 1").await.is_err(),
        "an idle connection outlived the server"
    );
    ensure!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is still open"
    );
    Ok(())
}
