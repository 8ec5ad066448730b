//! The collector's configuration: one typed struct, defaults in one place
//! ([`Default`] impls here), unknown keys rejected. Loaded by the `spur` binary from
//! the `[collector]` table of the TOML file plus `SPUR_COLLECTOR__*` overrides.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Registered sites. Events for any other site id are refused.
    pub sites: Vec<SiteConfig>,
    pub privacy: PrivacyConfig,
    /// The one-click unsubscribe key (`[unsubscribe]`, shared with the segment
    /// service): not part of `[collector]`; whoever starts the collector hands it
    /// over. Without a key, `/v1/unsubscribe` answers 404 `unsubscribe_disabled`.
    #[serde(skip)]
    pub unsubscribe: spur_schemas::unsubscribe::UnsubscribeConfig,
    /// The double opt-in link key and validity (`[confirm]`, shared with the segment
    /// service), handed over like `unsubscribe`. Without a key, `/v1/confirm`
    /// answers 404 `confirm_disabled`.
    #[serde(skip)]
    pub confirm: spur_schemas::confirm::ConfirmConfig,
    pub limits: Limits,
    pub delivery: Delivery,
    /// A MaxMind GeoIP2/GeoLite2 City (or Country) database. Without it, events carry
    /// no country or region.
    pub geoip: Option<PathBuf>,
    /// A MaxMind GeoLite2/GeoIP2 ASN database. With it, traffic from the networks in
    /// `datacenter_asns` is labelled a bot (`datacenter:AS<number>`): people browse
    /// from homes and phones, not from cloud servers.
    pub asn_database: Option<PathBuf>,
    /// Autonomous systems of hosting and cloud providers (used with `asn_database`).
    pub datacenter_asns: Vec<u32>,
    /// Peers whose `X-Forwarded-For` is believed (load balancers, reverse proxies).
    /// The client address is the right-most address in the header that is not itself
    /// a trusted proxy. Empty: the TCP peer is the client.
    pub trusted_proxies: Vec<IpNet>,
    /// How long a graceful shutdown waits for in-flight requests before flushing.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Serve the demo shop under `/demo/` ([`crate::demo`]): a few product pages,
    /// a consent banner and a newsletter form that embed `/spur.js` as site `demo`,
    /// which must be registered for the host the browser uses (`localhost`). Off
    /// by default: a production collector serves no pages of its own.
    pub demo: bool,
}

/// Large hosting and cloud networks: Amazon (16509, 14618), Google Cloud (396982,
/// 15169), Microsoft Azure (8075), DigitalOcean (14061), Hetzner (24940), OVH (16276),
/// Linode/Akamai (63949), Oracle Cloud (31898), Alibaba (45102), Tencent (132203),
/// Vultr (20473), Scaleway (12876), Contabo (51167), Leaseweb (60781), IONOS (8560).
pub const DATACENTER_ASNS: &[u32] = &[
    16509, 14618, 396982, 15169, 8075, 14061, 24940, 16276, 63949, 31898, 45102, 132203, 20473,
    12876, 51167, 60781, 8560,
];

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            sites: Vec::new(),
            privacy: PrivacyConfig::default(),
            unsubscribe: Default::default(),
            confirm: Default::default(),
            limits: Limits::default(),
            delivery: Delivery::default(),
            geoip: None,
            asn_database: None,
            datacenter_asns: DATACENTER_ASNS.to_vec(),
            trusted_proxies: Vec::new(),
            shutdown_grace: Duration::from_secs(10),
            demo: false,
        }
    }
}

/// One tracked website.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// The id the tracker sends (`data-site`), 1 to 64 of `[A-Za-z0-9_.-]`.
    pub id: String,
    /// Hostnames the site's pages are served from: exact (`shop.example`) or a
    /// wildcard for subdomains (`*.shop.example`, which does not match the apex).
    pub hosts: Vec<String>,
}

/// What to do with `DNT: 1`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DntPolicy {
    /// Record the signal, change nothing.
    Ignore,
    /// Treat it like `Sec-GPC: 1`: no marketing purpose.
    #[default]
    NoMarketing,
    /// Do not track at all: answer 204 and store nothing.
    Drop,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    pub dnt: DntPolicy,
    /// Query parameters kept in page URLs; all others are removed before anything is
    /// stored (they often carry e-mail addresses, tokens or session ids). A trailing
    /// `*` matches a prefix.
    pub allowed_query_params: Vec<String>,
    /// Where the daily salt for cookieless ids is kept, so that a restart on the same
    /// day keeps ids stable. The file is overwritten at each rotation, which destroys
    /// the old salt. Without it the salt lives in memory only.
    pub salt_dir: Option<PathBuf>,
    /// Personal data typed into free text (`[collector.privacy.scrub]`).
    pub scrub: ScrubConfig,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            dnt: DntPolicy::default(),
            allowed_query_params: vec!["utm_*".to_owned(), "ref".to_owned()],
            salt_dir: None,
            scrub: ScrubConfig::default(),
        }
    }
}

