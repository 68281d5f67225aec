//! Which of a query's conditions may run below a policy barrier, and the
//! checks and helpers for policies' own SQL.
//!
//! A condition runs below the barrier (next to the row filter, where it
//! prunes files) only when it cannot fail on any row and only removes
//! rows: built from unmasked columns, literals, comparisons, `AND`, `OR`,
//! `NOT`, `IS [NOT] NULL`, `IN` and `BETWEEN` over literals, and `LIKE`
//! with a literal pattern. Anything else (a cast of a column, a function,
//! arithmetic) stays above the barrier, where it sees visible rows only:
//! an error it raises cannot tell of a hidden one.

use crate::policy::Glob;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::error::Result;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, col, lit};
use datafusion::sql::sqlparser::ast::{self, visit_expressions};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use std::collections::BTreeSet;
use std::ops::ControlFlow;

/// Whether `expr` may run below the barrier, where `hidden` names the
/// columns it must not read (masked ones).
pub fn is_safe(expr: &Expr, hidden: &dyn Fn(&str) -> bool) -> bool {
    let literal = |e: &Expr| match e {
        Expr::Literal(..) => true,
        Expr::Cast(c) => matches!(*c.expr, Expr::Literal(..)),
        Expr::TryCast(c) => matches!(*c.expr, Expr::Literal(..)),
        _ => false,
    };
    match expr {
        Expr::Column(c) => !hidden(&c.name),
        e if literal(e) => true,
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            use Operator::*;
            matches!(
                op,
                Eq | NotEq | Lt | LtEq | Gt | GtEq | And | Or | IsDistinctFrom | IsNotDistinctFrom
            ) && is_safe(left, hidden)
                && is_safe(right, hidden)
        }
        Expr::Not(e)
        | Expr::IsNull(e)
        | Expr::IsNotNull(e)
        | Expr::IsTrue(e)
        | Expr::IsFalse(e)
        | Expr::IsNotTrue(e)
        | Expr::IsNotFalse(e)
        | Expr::IsUnknown(e)
        | Expr::IsNotUnknown(e) => is_safe(e, hidden),
        Expr::InList(l) => is_safe(&l.expr, hidden) && l.list.iter().all(literal),
        Expr::Between(b) => is_safe(&b.expr, hidden) && literal(&b.low) && literal(&b.high),
        Expr::Like(l) => !l.case_insensitive && is_safe(&l.expr, hidden) && literal(&l.pattern),
        _ => false,
    }
}

