//! Keys of stateful operators (windows, deduplicate, throttle): named SQL
//! expressions over the operator's input, planned once and computed row
//! for row, kept in the operators' state as Arrow row bytes.

use super::checks::check_plan;
use super::compile::{INPUT_SCHEMA, INPUT_TABLE, message_of, quote, with_input};
use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{FieldRef, Schema, SchemaRef};
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use indexmap::IndexMap;
use std::sync::Arc;

/// An operator's keys, planned (none: one key for every event).
#[derive(Debug)]
pub struct Keys {
    plan: Option<Arc<dyn ExecutionPlan>>,
    pub fields: Vec<FieldRef>,
}

impl Keys {
    /// Plans `keys` (output name to SQL expression) over the registered
    /// input in `ctx`.
    pub async fn plan(
        ctx: &SessionContext,
        keys: &IndexMap<String, String>,
    ) -> std::result::Result<Keys, String> {
        if keys.is_empty() {
            return Ok(Keys {
                plan: None,
                fields: Vec::new(),
            });
        }
        let select: Vec<String> = keys
            .iter()
            .map(|(n, e)| format!("({e}) AS {}", quote(n)))
            .collect();
        let sql = format!(
            "SELECT {} FROM {INPUT_SCHEMA}.{INPUT_TABLE}",
            select.join(", ")
        );
        let plan = crate::query::plan_sql(ctx, &sql)
            .await
            .map_err(|e| format!("key: {}", message_of(&e)))?;
        check_plan(&plan, false).map_err(|e| format!("key: {e}"))?;
        let physical = ctx
            .state()
            .create_physical_plan(&plan)
            .await
            .map_err(|e| format!("key: {}", message_of(&e)))?;
        let fields = physical.schema().fields().iter().cloned().collect();
        Ok(Keys {
            plan: Some(physical),
            fields,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.plan.is_none()
    }

    /// A converter between key columns and row bytes.
    pub fn converter(&self) -> Result<RowConverter> {
        Ok(RowConverter::new(
            self.fields
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )?)
    }

    /// The keys of `batch`'s rows (in `input`, the operator's input
    /// schema), as rows of `converter`; `None` without keys.
    pub async fn rows(
        &self,
        converter: &RowConverter,
        batch: &RecordBatch,
        input: &SchemaRef,
        task: Arc<TaskContext>,
    ) -> Result<Option<Rows>> {
        let Some(plan) = &self.plan else {
            return Ok(None);
        };
        let plan = with_input(plan, vec![batch.clone()], input)?;
        let out = datafusion::physical_plan::collect(plan, task).await?;
        let schema = out
            .first()
            .map(RecordBatch::schema)
            .unwrap_or_else(|| Arc::new(Schema::new(self.fields.clone())));
        let out = arrow::compute::concat_batches(&schema, &out)?;
        if out.num_rows() != batch.num_rows() {
            return Err(DataFusionError::Execution(
                "a key must give one value per event".into(),
            ));
        }
        Ok(Some(converter.convert_columns(out.columns())?))
    }

    /// Key columns back from row bytes.
    pub fn columns<'a>(
        &self,
        converter: &RowConverter,
        keys: impl Iterator<Item = &'a [u8]>,
    ) -> Result<Vec<ArrayRef>> {
        if self.is_empty() {
            return Ok(Vec::new());
        }
        let parser = converter.parser();
        Ok(converter.convert_rows(keys.map(|k| parser.parse(k)))?)
    }
}
