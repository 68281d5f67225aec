//! Policies where tables are read: a table a caller may not read fails
//! with [`PolicyDenied`]; one whose reads are restricted (row filters,
//! event types, masks) is read through a [`PolicyTable`].
//!
//! The restriction is applied below a barrier, [`PolicyExec`]: a leaf of
//! the query's plan that runs a plan of its own (the table's scan, the
//! policies' filter, the masks). No rule of the outer plan reaches inside
//! a leaf, so none of the caller's expressions can be moved under the
//! filter, where an error or a statistic would tell of a hidden row; only
//! conditions that cannot fail go in, to prune files ([`safe`]). Errors
//! from inside (only the policies' own expressions can fail there) are
//! reported without their text, which could quote a hidden value.

mod guarded;
pub mod masks;
pub mod safe;
mod top;

pub use guarded::{GuardedSchema, decide_for, decide_on, denial, held_readable};
pub use top::TopInside;

use crate::policy::Mask;
use crate::policy::decide::Restriction;
use crate::schema::OVERFLOW;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::datasource::{TableProvider, TableType, provider_as_source};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, TableProviderFilterPushDown, cast};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

/// A read refused by the caller's policies.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{because}")]
pub struct PolicyDenied {
    /// The table, as the query named it.
    pub table: String,
    pub action: crate::policy::Action,
    /// Which policy decided, and how.
    pub because: String,
}

/// The policy refusal inside `e`, if it is one.
pub fn policy_denied(e: &DataFusionError) -> Option<&PolicyDenied> {
    match e {
        DataFusionError::External(inner) => inner.downcast_ref(),
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            policy_denied(inner)
        }
        DataFusionError::Shared(inner) => policy_denied(inner),
        _ => None,
    }
}

fn column(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

/// A table read under a restriction.
#[derive(Debug)]
pub struct PolicyTable {
    inner: Arc<dyn TableProvider>,
    name: String,
    restriction: Restriction,
    /// The tenant's hash-mask key.
    key: [u8; 32],
    schema: SchemaRef,
    /// The query's order and limit, applied inside the barrier.
    top: Option<top::Top>,
}

impl PolicyTable {
    pub fn new(
        inner: Arc<dyn TableProvider>,
        name: &str,
        restriction: Restriction,
        key: [u8; 32],
    ) -> Self {
        let raw = inner.schema();
        let fields: Vec<Field> = raw
            .fields()
            .iter()
            .map(|f| match mask_of(&restriction, f.name()) {
                None => f.as_ref().clone(),
                Some(Mask::Hash | Mask::Redact { .. }) => {
                    Field::new(f.name(), DataType::Utf8, true)
                }
                Some(Mask::Null | Mask::Sql(_)) => f.as_ref().clone().with_nullable(true),
            })
            .collect();
        PolicyTable {
            inner,
            name: name.to_string(),
            restriction,
            key,
            schema: Arc::new(Schema::new_with_metadata(fields, raw.metadata().clone())),
            top: None,
        }
    }

    /// The same read, taking only the first rows in `top`'s order.
    fn topped(&self, top: top::Top) -> PolicyTable {
        PolicyTable {
            inner: self.inner.clone(),
            name: self.name.clone(),
            restriction: self.restriction.clone(),
            key: self.key,
            schema: self.schema.clone(),
            top: Some(top),
        }
    }

    fn describe(&self) -> String {
        let mut policies: BTreeSet<&str> = BTreeSet::new();
        policies.extend(self.restriction.filters.iter().map(|(p, _)| p.as_str()));
        policies.extend(self.restriction.masks.values().map(|(p, _)| p.as_str()));
        let masked: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .filter(|n| mask_of(&self.restriction, n).is_some())
            .collect();
        let policies: Vec<&str> = policies.into_iter().collect();
        let top = match &self.top {
            Some(t) => format!(", top={}", t.fetch),
            None => String::new(),
        };
        format!(
            "table={}, policies=[{}], masked=[{}]{top}",
            self.name,
            policies.join(", "),
            masked.join(", ")
        )
    }
}

/// How `column` reads under `restriction`: its own mask; and
/// `_overflow`, which holds payload values as JSON, reads as NULL once
/// anything is masked.
fn mask_of<'a>(restriction: &'a Restriction, column: &str) -> Option<&'a Mask> {
    match restriction.masks.get(column) {
        Some((_, m)) => Some(m),
        None if column == OVERFLOW && !restriction.masks.is_empty() => Some(&Mask::Null),
        None => None,
    }
}

