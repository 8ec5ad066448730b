//! `[lake]`: where the Delta tables live, one root for every command (the processor
//! writes it, the audience engine, the SQL server and the GDPR commands read it).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LakeConfig {
    /// A local directory, a `file://` URL, or an object-store URL compiled into
    /// delta-rs (`s3://…`; its options are the `AWS_*` environment variables).
    pub root: String,
}

impl Default for LakeConfig {
    fn default() -> Self {
        Self {
            root: "./lake".to_owned(),
        }
    }
}
