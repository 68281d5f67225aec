//! Keeping a table's entity copy (`storage::entities`): each maintenance
//! run of a table brings its copy up to the highest position the table's
//! flushes have stored.
//!
//! - **Extend.** The events stored since the copy's covered position are
//!   read from the table (the compaction session, so the sort spills
//!   within `--compaction-memory-limit`), given their bucket, sorted by
//!   bucket, `entity_id` and `position`, and written as one file per
//!   bucket; the files and the new covered position are one commit. The
//!   first run copies everything, rows stored before positions existed
//!   included.
//! - **Merge.** A bucket's small files are merged into sorted files by
//!   compaction's scheduled rule, once [`MERGE_AT`] of them qualify, so
//!   a lookup opens a few files at most and an event is rewritten a few
//!   times at most. Every file of the copy is sorted, so the merge
//!   streams them side by side in that order rather than sorting them
//!   again.
//! - **Columns.** Columns the table gained are added to the copy first
//!   (older files read them as NULL).
//! - **Rebuild.** A copy that covers more than the table has stored (the
//!   table was replaced beneath it) is replaced whole in one commit. One
//!   whose column types disagree with the table's (a table's column never
//!   changes type, so this is damage) is emptied, covering nothing, and
//!   queries read the table alone.
//! - **Retention.** Before the table's retention deletes events, the
//!   cutoff is recorded in the copy ([`Database::hide_in_entities`]) and
//!   queries stop reading the copy's events older than it.
//!
//! Only the sole writer of a root keeps copies: beside other writers,
//! positions do not order the whole table.

use super::merge;
use super::plan::{FileRef, choose};
use super::rewrite::entity_copy_properties;
use super::{Database, Result, Table, delta_error};
use crate::db::served::Served;
use crate::schema::{ENTITY_ID, POSITION, adapt_batch};
use crate::storage::entities::{
    BUCKET_COLUMN, COVERED_APP_ID, EntityCopy, HIDDEN_APP_ID, bucket_of,
};
use crate::storage::scan::DeltaFiles;
use arrow::array::{ArrayRef, AsArray, Int32Array};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, cast, create_udf};
use datafusion::prelude::{SessionContext, col, lit};
use delta_kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, StructField, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableError};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A bucket's small files are merged once it has this many.
pub(super) const MERGE_AT: usize = 4;

/// What the copy's columns are: the table's, with the date partition as
/// a plain column, then the bucket (the copy's partition).
fn copy_schema(table: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = table.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(BUCKET_COLUMN, DataType::Int32, false));
    Arc::new(Schema::new(fields))
}

/// `entity_bucket(entity_id)`: [`bucket_of`] as a function of the
/// compaction session.
fn bucket_udf() -> ScalarUDF {
    create_udf(
        "entity_bucket",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let entities = arrays[0].as_string::<i32>();
            let buckets: Int32Array = entities.iter().map(|e| e.map(bucket_of)).collect();
            Ok(ColumnarValue::Array(Arc::new(buckets) as ArrayRef))
        }),
    )
}

/// How the copy's columns stand against the table's.
enum Columns {
    Same,
    /// The table has these columns the copy lacks.
    Missing(Vec<StructField>),
    /// A column has another type in the copy: it must be rebuilt.
    Differ(String),
}

fn compare_columns(copy: &Schema, wanted: &Schema) -> Result<Columns, DeltaTableError> {
    let mut missing = Vec::new();
    for field in wanted.fields() {
        match copy.field_with_name(field.name()) {
            Ok(have) if have.data_type() == field.data_type() => {}
            Ok(have) => {
                return Ok(Columns::Differ(format!(
                    "column {} is {} in the copy and {} in the table",
                    field.name(),
                    have.data_type(),
                    field.data_type()
                )));
            }
            Err(_) => missing.push(
                (&field.as_ref().clone().with_nullable(true))
                    .try_into_kernel()
                    .map_err(|e| DeltaTableError::Generic(e.to_string()))?,
            ),
        }
    }
    Ok(match missing.is_empty() {
        true => Columns::Same,
        false => Columns::Missing(missing),
    })
}

