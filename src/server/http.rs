//! HTTP routes: ingest, SQL, the query DSL, health.

use super::error::ApiError;
use crate::db::Database;
use crate::ids::{TableName, TenantId};
use crate::ingest::{self, BodyFormat};
use crate::query::output::{Encoder, OutputFormat};
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use serde::Deserialize;
use std::io::Read;
use std::sync::Arc;

/// Shared state of the HTTP handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    pub db: Arc<Database>,
    pub max_body_bytes: usize,
    /// Bounds the decompressed bytes of ingest bodies being parsed at once
    /// (permits are KiB): a parsed JSON tree is several times its text, so
    /// many large requests together could otherwise exhaust memory.
    pub ingest_budget: Arc<tokio::sync::Semaphore>,
    /// The budget's size in KiB; no request waits for more than all of it.
    pub ingest_budget_kib: u32,
}

impl AppState {
    pub fn new(db: Arc<Database>, max_body_bytes: usize) -> Self {
        // Room for a few maximal bodies at once, and never less than 64 MiB.
        let budget_kib =
            (max_body_bytes.saturating_mul(4).max(64 << 20) >> 10).min(u32::MAX as usize);
        AppState {
            db,
            max_body_bytes,
            ingest_budget: Arc::new(tokio::sync::Semaphore::new(budget_kib)),
            ingest_budget_kib: budget_kib as u32,
        }
    }
}

pub fn router(state: AppState) -> Router {
    // The extractor limit bounds the compressed body; `decode_body` bounds
    // it again after decompression (a small gzip can expand enormously).
    let limit = state.max_body_bytes;
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/events", post(ingest_events))
        .route("/v1/sql", post(sql))
        .route("/v1/query", post(dsl_query))
        .route("/v1/admin/compact", post(compact))
        .route(
            "/v1/admin/tables/{table}/settings",
            get(get_settings).put(put_settings),
        )
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
}

/// Header carrying a request's id, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// Gives every request an id: the client's `x-request-id` when it sends a
/// sensible one (1–128 visible ASCII characters), a fresh UUIDv7
/// otherwise. The id is returned in the response header of the same name
/// and is a field of the request's tracing span, so log lines and replies
/// can be matched.
async fn request_id(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument;
    let given = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string);
    let id = given.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let span = tracing::info_span!(
        "request",
        id = %id,
        method = %request.method(),
        path = %request.uri().path()
    );
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

async fn health(State(state): State<AppState>) -> Response {
    if state.db.is_healthy() {
        (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ok"})),
        )
            .into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the write-ahead log has failed; restart the server",
        )
        .into_response()
    }
}

/// The tenant of a request. Until auth exists every request is `default`.
fn tenant_of(_headers: &HeaderMap) -> TenantId {
    TenantId::default_tenant()
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(status, "request body too large (see --max-body-bytes)")
        } else {
            ApiError::new(status, e.body_text())
        }
    })
}

/// Undoes `Content-Encoding`, refusing more than `limit` bytes of output.
fn decode_body(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, ApiError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {limit} bytes after decompression"),
        )
    };
    let read_limited = |mut r: Box<dyn Read + '_>, name: &str| -> Result<Bytes, ApiError> {
        let mut out = Vec::new();
        (&mut r)
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| ApiError::bad_request(format!("invalid {name} body: {e}")))?;
        if out.len() > limit {
            return Err(too_large());
        }
        Ok(Bytes::from(out))
    };
    match encoding.as_deref() {
        None | Some("identity") | Some("") => Ok(body),
        Some("gzip") | Some("x-gzip") => read_limited(
            Box::new(flate2::read::MultiGzDecoder::new(&body[..])),
            "gzip",
        ),
        Some("zstd") => {
            let dec = zstd::stream::read::Decoder::new(&body[..])
                .map_err(|e| ApiError::bad_request(format!("invalid zstd body: {e}")))?;
            read_limited(Box::new(dec), "zstd")
        }
        Some(other) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported Content-Encoding {other:?}: use gzip, zstd or none"),
        )),
    }
}

fn mime(headers: &HeaderMap) -> Option<String> {
    headers.get(header::CONTENT_TYPE).map(|v| {
        v.to_str()
            .unwrap_or("?")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    })
}

#[derive(Debug, Deserialize)]
struct IngestParams {
    table: Option<String>,
}

async fn ingest_events(
    state: State<AppState>,
    params: Query<IngestParams>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let tenant = tenant_of(&headers).to_string();
    let bytes = body.as_ref().map_or(0, |b| b.len() as u64);
    let result = ingest_events_inner(state, params, headers, body).await;
    let m = crate::metrics::get();
    let outcome = crate::metrics::outcome(status_of(&result));
    m.ingest_requests
        .with_label_values(&[tenant.as_str(), outcome])
        .inc();
    m.ingest_bytes
        .with_label_values(&[tenant.as_str()])
        .inc_by(bytes);
    if outcome == "ok" {
        m.ingest_seconds
            .with_label_values(&[tenant.as_str()])
            .observe(started.elapsed().as_secs_f64());
    }
    result
}

