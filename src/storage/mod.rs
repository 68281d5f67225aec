//! Where tables live: Delta Lake tables on object storage, one per
//! `<root>/<tenant>/<table>/`, partitioned by `event_date`.
//!
//! The root is a local directory by default (deltalake's own `file://`
//! support) or `s3://bucket/prefix`, for which we build an
//! `object_store::aws::AmazonS3` from the standard `AWS_*` variables and
//! hand it to deltalake with a plain log store (commits use conditional
//! put, which S3 and the common S3-compatible stores support).

use crate::config::Config;
use crate::ids::{TableName, TenantId, WalSeq};
use arrow::array::RecordBatch;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::logstore::{
    LogStoreFactory, LogStoreRef, ObjectStoreRef, StorageConfig, default_logstore,
    logstore_factories,
};
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use object_store::ObjectStore;
use std::path::PathBuf;
use std::sync::{Arc, Once};
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
/// they contain, in the same Delta commit as the data.
pub const WAL_APP_ID: &str = "allsource-wal";

/// Partition column of every event table.
pub const PARTITION_COLUMN: &str = crate::schema::EVENT_DATE;

#[derive(Debug)]
struct PlainLogStore;

impl LogStoreFactory for PlainLogStore {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> deltalake::DeltaResult<LogStoreRef> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// The storage root and how to reach it.
#[derive(Debug, Clone)]
pub struct Storage {
    root: Url,
    /// The S3 store, when the root is on S3; local roots use deltalake's
    /// built-in file support.
    s3: Option<ObjectStoreRef>,
    /// The local root directory, when the root is local.
    local_root: Option<PathBuf>,
}

impl Storage {
    pub fn new(config: &Config) -> Result<Self> {
        let spec = config
            .storage_url
            .clone()
            .unwrap_or_else(|| config.data_dir.join("tables").display().to_string());
        let invalid = |reason: String| Error::InvalidUrl {
            url: spec.clone(),
            reason,
        };
        if let Some(rest) = spec.strip_prefix("s3://") {
            if rest.split('/').next().unwrap_or("").is_empty() {
                return Err(invalid("no bucket name".into()));
            }
            let mut root = Url::parse(&spec).map_err(|e| invalid(e.to_string()))?;
            if !root.path().ends_with('/') {
                root.set_path(&format!("{}/", root.path()));
            }
            let bucket = root.host_str().unwrap_or_default().to_string();
            let mut builder =
                object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Some(endpoint) = &config.s3_endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if config.s3_allow_http {
                builder = builder.with_allow_http(true);
            }
            let store = builder.build()?;
            static REGISTER: Once = Once::new();
            REGISTER.call_once(|| {
                logstore_factories().insert(
                    Url::parse("s3://").expect("static URL"),
                    Arc::new(PlainLogStore),
                );
            });
            return Ok(Storage {
                root,
                s3: Some(Arc::new(store)),
                local_root: None,
            });
        }
        let path = match spec.strip_prefix("file://") {
            Some(p) => PathBuf::from(p),
            None if spec.contains("://") => {
                return Err(invalid(
                    "use a local path, file:// or s3://bucket/prefix".into(),
                ));
            }
            None => PathBuf::from(&spec),
        };
        std::fs::create_dir_all(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let path = path.canonicalize().map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let root = Url::from_directory_path(&path)
            .map_err(|_| invalid("not an absolute directory".into()))?;
        Ok(Storage {
            root,
            s3: None,
            local_root: Some(path),
        })
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
        let url = self.table_url(tenant, table);
        let name = format!("{tenant}.{table}");
        let delta_err = |source| Error::Delta {
            table: name.clone(),
            source,
        };
        if let Some(dir) = url.to_file_path().ok().filter(|_| self.s3.is_none()) {
            std::fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir, source })?;
        }
        let mut builder = DeltaTableBuilder::from_url(url.clone()).map_err(delta_err)?;
        if let Some(store) = &self.s3 {
            builder = builder.with_storage_backend(store.clone(), url);
        }
        let mut t = builder.build().map_err(delta_err)?;
        match t.load().await {
            Ok(()) | Err(DeltaTableError::NotATable(_)) => Ok(t),
            Err(e) => Err(delta_err(e)),
        }
    }

