//! Backups of a caller's tenant or of every tenant, for the admin role,
//! written under the server's backup directory and recorded in the audit
//! log.

use super::{Error, Result, Service};
use crate::audit::{AuditEntry, AuditKind};
use crate::auth::{Principal, Role};
use crate::db::BackupReport;

/// Longest backup name.
const MAX_NAME: usize = 64;

/// Whose tables a backup holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackupScope {
    /// The caller's tenant's, under `<backup-dir>/<tenant>/<name>`.
    #[default]
    Tenant,
    /// Every tenant's, under `<backup-dir>/_all/<name>` (a tenant name
    /// cannot start with `_`).
    AllTenants,
}

impl Service {
    /// Backs up `caller`'s tenant, or every tenant, into the backup named
    /// `name` (under `--backup-dir`), incrementally against the backup
    /// already there.
    pub async fn backup(
        &self,
        caller: &Principal,
        name: &str,
        scope: BackupScope,
    ) -> Result<BackupReport> {
        caller.require(Role::Admin, "take a backup")?;
        self.allowed_by_policies(caller, crate::policy::Action::Admin, "*", None, None)?;
        let valid = !name.is_empty()
            && name.len() <= MAX_NAME
            && name != "."
            && name != ".."
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(Error::invalid(format!(
                "backup name {name:?}: use 1 to {MAX_NAME} letters, digits, '-', '_' or '.'"
            )));
        }
        let (owner, tenant, detail) = match scope {
            BackupScope::Tenant => (caller.tenant.as_str(), Some(&caller.tenant), ""),
            BackupScope::AllTenants => ("_all", None, " all_tenants"),
        };
        self.audit(AuditEntry::by(
            caller,
            AuditKind::Admin,
            "POST /v1/admin/backup".to_string(),
            200,
            format!("to={name}{detail}"),
        ));
        let place = self.db.backup_place(&[owner, name])?;
        Ok(self.db.backup(tenant, place).await?)
    }
}
