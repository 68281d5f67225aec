//! Translations between the service and PostgreSQL's messages: errors
//! as SQLSTATE codes, result streams as data rows, bound parameters as the
//! row the service binds.

use crate::service::{Error, Kind};
use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ParamValues;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use datafusion_postgres::pgwire;
use futures::StreamExt;
use pgwire::api::portal::Format;
use pgwire::api::results::QueryResponse;
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::types::format::FormatOptions;
use std::sync::Arc;

/// An error as PostgreSQL reports one: `ERROR` with the SQLSTATE of its
/// class.
pub(super) fn error(e: &Error) -> PgWireError {
    let code = match e.kind {
        Kind::Invalid if e.message.contains("(queries are read-only)") => "25006",
        Kind::Invalid => "42000",
        Kind::UnsupportedMediaType => "0A000",
        Kind::TooLarge => "54000",
        Kind::Unauthenticated => "28000",
        Kind::Forbidden => "42501",
        Kind::NotFound => "42704",
        Kind::Conflict => "40001",
        Kind::Overloaded | Kind::Unavailable => "53000",
        Kind::Timeout => "57014",
        Kind::StorageFull => "53100",
        Kind::Internal => "XX000",
    };
    user_error("ERROR", code, e.message.clone())
}

/// An error of `severity` (`ERROR`, or `FATAL` to end the connection).
pub(super) fn user_error(severity: &str, code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        severity.to_string(),
        code.to_string(),
        message,
    )))
}

/// What a cancel request for the running statement fires.
pub(super) struct Cancelled(Option<futures::channel::oneshot::Receiver<()>>);

impl Cancelled {
    pub(super) fn of(receiver: futures::channel::oneshot::Receiver<()>) -> Self {
        Cancelled(Some(receiver))
    }

    /// For a statement nothing can cancel.
    pub(super) fn never() -> Self {
        Cancelled(None)
    }

    /// Completes once a cancel request came, and never otherwise (also
    /// not when the request's sender goes away with the connection).
    pub(super) async fn fired(&mut self) {
        if let Some(receiver) = self.0.as_mut()
            && receiver.await.is_ok()
        {
            return;
        }
        std::future::pending().await
    }
}

/// The error of a statement stopped by a cancel request.
pub(super) fn cancelled() -> PgWireError {
    user_error(
        "ERROR",
        "57014",
        "canceling statement due to user request".into(),
    )
}

/// `stream`'s rows as data rows in `format`; an error while it runs, or a
/// cancel request, ends the result with that error (and drops the
/// stream, which stops the query).
pub(super) fn rows(
    stream: SendableRecordBatchStream,
    format: &Format,
    options: Arc<FormatOptions>,
    mut cancel: Cancelled,
) -> PgWireResult<QueryResponse> {
    let fields = Arc::new(arrow_schema_to_pg_fields(
        &stream.schema(),
        format,
        Some(options),
    )?);
    let row_fields = fields.clone();
    let data = stream.flat_map(move |batch| {
        let rows: Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send + Sync> = match batch {
            Ok(batch) => encode_recordbatch(row_fields.clone(), batch),
            Err(e) => Box::new(std::iter::once(Err(error(&Error::from(e))))),
        };
        futures::stream::iter(rows)
    });
    let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = {
        let fired = fired.clone();
        async move {
            cancel.fired().await;
            fired.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    };
    let end = futures::stream::once(async move {
        fired
            .load(std::sync::atomic::Ordering::Relaxed)
            .then(cancelled)
    })
    .filter_map(|e| std::future::ready(e.map(Err)));
    Ok(QueryResponse::new(fields, data.take_until(stop).chain(end)))
}

/// One text column called `name` holding `value`: what `SHOW` answers.
pub(super) fn setting(
    name: &str,
    value: &str,
    options: Arc<FormatOptions>,
) -> PgWireResult<QueryResponse> {
    let schema = Arc::new(setting_schema(name));
    let column: ArrayRef = Arc::new(StringArray::from(vec![value]));
    let batch = RecordBatch::try_new(schema.clone(), vec![column])
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let stream = Box::pin(
        datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter([Ok(batch)]),
        ),
    );
    rows(stream, &Format::UnifiedText, options, Cancelled::never())
}

/// The schema of `SHOW name`'s answer.
pub(super) fn setting_schema(name: &str) -> Schema {
    Schema::new(vec![Field::new(name, DataType::Utf8, false)])
}

/// The values bound to a statement's placeholders as the one row the
/// service binds (`None` when there are none).
pub(super) fn parameters(values: ParamValues) -> PgWireResult<Option<RecordBatch>> {
    let ParamValues::List(values) = values else {
        return Err(user_error(
            "ERROR",
            "42P02",
            "placeholders are positional ($1, $2, ...)".into(),
        ));
    };
    if values.is_empty() {
        return Ok(None);
    }
    let columns = values
        .into_iter()
        .enumerate()
        .map(|(i, v)| Ok((format!("${}", i + 1), v.value.to_array()?)))
        .collect::<datafusion::error::Result<Vec<(String, ArrayRef)>>>()
        .map_err(|e| error(&Error::from(e)))?;
    RecordBatch::try_from_iter(columns)
        .map(Some)
        .map_err(|e| user_error("ERROR", "22023", e.to_string()))
}
