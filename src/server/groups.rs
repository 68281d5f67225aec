//! Durable subscriptions (consumer groups) over HTTP:
//! - `POST /v1/subscriptions` `{"name", "table", "filter"?, "where"?,
//!   "start"?}` makes one (201);
//! - `GET /v1/subscriptions` lists them, `GET /v1/subscriptions/{name}`
//!   shows one with its lag in events and seconds;
//! - `POST /v1/subscriptions/{name}/reset` `{"start"}` moves it;
//! - `DELETE /v1/subscriptions/{name}` deletes it;
//! - `GET /v1/subscriptions/{name}/consume` (WebSocket) joins it as a
//!   consumer.
//!
//! A consumer gets the frames of a live stream ([`super::ws`], JSON pages)
//! plus `{"assigned": {"member", "members", "generation", "after"}}` when
//! the group's consumers change (its events start again after `after`,
//! so some may come twice). Its pages and heartbeats carry their
//! `generation`; it sends `{"ack": N, "generation": G}` once done with
//! every event it got in generation G up to position N, and the server
//! answers `{"acked": N, "committed": C}` once that is stored (with
//! `"stale": true`, changing nothing, for an older generation).

use super::http::AppState;
use super::live::{Refused, caller_of, is_websocket};
use super::ws::{self, Framing, Inbound, OnSlow};
use crate::auth::Principal;
use crate::ids::{GroupName, InvalidName};
use crate::service::groups::{CreateGroup, Delivery, Member};
use crate::service::subscribe::Start;
use crate::service::{Error, Service};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::WebSocket;
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

fn name_of(name: &str) -> Result<GroupName, Error> {
    name.parse()
        .map_err(|e: InvalidName| Error::invalid(e.to_string()))
}

pub(super) fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Error> {
    let body = body.map_err(|e| Error::invalid(e.body_text()))?;
    crate::service::json_object(&body).map_err(|e| Error::invalid(format!("request body: {e}")))
}

fn start_of(start: Option<&str>) -> Result<Start, Error> {
    start.map_or(Ok(Start::Now), |s| Start::parse(s).map_err(Error::invalid))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    table: String,
    filter: Option<String>,
    #[serde(rename = "where")]
    where_dsl: Option<serde_json::Value>,
    /// `earliest`, `now` (the default), `after:N` or an RFC 3339 time.
    start: Option<String>,
    /// Deliver events as written, without schema migrations.
    #[serde(default)]
    raw: bool,
}

