//! The second step: a [`Query`] → a DataFusion `LogicalPlan`, against the
//! table's schema and the session's functions. The errors found here
//! (unknown columns and functions, aggregations out of place, values of the
//! wrong type) are at the paths the nodes were read from.
//!
//! - this file: `where`, `group-by`, `select`, `having`, then `order-by`,
//!   `limit`, `offset` and `explain`;
//! - [`expr`] compiles expressions;
//! - [`forms`] compiles the analytics forms.

mod expr;
mod forms;
#[cfg(test)]
mod tests;

pub(crate) use expr::Cx;

use super::ast::{Body, ExprKind, Query, Select, SelectItem, SortKey};
use super::keywords::{Clause, suggest};
use super::{DslError, Path, engine};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema};
use datafusion::logical_expr::utils::find_aggregate_exprs;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, SortExpr};

fn at(clause: Clause) -> Path {
    Path::default().key(clause.word())
}

/// Compiles `query` over `scan`, the table's rows.
pub(crate) fn query(
    cx: &Cx<'_>,
    query: &Query,
    scan: LogicalPlanBuilder,
) -> Result<LogicalPlan, DslError> {
    let mut builder = scan;
    if let Some(w) = &query.filter {
        let predicate = cx.expr(w)?;
        if !find_aggregate_exprs([&predicate]).is_empty() {
            return Err(DslError::new(
                &w.path,
                "aggregations are not allowed in where; use having",
            ));
        }
        builder = builder.filter(predicate).map_err(|e| engine(&w.path, e))?;
    }
    match &query.body {
        Body::Form(form) => {
            let builder = forms::compile(cx, form, builder)?;
            finish(query, builder, &[], None)
        }
        Body::Select(select) => {
            let (builder, exprs) = selection(cx, select, builder)?;
            finish(query, builder, &exprs, Some(cx))
        }
    }
}

/// `group-by`, `select` and `having`: the plan up to the projection, and
/// the projection's expressions.
fn selection(
    cx: &Cx<'_>,
    s: &Select,
    mut builder: LogicalPlanBuilder,
) -> Result<(LogicalPlanBuilder, Vec<Expr>), DslError> {
    // group-by first: select may name its aliases
    let group = s
        .group_by
        .iter()
        .map(|g| {
            let e = cx.expr(g)?;
            if !find_aggregate_exprs([&e]).is_empty() {
                return Err(DslError::new(&g.path, "cannot group by an aggregation"));
            }
            Ok(e)
        })
        .collect::<Result<Vec<Expr>, DslError>>()?;
    let group_alias = |name: &str| {
        group.iter().find_map(|g| match g {
            Expr::Alias(a) if a.name == name => Some(g.clone()),
            _ => None,
        })
    };

    let select_path = at(Clause::Select);
    let mut select: Vec<(Expr, Path)> = Vec::new();
    if s.star {
        // "*" keeps every input column, in order, before the other items
        select.extend(cx.schema.fields().iter().map(|f| {
            (
                Expr::Column(Column::from_name(f.name())),
                select_path.clone(),
            )
        }));
    }
    for item in &s.items {
        select.push(match item {
            SelectItem::Name(n) if cx.schema.has_column_with_unqualified_name(&n.item) => {
                (Expr::Column(Column::from_name(&n.item)), n.path.clone())
            }
            SelectItem::Name(n) => match group_alias(&n.item) {
                Some(g) => (g, n.path.clone()),
                // a payload path keeps the name it was written with
                None => (cx.column(&n.item, &n.path)?.alias(&n.item), n.path.clone()),
            },
            SelectItem::Expr { expr, name } => {
                let e = cx.expr(expr)?;
                let e = match name {
                    Some(name) => e.alias(name),
                    None => e,
                };
                (e, expr.path.clone())
            }
        });
    }
    let having = match &s.having {
        Some(h) => Some((cx.expr(h)?, h.path.clone())),
        None => None,
    };

    let aggregates = find_aggregate_exprs(
        select
            .iter()
            .map(|(e, _)| e)
            .chain(having.iter().map(|(e, _)| e)),
    );
    let aggregated = !group.is_empty() || !aggregates.is_empty();
    if !aggregated && let Some((_, p)) = &having {
        return Err(DslError::new(p, "having needs group-by or an aggregation"));
    }
    if aggregated {
        // Group by the unaliased expressions, each once (two aliases of
        // one key are one column); rebase everything above on the
        // aggregate's output columns.
        let mut keys: Vec<Expr> = Vec::with_capacity(group.len());
        for e in group.into_iter().map(Expr::unalias) {
            if !keys.contains(&e) {
                keys.push(e);
            }
        }
        let group = keys;
        builder = builder
            .aggregate(group.clone(), aggregates.clone())
            .map_err(|e| engine(&at(Clause::GroupBy), e))?;
        let out = builder.schema().clone();
        let bases: Vec<(Expr, Column)> = group
            .iter()
            .chain(aggregates.iter())
            .zip(out.columns())
            .map(|(e, c)| (e.clone(), c))
            .collect();
        for (e, p) in &mut select {
            *e = rebase(e.clone(), &bases, &out, p)?;
        }
        if let Some((h, p)) = having {
            let h = rebase(h, &bases, &out, &p)?;
            builder = builder.filter(h).map_err(|e| engine(&p, e))?;
        }
    }
    Ok((builder, select.into_iter().map(|(e, _)| e).collect()))
}