    /// Every table under the root, found by its `_delta_log`.
    pub async fn list_tables(&self) -> Result<Vec<(TenantId, TableName)>> {
        let mut found = Vec::new();
        if let Some(root) = &self.local_root {
            let io = |path: &std::path::Path| {
                let path = path.to_path_buf();
                move |source| Error::Io { path, source }
            };
            for tenant in std::fs::read_dir(root).map_err(io(root))? {
                let tenant = tenant.map_err(io(root))?;
                let Some(tenant_id) = tenant.file_name().to_str().and_then(|n| n.parse().ok())
                else {
                    continue;
                };
                if !tenant.path().is_dir() {
                    continue;
                }
                for table in std::fs::read_dir(tenant.path()).map_err(io(&tenant.path()))? {
                    let table = table.map_err(io(&tenant.path()))?;
                    let Some(name) = table.file_name().to_str().and_then(|n| n.parse().ok()) else {
                        continue;
                    };
                    if table.path().join("_delta_log").is_dir() {
                        found.push((TenantId::clone(&tenant_id), name));
                    }
                }
            }
        } else if let Some(store) = &self.s3 {
            let prefix = object_store::path::Path::from(self.root.path().trim_matches('/'));
            let tenants = store.list_with_delimiter(Some(&prefix)).await?;
            for tenant_prefix in tenants.common_prefixes {
                let Some(tenant_id) = tenant_prefix
                    .filename()
                    .and_then(|n| n.parse::<TenantId>().ok())
                else {
                    continue;
                };
                let tables = store.list_with_delimiter(Some(&tenant_prefix)).await?;
                for table_prefix in tables.common_prefixes {
                    let Some(name) = table_prefix
                        .filename()
                        .and_then(|n| n.parse::<TableName>().ok())
                    else {
                        continue;
                    };
                    let log = table_prefix.clone().join("_delta_log");
                    let mut listing = store.list(Some(&log));
                    if futures::StreamExt::next(&mut listing).await.is_some() {
                        found.push((tenant_id.clone(), name));
                    }
                }
            }
        }
        found.sort();
        Ok(found)
    }

    /// Appends `batches` (all of one schema) in one commit that also
    /// records `last_seq` as the WAL position it covers. Creates the table
    /// on its first write; new columns are merged into its schema.
    ///
    /// The batches are dealt into as many input partitions as there are
    /// cores. deltalake then hash-partitions the rows by date, so each of
    /// its writer tasks encodes its own dates (still one file per date),
    /// and on the flusher's multi-threaded runtime the tasks run in
    /// parallel.
    pub async fn append(
        &self,
        table: DeltaTable,
        name: &str,
        batches: Vec<RecordBatch>,
        last_seq: WalSeq,
    ) -> Result<DeltaTable> {
        let delta_err = |source| Error::Delta {
            table: name.to_string(),
            source,
        };
        let parts = flush_parallelism().min(batches.len());
        let write = if parts < 2 {
            table.write(batches)
        } else {
            let schema = batches[0].schema();
            let mut inputs: Vec<Vec<RecordBatch>> = vec![Vec::new(); parts];
            for (i, batch) in batches.into_iter().enumerate() {
                inputs[i % parts].push(batch);
            }
            let input = datafusion::datasource::MemTable::try_new(schema, inputs)
                .and_then(|mem| {
                    datafusion::logical_expr::LogicalPlanBuilder::scan(
                        "flush",
                        datafusion::datasource::provider_as_source(Arc::new(mem)),
                        None,
                    )?
                    .build()
                })
                .map_err(|e| delta_err(DeltaTableError::from(e)))?;
            table.write(Vec::new()).with_input_plan(input)
        };
        let table = write
            .with_save_mode(SaveMode::Append)
            .with_schema_mode(SchemaMode::Merge)
            .with_partition_columns([PARTITION_COLUMN])
            .with_writer_properties(flush_writer_properties())
            .with_commit_properties(
                CommitProperties::default()
                    .with_application_transaction(Transaction::new(WAL_APP_ID, last_seq.0 as i64)),
            )
            .await
            .map_err(delta_err)?;
        self.make_durable(&table).await?;
        Ok(table)
    }