/// `POST /v1/subscriptions`.
#[utoipa::path(
    post,
    path = "/v1/subscriptions",
    tag = "subscriptions",
    request_body(content = inline(CreateBody), content_type = "application/json"),
    responses((status = 201, description = "Created", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let body: CreateBody = json_body(body)?;
    let request = CreateGroup {
        name: name_of(&body.name)?,
        table: body
            .table
            .parse()
            .map_err(|e: InvalidName| Error::invalid(format!("table: {e}")))?,
        filter: body.filter,
        where_dsl: body.where_dsl,
        start: start_of(body.start.as_deref())?,
        raw: body.raw,
    };
    let info = state.service.create_group(&caller, request).await?;
    Ok((StatusCode::CREATED, axum::Json(info)).into_response())
}

/// `GET /v1/subscriptions`.
#[utoipa::path(
    get,
    path = "/v1/subscriptions",
    tag = "subscriptions",
    responses((status = 200, description = "The subscriptions", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
) -> Result<Response, Error> {
    let groups = state.service.list_groups(&caller)?;
    Ok(axum::Json(serde_json::json!({"subscriptions": groups})).into_response())
}

/// `GET /v1/subscriptions/{name}`.
#[utoipa::path(
    get,
    path = "/v1/subscriptions/{name}",
    tag = "subscriptions",
    params(("name" = String, Path, description = "The subscription's name", pattern = "^[a-z][a-z0-9_]{0,63}$")),
    responses((status = 200, description = "The subscription: position, lag, members", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn describe(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Response, Error> {
    let info = state
        .service
        .describe_group(&caller, &name_of(&name)?)
        .await?;
    Ok(axum::Json(info).into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    start: String,
}

/// `POST /v1/subscriptions/{name}/reset`.
#[utoipa::path(
    post,
    path = "/v1/subscriptions/{name}/reset",
    tag = "subscriptions",
    params(("name" = String, Path, description = "The subscription's name", pattern = "^[a-z][a-z0-9_]{0,63}$")),
    request_body(content = inline(ResetBody), content_type = "application/json"),
    responses((status = 200, description = "Reset", body = ref("#/components/schemas/Object"), content_type = "application/json"))
)]
pub(super) async fn reset(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let body: ResetBody = json_body(body)?;
    let start = start_of(Some(&body.start))?;
    let info = state
        .service
        .reset_group(&caller, &name_of(&name)?, start)
        .await?;
    Ok(axum::Json(info).into_response())
}

/// `DELETE /v1/subscriptions/{name}`.
#[utoipa::path(
    delete,
    path = "/v1/subscriptions/{name}",
    tag = "subscriptions",
    params(("name" = String, Path, description = "The subscription's name", pattern = "^[a-z][a-z0-9_]{0,63}$")),
    responses((status = 204, description = "Deleted"))
)]
pub(super) async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Response, Error> {
    state
        .service
        .delete_group(&caller, &name_of(&name)?)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsumeParams {
    heartbeat_ms: Option<u64>,
    // Read by authentication, for clients that cannot send headers.
    #[allow(dead_code)]
    token: Option<String>,
    #[allow(dead_code)]
    tenant: Option<String>,
}

/// `GET /v1/subscriptions/{name}/consume`: a WebSocket.
#[utoipa::path(
    get,
    path = "/v1/subscriptions/{name}/consume",
    tag = "subscriptions",
    params(("name" = String, Path, description = "The subscription's name", pattern = "^[a-z][a-z0-9_]{0,63}$"), ("heartbeat_ms" = Option<u64>, Query, description = "Heartbeat interval"), ("token" = Option<String>, Query, description = "Bearer token, for clients that cannot send headers"), ("tenant" = Option<String>, Query, description = "Tenant, for clients that cannot send headers")),
    responses((status = 101, description = "Switched to a WebSocket: events to consume and acknowledge"))
)]
pub(super) async fn consume(
    State(state): State<AppState>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    let (mut parts, _body) = request.into_parts();
    if !is_websocket(&parts.headers) {
        let e = match parts.extensions.get::<Refused>() {
            Some(Refused(e)) => e.clone(),
            None => Error::invalid(
                "consumers connect over WebSocket (send Upgrade: websocket); /v1/stream also serves NDJSON",
            ),
        };
        return e.into_response();
    }
    let caller = caller_of(&parts);
    let heartbeat = Query::<ConsumeParams>::try_from_uri(&parts.uri)
        .map_err(|e| Error::invalid(e.body_text()))
        .and_then(|Query(p)| super::live::heartbeat(p.heartbeat_ms));
    let name = name_of(&name);
    let opened = match (caller, name, heartbeat) {
        (Ok(c), Ok(n), Ok(h)) => Ok((c, n, h)),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
    };
    let service = state.service.clone();
    ws::accept(&mut parts, &state, move |socket| {
        consume_socket(service, socket, opened)
    })
    .await
}

/// What the consumer loop does next.
enum Step {
    Deliver(Result<Delivery, Error>),
    Message(Option<Inbound>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ack {
    ack: u64,
    /// The generation of the page or heartbeat acknowledged.
    generation: u64,
}

async fn consume_socket(
    service: Arc<Service>,
    socket: WebSocket,
    opened: Result<(Principal, GroupName, Duration), Error>,
) {
    // A consumer that stops reading for good is closed (its part goes to
    // the others at the rebalance), not waited for: its send times out.
    let on_slow = OnSlow::Drop { max_lag: u64::MAX };
    let (mut out, mut inbox) = ws::split(socket, Framing::JsonPages, on_slow);
    let (caller, name, heartbeat) = match opened {
        Ok(o) => o,
        Err(e) => {
            out.fail(&e).await;
            return;
        }
    };
    let mut member: Member = match service.join_group(&caller, &name).await {
        Ok(m) => m,
        Err(e) => {
            out.fail(&e).await;
            return;
        }
    };
    loop {
        let step = tokio::select! {
            next = member.next(heartbeat) => Step::Deliver(next),
            message = inbox.recv() => Step::Message(message),
        };
        let sent = match step {
            Step::Deliver(Ok(Delivery::Assigned {
                member: part,
                members,
                generation,
                after,
            })) => {
                out.json(serde_json::json!({"assigned": {
                    "member": part, "members": members,
                    "generation": generation, "after": after}}))
                    .await
            }
            Step::Deliver(Ok(Delivery::Events(batches))) => {
                let generation = Some(member.generation());
                out.events(&batches, member.position(), generation).await
            }
            Step::Deliver(Ok(Delivery::Idle)) => {
                out.heartbeat(member.position(), Some(member.generation()))
                    .await
            }
            Step::Deliver(Err(e)) => Err(out.fail(&e).await),
            Step::Message(None) => return,
            Step::Message(Some(Inbound::Text(text))) => {
                let acked = serde_json::from_str::<Ack>(&text).map_err(|e| {
                    Error::invalid(format!(
                        "a consumer sends only {{\"ack\": position, \"generation\": g}}: {e}"
                    ))
                });
                match acked {
                    Ok(Ack { ack, generation }) => match member.ack(ack, generation).await {
                        Ok(done) => {
                            let mut reply =
                                serde_json::json!({"acked": ack, "committed": done.committed});
                            if done.stale {
                                reply["stale"] = true.into();
                            }
                            out.json(reply).await
                        }
                        Err(e) => Err(out.fail(&e).await),
                    },
                    Err(e) => Err(out.fail(&e).await),
                }
            }
        };
        if sent.is_err() {
            return;
        }
    }
}
