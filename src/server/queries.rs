//! Queries over HTTP: `POST /v1/sql`, `POST /v1/query` (the DSL) and
//! `GET /v1/streams/{table}/{entity}` (one entity's events), each answered
//! in the format asked for (`?format=` or `Accept`): JSON and NDJSON
//! gathered within `--max-result-bytes`, CSV, Arrow IPC and Parquet
//! streamed.

use super::http::{AppState, body_bytes, mime};
use crate::auth::Principal;
use crate::query::output::{Encoder, OutputFormat};
use crate::query::pin::{Pin, ReadLog};
use crate::service::Error;
use crate::service::query::{Engine, Interface};
use crate::service::stream::{Direction, StreamRead};
use axum::body::Body;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use serde::Deserialize;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct SqlParams {
    /// json (the default), ndjson, csv, arrow or parquet; or send Accept
    #[param(pattern = "^(json|ndjson|csv|arrow|parquet)$")]
    format: Option<String>,
    /// Read every table as of `position:N` or an RFC 3339 time
    as_of: Option<String>,
    /// Read events as written, without schema migrations
    #[serde(default)]
    raw: Option<bool>,
    /// local (the default) or distributed: run on the Ballista cluster
    /// the server was started with, over stored events only
    #[param(pattern = "^(local|distributed)$")]
    engine: Option<String>,
}

/// The engine a query asks for.
fn engine_of(params: &SqlParams) -> Result<Engine, Error> {
    params
        .engine
        .as_deref()
        .map(str::parse)
        .transpose()
        .map(Option::unwrap_or_default)
        .map_err(|e: String| Error::invalid(format!("query parameter engine: {e}")))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SqlBody {
    sql: String,
}

/// The result format: `?format=` wins over `Accept`; JSON by default.
pub(super) fn output_format(
    param: Option<&str>,
    headers: &HeaderMap,
) -> Result<OutputFormat, Error> {
    if let Some(p) = param {
        return p
            .parse()
            .map_err(|e: String| Error::invalid(format!("query parameter format: {e}")));
    }
    Ok(headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(OutputFormat::from_accept)
        .unwrap_or(OutputFormat::Json))
}

/// `POST /v1/sql`: the statement as plain text or `{"sql": "..."}`.
#[utoipa::path(
    post,
    path = "/v1/sql",
    tag = "queries",
    params(SqlParams),
    request_body(description = "The statement as text, or {\"sql\": \"...\"}", content(("text/plain"), (inline(SqlBody) = "application/json"))),
    responses((status = 200, description = "The result", content((ref("#/components/schemas/Rows") = "application/json"), ("application/x-ndjson"), ("text/csv"), ("application/vnd.apache.arrow.stream"), ("application/vnd.apache.parquet"))))
)]
pub(super) async fn sql(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Query(params): Query<SqlParams>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let format = output_format(params.format.as_deref(), &headers)?;
    let body = body_bytes(body)?;
    let text = if mime(&headers).as_deref() == Some("application/json") {
        crate::service::json_object::<SqlBody>(&body)
            .map_err(|e| {
                Error::invalid(format!(
                    "invalid JSON body: {e}; send {{\"sql\": \"SELECT ...\"}} or the SQL as plain text"
                ))
            })?
            .sql
    } else {
        String::from_utf8(body.to_vec())
            .map_err(|_| Error::invalid("the SQL text is not valid UTF-8"))?
    };
    let pin = pin_of(&params)?;
    let engine = engine_of(&params)?;
    let (stream, reads) = state
        .service
        .sql_read_on(
            &caller,
            &text,
            None,
            pin,
            params.raw.unwrap_or(false),
            Interface::Sql,
            engine,
        )
        .await?;
    with_snapshot(
        stream_response(stream, format, state.max_result_bytes).await?,
        &reads,
    )
}

/// What a query read: `table=v<delta version>@p<highest position>`, per
/// table, comma-separated (`-` where there is none).
const SNAPSHOT_HEADER: &str = "x-allsource-snapshot";

/// `POST /v1/query`: a DSL document (docs/dsl.md), answered like `/v1/sql`.
#[utoipa::path(
    post,
    path = "/v1/query",
    tag = "queries",
    params(SqlParams),
    request_body(content = ref("#/components/schemas/Object"), content_type = "application/json", description = "A query document of the DSL (docs/dsl.md)"),
    responses((status = 200, description = "The result", content((ref("#/components/schemas/Rows") = "application/json"), ("application/x-ndjson"), ("text/csv"), ("application/vnd.apache.arrow.stream"), ("application/vnd.apache.parquet"))))
)]
pub(super) async fn dsl_query(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Query(params): Query<SqlParams>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let format = output_format(params.format.as_deref(), &headers)?;
    let pin = pin_of(&params)?;
    if engine_of(&params)? == Engine::Distributed {
        return Err(Error::invalid(
            "query documents run on the local engine only; send SQL to /v1/sql for engine=distributed",
        ));
    }
    let body = body_bytes(body)?;
    let (stream, reads) = state
        .service
        .dsl_read(&caller, &body, pin, params.raw.unwrap_or(false))
        .await?;
    with_snapshot(
        stream_response(stream, format, state.max_result_bytes).await?,
        &reads,
    )
}

/// The `as_of` parameter, parsed.
fn pin_of(params: &SqlParams) -> Result<Option<Pin>, Error> {
    params
        .as_of
        .as_deref()
        .map(Pin::parse)
        .transpose()
        .map_err(Error::invalid)
}

