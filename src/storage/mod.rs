//! Where tables live: Delta Lake tables on object storage, one per
//! `<root>/<tenant>/<table>/`, partitioned by `event_date`.
//!
//! # Parts
//!
//! - `backend`: the storage root and how to reach it, a local directory or
//!   an S3 bucket ([`Storage::new`] reads it from the configuration).
//! - `discovery`: finding the tables under the root at start-up
//!   ([`Storage::list_tables`]).
//! - `writer`: the flush writer. Buffered batches become Parquet files
//!   and one Delta commit that records the WAL sequence they cover
//!   ([`Storage::append`]); the commit is fsynced before the WAL may let
//!   go of it (`Storage::make_durable`). `encoding` picks the Parquet
//!   settings of those files.
//! - [`entity_filter`]: the in-memory filters of the entity ids each
//!   flushed file holds, which the scan prunes files by.
//! - [`scan`]: the read side, a table version's files as a DataFusion scan
//!   ([`scan::DeltaFiles`]), with the Parquet readers it uses (`readers`).
//!
//! This module reads and writes Delta tables and nothing above them: the
//! database (`db`) drives it, and the query layer only wraps its scan.

mod backend;
mod discovery;
mod encoding;
pub mod entities;
pub mod entity_filter;
pub mod lease;
pub(crate) mod readers;
pub mod scan;
pub mod snapshot;
#[cfg(test)]
mod test_util;
mod writer;

pub use backend::s3_location;
pub use writer::flush_parallelism;

use crate::ids::{NodeId, TableName, TenantId, WalSeq};
use backend::Backend;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use std::path::PathBuf;
use url::Url;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid storage URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("Delta Lake error on {table}: {source}")]
    Delta {
        table: String,
        #[source]
        source: DeltaTableError,
    },
    #[error("object store error: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("storage I/O error at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The application id under which flushes record the last WAL sequence
/// they contain, in the same Delta commit as the data. A writer with a
/// node id appends `-node-<id>`: each writer has a WAL of its own.
pub const WAL_APP_ID: &str = "allsource-wal";
/// Delta application id whose transaction version is the highest event
/// position a table's flushes have written (per writer, as above).
pub const POSITION_APP_ID: &str = "allsource-position";

/// `app`, the application id of writer `node`.
fn app_id(app: &str, node: Option<NodeId>) -> String {
    match node {
        None => app.to_string(),
        Some(n) => format!("{app}-node-{n}"),
    }
}

/// Partition column of every event table.
pub const PARTITION_COLUMN: &str = crate::schema::EVENT_DATE;

/// The storage root and how to reach it.
#[derive(Debug, Clone)]
pub struct Storage {
    /// The root as a directory URL (ending in `/`): `file:///…/` or
    /// `s3://bucket/prefix/`. Table URLs are joined onto it.
    root: Url,
    backend: Backend,
    /// The writer this process is among several (`None`: the only one).
    node: Option<NodeId>,
}

impl Storage {
    /// The object store the tables' data files are read from, and the URL
    /// a query runtime registers it under (`file:///` or `s3://bucket`):
    /// what a process that only reads files (a query executor) needs.
    pub fn file_store(&self) -> (Url, deltalake::logstore::ObjectStoreRef) {
        match &self.backend {
            Backend::Local { .. } => (
                Url::parse("file:///").expect("static URL"),
                std::sync::Arc::new(object_store::local::LocalFileSystem::new()),
            ),
            Backend::S3 { store } => {
                let mut url = self.root.clone();
                url.set_path("/");
                (url, store.clone())
            }
        }
    }

    /// The URL of a table's directory.
    pub fn table_url(&self, tenant: &TenantId, table: &TableName) -> Url {
        self.root
            .join(&format!("{tenant}/{table}/"))
            .expect("validated names form a valid URL path")
    }

    /// Opens a table: loaded when it exists, an empty handle (created by
    /// its first write) when it does not.
    pub async fn open(&self, tenant: &TenantId, table: &TableName) -> Result<DeltaTable> {
        self.open_url(self.table_url(tenant, table), &format!("{tenant}.{table}"))
            .await
    }

    /// Whether the table at `url` is a local one whose log holds nothing
    /// yet: such a table stays an empty handle without asking the kernel,
    /// which logs an error for every load of one.
    fn unwritten(&self, url: &Url) -> bool {
        match (&self.backend, url.to_file_path()) {
            (Backend::Local { .. }, Ok(dir)) => std::fs::read_dir(dir.join("_delta_log"))
                .map_or(true, |mut entries| entries.next().is_none()),
            _ => false,
        }
    }

