//! The flush writer: buffered batches become Parquet files under a table
//! and one Delta commit that also records the WAL sequence they cover.
//!
//! Durability is part of the write. A local commit is not durable when
//! deltalake returns (object_store's local backend never fsyncs), and the
//! WAL records it covers are deleted once it is, so
//! `Storage::make_durable` fsyncs the commit's files, its log entry and
//! the directories they were created in before the flush reports success.

use super::backend::Backend;
use super::encoding::flush_writer_properties;
use super::entity_filter::EntityFilter;
use super::{Error, PARTITION_COLUMN, POSITION_APP_ID, Result, Storage, WAL_APP_ID, app_id};
use crate::ids::WalSeq;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Date32Type;
use arrow::error::ArrowError;
use deltalake::datafile::writer::{DeltaWriter, WriterConfig};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Transaction};
use deltalake::operations::write::{SchemaMode, WriterStatsConfig};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableError};
use std::path::{Path, PathBuf};

impl Storage {
    /// Appends `batches` (all of one schema) in one commit that also
    /// records `last_seq` as the WAL position it covers and, when given,
    /// `last_position` as the highest event position written. Creates the table
    /// on its first write; new columns are merged into its schema.
    ///
    /// A flush that brings no new column (nearly all of them) writes its
    /// files itself, one per date (`write_by_date`). The first
    /// write of a table and flushes that widen its schema go through
    /// deltalake's `WriteBuilder`, which creates the table or adds the
    /// schema change to the commit.
    ///
    /// Also returns the entity filters of the files written here (each
    /// file's path, as the log gives it, and its filter).
    pub async fn append(
        &self,
        table: DeltaTable,
        name: &str,
        batches: Vec<RecordBatch>,
        last_seq: WalSeq,
        last_position: Option<u64>,
    ) -> Result<(DeltaTable, Vec<(String, EntityFilter)>)> {
        let delta_err = |source| Error::Delta {
            table: name.to_string(),
            source,
        };
        let properties = flush_writer_properties(&batches);
        let mut commit = CommitProperties::default().with_application_transaction(
            Transaction::new(app_id(WAL_APP_ID, self.node), last_seq.0 as i64),
        );
        if let Some(p) = last_position {
            commit = commit.with_application_transaction(Transaction::new(
                app_id(POSITION_APP_ID, self.node),
                p as i64,
            ));
        }
        let conformed = table.snapshot().ok().and_then(|s| {
            let snapshot = s.snapshot();
            if !plain_writes(snapshot.protocol(), &snapshot.schema()) {
                return None;
            }
            let schema = snapshot.arrow_schema();
            Some((conform(&schema, &batches)?, schema))
        });
        let injected = |point| {
            crate::fault::injected(point).map_err(|source| Error::Io {
                path: PathBuf::from(name),
                source,
            })
        };
        injected("flush-write")?;
        let (table, filters) = match conformed {
            Some((batches, schema)) => write_by_date(table, schema, batches, properties, commit)
                .await
                .map_err(delta_err)?,
            _ => (
                table
                    .write(batches)
                    .with_save_mode(SaveMode::Append)
                    .with_schema_mode(SchemaMode::Merge)
                    .with_partition_columns([PARTITION_COLUMN])
                    .with_writer_properties(properties)
                    .with_commit_properties(commit)
                    .await
                    .map_err(delta_err)?,
                Vec::new(),
            ),
        };
        injected("flush-after-commit")?;
        self.make_durable(&table).await?;
        Ok((table, filters))
    }

    /// Makes the table's latest commit survive power loss before the WAL
    /// records it covers are deleted. object_store's local backend never
    /// fsyncs, so we fsync the commit's data files, the log entry (and a
    /// checkpoint written with it), and every directory they were created
    /// in. S3 acknowledges a put only once it is durable.
    pub(crate) async fn make_durable(&self, table: &DeltaTable) -> Result<()> {
        let Backend::Local { dir: root } = &self.backend else {
            return Ok(());
        };
        let (Ok(dir), Some(version)) = (table.table_url().to_file_path(), table.version()) else {
            return Ok(());
        };
        crate::fault::injected("flush-fsync").map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let root = root.clone();
        tokio::task::spawn_blocking(move || sync_commit(&dir, version, &root))
            .await
            .map_err(|e| Error::Io {
                path: PathBuf::from("<fsync>"),
                source: std::io::Error::other(e),
            })?
    }
}

fn fsync_path(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
    crate::fault::synced(path, None);
    Ok(())
}

/// fsyncs what commit `version` of the table in `dir` added, and the
/// directories up to the storage root.
fn sync_commit(dir: &Path, version: u64, root: &Path) -> Result<()> {
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
        if d == root {
            break;
        }
        up = d.parent();
    }
    Ok(())
}

