//! Schema migrations applied as events are read (upcasting): an event
//! written at version `s` of its type reads as the latest version, through
//! the migrations of every live version above `s`. Stored data is never
//! rewritten; reading with `raw` skips this.
//!
//! [`compose`] turns a table's governance into one expression per column:
//! a column some migration changes becomes
//!
//! ```sql
//! CASE WHEN event_type = 'purchase' AND (schema_version IS NULL OR schema_version < 2) THEN <as v1 reads at the latest>
//!      WHEN event_type = 'purchase' AND schema_version < 3 THEN <as v2 reads at the latest>
//!      ELSE <the column> END
//! ```
//!
//! (an event without a version counts as version 1); every other column
//! passes through, so filters on them still reach the scan. Types never
//! change: a value is cast to its column's type. [`UpcastTable`] wraps a
//! table's provider with that projection.

use crate::schema::EVENT_TYPE;
use crate::schema::governed::{MigrationStep, SCHEMA_VERSION, TableGovernance};
use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::datasource::{TableProvider, TableType, provider_as_source};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{
    Case, Expr, LogicalPlanBuilder, TableProviderFilterPushDown, cast, lit,
};
use datafusion::physical_plan::ExecutionPlan;
use std::collections::HashMap;
use std::sync::Arc;

/// Parses a migration's SQL over the table's columns.
pub type Parse<'a> = dyn Fn(&str, &DFSchema) -> Result<Expr> + 'a;

