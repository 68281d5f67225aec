//! The task that runs one pipeline: it reads the source after the
//! pipeline's position as a subscription does, runs the operators over
//! each micro-batch, stores the output in the sink table through the
//! WAL, and then the progress (with the windows' state). The outputs' ids
//! derive from the source positions ([`crate::pipeline::sink`]), so a
//! micro-batch run again after a crash is answered as duplicates.

use super::pipeline_feed::Feed;
use super::pipelines::table_name;
use super::subscribe::{Start, Subscribe};
use super::{Error, Kind, Result, Service};
use crate::auth::{Definer, Principal};
use crate::ids::{ProjectionName, TableName};
use crate::pipeline::sink::{Converted, Ordinals, to_events};
use crate::pipeline::{Chain, ChainState, Operator, Pipeline};
use crate::projection::Health;
use arrow::array::RecordBatch;
use futures::FutureExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Most events one write to the sink carries.
const SINK_CHUNK: usize = 10_000;

/// How long a pipeline waits before trying again after an error it can
/// get past (full buffers, a busy ingest budget, a failed read).
const RETRY: Duration = Duration::from_millis(200);

/// How often a pipeline looks whether the projections it enriches from
/// have caught up, and how long it waits before saying so in its status.
const LOOKUP_POLL: Duration = Duration::from_millis(10);
const LOOKUP_PATIENCE: Duration = Duration::from_secs(1);

/// A running pipeline's plan and the state of its windows, made at its
/// first micro-batch (the plan again when the source grows columns).
#[derive(Debug, Default)]
struct Planned {
    chain: Option<Chain>,
    state: Option<ChainState>,
}

/// The message a panic carried.
fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}

impl Service {
    /// Runs `pipeline` until it is paused, deleted or fails, or the
    /// server stops. The task starts once the pipeline's previous task
    /// has ended, and a stop takes effect between micro-batches, so that
    /// a new version starts at a position boundary.
    pub(super) fn spawn_pipeline(self: &Arc<Self>, pipeline: Arc<Pipeline>) {
        let service = self.clone();
        let stop = pipeline.restart_token();
        tokio::spawn(async move {
            let _slot = pipeline.run_slot().await;
            if stop.is_cancelled() {
                return;
            }
            tokio::select! {
                _ = service.closing.cancelled() => {}
                result = std::panic::AssertUnwindSafe(service.run_pipeline(&pipeline, &stop)).catch_unwind() => {
                    let message = match result {
                        Ok(Ok(())) => return,
                        Ok(Err(e)) => e.message,
                        Err(panic) => format!("internal error: {}", panic_text(&panic)),
                    };
                    tracing::warn!(tenant = %pipeline.tenant, pipeline = %pipeline.name, error = %message, "pipeline failed");
                    pipeline.fail(message);
                }
            }
        });
    }

