//! Administration over HTTP: `POST /v1/admin/backup`, `POST
//! /v1/admin/compact` and a table's maintenance settings.

use super::http::{AppState, body_bytes};
use crate::auth::Principal;
use crate::service::Error;
use crate::service::backup::BackupScope;
use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
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
#[utoipa::path(
    post,
    path = "/v1/admin/backup",
    tag = "admin",
    request_body(content = inline(BackupBody), content_type = "application/json"),
    responses((status = 200, description = "What was copied", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn backup(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let body = body_bytes(body)?;
    let request: BackupBody = crate::service::json_object(&body).map_err(|e| {
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
pub(super) struct CompactParams {
    table: Option<String>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    progress: bool,
}

/// `POST /v1/admin/compact[?table=T][&dry_run=true][&progress=true]`: runs
/// maintenance now and answers with what it did. With `progress=true` the
/// answer is NDJSON: progress lines, then `{"reports": [...]}`.
#[utoipa::path(
    post,
    path = "/v1/admin/compact",
    tag = "admin",
    params(("table" = Option<String>, Query, description = "One table (default: all of the tenant's)", pattern = "^[a-z][a-z0-9_]{0,63}$"), ("dry_run" = Option<bool>, Query, description = "Say what would be done"), ("progress" = Option<bool>, Query, description = "Answer NDJSON progress lines, then the reports")),
    responses((status = 200, description = "The reports (NDJSON with progress=true)", content((ref("#/components/schemas/Object") = "application/json"), ("application/x-ndjson"))))
)]
pub(super) async fn compact(
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
        let reports = service.compact(&caller, run, |_| {}).await?;
        return Ok(axum::Json(serde_json::json!({ "reports": reports })).into_response());
    }
    // Progress: the run goes on in a task; its lines stream as they come.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Bytes, std::io::Error>>();
    let line = |v: serde_json::Value| Ok(Bytes::from(format!("{v}\n")));
    let progress_tx = tx.clone();
    let progress = move |p: crate::db::maintenance::Progress| {
        let _ = progress_tx.send(line(serde_json::json!({ "progress": p })));
    };
    tokio::spawn(async move {
        let last = match service.compact(&caller, run, progress).await {
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
#[utoipa::path(
    get,
    path = "/v1/admin/tables/{table}/settings",
    tag = "admin",
    params(("table" = String, Path, description = "A table name", pattern = "^[a-z][a-z0-9_]{0,63}$")),
    responses((status = 200, description = "The table's own settings and those in effect", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn get_settings(
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
#[utoipa::path(
    put,
    path = "/v1/admin/tables/{table}/settings",
    tag = "admin",
    params(("table" = String, Path, description = "A table name", pattern = "^[a-z][a-z0-9_]{0,63}$")),
    request_body(content = ref("#/components/schemas/Object"), content_type = "application/json", description = "{\"retention\": \"30days\", \"maintenance_interval\": \"1h\"} (null follows the flags)"),
    responses((status = 200, description = "Set; in effect at the next run", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn put_settings(
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
