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

mod claims;
pub mod maintenance;
mod table;

pub use table::Table;

use crate::auth::Principal;
use crate::config::Config;
use crate::dedup::DedupIndex;
use crate::ids::{InvalidName, TableName, TenantId, WalSeq};
use crate::ingest::{self, Event};
use crate::query::table::EventTable;
use crate::schema::{ColumnKind, ColumnRegistry, query_schema};
use crate::storage::{self, Storage};
use crate::wal::{self, Wal, WalConfig};
use arrow::array::{AsArray, RecordBatch};
use bytes::Bytes;
use claims::Claims;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::SessionContext;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Events newly stored.
    pub accepted: usize,
    /// Events whose `event_id` was already stored (client retries).
    pub duplicates: usize,
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
    /// Memory, time and concurrency limits of queries.
    limits: crate::query::limits::QueryLimits,
    /// What every query's runtime shares: spill files and caches (each
    /// query gets its own memory pool on top).
    query_env: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
    /// Worker threads that execute queries.
    query_threads: crate::query::limits::QueryRuntime,
    /// Bounds how fast failures are written to the audit log.
    pub(crate) audit_limiter: crate::audit::AuditLimiter,
}

impl Database {
    /// Opens the database: finds the stored tables, replays the WAL.
    pub async fn open(config: Config) -> Result<Arc<Self>> {
        let history = maintenance::History::load(&config.data_dir.join("maintenance.jsonl"));
        let settings =
            maintenance::SettingsStore::load(config.data_dir.join("table-settings.json"));
        let storage = Storage::new(&config)?;
        let limits = crate::query::limits::QueryLimits::new(crate::query::limits::LimitSettings {
            query_memory: config.query_memory_limit,
            total_memory: config.memory_limit.max(config.query_memory_limit),
            timeout: config.query_timeout,
            concurrent_per_tenant: config.max_concurrent_queries.max(1),
            sql: crate::query::bounds::SqlLimits {
                max_bytes: config.max_query_bytes,
            },
        });
        let query_env = query_env(&config)?;
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let query_threads = crate::query::limits::QueryRuntime::new(threads)
            .map_err(|e| Error::Internal(format!("cannot start the query threads: {e}")))?;
        let mut tables = BTreeMap::new();
        for (tenant, name) in storage.list_tables().await? {
            let table = open_table(&storage, &config, &tenant, &name).await?;
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
            limits,
            query_env,
            audit_limiter: Default::default(),
            query_threads,
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
            let batch = decode_ipc(&rec.data).map_err(|e| {
                Error::Internal(format!("WAL record {} does not decode: {e}", rec.seq))
            })?;
            {
                let mut reg = table.registry.lock();
                for field in batch
                    .schema()
                    .fields()
                    .iter()
                    .skip(crate::schema::FIXED_COLUMNS.len())
                {
                    let ok = ColumnKind::from_data_type(field.data_type())
                        .is_some_and(|kind| reg.adopt(field.name(), kind));
                    if !ok {
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
            replayed += batch.num_rows();
            // The decoded arrays share the record's buffer: it is what the
            // batch holds.
            table.push(rec.seq, batch, rec.data.len(), &db.buffered_bytes);
        }
        if replayed > 0 {
            tracing::info!(events = replayed, "replayed events from the WAL");
        }
        let tables: Vec<_> = db.tables.read().values().cloned().collect();
        for t in tables {
            t.restore_dedup(db.config.dedup_window, db.config.dedup_capacity)
                .await?;
        }
        Ok(db)
    }

    async fn load_table(&self, tenant: &TenantId, name: &TableName) -> Result<Arc<Table>> {
        let table = Arc::new(open_table(&self.storage, &self.config, tenant, name).await?);
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

    /// Stores `events` in `tenant`'s table `name` (created on first use).
    /// Returns once they are durable in the WAL and visible to queries.
    pub async fn ingest(
        &self,
        tenant: &TenantId,
        name: &TableName,
        events: Vec<Event>,
    ) -> Result<IngestOutcome> {
        self.ingest_with(tenant, name, events, true).await
    }

    /// The table an ingest may start on (created on first use): refused
    /// while shutting down and, when `bounded`, while the buffers are full.
    async fn admit(
        &self,
        tenant: &TenantId,
        name: &TableName,
        bounded: bool,
    ) -> Result<Arc<Table>> {
        if !self.accepting.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        let buffered = self.buffered_bytes();
        if bounded && buffered >= self.config.max_buffer_bytes {
            self.flush_wanted.notify_one();
            return Err(Error::BufferFull { buffered });
        }
        match self.table(tenant, name) {
            Some(t) => Ok(t),
            None => self.load_table(tenant, name).await,
        }
    }

    async fn ingest_with(
        &self,
        tenant: &TenantId,
        name: &TableName,
        events: Vec<Event>,
        bounded: bool,
    ) -> Result<IngestOutcome> {
        let table = self.admit(tenant, name, bounded).await?;
        let now = now_micros();
        let given: Vec<Option<&str>> = events.iter().map(|e| e.event_id.as_deref()).collect();
        let (claims, keep) = Claims::take(&table, &given, now).await;
        let mut fresh = crate::ids::EventIds::new();
        let ids = events
            .iter()
            .map(|e| match &e.event_id {
                Some(id) => id.clone(),
                None => fresh.next_id().to_string(),
            })
            .collect();
        let accepted = keep.iter().filter(|k| **k).count();
        let outcome = IngestOutcome {
            accepted,
            duplicates: events.len() - accepted,
        };
        if accepted == 0 {
            return Ok(outcome);
        }
        self.log_batch(&table, events, keep, ids, now, claims)
            .await
            .map(|_| outcome)
    }

    async fn log_batch(
        &self,
        table: &Arc<Table>,
        events: Vec<Event>,
        keep: Vec<bool>,
        ids: Vec<String>,
        now: i64,
        claims: Claims,
    ) -> Result<WalSeq> {
        let t = table.clone();
        let (batch, ipc) = tokio::task::spawn_blocking(move || -> Result<_> {
            let batch = ingest::build_batch(&events, &keep, &ids, &t.registry, now)?;
            let ipc = wal_payload(&batch)?;
            Ok((batch, ipc))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        self.submit(table, batch, ipc, claims).await?.await
    }

    /// Hands a built batch to the WAL writer. The returned future resolves
    /// once it is on disk and in the table's buffer; batches submitted one
    /// after another are logged in that order. `claims` are settled as
    /// stored when the record is durable, and released if it never is.
    async fn submit(
        &self,
        table: &Arc<Table>,
        batch: RecordBatch,
        ipc: Bytes,
        claims: Claims,
    ) -> Result<impl Future<Output = Result<WalSeq>> + use<>> {
        let t = table.clone();
        let counter = self.buffered_bytes.clone();
        let notify = self.flush_wanted.clone();
        let (flush_rows, flush_bytes) = (self.config.flush_rows, self.config.flush_bytes);
        let bytes = batch.get_array_memory_size();
        let logged = self
            .wal
            .submit(
                table.tenant.clone(),
                table.name.clone(),
                ipc,
                Box::new(move |seq| {
                    t.push(seq, batch, bytes, &counter);
                    claims.stored();
                    if t.over_threshold(flush_rows, flush_bytes) {
                        notify.notify_one();
                    }
                }),
            )
            .await?;
        Ok(async move { Ok(logged.await?) })
    }

    /// Starts storing an Arrow batch of events (Flight SQL ingest) in
    /// `tenant`'s table `name`: checks and lays it out (all or nothing),
    /// drops client event ids already stored, and hands it to the WAL.
    /// `first_row` is the batch's position in the upload, for errors.
    /// Await the returned [`PendingIngest`] for the acknowledgement; the
    /// batches of one upload are logged in the order they were started.
    pub async fn start_arrow_ingest(
        &self,
        tenant: &TenantId,
        name: &TableName,
        batch: RecordBatch,
        first_row: u64,
    ) -> Result<PendingIngest> {
        let table = self.admit(tenant, name, true).await?;
        let now = now_micros();
        let t = table.clone();
        let converted = tokio::task::spawn_blocking(move || {
            ingest::from_arrow::convert(&batch, &t.registry, now, first_row)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        let rows = converted.batch.num_rows();
        let (claims, keep) = {
            let ids = converted.batch.column(0).as_string::<i32>();
            let given: Vec<Option<&str>> = match &converted.client_ids {
                Some(client) => client
                    .iter()
                    .enumerate()
                    .map(|(i, given)| given.then(|| ids.value(i)))
                    .collect(),
                None => vec![None; rows],
            };
            Claims::take(&table, &given, now).await
        };
        let batch = converted.batch;
        let (record, outcome) = tokio::task::spawn_blocking(move || -> Result<_> {
            let batch = match keep.iter().all(|k| *k) {
                true => batch,
                false => arrow::compute::filter_record_batch(&batch, &keep.into())?,
            };
            let outcome = IngestOutcome {
                accepted: batch.num_rows(),
                duplicates: rows - batch.num_rows(),
            };
            let record = match outcome.accepted {
                0 => None,
                _ => {
                    let ipc = wal_payload(&batch)?;
                    Some((batch, ipc))
                }
            };
            Ok((record, outcome))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        let logged = match record {
            None => None,
            Some((batch, ipc)) => {
                Some(Box::pin(self.submit(&table, batch, ipc, claims).await?) as _)
            }
        };
        Ok(PendingIngest {
            logged,
            table,
            outcome,
        })
    }

    /// A query session for `caller`: its tenant's tables only, with every
    /// AllSource function registered.
    pub fn session(self: &Arc<Self>, caller: &Principal) -> Result<SessionContext> {
        Ok(crate::query::session(self.clone(), caller)?)
    }

    /// Plans and starts a SQL query for `caller`, under the query limits.
    pub async fn query(
        self: &Arc<Self>,
        caller: &Principal,
        sql: &str,
    ) -> Result<SendableRecordBatchStream, datafusion::error::DataFusionError> {
        let (db, who, text) = (self.clone(), caller.clone(), sql.to_string());
        crate::query::limits::run_limited(
            &self.limits,
            &self.query_threads,
            &caller.tenant,
            async move { crate::query::run_sql(db, &who, &text).await },
        )
        .await
    }

    /// The limits every query runs under.
    pub fn limits(&self) -> &crate::query::limits::QueryLimits {
        &self.limits
    }

    /// The threads queries execute on.
    pub fn query_threads(&self) -> &crate::query::limits::QueryRuntime {
        &self.query_threads
    }

    /// The DataFusion runtime environment queries share (spill files,
    /// caches).
    pub fn query_env(&self) -> &Arc<datafusion::execution::runtime_env::RuntimeEnv> {
        &self.query_env
    }

    /// The table as a query sees it now.
    pub fn snapshot(&self, table: &Table) -> EventTable {
        let state = table.state.read();
        let schema = query_schema(&table.registry.lock().schema());
        EventTable::new(
            schema,
            state.provider.clone(),
            state.buffer.iter().map(|b| b.batch.clone()).collect(),
        )
    }

    /// The settings the server runs with.
    pub fn config(&self) -> &Config {
        &self.config
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

    /// Runs the flusher until `cancel`: flushes tables whose buffers are
    /// large or old enough.
    pub async fn run_flusher(self: Arc<Self>, cancel: CancellationToken) {
        let tick =
            (self.config.flush_age / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(tick) => {}
                _ = self.flush_wanted.notified() => {}
            }
            let tables: Vec<_> = self.tables.read().values().cloned().collect();
            let mut flushed = false;
            for t in tables {
                let due = t.over_threshold(self.config.flush_rows, self.config.flush_bytes)
                    || t.oldest_age()
                        .is_some_and(|age| age >= self.config.flush_age)
                    || (self.buffered_bytes() >= self.config.max_buffer_bytes / 2
                        && t.buffered_bytes() > 0);
                if !due {
                    continue;
                }
                match self.flush_table(&t).await {
                    Ok(_) => flushed = true,
                    Err(e) => {
                        tracing::error!(table = %t.label(), error = %e, "flush failed; will retry")
                    }
                }
            }
            if flushed && let Err(e) = self.truncate_wal().await {
                tracing::error!(error = %e, "WAL truncation failed");
            }
        }
    }

    /// Stops accepting ingest and writes every buffer to storage.
    pub async fn shutdown(&self) -> Result<()> {
        self.accepting.store(false, Ordering::Release);
        self.flush_all().await.map(|_| ())
    }
}

/// What every query's runtime shares. Spill files go to a directory of
/// their own, capped in size: DataFusion's default (the system temp dir,
/// up to 100 GB) could fill the disk the WAL needs.
fn query_env(config: &Config) -> Result<Arc<datafusion::execution::runtime_env::RuntimeEnv>> {
    use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
    let dir = config.spill_dir();
    let io = |e: std::io::Error| {
        Error::Internal(format!(
            "cannot prepare the spill directory {}: {e}",
            dir.display()
        ))
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    // Spill directories left by queries of a process that was killed.
    for entry in std::fs::read_dir(&dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("datafusion-")
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let disk = match config.max_spill_bytes {
        0 => DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        cap => DiskManagerBuilder::default()
            .with_mode(DiskManagerMode::Directories(vec![dir.clone()]))
            .with_max_temp_directory_size(cap),
    };
    datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_disk_manager_builder(disk)
        .build_arc()
        .map_err(|e| Error::Internal(format!("cannot set up the query runtime: {e}")))
}

/// Opens (or prepares, if new) one table from storage.
async fn open_table(
    storage: &Storage,
    config: &Config,
    tenant: &TenantId,
    name: &TableName,
) -> Result<Table> {
    let delta = storage.open(tenant, name).await?;
    let label = format!("{tenant}.{name}");
    let persisted = storage.persisted_seq(&delta, &label).await?;
    let registry = match delta.snapshot() {
        Ok(state) => ColumnRegistry::from_schema(&state.snapshot().arrow_schema()),
        Err(_) => ColumnRegistry::default(),
    };
    Table::new(
        tenant.clone(),
        name.clone(),
        delta,
        persisted,
        registry,
        DedupIndex::new(
            config.dedup_window.as_micros() as i64,
            config.dedup_capacity,
        ),
    )
    .await
}

/// An Arrow ingest handed to the WAL, not yet acknowledged.
pub struct PendingIngest {
    logged: Option<std::pin::Pin<Box<dyn Future<Output = Result<WalSeq>> + Send>>>,
    table: Arc<Table>,
    outcome: IngestOutcome,
}

impl std::fmt::Debug for PendingIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingIngest")
            .field("table", &self.table.label())
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

impl PendingIngest {
    /// Waits until the batch is durable and visible. If logging failed,
    /// its client event ids have been released, so that a retry is not
    /// taken for a duplicate.
    pub async fn acknowledged(self) -> Result<IngestOutcome> {
        match self.logged {
            None => Ok(self.outcome),
            Some(logged) => logged.await.map(|_| self.outcome),
        }
    }
}

/// A batch's WAL record payload, refused when over the record limit.
fn wal_payload(batch: &RecordBatch) -> Result<Bytes> {
    let ipc = encode_ipc(batch)?;
    if ipc.len() > wal::MAX_RECORD_BYTES {
        return Err(Error::Ingest(ingest::Error::TooLarge(format!(
            "the batch encodes to {} bytes; one request may log at most {}",
            ipc.len(),
            wal::MAX_RECORD_BYTES
        ))));
    }
    Ok(ipc)
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
