//! Concatenation by copying: an unsorted merge of local files whose
//! Parquet schemas match copies their encoded column chunks into new
//! files, row group by row group, with their statistics, bloom filters
//! and page indexes, instead of decoding and encoding every value. The
//! cost is that of reading and writing the bytes once, so compaction
//! keeps up with flushes that land files in many partitions at once.
//!
//! The row groups keep their sizes: a file made by copying has as many
//! row groups as its inputs together. The Delta statistics of each new
//! file (row count, minimum, maximum and null count per column) are
//! computed from the copied row groups' own statistics, in the format
//! deltalake writes.
//!
//! Files it cannot copy faithfully — on object storage, with differing
//! schemas or key-value metadata, or with a column type AllSource never
//! writes — are left to the decoding merge ([`copy`] returns `None`).

use super::plan::FileRef;
use chrono::DateTime;
use delta_kernel::table_properties::DataSkippingNumIndexedCols;
use deltalake::kernel::Add;
use deltalake::operations::write::WriterStatsConfig;
use deltalake::{DeltaTable, DeltaTableError};
use parquet::basic::{LogicalType, TimeUnit, Type as Physical};
use parquet::bloom_filter::Sbbf;
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use parquet::file::statistics::Statistics;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnDescriptor;
use serde_json::{Map, Value};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The most row groups the inputs of one copy may have together.
const MAX_COPIED_ROW_GROUPS: usize = 4096;

fn io_error(what: &str, path: &Path, e: impl std::fmt::Display) -> DeltaTableError {
    DeltaTableError::Generic(format!(
        "compaction could not {what} {}: {e}",
        path.display()
    ))
}

/// Copies `files` of `delta` into new files of about `target` bytes (a
/// new file is begun at an input boundary once the current one reaches
/// the target). `None` when the files cannot be copied; the new files'
/// add actions otherwise, not yet committed.
pub(super) async fn copy(
    delta: &DeltaTable,
    files: &[FileRef],
    target: u64,
) -> Result<Option<Vec<Add>>, DeltaTableError> {
    let Ok(root) = delta.table_url().to_file_path() else {
        return Ok(None);
    };
    // Paths in the log are URL-encoded; a plain one names its file as is.
    let plain = |p: &str| !p.contains(['%', '\\']) && !p.starts_with('/') && !p.contains("..");
    let Some(first) = files.first() else {
        return Ok(None);
    };
    if !files.iter().all(|f| plain(&f.path)) {
        return Ok(None);
    }
    let snapshot = delta.snapshot()?;
    let Some(partition_values) = snapshot
        .log_data()
        .iter()
        .find(|f| f.path().as_ref() == first.path)
        .map(|f| f.partition_values_map())
    else {
        return Err(DeltaTableError::Generic(format!(
            "compaction's file {} is not in the table's version",
            first.path
        )));
    };
    let stats = WriterStatsConfig::from_config(snapshot.snapshot().table_configuration());
    let dir = match first.path.rsplit_once('/') {
        Some((dir, _)) => dir.to_string(),
        None => String::new(),
    };
    let inputs: Vec<PathBuf> = files.iter().map(|f| root.join(&f.path)).collect();
    let written =
        tokio::task::spawn_blocking(move || copy_files(&inputs, &root, &dir, target, &stats))
            .await
            .map_err(|e| DeltaTableError::Generic(format!("compaction's copy failed: {e}")))??;
    let Some(written) = written else {
        return Ok(None);
    };
    let now = chrono::Utc::now().timestamp_millis();
    Ok(Some(
        written
            .into_iter()
            .map(|w| Add {
                path: w.path,
                size: w.size as i64,
                partition_values: partition_values.clone(),
                modification_time: now,
                data_change: false,
                stats: Some(w.stats),
                tags: None,
                deletion_vector: None,
                base_row_id: None,
                default_row_commit_version: None,
                clustering_provider: None,
            })
            .collect(),
    ))
}

/// One file the copy wrote: its path relative to the table, its size and
/// its Delta statistics as JSON.
struct Written {
    path: String,
    size: u64,
    stats: String,
}

/// An input file opened, with its footer and page indexes read.
struct Input {
    file: File,
    meta: ParquetMetaData,
}

