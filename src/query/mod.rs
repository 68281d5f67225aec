//! The read path: a DataFusion session per request, scoped to one tenant.
//!
//! [`session`] builds a `SessionContext` whose default schema is the
//! tenant's tables (and nothing else), with the `udfs` functions
//! registered. Each table resolves to an [`table::EventTable`]: the Delta
//! snapshot and the buffer frozen together when the query names it.
//! [`output`] turns result batches into the wire formats.

pub mod output;
mod system;
pub mod table;

use crate::db::Database;
use crate::ids::{TableName, TenantId};
use async_trait::async_trait;
use datafusion::catalog::CatalogProvider;
use datafusion::catalog::{MemoryCatalogProvider, SchemaProvider};
use datafusion::datasource::TableProvider;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use std::sync::Arc;

/// Catalog and schema names under which a tenant's tables appear.
pub const CATALOG: &str = "allsource";
pub const SCHEMA: &str = "public";

/// The tables of one tenant, as a DataFusion schema.
#[derive(Debug)]
struct TenantSchema {
    db: Arc<Database>,
    tenant: TenantId,
}

#[async_trait]
impl SchemaProvider for TenantSchema {
    fn table_names(&self) -> Vec<String> {
        self.db.table_names(&self.tenant)
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Ok(name) = name.parse::<TableName>() else {
            return Ok(None);
        };
        Ok(self
            .db
            .table(&self.tenant, &name)
            .map(|t| Arc::new(self.db.snapshot(&t)) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        name.parse::<TableName>()
            .ok()
            .is_some_and(|n| self.db.table(&self.tenant, &n).is_some())
    }
}

/// A session that sees `tenant`'s tables and nothing else.
pub fn session(db: Arc<Database>, tenant: TenantId) -> Result<SessionContext> {
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(CATALOG, SCHEMA)
        .with_create_default_catalog_and_schema(false)
        .with_information_schema(true);
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .build();
    let mut ctx = SessionContext::new_with_state(state);
    let catalog = MemoryCatalogProvider::new();
    catalog.register_schema(
        "system",
        Arc::new(system::SystemSchema {
            db: db.clone(),
            tenant: tenant.clone(),
        }),
    )?;
    catalog.register_schema(SCHEMA, Arc::new(TenantSchema { db, tenant }))?;
    ctx.register_catalog(CATALOG, Arc::new(catalog));
    udfs::register_all(&mut ctx)?;
    Ok(ctx)
}

/// What a query may do: read only. DDL, DML (including `COPY ... TO`) and
/// `SET` are refused.
pub fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Plans `sql` in `tenant`'s session and starts executing it.
pub async fn run_sql(
    db: Arc<Database>,
    tenant: TenantId,
    sql: &str,
) -> Result<SendableRecordBatchStream> {
    let ctx = session(db, tenant)?;
    let df = ctx
        .sql_with_options(sql, read_only())
        .await
        .map_err(|e| match e {
            DataFusionError::Plan(msg) if msg.contains("not supported") => {
                DataFusionError::Plan(format!("{msg} (queries are read-only)"))
            }
            other => other,
        })?;
    df.execute_stream().await
}
