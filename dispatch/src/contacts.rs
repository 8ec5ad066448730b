//! The addresses changes carry: opened from the contact vault at send time, for the
//! changes that may carry one ([`Change::may_carry_contact`]). Nothing is cached: an
//! erasure destroys the subject's data key, and the next change has no address.

use std::collections::HashMap;
use std::path::Path;

use spur_audience::Change;
use spur_audience::change::Contact;
use spur_keys::KeyRing;
use spur_keys::vault::Vault;
use spur_lake::Lake;
use tracing::warn;

use crate::error::{Error, Result};

/// The key ring and the vault of `keys.dir`.
pub struct Addresses {
    keys: KeyRing,
    vault: Vault,
}

impl Addresses {
    /// Loads the keys of `keys_dir` (the `contacts` key among them).
    pub fn open(keys_dir: &Path) -> Result<Addresses> {
        let keys = KeyRing::load(keys_dir).map_err(|e| {
            Error::Config(format!(
                "changes with contact.email need the keys ({}): {e}",
                keys_dir.display()
            ))
        })?;
        Ok(Addresses {
            keys,
            vault: Vault::new(keys_dir),
        })
    }

    /// Sets `contact` on every change that may carry one and whose subject has an
    /// address that still opens.
    pub async fn add(&self, lake: &Lake, changes: &mut [Change]) -> Result<()> {
        let mut subjects: Vec<String> = changes
            .iter()
            .filter(|c| c.may_carry_contact())
            .map(|c| c.subject_id.clone())
            .collect();
        subjects.sort();
        subjects.dedup();
        if subjects.is_empty() {
            return Ok(());
        }
        let ctx = lake.session_context().await?;
        let mut found: HashMap<String, String> = HashMap::new();
        for sealed in spur_lake::contacts::sealed(&ctx, &subjects, true).await? {
            match self.vault.open(
                &self.keys,
                &sealed.subject_id,
                &sealed.event_id,
                &sealed.address,
            ) {
                Ok(Some(email)) => {
                    found.insert(sealed.subject_id, email);
                }
                // Erased (data key destroyed): no address, by design.
                Ok(None) => {}
                Err(e) => {
                    warn!(error = %e, "a sealed address did not open; its change goes without one");
                }
            }
        }
        for change in changes.iter_mut().filter(|c| c.may_carry_contact()) {
            change.contact = found.get(&change.subject_id).map(|email| Contact {
                email: email.clone(),
            });
        }
        Ok(())
    }
}