fn column(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

fn null_of(dt: &DataType) -> Result<Expr> {
    Ok(Expr::Literal(ScalarValue::try_from(dt)?, None))
}

/// A JSON default as a literal of `dt`.
fn default_of(value: &serde_json::Value, dt: &DataType) -> Expr {
    let literal = match value {
        serde_json::Value::Bool(b) => lit(*b),
        serde_json::Value::Number(n) => lit(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => lit(s.clone()),
        other => lit(other.to_string()),
    };
    cast(literal, dt.clone())
}

/// Why a migration cannot be composed: its place and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ComposeError {
    /// `purchase.v3.migration[1].transform`.
    pub path: String,
    pub message: String,
}

/// The columns of `raw` as the latest versions read them, in order,
/// each named as the column; `None` when no live migration changes
/// anything.
pub fn compose(
    gov: &TableGovernance,
    raw: &DFSchema,
    parse: &Parse<'_>,
) -> Result<Option<Vec<Expr>>, ComposeError> {
    if !gov.migrates() {
        return Ok(None);
    }
    let type_of = |name: &str| {
        raw.fields()
            .iter()
            .find(|f| f.name() == name)
            .map(|f| f.data_type().clone())
    };
    let has_version = type_of(SCHEMA_VERSION).is_some();
    // Per column: the WHEN/THEN branches, in order.
    let mut branches: HashMap<String, Vec<(Expr, Expr)>> = HashMap::new();
    for (event_type, versions) in &gov.types {
        let live: Vec<_> = versions.iter().filter(|v| v.is_live()).collect();
        if live.iter().skip(1).all(|v| v.def.migration.is_empty()) {
            continue;
        }
        // envs[j]: an event below live[j]'s version, read at the latest.
        let mut envs: Vec<(u32, HashMap<String, Expr>)> = Vec::new();
        for start in 1..live.len() {
            let mut env: HashMap<String, Expr> = HashMap::new();
            for v in &live[start..] {
                for (i, step) in v.def.migration.iter().enumerate() {
                    let path =
                        || format!("{event_type}.v{}.migration[{i}].{}", v.version, step.kind());
                    let fail = |message: String| ComposeError {
                        path: path(),
                        message,
                    };
                    let current = |env: &HashMap<String, Expr>, name: &str| -> Option<Expr> {
                        env.get(name)
                            .cloned()
                            .or_else(|| type_of(name).map(|_| column(name)))
                    };
                    match step {
                        MigrationStep::Rename { from, to } => {
                            let Some(dt) = type_of(to) else { continue };
                            let value = match current(&env, from) {
                                Some(e) => cast(e, dt.clone()),
                                None => null_of(&dt).map_err(|e| fail(e.to_string()))?,
                            };
                            env.insert(to.clone(), value);
                            if let Some(from_dt) = type_of(from) {
                                env.insert(
                                    from.clone(),
                                    null_of(&from_dt).map_err(|e| fail(e.to_string()))?,
                                );
                            }
                        }
                        MigrationStep::Add { field, default } => {
                            let Some(dt) = type_of(field) else { continue };
                            let value = match current(&env, field) {
                                Some(e) => datafusion::functions::expr_fn::coalesce(vec![
                                    e,
                                    default_of(default, &dt),
                                ]),
                                None => default_of(default, &dt),
                            };
                            env.insert(field.clone(), value);
                        }
                        MigrationStep::Remove(field) => {
                            if let Some(dt) = type_of(field) {
                                env.insert(
                                    field.clone(),
                                    null_of(&dt).map_err(|e| fail(e.to_string()))?,
                                );
                            }
                        }
                        MigrationStep::Transform { field, sql } => {
                            let Some(dt) = type_of(field) else { continue };
                            let parsed = parse(sql, raw)
                                .map_err(|e| fail(super::first_line(&e.to_string())))?;
                            let substituted = parsed
                                .transform(|e| match &e {
                                    Expr::Column(c) => match env.get(&c.name) {
                                        Some(value) => Ok(Transformed::yes(value.clone())),
                                        None => Ok(Transformed::no(e)),
                                    },
                                    _ => Ok(Transformed::no(e)),
                                })
                                .map_err(|e| fail(e.to_string()))?
                                .data;
                            env.insert(field.clone(), cast(substituted, dt));
                        }
                    }
                }
            }
            envs.push((live[start].version, env));
        }
        let changed: std::collections::BTreeSet<&String> =
            envs.iter().flat_map(|(_, env)| env.keys()).collect();
        for name in changed {
            for (k, (below, env)) in envs.iter().enumerate() {
                let of_type = column(EVENT_TYPE).eq(lit(event_type.clone()));
                let version = column(SCHEMA_VERSION);
                let when = match (has_version, k) {
                    (false, _) => of_type,
                    (true, 0) => of_type.and(
                        version
                            .clone()
                            .is_null()
                            .or(version.lt(lit(i64::from(*below)))),
                    ),
                    (true, _) => of_type.and(version.lt(lit(i64::from(*below)))),
                };
                let then = env.get(name).cloned().unwrap_or_else(|| column(name));
                branches.entry(name.clone()).or_default().push((when, then));
            }
        }
    }
    let exprs = raw
        .fields()
        .iter()
        .map(|f| {
            let name = f.name();
            match branches.remove(name) {
                None => column(name),
                Some(arms) => Expr::Case(Case::new(
                    None,
                    arms.into_iter()
                        .map(|(w, t)| (Box::new(w), Box::new(t)))
                        .collect(),
                    Some(Box::new(column(name))),
                ))
                .alias(name),
            }
        })
        .collect();
    Ok(Some(exprs))
}

/// A table read through its migrations.
#[derive(Debug)]
pub struct UpcastTable {
    inner: Arc<dyn TableProvider>,
    gov: Arc<TableGovernance>,
    name: String,
}

impl UpcastTable {
    pub fn new(inner: Arc<dyn TableProvider>, gov: Arc<TableGovernance>, name: &str) -> Self {
        UpcastTable {
            inner,
            gov,
            name: name.to_string(),
        }
    }
}

#[async_trait]
impl TableProvider for UpcastTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Exact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let session = state
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| DataFusionError::Internal("a table read outside a session".into()))?;
        let raw = DFSchema::try_from_qualified_schema(self.name.as_str(), &self.inner.schema())?;
        let parse = |sql: &str, schema: &DFSchema| session.create_logical_expr(sql, schema);
        let composed = compose(&self.gov, &raw, &parse)
            .map_err(|e| DataFusionError::Plan(format!("reading table {:?}: {e}", self.name)))?;
        let mut plan = LogicalPlanBuilder::scan(
            self.name.as_str(),
            provider_as_source(self.inner.clone()),
            None,
        )?;
        if let Some(exprs) = composed {
            plan = plan.project(exprs)?;
        }
        if let Some(filter) = filters.iter().cloned().reduce(|a, b| a.and(b)) {
            plan = plan.filter(filter)?;
        }
        if let Some(projection) = projection {
            let schema = self.inner.schema();
            let fields = projection.iter().map(|i| column(schema.field(*i).name()));
            plan = plan.project(fields)?;
        }
        if let Some(limit) = limit {
            plan = plan.limit(0, Some(limit))?;
        }
        state.create_physical_plan(&plan.build()?).await
    }
}
