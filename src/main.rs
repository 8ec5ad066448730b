//! The `spur` binary: reads the configuration, installs logging, and runs the
//! subcommand. Everything else lives in the library crates.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

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
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
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
            print!(
                "{}",
                toml::to_string_pretty(&settings).context("printing the configuration")?
            );
            Ok(())
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
