//! The query layer's configuration (`[query]` in the TOML file): where the
//! PostgreSQL-wire server listens, who may log in, and the limits every query runs
//! under. The lake root is `[lake]`'s and the views' lifecycle rules `[lifecycle]`'s.
//! Defaults live in the `Default` impls; unknown keys are rejected.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use spur_schemas::secret::Secret;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the PostgreSQL-wire server (`spur serve-sql`) binds.
    pub listen: SocketAddr,
    /// Who may connect to the server. Passwords are checked with SCRAM-SHA-256, so
    /// they never cross the wire; with no users, nobody can log in.
    pub users: Vec<User>,
    /// Memory one query may use (sorts, joins, aggregates), e.g. `"512MiB"` or a
    /// number of bytes. A query that needs more fails; nothing spills to disk.
    pub memory_limit: ByteSize,
    /// Most concurrent server connections; further clients are refused
    /// (SQLSTATE 53300) until one closes.
    pub max_connections: usize,
    /// How stale the tables may be: commits made since the last look are loaded
    /// before a query when at least this much time has passed. `0s` looks every query.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// How long a shutdown waits for queries still running before closing their
    /// connections. Idle connections are closed at once.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// TLS for the server (`sslmode=require` and stricter): certificate chain and
    /// private key, PEM files. Without it, connections are plain text.
    pub tls: Option<Tls>,
    /// Serve plain text on an address other than loopback. Without TLS a
    /// non-loopback `listen` is refused unless this is true: passwords are
    /// protected by SCRAM, but queries and results would cross the network readable.
    /// With TLS, clients that do not negotiate it are refused unless this is true.
    pub allow_plaintext: bool,
}

/// The SQL server's certificate and key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM file with the certificate chain, the server's certificate first.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5433)),
            users: Vec::new(),
            memory_limit: ByteSize(512 * 1024 * 1024),
            max_connections: 32,
            refresh_interval: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            tls: None,
            allow_plaintext: false,
        }
    }
}

/// One login of the PostgreSQL-wire server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub password: Secret,
}

impl Config {
    /// Checks what the types alone cannot.
    pub fn validate(&self) -> crate::Result<()> {
        let fail = |message: String| Err(crate::Error::Config(message));
        if self.memory_limit.0 == 0 {
            return fail("query.memory_limit must be more than 0 bytes".into());
        }
        if self.max_connections == 0 {
            return fail("query.max_connections must be at least 1".into());
        }
        let mut names = std::collections::HashSet::new();
        for user in &self.users {
            if user.name.is_empty() {
                return fail("query.users: a user has an empty name".into());
            }
            if user.password.expose().is_empty() {
                return fail(format!(
                    "query.users: user {:?} has an empty password",
                    user.name
                ));
            }
            if !names.insert(user.name.as_str()) {
                return fail(format!("query.users: user {:?} appears twice", user.name));
            }
        }
        Ok(())
    }

    /// Checks that the server may listen on `addr`: loopback, TLS configured, or
    /// plain text allowed explicitly.
    pub fn check_listen(&self, addr: SocketAddr) -> crate::Result<()> {
        if self.tls.is_none() && !self.allow_plaintext && !addr.ip().is_loopback() {
            return Err(crate::Error::Config(format!(
                "query.listen {addr} is not a loopback address and query.tls is not set: \
                 configure query.tls (cert and key files) or set query.allow_plaintext = true \
                 to serve queries and results unencrypted"
            )));
        }
        Ok(())
    }
}

/// A number of bytes, written in the configuration as an integer or as a string with
/// a unit: `B`, `KiB`, `MiB`, `GiB` (powers of 1024) or `KB`, `MB`, `GB` (powers of
/// 1000), e.g. `"512MiB"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub usize);

