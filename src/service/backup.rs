//! Backups of a caller's tenant, for the admin role, written under the
//! server's backup directory and recorded in the audit log.

use super::{Error, Result, Service};
use crate::audit::{AuditEntry, AuditKind};
use crate::auth::{Principal, Role};
use crate::db::BackupReport;

/// Longest backup name.
const MAX_NAME: usize = 64;

impl Service {
    /// Backs up `caller`'s tenant into the backup named `name` (under
    /// `--backup-dir`, per tenant), incrementally against the backup
    /// already there.
    pub async fn backup(&self, caller: &Principal, name: &str) -> Result<BackupReport> {
        caller.require(Role::Admin, "take a backup")?;
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
        self.audit(AuditEntry::by(
            caller,
            AuditKind::Admin,
            "POST /v1/admin/backup".to_string(),
            200,
            format!("to={name}"),
        ));
        let dir = self
            .db
            .config()
            .backup_dir()
            .join(caller.tenant.as_str())
            .join(name);
        Ok(self.db.backup(&caller.tenant, &dir).await?)
    }
}
