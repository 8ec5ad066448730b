//! A small lake in a temporary directory, written through `spur_lake` as the
//! processor writes it, and a running SQL server over it.
//!
//! Contents (all times UTC):
//! - `events`, 2025-11-29: 6 events `ev-0-0` … `ev-0-5` on site `shop`; `n % 3 == 2`
//!   are `identify`, the rest `pageview`; path `/p/<n>`; topics `[shoes, sale]` for
//!   even `n`; `engaged_ms` `1000 * n` for odd `n`, else null.
//! - `events`, 2025-11-30: 4 events `ev-1-0` … `ev-1-3`; odd `n` on site `blog`.
//! - `sessions`: 3 on 2025-11-29, 2 on 2025-11-30 (`duration_ms` 60 s × (n + 1),
//!   `pageviews` n + 2, the one with n = 1 is a bot).

use std::net::SocketAddr;

use anyhow::{Context, Result};
use spur_lake::model::{EventRow, SessionRow};
use spur_lake::{Lake, TableKind};
use spur_query::Config;
use spur_query::config::{ByteSize, User};
use spur_schemas::secret::Secret;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const DAY0: &str = "2025-11-29";
pub const DAY1: &str = "2025-11-30";
pub const USER: &str = "analyst";
pub const PASSWORD: &str = "correct horse battery";

/// Milliseconds of 2025-11-29T12:00:00Z.
const NOON: i64 = 1_764_417_600_000;
const DAY_MS: i64 = 86_400_000;

fn dt(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

pub fn event(day: i64, n: i64) -> EventRow {
    let event_time = NOON + day * DAY_MS + n * 60_000;
    let identify = n % 3 == 2;
    EventRow {
        event_id: format!("ev-{day}-{n}"),
        site_id: if day == 1 && n % 2 == 1 {
            "blog"
        } else {
            "shop"
        }
        .into(),
        event_type: if identify { "identify" } else { "pageview" }.into(),
        event_time,
        received_at: event_time + 40,
        dt: dt(event_time),
        visitor_id: format!("{:064x}", 0xabc0 + n % 3),
        visitor_kind: "persistent".into(),
        key_version: 1,
        session_id: format!("{:032x}", 0x5e55 + day * 10 + n / 2),
        consent_analytics: true,
        consent_marketing: n % 2 == 0,
        gpc: false,
        dnt: false,
        country: Some("DE".into()),
        region: None,
        browser: "Firefox".into(),
        browser_version: "133".into(),
        os: "Linux".into(),
        device: "pc".into(),
        is_bot: false,
        bot_reason: None,
        url: Some(format!("https://shop.example/p/{n}")),
        host: Some("shop.example".into()),
        path: Some(format!("/p/{n}")),
        referrer: None,
        title: Some(format!("Product {n}")),
        topics: if n % 2 == 0 {
            vec!["shoes".into(), "sale".into()]
        } else {
            Vec::new()
        },
        engaged_ms: (n % 2 == 1).then_some(1000 * n),
        scroll_pct: None,
        email_hash: identify.then(|| format!("{:064x}", 0xe0 + n)),
        form: identify.then(|| "newsletter".into()),
        consent_purposes: None,
        consent_evidence: None,
        name: None,
        props: None,
        time_flags: None,
        kafka_partition: 0,
        kafka_offset: day * 100 + n,
    }
}

/// An event of `visitor` in `session` at `time`; a pageview unless changed.
pub fn pageview(
    id: &str,
    visitor: &str,
    session: &str,
    time: i64,
    path: &str,
    topics: &[&str],
) -> EventRow {
    let mut row = event(0, 0);
    row.event_id = id.into();
    row.event_type = "pageview".into();
    row.event_time = time;
    row.received_at = time + 40;
    row.dt = chrono::DateTime::from_timestamp_millis(time)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default();
    row.visitor_id = visitor.into();
    row.session_id = session.into();
    row.path = Some(path.into());
    row.url = Some(format!("https://shop.example{path}"));
    row.topics = topics.iter().map(|t| (*t).to_owned()).collect();
    row.engaged_ms = None;
    row.email_hash = None;
    row
}

pub fn identify(id: &str, visitor: &str, time: i64, email_hash: &str) -> EventRow {
    let mut row = pageview(id, visitor, "s-id", time, "/signup", &[]);
    row.event_type = "identify".into();
    row.email_hash = Some(email_hash.into());
    // The consent evidence a form must send for the link to count.
    row.consent_evidence = Some(
        r#"{"purposes":["analytics"],"text_id":"signup-v1","policy_version":"2025-01"}"#.into(),
    );
    row
}

pub fn session(day: i64, n: i64) -> SessionRow {
    let start_time = NOON + day * DAY_MS + n * 1_000;
    let duration_ms = 60_000 * (n + 1);
    SessionRow {
        session_id: format!("{:032x}", 0x5e55 + day * 10 + n),
        site_id: "shop".into(),
        visitor_id: format!("{:064x}", 0xabc0 + n),
        dt: dt(start_time),
        start_time,
        end_time: start_time + duration_ms,
        duration_ms,
        events: 2,
        pageviews: n + 2,
        engaged_ms: 0,
        entry_path: Some("/".into()),
        exit_path: (n % 2 == 0).then(|| "/cart".into()),
        is_bot: n == 1,
        country: Some("DE".into()),
        device: "mobile".into(),
        closed_by: "inactivity".into(),
        kafka_partition: 0,
    }
}

/// A lake with the fixture rows, one commit per table and day (so each day is its
/// own partition and file).
pub struct Fixture {
    pub dir: TempDir,
}

impl Fixture {
    pub async fn new() -> Result<Fixture> {
        let dir = tempfile::tempdir()?;
        let fixture = Fixture { dir };
        let mut lake = fixture.writer().await?;
        for (day, events, sessions) in [(0, 6, 3), (1, 4, 2)] {
            let rows: Vec<_> = (0..events).map(|n| event(day, n)).collect();
            lake.append(TableKind::Events, spur_lake::events_batch(&rows)?, &[])
                .await?;
            let rows: Vec<_> = (0..sessions).map(|n| session(day, n)).collect();
            lake.append(TableKind::Sessions, spur_lake::sessions_batch(&rows)?, &[])
                .await?;
        }
        Ok(fixture)
    }

    pub fn root(&self) -> Result<String> {
        self.dir
            .path()
            .to_str()
            .map(str::to_owned)
            .context("temporary directory path is not UTF-8")
    }

    /// A writer on the same lake, as the processor would hold.
    pub async fn writer(&self) -> Result<Lake> {
        Ok(Lake::open(&self.root()?).await?)
    }

    /// The query configuration tests start from: every query sees the newest
    /// commit, one user, a limit large enough for the fixture queries.
    pub fn config(&self) -> Result<Config> {
        Ok(Config {
            lake: self.root()?,
            users: vec![User {
                name: USER.into(),
                password: Secret::new(PASSWORD),
            }],
            memory_limit: ByteSize(64 << 20),
            refresh_interval: std::time::Duration::ZERO,
            ..Config::default()
        })
    }
}

/// A running `serve` on a loopback port.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<spur_query::Result<()>>,
}

impl Server {
    pub async fn start(config: Config) -> Result<Server> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(spur_query::serve(config, listener, async move {
            let _ = stopped.await;
        }));
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