/// The response with the [`SNAPSHOT_HEADER`] of what the query read.
fn with_snapshot(mut response: Response, reads: &ReadLog) -> Result<Response, Error> {
    let header = reads.header();
    if !header.is_empty()
        && let Ok(value) = HeaderValue::from_str(&header)
    {
        response.headers_mut().insert(SNAPSHOT_HEADER, value);
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamParams {
    from_version: Option<u64>,
    limit: Option<u64>,
    #[serde(default)]
    direction: Direction,
    format: Option<String>,
    #[serde(default)]
    raw: bool,
}

/// `GET /v1/streams/{table}/{entity}?from_version=&limit=&direction=`:
/// one entity's events in version order, answered like `/v1/sql`.
#[utoipa::path(
    get,
    path = "/v1/streams/{table}/{entity}",
    tag = "streams",
    params(("table" = String, Path, description = "A table name", pattern = "^[a-z][a-z0-9_]{0,63}$"), ("entity" = String, Path, description = "The entity id"), ("from_version" = Option<u64>, Query, description = "First version to read (forwards) or last (backwards)"), ("limit" = Option<u64>, Query, description = "Most events to return"), ("direction" = Option<String>, Query, description = "forwards (the default) or backwards", pattern = "^(forwards|backwards)$"), ("format" = Option<String>, Query, description = "json (the default), ndjson, csv, arrow or parquet; or send Accept", pattern = "^(json|ndjson|csv|arrow|parquet)$"), ("raw" = Option<bool>, Query, description = "Read events as written, without schema migrations")),
    responses((status = 200, description = "The entity's events in version order", content((ref("#/components/schemas/Rows") = "application/json"), ("application/x-ndjson"), ("text/csv"), ("application/vnd.apache.arrow.stream"), ("application/vnd.apache.parquet"))))
)]
pub(super) async fn read_stream(
    State(state): State<AppState>,
    axum::extract::Path((table, entity)): axum::extract::Path<(String, String)>,
    Extension(caller): Extension<Principal>,
    params: Result<Query<StreamParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let Query(params) = params.map_err(|e| Error::invalid(e.body_text()))?;
    let format = output_format(params.format.as_deref(), &headers)?;
    let table = table
        .parse()
        .map_err(|e: crate::ids::InvalidName| Error::invalid(e.to_string()))?;
    let read = StreamRead {
        table,
        entity,
        from_version: params.from_version,
        limit: params.limit,
        direction: params.direction,
        raw: params.raw,
    };
    let stream = state.service.stream(&caller, read).await?;
    stream_response(stream, format, state.max_result_bytes).await
}

/// Gathers a JSON-format result whole, up to `limit` bytes, so that an
/// oversized one is refused with a status rather than cut off midway.
async fn gathered_response(
    mut stream: SendableRecordBatchStream,
    format: OutputFormat,
    limit: usize,
) -> Result<Response, Error> {
    let schema = stream.schema();
    let mut encoder = Encoder::new(format, &schema)?;
    let mut out = encoder.start()?.to_vec();
    while let Some(batch) = stream.next().await.transpose()? {
        out.extend_from_slice(&encoder.batch(&batch)?);
        if out.len() > limit {
            return Err(Error::invalid(format!(
                "the result is larger than {limit} bytes as {} (--max-result-bytes): add a LIMIT, or ask for format=arrow, csv or parquet, which stream without this limit",
                if format == OutputFormat::Json {
                    "json"
                } else {
                    "ndjson"
                }
            )));
        }
    }
    out.extend_from_slice(&encoder.finish(&schema)?);
    Ok(([(header::CONTENT_TYPE, format.content_type())], out).into_response())
}

/// Streams a query result. The first batch is awaited before the status is
/// sent, so errors that show up at once still get a proper status code.
/// JSON formats are gathered instead, within `json_limit` bytes.
async fn stream_response(
    mut stream: SendableRecordBatchStream,
    format: OutputFormat,
    json_limit: usize,
) -> Result<Response, Error> {
    if matches!(format, OutputFormat::Json | OutputFormat::Ndjson) {
        return gathered_response(stream, format, json_limit).await;
    }
    let schema = stream.schema();
    let first = stream.next().await.transpose()?;
    let mut encoder = Encoder::new(format, &schema)?;
    let mut head = Vec::new();
    head.extend_from_slice(&encoder.start()?);
    if let Some(batch) = &first {
        head.extend_from_slice(&encoder.batch(batch)?);
    }
    let done = first.is_none();
    let state = (stream, Some(encoder), schema, done);
    let rest = futures::stream::unfold(
        state,
        |(mut stream, mut encoder, schema, done)| async move {
            let enc = encoder.as_mut()?;
            if !done {
                match stream.next().await {
                    Some(Ok(batch)) => {
                        let bytes = enc.batch(&batch).map_err(std::io::Error::other);
                        return Some((bytes, (stream, encoder, schema, false)));
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "query failed while streaming its result");
                        return Some((Err(std::io::Error::other(e)), (stream, None, schema, true)));
                    }
                    None => {}
                }
            }
            let enc = encoder.take()?;
            let bytes = enc.finish(&schema).map_err(std::io::Error::other);
            Some((bytes, (stream, None, schema, true)))
        },
    );
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) })
        .chain(rest);
    Ok((
        [(header::CONTENT_TYPE, format.content_type())],
        Body::from_stream(body),
    )
        .into_response())
}
