//! Projections over HTTP:
//! - `POST /v1/projections` `{"name", "query" | "dsl", "version"?}` defines one
//!   (201), or says which part of the query cannot be kept up to date
//!   (400);
//! - `GET /v1/projections` lists them, `GET /v1/projections/{name}` shows
//!   one: its position, lag, rows, state size and status;
//! - `GET /v1/projections/{name}/state[?key=…]` returns its rows (those
//!   of one key: one `key` per key column, in order) as a JSON array, with
//!   the position they reflect in `x-allsource-position`;
//! - `POST /v1/projections` with a higher `version` of an existing name
//!   builds that version in the background (202); it replaces the serving
//!   one once caught up, or on `POST /v1/projections/{name}/promote` when
//!   defined with `"promote": "manual"`;
//! - `POST /v1/projections/{name}/rebuild` folds the projection again from
//!   the first event in the background (202);
//! - `DELETE /v1/projections/{name}` deletes one (204).

use super::http::AppState;
use crate::auth::Principal;
use crate::ids::{InvalidName, ProjectionName};
use crate::projection::Language;
use crate::query::output::Encoder;
use crate::service::Error;
use crate::service::projections::{CreateProjection, Created};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

fn name_of(name: &str) -> Result<ProjectionName, Error> {
    name.parse()
        .map_err(|e: InvalidName| Error::invalid(e.to_string()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    /// SQL text; or `dsl`, a DSL document.
    query: Option<String>,
    dsl: Option<serde_json::Value>,
    version: Option<u32>,
    /// `"auto"` (the default) or `"manual"`: how a next version replaces
    /// the serving one once caught up.
    promote: Option<Promote>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum Promote {
    Auto,
    Manual,
}

/// `POST /v1/projections`.
#[utoipa::path(
    post,
    path = "/v1/projections",
    tag = "projections",
    request_body(content = inline(CreateBody), content_type = "application/json"),
    responses((status = 201, description = "Defined", body = ref("#/components/schemas/Object"), content_type = "application/json"), (status = 202, description = "A next version is being built", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let body: CreateBody = super::groups::json_body(body)?;
    let (query, language) = match (body.query, body.dsl) {
        (Some(sql), None) => (sql, Language::Sql),
        (None, Some(doc)) => (doc.to_string(), Language::Dsl),
        _ => {
            return Err(Error::invalid(
                "give the projection's query as \"query\" (SQL text) or \"dsl\" (a DSL document), one of the two",
            ));
        }
    };
    let request = CreateProjection {
        name: name_of(&body.name)?,
        version: body.version.unwrap_or(1),
        query,
        language,
        manual_promote: body.promote == Some(Promote::Manual),
    };
    let (info, created) = state.service.create_projection(&caller, request).await?;
    let status = match created {
        Created::New => StatusCode::CREATED,
        Created::NextVersion => StatusCode::ACCEPTED,
    };
    Ok((status, axum::Json(info)).into_response())
}

/// `POST /v1/projections/{name}/rebuild`.
#[utoipa::path(
    post,
    path = "/v1/projections/{name}/rebuild",
    tag = "projections",
    params(("name" = String, Path, description = "The projection's name", pattern = "^[a-z][a-z0-9_]{0,63}$")),
    responses((status = 202, description = "Rebuilding in the background", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn rebuild(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Response, Error> {
    let info = state
        .service
        .rebuild_projection(&caller, &name_of(&name)?)
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(info)).into_response())
}

/// `POST /v1/projections/{name}/promote`.
#[utoipa::path(
    post,
    path = "/v1/projections/{name}/promote",
    tag = "projections",
    params(("name" = String, Path, description = "The projection's name", pattern = "^[a-z][a-z0-9_]{0,63}$")),
    responses((status = 200, description = "Promoted", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn promote(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Response, Error> {
    let info = state
        .service
        .promote_projection(&caller, &name_of(&name)?)?;
    Ok(axum::Json(info).into_response())
}

/// `GET /v1/projections`.
#[utoipa::path(
    get,
    path = "/v1/projections",
    tag = "projections",
    responses((status = 200, description = "The projections", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
) -> Result<Response, Error> {
    let projections = state.service.list_projections(&caller)?;
    Ok(axum::Json(serde_json::json!({"projections": projections})).into_response())
}

/// `GET /v1/projections/{name}`.
#[utoipa::path(
    get,
    path = "/v1/projections/{name}",
    tag = "projections",
    params(("name" = String, Path, description = "The projection's name", pattern = "^[a-z][a-z0-9_]{0,63}$")),
    responses((status = 200, description = "The projection: position, lag, rows, status", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn describe(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Response, Error> {
    let info = state
        .service
        .describe_projection(&caller, &name_of(&name)?)?;
    Ok(axum::Json(info).into_response())
}

/// `GET /v1/projections/{name}/state`.
#[utoipa::path(
    get,
    path = "/v1/projections/{name}/state",
    tag = "projections",
    params(("name" = String, Path, description = "The projection's name", pattern = "^[a-z][a-z0-9_]{0,63}$"), ("key" = Option<Vec<String>>, Query, description = "One value per key column, in order: the rows of that key"), ("format" = Option<String>, Query, description = "json (the default), ndjson, csv, arrow or parquet", pattern = "^(json|ndjson|csv|arrow|parquet)$")),
    responses((status = 200, description = "The rows, with the position they reflect in x-allsource-position", content((ref("#/components/schemas/Rows") = "application/json"), ("application/x-ndjson"), ("text/csv"), ("application/vnd.apache.arrow.stream"), ("application/vnd.apache.parquet"))))
)]
pub(super) async fn rows(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: axum::http::HeaderMap,
) -> Result<Response, Error> {
    let mut key = Vec::new();
    let mut format = None;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "key" => key.push(v.into_owned()),
            "format" => format = Some(v.into_owned()),
            other => {
                return Err(Error::invalid(format!(
                    "unknown parameter {other:?}; the state takes key=… (once per key column) and format=…"
                )));
            }
        }
    }
    let format = super::queries::output_format(format.as_deref(), &headers)?;
    let key = (!key.is_empty()).then_some(key.as_slice());
    let (batch, position) = state
        .service
        .projection_rows(&caller, &name_of(&name)?, key)?;
    let schema = batch.schema();
    let encode = || -> datafusion::error::Result<Vec<u8>> {
        let mut encoder = Encoder::new(format, &schema)?;
        let mut out = encoder.start()?.to_vec();
        out.extend_from_slice(&encoder.batch(&batch)?);
        out.extend_from_slice(&encoder.finish(&schema)?);
        Ok(out)
    };
    let body = encode()?;
    if body.len() > state.max_result_bytes {
        return Err(Error::invalid(format!(
            "the projection's rows are {} bytes as {}, more than {} (--max-result-bytes): read one key with ?key=…, or query projections.{} in SQL with a LIMIT",
            body.len(),
            format.content_type(),
            state.max_result_bytes,
            name
        )));
    }
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert("x-allsource-position", HeaderValue::from(position));
    Ok(response)
}

/// `DELETE /v1/projections/{name}`.
#[utoipa::path(
    delete,
    path = "/v1/projections/{name}",
    tag = "projections",
    params(("name" = String, Path, description = "The projection's name", pattern = "^[a-z][a-z0-9_]{0,63}$")),
    responses((status = 204, description = "Deleted"))
)]
pub(super) async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Response, Error> {
    state.service.delete_projection(&caller, &name_of(&name)?)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
