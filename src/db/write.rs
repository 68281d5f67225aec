//! The write path: admission, the dedup claim, building the batch and
//! handing it to the WAL, for JSON events and for Arrow batches alike.

use super::claims::Claims;
use super::{Database, Error, IngestOutcome, Result, Table, encode_ipc, now_micros};
use crate::ids::{TableName, TenantId, WalSeq};
use crate::ingest::{self, Event};
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
