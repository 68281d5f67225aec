//! What a pipeline's plans may do: read their input (and, for enrich, a
//! projection) and compute rows from it, nothing else; and what their
//! output must hold to be stored as events.

use super::compile::{INPUT_SCHEMA, INPUT_TABLE};
use crate::schema;
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::LogicalPlan;

/// Walks `plan` with its subqueries; the first node `judge` finds fault
/// with is the refusal.
pub(super) fn walk(
    plan: &LogicalPlan,
    judge: impl Fn(&LogicalPlan) -> Option<String>,
) -> Result<(), String> {
    let mut refusal = None;
    let _ = plan.apply_with_subqueries(|node| match judge(node) {
        Some(message) => {
            refusal = Some(message);
            Ok(TreeNodeRecursion::Stop)
        }
        None => Ok(TreeNodeRecursion::Continue),
    });
    match refusal {
        Some(message) => Err(message),
        None => Ok(()),
    }
}

/// Whether `node` scans the pipeline's input.
pub(super) fn reads_input(node: &LogicalPlan) -> bool {
    matches!(node, LogicalPlan::TableScan(scan)
        if scan.table_name.schema() == Some(INPUT_SCHEMA) && scan.table_name.table() == INPUT_TABLE)
}

/// The name of `node`'s kind, as a plan shows it (`Aggregate`, `Join`).
pub(super) fn kind_of(node: &LogicalPlan) -> String {
    node.display()
        .to_string()
        .split(':')
        .next()
        .unwrap_or("this")
        .to_string()
}

/// Refuses a plan that reads anything but the input or does more than
/// compute, filter and unnest rows one event at a time (and aggregate
/// them, when `aggregate` is set).
pub(super) fn check_plan(plan: &LogicalPlan, aggregate: bool) -> Result<(), String> {
    walk(plan, |node| match node {
        LogicalPlan::Projection(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::Unnest(_)
        | LogicalPlan::SubqueryAlias(_) => None,
        LogicalPlan::TableScan(scan) => match reads_input(node) {
            true => None,
            false => Some(format!(
                "an operator reads only its input event; this one reads the table {}",
                scan.table_name
            )),
        },
        LogicalPlan::Aggregate(_) if aggregate => None,
        LogicalPlan::Aggregate(_) => {
            Some("aggregates are not per event; use a window with an aggregate".to_string())
        }
        LogicalPlan::Subquery(_) => Some("subqueries are not allowed in an operator".to_string()),
        other => Some(format!(
            "an operator computes each event on its own; {} is not allowed",
            kind_of(other)
        )),
    })
}

/// Refuses an output that cannot be stored as events: `event_type` and
/// `entity_id` must be text and `timestamp` a timestamp, and `position`
/// must remain.
pub(super) fn check_output(schema: &SchemaRef) -> Result<(), String> {
    use arrow::datatypes::DataType;
    let text =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8);
    for name in [schema::EVENT_TYPE, schema::ENTITY_ID] {
        match schema.field_with_name(name) {
            Ok(f) if text(f.data_type()) => {}
            Ok(f) => {
                return Err(format!(
                    "the output's {name} is {}; it must be text to be stored as an event",
                    f.data_type()
                ));
            }
            Err(_) => return Err(format!("the output has no {name}; events need one")),
        }
    }
    match schema.field_with_name(schema::TIMESTAMP) {
        Ok(f) if matches!(f.data_type(), DataType::Timestamp(_, _)) => {}
        Ok(f) => {
            return Err(format!(
                "the output's timestamp is {}; it must be a timestamp (cast it with to_timestamp)",
                f.data_type()
            ));
        }
        Err(_) => return Err("the output has no timestamp; events need one".into()),
    }
    if schema.field_with_name(schema::POSITION).is_err() {
        return Err("the output lost the source position".into());
    }
    Ok(())
}
