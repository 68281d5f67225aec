//! Schema migrations as the service checks and undoes them: a version
//! with a migration is composed over the table's columns and tried on a
//! sample of the stored events it will change before it is stored (a
//! failure names the first event it fails on); rolling a version back
//! makes it a tombstone, so its migration stops applying at once and
//! stored data is untouched.

use super::{Error, Kind, Result, Service};
use crate::auth::{Principal, Role};
use crate::db::schemas::lay_out;
use crate::ids::{TableName, TenantId};
use crate::query::upcast::compose;
use crate::query::{QueryOptions, quote_text};
use crate::schema::governed::{SchemaVersion, TableGovernance};
use crate::schema::{EVENT_ID, POSITION, adapt_batch, query_schema};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::datasource::{MemTable, provider_as_source};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder};
use futures::TryStreamExt;
use std::sync::Arc;

/// Stored events a new migration is tried on: the oldest and the newest
/// half of this many events of its type.
const MIGRATION_SAMPLE: usize = 10_000;

/// How one column of a table reads, when a migration changes it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Upcast {
    pub column: String,
    /// The expression it reads as, in SQL.
    pub sql: String,
}

impl Service {
    /// The columns `table`'s migrations change, each with the expression
    /// it reads as (none when nothing migrates or the table has no rows
    /// yet).
    pub fn upcasts(&self, caller: &Principal, table: &str) -> Result<Vec<Upcast>> {
        caller.require(Role::Reader, "read schemas")?;
        let name = super::pipelines::table_name("table", table)?;
        let Some(gov) = self.db.schemas().get(&caller.tenant, &name) else {
            return Ok(Vec::new());
        };
        let Some(t) = self.db.table(&caller.tenant, &name) else {
            return Ok(Vec::new());
        };
        let schema = query_schema(&t.registry.lock().schema());
        let columns = DFSchema::try_from_qualified_schema(name.as_str(), &schema)
            .map_err(|e| Error::internal(e.to_string()))?;
        let ctx = crate::query::session(&self.queries, caller)?;
        let state = ctx.state();
        let parse = |sql: &str, s: &DFSchema| state.create_logical_expr(sql, s);
        let composed =
            compose(&gov, &columns, &parse).map_err(|e| Error::invalid(e.to_string()))?;
        Ok(composed
            .into_iter()
            .flatten()
            .filter_map(|e| match e {
                Expr::Alias(a) => Some((a.name, *a.expr)),
                _ => None,
            })
            .map(|(column, expr)| Upcast {
                column,
                sql: datafusion::sql::unparser::expr_to_sql(&expr)
                    .map_or_else(|_| expr.to_string(), |e| e.to_string()),
            })
            .collect())
    }

    /// Refuses `next`, the table's governance with version `version` of
    /// `event_type` added, when its migrations do not compose over the
    /// table's columns or fail on a sample of the stored events.
    pub(super) async fn check_migrations(
        &self,
        tenant: &TenantId,
        table: &TableName,
        next: &TableGovernance,
        event_type: &str,
        version: u32,
    ) -> Result<()> {
        if !next.migrates() {
            return Ok(());
        }
        // The columns the table will have once the version is stored.
        let mut registry = self.db.scratch_registry(tenant, table);
        lay_out(&mut registry, next, table.as_str()).map_err(Error::invalid)?;
        let schema = query_schema(&registry.schema());
        let columns = DFSchema::try_from_qualified_schema(table.as_str(), &schema)
            .map_err(|e| Error::internal(e.to_string()))?;
        let principal = Principal::local_admin(tenant.clone());
        let ctx = crate::query::session(&self.queries, &principal)?;
        let state = ctx.state();
        let parse = |sql: &str, s: &DFSchema| state.create_logical_expr(sql, s);
        let Some(composed) =
            compose(next, &columns, &parse).map_err(|e| Error::invalid(e.to_string()))?
        else {
            return Ok(());
        };
        // Planned once over no rows: a type error shows here.
        let empty = RecordBatch::new_empty(schema.clone());
        migrate(&state, table, &composed, empty)
            .await
            .map_err(|e| Error::invalid(format!("migration of {event_type} to v{version}: {e}")))?;
        if self.db.table(tenant, table).is_none() {
            return Ok(());
        }
        for batch in self.sample(&principal, table, event_type).await? {
            let batch = adapt_batch(&batch, &schema).map_err(|e| Error::internal(e.to_string()))?;
            let Err(e) = migrate(&state, table, &composed, batch.clone()).await else {
                continue;
            };
            let row = first_failing(&state, table, &composed, &batch).await;
            let id = batch
                .column_by_name(EVENT_ID)
                .map(|c| c.as_string_view().value(row).to_string());
            let position = batch
                .column_by_name(POSITION)
                .map(|c| c.as_primitive::<Int64Type>())
                .filter(|p| p.is_valid(row))
                .map(|p| p.value(row));
            return Err(Error::invalid(format!(
                "migration of {event_type} to v{version} fails on stored event {} (position {}): {e}",
                id.as_deref().map_or("?".into(), |i| format!("{i:?}")),
                position.map_or("?".into(), |p| p.to_string()),
            ))
            .with_details(serde_json::json!({"event_id": id, "position": position})));
        }
        Ok(())
    }

