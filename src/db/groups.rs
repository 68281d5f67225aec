//! Durable subscriptions (consumer groups): what each reads, and how far
//! its consumers have acknowledged, kept on local disk so that both
//! survive a crash. One JSON file per group under
//! `<data-dir>/subscriptions/<tenant>/<name>.json`, replaced whole
//! (written, synced, renamed, directory synced) on every change.
//!
//! Progress is kept per *slot*: a group's connected consumers share its
//! events by entity, consumer `i` of `n` taking the entities of part `i`
//! (`entity_partition(entity_id, n)`). Slot `i` holds the last position
//! consumer `i` acknowledged: every event of its part up to there is done.
//! So everything up to the lowest slot is done by the group, the
//! *committed* position. When consumers come or go the group starts a new
//! *generation*: `n` changes and every slot restarts from the committed
//! position (events past it in some part may come again: delivery is at
//! least once, and positions let consumers drop repeats).

use crate::ids::{GroupName, TableName, TenantId};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// What a group reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupDef {
    pub table: String,
    /// A SQL boolean expression.
    pub filter: Option<String>,
    /// A DSL `where` condition.
    #[serde(rename = "where")]
    pub where_dsl: Option<serde_json::Value>,
    /// When it was created, in milliseconds since the epoch.
    pub created_ms: i64,
    /// Deliver events as written, without schema migrations.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raw: bool,
    /// A digest of what the creator's policies hid of the table (none:
    /// nothing): every consumer must see the same events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<String>,
}

/// How far a group has come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Starts again at every change of consumers or reset.
    pub generation: u64,
    /// Every matching event up to here is acknowledged.
    pub committed: u64,
    /// The last position each consumer of this generation acknowledged.
    pub slots: Vec<u64>,
}

impl Progress {
    /// Everything up to here is done: the lowest slot, or the committed
    /// position with no consumers.
    pub fn done(&self) -> u64 {
        self.slots.iter().copied().min().unwrap_or(self.committed)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct File {
    name: String,
    #[serde(flatten)]
    def: GroupDef,
    #[serde(flatten)]
    progress: Progress,
}

/// One group: its definition, its progress, and its file.
#[derive(Debug)]
pub struct Group {
    pub tenant: TenantId,
    pub name: GroupName,
    pub def: GroupDef,
    path: PathBuf,
    progress: Mutex<Progress>,
    /// Consumers connected now (kept by the service; not stored).
    pub members: AtomicUsize,
    /// Set (under the progress lock) when the group is deleted: its file
    /// is never written again.
    deleted: AtomicBool,
}

impl Group {
    /// The group's progress now.
    pub fn progress(&self) -> Progress {
        self.progress.lock().clone()
    }

    /// The table the group reads.
    pub fn table(&self) -> Option<TableName> {
        self.def.table.parse().ok()
    }

    /// Changes the progress with `change` and stores it, durably, before
    /// returning; on a storage error nothing changes.
    pub fn update<T>(&self, change: impl FnOnce(&mut Progress) -> T) -> std::io::Result<T> {
        let mut progress = self.progress.lock();
        if self.deleted.load(Ordering::Relaxed) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("subscription {:?} was deleted", self.name.as_str()),
            ));
        }
        let mut next = progress.clone();
        let out = change(&mut next);
        if next != *progress {
            write_file(&self.path, &self.file(&next))?;
            *progress = next;
        }
        Ok(out)
    }

    /// The group's stored state for a backup whose table holds the
    /// positions up to `holds`: acknowledged no further than that, in a
    /// new generation with no consumers.
    pub fn backup_state(&self, holds: u64) -> serde_json::Value {
        let progress = self.progress();
        let file = self.file(&Progress {
            generation: progress.generation + 1,
            committed: progress.done().min(holds),
            slots: Vec::new(),
        });
        serde_json::to_value(file).unwrap_or_default()
    }

    fn file(&self, progress: &Progress) -> File {
        File {
            name: self.name.to_string(),
            def: self.def.clone(),
            progress: progress.clone(),
        }
    }

    /// Positions of its table past what it has done (0 if the table is
    /// gone).
    pub fn lag_positions(&self, db: &super::Database) -> u64 {
        let highest = self
            .table()
            .and_then(|t| db.table(&self.tenant, &t))
            .map_or(0, |t| t.highest_position());
        highest.saturating_sub(self.progress().done())
    }

    /// The number of consumers connected.
    pub fn member_count(&self) -> usize {
        self.members.load(Ordering::Relaxed)
    }
}

/// Why a group could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("subscription {0:?} already exists")]
    Exists(String),
    #[error("tenant {tenant:?} has {cap} subscriptions, the most it may (--max-consumer-groups)")]
    Full { tenant: String, cap: usize },
    #[error("cannot store the subscription: {0}")]
    Io(#[from] std::io::Error),
}

/// Every tenant's groups.
#[derive(Debug)]
pub struct GroupStore {
    dir: PathBuf,
    groups: Mutex<BTreeMap<(TenantId, GroupName), Arc<Group>>>,
}

