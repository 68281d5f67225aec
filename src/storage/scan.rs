//! A Delta table version read through DataFusion's own Parquet scan.
//!
//! deltalake's table provider replays the snapshot's file list on every
//! query, adds a file-id column to every batch and wraps the Parquet scan
//! in an operator of its own, which hides the scan from DataFusion's sort
//! pushdown. For the tables AllSource writes (no deletion vectors, no
//! column mapping, relative paths) none of that is needed: the active files
//! with their partition values and statistics are turned into DataFusion's
//! `PartitionedFile`s once per table version ([`DeltaFiles::try_new`]), and
//! each query only builds a `DataSourceExec` over them. Snapshots that use
//! a reader feature this scan does not implement keep deltalake's provider
//! (`try_new` returns `None`). ARCHITECTURE.md ("Read path") has the
//! measurements.
//!
//! Columns have their query types ([`crate::schema::query_type`]), the
//! types the buffer's batches are adapted to, so the query layer can union
//! this scan with the buffer.

use super::entity_filter::{EntityFilter, EntityFilters};
use super::readers::{LocalReaders, PageIndexReaders};
use crate::schema::query_type;
use arrow::array::{Array, ArrayRef};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::{ColumnStatistics, DFSchema, Statistics};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::ParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{
    FileGroup, FileScanConfigBuilder, ParquetSource, parquet::CachedParquetFileReaderFactory,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_optimizer::pruning::{PruningPredicateBuilder, PruningStatistics};
use datafusion::physical_plan::{ExecutionPlan, Partitioning};
use datafusion::scalar::ScalarValue;
use deltalake::DeltaTable;
use object_store::ObjectStore;
use object_store::path::Path;
use std::sync::Arc;

mod reaching;
mod wire;
pub use wire::FilesWire;

/// The files of one Delta table version, ready to scan.
#[derive(Debug)]
pub struct DeltaFiles {
    /// The file columns in their query types, then the partition columns.
    schema: SchemaRef,
    table_schema: TableSchema,
    /// Newest partition first, so a scan that stops early reads recent data.
    files: Vec<PartitionedFile>,
    /// The entity filter of each file in `files` that has one (empty: none
    /// has).
    entity_filters: Vec<Option<Arc<EntityFilter>>>,
    statistics: Statistics,
    store_url: ObjectStoreUrl,
    store: Arc<dyn ObjectStore>,
    /// The table's directory in the store.
    base: Path,
}

impl DeltaFiles {
    /// The first of the scan's files that is no longer in the store (old
    /// versions lose their files to vacuum), if any.
    pub async fn first_missing_file(&self) -> Result<Option<String>> {
        for file in &self.files {
            match object_store::ObjectStoreExt::head(
                self.store.as_ref(),
                &file.object_meta.location,
            )
            .await
            {
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => {
                    return Ok(Some(file.object_meta.location.to_string()));
                }
                Err(e) => return Err(DataFusionError::External(Box::new(e))),
            }
        }
        Ok(None)
    }

    /// The scan for `delta`'s current version, or `None` when the snapshot
    /// needs something only deltalake's own provider reads correctly.
    pub fn try_new(delta: &DeltaTable) -> Result<Option<Self>> {
        let delta_err = |e: deltalake::DeltaTableError| DataFusionError::External(Box::new(e));
        let snapshot = delta.snapshot().map_err(delta_err)?;
        let protocol = snapshot.protocol();
        // Reader version 1 has no deletion vectors and no column mapping.
        if protocol.min_reader_version() != 1 {
            return Ok(None);
        }
        let log_store = delta.log_store();
        let root = log_store.root_url().clone();
        // `Path` drops the directory URL's trailing slash.
        let base =
            Path::from_url_path(root.path()).map_err(|e| DataFusionError::External(Box::new(e)))?;
        let store_url = ObjectStoreUrl::parse(&root[..url::Position::BeforePath])?;

        let logical = snapshot.snapshot().arrow_schema();
        let partition_names = snapshot.metadata().partition_columns().to_vec();
        let mut file_fields = Vec::new();
        let mut partition_fields: Vec<FieldRef> = Vec::new();
        for name in partition_names.iter() {
            let field = logical.field_with_name(name)?;
            partition_fields.push(Arc::new(Field::new(
                name,
                query_type(field.data_type()),
                field.is_nullable(),
            )));
        }
        for field in logical.fields() {
            if !partition_names.contains(field.name()) {
                file_fields.push(Field::new(
                    field.name(),
                    query_type(field.data_type()),
                    field.is_nullable(),
                ));
            }
        }
        let file_schema = Arc::new(Schema::new(file_fields));
        let table_schema = TableSchema::builder(file_schema.clone())
            .with_table_partition_cols(partition_fields.clone())
            .build();
        let schema = table_schema.table_schema().clone();

        let log = snapshot.log_data();
        // File-level bounds, one entry per file, for the timestamp columns
        // and `position` only: Delta writes timestamps at millisecond
        // precision (so a maximum is rounded up here), and they are what
        // time-range filters and `ORDER BY timestamp` prune and order files
        // by; positions skip the files an entity copy already holds. Other
        // columns are left to the row-group statistics in each file's
        // footer.
        let bounds: Vec<Option<(ArrayRef, ArrayRef)>> = file_schema
            .fields()
            .iter()
            .map(|field| {
                let kept = match field.data_type() {
                    DataType::Timestamp(TimeUnit::Microsecond, _) => true,
                    DataType::Int64 => field.name() == crate::schema::POSITION,
                    _ => false,
                };
                if !kept {
                    return None;
                }
                let column = datafusion::common::Column::from_name(field.name());
                let min = cast(&log.min_values(&column)?, field.data_type()).ok()?;
                let max = cast(&log.max_values(&column)?, field.data_type()).ok()?;
                Some((min, max))
            })
            .collect();

        let mut files = Vec::with_capacity(log.num_files());
        for (i, file) in log.iter().enumerate() {
            let path = file.path();
            if path.contains("://") {
                // An absolute URL (a shallow clone): not a layout we write.
                return Ok(None);
            }
            let location = file_location(&base, path.as_ref())?;
            let values = file.partition_values_map();
            let partition_values = partition_fields
                .iter()
                .map(|field| match values.get(field.name()).cloned().flatten() {
                    Some(v) => ScalarValue::try_from_string(v, field.data_type()),
                    None => ScalarValue::try_from(field.data_type()),
                })
                .collect::<Result<Vec<_>>>()?;
            let column_statistics = bounds
                .iter()
                .map(|b| match b {
                    Some((min, max)) => file_bounds(min, max, i),
                    None => ColumnStatistics::new_unknown(),
                })
                .collect();
            let statistics = Statistics {
                num_rows: file
                    .num_records()
                    .map_or(Precision::Absent, Precision::Exact),
                total_byte_size: Precision::Inexact(file.size().max(0) as usize),
                column_statistics,
            };
            // Partition values first: `with_statistics` appends their
            // (exact) statistics to the file's.
            files.push(
                PartitionedFile::new_from_meta(object_store::ObjectMeta {
                    location,
                    last_modified: file.modification_datetime().map_err(delta_err)?,
                    size: file.size().max(0) as u64,
                    e_tag: None,
                    version: None,
                })
                .with_partition_values(partition_values)
                .with_statistics(Arc::new(statistics)),
            );
        }
        files.sort_by(|a, b| {
            b.partition_values
                .partial_cmp(&a.partition_values)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let statistics = merged_statistics(&files, &schema)?;
        Ok(Some(DeltaFiles {
            schema,
            table_schema,
            files,
            entity_filters: Vec::new(),
            statistics,
            store_url,
            store: log_store.root_object_store(None),
            base,
        }))
    }

    /// The same scan, its files pruned by `filters` too when a query asks
    /// for given entities; and those of `filters` that belong to one of
    /// its files.
    pub fn with_entity_filters(mut self, filters: &EntityFilters) -> Result<(Self, EntityFilters)> {
        if filters.is_empty() {
            return Ok((self, EntityFilters::default()));
        }
        let mut by_location = std::collections::HashMap::new();
        for (path, filter) in filters.iter() {
            by_location.insert(file_location(&self.base, path)?, (path, filter));
        }
        let mut kept = Vec::new();
        self.entity_filters = self
            .files
            .iter()
            .map(|f| {
                let (path, filter) = by_location.get(&f.object_meta.location)?;
                kept.push(((*path).clone(), (*filter).clone()));
                Some((*filter).clone())
            })
            .collect();
        Ok((self, kept.into_iter().collect()))
    }

    /// The same scan over only the files at `paths` (relative to the
    /// table, as the Delta log names them). Fails if one of them is not
    /// among the scan's files.
    pub fn only(&self, paths: &[String]) -> Result<Self> {
        let wanted = paths
            .iter()
            .map(|p| file_location(&self.base, p))
            .collect::<Result<std::collections::HashSet<_>>>()?;
        let files: Vec<PartitionedFile> = self
            .files
            .iter()
            .filter(|f| wanted.contains(&f.object_meta.location))
            .cloned()
            .collect();
        if files.len() != wanted.len() {
            return Err(DataFusionError::Plan(format!(
                "{} of the {} files asked for are not in the table's version",
                wanted.len() - files.len(),
                wanted.len()
            )));
        }
        let entity_filters = match self.entity_filters.is_empty() {
            true => Vec::new(),
            false => self
                .files
                .iter()
                .zip(&self.entity_filters)
                .filter(|(f, _)| wanted.contains(&f.object_meta.location))
                .map(|(_, filter)| filter.clone())
                .collect(),
        };
        Ok(DeltaFiles {
            statistics: merged_statistics(&files, &self.schema)?,
            files,
            entity_filters,
            schema: self.schema.clone(),
            table_schema: self.table_schema.clone(),
            store_url: self.store_url.clone(),
            store: self.store.clone(),
            base: self.base.clone(),
        })
    }
}

/// The store location of a data file the Delta log names by `path`, a
/// path relative to the table's directory `base`.
fn file_location(base: &Path, path: &str) -> Result<Path> {
    Ok(Path::from_iter(
        base.parts().chain(
            Path::parse(path)
                .map_err(|e| DataFusionError::External(Box::new(e)))?
                .parts(),
        ),
    ))
}

impl DeltaFiles {
    /// The files `filters` may match, judged by their partition values and
    /// timestamp bounds. DataFusion's own file pruning only trusts exact
    /// statistics, and Delta's timestamp bounds are rounded to the
    /// millisecond; they cannot be marked exact either, or `min()`/`max()`
    /// would be answered from them.
    fn files_for(&self, state: &dyn Session, filters: &[Expr]) -> Result<Vec<PartitionedFile>> {
        let Some(predicate) = conjunction(filters.iter().cloned()) else {
            return Ok(self.files.clone());
        };
        let df_schema = DFSchema::try_from(self.schema.as_ref().clone())?;
        let predicate = state.create_physical_expr(predicate, &df_schema)?;
        let keep = match PruningPredicateBuilder::new()
            .with_file_schema(self.schema.clone())
            .try_build(predicate)
            .and_then(|p| p.prune(&FileBounds(self)))
        {
            Ok(keep) => keep,
            Err(e) => {
                // Pruning is an optimization: read every file instead.
                tracing::debug!(error = %e, "file pruning skipped");
                return Ok(self.files.clone());
            }
        };
        Ok(self
            .files
            .iter()
            .zip(keep)
            .filter(|(_, keep)| *keep)
            .map(|(f, _)| f.clone())
            .collect())
    }
}

/// The files' bounds, exact or not, as pruning statistics.
struct FileBounds<'a>(&'a DeltaFiles);

impl FileBounds<'_> {
    fn collect(
        &self,
        column: &datafusion::common::Column,
        pick: impl Fn(&ColumnStatistics) -> &Precision<ScalarValue>,
    ) -> Option<ArrayRef> {
        let index = self.0.schema.index_of(column.name()).ok()?;
        let null = ScalarValue::try_from(self.0.schema.field(index).data_type()).ok()?;
        let mut known = false;
        let values = self.0.files.iter().map(|f| {
            f.statistics
                .as_ref()
                .and_then(|s| s.column_statistics.get(index))
                .and_then(|c| pick(c).get_value().cloned())
                .inspect(|_| known = true)
                .unwrap_or_else(|| null.clone())
        });
        let array = ScalarValue::iter_to_array(values).ok()?;
        known.then_some(array)
    }
}

impl PruningStatistics for FileBounds<'_> {
    fn min_values(&self, column: &datafusion::common::Column) -> Option<ArrayRef> {
        self.collect(column, |c| &c.min_value)
    }

    fn max_values(&self, column: &datafusion::common::Column) -> Option<ArrayRef> {
        self.collect(column, |c| &c.max_value)
    }

    fn num_containers(&self) -> usize {
        self.0.files.len()
    }

    fn null_counts(&self, _column: &datafusion::common::Column) -> Option<ArrayRef> {
        None
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        None
    }

    /// False for a file whose entity filter rules out every entity of
    /// `values` (never true: a filter cannot say a file holds only them).
    fn contained(
        &self,
        column: &datafusion::common::Column,
        values: &std::collections::HashSet<ScalarValue>,
    ) -> Option<arrow::array::BooleanArray> {
        let filters = &self.0.entity_filters;
        if column.name() != crate::schema::ENTITY_ID || filters.is_empty() {
            return None;
        }
        let mut entities = Vec::with_capacity(values.len());
        for value in values {
            entities.push(value.try_as_str().flatten()?);
        }
        Some(
            filters
                .iter()
                .map(|filter| match filter {
                    Some(f) if !entities.iter().any(|e| f.may_hold(e)) => Some(false),
                    _ => None,
                })
                .collect(),
        )
    }
}

