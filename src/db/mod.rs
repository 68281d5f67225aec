//! The database: tables, the WAL, the buffer and the flusher, tied together.
//!
//! Write path: [`Database::ingest`] claims the events' ids (dedup), builds
//! one Arrow batch, and appends it to the WAL. After the fsync the WAL
//! writer puts the batch into the table's buffer (in WAL order) and the
//! client is answered. The flusher writes a table's buffered batches to its
//! Delta table in one commit that also records the last WAL sequence it
//! holds; only then are the batches dropped from the buffer — in the same
//! critical section that installs the new Delta snapshot, so a query sees
//! each event exactly once — and WAL segments below every table's buffer
//! deleted.
//!
//! Start-up replays WAL records newer than each table's recorded sequence.

mod background;
mod backup;
mod claims;
pub mod groups;
pub mod maintenance;
pub mod policies;
pub mod schemas;
pub mod sequence;
mod served;
pub mod spill;
mod table;
mod write;

pub use background::Background;
pub use backup::BackupReport;
pub use table::Table;
pub use write::PendingIngest;

use crate::background::Clock;
use crate::config::Config;
use crate::dedup::DedupIndex;
use crate::ids::{InvalidName, TableName, TenantId, WalSeq};
use crate::ingest;
use crate::schema::ColumnKind;
use crate::storage::{self, Storage};
use crate::wal::{self, Wal, WalConfig};
use arrow::array::RecordBatch;
use bytes::Bytes;
use datafusion::datasource::TableProvider;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Errors of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Ingest(#[from] ingest::Error),
    #[error(transparent)]
    Name(#[from] InvalidName),
    #[error(
        "the ingest buffer is full ({buffered} bytes waiting to be written to storage); retry shortly"
    )]
    BufferFull { buffered: usize },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Conflict(sequence::Conflict),
    /// Events broke their table's rules; nothing was stored.
    #[error("{}", .0.summary())]
    Rejected(Box<crate::schema::governed::Violations>),
    #[error("{0}")]
    VersionUnavailable(String),
    #[error(transparent)]
    Wal(#[from] wal::Error),
    #[error(transparent)]
    Storage(Box<storage::Error>),
    #[error("query engine error: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What an ingest request stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Events newly stored.
    pub accepted: usize,
    /// Events whose `event_id` was already stored (client retries).
    pub duplicates: usize,
    /// Per event of the request, in order: its position and version (for
    /// a retry, those of the stored original). `None` for a retry of an
    /// event stored before positions existed.
    pub stamps: Vec<Option<crate::dedup::Stamp>>,
    /// The `warn` rules the stored events broke.
    pub warnings: Option<crate::schema::governed::Violations>,
}

impl IngestOutcome {
    /// The lowest and highest position among the request's events.
    pub fn positions(&self) -> Option<(u64, u64)> {
        let mut p = self.stamps.iter().flatten().map(|(p, _)| *p);
        let first = p.next()?;
        Some(p.fold((first, first), |(lo, hi), x| (lo.min(x), hi.max(x))))
    }
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The database of one server process.
#[derive(Debug)]
pub struct Database {
    config: Config,
    wal: Wal,
    storage: Storage,
    tables: parking_lot::RwLock<BTreeMap<(TenantId, TableName), Arc<Table>>>,
    /// Bytes held by all buffers together, for back-pressure.
    buffered_bytes: Arc<AtomicUsize>,
    /// Wakes the flusher when a buffer passes its size threshold.
    flush_wanted: Arc<tokio::sync::Notify>,
    /// Cleared at shutdown so no ingest starts after the final flush.
    accepting: AtomicBool,
    /// Past maintenance runs.
    history: maintenance::History,
    /// Per-table maintenance settings.
    settings: maintenance::SettingsStore,
    /// Durable subscriptions and their progress.
    groups: groups::GroupStore,
    /// What the background loops wait on and maintenance dates data by.
    clock: Arc<dyn Clock>,
    /// The memory and spill space compaction's sorts run in.
    rewriter: maintenance::Rewriter,
    /// Tables' schemas and rules, as stored.
    schemas: schemas::SchemaStore,
    /// The compiled rules of governed tables, run on every batch built
    /// for them.
    checks: schemas::Checks,
    /// Each tenant's policies, as stored.
    policies: policies::PolicyStore,
    /// Beside other writers: held by the run that holds the store's
    /// maintenance lease, so that one run's release cannot end the lease
    /// under another run of this writer.
    leased_runs: tokio::sync::Mutex<()>,
}

impl Database {
    /// Opens the database: finds the stored tables, replays the WAL.
    pub async fn open(config: Config) -> Result<Arc<Self>> {
        Self::open_with_clock(config, Arc::new(crate::background::SystemClock::default())).await
    }

