//! What one query, and one tenant's queries together, may use: a memory
//! budget per query inside a total for all of them, a timeout that cancels
//! the running plan, and a cap on concurrent queries per tenant.

use crate::ids::TenantId;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    GreedyMemoryPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
    human_readable_size,
};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The settings, from the server's flags.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    pub query_memory: usize,
    pub total_memory: usize,
    pub timeout: Duration,
    pub concurrent_per_tenant: usize,
    /// What a query's text may be.
    pub sql: super::bounds::SqlLimits,
}

/// Shared by every query of the server.
#[derive(Debug)]
pub struct QueryLimits {
    pub settings: LimitSettings,
    total: Arc<GreedyMemoryPool>,
    slots: Mutex<HashMap<TenantId, Arc<Semaphore>>>,
}

/// Why a query was refused or stopped by a limit.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error(
        "tenant {tenant} already runs {limit} queries (--max-concurrent-queries); retry when one finishes"
    )]
    Busy { tenant: TenantId, limit: usize },
    #[error("query timed out after {} (--query-timeout) and was cancelled", humantime::format_duration(*.0))]
    Timeout(Duration),
}

impl QueryLimits {
    pub fn new(settings: LimitSettings) -> Self {
        QueryLimits {
            total: Arc::new(GreedyMemoryPool::new(settings.total_memory)),
            settings,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// A memory pool for one query: its own budget, drawn from the total.
    pub fn query_pool(&self) -> Arc<dyn MemoryPool> {
        Arc::new(QueryPool {
            limit: self.settings.query_memory,
            used: AtomicUsize::new(0),
            total: self.total.clone(),
            total_limit: self.settings.total_memory,
            spillers: AtomicUsize::new(0),
            unspillable: AtomicUsize::new(0),
        })
    }

    /// A slot for one more query of `tenant`, held until the query's
    /// stream is dropped; refused at once when all are taken.
    pub fn admit(&self, tenant: &TenantId) -> Result<OwnedSemaphorePermit, LimitError> {
        let limit = self.settings.concurrent_per_tenant;
        let semaphore = self
            .slots
            .lock()
            .entry(tenant.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(limit)))
            .clone();
        semaphore.try_acquire_owned().map_err(|_| LimitError::Busy {
            tenant: tenant.clone(),
            limit,
        })
    }

    /// Bytes reserved by all running queries.
    pub fn memory_in_use(&self) -> usize {
        self.total.reserved()
    }
}

/// One query's pool: refuses growth past its own budget, and past what
/// the shared total has left.
///
/// Within the budget, consumers that can spill (sorts, aggregations) each
/// get an equal share of what the others do not hold, as in DataFusion's
/// `FairSpillPool`: a sort spills when it passes its share. With a greedy
/// budget, one partition's sort could take all of it, and a second
/// partition's sort then failed even after spilling everything it had.
/// The spilling consumers share all but [`UNSPILLABLE_HEADROOM`] of the
/// budget.
#[derive(Debug)]
struct QueryPool {
    limit: usize,
    used: AtomicUsize,
    total: Arc<GreedyMemoryPool>,
    total_limit: usize,
    /// Consumers registered that can spill.
    spillers: AtomicUsize,
    /// Bytes held by consumers that cannot spill.
    unspillable: AtomicUsize,
}

impl std::fmt::Display for QueryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "query pool (used {} of {})",
            human_readable_size(self.used.load(Ordering::Relaxed)),
            human_readable_size(self.limit)
        )
    }
}

/// The part of a query's budget (one in this many bytes) that consumers
/// which can spill leave to those which cannot. A sort holds its share
/// until its input ends and only then merges its spill files, with
/// buffers that cannot spill; without headroom the merge found the
/// budget taken by the sorts of the other partitions, still reading.
const UNSPILLABLE_HEADROOM: usize = 8;