/// Whether appending files is all a write to this table needs: writer
/// protocol 1 or 2 (what AllSource creates) and no column invariants.
/// Features of later versions that another tool may have turned on
/// (CHECK constraints, generated columns, change data feed, column
/// mapping) need checks or extra files that deltalake's `WriteBuilder`
/// takes care of, so such tables are written through it.
fn plain_writes(
    protocol: &deltalake::kernel::Protocol,
    schema: &deltalake::kernel::StructType,
) -> bool {
    use deltalake::kernel::StructTypeExt;
    protocol.min_writer_version() <= 2 && schema.get_invariants().is_ok_and(|i| i.is_empty())
}

/// `batches` laid out as the table's schema, if they have exactly its
/// columns (by name and type, in any order); `None` if a column is new.
/// The column order differs once deltalake has merged a schema change:
/// it moves the partition column behind the old columns.
fn conform(
    table: &arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
) -> Option<Vec<RecordBatch>> {
    batches
        .iter()
        .map(|b| {
            if b.num_columns() != table.fields().len() {
                return None;
            }
            let schema = b.schema();
            let columns = table
                .fields()
                .iter()
                .map(|f| {
                    let (i, field) = schema.column_with_name(f.name())?;
                    (field.data_type() == f.data_type()).then(|| b.column(i).clone())
                })
                .collect::<Option<Vec<_>>>()?;
            RecordBatch::try_new(table.clone(), columns).ok()
        })
        .collect()
}

/// Rows of `batch` by `event_date`, one batch per date. A batch of one
/// date (what live ingest produces) is passed on whole, without copying.
fn split_by_date(batch: &RecordBatch) -> Result<Vec<(i32, RecordBatch)>, ArrowError> {
    let column = batch.schema().index_of(PARTITION_COLUMN)?;
    let dates = batch
        .column(column)
        .as_primitive_opt::<Date32Type>()
        .ok_or_else(|| {
            ArrowError::SchemaError(format!("{PARTITION_COLUMN} is not a date column"))
        })?;
    if dates.null_count() > 0 {
        return Err(ArrowError::InvalidArgumentError(format!(
            "{PARTITION_COLUMN} has nulls"
        )));
    }
    let values = dates.values();
    let Some(&first) = values.first() else {
        return Ok(Vec::new());
    };
    if values.iter().all(|d| *d == first) {
        return Ok(vec![(first, batch.clone())]);
    }
    let mut rows: Vec<(i32, Vec<u32>)> = Vec::new();
    let mut last = 0; // the group of the previous row: runs of one date are common
    for (i, date) in values.iter().enumerate() {
        if rows.get(last).is_none_or(|(d, _)| d != date) {
            last = match rows.iter().position(|(d, _)| d == date) {
                Some(g) => g,
                None => {
                    rows.push((*date, Vec::new()));
                    rows.len() - 1
                }
            };
        }
        rows[last].1.push(i as u32);
    }
    rows.into_iter()
        .map(|(date, rows)| {
            let rows = arrow::array::UInt32Array::from(rows);
            Ok((date, arrow::compute::take_record_batch(batch, &rows)?))
        })
        .collect()
}