fn copy_files(
    inputs: &[PathBuf],
    root: &Path,
    dir: &str,
    target: u64,
    stats: &WriterStatsConfig,
) -> Result<Option<Vec<Written>>, DeltaTableError> {
    let open = |path: &PathBuf| -> Result<Input, DeltaTableError> {
        let file = File::open(path).map_err(|e| io_error("open", path, e))?;
        let meta = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Optional)
            .parse_and_finish(&file)
            .map_err(|e| io_error("read the footer of", path, e))?;
        Ok(Input { file, meta })
    };
    // Every input must match the first one's schema and metadata (which
    // holds the Arrow schema); only footers are read to find out.
    let first = open(&inputs[0])?;
    let schema = first.meta.file_metadata().schema_descr_ptr();
    let key_values = first.meta.file_metadata().key_value_metadata().cloned();
    let Some(columns) = stats_columns(schema.columns(), stats) else {
        return Ok(None);
    };
    let mut groups = first.meta.num_row_groups();
    for path in &inputs[1..] {
        let other = open(path)?;
        if other.meta.file_metadata().schema_descr().root_schema() != schema.root_schema()
            || other.meta.file_metadata().key_value_metadata() != key_values.as_ref()
        {
            return Ok(None);
        }
        groups += other.meta.num_row_groups();
    }
    // Copies keep every input's row groups: past this many, the files are
    // merged by decoding instead, into full row groups.
    if groups > MAX_COPIED_ROW_GROUPS {
        return Ok(None);
    }
    let properties = Arc::new(
        WriterProperties::builder()
            .set_key_value_metadata(key_values)
            .build(),
    );
    let mut created = Vec::new();
    let mut copy_all = || -> Result<Vec<Written>, DeltaTableError> {
        let mut written = Vec::new();
        let mut output: Option<Output> = None;
        for path in inputs {
            let input = open(path)?;
            let out = match &mut output {
                Some(out) => out,
                None => {
                    let out = Output::create(root, dir, &schema, &properties)?;
                    created.push(out.full.clone());
                    output.insert(out)
                }
            };
            out.append(&input, path)?;
            if out.writer.bytes_written() as u64 >= target {
                written.push(output.take().expect("just used").finish(&columns)?);
            }
        }
        if let Some(out) = output {
            written.push(out.finish(&columns)?);
        }
        Ok(written)
    };
    match copy_all() {
        Ok(written) => Ok(Some(written)),
        Err(e) => {
            // Nothing refers to the files written so far.
            for path in created {
                let _ = std::fs::remove_file(path);
            }
            Err(e)
        }
    }
}

/// A new file being written, and the statistics of what it holds.
struct Output {
    writer: SerializedFileWriter<File>,
    /// The full path, and the path relative to the table.
    full: PathBuf,
    relative: String,
    rows: i64,
    /// Per leaf column, the aggregate of the row groups' statistics;
    /// `None` once a row group lacks them.
    columns: Vec<Option<Aggregate>>,
}

impl Output {
    fn create(
        root: &Path,
        dir: &str,
        schema: &Arc<parquet::schema::types::SchemaDescriptor>,
        properties: &Arc<WriterProperties>,
    ) -> Result<Output, DeltaTableError> {
        let name = format!("part-00000-{}-c000.parquet", uuid::Uuid::now_v7());
        let relative = if dir.is_empty() {
            name
        } else {
            format!("{dir}/{name}")
        };
        let full = root.join(&relative);
        let file = File::create(&full).map_err(|e| io_error("create", &full, e))?;
        let writer = SerializedFileWriter::new(file, schema.root_schema_ptr(), properties.clone())
            .map_err(|e| io_error("begin", &full, e))?;
        Ok(Output {
            writer,
            full,
            relative,
            rows: 0,
            columns: vec![Some(Aggregate::default()); schema.num_columns()],
        })
    }

    /// Copies every row group of `input`.
    fn append(&mut self, input: &Input, path: &Path) -> Result<(), DeltaTableError> {
        let failed = |e| io_error("copy", path, e);
        let column_indexes = input.meta.column_index();
        let offset_indexes = input.meta.offset_index();
        for (g, group) in input.meta.row_groups().iter().enumerate() {
            let mut out = self.writer.next_row_group().map_err(failed)?;
            for (c, column) in group.columns().iter().enumerate() {
                let bloom_filter = Sbbf::read_from_column_chunk(column, &input.file)
                    .ok()
                    .flatten();
                let close = ColumnCloseResult {
                    bytes_written: column.compressed_size() as u64,
                    rows_written: group.num_rows() as u64,
                    metadata: column.clone(),
                    bloom_filter,
                    column_index: column_indexes
                        .and_then(|i| i.get(g))
                        .and_then(|r| r.get(c))
                        .cloned(),
                    offset_index: offset_indexes
                        .and_then(|i| i.get(g))
                        .and_then(|r| r.get(c))
                        .cloned(),
                };
                out.append_column(&input.file, close).map_err(failed)?;
                let slot = &mut self.columns[c];
                if let Some(aggregate) = slot {
                    match column.statistics() {
                        Some(s) => aggregate.add(s, column.column_descr(), group.num_rows()),
                        None => *slot = None,
                    }
                }
            }
            out.close().map_err(failed)?;
            self.rows += group.num_rows();
        }
        Ok(())
    }

