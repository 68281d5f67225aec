//! Aggregations with grouping sets (`ROLLUP`, `CUBE`, `GROUPING SETS`)
//! claim nothing about the order of their output.
//!
//! DataFusion 55 carries its input's equivalences through an aggregation
//! with grouping sets: after `WHERE country = 'de'`, or for a constant key,
//! it takes the key to be constant in the output. But the grouping sets
//! set the key to NULL in their subtotal rows, so the output holds 'de'
//! and NULL, interleaved. The final aggregation above then runs in
//! streaming mode ("the key is sorted, a group is complete when the key
//! changes") and returns a subtotal in several partial rows: `SELECT
//! country, count(*) FROM events WHERE country = 'de' GROUP BY
//! ROLLUP(country)` gave three rows instead of two with one target
//! partition (DataFusion issues 16965 and 24421, fixed upstream after 55).
//!
//! Outer joins have the same flaw: a filter on the side that gets NULLs
//! (`... RIGHT JOIN ... ON ... AND b.entity_id = 'u1'`, pushed below the
//! join onto its other input) makes DataFusion 55 take that side's key to
//! be constant in the join's output, which also holds NULLs for the rows
//! without a match. `GROUP BY a.entity_id` above it then returned the
//! group 'u1' twice with one target partition (found by the SQL fuzz).
//!
//! [`GroupingSetOutputs`] puts a [`GroupingSetOutputExec`] above each such
//! aggregation and each outer join before the other physical optimizer
//! rules run. It passes the batches through and claims no ordering and no
//! constants, so the aggregation above hashes its groups and no rule drops
//! a sort on the strength of the false claim.

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::execution_plan::CardinalityEffect;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};
use std::fmt;
use std::sync::Arc;

/// Puts a [`GroupingSetOutputExec`] above every aggregation with grouping
/// sets and every outer join. Runs first, on the plan as the physical
/// planner made it.
#[derive(Debug, Default)]
pub(super) struct GroupingSetOutputs;

impl PhysicalOptimizerRule for GroupingSetOutputs {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(plan
            .transform_up(|node| {
                let grouping_sets = node
                    .downcast_ref::<AggregateExec>()
                    .is_some_and(|agg| agg.group_expr().has_grouping_set());
                if !grouping_sets && !adds_nulls(node.as_ref()) {
                    return Ok(Transformed::no(node));
                }
                Ok(Transformed::yes(
                    Arc::new(GroupingSetOutputExec::new(node)) as Arc<dyn ExecutionPlan>
                ))
            })?
            .data)
    }

    fn name(&self) -> &str {
        "grouping_set_outputs"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether `plan` is a join that fills one side's columns with NULLs for
/// the other side's rows without a match.
fn adds_nulls(plan: &dyn ExecutionPlan) -> bool {
    use datafusion::common::JoinType;
    use datafusion::physical_plan::joins::{
        HashJoinExec, NestedLoopJoinExec, SortMergeJoinExec, SymmetricHashJoinExec,
    };
    let join_type = if let Some(j) = plan.downcast_ref::<HashJoinExec>() {
        *j.join_type()
    } else if let Some(j) = plan.downcast_ref::<NestedLoopJoinExec>() {
        *j.join_type()
    } else if let Some(j) = plan.downcast_ref::<SortMergeJoinExec>() {
        j.join_type()
    } else if let Some(j) = plan.downcast_ref::<SymmetricHashJoinExec>() {
        *j.join_type()
    } else {
        return false;
    };
    matches!(join_type, JoinType::Left | JoinType::Right | JoinType::Full)
}

/// Passes its input's batches on unchanged, with the input's partitioning
/// but no claim on their order or constant columns.
#[derive(Debug)]
pub(super) struct GroupingSetOutputExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl GroupingSetOutputExec {
    fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(input.schema()),
            input.output_partitioning().clone(),
            input.pipeline_behavior(),
            input.boundedness(),
        );
        GroupingSetOutputExec {
            input,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for GroupingSetOutputExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GroupingSetOutputExec")
    }
}

impl ExecutionPlan for GroupingSetOutputExec {
    fn name(&self) -> &str {
        "GroupingSetOutputExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = <[_; 1]>::try_from(children).map_err(|_| {
            DataFusionError::Internal("GroupingSetOutputExec takes exactly one input".into())
        })?;
        Ok(Arc::new(GroupingSetOutputExec::new(input)))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::Equal
    }
}
