//! Where the data lives (`[residency]`, docs/privacy.md "Residency"): the lake's region,
//! derived from its object-store options or declared, and the brokers' region, which
//! can only be declared. With `eu_only`, anything not known to be in the EU/EEA is
//! refused at start-up.
//!
//! This is a configuration assertion: Spur cannot see where a broker or a disk
//! physically is. It checks what the operator declared against what the object-store
//! configuration says, and refuses a configuration that contradicts itself.
//!
//! Region vocabulary (case-insensitive): the cloud regions in [`CLOUD_REGIONS`], the
//! Google Cloud Storage multi-region `EU`, and ISO 3166 alpha-2 country codes.
//!
//! Derivation, for `s3://` and `s3a://` roots only (Google Cloud Storage and Azure
//! options name no region; a local path has none):
//! - an endpoint option (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT`, `endpoint_url`,
//!   `endpoint`) on an `amazonaws.com` host with a region in it
//!   (`s3.eu-central-1.amazonaws.com`, `s3-eu-west-1.amazonaws.com`) gives that region;
//! - a region option (`AWS_REGION`, `region`, then `AWS_DEFAULT_REGION`,
//!   `default_region`) gives its value, unless the endpoint is not an AWS host: an
//!   S3-compatible store (MinIO, Ceph, ...) only needs some region to sign requests,
//!   often the placeholder `us-east-1`, so there it says nothing about the location.
//!
//! Option keys match case-insensitively. Two sources that name different places are
//! an error whether or not `eu_only` is set.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// `[residency]`: where the lake and the brokers live, and whether only the EU/EEA is
/// acceptable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResidencySettings {
    /// Refuse to start unless the lake and the brokers are known to be in the EU/EEA.
    pub eu_only: bool,
    /// Where the lake's storage lives: a cloud region (`eu-central-1`, `europe-west3`,
    /// `westeurope`) or an ISO 3166 country code (`DE`) for disks on premises.
    /// Required with `eu_only` unless the object-store options name the region.
    pub lake_region: Option<String>,
    /// Where the Kafka brokers run, in the same vocabulary. Required with `eu_only`.
    pub broker_region: Option<String>,
}

/// What named the lake's region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `residency.lake_region`.
    Declared,
    /// A region option of the object store (the key as given).
    StorageOption(String),
    /// The host of an endpoint option of the object store (the key as given).
    EndpointHost(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Declared => f.write_str("residency.lake_region"),
            Source::StorageOption(key) => write!(f, "lake storage option {key}"),
            Source::EndpointHost(key) => write!(f, "the host of lake storage option {key}"),
        }
    }
}

/// What [`check`] found: the lake's region and what named it, and the brokers'
/// declared region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Residency {
    pub lake: Option<(String, Source)>,
    pub broker: Option<String>,
}

/// Why a configuration is refused. `Display` is the operator's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResidencyError {
    /// Two sources name different places for the lake (checked even without
    /// `eu_only`).
    Contradiction {
        first: (String, Source),
        second: (String, Source),
    },
    /// `eu_only`, but the lake's region is neither derivable nor declared; the text
    /// says why it cannot be derived.
    LakeUnknown(String),
    /// `eu_only`, and the lake's region is not known to be in the EU/EEA.
    LakeRefused {
        region: String,
        source: Source,
        verdict: Verdict,
    },
    /// `eu_only`, and `residency.broker_region` is missing.
    BrokerUndeclared,
    /// `eu_only`, and the brokers' region is not known to be in the EU/EEA.
    BrokerRefused { region: String, verdict: Verdict },
}

impl ResidencyError {
    /// Whether the error is about the lake (rather than the brokers).
    pub fn is_about_the_lake(&self) -> bool {
        !matches!(
            self,
            ResidencyError::BrokerUndeclared | ResidencyError::BrokerRefused { .. }
        )
    }
}

