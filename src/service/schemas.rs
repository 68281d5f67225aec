//! Table schemas and validation rules as the service offers them:
//! registered by an admin (each registration a new version of an event
//! type's schema), read by readers, and run on every batch built for the
//! table (HTTP, Flight and pipeline sinks alike), and checked without
//! storing by `validate`.

use super::{Error, Kind, Result, Service};
use crate::audit::{AuditEntry, AuditKind};
use crate::auth::{Principal, Role};
use crate::db::schemas::{PutError, lay_out};
use crate::governance::TableChecker;
use crate::ids::{TableName, TenantId};
use crate::ingest::{BatchCheck, Events};
use crate::schema::governed::{
    AllowedTypes, SchemaVersion, TableGovernance, VersionDef, Violations,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The body of `PUT /v1/schemas/{table}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSettings {
    /// The event types the table accepts; `null` accepts any.
    pub event_types: Option<AllowedTypes>,
}

/// A governed table in a list.
#[derive(Debug, Clone, Serialize)]
pub struct SchemaSummary {
    pub table: String,
    pub generation: u64,
    pub event_types: Vec<TypeSummary>,
    pub allowed_event_types: Option<AllowedTypes>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TypeSummary {
    pub event_type: String,
    pub latest_version: u32,
    pub versions: usize,
}

/// What `validate` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Whether the events would be stored.
    pub valid: bool,
    pub events: usize,
    #[serde(flatten)]
    pub violations: Violations,
}

/// Most characters of an event type name in a schema's path.
const MAX_EVENT_TYPE_CHARS: usize = 256;

fn table_of(name: &str) -> Result<TableName> {
    super::pipelines::table_name("table", name)
}

fn refused(e: PutError) -> Error {
    let kind = match e {
        PutError::Stale { .. } => Kind::Conflict,
        PutError::Full { .. } => Kind::Overloaded,
        PutError::Io(_) => Kind::Internal,
    };
    Error::new(kind, e.to_string())
}

impl Service {
    /// Compiles every stored table's rules and runs them from now on. A
    /// table whose rules no longer compile refuses ingest, naming why,
    /// rather than storing unchecked events.
    pub fn start_schemas(&self) {
        for (tenant, table, gov) in self.db.schemas().all() {
            let check: Arc<dyn BatchCheck> = match self.compile_rules(&tenant, &table, &gov) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(%tenant, %table, error = %e, "stored rules do not compile");
                    Arc::new(Broken {
                        table: table.to_string(),
                        why: e.message,
                    })
                }
            };
            self.db.set_check(&tenant, &table, Some(check));
        }
    }

    fn compile_rules(
        &self,
        tenant: &TenantId,
        table: &TableName,
        gov: &TableGovernance,
    ) -> Result<Arc<TableChecker>> {
        let session =
            crate::query::session(&self.queries, &Principal::local_admin(tenant.clone()))?;
        let checker =
            TableChecker::compile(table.as_str(), gov, &session.state()).map_err(Error::invalid)?;
        Ok(Arc::new(checker))
    }

    /// The tenant's governed tables.
    pub fn list_schemas(&self, caller: &Principal) -> Result<Vec<SchemaSummary>> {
        caller.require(Role::Reader, "read schemas")?;
        Ok(self
            .db
            .schemas()
            .list(&caller.tenant)
            .into_iter()
            .map(|(table, gov)| SchemaSummary {
                table: table.to_string(),
                generation: gov.generation,
                event_types: gov
                    .types
                    .iter()
                    .map(|(t, v)| TypeSummary {
                        event_type: t.clone(),
                        latest_version: v.last().map_or(0, |v| v.version),
                        versions: v.len(),
                    })
                    .collect(),
                allowed_event_types: gov.event_types.clone(),
            })
            .collect())
    }

    /// A table's governance (generation 0 and nothing else when it has
    /// none).
    pub fn table_schemas(&self, caller: &Principal, table: &str) -> Result<Arc<TableGovernance>> {
        caller.require(Role::Reader, "read schemas")?;
        let table = table_of(table)?;
        Ok(self
            .db
            .schemas()
            .get(&caller.tenant, &table)
            .unwrap_or_default())
    }

    /// The versions of one event type's schema, oldest first.
    pub fn schema_versions(
        &self,
        caller: &Principal,
        table: &str,
        event_type: &str,
    ) -> Result<Vec<SchemaVersion>> {
        let gov = self.table_schemas(caller, table)?;
        gov.types.get(event_type).cloned().ok_or_else(|| {
            Error::new(
                Kind::NotFound,
                format!("table {table:?} has no schema for event type {event_type:?}"),
            )
        })
    }

    /// Sets the event types `table` accepts.
    pub async fn set_table_schemas(
        self: &Arc<Self>,
        caller: &Principal,
        table: &str,
        settings: TableSettings,
    ) -> Result<Arc<TableGovernance>> {
        caller.require(Role::Admin, "manage schemas")?;
        self.allowed_by_policies(caller, crate::policy::Action::Admin, table, None, None)?;
        let name = table_of(table)?;
        if let Some(a) = &settings.event_types {
            if a.allowed.is_empty() {
                return Err(Error::invalid(
                    "event_types.allowed: give at least one event type (or \"event_types\": null to accept any)",
                ));
            }
            if a.allowed.len() > self.config().max_governed_event_types {
                return Err(Error::invalid(format!(
                    "event_types.allowed: {} types; at most {} (--max-governed-event-types)",
                    a.allowed.len(),
                    self.config().max_governed_event_types
                )));
            }
        }
        self.change_schemas(
            caller,
            &name,
            format!("event types of {name}"),
            None,
            |gov| {
                gov.event_types = settings.event_types;
                Ok(())
            },
        )
        .await
    }

    /// Registers the next version of `event_type`'s schema in `table`:
    /// checked, compiled, stored, then run on every batch from now on.
    pub async fn register_schema(
        self: &Arc<Self>,
        caller: &Principal,
        table: &str,
        event_type: &str,
        def: VersionDef,
    ) -> Result<SchemaVersion> {
        caller.require(Role::Admin, "manage schemas")?;
        self.allowed_by_policies(caller, crate::policy::Action::Admin, table, None, None)?;
        let name = table_of(table)?;
        if event_type.is_empty() || event_type.chars().count() > MAX_EVENT_TYPE_CHARS {
            return Err(Error::invalid(format!(
                "event type: give 1 to {MAX_EVENT_TYPE_CHARS} characters"
            )));
        }
        let config = self.config();
        let caps = (
            config.max_schema_versions,
            config.max_governed_event_types,
            config.max_validation_rules,
        );
        let created_ms = chrono::Utc::now().timestamp_millis();
        let gov = self
            .change_schemas(caller, &name, format!("schema of {event_type} in {name}"), Some(event_type), |gov| {
                let versions = gov.types.get(event_type).map_or(0, Vec::len);
                let next = gov.types.get(event_type).and_then(|v| v.last()).map_or(1, |v| v.version + 1);
                def.check_shape()
                    .map_err(|e| Error::invalid(format!("{event_type}.v{next}.{e}")))?;
                if next == 1 && !def.migration.is_empty() {
                    return Err(Error::invalid(format!(
                        "{event_type}.v1.migration: the first version has no earlier one to migrate from"
                    )));
                }
                if versions >= caps.0 {
                    return Err(Error::new(
                        Kind::Overloaded,
                        format!(
                            "table {name:?} has {versions} versions of {event_type:?}, the most it may (--max-schema-versions)"
                        ),
                    ));
                }
                if versions == 0 && gov.types.len() >= caps.1 {
                    return Err(Error::new(
                        Kind::Overloaded,
                        format!(
                            "table {name:?} has schemas for {} event types, the most it may (--max-governed-event-types)",
                            gov.types.len()
                        ),
                    ));
                }
                gov.types.entry(event_type.to_string()).or_default().push(SchemaVersion {
                    version: next,
                    created_ms,
                    removed_ms: None,
                    def,
                });
                if gov.rule_count() > caps.2 {
                    return Err(Error::new(
                        Kind::Overloaded,
                        format!(
                            "table {name:?} would have {} validation rules; the most it may is {} (--max-validation-rules)",
                            gov.rule_count(),
                            caps.2
                        ),
                    ));
                }
                Ok(())
            })
            .await?;
        gov.latest(event_type)
            .cloned()
            .ok_or_else(|| Error::internal("the registered version is missing"))
    }

    /// Changes `table`'s governance with `change`, then compiles, stores
    /// and installs it, one change at a time.
    /// With `added`, the change added a version of that event type, whose
    /// migration is tried on the stored events first.
    pub(super) async fn change_schemas(
        self: &Arc<Self>,
        caller: &Principal,
        table: &TableName,
        what: String,
        added: Option<&str>,
        change: impl FnOnce(&mut TableGovernance) -> Result<()>,
    ) -> Result<Arc<TableGovernance>> {
        let _one_at_a_time = self.governing.lock().await;
        let tenant = &caller.tenant;
        let current = self.db.schemas().get(tenant, table).unwrap_or_default();
        let mut next = (*current).clone();
        change(&mut next)?;
        self.db
            .governance_conflict(tenant, table, &next)
            .map_err(Error::invalid)?;
        let checker = self.compile_rules(tenant, table, &next)?;
        if let Some(event_type) = added
            && let Some(v) = next.types.get(event_type).and_then(|v| v.last())
        {
            let version = v.version;
            self.check_migrations(tenant, table, &next, event_type, version)
                .await?;
        }
        let stored = self
            .db
            .schemas()
            .put(
                tenant,
                table,
                next,
                current.generation,
                self.config().max_governed_tables,
            )
            .map_err(refused)?;
        self.db
            .govern_table(tenant, table, &stored)
            .await
            .map_err(Error::invalid)?;
        self.db.set_check(tenant, table, Some(checker));
        self.audit(AuditEntry::by(
            caller,
            AuditKind::Admin,
            "schemas".into(),
            200,
            format!("{what}: generation {}", stored.generation),
        ));
        if live_migrations(&current) != live_migrations(&stored) {
            self.rebuild_projections_over(caller, table).await;
        }
        Ok(stored)
    }

    /// Folds again every projection over `table`, whose state was folded
    /// from events read through other migrations.
    async fn rebuild_projections_over(self: &Arc<Self>, caller: &Principal, table: &TableName) {
        for live in self.projections.of_tenant(&caller.tenant) {
            if live.table != *table {
                continue;
            }
            if let Err(e) = self.rebuild_projection(caller, &live.name).await {
                tracing::warn!(projection = %live.name, error = %e.message, "a projection over a migrated table could not be rebuilt");
            }
        }
    }

    /// Checks `events` against `table`'s rules as an ingest would, storing
    /// nothing and creating nothing.
    pub async fn validate(
        &self,
        caller: &Principal,
        table: &str,
        events: impl Into<Events>,
    ) -> Result<Report> {
        caller.require(Role::Writer, "validate events")?;
        let events: Events = events.into();
        let name = table_of(table)?;
        let count = events.len();
        let Some(gov) = self.db.schemas().get(&caller.tenant, &name) else {
            return Ok(Report {
                valid: true,
                events: count,
                violations: Violations::new(name.as_str()),
            });
        };
        // The check ingest runs, as installed.
        let check: Arc<dyn BatchCheck> = match self.db.check_of(&caller.tenant, &name) {
            Some(check) => check,
            None => self.compile_rules(&caller.tenant, &name, &gov)?,
        };
        let table_name = name.to_string();
        let mut registry = self.db.scratch_registry(&caller.tenant, &name);
        lay_out(&mut registry, &gov, name.as_str()).map_err(Error::invalid)?;
        let violations = tokio::task::spawn_blocking(move || -> Result<Violations> {
            let registry = parking_lot::Mutex::new(registry);
            let keep = vec![true; events.len()];
            let mut fresh = crate::ids::EventIds::new();
            let ids: Vec<String> = (events.heads.iter())
                .map(|e| {
                    e.event_id
                        .clone()
                        .unwrap_or_else(|| fresh.next_id().to_string())
                })
                .collect();
            let now = chrono::Utc::now().timestamp_micros();
            let built = crate::ingest::build(&events, &keep, &ids, &registry, now)
                .map_err(|e| Error::invalid(e.to_string()))?;
            let index: Vec<u64> = (0..events.len() as u64).collect();
            // Refused or stored, the check lists every violation it found.
            Ok(match check.check(built.batch, &built.facts, &index) {
                Err(violations) => *violations,
                Ok(checked) => checked
                    .warnings
                    .unwrap_or_else(|| Violations::new(table_name)),
            })
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))??;
        Ok(Report {
            valid: !violations.refuses(),
            events: count,
            violations,
        })
    }
}

/// The check of a table whose stored rules no longer compile: it refuses
/// every batch, saying why.
#[derive(Debug)]
struct Broken {
    table: String,
    why: String,
}

impl BatchCheck for Broken {
    fn check(
        &self,
        _batch: arrow::array::RecordBatch,
        _facts: &crate::ingest::Facts,
        index: &[u64],
    ) -> std::result::Result<crate::ingest::Checked, Box<Violations>> {
        let mut v = Violations::new(&self.table);
        v.rejected = index.len() as u64;
        v.push(crate::schema::governed::Violation {
            index: index.first().copied().unwrap_or(0),
            path: "$".into(),
            rule: "schema".into(),
            mode: crate::schema::governed::Mode::Reject,
            event_type: String::new(),
            schema_version: None,
            message: format!(
                "the table's stored rules no longer compile ({}); register a corrected version",
                self.why
            ),
            fields: Vec::new(),
        });
        Err(Box::new(v))
    }
}

/// The migrations a table's events are read through, as text to compare.
fn live_migrations(gov: &TableGovernance) -> String {
    let live: Vec<(&String, u32, &Vec<crate::schema::governed::MigrationStep>)> = gov
        .types
        .iter()
        .flat_map(|(t, versions)| {
            versions
                .iter()
                .filter(|v| v.is_live())
                .map(move |v| (t, v.version, &v.def.migration))
        })
        .collect();
    serde_json::to_string(&live).unwrap_or_default()
}
