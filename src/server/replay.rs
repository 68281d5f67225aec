//! `POST /v1/replay` (and `GET /v1/replay` as a WebSocket): a stored range
//! of a table's events delivered again ([`crate::service::replay`]).
//!
//! Over HTTP the answer is NDJSON: `{"event": row}` lines, a
//! `{"progress": {"events": N, "position": P}}` line about once a second,
//! and a last `{"done": {"events": N, "after": A, "end": E}}` (or
//! `{"error": ..., "status": S}`). With `into`, the events are written to
//! another table instead and only progress and the final count come back
//! (`done` then also has `stored`, `duplicates` and `positions`). Over
//! WebSocket the frames are those of a live stream (JSON pages), then
//! `{"done": ...}` and a normal close.

use super::http::AppState;
use super::live::{caller_of, error_frame, event_frames, is_websocket};
use super::ws::{self, Framing, OnSlow};
use crate::auth::Principal;
use crate::ids::{InvalidName, TableName};
use crate::service::replay::{End, Order, Replay, ReplayRequest};
use crate::service::subscribe::Start;
use crate::service::{Error, Service};
use axum::body::{Body, Bytes};
use axum::extract::ws::WebSocket;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often progress is reported.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplayParams {
    table: String,
    /// `earliest` (the default), `after:N` or an RFC 3339 time.
    from: Option<String>,
    /// `position:N` or an RFC 3339 time; default: the last event now.
    to: Option<String>,
    filter: Option<String>,
    /// A DSL condition (in a query string, its JSON text).
    #[serde(rename = "where")]
    where_dsl: Option<serde_json::Value>,
    /// 0 (the default): as fast as possible; 1: the original pace.
    speed: Option<f64>,
    /// `sequential` (the default) or `parallel`.
    order: Option<String>,
    /// Readers of a parallel replay (default 4).
    parallelism: Option<u32>,
    /// A table to write the events to instead of sending them.
    into: Option<String>,
    #[allow(dead_code)]
    token: Option<String>,
    #[allow(dead_code)]
    tenant: Option<String>,
}

fn table_name(what: &str, name: &str) -> Result<TableName, Error> {
    name.parse()
        .map_err(|e: InvalidName| Error::invalid(format!("{what}: {e}")))
}

impl ReplayParams {
    fn request(self) -> Result<(ReplayRequest, Option<TableName>), Error> {
        let table = table_name("table", &self.table)?;
        let from = match &self.from {
            None => Start::Earliest,
            Some(s) => {
                Start::parse(s).map_err(|e| Error::invalid(e.replacen("start:", "from:", 1)))?
            }
        };
        let to = self
            .to
            .as_deref()
            .map(End::parse)
            .transpose()
            .map_err(Error::invalid)?;
        let where_dsl = match self.where_dsl {
            Some(serde_json::Value::String(text)) => Some(
                serde_json::from_str(&text)
                    .map_err(|e| Error::invalid(format!("where: not a JSON DSL condition: {e}")))?,
            ),
            other => other,
        };
        let order = match (self.order.as_deref(), self.parallelism) {
            (None | Some("sequential"), None) => Order::Sequential,
            (None | Some("sequential"), Some(_)) => {
                return Err(Error::invalid("parallelism goes with order=parallel"));
            }
            (Some("parallel"), n) => Order::Parallel(n.unwrap_or(4)),
            (Some(other), _) => {
                return Err(Error::invalid(format!(
                    "order: {other:?} is not sequential or parallel"
                )));
            }
        };
        let into = self
            .into
            .as_deref()
            .map(|t| table_name("into", t))
            .transpose()?;
        if into.as_ref() == Some(&table) {
            return Err(Error::invalid(
                "into: replay into another table than the one read",
            ));
        }
        Ok((
            ReplayRequest {
                table,
                from,
                to,
                filter: self.filter,
                where_dsl,
                speed: self.speed.unwrap_or(0.0),
                order,
            },
            into,
        ))
    }
}

