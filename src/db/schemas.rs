//! Every tenant's table governance (schemas and rules), one durable JSON
//! file per governed table under `<data-dir>/schemas/<tenant>/<table>.json`.
//! A change is written (and synced) before it is installed, and refused
//! when it was based on an older generation than the stored one.

use super::groups::{sync_dir, write_durably};
use super::{Database, Table};
use crate::ids::{TableName, TenantId};
use crate::ingest::BatchCheck;
use crate::schema::governed::{FieldType, TableGovernance};
use crate::schema::{ColumnKind, ColumnRegistry};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Serialize, Deserialize)]
struct File {
    table: String,
    governance: TableGovernance,
}

/// What the store keeps in a table's file, as JSON (backups carry it).
pub fn file_state(table: &TableName, gov: &TableGovernance) -> serde_json::Value {
    let file = File {
        table: table.to_string(),
        governance: gov.clone(),
    };
    serde_json::to_value(&file).unwrap_or_default()
}

/// Why a change was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error(
        "the schemas of table {table:?} changed meanwhile (generation {current}, the change was based on {based_on}); retry"
    )]
    Stale {
        table: String,
        current: u64,
        based_on: u64,
    },
    #[error("tenant {tenant} governs {cap} tables, the most it may (--max-governed-tables)")]
    Full { tenant: String, cap: usize },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Every tenant's governed tables.
#[derive(Debug)]
pub struct SchemaStore {
    dir: PathBuf,
    tables: Mutex<BTreeMap<(TenantId, TableName), Arc<TableGovernance>>>,
}

impl SchemaStore {
    /// The governance stored under `dir`. A file that does not parse stops
    /// the start: rules must not silently stop applying.
    pub fn load(dir: PathBuf) -> std::io::Result<SchemaStore> {
        let mut tables = BTreeMap::new();
        for (tenant, path) in crate::ids::tenant_json_files(&dir)? {
            let bad = |e: &dyn std::fmt::Display| {
                std::io::Error::other(format!("schema file {} is unreadable: {e}", path.display()))
            };
            let text = std::fs::read_to_string(&path)?;
            let file: File = serde_json::from_str(&text).map_err(|e| bad(&e))?;
            let table: TableName = file.table.parse().map_err(|e| bad(&e))?;
            tables.insert((tenant, table), Arc::new(file.governance));
        }
        Ok(SchemaStore {
            dir,
            tables: Mutex::new(tables),
        })
    }

    /// A table's governance, if it has any.
    pub fn get(&self, tenant: &TenantId, table: &TableName) -> Option<Arc<TableGovernance>> {
        self.tables
            .lock()
            .get(&(tenant.clone(), table.clone()))
            .cloned()
    }

    /// A tenant's governed tables, by name.
    pub fn list(&self, tenant: &TenantId) -> Vec<(TableName, Arc<TableGovernance>)> {
        self.tables
            .lock()
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|((_, name), g)| (name.clone(), g.clone()))
            .collect()
    }

    /// Every governed table.
    pub fn all(&self) -> Vec<(TenantId, TableName, Arc<TableGovernance>)> {
        self.tables
            .lock()
            .iter()
            .map(|((t, name), g)| (t.clone(), name.clone(), g.clone()))
            .collect()
    }

    /// Stores `new` as the table's governance, with the next generation,
    /// if the stored one is still `based_on` (0: none). `cap` bounds the
    /// tenant's governed tables. Returns what was stored.
    pub fn put(
        &self,
        tenant: &TenantId,
        table: &TableName,
        mut new: TableGovernance,
        based_on: u64,
        cap: usize,
    ) -> Result<Arc<TableGovernance>, PutError> {
        let mut tables = self.tables.lock();
        let key = (tenant.clone(), table.clone());
        let current = tables.get(&key).map_or(0, |g| g.generation);
        if current != based_on {
            return Err(PutError::Stale {
                table: table.to_string(),
                current,
                based_on,
            });
        }
        if current == 0 && tables.keys().filter(|(t, _)| t == tenant).count() >= cap {
            return Err(PutError::Full {
                tenant: tenant.to_string(),
                cap,
            });
        }
        new.generation = current + 1;
        let path = self.dir.join(tenant.as_str()).join(format!("{table}.json"));
        let created = !path.exists();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = File {
            table: table.to_string(),
            governance: new,
        };
        write_durably(
            &path,
            &serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?,
        )?;
        if created {
            sync_dir(&self.dir)?;
            if let Some(parent) = self.dir.parent() {
                sync_dir(parent)?;
            }
        }
        let stored = Arc::new(file.governance);
        tables.insert(key, stored.clone());
        Ok(stored)
    }
}

/// The compiled rules of governed tables.
pub type Checks = parking_lot::RwLock<BTreeMap<(TenantId, TableName), Arc<dyn BatchCheck>>>;

/// Every declared field of every version, with its type (`any` left out:
/// it fixes no column kind).
fn declared(gov: &TableGovernance) -> impl Iterator<Item = (&String, &String, FieldType)> {
    gov.types.iter().flat_map(|(event_type, versions)| {
        versions.iter().flat_map(move |v| {
            v.def
                .fields
                .iter()
                .filter(|(_, f)| f.field_type != FieldType::Any)
                .map(move |(name, f)| (event_type, name, f.field_type))
        })
    })
}