impl fmt::Display for ResidencyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const EU_ONLY: &str = "residency.eu_only is set but";
        match self {
            ResidencyError::Contradiction { first, second } => write!(
                f,
                "the configuration names two places for the lake: {} (from {}) and {} (from {}); \
                 correct one of them, or remove residency.lake_region to use the derived region",
                first.0, first.1, second.0, second.1
            ),
            ResidencyError::LakeUnknown(why) => write!(f, "{EU_ONLY} {why}"),
            ResidencyError::LakeRefused {
                region,
                source,
                verdict,
            } => {
                write!(f, "{EU_ONLY} the lake region {region} (from {source}) ")?;
                verdict.explain(f)?;
                match (verdict, source) {
                    (Verdict::Unrecognised, Source::Declared) => f.write_str(
                        "; name a listed region or the country as an ISO 3166 code, e.g. \"DE\"",
                    ),
                    (Verdict::Unrecognised, _) => f.write_str(
                        "; if the region is in the EU/EEA, Spur's list needs it (gdpr/src/residency/mod.rs)",
                    ),
                    (Verdict::Outside(_), _) => {
                        f.write_str("; move the lake or unset residency.eu_only")
                    }
                }
            }
            ResidencyError::BrokerUndeclared => write!(
                f,
                "{EU_ONLY} residency.broker_region is not declared; name where the Kafka \
                 brokers run (e.g. \"eu-central-1\" or \"DE\")"
            ),
            ResidencyError::BrokerRefused { region, verdict } => {
                write!(f, "{EU_ONLY} residency.broker_region {region} ")?;
                verdict.explain(f)?;
                match verdict {
                    Verdict::Unrecognised => f.write_str(
                        "; name a listed region or the country as an ISO 3166 code, e.g. \"DE\"",
                    ),
                    Verdict::Outside(_) => {
                        f.write_str("; move the brokers (kafka.brokers) or unset residency.eu_only")
                    }
                }
            }
        }
    }
}

/// Why a region is not accepted by `eu_only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Known to be outside the EU/EEA, with an explanation where one is due.
    Outside(Option<&'static str>),
    /// Not in Spur's vocabulary: it may be anywhere.
    Unrecognised,
}

impl Verdict {
    fn explain(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Outside(None) => f.write_str("is outside the EU/EEA"),
            Verdict::Outside(Some(why)) => write!(f, "is outside the EU/EEA: {why}"),
            Verdict::Unrecognised => f.write_str(
                "is not a region Spur knows to be in the EU/EEA (docs/privacy.md lists them)",
            ),
        }
    }
}

/// Checks the residency of one lake root and of the brokers; see the module
/// documentation for the rules. Pure: the caller gathers the storage options.
pub fn check(
    settings: &ResidencySettings,
    lake_root: &str,
    lake_storage_options: &HashMap<String, String>,
) -> Result<Residency, ResidencyError> {
    let declared = non_empty(settings.lake_region.as_deref()).map(|r| (r, Source::Declared));
    let store = Store::of(lake_root);
    let derived = derive(&store, lake_storage_options)?;
    if let (Some(derived), Some(declared)) = (&derived, &declared)
        && !same_place(&derived.0, &declared.0)
    {
        return Err(ResidencyError::Contradiction {
            first: derived.clone(),
            second: declared.clone(),
        });
    }
    let lake = derived.or(declared);
    let broker = non_empty(settings.broker_region.as_deref());

    if settings.eu_only {
        match &lake {
            None => {
                return Err(ResidencyError::LakeUnknown(
                    store.undetectable(lake_root, lake_storage_options),
                ));
            }
            Some((region, source)) => {
                if let Err(verdict) = classify(region) {
                    return Err(ResidencyError::LakeRefused {
                        region: region.clone(),
                        source: source.clone(),
                        verdict,
                    });
                }
            }
        }
        let Some(region) = &broker else {
            return Err(ResidencyError::BrokerUndeclared);
        };
        if let Err(verdict) = classify(region) {
            return Err(ResidencyError::BrokerRefused {
                region: region.clone(),
                verdict,
            });
        }
    }
    Ok(Residency { lake, broker })
}

/// The object-store options of a lake root that come from the environment: the
/// configuration has no storage-option keys, and delta-rs' S3 store reads these
/// variables itself. Only the keys [`check`] looks at.
pub fn lake_storage_options_from_env() -> HashMap<String, String> {
    REGION_KEYS
        .iter()
        .chain(ENDPOINT_KEYS)
        .map(|key| key.to_ascii_uppercase())
        .filter(|key| key.starts_with("AWS_"))
        .filter_map(|key| std::env::var(&key).ok().map(|value| (key, value)))
        .collect()
}

/// One line per lake and one for the brokers, for `spur config check`.
pub fn summary(eu_only: bool, lakes: &[(String, Residency)]) -> String {
    let place = |region: &str| match classify(region) {
        Ok(()) => "in the EU/EEA",
        Err(Verdict::Outside(_)) => "outside the EU/EEA",
        Err(Verdict::Unrecognised) => "not known to be in the EU/EEA",
    };
    let mut out = format!("residency.eu_only: {eu_only}\n");
    for (name, residency) in lakes {
        match &residency.lake {
            Some((region, source)) => out.push_str(&format!(
                "{name}: {region} (from {source}), {}\n",
                place(region)
            )),
            None => out.push_str(&format!(
                "{name}: unknown (declare residency.lake_region)\n"
            )),
        }
    }
    match lakes.first().and_then(|(_, r)| r.broker.as_deref()) {
        Some(region) => out.push_str(&format!(
            "kafka brokers: {region} (from residency.broker_region), {}\n",
            place(region)
        )),
        None => out.push_str("kafka brokers: unknown (declare residency.broker_region)\n"),
    }
    out
}