/// `POST /v1/replay`.
#[utoipa::path(
    post,
    path = "/v1/replay",
    tag = "replay",
    request_body(content = inline(ReplayParams), content_type = "application/json"),
    responses((status = 200, description = "The events in order, one JSON object per line, with progress lines and a summary line at the end", content_type = "application/x-ndjson"))
)]
pub(super) async fn replay(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let answer = async {
        let caller = caller_of(&parts)?;
        let body = axum::body::to_bytes(body, state.max_body_bytes)
            .await
            .map_err(|_| super::http::body_too_large())?;
        let params: ReplayParams = crate::service::json_object(&body)
            .map_err(|e| Error::invalid(format!("request body: {e}")))?;
        let (request, into) = params.request()?;
        if into.is_some() {
            state.service.admit_ingest(&caller)?;
        }
        let replay = state.service.replay(&caller, request).await?;
        Ok::<_, Error>(ndjson(state.service.clone(), caller, replay, into))
    };
    match answer.await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The replay's frames as a streamed NDJSON response.
fn ndjson(
    service: Arc<Service>,
    caller: Principal,
    mut replay: Replay,
    into: Option<TableName>,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        let mut upload = into.map(|t| service.upload(&caller, t));
        let (mut events, mut last, mut reported) = (0u64, replay.after, Instant::now());
        let mut failure = None;
        while let Some(page) = replay.next().await {
            let batches = match page {
                Ok(b) => b,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            events += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            last = last.max(
                batches
                    .iter()
                    .filter_map(crate::service::subscribe::last_position)
                    .max()
                    .unwrap_or(0),
            );
            match &mut upload {
                Some(upload) => {
                    for batch in batches {
                        if let Err(e) = upload.push(batch).await {
                            failure = Some(e);
                            break;
                        }
                    }
                    if failure.is_some() {
                        break;
                    }
                }
                None => {
                    if tx.send(event_frames(&batches)).await.is_err() {
                        return;
                    }
                }
            }
            if reported.elapsed() >= PROGRESS_EVERY {
                reported = Instant::now();
                let frame = json!({"progress": {"events": events, "position": last}});
                if tx.send(Bytes::from(format!("{frame}\n"))).await.is_err() {
                    return;
                }
            }
        }
        let mut done = json!({"events": events, "after": replay.after, "end": replay.end});
        if let Some(upload) = upload {
            match upload.finish(failure.take()).await {
                Ok(totals) => {
                    done["stored"] = json!(totals.accepted);
                    done["duplicates"] = json!(totals.duplicates);
                    done["positions"] = json!(totals.positions);
                }
                Err(e) => failure = Some(e),
            }
        }
        let last = match failure {
            Some(e) => error_frame(&e),
            None => Bytes::from(format!("{}\n", json!({"done": done}))),
        };
        let _ = tx.send(last).await;
    });
    let frames = tokio_stream_from(rx).map(Ok::<_, std::io::Error>);
    let mut response = Response::new(Body::from_stream(frames));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> impl futures::Stream<Item = Bytes> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// `GET /v1/replay` with `Upgrade: websocket`.
#[utoipa::path(
    get,
    path = "/v1/replay",
    tag = "replay",
    params(("table" = String, Query, description = "The table to replay", pattern = "^[a-z][a-z0-9_]{0,63}$"), ("from" = Option<String>, Query, description = "earliest (the default), after:N or an RFC 3339 time"), ("to" = Option<String>, Query, description = "Last position or time"), ("filter" = Option<String>, Query, description = "A SQL condition"), ("speed" = Option<f64>, Query, description = "0 (as fast as possible) or a multiple of the recorded pace"), ("order" = Option<String>, Query, description = "sequential (the default) or parallel", pattern = "^(sequential|parallel)$"), ("parallelism" = Option<u32>, Query, description = "With order=parallel"), ("into" = Option<String>, Query, description = "A table to write the events into instead of returning them"), ("token" = Option<String>, Query, description = "Bearer token, for clients that cannot send headers"), ("tenant" = Option<String>, Query, description = "Tenant, for clients that cannot send headers")),
    responses((status = 101, description = "Switched to a WebSocket"))
)]
pub(super) async fn replay_socket(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    if !is_websocket(&parts.headers) {
        return Error::invalid(
            "GET /v1/replay is a WebSocket (send Upgrade: websocket); over plain HTTP, POST /v1/replay",
        )
        .into_response();
    }
    let caller = caller_of(&parts);
    let request = Query::<ReplayParams>::try_from_uri(&parts.uri)
        .map_err(|e| Error::invalid(e.body_text()))
        .and_then(|Query(p)| p.request())
        .and_then(|(r, into)| match into {
            None => Ok(r),
            Some(_) => Err(Error::invalid(
                "into: a replay into a table is a POST /v1/replay",
            )),
        });
    let service = state.service.clone();
    ws::accept(&mut parts, &state, move |socket| {
        replay_to_socket(service, socket, caller, request)
    })
    .await
}

async fn replay_to_socket(
    service: Arc<Service>,
    socket: WebSocket,
    caller: Result<Principal, Error>,
    request: Result<ReplayRequest, Error>,
) {
    let (mut out, mut inbox) = ws::split(socket, Framing::JsonPages, OnSlow::CatchUp);
    let opened = match (caller, request) {
        (Ok(c), Ok(r)) => service.replay(&c, r).await,
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    let mut replay = match opened {
        Ok(r) => r,
        Err(e) => {
            out.fail(&e).await;
            return;
        }
    };
    let mut events = 0u64;
    loop {
        let page = tokio::select! {
            page = replay.next() => page,
            message = inbox.recv() => match message {
                Some(_) => continue,
                None => return,
            },
        };
        let sent = match page {
            Some(Ok(batches)) => {
                events += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
                let last = batches
                    .iter()
                    .filter_map(crate::service::subscribe::last_position)
                    .max()
                    .unwrap_or(replay.after);
                out.events(&batches, last, None).await
            }
            Some(Err(e)) => Err(out.fail(&e).await),
            None => {
                let done =
                    json!({"done": {"events": events, "after": replay.after, "end": replay.end}});
                if out.json(done).await.is_ok() {
                    out.close(1000, "replay complete").await;
                }
                return;
            }
        };
        if sent.is_err() {
            return;
        }
    }
}