/// Writes `batches` as new files of `table` and commits them with
/// `commit`'s application transaction. The batches are split by date,
/// and the dates dealt, largest first, to [`flush_parallelism`] writer
/// tasks, each encoding its own dates (one file per date and task). A date
/// with more than an even share of the rows is first cut into shares
/// (see [`shares`]), so that a flush of one day's events, which is what
/// live ingest produces, still uses every core: it writes that many files
/// for the day.
///
/// deltalake's `WriteBuilder` did the same work with two splits: a hash
/// repartition of the input by date, then a sort of each partition's
/// batches by date in its file writer. Each copied every row, and the two
/// were a fifth of a bulk load's CPU.
async fn write_by_date(
    table: DeltaTable,
    schema: arrow::datatypes::SchemaRef,
    batches: Vec<RecordBatch>,
    properties: parquet::file::properties::WriterProperties,
    commit: CommitProperties,
) -> Result<(DeltaTable, Vec<(String, EntityFilter)>), DeltaTableError> {
    let snapshot = table.snapshot()?;
    let stats = WriterStatsConfig::from_config(snapshot.snapshot().table_configuration());
    let parts = flush_parallelism();
    // 1. Split, a share of the batches per task.
    let mut dealt: Vec<Vec<RecordBatch>> = vec![Vec::new(); parts];
    for (i, batch) in batches.into_iter().enumerate() {
        dealt[i % parts].push(batch);
    }
    let split = run_tasks(dealt.into_iter().map(|mine| async move {
        let mut pieces = Vec::new();
        for batch in &mine {
            pieces.extend(split_by_date(batch)?);
        }
        Ok::<_, ArrowError>(pieces)
    }))
    .await?;
    let mut by_date: std::collections::BTreeMap<i32, Vec<RecordBatch>> = Default::default();
    for piece in split {
        for (date, batch) in piece? {
            by_date.entry(date).or_default().push(batch);
        }
    }
    // 2. Deal the dates (or shares of them), largest first, to the
    // least-loaded writer.
    let rows = |b: &Vec<RecordBatch>| b.iter().map(RecordBatch::num_rows).sum::<usize>();
    type Date = (i32, Vec<RecordBatch>);
    let total: usize = by_date.values().map(rows).sum();
    let mut dates: Vec<Date> = by_date
        .into_iter()
        .flat_map(|(date, batches)| {
            shares(batches, total.div_ceil(parts).max(MIN_SHARE_ROWS))
                .into_iter()
                .map(move |share| (date, share))
        })
        .collect();
    dates.sort_by_key(|(_, b)| std::cmp::Reverse(rows(b)));
    let mut jobs: Vec<(usize, Vec<Date>)> = vec![(0, Vec::new()); parts];
    for date in dates {
        let job = jobs
            .iter_mut()
            .min_by_key(|(load, _)| *load)
            .expect("parts >= 1");
        job.0 += rows(&date.1);
        job.1.push(date);
    }
    // 3. Write: each task has its own file writer for its dates.
    let config = WriterConfig::new(
        schema,
        vec![PARTITION_COLUMN.to_string()],
        Some(properties),
        None,
        None,
        stats.num_indexed_cols,
        stats.stats_columns,
    );
    // A writer per date, so that each file is known to hold that date's
    // rows, whose entity filter it gets.
    let store = table.log_store().object_store(None);
    let written = run_tasks(jobs.into_iter().filter(|(_, dates)| !dates.is_empty()).map(
        |(_, dates)| {
            let (store, config) = (store.clone(), config.clone());
            async move {
                let mut written = Vec::new();
                for (date, batches) in dates {
                    let filter = EntityFilter::of(&batches);
                    let mut writer = DeltaWriter::new(store.clone(), config.clone());
                    let values = indexmap::IndexMap::from([(
                        PARTITION_COLUMN.to_string(),
                        delta_kernel::expressions::Scalar::Date(date),
                    )]);
                    for batch in batches {
                        writer.write_partition(batch, &values).await?;
                    }
                    written.push((writer.close().await?, filter));
                }
                Ok::<_, DeltaTableError>(written)
            }
        },
    ))
    .await?;
    let mut actions = Vec::new();
    let mut filters = Vec::new();
    for (adds, filter) in written
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
    {
        for add in adds {
            if let Some(filter) = &filter {
                filters.push((add.path.clone(), filter.clone()));
            }
            actions.push(Action::Add(add));
        }
    }
    let operation = DeltaOperation::Write {
        mode: SaveMode::Append,
        partition_by: Some(vec![PARTITION_COLUMN.to_string()]),
        predicate: None,
    };
    let done = CommitBuilder::from(commit)
        .with_actions(actions)
        .build(Some(snapshot), table.log_store(), operation)
        .await?;
    let mut table = table;
    table.state = Some(done.snapshot);
    Ok((table, filters))
}

/// Runs `tasks` as tokio tasks, in parallel on a multi-threaded runtime,
/// and returns their results in order. A task that panicked fails the
/// whole (the flush is retried).
async fn run_tasks<T: Send + 'static>(
    tasks: impl IntoIterator<Item = impl std::future::Future<Output = T> + Send + 'static>,
) -> Result<Vec<T>, DeltaTableError> {
    futures::future::try_join_all(tasks.into_iter().map(tokio::spawn))
        .await
        .map_err(|e| DeltaTableError::Generic(format!("flush task failed: {e}")))
}

/// Dates are cut into shares for the writers only above this many rows: a
/// small flush gains nothing from parallel encoding, and more files cost
/// every query until compaction.
const MIN_SHARE_ROWS: usize = 65_536;

/// `batches` cut into pieces of `share` rows (the last one smaller),
/// slicing batches where a cut falls inside one (no copy). Batches that
/// hold at most `share` rows together stay one piece.
fn shares(batches: Vec<RecordBatch>, share: usize) -> Vec<Vec<RecordBatch>> {
    let share = share.max(1);
    let mut pieces = Vec::new();
    let mut piece: Vec<RecordBatch> = Vec::new();
    let mut room = share;
    for batch in batches {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let n = (batch.num_rows() - offset).min(room);
            piece.push(if n == batch.num_rows() {
                batch.clone()
            } else {
                batch.slice(offset, n)
            });
            offset += n;
            room -= n;
            if room == 0 {
                pieces.push(std::mem::take(&mut piece));
                room = share;
            }
        }
    }
    if !piece.is_empty() {
        pieces.push(piece);
    }
    pieces
}

/// How many writer tasks a flush runs in parallel: the cores, at most 4.
/// Looked up once: on Linux the lookup reads the cgroup's CPU quota files.
pub fn flush_parallelism() -> usize {
    static PARALLELISM: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PARALLELISM.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(4)))
}

#[cfg(test)]
mod tests;