/// Marks memory errors caused by other queries rather than this one's
/// budget, so they are answered as "busy" rather than as the query's fault.
pub const SERVER_MEMORY_BUSY: &str = "the server's query memory is in use by other queries";

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "query"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        if consumer.can_spill() {
            self.spillers.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        if consumer.can_spill() {
            self.spillers.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::Relaxed);
        if !reservation.consumer().can_spill() {
            self.unspillable.fetch_add(additional, Ordering::Relaxed);
        }
        self.total.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.used.fetch_sub(shrink, Ordering::Relaxed);
        if !reservation.consumer().can_spill() {
            self.unspillable.fetch_sub(shrink, Ordering::Relaxed);
        }
        self.total.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let spills = reservation.consumer().can_spill();
        if spills {
            let spillers = self.spillers.load(Ordering::Relaxed).max(1);
            let share = (self.limit - self.limit / UNSPILLABLE_HEADROOM)
                .saturating_sub(self.unspillable.load(Ordering::Relaxed))
                / spillers;
            if reservation.size() + additional > share {
                return Err(DataFusionError::ResourcesExhausted(format!(
                    "the query needs more than its memory budget of {} (--query-memory-limit): {} more wanted by {}, over its share of {} with {spillers} spilling operators",
                    human_readable_size(self.limit),
                    human_readable_size(additional),
                    reservation.consumer().name(),
                    human_readable_size(share),
                )));
            }
        }
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(additional).filter(|n| *n <= self.limit)
            })
            .map_err(|used| {
                DataFusionError::ResourcesExhausted(format!(
                    "the query needs more than its memory budget of {} (--query-memory-limit): {} more wanted by {} with {} in use",
                    human_readable_size(self.limit),
                    human_readable_size(additional),
                    reservation.consumer().name(),
                    human_readable_size(used),
                ))
            })?;
        if self.total.try_grow(reservation, additional).is_err() {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{SERVER_MEMORY_BUSY} ({} in all, --memory-limit); retry shortly",
                human_readable_size(self.total_limit)
            )));
        }
        if !spills {
            self.unspillable.fetch_add(additional, Ordering::Relaxed);
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

/// A result stream under a deadline, holding its tenant's query slot.
/// Past the deadline it ends with [`LimitError::Timeout`]; dropping the
/// inner stream cancels the plan.
pub struct LimitedStream {
    inner: Option<SendableRecordBatchStream>,
    schema: SchemaRef,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    _slot: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for LimitedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitedStream")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl LimitedStream {
    pub fn new(
        inner: SendableRecordBatchStream,
        deadline: tokio::time::Instant,
        timeout: Duration,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Self {
        LimitedStream {
            schema: inner.schema(),
            inner: Some(inner),
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            timeout,
            _slot: slot,
        }
    }
}

impl Stream for LimitedStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(item) = inner.as_mut().poll_next(cx) {
            if item.is_none() {
                self.inner = None;
                self._slot = None;
            }
            return Poll::Ready(item);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.inner = None;
            self._slot = None;
            let err = LimitError::Timeout(self.timeout);
            return Poll::Ready(Some(Err(DataFusionError::External(Box::new(err)))));
        }
        Poll::Pending
    }
}

impl RecordBatchStream for LimitedStream {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// The runtime queries execute on: worker threads of their own, apart
/// from the ones that serve HTTP and ingest, so a CPU-heavy plan cannot
/// starve acknowledgements, health checks or its own timeout. They run at
/// the priority of the flusher and maintenance
/// ([`crate::background::lower_priority`]): at a higher one, queries that
/// scan back to back took 86% of both cores and left maintenance 12%, so
/// files piled up and the flusher fell behind ingest.
#[derive(Debug)]
pub struct QueryRuntime(crate::background::LowPriorityRuntime);

impl QueryRuntime {
    pub fn new(threads: usize) -> std::io::Result<Self> {
        crate::background::LowPriorityRuntime::new(
            "query",
            threads,
            Some(super::bounds::QUERY_THREAD_STACK),
        )
        .map(QueryRuntime)
    }

    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        self.0.handle()
    }
}

/// Aborts the query's task when the result stream is dropped (the client
/// went away, or the timeout struck).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `work` (planning) to its end on a thread of its own, from the
/// query runtime's blocking pool, holding `slot` until it ends.
///
/// Planning does not yield: on a worker thread, a plan that takes seconds
/// would hold up every query queued behind it, and no timeout could
/// answer before it ended. On a thread of its own it shares the cores
/// with the workers, and the caller can give up on it at once; it then
/// runs on to its end (it cannot be stopped), still counted in its
/// tenant's slots. The size bounds (`bounds`) keep that end near.
fn plan_on_own_thread<F>(
    runtime: &QueryRuntime,
    slot: OwnedSemaphorePermit,
    work: F,
) -> tokio::task::JoinHandle<(F::Output, OwnedSemaphorePermit)>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handle = runtime.handle().clone();
    runtime
        .handle()
        .spawn_blocking(move || (handle.block_on(work), slot))
}

