//! One event table: its Delta handle, its buffer, its column registry and
//! its recent event ids.

use super::Result;
use super::sequence::{self, Sequencer};
use super::served::{Served, ServedFiles};
use crate::dedup::DedupIndex;
use crate::ids::{NodeId, TableName, TenantId, WalSeq};
use crate::schema::{ColumnRegistry, adapt_batch, overflow_misfits};
use crate::storage::Storage;
use crate::storage::entities::EntityCopy;
use crate::storage::entity_filter::EntityFilters;
use crate::storage::scan::DeltaFiles;
use arrow::array::RecordBatch;
use datafusion::datasource::TableProvider;
use deltalake::DeltaTable;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod restore;

/// A batch waiting in the buffer.
#[derive(Debug, Clone)]
pub(crate) struct Buffered {
    pub(crate) seq: WalSeq,
    pub(crate) batch: RecordBatch,
    bytes: usize,
    arrived: Instant,
}

/// What a query snapshot takes, swapped as one under the lock.
#[derive(Debug)]
pub(crate) struct TableState {
    /// The Delta handle at the version the provider reads.
    delta: DeltaTable,
    /// Provider over `delta`'s snapshot; `None` while the table has no
    /// commit yet.
    pub(crate) provider: Option<Arc<dyn TableProvider>>,
    /// WAL sequence the Delta snapshot holds everything up to.
    persisted: WalSeq,
    /// Batches newer than `persisted`, in WAL order.
    pub(crate) buffer: Vec<Buffered>,
    rows: usize,
    bytes: usize,
    /// The highest position in storage, when known.
    pub(crate) stored_position: Option<u64>,
    /// The table's entity copy, when maintenance has made one.
    pub(crate) entities: Option<Arc<EntityCopy>>,
    /// The entity filters of the files flushed since the copy's covered
    /// position, which the provider prunes files by.
    entity_filters: EntityFilters,
}

/// An event table of one tenant.
#[derive(Debug)]
pub struct Table {
    pub tenant: TenantId,
    pub name: TableName,
    /// The writer this process is among several on the storage root
    /// (`None`: the only one). Its positions lie in its own range.
    node: Option<NodeId>,
    /// Payload columns and their types; decides where new fields go.
    pub(crate) registry: parking_lot::Mutex<ColumnRegistry>,
    /// Recent event ids, to store client retries once.
    pub(crate) dedup: parking_lot::Mutex<DedupIndex>,
    /// Positions and entity versions: taken by each append from stamping
    /// its batch until the WAL has queued it.
    pub(crate) sequencer: parking_lot::Mutex<Sequencer>,
    /// Read by every query (briefly), written by ingest and flush.
    pub(crate) state: parking_lot::RwLock<TableState>,
    /// One flush at a time per table: Delta commits are serialized here.
    flush_lock: tokio::sync::Mutex<()>,
    /// One maintenance run (compaction, vacuum, retention) at a time.
    pub(crate) maintenance_lock: tokio::sync::Mutex<()>,
    /// Marked each time a batch is applied, for live readers to wait on.
    applied: tokio::sync::watch::Sender<()>,
    /// The files queries were handed lately, which vacuum leaves.
    pub(crate) served: ServedFiles,
}

/// The provider queries read `delta` through, its files pruned by those
/// of `filters` that belong to them; and those filters.
async fn provider_for(
    delta: &DeltaTable,
    filters: &EntityFilters,
) -> Result<(Option<Arc<dyn TableProvider>>, EntityFilters)> {
    if delta.version().is_none() {
        return Ok((None, EntityFilters::default()));
    }
    if let Some(files) = DeltaFiles::try_new(delta)? {
        let (files, kept) = files.with_entity_filters(filters)?;
        return Ok((Some(Arc::new(files)), kept));
    }
    Ok((
        Some(delta.table_provider().await?),
        EntityFilters::default(),
    ))
}

