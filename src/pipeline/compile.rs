//! A pipeline's operators as plans DataFusion runs on each micro-batch.
//!
//! Each operator becomes one SQL statement over `pipeline.input`, a table
//! of the operator's input schema registered in the tenant's session, so
//! that its expressions are parsed, bounded, typed and checked as any
//! query's are. The statement is planned once (again when the source's
//! schema grows) and must read nothing but that input, through
//! projections, filters and unnests: no aggregate, join, window, sort or
//! subquery. Each micro-batch runs the physical plan with the batch put
//! in place of the empty input it was planned over; the session runs one
//! partition, so rows keep their order.

use super::Operator;
use super::checks::{check_output, check_plan};
use super::enrich::EnrichStage;
use super::limit::LimitStage;
use super::partition::PartitionStage;
use super::window::WindowStage;
use crate::schema;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::MemTable;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use indexmap::IndexMap;
use std::sync::Arc;

/// The schema the operators' input is registered under.
pub(super) const INPUT_SCHEMA: &str = "pipeline";
/// The input's table name within [`INPUT_SCHEMA`].
pub(super) const INPUT_TABLE: &str = "input";

/// Columns an operator may not set, drop or unnest into: the sink makes
/// its own id, ingest time, date and stream stamps, `position` names the
/// source event each output row comes from, and `_overflow` is merged
/// into the payload. A governed sink sets its own `_violations` and
/// `schema_version`.
pub const RESERVED: [&str; 8] = [
    schema::EVENT_ID,
    schema::INGESTED_AT,
    schema::EVENT_DATE,
    schema::OVERFLOW,
    schema::POSITION,
    schema::VERSION,
    schema::governed::VIOLATIONS,
    schema::governed::SCHEMA_VERSION,
];

/// Why an operator cannot run: its index in the list and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("operators[{index}] ({kind}): {message}")]
pub struct Refusal {
    pub index: usize,
    pub kind: &'static str,
    pub message: String,
}

/// What one operator runs: a plan over each micro-batch, or a stateful
/// operator of its own.
#[derive(Debug)]
pub(super) enum Work {
    Plan(Arc<dyn ExecutionPlan>),
    Window(WindowStage),
    Limit(LimitStage),
    Enrich(EnrichStage),
    Partition(PartitionStage),
}

/// One operator, planned for its input schema.
#[derive(Debug)]
pub(super) struct Stage {
    pub work: Work,
    pub input: SchemaRef,
}

/// A session, shown by its id.
pub(super) struct Session(pub SessionContext);

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Session({})", self.0.session_id())
    }
}

/// What a chain's operators share, and the workers of a partition with
/// them.
#[derive(Debug)]
pub(super) struct Shared {
    pub stages: Vec<Stage>,
    pub task: Arc<TaskContext>,
    /// The session the chain was planned in and its input schema, for
    /// the operators planned again for each micro-batch (enrich).
    pub ctx: Session,
    pub inputs: Arc<MemorySchemaProvider>,
}

/// The operators of a pipeline, planned for one source schema.
#[derive(Debug)]
pub struct Chain {
    pub(super) shared: Arc<Shared>,
    /// The index of the partition operator, if there is one.
    pub(super) partition: Option<usize>,
    input: SchemaRef,
    output: SchemaRef,
    /// Output columns that hold JSON text to be stored as JSON values (the
    /// elements a flat-map makes).
    pub json_columns: Vec<String>,
}

