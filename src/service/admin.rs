//! Admin calls: maintenance runs and per-table settings, for the admin
//! role only, each recorded in the audit log.

use super::{Error, Kind, Result, Service};
use crate::audit::{AuditEntry, AuditKind};
use crate::auth::{Principal, Role};
use crate::db::Table;
use crate::db::maintenance::{MaintenanceError, MaintenanceReport, Progress, TableSettings};
use crate::ids::TableName;
use crate::policy::Action;
use std::sync::Arc;

/// A maintenance run a caller asked for.
#[derive(Debug, Clone)]
pub struct Compaction {
    /// One table, or every table of the tenant.
    pub table: Option<TableName>,
    /// Report what would be done, without doing it.
    pub dry_run: bool,
}

impl Service {
    /// Admits a maintenance run of `caller`'s tenant and records it. A
    /// named table already being compacted is refused now, before any
    /// progress is reported.
    pub fn admit_compaction(
        &self,
        caller: &Principal,
        table: Option<&str>,
        dry_run: bool,
        action: String,
    ) -> Result<Compaction> {
        caller.require(Role::Admin, "run maintenance")?;
        self.allowed_by_policies(caller, Action::Admin, table.unwrap_or("*"), None, None)?;
        self.audit(AuditEntry::by(
            caller,
            AuditKind::Admin,
            action,
            200,
            format!("table={} dry_run={dry_run}", table.unwrap_or("*")),
        ));
        let table = table
            .map(|t| {
                t.parse::<TableName>()
                    .map_err(|e| Error::invalid(e.to_string()))
            })
            .transpose()?;
        if let Some(t) = table
            .as_ref()
            .and_then(|t| self.db.table(&caller.tenant, t))
            && t.maintenance_lock.try_lock().is_err()
        {
            return Err(MaintenanceError::Busy(t.label()).into());
        }
        Ok(Compaction { table, dry_run })
    }

    /// Runs maintenance now, reporting progress as it goes. The run goes
    /// on at the background priority, and to its end when the caller
    /// stops waiting for it.
    pub async fn compact(
        &self,
        caller: &Principal,
        run: Compaction,
        mut progress: impl FnMut(Progress) + Send + 'static,
    ) -> Result<Vec<MaintenanceReport>> {
        let db = self.db.clone();
        let tenant = caller.tenant.clone();
        let task = self.manual_runs.spawn(async move {
            db.maintain_all(
                Some(&tenant),
                run.table.as_ref(),
                run.dry_run,
                &mut progress,
            )
            .await
        });
        match task.await {
            Ok(reports) => Ok(reports?),
            Err(e) => Err(Error::internal(format!("the maintenance run failed: {e}"))),
        }
    }

    /// A table's own maintenance settings and the values in effect.
    pub fn table_settings(&self, caller: &Principal, table: &str) -> Result<serde_json::Value> {
        let t = self.admin_table(caller, table)?;
        Ok(self.settings_reply(&t))
    }

    /// Replaces a table's maintenance settings (JSON `{"retention":
    /// "30days", "maintenance_interval": "1h"}`; either may be null or
    /// left out to follow the server's flags). Takes effect at the next
    /// run.
    pub fn set_table_settings(
        &self,
        caller: &Principal,
        table: &str,
        body: &[u8],
        action: String,
    ) -> Result<serde_json::Value> {
        let t = self.admin_table(caller, table)?;
        let settings: TableSettings = super::json_object(body)
            .map_err(|e| Error::invalid(format!("invalid settings: {e}")))?;
        settings.validate().map_err(Error::invalid)?;
        let detail = serde_json::to_string(&settings).unwrap_or_default();
        self.db
            .table_settings()
            .set(&t, settings)
            .map_err(|e| Error::internal(e.to_string()))?;
        self.audit(AuditEntry::by(
            caller,
            AuditKind::Admin,
            action,
            200,
            detail,
        ));
        Ok(self.settings_reply(&t))
    }

    fn admin_table(&self, caller: &Principal, table: &str) -> Result<Arc<Table>> {
        caller.require(Role::Admin, "change table settings")?;
        self.allowed_by_policies(caller, Action::Admin, table, None, None)?;
        let name = table
            .parse::<TableName>()
            .map_err(|e| Error::invalid(e.to_string()))?;
        self.db
            .table(&caller.tenant, &name)
            .ok_or_else(|| Error::new(Kind::NotFound, format!("no table {table}")))
    }

    fn settings_reply(&self, t: &Table) -> serde_json::Value {
        let own = self.db.table_settings().get(t);
        let config = self.db.config();
        let effective_retention = own.retention.clone().or_else(|| {
            config
                .retention
                .map(|d| humantime::format_duration(d).to_string())
        });
        let effective_interval = own
            .maintenance_interval
            .clone()
            .unwrap_or_else(|| humantime::format_duration(config.maintenance_interval).to_string());
        serde_json::json!({
            "table": t.name.to_string(),
            "settings": own,
            "effective": {"retention": effective_retention, "maintenance_interval": effective_interval},
        })
    }
}
