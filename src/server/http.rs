//! HTTP routes: ingest, SQL, the query DSL, health.

use super::error::ApiError;
use crate::audit::AuditEntry;
use crate::auth::{AuthError, Principal, Role, Verifier};
use crate::db::Database;
use crate::ids::TenantId;
use crate::ingest::budget::IngestBudget;
use crate::query::output::{Encoder, OutputFormat};
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::BytesRejection;
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
    pub db: Arc<Database>,
    pub max_body_bytes: usize,
    /// Memory that ingest requests in flight may take together, and one
    /// of them alone (`--ingest-memory-budget`,
    /// `--max-ingest-request-bytes`); shared with Flight uploads.
    pub ingest_budget: Arc<IngestBudget>,
    /// Checks bearer tokens; `None` when auth is off.
    pub verifier: Option<Arc<Verifier>>,
    /// Largest result in the JSON formats.
    pub max_result_bytes: usize,
    /// Per-tenant event and query rates.
    pub rate_limits: Arc<crate::ratelimit::RateLimits>,
}

impl AppState {
    pub fn new(db: Arc<Database>, max_body_bytes: usize) -> Self {
        let config = db.config();
        let ingest_budget =
            IngestBudget::new(config.ingest_memory_budget, config.max_ingest_request_bytes);
        AppState {
            db,
            max_body_bytes,
            ingest_budget,
            verifier: None,
            max_result_bytes: 256 << 20,
            rate_limits: Arc::default(),
        }
    }
}

pub fn router(state: AppState) -> Router {
    // The extractor limit bounds the compressed body; `decode_body` bounds
    // it again after decompression (a small gzip can expand enormously),
    // within the ingest memory budget (`server::ingest`).
    let limit = state.max_body_bytes;
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/events", post(super::ingest::ingest_events))
        .route("/v1/sql", post(sql))
        .route("/v1/query", post(dsl_query))
        .route("/v1/admin/compact", post(compact))
        .route(
            "/v1/admin/tables/{table}/settings",
            get(get_settings).put(put_settings),
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
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is starting: replaying the write-ahead log",
        );
        e.retry_after = Some(1);
        e.into_response()
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

/// `GET /ready`: 200 once the WAL is replayed and the WAL writer works.
/// (While replaying, the starting router answers 503.)
async fn ready(State(state): State<AppState>) -> Response {
    health(State(state)).await
}

/// Header by which a request names the tenant it acts on. Tokens of the
/// admin role may name any tenant; others only their own (or none).
pub const TENANT_HEADER: &str = "x-allsource-tenant";

/// Authenticates every request except `/health` and `/ready`, and leaves
/// its [`Principal`] in the request's extensions for the handlers. With
/// auth off (loopback only, or `--insecure`) everyone is an admin.
async fn authenticate(
    State(state): State<AppState>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    if path == "/health" || path == "/ready" {
        return next.run(request).await;
    }
    match principal_of(state.verifier.as_deref(), request.headers()) {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(e) => {
            record_refusal(
                &state.db,
                &e,
                format!("{} {}", request.method(), request.uri().path()),
                request_id_of(&request),
            );
            e.into_response()
        }
    }
}

/// Counts a caller refused by authentication (HTTP or Flight) and, when it
/// is a 401 or 403, writes it to the audit log as `action`.
pub(crate) fn record_refusal(
    db: &Arc<Database>,
    e: &ApiError,
    action: String,
    request_id: Option<String>,
) {
    crate::metrics::get()
        .auth_failures
        .with_label_values(&[e.status.as_str()])
        .inc();
    tracing::info!(status = %e.status, reason = %e.message, "request refused");
    if matches!(e.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        db.audit(AuditEntry {
            kind: "auth_failure",
            action,
            status: e.status.as_u16(),
            detail: e.message.clone(),
            request_id,
            ..Default::default()
        });
    }
}

fn request_id_of(request: &axum::extract::Request) -> Option<String> {
    request.extensions().get::<RequestId>().map(|r| r.0.clone())
}

/// Takes `n` units from the caller's tenant's bucket, or refuses with 429
/// (413 when the request alone is over the tenant's burst).
pub(crate) fn rate_check(
    limits: &crate::ratelimit::RateLimits,
    tenant: &TenantId,
    kind: crate::ratelimit::Kind,
    n: u32,
) -> Result<(), ApiError> {
    limits
        .check(tenant, kind, n)
        .map_err(|l| match l.retry_after {
            Some(wait) => {
                let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, l.message);
                e.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
                e
            }
            None => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, l.message),
        })
}