impl Database {
    /// How many of `table`'s files (as queries read them) hold events its
    /// entity copy does not cover; 0 where no copy is kept.
    pub(crate) fn entity_files_behind(&self, table: &Table) -> usize {
        if !self.config.entity_copy || self.config.node_id.is_some() {
            return 0;
        }
        let s = table.state.read();
        let covered = s.entities.as_ref().map_or(0, |c| c.covered);
        s.provider
            .as_ref()
            .and_then(|p| p.downcast_ref::<DeltaFiles>())
            .map_or(0, |files| files.count_reaching_above(POSITION, covered))
    }

    /// Between maintenance runs: brings `table`'s entity copy up to what
    /// the table has stored, without compacting the table. Does nothing
    /// (and says so with `false`) while a maintenance run holds the table.
    pub(crate) async fn follow_entities(&self, table: &Arc<Table>) -> Result<bool> {
        let Ok(_one_at_a_time) = table.maintenance_lock.try_lock() else {
            return Ok(false);
        };
        let run = async {
            let delta = self.storage.refresh(table.delta(), &table.label()).await?;
            self.maintain_entities(table, &delta).await
        };
        match crate::background::caught("entity copy", run).await {
            Ok(result) => result.map(|()| true),
            Err(panic) => Err(super::super::Error::Internal(format!(
                "the entity copy's run panicked: {panic}"
            ))),
        }
    }

    /// Brings `table`'s entity copy up to `delta` (the snapshot this run
    /// starts from, before its compaction) and makes queries read it.
    pub(super) async fn maintain_entities(
        &self,
        table: &Arc<Table>,
        delta: &DeltaTable,
    ) -> Result<()> {
        if !self.config.entity_copy || self.config.node_id.is_some() || delta.version().is_none() {
            return Ok(());
        }
        let label = format!("{} (entity copy)", table.label());
        let delta_err = |e| delta_error(&label, e);
        let Some(source) = DeltaFiles::try_new(delta)? else {
            return Ok(());
        };
        let table_schema = schema_of(delta).map_err(delta_err)?;
        if table_schema.column_with_name(POSITION).is_none() {
            return Ok(());
        }
        let upto = self
            .storage
            .persisted_position(delta, &table.label())
            .await?;
        if upto == 0 {
            return Ok(());
        }
        let target = self.config.compaction_target_bytes.max(1 << 20);
        let wanted = copy_schema(&table_schema);
        let mut copy = self
            .storage
            .open_entities(&table.tenant, &table.name)
            .await?;
        let (covered, hidden) = self.storage.entities_marks(&copy, &label).await?;
        // A copy ahead of its table is replaced whole, from the start.
        let rebuild = covered > upto;
        if copy.version().is_none() {
            let fields = wanted
                .fields()
                .iter()
                .map(|f| f.as_ref().try_into_kernel())
                .collect::<Result<Vec<StructField>, _>>()
                .map_err(|e| delta_err(DeltaTableError::Generic(e.to_string())))?;
            copy = copy
                .create()
                .with_columns(fields)
                .with_partition_columns([BUCKET_COLUMN])
                .with_save_mode(SaveMode::Ignore)
                .await
                .map_err(delta_err)?;
            self.storage.make_durable(&copy).await?;
        } else {
            let have = schema_of(&copy).map_err(delta_err)?;
            match compare_columns(&have, &wanted).map_err(delta_err)? {
                Columns::Same => {}
                Columns::Missing(fields) => {
                    copy = copy
                        .add_columns()
                        .with_fields(fields)
                        .await
                        .map_err(delta_err)?;
                    self.storage.make_durable(&copy).await?;
                }
                Columns::Differ(why) => {
                    tracing::warn!(table = %label, %why, "the entity copy is dropped");
                    table.install_entities(None);
                    copy = commit(&copy, Vec::new(), true, 0)
                        .await
                        .map_err(delta_err)?;
                    self.storage.make_durable(&copy).await?;
                    return Ok(());
                }
            }
        }
        // Queries move to each commit's files as soon as it is made, so the
        // files a commit replaced stop being handed out then, and vacuum
        // can delete them one retention later, not one after the run.
        let install = |copy: &DeltaTable| -> Result<()> {
            let files = DeltaFiles::try_new(copy)?;
            let entities = files.map(|files| EntityCopy {
                files: Arc::new(files),
                covered: upto,
                hidden_before: hidden,
            });
            table.install_entities(entities.map(|e| (e, copy)));
            Ok(())
        };
        let from = if rebuild { 0 } else { covered };
        if from < upto {
            let copy_arrow = schema_of(&copy).map_err(delta_err)?;
            let added = self
                .copy_range(source, &copy, &copy_arrow, from, upto, target)
                .await
                .map_err(delta_err)?;
            copy = commit(&copy, added, rebuild, upto)
                .await
                .map_err(delta_err)?;
            self.storage.make_durable(&copy).await?;
        }
        install(&copy)?;
        copy = self.merge_buckets(copy, target, &label, &install).await?;
        self.vacuum(copy, &label, table.served.in_use(Served::EntityCopy))
            .await?;
        Ok(())
    }

