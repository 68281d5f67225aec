//! The `enrich` operator: adds fields to each event from the row of a
//! projection whose keys equal expressions over the event, or from the
//! latest event of a table with those keys as of the event's time.
//!
//! It is one SQL statement, a left join of the input with the lookup,
//! planned again for each micro-batch so that it reads the lookup as it
//! is then (a projection's table is its state when a query is planned).
//! From a projection, each event must meet at most one row: a micro-batch
//! that would give an event several fails the pipeline with the reason.
//! From a table, each event takes the row with the latest timestamp not
//! after its own (the latest position among equal times), numbered by
//! `row_number()` over the event's place in the micro-batch; an event
//! with none gets nulls.

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
    /// A projection of the tenant (or give `table`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection: Option<String>,
    /// A table of the tenant, read as of each event's time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Each of the lookup's key columns to the SQL expression over the
    /// event it must equal.
    pub on: IndexMap<String, String>,
    /// Output field name to the lookup's column it takes.
    pub fields: IndexMap<String, String>,
}

/// What an enrich operator looks up in.
enum Lookup {
    Projection(crate::ids::ProjectionName),
    Table(crate::ids::TableName),
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
        let lookup = match (&spec.projection, &spec.table) {
            (Some(name), None) => Lookup::Projection(
                name.parse()
                    .map_err(|e: crate::ids::InvalidName| format!("projection: {e}"))?,
            ),
            (None, Some(name)) => Lookup::Table(
                name.parse()
                    .map_err(|e: crate::ids::InvalidName| format!("table: {e}"))?,
            ),
            _ => return Err("give a projection or a table to look up in, one of them".into()),
        };
        if spec.on.is_empty() {
            return Err("on: give the lookup's key columns and what they equal".into());
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
        let mut columns = Vec::new();
        let mut keys = Vec::new();
        let mut join = Vec::new();
        for (j, (column, expr)) in spec.on.iter().enumerate() {
            keys.push(format!("({expr}) AS __k{j}"));
            columns.push(format!("{} AS __k{j}", quote(column)));
            join.push(format!("i.__k{j} = l.__k{j}"));
        }
        for (j, (name, column)) in spec.fields.iter().enumerate() {
            columns.push(format!("{} AS __f{j}", quote(column)));
            select.push(format!("l.__f{j} AS {}", quote(name)));
        }
        let input_rows = format!(
            "SELECT *, {} FROM {INPUT_SCHEMA}.{INPUT_TABLE}",
            keys.join(", ")
        );
        let position = quote(schema::POSITION);
        let sql = match &lookup {
            Lookup::Projection(name) => format!(
                "SELECT {} FROM ({input_rows}) i \
                 LEFT JOIN (SELECT {} FROM projections.{}) l ON {} ORDER BY i.{position}",
                select.join(", "),
                columns.join(", "),
                quote(name.as_str()),
                join.join(" AND "),
            ),
            Lookup::Table(name) => {
                let time = quote(schema::TIMESTAMP);
                let outer: Vec<String> = select
                    .iter()
                    .map(|c| match c.rsplit_once(" AS ") {
                        Some((_, alias)) => alias.to_string(),
                        None => c.trim_start_matches("i.").to_string(),
                    })
                    .collect();
                format!(
                    "SELECT {} FROM (SELECT {}, i.__n, row_number() OVER (PARTITION BY i.__n \
                     ORDER BY l.__t DESC NULLS LAST, l.__p DESC NULLS LAST) AS __rank \
                     FROM (SELECT *, row_number() OVER () AS __n FROM ({input_rows})) i \
                     LEFT JOIN (SELECT {}, {time} AS __t, {position} AS __p FROM {}) l \
                     ON {} AND l.__t <= i.{time}) \
                     WHERE __rank = 1 ORDER BY __n",
                    outer.join(", "),
                    select.join(", "),
                    columns.join(", "),
                    quote(name.as_str()),
                    join.join(" AND "),
                )
            }
        };
        let plan = crate::query::plan_sql(ctx, &sql)
            .await
            .map_err(|e| message_of(&e))?;
        check(&plan, &lookup)?;
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

/// Refuses a plan that reads anything but the input and the lookup.
fn check(plan: &LogicalPlan, lookup: &Lookup) -> std::result::Result<(), String> {
    let (schema, table, what) = match lookup {
        Lookup::Projection(p) => (Some("projections"), p.as_str(), "projection"),
        Lookup::Table(t) => (None, t.as_str(), "table"),
    };
    let as_of = matches!(lookup, Lookup::Table(_));
    walk(plan, |node| match node {
        LogicalPlan::Projection(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::Join(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::SubqueryAlias(_) => None,
        LogicalPlan::Window(_) if as_of => None,
        LogicalPlan::TableScan(scan) => {
            let name = &scan.table_name;
            let lookup = name.table() == table
                && (schema.is_none() || name.schema() == schema)
                && !reads_input(node);
            match reads_input(node) || lookup {
                true => None,
                false => Some(format!(
                    "it reads only its input and the {what}, not {name}"
                )),
            }
        }
        other => Some(format!(
            "its expressions compute each event on its own; {} is not allowed",
            kind_of(other)
        )),
    })
}
