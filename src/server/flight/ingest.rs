//! Bulk ingest over Flight: each uploaded batch goes through the WAL like
//! an HTTP request's, with a few in flight at once.

use super::{FlightSql, db_status, invalid};
use crate::auth::Principal;
use crate::db::{self, PendingIngest};
use crate::ids::{TableName, TenantId};
use crate::ratelimit::Kind;
use crate::server::error::ApiError;
use arrow::array::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use futures::StreamExt;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tonic::{Code, Status};

impl FlightSql {
    pub(super) async fn ingest(
        &self,
        caller: Principal,
        table: TableName,
        mut batches: FlightRecordBatchStream,
    ) -> Result<(u64, u64), Status> {
        let tenant = caller.tenant.clone();
        let started = Instant::now();
        // Each batch in flight holds its share of the ingest budget (the
        // decoded batch, its conversion and its WAL record) until it is
        // acknowledged.
        let mut reservation = self.inner.ingest_budget.reserve();
        let mut pending: VecDeque<(PendingIngest, usize)> = VecDeque::new();
        let (mut accepted, mut duplicates, mut rows) = (0u64, 0u64, 0u64);
        let mut count = |outcome: db::IngestOutcome| {
            accepted += outcome.accepted as u64;
            duplicates += outcome.duplicates as u64;
        };
        let mut failure: Option<Status> = None;
        'upload: while let Some(next) = batches.next().await {
            let batch = match next {
                Ok(b) => b,
                Err(FlightError::Tonic(s)) => {
                    failure = Some(*s);
                    break;
                }
                Err(other) => {
                    failure = Some(invalid(format!(
                        "the uploaded data is not valid Arrow IPC: {other}"
                    )));
                    break;
                }
            };
            if batch.num_rows() == 0 {
                continue;
            }
            let n = batch.num_rows() as u64;
            // Room for the batch: the upload's own batches in flight give
            // theirs back first; only a batch that fits in no room is
            // refused.
            let held = batch.get_array_memory_size().saturating_mul(3);
            while let Err(e) = reservation.grow(held) {
                let Some((p, their)) = pending.pop_front() else {
                    failure =
                        Some(crate::server::ingest::budget_refusal(e, "an uploaded batch").into());
                    break 'upload;
                };
                let acked = p.acknowledged().await;
                reservation.shrink(their);
                match acked {
                    Ok(o) => count(o),
                    Err(e) => {
                        failure = Some(db_status(e));
                        break 'upload;
                    }
                }
            }
            let begun = match self.rate_check(
                &tenant,
                Kind::Events,
                u32::try_from(n).unwrap_or(u32::MAX),
            ) {
                Ok(()) => self.start_ingest(&tenant, &table, batch, rows).await,
                Err(e) => Err(e),
            };
            match begun {
                Ok(p) => pending.push_back((p, held)),
                Err(e) => {
                    failure = Some(Status::from(e));
                    break;
                }
            }
            rows += n;
            // A few batches in flight keep the WAL's group commits full
            // while the next batch is checked.
            while pending.len() > 8 {
                let (p, their) = pending.pop_front().expect("not empty");
                let acked = p.acknowledged().await;
                reservation.shrink(their);
                match acked {
                    Ok(o) => count(o),
                    Err(e) => {
                        failure = Some(db_status(e));
                        break 'upload;
                    }
                }
            }
        }
        for (p, _) in pending {
            match p.acknowledged().await {
                Ok(o) => count(o),
                Err(e) => {
                    failure.get_or_insert(db_status(e));
                }
            }
        }
        let m = crate::metrics::get();
        m.ingest_events
            .with_label_values(&[tenant.as_str()])
            .inc_by(accepted);
        // The same outcome labels as HTTP's: the server's failures are
        // "error", the client's "rejected".
        let outcome = match failure.as_ref().map(Status::code) {
            None => "ok",
            Some(Code::Internal | Code::Unavailable | Code::Unknown | Code::DataLoss) => "error",
            Some(_) => "rejected",
        };
        m.ingest_requests
            .with_label_values(&[tenant.as_str(), outcome])
            .inc();
        if failure.is_none() {
            m.ingest_seconds
                .with_label_values(&[tenant.as_str()])
                .observe(started.elapsed().as_secs_f64());
        }
        match failure {
            None => Ok((accepted, duplicates)),
            Some(s) if accepted + duplicates == 0 => Err(s),
            Some(s) => Err(Status::new(
                s.code(),
                format!(
                    "{}; the {} rows before it were stored (batches are committed in order, each whole; client event ids make a retry safe)",
                    s.message(),
                    accepted + duplicates
                ),
            )),
        }
    }

    /// Starts one batch, waiting while the ingest buffers are full (the
    /// upload slows down rather than fails) for at most 30 seconds.
    pub(super) async fn start_ingest(
        &self,
        tenant: &TenantId,
        table: &TableName,
        batch: RecordBatch,
        first_row: u64,
    ) -> Result<PendingIngest, ApiError> {
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            match self
                .inner
                .db
                .start_arrow_ingest(tenant, table, batch.clone(), first_row)
                .await
            {
                Err(db::Error::BufferFull { .. }) if Instant::now() < give_up => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return other.map_err(ApiError::from),
            }
        }
    }
}

pub(super) fn table_name(name: &str) -> Result<TableName, Status> {
    name.parse::<TableName>()
        .map_err(|e| invalid(format!("table {name:?}: {e}")))
}
