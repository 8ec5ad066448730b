//! The `spur` binary: reads the configuration, installs logging, and runs the
//! subcommand. Everything else lives in the library crates.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod privacy;
mod residency;
mod settings;

#[derive(Parser, Debug)]
#[command(
    name = "spur",
    version,
    about = "Privacy-first marketing-automation tracking pipeline"
)]
struct Cli {
    /// Configuration file (TOML). Environment variables `SPUR_<SECTION>__<KEY>`
    /// override it, e.g. `SPUR_KAFKA__BROKERS=host:9092`.
    #[arg(long, short, env = "SPUR_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the collector: the HTTP endpoints that receive tracking events.
    Collect {
        /// Override `collector.listen`.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Run the processor: Kafka → pseudonymised, sessionised Delta Lake, exactly once.
    Process,
    /// Manage the HMAC keys of the pseudonyms (`processor.keys_dir`).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Lake maintenance.
    Lake {
        #[command(subcommand)]
        command: LakeCommand,
    },
    /// Run read-only SQL over the lake and print the results.
    Sql {
        /// The SQL: one statement, or several separated by `;`.
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        sql: Option<String>,
        /// Read the SQL from this file (`-`: standard input).
        #[arg(long, short)]
        file: Option<PathBuf>,
        /// `table`, `csv` or `json` (one object per line).
        #[arg(long, default_value = "table")]
        format: spur_query::Format,
    },
    /// Compute interest scores and append them to the lake table `scores`, or explain
    /// one subject's scores without writing.
    Score {
        /// Score as of this RFC 3339 time (default: now); later views are left out.
        #[arg(long)]
        as_of: Option<String>,
        /// Print the views behind this subject's scores instead of writing.
        #[arg(long, value_name = "SUBJECT")]
        explain: Option<String>,
        /// With `--explain`: only this topic.
        #[arg(long, requires = "explain")]
        topic: Option<String>,
    },
    /// Serve the lake over the PostgreSQL wire protocol (psql, BI tools, drivers).
    ServeSql {
        /// Override `query.listen`.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Keep segment membership current and send each `segment.entered` /
    /// `segment.exited` to the segment-changes topic and the configured webhooks.
    Segments {
        /// Override `query.segments.listen` (operator endpoints).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// GDPR requests about one subject: access (export), erasure, undoing a merge.
    Subject {
        #[command(subcommand)]
        command: privacy::SubjectCommand,
    },
    /// The consent and identity ledger.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Serve the authenticated admin endpoints for GDPR requests (`query.admin`).
    Admin,
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Create the key files with a first random key each, if missing.
    Init,
    /// Add a new key version for a purpose and make it active; old versions stay
    /// until retired.
    Rotate {
        /// `analytics` (visitor pseudonyms) or `identity` (e-mail pseudonyms).
        purpose: String,
    },
    /// Delete an old key version: pseudonyms made with it can never again be linked
    /// to their input.
    Retire { purpose: String, version: u32 },
}

#[derive(Subcommand, Debug)]
enum LakeCommand {
    /// Compact small files of every table (Delta OPTIMIZE).
    Optimize,
    /// Remove rows older than each table's `[retention]` period, physically
    /// (partitions deleted, then their files vacuumed).
    Retention,
}

#[derive(Subcommand, Debug)]
enum LedgerCommand {
    /// Recompute every digest and chain link; exit 1 if an entry was altered,
    /// inserted or removed.
    Verify,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Load and validate the configuration, then print it merged, secrets redacted.
    Check,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut settings = settings::Settings::load(cli.config.as_deref())?;
    settings::init_logging(&settings.log);
    match cli.command {
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            settings.validate()?;
            let residency = settings.residency()?;
            print!(
                "{}",
                toml::to_string_pretty(&settings).context("printing the configuration")?
            );
            // As TOML comments, so that the output still parses.
            println!("\n# Residency, as checked at start-up (docs/privacy.md):");
            for line in residency::summary(settings.residency.eu_only, &residency).lines() {
                println!("#   {line}");
            }
            Ok(())
        }
        Command::Process => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(spur_processor::run(
                settings.processor,
                settings.kafka,
                settings::shutdown_signal(),
            ))?;
            Ok(())
        }
        Command::Keys { command } => {
            use spur_processor::keys::{KeyRing, Purpose};
            let dir = &settings.processor.keys_dir;
            let purpose = |name: &str| match name {
                "analytics" => Ok(Purpose::Analytics),
                "identity" => Ok(Purpose::Identity),
                other => anyhow::bail!("unknown purpose {other:?}: analytics or identity"),
            };
            match command {
                KeysCommand::Init => {
                    KeyRing::init(dir)?;
                    println!("keys ready in {}", dir.display());
                }
                KeysCommand::Rotate { purpose: name } => {
                    let version = KeyRing::rotate(dir, purpose(&name)?)?;
                    println!("{name} key version {version} is now active");
                }
                KeysCommand::Retire {
                    purpose: name,
                    version,
                } => {
                    KeyRing::retire(dir, purpose(&name)?, version)?;
                    println!("{name} key version {version} deleted");
                }
            }
            Ok(())
        }
        Command::Subject { command } => privacy::subject(&settings, command),
        Command::Ledger {
            command: LedgerCommand::Verify,
        } => privacy::verify_ledger(&settings),
        Command::Admin => privacy::admin(settings),
        Command::Lake {
            command: LakeCommand::Retention,
        } => privacy::retention(&settings, &settings.retention),
        Command::Lake {
            command: LakeCommand::Optimize,
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut lake = spur_lake::Lake::open(&settings.processor.lake).await?;
                for kind in spur_lake::TableKind::ALL {
                    let summary = lake.optimize(kind).await?;
                    println!("{kind:?}: {summary:?}");
                }
                anyhow::Ok(())
            })
        }
        Command::Sql { sql, file, format } => {
            let sql = match (sql, file) {
                (Some(sql), _) => sql,
                (None, Some(path)) if path.as_os_str() == "-" => {
                    std::io::read_to_string(std::io::stdin()).context("reading SQL from stdin")?
                }
                (None, Some(path)) => std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?,
                (None, None) => anyhow::bail!("give the SQL as an argument or with --file"),
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let catalog = spur_query::Catalog::open(&settings.query).await?;
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                spur_query::run_sql(&catalog, &sql, format, &mut out).await?;
                anyhow::Ok(())
            })
        }
        Command::Score {
            as_of,
            explain,
            topic,
        } => {
            let as_of = spur_query::score::as_of_ms(as_of.as_deref())?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let query = &settings.query;
                if let Some(subject) = explain {
                    let parts =
                        spur_query::score::explain(query, &subject, topic.as_deref(), as_of)
                            .await?;
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    spur_query::score::write_contributions(&mut out, &parts, &query.scoring)?;
                } else {
                    let s = spur_query::score::run(query, as_of).await?;
                    println!(
                        "scored {} subjects, {} topics: {} rows from {} views (scores version {:?})",
                        s.subjects, s.topics, s.rows, s.views, s.version
                    );
                }
                anyhow::Ok(())
            })
        }
        Command::Segments { listen } => {
            if let Some(listen) = listen {
                settings.query.segments.listen = listen;
            }
            settings.query.validate()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listen = settings.query.segments.listen;
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("binding {listen}"))?;
                spur_query::segments::service::run(
                    settings.query,
                    settings.kafka,
                    listener,
                    settings::shutdown_signal(),
                )
                .await?;
                anyhow::Ok(())
            })
        }
        Command::ServeSql { listen } => {
            if let Some(listen) = listen {
                settings.query.listen = listen;
            }
            settings.query.validate()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(settings.query.listen)
                    .await
                    .with_context(|| format!("binding {}", settings.query.listen))?;
                spur_query::serve(settings.query, listener, settings::shutdown_signal()).await?;
                Ok(())
            })
        }
        Command::Collect { listen } => {
            if let Some(listen) = listen {
                settings.collector.listen = listen;
            }
            settings.validate()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(settings.collector.listen)
                    .await
                    .with_context(|| format!("binding {}", settings.collector.listen))?;
                spur_collector::run(
                    settings.collector,
                    settings.kafka,
                    listener,
                    settings::shutdown_signal(),
                )
                .await?;
                Ok(())
            })
        }
    }
}
