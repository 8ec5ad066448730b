//! Cookieless visitor ids from a daily-rotating secret salt.
//!
//! Without analytics consent a visitor gets `HMAC-SHA256(salt_of_today, site ‖ ip ‖
//! user agent)`, truncated to 128 bits. The salt is random, one per UTC day, and is
//! destroyed when the day ends: zeroed in memory and, when a salt file is configured,
//! overwritten on disk. Once it is gone nobody, Spur included, can link yesterday's
//! ids to today's or recompute an id from an IP address.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

const DAY_MS: i64 = 86_400_000;
const FILE_NAME: &str = "cookieless-salt.json";

struct Current {
    day: i64,
    salt: Zeroizing<[u8; 32]>,
}

#[derive(Serialize, Deserialize)]
struct SaltFile {
    day: i64,
    salt: String,
}

/// The salt of the current day. Rotates itself on first use after midnight UTC.
pub struct DailySalt {
    current: RwLock<Current>,
    file: Option<PathBuf>,
}

impl std::fmt::Debug for DailySalt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DailySalt")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

fn day_of(now_ms: i64) -> i64 {
    now_ms.div_euclid(DAY_MS)
}

fn random_salt() -> Zeroizing<[u8; 32]> {
    let mut salt = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(salt.as_mut());
    salt
}

impl DailySalt {
    /// Loads today's salt from `dir` if it holds one, else makes (and stores) a new one.
    pub fn new(dir: Option<&Path>, now_ms: i64) -> Result<Self> {
        let file = dir.map(|d| d.join(FILE_NAME));
        let today = day_of(now_ms);
        let loaded = match &file {
            Some(path) => load(path)?.filter(|c| c.day == today),
            None => None,
        };
        let current = match loaded {
            Some(c) => c,
            None => {
                let c = Current {
                    day: today,
                    salt: random_salt(),
                };
                if let Some(path) = &file {
                    store(path, &c)?;
                }
                c
            }
        };
        Ok(Self {
            current: RwLock::new(current),
            file,
        })
    }

    /// The cookieless id of a visitor at `now_ms`.
    pub fn cookieless_id(&self, site: &str, ip: IpAddr, user_agent: &str, now_ms: i64) -> String {
        let today = day_of(now_ms);
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current.day >= today {
                return digest(&current.salt, site, ip, user_agent);
            }
        }
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.day < today {
            let next = Current {
                day: today,
                salt: random_salt(),
            };
            if let Some(path) = &self.file
                && let Err(e) = store(path, &next)
            {
                // The new salt is used anyway; the old one is destroyed in memory below.
                // A restart today would then start a new salt: ids split, never link.
                tracing::error!(error = %e, "could not persist the rotated cookieless salt");
            }
            // Replacing drops the old `Zeroizing` salt, which zeroes it.
            *current = next;
            tracing::info!(
                day = today,
                "rotated the cookieless-id salt; the previous one is destroyed"
            );
        }
        digest(&current.salt, site, ip, user_agent)
    }
}

fn digest(salt: &[u8; 32], site: &str, ip: IpAddr, user_agent: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(salt).expect("hmac accepts any key length");
    mac.update(site.as_bytes());
    mac.update(&[0]);
    match ip {
        IpAddr::V4(v4) => mac.update(&v4.octets()),
        IpAddr::V6(v6) => mac.update(&v6.octets()),
    }
    mac.update(&[0]);
    mac.update(user_agent.as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

fn load(path: &Path) -> Result<Option<Current>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Salt {
                path: path.to_owned(),
                source,
            });
        }
    };
    let Ok(file) = serde_json::from_str::<SaltFile>(&text) else {
        return Ok(None);
    };
    let file_salt = Zeroizing::new(file.salt);
    let mut salt = Zeroizing::new([0u8; 32]);
    if hex::decode_to_slice(file_salt.as_bytes(), salt.as_mut()).is_err() {
        return Ok(None);
    }
    Ok(Some(Current {
        day: file.day,
        salt,
    }))
}

/// Writes the salt file atomically (temporary file, then rename over the old one), so
/// the previous day's salt is replaced in one step.
fn store(path: &Path, current: &Current) -> Result<()> {
    let err = |source| Error::Salt {
        path: path.to_owned(),
        source,
    };
    spur_keys::files::create_private_dir(spur_keys::files::parent(path)).map_err(err)?;
    let body = Zeroizing::new(
        serde_json::to_string(&SaltFile {
            day: current.day,
            salt: hex::encode(current.salt.as_ref()),
        })
        .expect("salt file serialises"),
    );
    spur_keys::files::replace_private(path, body.as_bytes()).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOON: i64 = 1_764_417_600_000; // 2025-11-29T12:00Z

    fn ip() -> IpAddr {
        "203.0.113.7".parse().expect("ip")
    }

    #[test]
    fn stable_within_a_day_unlinkable_across_days() {
        let salt = DailySalt::new(None, NOON).expect("salt");
        let a = salt.cookieless_id("shop", ip(), "UA", NOON);
        assert_eq!(a, salt.cookieless_id("shop", ip(), "UA", NOON + 3_600_000));
        assert_ne!(a, salt.cookieless_id("blog", ip(), "UA", NOON));
        assert_ne!(a, salt.cookieless_id("shop", ip(), "UA2", NOON));
        let tomorrow = salt.cookieless_id("shop", ip(), "UA", NOON + DAY_MS);
        assert_ne!(a, tomorrow);
        // The old day cannot be recomputed any more: the salt is gone.
        assert_eq!(tomorrow, salt.cookieless_id("shop", ip(), "UA", NOON));
        assert_eq!(a.len(), 32);
        assert!(!a.contains("203"));
    }

    #[test]
    fn salt_file_survives_restart_and_is_replaced_on_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DailySalt::new(Some(dir.path()), NOON).expect("salt");
        let id = first.cookieless_id("shop", ip(), "UA", NOON);
        let before = std::fs::read_to_string(dir.path().join(FILE_NAME)).expect("file");
        drop(first);
        let restarted = DailySalt::new(Some(dir.path()), NOON + 1000).expect("salt");
        assert_eq!(id, restarted.cookieless_id("shop", ip(), "UA", NOON + 1000));
        restarted.cookieless_id("shop", ip(), "UA", NOON + DAY_MS);
        let after = std::fs::read_to_string(dir.path().join(FILE_NAME)).expect("file");
        assert_ne!(before, after, "rotation overwrites the stored salt");
        let next_day = DailySalt::new(Some(dir.path()), NOON + 2 * DAY_MS).expect("salt");
        assert_ne!(
            id,
            next_day.cookieless_id("shop", ip(), "UA", NOON + 2 * DAY_MS)
        );
    }
}