    fn finish(self, columns: &[Option<String>]) -> Result<Written, DeltaTableError> {
        let full = self.full;
        let file = self
            .writer
            .into_inner()
            .map_err(|e| io_error("finish", &full, e))?;
        let size = file
            .metadata()
            .map_err(|e| io_error("measure", &full, e))?
            .len();
        let (mut min, mut max, mut nulls) = (Map::new(), Map::new(), Map::new());
        for (name, aggregate) in columns.iter().zip(self.columns) {
            let (Some(name), Some(a)) = (name, aggregate) else {
                continue;
            };
            if !a.unbounded {
                if let Some(v) = a.min.as_ref().and_then(Bound::json) {
                    min.insert(name.clone(), v);
                }
                if let Some(v) = a.max.as_ref().and_then(Bound::json) {
                    max.insert(name.clone(), v);
                }
            }
            if let Some(n) = a.nulls {
                nulls.insert(name.clone(), Value::from(n));
            }
        }
        let stats = serde_json::json!({
            "numRecords": self.rows,
            "minValues": min,
            "maxValues": max,
            "nullCount": nulls,
        });
        Ok(Written {
            path: self.relative,
            size,
            stats: stats.to_string(),
        })
    }
}

/// The name each leaf column's statistics are recorded under, or `None`
/// for a column without them, as deltalake's writer chooses: the listed
/// columns, or the first N. `None` overall when a column is of a kind
/// this copy does not summarise (nested, or a type AllSource never
/// writes).
fn stats_columns(
    leaves: &[Arc<ColumnDescriptor>],
    config: &WriterStatsConfig,
) -> Option<Vec<Option<String>>> {
    let mut names = Vec::with_capacity(leaves.len());
    for (i, leaf) in leaves.iter().enumerate() {
        if leaf.path().parts().len() != 1 || kind(leaf).is_none() {
            return None;
        }
        let name = leaf.name();
        let chosen = match (&config.stats_columns, config.num_indexed_cols) {
            (Some(list), _) => list.iter().any(|c| c == name),
            (None, DataSkippingNumIndexedCols::AllColumns) => true,
            (None, DataSkippingNumIndexedCols::NumColumns(n)) => (i as u64) < n,
        };
        names.push(chosen.then(|| name.to_string()));
    }
    Some(names)
}

/// What a leaf column holds, for its statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Boolean,
    Int,
    Float,
    Text,
    /// Microseconds (or milliseconds) since the epoch, UTC.
    Timestamp(i64),
    Date,
}

fn kind(leaf: &ColumnDescriptor) -> Option<Kind> {
    let logical = leaf.logical_type_ref();
    Some(match (leaf.physical_type(), logical) {
        (Physical::BOOLEAN, None) => Kind::Boolean,
        (Physical::INT32, Some(LogicalType::Date)) => Kind::Date,
        (Physical::INT32 | Physical::INT64, None) => Kind::Int,
        (Physical::INT32 | Physical::INT64, Some(LogicalType::Integer(i))) if i.is_signed => {
            Kind::Int
        }
        (Physical::INT64, Some(LogicalType::Timestamp(t))) if t.is_adjusted_to_u_t_c => {
            match t.unit {
                TimeUnit::MICROS => Kind::Timestamp(1),
                TimeUnit::MILLIS => Kind::Timestamp(1000),
                TimeUnit::NANOS => return None,
            }
        }
        (Physical::FLOAT | Physical::DOUBLE, None) => Kind::Float,
        (Physical::BYTE_ARRAY, Some(LogicalType::String)) => Kind::Text,
        _ => return None,
    })
}

/// One bound of a column.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Bound {
    Boolean(bool),
    Int(i64),
    Float(f64),
    Text(String),
    /// Microseconds since the epoch.
    Timestamp(i64),
    /// Days since the epoch.
    Date(i32),
}