/// The statistics of a set of files taken together: rows and bytes, but
/// no column bounds. Each file keeps its own bounds, which this scan's file
/// pruning and DataFusion's ordering of files by statistics read; bounds
/// for the whole scan would only feed DataFusion's filter selectivity
/// estimate, whose interval analysis over two timestamp columns can come
/// out a rounding error above 1, which fails the plan as an internal error.
fn merged_statistics(files: &[PartitionedFile], schema: &Schema) -> Result<Statistics> {
    if files.is_empty() {
        return Ok(Statistics::new_unknown(schema));
    }
    let mut merged =
        Statistics::try_merge_iter(files.iter().filter_map(|f| f.statistics.as_deref()), schema)?;
    for column in &mut merged.column_statistics {
        column.min_value = Precision::Absent;
        column.max_value = Precision::Absent;
    }
    Ok(merged)
}

/// One file's bounds of a timestamp column from the log's per-file arrays.
fn file_bounds(min: &ArrayRef, max: &ArrayRef, i: usize) -> ColumnStatistics {
    let bound = |a: &ArrayRef, round_up: bool| -> Precision<ScalarValue> {
        if i >= a.len() || a.is_null(i) {
            return Precision::Absent;
        }
        match ScalarValue::try_from_array(a, i) {
            Ok(ScalarValue::TimestampMicrosecond(Some(v), tz)) if round_up => Precision::Inexact(
                ScalarValue::TimestampMicrosecond(Some(v.saturating_add(999)), tz),
            ),
            Ok(v) => Precision::Inexact(v),
            Err(_) => Precision::Absent,
        }
    };
    ColumnStatistics {
        min_value: bound(min, false),
        max_value: bound(max, true),
        ..ColumnStatistics::new_unknown()
    }
}