    /// [`Database::open`] with the clock its background work runs on.
    pub async fn open_with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Arc<Self>> {
        let history = maintenance::History::load(&config.data_dir.join("maintenance.jsonl"));
        let settings =
            maintenance::SettingsStore::load(config.data_dir.join("table-settings.json"));
        let groups = groups::GroupStore::load(config.data_dir.join(crate::ids::SUBSCRIPTIONS_DIR))
            .map_err(|e| Error::Internal(format!("cannot load subscriptions: {e}")))?;
        let schemas = schemas::SchemaStore::load(config.data_dir.join(crate::ids::SCHEMAS_DIR))
            .map_err(|e| Error::Internal(format!("cannot load table schemas: {e}")))?;
        let policies = policies::PolicyStore::load(config.data_dir.join(crate::ids::POLICIES_DIR))
            .map_err(|e| Error::Internal(format!("cannot load policies: {e}")))?;
        let storage = Storage::new(&config)?;
        let rewriter = maintenance::Rewriter::new(&config)?;
        let mut tables = BTreeMap::new();
        for (tenant, name) in storage.list_tables().await? {
            let table = open_table(&storage, &config, &clock, &tenant, &name).await?;
            tables.insert((tenant, name), Arc::new(table));
        }
        // New WAL records must sort after everything already in Delta.
        let floor = tables
            .values()
            .map(|t| WalSeq(t.persisted_seq().0 + 1))
            .max()
            .unwrap_or(WalSeq(1));
        let (wal, records) = Wal::open(
            WalConfig {
                dir: config.wal_dir(),
                segment_bytes: config.wal_segment_bytes,
            },
            floor,
        )?;
        let db = Arc::new(Database {
            config,
            wal,
            storage,
            tables: parking_lot::RwLock::new(tables),
            buffered_bytes: Arc::new(AtomicUsize::new(0)),
            flush_wanted: Arc::new(tokio::sync::Notify::new()),
            accepting: AtomicBool::new(true),
            history,
            settings,
            groups,
            clock,
            rewriter,
            schemas,
            checks: Default::default(),
            policies,
            leased_runs: tokio::sync::Mutex::new(()),
        });
        let mut replayed = 0usize;
        for rec in records {
            let table = match db.table(&rec.tenant, &rec.table) {
                Some(t) => t,
                None => db.load_table(&rec.tenant, &rec.table).await?,
            };
            if rec.seq <= table.persisted_seq() {
                continue;
            }
            // A WAL written without a node id, whose records that server
            // already flushed, would be stored a second time.
            if db.config.node_id.is_some() && table.persisted_seq() == WalSeq(0) {
                let label = table.label();
                let sole = db.storage.sole_writer_seq(&table.delta(), &label).await?;
                if rec.seq <= sole {
                    return Err(Error::Internal(format!(
                        "the WAL in {} holds records of table {label} that a server without --node-id already stored; start it once without --node-id (it flushes and empties the WAL on a clean stop), then with it",
                        db.config.wal_dir().display()
                    )));
                }
            }
            let batch = decode_ipc(&rec.data).map_err(|e| {
                Error::Internal(format!("WAL record {} does not decode: {e}", rec.seq))
            })?;
            {
                let mut reg = table.registry.lock();
                // By name: a record written before a fixed column existed
                // has fewer of them.
                for field in batch
                    .schema()
                    .fields()
                    .iter()
                    .filter(|f| !crate::schema::FIXED_COLUMNS.contains(&f.name().as_str()))
                {
                    let ok = ColumnKind::from_data_type(field.data_type())
                        .is_some_and(|kind| reg.adopt(field.name(), kind));
                    // Beside other writers, the store may have given the
                    // name another type since: the flush moves these
                    // values to `_overflow`.
                    let shared = db.config.node_id.is_some();
                    if !ok && !shared {
                        return Err(Error::Internal(format!(
                            "WAL record {} has column {:?} of type {} that conflicts with table {}.{}",
                            rec.seq,
                            field.name(),
                            field.data_type(),
                            rec.tenant,
                            rec.table
                        )));
                    }
                }
            }
            table.sequencer.lock().observe(&batch);
            replayed += batch.num_rows();
            // The decoded arrays share the record's buffer: it is what the
            // batch holds.
            table.push(rec.seq, batch, rec.data.len(), &db.buffered_bytes);
        }
        if replayed > 0 {
            tracing::info!(events = replayed, "replayed events from the WAL");
        }
        for (tenant, name, gov) in db.schemas.all() {
            db.govern_table(&tenant, &name, &gov)
                .await
                .map_err(|e| Error::Internal(format!("table {tenant}.{name}: {e}")))?;
        }
        let tables: Vec<_> = db.tables.read().values().cloned().collect();
        for t in tables {
            t.restore_dedup(db.config.dedup_window, db.config.dedup_capacity)
                .await?;
        }
        Ok(db)
    }

