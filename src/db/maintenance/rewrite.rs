//! How compaction writes: the Parquet settings of the files it writes, and
//! the DataFusion session its sorts run in ([`Rewriter`]), whose memory
//! pool holds `--compaction-memory-limit`: past it a sort spills to
//! `<spill-dir>/compaction` (capped by `--max-spill-bytes`). Without the
//! pool, a sort held the whole of what it merged in memory, so the
//! server's memory grew with the largest merge.

use super::super::{Error, Result};
use datafusion::catalog::Session;
use datafusion::common::config::ConfigNonZeroUsize;
use datafusion::execution::SessionState;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use std::path::PathBuf;
use std::sync::Arc;

/// The Parquet settings of compacted files: LZ4, page statistics (the
/// page index) over pages of 4,096 rows, so a lookup decodes little, and
/// row groups of 65,536 rows, so that a `LIMIT` query's dynamic filter can
/// skip most of a file. The columns whose values are (nearly) unique are
/// not dictionary-encoded: the writer would give up on the dictionary
/// anyway, but only after writing a 1 MB dictionary page that every read
/// of the column must then decode, which made a one-entity lookup read
/// 30 MB instead of 1.6 MB at 10M events (ARCHITECTURE.md, "Compacted
/// file layout"). Bloom filters: on `event_id` always; on `entity_id` only
/// in files not sorted by it, where its statistics cannot prune.
///
/// LZ4 rather than zstd: the files are about 1.6 times larger, but the
/// Parquet reader sets up a new zstd context for every column chunk it
/// reads, which was a fifth of a point lookup's CPU, and every query the
/// benches time got faster with LZ4 (ARCHITECTURE.md).
pub(super) fn writer_properties(sorted: bool) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::LZ4_RAW)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_data_page_row_count_limit(4096)
        .set_max_row_group_row_count(Some(65_536));

    for column in [
        crate::schema::EVENT_ID,
        crate::schema::ENTITY_ID,
        crate::schema::TIMESTAMP,
        crate::schema::POSITION,
    ] {
        b = b.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    b = b.set_column_bloom_filter_enabled(ColumnPath::from(crate::schema::EVENT_ID), true);
    if !sorted {
        b = b.set_column_bloom_filter_enabled(ColumnPath::from(crate::schema::ENTITY_ID), true);
    }
    b.build()
}

/// Rows per page in the entity copy's files. A read of one entity decodes
/// the pages that hold its rows, one or two per column, and a page is
/// decompressed whole: in a profile of stream reads with 4,096-row pages,
/// decompressing and zeroing page buffers took about a sixth of the CPU.
pub(super) const ENTITY_COPY_PAGE_ROWS: usize = 512;

/// Most bytes of a dictionary page in the entity copy's files.
pub(super) const ENTITY_COPY_DICTIONARY_BYTES: usize = 16 << 10;

/// The entity copy's files: as a sorted merge writes them, with smaller
/// pages (the writer checks the page size once per write batch, so the
/// batches are as small) and small dictionaries. A read of one entity
/// decodes each column's dictionary page whole, whatever few rows it
/// wants; a column with many distinct values in a row group (a payload
/// field of ids, say) would otherwise have a dictionary of up to 1 MB,
/// which the writer gives up on only once it is full. With this bound it
/// gives up at 16 KB and writes the rest of the chunk plain.
pub(super) fn entity_copy_properties() -> WriterProperties {
    writer_properties(true)
        .into_builder()
        .set_data_page_row_count_limit(ENTITY_COPY_PAGE_ROWS)
        .set_write_batch_size(ENTITY_COPY_PAGE_ROWS)
        .set_dictionary_page_size_limit(ENTITY_COPY_DICTIONARY_BYTES)
        .build()
}

/// Rows per batch while a partition is rewritten. A sort must hold each
/// batch it takes (twice, while sorting it) within its pool; with wide
/// events (kilobytes each) DataFusion's 8,192 rows would need more than a
/// small pool holds before the first spill.
const REWRITE_BATCH_ROWS: usize = 1024;

/// The DataFusion runtime that compaction's sorts run in: one memory pool
/// for every run of the server, and a spill directory of its own.
pub(crate) struct Rewriter {
    runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
    memory_limit: usize,
}

impl std::fmt::Debug for Rewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rewriter")
            .field("memory_limit", &self.memory_limit)
            .finish_non_exhaustive()
    }
}

