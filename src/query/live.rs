//! A live subscription's reads straight from a table's buffer.
//!
//! A subscription that keeps up reads positions that are all still in the
//! buffer. For those reads, planning a query each time (parsing, the
//! optimizer, a physical plan, a thread to plan on) costs far more than the
//! read itself. A [`BufferRead`] is the subscription's conditions compiled
//! once into a physical expression over the table's query schema; a read
//! then takes the buffered batches in the position range, reshapes them to
//! the query schema, filters them and projects the columns: the rows, types
//! and order the subscription's SQL returns for the same range.
//!
//! It is compiled only for conditions that give the same answer whenever
//! they are evaluated (immutable functions, no subqueries), and it declines
//! (`None`) every read it cannot answer exactly as the SQL would: a range
//! reaching into the stored files, a table whose schema changed since, an
//! evaluation error, a table whose events read through schema migrations.
//! The caller then runs the SQL.

use super::QueryEngine;
use crate::auth::Principal;
use crate::db::TableView;
use crate::schema::{self, adapt_batch, query_schema};
use arrow::array::{AsArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, Volatility};
use datafusion::physical_expr::PhysicalExpr;
use std::sync::Arc;

/// A subscription's conditions and columns, compiled for one schema of its
/// table.
#[derive(Debug)]
pub struct BufferRead {
    /// The stored schema this was compiled for.
    stored: SchemaRef,
    /// Every column, as queries see them.
    full: SchemaRef,
    /// The conditions besides the position range (`None`: every row).
    filter: Option<Arc<dyn PhysicalExpr>>,
    /// The columns returned, by index into `full` (`None`: all).
    projection: Option<Vec<usize>>,
    /// Where to learn whether the table's events read through schema
    /// migrations, which only the SQL applies.
    governance: Governance,
}

#[derive(Debug)]
struct Governance {
    db: Arc<crate::db::Database>,
    tenant: crate::ids::TenantId,
    table: Option<crate::ids::TableName>,
    /// The generation of the tenant's policies when this was compiled:
    /// under any other, only the SQL applies them.
    policies: u64,
}

impl Governance {
    fn migrates(&self) -> bool {
        self.table
            .as_ref()
            .and_then(|t| self.db.schemas().get(&self.tenant, t))
            .is_some_and(|g| g.migrates())
    }
}

impl BufferRead {
    /// Compiles `conditions` (a SQL boolean expression over the table's
    /// columns, empty for none) and `columns` (`None` for all; the position
    /// comes first otherwise) for `table` with stored schema `stored`.
    /// `None` when they cannot be compiled to match the SQL exactly.
    pub fn compile(
        engine: &QueryEngine,
        caller: &Principal,
        table: &str,
        stored: &SchemaRef,
        columns: Option<&[String]>,
        conditions: &str,
    ) -> Option<BufferRead> {
        let (policies, decision) =
            super::policy::decide_for(engine.db(), caller, crate::policy::Action::Stream, table);
        let governance = Governance {
            db: engine.db().clone(),
            tenant: caller.tenant.clone(),
            table: table.parse().ok(),
            policies: policies.generation,
        };
        if governance.migrates() {
            return None;
        }
        // A read the policies restrict (or refuse) goes by the SQL, which
        // applies them.
        if !decision.allowed || !decision.restriction.is_none() {
            return None;
        }
        let full = query_schema(stored);
        let projection = match columns {
            None => None,
            Some(names) => {
                let mut indices = vec![full.index_of(schema::POSITION).ok()?];
                for name in names.iter().filter(|n| *n != schema::POSITION) {
                    indices.push(full.index_of(name).ok()?);
                }
                Some(indices)
            }
        };
        let filter = if conditions.trim().is_empty() {
            None
        } else {
            let ctx = super::session(engine, caller).ok()?;
            let df_schema = DFSchema::try_from_qualified_schema(table, &full).ok()?;
            let expr = ctx.parse_sql_expr(conditions, &df_schema).ok()?;
            if !always_the_same(&expr) {
                return None;
            }
            Some(ctx.create_physical_expr(expr, &df_schema).ok()?)
        };
        Some(BufferRead {
            stored: stored.clone(),
            full,
            filter,
            projection,
            governance,
        })
    }

