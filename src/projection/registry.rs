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
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::Result;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What defines a projection, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub name: String,
    pub version: u32,
    /// The SQL query.
    pub query: String,
    /// When it was created, in milliseconds since the epoch.
    pub created_ms: i64,
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
    /// Cancelled when the projection is deleted or the server stops.
    pub stop: tokio_util::sync::CancellationToken,
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
            state: RwLock::new(state),
            position: AtomicU64::new(restored_position),
            snapshot_position: AtomicU64::new(restored_position),
            restored_position,
            health: Mutex::new(Health::Running),
            stop: Default::default(),
        })
    }

    /// The query taken apart.
    pub fn definition(&self) -> &Definition {
        &self.definition
    }

    /// Folds `batches` (the table's next events, in position order) and
    /// moves the position to `upto`.
    pub fn fold(&self, batches: &[RecordBatch], upto: u64) -> Result<()> {
        let mut state = self.state.write();
        for batch in batches {
            let batch = crate::schema::adapt_batch(batch, &self.input)?;
            state.fold(&batch)?;
        }
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
    pub fn snapshot(&self) -> Result<Option<(RecordBatch, u64)>> {
        let state = self.state.read();
        let position = self.position();
        if position <= self.snapshot_position() {
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

    /// The name of the projection's snapshot: its name and creation time,
    /// so that a projection deleted and defined again never loads the
    /// state of the one before.
    pub fn snapshot_name(&self) -> String {
        snapshot_name(&self.spec)
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
        *self.health.lock() = Health::Failed(error);
        self.stop.cancel();
    }
}

/// The name of the snapshot of the projection `spec` defines.
pub fn snapshot_name(spec: &Spec) -> String {
    format!("{}.{}", spec.name, spec.created_ms)
}

/// Why a projection could not be added.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("projection {0:?} exists; delete it first, or give the new one another name")]
    Exists(String),
    #[error("tenant {tenant:?} has {cap} projections, the most it may (--max-projections)")]
    Full { tenant: String, cap: usize },
    #[error("could not store the list of projections: {0}")]
    Io(#[from] std::io::Error),
}

/// Every projection of the server.
#[derive(Debug)]
pub struct Registry {
    path: PathBuf,
    live: Mutex<BTreeMap<(TenantId, ProjectionName), Arc<Live>>>,
    /// Stored projections that could not be defined again at start-up
    /// (kept in the list, so that a passing failure loses none).
    unloaded: Mutex<Vec<(TenantId, Spec)>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    tenant: String,
    #[serde(flatten)]
    spec: Spec,
}

impl Registry {
    /// An empty registry storing its list in `path`, and the specs an
    /// earlier process stored there.
    pub fn open(path: PathBuf) -> std::io::Result<(Registry, Vec<(TenantId, Spec)>)> {
        let specs = match std::fs::read(&path) {
            Ok(bytes) => {
                let stored: Vec<Stored> = serde_json::from_slice(&bytes)
                    .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
                stored
                    .into_iter()
                    .filter_map(|s| Some((s.tenant.parse().ok()?, s.spec)))
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
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
        map.insert(key.clone(), live);
        if let Err(e) = self.store(&map) {
            map.remove(&key);
            return Err(e.into());
        }
        Ok(())
    }

    /// Adds `live` as stored by an earlier process (no cap, no store).
    pub fn restore(&self, live: Arc<Live>) {
        self.live
            .lock()
            .insert((live.tenant.clone(), live.name.clone()), live);
    }

    /// Keeps a stored projection that could not be defined again in the
    /// list, so that it is not lost when the list is next written.
    pub fn keep_unloaded(&self, tenant: TenantId, spec: Spec) {
        self.unloaded.lock().push((tenant, spec));
    }

    /// Removes a projection and stores the list; `None` if there is none.
    pub fn remove(
        &self,
        tenant: &TenantId,
        name: &ProjectionName,
    ) -> std::io::Result<Option<Arc<Live>>> {
        let mut map = self.live.lock();
        let Some(live) = map.remove(&(tenant.clone(), name.clone())) else {
            return Ok(None);
        };
        if let Err(e) = self.store(&map) {
            map.insert((tenant.clone(), name.clone()), live);
            return Err(e);
        }
        live.stop.cancel();
        Ok(Some(live))
    }

    pub fn get(&self, tenant: &TenantId, name: &ProjectionName) -> Option<Arc<Live>> {
        self.live
            .lock()
            .get(&(tenant.clone(), name.clone()))
            .cloned()
    }

    /// The tenant's projections, by name.
    pub fn of_tenant(&self, tenant: &TenantId) -> Vec<Arc<Live>> {
        self.live
            .lock()
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Every projection.
    pub fn all(&self) -> Vec<Arc<Live>> {
        self.live.lock().values().cloned().collect()
    }

    /// Writes the list: a temporary file, fsynced, renamed over the old
    /// one, and the directory fsynced.
    fn store(&self, map: &BTreeMap<(TenantId, ProjectionName), Arc<Live>>) -> std::io::Result<()> {
        let mut stored: Vec<Stored> = map
            .values()
            .map(|l| Stored {
                tenant: l.tenant.to_string(),
                spec: l.spec.clone(),
            })
            .collect();
        stored.extend(self.unloaded.lock().iter().map(|(t, spec)| Stored {
            tenant: t.to_string(),
            spec: spec.clone(),
        }));
        crate::db::groups::write_durably(
            &self.path,
            &serde_json::to_vec_pretty(&stored).map_err(std::io::Error::other)?,
        )
    }
}

/// The name of the schema projections are tables of.
pub const SCHEMA: &str = "projections";

/// The `projections` schema of every tenant's sessions, and
/// `system.projections`.
#[derive(Debug)]
pub struct SqlSchema {
    pub registry: Arc<Registry>,
    /// For the tables' highest positions (the lag).
    pub db: Arc<crate::db::Database>,
}

impl crate::query::ExtraSchema for SqlSchema {
    fn name(&self) -> &str {
        SCHEMA
    }

    fn system_table_name(&self) -> &str {
        "projections"
    }

    fn system_table(&self, tenant: &TenantId) -> Result<Arc<dyn TableProvider>> {
        use arrow::array::{ArrayRef, StringArray, TimestampMillisecondArray, UInt64Array};
        use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
        let live = self.registry.of_tenant(tenant);
        let lag = |l: &Live| {
            self.db
                .table(&l.tenant, &l.table)
                .map_or(0, |t| t.highest_position().saturating_sub(l.position()))
        };
        let sizes: Vec<(usize, usize)> = live.iter().map(|l| l.size()).collect();
        let health: Vec<Health> = live.iter().map(|l| l.health()).collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("version", DataType::UInt64, false),
            Field::new("table_name", DataType::Utf8, false),
            Field::new("query", DataType::Utf8, false),
            Field::new("position", DataType::UInt64, false),
            Field::new("lag_positions", DataType::UInt64, false),
            Field::new("rows", DataType::UInt64, false),
            Field::new("state_bytes", DataType::UInt64, false),
            Field::new("snapshot_position", DataType::UInt64, false),
            Field::new("status", DataType::Utf8, false),
            Field::new("error", DataType::Utf8, true),
            Field::new(
                "created",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                live.iter().map(|l| l.name.as_str()),
            )),
            Arc::new(UInt64Array::from_iter_values(
                live.iter().map(|l| u64::from(l.spec.version)),
            )),
            Arc::new(StringArray::from_iter_values(
                live.iter().map(|l| l.table.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                live.iter().map(|l| l.spec.query.as_str()),
            )),
            Arc::new(UInt64Array::from_iter_values(
                live.iter().map(|l| l.position()),
            )),
            Arc::new(UInt64Array::from_iter_values(live.iter().map(|l| lag(l)))),
            Arc::new(UInt64Array::from_iter_values(
                sizes.iter().map(|s| s.0 as u64),
            )),
            Arc::new(UInt64Array::from_iter_values(
                sizes.iter().map(|s| s.1 as u64),
            )),
            Arc::new(UInt64Array::from_iter_values(
                live.iter().map(|l| l.snapshot_position()),
            )),
            Arc::new(StringArray::from_iter_values(health.iter().map(
                |h| match h {
                    Health::Running => "running",
                    Health::Failed(_) => "failed",
                },
            ))),
            Arc::new(StringArray::from_iter(health.iter().map(|h| match h {
                Health::Running => None,
                Health::Failed(e) => Some(e.as_str()),
            }))),
            Arc::new(
                TimestampMillisecondArray::from_iter_values(live.iter().map(|l| l.spec.created_ms))
                    .with_timezone("UTC"),
            ),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }

    fn for_tenant(&self, tenant: &TenantId) -> Arc<dyn SchemaProvider> {
        Arc::new(TenantProjections {
            registry: self.registry.clone(),
            tenant: tenant.clone(),
        })
    }
}

/// One tenant's projections as tables: each read is the state when the
/// query is planned.
#[derive(Debug)]
struct TenantProjections {
    registry: Arc<Registry>,
    tenant: TenantId,
}

#[async_trait]
impl SchemaProvider for TenantProjections {
    fn table_names(&self) -> Vec<String> {
        self.registry
            .of_tenant(&self.tenant)
            .iter()
            .map(|l| l.name.to_string())
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Ok(name) = name.parse::<ProjectionName>() else {
            return Ok(None);
        };
        let Some(live) = self.registry.get(&self.tenant, &name) else {
            return Ok(None);
        };
        let batch = live.read()?;
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        Ok(Some(Arc::new(table)))
    }

    fn table_exist(&self, name: &str) -> bool {
        name.parse::<ProjectionName>()
            .is_ok_and(|n| self.registry.get(&self.tenant, &n).is_some())
    }
}