    /// Brings a handle up to the table's latest version; a table that does
    /// not exist yet stays an empty handle.
    pub async fn refresh(&self, mut table: DeltaTable, name: &str) -> Result<DeltaTable> {
        let result = if table.version().is_some() {
            table.update_state().await
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

    /// The last WAL sequence already committed to `table`.
    pub async fn persisted_seq(&self, table: &DeltaTable, name: &str) -> Result<WalSeq> {
        match table.snapshot() {
            Ok(state) => {
                let v = state
                    .transaction_version(table.log_store().as_ref(), WAL_APP_ID)
                    .await
                    .map_err(|source| Error::Delta {
                        table: name.to_string(),
                        source,
                    })?;
                Ok(WalSeq(v.unwrap_or(0).max(0) as u64))
            }
            Err(DeltaTableError::NotInitialized) => Ok(WalSeq(0)),
            Err(source) => Err(Error::Delta {
                table: name.to_string(),
                source,
            }),
        }
    }

    /// Makes the table's latest commit survive power loss before the WAL
    /// records it covers are deleted. object_store's local backend never
    /// fsyncs, so we fsync the commit's data files, the log entry (and a
    /// checkpoint written with it), and every directory they were created
    /// in. S3 acknowledges a put only once it is durable.
    pub(crate) async fn make_durable(&self, table: &DeltaTable) -> Result<()> {
        if self.local_root.is_none() {
            return Ok(());
        }
        let (Ok(dir), Some(version)) = (table.table_url().to_file_path(), table.version()) else {
            return Ok(());
        };
        let root = self.local_root.clone();
        tokio::task::spawn_blocking(move || sync_commit(&dir, version, root.as_deref()))
            .await
            .map_err(|e| Error::Io {
                path: PathBuf::from("<fsync>"),
                source: std::io::Error::other(e),
            })?
    }
}

fn fsync_path(path: &std::path::Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// fsyncs what commit `version` of the table in `dir` added, and the
/// directories up to the storage root.
fn sync_commit(dir: &std::path::Path, version: u64, root: Option<&std::path::Path>) -> Result<()> {
    let log = dir.join("_delta_log");
    let commit = log.join(format!("{version:020}.json"));
    let text = std::fs::read_to_string(&commit).map_err(|source| Error::Io {
        path: commit.clone(),
        source,
    })?;
    let mut dirs = std::collections::BTreeSet::new();
    for line in text.lines() {
        let Ok(action) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(path) = action["add"]["path"].as_str() else {
            continue;
        };
        let rel = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
        let file = dir.join(rel.as_ref());
        fsync_path(&file)?;
        let mut parent = file.parent();
        while let Some(p) = parent {
            if p == dir || !p.starts_with(dir) {
                break;
            }
            dirs.insert(p.to_path_buf());
            parent = p.parent();
        }
    }
    fsync_path(&commit)?;
    for extra in [
        log.join(format!("{version:020}.checkpoint.parquet")),
        log.join("_last_checkpoint"),
    ] {
        if extra.exists() {
            fsync_path(&extra)?;
        }
    }
    for d in &dirs {
        fsync_path(d)?;
    }
    fsync_path(&log)?;
    // The table's own directory and those above it, for a table (or
    // tenant) created by this commit.
    let mut up = Some(dir);
    while let Some(d) = up {
        fsync_path(d)?;
        if root.is_none_or(|r| d == r) {
            break;
        }
        up = d.parent();
    }
    Ok(())
}

/// How many writer tasks a flush runs in parallel: the cores, at most 4.
/// Looked up once: on Linux the lookup reads the cgroup's CPU quota files.
pub fn flush_parallelism() -> usize {
    static PARALLELISM: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PARALLELISM.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(4)))
}

/// Parquet settings of flushed files: deltalake's defaults (snappy, chunk
/// statistics), except that `event_id` and `timestamp` are not
/// dictionary-encoded. Their values are (nearly) unique, so a dictionary
/// only costs hashing every value before the writer gives up on it, and
/// leaves a 1 MB dictionary page that every read of the column decodes.
fn flush_writer_properties() -> parquet::file::properties::WriterProperties {
    let mut b = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY);
    for column in [crate::schema::EVENT_ID, crate::schema::TIMESTAMP] {
        b = b
            .set_column_dictionary_enabled(parquet::schema::types::ColumnPath::from(column), false);
    }
    b.build()
}
