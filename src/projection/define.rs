//! What a projection computes: an aggregate query over one table, taken
//! apart into what an incremental update needs — the rows it reads
//! (`WHERE`), the groups (`GROUP BY`), one fold per aggregate, and the
//! select list computed from the folds when the state is read.
//!
//! A query is accepted only if every part of it can be kept up to date
//! from each new batch of events alone, without looking at earlier events
//! again; anything else is refused with the part and the reason.

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchemaRef};
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use std::fmt;

/// The aggregates a projection can maintain, in the words of the refusal.
pub const SUPPORTED: &str = "count, count(DISTINCT …), sum, min, max, avg, and \
     first_value/last_value ORDER BY timestamp or position, each optionally with FILTER (WHERE …)";

/// Why a query cannot be a projection: the part of it, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub part: String,
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.part, self.reason)
    }
}

impl std::error::Error for Refusal {}

fn refuse<T>(part: impl fmt::Display, reason: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        part: part.to_string(),
        reason: reason.into(),
    })
}

/// The column an ordered fold (`first_value`, `last_value`) orders by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderKey {
    Timestamp,
    Position,
}

/// How one aggregate folds rows into its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// `count(*)` (no argument) or `count(x)` (its non-null values).
    Count,
    CountDistinct,
    Sum,
    Min,
    Max,
    Avg,
    /// The value of the row that comes first (or last) by the key.
    First(OrderKey),
    Last(OrderKey),
}

/// One aggregate of the query.
#[derive(Debug, Clone)]
pub struct Aggregate {
    pub fold: Fold,
    /// The value folded (over the table's columns); `None` for `count(*)`.
    pub arg: Option<Expr>,
    /// `FILTER (WHERE …)`: only the rows it holds for are folded.
    pub filter: Option<Expr>,
}

/// A projection's query, taken apart.
#[derive(Debug, Clone)]
pub struct Definition {
    /// The table it reads, as the query names it.
    pub table: String,
    /// The columns of the table the expressions below refer to.
    pub table_schema: DFSchemaRef,
    /// `WHERE`, over the table's columns.
    pub filter: Option<Expr>,
    /// The `GROUP BY` expressions, over the table's columns: the state's key.
    pub keys: Vec<Expr>,
    pub aggregates: Vec<Aggregate>,
    /// The keys, then one column per aggregate: what the state holds per
    /// group, under the names the select list refers to.
    pub state_schema: DFSchemaRef,
    /// The select list, over `state_schema`.
    pub output: Vec<Expr>,
    pub output_schema: DFSchemaRef,
}

/// Takes apart `plan`, an unoptimised plan of `SELECT key…, agg… FROM
/// table [WHERE …] [GROUP BY key…]`, or says which part cannot be
/// maintained incrementally and why.
pub fn define(plan: &LogicalPlan) -> Result<Definition, Refusal> {
    let projection = match plan {
        LogicalPlan::Projection(p) => p,
        LogicalPlan::Sort(_) => {
            return refuse(
                "ORDER BY",
                "a projection's state has no order of its own; order it when reading it",
            );
        }
        LogicalPlan::Limit(_) => {
            return refuse(
                "LIMIT",
                "a projection keeps every group; limit the rows when reading it",
            );
        }
        LogicalPlan::Distinct(_) => {
            return refuse(
                "SELECT DISTINCT",
                "group by the columns instead (GROUP BY makes each group one row)",
            );
        }
        LogicalPlan::Union(_) => {
            return refuse(
                "UNION",
                "a projection is one aggregate query over one table",
            );
        }
        other => {
            return refuse(
                other.display(),
                "a projection is SELECT key…, aggregate… FROM table [WHERE …] [GROUP BY key…]",
            );
        }
    };
    for expr in &projection.expr {
        fixed_per_row(expr, "the select list")?;
    }
    let aggregate = match projection.input.as_ref() {
        LogicalPlan::Aggregate(a) => a,
        LogicalPlan::Window(w) => {
            let name = w
                .window_expr
                .first()
                .map(|e| e.schema_name().to_string())
                .unwrap_or_else(|| "a window function".into());
            return refuse(
                name,
                "a window function's value depends on the rows around each row, \
                 which a new event can change for rows already counted",
            );
        }
        LogicalPlan::Filter(f) if matches!(f.input.as_ref(), LogicalPlan::Aggregate(_)) => {
            return refuse(
                "HAVING",
                "filter the projection's rows when reading it (SELECT … FROM projections.name WHERE …)",
            );
        }
        _ => {
            return refuse(
                "the query",
                "it has no aggregate: a projection is SELECT key…, aggregate… FROM table \
                 [WHERE …] [GROUP BY key…], with aggregates among: "
                    .to_string()
                    + SUPPORTED,
            );
        }
    };
    let mut keys = Vec::with_capacity(aggregate.group_expr.len());
    for key in &aggregate.group_expr {
        if matches!(key, Expr::GroupingSet(_)) {
            return refuse(
                "GROUPING SETS, ROLLUP or CUBE",
                "make one projection per grouping instead",
            );
        }
        fixed_per_row(key, "GROUP BY")?;
        keys.push(unqualified(key.clone()));
    }
    let mut aggregates = Vec::with_capacity(aggregate.aggr_expr.len());
    for expr in &aggregate.aggr_expr {
        aggregates.push(fold_of(expr)?);
    }
    let (table, table_schema, filter) = source(aggregate.input.as_ref())?;
    Ok(Definition {
        table,
        table_schema,
        filter,
        keys,
        aggregates,
        state_schema: aggregate.schema.clone(),
        output: projection.expr.clone(),
        output_schema: projection.schema.clone(),
    })
}