impl Chain {
    /// Plans `operators` over `input` (the source table's schema) in
    /// `ctx`, a session of the pipeline's tenant. The session is changed:
    /// it runs one partition and has the input schema registered.
    pub async fn plan(
        ctx: &SessionContext,
        input: SchemaRef,
        operators: &[Operator],
    ) -> std::result::Result<Chain, Refusal> {
        ctx.state_ref()
            .write()
            .config_mut()
            .options_mut()
            .execution
            .target_partitions = 1;
        let inputs = Arc::new(MemorySchemaProvider::new());
        let catalog = ctx.catalog(crate::query::CATALOG).ok_or_else(|| Refusal {
            index: 0,
            kind: "source",
            message: "the tenant's catalog is missing".into(),
        })?;
        catalog
            .register_schema(INPUT_SCHEMA, inputs.clone())
            .map_err(|e| Refusal {
                index: 0,
                kind: "source",
                message: e.strip_backtrace().to_string(),
            })?;
        let mut stages = Vec::with_capacity(operators.len());
        let mut schema = input.clone();
        let mut json_columns: Vec<String> = Vec::new();
        let mut partition = None;
        for (index, op) in operators.iter().enumerate() {
            let refuse = |message: String| Refusal {
                index,
                kind: op.kind(),
                message,
            };
            let table = MemTable::try_new(schema.clone(), vec![Vec::new()])
                .map_err(|e| refuse(e.strip_backtrace().to_string()))?;
            let _ = inputs.deregister_table(INPUT_TABLE);
            inputs
                .register_table(INPUT_TABLE.to_string(), Arc::new(table))
                .map_err(|e| refuse(e.strip_backtrace().to_string()))?;
            if let Operator::Partition { key, workers } = op {
                if partition.is_some() {
                    return Err(refuse(
                        "a pipeline is partitioned once; its workers run every operator after it"
                            .into(),
                    ));
                }
                partition = Some(index);
                stages.push(Stage {
                    work: Work::Partition(
                        PartitionStage::plan(ctx, key, *workers)
                            .await
                            .map_err(refuse)?,
                    ),
                    input: schema.clone(),
                });
                continue;
            }
            if let Operator::Enrich(spec) = op {
                let enrich = EnrichStage::plan(ctx, &schema, spec)
                    .await
                    .map_err(refuse)?;
                let output = enrich.output().clone();
                json_columns.retain(|c| !spec.fields.contains_key(c));
                stages.push(Stage {
                    work: Work::Enrich(enrich),
                    input: schema,
                });
                schema = output;
                continue;
            }
            let batch = match op {
                Operator::Batch { size, every, key } => Some(
                    super::window::batch_spec(&schema, *size, every.as_deref(), key)
                        .map_err(refuse)?,
                ),
                _ => None,
            };
            if let Some(spec) = batch.as_ref().or(match op {
                Operator::Window(spec) => Some(spec),
                _ => None,
            }) {
                let window = WindowStage::plan(ctx, &schema, spec)
                    .await
                    .map_err(refuse)?;
                let output = window.output().clone();
                json_columns.clear();
                stages.push(Stage {
                    work: Work::Window(window),
                    input: schema,
                });
                schema = output;
                continue;
            }
            let limit = match op {
                Operator::Deduplicate {
                    key,
                    within,
                    lateness,
                } => {
                    let key = IndexMap::from([("key".to_string(), key.clone())]);
                    Some(
                        LimitStage::plan(
                            ctx,
                            &schema,
                            &key,
                            1,
                            ("within", within),
                            lateness.as_deref(),
                        )
                        .await,
                    )
                }
                Operator::Throttle {
                    key,
                    rate,
                    per,
                    lateness,
                } => {
                    let key: IndexMap<String, String> =
                        key.iter().map(|k| ("key".to_string(), k.clone())).collect();
                    Some(
                        LimitStage::plan(
                            ctx,
                            &schema,
                            &key,
                            *rate,
                            ("per", per),
                            lateness.as_deref(),
                        )
                        .await,
                    )
                }
                _ => None,
            };
            if let Some(limit) = limit {
                stages.push(Stage {
                    work: Work::Limit(limit.map_err(refuse)?),
                    input: schema.clone(),
                });
                continue;
            }
            let sql = statement(op, &schema).map_err(refuse)?;
            let plan = match crate::query::plan_sql(ctx, &sql).await {
                Ok(plan) => plan,
                Err(e) => return Err(refuse(culprit(ctx, op).await.unwrap_or(message_of(&e)))),
            };
            check_plan(&plan, false).map_err(refuse)?;
            let physical = ctx
                .state()
                .create_physical_plan(&plan)
                .await
                .map_err(|e| refuse(message_of(&e)))?;
            let output = physical.schema();
            if let Operator::FlatMap { name, .. } = op {
                json_columns.retain(|c| c != name);
                json_columns.push(name.clone());
            }
            if let Operator::Map { fields, drop } = op {
                json_columns.retain(|c| !fields.contains_key(c) && !drop.contains(c));
            }
            stages.push(Stage {
                work: Work::Plan(physical),
                input: schema,
            });
            schema = output;
        }
        check_output(&schema).map_err(|message| Refusal {
            index: operators.len().saturating_sub(1),
            kind: operators.last().map_or("source", Operator::kind),
            message,
        })?;
        Ok(Chain {
            shared: Arc::new(Shared {
                stages,
                task: ctx.task_ctx(),
                ctx: Session(ctx.clone()),
                inputs,
            }),
            partition,
            input,
            output: schema,
            json_columns,
        })
    }

    /// The source schema the chain was planned for.
    pub fn input(&self) -> &SchemaRef {
        &self.input
    }

    /// What the last operator makes.
    pub fn output(&self) -> &SchemaRef {
        &self.output
    }
}