    /// Whether this was compiled for `schema`.
    pub fn compiled_for(&self, schema: &SchemaRef) -> bool {
        Arc::ptr_eq(&self.stored, schema) || self.stored == *schema
    }

    /// The matching rows with positions in `(after, upto]`, at most
    /// `limit`, in position order; `None` when `view` may hold such rows
    /// outside its buffer, was read with another schema, or the conditions
    /// fail to evaluate (the SQL then says why).
    pub fn read(
        &self,
        view: &TableView,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Option<Vec<RecordBatch>> {
        let in_buffer = match (&view.stored, view.stored_position) {
            (None, _) => true,
            (Some(_), Some(stored)) => after >= stored,
            (Some(_), None) => false,
        };
        let policies_changed = self.governance.policies
            != (self.governance.db.policies())
                .get(&self.governance.tenant)
                .generation;
        if !in_buffer
            || !self.compiled_for(&view.schema)
            || self.governance.migrates()
            || policies_changed
        {
            return None;
        }
        let mut pages = Vec::new();
        let mut rows = 0;
        for batch in &view.buffered {
            if rows >= limit {
                break;
            }
            let Some(positions) = batch
                .column_by_name(schema::POSITION)
                .and_then(|c| c.as_primitive_opt::<Int64Type>())
            else {
                continue;
            };
            // A batch's positions ascend (they are stamped in row order).
            let values = positions.values();
            let below = |p: u64| values.partition_point(|&v| v <= p.min(i64::MAX as u64) as i64);
            let (from, to) = (below(after), below(upto));
            if from >= to {
                if from == values.len() {
                    continue;
                }
                break;
            }
            let slice = adapt_batch(&batch.slice(from, to - from), &self.full).ok()?;
            let kept = match &self.filter {
                None => slice,
                Some(filter) => {
                    let mask = filter
                        .evaluate(&slice)
                        .and_then(|v| v.into_array(slice.num_rows()))
                        .ok()?;
                    filter_record_batch(&slice, mask.as_boolean_opt()?).ok()?
                }
            };
            let kept = match &self.projection {
                None => kept,
                Some(indices) => kept.project(indices).ok()?,
            };
            let take = kept.num_rows().min(limit - rows);
            if take > 0 {
                rows += take;
                pages.push(kept.slice(0, take));
            }
        }
        Some(pages)
    }
}

/// Whether `expr` gives the same answer whenever it is evaluated on the
/// same row: no subquery, no function that reads the clock or a random
/// source (its value in a query is fixed when the query is planned).
pub fn always_the_same(expr: &Expr) -> bool {
    let mut same = true;
    let _ = expr.apply(|e| {
        let fixed = match e {
            Expr::ScalarFunction(f) => f.func.signature().volatility == Volatility::Immutable,
            Expr::ScalarSubquery(_)
            | Expr::InSubquery(_)
            | Expr::Exists(_)
            | Expr::AggregateFunction(_)
            | Expr::WindowFunction(_)
            | Expr::Placeholder(_)
            | Expr::OuterReferenceColumn(..) => false,
            _ => true,
        };
        same &= fixed;
        Ok(if fixed {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    same
}

impl QueryEngine {
    /// Runs `read` over `view` as a query runs: with one of the caller's
    /// tenant's query slots, on the query threads.
    pub async fn read_buffered(
        &self,
        caller: &Principal,
        read: Arc<BufferRead>,
        view: TableView,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Option<Vec<RecordBatch>>> {
        let slot = self
            .limits()
            .admit(&caller.tenant)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let task = self.threads().handle().spawn(async move {
            let _slot = slot;
            read.read(&view, after, upto, limit)
        });
        task.await
            .map_err(|e| DataFusionError::Internal(format!("a buffered read failed: {e}")))
    }
}