/// Region option keys, in order of precedence (matched case-insensitively).
const REGION_KEYS: &[&str] = &[
    "aws_region",
    "region",
    "aws_default_region",
    "default_region",
];
/// Endpoint option keys, in order of precedence (matched case-insensitively).
const ENDPOINT_KEYS: &[&str] = &[
    "aws_endpoint_url",
    "aws_endpoint",
    "endpoint_url",
    "endpoint",
];

/// Cloud regions Spur knows, lower case, with the ISO 3166 country they are in. Those
/// in Europe but outside the EU/EEA are here so that their refusal can say why.
pub const CLOUD_REGIONS: &[(&str, &str)] = &[
    // AWS
    ("eu-central-1", "DE"), // Frankfurt
    ("eu-central-2", "CH"), // Zurich
    ("eu-west-1", "IE"),
    ("eu-west-2", "GB"), // London
    ("eu-west-3", "FR"),
    ("eu-south-1", "IT"),
    ("eu-south-2", "ES"),
    ("eu-north-1", "SE"),
    ("eusc-de-east-1", "DE"), // European Sovereign Cloud
    // Google Cloud
    ("europe-central2", "PL"),
    ("europe-north1", "FI"),
    ("europe-north2", "SE"),
    ("europe-southwest1", "ES"),
    ("europe-west1", "BE"),
    ("europe-west2", "GB"), // London
    ("europe-west3", "DE"),
    ("europe-west4", "NL"),
    ("europe-west6", "CH"), // Zurich
    ("europe-west8", "IT"),
    ("europe-west9", "FR"),
    ("europe-west10", "DE"),
    ("europe-west12", "IT"),
    // Azure
    ("westeurope", "NL"),
    ("northeurope", "IE"),
    ("francecentral", "FR"),
    ("francesouth", "FR"),
    ("germanywestcentral", "DE"),
    ("germanynorth", "DE"),
    ("swedencentral", "SE"),
    ("swedensouth", "SE"),
    ("italynorth", "IT"),
    ("polandcentral", "PL"),
    ("spaincentral", "ES"),
    ("austriaeast", "AT"),
    ("belgiumcentral", "BE"),
    ("norwayeast", "NO"),
    ("norwaywest", "NO"),
    ("uksouth", "GB"),
    ("ukwest", "GB"),
    ("switzerlandnorth", "CH"),
    ("switzerlandwest", "CH"),
];

/// The EU member states and the other EEA states (Iceland, Liechtenstein, Norway).
pub const EU_EEA: &[&str] = &[
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT", "LV",
    "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", // EU
    "IS", "LI", "NO", // EEA
];

/// First labels of cloud region names outside Europe (AWS and Google Cloud).
const NON_EUROPEAN_PREFIXES: &[&str] = &[
    "us",
    "ca",
    "sa",
    "ap",
    "me",
    "af",
    "il",
    "mx",
    "cn",
    "asia",
    "australia",
    "northamerica",
    "southamerica",
    "africa",
];

/// `Ok` when `region` is known to be in the EU/EEA.
fn classify(region: &str) -> Result<(), Verdict> {
    let name = region.trim().to_ascii_lowercase();
    // Google Cloud Storage's multi-region: data centres in EU member states.
    if name == "eu" {
        return Ok(());
    }
    if let Some(country) = country(&name) {
        if EU_EEA.contains(&country.as_str()) {
            return Ok(());
        }
        let why = match country.as_str() {
            "GB" | "UK" => Some(
                "the United Kingdom has an EU adequacy decision, but it is not in the \
                 EU/EEA, and eu_only means EU/EEA",
            ),
            "CH" => Some(
                "Switzerland has an EU adequacy decision, but it is neither in the EU nor \
                 in the EEA, and eu_only means EU/EEA",
            ),
            _ => None,
        };
        return Err(Verdict::Outside(why));
    }
    match name.split_once('-') {
        Some((prefix, _)) if NON_EUROPEAN_PREFIXES.contains(&prefix) => Err(Verdict::Outside(None)),
        _ => Err(Verdict::Unrecognised),
    }
}

/// The country of a known cloud region or of a two-letter code, upper case.
fn country(name: &str) -> Option<String> {
    if let Some((_, country)) = CLOUD_REGIONS.iter().find(|(region, _)| *region == name) {
        return Some((*country).to_owned());
    }
    (name.len() == 2 && name.bytes().all(|b| b.is_ascii_alphabetic()))
        .then(|| name.to_ascii_uppercase())
}

