//! A [`DeltaFiles`] as bytes, for a query planned in one process and run
//! in others (the distributed engine): the file list with each file's
//! partition values and statistics, the schemas and where the files are.
//! The object store itself is not sent; the reading process supplies its
//! own for the same URL.

use super::{DeltaFiles, merged_statistics};
use datafusion::common::Statistics;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::scalar::ScalarValue;
use datafusion_proto_common::protobuf_common as protobuf;
use object_store::ObjectStore;
use object_store::path::Path;
use std::sync::Arc;

/// The wire form of a [`DeltaFiles`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct FilesWire {
    /// The columns in the files.
    #[prost(message, optional, tag = "1")]
    file_schema: Option<protobuf::Schema>,
    /// The partition columns, as a schema of their own.
    #[prost(message, optional, tag = "2")]
    partition_schema: Option<protobuf::Schema>,
    #[prost(message, repeated, tag = "3")]
    files: Vec<FileWire>,
    #[prost(string, tag = "4")]
    store_url: String,
    #[prost(string, tag = "5")]
    base: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct FileWire {
    #[prost(string, tag = "1")]
    location: String,
    #[prost(uint64, tag = "2")]
    size: u64,
    /// Microseconds since the epoch.
    #[prost(int64, tag = "3")]
    modified: i64,
    #[prost(message, repeated, tag = "4")]
    partition_values: Vec<protobuf::ScalarValue>,
    /// Over the whole table schema (file and partition columns).
    #[prost(message, optional, tag = "5")]
    statistics: Option<protobuf::Statistics>,
}

fn wire_err(what: &str, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Internal(format!("the scan's wire form: {what}: {e}"))
}

impl DeltaFiles {
    /// This scan's wire form.
    pub fn to_wire(&self) -> Result<FilesWire> {
        let partition_schema =
            arrow::datatypes::Schema::new(self.table_schema.table_partition_cols().to_vec());
        let files = self
            .files
            .iter()
            .map(|f| {
                Ok(FileWire {
                    location: f.object_meta.location.to_string(),
                    size: f.object_meta.size,
                    modified: f.object_meta.last_modified.timestamp_micros(),
                    partition_values: f
                        .partition_values
                        .iter()
                        .map(protobuf::ScalarValue::try_from)
                        .collect::<Result<_, _>>()
                        .map_err(|e| wire_err("a partition value", e))?,
                    statistics: f.statistics.as_deref().map(protobuf::Statistics::from),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(FilesWire {
            file_schema: Some(
                protobuf::Schema::try_from(self.table_schema.file_schema().as_ref())
                    .map_err(|e| wire_err("the file schema", e))?,
            ),
            partition_schema: Some(
                protobuf::Schema::try_from(&partition_schema)
                    .map_err(|e| wire_err("the partition columns", e))?,
            ),
            files,
            store_url: self.store_url.as_str().to_string(),
            base: self.base.to_string(),
        })
    }

    /// The scan `wire` describes, reading its files from `store` (the
    /// reading process's store for the wire form's URL).
    pub fn from_wire(wire: &FilesWire, store: Arc<dyn ObjectStore>) -> Result<Self> {
        let schema_of = |s: &Option<protobuf::Schema>, what: &str| {
            let s = s.as_ref().ok_or_else(|| wire_err(what, "missing"))?;
            arrow::datatypes::Schema::try_from(s).map_err(|e| wire_err(what, e))
        };
        let file_schema = Arc::new(schema_of(&wire.file_schema, "the file schema")?);
        let partitions = schema_of(&wire.partition_schema, "the partition columns")?;
        let table_schema = TableSchema::builder(file_schema)
            .with_table_partition_cols(partitions.fields().to_vec())
            .build();
        let schema = table_schema.table_schema().clone();
        let files = wire
            .files
            .iter()
            .map(|f| {
                let last_modified = chrono::DateTime::from_timestamp_micros(f.modified)
                    .ok_or_else(|| wire_err("a file's time", f.modified))?;
                let mut file = PartitionedFile::new_from_meta(object_store::ObjectMeta {
                    location: Path::from(f.location.as_str()),
                    last_modified,
                    size: f.size,
                    e_tag: None,
                    version: None,
                });
                file.partition_values = f
                    .partition_values
                    .iter()
                    .map(ScalarValue::try_from)
                    .collect::<Result<_, _>>()
                    .map_err(|e| wire_err("a partition value", e))?;
                file.statistics = f
                    .statistics
                    .as_ref()
                    .map(Statistics::try_from)
                    .transpose()
                    .map_err(|e| wire_err("a file's statistics", e))?
                    .map(Arc::new);
                Ok(file)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(DeltaFiles {
            statistics: merged_statistics(&files, &schema)?,
            schema,
            table_schema,
            files,
            entity_filters: Vec::new(),
            store_url: ObjectStoreUrl::parse(&wire.store_url)?,
            store,
            base: Path::from(wire.base.as_str()),
        })
    }
}

impl FilesWire {
    /// The URL of the store the files are in.
    pub fn store_url(&self) -> &str {
        &self.store_url
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[tokio::test]
    async fn a_scan_comes_back_from_its_wire_form_unchanged() {
        use crate::storage::test_util::two_flushes;
        let tmp = tempfile::tempdir().unwrap();
        let (_, table) = two_flushes(tmp.path()).await;
        let files = DeltaFiles::try_new(&table).unwrap().unwrap();
        let bytes = files.to_wire().unwrap().encode_to_vec();
        let back = DeltaFiles::from_wire(
            &FilesWire::decode(bytes.as_slice()).unwrap(),
            files.store.clone(),
        )
        .unwrap();
        assert_eq!(back.schema, files.schema);
        assert_eq!(
            back.table_schema.file_schema(),
            files.table_schema.file_schema()
        );
        assert_eq!(back.store_url, files.store_url);
        assert_eq!(back.base, files.base);
        assert_eq!(back.statistics, files.statistics);
        assert_eq!(back.files.len(), files.files.len());
        for (a, b) in back.files.iter().zip(&files.files) {
            assert_eq!(a.object_meta, b.object_meta);
            assert_eq!(a.partition_values, b.partition_values);
            assert_eq!(a.statistics, b.statistics);
        }
    }
}
