//! CSV injection (OWASP): what a visitor's browser sends — a page title, a custom
//! event's name or property, a referrer — reaches the lake as it was sent, and `spur sql
//! --format csv` must not hand it to a spreadsheet as a formula. The rows are
//! written as the processor writes them (`spur_testkit`), with the values a hostile
//! page would send.

use anyhow::Result;
use spur_lake::TableKind;
use spur_query::Format;

use crate::fixture::{self, Fixture, event};
use crate::sql::run;

const TITLE: &str = r#"=HYPERLINK("http://evil","x")"#;

#[tokio::test]
async fn formula_cells_from_visitors_are_neutralised_in_csv() -> Result<()> {
    let fixture = Fixture::new().await?;
    let mut row = event(0, 0);
    row.event_id = "ev-evil".into();
    row.event_type = "custom".into();
    row.title = Some(TITLE.into());
    row.name = Some("+cmd".into());
    row.referrer = Some("@SUM(1)".into());
    row.props = Some(r#"{"q":"-2+3"}"#.into());
    row.engaged_ms = Some(1500);
    let mut lake = fixture.writer().await?;
    lake.append(TableKind::Events, spur_lake::events_batch(&[row])?, &[])
        .await?;

    let catalog = fixture::catalog(&fixture, &fixture::config()).await?;
    let csv = run(
        &catalog,
        "SELECT title, name, referrer, substr(props, 7, 4) AS prop, chr(9) || '=1' AS tab, \
         -engaged_ms AS minus, -1.5 AS x, title AS again \
         FROM events WHERE event_id = 'ev-evil'",
        Format::Csv,
    )
    .await?;
    assert_eq!(
        csv,
        "title,name,referrer,prop,tab,minus,x,again\n\
         \"'=HYPERLINK(\"\"http://evil\"\",\"\"x\"\")\",'+cmd,'@SUM(1),'-2+3,'\t=1,-1500,-1.5,\
         \"'=HYPERLINK(\"\"http://evil\"\",\"\"x\"\")\"\n"
    );
    // The same rows in the other formats are the data as stored.
    let json = run(
        &catalog,
        "SELECT title FROM events WHERE event_id = 'ev-evil'",
        Format::Json,
    )
    .await?;
    assert_eq!(
        json,
        "{\"title\":\"=HYPERLINK(\\\"http://evil\\\",\\\"x\\\")\"}\n"
    );
    Ok(())
}
