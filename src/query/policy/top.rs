//! Top-k reads through the barrier: `ORDER BY <columns> LIMIT k` straight
//! over a restricted table (no condition of the query between them)
//! gives the table's read the same order and limit, so that inside the
//! barrier only the first k visible rows are decoded in full (the
//! engine's top-k pruning and late materialization apply there). The
//! query keeps its own sort: the read hands it at most k rows.
//!
//! It is safe: sorting by plain unmasked columns cannot fail, and it runs
//! after the policies' row filter, on visible rows only.

use super::{PolicyTable, mask_of};
use datafusion::common::Column;
use datafusion::common::tree_node::Transformed;
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, LogicalPlan, Projection, Sort, SortExpr, TableScan};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use std::sync::Arc;

/// The order and limit a restricted read applies inside its barrier.
#[derive(Debug, Clone)]
pub(super) struct Top {
    pub(super) keys: Vec<SortExpr>,
    pub(super) fetch: usize,
}

/// The logical rule that gives restricted reads their query's top-k.
#[derive(Debug, Default)]
pub struct TopInside;

/// `scan` reading its table with `top`, if it is a restricted read that
/// can take it.
fn with_top(scan: &TableScan, keys: &[SortExpr], fetch: usize) -> Result<Option<TableScan>> {
    if scan.fetch.is_some() {
        return Ok(None);
    }
    let provider = source_as_provider(&scan.source)?;
    let Some(table) = provider.downcast_ref::<PolicyTable>() else {
        return Ok(None);
    };
    if table.top.is_some() {
        return Ok(None);
    }
    let mut plain = Vec::with_capacity(keys.len());
    for key in keys {
        let Expr::Column(c) = &key.expr else {
            return Ok(None);
        };
        let known = table.schema.index_of(&c.name).is_ok();
        if !known || mask_of(&table.restriction, &c.name).is_some() {
            return Ok(None);
        }
        plain.push(SortExpr {
            expr: Expr::Column(Column::new_unqualified(c.name.clone())),
            ..key.clone()
        });
    }
    let topped = table.topped(Top { keys: plain, fetch });
    let mut scan = scan.clone();
    scan.source = provider_as_source(Arc::new(topped));
    Ok(Some(scan))
}

impl OptimizerRule for TopInside {
    fn name(&self) -> &str {
        "policy_top_inside"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Sort(sort) = &plan else {
            return Ok(Transformed::no(plan));
        };
        let Some(fetch) = sort.fetch else {
            return Ok(Transformed::no(plan));
        };
        let input = match sort.input.as_ref() {
            LogicalPlan::TableScan(scan) => {
                with_top(scan, &sort.expr, fetch)?.map(LogicalPlan::TableScan)
            }
            // Only a choice of columns between: the keys name the scan's
            // columns as they are.
            LogicalPlan::Projection(p) if p.expr.iter().all(|e| matches!(e, Expr::Column(_))) => {
                match p.input.as_ref() {
                    LogicalPlan::TableScan(scan) => match with_top(scan, &sort.expr, fetch)? {
                        Some(scan) => Some(LogicalPlan::Projection(Projection::try_new(
                            p.expr.clone(),
                            Arc::new(LogicalPlan::TableScan(scan)),
                        )?)),
                        None => None,
                    },
                    _ => None,
                }
            }
            _ => None,
        };
        Ok(match input {
            Some(input) => Transformed::yes(LogicalPlan::Sort(Sort {
                expr: sort.expr.clone(),
                input: Arc::new(input),
                fetch: sort.fetch,
            })),
            None => Transformed::no(plan),
        })
    }
}
