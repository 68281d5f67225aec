//! Every tenant's policies, one durable JSON file per tenant under
//! `<data-dir>/policies/<tenant>.json`. A tenant without a file has the
//! default policies, unstored; its first change stores them with the
//! change, and a fresh random salt for hash masks. A change is written
//! (and synced) before it is installed, and refused when it was based on
//! an older generation than the stored one.

use super::groups::{sync_dir, write_durably};
use crate::ids::TenantId;
use crate::policy::Policy;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// A tenant's policies as they apply now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantPolicies {
    /// Counts changes: 0 while the defaults were never changed.
    pub generation: u64,
    /// The key of hash masks, as hex: hashes stay the same across
    /// restarts and restores, and differ between tenants.
    pub salt: String,
    pub policies: Vec<Policy>,
}

impl TenantPolicies {
    fn defaults() -> TenantPolicies {
        TenantPolicies {
            generation: 0,
            salt: String::new(),
            policies: crate::policy::defaults::defaults(),
        }
    }

    /// Whether it is still the unstored defaults.
    pub fn is_stored(&self) -> bool {
        self.generation > 0
    }

    /// The hash-mask key as bytes (zeros before the first change, when
    /// no mask can exist).
    pub fn salt_bytes(&self) -> [u8; 32] {
        let mut key = [0u8; 32];
        for (i, b) in key.iter_mut().enumerate() {
            *b = self
                .salt
                .get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .unwrap_or(0);
        }
        key
    }
}

/// Why a change was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error(
        "the policies changed meanwhile (generation {current}, the change was based on {based_on}); read them again and retry"
    )]
    Stale { current: u64, based_on: u64 },
    /// The change itself was refused (a clash of names, a missing one, a
    /// cap): the text says why.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Every tenant's policies.
#[derive(Debug)]
pub struct PolicyStore {
    dir: PathBuf,
    tenants: RwLock<BTreeMap<TenantId, Arc<TenantPolicies>>>,
    /// Held across a change's write, so changes apply one at a time.
    writing: Mutex<()>,
}

impl PolicyStore {
    /// The policies stored under `dir`. A file that does not parse stops
    /// the start: policies must not silently stop applying.
    pub fn load(dir: PathBuf) -> std::io::Result<PolicyStore> {
        let mut tenants = BTreeMap::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(d) => Some(d),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        for entry in entries.into_iter().flatten() {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let bad = |e: &dyn std::fmt::Display| {
                std::io::Error::other(format!("policy file {} is unreadable: {e}", path.display()))
            };
            let tenant: TenantId = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .parse()
                .map_err(|e| bad(&e))?;
            let text = std::fs::read_to_string(&path)?;
            let stored: TenantPolicies = serde_json::from_str(&text).map_err(|e| bad(&e))?;
            for p in &stored.policies {
                p.check_shape()
                    .map_err(|e| bad(&format!("policy {:?}: {e}", p.name)))?;
            }
            tenants.insert(tenant, Arc::new(stored));
        }
        Ok(PolicyStore {
            dir,
            tenants: RwLock::new(tenants),
            writing: Mutex::new(()),
        })
    }

    /// A tenant's policies (the defaults when it never changed them).
    pub fn get(&self, tenant: &TenantId) -> Arc<TenantPolicies> {
        if let Some(p) = self.tenants.read().get(tenant) {
            return p.clone();
        }
        Arc::new(TenantPolicies::defaults())
    }

    /// Every tenant that stored its policies, for backups.
    pub fn all(&self) -> Vec<(TenantId, Arc<TenantPolicies>)> {
        let tenants = self.tenants.read();
        tenants
            .iter()
            .map(|(t, p)| (t.clone(), p.clone()))
            .collect()
    }

    /// Applies `change` to the tenant's policies and stores the result
    /// with the next generation, if the current one is still `based_on`
    /// (when given). `change` may refuse with a reason.
    pub fn change<T>(
        &self,
        tenant: &TenantId,
        based_on: Option<u64>,
        change: impl FnOnce(&mut Vec<Policy>) -> Result<T, String>,
    ) -> Result<(Arc<TenantPolicies>, T), PutError> {
        let _one_at_a_time = self.writing.lock();
        let current = self.get(tenant);
        if let Some(based_on) = based_on
            && based_on != current.generation
        {
            return Err(PutError::Stale {
                current: current.generation,
                based_on,
            });
        }
        let mut next = (*current).clone();
        let out = change(&mut next.policies).map_err(PutError::Refused)?;
        next.generation += 1;
        if next.salt.is_empty() {
            let key: [u8; 32] = rand::random();
            next.salt = key.iter().map(|b| format!("{b:02x}")).collect();
        }
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(format!("{tenant}.json"));
        let created = !path.exists();
        write_durably(
            &path,
            &serde_json::to_vec_pretty(&next).map_err(std::io::Error::other)?,
        )?;
        if created && let Some(parent) = self.dir.parent() {
            sync_dir(parent)?;
        }
        let next = Arc::new(next);
        self.tenants.write().insert(tenant.clone(), next.clone());
        Ok((next, out))
    }
}

impl super::Database {
    /// Every tenant's policies.
    pub fn policies(&self) -> &PolicyStore {
        &self.policies
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_stored_checked_against_their_base_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let store = PolicyStore::load(dir.path().join("policies")).unwrap();
        let tenant = TenantId::default_tenant();
        let before = store.get(&tenant);
        assert_eq!((before.generation, before.is_stored()), (0, false));
        assert_eq!(before.policies.len(), 5);
        let (after, n) = store
            .change(&tenant, Some(0), |ps| {
                ps.retain(|p| p.name != "default_subject_quota");
                Ok(ps.len())
            })
            .unwrap();
        assert_eq!((after.generation, n), (1, 4));
        assert_eq!(after.salt.len(), 64);
        assert!(matches!(
            store.change(&tenant, Some(0), |_| Ok(())),
            Err(PutError::Stale {
                current: 1,
                based_on: 0
            })
        ));
        assert!(matches!(
            store.change(&tenant, None, |_| Err::<(), _>("no".into())),
            Err(PutError::Refused(m)) if m == "no"
        ));
        let again = PolicyStore::load(dir.path().join("policies")).unwrap();
        assert_eq!(*again.get(&tenant), *after);
        assert_eq!(again.get(&tenant).salt_bytes(), after.salt_bytes());
        assert_ne!(after.salt_bytes(), [0u8; 32]);
        std::fs::write(dir.path().join("policies/x.json"), "{").unwrap();
        assert!(PolicyStore::load(dir.path().join("policies")).is_err());
    }
}