    /// The table's events after position `after` up to `upto` (all of
    /// them, rows without a position included, when `after` is 0), sorted
    /// by bucket, entity and position, written as the copy's files. Only
    /// the files that may hold such positions are read.
    async fn copy_range(
        &self,
        source: DeltaFiles,
        copy: &DeltaTable,
        schema: &SchemaRef,
        after: u64,
        upto: u64,
        target: u64,
    ) -> Result<Vec<deltalake::kernel::Add>, DeltaTableError> {
        // The files are taken in groups of about the target size, each
        // sorted on its own, so no sort holds or spills more than a merge
        // does, however far the copy is behind; the copy's new files are
        // all committed together.
        let candidates = source.files_reaching_above(POSITION, after);
        let mut groups: Vec<Vec<String>> = Vec::new();
        let mut group_bytes = u64::MAX;
        for (path, size) in candidates {
            if group_bytes.saturating_add(size) > target {
                groups.push(Vec::new());
                group_bytes = 0;
            }
            group_bytes += size;
            groups.last_mut().expect("a group was started").push(path);
        }
        let mut added = Vec::new();
        for paths in groups {
            let scan = source.only(&paths).map_err(scan_error)?;
            added.extend(
                self.copy_files(scan, copy, schema, after, upto, target)
                    .await?,
            );
        }
        Ok(added)
    }

    /// [`Database::copy_range`] over the files of `source`.
    async fn copy_files(
        &self,
        source: DeltaFiles,
        copy: &DeltaTable,
        schema: &SchemaRef,
        after: u64,
        upto: u64,
        target: u64,
    ) -> Result<Vec<deltalake::kernel::Add>, DeltaTableError> {
        let ctx = SessionContext::new_with_state(self.rewriter.state());
        let bucket = bucket_udf();
        let position = col(POSITION);
        let upto = lit(upto.min(i64::MAX as u64) as i64);
        let range = match after {
            0 => position.clone().is_null().or(position.lt_eq(upto)),
            _ => position
                .clone()
                .gt(lit(after.min(i64::MAX as u64) as i64))
                .and(position.lt_eq(upto)),
        };
        let mut batches = ctx
            .read_table(Arc::new(source))
            .and_then(|f| f.filter(range))
            .and_then(|f| {
                f.with_column(
                    BUCKET_COLUMN,
                    bucket.call(vec![cast(col(ENTITY_ID), DataType::Utf8)]),
                )
            })
            .and_then(|f| {
                f.sort(vec![
                    col(BUCKET_COLUMN).sort(true, true),
                    col(ENTITY_ID).sort(true, true),
                    col(POSITION).sort(true, true),
                ])
            })
            .map_err(scan_error)?
            .execute_stream()
            .await
            .map_err(scan_error)?;
        // The rows come bucket after bucket: one bucket's writer is open
        // at a time, so only one file's row group is held in memory.
        let mut added = Vec::new();
        let mut open: Option<(i32, deltalake::datafile::writer::DeltaWriter)> = None;
        while let Some(batch) = batches.next().await {
            let batch = adapt_batch(&batch.map_err(scan_error)?, schema)?;
            let buckets = batch
                .column_by_name(BUCKET_COLUMN)
                .and_then(|c| c.as_primitive_opt::<Int32Type>())
                .ok_or_else(|| DeltaTableError::Generic("no bucket column".into()))?
                .clone();
            let mut start = 0;
            while start < batch.num_rows() {
                let bucket = buckets.value(start);
                let end = (start..batch.num_rows())
                    .find(|&i| buckets.value(i) != bucket)
                    .unwrap_or(batch.num_rows());
                if open.as_ref().map(|(b, _)| *b) != Some(bucket) {
                    if let Some((_, writer)) = open.take() {
                        added.extend(writer.close().await?);
                    }
                    let writer = merge::writer_for(
                        copy,
                        schema.clone(),
                        vec![BUCKET_COLUMN.to_string()],
                        entity_copy_properties(),
                        target,
                    )?;
                    open = Some((bucket, writer));
                }
                if let Some((_, writer)) = open.as_mut() {
                    writer.write(&batch.slice(start, end - start)).await?;
                }
                start = end;
            }
        }
        if let Some((_, writer)) = open {
            added.extend(writer.close().await?);
        }
        Ok(added)
    }