/// The table under the aggregate, and the conjunction of the filters on
/// the way to it.
fn source(plan: &LogicalPlan) -> Result<(String, DFSchemaRef, Option<Expr>), Refusal> {
    let mut filters = Vec::new();
    let mut node = plan;
    loop {
        match node {
            LogicalPlan::Filter(f) => {
                fixed_per_row(&f.predicate, "WHERE")?;
                filters.push(f.predicate.clone());
                node = f.input.as_ref();
            }
            LogicalPlan::SubqueryAlias(a) => {
                if !matches!(a.input.as_ref(), LogicalPlan::TableScan(_)) {
                    return refuse(
                        format!("the subquery {}", a.alias),
                        "a projection reads a table directly (put its conditions in WHERE)",
                    );
                }
                node = a.input.as_ref();
            }
            LogicalPlan::TableScan(scan) => {
                if scan
                    .table_name
                    .schema()
                    .is_some_and(|s| s != crate::query::SCHEMA)
                {
                    return refuse(
                        scan.table_name.to_string(),
                        "a projection reads one of the tenant's event tables",
                    );
                }
                let filter = filters.into_iter().reduce(|a, b| a.and(b));
                // Above an alias the columns carry the alias; the folds
                // evaluate them over the table's own columns.
                let filter = filter.map(unqualified);
                return Ok((
                    scan.table_name.table().to_string(),
                    scan.projected_schema.clone(),
                    filter,
                ));
            }
            LogicalPlan::Join(_) => {
                return refuse(
                    "a join",
                    "a projection reads one table; enrich its rows when reading it \
                     (join projections.name with another table)",
                );
            }
            LogicalPlan::Union(_) => {
                return refuse("UNION", "a projection reads one table");
            }
            LogicalPlan::Projection(_) | LogicalPlan::Aggregate(_) => {
                return refuse(
                    "a subquery in FROM",
                    "a projection reads a table directly (put its conditions in WHERE)",
                );
            }
            other => {
                return refuse(
                    other.display(),
                    "a projection reads one of the tenant's event tables",
                );
            }
        }
    }
}

/// `expr` with its columns' qualifiers dropped.
fn unqualified(expr: Expr) -> Expr {
    use datafusion::common::tree_node::Transformed;
    expr.transform(|e| {
        Ok(match e {
            Expr::Column(c) if c.relation.is_some() => {
                Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))
            }
            e => Transformed::no(e),
        })
    })
    .map(|t| t.data)
    .expect("renaming columns cannot fail")
}