impl Table {
    pub(crate) async fn new(
        tenant: TenantId,
        name: TableName,
        node: Option<NodeId>,
        served: ServedFiles,
        delta: DeltaTable,
        persisted: WalSeq,
        dedup: DedupIndex,
    ) -> Result<Self> {
        let (provider, _) = provider_for(&delta, &EntityFilters::default()).await?;
        // The columns stored so far (none before the first commit).
        let registry = match delta.snapshot() {
            Ok(state) => ColumnRegistry::from_schema(&state.snapshot().arrow_schema()),
            Err(_) => ColumnRegistry::default(),
        };
        Ok(Table {
            tenant,
            name,
            node,
            registry: parking_lot::Mutex::new(registry),
            dedup: parking_lot::Mutex::new(dedup),
            sequencer: parking_lot::Mutex::new(Sequencer::new(NodeId::base(node) + 1)),
            state: parking_lot::RwLock::new(TableState {
                delta,
                provider,
                persisted,
                buffer: Vec::new(),
                rows: 0,
                bytes: 0,
                stored_position: None,
                entities: None,
                entity_filters: EntityFilters::default(),
            }),
            flush_lock: tokio::sync::Mutex::new(()),
            maintenance_lock: tokio::sync::Mutex::new(()),
            applied: tokio::sync::watch::channel(()).0,
            served,
        })
    }

    /// The highest position this writer has given out that is readable
    /// now (the position before its range when none is).
    pub fn highest_position(&self) -> u64 {
        Self::visible_position(&self.state.read())
            .unwrap_or(self.first_position().saturating_sub(1))
    }

    /// The lowest position this writer gives out. Readers that follow
    /// positions (subscriptions, projections, pipelines, replay) start at
    /// it: beside several writers, positions order each writer's events,
    /// not all of them.
    pub fn first_position(&self) -> u64 {
        NodeId::base(self.node).max(1)
    }

    /// The positions this writer gives out.
    pub fn owned_positions(&self) -> std::ops::Range<u64> {
        let base = NodeId::base(self.node);
        base..base + (1u64 << NodeId::SHIFT)
    }

    /// Where this writer's positions end (exclusive); `u64::MAX` for the
    /// only writer, below which every stored position lies.
    pub fn positions_end(&self) -> u64 {
        match self.node {
            Some(_) => self.owned_positions().end,
            None => u64::MAX,
        }
    }

    /// Changes each time a batch is applied (after it is readable).
    pub fn watch_applied(&self) -> tokio::sync::watch::Receiver<()> {
        self.applied.subscribe()
    }

    /// `tenant.table`, for messages.
    pub fn label(&self) -> String {
        format!("{}.{}", self.tenant, self.name)
    }

    pub(crate) fn persisted_seq(&self) -> WalSeq {
        self.state.read().persisted
    }

    /// Adds a logged batch to the buffer. Called in WAL order. `bytes` is
    /// the memory the batch holds (counted by the caller: arrays decoded
    /// from one IPC buffer each report the whole buffer).
    pub(crate) fn push(&self, seq: WalSeq, batch: RecordBatch, bytes: usize, total: &AtomicUsize) {
        let mut state = self.state.write();
        state.rows += batch.num_rows();
        state.bytes += bytes;
        state.buffer.push(Buffered {
            seq,
            batch,
            bytes,
            arrived: Instant::now(),
        });
        total.fetch_add(bytes, Ordering::Relaxed);
        drop(state);
        self.applied.send_replace(());
    }

    pub(crate) fn first_buffered_seq(&self) -> Option<WalSeq> {
        self.state.read().buffer.first().map(|b| b.seq)
    }

    pub fn buffered_rows(&self) -> usize {
        self.state.read().rows
    }

    pub fn buffered_bytes(&self) -> usize {
        self.state.read().bytes
    }

    pub(crate) fn over_threshold(&self, rows: usize, bytes: usize) -> bool {
        let s = self.state.read();
        s.rows >= rows || s.bytes >= bytes
    }

    pub(crate) fn oldest_age(&self) -> Option<Duration> {
        self.state
            .read()
            .buffer
            .first()
            .map(|b| b.arrived.elapsed())
    }

