//! Policies over HTTP:
//! - `GET /v1/policies` lists the tenant's policies (the defaults while
//!   none was changed), `POST` adds one (201; 409 when its name exists);
//! - `GET|PUT|DELETE /v1/policies/{name}` reads, creates or replaces,
//!   and deletes one; a change may name the generation it was based on
//!   (`"generation"` in a PUT body, `?generation=` on DELETE), and is
//!   refused with 409 when the policies changed since;
//! - `POST /v1/policies/defaults` puts the default policies back;
//! - `POST /v1/policies/evaluate` explains a decision.

use super::groups::json_body;
use super::http::AppState;
use crate::auth::Principal;
use crate::service::Error;
use crate::service::policies::Evaluate;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// `GET /v1/policies`.
#[utoipa::path(
    get,
    path = "/v1/policies",
    tag = "policies",
    responses((status = 200, description = "The policies", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
) -> Result<Response, Error> {
    Ok(axum::Json(state.service.list_policies(&caller)?).into_response())
}

/// `POST /v1/policies`.
#[utoipa::path(
    post,
    path = "/v1/policies",
    tag = "policies",
    request_body(content = ref("#/components/schemas/Object"), content_type = "application/json", description = "A policy (README, Policies)"),
    responses((status = 201, description = "Created", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let body: serde_json::Value = json_body(body)?;
    let changed = state.service.create_policy(&caller, body)?;
    Ok((StatusCode::CREATED, axum::Json(changed)).into_response())
}

/// `GET /v1/policies/{name}`.
#[utoipa::path(
    get,
    path = "/v1/policies/{name}",
    tag = "policies",
    params(("name" = String, Path, description = "The policy's name", pattern = "^[a-z][a-z0-9_]{0,63}$")),
    responses((status = 200, description = "The policy", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn show(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Response, Error> {
    Ok(axum::Json(state.service.get_policy(&caller, &name)?).into_response())
}

/// `PUT /v1/policies/{name}`.
#[utoipa::path(
    put,
    path = "/v1/policies/{name}",
    tag = "policies",
    params(("name" = String, Path, description = "The policy's name", pattern = "^[a-z][a-z0-9_]{0,63}$")),
    request_body(content = ref("#/components/schemas/Object"), content_type = "application/json", description = "The policy, with the generation the change is based on"),
    responses((status = 200, description = "Replaced", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn put(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let mut body: serde_json::Value = json_body(body)?;
    let based_on = match body.as_object_mut().and_then(|o| o.remove("generation")) {
        None => None,
        Some(g) => Some(g.as_u64().ok_or_else(|| {
            Error::invalid("generation: give the generation the change is based on, a number")
        })?),
    };
    let changed = state.service.put_policy(&caller, &name, body, based_on)?;
    Ok(axum::Json(changed).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeleteParams {
    generation: Option<u64>,
}

/// `DELETE /v1/policies/{name}[?generation=N]`.
#[utoipa::path(
    delete,
    path = "/v1/policies/{name}",
    tag = "policies",
    params(("name" = String, Path, description = "The policy's name", pattern = "^[a-z][a-z0-9_]{0,63}$"), ("generation" = Option<u64>, Query, description = "The generation the change is based on")),
    responses((status = 200, description = "Deleted", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
    Query(params): Query<DeleteParams>,
) -> Result<Response, Error> {
    let changed = state
        .service
        .delete_policy(&caller, &name, params.generation)?;
    Ok(axum::Json(changed).into_response())
}

/// `POST /v1/policies/defaults`.
#[utoipa::path(
    post,
    path = "/v1/policies/defaults",
    tag = "policies",
    responses((status = 200, description = "The default policies are back", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn defaults(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
) -> Result<Response, Error> {
    Ok(axum::Json(state.service.restore_default_policies(&caller)?).into_response())
}

/// `POST /v1/policies/evaluate`.
#[utoipa::path(
    post,
    path = "/v1/policies/evaluate",
    tag = "policies",
    request_body(content = ref("#/components/schemas/Object"), content_type = "application/json", description = "A request to decide: principal, action, resource"),
    responses((status = 200, description = "The decision and the policies that made it", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn evaluate(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let request: Evaluate = json_body(body)?;
    Ok(axum::Json(state.service.evaluate_policy(&caller, request)?).into_response())
}
