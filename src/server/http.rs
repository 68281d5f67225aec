//! HTTP routes: ingest, SQL, the query DSL, admin calls, health. Each
//! handler reads its request, calls the [`Service`] and writes the answer;
//! errors become statuses in [`super::error`].

use crate::auth::Principal;
use crate::service::caller::{Credentials, RequestInfo};
use crate::service::{Error, Kind, Service};
use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use std::sync::Arc;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

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
    // Only requests that match a route's path and method are
    // authenticated; the rest get their 404 or 405 first.
    let auth = |(schemas, paths, router): UtoipaMethodRouter<AppState>| {
        let layer = axum::middleware::from_fn_with_state(state.clone(), authenticate);
        (schemas, paths, router.route_layer(layer))
    };
    let (routes, api) = OpenApiRouter::with_openapi(super::openapi::base())
        .routes(routes!(super::console::page))
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(auth(routes!(metrics)))
        .routes(auth(routes!(super::ingest::ingest_events)))
        .routes(auth(routes!(super::queries::sql)))
        .routes(auth(routes!(super::queries::dsl_query)))
        .routes(auth(routes!(super::queries::read_stream)))
        .routes(auth(routes!(super::live::subscribe)))
        .routes(auth(routes!(super::groups::create, super::groups::list)))
        .routes(auth(routes!(
            super::groups::describe,
            super::groups::delete
        )))
        .routes(auth(routes!(super::groups::reset)))
        .routes(auth(routes!(super::groups::consume)))
        .routes(auth(routes!(
            super::projections::create,
            super::projections::list
        )))
        .routes(auth(routes!(
            super::projections::describe,
            super::projections::delete
        )))
        .routes(auth(routes!(super::projections::rows)))
        .routes(auth(routes!(super::projections::rebuild)))
        .routes(auth(routes!(super::projections::promote)))
        .routes(auth(routes!(
            super::pipelines::create,
            super::pipelines::list
        )))
        .routes(auth(routes!(
            super::pipelines::describe,
            super::pipelines::delete
        )))
        .routes(auth(routes!(super::pipelines::pause)))
        .routes(auth(routes!(super::pipelines::resume)))
        .routes(auth(routes!(
            super::replay::replay,
            super::replay::replay_socket
        )))
        .routes(auth(routes!(super::schemas::list)))
        .routes(auth(routes!(
            super::schemas::describe,
            super::schemas::put_table
        )))
        .routes(auth(routes!(
            super::schemas::register,
            super::schemas::versions
        )))
        .routes(auth(routes!(super::schemas::rollback)))
        .routes(auth(routes!(super::schemas::validate)))
        .routes(auth(routes!(
            super::policies::list,
            super::policies::create
        )))
        .routes(auth(routes!(super::policies::defaults)))
        .routes(auth(routes!(super::policies::evaluate)))
        .routes(auth(routes!(
            super::policies::show,
            super::policies::put,
            super::policies::delete
        )))
        .routes(auth(routes!(super::admin::compact)))
        .routes(auth(routes!(super::admin::backup)))
        .routes(auth(routes!(
            super::admin::get_settings,
            super::admin::put_settings
        )))
        .split_for_parts();
    let description = Bytes::from(super::openapi::finish(api).to_string());
    routes
        .route(
            OPENAPI_PATH,
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], description) }),
        )
        .layer(axum::middleware::from_fn(json_rejections))
        .nest_service(
            "/mcp",
            tower::ServiceBuilder::new()
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    authenticate,
                ))
                .service(super::mcp::service(
                    state.service.clone(),
                    state.service.closing(),
                )),
        )
        .layer(DefaultBodyLimit::max(limit))
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
            "the server is starting: recovering its tables (the entity versions stored, then the write-ahead log)",
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
/// can be matched. Also times the request, by route, in
/// `allsource_http_request_seconds`.
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
    let started = std::time::Instant::now();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let mut response = next.run(request).instrument(span).await;
    crate::metrics::get()
        .http_seconds
        .with_label_values(&[&route, crate::metrics::outcome(response.status().as_u16())])
        .observe(started.elapsed().as_secs_f64());
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// Where the API's OpenAPI description is served (without credentials).
pub const OPENAPI_PATH: &str = "/openapi.json";

/// `GET /health`: 200 once the WAL is replayed and the WAL writer works.
/// (While replaying, the starting router answers.)
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    responses((status = 200, description = "The server is up and its write-ahead log works", body = inline(serde_json::Value), content_type = "application/json"))
)]
async fn health(State(state): State<AppState>) -> Result<Response, Error> {
    state.service.health()?;
    Ok(axum::Json(serde_json::json!({"status": "ok"})).into_response())
}

/// `GET /ready`: the same answer as `/health`, for readiness probes.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "health",
    responses((status = 200, description = "The server is ready: the write-ahead log is replayed", body = inline(serde_json::Value), content_type = "application/json"))
)]
async fn ready(state: State<AppState>) -> Result<Response, Error> {
    health(state).await
}

/// Largest refusal text an extractor writes that is turned into JSON.
const REJECTION_BYTES: usize = 64 * 1024;

/// Gives the refusals axum's extractors write as text (a query string, a
/// path segment or a body that does not parse) the JSON shape of every
/// other error, `{"error": ...}`, with their status and headers.
async fn json_rejections(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    let plain = response.status().is_client_error()
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/plain"));
    if !plain {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, REJECTION_BYTES)
        .await
        .unwrap_or_default();
    let body = serde_json::json!({ "error": String::from_utf8_lossy(&text) }).to_string();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// Header by which a request names the tenant it acts on. Tokens of the
/// admin role may name any tenant; others only their own (or none).
pub const TENANT_HEADER: &str = crate::service::caller::TENANT_CREDENTIAL;

/// Authenticates a request (every route's but `/health`, `/ready` and the
/// API's description), and leaves
/// its [`Principal`] in the request's extensions for the handlers.
async fn authenticate(
    State(state): State<AppState>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    // A nested service (`/mcp`) sees its path without the prefix; the
    // record names the path the client asked for.
    let asked = request
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or(path, |u| u.0.path());
    let info = RequestInfo {
        action: format!("{} {asked}", request.method()),
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

pub(super) fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Error> {
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

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
async fn metrics(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
) -> Result<Response, Error> {
    let text = state.service.metrics_text(&caller)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
