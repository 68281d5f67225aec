//! Late materialization for TopK queries (`ORDER BY ... LIMIT k`).
//!
//! A TopK hands the Parquet scan below it a dynamic filter ("only rows
//! that beat the current k-th row"). By default the scan uses that filter
//! only to skip whole row groups; the rows of a row group it cannot skip
//! are decoded in every projected column and then thrown away by the
//! TopK. With row-level filtering (DataFusion's `pushdown_filters`) the
//! scan decodes the sort column first and the other columns only for the
//! rows that pass. In files sorted by `entity_id` the newest events sit
//! in every row group, so the latest-10 query decoded a whole day's
//! `entity_id` strings to return ten of them.
//!
//! Row-level filtering is not on for every scan: for filters that keep
//! many rows it made scans slower (ARCHITECTURE.md, "Compacted file
//! layout"). This rule turns it on only for scans that feed a TopK
//! directly, where the dynamic filter soon rejects almost every row.
//!
//! A second rule, [`TopKFilterColumns`], makes that dynamic filter safe to
//! push through a renaming projection. DataFusion gives the filter the
//! sort expressions as its children and, once the filter has crossed a
//! projection, maps its current predicate onto the projection's input by
//! replacing those children bottom-up. When one sort key is a column that
//! also appears inside another key (`ORDER BY length(id) + x, id`), the
//! inner column is replaced first, the outer key then no longer matches
//! and keeps the projection's column numbers: the scan evaluated a number
//! against a string column and the query failed. With the sort's bare
//! columns as children every column is mapped exactly once.

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::{FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{Column, DynamicFilterPhysicalExpr, lit};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::union::UnionExec;
use std::sync::Arc;

/// Turns on row-level filtering in the Parquet scans a TopK reads from.
#[derive(Debug, Default)]
pub(super) struct TopKRowFilters;

impl PhysicalOptimizerRule for TopKRowFilters {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(plan
            .transform_down(|node| {
                let Some(sort) = node.downcast_ref::<SortExec>() else {
                    return Ok(Transformed::no(node));
                };
                if sort.fetch().is_none() {
                    return Ok(Transformed::no(node));
                }
                let input = with_row_filters(sort.input().clone())?;
                if !input.transformed {
                    return Ok(Transformed::no(node));
                }
                let node = replace_children_if_necessary(node.clone(), vec![input.data])?;
                Ok(Transformed::new(node, true, TreeNodeRecursion::Jump))
            })?
            .data)
    }

    fn name(&self) -> &str {
        "topk_row_filters"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The Parquet scans reached from `plan` through operators that pass rows
/// on unchanged or fewer (projections, filters, unions), with
/// row-level filtering on.
fn with_row_filters(plan: Arc<dyn ExecutionPlan>) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    if let Some(exec) = plan.downcast_ref::<DataSourceExec>() {
        let Some((config, parquet)) = exec.downcast_to_file_source::<ParquetSource>() else {
            return Ok(Transformed::no(plan));
        };
        if parquet.table_parquet_options().global.pushdown_filters
            || datafusion::datasource::physical_plan::FileSource::filter(parquet).is_none()
        {
            return Ok(Transformed::no(plan));
        }
        let source = parquet.clone().with_pushdown_filters(true);
        let config = FileScanConfigBuilder::from(config.clone())
            .with_source(Arc::new(source))
            .build();
        return Ok(Transformed::yes(
            DataSourceExec::from_data_source(config) as Arc<dyn ExecutionPlan>
        ));
    }
    let passes_rows_on =
        plan.is::<ProjectionExec>() || plan.is::<FilterExec>() || plan.is::<UnionExec>();
    if !passes_rows_on {
        return Ok(Transformed::no(plan));
    }
    let mut changed = false;
    let children = plan
        .children()
        .into_iter()
        .map(|child| {
            let t = with_row_filters(child.clone())?;
            changed |= t.transformed;
            Ok(t.data)
        })
        .collect::<Result<Vec<_>>>()?;
    if !changed {
        return Ok(Transformed::no(plan));
    }
    Ok(Transformed::yes(replace_children_if_necessary(
        plan, children,
    )?))
}

/// Gives each TopK's dynamic filter the sort's columns as its children.
/// Runs before the filter is pushed into the scans.
#[derive(Debug, Default)]
pub(super) struct TopKFilterColumns;

impl PhysicalOptimizerRule for TopKFilterColumns {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(plan
            .transform_up(|node| {
                let Some(sort) = node.downcast_ref::<SortExec>() else {
                    return Ok(Transformed::no(node));
                };
                let produced = sort.dynamic_expressions_produced();
                let Some(filter) = produced.first() else {
                    return Ok(Transformed::no(node));
                };
                if filter.children().iter().all(|c| c.is::<Column>()) {
                    return Ok(Transformed::no(node));
                }
                let mut columns: Vec<Column> = sort
                    .expr()
                    .iter()
                    .flat_map(|key| collect_columns(&key.expr))
                    .collect();
                columns.sort_by_key(|c| c.index());
                columns.dedup();
                let children = columns
                    .into_iter()
                    .map(|c| Arc::new(c) as Arc<dyn PhysicalExpr>)
                    .collect();
                let filter = DynamicFilterPhysicalExpr::new(children, lit(true));
                let sort = sort.clone().with_dynamic_filter_expr(Arc::new(filter))?;
                Ok(Transformed::yes(Arc::new(sort) as Arc<dyn ExecutionPlan>))
            })?
            .data)
    }

    fn name(&self) -> &str {
        "topk_filter_columns"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