async fn ingest_events_inner(
    State(state): State<AppState>,
    Query(params): Query<IngestParams>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&headers);
    let table = match params.table.as_deref() {
        None => TableName::default_table(),
        Some(name) => name
            .parse::<TableName>()
            .map_err(|e| ApiError::bad_request(format!("query parameter table: {e}")))?,
    };
    let format = match mime(&headers).as_deref() {
        Some("application/json") => BodyFormat::Json,
        Some("application/x-ndjson" | "application/jsonl" | "application/x-jsonlines") => {
            BodyFormat::Ndjson
        }
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "unsupported Content-Type {}: send application/json (an object or an array of objects) or application/x-ndjson",
                    other.map(|m| format!("{m:?}")).unwrap_or("(none)".into())
                ),
            ));
        }
    };
    let body = body_bytes(body)?;
    let limit = state.max_body_bytes;
    let internal =
        |e: tokio::task::JoinError| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    // Decompression and parsing are CPU work: keep them off the I/O threads.
    let body = tokio::task::spawn_blocking(move || decode_body(&headers, body, limit))
        .await
        .map_err(internal)??;
    let kib = ((body.len() >> 10) as u32 + 1).min(state.ingest_budget_kib);
    let _budget = state
        .ingest_budget
        .clone()
        .acquire_many_owned(kib)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let events = tokio::task::spawn_blocking(move || {
        ingest::parse_events(&body, format).map_err(|e| ApiError::bad_request(e.to_string()))
    })
    .await
    .map_err(internal)??;
    // Detached, so that a client hanging up mid-request cannot cancel an
    // ingest between claiming its event ids and logging them.
    let db = state.db.clone();
    let label = tenant.to_string();
    let outcome = tokio::spawn(async move { db.ingest(&tenant, &table, events).await })
        .await
        .map_err(internal)??;
    crate::metrics::get()
        .ingest_events
        .with_label_values(&[label.as_str()])
        .inc_by(outcome.accepted as u64);
    Ok(axum::Json(serde_json::json!({
        "accepted": outcome.accepted,
        "duplicates": outcome.duplicates,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
struct SqlParams {
    format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlBody {
    sql: String,
}

/// The result format: `?format=` wins over `Accept`; JSON by default.
fn output_format(param: Option<&str>, headers: &HeaderMap) -> Result<OutputFormat, ApiError> {
    if let Some(p) = param {
        return p
            .parse()
            .map_err(|e: String| ApiError::bad_request(format!("query parameter format: {e}")));
    }
    Ok(headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(OutputFormat::from_accept)
        .unwrap_or(OutputFormat::Json))
}

/// The HTTP status a handler's result is answered with.
fn status_of(result: &Result<Response, ApiError>) -> u16 {
    match result {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.status.as_u16(),
    }
}

/// Counts a query and its latency to the first batch (or its refusal).
fn observe_query(
    interface: &str,
    started: std::time::Instant,
    result: &Result<Response, ApiError>,
) {
    let m = crate::metrics::get();
    m.queries
        .with_label_values(&[interface, crate::metrics::outcome(status_of(result))])
        .inc();
    m.query_seconds
        .with_label_values(&[interface])
        .observe(started.elapsed().as_secs_f64());
}

async fn sql(
    state: State<AppState>,
    params: Query<SqlParams>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let result = sql_inner(state, params, headers, body).await;
    observe_query("sql", started, &result);
    result
}

async fn sql_inner(
    State(state): State<AppState>,
    Query(params): Query<SqlParams>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&headers);
    let format = output_format(params.format.as_deref(), &headers)?;
    let body = body_bytes(body)?;
    let text = if mime(&headers).as_deref() == Some("application/json") {
        serde_json::from_slice::<SqlBody>(&body)
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "invalid JSON body: {e}; send {{\"sql\": \"SELECT ...\"}} or the SQL as plain text"
                ))
            })?
            .sql
    } else {
        String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::bad_request("the SQL text is not valid UTF-8"))?
    };
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("no SQL given"));
    }
    let stream = state.db.query(&tenant, &text).await?;
    stream_response(stream, format).await
}

/// `POST /v1/query`: a DSL document (docs/dsl.md), answered like `/v1/sql`.
async fn dsl_query(
    state: State<AppState>,
    params: Query<SqlParams>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let result = dsl_query_inner(state, params, headers, body).await;
    observe_query("dsl", started, &result);
    result
}

async fn dsl_query_inner(
    State(state): State<AppState>,
    Query(params): Query<SqlParams>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&headers);
    let format = output_format(params.format.as_deref(), &headers)?;
    let body = body_bytes(body)?;
    let doc: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the query document is not valid JSON: {e} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let stream = crate::dsl::run(state.db.clone(), tenant, &doc).await?;
    stream_response(stream, format).await
}

