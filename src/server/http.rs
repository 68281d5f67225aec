//! HTTP routes: ingest, SQL, the query DSL, admin calls, health. Each
//! handler reads its request, calls the [`Service`] and writes the answer;
//! errors become statuses in [`super::error`].

use crate::auth::Principal;
use crate::query::output::{Encoder, OutputFormat};
use crate::query::pin::{Pin, ReadLog};
use crate::service::backup::BackupScope;
use crate::service::caller::{Credentials, RequestInfo};
use crate::service::query::Interface;
use crate::service::stream::{Direction, StreamRead};
use crate::service::{Error, Kind, Service};
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Extension, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use serde::Deserialize;
use std::sync::Arc;

/// Shared state of the HTTP handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    /// Largest request body, compressed (`--max-body-bytes`).
    pub max_body_bytes: usize,
    /// Largest result in the JSON formats.
    pub max_result_bytes: usize,
}

pub fn router(state: AppState) -> Router {
    // The extractor limit bounds the compressed body; `decode_body` bounds
    // it again after decompression (a small gzip can expand enormously),
    // within the ingest memory budget (`server::ingest`).
    let limit = state.max_body_bytes;
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/events", post(super::ingest::ingest_events))
        .route("/v1/sql", post(sql))
        .route("/v1/query", post(dsl_query))
        .route("/v1/streams/{table}/{entity}", get(read_stream))
        .route("/v1/stream", get(super::live::subscribe))
        .route(
            "/v1/subscriptions",
            post(super::groups::create).get(super::groups::list),
        )
        .route(
            "/v1/subscriptions/{name}",
            get(super::groups::describe).delete(super::groups::delete),
        )
        .route("/v1/subscriptions/{name}/reset", post(super::groups::reset))
        .route(
            "/v1/subscriptions/{name}/consume",
            get(super::groups::consume),
        )
        .route(
            "/v1/projections",
            post(super::projections::create).get(super::projections::list),
        )
        .route(
            "/v1/projections/{name}",
            get(super::projections::describe).delete(super::projections::delete),
        )
        .route(
            "/v1/projections/{name}/state",
            get(super::projections::rows),
        )
        .route(
            "/v1/projections/{name}/rebuild",
            post(super::projections::rebuild),
        )
        .route(
            "/v1/projections/{name}/promote",
            post(super::projections::promote),
        )
        .route(
            "/v1/pipelines",
            post(super::pipelines::create).get(super::pipelines::list),
        )
        .route(
            "/v1/pipelines/{name}",
            get(super::pipelines::describe).delete(super::pipelines::delete),
        )
        .route("/v1/pipelines/{name}/pause", post(super::pipelines::pause))
        .route(
            "/v1/pipelines/{name}/resume",
            post(super::pipelines::resume),
        )
        .route(
            "/v1/replay",
            post(super::replay::replay).get(super::replay::replay_socket),
        )
        .route("/v1/schemas", get(super::schemas::list))
        .route(
            "/v1/schemas/{table}",
            get(super::schemas::describe).put(super::schemas::put_table),
        )
        .route(
            "/v1/schemas/{table}/{event_type}",
            post(super::schemas::register).get(super::schemas::versions),
        )
        .route(
            "/v1/schemas/{table}/{event_type}/versions/{version}",
            axum::routing::delete(super::schemas::rollback),
        )
        .route("/v1/validate", post(super::schemas::validate))
        .route(
            "/v1/policies",
            get(super::policies::list).post(super::policies::create),
        )
        .route("/v1/policies/defaults", post(super::policies::defaults))
        .route("/v1/policies/evaluate", post(super::policies::evaluate))
        .route(
            "/v1/policies/{name}",
            get(super::policies::show)
                .put(super::policies::put)
                .delete(super::policies::delete),
        )
        .route("/v1/admin/compact", post(compact))
        .route("/v1/admin/backup", post(backup))
        .route(
            "/v1/admin/tables/{table}/settings",
            get(get_settings).put(put_settings),
        )
        .nest_service(
            "/mcp",
            super::mcp::service(state.service.clone(), state.service.closing()),
        )
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
}