/// What the collector removes from URL paths, kept query values, titles, referrers,
/// topics, names and property values before anything is produced
/// ([`crate::scrub`]). Every detector is on by default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrubConfig {
    /// `false` turns scrubbing off entirely (detectors, property names, patterns).
    pub enabled: bool,
    /// E-mail addresses → `[email]`.
    pub email: bool,
    /// Phone numbers (international, national with trunk prefix, North American) →
    /// `[phone]`.
    pub phone: bool,
    /// IBANs (country length and mod-97 check) → `[iban]`.
    pub iban: bool,
    /// Payment card numbers (issuer prefix and length, Luhn check) → `[card]`.
    pub card: bool,
    /// Replace whole path segments that are identifiers (at least `id_min_digits`
    /// digits, UUIDs, hex tokens of 24+ characters) by `[id]`. Off by default: a
    /// product or article id in a path is rarely personal, an order or account id is.
    pub path_ids: bool,
    /// Digits from which an all-digit path segment counts as an identifier.
    pub id_min_digits: usize,
    /// Further property names dropped whole, beside the built-in ones (`email`,
    /// `phone`, `first_name`, `address`, `iban`, `password`, …). Compared without
    /// case, `_`, `-`, `.` or spaces.
    pub drop_props: Vec<String>,
    /// Property names exempt from the name rule (their values are still scanned).
    pub keep_props: Vec<String>,
    /// The site's own patterns: each match is replaced by `[<name>]`.
    pub patterns: Vec<ScrubPattern>,
    /// Per-site overrides, by site id: unset fields inherit the global value; lists
    /// are added to the global ones.
    pub sites: std::collections::BTreeMap<String, ScrubOverride>,
}

impl Default for ScrubConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            email: true,
            phone: true,
            iban: true,
            card: true,
            path_ids: false,
            id_min_digits: 6,
            drop_props: Vec::new(),
            keep_props: Vec::new(),
            patterns: Vec::new(),
            sites: Default::default(),
        }
    }
}

/// A site's own pattern: a regular expression (Rust `regex` syntax) and the name
/// its marker shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrubPattern {
    /// 1 to 32 of `[a-z0-9_]`; matches become `[<name>]`.
    pub name: String,
    pub regex: String,
}

/// One site's differences from the global `[collector.privacy.scrub]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrubOverride {
    pub enabled: Option<bool>,
    pub email: Option<bool>,
    pub phone: Option<bool>,
    pub iban: Option<bool>,
    pub card: Option<bool>,
    pub path_ids: Option<bool>,
    pub id_min_digits: Option<usize>,
    pub drop_props: Vec<String>,
    pub keep_props: Vec<String>,
    pub patterns: Vec<ScrubPattern>,
}

/// Bounds on what one client may send.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body; larger ones get 413 after at most this + 1 bytes read.
    pub max_body_bytes: usize,
    /// Most events in one batch; more get 413.
    pub max_events_per_batch: usize,
    /// Largest single event; larger ones are dead-lettered with reason `size`.
    pub max_event_bytes: usize,
    /// Most open client connections; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Time a client has to send its request headers (slowloris guard).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time a client has to send its request body.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// A client clock further from the server's than this is flagged `skewed`.
    #[serde(with = "humantime_serde")]
    pub clock_skew_tolerance: Duration,
    /// Events older than this (by the client's account) keep the receive time and are
    /// flagged `too_old`.
    #[serde(with = "humantime_serde")]
    pub max_event_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            max_events_per_batch: 100,
            max_event_bytes: 8 * 1024,
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(5),
            body_read_timeout: Duration::from_secs(10),
            clock_skew_tolerance: Duration::from_secs(120),
            max_event_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// How events reach the broker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    /// Longest a request waits for the broker's acknowledgement before answering 503.
    /// Also librdkafka's `message.timeout.ms`, so an unacknowledged record is not
    /// delivered behind the client's back much later.
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// `Retry-After` sent with 503 answers.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// librdkafka `linger.ms`: how long records wait to be batched.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Bound on records waiting for the broker (`queue.buffering.max.messages`);
    /// beyond it requests get 503 at once.
    pub max_queued_records: u32,
    /// Bound on bytes waiting for the broker (`queue.buffering.max.kbytes`, in KiB).
    pub max_queued_kbytes: u32,
    /// How often the broker's reachability is probed for `/readyz`.
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
    /// Create the topics at start-up when missing.
    pub create_topics: bool,
    /// Partitions of topics the collector creates.
    pub topic_partitions: i32,
    /// Replication factor of topics the collector creates.
    pub topic_replication: i32,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_secs(5),
            retry_after: Duration::from_secs(5),
            linger: Duration::from_millis(5),
            max_queued_records: 100_000,
            max_queued_kbytes: 64 * 1024,
            health_interval: Duration::from_secs(2),
            create_topics: true,
            topic_partitions: 6,
            topic_replication: 1,
        }
    }
}
