//! The CLI path (`spur sql`): `run_sql` over a catalog of the fixture lake.

use anyhow::{Result, bail, ensure};
use spur_lake::TableKind;
use spur_query::{Catalog, Error, Format, run_sql};

use crate::cases::cases;
use crate::fixture::{self, DAY0, DAY1, Fixture, event};

pub async fn run(catalog: &Catalog, sql: &str, format: Format) -> spur_query::Result<String> {
    let mut out = Vec::new();
    run_sql(catalog, sql, format, &mut out).await?;
    Ok(String::from_utf8(out).expect("output is UTF-8"))
}

#[tokio::test]
async fn data_driven_cases_print_the_expected_csv() -> Result<()> {
    let fixture = Fixture::new().await?;
    let catalog = fixture::catalog(&fixture, &fixture::config()).await?;
    let mut failures = Vec::new();
    for case in cases() {
        match run(&catalog, &case.sql, Format::Csv).await {
            Ok(csv) if csv == case.csv => {}
            Ok(csv) => failures.push(format!(
                "{}:\n  expected {:?}\n  got      {:?}",
                case.name, case.csv, csv
            )),
            Err(error) => failures.push(format!("{}: {}", case.name, error.chain())),
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[tokio::test]
async fn json_is_one_object_per_row_and_keeps_lists() -> Result<()> {
    let fixture = Fixture::new().await?;
    let catalog = fixture::catalog(&fixture, &fixture::config()).await?;
    let json = run(
        &catalog,
        "SELECT event_id, topics, engaged_ms FROM events \
         WHERE event_id IN ('ev-0-0', 'ev-0-1') ORDER BY event_id",
        Format::Json,
    )
    .await?;
    assert_eq!(
        json,
        "{\"event_id\":\"ev-0-0\",\"topics\":[\"shoes\",\"sale\"],\"engaged_ms\":null}\n\
         {\"event_id\":\"ev-0-1\",\"topics\":[],\"engaged_ms\":1000}\n"
    );
    Ok(())
}

#[tokio::test]
async fn table_output_is_aligned() -> Result<()> {
    let fixture = Fixture::new().await?;
    let catalog = fixture::catalog(&fixture, &fixture::config()).await?;
    let table = run(
        &catalog,
        "SELECT dt, count(*) AS n FROM events GROUP BY dt ORDER BY dt",
        Format::Table,
    )
    .await?;
    assert_eq!(
        table,
        "+------------+---+\n\
         | dt         | n |\n\
         +------------+---+\n\
         | 2025-11-29 | 6 |\n\
         | 2025-11-30 | 4 |\n\
         +------------+---+\n"
    );
    Ok(())
}

#[tokio::test]
async fn several_statements_print_one_result_each() -> Result<()> {
    let fixture = Fixture::new().await?;
    let catalog = fixture::catalog(&fixture, &fixture::config()).await?;
    let csv = run(
        &catalog,
        "SELECT count(*) AS events FROM events; SELECT count(*) AS sessions FROM sessions;",
        Format::Csv,
    )
    .await?;
    assert_eq!(csv, "events\n10\nsessions\n5\n");
    Ok(())
}

#[tokio::test]
async fn introspection_lists_the_lake_tables() -> Result<()> {
    let fixture = Fixture::new().await?;
    let catalog = fixture::catalog(&fixture, &fixture::config()).await?;
    let tables = run(
        &catalog,
        "SELECT table_name FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name",
        Format::Csv,
    )
    .await?;
    // Every lake table but the sealed contacts, and nothing else.
    let mut names: Vec<_> = TableKind::ALL
        .iter()
        .filter(|kind| **kind != TableKind::Contacts)
        .map(|kind| kind.name())
        .collect();
    names.sort_unstable();
    assert_eq!(tables, format!("table_name\n{}\n", names.join("\n")));
    let show = run(&catalog, "SHOW TABLES", Format::Csv).await?;
    ensure!(
        show.contains(",events,") && show.contains(",sessions,"),
        "{show}"
    );
    let columns = run(&catalog, "SHOW COLUMNS FROM sessions", Format::Csv).await?;
    ensure!(columns.contains("duration_ms"), "{columns}");
    let described = run(&catalog, "DESCRIBE events", Format::Csv).await?;
    ensure!(
        described.starts_with("column_name,data_type,is_nullable\nevent_id,"),
        "{described}"
    );
    Ok(())
}

/// `WHERE dt = …` must read only that partition's files: the Delta provider prunes
/// on the partition column before any file is opened.
#[tokio::test]
async fn a_dt_filter_prunes_the_other_partitions() -> Result<()> {
    let fixture = Fixture::new().await?;
    let catalog = fixture::catalog(&fixture, &fixture::config()).await?;
    let plan = run(
        &catalog,
        &format!("EXPLAIN SELECT count(*) FROM events WHERE dt = '{DAY0}' AND is_bot = false"),
        Format::Csv,
    )
    .await?;
    ensure!(
        plan.contains(&format!("dt={DAY0}")),
        "no {DAY0} file scanned:\n{plan}"
    );
    ensure!(
        !plan.contains(&format!("dt={DAY1}")),
        "{DAY1} files scanned despite the filter:\n{plan}"
    );
    // Without the filter, both partitions are read.
    let plan = run(
        &catalog,
        "EXPLAIN SELECT count(*) FROM events WHERE NOT is_bot",
        Format::Csv,
    )
    .await?;
    ensure!(
        plan.contains(&format!("dt={DAY0}")) && plan.contains(&format!("dt={DAY1}")),
        "{plan}"
    );
    Ok(())
}

#[tokio::test]
async fn new_commits_become_visible_without_a_restart() -> Result<()> {
    let fixture = Fixture::new().await?;
    // refresh_interval 0: every query looks for new commits.
    let catalog = fixture::catalog(&fixture, &fixture::config()).await?;
    let count = "SELECT count(*) AS n FROM events";
    assert_eq!(run(&catalog, count, Format::Csv).await?, "n\n10\n");

    let mut writer = fixture.writer().await?;
    let rows: Vec<_> = (10..13).map(|n| event(2, n)).collect();
    writer
        .append(TableKind::Events, spur_lake::events_batch(&rows)?, &[])
        .await?;
    assert_eq!(run(&catalog, count, Format::Csv).await?, "n\n13\n");
    Ok(())
}

#[tokio::test]
async fn within_the_refresh_interval_queries_read_one_snapshot() -> Result<()> {
    let fixture = Fixture::new().await?;
    let mut config = fixture::config();
    config.refresh_interval = std::time::Duration::from_secs(24 * 3600);
    let catalog = fixture::catalog(&fixture, &config).await?;
    let count = "SELECT count(*) AS n FROM events";
    assert_eq!(run(&catalog, count, Format::Csv).await?, "n\n10\n");

    let mut writer = fixture.writer().await?;
    let rows = vec![event(2, 1)];
    writer
        .append(TableKind::Events, spur_lake::events_batch(&rows)?, &[])
        .await?;
    assert_eq!(run(&catalog, count, Format::Csv).await?, "n\n10\n");
    catalog.refresh().await?;
    assert_eq!(run(&catalog, count, Format::Csv).await?, "n\n11\n");
    Ok(())
}

#[tokio::test]
async fn a_root_without_a_lake_is_a_configuration_error_and_stays_empty() -> Result<()> {
    let empty = tempfile::tempdir()?;
    let root = empty.path().to_string_lossy().into_owned();
    let config = spur_query::Config::default();
    match Catalog::open(&root, &spur_audience::LifecycleConfig::default(), &config).await {
        Err(Error::Config(message)) => ensure!(message.contains("no lake table"), "{message}"),
        Err(other) => bail!("wrong error: {}", other.chain()),
        Ok(_) => bail!("opened a lake that does not exist"),
    }
    ensure!(
        std::fs::read_dir(empty.path())?.next().is_none(),
        "opening for queries created files"
    );
    Ok(())
}

#[tokio::test]
async fn sql_errors_say_what_is_wrong() -> Result<()> {
    let fixture = Fixture::new().await?;
    let catalog = fixture::catalog(&fixture, &fixture::config()).await?;
    match run(&catalog, "SELECT no_such_column FROM events", Format::Csv).await {
        Err(error @ Error::Query(_)) => {
            let message = error.chain();
            ensure!(message.contains("no_such_column"), "{message}");
        }
        other => bail!("expected a query error, got {other:?}"),
    }
    match run(&catalog, "SELECT * FROM no_such_table", Format::Csv).await {
        Err(error @ Error::Query(_)) => {
            ensure!(error.chain().contains("no_such_table"), "{}", error.chain());
        }
        other => bail!("expected a query error, got {other:?}"),
    }
    Ok(())
}
