//! Analysts' real tools against the server: `psql` and its meta-commands, psycopg 3
//! in its default (transaction) mode with server-side parameters, SQLAlchemy's
//! inspector, all of them over TLS (`sslmode=require`, a certificate made with the
//! `openssl` CLI); every statement the guard refuses is still refused through each.
//! A server started before the lake exists serves an empty catalog, then the
//! tables once the processor has created them.
//!
//! The clients are programs, not crates: `psql` (`SPUR_PSQL`, default `psql` on
//! `PATH`), Python 3 with `psycopg[binary]` and `sqlalchemy` (`SPUR_PYTHON`,
//! default `python3`), Node.js with node-postgres (`pg`, see [`node_program`]) and
//! `openssl`. `.ci/run` installs them; a missing one fails
//! the test with the command that installs it, never skips it.

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use spur_audience::LifecycleConfig;
use spur_lake::{Lake, TableKind};
use spur_query::Catalog;
use spur_query::config::Tls;

use crate::fixture::{self, Fixture, PASSWORD, Server, USER, event};
use crate::readonly::{FORBIDDEN, fill, unchanged};

const READ_ONLY: &str = "is not allowed: analyst SQL is read-only";

/// Runs a client program, failing clearly when it is not installed.
fn run(program: &str, args: &[&str], env: &[(&str, &str)], install: &str) -> Result<Output> {
    let mut command = Command::new(program);
    command.args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    command
        .output()
        .with_context(|| format!("cannot run {program}: {install} (.ci/run installs it)"))
}

fn psql_program() -> String {
    std::env::var("SPUR_PSQL").unwrap_or_else(|_| "psql".into())
}

fn python_program() -> Result<String> {
    let python = std::env::var("SPUR_PYTHON").unwrap_or_else(|_| "python3".into());
    let install = "pip install 'psycopg[binary]' sqlalchemy";
    let probe = run(&python, &["-c", "import psycopg, sqlalchemy"], &[], install)?;
    ensure!(
        probe.status.success(),
        "{python} lacks psycopg or sqlalchemy: {install} (.ci/run installs them)\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    Ok(python)
}

/// A libpq connection string for the test login.
fn dsn(server: &Server, sslmode: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user={USER} dbname=spur sslmode={sslmode}",
        server.addr.port()
    )
}

/// `psql -c <command>`, unaligned and without headers: one row per line, `|` between
/// columns.
fn psql(server: &Server, sslmode: &str, command: &str) -> Result<Output> {
    run(
        &psql_program(),
        &[
            "--no-psqlrc",
            "--no-align",
            "--tuples-only",
            "--set=ON_ERROR_STOP=1",
            "--dbname",
            &dsn(server, sslmode),
            "--command",
            command,
        ],
        &[("PGPASSWORD", PASSWORD), ("PGCONNECT_TIMEOUT", "30")],
        "apt-get install postgresql-client",
    )
}

fn psql_rows(server: &Server, sslmode: &str, command: &str) -> Result<Vec<String>> {
    let output = psql(server, sslmode, command)?;
    ensure!(
        output.status.success(),
        "psql {command}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?
        .lines()
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect())
}

/// The forbidden statements of the read-only tests, with their placeholders filled.
fn forbidden(fixture: &Fixture, out: &Path) -> Result<Vec<(String, &'static str)>> {
    FORBIDDEN
        .iter()
        .map(|(sql, what)| Ok((fill(sql, fixture, out)?, *what)))
        .collect()
}

