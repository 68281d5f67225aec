//! The server's projections: each one's query, state and progress, by
//! tenant and name; the list of them kept on disk so that they are
//! defined again at start-up; and the `projections` schema that offers
//! each tenant's projections to its SQL sessions as tables.
//!
//! The state lives in memory, and is written to a snapshot with the
//! position it covers from time to time (`service::snapshots`). At
//! start-up each projection is loaded from its snapshot, or from nothing,
//! and folds its table's events after that position: the events are
//! durable, so the state after the catch-up reflects every acknowledged
//! event once.

use super::{Definition, State};
use crate::ids::{ProjectionName, TenantId};
use arrow::array::RecordBatch;
use datafusion::error::Result;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// What defines a projection, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub name: String,
    pub version: u32,
    /// The query: SQL text, or a DSL document as JSON text.
    pub query: String,
    /// Which language `query` is in.
    #[serde(default, skip_serializing_if = "Language::is_sql")]
    pub language: Language,
    /// When it was created, in milliseconds since the epoch.
    pub created_ms: i64,
    /// Unique to this definition (a UUID): names its snapshot, so that no
    /// other definition of the name ever loads it.
    #[serde(default)]
    pub id: String,
    /// As a next version: wait for `POST /v1/projections/{name}/promote`
    /// once caught up, rather than replacing the serving one at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manual_promote: bool,
    /// Whom its source is read as (the server, unrestricted, for
    /// definitions made before definers were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definer: Option<crate::auth::Definer>,
}

/// The language of a projection's query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    #[default]
    Sql,
    /// A DSL document (docs/dsl.md); its relative times (`days-ago`) are
    /// taken from the projection's creation time, once.
    Dsl,
}

impl Language {
    fn is_sql(&self) -> bool {
        *self == Language::Sql
    }
}

/// Whether a projection is being kept up to date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "error")]
pub enum Health {
    /// Folding events as they are acknowledged.
    Running,
    /// Stopped by an error (its state is as of its position).
    Failed(String),
}

/// A projection being maintained.
#[derive(Debug)]
pub struct Live {
    pub tenant: TenantId,
    pub name: ProjectionName,
    pub spec: Spec,
    pub table: crate::ids::TableName,
    definition: Definition,
    /// The columns folds read, in the order the compiled expressions
    /// expect them.
    input: arrow::datatypes::SchemaRef,
    state: RwLock<State>,
    /// The state's estimated bytes after the last fold, readable without
    /// its lock (a tenant's total sums them while others fold).
    bytes: AtomicUsize,
    /// The last position folded: every event of the table up to here is
    /// in the state.
    position: AtomicU64,
    /// The position the last snapshot written (or loaded at start-up)
    /// covers; 0 before the first.
    snapshot_position: AtomicU64,
    /// The position the state was loaded at from a snapshot at start-up
    /// (0 when it was folded from the first event).
    pub restored_position: u64,
    health: Mutex<Health>,
    /// Errors met while keeping it: failed reads (retried) and the error
    /// that stopped it.
    errors: AtomicU64,
    /// Cancelled when the projection is deleted or the server stops.
    pub stop: tokio_util::sync::CancellationToken,
    /// Held while a snapshot is written: one at a time.
    pub snapshot_lock: tokio::sync::Mutex<()>,
}

impl Live {
    pub fn new(
        tenant: TenantId,
        name: ProjectionName,
        spec: Spec,
        table: crate::ids::TableName,
        definition: Definition,
        state: State,
        restored_position: u64,
    ) -> Arc<Live> {
        Arc::new(Live {
            tenant,
            name,
            spec,
            table,
            input: Arc::new(definition.table_schema.as_arrow().clone()),
            definition,
            bytes: AtomicUsize::new(state.bytes()),
            state: RwLock::new(state),
            position: AtomicU64::new(restored_position),
            snapshot_position: AtomicU64::new(restored_position),
            restored_position,
            health: Mutex::new(Health::Running),
            errors: AtomicU64::new(0),
            stop: Default::default(),
            snapshot_lock: Default::default(),
        })
    }

    /// The query taken apart.
    pub fn definition(&self) -> &Definition {
        &self.definition
    }

    /// Folds `batches` (the table's next events, in position order) and
    /// moves the position to `upto`.
    ///
    /// A fold that fails may have folded part of a batch: the projection
    /// is failed before the state is let go, so that no snapshot is taken
    /// of it.
    pub fn fold(&self, batches: &[RecordBatch], upto: u64) -> Result<()> {
        let mut state = self.state.write();
        for batch in batches {
            let folded = crate::schema::adapt_batch(batch, &self.input)
                .map_err(Into::into)
                .and_then(|batch| state.fold(&batch));
            if let Err(e) = folded {
                self.fail(format!("folding events failed: {e}"));
                return Err(e);
            }
        }
        self.bytes.store(state.bytes(), Ordering::Relaxed);
        self.position.fetch_max(upto, Ordering::Release);
        Ok(())
    }

