//! Pipelines as the service offers them: defined, paused, resumed and
//! deleted by a writer, listed and shown to readers; each run by a task
//! of its own that reads its source table after its position, as a
//! subscription does, runs the operators over each micro-batch, stores
//! the output in the sink table through the WAL, and then stores its new
//! position. The outputs' ids derive from the source positions
//! ([`crate::pipeline::sink`]), so a micro-batch run again after a crash
//! is answered as duplicates: each output is stored once.

use super::subscribe::{Start, Subscribe};
use super::{Error, Kind, Result, Service};
use crate::auth::{Principal, Role};
use crate::ids::{PipelineName, TableName};
use crate::pipeline::sink::{Converted, Ordinals, to_events};
use crate::pipeline::store::AddError;
use crate::pipeline::{
    Chain, MAX_OPERATORS, Operator, OperatorCounters, Pipeline, Sink, Source, Spec, Status,
};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Most events one write to the sink carries.
const SINK_CHUNK: usize = 10_000;

/// How long a pipeline waits before trying again after an error it can
/// get past (full buffers, a busy ingest budget, a failed read).
const RETRY: Duration = Duration::from_millis(200);

/// What makes a pipeline (the body of `POST /v1/pipelines`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePipeline {
    pub name: String,
    #[serde(default = "first_version")]
    pub version: u32,
    pub source: Source,
    #[serde(default)]
    pub operators: Vec<Operator>,
    pub sink: Sink,
}

fn first_version() -> u32 {
    1
}

/// A pipeline as its tenant sees it.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineInfo {
    pub name: String,
    pub version: u32,
    pub id: String,
    pub created_ms: i64,
    pub source: Source,
    pub operators: Vec<Operator>,
    pub sink: Sink,
    pub status: Status,
    /// Why it failed, or the error it is retrying past.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Every source event up to here has been run and its output stored.
    pub position: Option<u64>,
    /// Positions of the source table after it.
    pub lag_positions: u64,
    pub events_read: u64,
    /// Outputs stored in the sink (each once, however often it was run).
    pub events_written: u64,
    /// Of those, the ones a rerun after a crash found already stored.
    pub duplicates: u64,
    pub invalid: u64,
    /// Per operator, in order: events in and out, time spent.
    pub operator_stats: Vec<OperatorCounters>,
    pub updated_ms: i64,
}

fn name_of(name: &str) -> Result<PipelineName> {
    name.parse()
        .map_err(|e: crate::ids::InvalidName| Error::invalid(e.to_string()))
}

fn table_name(what: &str, name: &str) -> Result<TableName> {
    name.parse()
        .map_err(|e: crate::ids::InvalidName| Error::invalid(format!("{what}: {e}")))
}

fn no_pipeline(name: &PipelineName) -> Error {
    Error::new(
        Kind::NotFound,
        format!("pipeline {:?} does not exist", name.as_str()),
    )
}

impl Service {
    fn pipeline_info(&self, p: &Pipeline) -> PipelineInfo {
        let progress = p.progress();
        let highest = table_name("source", &p.spec.source.table)
            .ok()
            .and_then(|t| self.db.table(&p.tenant, &t))
            .map_or(0, |t| t.highest_position());
        PipelineInfo {
            name: p.spec.name.clone(),
            version: p.spec.version,
            id: p.spec.id.to_string(),
            created_ms: p.spec.created_ms,
            source: p.spec.source.clone(),
            operators: p.spec.operators.clone(),
            sink: p.spec.sink.clone(),
            status: p.status(),
            error: p.error(),
            position: progress.position,
            lag_positions: highest.saturating_sub(progress.position.unwrap_or(0)),
            events_read: progress.events_read,
            events_written: progress.events_written,
            duplicates: progress.duplicates,
            invalid: progress.invalid,
            operator_stats: progress.operators,
            updated_ms: progress.updated_ms,
        }
    }

    /// The caller's pipeline `name`.
    fn pipeline(&self, caller: &Principal, name: &str) -> Result<Arc<Pipeline>> {
        let name = name_of(name)?;
        self.pipelines
            .get(&caller.tenant, &name)
            .ok_or_else(|| no_pipeline(&name))
    }

    /// Plans `operators` over the source table's current schema, on the
    /// query threads.
    async fn plan_chain(
        self: &Arc<Self>,
        caller: &Principal,
        input: SchemaRef,
        operators: Vec<Operator>,
    ) -> Result<Chain> {
        let ctx = crate::query::session(&self.queries, caller)?;
        self.queries
            .plan(caller, async move {
                Chain::plan(&ctx, input, &operators)
                    .await
                    .map_err(|r| Error::invalid(r.to_string()))
            })
            .await
    }