    /// Merges, in each bucket, the small files compaction's scheduled
    /// rule would pick (`plan::choose`: from the largest whose smaller
    /// files together are at least its size), once there are [`MERGE_AT`]
    /// of them: sorted, one commit per bucket, and has queries read each
    /// commit's files (`install`) once it is made. As the copy follows
    /// the flushes, each merge at least doubles the largest file it
    /// rewrites, so an event is rewritten a few times at most.
    async fn merge_buckets(
        &self,
        mut copy: DeltaTable,
        target: u64,
        label: &str,
        install: &(dyn Fn(&DeltaTable) -> Result<()> + Sync),
    ) -> Result<DeltaTable> {
        let delta_err = |e| delta_error(label, e);
        let mut buckets: BTreeMap<String, Vec<FileRef>> = BTreeMap::new();
        for file in copy.snapshot().map_err(delta_err)?.log_data().iter() {
            let bucket = file
                .partition_values_map()
                .get(BUCKET_COLUMN)
                .cloned()
                .flatten()
                .unwrap_or_default();
            buckets.entry(bucket).or_default().push(FileRef {
                path: file.path().to_string(),
                size: file.size().max(0) as u64,
            });
        }
        let small: Vec<Vec<FileRef>> = buckets
            .into_values()
            .map(|files| choose(files, target, false))
            .collect();
        let due: Vec<&Vec<FileRef>> = small.iter().filter(|f| f.len() >= MERGE_AT).collect();
        if due.is_empty() {
            return Ok(copy);
        }
        let Some(scan) = DeltaFiles::try_new(&copy)? else {
            return Ok(copy);
        };
        for files in due {
            let (merged, _) = merge::merge(
                &self.rewriter,
                &scan,
                &copy,
                files,
                target,
                merge::Order::Interleave,
                entity_copy_properties(),
            )
            .await
            .map_err(|f| delta_err(f.into_error()))?;
            self.storage.make_durable(&merged).await?;
            install(&merged)?;
            copy = merged;
        }
        Ok(copy)
    }

