//! Parquet file readers of the scan.
//!
//! - [`PageIndexReaders`] fetch a file's page index with its footer, so
//!   DataFusion's metadata cache keeps both.
//! - [`LocalReaders`] read small ranges of local files with `pread` on the
//!   calling thread.

use bytes::Bytes;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::ParquetFileReaderFactory;
use datafusion::error::Result;
use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet, MetricBuilder};
use futures::FutureExt;
use futures::future::BoxFuture;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
use std::sync::Arc;

/// Readers that read local files with `pread` on the calling thread.
///
/// `object_store`'s local file system runs every read on tokio's blocking
/// pool, a thread hand-off each way. A point lookup makes one or two small
/// reads in each of 30 files, mostly from the page cache, where the
/// hand-off costs more than the read. Reads up to [`INLINE_READ_BYTES`]
/// are made in place; larger ones, and the footer, go through the store.
#[derive(Debug)]
pub(crate) struct LocalReaders {
    pub(crate) inner: Arc<dyn ParquetFileReaderFactory>,
}

/// The most a reader reads in place in one request.
const INLINE_READ_BYTES: u64 = 8 << 20;

impl ParquetFileReaderFactory for LocalReaders {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> Result<Box<dyn AsyncFileReader + Send>> {
        let location = file.object_meta.location.clone();
        let bytes_scanned = MetricBuilder::new(metrics)
            .with_new_label("filename", location.to_string())
            .counter("bytes_scanned", partition_index);
        Ok(Box::new(LocalReader {
            inner: self
                .inner
                .create_reader(partition_index, file, metadata_size_hint, metrics)?,
            path: std::path::Path::new("/").join(location.as_ref()),
            file: None,
            bytes_scanned,
        }))
    }
}

struct LocalReader {
    inner: Box<dyn AsyncFileReader + Send>,
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
    bytes_scanned: Count,
}

impl LocalReader {
    fn read(&mut self, ranges: &[std::ops::Range<u64>]) -> parquet::errors::Result<Vec<Bytes>> {
        use std::os::unix::fs::FileExt;
        let io = |e: std::io::Error| parquet::errors::ParquetError::External(Box::new(e));
        let file = match &self.file {
            Some(f) => f,
            None => self
                .file
                .insert(std::fs::File::open(&self.path).map_err(io)?),
        };
        ranges
            .iter()
            .map(|r| {
                let mut buf = vec![0; (r.end - r.start) as usize];
                file.read_exact_at(&mut buf, r.start).map_err(io)?;
                self.bytes_scanned.add(buf.len());
                Ok(Bytes::from(buf))
            })
            .collect()
    }
}

impl AsyncFileReader for LocalReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        if range.end - range.start > INLINE_READ_BYTES {
            return self.inner.get_bytes(range);
        }
        let read = self
            .read(std::slice::from_ref(&range))
            .map(|mut v| v.remove(0));
        futures::future::ready(read).boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        let total: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        if total > INLINE_READ_BYTES {
            return self.inner.get_byte_ranges(ranges);
        }
        futures::future::ready(self.read(&ranges)).boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        self.inner.get_metadata(options)
    }
}

/// Readers that fetch a file's metadata with its page index.
///
/// DataFusion caches footers without the page index and then reads and
/// decodes the page index of every file on every query that prunes pages.
/// Asking for the index when the footer is fetched makes the cache hold
/// it, so later queries find it there.
#[derive(Debug)]
pub(crate) struct PageIndexReaders(pub(crate) Arc<dyn ParquetFileReaderFactory>);

impl ParquetFileReaderFactory for PageIndexReaders {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> Result<Box<dyn AsyncFileReader + Send>> {
        Ok(Box::new(PageIndexReader(self.0.create_reader(
            partition_index,
            file,
            metadata_size_hint,
            metrics,
        )?)))
    }
}

struct PageIndexReader(Box<dyn AsyncFileReader + Send>);

impl AsyncFileReader for PageIndexReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.0.get_bytes(range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        self.0.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let options = options
                .cloned()
                .unwrap_or_default()
                .with_page_index_policy(PageIndexPolicy::Optional);
            self.0.get_metadata(Some(&options)).await
        }
        .boxed()
    }
}