    pub(crate) async fn load_table(
        &self,
        tenant: &TenantId,
        name: &TableName,
    ) -> Result<Arc<Table>> {
        let table =
            Arc::new(open_table(&self.storage, &self.config, &self.clock, tenant, name).await?);
        // Two requests may create the same new table at once: the first
        // one in wins, the other's handle is dropped before it holds data.
        Ok(self
            .tables
            .write()
            .entry((tenant.clone(), name.clone()))
            .or_insert(table)
            .clone())
    }

    /// The table, if it exists.
    pub fn table(&self, tenant: &TenantId, name: &TableName) -> Option<Arc<Table>> {
        self.tables
            .read()
            .get(&(tenant.clone(), name.clone()))
            .cloned()
    }

    /// Names of the tenant's tables.
    pub fn table_names(&self, tenant: &TenantId) -> Vec<String> {
        self.tables
            .read()
            .keys()
            .filter(|(t, _)| t == tenant)
            .map(|(_, n)| n.to_string())
            .collect()
    }

    /// False once the WAL has failed: the server can no longer accept writes.
    pub fn is_healthy(&self) -> bool {
        !self.wal.is_poisoned()
    }

    /// Bytes currently buffered across all tables.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes.load(Ordering::Relaxed)
    }

    /// The table as a reader sees it now: what is stored and what is
    /// buffered, taken together so that each event is in exactly one.
    pub fn view(&self, table: &Table) -> TableView {
        self.view_after(table, None)
    }

    /// [`Database::view`] for a query that reads only rows after
    /// position `after`: the buffered batches wholly at or below it are
    /// left out (the buffer is in position order, so they are found by
    /// bisection; a batch without positions holds no row such a query
    /// reads either).
    pub fn view_after(&self, table: &Table, after: Option<u64>) -> TableView {
        let state = table.state.read();
        let from = after.map_or(0, |after| {
            state.buffer.partition_point(|b| {
                sequence::last_position(&b.batch).is_some_and(|last| last <= after)
            })
        });
        TableView {
            schema: table.registry.lock().schema(),
            stored: state.provider.clone(),
            buffered: state.buffer[from..]
                .iter()
                .map(|b| b.batch.clone())
                .collect(),
            delta_version: Table::delta_version(&state),
            position: Table::visible_position(&state),
            stored_position: state.stored_position,
            positions_end: table.positions_end(),
            entities: Table::readable_entities(&state),
        }
    }