impl Bound {
    /// The value as Delta statistics hold it: timestamps at millisecond
    /// precision (truncated, as deltalake writes them), dates as text;
    /// `None` for a date or time outside chrono's range.
    fn json(&self) -> Option<Value> {
        Some(match self {
            Bound::Boolean(b) => Value::Bool(*b),
            Bound::Int(i) => Value::from(*i),
            Bound::Float(f) => Value::from(*f),
            Bound::Text(s) => Value::from(s.as_str()),
            Bound::Timestamp(us) => {
                let t = DateTime::from_timestamp_micros(*us)?;
                Value::from(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            }
            Bound::Date(d) => {
                let d = chrono::NaiveDate::from_epoch_days(*d)?;
                Value::from(d.format("%Y-%m-%d").to_string())
            }
        })
    }
}

/// A column's statistics over the row groups seen so far.
#[derive(Debug, Clone, Default)]
struct Aggregate {
    min: Option<Bound>,
    max: Option<Bound>,
    /// `None` once a row group does not count its nulls.
    nulls: Option<u64>,
    /// A row group held values without bounds (an infinite or NaN float,
    /// text that is not UTF-8): the file gets no minimum or maximum.
    unbounded: bool,
    seen: bool,
}

impl Aggregate {
    fn add(&mut self, stats: &Statistics, leaf: &ColumnDescriptor, rows: i64) {
        // Values without a minimum or maximum: only a group of nulls may
        // have none.
        let all_null = stats.null_count_opt().is_some_and(|n| n as i64 >= rows);
        if (stats.min_bytes_opt().is_none() || stats.max_bytes_opt().is_none()) && !all_null {
            self.unbounded = true;
        }
        self.nulls = match (self.seen, self.nulls, stats.null_count_opt()) {
            (false, _, n) => n,
            (true, Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        self.seen = true;
        let Some(kind) = kind(leaf) else {
            return;
        };
        let (min, max) = match (stats, kind) {
            (Statistics::Boolean(s), _) => (
                s.min_opt().map(|v| Bound::Boolean(*v)),
                s.max_opt().map(|v| Bound::Boolean(*v)),
            ),
            (Statistics::Int32(s), Kind::Date) => (
                s.min_opt().map(|v| Bound::Date(*v)),
                s.max_opt().map(|v| Bound::Date(*v)),
            ),
            (Statistics::Int32(s), _) => (
                s.min_opt().map(|v| Bound::Int(*v as i64)),
                s.max_opt().map(|v| Bound::Int(*v as i64)),
            ),
            (Statistics::Int64(s), Kind::Timestamp(scale)) => (
                s.min_opt()
                    .map(|v| Bound::Timestamp(v.saturating_mul(scale))),
                s.max_opt()
                    .map(|v| Bound::Timestamp(v.saturating_mul(scale))),
            ),
            (Statistics::Int64(s), _) => (
                s.min_opt().map(|v| Bound::Int(*v)),
                s.max_opt().map(|v| Bound::Int(*v)),
            ),
            (Statistics::Float(s), _) => (
                s.min_opt().map(|v| Bound::Float(*v as f64)),
                s.max_opt().map(|v| Bound::Float(*v as f64)),
            ),
            (Statistics::Double(s), _) => (
                s.min_opt().map(|v| Bound::Float(*v)),
                s.max_opt().map(|v| Bound::Float(*v)),
            ),
            (Statistics::ByteArray(s), _) => {
                let text = |v: &parquet::data_type::ByteArray| {
                    std::str::from_utf8(v.data())
                        .ok()
                        .map(|t| Bound::Text(t.to_string()))
                };
                let (min, max) = (s.min_opt().and_then(text), s.max_opt().and_then(text));
                if s.min_opt().is_some() != min.is_some() || s.max_opt().is_some() != max.is_some()
                {
                    self.unbounded = true;
                }
                (min, max)
            }
            _ => (None, None),
        };
        let finite = |b: &Option<Bound>| !matches!(b, Some(Bound::Float(f)) if !f.is_finite());
        if !finite(&min) || !finite(&max) {
            self.unbounded = true;
        }
        if let Some(v) = min
            && self.min.as_ref().is_none_or(|m| v < *m)
        {
            self.min = Some(v);
        }
        if let Some(v) = max
            && self.max.as_ref().is_none_or(|m| v > *m)
        {
            self.max = Some(v);
        }
    }
}

#[cfg(test)]
#[path = "concat_tests.rs"]
mod tests;
