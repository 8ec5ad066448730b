//! `[log]`: how every Spur process logs — `tracing` to stderr, as text or JSON, with
//! filter directives (`RUST_LOG` wins over the configuration).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter directives, e.g. `info,spur_collector=debug`. `RUST_LOG` wins.
    pub filter: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            // delta-rs' kernel logs every snapshot at info.
            filter: "info,buoyant_kernel=warn,deltalake_core=warn".into(),
            format: "text".into(),
        }
    }
}

impl LogConfig {
    /// `format` must be `text` or `json`.
    pub fn validate(&self) -> Result<(), String> {
        match self.format.as_str() {
            "text" | "json" => Ok(()),
            _ => Err("log.format must be text or json".to_owned()),
        }
    }

    /// Installs the process-wide subscriber (once, at start).
    pub fn install(&self) {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&self.filter));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        if self.format == "json" {
            builder.json().init();
        } else {
            builder.init();
        }
    }
}
