//! The whole configuration file: one table per service plus the shared `[kafka]` and
//! `[log]` tables. Loaded from TOML, overridden by `SPUR_<SECTION>__<KEY>` environment
//! variables; unknown keys are errors.

use std::path::Path;

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use spur_schemas::kafka::KafkaSettings;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub collector: spur_collector::Config,
    pub processor: spur_processor::Config,
    pub query: spur_query::Config,
    pub log: LogSettings,
    pub residency: crate::residency::ResidencySettings,
    pub retention: crate::privacy::RetentionSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `tracing` filter directives, e.g. `info,spur_collector=debug`. `RUST_LOG` wins.
    pub filter: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            // delta-rs' kernel logs every snapshot at info.
            filter: "info,buoyant_kernel=warn,deltalake_core=warn".into(),
            format: "text".into(),
        }
    }
}

impl Settings {
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = path {
            anyhow::ensure!(
                path.exists(),
                "configuration file {} does not exist",
                path.display()
            );
            figment = figment.merge(Toml::file(path));
        }
        // Only `SPUR_<SECTION>__<KEY>` names are configuration; other `SPUR_*` variables
        // (`SPUR_CONFIG`, test and benchmark knobs) are not.
        figment = figment.merge(
            Env::prefixed("SPUR_")
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
        let mut settings: Settings = figment.extract().context("invalid configuration")?;
        // One secret signs and verifies the one-click unsubscribe links.
        if settings.query.segments.unsubscribe_key.is_none() {
            settings
                .query
                .segments
                .unsubscribe_key
                .clone_from(&settings.collector.privacy.unsubscribe_key);
        }
        // Refused at start-up, whatever the subcommand.
        settings.residency()?;
        Ok(settings)
    }

    /// Where each lake root (`processor.lake`, and `query.lake` when it is another
    /// root) and the brokers live: src/residency.rs. An error when the configuration
    /// contradicts itself, or `residency.eu_only` is set and a place is not known to
    /// be in the EU/EEA. The lake's storage options are the `AWS_*` environment
    /// variables delta-rs reads (the configuration has no storage-option keys).
    pub fn residency(&self) -> anyhow::Result<Vec<(String, crate::residency::Residency)>> {
        let options = crate::residency::lake_storage_options_from_env();
        let (processor, query) = (self.processor.lake.as_str(), self.query.lake.as_str());
        let lakes = if processor.trim_end_matches('/') == query.trim_end_matches('/') {
            vec![("processor.lake and query.lake", processor)]
        } else {
            vec![("processor.lake", processor), ("query.lake", query)]
        };
        lakes
            .into_iter()
            .map(|(name, root)| {
                crate::residency::check(&self.residency, root, &options)
                    .map(|found| (name.to_owned(), found))
                    .map_err(|err| {
                        if err.is_about_the_lake() {
                            anyhow::anyhow!("{name}: {err}")
                        } else {
                            anyhow::anyhow!("{err}")
                        }
                    })
            })
            .collect()
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        spur_collector::sites::Sites::new(&self.collector.sites)?;
        anyhow::ensure!(
            !self.kafka.brokers.trim().is_empty(),
            "kafka.brokers is empty"
        );
        self.query.validate()?;
        anyhow::ensure!(
            matches!(self.log.format.as_str(), "text" | "json"),
            "log.format must be text or json"
        );
        Ok(())
    }
}

pub fn init_logging(log: &LogSettings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example every reader copies must load and validate as it is.
    #[test]
    fn the_example_configuration_loads_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("spur.example.toml");
        let settings = Settings::load(Some(&path)).expect("spur.example.toml loads");
        settings.validate().expect("spur.example.toml validates");
        assert_eq!(
            settings.query.scoring.half_life,
            std::time::Duration::from_secs(14 * 86_400)
        );
        assert!(!settings.residency.eu_only);
    }

    /// `eu_only` refuses a local lake of unknown location, naming the key, and
    /// accepts it once its country is declared.
    #[test]
    fn eu_only_refuses_an_undeclared_local_lake() {
        let mut settings = Settings::default();
        settings.residency.eu_only = true;
        settings.residency.broker_region = Some("DE".into());
        settings.query.lake = "/srv/spur/lake".into();
        let message = settings.residency().expect_err("undeclared").to_string();
        assert!(
            message.starts_with("processor.lake: residency.eu_only is set"),
            "{message}"
        );
        settings.residency.lake_region = Some("DE".into());
        let found = settings.residency().expect("declared");
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].0, "query.lake");
    }
}
