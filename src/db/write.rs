//! The write path: admission, the dedup claim, building the batch and
//! handing it to the WAL, for JSON events and for Arrow batches alike.

use super::claims::Claims;
use super::sequence::{self, Stamps};
use super::{Database, Error, IngestOutcome, Result, Table, encode_ipc, now_micros};
use crate::ids::{TableName, TenantId, WalSeq};
use crate::ingest::{self, BatchCheck, Events, ExpectedVersion, Facts};
use crate::schema::RegistryMark;
use crate::schema::governed::Violations;
use crate::wal;
use arrow::array::{AsArray, RecordBatch};
use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl Database {
    /// Stores `events` in `tenant`'s table `name` (created on first use).
    /// Returns once they are durable in the WAL and visible to queries.
    pub async fn ingest(
        &self,
        tenant: &TenantId,
        name: &TableName,
        events: impl Into<Events>,
    ) -> Result<IngestOutcome> {
        self.ingest_with(tenant, name, events.into(), true).await
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
        if bounded {
            self.check_room()?;
        }
        match self.table(tenant, name) {
            Some(t) => Ok(t),
            None => self.load_table(tenant, name).await,
        }
    }

    /// Refuses an ingest while the buffers are full, asking for a flush:
    /// a caller can check before it reads and parses a request.
    pub fn check_room(&self) -> Result<()> {
        let buffered = self.buffered_bytes();
        if buffered >= self.config.max_buffer_bytes {
            self.flush_wanted.notify_one();
            return Err(Error::BufferFull { buffered });
        }
        Ok(())
    }

    async fn ingest_with(
        &self,
        tenant: &TenantId,
        name: &TableName,
        events: Events,
        bounded: bool,
    ) -> Result<IngestOutcome> {
        let table = self.admit(tenant, name, bounded).await?;
        let now = now_micros();
        let given: Vec<Option<&str>> = (events.heads.iter())
            .map(|e| e.event_id.as_deref())
            .collect();
        let (claims, keep) = Claims::take(&table, &given, now).await;
        let mut fresh = crate::ids::EventIds::new();
        let ids: Vec<String> = (events.heads.iter())
            .map(|e| match &e.event_id {
                Some(id) => id.clone(),
                None => fresh.next_id().to_string(),
            })
            .collect();
        let accepted = keep.iter().filter(|k| **k).count();
        let expected: Vec<ExpectedVersion> = (events.heads.iter())
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(e, _)| e.expected_version)
            .collect();
        // Retries always carry their client id.
        let duplicate_ids: Vec<String> = (events.heads.iter())
            .zip(&keep)
            .filter(|(_, k)| !**k)
            .filter_map(|(e, _)| e.event_id.clone())
            .collect();
        let check = self.check_of(tenant, name);
        let (stamps, warnings) = match accepted {
            0 => (None, None),
            _ => {
                let t = table.clone();
                let (events, keep) = (events, keep.clone());
                let (batch, warnings) = tokio::task::spawn_blocking(move || {
                    let built = ingest::build(&events, &keep, &ids, &t.registry, now)?;
                    let index: Vec<u64> = (keep.iter().enumerate())
                        .filter(|(_, k)| **k)
                        .map(|(i, _)| i as u64)
                        .collect();
                    run_check(
                        &t,
                        check.as_deref(),
                        built.batch,
                        &built.facts,
                        built.placed,
                        &index,
                    )
                })
                .await
                .map_err(|e| Error::Internal(e.to_string()))??;
                let (stamps, logged) = self
                    .sequence(&table, batch.clone(), expected, claims)
                    .await?;
                logged.await?;
                observe_quality(&table, Some(&batch), duplicate_ids.len(), now);
                (Some(stamps), warnings)
            }
        };
        if stamps.is_none() {
            observe_quality(&table, None, duplicate_ids.len(), now);
        }
        let mut outcome = IngestOutcome::new(&table, &keep, &duplicate_ids, stamps.as_ref());
        outcome.warnings = warnings;
        Ok(outcome)
    }

    /// Stamps a built batch with positions and versions, checks its
    /// events' expected versions (`expected`: one per row, or empty), and
    /// queues it for the WAL — all while holding the table's sequencer, so
    /// the WAL holds the table's batches in position order. Returns the
    /// stamps and a future that resolves once the batch is on disk and in
    /// the buffer. `claims` are settled as stored when the record is
    /// durable, and released if it never is.
    async fn sequence(
        &self,
        table: &Arc<Table>,
        batch: RecordBatch,
        expected: Vec<ExpectedVersion>,
        claims: Claims,
    ) -> Result<(Stamps, impl Future<Output = Result<WalSeq>> + use<>)> {
        let t = table.clone();
        let wal = self.wal.clone();
        let counter = self.buffered_bytes.clone();
        let notify = self.flush_wanted.clone();
        let (flush_rows, flush_bytes) = (self.config.flush_rows, self.config.flush_bytes);
        // On a blocking thread, and not cancelled with the request: the
        // critical section encodes the batch and may wait for room in the
        // WAL's queue.
        tokio::task::spawn_blocking(move || -> Result<_> {
            let entities = sequence::entities(&batch).clone();
            let keys = sequence::Keys::of(&entities);
            let mut sequencer = t.sequencer.lock();
            let plan = sequencer
                .plan(&entities, &keys, &expected)
                .map_err(Error::Conflict)?;
            let batch = sequence::stamp(&batch, &plan.stamps);
            let ipc = wal_payload(&batch)?;
            let bytes = batch.get_array_memory_size();
            let (applied, table) = (plan.stamps.clone(), t.clone());
            let logged = wal.submit_blocking(
                t.tenant.clone(),
                t.name.clone(),
                ipc,
                Box::new(move |seq| {
                    table.push(seq, batch, bytes, &counter);
                    claims.stored(&applied);
                    if table.over_threshold(flush_rows, flush_bytes) {
                        notify.notify_one();
                    }
                }),
            )?;
            sequencer.commit(&entities, &keys, &plan);
            Ok((plan.stamps, async move { Ok(logged.await?) }))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
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
        let expected: Vec<ExpectedVersion> = match converted.expected.is_empty() {
            true => Vec::new(),
            false => (converted.expected.iter().zip(&keep))
                .filter(|(_, k)| **k)
                .map(|(e, _)| *e)
                .collect(),
        };
        let batch = converted.batch;
        let column = batch.column(0).as_string::<i32>();
        let duplicate_ids: Vec<String> = (0..rows)
            .filter(|i| !keep[*i])
            .map(|i| column.value(i).to_string())
            .collect();
        let kept = keep.clone();
        let check = self.check_of(tenant, name);
        let (facts, placed, t) = (converted.facts, converted.placed, table.clone());
        let (batch, warnings) = tokio::task::spawn_blocking(move || -> Result<_> {
            let (batch, facts) = match kept.iter().all(|k| *k) {
                true => (batch, facts),
                false => (
                    arrow::compute::filter_record_batch(&batch, &kept.clone().into())?,
                    facts.filter(&kept),
                ),
            };
            let index: Vec<u64> = (kept.iter().enumerate())
                .filter(|(_, k)| **k)
                .map(|(i, _)| first_row + i as u64)
                .collect();
            run_check(&t, check.as_deref(), batch, &facts, placed, &index)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        let stored = batch.clone();
        let logged = match batch.num_rows() {
            0 => None,
            _ => {
                let (stamps, logged) = self.sequence(&table, batch, expected, claims).await?;
                Some((stamps, Box::pin(logged) as _))
            }
        };
        Ok(PendingIngest {
            logged,
            table,
            keep,
            duplicate_ids,
            warnings,
            stored: (stored, now),
        })
    }
}

/// An Arrow ingest handed to the WAL, not yet acknowledged.
pub struct PendingIngest {
    logged: Option<(Stamps, Logged)>,
    table: Arc<Table>,
    /// Per row, whether it is new (not a retry of a stored event).
    keep: Vec<bool>,
    duplicate_ids: Vec<String>,
    warnings: Option<Violations>,
    /// The rows handed to the WAL and when, for the ingest metrics.
    stored: (RecordBatch, i64),
}

type Logged = std::pin::Pin<Box<dyn Future<Output = Result<WalSeq>> + Send>>;

impl std::fmt::Debug for PendingIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingIngest")
            .field("table", &self.table.label())
            .field("rows", &self.keep.len())
            .finish_non_exhaustive()
    }
}

impl PendingIngest {
    /// Waits until the batch is durable and visible. If logging failed,
    /// its client event ids have been released, so that a retry is not
    /// taken for a duplicate.
    pub async fn acknowledged(self) -> Result<IngestOutcome> {
        let stamps = match self.logged {
            None => None,
            Some((stamps, logged)) => {
                logged.await?;
                Some(stamps)
            }
        };
        let (stored, now) = &self.stored;
        observe_quality(&self.table, Some(stored), self.duplicate_ids.len(), *now);
        let mut outcome = IngestOutcome::new(
            &self.table,
            &self.keep,
            &self.duplicate_ids,
            stamps.as_ref(),
        );
        outcome.warnings = self.warnings;
        Ok(outcome)
    }
}

impl IngestOutcome {
    /// The outcome of a request whose rows were new where `keep` says so
    /// (and got `stamps`, in order); the others repeat stored events,
    /// `duplicate_ids` in order, whose stamps the dedup index remembers.
    fn new(
        table: &Table,
        keep: &[bool],
        duplicate_ids: &[String],
        stamps: Option<&Stamps>,
    ) -> Self {
        let dedup = table.dedup.lock();
        let (mut row, mut dup) = (0, 0);
        let stamps = keep
            .iter()
            .map(|new| match new {
                true => {
                    row += 1;
                    stamps.map(|s| s.of(row - 1))
                }
                false => {
                    dup += 1;
                    dedup.stamp_of(&duplicate_ids[dup - 1])
                }
            })
            .collect();
        IngestOutcome {
            accepted: row,
            duplicates: dup,
            stamps,
            warnings: None,
        }
    }
}

/// Counts what ingest sees of a stored batch's quality: each event's
/// ingest time minus its event time, and the events a request repeated.
fn observe_quality(table: &Table, batch: Option<&RecordBatch>, duplicates: usize, now: i64) {
    let m = crate::metrics::get();
    let labels = [table.tenant.as_str(), table.name.as_str()];
    if duplicates > 0 {
        m.ingest_duplicates
            .with_label_values(&labels)
            .inc_by(duplicates as u64);
    }
    let Some(times) = batch
        .and_then(|b| b.column_by_name(crate::schema::TIMESTAMP))
        .and_then(|c| c.as_primitive_opt::<arrow::datatypes::TimestampMicrosecondType>())
    else {
        return;
    };
    let lag = m.ingest_event_lag.with_label_values(&labels);
    for t in times.values() {
        lag.observe((now - t).max(0) as f64 / 1e6);
    }
}

/// Runs `check` (if the table has one) over a built batch whose row `i`
/// is the request's event `index[i]`. A refused batch takes back the
/// columns it placed, so refused events leave no trace in the table.
fn run_check(
    table: &Table,
    check: Option<&dyn BatchCheck>,
    batch: RecordBatch,
    facts: &Facts,
    (before, after): (RegistryMark, RegistryMark),
    index: &[u64],
) -> Result<(RecordBatch, Option<Violations>)> {
    let Some(check) = check else {
        return Ok((batch, None));
    };
    let result = check.check(batch, facts, index);
    let m = crate::metrics::get();
    let (tenant, name) = (table.tenant.as_str(), table.name.as_str());
    let found = match &result {
        Ok(checked) => checked.warnings.as_ref(),
        Err(violations) => {
            m.validation_rejected
                .with_label_values(&[tenant, name])
                .inc_by(violations.rejected);
            Some(violations.as_ref())
        }
    };
    if let Some(found) = found {
        for (rule, n) in &found.by_rule {
            let mode = found.modes.get(rule).map_or("reject", |m| m.as_str());
            m.validation_violations
                .with_label_values(&[tenant, name, rule, mode])
                .inc_by(*n);
        }
    }
    match result {
        Ok(checked) => Ok((checked.batch, checked.warnings)),
        Err(violations) => {
            table.registry.lock().retract(before, after);
            Err(Error::Rejected(violations))
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
