//! `system.pipelines`: each of the tenant's pipelines as a row, as it is
//! when the query is planned.

use super::{PipelineStore, Status};
use crate::db::Database;
use crate::ids::TenantId;
use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::error::Result;
use std::sync::Arc;

/// The table's source: the server's pipelines and the tables they read.
#[derive(Debug)]
pub struct PipelinesTable {
    pub store: Arc<PipelineStore>,
    pub db: Arc<Database>,
}

impl crate::query::SystemTable for PipelinesTable {
    fn name(&self) -> &str {
        "pipelines"
    }

    fn for_tenant(&self, tenant: &TenantId) -> Result<Arc<dyn TableProvider>> {
        let pipelines = self.store.list(tenant);
        let progress: Vec<_> = pipelines.iter().map(|p| p.progress()).collect();
        let ms = || DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("version", DataType::UInt64, false),
            Field::new("source_table", DataType::Utf8, false),
            Field::new("sink_table", DataType::Utf8, false),
            Field::new("status", DataType::Utf8, false),
            Field::new("error", DataType::Utf8, true),
            Field::new("position", DataType::UInt64, true),
            Field::new("lag_positions", DataType::UInt64, false),
            Field::new("events_read", DataType::UInt64, false),
            Field::new("events_written", DataType::UInt64, false),
            Field::new("duplicates", DataType::UInt64, false),
            Field::new("invalid", DataType::UInt64, false),
            Field::new("skipped", DataType::UInt64, false),
            Field::new("buffered", DataType::UInt64, false),
            Field::new("operators", DataType::Utf8, false),
            Field::new("created", ms(), false),
            Field::new("updated", ms(), false),
        ]));
        let text = |f: &dyn Fn(usize) -> String| -> ArrayRef {
            Arc::new(StringArray::from_iter_values((0..pipelines.len()).map(f)))
        };
        let count = |f: &dyn Fn(usize) -> u64| -> ArrayRef {
            Arc::new(UInt64Array::from_iter_values((0..pipelines.len()).map(f)))
        };
        let columns: Vec<ArrayRef> = vec![
            text(&|i| pipelines[i].spec.name.clone()),
            count(&|i| u64::from(pipelines[i].spec.version)),
            text(&|i| pipelines[i].spec.source.table.clone()),
            text(&|i| pipelines[i].spec.sink.table.clone()),
            text(&|i| {
                match pipelines[i].status() {
                    Status::Running => "running",
                    Status::Paused => "paused",
                    Status::Failed => "failed",
                }
                .to_string()
            }),
            Arc::new(StringArray::from(
                pipelines.iter().map(|p| p.error()).collect::<Vec<_>>(),
            )),
            Arc::new(UInt64Array::from(
                progress.iter().map(|p| p.position).collect::<Vec<_>>(),
            )),
            count(&|i| pipelines[i].lag_positions(&self.db)),
            count(&|i| progress[i].events_read),
            count(&|i| progress[i].events_written),
            count(&|i| progress[i].duplicates),
            count(&|i| progress[i].invalid),
            count(&|i| progress[i].skipped),
            count(&|i| pipelines[i].buffered()),
            text(&|i| serde_json::to_string(&progress[i].operators).unwrap_or_default()),
            Arc::new(
                TimestampMillisecondArray::from_iter_values(
                    pipelines.iter().map(|p| p.spec.created_ms),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(
                TimestampMillisecondArray::from_iter_values(progress.iter().map(|p| p.updated_ms))
                    .with_timezone("UTC"),
            ),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }
}