    /// The projection's rows now.
    pub fn read(&self) -> Result<RecordBatch> {
        self.state.read().read()
    }

    /// The projection's rows and the position they reflect.
    pub fn read_at(&self) -> Result<(RecordBatch, u64)> {
        let state = self.state.read();
        Ok((state.read()?, self.position()))
    }

    /// The rows of the group whose key equals `key` (one value per key
    /// expression, as text), and the position they reflect.
    pub fn read_key(&self, key: &[String]) -> Result<(RecordBatch, u64)> {
        let state = self.state.read();
        Ok((state.read_key(key)?, self.position()))
    }

    pub fn position(&self) -> u64 {
        self.position.load(Ordering::Acquire)
    }

    /// The state as snapshot rows and the position they cover, or `None`
    /// when the last snapshot already covers the position.
    /// A failed projection is not snapshotted: its state may hold part of
    /// a batch past its position.
    pub fn snapshot(&self) -> Result<Option<(RecordBatch, u64)>> {
        let state = self.state.read();
        let position = self.position();
        if position <= self.snapshot_position() || self.health() != Health::Running {
            return Ok(None);
        }
        Ok(Some((state.snapshot()?, position)))
    }

    /// Records that a snapshot covering `position` is durable.
    pub fn snapshot_written(&self, position: u64) {
        self.snapshot_position
            .fetch_max(position, Ordering::Release);
    }

    pub fn snapshot_position(&self) -> u64 {
        self.snapshot_position.load(Ordering::Acquire)
    }

    /// The name of the projection's snapshot: its name and the id of its
    /// definition, so that a projection deleted and defined again never
    /// loads the state of the one before.
    pub fn snapshot_name(&self) -> String {
        snapshot_name(&self.spec)
    }

    /// The state's estimated bytes after the last fold.
    pub fn state_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Groups held, and their estimated bytes.
    pub fn size(&self) -> (usize, usize) {
        let state = self.state.read();
        (state.groups(), state.bytes())
    }

    pub fn health(&self) -> Health {
        self.health.lock().clone()
    }

    /// Stops the projection with `error`.
    pub fn fail(&self, error: String) {
        self.count_error();
        *self.health.lock() = Health::Failed(error);
        self.stop.cancel();
    }

    /// Counts an error met while keeping the projection.
    pub fn count_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Errors met since this process started keeping it.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

/// The name of the snapshot of the projection `spec` defines.
pub fn snapshot_name(spec: &Spec) -> String {
    match spec.id.is_empty() {
        true => format!("{}.{}", spec.name, spec.created_ms),
        false => format!("{}.{}", spec.name, spec.id),
    }
}

/// Which of a name's projections a definition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The one reads see.
    #[default]
    Serving,
    /// A new version (or a rebuild) folding history in the background,
    /// which replaces the serving one once it has caught up.
    Next,
}

/// Why a projection could not be added.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("projection {0:?} exists; delete it first, or give the new one another name")]
    Exists(String),
    #[error(
        "projection {name:?} is at version {serving}; a new version must be higher (or rebuild it with POST /v1/projections/{name}/rebuild)"
    )]
    NotNewer { name: String, serving: u32 },
    #[error("projection {0:?} does not exist")]
    Missing(String),
    #[error("tenant {tenant:?} has {cap} projections, the most it may (--max-projections)")]
    Full { tenant: String, cap: usize },
    #[error("could not store the list of projections: {0}")]
    Io(#[from] std::io::Error),
}

/// A name's projections: the serving one, and the next while it builds.
#[derive(Debug, Clone)]
struct Slot {
    serving: Arc<Live>,
    next: Option<Arc<Live>>,
}

type Key = (TenantId, ProjectionName);

/// A definition as stored: its tenant, spec and role.
pub type StoredSpec = (TenantId, Spec, Role);

/// Every projection of the server.
#[derive(Debug)]
pub struct Registry {
    path: PathBuf,
    live: Mutex<BTreeMap<Key, Slot>>,
    /// Stored projections that could not be defined again at start-up
    /// (kept in the list, so that a passing failure loses none).
    unloaded: Mutex<Vec<StoredSpec>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    tenant: String,
    #[serde(flatten)]
    spec: Spec,
    #[serde(default)]
    role: Role,
}

