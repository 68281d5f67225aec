//! Online backups of a tenant's tables, or of every tenant's (the files
//! are handled by [`crate::backup`]).
//!
//! Each table is flushed first, so the backup needs no WAL: everything
//! acknowledged before the flush is in the Delta version it copies. While
//! its files are copied the table's maintenance lock is held, so neither
//! compaction nor vacuum removes a file the version needs; ingest and
//! queries go on.

use super::{Database, Error, Result, Table};
use crate::backup::{self, FileEntry, Manifest, TableEntry};
use crate::ids::TenantId;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a backup did.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// Files copied, and files an earlier backup in the directory held.
    pub copied: u64,
    pub reused: u64,
    pub bytes_copied: u64,
}

impl Database {
    /// Backs up `tenant`'s tables (every tenant's with `None`) into `dir`
    /// (created if missing; incremental against the backup already
    /// there).
    pub async fn backup(&self, tenant: Option<&TenantId>, dir: &Path) -> Result<BackupReport> {
        let mut tables: Vec<Arc<Table>> = self
            .tables
            .read()
            .iter()
            .filter(|((t, _), _)| tenant.is_none_or(|want| t == want))
            .map(|(_, table)| table.clone())
            .collect();
        tables.sort_by(|a, b| (&a.tenant, &a.name).cmp(&(&b.tenant, &b.name)));
        let dir_owned = dir.to_path_buf();
        let mut writer = tokio::task::spawn_blocking(move || backup::Writer::new(&dir_owned))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(backup_err)?;
        let mut entries = Vec::new();
        for table in tables {
            self.flush_table(&table).await?;
            let _no_maintenance = table.maintenance_lock.lock().await;
            let label = table.label();
            let delta = self.storage.refresh(table.delta(), &label).await?;
            let Some(version) = delta.version() else {
                continue;
            };
            let root = delta.table_url().to_file_path().map_err(|_| {
                Error::Internal(format!(
                    "backups copy local tables; {label} is at {}",
                    delta.table_url()
                ))
            })?;
            let data: Vec<String> = delta
                .snapshot()
                .map_err(|e| Error::Internal(e.to_string()))?
                .log_data()
                .iter()
                .map(|f| {
                    percent_encoding::percent_decode_str(f.path().as_ref())
                        .decode_utf8_lossy()
                        .into_owned()
                })
                .collect();
            let last_position = self.storage.persisted_position(&delta, &label).await?;
            let prefix = format!("{}/{}", table.tenant, table.name);
            let (w, files) = tokio::task::spawn_blocking(move || {
                copy_table(writer, &root, &prefix, version, &data)
            })
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
            writer = w;
            entries.push(TableEntry {
                tenant: table.tenant.to_string(),
                table: table.name.to_string(),
                delta_version: version,
                last_position,
                files,
            });
        }
        let manifest = Manifest {
            format: backup::FORMAT,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            tables: entries,
        };
        let (m, d) = (manifest.clone(), dir.to_path_buf());
        tokio::task::spawn_blocking(move || m.write(&d))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(backup_err)?;
        Ok(BackupReport {
            dir: dir.to_path_buf(),
            manifest,
            copied: writer.copied,
            reused: writer.reused,
            bytes_copied: writer.bytes_copied,
        })
    }
}

fn backup_err(e: backup::Error) -> Error {
    Error::Internal(format!("backup: {e}"))
}

/// Copies one table's files at `version`: its data files and its log up
/// to that version (entries and checkpoints).
fn copy_table(
    mut writer: backup::Writer,
    root: &Path,
    prefix: &str,
    version: u64,
    data: &[String],
) -> Result<(backup::Writer, Vec<FileEntry>)> {
    let mut files = Vec::new();
    for rel in data {
        files.push(
            writer
                .add(&root.join(rel), &format!("{prefix}/{rel}"))
                .map_err(backup_err)?,
        );
    }
    let log = root.join("_delta_log");
    let mut names: Vec<String> = std::fs::read_dir(&log)
        .map_err(|e| Error::Internal(format!("{}: {e}", log.display())))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| log_file_version(name).is_some_and(|v| v <= version))
        .collect();
    names.sort();
    for name in names {
        files.push(
            writer
                .add(&log.join(&name), &format!("{prefix}/_delta_log/{name}"))
                .map_err(backup_err)?,
        );
    }
    Ok((writer, files))
}

/// The version of a Delta log entry or checkpoint file, by its name.
fn log_file_version(name: &str) -> Option<u64> {
    let (digits, rest) = name.split_at_checked(20)?;
    let kind_ok =
        rest == ".json" || (rest.starts_with(".checkpoint") && rest.ends_with(".parquet"));
    kind_ok.then(|| digits.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_files_are_recognised_by_name() {
        use super::log_file_version as v;
        assert_eq!(v("00000000000000000007.json"), Some(7));
        assert_eq!(v("00000000000000000010.checkpoint.parquet"), Some(10));
        assert_eq!(v("_last_checkpoint"), None);
        assert_eq!(v("00000000000000000007.json.tmp"), None);
        assert_eq!(v("00000000000000000007.crc"), None);
    }
}
