//! The map-style query DSL: a JSON document compiled to a DataFusion
//! `LogicalPlan` with `LogicalPlanBuilder` and `Expr` builders.
//! docs/dsl.md is the grammar.
//!
//! Two steps:
//!
//! 1. `parse` reads the document into the typed AST of `ast` (the
//!    query, the analytics forms, expressions, aggregations), checking its
//!    shape: keys, kinds of values, operators, argument counts, nesting.
//! 2. `compile` builds the plan from the AST against the table's schema
//!    and the session's functions.
//!
//! Both name the JSON path of the first problem they find
//! (`where[2][0]: unknown operator "=="`): the parser where it reads, the
//! compiler from the path each AST node keeps. Every word of the language
//! is declared once, in `keywords`, for parsing and for "did you mean"
//! suggestions alike. The plan runs in the tenant's session like SQL, so
//! it sees the same tables and functions.

mod ast;
mod compile;
mod keywords;
mod parse;

use crate::auth::Principal;
use chrono::{DateTime, Utc};
use datafusion::common::Column;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::provider_as_source;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::prelude::SessionContext;
use keywords::{Clause, suggest};
use serde_json::Value;
use std::fmt;
use std::sync::Arc;

/// Where in the document something is, as `where[2][0]` or
/// `time-series.interval`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Path(String);

impl Path {
    pub(crate) fn key(&self, k: &str) -> Path {
        if self.0.is_empty() {
            Path(k.to_string())
        } else {
            Path(format!("{}.{k}", self.0))
        }
    }

