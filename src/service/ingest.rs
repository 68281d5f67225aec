//! Events in: a request's parsed events ([`Service::ingest`]) or a stream
//! of Arrow batches ([`Upload`]), each through the WAL, within the
//! tenant's event rate and the ingest memory budget, counted in the
//! metrics once.

use super::{Error, Kind, Result, Service};
use crate::auth::{Principal, Role};
use crate::db::{self, IngestOutcome, PendingIngest};
use crate::ids::TableName;
use crate::ingest::Events;
use crate::ingest::budget::{BudgetError, Reservation};
use crate::ratelimit;
use arrow::array::RecordBatch;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Batches of an upload in flight at once: enough to keep the WAL's group
/// commits full while the next batch is checked.
const UPLOAD_IN_FLIGHT: usize = 8;

/// How long an upload's batch waits for room in full ingest buffers (the
/// upload slows down rather than fails) before it is refused.
const UPLOAD_BUFFER_WAIT: Duration = Duration::from_secs(30);

impl Upload<'_> {
    /// Whether the policies let the caller ingest the batch's event
    /// types.
    fn check_types(&self, batch: &RecordBatch) -> Result<()> {
        let Some(types) = batch.column_by_name(crate::schema::EVENT_TYPE) else {
            return (self.service)
                .ingest_allowed(&self.caller, self.table.as_str(), [], |_| String::new());
        };
        let types = arrow::compute::cast(types, &arrow::datatypes::DataType::Utf8)
            .map_err(|e| Error::invalid(format!("column event_type: {e}")))?;
        let Some(types) = types.as_any().downcast_ref::<arrow::array::StringArray>() else {
            return Ok(());
        };
        let first = self.rows;
        self.service.ingest_allowed(
            &self.caller,
            self.table.as_str(),
            types
                .iter()
                .enumerate()
                .filter_map(|(i, t)| t.map(|t| (i, t))),
            |i| format!("row {}", first + i as u64),
        )
    }
}

impl Service {
    /// What an ingest needs before its body is read: the writer role and
    /// room in the tenant's event rate, so that a flood costs little.
    pub fn admit_ingest(&self, caller: &Principal) -> Result<()> {
        caller.require(Role::Writer, "ingest")?;
        self.rate_check(caller, ratelimit::Kind::Events, 1)
    }

    /// Refuses a request's events while the ingest buffers are full, so
    /// that a client told to retry has not had its body read and parsed
    /// for nothing.
    pub fn check_ingest_room(&self) -> Result<()> {
        Ok(self.db.check_room()?)
    }

    /// Stores a request's `events` in `caller`'s table, once they are
    /// admitted ([`Service::admit_ingest`], which took one event of the
    /// rate). `held` is the request's share of the ingest budget, given
    /// back when the events are stored.
    pub async fn ingest(
        &self,
        caller: &Principal,
        table: TableName,
        events: impl Into<Events>,
        held: Reservation,
    ) -> Result<IngestOutcome> {
        let events: Events = events.into();
        let n = u32::try_from(events.len()).unwrap_or(u32::MAX);
        self.ingest_allowed(
            caller,
            table.as_str(),
            events.event_types().enumerate(),
            |i| format!("$[{i}]"),
        )?;
        self.rate_check(caller, ratelimit::Kind::Events, n.saturating_sub(1))?;
        // Detached, so that a client hanging up mid-request cannot cancel
        // an ingest between claiming its event ids and logging them; the
        // reservation goes with it.
        let db = self.db.clone();
        let tenant = caller.tenant.clone();
        let outcome = tokio::spawn(async move {
            let outcome = db.ingest(&tenant, &table, events).await;
            drop(held);
            outcome
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))??;
        count_events(caller, outcome.accepted as u64);
        self.meter(caller, ratelimit::Kind::Events, outcome.accepted as u64);
        Ok(outcome)
    }

    /// Counts an ingest request and, when it succeeded, its latency.
    pub fn observe_ingest<T>(&self, caller: &Principal, started: Instant, result: &Result<T>) {
        let m = crate::metrics::get();
        let tenant = caller.tenant.as_str();
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.kind.outcome(),
        };
        m.ingest_requests
            .with_label_values(&[tenant, outcome])
            .inc();
        if result.is_ok() {
            m.ingest_seconds
                .with_label_values(&[tenant])
                .observe(started.elapsed().as_secs_f64());
        }
    }

    /// Starts an upload of Arrow batches into `caller`'s `table`, once it
    /// is admitted ([`Service::admit_ingest`]).
    pub fn upload(&self, caller: &Principal, table: TableName) -> Upload<'_> {
        Upload {
            service: self,
            caller: caller.clone(),
            table,
            reservation: self.ingest_budget.reserve(),
            pending: VecDeque::new(),
            totals: Totals::default(),
            rows: 0,
            started: Instant::now(),
        }
    }
}