    /// Opens the Delta table at `url` (a directory URL under the root),
    /// as [`Storage::open`] does; `name` labels its errors.
    async fn open_url(&self, url: Url, name: &str) -> Result<DeltaTable> {
        let delta_err = |source| Error::Delta {
            table: name.to_string(),
            source,
        };
        if let Backend::Local { .. } = self.backend
            && let Ok(dir) = url.to_file_path()
        {
            std::fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir, source })?;
        }
        let unwritten = self.unwritten(&url);
        let mut builder = DeltaTableBuilder::from_url(url.clone()).map_err(delta_err)?;
        if let Backend::S3 { store } = &self.backend {
            builder = builder.with_storage_backend(store.clone(), url);
        }
        let mut t = builder.build().map_err(delta_err)?;
        if unwritten {
            return Ok(t);
        }
        match t.load().await {
            Ok(()) | Err(DeltaTableError::NotATable(_)) => Ok(t),
            Err(e) => Err(delta_err(e)),
        }
    }

    /// Brings a handle up to the table's latest version; a table that does
    /// not exist yet stays an empty handle.
    pub async fn refresh(&self, mut table: DeltaTable, name: &str) -> Result<DeltaTable> {
        let result = if table.version().is_some() {
            table.update_state().await
        } else if self.unwritten(table.table_url()) {
            return Ok(table);
        } else {
            table.load().await
        };
        match result {
            Ok(()) | Err(DeltaTableError::NotATable(_)) => Ok(table),
            Err(source) => Err(Error::Delta {
                table: name.to_string(),
                source,
            }),
        }
    }

    /// `table` as it was at Delta `version`; `None` when the table has no
    /// such version.
    pub async fn at_version(
        &self,
        table: &DeltaTable,
        name: &str,
        version: u64,
    ) -> Result<Option<DeltaTable>> {
        if table.version().is_none_or(|latest| version > latest) {
            return Ok(None);
        }
        let mut old = table.clone();
        match old.load_version(version).await {
            Ok(()) => Ok(Some(old)),
            Err(DeltaTableError::InvalidVersion(_)) => Ok(None),
            Err(source) => Err(Error::Delta {
                table: name.to_string(),
                source,
            }),
        }
    }

    /// The last WAL sequence of this writer already committed to `table`.
    pub async fn persisted_seq(&self, table: &DeltaTable, name: &str) -> Result<WalSeq> {
        let app = app_id(WAL_APP_ID, self.node);
        Ok(WalSeq(self.app_version(table, name, &app).await?))
    }

    /// The last WAL sequence a server without a node id committed to
    /// `table` (0: none).
    pub async fn sole_writer_seq(&self, table: &DeltaTable, name: &str) -> Result<WalSeq> {
        Ok(WalSeq(self.app_version(table, name, WAL_APP_ID).await?))
    }

    /// The highest event position this writer's flushes have written to
    /// the table (0 when none has).
    pub async fn persisted_position(&self, table: &DeltaTable, name: &str) -> Result<u64> {
        let app = app_id(POSITION_APP_ID, self.node);
        self.app_version(table, name, &app).await
    }

    async fn app_version(&self, table: &DeltaTable, name: &str, app: &str) -> Result<u64> {
        match table.snapshot() {
            Ok(state) => {
                let v = state
                    .transaction_version(table.log_store().as_ref(), app)
                    .await
                    .map_err(|source| Error::Delta {
                        table: name.to_string(),
                        source,
                    })?;
                Ok(v.unwrap_or(0).max(0) as u64)
            }
            Err(DeltaTableError::NotInitialized) => Ok(0),
            Err(source) => Err(Error::Delta {
                table: name.to_string(),
                source,
            }),
        }
    }
}

/// What [`Storage::delete_rows`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deleted {
    /// Rows deleted, when the files say (a file dropped whole on its
    /// statistics alone is not counted row by row).
    pub rows: Option<u64>,
    /// Files removed from the table (dropped, or rewritten without the
    /// rows).
    pub files_removed: u64,
}

impl Storage {
    /// Deletes the stored rows of a table that `predicate` is true for
    /// (rows it is null for stay), in one Delta commit, durable before
    /// this returns. A table never written has nothing to delete.
    pub async fn delete_rows(
        &self,
        tenant: &TenantId,
        table: &TableName,
        predicate: datafusion::logical_expr::Expr,
    ) -> Result<Deleted> {
        let name = format!("{tenant}.{table}");
        let delta = self.open(tenant, table).await?;
        if delta.version().is_none() {
            return Ok(Deleted::default());
        }
        let (delta, metrics) =
            delta
                .delete()
                .with_predicate(predicate)
                .await
                .map_err(|source| Error::Delta {
                    table: name,
                    source,
                })?;
        self.make_durable(&delta).await?;
        Ok(Deleted {
            rows: metrics.num_deleted_rows.map(|n| n as u64),
            files_removed: metrics.num_removed_files as u64,
        })
    }
}