    /// The schema the source table has in queries now.
    async fn source_schema(&self, caller: &Principal, table: &TableName) -> Result<SchemaRef> {
        let ctx = crate::query::session(&self.queries, caller)?;
        let provider = ctx.table_provider(table.as_str()).await.map_err(|_| {
            Error::new(
                Kind::NotFound,
                format!("table {:?} does not exist", table.as_str()),
            )
        })?;
        Ok(provider.schema())
    }

    /// Defines a pipeline (a writer's call) and starts it. Its operators
    /// are planned over the source table first: a 400 names the operator
    /// that cannot run and why.
    pub async fn create_pipeline(
        self: &Arc<Self>,
        caller: &Principal,
        request: CreatePipeline,
    ) -> Result<PipelineInfo> {
        caller.require(Role::Writer, "create pipelines")?;
        let name = name_of(&request.name)?;
        if request.version == 0 {
            return Err(Error::invalid("version: versions start at 1"));
        }
        if request.operators.len() > MAX_OPERATORS {
            return Err(Error::invalid(format!(
                "operators: {} given; a pipeline may have at most {MAX_OPERATORS}",
                request.operators.len()
            )));
        }
        let source = table_name("source.table", &request.source.table)?;
        let sink = table_name("sink.table", &request.sink.table)?;
        if source == sink {
            return Err(Error::invalid(
                "sink.table: a pipeline may not write into the table it reads",
            ));
        }
        if let Some(path) = self.pipeline_cycle(caller, &source, &sink) {
            return Err(Error::invalid(format!(
                "sink.table: writing into {sink:?} would feed this pipeline's own source through {path}"
            )));
        }
        if self.pipelines.get(&caller.tenant, &name).is_some() {
            return Err(Error::new(
                Kind::Conflict,
                format!("pipeline {:?} already exists", name.as_str()),
            ));
        }
        let start = Start::parse(&request.source.start).map_err(Error::invalid)?;
        let table = self.table_of(caller, &source)?;
        let input = self.source_schema(caller, &source).await?;
        self.plan_chain(caller, input, request.operators.clone())
            .await?;
        let position = match start {
            Start::Earliest => Some(0),
            Start::Now => Some(table.highest_position()),
            Start::After(n) => Some(n),
            Start::Since(_) => None,
        };
        let spec = Spec {
            name: name.to_string(),
            version: request.version,
            id: uuid::Uuid::now_v7(),
            created_ms: chrono::Utc::now().timestamp_millis(),
            source: request.source,
            operators: request.operators,
            sink: request.sink,
        };
        let pipeline = self
            .pipelines
            .add(
                &caller.tenant,
                &name,
                spec,
                position,
                self.config().max_pipelines,
            )
            .map_err(|e| match e {
                AddError::Exists(_) => Error::new(Kind::Conflict, e.to_string()),
                AddError::Full { .. } => Error::new(Kind::Overloaded, e.to_string()),
                AddError::Io(_) => Error::internal(e.to_string()),
            })?;
        self.spawn_pipeline(pipeline.clone());
        Ok(self.pipeline_info(&pipeline))
    }

    /// The chain of existing pipelines by which events written into
    /// `sink` would come back to `source`, if there is one.
    fn pipeline_cycle(
        &self,
        caller: &Principal,
        source: &TableName,
        sink: &TableName,
    ) -> Option<String> {
        let edges: Vec<(String, String, String)> = self
            .pipelines
            .list(&caller.tenant)
            .iter()
            .map(|p| {
                (
                    p.spec.source.table.clone(),
                    p.spec.sink.table.clone(),
                    p.spec.name.clone(),
                )
            })
            .collect();
        let mut frontier = vec![(sink.to_string(), Vec::<String>::new())];
        let mut seen = std::collections::HashSet::new();
        while let Some((table, path)) = frontier.pop() {
            if table == source.as_str() {
                return Some(format!("pipelines {}", path.join(" -> ")));
            }
            if !seen.insert(table.clone()) {
                continue;
            }
            for (from, to, name) in &edges {
                if *from == table {
                    let mut next = path.clone();
                    next.push(name.clone());
                    frontier.push((to.clone(), next));
                }
            }
        }
        None
    }

    /// The caller's pipelines.
    pub fn list_pipelines(&self, caller: &Principal) -> Result<Vec<PipelineInfo>> {
        caller.require(Role::Reader, "list pipelines")?;
        Ok(self
            .pipelines
            .list(&caller.tenant)
            .iter()
            .map(|p| self.pipeline_info(p))
            .collect())
    }

    pub fn describe_pipeline(&self, caller: &Principal, name: &str) -> Result<PipelineInfo> {
        caller.require(Role::Reader, "read pipelines")?;
        let pipeline = self.pipeline(caller, name)?;
        Ok(self.pipeline_info(&pipeline))
    }