/// The refusal of an ingest whose reservation could not grow: too large
/// when the request alone needs more than one may take (`what` says what
/// it needed the memory for), unavailable while others hold the budget.
pub fn budget_refusal(e: BudgetError, what: &str) -> Error {
    match e {
        BudgetError::TooLarge { limit, .. } => Error::new(
            Kind::TooLarge,
            format!(
                "{what} needs more than {limit} bytes of memory, what one ingest request may take (--max-ingest-request-bytes); send fewer or smaller events per request"
            ),
        ),
        BudgetError::Busy { .. } => e.into(),
    }
}

fn count_events(caller: &Principal, accepted: u64) {
    crate::metrics::get()
        .ingest_events
        .with_label_values(&[caller.tenant.as_str()])
        .inc_by(accepted);
}

/// What an upload stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub accepted: u64,
    pub duplicates: u64,
    /// The lowest and highest position among the rows sent.
    pub positions: Option<(u64, u64)>,
}

impl Totals {
    fn add(&mut self, outcome: IngestOutcome) {
        self.accepted += outcome.accepted as u64;
        self.duplicates += outcome.duplicates as u64;
        if let Some((lo, hi)) = outcome.positions() {
            self.positions = Some(match self.positions {
                Some((a, b)) => (a.min(lo), b.max(hi)),
                None => (lo, hi),
            });
        }
    }

    /// `e`, saying which rows before the failure were stored.
    pub fn explain(&self, mut e: Error) -> Error {
        let stored = self.accepted + self.duplicates;
        if stored > 0 {
            e.message = format!(
                "{}; the {stored} rows before it were stored (batches are committed in order, each whole; client event ids make a retry safe)",
                e.message
            );
        }
        e
    }
}

/// Batches going into one table, each through the WAL, a few in flight at
/// once. Each batch in flight holds its share of the ingest budget (the
/// decoded batch, its conversion and its WAL record) until it is
/// acknowledged.
#[derive(Debug)]
pub struct Upload<'a> {
    service: &'a Service,
    caller: Principal,
    table: TableName,
    reservation: Reservation,
    pending: VecDeque<(PendingIngest, usize)>,
    totals: Totals,
    rows: u64,
    started: Instant,
}

impl Upload<'_> {
    /// Sends one batch on its way to the WAL.
    pub async fn push(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let n = batch.num_rows() as u64;
        self.check_types(&batch)?;
        // Room for the batch: the upload's own batches in flight give
        // theirs back first; only a batch that fits in no room is refused.
        let held = batch.get_array_memory_size().saturating_mul(3);
        while let Err(e) = self.reservation.grow(held) {
            if self.pending.is_empty() {
                return Err(budget_refusal(e, "an uploaded batch"));
            }
            self.acknowledge_one().await?;
        }
        let n32 = u32::try_from(n).unwrap_or(u32::MAX);
        if let Err(e) = self
            .service
            .rate_check(&self.caller, ratelimit::Kind::Events, n32)
        {
            self.reservation.shrink(held);
            return Err(e);
        }
        let pending = start(
            self.service.db(),
            &self.caller,
            &self.table,
            batch,
            self.rows,
        )
        .await;
        let pending = match pending {
            Ok(p) => p,
            Err(e) => {
                self.reservation.shrink(held);
                return Err(e);
            }
        };
        self.pending.push_back((pending, held));
        self.rows += n;
        while self.pending.len() > UPLOAD_IN_FLIGHT {
            self.acknowledge_one().await?;
        }
        Ok(())
    }

    /// Waits for every batch in flight; `failure` is what stopped the
    /// upload early, if anything did. Returns what was stored, or the
    /// first error with what was stored before it.
    pub async fn finish(mut self, failure: Option<Error>) -> Result<Totals> {
        let mut failure = failure;
        while let Some((p, held)) = self.pending.pop_front() {
            let acked = p.acknowledged().await;
            self.reservation.shrink(held);
            match acked {
                Ok(o) => self.totals.add(o),
                Err(e) => {
                    failure.get_or_insert(e.into());
                }
            }
        }
        count_events(&self.caller, self.totals.accepted);
        self.service
            .meter(&self.caller, ratelimit::Kind::Events, self.totals.accepted);
        let result = match failure {
            None => Ok(self.totals),
            Some(e) => Err(self.totals.explain(e)),
        };
        self.service
            .observe_ingest(&self.caller, self.started, &result);
        result
    }

    async fn acknowledge_one(&mut self) -> Result<()> {
        let Some((p, held)) = self.pending.pop_front() else {
            return Ok(());
        };
        let acked = p.acknowledged().await;
        self.reservation.shrink(held);
        self.totals.add(acked?);
        Ok(())
    }
}

/// Starts one batch of an upload, waiting while the ingest buffers are
/// full.
async fn start(
    db: &db::Database,
    caller: &Principal,
    table: &TableName,
    batch: RecordBatch,
    first_row: u64,
) -> Result<PendingIngest> {
    let give_up = Instant::now() + UPLOAD_BUFFER_WAIT;
    loop {
        match db
            .start_arrow_ingest(&caller.tenant, table, batch.clone(), first_row)
            .await
        {
            Err(db::Error::BufferFull { .. }) if Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other.map_err(Error::from),
        }
    }
}
