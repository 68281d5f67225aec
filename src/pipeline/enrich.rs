//! The `enrich` operator: adds fields to each event from the row of a
//! projection whose keys equal expressions over the event.
//!
//! It is one SQL statement, a left join of the input with the
//! projection's state ordered by position, planned again for each
//! micro-batch so that it reads the state as it is then (a projection's
//! table is its state when a query is planned). Each event must meet at
//! most one row: a micro-batch that would give an event several fails
//! the pipeline with the reason.

use super::checks::{kind_of, reads_input, walk};
use super::compile::{INPUT_SCHEMA, INPUT_TABLE, RESERVED, message_of, quote};
use crate::schema;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// An enrich operator as defined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrichSpec {
    /// A projection of the tenant.
    pub projection: String,
    /// Each of the projection's key columns to the SQL expression over the
    /// event it must equal.
    pub on: IndexMap<String, String>,
    /// Output field name to the projection's column it takes.
    pub fields: IndexMap<String, String>,
}

/// An enrich operator, planned.
#[derive(Debug)]
pub struct EnrichStage {
    sql: String,
    output: SchemaRef,
    /// Held while the input is registered and the statement planned: the
    /// workers of a partition share the session.
    planning: tokio::sync::Mutex<()>,
}

impl EnrichStage {
    /// Plans `spec` over `input` (registered as the pipeline's input in
    /// `ctx`).
    pub async fn plan(
        ctx: &SessionContext,
        input: &SchemaRef,
        spec: &EnrichSpec,
    ) -> std::result::Result<EnrichStage, String> {
        let projection: crate::ids::ProjectionName = spec
            .projection
            .parse()
            .map_err(|e: crate::ids::InvalidName| format!("projection: {e}"))?;
        if spec.on.is_empty() {
            return Err("on: give the projection's key columns and what they equal".into());
        }
        if spec.fields.is_empty() {
            return Err("fields: give at least one".into());
        }
        for name in spec.fields.keys() {
            if name.is_empty() || RESERVED.contains(&name.as_str()) {
                return Err(format!("fields: {name:?} may not be set by an operator"));
            }
        }
        let names: Vec<&str> = input.fields().iter().map(|f| f.name().as_str()).collect();
        let mut select: Vec<String> = names
            .iter()
            .filter(|n| !spec.fields.contains_key(**n))
            .map(|n| format!("i.{}", quote(n)))
            .collect();
        let mut lookup = Vec::new();
        let mut keys = Vec::new();
        let mut join = Vec::new();
        for (j, (column, expr)) in spec.on.iter().enumerate() {
            keys.push(format!("({expr}) AS __k{j}"));
            lookup.push(format!("{} AS __k{j}", quote(column)));
            join.push(format!("i.__k{j} = l.__k{j}"));
        }
        for (j, (name, column)) in spec.fields.iter().enumerate() {
            lookup.push(format!("{} AS __f{j}", quote(column)));
            select.push(format!("l.__f{j} AS {}", quote(name)));
        }
        let sql = format!(
            "SELECT {} FROM (SELECT *, {} FROM {INPUT_SCHEMA}.{INPUT_TABLE}) i \
             LEFT JOIN (SELECT {} FROM projections.{}) l ON {} ORDER BY i.{}",
            select.join(", "),
            keys.join(", "),
            lookup.join(", "),
            quote(projection.as_str()),
            join.join(" AND "),
            quote(schema::POSITION),
        );
        let plan = crate::query::plan_sql(ctx, &sql)
            .await
            .map_err(|e| message_of(&e))?;
        check(&plan, projection.as_str())?;
        let output = Arc::new(plan.schema().as_arrow().clone());
        Ok(EnrichStage {
            sql,
            output,
            planning: tokio::sync::Mutex::new(()),
        })
    }

    pub fn output(&self) -> &SchemaRef {
        &self.output
    }

    /// Runs the statement over `batches` (in `input`), registered as the
    /// input in `inputs`, a schema of `ctx`.
    pub async fn run(
        &self,
        ctx: &SessionContext,
        inputs: &MemorySchemaProvider,
        batches: Vec<RecordBatch>,
        input: &SchemaRef,
    ) -> Result<Vec<RecordBatch>> {
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let table = MemTable::try_new(input.clone(), vec![batches])?;
        let physical = {
            let _held = self.planning.lock().await;
            let _ = inputs.deregister_table(INPUT_TABLE);
            inputs.register_table(INPUT_TABLE.to_string(), Arc::new(table))?;
            let planned = match crate::query::plan_sql(ctx, &self.sql).await {
                Ok(plan) => ctx.state().create_physical_plan(&plan).await,
                Err(e) => Err(e),
            };
            let _ = inputs.deregister_table(INPUT_TABLE);
            planned?
        };
        let out = datafusion::physical_plan::collect(physical, ctx.task_ctx()).await?;
        let got: usize = out.iter().map(RecordBatch::num_rows).sum();
        if got != rows {
            return Err(DataFusionError::Execution(
                "enrich: an event met several rows of the projection; its `on` must name all of the projection's key columns".into(),
            ));
        }
        Ok(out)
    }
}

/// Refuses a plan that reads anything but the input and the projection.
fn check(plan: &LogicalPlan, projection: &str) -> std::result::Result<(), String> {
    walk(plan, |node| match node {
        LogicalPlan::Projection(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::Join(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::SubqueryAlias(_) => None,
        LogicalPlan::TableScan(scan) => {
            let name = &scan.table_name;
            let lookup = name.schema() == Some("projections") && name.table() == projection;
            match reads_input(node) || lookup {
                true => None,
                false => Some(format!(
                    "it reads only its input and the projection, not {name}"
                )),
            }
        }
        other => Some(format!(
            "its expressions compute each event on its own; {} is not allowed",
            kind_of(other)
        )),
    })
}
