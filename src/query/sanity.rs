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
//! Columns proven equal below an aggregate that groups by them count as
//! equal: `SELECT DISTINCT x AS a, x AS b … ORDER BY a, b LIMIT 1` sorts
//! each partition on `a` alone above the aggregate, whose output no longer
//! proves `a = b`. Anything else is refused as before.

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
            // Columns proven equal below an aggregate that groups by them
            // are equal in its output too.
            let sources = match grouped_source(input) {
                Some(below) => match below.downcast_ref::<UnionExec>() {
                    Some(union) => union.children().into_iter().cloned().collect(),
                    None => vec![below],
                },
                None => vec![input.clone()],
            };
            sources.iter().all(|source| {
                let equal = source.equivalence_properties();
                let canonical = |o: &LexOrdering| -> Vec<String> {
                    let mut seen: Vec<(String, String)> = Vec::new();
                    for e in equal.eq_group().normalize_sort_exprs(o.iter().cloned()) {
                        if properties.is_expr_constant(&e.expr).is_some() {
                            continue;
                        }
                        // A key repeated after itself orders nothing more,
                        // in either direction.
                        if !seen.iter().any(|(expr, _)| *expr == e.expr.to_string()) {
                            seen.push((e.expr.to_string(), e.to_string()));
                        }
                    }
                    seen.into_iter().map(|(_, key)| key).collect()
                };
                canonical(sort.expr()) == canonical(keys)
            })
        });
    }
    plan.downcast_ref::<UnionExec>().is_some()
        && plan.children().into_iter().all(|c| sorted_on(c, keys))
}

/// The plan below `plan`, through aggregates that group by exactly their
/// input's leading columns in order (`c0@0, c1@1, …`, no grouping sets) and
/// repartitions between them, whose columns are `plan`'s grouping columns
/// at the same indices: an equality of two of them there holds in every
/// group `plan` outputs. `None` when `plan` is no such aggregate.
fn grouped_source(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    use datafusion::physical_expr::expressions::Column;
    use datafusion::physical_plan::aggregates::AggregateExec;
    use datafusion::physical_plan::repartition::RepartitionExec;
    if let Some(repartition) = plan.downcast_ref::<RepartitionExec>() {
        return grouped_source(repartition.input());
    }
    let aggregate = plan.downcast_ref::<AggregateExec>()?;
    let group = aggregate.group_expr();
    let identity = group.is_single()
        && group
            .expr()
            .iter()
            .enumerate()
            .all(|(i, (e, _))| e.downcast_ref::<Column>().is_some_and(|c| c.index() == i));
    if !identity {
        return None;
    }
    let input = aggregate.input();
    Some(grouped_source(input).unwrap_or_else(|| input.clone()))
}
