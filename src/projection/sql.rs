//! Projections in SQL: the `projections` schema that offers each tenant's
//! projections to its sessions as tables of their state, and
//! `system.projections`.

use super::registry::{Health, Live, Registry};
use crate::ids::{ProjectionName, TenantId};
use arrow::array::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::Result;
use std::sync::Arc;

/// The name of the schema projections are tables of.
pub const SCHEMA: &str = "projections";

/// The `projections` schema of every tenant's sessions, and
/// `system.projections`.
#[derive(Debug)]
pub struct SqlSchema {
    pub registry: Arc<Registry>,
    /// For the tables' highest positions (the lag).
    pub db: Arc<crate::db::Database>,
}

impl crate::query::ExtraSchema for SqlSchema {
    fn name(&self) -> &str {
        SCHEMA
    }

    fn system_table_name(&self) -> &str {
        "projections"
    }

    fn system_table(&self, tenant: &TenantId) -> Result<Arc<dyn TableProvider>> {
        use arrow::array::{ArrayRef, StringArray, TimestampMillisecondArray, UInt64Array};
        use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
        let live = self.registry.of_tenant(tenant);
        let lag = |l: &Live| {
            self.db
                .table(&l.tenant, &l.table)
                .map_or(0, |t| t.highest_position().saturating_sub(l.position()))
        };
        let sizes: Vec<(usize, usize)> = live.iter().map(|l| l.size()).collect();
        let health: Vec<Health> = live.iter().map(|l| l.health()).collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("version", DataType::UInt64, false),
            Field::new("table_name", DataType::Utf8, false),
            Field::new("query", DataType::Utf8, false),
            Field::new("position", DataType::UInt64, false),
            Field::new("lag_positions", DataType::UInt64, false),
            Field::new("rows", DataType::UInt64, false),
            Field::new("state_bytes", DataType::UInt64, false),
            Field::new("snapshot_position", DataType::UInt64, false),
            Field::new("errors", DataType::UInt64, false),
            Field::new("status", DataType::Utf8, false),
            Field::new("error", DataType::Utf8, true),
            Field::new(
                "created",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                live.iter().map(|l| l.name.as_str()),
            )),
            Arc::new(UInt64Array::from_iter_values(
                live.iter().map(|l| u64::from(l.spec.version)),
            )),
            Arc::new(StringArray::from_iter_values(
                live.iter().map(|l| l.table.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                live.iter().map(|l| l.spec.query.as_str()),
            )),
            Arc::new(UInt64Array::from_iter_values(
                live.iter().map(|l| l.position()),
            )),
            Arc::new(UInt64Array::from_iter_values(live.iter().map(|l| lag(l)))),
            Arc::new(UInt64Array::from_iter_values(
                sizes.iter().map(|s| s.0 as u64),
            )),
            Arc::new(UInt64Array::from_iter_values(
                sizes.iter().map(|s| s.1 as u64),
            )),
            Arc::new(UInt64Array::from_iter_values(
                live.iter().map(|l| l.snapshot_position()),
            )),
            Arc::new(UInt64Array::from_iter_values(
                live.iter().map(|l| l.errors()),
            )),
            Arc::new(StringArray::from_iter_values(health.iter().map(
                |h| match h {
                    Health::Running => "running",
                    Health::Failed(_) => "failed",
                },
            ))),
            Arc::new(StringArray::from_iter(health.iter().map(|h| match h {
                Health::Running => None,
                Health::Failed(e) => Some(e.as_str()),
            }))),
            Arc::new(
                TimestampMillisecondArray::from_iter_values(live.iter().map(|l| l.spec.created_ms))
                    .with_timezone("UTC"),
            ),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }

    fn source_of(&self, tenant: &TenantId, table: &str) -> Option<String> {
        let name = table.parse::<ProjectionName>().ok()?;
        Some(self.registry.get(tenant, &name)?.table.to_string())
    }

    fn definer_of(&self, tenant: &TenantId, table: &str) -> Option<crate::auth::Definer> {
        let name = table.parse::<ProjectionName>().ok()?;
        self.registry.get(tenant, &name)?.spec.definer.clone()
    }

    fn for_tenant(&self, tenant: &TenantId) -> Arc<dyn SchemaProvider> {
        Arc::new(TenantProjections {
            registry: self.registry.clone(),
            tenant: tenant.clone(),
        })
    }
}

/// One tenant's projections as tables: each read is the state when the
/// query is planned.
#[derive(Debug)]
struct TenantProjections {
    registry: Arc<Registry>,
    tenant: TenantId,
}

#[async_trait]
impl SchemaProvider for TenantProjections {
    fn table_names(&self) -> Vec<String> {
        self.registry
            .of_tenant(&self.tenant)
            .iter()
            .map(|l| l.name.to_string())
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Ok(name) = name.parse::<ProjectionName>() else {
            return Ok(None);
        };
        let Some(live) = self.registry.get(&self.tenant, &name) else {
            return Ok(None);
        };
        let batch = live.read()?;
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        Ok(Some(Arc::new(table)))
    }

    fn table_exist(&self, name: &str) -> bool {
        name.parse::<ProjectionName>()
            .is_ok_and(|n| self.registry.get(&self.tenant, &n).is_some())
    }
}