#[async_trait]
impl TableProvider for DeltaFiles {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    fn statistics(&self) -> Option<Statistics> {
        Some(self.statistics.clone())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let files = self.files_for(state, filters)?;
        let statistics = if files.len() == self.files.len() {
            self.statistics.clone()
        } else {
            merged_statistics(&files, &self.schema)?
        };
        let runtime = state.runtime_env();
        if runtime.object_store(&self.store_url).is_err() {
            runtime.register_object_store(self.store_url.as_ref(), self.store.clone());
        }
        let readers = CachedParquetFileReaderFactory::new(
            self.store.clone(),
            runtime.cache_manager.get_file_metadata_cache(),
        );
        let mut readers: Arc<dyn ParquetFileReaderFactory> =
            Arc::new(PageIndexReaders(Arc::new(readers)));
        if self.store_url.as_str() == "file:///" {
            readers = Arc::new(LocalReaders { inner: readers });
        }
        // `filters` only choose the files, they are not set as the scan's
        // predicate: DataFusion's physical filter pushdown hands the
        // filters above this scan to it (also through the union with the
        // buffer), and a predicate set here as well would make every
        // file's row-group and page pruning run twice.
        let source = ParquetSource::new(self.table_schema.clone())
            .with_table_parquet_options(state.table_options().parquet.clone())
            .with_parquet_file_reader_factory(readers);
        let options = state.config().options();
        let groups = scan_groups(
            files,
            options.execution.target_partitions,
            options.optimizer.repartition_file_min_size as u64,
        );
        let config = FileScanConfigBuilder::new(self.store_url.clone(), Arc::new(source))
            // These groups are final: DataFusion's own repartitioning
            // would deal the files out again in contiguous runs.
            .with_output_partitioning(Some(Partitioning::UnknownPartitioning(groups.len())))
            .with_file_groups(groups)
            .with_statistics(statistics)
            .with_limit(limit)
            .with_projection_indices(projection.cloned())?
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

/// Deals `files` (newest partition first) into `n` scan partitions.
///
/// The newest partition's files are split by byte range across all `n`,
/// so a query that stops early on recent data (the latest events, a TopK
/// on time) starts on them in every partition at once, rather than one
/// partition reading the newest file while the others read older files
/// in full before the TopK has a threshold. Other files go whole to the
/// partition with the fewest bytes so far, keeping newest first within
/// each, and a file larger than an even share is split first. Files
/// under `min_split` bytes are never split.
fn scan_groups(files: Vec<PartitionedFile>, n: usize, min_split: u64) -> Vec<FileGroup> {
    if n <= 1 || files.is_empty() {
        return vec![FileGroup::new(files)];
    }
    let total: u64 = files.iter().map(|f| f.object_meta.size).sum();
    let share = total.div_ceil(n as u64).max(1);
    let newest = files[0].partition_values.clone();
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); n];
    for file in files {
        let size = file.object_meta.size;
        let pieces = if size < min_split.max(n as u64) {
            1
        } else if file.partition_values == newest {
            n as u64
        } else {
            size.div_ceil(share)
        };
        if pieces == 1 {
            let g = least_loaded(&mut groups);
            g.0 += size;
            g.1.push(file);
            continue;
        }
        let step = size.div_ceil(pieces);
        for (i, start) in (0..size).step_by(step as usize).enumerate() {
            let end = (start + step).min(size);
            let piece = file.clone().with_range(start as i64, end as i64);
            // A file cut into `n` pieces (always the newest) gives one to
            // each partition, in order.
            let g = if pieces == n as u64 {
                &mut groups[i % n]
            } else {
                least_loaded(&mut groups)
            };
            g.0 += end - start;
            g.1.push(piece);
        }
    }
    groups
        .into_iter()
        .filter(|(_, files)| !files.is_empty())
        .map(|(_, files)| FileGroup::new(files))
        .collect()
}

/// The group with the fewest bytes so far (the first of equals).
fn least_loaded(groups: &mut [(u64, Vec<PartitionedFile>)]) -> &mut (u64, Vec<PartitionedFile>) {
    groups
        .iter_mut()
        .min_by_key(|(bytes, _)| *bytes)
        .expect("scan_groups makes n > 1 groups")
}

#[cfg(test)]
mod tests;
