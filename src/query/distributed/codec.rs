//! How a distributed query's tables travel to the scheduler: a table read
//! as stored files only ([`EventTable::stored`]) is sent as its schema and
//! its file list ([`FilesWire`]); the scheduler plans DataFusion's own
//! Parquet scan over them, which Ballista sends on to the executors as
//! it is. Everything else goes to Ballista's own codec.

use crate::query::table::EventTable;
use crate::storage::scan::{DeltaFiles, FilesWire};
use ballista_core::serde::BallistaLogicalExtensionCodec;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::protobuf;
use prost::Message;
use std::sync::Arc;

/// The logical codec of every process of a cluster: the server that
/// plans, the scheduler and the executors.
#[derive(Debug, Default)]
pub struct TableCodec {
    inner: BallistaLogicalExtensionCodec,
}

/// A stored table on the wire.
#[derive(Clone, PartialEq, prost::Message)]
struct TableWire {
    /// The table's query schema.
    #[prost(message, optional, tag = "1")]
    schema: Option<protobuf::Schema>,
    /// Its files; absent before the first flush.
    #[prost(message, optional, tag = "2")]
    files: Option<FilesWire>,
    #[prost(uint64, optional, tag = "3")]
    stored_position: Option<u64>,
    /// Where the planning writer's positions end (absent: the only
    /// writer).
    #[prost(uint64, optional, tag = "4")]
    positions_end: Option<u64>,
}

fn codec_err(e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Internal(format!("a distributed table: {e}"))
}

impl LogicalExtensionCodec for TableCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        self.inner.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        _table_ref: &TableReference,
        _schema: arrow::datatypes::SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        let wire = TableWire::decode(buf).map_err(codec_err)?;
        let schema = wire.schema.as_ref().ok_or_else(|| codec_err("no schema"))?;
        let schema = Arc::new(arrow::datatypes::Schema::try_from(schema).map_err(codec_err)?);
        let files = match &wire.files {
            None => None,
            Some(files) => {
                let url = ObjectStoreUrl::parse(files.store_url())?;
                let store = ctx.runtime_env().object_store(&url).map_err(|_| {
                    DataFusionError::Plan(format!(
                        "this process has no object store for {url}: start it with the \
                         server's --storage-url"
                    ))
                })?;
                Some(DeltaFiles::from_wire(files, store)?)
            }
        };
        Ok(Arc::new(EventTable::stored(
            schema,
            files,
            wire.stored_position,
            wire.positions_end.unwrap_or(u64::MAX),
        )))
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let table = node.downcast_ref::<EventTable>().ok_or_else(|| {
            DataFusionError::Plan(format!(
                "table {table_ref} cannot be read by a distributed query"
            ))
        })?;
        let files = table.stored_files().map_err(|why| {
            DataFusionError::Plan(format!(
                "table {table_ref} cannot be read by a distributed query: {why}"
            ))
        })?;
        let wire = TableWire {
            schema: Some(protobuf::Schema::try_from(table.schema().as_ref()).map_err(codec_err)?),
            files: files.map(DeltaFiles::to_wire).transpose()?,
            stored_position: table.stored_position(),
            positions_end: Some(table.positions_end()).filter(|&end| end != u64::MAX),
        };
        wire.encode(buf).map_err(codec_err)
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.inner.try_encode_file_format(buf, node)
    }
}