/// Whether two region names denote the same place: the same name, or the same country
/// (`eu-central-1` and `DE`).
fn same_place(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim().to_ascii_lowercase(), b.trim().to_ascii_lowercase());
    a == b || matches!((country(&a), country(&b)), (Some(x), Some(y)) if x == y)
}

fn non_empty(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// The kind of store behind a lake root, by its URL scheme.
enum Store {
    Local,
    S3,
    Gcs,
    Azure,
    Other(String),
}

impl Store {
    fn of(root: &str) -> Store {
        let Some((scheme, _)) = root.trim().split_once("://") else {
            return Store::Local;
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => Store::Local,
            "s3" | "s3a" => Store::S3,
            "gs" | "gcs" => Store::Gcs,
            "az" | "azure" | "abfs" | "abfss" | "adl" | "wasb" | "wasbs" => Store::Azure,
            other => Store::Other(other.to_owned()),
        }
    }

    /// Why the region of `root` cannot be derived (completes "eu_only is set but …").
    fn undetectable(&self, root: &str, options: &HashMap<String, String>) -> String {
        let declare = "declare it in residency.lake_region";
        match self {
            Store::Local => format!(
                "the lake root {root:?} is a local path and Spur cannot detect where this \
                 machine is; {declare} (an ISO 3166 country code such as \"DE\")"
            ),
            Store::S3 => match option(options, ENDPOINT_KEYS) {
                Some((key, endpoint)) if !is_aws_host(&host(endpoint)) => format!(
                    "the lake root {root:?} is on an S3-compatible store at {} (lake storage \
                     option {key}) whose location Spur cannot detect; {declare} (e.g. \"DE\")",
                    host(endpoint)
                ),
                _ => format!(
                    "the lake root {root:?} is on S3 and no region is set (lake storage option \
                     or environment variable AWS_REGION); {declare} (e.g. \"eu-central-1\")"
                ),
            },
            Store::Gcs => format!(
                "the lake root {root:?} is on Google Cloud Storage, whose options name no \
                 region; {declare} (the bucket's location, e.g. \"europe-west3\" or \"EU\")"
            ),
            Store::Azure => format!(
                "the lake root {root:?} is on Azure storage, whose options name no region; \
                 {declare} (the storage account's region, e.g. \"westeurope\")"
            ),
            Store::Other(scheme) => format!(
                "Spur cannot derive where a {scheme}:// lake ({root:?}) is stored; {declare} \
                 (e.g. \"DE\")"
            ),
        }
    }
}

/// The lake's region according to its storage options (S3 only).
fn derive(
    store: &Store,
    options: &HashMap<String, String>,
) -> Result<Option<(String, Source)>, ResidencyError> {
    if !matches!(store, Store::S3) {
        return Ok(None);
    }
    let from_option = option(options, REGION_KEYS)
        .map(|(key, value)| (value.to_owned(), Source::StorageOption(key.to_owned())));
    let Some((key, endpoint)) = option(options, ENDPOINT_KEYS) else {
        return Ok(from_option);
    };
    let host = host(endpoint);
    if !is_aws_host(&host) {
        // An S3-compatible store: its region option is a signing parameter.
        return Ok(None);
    }
    let from_host = host
        .split('.')
        .map(|label| label.strip_prefix("s3-").unwrap_or(label))
        .find(|label| is_aws_region(label))
        .map(|region| (region.to_owned(), Source::EndpointHost(key.to_owned())));
    match (from_host, from_option) {
        (Some(host), Some(option)) if !same_place(&host.0, &option.0) => {
            Err(ResidencyError::Contradiction {
                first: host,
                second: option,
            })
        }
        (host, option) => Ok(host.or(option)),
    }
}

/// The first of `keys` present in `options` with a non-empty value (keys compared
/// case-insensitively), as (key as given, trimmed value).
fn option<'a>(options: &'a HashMap<String, String>, keys: &[&str]) -> Option<(&'a str, &'a str)> {
    keys.iter().find_map(|wanted| {
        options
            .iter()
            .find(|(key, value)| key.eq_ignore_ascii_case(wanted) && !value.trim().is_empty())
            .map(|(key, value)| (key.as_str(), value.trim()))
    })
}

/// The host of an endpoint URL, lower case, without user, port or path.
fn host(endpoint: &str) -> String {
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host_port.split(':').next().unwrap_or_default();
    host.to_ascii_lowercase()
}

fn is_aws_host(host: &str) -> bool {
    host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn")
}

/// `eu-central-1`, `us-gov-west-1`, `eusc-de-east-1`: letters, dashes, a final number.
fn is_aws_region(label: &str) -> bool {
    let parts: Vec<&str> = label.split('-').collect();
    parts.len() >= 3
        && parts
            .last()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
}

#[cfg(test)]
mod tests;