/// The caller of a request, from its bearer token and tenant header (also
/// used for Flight SQL's call headers).
pub(crate) fn principal_of(
    verifier: Option<&Verifier>,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
    let wanted = match headers.get(TENANT_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<TenantId>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "header {TENANT_HEADER}: not a valid tenant name"
                    ))
                })?,
        ),
    };
    let mut principal = match verifier {
        None => Principal::local_admin(TenantId::default_tenant()),
        Some(verifier) => {
            let token = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    ApiError::from(AuthError::Unauthenticated(
                        "missing bearer token: send Authorization: Bearer <JWT>".into(),
                    ))
                })?;
            verifier.verify(token)?
        }
    };
    if let Some(tenant) = wanted
        && tenant != principal.tenant
    {
        if !principal.is_admin() {
            return Err(AuthError::Forbidden(format!(
                "a {} token may act only on its own tenant",
                principal.role
            ))
            .into());
        }
        principal.tenant = tenant;
    }
    Ok(principal)
}

pub(super) fn body_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request body too large (see --max-body-bytes)",
    )
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            body_too_large()
        } else {
            ApiError::new(status, e.body_text())
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
pub(super) fn status_of(result: &Result<Response, ApiError>) -> u16 {
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

/// What `/v1/sql` and `/v1/query` check before they look at the query:
/// the role, the tenant's query rate, the result format; then the body.
fn admit_query(
    state: &AppState,
    caller: &Principal,
    params: &SqlParams,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(OutputFormat, Bytes), ApiError> {
    caller.require(Role::Reader, "query")?;
    rate_check(
        &state.rate_limits,
        &caller.tenant,
        crate::ratelimit::Kind::Queries,
        1,
    )?;
    let format = output_format(params.format.as_deref(), headers)?;
    Ok((format, body_bytes(body)?))
}

async fn sql(
    state: State<AppState>,
    Extension(caller): Extension<Principal>,
    params: Query<SqlParams>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let result = sql_inner(state, caller, params, headers, body).await;
    observe_query("sql", started, &result);
    result
}

async fn sql_inner(
    State(state): State<AppState>,
    caller: Principal,
    Query(params): Query<SqlParams>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (format, body) = admit_query(&state, &caller, &params, &headers, body)?;
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
    // Before a query slot is taken; planning checks it again, as it does
    // for Flight SQL and inner queries.
    let bounds = state.db.limits().settings.sql;
    bounds
        .check_size("the SQL text", text.len())
        .map_err(ApiError::bad_request)?;
    let stream = state.db.query(&caller, &text).await;
    if let Err(e) = &stream {
        audit_refused_statement(&state.db, &caller, &text, e);
    }
    stream_response(stream?, format, state.max_result_bytes).await
}

/// `POST /v1/query`: a DSL document (docs/dsl.md), answered like `/v1/sql`.
async fn dsl_query(
    state: State<AppState>,
    Extension(caller): Extension<Principal>,
    params: Query<SqlParams>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let result = dsl_query_inner(state, caller, params, headers, body).await;
    observe_query("dsl", started, &result);
    result
}

async fn dsl_query_inner(
    State(state): State<AppState>,
    caller: Principal,
    Query(params): Query<SqlParams>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (format, body) = admit_query(&state, &caller, &params, &headers, body)?;
    let bounds = state.db.limits().settings.sql;
    bounds
        .check_size("the query document", body.len())
        .map_err(ApiError::bad_request)?;
    let doc: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the query document is not valid JSON: {e} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let stream = crate::dsl::run(state.db.clone(), &caller, &doc).await?;
    stream_response(stream, format, state.max_result_bytes).await
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
) -> Result<Response, ApiError> {
    use crate::db::maintenance::MaintenanceError;
    caller.require(Role::Admin, "run maintenance")?;
    state.db.audit(AuditEntry::by(
        &caller,
        "admin",
        "POST /v1/admin/compact".into(),
        200,
        format!(
            "table={} dry_run={}",
            params.table.as_deref().unwrap_or("*"),
            params.dry_run
        ),
    ));
    let tenant = caller.tenant;
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
    caller: &Principal,
    table: &str,
) -> Result<Arc<crate::db::Table>, ApiError> {
    caller.require(Role::Admin, "change table settings")?;
    let tenant = &caller.tenant;
    let name = table
        .parse::<crate::ids::TableName>()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    state
        .db
        .table(tenant, &name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no table {table}")))
}

/// `GET /v1/admin/tables/{table}/settings`: the table's own maintenance
/// settings and the values in effect.
async fn get_settings(
    State(state): State<AppState>,
    axum::extract::Path(table): axum::extract::Path<String>,
    Extension(caller): Extension<Principal>,
) -> Result<Response, ApiError> {
    let t = admin_table(&state, &caller, &table)?;
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
    Extension(caller): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let t = admin_table(&state, &caller, &table)?;
    let body = body_bytes(body)?;
    let settings: crate::db::maintenance::TableSettings = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid settings: {e}")))?;
    settings.validate().map_err(ApiError::bad_request)?;
    let detail = serde_json::to_string(&settings).unwrap_or_default();
    state
        .db
        .table_settings()
        .set(&t, settings)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    state.db.audit(AuditEntry::by(
        &caller,
        "admin",
        format!("PUT /v1/admin/tables/{table}/settings"),
        200,
        detail,
    ));
    Ok(axum::Json(settings_reply(&state, &t)).into_response())
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
) -> Result<Response, ApiError> {
    // Series are labelled by tenant: only admins see them all.
    caller.require(Role::Admin, "read metrics")?;
    let m = crate::metrics::get();
    m.buffer_bytes.set(state.db.buffered_bytes() as i64);
    m.buffer_rows.set(state.db.buffered_rows() as i64);
    m.query_memory_bytes
        .set(state.db.limits().memory_in_use() as i64);
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.render(),
    )
        .into_response())
}

/// Records statements refused as DDL, DML or `SET` in the audit log.
pub(crate) fn audit_refused_statement(
    db: &Arc<Database>,
    caller: &Principal,
    sql: &str,
    e: &impl std::fmt::Display,
) {
    let message = e.to_string();
    if message.contains(crate::query::READ_ONLY_REFUSAL) {
        db.audit(AuditEntry::by(
            caller,
            "ddl_refused",
            sql.chars().take(1000).collect(),
            400,
            message,
        ));
    }
}

/// Gathers a JSON-format result whole, up to `limit` bytes, so that an
/// oversized one is refused with a status rather than cut off midway.
async fn gathered_response(
    mut stream: SendableRecordBatchStream,
    format: OutputFormat,
    limit: usize,
) -> Result<Response, ApiError> {
    let schema = stream.schema();
    let mut encoder = Encoder::new(format, &schema)?;
    let mut out = encoder.start()?.to_vec();
    while let Some(batch) = stream.next().await.transpose()? {
        out.extend_from_slice(&encoder.batch(&batch)?);
        if out.len() > limit {
            return Err(ApiError::bad_request(format!(
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
) -> Result<Response, ApiError> {
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
