//! Row-level filtering for the Parquet scans that read one entity.
//!
//! A scan's pushed predicate only prunes row groups and pages unless
//! row-level filtering (DataFusion's `pushdown_filters`) is on; the rows
//! of what is left are decoded in every projected column and thrown away
//! by the filter above. That is the right default for filters that keep
//! many rows (ARCHITECTURE.md, "Compacted file layout"), and the wrong one
//! for `entity_id = '…'`: in a file flushed in arrival order no page can
//! be skipped, and the entity is a handful of its thousands of rows. With
//! row-level filtering the scan decodes `entity_id` first and the other
//! columns only for the rows that match.

use crate::schema::ENTITY_ID;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::physical_plan::{FileScanConfigBuilder, FileSource, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use std::sync::Arc;

/// Turns on row-level filtering in the Parquet scans whose pushed
/// predicate holds `entity_id = <literal>` among its conjuncts.
#[derive(Debug, Default)]
pub(crate) struct EntityRowFilters;

impl PhysicalOptimizerRule for EntityRowFilters {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(plan
            .transform_down(|node| {
                let Some(exec) = node.downcast_ref::<DataSourceExec>() else {
                    return Ok(Transformed::no(node));
                };
                let Some((config, parquet)) = exec.downcast_to_file_source::<ParquetSource>()
                else {
                    return Ok(Transformed::no(node));
                };
                let picks_one = FileSource::filter(parquet).is_some_and(|f| picks_one_entity(&f));
                if parquet.table_parquet_options().global.pushdown_filters || !picks_one {
                    return Ok(Transformed::no(node));
                }
                let source = parquet.clone().with_pushdown_filters(true);
                let config = FileScanConfigBuilder::from(config.clone())
                    .with_source(Arc::new(source))
                    .build();
                Ok(Transformed::yes(
                    DataSourceExec::from_data_source(config) as Arc<dyn ExecutionPlan>
                ))
            })?
            .data)
    }

    fn name(&self) -> &str {
        "entity_row_filters"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether `predicate` holds only for rows of `entity_id = <literal>`.
fn picks_one_entity(predicate: &Arc<dyn PhysicalExpr>) -> bool {
    let Some(binary) = predicate.downcast_ref::<BinaryExpr>() else {
        return false;
    };
    let is_entity = |e: &Arc<dyn PhysicalExpr>| {
        e.downcast_ref::<Column>()
            .is_some_and(|c| c.name() == ENTITY_ID)
    };
    let is_literal = |e: &Arc<dyn PhysicalExpr>| e.downcast_ref::<Literal>().is_some();
    match binary.op() {
        Operator::And => picks_one_entity(binary.left()) || picks_one_entity(binary.right()),
        Operator::Eq => {
            (is_entity(binary.left()) && is_literal(binary.right()))
                || (is_literal(binary.left()) && is_entity(binary.right()))
        }
        _ => false,
    }
}