/// Runs a query under `limits`: takes a slot for `tenant`, plans `start`
/// on a thread of its own ([`plan_on_own_thread`]), then executes it on
/// the query runtime within the timeout. Batches come back through a
/// small channel, under the same deadline.
pub async fn run_limited<F, E>(
    limits: &QueryLimits,
    runtime: &QueryRuntime,
    tenant: &TenantId,
    start: F,
) -> Result<SendableRecordBatchStream, E>
where
    F: Future<Output = Result<SendableRecordBatchStream, E>> + Send + 'static,
    E: From<DataFusionError> + Send + 'static,
{
    let slot = limits
        .admit(tenant)
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    let timeout = limits.settings.timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    type Started<E> = Result<(SchemaRef, OwnedSemaphorePermit), E>;
    let (schema_tx, schema_rx) = tokio::sync::oneshot::channel::<Started<E>>();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
    let planning = plan_on_own_thread(runtime, slot, start);
    let task = runtime.handle().spawn(async move {
        let (mut stream, slot) = match planning.await {
            Ok((Ok(stream), slot)) => (stream, slot),
            Ok((Err(e), _)) => {
                let _ = schema_tx.send(Err(e));
                return;
            }
            Err(e) => {
                let e = DataFusionError::Internal(format!("planning the query failed: {e}"));
                let _ = schema_tx.send(Err(e.into()));
                return;
            }
        };
        let _ = schema_tx.send(Ok((stream.schema(), slot)));
        while let Some(item) = stream.next().await {
            if tx.send(item).await.is_err() {
                break;
            }
        }
    });
    let abort = AbortOnDrop(task);
    let timed_out = || DataFusionError::External(Box::new(LimitError::Timeout(timeout)));
    let (schema, slot) = tokio::time::timeout_at(deadline, schema_rx)
        .await
        .map_err(|_| timed_out())?
        .map_err(|_| DataFusionError::Internal("the query task ended early".into()))??;
    let batches = futures::stream::poll_fn(move |cx| {
        let _keep = &abort;
        rx.poll_recv(cx)
    });
    let stream = RecordBatchStreamAdapter::new(schema, batches);
    Ok(Box::pin(LimitedStream::new(
        Box::pin(stream),
        deadline,
        timeout,
        Some(slot),
    )))
}

/// Runs `work`, which plans a query without executing it (a Flight
/// `GetFlightInfo` or prepared statement), under `limits` as
/// [`run_limited`] plans a query: a slot for `tenant`, on a thread of its
/// own, within the timeout.
pub async fn plan_limited<F, T, E>(
    limits: &QueryLimits,
    runtime: &QueryRuntime,
    tenant: &TenantId,
    work: F,
) -> Result<T, E>
where
    F: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: From<DataFusionError> + Send + 'static,
{
    let slot = limits
        .admit(tenant)
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    let timeout = limits.settings.timeout;
    let task = plan_on_own_thread(runtime, slot, work);
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok((result, _slot))) => result,
        Ok(Err(e)) => {
            Err(DataFusionError::Internal(format!("the planning task failed: {e}")).into())
        }
        Err(_) => Err(DataFusionError::External(Box::new(LimitError::Timeout(timeout))).into()),
    }
}

/// The limit error inside a DataFusion error, however deeply wrapped.
pub fn limit_error(e: &DataFusionError) -> Option<&LimitError> {
    match e {
        DataFusionError::External(inner) => inner.downcast_ref::<LimitError>().or_else(|| {
            inner
                .downcast_ref::<DataFusionError>()
                .and_then(limit_error)
        }),
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            limit_error(inner)
        }
        DataFusionError::Shared(inner) => limit_error(inner),
        DataFusionError::ArrowError(inner, _) => match inner.as_ref() {
            arrow::error::ArrowError::ExternalError(e) => e
                .downcast_ref::<DataFusionError>()
                .and_then(limit_error)
                .or_else(|| e.downcast_ref::<LimitError>()),
            _ => None,
        },
        _ => None,
    }
}
