//! One merge: the files a plan chose in one partition, read through the
//! table's own scan ([`DeltaFiles`]), sorted by `entity_id` then
//! `position` in the [`Rewriter`]'s session (so the sort spills within
//! `--compaction-memory-limit`), written as files of at most the target
//! size, and swapped for the originals in one Delta commit that changes
//! no data (an `OPTIMIZE` commit: its adds and removes carry
//! `dataChange: false`, so a concurrent flush's append does not conflict
//! with it).
//!
//! An unsorted merge of local files copies their encoded row groups
//! instead ([`super::concat`]) when it can, and files that are each
//! sorted already are merged by streaming them side by side
//! ([`Order::Interleave`]), which needs no sort.
//!
//! The caller builds the scan once per run; a table the scan cannot read
//! (reader features AllSource never writes) is bin-packed with deltalake's
//! own `optimize` instead.

use super::plan::FileRef;
use super::rewrite::Rewriter;
use crate::schema::{ENTITY_ID, POSITION, adapt_batch};
use crate::storage::scan::DeltaFiles;
use arrow::compute::SortOptions;
use datafusion::physical_expr::expressions::col as physical_col;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::{SessionContext, col};
use deltalake::datafile::writer::{DeltaWriter, WriterConfig};
use deltalake::kernel::Action;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::operations::write::WriterStatsConfig;
use deltalake::protocol::DeltaOperation;
use deltalake::{DeltaTable, DeltaTableError};
use futures::StreamExt;
use parquet::file::properties::WriterProperties;
use std::num::NonZeroU64;
use std::sync::Arc;

/// What a merge wrote.
#[derive(Debug, Default)]
pub(super) struct Merged {
    pub(super) files_added: u64,
    pub(super) bytes_added: u64,
    pub(super) files_removed: u64,
}

/// Why a merge failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// Reading, sorting or writing the new files failed before the
    /// commit: the partition is as it was.
    Write(DeltaTableError),
    /// The commit failed. It may still have landed (a failure after the
    /// log entry was written), so the files chosen may be gone.
    Commit(DeltaTableError),
}

impl Failure {
    /// The error, whether the commit or what came before it failed.
    pub(super) fn into_error(self) -> DeltaTableError {
        match self {
            Failure::Write(e) | Failure::Commit(e) => e,
        }
    }
}

fn df_error(e: datafusion::error::DataFusionError) -> DeltaTableError {
    DeltaTableError::Generic(format!("compaction's scan failed: {e}"))
}

/// The order of the rows a merge writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Order {
    /// As the files are read: their row groups are copied when the files
    /// allow it.
    AsRead,
    /// Sorted by `entity_id`, then `position`, spilling within the
    /// compaction memory.
    Sort,
    /// Each file is sorted by `entity_id`, then `position` already: they
    /// are streamed side by side and merged in that order, holding a
    /// batch of each and never spilling.
    Interleave,
}

/// Merges `files` of `delta` into new files of at most `target` bytes,
/// in `order`, in one commit. `scan` reads the files: a scan of `delta`
/// or of an earlier version that holds them. New files are written with
/// `properties`.
pub(super) async fn merge(
    rewriter: &Rewriter,
    scan: &DeltaFiles,
    delta: &DeltaTable,
    files: &[FileRef],
    target: u64,
    order: Order,
    properties: WriterProperties,
) -> Result<(DeltaTable, Merged), Failure> {
    let copied = match order {
        Order::AsRead => super::concat::copy(delta, files, target)
            .await
            .map_err(Failure::Write)?,
        Order::Sort | Order::Interleave => None,
    };
    let added = match copied {
        Some(added) => added,
        None => write(rewriter, scan, delta, files, target, order, properties)
            .await
            .map_err(Failure::Write)?,
    };
    commit(delta, files, added, target)
        .await
        .map_err(Failure::Commit)
}

