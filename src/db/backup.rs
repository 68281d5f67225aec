//! Online backups of a tenant's tables, or of every tenant's (the files
//! are handled by [`crate::backup`]), with their durable subscriptions.
//!
//! Each table is flushed first, so the backup needs no WAL: everything
//! acknowledged before the flush is in the Delta version it copies. While
//! its files are copied the table's maintenance lock is held, so neither
//! compaction nor vacuum removes a file the version needs; ingest and
//! queries go on. Tables and backups may each be local or on S3.

use super::{Database, Error, Result, Table};
use crate::backup::{self, FileEntry, Location, Manifest, Source, SubscriptionEntry, TableEntry};
use crate::ids::TenantId;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use std::sync::Arc;

/// What a backup did.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub place: Location,
    pub manifest: Manifest,
    /// Files copied, and files an earlier backup in the directory held.
    pub copied: u64,
    pub reused: u64,
    pub bytes_copied: u64,
}

/// One file of a table to back up: where it is, its size, its path
/// below the table's directory.
type TableFile = (Source, u64, String);

impl Database {
    /// Backs up `tenant`'s tables (every tenant's with `None`) into
    /// `place` (incremental against the backup already there).
    pub async fn backup(&self, tenant: Option<&TenantId>, place: Location) -> Result<BackupReport> {
        let mut tables: Vec<Arc<Table>> = self
            .tables
            .read()
            .iter()
            .filter(|((t, _), _)| tenant.is_none_or(|want| t == want))
            .map(|(_, table)| table.clone())
            .collect();
        tables.sort_by(|a, b| (&a.tenant, &a.name).cmp(&(&b.tenant, &b.name)));
        let at = place.clone();
        let mut writer = tokio::task::spawn_blocking(move || backup::Writer::new(&at))
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
            let files = table_files(&delta, version).await?;
            let last_position = self.storage.persisted_position(&delta, &label).await?;
            let prefix = format!("{}/{}", table.tenant, table.name);
            let (w, files) =
                tokio::task::spawn_blocking(move || copy_table(writer, &prefix, files))
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
        let subscriptions = self
            .groups()
            .all()
            .into_iter()
            .filter(|g| tenant.is_none_or(|want| &g.tenant == want))
            .map(|g| {
                // Positions past what the backup holds are given again,
                // to new events, after a restore: the subscription must
                // not count them as done.
                let holds = entries
                    .iter()
                    .find(|e| e.tenant == g.tenant.as_str() && e.table == g.def.table)
                    .map_or(0, |e| e.last_position);
                SubscriptionEntry {
                    tenant: g.tenant.to_string(),
                    name: g.name.to_string(),
                    state: g.backup_state(holds),
                }
            })
            .collect();
        let schemas = self
            .schemas()
            .all()
            .into_iter()
            .filter(|(t, _, _)| tenant.is_none_or(|want| t == want))
            .map(|(t, table, gov)| backup::SchemaEntry {
                tenant: t.to_string(),
                table: table.to_string(),
                state: super::schemas::file_state(&table, &gov),
            })
            .collect();
        let policies = self
            .policies()
            .all()
            .into_iter()
            .filter(|(t, _)| tenant.is_none_or(|want| t == want))
            .map(|(t, p)| backup::PolicyEntry {
                tenant: t.to_string(),
                state: serde_json::to_value(&*p).unwrap_or_default(),
            })
            .collect();
        let manifest = Manifest {
            format: backup::FORMAT,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            tables: entries,
            subscriptions,
            schemas,
            policies,
        };
        let (m, at) = (manifest.clone(), place.clone());
        tokio::task::spawn_blocking(move || m.write(&at))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(backup_err)?;
        Ok(BackupReport {
            place,
            manifest,
            copied: writer.copied,
            reused: writer.reused,
            bytes_copied: writer.bytes_copied,
        })
    }
}

impl Database {
    /// The place of a backup: `parts` joined below `--backup-dir`.
    pub fn backup_place(&self, parts: &[&str]) -> Result<Location> {
        let root = self.config.backup_root();
        let base = match root.starts_with("s3://") {
            true => {
                let (store, prefix) = crate::storage::s3_location(&self.config, &root)?;
                Location::Store {
                    store,
                    prefix,
                    url: root,
                }
            }
            false => Location::Dir(root.into()),
        };
        Ok(parts.iter().fold(base, |place, part| place.join(part)))
    }
}

fn backup_err(e: backup::Error) -> Error {
    Error::Internal(format!("backup: {e}"))
}

/// The files of a table at `version`: its data files (from the log, not
/// a listing, so replaced files are left out) and its log up to that
/// version (entries and checkpoints). Local tables are read as files,
/// others through the table's object store.
async fn table_files(delta: &deltalake::DeltaTable, version: u64) -> Result<Vec<TableFile>> {
    let store = delta.object_store();
    let root = delta.table_url().to_file_path().ok();
    let source = |rel: &str| match &root {
        Some(root) => Source::File(root.join(rel)),
        None => Source::Object {
            store: store.clone(),
            path: ObjectPath::from(rel),
        },
    };
    let mut files: Vec<TableFile> = delta
        .snapshot()
        .map_err(|e| Error::Internal(e.to_string()))?
        .log_data()
        .iter()
        .map(|f| {
            let rel = percent_encoding::percent_decode_str(f.path().as_ref())
                .decode_utf8_lossy()
                .into_owned();
            (source(&rel), f.size().max(0) as u64, rel)
        })
        .collect();
    let listed: Vec<object_store::ObjectMeta> = store
        .list(Some(&ObjectPath::from("_delta_log")))
        .try_collect()
        .await
        .map_err(|e| Error::Internal(format!("listing {}/_delta_log: {e}", delta.table_url())))?;
    let mut log: Vec<(String, u64)> = listed
        .into_iter()
        .filter_map(|meta| {
            let name = meta.location.filename()?.to_string();
            log_file_version(&name)
                .is_some_and(|v| v <= version)
                .then_some((name, meta.size))
        })
        .collect();
    log.sort();
    for (name, size) in log {
        let rel = format!("_delta_log/{name}");
        files.push((source(&rel), size, rel));
    }
    Ok(files)
}

/// Copies one table's files into the backup, below `prefix`.
fn copy_table(
    mut writer: backup::Writer,
    prefix: &str,
    files: Vec<TableFile>,
) -> Result<(backup::Writer, Vec<FileEntry>)> {
    let mut entries = Vec::new();
    for (source, size, rel) in files {
        entries.push(
            writer
                .add(&source, size, &format!("{prefix}/{rel}"))
                .map_err(backup_err)?,
        );
    }
    Ok((writer, entries))
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
