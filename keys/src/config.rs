//! `[keys]`: where the key files live, for every command that needs them (the
//! processor makes pseudonyms and seals addresses, the segment service opens
//! addresses, the GDPR commands recompute pseudonyms and destroy data keys).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// The key rings (`spur keys init` creates them) and the contact vault's data
    /// keys (`contacts/`). Back it up apart from the lake: together they open every
    /// address.
    pub dir: PathBuf,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            dir: PathBuf::from("./keys"),
        }
    }
}