/// Replaces the sub-expressions computed by the aggregate (group keys and
/// aggregations) with its output columns, and checks that nothing else of
/// the input is left.
fn rebase(
    e: Expr,
    bases: &[(Expr, Column)],
    out: &DFSchema,
    path: &Path,
) -> Result<Expr, DslError> {
    let rebased = e
        .transform_down(|node| {
            let key = node.clone().unalias();
            match bases.iter().find(|(b, _)| *b == key || *b == node) {
                Some((_, c)) => Ok(Transformed::new(
                    match node {
                        Expr::Alias(a) => Expr::Column(c.clone()).alias(a.name),
                        _ => Expr::Column(c.clone()),
                    },
                    true,
                    TreeNodeRecursion::Jump,
                )),
                None => Ok(Transformed::no(node)),
            }
        })
        .map_err(|err| engine(path, err))?
        .data;
    for c in rebased.column_refs() {
        if !out.has_column(c) {
            return Err(DslError::new(
                path,
                format!(
                    "\"{}\" must be in group-by or inside an aggregation",
                    c.name
                ),
            ));
        }
    }
    Ok(rebased)
}

/// select (projection), order-by, offset and limit, and explain. After a
/// form there is no `cx`: only the result's columns can be sorted by.
fn finish(
    query: &Query,
    mut builder: LogicalPlanBuilder,
    select: &[Expr],
    cx: Option<&Cx<'_>>,
) -> Result<LogicalPlan, DslError> {
    if !select.is_empty() {
        builder = builder
            .project(select.to_vec())
            .map_err(|e| engine(&at(Clause::Select), e))?;
    }
    if !query.order_by.is_empty() {
        let out = builder.schema().clone();
        let mut sorts: Vec<SortExpr> = Vec::new();
        for item in &query.order_by {
            let name = match &item.key {
                SortKey::Expr(e) => match &e.kind {
                    ExprKind::Name(n) => Some(n.as_str()),
                    _ => None,
                },
                SortKey::NotAName(_) => None,
            };
            // an output column (also a select alias) by name
            let output = name.filter(|n| out.has_column_with_unqualified_name(n));
            let e = match (output, &item.key, cx) {
                (Some(n), _, _) => Expr::Column(Column::from_name(n)),
                (None, SortKey::Expr(e), Some(cx)) => {
                    let compiled = cx.expr(e)?;
                    if !find_aggregate_exprs([&compiled]).is_empty() {
                        return Err(DslError::new(
                            &e.path,
                            "order by an aggregation's name: give it one with [\"as\", ...] in select",
                        ));
                    }
                    compiled
                }
                (None, SortKey::Expr(e), None) => {
                    return Err(unknown_result_column(&out, name.unwrap_or("?"), &e.path));
                }
                (None, SortKey::NotAName(p), _) => return Err(unknown_result_column(&out, "?", p)),
            };
            sorts.push(e.sort(item.ascending, !item.ascending));
        }
        builder = builder
            .sort(sorts)
            .map_err(|e| engine(&at(Clause::OrderBy), e))?;
    }
    if query.limit.is_some() || query.offset > 0 {
        builder = builder
            .limit(query.offset, query.limit)
            .map_err(|e| engine(&at(Clause::Limit), e))?;
    }
    if query.explain {
        builder = builder
            .explain(false, false)
            .map_err(|e| engine(&at(Clause::Explain), e))?;
    }
    builder.build().map_err(|e| engine(&Path::default(), e))
}

fn unknown_result_column(out: &DFSchema, shown: &str, path: &Path) -> DslError {
    let names: Vec<&str> = out.fields().iter().map(|f| f.name().as_str()).collect();
    DslError::new(
        path,
        format!(
            "unknown column \"{shown}\"; the result has {}{}",
            names.join(", "),
            suggest(shown, names.iter().copied())
        ),
    )
}
