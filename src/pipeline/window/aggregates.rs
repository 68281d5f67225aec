//! A window's aggregates, each planned alone and lowered to a DataFusion
//! aggregate expression.

use super::Aggregate;
use crate::pipeline::compile::{INPUT_SCHEMA, INPUT_TABLE, message_of, quote};
use arrow::datatypes::SchemaRef;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::prelude::SessionContext;
use indexmap::IndexMap;

/// Plans each of `aggregates` (name to one aggregate call) over `input`.
pub(super) async fn plan(
    ctx: &SessionContext,
    input: &SchemaRef,
    aggregates: &IndexMap<String, String>,
) -> std::result::Result<Vec<Aggregate>, String> {
    let state = ctx.state();
    let mut planned = Vec::with_capacity(aggregates.len());
    for (name, text) in aggregates {
        let fail = |m: String| format!("aggregates.{name}: {m}");
        let sql = format!(
            "SELECT ({text}) AS {} FROM {INPUT_SCHEMA}.{INPUT_TABLE}",
            quote(name)
        );
        let plan = crate::query::plan_sql(ctx, &sql)
            .await
            .map_err(|e| fail(message_of(&e)))?;
        let plan = state
            .analyzer()
            .execute_and_check(plan, state.config_options(), |_, _| {})
            .map_err(|e| fail(message_of(&e)))?;
        let one = "give one aggregate call, such as count(*) or sum(amount)".to_string();
        let LogicalPlan::Projection(projection) = &plan else {
            return Err(fail(one));
        };
        let LogicalPlan::Aggregate(aggregate) = projection.input.as_ref() else {
            return Err(fail(one));
        };
        if aggregate.aggr_expr.len() != 1 || !aggregate.group_expr.is_empty() {
            return Err(fail(one));
        }
        // The call itself, under the planner's aliases.
        let plain = match projection.expr.as_slice() {
            [e] => {
                let mut e = e;
                while let Expr::Alias(a) = e {
                    e = a.expr.as_ref();
                }
                matches!(e, Expr::Column(_))
            }
            _ => false,
        };
        if !plain {
            return Err(fail(one));
        }
        crate::pipeline::checks::check_plan(&plan, true).map_err(fail)?;
        let context =
            datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext::default();
        let lowered = datafusion::physical_expr::aggregate::LoweredAggregateBuilder::new(
            &aggregate.aggr_expr[0],
            aggregate.input.schema(),
            input.as_ref(),
            state.execution_props(),
            &context,
        )
        .build()
        .map_err(|e| fail(message_of(&e)))?;
        let (expr, filter, order) = (lowered.aggregate, lowered.filter, lowered.order_bys);
        if !order.is_empty() {
            return Err(fail(
                "an aggregate over a window takes its events in position order; ORDER BY is not allowed".into(),
            ));
        }
        planned.push(Aggregate {
            name: name.clone(),
            expr,
            filter,
        });
    }
    Ok(planned)
}
