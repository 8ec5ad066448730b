//! Analyst SQL cannot change the lake or read files: every forbidden statement class
//! is refused with a message naming it, on the CLI path and over the wire, and the
//! lake is the same afterwards.

use anyhow::{Result, bail, ensure};
use datafusion::prelude::SessionContext;
use spur_query::{Catalog, Error, Format, guard};
use tokio_postgres::error::SqlState;

use crate::fixture::{self, DAY0, Fixture, Server};
use crate::sql::run;

/// `(sql, what the refusal names)`. `{lake}` and `{out}` are replaced by the lake
/// root and a scratch directory.
pub(crate) const FORBIDDEN: [(&str, &str); 16] = [
    ("CREATE TABLE t (a INT)", "CREATE TABLE"),
    ("CREATE TABLE t AS SELECT * FROM events", "CREATE TABLE"),
    ("CREATE VIEW v AS SELECT * FROM events", "CREATE VIEW"),
    ("DROP TABLE events", "DROP TABLE"),
    ("INSERT INTO events (event_id) VALUES ('x')", "INSERT"),
    ("UPDATE events SET site_id = 'x'", "UPDATE"),
    ("DELETE FROM events WHERE true", "DELETE"),
    ("COPY events TO '{out}/events.csv' STORED AS CSV", "COPY"),
    ("COPY (SELECT * FROM sessions) TO '{out}/s.parquet'", "COPY"),
    (
        "CREATE EXTERNAL TABLE leak STORED AS PARQUET LOCATION '{lake}/events/'",
        "CREATE EXTERNAL TABLE",
    ),
    ("SET datafusion.execution.target_partitions = 1", "SET"),
    (
        "SELECT count(*) FROM events; DROP TABLE sessions",
        "DROP TABLE",
    ),
    (
        "SELECT 1; INSERT INTO events (event_id) VALUES ('y')",
        "INSERT",
    ),
    (
        "SELECT * FROM read_parquet('{lake}/events')",
        "table function read_parquet",
    ),
    (
        "SELECT * FROM read_csv('/etc/passwd')",
        "table function read_csv",
    ),
    (
        "SELECT * FROM \"{lake}/events/dt=2025-11-29\"",
        "reading the file",
    ),
];

pub(crate) fn fill(sql: &str, fixture: &Fixture, out: &std::path::Path) -> Result<String> {
    Ok(sql
        .replace("{lake}", &fixture.root()?)
        .replace("{out}", &out.to_string_lossy()))
}

pub(crate) async fn unchanged(catalog: &Catalog, out: &std::path::Path) -> Result<()> {
    assert_eq!(
        run(catalog, "SELECT count(*) AS n FROM events", Format::Csv).await?,
        "n\n10\n"
    );
    assert_eq!(
        run(catalog, "SELECT count(*) AS n FROM sessions", Format::Csv).await?,
        "n\n5\n"
    );
    ensure!(
        std::fs::read_dir(out)?.next().is_none(),
        "a refused statement wrote into {}",
        out.display()
    );
    Ok(())
}

#[tokio::test]
async fn the_cli_path_refuses_every_forbidden_class_by_name() -> Result<()> {
    let fixture = Fixture::new().await?;
    let out = tempfile::tempdir()?;
    let catalog = fixture::catalog(&fixture, &fixture::config()).await?;
    let mut failures = Vec::new();
    for (sql, what) in FORBIDDEN {
        let sql = fill(sql, &fixture, out.path())?;
        match run(&catalog, &sql, Format::Csv).await {
            Err(Error::Refused(refusal)) if refusal.what.starts_with(what) => {
                let message = Error::Refused(refusal).to_string();
                if !message.contains("is not allowed: analyst SQL is read-only") {
                    failures.push(format!("{sql}: message {message:?}"));
                }
            }
            Err(other) => failures.push(format!("{sql}: {}", other.chain())),
            Ok(output) => failures.push(format!("{sql}: ran and printed {output:?}")),
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    unchanged(&catalog, out.path()).await
}

#[tokio::test]
async fn the_server_refuses_every_forbidden_class_and_keeps_serving() -> Result<()> {
    let fixture = Fixture::new().await?;
    let out = tempfile::tempdir()?;
    let server = Server::start(&fixture, fixture::config()).await?;
    let client = server.connect().await?;
    let mut failures = Vec::new();
    for (sql, what) in FORBIDDEN {
        let sql = fill(sql, &fixture, out.path())?;
        for protocol in ["simple", "extended"] {
            let result = if protocol == "simple" {
                client.simple_query(&sql).await.map(drop)
            } else {
                client.query(&sql, &[]).await.map(drop)
            };
            match result {
                Ok(()) => failures.push(format!("{sql} ({protocol}): ran")),
                Err(error) => match error.as_db_error() {
                    Some(db)
                        if db.code() == &SqlState::READ_ONLY_SQL_TRANSACTION
                            && db.message().starts_with(what) => {}
                    // A prepared statement holds one statement; a multi-statement
                    // text is refused by the guard first, so this is a failure too.
                    _ => failures.push(format!("{sql} ({protocol}): {error:?}")),
                },
            }
        }
        let row = client.query_one("SELECT count(*) FROM events", &[]).await?;
        ensure!(row.get::<_, i64>(0) == 10, "{sql}: the lake changed");
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    let catalog = fixture::catalog(&fixture, &fixture::config()).await?;
    unchanged(&catalog, out.path()).await?;
    server.stop().await
}

/// The second layer: DataFusion's `SQLOptions` check on the logical plan refuses
/// what the syntax check would, for plans made without it.
#[tokio::test]
async fn the_plan_check_refuses_ddl_dml_and_statements_on_its_own() -> Result<()> {
    let context = SessionContext::new_with_config(
        datafusion::prelude::SessionConfig::new().with_information_schema(true),
    );
    context.sql("CREATE TABLE t (a INT)").await?;
    for sql in [
        "CREATE TABLE u (a INT)",
        "CREATE VIEW v AS SELECT 1",
        "DROP TABLE t",
        "INSERT INTO t VALUES (1)",
        "COPY t TO '/tmp/never-written.csv'",
        "SET datafusion.execution.batch_size = 1",
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/hosts'",
    ] {
        let plan = context.state().create_logical_plan(sql).await?;
        match guard::check_plan(&plan) {
            Err(refusal) => ensure!(!refusal.what.is_empty(), "{sql}"),
            Ok(()) => bail!("{sql}: plan allowed"),
        }
    }
    for sql in [
        "SELECT * FROM t",
        "EXPLAIN SELECT 1",
        "SHOW TABLES",
        "DESCRIBE t",
    ] {
        let plan = context.state().create_logical_plan(sql).await?;
        ensure!(guard::check_plan(&plan).is_ok(), "{sql}: refused");
    }
    Ok(())
}

#[tokio::test]
async fn only_number_generating_table_functions_are_registered() -> Result<()> {
    let fixture = Fixture::new().await?;
    let catalog = fixture::catalog(&fixture, &fixture::config()).await?;
    let mut names = catalog.table_functions();
    names.sort();
    assert_eq!(names, ["generate_series", "range"]);
    assert_eq!(
        run(
            &catalog,
            "SELECT sum(value) AS s FROM generate_series(1, 4)",
            Format::Csv
        )
        .await?,
        "s\n10\n"
    );
    // Read-only introspection stays available.
    let explain = run(
        &catalog,
        &format!("EXPLAIN ANALYZE SELECT count(*) FROM events WHERE dt = '{DAY0}'"),
        Format::Csv,
    )
    .await?;
    ensure!(explain.contains("Plan with Metrics"), "{explain}");
    Ok(())
}
