//! Snapshots: a small Delta table per snapshotted thing (a projection's
//! state), under `<root>/<tenant>/_snapshots/<name>/`, each write replacing
//! the rows before it in one commit that also records the event position
//! the rows cover.
//!
//! The commit is durable before the write returns; only then are the files
//! it replaced deleted (nothing reads an older snapshot), so a crash
//! leaves the previous snapshot or the new one whole. The log keeps an
//! hour of history (`delta.logRetentionDuration`), trimmed at deltalake's
//! checkpoints. Event tables live beside them: a tenant directory's
//! `_snapshots` has no `_delta_log` of its own and is not a table name, so
//! table discovery passes it by.

use super::backend::Backend;
use super::{Error, Result, Storage};
use crate::ids::TenantId;
use arrow::array::RecordBatch;
use deltalake::DeltaTableError;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use url::Url;

/// The directory of a tenant's snapshots.
pub const SNAPSHOTS_DIR: &str = "_snapshots";

/// The application id whose transaction version is the event position a
/// snapshot covers.
pub const SNAPSHOT_APP_ID: &str = "allsource-snapshot-position";

/// A snapshot as read back.
#[derive(Debug)]
pub struct Snapshot {
    pub batches: Vec<RecordBatch>,
    /// Every event up to this position is reflected in the rows.
    pub position: u64,
}

impl Storage {
    fn snapshot_url(&self, tenant: &TenantId, name: &str) -> Url {
        self.root
            .join(&format!("{tenant}/{SNAPSHOTS_DIR}/{name}/"))
            .expect("validated names form a valid URL path")
    }

    /// Replaces snapshot `name`'s rows with `batch`, recording `position`.
    pub async fn write_snapshot(
        &self,
        tenant: &TenantId,
        name: &str,
        batch: RecordBatch,
        position: u64,
    ) -> Result<()> {
        let label = format!("{tenant}/{SNAPSHOTS_DIR}/{name}");
        let delta_err = |source| Error::Delta {
            table: label.clone(),
            source,
        };
        let table = self
            .open_url(self.snapshot_url(tenant, name), &label)
            .await?;
        let replaced: Vec<object_store::path::Path> = match table.snapshot() {
            Ok(state) => state
                .log_data()
                .into_iter()
                .map(|add| add.object_store_path())
                .collect(),
            Err(_) => Vec::new(),
        };
        let commit = CommitProperties::default()
            .with_application_transaction(Transaction::new(SNAPSHOT_APP_ID, position as i64));
        let table = table
            .write(vec![batch])
            .with_save_mode(SaveMode::Overwrite)
            .with_schema_mode(SchemaMode::Overwrite)
            .with_configuration([("delta.logRetentionDuration", Some("interval 1 hours"))])
            .with_commit_properties(commit)
            .await
            .map_err(delta_err)?;
        self.make_durable(&table).await?;
        let store = table.object_store();
        for path in replaced {
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Snapshot `name`'s rows and position; `None` when it was never
    /// written.
    pub async fn read_snapshot(&self, tenant: &TenantId, name: &str) -> Result<Option<Snapshot>> {
        let label = format!("{tenant}/{SNAPSHOTS_DIR}/{name}");
        let delta_err = |source| Error::Delta {
            table: label.clone(),
            source,
        };
        let url = self.snapshot_url(tenant, name);
        if let Backend::Local { .. } = self.backend
            && url.to_file_path().is_ok_and(|dir| !dir.exists())
        {
            return Ok(None);
        }
        let table = self.open_url(url, &label).await?;
        let Ok(state) = table.snapshot() else {
            return Ok(None);
        };
        // Rows without the position they cover are no snapshot.
        let Some(position) = state
            .transaction_version(table.log_store().as_ref(), SNAPSHOT_APP_ID)
            .await
            .map_err(delta_err)?
        else {
            return Ok(None);
        };
        let position = position.max(0) as u64;
        let files: Vec<object_store::path::Path> = state
            .log_data()
            .into_iter()
            .map(|add| add.object_store_path())
            .collect();
        let store = table.object_store();
        let mut batches = Vec::new();
        for file in files {
            let bytes = store.get(&file).await?.bytes().await?;
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
                    .and_then(|b| b.build())
                    .map_err(|e| delta_err(DeltaTableError::Parquet { source: e }))?;
            for batch in reader {
                batches.push(batch.map_err(|e| delta_err(DeltaTableError::Arrow { source: e }))?);
            }
        }
        Ok(Some(Snapshot { batches, position }))
    }

    /// Deletes snapshot `name` and its files; nothing when there is none.
    pub async fn delete_snapshot(&self, tenant: &TenantId, name: &str) -> Result<()> {
        let url = self.snapshot_url(tenant, name);
        match &self.backend {
            Backend::Local { .. } => {
                let Ok(dir) = url.to_file_path() else {
                    return Ok(());
                };
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(source) => Err(Error::Io { path: dir, source }),
                }
            }
            Backend::S3 { store } => {
                let prefix = object_store::path::Path::from(url.path().trim_matches('/'));
                let paths: Vec<_> = store
                    .list(Some(&prefix))
                    .map_ok(|m| m.location)
                    .try_collect()
                    .await?;
                for path in paths {
                    store.delete(&path).await?;
                }
                Ok(())
            }
        }
    }

    /// The names of a tenant's snapshots.
    pub async fn snapshot_names(&self, tenant: &TenantId) -> Result<Vec<String>> {
        let url = self
            .root
            .join(&format!("{tenant}/{SNAPSHOTS_DIR}/"))
            .expect("validated names form a valid URL path");
        let mut names = Vec::new();
        match &self.backend {
            Backend::Local { .. } => {
                let Ok(dir) = url.to_file_path() else {
                    return Ok(names);
                };
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
                    Err(source) => return Err(Error::Io { path: dir, source }),
                };
                for entry in entries.flatten() {
                    if let Some(name) = entry.file_name().to_str() {
                        names.push(name.to_string());
                    }
                }
            }
            Backend::S3 { store } => {
                let prefix = object_store::path::Path::from(url.path().trim_matches('/'));
                let listing = store.list_with_delimiter(Some(&prefix)).await?;
                names.extend(
                    listing
                        .common_prefixes
                        .iter()
                        .filter_map(|p| p.filename().map(str::to_string)),
                );
            }
        }
        names.sort();
        Ok(names)
    }
}