#[derive(Debug, serde::Deserialize)]
struct CompactParams {
    table: Option<String>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    progress: bool,
}

/// `POST /v1/admin/compact[?table=T][&dry_run=true][&progress=true]`: runs
/// maintenance now and answers with what it did. With `progress=true` the
/// answer is NDJSON: progress lines, then `{"reports": [...]}`.
async fn compact(
    State(state): State<AppState>,
    Query(params): Query<CompactParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    use crate::db::maintenance::MaintenanceError;
    let tenant = tenant_of(&headers);
    let table = match &params.table {
        Some(t) => Some(
            t.parse::<crate::ids::TableName>()
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
        ),
        None => None,
    };
    let to_api = |e: MaintenanceError| match e {
        MaintenanceError::Busy(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        MaintenanceError::NoTable(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
        MaintenanceError::Db(e) => e.into(),
    };
    if !params.progress {
        let reports = state
            .db
            .maintain_all(Some(&tenant), table.as_ref(), params.dry_run, &mut |_| {})
            .await
            .map_err(to_api)?;
        return Ok(axum::Json(serde_json::json!({ "reports": reports })).into_response());
    }
    // Progress: the run goes on in a task; its lines stream as they come.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Bytes, std::io::Error>>();
    let db = state.db.clone();
    let line = |v: serde_json::Value| Ok(Bytes::from(format!("{v}\n")));
    let progress_tx = tx.clone();
    let mut progress = move |p: crate::db::maintenance::Progress| {
        let _ = progress_tx.send(line(serde_json::json!({ "progress": p })));
    };
    // A busy table is still refused with a status, before streaming.
    if let Some(t) = table.as_ref().and_then(|t| db.table(&tenant, t))
        && t.maintenance_lock.try_lock().is_err()
    {
        return Err(to_api(MaintenanceError::Busy(t.label())));
    }
    tokio::spawn(async move {
        let result = db
            .maintain_all(Some(&tenant), table.as_ref(), params.dry_run, &mut progress)
            .await;
        let last = match result {
            Ok(reports) => serde_json::json!({ "reports": reports }),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        let _ = tx.send(line(last));
    });
    let body = axum::body::Body::from_stream(tokio_stream_from(rx));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(body)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn admin_table(
    state: &AppState,
    headers: &HeaderMap,
    table: &str,
) -> Result<Arc<crate::db::Table>, ApiError> {
    let tenant = tenant_of(headers);
    let name = table
        .parse::<crate::ids::TableName>()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    state
        .db
        .table(&tenant, &name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no table {table}")))
}

/// `GET /v1/admin/tables/{table}/settings`: the table's own maintenance
/// settings and the values in effect.
async fn get_settings(
    State(state): State<AppState>,
    axum::extract::Path(table): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let t = admin_table(&state, &headers, &table)?;
    Ok(axum::Json(settings_reply(&state, &t)).into_response())
}

fn settings_reply(state: &AppState, t: &crate::db::Table) -> serde_json::Value {
    let own = state.db.table_settings().get(t);
    let config = state.db.config();
    let effective_retention = own.retention.clone().or_else(|| {
        config
            .retention
            .map(|d| humantime::format_duration(d).to_string())
    });
    let effective_interval = own
        .maintenance_interval
        .clone()
        .unwrap_or_else(|| humantime::format_duration(config.maintenance_interval).to_string());
    serde_json::json!({
        "table": t.name.to_string(),
        "settings": own,
        "effective": {"retention": effective_retention, "maintenance_interval": effective_interval},
    })
}

/// `PUT /v1/admin/tables/{table}/settings` with `{"retention": "30days",
/// "maintenance_interval": "1h"}` (either may be null or left out to
/// follow the server's flags). Takes effect at the next run.
async fn put_settings(
    State(state): State<AppState>,
    axum::extract::Path(table): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let t = admin_table(&state, &headers, &table)?;
    let body = body_bytes(body)?;
    let settings: crate::db::maintenance::TableSettings = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid settings: {e}")))?;
    settings.validate().map_err(ApiError::bad_request)?;
    state
        .db
        .table_settings()
        .set(&t, settings)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(axum::Json(settings_reply(&state, &t)).into_response())
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(State(state): State<AppState>) -> Response {
    let m = crate::metrics::get();
    m.buffer_bytes.set(state.db.buffered_bytes() as i64);
    m.buffer_rows.set(state.db.buffered_rows() as i64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.render(),
    )
        .into_response()
}

/// Streams a query result. The first batch is awaited before the status is
/// sent, so errors that show up at once still get a proper status code.
async fn stream_response(
    mut stream: SendableRecordBatchStream,
    format: OutputFormat,
) -> Result<Response, ApiError> {
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
