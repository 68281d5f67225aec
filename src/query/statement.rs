//! One SQL statement: parsed within the session's bounds, refused if it
//! would change something, planned, bound to its parameters and started.

use super::{SCHEMA, bounds, pin};
use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SQLOptions, SessionContext};
use datafusion::sql::parser::Statement;
use std::sync::Arc;

/// The refusal of a statement that would change something (DDL, DML,
/// `SET`): queries are read-only. Carried inside the engine's error as an
/// external error, so that callers recognise it by type
/// ([`read_only_refusal`]).
#[derive(Debug, thiserror::Error)]
#[error("{0} (queries are read-only)")]
pub struct ReadOnlyRefusal(pub String);

/// The read-only refusal inside `e`, however deeply wrapped.
pub fn read_only_refusal(e: &DataFusionError) -> Option<&ReadOnlyRefusal> {
    match e {
        DataFusionError::External(inner) => inner.downcast_ref(),
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            read_only_refusal(inner)
        }
        DataFusionError::Shared(inner) => read_only_refusal(inner),
        _ => None,
    }
}

/// What a query may do: read only. DDL, DML (including `COPY ... TO`) and
/// `SET` are refused.
pub fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Plans `sql` (with `params` bound to its placeholders, if given) in
/// the session and starts executing it.
pub async fn start(
    ctx: &SessionContext,
    sql: &str,
    params: Option<&RecordBatch>,
) -> Result<SendableRecordBatchStream> {
    let mut plan = plan_sql(ctx, sql).await?;
    if let Some(params) = params {
        plan = bind(plan, params)?;
    }
    ctx.execute_logical_plan(plan).await?.execute_stream().await
}

/// `sql` parsed within the session's [`bounds`] (the defaults in a
/// session without them).
fn parse_bounded(state: &SessionState, sql: &str) -> Result<Statement> {
    let bounds = state
        .config()
        .get_extension::<bounds::SessionBounds>()
        .unwrap_or_else(|| Arc::new(bounds::SessionBounds::new(Default::default())));
    bounds.parse(state, sql)
}

