//! Pipelines as the service offers them: defined, paused, resumed and
//! deleted by a writer, listed and shown to readers; each run by a task
//! of its own that reads its source table after its position, as a
//! subscription does, runs the operators over each micro-batch, stores
//! the output in the sink table through the WAL, and then stores its new
//! position. The outputs' ids derive from the source positions
//! ([`crate::pipeline::sink`]), so a micro-batch run again after a crash
//! is answered as duplicates: each output is stored once.

use super::groups::CreateGroup;
use super::subscribe::Start;
use super::{Error, Kind, Result, Service};
use crate::auth::{Principal, Role};
use crate::ids::{GroupName, PipelineName, TableName};
use crate::pipeline::store::AddError;
use crate::pipeline::{
    Backpressure, Chain, MAX_BUFFERED_EVENTS, MAX_OPERATORS, Operator, OperatorCounters, Pipeline,
    Sink, Source, Spec, Status,
};
use crate::policy::Action;
use arrow::datatypes::SchemaRef;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What makes a pipeline (the body of `POST /v1/pipelines`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePipeline {
    pub name: String,
    #[serde(default = "first_version")]
    pub version: u32,
    pub source: Source,
    /// The operators as sent: each is read once its DSL forms are
    /// compiled to SQL ([`Service::operators_of`]).
    #[serde(default)]
    pub operators: Vec<serde_json::Value>,
    pub sink: Sink,
    #[serde(default)]
    pub backpressure: Backpressure,
}

/// How long a new version, a pause or a delete waits for the running
/// task to finish its micro-batch.
const REPLACE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

fn check_backpressure(b: &Backpressure) -> Result<()> {
    match *b {
        Backpressure::Block => Ok(()),
        Backpressure::Buffer { max_events } if !(1..=MAX_BUFFERED_EVENTS).contains(&max_events) => {
            Err(Error::invalid(format!(
                "backpressure.max_events: {max_events}; give 1 to {MAX_BUFFERED_EVENTS}"
            )))
        }
        Backpressure::Buffer { .. } => Ok(()),
        Backpressure::Drop { max_lag: 0 } => Err(Error::invalid(
            "backpressure.max_lag: must be at least 1 (0 would skip every event)",
        )),
        Backpressure::Drop { .. } => Ok(()),
    }
}

/// The name of `sink`'s subscription, if it has one.
fn sink_group(sink: &Sink) -> Result<Option<GroupName>> {
    sink.subscription
        .as_deref()
        .map(|name| {
            name.parse().map_err(|e: crate::ids::InvalidName| {
                Error::invalid(format!("sink.subscription: {e}"))
            })
        })
        .transpose()
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
    pub backpressure: Backpressure,
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
    /// Source events skipped unread (`drop` backpressure), and the latest
    /// ranges of positions skipped.
    pub skipped: u64,
    pub skipped_ranges: Vec<[u64; 2]>,
    /// Events read ahead and not yet run (`buffer` backpressure).
    pub buffered: u64,
    /// Per operator, in order: events in and out, time spent.
    pub operator_stats: Vec<OperatorCounters>,
    pub updated_ms: i64,
}

fn name_of(name: &str) -> Result<PipelineName> {
    name.parse()
        .map_err(|e: crate::ids::InvalidName| Error::invalid(e.to_string()))
}

pub(super) fn table_name(what: &str, name: &str) -> Result<TableName> {
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
        PipelineInfo {
            name: p.spec.name.clone(),
            version: p.spec.version,
            id: p.spec.id.to_string(),
            created_ms: p.spec.created_ms,
            source: p.spec.source.clone(),
            operators: p.spec.operators.clone(),
            sink: p.spec.sink.clone(),
            backpressure: p.spec.backpressure,
            status: p.status(),
            error: p.error(),
            position: progress.position,
            lag_positions: p.lag_positions(&self.db),
            events_read: progress.events_read,
            events_written: progress.events_written,
            duplicates: progress.duplicates,
            invalid: progress.invalid,
            skipped: progress.skipped,
            skipped_ranges: progress.skipped_ranges,
            buffered: p.buffered(),
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
    pub(super) async fn plan_chain(
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
    pub(super) async fn source_schema(
        &self,
        caller: &Principal,
        table: &TableName,
    ) -> Result<SchemaRef> {
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
        mut request: CreatePipeline,
    ) -> Result<PipelineInfo> {
        caller.require(Role::Writer, "create pipelines")?;
        let definer = self.definer_for(caller, &request.source.table)?;
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
        if request.sink.table.is_empty() {
            match &request.sink.subscription {
                Some(name) => request.sink.table = name.clone(),
                None => {
                    return Err(Error::invalid(
                        "sink: give a table, a subscription, or both",
                    ));
                }
            }
        }
        let source = table_name("source.table", &request.source.table)?;
        let sink = table_name("sink.table", &request.sink.table)?;
        // Its outputs are written as its definer would write them.
        self.allowed_by_policies(caller, Action::Ingest, sink.as_str(), None, None)?;
        self.check_sink_subscription(caller, &request.sink)?;
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
        check_backpressure(&request.backpressure)?;
        let operators = self
            .operators_of(caller, &source, std::mem::take(&mut request.operators))
            .await?;
        for op in &operators {
            if let Operator::Enrich(e) = op {
                if let Some(table) = &e.table {
                    self.allowed_by_policies(caller, Action::Query, table, None, None)?;
                }
                let live = (e.projection.as_ref())
                    .and_then(|p| p.parse().ok())
                    .and_then(|p| self.projections.get(&caller.tenant, &p));
                if let Some(live) = live {
                    self.projection_readable(caller, &live)?;
                }
            }
        }
        let old = self.pipelines.get(&caller.tenant, &name);
        if let Some(old) = &old
            && request.version <= old.spec.version
        {
            return Err(Error::new(
                Kind::Conflict,
                format!(
                    "pipeline {:?} exists at version {}; a new version must have a higher number",
                    name.as_str(),
                    old.spec.version
                ),
            ));
        }
        let start = match &request.source.start {
            Some(text) => Some(Start::parse(text).map_err(Error::invalid)?),
            None => None,
        };
        let table = self.table_of(caller, &source)?;
        let input = self.source_schema(caller, &source).await?;
        self.plan_chain(caller, input, operators.clone()).await?;
        let position_of = |start: &Start| match start {
            Start::Earliest => Some(table.first_position() - 1),
            Start::Now => Some(table.highest_position()),
            Start::After(n) => Some((*n).max(table.first_position() - 1)),
            Start::Since(_) => None,
        };
        let mut spec = Spec {
            name: name.to_string(),
            version: request.version,
            id: uuid::Uuid::now_v7(),
            created_ms: chrono::Utc::now().timestamp_millis(),
            source: request.source,
            operators,
            sink: request.sink,
            backpressure: request.backpressure,
            definer: Some(definer),
        };
        // The sink subscription is made now when its table exists, else
        // with the first output.
        let made = match self.table_of(caller, &sink) {
            Ok(_) => {
                self.make_sink_subscription(&caller.tenant, &spec.sink)
                    .await?
            }
            Err(_) => None,
        };
        let added = match old {
            None => self.pipelines.add(
                &caller.tenant,
                &name,
                spec,
                position_of(start.as_ref().unwrap_or(&Start::Earliest)),
                self.config().max_pipelines,
            ),
            Some(old) => {
                // The running version ends its micro-batch first; the new
                // one starts after the position it stored.
                if !old.stop_and_wait(REPLACE_WAIT).await {
                    self.spawn_pipeline(old.clone());
                    return Err(Error::new(
                        Kind::Unavailable,
                        format!(
                            "version {} of pipeline {:?} did not finish its micro-batch within {} s; try again",
                            old.spec.version,
                            name.as_str(),
                            REPLACE_WAIT.as_secs()
                        ),
                    ));
                }
                let position = match &start {
                    Some(start) => position_of(start),
                    None => {
                        let at = old.progress().position;
                        spec.source.start = Some(match at {
                            Some(p) => format!("after:{p}"),
                            None => old.spec.source.start().to_string(),
                        });
                        at
                    }
                };
                let replaced = self.pipelines.replace(&old, spec, position);
                if replaced.is_err() && !old.progress().paused {
                    self.spawn_pipeline(old.clone());
                }
                replaced
            }
        };
        if added.is_err()
            && let Some(name) = made
        {
            let _ = self.delete_group(caller, &name).await;
        }
        let pipeline = added.map_err(|e| match e {
            AddError::Exists(_) | AddError::Changed(_) => Error::new(Kind::Conflict, e.to_string()),
            AddError::Full { .. } => Error::new(Kind::Overloaded, e.to_string()),
            AddError::Io(_) => Error::internal(e.to_string()),
        })?;
        self.spawn_pipeline(pipeline.clone());
        Ok(self.pipeline_info(&pipeline))
    }

    /// Refuses a sink subscription whose name is taken by one on another
    /// table.
    fn check_sink_subscription(&self, caller: &Principal, sink: &Sink) -> Result<()> {
        let Some(name) = sink_group(sink)? else {
            return Ok(());
        };
        match self.db.groups().get(&caller.tenant, &name) {
            Some(group) if group.def.table != sink.table => Err(Error::new(
                Kind::Conflict,
                format!(
                    "sink.subscription: subscription {:?} reads table {:?}, not {:?}",
                    name.as_str(),
                    group.def.table,
                    sink.table
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Makes `sink`'s subscription, from the sink table's first position,
    /// unless it is there (the table must exist); its name if this made it.
    pub(super) async fn make_sink_subscription(
        self: &Arc<Self>,
        tenant: &crate::ids::TenantId,
        sink: &Sink,
    ) -> Result<Option<GroupName>> {
        let Some(name) = sink_group(sink)? else {
            return Ok(None);
        };
        if self.db.groups().get(tenant, &name).is_some() {
            return Ok(None);
        }
        let caller = Principal::local_admin(tenant.clone());
        let request = CreateGroup {
            name: name.clone(),
            table: table_name("sink.table", &sink.table)?,
            filter: None,
            where_dsl: None,
            start: Start::Earliest,
            raw: false,
        };
        match self.create_group(&caller, request).await {
            Ok(_) => Ok(Some(name)),
            Err(e) if e.kind == Kind::Conflict => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The operators of a definition, each read after its DSL forms (a
    /// JSON array where an expression goes) are compiled to SQL over the
    /// source table, so that the pipeline keeps and plans SQL only.
    async fn operators_of(
        &self,
        caller: &Principal,
        source: &TableName,
        raw: Vec<serde_json::Value>,
    ) -> Result<Vec<Operator>> {
        let mut operators = Vec::with_capacity(raw.len());
        for (i, mut op) in raw.into_iter().enumerate() {
            let kind = op
                .get("op")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("")
                .to_string();
            let located = |place: &str, e: crate::dsl::QueryError| {
                let e = Error::from(e);
                Error::new(
                    e.kind,
                    format!("operators[{i}] ({kind}): {place}: {}", e.message),
                )
            };
            // Where each operator takes expressions: one field, or each
            // value of a map; a filter's is a condition.
            let (field, each) = match kind.as_str() {
                "filter" => ("where", false),
                "map" => ("fields", true),
                "flat_map" => ("array", false),
                "deduplicate" | "throttle" | "partition" => ("key", false),
                "window" | "batch" => ("key", true),
                "enrich" => ("on", true),
                _ => ("", false),
            };
            let mut places: Vec<(String, &mut serde_json::Value)> = Vec::new();
            match (op.get_mut(field), each) {
                (Some(serde_json::Value::Object(map)), true) => {
                    for (name, value) in map.iter_mut() {
                        places.push((format!("{field}.{name}"), value));
                    }
                }
                (Some(value), false) => places.push((field.to_string(), value)),
                _ => {}
            }
            for (place, value) in places {
                if !value.is_array() {
                    continue;
                }
                let table = source.as_str();
                let sql = match kind.as_str() {
                    "filter" => crate::dsl::where_sql(&self.queries, caller, table, value).await,
                    _ => crate::dsl::expr_sql(&self.queries, caller, table, value).await,
                }
                .map_err(|e| located(&place, e))?;
                *value = serde_json::Value::String(sql);
            }
            let op: Operator = serde_json::from_value(op)
                .map_err(|e| Error::invalid(format!("operators[{i}]: {e}")))?;
            operators.push(op);
        }
        Ok(operators)
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
    pub async fn pause_pipeline(&self, caller: &Principal, name: &str) -> Result<PipelineInfo> {
        caller.require(Role::Writer, "pause pipelines")?;
        let pipeline = self.pipeline(caller, name)?;
        // A task still writing carries on to the end of its micro-batch
        // and stops there.
        pipeline.stop_and_wait(REPLACE_WAIT).await;
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

    pub async fn delete_pipeline(&self, caller: &Principal, name: &str) -> Result<()> {
        caller.require(Role::Writer, "delete pipelines")?;
        let name = name_of(name)?;
        if let Some(pipeline) = self.pipelines.get(&caller.tenant, &name) {
            pipeline.stop_and_wait(REPLACE_WAIT).await;
        }
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

    /// Sets the pipelines' series of `m` from their progress.
    pub(super) fn pipeline_metrics(&self, m: &crate::metrics::Metrics) {
        for gauge in [
            &m.pipeline_lag_positions,
            &m.pipeline_events,
            &m.pipeline_operator_events,
            &m.pipeline_operator_micros,
            &m.pipeline_status,
        ] {
            gauge.reset();
        }
        for p in self.pipelines.all() {
            let (tenant, name) = (p.tenant.as_str(), p.name.as_str());
            let progress = p.progress();
            let set = |g: &prometheus::IntGaugeVec, labels: &[&str], v: u64| {
                g.with_label_values(labels)
                    .set(i64::try_from(v).unwrap_or(i64::MAX));
            };
            set(
                &m.pipeline_lag_positions,
                &[tenant, name],
                p.lag_positions(&self.db),
            );
            let status = match p.status() {
                Status::Running => 0,
                Status::Paused => 1,
                Status::Failed => 2,
            };
            set(&m.pipeline_status, &[tenant, name], status);
            for (kind, v) in [
                ("read", progress.events_read),
                ("written", progress.events_written),
                ("duplicate", progress.duplicates),
                ("invalid", progress.invalid),
                ("skipped", progress.skipped),
                ("buffered", p.buffered()),
            ] {
                set(&m.pipeline_events, &[tenant, name, kind], v);
            }
            for (i, op) in progress.operators.iter().enumerate() {
                let label = format!("{i}:{}", op.op);
                let operator = label.as_str();
                set(
                    &m.pipeline_operator_events,
                    &[tenant, name, operator, "in"],
                    op.events_in,
                );
                set(
                    &m.pipeline_operator_events,
                    &[tenant, name, operator, "out"],
                    op.events_out,
                );
                set(
                    &m.pipeline_operator_micros,
                    &[tenant, name, operator],
                    op.micros,
                );
            }
        }
    }
}
