//! The map-style query DSL: a JSON document compiled straight to a
//! DataFusion `LogicalPlan` with `LogicalPlanBuilder` and `Expr` builders.
//! docs/dsl.md is the grammar.
//!
//! Compilation checks the document as it goes and names the JSON path of
//! the first problem (`where[2][0]: unknown operator "=="`). The plan runs
//! in the tenant's session like SQL, so it sees the same tables and
//! functions.

mod expr;
mod forms;

use crate::auth::Principal;
use chrono::Utc;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema};
use datafusion::datasource::provider_as_source;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::utils::find_aggregate_exprs;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, SortExpr};
use datafusion::prelude::SessionContext;
use expr::{Cx, suggest};
use serde_json::{Map, Value};
use std::fmt;
use std::sync::Arc;

/// Where in the document something is, as `where[2][0]` or
/// `time-series.interval`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Path(String);

impl Path {
    fn key(&self, k: &str) -> Path {
        if self.0.is_empty() {
            Path(k.to_string())
        } else {
            Path(format!("{}.{k}", self.0))
        }
    }

    fn index(&self, i: usize) -> Path {
        Path(format!("{}[{i}]", self.0))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("(document)")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// A problem with a document, at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DslError {
    /// Where the problem is.
    pub path: String,
    /// What it is.
    pub message: String,
}

impl DslError {
    fn new(path: &Path, message: impl Into<String>) -> Self {
        DslError {
            path: path.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for DslError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for DslError {}

/// Why a document did not run.
#[derive(Debug)]
pub enum QueryError {
    /// The document is wrong (a 400 naming the path).
    Dsl(DslError),
    /// The engine refused or failed.
    Engine(DataFusionError),
}

impl From<DslError> for QueryError {
    fn from(e: DslError) -> Self {
        QueryError::Dsl(e)
    }
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        QueryError::Engine(e)
    }
}

/// The top-level keys a document may have.
const KEYS: &[&str] = &[
    "select",
    "from",
    "where",
    "group-by",
    "having",
    "order-by",
    "limit",
    "offset",
    "explain",
    "time-series",
    "funnel",
    "retention",
    "cohort",
    "anomalies",
    "trend",
];

/// The analytics forms; a document has at most one, and no `select` with it.
const FORMS: &[&str] = &[
    "time-series",
    "funnel",
    "retention",
    "cohort",
    "anomalies",
    "trend",
];

fn engine(path: &Path, e: DataFusionError) -> DslError {
    DslError::new(path, e.strip_backtrace())
}

/// Compiles `doc` into a logical plan in `ctx`'s session.
pub async fn compile(ctx: &SessionContext, doc: &Value) -> Result<LogicalPlan, QueryError> {
    let root = Path::default();
    let Value::Object(map) = doc else {
        return Err(DslError::new(&root, "a query document must be a JSON object").into());
    };
    for key in map.keys() {
        if !KEYS.contains(&key.as_str()) {
            return Err(DslError::new(
                &root.key(key),
                format!(
                    "unknown key \"{key}\"{}",
                    suggest(key, KEYS.iter().copied())
                ),
            )
            .into());
        }
    }
    let from_path = root.key("from");
    let table = match map.get("from") {
        Some(Value::String(t)) => t.clone(),
        Some(_) => return Err(DslError::new(&from_path, "expected a table name").into()),
        None => return Err(DslError::new(&from_path, "missing: name the table to query").into()),
    };
    let provider = match ctx.table_provider(table.as_str()).await {
        Ok(p) => p,
        Err(_) => {
            let names = table_names(ctx);
            return Err(DslError::new(
                &from_path,
                format!(
                    "unknown table \"{table}\"{}",
                    suggest(&table, names.iter().map(String::as_str))
                ),
            )
            .into());
        }
    };
    let scan = LogicalPlanBuilder::scan(table.as_str(), provider_as_source(provider), None)?;
    // Borrow the session's state rather than clone it (`ctx.state()`
    // copies every function registry): compiling is synchronous from here.
    let shared = ctx.state_ref();
    let state = shared.read();
    let schema = scan.schema().clone();
    let cx = Cx {
        schema: &schema,
        state: &state,
        now: Utc::now(),
        depth: Default::default(),
    };
    compile_with(&cx, map, scan).map_err(QueryError::from)
}

fn table_names(ctx: &SessionContext) -> Vec<String> {
    let state = ctx.state();
    let options = state.config_options();
    ctx.catalog(&options.catalog.default_catalog)
        .and_then(|c| c.schema(&options.catalog.default_schema))
        .map(|s| s.table_names())
        .unwrap_or_default()
}

/// A non-negative integer.
fn count_of(v: &Value, path: &Path) -> Result<usize, DslError> {
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| DslError::new(path, "expected a non-negative integer"))
}

fn list<'a>(map: &'a Map<String, Value>, key: &str, path: &Path) -> Result<&'a [Value], DslError> {
    match map.get(key) {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(DslError::new(path, "expected a list")),
    }
}