/// The tables `sql` names, as policies name them: the tenant's tables by
/// name (without a pin), the others with their schema (`system.audit`,
/// `projections.p`). Common table expressions are left out; table
/// functions' inner queries are not looked into.
pub fn tables_named(ctx: &SessionContext, sql: &str) -> Result<Vec<String>> {
    let state = ctx.state();
    let mut statement = parse_bounded(&state, sql)?;
    if let datafusion::sql::parser::Statement::Statement(inner) = &mut statement {
        pin::rewrite_as_of(inner.as_mut()).map_err(DataFusionError::Plan)?;
    }
    let mut names: Vec<String> = state
        .resolve_table_references(&statement)?
        .into_iter()
        .map(|r| match r.schema() {
            None | Some(SCHEMA) => {
                let table = r.table();
                pin::Pin::split_name(table)
                    .map_or(table, |(n, _)| n)
                    .to_string()
            }
            Some(schema) => format!("{schema}.{}", r.table()),
        })
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// Plans a read-only statement within the session's [`bounds`].
/// Placeholders may be `$1`, `$2`, ... or `?`, which are numbered in the
/// order they appear in the text (the form JDBC and ADBC send).
pub async fn plan_sql(ctx: &SessionContext, sql: &str) -> Result<LogicalPlan> {
    let state = ctx.state();
    let mut statement = parse_bounded(&state, sql)?;
    if let datafusion::sql::parser::Statement::Statement(inner) = &mut statement {
        number_placeholders(inner.as_mut());
        pin::rewrite_as_of(inner.as_mut()).map_err(DataFusionError::Plan)?;
    }
    let plan = state.statement_to_plan(statement).await?;
    // The options refuse only what would change something.
    read_only().verify_plan(&plan).map_err(|e| {
        let message = e.strip_backtrace().to_string();
        let message = message
            .strip_prefix("Error during planning: ")
            .unwrap_or(&message);
        DataFusionError::External(Box::new(ReadOnlyRefusal(message.to_string())))
    })?;
    Ok(plan)
}

/// Renames each `?` placeholder to `$n`, numbered by position in the text.
fn number_placeholders(statement: &mut datafusion::sql::sqlparser::ast::Statement) {
    use datafusion::sql::sqlparser::ast::{Expr, Value, visit_expressions, visit_expressions_mut};
    use std::ops::ControlFlow;
    let is_bare = |e: &Expr| matches!(e, Expr::Value(v) if matches!(&v.value, Value::Placeholder(p) if p == "?"));
    let mut positions = Vec::new();
    let _ = visit_expressions(&*statement, |e| {
        if let Expr::Value(v) = e
            && is_bare(e)
        {
            positions.push((v.span.start.line, v.span.start.column));
        }
        ControlFlow::<()>::Continue(())
    });
    if positions.is_empty() {
        return;
    }
    positions.sort_unstable();
    let _ = visit_expressions_mut(statement, |e| {
        if is_bare(e)
            && let Expr::Value(v) = e
            && let Ok(i) = positions.binary_search(&(v.span.start.line, v.span.start.column))
        {
            v.value = Value::Placeholder(format!("${}", i + 1));
        }
        ControlFlow::<()>::Continue(())
    });
}

/// The placeholders of `plan` in order (`$1`, `$2`, ...), with the type
/// each was inferred to have, if any.
pub fn parameters(plan: &LogicalPlan) -> Result<Vec<(String, Option<DataType>)>> {
    let mut params: Vec<(String, Option<DataType>)> =
        plan.get_parameter_types()?.into_iter().collect();
    params.sort_by_key(|(name, _)| {
        name.strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(usize::MAX)
    });
    Ok(params)
}

/// Binds the one row of `params` to the plan's placeholders, by position,
/// casting each value to the type its placeholder was inferred to have.
pub fn bind(plan: LogicalPlan, params: &RecordBatch) -> Result<LogicalPlan> {
    let wanted = parameters(&plan)?;
    if params.num_rows() != 1 {
        return Err(DataFusionError::Plan(format!(
            "bind exactly one row of parameters to a query; {} rows were bound",
            params.num_rows()
        )));
    }
    if params.num_columns() != wanted.len() {
        return Err(DataFusionError::Plan(format!(
            "the statement has {} parameter(s); {} value(s) were bound",
            wanted.len(),
            params.num_columns()
        )));
    }
    let mut values = Vec::with_capacity(wanted.len());
    for (i, (name, ty)) in wanted.iter().enumerate() {
        let value = ScalarValue::try_from_array(params.column(i), 0)?;
        let value = match ty {
            Some(ty) if value.data_type() != *ty && !value.is_null() => {
                value.cast_to(ty).map_err(|e| {
                    DataFusionError::Plan(format!(
                        "parameter {name}: cannot use {} value {value} as {ty}: {e}",
                        value.data_type()
                    ))
                })?
            }
            Some(ty) if value.is_null() => ScalarValue::try_from(ty)?,
            _ => value,
        };
        values.push(value);
    }
    plan.with_param_values(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(sql: &str) -> String {
        let mut statements = datafusion::sql::parser::DFParser::parse_sql(sql).unwrap();
        let Some(datafusion::sql::parser::Statement::Statement(mut inner)) = statements.pop_front()
        else {
            panic!("not a SQL statement: {sql}");
        };
        number_placeholders(inner.as_mut());
        inner.to_string()
    }

    #[test]
    fn question_marks_are_numbered_in_text_order() {
        assert_eq!(
            numbered(
                "WITH w AS (SELECT ? AS a) SELECT a, ? FROM w WHERE a = ? AND b IN (?, ?) LIMIT ?"
            ),
            "WITH w AS (SELECT $1 AS a) SELECT a, $2 FROM w WHERE a = $3 AND b IN ($4, $5) LIMIT $6"
        );
        // across lines, and mixed with text that looks like one
        assert_eq!(
            numbered("SELECT '?' AS q,\n ? AS x\nFROM t WHERE y = ?"),
            "SELECT '?' AS q, $1 AS x FROM t WHERE y = $2"
        );
        // numbered placeholders are left as they are
        assert_eq!(numbered("SELECT $2, $1"), "SELECT $2, $1");
    }
}
