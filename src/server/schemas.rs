//! Table schemas and validation rules over HTTP:
//! - `GET /v1/schemas` lists the governed tables;
//! - `GET /v1/schemas/{table}` shows one table's governance (with
//!   `upcast`: each column a migration changes and the SQL it reads as),
//!   `PUT` sets
//!   the event types it accepts (`{"event_types": {"allowed": [...],
//!   "mode": "reject"|"warn"} | null}`);
//! - `POST /v1/schemas/{table}/{event_type}` registers the type's next
//!   schema version (201), `GET` lists its versions;
//! - `DELETE /v1/schemas/{table}/{event_type}/versions/{n}` rolls the
//!   newest version back (`?force=true` when events were written at it);
//! - `POST /v1/validate?table=` checks events (the bodies `/v1/events`
//!   takes) against the rules without storing them.

use super::http::AppState;
use crate::auth::Principal;
use crate::schema::governed::VersionDef;
use crate::service::Error;
use crate::service::schemas::TableSettings;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// `GET /v1/schemas`.
#[utoipa::path(
    get,
    path = "/v1/schemas",
    tag = "schemas",
    responses((status = 200, description = "The governed tables", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
) -> Result<Response, Error> {
    let tables = state.service.list_schemas(&caller)?;
    Ok(axum::Json(serde_json::json!({ "tables": tables })).into_response())
}

/// `GET /v1/schemas/{table}`.
#[utoipa::path(
    get,
    path = "/v1/schemas/{table}",
    tag = "schemas",
    params(("table" = String, Path, description = "A table name", pattern = "^[a-z][a-z0-9_]{0,63}$")),
    responses((status = 200, description = "The table's schemas, settings and upcasts", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn describe(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(table): Path<String>,
) -> Result<Response, Error> {
    let gov = state.service.table_schemas(&caller, &table)?;
    let mut body =
        serde_json::to_value(gov.as_ref()).map_err(|e| Error::internal(e.to_string()))?;
    body["upcast"] = serde_json::to_value(state.service.upcasts(&caller, &table)?)
        .map_err(|e| Error::internal(e.to_string()))?;
    Ok(axum::Json(body).into_response())
}

/// `PUT /v1/schemas/{table}`.
#[utoipa::path(
    put,
    path = "/v1/schemas/{table}",
    tag = "schemas",
    params(("table" = String, Path, description = "A table name", pattern = "^[a-z][a-z0-9_]{0,63}$")),
    request_body(content = ref("#/components/schemas/Object"), content_type = "application/json", description = "The table's settings: allowed event types, modes (README, Validation rules)"),
    responses((status = 200, description = "Set", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn put_table(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(table): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let settings: TableSettings = super::groups::json_body(body)?;
    let gov = state
        .service
        .set_table_schemas(&caller, &table, settings)
        .await?;
    Ok(axum::Json(gov.as_ref()).into_response())
}

/// `POST /v1/schemas/{table}/{event_type}`.
#[utoipa::path(
    post,
    path = "/v1/schemas/{table}/{event_type}",
    tag = "schemas",
    params(("table" = String, Path, description = "A table name", pattern = "^[a-z][a-z0-9_]{0,63}$"), ("event_type" = String, Path, description = "An event type")),
    request_body(content = ref("#/components/schemas/Object"), content_type = "application/json", description = "A schema: fields, rules, mode, migrations (README, Validation rules)"),
    responses((status = 201, description = "Registered as a new version", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn register(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path((table, event_type)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let def: VersionDef = super::groups::json_body(body)?;
    let version = state
        .service
        .register_schema(&caller, &table, &event_type, def)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(version)).into_response())
}

/// `GET /v1/schemas/{table}/{event_type}`.
#[utoipa::path(
    get,
    path = "/v1/schemas/{table}/{event_type}",
    tag = "schemas",
    params(("table" = String, Path, description = "A table name", pattern = "^[a-z][a-z0-9_]{0,63}$"), ("event_type" = String, Path, description = "An event type")),
    responses((status = 200, description = "The event type's schema versions", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn versions(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path((table, event_type)): Path<(String, String)>,
) -> Result<Response, Error> {
    let versions = state
        .service
        .schema_versions(&caller, &table, &event_type)?;
    Ok(axum::Json(serde_json::json!({ "versions": versions })).into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct RollbackParams {
    #[serde(default)]
    force: bool,
}

/// `DELETE /v1/schemas/{table}/{event_type}/versions/{n}[?force=true]`.
#[utoipa::path(
    delete,
    path = "/v1/schemas/{table}/{event_type}/versions/{version}",
    tag = "schemas",
    params(("table" = String, Path, description = "A table name", pattern = "^[a-z][a-z0-9_]{0,63}$"), ("event_type" = String, Path, description = "An event type"), ("version" = u32, Path, description = "The latest version, to remove"), ("force" = Option<bool>, Query, description = "Remove it even if events were written with it")),
    responses((status = 200, description = "Removed; the version now in effect", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn rollback(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path((table, event_type, version)): Path<(String, String, u32)>,
    Query(params): Query<RollbackParams>,
) -> Result<Response, Error> {
    let version = state
        .service
        .rollback_schema(&caller, &table, &event_type, version, params.force)
        .await?;
    Ok(axum::Json(version).into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct ValidateParams {
    table: Option<String>,
}

/// `POST /v1/validate?table=`.
#[utoipa::path(
    post,
    path = "/v1/validate",
    tag = "schemas",
    params(("table" = Option<String>, Query, description = "The table whose rules apply (default events)", pattern = "^[a-z][a-z0-9_]{0,63}$")),
    request_body(description = "Events as for POST /v1/events", content((ref("#/components/schemas/Event") = "application/json"), ("application/x-ndjson"))),
    responses((status = 200, description = "What each event breaks; nothing is stored", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn validate(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Query(params): Query<ValidateParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    caller.require(crate::auth::Role::Writer, "validate events")?;
    let table = params.table.unwrap_or_else(|| "events".to_string());
    let (events, reservation) = super::ingest::read_events(&state, &caller, headers, body).await?;
    let report = state.service.validate(&caller, &table, events).await?;
    drop(reservation);
    Ok(axum::Json(report).into_response())
}
