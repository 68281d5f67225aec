//! One entity's events in version order, planned without SQL.
//!
//! An entity stream read always has the same shape: the table's rows of
//! one entity, from a version up or down, sorted by version, the first
//! `limit`. Written as SQL it went through parsing, the logical
//! optimizer and every physical optimizer rule, which together took more
//! CPU than reading the few pages it needs. Here the table (as the
//! session resolves it: its view, policies and schema migrations) is
//! scanned with the entity's filters, the same filters are applied over
//! the scan, and the rows are sorted with a fetch; the one physical rule
//! kept hands the filters down to the Parquet scans, whose row-group and
//! page pruning depends on them.

use super::entity_reads::typed_lit;
use crate::ids::TableName;
use crate::schema::{ENTITY_ID, VERSION};
use datafusion::arrow::compute::SortOptions;
use datafusion::common::{DFSchema, ScalarValue, TableReference};
use datafusion::datasource::TableProvider;
use datafusion::error::Result;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::expressions::col as physical_col;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::filter_pushdown::FilterPushdown;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, execute_stream};
use datafusion::prelude::{SessionContext, col};
use std::sync::Arc;

/// A read of one entity's stream, in the table's own types.
#[derive(Debug, Clone)]
pub struct EntityRead {
    pub table: TableName,
    pub entity: String,
    /// The first version read (the last, read backward); every version
    /// when `None`.
    pub from_version: Option<i64>,
    /// Newest first.
    pub backward: bool,
    pub limit: usize,
}

/// Plans `read` in the session `ctx` and starts it.
pub async fn start(ctx: &SessionContext, read: &EntityRead) -> Result<SendableRecordBatchStream> {
    let plan = plan(ctx, read).await?;
    execute_stream(plan, ctx.task_ctx())
}

/// The physical plan of `read`: scan, filter, sort with a fetch.
async fn plan(ctx: &SessionContext, read: &EntityRead) -> Result<Arc<dyn ExecutionPlan>> {
    let table = ctx
        .table_provider(TableReference::bare(read.table.as_str()))
        .await?;
    let schema = table.schema();
    let typed = |name: &str, value: ScalarValue| typed_lit(&schema, name, value);
    let mut filters = vec![col(ENTITY_ID).eq(typed(
        ENTITY_ID,
        ScalarValue::Utf8(Some(read.entity.clone())),
    )?)];
    if let Some(from) = read.from_version {
        let from = typed(VERSION, ScalarValue::Int64(Some(from)))?;
        filters.push(match read.backward {
            true => col(VERSION).lt_eq(from),
            false => col(VERSION).gt_eq(from),
        });
    }
    let state = ctx.state();
    let scan = table
        .scan(&state, None, &pushable(table.as_ref(), &filters)?, None)
        .await?;
    let predicate = conjunction(filters).expect("the entity's filter is always there");
    let df_schema = DFSchema::try_from(scan.schema().as_ref().clone())?;
    let predicate = state.create_physical_expr(predicate, &df_schema)?;
    let mut plan: Arc<dyn ExecutionPlan> = Arc::new(FilterExec::try_new(predicate, scan)?);
    if plan.output_partitioning().partition_count() > 1 {
        plan = Arc::new(CoalescePartitionsExec::new(plan));
    }
    // As `ORDER BY version ASC` (nulls last) and `DESC` (nulls first).
    let order = PhysicalSortExpr::new(
        physical_col(VERSION, &plan.schema())?,
        SortOptions {
            descending: read.backward,
            nulls_first: read.backward,
        },
    );
    let ordering = LexOrdering::new(vec![order]).expect("one sort key");
    plan = Arc::new(SortExec::new(ordering, plan).with_fetch(Some(read.limit)));
    FilterPushdown::new().optimize(plan, state.config_options())
}

/// Those of `filters` that `table` takes into its scan at all.
fn pushable(table: &dyn TableProvider, filters: &[Expr]) -> Result<Vec<Expr>> {
    let refs: Vec<&Expr> = filters.iter().collect();
    Ok(table
        .supports_filters_pushdown(&refs)?
        .into_iter()
        .zip(filters)
        .filter(|(how, _)| *how != TableProviderFilterPushDown::Unsupported)
        .map(|(_, f)| f.clone())
        .collect())
}
