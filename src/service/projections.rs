//! Projections as the service offers them: defined from a SQL query by a
//! writer, listed and read by readers, deleted by a writer; each kept up
//! to date by a task of its own that reads its table's events after its
//! position, as a subscription does, and folds them.
//!
//! The pieces below the service ([`crate::projection`]) take the query
//! apart, fold events and keep the list; here are the roles, limits and
//! the tasks.

use super::subscribe::{Start, Subscribe};
use super::{Error, Kind, Result, Service};
use crate::auth::{Principal, Role};
use crate::ids::{ProjectionName, TableName};
use crate::projection::{Health, Live, Spec, State, define};
use arrow::array::RecordBatch;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// What makes a projection.
#[derive(Debug, Clone)]
pub struct CreateProjection {
    pub name: ProjectionName,
    pub version: u32,
    pub query: String,
}

/// A projection as its tenant sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectionInfo {
    pub name: String,
    pub version: u32,
    pub query: String,
    pub table: String,
    pub created_ms: i64,
    /// Every event of the table up to here is folded into the state.
    pub position: u64,
    /// Positions of the table after it.
    pub lag_positions: u64,
    /// Rows (groups) in the state, and their estimated size.
    pub rows: usize,
    pub state_bytes: usize,
    /// The position the last snapshot covers (0: none yet).
    pub snapshot_position: u64,
    /// The position this process loaded the state at from a snapshot (0:
    /// it was folded from the table's first event).
    pub restored_position: u64,
    #[serde(flatten)]
    pub health: Health,
}

impl Service {
    pub(super) fn projection_info(&self, live: &Live) -> ProjectionInfo {
        let position = live.position();
        let highest = self
            .db
            .table(&live.tenant, &live.table)
            .map_or(position, |t| t.highest_position());
        let (rows, state_bytes) = live.size();
        ProjectionInfo {
            name: live.name.to_string(),
            version: live.spec.version,
            query: live.spec.query.clone(),
            table: live.table.to_string(),
            created_ms: live.spec.created_ms,
            position,
            lag_positions: highest.saturating_sub(position),
            rows,
            state_bytes,
            snapshot_position: live.snapshot_position(),
            restored_position: live.restored_position,
            health: live.health(),
        }
    }

    /// Takes `spec`'s query apart for `caller`'s tenant and makes its
    /// state: empty, or loaded from its snapshot when `restore` is set. A
    /// 400 names the part of the query that cannot be maintained.
    async fn live_of(
        &self,
        caller: &Principal,
        name: ProjectionName,
        spec: Spec,
        restore: bool,
    ) -> Result<Arc<Live>> {
        let ctx = crate::query::session(&self.queries, caller)?;
        let plan = crate::query::plan_sql(&ctx, &spec.query).await?;
        let definition = define(&plan).map_err(|r| Error::invalid(format!("query: {r}")))?;
        let table: TableName = definition
            .table
            .parse()
            .map_err(|e: crate::ids::InvalidName| Error::invalid(format!("query: {e}")))?;
        self.table_of(caller, &table)?;
        let session = ctx.state();
        let restored = match restore {
            true => {
                self.load_snapshot(&caller.tenant, &spec, &definition, &session)
                    .await
            }
            false => None,
        };
        let (state, position) = match restored {
            Some(loaded) => loaded,
            None => (State::new(&definition, &session)?, 0),
        };
        Ok(Live::new(
            caller.tenant.clone(),
            name,
            spec,
            table,
            definition,
            state,
            position,
        ))
    }

    /// Defines a projection (a writer's call) and starts keeping it from
    /// the table's first event.
    pub async fn create_projection(
        self: &Arc<Self>,
        caller: &Principal,
        request: CreateProjection,
    ) -> Result<ProjectionInfo> {
        caller.require(Role::Writer, "create projections")?;
        let spec = Spec {
            name: request.name.to_string(),
            version: request.version,
            query: request.query,
            created_ms: chrono::Utc::now().timestamp_millis(),
        };
        let live = self.live_of(caller, request.name, spec, false).await?;
        self.projections
            .add(live.clone(), self.config().max_projections)
            .map_err(|e| match e {
                crate::projection::registry::AddError::Exists(_) => {
                    Error::new(Kind::Conflict, e.to_string())
                }
                crate::projection::registry::AddError::Full { .. } => {
                    Error::new(Kind::Overloaded, e.to_string())
                }
                crate::projection::registry::AddError::Io(_) => Error::internal(e.to_string()),
            })?;
        self.spawn_projection(live.clone());
        Ok(self.projection_info(&live))
    }

    /// Defines again the projections an earlier process stored, and
    /// starts keeping each from its snapshot (or its table's first event).
    /// One that cannot be defined again is logged and kept in the stored
    /// list (not served), so that a passing failure loses no definition.
    /// Then deletes the snapshots no stored projection owns and starts
    /// writing snapshots.
    pub async fn start_projections(self: &Arc<Self>) {
        let stored = std::mem::take(&mut *self.stored_projections.lock());
        let mut tenants: Vec<crate::ids::TenantId> =
            stored.iter().map(|(t, _)| t.clone()).collect();
        tenants.sort();
        tenants.dedup();
        let owned: Vec<String> = stored
            .iter()
            .map(|(t, spec)| format!("{t}/{}", crate::projection::registry::snapshot_name(spec)))
            .collect();
        for (tenant, spec) in stored {
            let caller = Principal::local_admin(tenant.clone());
            let Ok(name) = spec.name.parse::<ProjectionName>() else {
                continue;
            };
            match self
                .live_of(&caller, name.clone(), spec.clone(), true)
                .await
            {
                Ok(live) => {
                    self.projections.restore(live.clone());
                    self.spawn_projection(live);
                }
                Err(e) => {
                    tracing::warn!(%tenant, projection = %name, error = %e.message, "a stored projection cannot be defined again; it stays in the list");
                    self.projections.keep_unloaded(tenant, spec);
                }
            }
        }
        self.sweep_snapshots(&tenants, &owned).await;
        self.spawn_snapshots();
    }

