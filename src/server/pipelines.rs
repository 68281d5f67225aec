//! Pipelines over HTTP:
//! - `POST /v1/pipelines` `{"name", "version"?, "source": {"table",
//!   "start"?}, "operators": [...], "sink": {"table"}}` defines one and
//!   starts it (201), or names the operator that cannot run and why (400);
//! - `GET /v1/pipelines` lists them, `GET /v1/pipelines/{name}` shows one:
//!   its status, position, lag and per-operator counters;
//! - `POST /v1/pipelines/{name}/pause` and `/resume` stop and start it
//!   where it is;
//! - `DELETE /v1/pipelines/{name}` deletes one (204); what it wrote stays.

use super::http::AppState;
use crate::auth::Principal;
use crate::service::Error;
use crate::service::pipelines::CreatePipeline;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// `POST /v1/pipelines`.
#[utoipa::path(
    post,
    path = "/v1/pipelines",
    tag = "pipelines",
    request_body(content = ref("#/components/schemas/Object"), content_type = "application/json", description = "{name, version?, source: {table, start?}, operators: [...], sink: {table}} (README, Pipelines)"),
    responses((status = 201, description = "Defined and started", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let body: CreatePipeline = super::groups::json_body(body)?;
    let info = state.service.create_pipeline(&caller, body).await?;
    Ok((StatusCode::CREATED, axum::Json(info)).into_response())
}

/// `GET /v1/pipelines`.
#[utoipa::path(
    get,
    path = "/v1/pipelines",
    tag = "pipelines",
    responses((status = 200, description = "The pipelines", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
) -> Result<Response, Error> {
    let pipelines = state.service.list_pipelines(&caller)?;
    Ok(axum::Json(serde_json::json!({"pipelines": pipelines})).into_response())
}

/// `GET /v1/pipelines/{name}`.
#[utoipa::path(
    get,
    path = "/v1/pipelines/{name}",
    tag = "pipelines",
    params(("name" = String, Path, description = "The pipeline's name", pattern = "^[a-z][a-z0-9_]{0,63}$")),
    responses((status = 200, description = "The pipeline: status, position, lag, counters", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn describe(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Response, Error> {
    Ok(axum::Json(state.service.describe_pipeline(&caller, &name)?).into_response())
}

/// `POST /v1/pipelines/{name}/pause`.
#[utoipa::path(
    post,
    path = "/v1/pipelines/{name}/pause",
    tag = "pipelines",
    params(("name" = String, Path, description = "The pipeline's name", pattern = "^[a-z][a-z0-9_]{0,63}$")),
    responses((status = 200, description = "Paused", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn pause(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Response, Error> {
    Ok(axum::Json(state.service.pause_pipeline(&caller, &name).await?).into_response())
}

/// `POST /v1/pipelines/{name}/resume`.
#[utoipa::path(
    post,
    path = "/v1/pipelines/{name}/resume",
    tag = "pipelines",
    params(("name" = String, Path, description = "The pipeline's name", pattern = "^[a-z][a-z0-9_]{0,63}$")),
    responses((status = 200, description = "Resumed", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn resume(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Response, Error> {
    Ok(axum::Json(state.service.resume_pipeline(&caller, &name)?).into_response())
}

/// `DELETE /v1/pipelines/{name}`.
#[utoipa::path(
    delete,
    path = "/v1/pipelines/{name}",
    tag = "pipelines",
    params(("name" = String, Path, description = "The pipeline's name", pattern = "^[a-z][a-z0-9_]{0,63}$")),
    responses((status = 204, description = "Deleted"))
)]
pub(super) async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Response, Error> {
    state.service.delete_pipeline(&caller, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