fn compile_with(
    cx: &Cx<'_>,
    map: &Map<String, Value>,
    scan: LogicalPlanBuilder,
) -> Result<LogicalPlan, DslError> {
    let root = Path::default();
    let mut builder = scan;
    if let Some(w) = map.get("where") {
        let path = root.key("where");
        let predicate = cx.expr(w, &path)?;
        if !find_aggregate_exprs([&predicate]).is_empty() {
            return Err(DslError::new(
                &path,
                "aggregations are not allowed in where; use having",
            ));
        }
        builder = builder.filter(predicate).map_err(|e| engine(&path, e))?;
    }

    let forms: Vec<&str> = FORMS
        .iter()
        .copied()
        .filter(|f| map.contains_key(*f))
        .collect();
    if forms.len() > 1 {
        return Err(DslError::new(
            &root.key(forms[1]),
            format!(
                "a document has one analytics form; it already has \"{}\"",
                forms[0]
            ),
        ));
    }
    if let Some(form) = forms.first() {
        for key in ["select", "group-by", "having"] {
            if map.contains_key(key) {
                return Err(DslError::new(
                    &root.key(key),
                    format!("\"{key}\" cannot be combined with \"{form}\""),
                ));
            }
        }
        let path = root.key(form);
        let spec = &map[*form];
        builder = forms::compile(cx, form, spec, builder, &path)?;
        return finish(map, builder, &[], None);
    }

    // group-by first: select may name its aliases
    let group_path = root.key("group-by");
    let group = list(map, "group-by", &group_path)?
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let p = group_path.index(i);
            let e = cx.expr(g, &p)?;
            if !find_aggregate_exprs([&e]).is_empty() {
                return Err(DslError::new(&p, "cannot group by an aggregation"));
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

    let select_path = root.key("select");
    let mut select = Vec::new();
    let items = list(map, "select", &select_path)?;
    let mut star = items.is_empty();
    for (i, item) in items.iter().enumerate() {
        let p = select_path.index(i);
        match item.as_str() {
            Some("*") => star = true,
            Some(name) if !cx.schema.has_column_with_unqualified_name(name) => {
                match group_alias(name) {
                    Some(g) => select.push((g, p)),
                    // a payload path keeps the name it was written with
                    None => select.push((cx.expr(item, &p)?.alias(name), p)),
                }
            }
            _ if expr::is_bare_aggregation(item) => {
                let name = expr::default_name(item);
                select.push((cx.expr(item, &p)?.alias(name), p));
            }
            _ => select.push((cx.expr(item, &p)?, p)),
        }
    }
    if star {
        // "*" keeps every input column, in order, before the other items
        let all: Vec<(Expr, Path)> = cx
            .schema
            .fields()
            .iter()
            .map(|f| {
                (
                    Expr::Column(Column::from_name(f.name())),
                    select_path.clone(),
                )
            })
            .collect();
        select = all.into_iter().chain(select).collect();
    }
    let having = match map.get("having") {
        Some(h) => Some((cx.expr(h, &root.key("having"))?, root.key("having"))),
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
    let mut having_expr = None;
    if aggregated {
        // Group by the unaliased expressions; rebase everything above on
        // the aggregate's output columns.
        let group: Vec<Expr> = group.into_iter().map(|e| e.unalias()).collect();
        builder = builder
            .aggregate(group.clone(), aggregates.clone())
            .map_err(|e| engine(&group_path, e))?;
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
            builder = builder.filter(h.clone()).map_err(|e| engine(&p, e))?;
            having_expr = Some(h);
        }
    }
    let _ = having_expr;
    let select: Vec<Expr> = select.into_iter().map(|(e, _)| e).collect();
    finish(map, builder, &select, Some(cx))
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

/// select (projection), order-by, offset and limit, and explain.
fn finish(
    map: &Map<String, Value>,
    mut builder: LogicalPlanBuilder,
    select: &[Expr],
    cx: Option<&Cx<'_>>,
) -> Result<LogicalPlan, DslError> {
    let root = Path::default();
    if !select.is_empty() {
        builder = builder
            .project(select.to_vec())
            .map_err(|e| engine(&root.key("select"), e))?;
    }
    let order_path = root.key("order-by");
    let order = list(map, "order-by", &order_path)?;
    if !order.is_empty() {
        let out = builder.schema().clone();
        let mut sorts: Vec<SortExpr> = Vec::new();
        for (i, item) in order.iter().enumerate() {
            let p = order_path.index(i);
            let (asc, target, tp) = match item {
                Value::Array(pair)
                    if pair.len() == 2
                        && matches!(pair[0].as_str(), Some("asc") | Some("desc")) =>
                {
                    (pair[0].as_str() == Some("asc"), &pair[1], p.index(1))
                }
                _ => (true, item, p.clone()),
            };
            let e = match target {
                // an output column (also a select alias) by name
                Value::String(name) if out.has_column_with_unqualified_name(name) => {
                    Expr::Column(Column::from_name(name))
                }
                other => match cx {
                    Some(cx) => {
                        let e = cx.expr(other, &tp)?;
                        if !find_aggregate_exprs([&e]).is_empty() {
                            return Err(DslError::new(
                                &tp,
                                "order by an aggregation's name: give it one with [\"as\", ...] in select",
                            ));
                        }
                        e
                    }
                    None => {
                        let names: Vec<&str> =
                            out.fields().iter().map(|f| f.name().as_str()).collect();
                        let shown = other.as_str().unwrap_or("?");
                        return Err(DslError::new(
                            &tp,
                            format!(
                                "unknown column \"{shown}\"; the result has {}{}",
                                names.join(", "),
                                suggest(shown, names.iter().copied())
                            ),
                        ));
                    }
                },
            };
            sorts.push(e.sort(asc, !asc));
        }
        builder = builder.sort(sorts).map_err(|e| engine(&order_path, e))?;
    }
    let limit = match map.get("limit") {
        Some(v) => Some(count_of(v, &root.key("limit"))?),
        None => None,
    };
    let offset = match map.get("offset") {
        Some(v) => count_of(v, &root.key("offset"))?,
        None => 0,
    };
    if limit.is_some() || offset > 0 {
        builder = builder
            .limit(offset, limit)
            .map_err(|e| engine(&root.key("limit"), e))?;
    }
    match map.get("explain") {
        None | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            builder = builder
                .explain(false, false)
                .map_err(|e| engine(&root.key("explain"), e))?;
        }
        Some(_) => {
            return Err(DslError::new(
                &root.key("explain"),
                "expected true or false",
            ));
        }
    }
    builder.build().map_err(|e| engine(&root, e))
}

/// Compiles `doc` in `caller`'s session and starts executing it, under
/// the query limits.
pub async fn run(
    engine: &Arc<crate::query::QueryEngine>,
    caller: &Principal,
    doc: &Value,
) -> Result<SendableRecordBatchStream, QueryError> {
    let ctx = engine.session(caller)?;
    let doc = doc.clone();
    engine
        .run(caller, async move {
            let plan = compile(&ctx, &doc).await?;
            let df = ctx.execute_logical_plan(plan).await?;
            Ok(df.execute_stream().await?)
        })
        .await
}
