//! Query results on the wire: the types drivers read, result streams,
//! FlightInfo answers.

use super::df_status;
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc, Ticket};
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Response, Status};

/// The type a column is sent as. View types become their plain forms,
/// which every Arrow implementation (JDBC and ODBC drivers included) reads.
pub(super) fn wire_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        other => other.clone(),
    }
}

pub(super) fn wire_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_data_type(wire_type(f.data_type())))
            .collect::<Vec<Field>>(),
        schema.metadata().clone(),
    ))
}

pub(super) fn to_wire(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, FlightError> {
    if batch
        .schema()
        .fields()
        .iter()
        .zip(schema.fields())
        .all(|(a, b)| a.data_type() == b.data_type())
    {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

pub(super) type FlightStream =
    Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send>>;

/// Streams query results batch by batch as Flight data.
pub(super) fn stream_results(
    stream: datafusion::execution::SendableRecordBatchStream,
) -> FlightStream {
    let schema = wire_schema(&stream.schema());
    let out = schema.clone();
    let batches = stream.map(move |item| match item {
        Ok(batch) => to_wire(batch, &out),
        Err(e) => Err(FlightError::Tonic(Box::new(df_status(e)))),
    });
    let encoded = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(Status::from);
    Box::pin(encoded)
}

/// What the DoGet handlers answer.
pub(super) type DoGetResult = Result<Response<FlightStream>, Status>;

/// A metadata answer built by one of arrow-flight's builders.
pub(super) fn built(batch: Result<RecordBatch, impl std::fmt::Display>) -> DoGetResult {
    let batch = batch.map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(one_batch(batch)))
}

pub(super) fn one_batch(batch: RecordBatch) -> FlightStream {
    let schema = batch.schema();
    let encoded = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async move { Ok(batch) }))
        .map_err(Status::from);
    Box::pin(encoded)
}

/// A FlightInfo whose one endpoint's ticket is `ticket`, to be redeemed on
/// this same connection.
pub(super) fn flight_info(
    schema: &Schema,
    ticket: Bytes,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor)
        .with_total_records(-1)
        .with_total_bytes(-1)
        .with_ordered(true);
    Ok(Response::new(info))
}

pub(super) fn ipc_schema(schema: &Schema) -> Result<Bytes, Status> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(message.0)
}
