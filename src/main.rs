//! The `spur` binary: reads the configuration, installs logging, starts one tokio
//! runtime and runs the subcommand. Everything else lives in the library crates.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use spur_lake::Lake;
use tokio::net::TcpListener;

mod console;
mod settings;
mod up;

/// mimalloc, not glibc's malloc: DataFusion's many short-lived buffers across threads
/// left glibc holding gigabytes it no longer used (ARCHITECTURE.md, "Memory").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use settings::{Settings, shutdown_signal};

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
    /// Run the whole pipeline in one process on an embedded broker: collector with
    /// the demo shop, processor, segment service, SQL server and admin API, with
    /// everything under `--data-dir` (default `./spur-data`).
    Up(up::UpArgs),
    /// Run the collector: the HTTP endpoints that receive tracking events.
    Collect {
        /// Override `collector.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Run the processor: Kafka → pseudonymised, sessionised Delta Lake, exactly once.
    Process,
    /// Manage the keys of the pseudonyms and the contact vault (`keys.dir`).
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
        listen: Option<SocketAddr>,
    },
    /// Keep segment membership current and send each `segment.entered` /
    /// `segment.exited` to the segment-changes topic and the configured webhooks.
    Segments {
        /// Override `segments.listen` (operator endpoints).
        #[arg(long)]
        listen: Option<SocketAddr>,
        #[command(subcommand)]
        command: Option<SegmentsCommand>,
    },
    /// GDPR requests about one subject: access (export), erasure, undoing a merge.
    Subject {
        #[command(subcommand)]
        command: SubjectCommand,
    },
    /// The consent and identity ledger.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Serve the authenticated admin endpoints for GDPR requests (`[admin]`).
    Admin,
    /// Run the embedded Kafka-API broker alone (`[broker]`): a single node keeping
    /// its topics under `broker.data_dir`, for development, tests and small sites.
    Broker {
        /// Override `broker.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Override `broker.data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
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
        purpose: spur_keys::Purpose,
    },
    /// Delete an old key version: pseudonyms made with it can never again be linked
    /// to their input.
    Retire {
        purpose: spur_keys::Purpose,
        version: u32,
    },
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
enum SubjectCommand {
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
    /// Subject ids for a mailing list: a CSV of e-mail addresses (first column,
    /// header optional) in, `email,subject_id,known,error` out; invalid rows are
    /// also named on stderr.
    Resolve {
        /// The CSV file, or `-` for standard input.
        list: String,
    },
}

#[derive(Subcommand, Debug)]
enum SegmentsCommand {
    /// Deliver the changes a webhook parked (in seq order, with their original ids),
    /// removing each once delivered. Safe while `spur segments` runs.
    Replay {
        /// The webhook's `name` in `[[segments.webhooks]]`.
        #[arg(long)]
        webhook: String,
    },
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Command::Up(args) = cli.command {
        // `spur up` writes its configuration on first start before loading it.
        let (settings, path) = up::load(cli.config.as_deref(), &args)?;
        settings.log.install();
        return runtime.block_on(up::run(settings, path, args));
    }
    let settings = Settings::load(cli.config.as_deref())?;
    settings.log.install();
    runtime.block_on(run(settings, cli.command))
}

