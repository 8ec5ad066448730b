//! The GDPR commands of the binary: `spur subject export|erase|split`, `spur ledger
//! verify`, `spur lake retention` and `spur admin`. The work is in
//! `spur_query::privacy` and `spur_lake`; here: turning an e-mail address into its
//! subject id (needs the identity key), the Kafka statements of a receipt, and the
//! retention settings.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use spur_lake::{Lake, TableKind};
use spur_query::privacy::admin::Resolver;
use spur_query::privacy::{EraseOptions, erase, export};

use crate::settings::Settings;

#[derive(Subcommand, Debug)]
pub enum SubjectCommand {
    /// Everything held about a subject (GDPR Art. 15): JSON, or `--summary` text.
    Export {
        /// The subject id, or the person's e-mail address.
        subject: String,
        /// Print the readable summary instead of JSON.
        #[arg(long)]
        summary: bool,
    },
    /// Erase a subject from every table and file (GDPR Art. 17); prints the receipt.
    /// Safe to repeat; an interrupted run is resumed.
    Erase {
        /// The subject id, or the person's e-mail address.
        subject: String,
    },
    /// Undo a wrong merge: the visitor is no longer this person.
    Split {
        subject: String,
        /// The visitor id to detach.
        #[arg(long)]
        visitor: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

/// `[retention]`: how long each table keeps rows, by partition date; zero keeps them.
/// The ledger (proof of consent) and `erasures` (proof of erasure) have none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    #[serde(with = "humantime_serde")]
    pub events: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub sessions: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub scores: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub segment_changes: Option<Duration>,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        let days = |d: u64| Some(Duration::from_secs(d * 86_400));
        Self {
            // 13 months of behaviour, the common ceiling for audience measurement.
            events: days(395),
            sessions: days(395),
            scores: days(90),
            // The record of what the mailing system was told.
            segment_changes: days(730),
        }
    }
}

impl RetentionSettings {
    fn periods(&self) -> [(TableKind, Option<Duration>); 4] {
        [
            (TableKind::Events, self.events),
            (TableKind::Sessions, self.sessions),
            (TableKind::Scores, self.scores),
            (TableKind::SegmentChanges, self.segment_changes),
        ]
    }
}

/// Subject ids are 32 lower-case hex digits; anything with an `@` is an e-mail
/// address, pseudonymised with the active identity key.
pub fn resolver(keys_dir: &Path) -> Resolver {
    let dir = keys_dir.to_owned();
    Arc::new(move |input: &str| {
        if input.contains('@') {
            let keys = spur_processor::keys::KeyRing::load(&dir)
                .map_err(|e| format!("identity key in {}: {e}", dir.display()))?;
            Ok(spur_processor::pseudonym::email(&keys, input).1)
        } else if input.len() == 32 && input.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(input.to_ascii_lowercase())
        } else {
            Err("expected a subject id (32 hex digits) or an e-mail address".into())
        }
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What the receipt says about copies on Kafka: the events topic holds raw records
/// (identify events carry the address in clear) until its retention deletes them.
fn outside_lake(settings: &Settings) -> Vec<String> {
    let retention = settings.kafka.events_retention;
    let until = chrono::DateTime::from_timestamp_millis(now_ms() + retention.as_millis() as i64)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    vec![
        format!(
            "topic {}: raw records are deleted by the broker's retention ({}); the last copy of this subject's records expires by {until} at the latest",
            settings.kafka.topics.events,
            humantime_serde::re::humantime::format_duration(retention)
        ),
        format!(
            "topic {}: dead letters carry no personal data",
            settings.kafka.topics.dead_letter
        ),
        format!(
            "topic {}: segment changes already delivered to the mailing system are the receiver's to delete; records expire with the topic's retention",
            settings.kafka.topics.segment_changes
        ),
    ]
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn erase_options(settings: &Settings) -> EraseOptions {
    EraseOptions {
        state_dir: Some(settings.query.segments.state_dir.clone()),
        outside_lake: outside_lake(settings),
        interrupt_after: None,
    }
}

pub fn subject(settings: &Settings, command: SubjectCommand) -> anyhow::Result<()> {
    let resolve = resolver(&settings.processor.keys_dir);
    runtime()?.block_on(async {
        let mut lake = Lake::open(&settings.processor.lake).await?;
        match command {
            SubjectCommand::Export { subject, summary } => {
                let id = resolve(&subject).map_err(anyhow::Error::msg)?;
                let export = export(&lake, &id, now_ms()).await?;
                if summary {
                    print!("{}", export.summary());
                } else {
                    println!("{}", serde_json::to_string_pretty(&export.to_json())?);
                }
            }
            SubjectCommand::Erase { subject } => {
                let id = resolve(&subject).map_err(anyhow::Error::msg)?;
                let receipt = erase(&mut lake, &id, now_ms(), &erase_options(settings)).await?;
                println!("{}", serde_json::to_string_pretty(&receipt)?);
            }
            SubjectCommand::Split {
                subject,
                visitor,
                reason,
            } => {
                let id = resolve(&subject).map_err(anyhow::Error::msg)?;
                let out = spur_query::privacy::admin::split(
                    &mut lake,
                    &id,
                    Some(visitor),
                    reason,
                    now_ms(),
                )
                .await?;
                println!("{out}");
            }
        }
        anyhow::Ok(())
    })
}

pub fn verify_ledger(settings: &Settings) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let lake = Lake::open(&settings.processor.lake).await?;
        let report = spur_query::privacy::verify(&lake).await?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        if let Some(problem) = report.problem {
            anyhow::bail!("the consent ledger fails verification: {problem}");
        }
        anyhow::Ok(())
    })
}

pub fn retention(settings: &Settings, retention: &RetentionSettings) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let mut lake = Lake::open(&settings.processor.lake).await?;
        for (kind, period) in retention.periods() {
            let Some(period) = period.filter(|p| !p.is_zero()) else {
                continue;
            };
            let cutoff = chrono::Utc::now()
                - chrono::Duration::from_std(period).context("retention period too long")?;
            let before = cutoff.format("%Y-%m-%d").to_string();
            let summary = lake.expire(kind, &before).await?;
            println!("{}", serde_json::to_string(&summary)?);
        }
        anyhow::Ok(())
    })
}

pub fn admin(settings: Settings) -> anyhow::Result<()> {
    let config = settings.query.admin.clone();
    let token = config
        .token
        .clone()
        .filter(|t| t.expose().len() >= 32)
        .context("query.admin.token must be set to a secret of at least 32 characters (e.g. `openssl rand -hex 32`)")?;
    runtime()?.block_on(async move {
        let lake = Lake::open(&settings.processor.lake).await?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let admin = Arc::new(spur_query::privacy::admin::Admin {
            lake: tokio::sync::Mutex::new(lake),
            token,
            resolve: resolver(&settings.processor.keys_dir),
            erase: erase_options(&settings),
        });
        spur_query::privacy::admin::serve(listener, admin, crate::settings::shutdown_signal())
            .await?;
        anyhow::Ok(())
    })
}
