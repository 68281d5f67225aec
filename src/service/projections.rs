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
use crate::auth::{Definer, Principal, Role};
use crate::ids::{ProjectionName, TableName};
use crate::projection::{Health, Language, Live, Spec, State, define};
use arrow::array::RecordBatch;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// What makes a projection.
#[derive(Debug, Clone)]
pub struct CreateProjection {
    pub name: ProjectionName,
    pub version: u32,
    /// SQL text, or a DSL document's JSON text.
    pub query: String,
    pub language: Language,
    /// As a next version, wait for a promote call once caught up.
    pub manual_promote: bool,
}

/// What [`Service::create_projection`] made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// A projection of a new name.
    New,
    /// The next version of an existing one, building in the background.
    NextVersion,
}

/// The service error of a registry refusal.
pub(super) fn add_error(e: crate::projection::registry::AddError) -> Error {
    use crate::projection::registry::AddError;
    match e {
        AddError::Exists(_) | AddError::NotNewer { .. } => {
            Error::new(Kind::Conflict, e.to_string())
        }
        AddError::Missing(_) => Error::new(Kind::NotFound, e.to_string()),
        AddError::Full { .. } => Error::new(Kind::Overloaded, e.to_string()),
        AddError::Io(_) => Error::internal(e.to_string()),
    }
}