impl GroupStore {
    /// The groups stored under `dir`. A file that does not parse stops
    /// the start: progress must not be silently lost.
    pub fn load(dir: PathBuf) -> std::io::Result<GroupStore> {
        let mut groups = BTreeMap::new();
        for (tenant, path) in GroupName::state_files(&dir)? {
            let bad = |e: &dyn std::fmt::Display| {
                std::io::Error::other(format!(
                    "subscription file {} is unreadable: {e}",
                    path.display()
                ))
            };
            let text = std::fs::read_to_string(&path)?;
            let file: File = serde_json::from_str(&text).map_err(|e| bad(&e))?;
            let name: GroupName = file.name.parse().map_err(|e| bad(&e))?;
            groups.insert(
                (tenant.clone(), name.clone()),
                Arc::new(Group {
                    tenant: tenant.clone(),
                    name,
                    def: file.def,
                    path,
                    progress: Mutex::new(file.progress),
                    members: AtomicUsize::new(0),
                    deleted: AtomicBool::new(false),
                }),
            );
        }
        Ok(GroupStore {
            dir,
            groups: Mutex::new(groups),
        })
    }

    /// A tenant's group.
    pub fn get(&self, tenant: &TenantId, name: &GroupName) -> Option<Arc<Group>> {
        self.groups
            .lock()
            .get(&(tenant.clone(), name.clone()))
            .cloned()
    }

    /// A tenant's groups, by name.
    pub fn list(&self, tenant: &TenantId) -> Vec<Arc<Group>> {
        self.groups
            .lock()
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, g)| g.clone())
            .collect()
    }

    /// Every group.
    pub fn all(&self) -> Vec<Arc<Group>> {
        self.groups.lock().values().cloned().collect()
    }

    /// Makes a group, stored before it is returned, that starts after
    /// position `after`.
    pub fn create(
        &self,
        tenant: &TenantId,
        name: &GroupName,
        def: GroupDef,
        after: u64,
        cap: usize,
    ) -> Result<Arc<Group>, CreateError> {
        let mut groups = self.groups.lock();
        let key = (tenant.clone(), name.clone());
        if groups.contains_key(&key) {
            return Err(CreateError::Exists(name.to_string()));
        }
        if groups.keys().filter(|(t, _)| t == tenant).count() >= cap {
            return Err(CreateError::Full {
                tenant: tenant.to_string(),
                cap,
            });
        }
        let path = name.state_file(&self.dir, tenant);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let group = Group {
            tenant: tenant.clone(),
            name: name.clone(),
            def,
            path,
            progress: Mutex::new(Progress {
                generation: 0,
                committed: after,
                slots: Vec::new(),
            }),
            members: AtomicUsize::new(0),
            deleted: AtomicBool::new(false),
        };
        write_file(&group.path, &group.file(&group.progress()))?;
        // The directories may be new too.
        sync_dir(&self.dir)?;
        if let Some(parent) = self.dir.parent() {
            sync_dir(parent)?;
        }
        let group = Arc::new(group);
        groups.insert(key, group.clone());
        Ok(group)
    }

    /// Removes a group and its file; false if there was none.
    pub fn delete(&self, tenant: &TenantId, name: &GroupName) -> std::io::Result<bool> {
        let mut groups = self.groups.lock();
        let Some(group) = groups.get(&(tenant.clone(), name.clone())).cloned() else {
            return Ok(false);
        };
        let held = group.progress.lock();
        group.deleted.store(true, Ordering::Relaxed);
        match std::fs::remove_file(&group.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some(dir) = group.path.parent() {
            sync_dir(dir)?;
        }
        drop(held);
        groups.remove(&(tenant.clone(), name.clone()));
        Ok(true)
    }
}

fn write_file(path: &Path, file: &File) -> std::io::Result<()> {
    write_durably(
        path,
        &serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?,
    )
}

/// Replaces the JSON file at `path` with `bytes` so that a crash leaves
/// the old or the new content: a temporary file, fsynced, renamed over
/// it, and the directory fsynced.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_their_progress_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = GroupStore::load(dir.path().join("subscriptions")).unwrap();
        let tenant = TenantId::default_tenant();
        let name: GroupName = "billing".parse().unwrap();
        let def = GroupDef {
            policies: None,
            table: "events".into(),
            filter: Some("x > 1".into()),
            where_dsl: None,
            created_ms: 1,
            raw: false,
        };
        let group = store.create(&tenant, &name, def.clone(), 7, 2).unwrap();
        assert!(matches!(
            store.create(&tenant, &name, def.clone(), 0, 2),
            Err(CreateError::Exists(_))
        ));
        let other: GroupName = "other".parse().unwrap();
        store.create(&tenant, &other, def.clone(), 0, 2).unwrap();
        let third: GroupName = "third".parse().unwrap();
        assert!(matches!(
            store.create(&tenant, &third, def.clone(), 0, 2),
            Err(CreateError::Full { cap: 2, .. })
        ));
        group
            .update(|p| {
                p.generation = 3;
                p.slots = vec![9, 12];
                p.committed = 9;
            })
            .unwrap();
        let again = GroupStore::load(dir.path().join("subscriptions")).unwrap();
        let loaded = again.get(&tenant, &name).unwrap();
        assert_eq!(loaded.def, def);
        assert_eq!(
            loaded.progress(),
            Progress {
                generation: 3,
                committed: 9,
                slots: vec![9, 12]
            }
        );
        assert!(again.delete(&tenant, &name).unwrap());
        assert!(!again.delete(&tenant, &name).unwrap());
        let last = GroupStore::load(dir.path().join("subscriptions")).unwrap();
        assert_eq!(last.list(&tenant).len(), 1);
    }
}