/// The error's text without DataFusion's prefixes and backtrace.
pub(super) fn message_of(e: &DataFusionError) -> String {
    let text = e.strip_backtrace().to_string();
    for prefix in [
        "Error during planning: ",
        "Schema error: ",
        "SQL error: ",
        "External error: ",
    ] {
        if let Some(rest) = text.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    text
}

/// Which of a map's fields makes its statement fail, and why: each is
/// planned alone. `None` when none does alone (or `op` is no map).
async fn culprit(ctx: &SessionContext, op: &Operator) -> Option<String> {
    let Operator::Map { fields, .. } = op else {
        return None;
    };
    for (name, expr) in fields {
        let sql = format!(
            "SELECT ({expr}) AS {} FROM {INPUT_SCHEMA}.{INPUT_TABLE}",
            quote(name)
        );
        let problem = match crate::query::plan_sql(ctx, &sql).await {
            Ok(plan) => check_plan(&plan, false).err(),
            Err(e) => Some(message_of(&e)),
        };
        if let Some(problem) = problem {
            return Some(format!("fields.{name}: {problem}"));
        }
    }
    None
}

pub(super) use crate::query::quote_ident as quote;

fn check_settable(what: &str, name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what}: a field name may not be empty"));
    }
    if RESERVED.contains(&name) {
        return Err(format!(
            "{what}: {name:?} is set by the sink; an operator may not set, drop or unnest into it"
        ));
    }
    Ok(())
}

/// The SQL statement of `op` over an input of `schema`.
fn statement(op: &Operator, schema: &SchemaRef) -> std::result::Result<String, String> {
    let from = format!("FROM {INPUT_SCHEMA}.{INPUT_TABLE}");
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    match op {
        Operator::Filter { condition } => {
            if condition.trim().is_empty() {
                return Err("where: the condition is empty".into());
            }
            Ok(format!("SELECT * {from} WHERE ({condition})"))
        }
        Operator::Map { fields, drop } => {
            if fields.is_empty() && drop.is_empty() {
                return Err("give fields to set or drop, or both".into());
            }
            for name in fields.keys() {
                check_settable("fields", name)?;
            }
            for name in drop {
                check_settable("drop", name)?;
                if !names.contains(&name.as_str()) {
                    return Err(format!("drop: there is no field {name:?} to drop"));
                }
                if fields.contains_key(name) {
                    return Err(format!("{name:?} is both set and dropped"));
                }
            }
            let mut select: Vec<String> = Vec::new();
            for name in &names {
                if drop.iter().any(|d| d == name) {
                    continue;
                }
                match fields.get(*name) {
                    Some(expr) => select.push(format!("({expr}) AS {}", quote(name))),
                    None => select.push(quote(name)),
                }
            }
            for (name, expr) in fields {
                if !names.contains(&name.as_str()) {
                    select.push(format!("({expr}) AS {}", quote(name)));
                }
            }
            Ok(format!("SELECT {} {from}", select.join(", ")))
        }
        Operator::Window(_)
        | Operator::Batch { .. }
        | Operator::Enrich(_)
        | Operator::Partition { .. }
        | Operator::Deduplicate { .. }
        | Operator::Throttle { .. } => Err("a stateful operator is not a statement".into()),
        Operator::FlatMap { array, name } => {
            check_settable("as", name)?;
            if array.trim().is_empty() {
                return Err("array: the expression is empty".into());
            }
            let mut select: Vec<String> = names
                .iter()
                .filter(|n| **n != name.as_str())
                .map(|n| quote(n))
                .collect();
            select.push(format!(
                "unnest(json_get_array({array})) AS {}",
                quote(name)
            ));
            Ok(format!("SELECT {} {from}", select.join(", ")))
        }
    }
}

/// `plan` with `batches` in place of the empty input it was planned over.
pub(super) fn with_input(
    plan: &Arc<dyn ExecutionPlan>,
    batches: Vec<RecordBatch>,
    schema: &SchemaRef,
) -> Result<Arc<dyn ExecutionPlan>> {
    let partitions = [batches];
    plan.clone()
        .transform_up(|node| {
            let Some(source) = node.downcast_ref::<DataSourceExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(memory) = source.data_source().downcast_ref::<MemorySourceConfig>() else {
                return Ok(Transformed::no(node));
            };
            let exec = MemorySourceConfig::try_new_exec(
                &partitions,
                schema.clone(),
                memory.projection().clone(),
            )?;
            Ok(Transformed::yes(exec as Arc<dyn ExecutionPlan>))
        })
        .map(|t| t.data)
}
