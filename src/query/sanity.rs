//! DataFusion's plan sanity check, minus one false refusal.
//!
//! `SanityCheckPlan` compares each operator's required input ordering with
//! what its child's equivalence properties prove. For some sort keys the
//! proof fails although the child is a sort on exactly those keys: with
//! DataFusion 55, `ORDER BY abs(x * x)` over several partitions plans as
//! `SortPreservingMergeExec` over a partition-wise `SortExec` of the same
//! expressions, a correct plan, and the check refuses it (the scalar
//! function expressions compare unequal after the plan is rewritten).
//!
//! [`SanityCheck`] runs the real check and, only when it fails, accepts the
//! plan if every unmet ordering requirement is a merge whose input is a
//! sort of the same keys (by their rendering, once columns the sort's
//! input proves equal are written as one), or a union of such sorts.
//! Anything else is refused as before.

use datafusion::common::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::physical_expr::LexOrdering;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::sanity_checker::SanityCheckPlan;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use std::sync::Arc;

#[derive(Debug, Default)]
pub(crate) struct SanityCheck {
    inner: SanityCheckPlan,
}

impl PhysicalOptimizerRule for SanityCheck {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match self.inner.optimize(plan.clone(), config) {
            Ok(plan) => Ok(plan),
            Err(e) => match only_merges_of_their_own_sorts(&plan)? {
                true => Ok(plan),
                false => Err(e),
            },
        }
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn schema_check(&self) -> bool {
        self.inner.schema_check()
    }
}

/// Whether every ordering requirement the plan's children do not prove is
/// a merge over sorts on the same keys (directly, or through a union).
fn only_merges_of_their_own_sorts(plan: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    for child in plan.children() {
        if !only_merges_of_their_own_sorts(child)? {
            return Ok(false);
        }
    }
    for (child, requirement) in plan
        .children()
        .into_iter()
        .zip(plan.required_input_ordering())
    {
        let Some(requirement) = requirement else {
            continue;
        };
        let requirement = requirement.into_single();
        if child
            .equivalence_properties()
            .ordering_satisfy_requirement(requirement.clone())?
        {
            continue;
        }
        let Some(merge) = plan.downcast_ref::<SortPreservingMergeExec>() else {
            return Ok(false);
        };
        if !sorted_on(child, merge.expr()) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether each partition `plan` outputs is sorted on `keys` by
/// construction: a sort on those keys, or a union of such. A sort's keys
/// match when they render the same once each side's columns are replaced
/// by the canonical member of their equivalence class in the sort's input
/// (in every input of a union below it), so that a sort on `c0` where the
/// input computes `qty AS c0, qty` matches a merge on `qty`, and once keys
/// the input proves constant in each partition are left out (a partition
/// whose rows all share a key's value is sorted on it whatever their
/// order): files that lack a column read it as NULL, and a sort of them
/// leaves out a key computed from it.
fn sorted_on(plan: &Arc<dyn ExecutionPlan>, keys: &LexOrdering) -> bool {
    if let Some(sort) = plan.downcast_ref::<SortExec>() {
        let input = sort.input();
        let inputs = match input.downcast_ref::<UnionExec>() {
            Some(union) => union.children().into_iter().cloned().collect(),
            None => vec![input.clone()],
        };
        return inputs.iter().all(|input| {
            let properties = input.equivalence_properties();
            let canonical = |o: &LexOrdering| -> Vec<String> {
                properties
                    .eq_group()
                    .normalize_sort_exprs(o.iter().cloned())
                    .filter(|e| properties.is_expr_constant(&e.expr).is_none())
                    .map(|e| e.to_string())
                    .collect()
            };
            canonical(sort.expr()) == canonical(keys)
        });
    }
    plan.downcast_ref::<UnionExec>().is_some()
        && plan.children().into_iter().all(|c| sorted_on(c, keys))
}