    /// The caller's projections.
    pub fn list_projections(&self, caller: &Principal) -> Result<Vec<ProjectionInfo>> {
        caller.require(Role::Reader, "list projections")?;
        Ok(self
            .projections
            .of_tenant(&caller.tenant)
            .iter()
            .map(|l| self.projection_info(l))
            .collect())
    }

    fn live(&self, caller: &Principal, name: &ProjectionName) -> Result<Arc<Live>> {
        self.projections.get(&caller.tenant, name).ok_or_else(|| {
            Error::new(
                Kind::NotFound,
                format!("projection {:?} does not exist", name.as_str()),
            )
        })
    }

    /// One of the caller's projections.
    pub fn describe_projection(
        &self,
        caller: &Principal,
        name: &ProjectionName,
    ) -> Result<ProjectionInfo> {
        caller.require(Role::Reader, "read projections")?;
        Ok(self.projection_info(self.live(caller, name)?.as_ref()))
    }

    /// A projection's rows now, and the position they reflect; only the
    /// rows whose key columns equal `key` (one value per key column, as
    /// text) when it is given.
    pub fn projection_rows(
        &self,
        caller: &Principal,
        name: &ProjectionName,
        key: Option<&[String]>,
    ) -> Result<(RecordBatch, u64)> {
        caller.require(Role::Reader, "read projections")?;
        self.rate_check(caller, crate::ratelimit::Kind::Queries, 1)?;
        let live = self.live(caller, name)?;
        if let Health::Failed(e) = live.health() {
            return Err(Error::new(
                Kind::Conflict,
                format!("projection {:?} stopped: {e}", name.as_str()),
            ));
        }
        let Some(key) = key else {
            return Ok(live.read_at()?);
        };
        let keys = live.definition().keys.len();
        if key.len() != keys {
            return Err(Error::invalid(format!(
                "key: projection {:?} has {keys} key column(s) (its GROUP BY); {} value(s) given",
                name.as_str(),
                key.len()
            )));
        }
        Ok(live.read_key(key)?)
    }

    /// Deletes one of the caller's projections (a writer's call).
    pub fn delete_projection(&self, caller: &Principal, name: &ProjectionName) -> Result<()> {
        caller.require(Role::Writer, "delete projections")?;
        match self.projections.remove(&caller.tenant, name) {
            Ok(Some(live)) => {
                let service = self.db.clone();
                let snapshot = live.snapshot_name();
                tokio::spawn(async move {
                    if let Err(e) = service
                        .storage()
                        .delete_snapshot(&live.tenant, &snapshot)
                        .await
                    {
                        tracing::warn!(tenant = %live.tenant, %snapshot, error = %e, "the deleted projection's snapshot was not deleted; the next start-up deletes it");
                    }
                });
                Ok(())
            }
            Ok(None) => Err(Error::new(
                Kind::NotFound,
                format!("projection {:?} does not exist", name.as_str()),
            )),
            Err(e) => Err(Error::internal(format!(
                "could not store the list of projections: {e}"
            ))),
        }
    }

    /// Keeps `live` up to date until it is deleted, fails or the server
    /// stops.
    fn spawn_projection(self: &Arc<Self>, live: Arc<Live>) {
        let service = self.clone();
        tokio::spawn(async move {
            let stop = live.stop.clone();
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = service.closing.cancelled() => {}
                _ = service.maintain(&live) => {}
            }
        });
    }

    /// Reads the table's events after the projection's position and folds
    /// them, for ever; returns when the projection fails.
    async fn maintain(self: &Arc<Self>, live: &Live) {
        let caller = Principal::local_admin(live.tenant.clone());
        let cap = self.config().max_projection_state_bytes;
        loop {
            let request = Subscribe::new(live.table.clone(), Start::After(live.position()));
            let mut subscription = match self.subscribe_internal(&caller, request).await {
                Ok(s) => s,
                Err(e) if e.kind == Kind::NotFound || e.kind == Kind::Invalid => {
                    live.fail(e.message);
                    return;
                }
                Err(e) => {
                    tracing::debug!(projection = %live.name, error = %e.message, "projection read failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            loop {
                match subscription.next(Duration::from_secs(5)).await {
                    Ok(Some(batches)) => {
                        let upto = subscription.position();
                        if let Err(e) = live.fold(&batches, upto) {
                            live.fail(format!("folding events failed: {e}"));
                            return;
                        }
                        let (_, bytes) = live.size();
                        if bytes > cap {
                            live.fail(format!(
                                "its state holds about {bytes} bytes, over the limit of {cap} (--max-projection-state-bytes)"
                            ));
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(_) if self.closing.is_cancelled() => return,
                    // Full buffers, busy memory, a failed read: reopen
                    // after the last position folded.
                    Err(e) => {
                        tracing::debug!(projection = %live.name, error = %e.message, "projection read failed; reopening");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        break;
                    }
                }
            }
        }
    }
}