    pub(crate) fn index(&self, i: usize) -> Path {
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
    pub(crate) fn new(path: &Path, message: impl Into<String>) -> Self {
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

/// An engine error while building the plan, as a problem at `path`.
fn engine(path: &Path, e: DataFusionError) -> DslError {
    DslError::new(path, e.strip_backtrace())
}

/// A `udfs` planning error's message, without DataFusion's prefix.
fn strip(e: DataFusionError) -> String {
    match e.strip_backtrace() {
        s if s.starts_with("Error during planning: ") => {
            s["Error during planning: ".len()..].to_string()
        }
        s => s,
    }
}

/// Compiles `doc` into a logical plan in `ctx`'s session.
pub async fn compile(ctx: &SessionContext, doc: &Value) -> Result<LogicalPlan, QueryError> {
    compile_at(ctx, doc, Utc::now()).await
}

/// [`compile`], with the document's "now" given.
pub(crate) async fn compile_at(
    ctx: &SessionContext,
    doc: &Value,
    now: DateTime<Utc>,
) -> Result<LogicalPlan, QueryError> {
    let query = parse::document(doc)?;
    let from_path = Path::default().key(Clause::From.word());
    let table = query.from.as_str();
    let pinned = match query.as_of {
        Some(pin) => pin.table_name(table),
        None => table.to_string(),
    };
    let provider = match ctx.table_provider(pinned.as_str()).await {
        Ok(p) => p,
        Err(_) => {
            let names = table_names(ctx);
            return Err(DslError::new(
                &from_path,
                format!(
                    "unknown table \"{table}\"{}",
                    suggest(table, names.iter().map(String::as_str))
                ),
            )
            .into());
        }
    };
    let scan = LogicalPlanBuilder::scan(table, provider_as_source(provider), None)?;
    // Borrow the session's state rather than clone it (`ctx.state()`
    // copies every function registry): compiling is synchronous from here.
    let shared = ctx.state_ref();
    let state = shared.read();
    let schema = scan.schema().clone();
    let cx = compile::Cx {
        schema: &schema,
        state: &state,
        now,
    };
    compile::query(&cx, &query, scan).map_err(QueryError::from)
}

fn table_names(ctx: &SessionContext) -> Vec<String> {
    let state = ctx.state();
    let options = state.config_options();
    ctx.catalog(&options.catalog.default_catalog)
        .and_then(|c| c.schema(&options.catalog.default_schema))
        .map(|s| s.table_names())
        .unwrap_or_default()
}

/// Parses `body` as a document, compiles it in `tenant`'s session and
/// starts executing it.
pub async fn run(
    engine: &Arc<crate::query::QueryEngine>,
    caller: &Principal,
    doc: &Value,
) -> Result<SendableRecordBatchStream, QueryError> {
    run_with(engine, caller, doc, &Default::default()).await
}

/// [`run`], reading the tables as `options` say.
pub async fn run_with(
    engine: &Arc<crate::query::QueryEngine>,
    caller: &Principal,
    doc: &Value,
    options: &crate::query::QueryOptions,
) -> Result<SendableRecordBatchStream, QueryError> {
    let ctx = crate::query::session_with(engine, caller, options)?;
    let doc = doc.clone();
    engine
        .run(caller, async move {
            let plan = compile(&ctx, &doc).await?;
            let df = ctx.execute_logical_plan(plan).await?;
            Ok(df.execute_stream().await?)
        })
        .await
}

/// The plan of a document of `table` with one `clause` besides `from`.
async fn compile_clause(
    engine: &Arc<crate::query::QueryEngine>,
    caller: &Principal,
    table: &str,
    clause: Clause,
    value: Value,
) -> Result<LogicalPlan, QueryError> {
    let ctx = crate::query::session_with(engine, caller, &Default::default())?;
    let mut doc = serde_json::Map::new();
    doc.insert(Clause::From.word().into(), Value::from(table));
    doc.insert(clause.word().into(), value);
    compile(&ctx, &Value::Object(doc)).await
}

/// The SQL text of one DSL expression over `table`'s columns, per row
/// (an aggregate is refused), for callers that plan it inside SQL of
/// their own (pipeline operators). Errors name the place under `select`.
pub async fn expr_sql(
    engine: &Arc<crate::query::QueryEngine>,
    caller: &Principal,
    table: &str,
    expr: &Value,
) -> Result<String, QueryError> {
    let select = Value::Array(vec![expr.clone()]);
    let plan = compile_clause(engine, caller, table, Clause::Select, select).await?;
    let mut found = None;
    let mut aggregate = false;
    plan.apply(|node| {
        match node {
            LogicalPlan::Aggregate(_) | LogicalPlan::Window(_) => aggregate = true,
            LogicalPlan::Projection(p) if found.is_none() => found = p.expr.first().cloned(),
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if aggregate {
        return Err(DataFusionError::Plan(
            "select: an aggregate or window is not computed per event".into(),
        )
        .into());
    }
    let Some(found) = found else {
        return Err(DataFusionError::Plan("select: no expression".into()).into());
    };
    let found = bare_columns(found.unalias_nested().data)?;
    Ok(datafusion::sql::unparser::expr_to_sql(&found)?.to_string())
}

/// `expr` with its columns unqualified: the caller's SQL names the table.
fn bare_columns(expr: Expr) -> Result<Expr, DataFusionError> {
    Ok(expr
        .transform(|e| match e {
            Expr::Column(c) => Ok(Transformed::yes(Expr::Column(Column::new_unqualified(
                c.name,
            )))),
            e => Ok(Transformed::no(e)),
        })?
        .data)
}

/// The SQL text of a DSL `where` condition over `table`, for callers that
/// run it inside SQL of their own (live streams). Relative times (`ago`)
/// are fixed at the moment of the call. Errors name the place in the
/// condition as a query's do, under `where`.
pub async fn where_sql(
    engine: &Arc<crate::query::QueryEngine>,
    caller: &Principal,
    table: &str,
    condition: &Value,
) -> Result<String, QueryError> {
    let plan = compile_clause(engine, caller, table, Clause::Where, condition.clone()).await?;
    let mut predicate = None;
    plan.apply(|node| {
        if let LogicalPlan::Filter(filter) = node {
            predicate = Some(filter.predicate.clone());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let Some(predicate) = predicate else {
        return Ok("TRUE".into());
    };
    // Bare column names: the caller's query names the table itself.
    let predicate = bare_columns(predicate)?;
    let sql = datafusion::sql::unparser::expr_to_sql(&predicate)?;
    Ok(sql.to_string())
}