/// Runs a client script of `tests/it/clients/` with the forbidden statements (as a
/// JSON list, the last argument) and reads the JSON report it prints.
fn client_report(
    program: &str,
    script: &str,
    args: &[&str],
    forbidden: &[(String, &str)],
    env: &[(&str, &str)],
    install: &str,
) -> Result<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/clients")
        .join(script);
    let statements: Vec<&str> = forbidden.iter().map(|(sql, _)| sql.as_str()).collect();
    let statements = serde_json::to_string(&statements)?;
    let path = path.to_string_lossy();
    let mut all = vec![path.as_ref()];
    all.extend_from_slice(args);
    all.push(&statements);
    let output = run(program, &all, env, install)?;
    ensure!(
        output.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// Checks a client's report of the forbidden statements: each refused with SQLSTATE
/// 25006 and a message naming it.
fn check_refusals(client: &str, forbidden: &[(String, &str)], refused: &Value) -> Result<()> {
    let mut failures = Vec::new();
    for (sql, what) in forbidden {
        let answer = refused[sql.as_str()].as_str().unwrap_or("missing");
        if !(answer.starts_with("25006 ") && answer.contains(what) && answer.contains(READ_ONLY)) {
            failures.push(format!("{client}: {sql}: {answer}"));
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// A self-signed certificate for `localhost` and its key, made by `openssl`.
fn certificate(dir: &Path) -> Result<Tls> {
    let tls = Tls {
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    };
    let (key, cert) = (tls.key.to_string_lossy(), tls.cert.to_string_lossy());
    let output = run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &key,
            "-out",
            &cert,
        ],
        &[],
        "apt-get install openssl",
    )?;
    ensure!(
        output.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(tls)
}

// The clients run as blocking child processes: the server needs a thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_meta_commands_list_tables_views_columns_and_databases() -> Result<()> {
    let fixture = Fixture::new().await?;
    let out = tempfile::tempdir()?;
    let server = Server::start(&fixture, fixture::config()).await?;

    let tables = psql_rows(&server, "disable", r"\dt")?;
    for table in ["events", "sessions", "scores", "ledger"] {
        let row = format!("public|{table}|table|");
        ensure!(
            tables.iter().any(|line| line.starts_with(&row)),
            "\\dt lacks {table}: {tables:?}"
        );
    }
    // Sealed addresses are not in the analysts' catalog, in pg_catalog neither.
    ensure!(
        !tables.iter().any(|line| line.contains("contacts")),
        "{tables:?}"
    );
    let views = psql_rows(&server, "disable", r"\dv")?;
    for view in [
        "pageviews",
        "subjects",
        "profiles",
        "segment_members",
        "timeline",
    ] {
        let row = format!("public|{view}|view|");
        ensure!(
            views.iter().any(|line| line.starts_with(&row)),
            "\\dv lacks {view}: {views:?}"
        );
    }
    let columns = psql_rows(&server, "disable", r"\d events")?;
    for column in [
        "event_id|text||not null|",
        "event_time|timestamp with time zone||not null|",
        "key_version|integer||not null|",
        "kafka_offset|bigint||not null|",
        "topics|text[]||not null|",
        "country|text|||",
    ] {
        ensure!(
            columns.iter().any(|line| line == column),
            "\\d events lacks {column:?}: {columns:?}"
        );
    }
    let databases = psql_rows(&server, "disable", r"\l")?;
    ensure!(
        databases.iter().any(|line| line.starts_with("spur|")),
        "{databases:?}"
    );
    assert_eq!(
        psql_rows(
            &server,
            "disable",
            "SELECT current_database(), current_schema()"
        )?,
        ["spur|public"]
    );

    let mut failures = Vec::new();
    for (sql, what) in forbidden(&fixture, out.path())? {
        let output = psql(&server, "disable", &sql)?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() || !stderr.contains(what) || !stderr.contains(READ_ONLY) {
            failures.push(format!("psql {sql}: {stderr}"));
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    let catalog = fixture::catalog(&fixture, &fixture::config()).await?;
    unchanged(&catalog, out.path()).await?;
    server.stop().await
}

// The clients run as blocking child processes: the server needs a thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_in_transaction_mode_with_server_side_parameters() -> Result<()> {
    let python = python_program()?;
    let fixture = Fixture::new().await?;
    let out = tempfile::tempdir()?;
    let server = Server::start(&fixture, fixture::config()).await?;
    let forbidden = forbidden(&fixture, out.path())?;
    let dsn = format!("{} password='{PASSWORD}'", dsn(&server, "disable"));
    let report = client_report(
        &python,
        "psycopg_client.py",
        &[&dsn],
        &forbidden,
        &[],
        "pip install 'psycopg[binary]'",
    )?;
    assert_eq!(report["identify_count"], 2, "{report}");
    assert_eq!(report["in_transaction"], true, "{report}");
    assert_eq!(report["idle_after_commit"], true, "{report}");
    assert_eq!(
        report["prepared_ids"],
        serde_json::json!(["ev-0-3", "ev-0-5", "ev-1-3"]),
        "{report}"
    );
    assert_eq!(report["database"], "spur", "{report}");
    assert_eq!(report["application_name"], "notebook", "{report}");
    check_refusals("psycopg", &forbidden, &report["refused"])?;
    let catalog = fixture::catalog(&fixture, &fixture::config()).await?;
    unchanged(&catalog, out.path()).await?;
    server.stop().await
}

/// Node.js with node-postgres (`pg`): `SPUR_NODE` (default `node`) and the directory
/// holding `node_modules/pg` in `SPUR_NODE_MODULES` (default
/// `~/.cache/spur-node/node_modules`, where `.ci/run` installs it). JDBC (Maven) and
/// Go modules cannot be fetched on these machines; npm can.
fn node_program() -> Result<(String, String)> {
    let node = std::env::var("SPUR_NODE").unwrap_or_else(|_| "node".into());
    let modules = std::env::var("SPUR_NODE_MODULES").unwrap_or_else(|_| {
        format!(
            "{}/.cache/spur-node/node_modules",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let install = "npm install --prefix ~/.cache/spur-node pg@8";
    let probe = run(
        &node,
        &["-e", "require('pg')"],
        &[("NODE_PATH", &modules)],
        install,
    )?;
    ensure!(
        probe.status.success(),
        "{node} finds no `pg` module in {modules}: {install} (.ci/run installs it)\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    Ok((node, modules))
}

// The clients run as blocking child processes: the server needs a thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_with_parameters_prepared_statements_and_transactions() -> Result<()> {
    let (node, modules) = node_program()?;
    let fixture = Fixture::new().await?;
    let out = tempfile::tempdir()?;
    let server = Server::start(&fixture, fixture::config()).await?;
    let expected: i64 = server
        .connect()
        .await?
        .query_one(
            "SELECT count(*) FROM events WHERE event_type = 'identify' AND dt >= '2025-01-01'",
            &[],
        )
        .await?
        .get(0);
    let forbidden = forbidden(&fixture, out.path())?;
    let port = server.addr.port().to_string();
    let report = client_report(
        &node,
        "node_pg_client.js",
        &[&port, USER, PASSWORD],
        &forbidden,
        &[("NODE_PATH", &modules)],
        "npm install --prefix ~/.cache/spur-node pg@8",
    )?;
    assert_eq!(report["identify_count"], expected, "{report}");
    assert_eq!(
        report["prepared_ids"],
        serde_json::json!(["ev-0-3", "ev-0-5", "ev-1-3"]),
        "{report}"
    );
    assert_eq!(report["database"], "spur", "{report}");
    assert_eq!(report["application_name"], "dashboard", "{report}");
    check_refusals("node-postgres", &forbidden, &report["refused"])?;
    let catalog = fixture::catalog(&fixture, &fixture::config()).await?;
    unchanged(&catalog, out.path()).await?;
    server.stop().await
}

// The clients run as blocking child processes: the server needs a thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlalchemy_inspector_lists_tables_views_and_columns() -> Result<()> {
    let python = python_program()?;
    let fixture = Fixture::new().await?;
    let out = tempfile::tempdir()?;
    let server = Server::start(&fixture, fixture::config()).await?;
    let expected_pageviews: i64 = server
        .connect()
        .await?
        .query_one(
            "SELECT count(*) FROM events WHERE event_type = 'pageview'",
            &[],
        )
        .await?
        .get(0);
    let forbidden = forbidden(&fixture, out.path())?;
    let url = format!(
        "postgresql+psycopg://{USER}:{}@127.0.0.1:{}/spur",
        PASSWORD.replace(' ', "%20"),
        server.addr.port()
    );
    let report = client_report(
        &python,
        "sqlalchemy_client.py",
        &[&url],
        &forbidden,
        &[],
        "pip install sqlalchemy",
    )?;
    let names = |key: &str| -> Vec<String> {
        report[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let tables = names("tables");
    for table in ["events", "sessions"] {
        ensure!(tables.iter().any(|t| t == table), "{report}");
    }
    ensure!(!tables.iter().any(|t| t == "contacts"), "{report}");
    ensure!(names("views").iter().any(|v| v == "pageviews"), "{report}");
    assert_eq!(
        report["columns"]["event_id"],
        serde_json::json!(["TEXT", false])
    );
    assert_eq!(
        report["columns"]["country"],
        serde_json::json!(["TEXT", true])
    );
    assert_eq!(
        report["columns"]["engaged_ms"],
        serde_json::json!(["BIGINT", true])
    );
    assert_eq!(report["pageviews"], expected_pageviews, "{report}");
    check_refusals("sqlalchemy", &forbidden, &report["refused"])?;
    server.stop().await
}

// The clients run as blocking child processes: the server needs a thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_sslmode_require_and_plain_text_refused() -> Result<()> {
    let python = python_program()?;
    let fixture = Fixture::new().await?;
    let out = tempfile::tempdir()?;
    let certs = tempfile::tempdir()?;
    let config = spur_query::Config {
        tls: Some(certificate(certs.path())?),
        ..fixture::config()
    };
    let server = Server::start(&fixture, config).await?;

    let info = psql_rows(&server, "require", r"\conninfo")?.join("\n");
    ensure!(info.contains("SSL connection"), "{info}");
    assert_eq!(
        psql_rows(&server, "require", "SELECT count(*) FROM events")?,
        ["10"]
    );
    let (sql, what) = &forbidden(&fixture, out.path())?[0];
    let output = psql(&server, "require", sql)?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !output.status.success() && stderr.contains(what) && stderr.contains(READ_ONLY),
        "{stderr}"
    );
    // A client that does not ask for TLS is turned away, not served in the clear.
    let output = psql(&server, "disable", "SELECT 1")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !output.status.success() && stderr.contains("requires TLS"),
        "{stderr}"
    );

    let dsn = format!("{} password='{PASSWORD}'", dsn(&server, "require"));
    let report = client_report(
        &python,
        "psycopg_client.py",
        &[&dsn],
        &[],
        &[],
        "pip install 'psycopg[binary]'",
    )?;
    assert_eq!(report["ssl"], true, "{report}");
    assert_eq!(report["identify_count"], 2, "{report}");
    server.stop().await
}

#[tokio::test]
async fn a_server_started_before_the_lake_serves_its_tables_once_they_exist() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("lake").to_string_lossy().into_owned();
    let config = fixture::config();
    // The CLI still refuses a lake that is not there: a typo is not an empty lake.
    ensure!(
        Catalog::open(&root, &LifecycleConfig::default(), &config)
            .await
            .is_err(),
        "spur sql opened a missing lake"
    );
    let catalog = Catalog::open_or_wait(&root, &LifecycleConfig::default(), &config).await?;
    let server = Server::serve(catalog, config).await?;
    let client = server.connect().await?;
    let tables = "SELECT count(*) FROM pg_catalog.pg_class c \
                  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                  WHERE n.nspname = 'public' AND c.relname = 'events'";
    assert_eq!(client.query_one(tables, &[]).await?.get::<_, i64>(0), 0);
    match client.query("SELECT count(*) FROM events", &[]).await {
        Ok(_) => bail!("events answered before the lake existed"),
        Err(error) => ensure!(error.as_db_error().is_some(), "{error:?}"),
    }

    // The processor creates the lake and commits.
    let mut lake = Lake::open(&root).await?;
    lake.append(
        TableKind::Events,
        spur_lake::events_batch(&[event(0, 1)])?,
        &[],
    )
    .await?;
    assert_eq!(client.query_one(tables, &[]).await?.get::<_, i64>(0), 1);
    assert_eq!(
        client
            .query_one("SELECT count(*) FROM events", &[])
            .await?
            .get::<_, i64>(0),
        1
    );
    server.stop().await
}

#[tokio::test]
async fn a_cancel_request_stops_a_running_query() -> Result<()> {
    let fixture = Fixture::new().await?;
    let server = Server::start(&fixture, fixture::config()).await?;
    let client = server.connect().await?;
    let token = client.cancel_token();
    // Far more rows than a test waits for: only the cancel ends it early.
    let query = tokio::spawn(async move {
        client
            .simple_query("SELECT count(*) FROM generate_series(1, 1000000000000)")
            .await
    });
    let mut cancelled = None;
    for _ in 0..600 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        token.cancel_query(tokio_postgres::NoTls).await?;
        if query.is_finished() {
            cancelled = Some(query.await?);
            break;
        }
    }
    let Some(result) = cancelled else {
        bail!("the query still runs after a minute of cancel requests");
    };
    let error = result
        .err()
        .context("the query finished instead of being cancelled")?;
    let code = error.as_db_error().map(|e| e.code().code().to_owned());
    ensure!(code.as_deref() == Some("57014"), "{error:?}");
    server.stop().await
}