#[async_trait]
impl TableProvider for PolicyTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let hidden = |c: &str| mask_of(&self.restriction, c).is_some();
        Ok(filters
            .iter()
            .map(|f| match safe::is_safe(f, &hidden) {
                true => TableProviderFilterPushDown::Exact,
                false => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
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
        let raw = self.inner.schema();
        let scan = LogicalPlanBuilder::scan(
            self.name.as_str(),
            provider_as_source(self.inner.clone()),
            None,
        )?;
        // Columns the policies name but the table lacks read as NULL, as
        // a column absent from older files does: a filter over one hides
        // what it would not admit.
        let mut named = BTreeSet::new();
        for (_, sql) in &self.restriction.filters {
            named.extend(safe::columns_named(sql));
        }
        for (_, mask) in self.restriction.masks.values() {
            if let Mask::Sql(sql) = mask {
                named.extend(safe::columns_named(sql));
            }
        }
        let missing: Vec<String> = named
            .into_iter()
            .filter(|n| raw.index_of(n).is_err())
            .collect();
        let mut plan = match missing.is_empty() {
            true => scan,
            false => {
                let mut exprs: Vec<Expr> = raw.fields().iter().map(|f| column(f.name())).collect();
                exprs.extend(
                    missing
                        .iter()
                        .map(|n| Expr::Literal(ScalarValue::Utf8(None), None).alias(n.as_str())),
                );
                scan.project(exprs)?
            }
        };
        let df: DFSchema = plan.schema().as_ref().clone();
        let planned = |policy: &str, what: &str, sql: &str| {
            safe::plan_sql(session, sql, &df).map_err(|e| {
                DataFusionError::Plan(format!(
                    "policy {policy:?}: its {what} does not apply to table {:?}: {e}",
                    self.name
                ))
            })
        };
        let mut conditions = Vec::new();
        for (policy, sql) in &self.restriction.filters {
            conditions.push(planned(policy, "row filter", sql)?);
        }
        conditions.extend(safe::type_condition(&self.restriction.types));
        for f in filters {
            conditions.push(safe::unqualified(f.clone())?);
        }
        if let Some(all) = conditions.into_iter().reduce(Expr::and) {
            plan = plan.filter(all)?;
        }
        if let Some(top) = &self.top {
            plan = plan.sort_with_limit(top.keys.clone(), Some(top.fetch))?;
        }
        let mut outputs = Vec::with_capacity(raw.fields().len());
        for f in raw.fields() {
            let name = f.name();
            let value = match mask_of(&self.restriction, name) {
                None => column(name),
                Some(Mask::Null) => Expr::Literal(ScalarValue::try_from(f.data_type())?, None),
                Some(Mask::Hash) => masks::hash_mask(column(name), f.data_type(), self.key),
                Some(Mask::Redact { keep }) => masks::redact_mask(column(name), *keep),
                Some(Mask::Sql(sql)) => {
                    let policy = self.restriction.masks.get(name).map_or("", |(p, _)| p);
                    cast(planned(policy, "mask", sql)?, f.data_type().clone())
                }
            };
            outputs.push(value.alias(name.as_str()));
        }
        plan = plan.project(outputs)?;
        if let Some(projection) = projection {
            let fields = projection.iter().map(|i| column(raw.field(*i).name()));
            plan = plan.project(fields)?;
        }
        if let Some(limit) = limit {
            plan = plan.limit(0, Some(limit))?;
        }
        let inner = session.create_physical_plan(&plan.build()?).await?;
        Ok(Arc::new(PolicyExec::new(inner, self.describe())))
    }
}

/// The barrier: a leaf that runs the restricted read's own plan.
#[derive(Debug)]
pub struct PolicyExec {
    inner: Arc<dyn ExecutionPlan>,
    description: String,
    properties: Arc<PlanProperties>,
}

impl PolicyExec {
    fn new(inner: Arc<dyn ExecutionPlan>, description: String) -> Self {
        PolicyExec {
            properties: inner.properties().clone(),
            inner,
            description,
        }
    }
}

impl DisplayAs for PolicyExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PolicyExec: {}", self.description)
    }
}

/// Whether an error from inside the barrier may be shown as it is: the
/// query's limits (memory, time) say nothing of the rows.
fn passes_through(e: &DataFusionError) -> bool {
    matches!(
        e,
        DataFusionError::ResourcesExhausted(_) | DataFusionError::External(_)
    ) || matches!(e, DataFusionError::Context(_, inner) if passes_through(inner))
        || matches!(e, DataFusionError::Shared(inner) if passes_through(inner))
}

impl ExecutionPlan for PolicyExec {
    fn name(&self) -> &str {
        "PolicyExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match children.is_empty() {
            true => Ok(self),
            false => Err(DataFusionError::Internal(
                "PolicyExec takes no inputs".into(),
            )),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let description = self.description.clone();
        let sanitize = move |e: DataFusionError| {
            if passes_through(&e) {
                return e;
            }
            let incident = uuid::Uuid::now_v7();
            tracing::warn!(%incident, read = %description, error = %e, "a read under policies failed");
            DataFusionError::Execution(format!(
                "reading a table under its policies failed (incident {incident}; the server log has the cause)"
            ))
        };
        let stream = self.inner.execute(partition, context).map_err(&sanitize)?;
        let schema = stream.schema();
        let sanitized = stream.map(move |r| r.map_err(&sanitize));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, sanitized)))
    }
}