/// A projection as its tenant sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectionInfo {
    pub name: String,
    pub version: u32,
    pub query: String,
    /// `sql` or `dsl`.
    pub language: Language,
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
    /// Errors met while keeping it since the server started: failed reads
    /// (retried) and the error that stopped it.
    pub errors: u64,
    /// The position this process loaded the state at from a snapshot (0:
    /// it was folded from the table's first event).
    pub restored_position: u64,
    /// Of a next version: whether it has folded as far as the serving one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caught_up: Option<bool>,
    /// The next version (or rebuild) folding history in the background.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<Box<ProjectionInfo>>,
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
            language: live.spec.language,
            table: live.table.to_string(),
            created_ms: live.spec.created_ms,
            position,
            lag_positions: highest.saturating_sub(position),
            rows,
            state_bytes,
            snapshot_position: live.snapshot_position(),
            errors: live.errors(),
            restored_position: live.restored_position,
            health: live.health(),
            caught_up: None,
            next: None,
        }
    }

    /// `live` (a serving projection) with its next version, if one builds.
    pub(super) fn projection_info_with_next(&self, live: &Live) -> ProjectionInfo {
        let mut info = self.projection_info(live);
        if let Some(next) = self.projections.next(&live.tenant, &live.name) {
            let mut n = self.projection_info(&next);
            n.caught_up = Some(self.caught_up(&next, live));
            info.next = Some(Box::new(n));
        }
        info
    }

    /// Takes `spec`'s query apart for `caller`'s tenant and makes its
    /// state: empty, or loaded from its snapshot when `restore` is set. A
    /// 400 names the part of the query that cannot be maintained.
    pub(super) async fn live_of(
        &self,
        caller: &Principal,
        name: ProjectionName,
        mut spec: Spec,
        restore: bool,
    ) -> Result<Arc<Live>> {
        let ctx = crate::query::session(&self.queries, caller)?;
        let plan = match spec.language {
            Language::Sql => crate::query::plan_sql(&ctx, &spec.query).await?,
            Language::Dsl => {
                let doc: serde_json::Value = serde_json::from_str(&spec.query)
                    .map_err(|e| Error::invalid(format!("dsl: {e}")))?;
                let now = chrono::DateTime::from_timestamp_millis(spec.created_ms)
                    .unwrap_or_else(chrono::Utc::now);
                crate::dsl::compile_at(&ctx, &doc, now).await?
            }
        };
        let definition = define(&plan).map_err(|r| Error::invalid(format!("query: {r}")))?;
        let table: TableName = definition
            .table
            .parse()
            .map_err(|e: crate::ids::InvalidName| Error::invalid(format!("query: {e}")))?;
        self.table_of(caller, &table)?;
        if !restore {
            spec.definer = Some(self.definer_for(caller, table.as_str())?);
        }
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
            None => {
                let state = State::new(&definition, &session)
                    .map_err(|e| Error::invalid(format!("query: {}", e.strip_backtrace())))?;
                (state, 0)
            }
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
    /// the table's first event. A higher version of an existing one
    /// builds in the background as its next version
    /// ([`Created::NextVersion`]).
    pub async fn create_projection(
        self: &Arc<Self>,
        caller: &Principal,
        request: CreateProjection,
    ) -> Result<(ProjectionInfo, Created)> {
        caller.require(Role::Writer, "create projections")?;
        let (total, tenant_cap) = (
            self.projections.tenant_state_bytes(&caller.tenant),
            self.config().max_tenant_projection_state_bytes,
        );
        if total >= tenant_cap {
            return Err(Error::new(
                Kind::Overloaded,
                format!(
                    "the tenant's projections hold about {total} bytes, at the limit of {tenant_cap} (--max-tenant-projection-state-bytes): delete one first"
                ),
            ));
        }
        let spec = Spec {
            name: request.name.to_string(),
            version: request.version,
            query: request.query,
            language: request.language,
            created_ms: chrono::Utc::now().timestamp_millis(),
            id: uuid::Uuid::now_v7().to_string(),
            manual_promote: request.manual_promote,
            definer: None,
        };
        if let Some(serving) = self.projections.get(&caller.tenant, &request.name) {
            self.projection_readable(caller, &serving)?;
            let info = self.define_next(caller, request.name, spec, false).await?;
            return Ok((info, Created::NextVersion));
        }
        let live = self.live_of(caller, request.name, spec, false).await?;
        self.projections
            .add(live.clone(), self.config().max_projections)
            .map_err(add_error)?;
        self.spawn_projection(live.clone());
        Ok((self.projection_info(&live), Created::New))
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
            stored.iter().map(|(t, _, _)| t.clone()).collect();
        tenants.sort();
        tenants.dedup();
        let owned: Vec<String> = stored
            .iter()
            .map(|(t, spec, _)| format!("{t}/{}", crate::projection::registry::snapshot_name(spec)))
            .collect();
        for (tenant, spec, role) in stored {
            let caller = Definer::reader(spec.definer.as_ref(), tenant.clone());
            let Ok(name) = spec.name.parse::<ProjectionName>() else {
                continue;
            };
            match self
                .live_of(&caller, name.clone(), spec.clone(), true)
                .await
            {
                Ok(live) => {
                    self.projections.restore(live.clone(), role);
                    self.spawn_projection(live);
                }
                Err(e) => {
                    tracing::warn!(%tenant, projection = %name, error = %e.message, "a stored projection cannot be defined again; it stays in the list");
                    self.projections.keep_unloaded(tenant, spec, role);
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
            .map(|l| self.projection_info_with_next(l))
            .collect())
    }

    pub(super) fn live(&self, caller: &Principal, name: &ProjectionName) -> Result<Arc<Live>> {
        self.projections.get(&caller.tenant, name).ok_or_else(|| {
            Error::new(
                Kind::NotFound,
                format!("projection {:?} does not exist", name.as_str()),
            )
        })
    }

    /// One of the caller's projections, with its next version if one
    /// builds.
    pub fn describe_projection(
        &self,
        caller: &Principal,
        name: &ProjectionName,
    ) -> Result<ProjectionInfo> {
        caller.require(Role::Reader, "read projections")?;
        let live = self.live(caller, name)?;
        self.projection_readable(caller, &live)?;
        Ok(self.projection_info_with_next(live.as_ref()))
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
        self.projection_readable(caller, &live)?;
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

    /// Whether the policies let `caller` read `live`: the projection
    /// itself, and its table unrestricted.
    pub(super) fn projection_readable(&self, caller: &Principal, live: &Live) -> Result<()> {
        let name = format!("{}.{}", crate::projection::sql::SCHEMA, live.name);
        self.allowed_by_policies(caller, crate::policy::Action::Query, &name, None, None)?;
        self.held_readable(
            caller,
            &name,
            live.table.as_str(),
            live.spec.definer.as_ref(),
        )
    }

    /// Deletes one of the caller's projections (a writer's call).
    pub fn delete_projection(&self, caller: &Principal, name: &ProjectionName) -> Result<()> {
        caller.require(Role::Writer, "delete projections")?;
        match self.projections.remove(&caller.tenant, name) {
            Ok(removed) if !removed.is_empty() => {
                for live in removed {
                    self.delete_snapshot_of(live);
                }
                Ok(())
            }
            Ok(_) => Err(Error::new(
                Kind::NotFound,
                format!("projection {:?} does not exist", name.as_str()),
            )),
            Err(e) => Err(Error::internal(format!(
                "could not store the list of projections: {e}"
            ))),
        }
    }

    /// Deletes the snapshot of `live` (no longer in the registry), in
    /// the background, after any write of it in progress: a write that
    /// starts later finds it gone from the registry and writes nothing.
    pub(super) fn delete_snapshot_of(&self, live: Arc<Live>) {
        let db = self.db.clone();
        tokio::spawn(async move {
            let _no_write = live.snapshot_lock.lock().await;
            let snapshot = live.snapshot_name();
            if let Err(e) = db.storage().delete_snapshot(&live.tenant, &snapshot).await {
                tracing::warn!(tenant = %live.tenant, %snapshot, error = %e, "a removed projection's snapshot was not deleted; the next start-up deletes it");
            }
        });
    }

    /// Why `live`'s state, or its tenant's projections together, hold too
    /// much, if they do.
    fn state_within_limits(&self, live: &Live) -> std::result::Result<(), String> {
        let (cap, tenant_cap) = (
            self.config().max_projection_state_bytes,
            self.config().max_tenant_projection_state_bytes,
        );
        let bytes = live.state_bytes();
        if bytes > cap {
            return Err(format!(
                "its state holds about {bytes} bytes, over the limit of {cap} (--max-projection-state-bytes)"
            ));
        }
        let total = self.projections.tenant_state_bytes(&live.tenant);
        if total > tenant_cap {
            return Err(format!(
                "the tenant's projections hold about {total} bytes together (this one {bytes}), over the limit of {tenant_cap} (--max-tenant-projection-state-bytes)"
            ));
        }
        Ok(())
    }

    /// Keeps `live` up to date until it is deleted, fails or the server
    /// stops.
    pub(super) fn spawn_projection(self: &Arc<Self>, live: Arc<Live>) {
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
    async fn maintain(self: &Arc<Self>, live: &Arc<Live>) {
        let caller = Definer::reader(live.spec.definer.as_ref(), live.tenant.clone());
        loop {
            let request = Subscribe::new(live.table.clone(), Start::After(live.position()));
            let mut subscription = match self.subscribe_internal(&caller, request).await {
                Ok(s) => s,
                Err(e) if matches!(e.kind, Kind::NotFound | Kind::Invalid | Kind::Forbidden) => {
                    live.fail(e.message);
                    return;
                }
                Err(e) => {
                    live.count_error();
                    tracing::debug!(projection = %live.name, error = %e.message, "projection read failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            loop {
                // A next version checks often whether it has caught up.
                let wait = match self.projections.is_next(live) {
                    true => Duration::from_millis(100),
                    false => Duration::from_secs(5),
                };
                match subscription.next(wait).await {
                    Ok(Some(batches)) => {
                        let upto = subscription.position();
                        // The state holds what the definer's policies
                        // showed when it was defined; once they show
                        // something else, it stops rather than mix both.
                        if let Err(reason) = self.definer_unchanged(live) {
                            live.fail(reason);
                            return;
                        }
                        if let Some(pause) = crate::fault::delay("projection-fold-delay") {
                            tokio::time::sleep(pause).await;
                        }
                        if live.fold(&batches, upto).is_err() {
                            return;
                        }
                        if let Err(reason) = self.state_within_limits(live) {
                            live.fail(reason);
                            return;
                        }
                        self.promote_if_caught_up(live);
                    }
                    Ok(None) => {
                        if let Err(reason) = self.definer_unchanged(live) {
                            live.fail(reason);
                            return;
                        }
                        self.promote_if_caught_up(live)
                    }
                    Err(_) if self.closing.is_cancelled() => return,
                    // Full buffers, busy memory, a failed read: reopen
                    // after the last position folded.
                    Err(e) => {
                        live.count_error();
                        tracing::debug!(projection = %live.name, error = %e.message, "projection read failed; reopening");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        break;
                    }
                }
            }
        }
    }
}