    /// The oldest and the newest stored events of `event_type`, as written.
    async fn sample(
        &self,
        principal: &Principal,
        table: &TableName,
        event_type: &str,
    ) -> Result<Vec<RecordBatch>> {
        let half = MIGRATION_SAMPLE / 2;
        let select = |order: &str| {
            format!(
                "(SELECT * FROM \"{table}\" WHERE event_type = {} ORDER BY position {order} LIMIT {half})",
                quote_text(event_type)
            )
        };
        let sql = format!("{} UNION ALL {}", select("ASC"), select("DESC"));
        let options = QueryOptions {
            raw: true,
            ..QueryOptions::default()
        };
        let stream = self
            .queries
            .sql_with(principal, &sql, None, options)
            .await?;
        Ok(stream.try_collect().await?)
    }

    /// Rolls back version `version` of `event_type` in `table`: the newest
    /// live one only, and only with `force` when stored events were
    /// written at it (they then read as written). The tombstone stays, so
    /// the number is never given again.
    pub async fn rollback_schema(
        self: &Arc<Self>,
        caller: &Principal,
        table: &str,
        event_type: &str,
        version: u32,
        force: bool,
    ) -> Result<SchemaVersion> {
        caller.require(Role::Admin, "manage schemas")?;
        self.allowed_by_policies(caller, crate::policy::Action::Admin, table, None, None)?;
        let name = super::pipelines::table_name("table", table)?;
        let gov = self
            .db
            .schemas()
            .get(&caller.tenant, &name)
            .unwrap_or_default();
        let not_found = || {
            Error::new(
                Kind::NotFound,
                format!("table {table:?} has no live version {version} of {event_type:?}"),
            )
        };
        let latest = gov.latest(event_type).ok_or_else(not_found)?;
        if !gov.live(event_type).any(|v| v.version == version) {
            return Err(not_found());
        }
        if latest.version != version {
            return Err(Error::new(
                Kind::Conflict,
                format!(
                    "versions are rolled back from the newest down: v{} of {event_type:?} is newer than v{version}",
                    latest.version
                ),
            ));
        }
        if !force && self.db.table(&caller.tenant, &name).is_some() {
            let stored = self
                .written_at(&caller.tenant, &name, event_type, version)
                .await?;
            if stored > 0 {
                return Err(Error::new(
                    Kind::Conflict,
                    format!(
                        "{stored} stored events of {event_type:?} were written at v{version}; without it they read as written (no migration applies to them); repeat with ?force=true to roll it back anyway"
                    ),
                )
                .with_details(serde_json::json!({"events": stored})));
            }
        }
        let removed_ms = chrono::Utc::now().timestamp_millis();
        let what = format!("rollback of {event_type} v{version} in {name}");
        let gov = self
            .change_schemas(caller, &name, what, None, |gov| {
                let v = gov
                    .types
                    .get_mut(event_type)
                    .and_then(|vs| vs.iter_mut().find(|v| v.version == version))
                    .ok_or_else(not_found)?;
                v.removed_ms = Some(removed_ms);
                Ok(())
            })
            .await?;
        gov.types
            .get(event_type)
            .and_then(|vs| vs.iter().find(|v| v.version == version))
            .cloned()
            .ok_or_else(|| Error::internal("the rolled back version is missing"))
    }

    /// How many stored events of `event_type` were written at `version`.
    async fn written_at(
        &self,
        tenant: &TenantId,
        table: &TableName,
        event_type: &str,
        version: u32,
    ) -> Result<u64> {
        let sql = format!(
            "SELECT count(*) AS n FROM \"{table}\" WHERE event_type = {} AND schema_version = {version}",
            quote_text(event_type)
        );
        let options = QueryOptions {
            raw: true,
            ..QueryOptions::default()
        };
        let principal = Principal::local_admin(tenant.clone());
        let stream = self
            .queries
            .sql_with(&principal, &sql, None, options)
            .await?;
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        Ok(batches.first().filter(|b| b.num_rows() > 0).map_or(0, |b| {
            b.column(0).as_primitive::<Int64Type>().value(0) as u64
        }))
    }
}

/// Runs the migration `composed` over `batch`.
async fn migrate(
    state: &SessionState,
    table: &TableName,
    composed: &[Expr],
    batch: RecordBatch,
) -> datafusion::error::Result<()> {
    let schema: SchemaRef = batch.schema();
    let rows = MemTable::try_new(schema, vec![vec![batch]])?;
    let plan = LogicalPlanBuilder::scan(table.as_str(), provider_as_source(Arc::new(rows)), None)?
        .project(composed.to_vec())?
        .build()?;
    let physical = state.create_physical_plan(&plan).await?;
    datafusion::physical_plan::collect(physical, state.task_ctx()).await?;
    Ok(())
}

/// The first row of `batch` the migration fails on (it fails on the
/// batch): the shortest failing prefix ends there.
async fn first_failing(
    state: &SessionState,
    table: &TableName,
    composed: &[Expr],
    batch: &RecordBatch,
) -> usize {
    let (mut lo, mut hi) = (1, batch.num_rows());
    while lo < hi {
        let mid = (lo + hi) / 2;
        match migrate(state, table, composed, batch.slice(0, mid)).await {
            Ok(()) => lo = mid + 1,
            Err(_) => hi = mid,
        }
    }
    hi.saturating_sub(1)
}