/// Why `gov`'s declared fields cannot be stored in `registry`'s columns.
fn conflict(registry: &ColumnRegistry, gov: &TableGovernance, table: &str) -> Result<(), String> {
    for (event_type, name, ty) in declared(gov) {
        let Some(kind) = ty.column_kind() else {
            continue;
        };
        match registry.column_like(name) {
            None => {}
            Some((existing, _)) if existing != name => {
                return Err(format!(
                    "{event_type}.fields.{name}: table {table:?} already has a column {existing:?}; names may not differ only in case"
                ));
            }
            Some((_, k)) if k != kind => {
                return Err(format!(
                    "{event_type}.fields.{name}: table {table:?} already has a {} column {name:?}; {} field cannot be stored in it (declare its type to match, or use another name)",
                    match k {
                        ColumnKind::Double => "DOUBLE",
                        ColumnKind::Boolean => "BOOLEAN",
                        ColumnKind::Text => "VARCHAR",
                        ColumnKind::Integer => "BIGINT",
                    },
                    ty.described(),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Gives `registry` the governance columns and a column of its declared
/// kind for every field `gov` declares.
pub fn lay_out(
    registry: &mut ColumnRegistry,
    gov: &TableGovernance,
    table: &str,
) -> Result<(), String> {
    conflict(registry, gov, table)?;
    registry.govern();
    for (event_type, field, ty) in declared(gov) {
        let Some(kind) = ty.column_kind() else {
            continue;
        };
        registry.declare(field, kind).map_err(|_| {
            format!(
                "{event_type}.fields.{field}: table {table:?} has no room for another column ({} at most)",
                crate::schema::MAX_PAYLOAD_COLUMNS
            )
        })?;
    }
    Ok(())
}

impl Database {
    /// Tables' schemas and rules, as stored.
    pub fn schemas(&self) -> &SchemaStore {
        &self.schemas
    }

    /// Runs `check` on every batch built for `tenant`'s table `name` from
    /// now on (`None`: no check).
    pub fn set_check(
        &self,
        tenant: &TenantId,
        name: &TableName,
        check: Option<Arc<dyn BatchCheck>>,
    ) {
        let key = (tenant.clone(), name.clone());
        let mut checks = self.checks.write();
        match check {
            Some(c) => checks.insert(key, c),
            None => checks.remove(&key),
        };
    }

    /// The check batches of `tenant`'s table `name` go through, if any.
    pub fn check_of(&self, tenant: &TenantId, name: &TableName) -> Option<Arc<dyn BatchCheck>> {
        let checks = self.checks.read();
        if checks.is_empty() {
            return None;
        }
        checks.get(&(tenant.clone(), name.clone())).cloned()
    }

    /// Why `gov` cannot govern `tenant`'s table `name` as it is now: a
    /// declared field whose column already has another kind.
    pub fn governance_conflict(
        &self,
        tenant: &TenantId,
        name: &TableName,
        gov: &TableGovernance,
    ) -> Result<(), String> {
        match self.table(tenant, name) {
            Some(t) => conflict(&t.registry.lock(), gov, name.as_str()),
            None => Ok(()),
        }
    }

    /// Lays `tenant`'s table `name` (made if new) out for `gov`: the
    /// governance columns, and a column of its declared kind for every
    /// declared field, so that no event's value can give it another.
    pub async fn govern_table(
        &self,
        tenant: &TenantId,
        name: &TableName,
        gov: &TableGovernance,
    ) -> Result<Arc<Table>, String> {
        let table = match self.table(tenant, name) {
            Some(t) => t,
            None => self
                .load_table(tenant, name)
                .await
                .map_err(|e| e.to_string())?,
        };
        lay_out(&mut table.registry.lock(), gov, name.as_str())?;
        Ok(table)
    }

    /// A copy of the columns `tenant`'s table `name` has (an empty one
    /// when it does not exist), to build batches against without changing
    /// the table.
    pub fn scratch_registry(&self, tenant: &TenantId, name: &TableName) -> ColumnRegistry {
        self.table(tenant, name)
            .map(|t| t.registry.lock().clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::governed::{AllowedTypes, Mode};

    #[test]
    fn changes_survive_a_reload_and_stale_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SchemaStore::load(dir.path().join("schemas")).unwrap();
        let (t, table): (TenantId, TableName) =
            ("acme".parse().unwrap(), "events".parse().unwrap());
        let gov = TableGovernance {
            event_types: Some(AllowedTypes {
                allowed: ["a".to_string()].into(),
                mode: Mode::Warn,
            }),
            ..Default::default()
        };
        let stored = store.put(&t, &table, gov.clone(), 0, 8).unwrap();
        assert_eq!(stored.generation, 1);
        assert!(matches!(
            store.put(&t, &table, gov.clone(), 0, 8),
            Err(PutError::Stale { current: 1, .. })
        ));
        let other: TableName = "other".parse().unwrap();
        assert!(matches!(
            store.put(&t, &other, gov.clone(), 0, 1),
            Err(PutError::Full { .. })
        ));
        store.put(&t, &table, gov, 1, 8).unwrap();
        let again = SchemaStore::load(dir.path().join("schemas")).unwrap();
        let back = again.get(&t, &table).unwrap();
        assert_eq!(back.generation, 2);
        assert_eq!(back.event_types.as_ref().unwrap().mode, Mode::Warn);
        assert_eq!(again.list(&t).len(), 1);
    }
}
