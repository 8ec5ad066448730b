//! The PostgreSQL-wire server, through tokio-postgres (a real PostgreSQL client):
//! the same cases as the CLI path, in both query protocols, plus parameters,
//! authentication and error handling.

use anyhow::{Context, Result, bail, ensure};
use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use spur_lake::TableKind;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Row, SimpleQueryMessage};

use crate::cases::cases;
use crate::fixture::{self, DAY0, Fixture, PASSWORD, Server, USER, event};

/// A timestamp as the CLI's CSV prints it.
fn timestamp_text(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// One value of a typed (binary) result, written as the CSV writer writes it.
fn typed_text(row: &Row, index: usize) -> Result<String> {
    let text = match *row.columns()[index].type_() {
        Type::BOOL => row
            .try_get::<_, Option<bool>>(index)?
            .map(|v| v.to_string()),
        Type::INT2 => row.try_get::<_, Option<i16>>(index)?.map(|v| v.to_string()),
        Type::INT4 => row.try_get::<_, Option<i32>>(index)?.map(|v| v.to_string()),
        Type::INT8 => row.try_get::<_, Option<i64>>(index)?.map(|v| v.to_string()),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(index)?
            .map(|v| format!("{v:?}")),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(index)?
            .map(|v| format!("{v:?}")),
        Type::TEXT => row.try_get::<_, Option<String>>(index)?,
        Type::DATE => row
            .try_get::<_, Option<NaiveDate>>(index)?
            .map(|v| v.to_string()),
        Type::TIMESTAMP => row
            .try_get::<_, Option<NaiveDateTime>>(index)?
            .map(|v| v.format("%Y-%m-%dT%H:%M:%S").to_string()),
        Type::TIMESTAMPTZ => row
            .try_get::<_, Option<DateTime<Utc>>>(index)?
            .map(timestamp_text),
        ref other => bail!("column type {other} not expected in the cases"),
    };
    Ok(text.unwrap_or_default())
}

/// One value of a text (simple protocol) result, written as the CSV writer writes it.
fn simple_text(value: Option<&str>, pg_type: &Type) -> Result<String> {
    let Some(value) = value else {
        return Ok(String::new());
    };
    Ok(match *pg_type {
        Type::BOOL => match value {
            "t" => "true".into(),
            "f" => "false".into(),
            other => bail!("boolean as {other:?}"),
        },
        Type::FLOAT4 | Type::FLOAT8 => format!("{:?}", value.parse::<f64>()?),
        Type::TIMESTAMPTZ => timestamp_text(
            DateTime::parse_from_str(value, "%Y-%m-%d %H:%M:%S%.f%#z")
                .with_context(|| format!("timestamptz {value:?}"))?
                .with_timezone(&Utc),
        ),
        _ => value.to_owned(),
    })
}

fn csv(header: Vec<String>, rows: Vec<Vec<String>>) -> String {
    let mut text = header.join(",") + "\n";
    for row in rows {
        text.push_str(&row.join(","));
        text.push('\n');
    }
    text
}

/// Extended protocol (Parse/Bind/Execute, binary results), as tokio-postgres does.
async fn extended_csv(client: &Client, sql: &str) -> Result<String> {
    let statement = client.prepare(sql).await?;
    let header = statement
        .columns()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    let mut rows = Vec::new();
    for row in client.query(&statement, &[]).await? {
        rows.push(
            (0..row.len())
                .map(|i| typed_text(&row, i))
                .collect::<Result<Vec<_>>>()?,
        );
    }
    Ok(csv(header, rows))
}

/// Simple protocol (one Query message, text results), as psql does.
async fn simple_csv(client: &Client, sql: &str) -> Result<String> {
    // The column types come from a Describe of the same statement.
    let types: Vec<Type> = client
        .prepare(sql)
        .await?
        .columns()
        .iter()
        .map(|c| c.type_().clone())
        .collect();
    let mut header = Vec::new();
    let mut rows = Vec::new();
    for message in client.simple_query(sql).await? {
        match message {
            SimpleQueryMessage::RowDescription(columns) => {
                header = columns.iter().map(|c| c.name().to_owned()).collect();
            }
            SimpleQueryMessage::Row(row) => rows.push(
                (0..row.len())
                    .map(|i| simple_text(row.get(i), &types[i]))
                    .collect::<Result<Vec<_>>>()?,
            ),
            _ => {}
        }
    }
    Ok(csv(header, rows))
}

#[tokio::test]
async fn both_protocols_return_the_cli_rows() -> Result<()> {
    let fixture = Fixture::new().await?;
    let server = Server::start(&fixture, fixture::config()).await?;
    let client = server.connect().await?;
    let mut failures = Vec::new();
    for case in cases() {
        for (protocol, result) in [
            ("extended", extended_csv(&client, &case.sql).await),
            ("simple", simple_csv(&client, &case.sql).await),
        ] {
            match result {
                Ok(csv) if csv == case.csv => {}
                Ok(csv) => failures.push(format!(
                    "{} ({protocol}):\n  expected {:?}\n  got      {:?}",
                    case.name, case.csv, csv
                )),
                Err(error) => failures.push(format!("{} ({protocol}): {error:#}", case.name)),
            }
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    server.stop().await
}

#[tokio::test]
async fn columns_have_postgres_types() -> Result<()> {
    let fixture = Fixture::new().await?;
    let server = Server::start(&fixture, fixture::config()).await?;
    let client = server.connect().await?;
    let statement = client
        .prepare(
            "SELECT event_id, event_time, key_version, kafka_offset, is_bot, topics, \
             CAST(dt AS DATE) AS day, 1.5 AS ratio, CAST(2.25 AS DECIMAL(5, 2)) AS price \
             FROM events LIMIT 1",
        )
        .await?;
    let types: Vec<_> = statement
        .columns()
        .iter()
        .map(|c| c.type_().clone())
        .collect();
    assert_eq!(
        types,
        [
            Type::TEXT,
            Type::TIMESTAMPTZ,
            Type::INT4,
            Type::INT8,
            Type::BOOL,
            Type::TEXT,
            Type::DATE,
            Type::FLOAT8,
            Type::TEXT,
        ]
    );
    // Lists and decimals arrive as text, the way the CLI's table prints them.
    let row = client
        .query_one(
            "SELECT topics, CAST(2.25 AS DECIMAL(5, 2)) AS price FROM events \
             WHERE event_id = 'ev-0-0'",
            &[],
        )
        .await?;
    assert_eq!(row.get::<_, String>(0), "[shoes, sale]");
    assert_eq!(row.get::<_, String>(1), "2.25");
    server.stop().await
}

#[tokio::test]
async fn parameters_are_bound_as_typed_values() -> Result<()> {
    let fixture = Fixture::new().await?;
    let server = Server::start(&fixture, fixture::config()).await?;
    let client = server.connect().await?;
    let row = client
        .query_one(
            "SELECT count(*) AS n FROM events WHERE dt = $1 AND event_type = $2",
            &[&DAY0, &"identify"],
        )
        .await?;
    assert_eq!(row.get::<_, i64>(0), 2);
    let ids: Vec<String> = client
        .query(
            "SELECT event_id FROM events WHERE engaged_ms > $1 ORDER BY event_id",
            &[&1500_i64],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(ids, ["ev-0-3", "ev-0-5", "ev-1-3"]);
    // A prepared statement reads the tables as they are at each execution.
    let statement = client
        .prepare("SELECT count(*) FROM events WHERE dt = $1")
        .await?;
    assert_eq!(
        client
            .query_one(&statement, &[&DAY0])
            .await?
            .get::<_, i64>(0),
        6
    );
    let mut writer = fixture.writer().await?;
    let rows = vec![event(0, 40)];
    writer
        .append(TableKind::Events, spur_lake::events_batch(&rows)?, &[])
        .await?;
    assert_eq!(
        client
            .query_one(&statement, &[&DAY0])
            .await?
            .get::<_, i64>(0),
        7
    );
    server.stop().await
}

#[tokio::test]
async fn wrong_passwords_and_unknown_users_are_refused() -> Result<()> {
    let fixture = Fixture::new().await?;
    let server = Server::start(&fixture, fixture::config()).await?;
    for (user, password) in [(USER, "wrong"), ("nobody", PASSWORD), (USER, "")] {
        match server.connect_as(user, password).await {
            Ok(_) => bail!("{user} logged in with {password:?}"),
            Err(error) => {
                let code = error.as_db_error().map(|e| e.code().clone());
                ensure!(
                    code == Some(SqlState::INVALID_PASSWORD),
                    "{user}: expected 28P01, got {error:?}"
                );
            }
        }
    }
    // The right password still works afterwards.
    let client = server.connect().await?;
    assert_eq!(
        client
            .query_one("SELECT 1::BIGINT", &[])
            .await?
            .get::<_, i64>(0),
        1
    );
    server.stop().await
}

#[tokio::test]
async fn a_failing_query_leaves_the_connection_serving() -> Result<()> {
    let fixture = Fixture::new().await?;
    let server = Server::start(&fixture, fixture::config()).await?;
    let client = server.connect().await?;
    for bad in [
        "SELECT no_such_column FROM events",
        "SELECT * FROM no_such_table",
        "SELEC 1",
    ] {
        let error = client.query(bad, &[]).await.err().context(bad)?;
        let db = error.as_db_error().context("not a server error")?;
        ensure!(db.severity() == "ERROR", "{bad}: {db:?}");
        let error = client.simple_query(bad).await.err().context(bad)?;
        ensure!(error.as_db_error().is_some(), "{bad}: {error:?}");
        assert_eq!(
            client
                .query_one("SELECT count(*) FROM events", &[])
                .await?
                .get::<_, i64>(0),
            10
        );
    }
    // In one simple-query message, results before a failure are sent, the rest is
    // skipped and the connection is ready again.
    let error = client
        .simple_query("SELECT 1; SELECT no_such_column FROM events; SELECT 3")
        .await
        .err()
        .context("the batch did not fail")?;
    ensure!(error.as_db_error().is_some(), "{error:?}");
    let rows = client.simple_query("SELECT 'still here' AS s").await?;
    ensure!(
        rows.iter()
            .any(|m| matches!(m, SimpleQueryMessage::Row(r) if r.get(0) == Some("still here"))),
        "{rows:?}"
    );
    server.stop().await
}