const UNITS: [(&str, usize); 7] = [
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("KB", 1_000),
    ("B", 1),
];

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (number, multiplier) = UNITS
            .iter()
            .find_map(|(unit, factor)| text.strip_suffix(unit).map(|n| (n.trim(), *factor)))
            .unwrap_or((text, 1));
        let value: usize = number
            .parse()
            .map_err(|_| format!("{text:?} is not a size like 512MiB or 1048576"))?;
        value
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The largest binary unit that divides the value exactly: 512MiB stays 512MiB.
        for (unit, factor) in &UNITS[..3] {
            if self.0 >= *factor && self.0.is_multiple_of(*factor) {
                return write!(f, "{}{unit}", self.0 / factor);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => usize::try_from(n)
                .map(ByteSize)
                .map_err(|_| serde::de::Error::custom(format!("{n} bytes is too large"))),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_and_without_units() {
        assert_eq!("512MiB".parse::<ByteSize>(), Ok(ByteSize(512 << 20)));
        assert_eq!("2 GiB".parse::<ByteSize>(), Ok(ByteSize(2 << 30)));
        assert_eq!("10MB".parse::<ByteSize>(), Ok(ByteSize(10_000_000)));
        assert_eq!("4096".parse::<ByteSize>(), Ok(ByteSize(4096)));
        assert_eq!("7B".parse::<ByteSize>(), Ok(ByteSize(7)));
        assert!("lots".parse::<ByteSize>().is_err());
        assert!("-1MiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn sizes_print_in_the_largest_exact_unit() {
        assert_eq!(ByteSize(512 << 20).to_string(), "512MiB");
        assert_eq!(ByteSize(1536).to_string(), "1536B");
        assert_eq!(ByteSize(3 << 10).to_string(), "3KiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }

    #[test]
    fn toml_takes_numbers_and_strings_and_hides_passwords() {
        let config: Config = toml::from_str(
            "memory_limit = 1048576\n[[users]]\nname = \"ana\"\npassword = \"s3cret\"\n",
        )
        .expect("parse");
        assert_eq!(config.memory_limit, ByteSize(1 << 20));
        assert_eq!(config.users[0].password.expose(), "s3cret");
        let config: Config = toml::from_str("memory_limit = \"64MiB\"").expect("parse");
        assert_eq!(config.memory_limit, ByteSize(64 << 20));

        let mut config = Config::default();
        config.users.push(User {
            name: "ana".into(),
            password: Secret::new("s3cret"),
        });
        let printed = toml::to_string(&config).expect("print");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("memory_limit = \"512MiB\""), "{printed}");
        let back: Config = toml::from_str(&printed).expect("round trip");
        assert_eq!(back.memory_limit, config.memory_limit);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<Config>("memroy_limit = 1").is_err());
        let mut config = Config::default();
        assert!(config.validate().is_ok());
        config.max_connections = 0;
        assert!(config.validate().is_err());
        let config = Config {
            users: vec![
                User {
                    name: "a".into(),
                    password: Secret::new("x"),
                },
                User {
                    name: "a".into(),
                    password: Secret::new("y"),
                },
            ],
            ..Config::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn plain_text_beyond_loopback_needs_tls_or_consent() {
        let config: Config = toml::from_str("").expect("parse");
        let public: SocketAddr = "0.0.0.0:5433".parse().expect("addr");
        assert!(
            config
                .check_listen("127.0.0.1:5433".parse().expect("addr"))
                .is_ok()
        );
        assert!(
            config
                .check_listen("[::1]:5433".parse().expect("addr"))
                .is_ok()
        );
        let error = config
            .check_listen(public)
            .expect_err("refused")
            .to_string();
        assert!(error.contains("query.allow_plaintext"), "{error}");
        assert!(error.contains("query.tls"), "{error}");
        let config: Config = toml::from_str("allow_plaintext = true").expect("parse");
        assert!(config.check_listen(public).is_ok());
        let config: Config =
            toml::from_str("tls = { cert = \"server.crt\", key = \"server.key\" }").expect("parse");
        assert!(config.check_listen(public).is_ok());
        assert!(toml::from_str::<Config>("tls = { cert = \"a\" }").is_err());
    }
}