/// The fold of one aggregate expression of the `Aggregate` node.
fn fold_of(expr: &Expr) -> Result<Aggregate, Refusal> {
    let inner = match expr {
        Expr::Alias(a) => a.expr.as_ref(),
        e => e,
    };
    let Expr::AggregateFunction(f) = inner else {
        return refuse(expr.schema_name(), "not an aggregate");
    };
    let name = f.func.name().to_ascii_lowercase();
    let shown = inner.schema_name().to_string();
    let params = &f.params;
    if params.null_treatment.is_some() {
        return refuse(shown, "IGNORE NULLS / RESPECT NULLS are not supported here");
    }
    let filter = match &params.filter {
        Some(filter) => {
            fixed_per_row(filter, &format!("the FILTER of {shown}"))?;
            Some(unqualified(filter.as_ref().clone()))
        }
        None => None,
    };
    for arg in &params.args {
        fixed_per_row(arg, &shown)?;
    }
    let one_arg = || -> Result<Option<Expr>, Refusal> {
        match params.args.as_slice() {
            [arg] => Ok(Some(unqualified(arg.clone()))),
            _ => refuse(&shown, "takes exactly one argument here"),
        }
    };
    let ordered = matches!(name.as_str(), "first_value" | "last_value");
    if !ordered && !params.order_by.is_empty() {
        return refuse(
            &shown,
            "ORDER BY inside this aggregate changes nothing; remove it",
        );
    }
    if params.distinct && name != "count" {
        return refuse(&shown, "DISTINCT is supported only in count(DISTINCT …)");
    }
    let (fold, arg) = match name.as_str() {
        "count" if params.distinct => (Fold::CountDistinct, one_arg()?),
        "count" => {
            // `count(*)` is planned as a count of a literal: every row.
            let arg = match params.args.as_slice() {
                [] => None,
                [Expr::Literal(v, _)] if !v.is_null() => None,
                [_] => one_arg()?,
                _ => return refuse(&shown, "count of several values is not supported"),
            };
            (Fold::Count, arg)
        }
        "sum" => (Fold::Sum, one_arg()?),
        "min" => (Fold::Min, one_arg()?),
        "max" => (Fold::Max, one_arg()?),
        "avg" | "mean" => (Fold::Avg, one_arg()?),
        "first_value" | "last_value" => {
            let [sort] = params.order_by.as_slice() else {
                return refuse(
                    &shown,
                    "needs ORDER BY timestamp or ORDER BY position, so that a new event \
                     decides by its own value whether it comes first or last",
                );
            };
            let key = match &sort.expr {
                Expr::Column(c) if c.name == crate::schema::TIMESTAMP => OrderKey::Timestamp,
                Expr::Column(c) if c.name == crate::schema::POSITION => OrderKey::Position,
                other => {
                    return refuse(
                        &shown,
                        format!("ORDER BY {other}: ordered by timestamp or position only"),
                    );
                }
            };
            let first = (name == "first_value") == sort.asc;
            let fold = if first {
                Fold::First(key)
            } else {
                Fold::Last(key)
            };
            (fold, one_arg()?)
        }
        _ => {
            return refuse(
                shown,
                format!(
                    "{name} cannot be updated from new events alone (it needs the values \
                     already folded); supported: {SUPPORTED}"
                ),
            );
        }
    };
    Ok(Aggregate { fold, arg, filter })
}

/// Refuses what gives a row a value that depends on more than the row:
/// a subquery, a parameter, a function whose value changes over time.
fn fixed_per_row(expr: &Expr, part: &str) -> Result<(), Refusal> {
    let mut found: Option<Refusal> = None;
    let _ = expr.apply(|e| {
        let why = match e {
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_) => Some((
                "a subquery".to_string(),
                "its result can change as other events arrive",
            )),
            Expr::Placeholder(p) => Some((
                format!("the parameter {}", p.id),
                "a projection's query is fixed when it is defined",
            )),
            Expr::ScalarFunction(f) if f.func.signature().volatility != Volatility::Immutable => {
                Some((
                    format!("{}()", f.func.name()),
                    "its value changes over time, so events folded earlier would disagree \
                     with those folded later",
                ))
            }
            Expr::WindowFunction(_) => Some((
                e.schema_name().to_string(),
                "a window function's value depends on the rows around each row",
            )),
            _ => None,
        };
        Ok(match why {
            Some((what, reason)) => {
                found = Some(Refusal {
                    part: format!("{what} in {part}"),
                    reason: reason.to_string(),
                });
                TreeNodeRecursion::Stop
            }
            None => TreeNodeRecursion::Continue,
        })
    });
    match found {
        Some(r) => Err(r),
        None => Ok(()),
    }
}

#[cfg(test)]
#[path = "define_tests.rs"]
mod tests;
