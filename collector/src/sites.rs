//! Registered sites and which hosts may send events for them.

use std::collections::HashMap;

use crate::config::SiteConfig;
use crate::error::{Error, Result};

/// A registered site.
#[derive(Debug, Clone)]
pub struct Site {
    pub id: String,
    exact: Vec<String>,
    /// Suffixes like `.shop.example` from `*.shop.example`.
    wildcard: Vec<String>,
}

impl Site {
    /// Whether `host` (a URL host, any case, without port) is one of the site's hosts.
    pub fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.exact.contains(&host)
            || self
                .wildcard
                .iter()
                .any(|suffix| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
    }

    /// Whether an `Origin` or `Referer` header value names one of the site's hosts.
    pub fn allows_origin(&self, origin: &str) -> bool {
        url::Url::parse(origin)
            .ok()
            .and_then(|u| u.host_str().map(|h| self.allows_host(h)))
            .unwrap_or(false)
    }
}

/// All registered sites, by id.
#[derive(Debug, Clone, Default)]
pub struct Sites {
    by_id: HashMap<String, Site>,
}

/// Whether `id` is a well-formed site id.
pub fn valid_site_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

impl Sites {
    pub fn new(configs: &[SiteConfig]) -> Result<Self> {
        let mut by_id = HashMap::new();
        for config in configs {
            if !valid_site_id(&config.id) {
                return Err(Error::Config(format!(
                    "site id {:?} must be 1 to 64 of [A-Za-z0-9_.-]",
                    config.id
                )));
            }
            if config.hosts.is_empty() {
                return Err(Error::Config(format!("site {} has no hosts", config.id)));
            }
            let mut site = Site {
                id: config.id.clone(),
                exact: Vec::new(),
                wildcard: Vec::new(),
            };
            for host in &config.hosts {
                let host = host.trim().to_ascii_lowercase();
                match host.strip_prefix("*.") {
                    Some(rest) if !rest.is_empty() && !rest.contains('*') => {
                        site.wildcard.push(format!(".{rest}"))
                    }
                    _ if !host.is_empty() && !host.contains(['*', '/', ':']) => {
                        site.exact.push(host)
                    }
                    _ => {
                        return Err(Error::Config(format!(
                            "site {}: host {host:?} must be a hostname or *.hostname",
                            config.id
                        )));
                    }
                }
            }
            if by_id.insert(config.id.clone(), site).is_some() {
                return Err(Error::Config(format!(
                    "site {} is registered twice",
                    config.id
                )));
            }
        }
        Ok(Self { by_id })
    }

    pub fn get(&self, id: &str) -> Option<&Site> {
        self.by_id.get(id)
    }

    /// The site one of whose hosts is `host` (for trackers that send a domain, not an
    /// id, like Plausible's).
    pub fn by_host(&self, host: &str) -> Option<&Site> {
        let mut sites: Vec<&Site> = self.by_id.values().collect();
        sites.sort_by(|a, b| a.id.cmp(&b.id));
        sites.into_iter().find(|s| s.allows_host(host))
    }

    /// Whether any site allows this origin (CORS preflights do not name the site).
    pub fn any_allows_origin(&self, origin: &str) -> bool {
        self.by_id.values().any(|s| s.allows_origin(origin))
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.by_id.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sites() -> Sites {
        Sites::new(&[SiteConfig {
            id: "shop".into(),
            hosts: vec!["shop.example".into(), "*.blog.example".into()],
        }])
        .expect("valid")
    }

    #[test]
    fn matches_exact_and_wildcard_hosts() {
        let sites = sites();
        let shop = sites.get("shop").expect("registered");
        assert!(shop.allows_host("shop.example"));
        assert!(shop.allows_host("SHOP.example."));
        assert!(shop.allows_host("en.blog.example"));
        assert!(!shop.allows_host("blog.example"));
        assert!(!shop.allows_host("evilshop.example"));
        assert!(!shop.allows_host("shop.example.evil"));
        assert!(shop.allows_origin("https://shop.example"));
        assert!(shop.allows_origin("https://shop.example:8443/x"));
        assert!(!shop.allows_origin("https://evil.example"));
        assert!(!shop.allows_origin("null"));
        assert_eq!(
            sites.by_host("a.blog.example").map(|s| s.id.as_str()),
            Some("shop")
        );
    }

    #[test]
    fn refuses_bad_site_config() {
        for (id, host) in [
            ("", "a"),
            ("a b", "a"),
            ("ok", "*"),
            ("ok", "a/b"),
            ("ok", ""),
        ] {
            let config = SiteConfig {
                id: id.into(),
                hosts: vec![host.into()],
            };
            assert!(Sites::new(&[config]).is_err(), "{id:?} {host:?}");
        }
    }
}