    /// The table as it was stored at Delta `version` (no buffered rows):
    /// refused when the table has no such version, or when vacuum has
    /// removed a file the version needs.
    pub async fn view_at_version(&self, table: &Table, version: u64) -> Result<TableView> {
        let label = table.label();
        let Some(old) = self
            .storage
            .at_version(&table.delta(), &label, version)
            .await?
        else {
            let latest = table.delta().version();
            return Err(Error::VersionUnavailable(format!(
                "table {:?} has no version {version} (its versions are 0 to {})",
                table.name.as_str(),
                latest.map_or("-".to_string(), |v| v.to_string())
            )));
        };
        let files = crate::storage::scan::DeltaFiles::try_new(&old)?.ok_or_else(|| {
            Error::VersionUnavailable(format!(
                "version {version} of table {:?} uses Delta features this reader does not read",
                table.name.as_str()
            ))
        })?;
        if let Some(missing) = files.first_missing_file().await? {
            return Err(Error::VersionUnavailable(format!(
                "version {version} of table {:?} can no longer be read: vacuum removed its file {missing} (old versions stay readable for the vacuum retention window, --vacuum-retention)",
                table.name.as_str()
            )));
        }
        let position = self.storage.persisted_position(&old, &label).await?;
        Ok(TableView {
            schema: table.registry.lock().schema(),
            stored: Some(Arc::new(files)),
            buffered: Vec::new(),
            delta_version: Some(version),
            position: (position > 0).then_some(position),
            stored_position: (position > 0).then_some(position),
            positions_end: table.positions_end(),
            entities: None,
        })
    }

    /// Durable subscriptions (consumer groups).
    pub fn groups(&self) -> &groups::GroupStore {
        &self.groups
    }

    /// Where the tables (and snapshots) are stored.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The settings the server runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Bytes compaction's sorts hold now.
    pub fn compaction_memory_in_use(&self) -> usize {
        self.rewriter.memory_in_use()
    }

    /// About how much memory the tables' entity version indexes take.
    pub fn entity_index_bytes(&self) -> usize {
        self.tables
            .read()
            .values()
            .map(|t| t.sequencer.lock().memory_bytes())
            .sum()
    }

    /// Rows held by all buffers together.
    pub fn buffered_rows(&self) -> usize {
        self.tables.read().values().map(|t| t.buffered_rows()).sum()
    }

    /// Writes one table's buffer to Delta. Returns the rows written.
    pub async fn flush_table(&self, table: &Arc<Table>) -> Result<usize> {
        let started = std::time::Instant::now();
        let result = table.flush(&self.storage, &self.buffered_bytes).await;
        let m = crate::metrics::get();
        match &result {
            Ok(0) => {}
            Ok(_) => {
                m.flushes.with_label_values(&["ok"]).inc();
                m.flush_seconds
                    .with_label_values(&[] as &[&str])
                    .observe(started.elapsed().as_secs_f64());
            }
            Err(_) => m.flushes.with_label_values(&["error"]).inc(),
        }
        result
    }