impl Registry {
    /// An empty registry storing its list in `path`, and the specs an
    /// earlier process stored there (serving ones first).
    pub fn open(path: PathBuf) -> std::io::Result<(Registry, Vec<StoredSpec>)> {
        let mut specs: Vec<StoredSpec> = match std::fs::read(&path) {
            Ok(bytes) => {
                let stored: Vec<Stored> = serde_json::from_slice(&bytes)
                    .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
                stored
                    .into_iter()
                    .filter_map(|s| Some((s.tenant.parse().ok()?, s.spec, s.role)))
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        specs.sort_by_key(|(_, _, role)| *role == Role::Next);
        let registry = Registry {
            path,
            live: Default::default(),
            unloaded: Default::default(),
        };
        Ok((registry, specs))
    }

    /// Adds `live` (at most `cap` per tenant) and stores the list.
    pub fn add(&self, live: Arc<Live>, cap: usize) -> std::result::Result<(), AddError> {
        let mut map = self.live.lock();
        let key = (live.tenant.clone(), live.name.clone());
        if map.contains_key(&key) {
            return Err(AddError::Exists(live.name.to_string()));
        }
        let held = map.keys().filter(|(t, _)| *t == live.tenant).count();
        if held >= cap {
            return Err(AddError::Full {
                tenant: live.tenant.to_string(),
                cap,
            });
        }
        let slot = Slot {
            serving: live,
            next: None,
        };
        map.insert(key.clone(), slot);
        self.prune_unloaded(&key);
        if let Err(e) = self.store(&map) {
            map.remove(&key);
            return Err(e.into());
        }
        Ok(())
    }

    /// Adds `live` as the next version of the projection of its name
    /// (which must exist, at a lower version unless `rebuild`), replacing
    /// a next version already building, and stores the list. Returns the
    /// replaced next version, stopped.
    pub fn add_next(
        &self,
        live: Arc<Live>,
        rebuild: bool,
    ) -> std::result::Result<Option<Arc<Live>>, AddError> {
        let mut map = self.live.lock();
        let key = (live.tenant.clone(), live.name.clone());
        let Some(slot) = map.get_mut(&key) else {
            return Err(AddError::Missing(live.name.to_string()));
        };
        if !rebuild && live.spec.version <= slot.serving.spec.version {
            return Err(AddError::NotNewer {
                name: live.name.to_string(),
                serving: slot.serving.spec.version,
            });
        }
        let replaced = slot.next.replace(live);
        self.prune_unloaded(&key);
        if let Err(e) = self.store(&map) {
            map.get_mut(&key).expect("held under the lock").next = replaced;
            return Err(e.into());
        }
        if let Some(r) = &replaced {
            r.stop.cancel();
        }
        Ok(replaced)
    }

    /// Makes `next` (the next version of its name) the serving one, and
    /// stores the list. Returns the projection it replaced, stopped;
    /// `None` when `next` is no longer the next version.
    pub fn promote(&self, next: &Arc<Live>) -> std::io::Result<Option<Arc<Live>>> {
        let mut map = self.live.lock();
        let key = (next.tenant.clone(), next.name.clone());
        let Some(slot) = map.get_mut(&key) else {
            return Ok(None);
        };
        if !slot.next.as_ref().is_some_and(|n| Arc::ptr_eq(n, next)) {
            return Ok(None);
        }
        let before = slot.clone();
        slot.serving = slot.next.take().expect("checked above");
        self.prune_unloaded(&key);
        if let Err(e) = self.store(&map) {
            map.insert(key, before);
            return Err(e);
        }
        before.serving.stop.cancel();
        Ok(Some(before.serving))
    }

    /// Adds `live` as stored by an earlier process (no cap, no store).
    /// A next version whose serving one was not defined again serves.
    pub fn restore(&self, live: Arc<Live>, role: Role) {
        let mut map = self.live.lock();
        let key = (live.tenant.clone(), live.name.clone());
        let replaced = match (map.get_mut(&key), role) {
            (Some(slot), Role::Next) => slot.next.replace(live),
            (Some(slot), Role::Serving) => Some(std::mem::replace(&mut slot.serving, live)),
            (None, role) => {
                if role == Role::Next {
                    // Its serving definition failed to load: this one
                    // serves in its place.
                    self.prune_unloaded(&key);
                }
                map.insert(
                    key,
                    Slot {
                        serving: live,
                        next: None,
                    },
                );
                None
            }
        };
        if let Some(r) = replaced {
            r.stop.cancel();
        }
    }

    /// Forgets the unloaded definitions of `key`'s name: a definition of
    /// it was added, promoted or removed since.
    fn prune_unloaded(&self, key: &Key) {
        self.unloaded
            .lock()
            .retain(|(t, spec, _)| !(t == &key.0 && spec.name == key.1.as_str()));
    }

    /// Keeps a stored projection that could not be defined again in the
    /// list, so that it is not lost when the list is next written.
    pub fn keep_unloaded(&self, tenant: TenantId, spec: Spec, role: Role) {
        self.unloaded.lock().push((tenant, spec, role));
    }

    /// Removes a projection (and its next version) and stores the list;
    /// what was removed, stopped, or nothing if there is none.
    pub fn remove(
        &self,
        tenant: &TenantId,
        name: &ProjectionName,
    ) -> std::io::Result<Vec<Arc<Live>>> {
        let mut map = self.live.lock();
        let key = (tenant.clone(), name.clone());
        let Some(slot) = map.remove(&key) else {
            return Ok(Vec::new());
        };
        self.prune_unloaded(&key);
        if let Err(e) = self.store(&map) {
            map.insert(key, slot);
            return Err(e);
        }
        let removed: Vec<Arc<Live>> = std::iter::once(slot.serving).chain(slot.next).collect();
        for live in &removed {
            live.stop.cancel();
        }
        Ok(removed)
    }

    /// The serving projection of the name.
    pub fn get(&self, tenant: &TenantId, name: &ProjectionName) -> Option<Arc<Live>> {
        self.live
            .lock()
            .get(&(tenant.clone(), name.clone()))
            .map(|s| s.serving.clone())
    }

    /// The next version of the name, while it builds.
    pub fn next(&self, tenant: &TenantId, name: &ProjectionName) -> Option<Arc<Live>> {
        self.live
            .lock()
            .get(&(tenant.clone(), name.clone()))
            .and_then(|s| s.next.clone())
    }

    /// Whether `live` is in the registry (serving or next).
    pub fn contains(&self, live: &Arc<Live>) -> bool {
        self.live
            .lock()
            .get(&(live.tenant.clone(), live.name.clone()))
            .is_some_and(|s| {
                Arc::ptr_eq(&s.serving, live)
                    || s.next.as_ref().is_some_and(|n| Arc::ptr_eq(n, live))
            })
    }

    /// Whether `live` is the next version of its name.
    pub fn is_next(&self, live: &Arc<Live>) -> bool {
        self.next(&live.tenant, &live.name)
            .is_some_and(|n| Arc::ptr_eq(&n, live))
    }

    /// The tenant's serving projections, by name.
    pub fn of_tenant(&self, tenant: &TenantId) -> Vec<Arc<Live>> {
        self.live
            .lock()
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, s)| s.serving.clone())
            .collect()
    }