    /// Before the table's retention deletes events older than `cutoff`
    /// (micros): records the cutoff in its entity copy, durably, and
    /// makes queries stop reading the copy's events older than it, so the
    /// copy never shows an event the table no longer has. Done with
    /// `--entity-copy false` too: a copy left from before stays right for
    /// when it is turned on again.
    pub(super) async fn hide_in_entities(&self, table: &Arc<Table>, cutoff: i64) -> Result<()> {
        if self.config.node_id.is_some() {
            return Ok(());
        }
        let label = format!("{} (entity copy)", table.label());
        let copy = self
            .storage
            .open_entities(&table.tenant, &table.name)
            .await?;
        if copy.version().is_none() {
            return Ok(());
        }
        let (_, hidden) = self.storage.entities_marks(&copy, &label).await?;
        if cutoff <= hidden {
            return Ok(());
        }
        table.hide_in_entities(cutoff);
        let snapshot = copy.snapshot().map_err(|e| delta_error(&label, e))?;
        let done = CommitBuilder::default()
            .with_actions(vec![Action::Txn(Transaction::new(HIDDEN_APP_ID, cutoff))])
            .build(Some(snapshot), copy.log_store(), append_operation())
            .await
            .map_err(|e| delta_error(&label, e))?;
        let mut copy = copy;
        copy.state = Some(done.snapshot);
        self.storage.make_durable(&copy).await?;
        Ok(())
    }
}

/// The arrow schema of a Delta table's current snapshot.
fn schema_of(table: &DeltaTable) -> Result<SchemaRef, DeltaTableError> {
    Ok(table.snapshot()?.snapshot().arrow_schema())
}

fn scan_error(e: datafusion::error::DataFusionError) -> DeltaTableError {
    DeltaTableError::Generic(format!("the entity copy's scan failed: {e}"))
}

fn append_operation() -> DeltaOperation {
    DeltaOperation::Write {
        mode: SaveMode::Append,
        partition_by: Some(vec![BUCKET_COLUMN.to_string()]),
        predicate: None,
    }
}

/// Commits `added` to `copy` with `covered` as its covered position, after
/// removing every file it had when `replace`.
async fn commit(
    copy: &DeltaTable,
    added: Vec<deltalake::kernel::Add>,
    replace: bool,
    covered: u64,
) -> Result<DeltaTable, DeltaTableError> {
    let snapshot = copy.snapshot()?;
    let mut actions: Vec<Action> = added.into_iter().map(Action::Add).collect();
    if replace {
        for file in snapshot.log_data().iter() {
            actions.push(Action::Remove(file.remove_action(true)));
        }
    }
    actions.push(Action::Txn(Transaction::new(
        COVERED_APP_ID,
        covered.min(i64::MAX as u64) as i64,
    )));
    let done = CommitBuilder::default()
        .with_actions(actions)
        .build(Some(snapshot), copy.log_store(), append_operation())
        .await?;
    let mut copy = copy.clone();
    copy.state = Some(done.snapshot);
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_takes_new_columns_and_refuses_changed_types() {
        let copy = Schema::new(vec![
            Field::new("a", DataType::Utf8, false),
            Field::new(BUCKET_COLUMN, DataType::Int32, false),
        ]);
        let same = copy_schema(&Schema::new(vec![Field::new("a", DataType::Utf8, false)]));
        assert!(matches!(
            compare_columns(&copy, &same).unwrap(),
            Columns::Same
        ));
        let wider = copy_schema(&Schema::new(vec![
            Field::new("a", DataType::Utf8, false),
            Field::new("b", DataType::Float64, false),
        ]));
        match compare_columns(&copy, &wider).unwrap() {
            Columns::Missing(f) => {
                assert_eq!(f.len(), 1);
                assert_eq!(f[0].name(), "b");
                assert!(f[0].is_nullable());
            }
            _ => panic!("b is missing"),
        }
        let retyped = copy_schema(&Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        assert!(matches!(
            compare_columns(&copy, &retyped).unwrap(),
            Columns::Differ(_)
        ));
    }

    #[tokio::test]
    async fn the_bucket_function_matches_bucket_of() {
        let ctx = SessionContext::new();
        ctx.register_udf(bucket_udf());
        let batches = ctx
            .sql("SELECT entity_bucket(x) AS b FROM (VALUES ('u1'), (NULL), ('u4242')) AS t(x)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let out = batches[0]
            .column(0)
            .as_primitive::<arrow::datatypes::Int32Type>();
        assert_eq!(out.value(0), bucket_of("u1"));
        assert!(arrow::array::Array::is_null(out, 1));
        assert_eq!(out.value(2), bucket_of("u4242"));
    }
}