async fn bind(listen: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn run(mut settings: Settings, command: Command) -> anyhow::Result<()> {
    let root = settings.lake.root.clone();
    match command {
        // Loads its configuration differently: started from `main`.
        Command::Up(_) => anyhow::bail!("`spur up` is started from main"),
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
            let lakes = [("lake.root".to_owned(), residency)];
            let summary = spur_gdpr::residency::summary(settings.residency.eu_only, &lakes);
            for line in summary.lines() {
                println!("#   {line}");
            }
        }
        Command::Collect { listen } => {
            if let Some(listen) = listen {
                settings.collector.listen = listen;
            }
            settings.validate()?;
            let listener = bind(settings.collector.listen).await?;
            spur_collector::run(
                settings.collector,
                settings.kafka,
                listener,
                shutdown_signal(),
            )
            .await?;
        }
        Command::Broker { listen, data_dir } => {
            if let Some(listen) = listen {
                settings.broker.listen = listen;
            }
            if let Some(dir) = data_dir {
                settings.broker.data_dir = dir;
            }
            let broker = spur_broker::Broker::bind(settings.broker).await?;
            println!("spur broker: bootstrap.servers = {}", broker.bootstrap());
            broker.run(shutdown_signal()).await;
        }
        Command::Process => {
            spur_processor::run(settings.processor, settings.kafka, shutdown_signal()).await?;
        }
        Command::Keys { command } => keys(&settings.keys.dir, command)?,
        Command::Lake {
            command: LakeCommand::Optimize,
        } => {
            let mut lake = Lake::open(&root).await?;
            for kind in spur_lake::TableKind::ALL {
                println!("{kind:?}: {:?}", lake.optimize(kind).await?);
            }
        }
        Command::Lake {
            command: LakeCommand::Retention,
        } => {
            let mut lake = Lake::open(&root).await?;
            for summary in
                spur_gdpr::retention::apply(&mut lake, &settings.retention, now_ms()).await?
            {
                println!("{}", serde_json::to_string(&summary)?);
            }
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
            let catalog =
                spur_query::Catalog::open(&root, &settings.lifecycle, &settings.query).await?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            spur_query::run_sql(&catalog, &sql, format, &mut out).await?;
        }
        Command::Score {
            as_of,
            explain,
            topic,
        } => {
            use spur_audience::score;
            let as_of = score::as_of_ms(as_of.as_deref())?;
            let scoring = &settings.scoring;
            if let Some(subject) = explain {
                let parts =
                    score::explain(&root, scoring, &subject, topic.as_deref(), as_of).await?;
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                score::write_contributions(&mut out, &parts, scoring)?;
            } else {
                let s = score::run(&root, scoring, as_of).await?;
                println!(
                    "scored {} subjects, {} topics: {} rows from {} topic views (scores version {:?})",
                    s.subjects, s.topics, s.rows, s.views, s.version
                );
            }
        }
        Command::ServeSql { listen } => {
            if let Some(listen) = listen {
                settings.query.listen = listen;
            }
            let query = &settings.query;
            query.validate()?;
            query.check_listen(query.listen)?;
            settings.lifecycle.validate()?;
            let listener = bind(query.listen).await?;
            // Services may start in any order: before the processor has created the
            // lake, the server serves an empty catalog and picks the tables up later.
            let catalog =
                spur_query::Catalog::open_or_wait(&root, &settings.lifecycle, query).await?;
            spur_query::serve(
                std::sync::Arc::new(catalog),
                query,
                listener,
                shutdown_signal(),
            )
            .await?;
        }
        Command::Segments {
            command: Some(SegmentsCommand::Replay { webhook }),
            ..
        } => {
            let (stop, stopping) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                shutdown_signal().await;
                stop.send_replace(true);
            });
            let replayed =
                spur_dispatch::service::replay(&settings.dispatch(), &webhook, stopping).await?;
            println!("{}", serde_json::to_string_pretty(&replayed)?);
            if let Some(why) = replayed.stopped {
                anyhow::bail!(
                    "replay of webhook {webhook:?} ended with {} changes still parked: {why}",
                    replayed.remaining
                );
            }
        }
        Command::Segments {
            listen,
            command: None,
        } => {
            if let Some(listen) = listen {
                settings.segments.listen = listen;
            }
            // `run` checks `[segments]`, `[lifecycle]` and `[unsubscribe]` itself.
            let listener = bind(settings.segments.listen).await?;
            spur_dispatch::run(
                settings.dispatch(),
                settings.kafka,
                listener,
                shutdown_signal(),
            )
            .await?;
        }
        Command::Subject { command } => subject(&settings, command).await?,
        Command::Ledger {
            command: LedgerCommand::Verify,
        } => {
            let lake = Lake::open(&root).await?;
            let report = spur_audience::verify(&lake).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if let Some(problem) = report.problem {
                anyhow::bail!("the consent ledger fails verification: {problem}");
            }
        }
        Command::Admin => {
            let token = settings.admin.token()?;
            let listener = bind(settings.admin.listen).await?;
            let admin = std::sync::Arc::new(spur_gdpr::admin::Admin {
                lake: tokio::sync::Mutex::new(Lake::open(&root).await?),
                token,
                resolve: spur_gdpr::subject::resolver(&settings.keys.dir),
                erase: erase_options(&settings),
            });
            spur_gdpr::admin::serve(listener, admin, shutdown_signal()).await?;
        }
    }
    Ok(())
}

fn keys(dir: &std::path::Path, command: KeysCommand) -> anyhow::Result<()> {
    use spur_keys::KeyRing;
    match command {
        KeysCommand::Init => {
            KeyRing::init(dir)?;
            println!("keys ready in {}", dir.display());
        }
        KeysCommand::Rotate { purpose } => {
            let version = KeyRing::rotate(dir, purpose)?;
            println!("{purpose} key version {version} is now active");
        }
        KeysCommand::Retire { purpose, version } => {
            KeyRing::retire(dir, purpose, version)?;
            println!("{purpose} key version {version} deleted");
        }
    }
    Ok(())
}

fn erase_options(settings: &Settings) -> spur_gdpr::EraseOptions {
    spur_gdpr::EraseOptions {
        keys_dir: Some(settings.keys.dir.clone()),
        ..spur_gdpr::subject::erase_options(
            settings.segments.state_dir.clone(),
            &settings.kafka,
            now_ms(),
        )
    }
}

async fn subject(settings: &Settings, command: SubjectCommand) -> anyhow::Result<()> {
    let resolve = spur_gdpr::subject::resolver(&settings.keys.dir);
    let mut lake = Lake::open(&settings.lake.root).await?;
    match command {
        SubjectCommand::Export { subject, summary } => {
            let id = resolve(&subject).map_err(anyhow::Error::msg)?;
            let export = spur_gdpr::export(&lake, &id, now_ms(), Some(&settings.keys.dir)).await?;
            if summary {
                print!("{}", export.summary());
            } else {
                println!("{}", serde_json::to_string_pretty(&export.to_json())?);
            }
        }
        SubjectCommand::Erase { subject } => {
            let id = resolve(&subject).map_err(anyhow::Error::msg)?;
            let receipt =
                spur_gdpr::erase(&mut lake, &id, now_ms(), &erase_options(settings)).await?;
            println!("{}", serde_json::to_string_pretty(&receipt)?);
        }
        SubjectCommand::Split {
            subject,
            visitor,
            reason,
        } => {
            let id = resolve(&subject).map_err(anyhow::Error::msg)?;
            let out =
                spur_gdpr::admin::split(&mut lake, &id, Some(visitor), reason, now_ms()).await?;
            println!("{out}");
        }
        SubjectCommand::Resolve { list } => {
            let text = if list == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&list)?
            };
            let pseudonym = spur_gdpr::subject::email_pseudonyms(&settings.keys.dir)
                .map_err(anyhow::Error::msg)?;
            let answer = spur_gdpr::resolve::resolve_list(&lake, &text, &pseudonym).await?;
            print!("{}", answer.csv);
            if !answer.invalid_rows.is_empty() {
                let rows: Vec<String> = answer.invalid_rows.iter().map(usize::to_string).collect();
                eprintln!("not an e-mail address in row(s) {}", rows.join(", "));
            }
        }
    }
    Ok(())
}