/// The new files of a merge, written but not yet in the table.
async fn write(
    rewriter: &Rewriter,
    scan: &DeltaFiles,
    delta: &DeltaTable,
    files: &[FileRef],
    target: u64,
    order: Order,
    properties: WriterProperties,
) -> Result<Vec<deltalake::kernel::Add>, DeltaTableError> {
    let paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
    let ctx = SessionContext::new_with_state(rewriter.state());
    let mut batches = match order {
        Order::Interleave => interleave(&ctx, scan, &paths).await?,
        Order::AsRead | Order::Sort => {
            let scan = scan.only(&paths).map_err(df_error)?;
            let mut frame = ctx.read_table(Arc::new(scan)).map_err(df_error)?;
            if order == Order::Sort {
                let schema = frame.schema().clone();
                let keys = [ENTITY_ID, POSITION]
                    .into_iter()
                    .filter(|c| schema.has_column_with_unqualified_name(c))
                    .map(|c| col(c).sort(true, true))
                    .collect::<Vec<_>>();
                frame = frame.sort(keys).map_err(df_error)?;
            }
            frame.execute_stream().await.map_err(df_error)?
        }
    };

    let snapshot = delta.snapshot()?;
    let schema = snapshot.snapshot().arrow_schema();
    let partitions = snapshot.metadata().partition_columns().to_vec();
    let mut writer = writer_for(delta, schema.clone(), partitions, properties, target)?;
    while let Some(batch) = batches.next().await {
        let batch = adapt_batch(&batch.map_err(df_error)?, &schema)?;
        writer.write(&batch).await?;
    }
    writer.close().await
}

/// The rows of the files at `paths`, each sorted by `entity_id` then
/// `position`, merged in that order: one scan per file (the session has
/// one target partition, so each reads its file in order) under a
/// sort-preserving merge.
async fn interleave(
    ctx: &SessionContext,
    scan: &DeltaFiles,
    paths: &[String],
) -> Result<datafusion::execution::SendableRecordBatchStream, DeltaTableError> {
    let mut inputs = Vec::with_capacity(paths.len());
    for path in paths {
        let one = scan.only(std::slice::from_ref(path)).map_err(df_error)?;
        let plan = ctx
            .read_table(Arc::new(one))
            .map_err(df_error)?
            .create_physical_plan()
            .await
            .map_err(df_error)?;
        inputs.push(plan);
    }
    let input = UnionExec::try_new(inputs).map_err(df_error)?;
    let schema = input.schema();
    let keys = [ENTITY_ID, POSITION]
        .into_iter()
        .filter_map(|c| physical_col(c, &schema).ok())
        .map(|c| PhysicalSortExpr::new(c, SortOptions::new(false, true)));
    let plan: Arc<dyn ExecutionPlan> = match LexOrdering::new(keys) {
        Some(ordering) => Arc::new(SortPreservingMergeExec::new(ordering, input)),
        None => input,
    };
    execute_stream(plan, ctx.task_ctx()).map_err(df_error)
}

/// A file writer for `delta`: files of `schema` (partition columns
/// included) split by `partitions`, of at most `target` bytes, with the
/// table's statistics settings.
pub(super) fn writer_for(
    delta: &DeltaTable,
    schema: arrow::datatypes::SchemaRef,
    partitions: Vec<String>,
    properties: WriterProperties,
    target: u64,
) -> Result<DeltaWriter, DeltaTableError> {
    let snapshot = delta.snapshot()?;
    let stats = WriterStatsConfig::from_config(snapshot.snapshot().table_configuration());
    let config = WriterConfig::new(
        schema,
        partitions,
        Some(properties),
        NonZeroU64::new(target),
        None,
        stats.num_indexed_cols,
        stats.stats_columns,
    );
    Ok(DeltaWriter::new(
        delta.log_store().object_store(None),
        config,
    ))
}

/// Swaps `files` for `added` in one commit of `delta`'s current version.
async fn commit(
    delta: &DeltaTable,
    files: &[FileRef],
    added: Vec<deltalake::kernel::Add>,
    target: u64,
) -> Result<(DeltaTable, Merged), DeltaTableError> {
    let snapshot = delta.snapshot()?;
    let mut merged = Merged::default();
    let mut actions = Vec::with_capacity(added.len() + files.len());
    for mut add in added {
        add.data_change = false;
        merged.files_added += 1;
        merged.bytes_added += add.size.max(0) as u64;
        actions.push(Action::Add(add));
    }
    let chosen: std::collections::HashSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    for file in snapshot.log_data().iter() {
        if chosen.contains(file.path().as_ref()) {
            merged.files_removed += 1;
            actions.push(Action::Remove(file.remove_action(false)));
        }
    }
    let operation = DeltaOperation::Optimize {
        predicate: None,
        target_size: target.min(i64::MAX as u64) as i64,
    };
    let done = CommitBuilder::default()
        .with_actions(actions)
        .build(Some(snapshot), delta.log_store(), operation)
        .await?;
    let mut table = delta.clone();
    table.state = Some(done.snapshot);
    Ok((table, merged))
}