/// What answers while the database opens (WAL replay): `/health` is 200
/// "starting", `/ready` and everything else 503 with Retry-After.
pub fn starting_router() -> Router {
    async fn starting_health() -> Response {
        axum::Json(serde_json::json!({"status": "starting"})).into_response()
    }
    async fn starting() -> Response {
        Error::new(
            Kind::Unavailable,
            "the server is starting: replaying the write-ahead log",
        )
        .retry_after(1)
        .into_response()
    }
    Router::new()
        .route("/health", get(starting_health))
        .fallback(starting)
        .layer(axum::middleware::from_fn(request_id))
}

/// Header carrying a request's id, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// A request's id, in its extensions for handlers that record it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Gives every request an id: the client's `x-request-id` when it sends a
/// sensible one (1–128 visible ASCII characters), a fresh UUIDv7
/// otherwise. The id is returned in the response header of the same name
/// and is a field of the request's tracing span, so log lines and replies
/// can be matched.
async fn request_id(mut request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument;
    let given = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string);
    let id = given.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    request.extensions_mut().insert(RequestId(id.clone()));
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

/// `GET /health` and `GET /ready`: 200 once the WAL is replayed and the
/// WAL writer works. (While replaying, the starting router answers.)
async fn health(State(state): State<AppState>) -> Result<Response, Error> {
    state.service.health()?;
    Ok(axum::Json(serde_json::json!({"status": "ok"})).into_response())
}

/// Header by which a request names the tenant it acts on. Tokens of the
/// admin role may name any tenant; others only their own (or none).
pub const TENANT_HEADER: &str = crate::service::caller::TENANT_CREDENTIAL;

/// Authenticates every request except `/health` and `/ready`, and leaves
/// its [`Principal`] in the request's extensions for the handlers.
async fn authenticate(
    State(state): State<AppState>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    if path == "/health" || path == "/ready" {
        return next.run(request).await;
    }
    let info = RequestInfo {
        action: format!("{} {}", request.method(), request.uri().path()),
        request_id: request.extensions().get::<RequestId>().map(|r| r.0.clone()),
    };
    // Streams also take their credentials from the query string: a
    // browser's WebSocket cannot send headers.
    let from_query = super::live::query_credentials(path, request.uri().query());
    let streaming = from_query.is_some();
    let mut given = credentials(request.headers());
    let from_query = from_query.unwrap_or_default();
    for (key, value) in &from_query {
        match key.as_str() {
            "token" if given.token.is_none() => given.token = Some(value),
            "tenant" if given.tenant.is_none() => given.tenant = Some(value),
            _ => {}
        }
    }
    match state.service.authenticate(given, info) {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        // The stream opens and closes with the error's code and message.
        Err(e) if streaming && super::live::is_websocket(request.headers()) => {
            request.extensions_mut().insert(super::live::Refused(e));
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

/// The credentials in a request's headers (also Flight SQL's call
/// headers): `Authorization: Bearer <token>` and the tenant header.
pub(crate) fn credentials(headers: &HeaderMap) -> Credentials<'_> {
    // A header that is not text names no valid tenant: "" is refused as one.
    let tenant = headers.get(TENANT_HEADER).map(|v| v.to_str().unwrap_or(""));
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    Credentials { token, tenant }
}

pub(super) fn body_too_large() -> Error {
    Error::new(
        Kind::TooLarge,
        "request body too large (see --max-body-bytes)",
    )
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Error> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            body_too_large()
        } else {
            Error::invalid(e.body_text())
        }
    })
}