    /// Flushes every table, then deletes WAL segments no longer needed.
    pub async fn flush_all(&self) -> Result<usize> {
        let tables: Vec<_> = self.tables.read().values().cloned().collect();
        let mut rows = 0;
        let mut first_err = None;
        for t in tables {
            match self.flush_table(&t).await {
                Ok(n) => rows += n,
                Err(e) => {
                    tracing::error!(table = %t.label(), error = %e, "flush failed");
                    first_err.get_or_insert(e);
                }
            }
        }
        self.truncate_wal().await?;
        match first_err {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    async fn truncate_wal(&self) -> Result<()> {
        // Read the WAL position before looking at buffers: every record
        // below it has been applied, so it is either buffered (and seen
        // below) or already persisted.
        let mut keep_from = self.wal.next_seq();
        for t in self.tables.read().values() {
            if let Some(first) = t.first_buffered_seq() {
                keep_from = keep_from.min(first);
            }
        }
        let removed = self.wal.truncate(keep_from).await?;
        if removed > 0 {
            tracing::debug!(segments = removed, %keep_from, "deleted WAL segments");
        }
        Ok(())
    }

    /// Stops accepting ingest and writes every buffer to storage.
    pub async fn shutdown(&self) -> Result<()> {
        self.accepting.store(false, Ordering::Release);
        self.flush_all().await.map(|_| ())
    }
}

/// One table at one moment, for readers.
#[derive(Debug)]
pub struct TableView {
    /// The stored schema: fixed columns, then every payload column known.
    pub schema: arrow::datatypes::SchemaRef,
    /// What is in storage (`None` before the first flush).
    pub stored: Option<Arc<dyn TableProvider>>,
    /// Buffered batches not yet in storage, each in the shape it was
    /// ingested with.
    pub buffered: Vec<RecordBatch>,
    /// The Delta version `stored` reads.
    pub delta_version: Option<u64>,
    /// The highest position among the rows seen.
    pub position: Option<u64>,
    /// No row in `stored` has a higher position than this, below
    /// `positions_end` (`None`: not known).
    pub stored_position: Option<u64>,
    /// Where this writer's positions end (exclusive): beside other
    /// writers, stored rows above it are theirs. `u64::MAX` for the only
    /// writer.
    pub positions_end: u64,
    /// The entity copy to read one entity's stored events from, with
    /// `stored` for the positions above what it covers (`None`: read
    /// them all from `stored`).
    pub entities: Option<Arc<crate::storage::entities::EntityCopy>>,
}

impl TableView {
    /// The view without its buffered rows: what is stored, and the
    /// highest position of that.
    pub fn stored_only(self) -> TableView {
        TableView {
            buffered: Vec::new(),
            position: self.stored_position.filter(|_| self.stored.is_some()),
            ..self
        }
    }
}

/// Opens (or prepares, if new) one table from storage.
async fn open_table(
    storage: &Storage,
    config: &Config,
    clock: &Arc<dyn Clock>,
    tenant: &TenantId,
    name: &TableName,
) -> Result<Table> {
    let delta = storage.open(tenant, name).await?;
    let label = format!("{tenant}.{name}");
    let persisted = storage.persisted_seq(&delta, &label).await?;
    let served =
        served::ServedFiles::new(clock.clone(), config.effective_vacuum_retention(), &delta);
    let table = Table::new(
        tenant.clone(),
        name.clone(),
        config.node_id,
        served,
        delta,
        persisted,
        DedupIndex::new(
            config.dedup_window.as_micros() as i64,
            config.dedup_capacity,
        ),
    )
    .await?;
    table.restore_sequencer(storage).await?;
    // A copy that cannot be read now is rebuilt by the next maintenance
    // run; the table is read without it until then.
    if config.entity_copy
        && let Err(e) = table.load_entities(storage).await
    {
        tracing::warn!(table = %table.label(), error = %e, "the entity copy is not read");
    }
    Ok(table)
}

/// Encodes a batch as an Arrow IPC stream (the WAL's record payload).
pub fn encode_ipc(batch: &RecordBatch) -> Result<Bytes, arrow::error::ArrowError> {
    // Sized up front: growing the buffer would copy it, and fault in fresh
    // pages, several times per batch.
    let capacity = batch.get_array_memory_size() + 4096;
    let mut w =
        arrow::ipc::writer::StreamWriter::try_new(Vec::with_capacity(capacity), &batch.schema())?;
    w.write(batch)?;
    w.finish()?;
    Ok(Bytes::from(w.into_inner()?))
}

/// Decodes a WAL record's batch.
pub fn decode_ipc(data: &Bytes) -> Result<RecordBatch, arrow::error::ArrowError> {
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(data), None)?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    arrow::compute::concat_batches(&schema, &batches)
}

impl From<storage::Error> for Error {
    fn from(e: storage::Error) -> Self {
        Error::Storage(Box::new(e))
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Error::Ingest(ingest::Error::Arrow(e))
    }
}