    /// Stops a pipeline where it is, for good until it is resumed.
    pub fn pause_pipeline(&self, caller: &Principal, name: &str) -> Result<PipelineInfo> {
        caller.require(Role::Writer, "pause pipelines")?;
        let pipeline = self.pipeline(caller, name)?;
        pipeline.stop_task();
        pipeline
            .set_paused(true)
            .map_err(|e| Error::internal(format!("cannot store the pipeline: {e}")))?;
        Ok(self.pipeline_info(&pipeline))
    }

    /// Starts a paused (or failed) pipeline again from its position.
    pub fn resume_pipeline(
        self: &Arc<Self>,
        caller: &Principal,
        name: &str,
    ) -> Result<PipelineInfo> {
        caller.require(Role::Writer, "resume pipelines")?;
        let pipeline = self.pipeline(caller, name)?;
        pipeline
            .set_paused(false)
            .map_err(|e| Error::internal(format!("cannot store the pipeline: {e}")))?;
        self.spawn_pipeline(pipeline.clone());
        Ok(self.pipeline_info(&pipeline))
    }

    pub fn delete_pipeline(&self, caller: &Principal, name: &str) -> Result<()> {
        caller.require(Role::Writer, "delete pipelines")?;
        let name = name_of(name)?;
        match self.pipelines.delete(&caller.tenant, &name) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(no_pipeline(&name)),
            Err(e) => Err(Error::internal(format!("cannot delete the pipeline: {e}"))),
        }
    }

    /// Starts every stored pipeline that is not paused.
    pub fn start_pipelines(self: &Arc<Self>) {
        for pipeline in self.pipelines.all() {
            if !pipeline.progress().paused {
                self.spawn_pipeline(pipeline);
            }
        }
    }

    /// Runs `pipeline` until it is paused, deleted or fails, or the
    /// server stops.
    fn spawn_pipeline(self: &Arc<Self>, pipeline: Arc<Pipeline>) {
        let service = self.clone();
        let stop = pipeline.restart_token();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = service.closing.cancelled() => {}
                result = service.run_pipeline(&pipeline) => {
                    if let Err(e) = result {
                        tracing::warn!(tenant = %pipeline.tenant, pipeline = %pipeline.name, error = %e.message, "pipeline failed");
                        pipeline.fail(e.message);
                    }
                }
            }
        });
    }

    /// Reads the source after the pipeline's position and runs each
    /// micro-batch, for ever; returns the error that stops it.
    async fn run_pipeline(self: &Arc<Self>, pipeline: &Arc<Pipeline>) -> Result<()> {
        let caller = Principal::local_admin(pipeline.tenant.clone());
        let source = table_name("source.table", &pipeline.spec.source.table)?;
        let sink = table_name("sink.table", &pipeline.spec.sink.table)?;
        let mut chain: Option<Chain> = None;
        loop {
            let start = match pipeline.progress().position {
                Some(p) => Start::After(p),
                None => Start::parse(&pipeline.spec.source.start).map_err(Error::invalid)?,
            };
            let request = Subscribe::new(source.clone(), start);
            let mut subscription = match self.subscribe_internal(&caller, request).await {
                Ok(s) => s,
                Err(e) if e.kind == Kind::NotFound || e.kind == Kind::Invalid => return Err(e),
                Err(e) => {
                    pipeline.retrying(e.message);
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            loop {
                match subscription.next(Duration::from_secs(5)).await {
                    Ok(Some(batches)) => {
                        let upto = subscription.position();
                        self.run_batch(pipeline, &caller, &sink, &mut chain, batches, upto)
                            .await?;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        pipeline.retrying(e.message);
                        tokio::time::sleep(RETRY).await;
                        break;
                    }
                }
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
        chain: &mut Option<Chain>,
        batches: Vec<RecordBatch>,
        upto: u64,
    ) -> Result<()> {
        let read: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        let Some(first) = batches.first().map(RecordBatch::schema) else {
            return pipeline
                .update(|p| p.position = Some(upto))
                .map_err(|e| Error::new(Kind::Unavailable, format!("storing its progress: {e}")));
        };
        // Planned again when the source has columns the plan lacks.
        let fits = |c: &Chain| {
            batches.iter().all(|b| {
                b.schema()
                    .fields()
                    .iter()
                    .all(|f| c.input().field_with_name(f.name()).is_ok())
            })
        };
        if !chain.as_ref().is_some_and(fits) {
            let source = table_name("source.table", &pipeline.spec.source.table)?;
            let mut input = self.source_schema(caller, &source).await?;
            if !batches.iter().all(|b| {
                b.schema()
                    .fields()
                    .iter()
                    .all(|f| input.field_with_name(f.name()).is_ok())
            }) {
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
        let (out, runs) = chain.run(batches).await?;
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
        let invalid = converted.invalid;
        pipeline
            .update(|p| {
                p.position = Some(upto);
                p.add(read, &runs);
                p.events_written += written;
                p.duplicates += duplicates;
                p.invalid += invalid;
            })
            .map_err(|e| Error::new(Kind::Unavailable, format!("storing its progress: {e}")))?;
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