/// `expr` with its columns unqualified, to apply over a table's own
/// scan (the query may have named the table with its schema).
pub fn unqualified(expr: Expr) -> Result<Expr> {
    expr.transform(|e| match e {
        Expr::Column(c) if c.relation.is_some() => Ok(Transformed::yes(Expr::Column(
            Column::new_unqualified(c.name),
        ))),
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

fn parse(sql: &str) -> std::result::Result<ast::Expr, String> {
    let mut parser = Parser::new(&GenericDialect {})
        .try_with_sql(sql)
        .map_err(|e| e.to_string())?;
    let expr = parser.parse_expr().map_err(|e| e.to_string())?;
    match parser.peek_token().token {
        datafusion::sql::sqlparser::tokenizer::Token::EOF => Ok(expr),
        other => Err(format!("unexpected {other} after the expression")),
    }
}

/// The column names `sql` refers to (unquoted ones lower-cased, as
/// DataFusion reads them).
pub fn columns_named(sql: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let Ok(expr) = parse(sql) else {
        return names;
    };
    let name = |i: &ast::Ident| match i.quote_style {
        Some(_) => i.value.clone(),
        None => i.value.to_lowercase(),
    };
    let _ = visit_expressions(&expr, |e| {
        match e {
            ast::Expr::Identifier(i) => {
                names.insert(name(i));
            }
            ast::Expr::CompoundIdentifier(parts) => {
                if let Some(last) = parts.last() {
                    names.insert(name(last));
                }
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    names
}

/// Plans a policy's SQL (a row filter or an SQL mask) over `schema`,
/// refusing what a policy may not hold: subqueries, aggregates, window
/// functions, placeholders and functions whose value changes between
/// calls.
pub fn plan_sql(state: &SessionState, sql: &str, schema: &DFSchema) -> Result<Expr, String> {
    parse(sql)?;
    let expr = state
        .create_logical_expr(sql, schema)
        .map_err(|e| super::super::first_line(&e.strip_backtrace()))?;
    if !super::super::live::always_the_same(&expr) {
        return Err("only plain expressions over the row: no subqueries, aggregates, window functions, placeholders or functions of the clock or randomness".into());
    }
    Ok(expr)
}

/// Checks a policy's SQL on its own, with every column it names of an
/// unknown type: it must parse and hold only what [`plan_sql`] accepts.
pub fn check_sql(state: &SessionState, sql: &str) -> Result<(), String> {
    let fields: Vec<arrow::datatypes::Field> = columns_named(sql)
        .into_iter()
        .map(|n| arrow::datatypes::Field::new(n, arrow::datatypes::DataType::Null, true))
        .collect();
    let schema =
        DFSchema::try_from(arrow::datatypes::Schema::new(fields)).map_err(|e| e.to_string())?;
    plan_sql(state, sql, &schema).map(|_| ())
}

/// A glob as a `LIKE` pattern (`*` → `%`, `?` → `_`, the rest escaped).
fn like_pattern(glob: &Glob) -> String {
    let mut out = String::new();
    for c in glob.0.chars() {
        match c {
            '*' => out.push('%'),
            '?' => out.push('_'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

fn matches_any(column: &str, globs: &[Glob]) -> Expr {
    globs
        .iter()
        .map(|g| {
            Expr::Like(datafusion::logical_expr::expr::Like::new(
                false,
                Box::new(col(Column::new_unqualified(column))),
                Box::new(lit(like_pattern(g))),
                Some('\\'),
                false,
            ))
        })
        .reduce(Expr::or)
        .unwrap_or(Expr::Literal(ScalarValue::Boolean(Some(false)), None))
}

/// The rows of the event types `scope` admits, or `None` for all.
pub fn type_condition(scope: &crate::policy::decide::TypeScope) -> Option<Expr> {
    if scope.is_all() {
        return None;
    }
    let column = crate::schema::EVENT_TYPE;
    let allowed = scope.allowed.as_ref().map(|a| matches_any(column, a));
    let denied = (!scope.denied.is_empty()).then(|| !matches_any(column, &scope.denied));
    let condition = match (allowed, denied) {
        (Some(a), Some(d)) => Some(a.and(d)),
        (a, d) => a.or(d),
    };
    // A NULL event type (never stored) reads as not admitted.
    condition.map(|e| e.is_true())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{cast, in_list};
    use datafusion::prelude::SessionContext;

    #[test]
    fn only_conditions_that_cannot_fail_are_safe() {
        let hidden = |c: &str| c == "email";
        let safe = |e: Expr| is_safe(&e, &hidden);
        let c = |n: &str| col(Column::new_unqualified(n));
        assert!(safe(c("region").eq(lit("EU")).and(c("amount").gt(lit(5)))));
        assert!(safe(
            c("region")
                .is_null()
                .or(c("amount").between(lit(1), lit(2)))
        ));
        assert!(safe(in_list(c("region"), vec![lit("a"), lit("b")], true)));
        assert!(safe(c("region").like(lit("E%"))));
        assert!(safe(
            c("position").gt(cast(lit(5), arrow::datatypes::DataType::UInt64))
        ));
        // A masked column, a cast of a column, a function, arithmetic,
        // a non-literal list or pattern: not safe.
        assert!(!safe(c("email").eq(lit("x"))));
        assert!(!safe(
            cast(c("secret"), arrow::datatypes::DataType::Int32).eq(lit(1))
        ));
        assert!(!safe((c("amount") / lit(2)).gt(lit(1))));
        assert!(!safe(
            datafusion::functions::expr_fn::lower(c("region")).eq(lit("eu"))
        ));
        assert!(!safe(in_list(c("region"), vec![c("other")], false)));
        assert!(!safe(c("region").like(c("pattern"))));
        assert!(!safe(c("region").ilike(lit("e%"))));
    }

    #[test]
    fn names_types_and_checks() {
        let named = columns_named("region = 'EU' AND \"Mixed\" > 1 OR t.Owner = current_subject()");
        assert_eq!(
            named.into_iter().collect::<Vec<_>>(),
            ["Mixed", "owner", "region"]
        );
        let scope = crate::policy::decide::TypeScope {
            allowed: Some(vec![Glob::new("order_*")]),
            denied: vec![Glob::new("order_%secret")],
        };
        let text = type_condition(&scope).unwrap().to_string();
        assert!(
            text.contains(r#"event_type LIKE Utf8("order\_%")"#),
            "{text}"
        );
        assert!(
            text.contains(r#"NOT LIKE Utf8("order\_\%secret")"#),
            "{text}"
        );
        assert!(type_condition(&Default::default()).is_none());
        let ctx = SessionContext::new();
        let state = ctx.state();
        assert!(check_sql(&state, "region = 'EU' OR amount * 2 > 10").is_ok());
        for bad in [
            "region IN (SELECT 1)",
            "count(*) > 1",
            "random() > 0.5",
            "a = $1",
            "region = 'EU' extra",
            "",
        ] {
            assert!(check_sql(&state, bad).is_err(), "{bad}");
        }
    }
}