/// Where compaction spills, under the server's spill directory.
fn spill_dir(config: &crate::config::Config) -> PathBuf {
    config.spill_dir().join("compaction")
}

impl Rewriter {
    /// The runtime for `config`: `--compaction-memory-limit` of memory,
    /// spilling under `<spill-dir>/compaction` up to `--max-spill-bytes`.
    /// Spill files a killed process left there are removed.
    pub(crate) fn new(config: &crate::config::Config) -> Result<Self> {
        let dir = spill_dir(config);
        let disk = crate::db::spill::spill_disk(&dir, config.max_spill_bytes).map_err(|e| {
            Error::Internal(format!(
                "cannot prepare the compaction spill directory {}: {e}",
                dir.display()
            ))
        })?;
        let memory_limit = config.compaction_memory_limit.max(1 << 20);
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(memory_limit)))
            .with_disk_manager_builder(disk)
            .build_arc()
            .map_err(|e| Error::Internal(format!("cannot set up compaction's runtime: {e}")))?;
        Ok(Rewriter {
            runtime,
            memory_limit,
        })
    }

    /// A session for one rewrite, on the shared runtime: deltalake's own
    /// settings, with batches of [`REWRITE_BATCH_ROWS`] and the reserve
    /// each sort keeps for merging its spill files scaled to the pool.
    pub(crate) fn session(&self) -> Arc<dyn Session> {
        Arc::new(self.state())
    }

    /// The state of [`Rewriter::session`].
    pub(crate) fn state(&self) -> SessionState {
        let ctx = deltalake::delta_datafusion::DeltaSessionContext::with_runtime_env(
            self.runtime.clone(),
        )
        .into_inner();
        let mut state = ctx.state();
        let execution = &mut state.config_mut().options_mut().execution;
        if let Ok(rows) = ConfigNonZeroUsize::try_new(REWRITE_BATCH_ROWS) {
            execution.batch_size = rows;
        }
        // One sort per partition: with several, the merge above them
        // holds memory that cannot spill, taken from the sorts' pool.
        execution.target_partitions = 1;
        execution.sort_spill_reservation_bytes = execution
            .sort_spill_reservation_bytes
            .min(self.memory_limit / 16);
        state
    }

    /// Bytes the rewrites running now hold in the pool.
    pub(crate) fn memory_in_use(&self) -> usize {
        self.runtime.memory_pool.reserved()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, RecordBatch};
    use parquet::arrow::ArrowWriter;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    /// Bytes of `column`'s dictionary page in a file of 60,000 rows
    /// written with `props`, 0 when it has none.
    fn dictionary_bytes(props: WriterProperties, column: &str) -> i64 {
        let n = 60_000i64;
        let values = |f: fn(i64) -> i64| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values((0..n).map(f)))
        };
        let batch = RecordBatch::try_from_iter([
            (crate::schema::POSITION, values(|i| i * 7 + 1)),
            ("order_id", values(|i| i * 13 % 1_000_003)),
            ("kind", values(|i| i % 5)),
        ])
        .unwrap();
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let reader = SerializedFileReader::new(bytes::Bytes::from(out)).unwrap();
        let group = reader.metadata().row_group(0);
        let chunk = (0..group.num_columns())
            .map(|i| group.column(i))
            .find(|c| c.column_path().string() == column)
            .unwrap();
        chunk
            .dictionary_page_offset()
            .map_or(0, |d| chunk.data_page_offset() - d)
    }

    #[test]
    fn positions_get_no_dictionary_and_the_copy_keeps_its_dictionaries_small() {
        assert_eq!(
            dictionary_bytes(writer_properties(true), crate::schema::POSITION),
            0
        );
        assert_eq!(
            dictionary_bytes(entity_copy_properties(), crate::schema::POSITION),
            0
        );
        // A column of distinct values the writer is not told about: a
        // dictionary until it is full (all 60,000 values here, 480 KB
        // before compression) in compacted files, and at most about the
        // bound in the copy's.
        let compacted = dictionary_bytes(writer_properties(true), "order_id");
        let copy = dictionary_bytes(entity_copy_properties(), "order_id");
        assert!(compacted > 128 << 10, "{compacted}");
        assert!(copy <= 2 * ENTITY_COPY_DICTIONARY_BYTES as i64, "{copy}");
        // A column of few values keeps its dictionary.
        assert!(dictionary_bytes(entity_copy_properties(), "kind") > 0);
    }
}