    /// Reads the source after the pipeline's position and runs each
    /// micro-batch until `stop`; returns the error that stops it.
    async fn run_pipeline(
        self: &Arc<Self>,
        pipeline: &Arc<Pipeline>,
        stop: &CancellationToken,
    ) -> Result<()> {
        let caller = Definer::reader(pipeline.spec.definer.as_ref(), pipeline.tenant.clone());
        let source = table_name("source.table", &pipeline.spec.source.table)?;
        let sink = table_name("sink.table", &pipeline.spec.sink.table)?;
        let mut plan = Planned::default();
        let pause = || async {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(RETRY) => {}
            }
        };
        while !stop.is_cancelled() {
            let start = match pipeline.progress().position {
                Some(p) => Start::After(p),
                None => Start::parse(pipeline.spec.source.start()).map_err(Error::invalid)?,
            };
            let request = Subscribe::new(source.clone(), start);
            let subscription = match self.subscribe_internal(&caller, request).await {
                Ok(s) => s,
                Err(e) if matches!(e.kind, Kind::NotFound | Kind::Invalid | Kind::Forbidden) => {
                    return Err(e);
                }
                Err(e) => {
                    pipeline.retrying(e.message);
                    pause().await;
                    continue;
                }
            };
            let mut feed = Feed::open(pipeline, subscription);
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    next = feed.next(self, pipeline, &caller, &source) => next,
                };
                match next {
                    Ok(Some(micro)) => {
                        tokio::select! {
                            _ = stop.cancelled() => return Ok(()),
                            _ = self.lookups_caught_up(pipeline) => {}
                        }
                        self.run_batch(
                            pipeline,
                            &caller,
                            &sink,
                            &mut plan,
                            micro.batches,
                            micro.upto,
                        )
                        .await?;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        pipeline.retrying(e.message);
                        pause().await;
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Waits until each projection the pipeline enriches from has folded
    /// every event its table had acknowledged when the wait began, so
    /// that a micro-batch meets the lookups as of at least its own events
    /// (after a restart, a projection folds again from its snapshot while
    /// the pipeline resumes). A projection that does not exist is left to
    /// the plan, which names it.
    async fn lookups_caught_up(&self, pipeline: &Pipeline) {
        let started = std::time::Instant::now();
        let names = pipeline.spec.operators.iter().filter_map(|op| match op {
            Operator::Enrich(spec) => spec.projection.as_deref(),
            _ => None,
        });
        for name in names {
            let Ok(name) = name.parse::<ProjectionName>() else {
                continue;
            };
            let mut target = None;
            while let Some(live) = self.projections.get(&pipeline.tenant, &name) {
                let Some(table) = self.db.table(&live.tenant, &live.table) else {
                    break;
                };
                let head = *target.get_or_insert_with(|| table.highest_position());
                if head < table.first_position() || live.position() >= head {
                    break;
                }
                if started.elapsed() >= LOOKUP_PATIENCE {
                    let failed = match live.health() {
                        Health::Failed(why) => format!(", which failed: {why}"),
                        Health::Running => String::new(),
                    };
                    pipeline.retrying(format!(
                        "waiting for projection {:?} to fold its table up to position {head} (it is at {}{failed})",
                        name.as_str(),
                        live.position()
                    ));
                }
                tokio::time::sleep(LOOKUP_POLL).await;
            }
        }
    }

    /// Runs the operators over one micro-batch (source events up to
    /// position `upto`), stores the output in `sink`, then the progress.
    async fn run_batch(
        self: &Arc<Self>,
        pipeline: &Arc<Pipeline>,
        caller: &Principal,
        sink: &TableName,
        plan: &mut Planned,
        batches: Vec<RecordBatch>,
        upto: u64,
    ) -> Result<()> {
        let Planned { chain, state } = plan;
        let read = crate::pipeline::rows_of(&batches);
        let Some(first) = batches.first().map(RecordBatch::schema) else {
            return pipeline
                .update(|p| p.position = Some(upto))
                .map_err(|e| Error::new(Kind::Unavailable, format!("storing its progress: {e}")));
        };
        // Whether `schema` has every column of the micro-batch: the plan
        // is made again when the source has columns it lacks.
        let covers = |schema: &arrow::datatypes::SchemaRef| {
            batches.iter().all(|b| {
                b.schema()
                    .fields()
                    .iter()
                    .all(|f| schema.field_with_name(f.name()).is_ok())
            })
        };
        if !chain.as_ref().is_some_and(|c| covers(c.input())) {
            let source = table_name("source.table", &pipeline.spec.source.table)?;
            let mut input = self.source_schema(caller, &source).await?;
            if !covers(&input) {
                input = first;
            }
            *chain = Some(loop {
                match self
                    .plan_chain(caller, input.clone(), pipeline.spec.operators.clone())
                    .await
                {
                    Ok(c) => break c,
                    Err(e) if e.kind == Kind::Invalid => return Err(e),
                    Err(e) => {
                        pipeline.retrying(e.message);
                        tokio::time::sleep(RETRY).await;
                    }
                }
            });
        }
        let Some(chain) = chain.as_ref() else {
            return Err(Error::internal("the pipeline has no plan"));
        };
        let input = chain.input().clone();
        let batches = batches
            .iter()
            .map(|b| crate::schema::adapt_batch(b, &input))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::internal(format!("reading the source: {e}")))?;
        if state.is_none() {
            let progress = pipeline.progress();
            *state = Some(chain.state(&progress.operator_state, &progress.worker_state)?);
        }
        let Some(state) = state.as_mut() else {
            return Err(Error::internal("the pipeline has no state"));
        };
        let (out, runs) = chain.run(batches, state).await?;
        let (stored, workers) = chain.store(state)?;
        let mut converted = Converted::default();
        let mut ordinals = Ordinals::default();
        for batch in &out {
            to_events(
                batch,
                &pipeline.spec.id,
                &chain.json_columns,
                &mut ordinals,
                &mut converted,
            )
            .map_err(Error::internal)?;
        }
        let (mut written, mut duplicates) = (0u64, 0u64);
        for chunk in converted.events.chunks(SINK_CHUNK) {
            let outcome = self.write_sink(pipeline, sink, chunk).await?;
            // An output a rerun finds stored was written by this
            // pipeline's earlier run: it counts as written once.
            written += (outcome.accepted + outcome.duplicates) as u64;
            duplicates += outcome.duplicates as u64;
        }
        // Made before the position moves past its first outputs, so that
        // a reader who sees the position finds the subscription.
        let unmade = match written > 0 && pipeline.spec.sink.subscription.is_some() {
            true => self
                .make_sink_subscription(&pipeline.tenant, &pipeline.spec.sink)
                .await
                .err(),
            false => None,
        };
        let invalid = converted.invalid;
        pipeline
            .update(|p| {
                p.position = Some(upto);
                p.add(read, &runs);
                p.events_written += written;
                p.duplicates += duplicates;
                p.invalid += invalid;
                p.operator_state = stored;
                p.worker_state = workers;
            })
            .map_err(|e| Error::new(Kind::Unavailable, format!("storing its progress: {e}")))?;
        if let Some(e) = unmade {
            // The outputs are stored; the subscription is tried again
            // after the next micro-batch.
            pipeline.retrying(format!("making its sink subscription: {}", e.message));
        }
        if let Some(problem) = converted.first_problem {
            tracing::debug!(pipeline = %pipeline.name, %problem, "pipeline output rows skipped");
        }
        Ok(())
    }

    /// Stores `events` in `sink`, retrying while the buffers or the
    /// ingest budget are full; an error the events themselves cause
    /// stops the pipeline.
    async fn write_sink(
        &self,
        pipeline: &Pipeline,
        sink: &TableName,
        events: &[crate::ingest::Event],
    ) -> Result<crate::db::IngestOutcome> {
        let size: usize = events.iter().map(crate::ingest::Event::memory_size).sum();
        if let Some(wait) = crate::fault::delay("pipeline-sink-delay") {
            tokio::time::sleep(wait.mul_f64(events.len() as f64 / 1000.0)).await;
        }
        loop {
            let mut held = self.ingest_budget.reserve();
            if let Err(e) = held.grow(size) {
                let e = super::ingest::budget_refusal(e, "a pipeline's output");
                if e.kind == Kind::TooLarge {
                    return Err(e);
                }
                pipeline.retrying(e.message);
                tokio::time::sleep(RETRY).await;
                continue;
            }
            // Detached, so that stopping the pipeline cannot cancel an
            // ingest between claiming its event ids and logging them.
            let (db, tenant, table, batch) = (
                self.db.clone(),
                pipeline.tenant.clone(),
                sink.clone(),
                events.to_vec(),
            );
            let stored = tokio::spawn(async move {
                let outcome = db.ingest(&tenant, &table, batch).await;
                drop(held);
                outcome
            })
            .await
            .map_err(|e| Error::internal(e.to_string()))?;
            match stored {
                Ok(outcome) => return Ok(outcome),
                Err(e) => {
                    let e = Error::from(e);
                    if e.kind == Kind::Invalid || e.kind == Kind::TooLarge {
                        return Err(Error::new(
                            e.kind,
                            format!("writing to {sink}: {}", e.message),
                        ));
                    }
                    pipeline.retrying(e.message);
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}
