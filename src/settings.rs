//! The whole configuration file: one table per concern, owned by the crate that
//! uses it (`[kafka]` and `[unsubscribe]` by `spur-schemas`, `[lake]` by
//! `spur-lake`, `[scoring]` and `[lifecycle]` by `spur-audience`, `[segments]` by
//! `spur-dispatch`, `[admin]`, `[retention]` and `[residency]` by `spur-gdpr`, `[log]`
//! by `spur-telemetry`, `[broker]` by `spur-broker`, one table per service). Loaded
//! from TOML, overridden by `SPUR_<SECTION>__<KEY>` environment variables; unknown
//! keys are errors, and keys that moved are refused with the name of their new home.

use std::path::Path;

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use spur_audience::{LifecycleConfig, ScoringConfig};
use spur_dispatch::SegmentsConfig;
use spur_gdpr::residency::{self, Residency, ResidencySettings};
use spur_gdpr::{AdminConfig, RetentionConfig};
use spur_keys::KeysConfig;
use spur_lake::LakeConfig;
use spur_schemas::confirm::ConfirmConfig;
use spur_schemas::kafka::KafkaSettings;
use spur_schemas::unsubscribe::UnsubscribeConfig;
use spur_telemetry::LogConfig;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub broker: spur_broker::Config,
    pub lake: LakeConfig,
    pub keys: KeysConfig,
    pub unsubscribe: UnsubscribeConfig,
    pub confirm: ConfirmConfig,
    pub collector: spur_collector::Config,
    pub processor: spur_processor::Config,
    pub query: spur_query::Config,
    pub scoring: ScoringConfig,
    pub lifecycle: LifecycleConfig,
    pub segments: SegmentsConfig,
    pub admin: AdminConfig,
    pub retention: RetentionConfig,
    pub residency: ResidencySettings,
    pub log: LogConfig,
    pub console: ConsoleSettings,
}

/// `[console]`: the demo inbox and the dashboard `spur up` serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSettings {
    /// Address of `/inbox/` and `/dashboard/`.
    pub listen: std::net::SocketAddr,
    /// The inbox's Standard-Webhooks secret (`whsec_…`): with it, `spur up` delivers
    /// every segment change and confirmation request to the inbox as well.
    pub webhook_secret: Option<spur_schemas::secret::Secret>,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9104)),
            webhook_secret: None,
        }
    }
}

/// Keys of earlier versions and where they live now. A file (or an environment
/// variable) that still sets one is refused with this pointer rather than ignored
/// or half-applied.
const MOVED: [(&str, &str); 10] = [
    ("processor.keys_dir", "keys.dir"),
    ("processor.lake", "lake.root"),
    ("query.lake", "lake.root"),
    ("query.scoring", "[scoring]"),
    ("query.lifecycle", "[lifecycle]"),
    ("query.segments", "[segments]"),
    ("query.admin", "[admin]"),
    ("collector.privacy.unsubscribe_key", "unsubscribe.key"),
    ("segments.unsubscribe_key", "unsubscribe.key"),
    ("segments.unsubscribe_url", "unsubscribe.url"),
];

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
        for (old, new) in MOVED {
            anyhow::ensure!(
                figment.find_value(old).is_err(),
                "invalid configuration: {old} has moved to {new}"
            );
        }
        let mut settings: Settings = figment.extract().context("invalid configuration")?;
        // `[lake]`, `[keys]`, `[unsubscribe]` and `[confirm]` are shared: each service that needs them gets
        // them from here when it starts (their fields are not part of its own table).
        settings.processor.lake.clone_from(&settings.lake.root);
        settings.processor.keys_dir.clone_from(&settings.keys.dir);
        settings
            .collector
            .unsubscribe
            .clone_from(&settings.unsubscribe);
        settings.collector.confirm.clone_from(&settings.confirm);
        // Refused at start-up, whatever the subcommand.
        settings.residency()?;
        Ok(settings)
    }

    /// Where the lake and the brokers live (`spur_gdpr::residency`). An error when
    /// the configuration contradicts itself, or `residency.eu_only` is set and a
    /// place is not known to be in the EU/EEA. The lake's storage options are the
    /// `AWS_*` environment variables delta-rs reads.
    pub fn residency(&self) -> anyhow::Result<Residency> {
        let options = residency::lake_storage_options_from_env();
        residency::check(&self.residency, &self.lake.root, &options).map_err(|err| {
            if err.is_about_the_lake() {
                anyhow::anyhow!("lake.root: {err}")
            } else {
                anyhow::anyhow!("{err}")
            }
        })
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        spur_collector::sites::Sites::new(&self.collector.sites)?;
        anyhow::ensure!(
            !self.kafka.brokers.trim().is_empty(),
            "kafka.brokers is empty"
        );
        anyhow::ensure!(!self.lake.root.trim().is_empty(), "lake.root is empty");
        self.unsubscribe.validate().map_err(anyhow::Error::msg)?;
        self.confirm.validate().map_err(anyhow::Error::msg)?;
        self.query.validate()?;
        self.lifecycle.validate()?;
        self.segments.validate()?;
        self.log.validate().map_err(anyhow::Error::msg)?;
        Ok(())
    }

    /// What the segment service runs on.
    pub fn dispatch(&self) -> spur_dispatch::Config {
        spur_dispatch::Config {
            lake: self.lake.root.clone(),
            scoring: self.scoring.clone(),
            lifecycle: self.lifecycle.clone(),
            segments: self.segments.clone(),
            unsubscribe: self.unsubscribe.clone(),
            confirm: self.confirm.clone(),
            keys_dir: Some(self.keys.dir.clone()),
        }
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
            settings.scoring.half_life,
            std::time::Duration::from_secs(14 * 86_400)
        );
        assert!(!settings.residency.eu_only);
        assert_eq!(settings.processor.lake, settings.lake.root);
    }

    /// `eu_only` refuses a local lake of unknown location, naming the key, and
    /// accepts it once its country is declared.
    #[test]
    fn eu_only_refuses_an_undeclared_local_lake() {
        let mut settings = Settings::default();
        settings.residency.eu_only = true;
        settings.residency.broker_region = Some("DE".into());
        settings.lake.root = "/srv/spur/lake".into();
        let message = settings.residency().expect_err("undeclared").to_string();
        assert!(
            message.starts_with("lake.root: residency.eu_only is set"),
            "{message}"
        );
        settings.residency.lake_region = Some("DE".into());
        settings.residency().expect("declared");
    }

    /// A key that moved is refused with its new name, from a file or the environment.
    #[test]
    fn moved_keys_are_refused_with_their_new_home() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (text, old, new) in [
            (
                "[processor]\nlake = \"/x\"\n",
                "processor.lake",
                "lake.root",
            ),
            (
                "[query.segments]\ninterval = \"1s\"\n",
                "query.segments",
                "[segments]",
            ),
            (
                "[processor]\nkeys_dir = \"/k\"\n",
                "processor.keys_dir",
                "keys.dir",
            ),
            (
                "[collector.privacy]\nunsubscribe_key = \"k\"\n",
                "collector.privacy.unsubscribe_key",
                "unsubscribe.key",
            ),
        ] {
            let path = dir.path().join("spur.toml");
            std::fs::write(&path, text).expect("write");
            let message = Settings::load(Some(&path)).expect_err(old).to_string();
            assert_eq!(
                message,
                format!("invalid configuration: {old} has moved to {new}")
            );
        }
    }
}