    /// The estimated bytes of the tenant's projections' states together,
    /// next versions included.
    pub fn tenant_state_bytes(&self, tenant: &TenantId) -> usize {
        self.live
            .lock()
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .flat_map(|(_, s)| std::iter::once(&s.serving).chain(&s.next))
            .map(|l| l.state_bytes())
            .sum()
    }

    /// Every serving projection.
    pub fn all(&self) -> Vec<Arc<Live>> {
        self.live
            .lock()
            .values()
            .map(|s| s.serving.clone())
            .collect()
    }

    /// Every projection, next versions included.
    pub fn all_with_next(&self) -> Vec<Arc<Live>> {
        self.live
            .lock()
            .values()
            .flat_map(|s| std::iter::once(s.serving.clone()).chain(s.next.clone()))
            .collect()
    }

    /// Writes the list: a temporary file, fsynced, renamed over the old
    /// one, and the directory fsynced.
    fn store(&self, map: &BTreeMap<Key, Slot>) -> std::io::Result<()> {
        let stored_of = |l: &Live, role| Stored {
            tenant: l.tenant.to_string(),
            spec: l.spec.clone(),
            role,
        };
        let mut stored: Vec<Stored> = Vec::new();
        for slot in map.values() {
            stored.push(stored_of(&slot.serving, Role::Serving));
            if let Some(next) = &slot.next {
                stored.push(stored_of(next, Role::Next));
            }
        }
        stored.extend(self.unloaded.lock().iter().map(|(t, spec, role)| Stored {
            tenant: t.to_string(),
            spec: spec.clone(),
            role: *role,
        }));
        crate::db::groups::write_durably(
            &self.path,
            &serde_json::to_vec_pretty(&stored).map_err(std::io::Error::other)?,
        )
    }
}