    /// Writes the buffer to Delta in one commit, then swaps in the new
    /// snapshot and drops the written batches together.
    pub(crate) async fn flush(&self, storage: &Storage, total: &AtomicUsize) -> Result<usize> {
        let _one_at_a_time = self.flush_lock.lock().await;
        let (batches, last_seq, delta, filters) = {
            let s = self.state.read();
            let Some(last) = s.buffer.last() else {
                return Ok(0);
            };
            (
                s.buffer
                    .iter()
                    .map(|b| (b.seq, b.batch.clone()))
                    .collect::<Vec<_>>(),
                last.seq,
                s.delta.clone(),
                s.entity_filters.clone(),
            )
        };
        // A previous attempt may have committed and then failed after the
        // commit (syncing, reloading): never write the same records twice.
        let label = self.label();
        let delta = storage.refresh(delta, &label).await?;
        let already = storage.persisted_seq(&delta, &label).await?;
        let rows_in: usize;
        // Every batch taken is stored once this returns, whether this
        // attempt or an earlier one wrote it.
        let flushed_position = batches
            .iter()
            .filter_map(|(_, b)| sequence::last_position(b))
            .max();
        let (new_delta, added) = if already >= last_seq {
            // Committed by an attempt that failed afterwards: make sure it
            // is durable before the buffer (and so the WAL) lets go of it.
            storage.make_durable(&delta).await?;
            rows_in = 0;
            (delta, Vec::new())
        } else {
            let target = self.reconciled_schema(&delta);
            let shared = self.node.is_some();
            let batches = batches
                .iter()
                .filter(|(seq, _)| *seq > already)
                .map(|(_, batch)| match shared {
                    true => adapt_batch(&overflow_misfits(batch, &target)?, &target),
                    false => adapt_batch(batch, &target),
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(datafusion::error::DataFusionError::from)?;
            rows_in = batches.iter().map(|b| b.num_rows()).sum();
            let last_position = batches.last().and_then(sequence::last_position);
            storage
                .append(delta, &label, batches, last_seq, last_position)
                .await?
        };
        // The filters of files the copy covers are dropped (a read of one
        // entity takes their events from the copy), and so are those of
        // files no longer in the table (compaction replaced them).
        let covered = self.state.read().entities.as_ref().map_or(0, |c| c.covered);
        let (provider, filters) = provider_for(&new_delta, &filters.with(added, covered)).await?;
        let persisted = last_seq.max(already);
        let mut s = self.state.write();
        let keep_from = s.buffer.partition_point(|b| b.seq <= persisted);
        let drained: Vec<Buffered> = s.buffer.drain(..keep_from).collect();
        let freed: usize = drained.iter().map(|b| b.bytes).sum();
        s.rows -= drained.iter().map(|b| b.batch.num_rows()).sum::<usize>();
        s.bytes -= freed;
        s.delta = new_delta.clone();
        s.provider = provider;
        s.entity_filters = filters;
        s.persisted = persisted;
        if flushed_position.is_some() {
            s.stored_position = s.stored_position.max(flushed_position);
        }
        drop(s);
        self.served.moved_to(Served::Table, Some(&new_delta));
        total.fetch_sub(freed, Ordering::Relaxed);
        tracing::debug!(table = %label, rows = rows_in, %persisted, "flushed");
        Ok(rows_in)
    }

    /// The registry's schema once it has taken on the columns `delta`'s
    /// schema has (which other writers of the table may have added).
    fn reconciled_schema(&self, delta: &DeltaTable) -> arrow::datatypes::SchemaRef {
        let mut registry = self.registry.lock();
        if self.node.is_some()
            && let Ok(state) = delta.snapshot()
        {
            registry.reconcile(&state.snapshot().arrow_schema());
        }
        registry.schema()
    }

    /// Brings queries to what other writers of the table committed since
    /// the snapshot they read: the latest snapshot is swapped in (as after
    /// a maintenance commit), and the columns it has join the registry.
    /// Leaves it to the flush when one is running (it refreshes too).
    pub(crate) async fn refresh_shared(&self, storage: &Storage) -> Result<()> {
        let Ok(_no_flush) = self.flush_lock.try_lock() else {
            return Ok(());
        };
        let label = self.label();
        let current = self.delta();
        let latest = storage.refresh(current.clone(), &label).await?;
        if latest.version() == current.version() {
            return Ok(());
        }
        self.reconciled_schema(&latest);
        self.install_if_current(storage, latest, &label).await
    }

    /// Makes queries read `copy` (the files of the Delta table beside it)
    /// as the table's entity copy (`None`: read no copy).
    pub(crate) fn install_entities(&self, copy: Option<(EntityCopy, &DeltaTable)>) {
        let (entities, delta) = match copy {
            Some((entities, delta)) => (Some(Arc::new(entities)), Some(delta)),
            None => (None, None),
        };
        self.state.write().entities = entities;
        self.served.moved_to(Served::EntityCopy, delta);
    }

    /// Makes queries skip the entity copy's events with a `timestamp`
    /// before `cutoff` (micros).
    pub(crate) fn hide_in_entities(&self, cutoff: i64) {
        let mut s = self.state.write();
        if let Some(copy) = &s.entities
            && copy.hidden_before < cutoff
        {
            let mut hidden = EntityCopy::clone(copy);
            hidden.hidden_before = cutoff;
            s.entities = Some(Arc::new(hidden));
        }
    }

    /// The entity copy a query may read with the table's current
    /// snapshot: one that covers no position above what the snapshot
    /// holds (the buffer holds only positions above that).
    pub(crate) fn readable_entities(state: &TableState) -> Option<Arc<EntityCopy>> {
        state
            .entities
            .clone()
            .filter(|c| c.covered > 0 && state.stored_position.is_some_and(|s| c.covered <= s))
    }

    /// Finds the table's entity copy in storage at start-up (its use
    /// still waits for the table's snapshot to cover it).
    pub(crate) async fn load_entities(&self, storage: &Storage) -> Result<()> {
        if self.node.is_some() {
            return Ok(());
        }
        let copy = storage.open_entities(&self.tenant, &self.name).await?;
        if copy.version().is_none() {
            return Ok(());
        }
        let (covered, hidden_before) = storage
            .entities_marks(&copy, &format!("{} (entity copy)", self.label()))
            .await?;
        if covered == 0 {
            return Ok(());
        }
        if let Some(files) = DeltaFiles::try_new(&copy)? {
            let entities = EntityCopy {
                files: Arc::new(files),
                covered,
                hidden_before,
            };
            self.install_entities(Some((entities, &copy)));
        }
        Ok(())
    }

    /// The highest position a reader sees now: the buffer's last, or
    /// else the highest stored.
    pub(crate) fn visible_position(state: &TableState) -> Option<u64> {
        state
            .buffer
            .last()
            .and_then(|b| sequence::last_position(&b.batch))
            .or(state.stored_position)
    }

    /// The Delta version readers see (`None` before the first commit).
    pub(crate) fn delta_version(state: &TableState) -> Option<u64> {
        state.delta.version()
    }

    /// The Delta handle queries currently read.
    pub(crate) fn delta(&self) -> DeltaTable {
        self.state.read().delta.clone()
    }

    /// After a maintenance commit (compaction, deletion): moves queries to
    /// the table's latest snapshot. Waits for a running flush, and swaps
    /// only if the latest snapshot holds exactly the flushed sequence the
    /// buffer was trimmed to, so no row is seen twice or lost; otherwise
    /// the next flush brings the snapshot forward anyway.
    pub(crate) async fn adopt_latest(&self, storage: &Storage) -> Result<()> {
        if let Some(wait) = crate::fault::delay("maintenance-before-adopt") {
            tokio::time::sleep(wait).await;
        }
        let _no_flush = self.flush_lock.lock().await;
        let label = self.label();
        let delta = storage.refresh(self.delta(), &label).await?;
        self.install_if_current(storage, delta, &label).await
    }

    /// With the flush lock held: makes `latest` the snapshot queries read,
    /// if it holds exactly the flushed sequence the buffer was trimmed to
    /// (so no row is seen twice or lost).
    async fn install_if_current(
        &self,
        storage: &Storage,
        latest: DeltaTable,
        label: &str,
    ) -> Result<()> {
        let persisted = storage.persisted_seq(&latest, label).await?;
        let filters = self.state.read().entity_filters.clone();
        let (provider, filters) = provider_for(&latest, &filters).await?;
        let mut s = self.state.write();
        if persisted != s.persisted {
            return Ok(());
        }
        s.delta = latest.clone();
        s.provider = provider;
        s.entity_filters = filters;
        drop(s);
        // After the swap: no query is handed the old files from here on.
        self.served.moved_to(Served::Table, Some(&latest));
        Ok(())
    }
}