pub(super) fn mime(headers: &HeaderMap) -> Option<String> {
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
struct SqlParams {
    format: Option<String>,
    /// Reads every table as of `position:N` or an RFC 3339 time.
    as_of: Option<String>,
    /// Reads events as they were written, without schema migrations.
    #[serde(default)]
    raw: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlBody {
    sql: String,
}

/// The result format: `?format=` wins over `Accept`; JSON by default.
fn output_format(param: Option<&str>, headers: &HeaderMap) -> Result<OutputFormat, Error> {
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
async fn sql(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Query(params): Query<SqlParams>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let format = output_format(params.format.as_deref(), &headers)?;
    let body = body_bytes(body)?;
    let text = if mime(&headers).as_deref() == Some("application/json") {
        serde_json::from_slice::<SqlBody>(&body)
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
    let (stream, reads) = state
        .service
        .sql_read(&caller, &text, None, pin, params.raw, Interface::Sql)
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
async fn dsl_query(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Query(params): Query<SqlParams>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let format = output_format(params.format.as_deref(), &headers)?;
    let pin = pin_of(&params)?;
    let body = body_bytes(body)?;
    let (stream, reads) = state
        .service
        .dsl_read(&caller, &body, pin, params.raw)
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
struct StreamParams {
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
async fn read_stream(
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupBody {
    /// The backup's name (a directory under the tenant's backups).
    to: String,
    /// Every tenant's tables, not only the caller's.
    #[serde(default)]
    all_tenants: bool,
}

/// `POST /v1/admin/backup` with `{"to": "NAME"}`: backs up the tenant's
/// tables (every tenant's with `"all_tenants": true`) under the server's
/// backup directory; answers what was copied.
async fn backup(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let body = body_bytes(body)?;
    let request: BackupBody = serde_json::from_slice(&body).map_err(|e| {
        Error::invalid(format!("invalid JSON body: {e}; send {{\"to\": \"NAME\"}}"))
    })?;
    let scope = match request.all_tenants {
        true => BackupScope::AllTenants,
        false => BackupScope::Tenant,
    };
    let report = state.service.backup(&caller, &request.to, scope).await?;
    let tables: Vec<serde_json::Value> = report
        .manifest
        .tables
        .iter()
        .map(|t| {
            serde_json::json!({
                "tenant": t.tenant,
                "table": t.table,
                "delta_version": t.delta_version,
                "last_position": t.last_position,
                "files": t.files.len(),
            })
        })
        .collect();
    Ok(axum::Json(serde_json::json!({
        "dir": report.place.to_string(),
        "created_at": report.manifest.created_at,
        "tables": tables,
        "subscriptions": report
            .manifest
            .subscriptions
            .iter()
            .map(|e| serde_json::json!({"tenant": e.tenant, "name": e.name}))
            .collect::<Vec<_>>(),
        "files_copied": report.copied,
        "files_reused": report.reused,
        "bytes_copied": report.bytes_copied,
    }))
    .into_response())
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
    Extension(caller): Extension<Principal>,
    Query(params): Query<CompactParams>,
) -> Result<Response, Error> {
    let service = state.service;
    let run = service.admit_compaction(
        &caller,
        params.table.as_deref(),
        params.dry_run,
        "POST /v1/admin/compact".into(),
    )?;
    if !params.progress {
        let reports = service.compact(&caller, &run, &mut |_| {}).await?;
        return Ok(axum::Json(serde_json::json!({ "reports": reports })).into_response());
    }
    // Progress: the run goes on in a task; its lines stream as they come.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Bytes, std::io::Error>>();
    let line = |v: serde_json::Value| Ok(Bytes::from(format!("{v}\n")));
    let progress_tx = tx.clone();
    let mut progress = move |p: crate::db::maintenance::Progress| {
        let _ = progress_tx.send(line(serde_json::json!({ "progress": p })));
    };
    tokio::spawn(async move {
        let last = match service.compact(&caller, &run, &mut progress).await {
            Ok(reports) => serde_json::json!({ "reports": reports }),
            Err(e) => serde_json::json!({ "error": e.message }),
        };
        let _ = tx.send(line(last));
    });
    let body = Body::from_stream(futures::stream::poll_fn({
        let mut rx = rx;
        move |cx| rx.poll_recv(cx)
    }));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// `GET /v1/admin/tables/{table}/settings`: the table's own maintenance
/// settings and the values in effect.
async fn get_settings(
    State(state): State<AppState>,
    axum::extract::Path(table): axum::extract::Path<String>,
    Extension(caller): Extension<Principal>,
) -> Result<Response, Error> {
    let reply = state.service.table_settings(&caller, &table)?;
    Ok(axum::Json(reply).into_response())
}

/// `PUT /v1/admin/tables/{table}/settings` with `{"retention": "30days",
/// "maintenance_interval": "1h"}` (either may be null or left out to
/// follow the server's flags). Takes effect at the next run.
async fn put_settings(
    State(state): State<AppState>,
    axum::extract::Path(table): axum::extract::Path<String>,
    Extension(caller): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let body = body_bytes(body)?;
    let action = format!("PUT /v1/admin/tables/{table}/settings");
    let reply = state
        .service
        .set_table_settings(&caller, &table, &body, action)?;
    Ok(axum::Json(reply).into_response())
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
) -> Result<Response, Error> {
    let text = state.service.metrics_text(&caller)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
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
