//! `GET /v1/stream`: a table's events as they come (a [`Subscription`] on
//! the wire), over a WebSocket ([`super::ws`]) or one long-lived HTTP
//! response of newline-delimited JSON.
//!
//! Each NDJSON line is one frame:
//! - `{"event": {...}}`: an event, as a row of `/v1/sql` (every column,
//!   `position` included), in position order;
//! - `{"heartbeat": {"position": N}}`: nothing new for `heartbeat_ms`; N
//!   is the last position delivered or passed over (resume with
//!   `start=after:N`);
//! - `{"error": "...", "status": S}`: the stream ends on an error.

use super::http::AppState;
use super::ws::{self, Framing, OnSlow};
use crate::auth::Principal;
use crate::query::output::{Encoder, OutputFormat};
use crate::service::subscribe::{Start, Subscribe, Subscription};
use crate::service::{Error, Service};
use arrow::array::RecordBatch;
use axum::body::Body;
use axum::extract::ws::WebSocket;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// Heartbeat interval when none is asked for.
const DEFAULT_HEARTBEAT_MS: u64 = 15_000;
/// The range a client may ask for.
const HEARTBEAT_MS: std::ops::RangeInclusive<u64> = 100..=300_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamParams {
    table: String,
    filter: Option<String>,
    /// A DSL `where` condition, as JSON text.
    #[serde(rename = "where")]
    where_dsl: Option<String>,
    /// Column names, comma-separated.
    columns: Option<String>,
    start: Option<String>,
    heartbeat_ms: Option<u64>,
    /// WebSocket only: `json` (the default) or `arrow`.
    format: Option<String>,
    /// WebSocket JSON only: a page of events per message (the default) or
    /// one event per message.
    batch: Option<bool>,
    /// WebSocket only: `catch_up` (the default) or `drop`.
    on_slow: Option<String>,
    /// With `on_slow=drop`: how far behind (in positions) is too far.
    max_lag: Option<u64>,
    /// The events as written, without schema migrations.
    #[serde(default)]
    raw: bool,
    // Read by authentication, for clients that cannot send headers.
    #[allow(dead_code)]
    token: Option<String>,
    #[allow(dead_code)]
    tenant: Option<String>,
}

/// `max_lag` when none is given.
const DEFAULT_MAX_LAG: u64 = 100_000;

/// A stream's settings, checked.
#[derive(Debug)]
pub(super) struct StreamOptions {
    pub(super) request: Subscribe,
    pub(super) heartbeat: Duration,
    pub(super) framing: Framing,
    pub(super) on_slow: OnSlow,
}

impl StreamParams {
    pub(super) fn options(self) -> Result<StreamOptions, Error> {
        let table = self
            .table
            .parse()
            .map_err(|e: crate::ids::InvalidName| Error::invalid(format!("table: {e}")))?;
        let start = match &self.start {
            Some(s) => Start::parse(s).map_err(Error::invalid)?,
            None => Start::Now,
        };
        let heartbeat = heartbeat(self.heartbeat_ms)?;
        let where_dsl = match &self.where_dsl {
            None => None,
            Some(text) => Some(
                serde_json::from_str(text)
                    .map_err(|e| Error::invalid(format!("where: not a JSON DSL condition: {e}")))?,
            ),
        };
        let columns = self.columns.as_deref().map(|c| {
            c.split(',')
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect::<Vec<_>>()
        });
        let framing = match (self.format.as_deref(), self.batch) {
            (None | Some("json"), None | Some(true)) => Framing::JsonPages,
            (None | Some("json"), Some(false)) => Framing::JsonEvents,
            (Some("arrow"), None | Some(true)) => Framing::Arrow,
            (Some("arrow"), Some(false)) => {
                return Err(Error::invalid(
                    "batch=false is for format=json; Arrow messages are pages",
                ));
            }
            (Some(other), _) => {
                return Err(Error::invalid(format!(
                    "format: {other:?} is not json or arrow"
                )));
            }
        };
        let on_slow = match self.on_slow.as_deref() {
            None | Some("catch_up") => {
                if self.max_lag.is_some() {
                    return Err(Error::invalid("max_lag goes with on_slow=drop"));
                }
                OnSlow::CatchUp
            }
            Some("drop") => OnSlow::Drop {
                max_lag: self.max_lag.unwrap_or(DEFAULT_MAX_LAG),
            },
            Some(other) => {
                return Err(Error::invalid(format!(
                    "on_slow: {other:?} is not catch_up or drop"
                )));
            }
        };
        let mut request = Subscribe::new(table, start);
        request.filter = self.filter;
        request.where_dsl = where_dsl;
        request.columns = columns;
        request.raw = self.raw;
        Ok(StreamOptions {
            request,
            heartbeat,
            framing,
            on_slow,
        })
    }
}

/// The heartbeat interval asked for, checked.
pub(super) fn heartbeat(ms: Option<u64>) -> Result<Duration, Error> {
    let ms = ms.unwrap_or(DEFAULT_HEARTBEAT_MS);
    if !HEARTBEAT_MS.contains(&ms) {
        return Err(Error::invalid(format!(
            "heartbeat_ms must be from {} to {}; got {ms}",
            HEARTBEAT_MS.start(),
            HEARTBEAT_MS.end()
        )));
    }
    Ok(Duration::from_millis(ms))
}

/// Whether a request asks to become a WebSocket.
pub(super) fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Why a WebSocket request's credentials were refused: the stream opens
/// and closes at once with the error's code, which browsers can read
/// (they see no HTTP status).
#[derive(Debug, Clone)]
pub(super) struct Refused(pub(super) Error);

/// The caller of a stream request, or why it has none.
pub(super) fn caller_of(parts: &axum::http::request::Parts) -> Result<Principal, Error> {
    if let Some(Refused(e)) = parts.extensions.get::<Refused>() {
        return Err(e.clone());
    }
    parts
        .extensions
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Error::internal("the request was not authenticated"))
}

/// `GET /v1/stream`: a WebSocket when the request asks to upgrade, else
/// newline-delimited JSON.
#[utoipa::path(
    get,
    path = "/v1/stream",
    tag = "streams",
    params(("table" = String, Query, description = "The table to follow", pattern = "^[a-z][a-z0-9_]{0,63}$"), ("filter" = Option<String>, Query, description = "A SQL condition on the events"), ("where" = Option<String>, Query, description = "A DSL condition, as JSON text"), ("columns" = Option<String>, Query, description = "Columns, comma-separated"), ("start" = Option<String>, Query, description = "earliest, now (the default), after:N or an RFC 3339 time"), ("heartbeat_ms" = Option<u64>, Query, description = "Heartbeat interval"), ("format" = Option<String>, Query, description = "WebSocket only: json or arrow"), ("batch" = Option<bool>, Query, description = "WebSocket JSON only: a page of events per message"), ("on_slow" = Option<String>, Query, description = "WebSocket only: catch_up or drop"), ("max_lag" = Option<u64>, Query, description = "With on_slow=drop: how far behind is too far"), ("raw" = Option<bool>, Query, description = "Read events as written, without schema migrations"), ("token" = Option<String>, Query, description = "Bearer token, for clients that cannot send headers"), ("tenant" = Option<String>, Query, description = "Tenant, for clients that cannot send headers")),
    responses((status = 200, description = "The events as they are stored, one JSON object per line, with heartbeats; or a WebSocket", content_type = "application/x-ndjson"), (status = 101, description = "Switched to a WebSocket"))
)]
pub(super) async fn subscribe(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let caller = caller_of(&parts);
    let params = Query::<StreamParams>::try_from_uri(&parts.uri)
        .map_err(|e| Error::invalid(e.body_text()))
        .and_then(|Query(p)| p.options());
    if is_websocket(&parts.headers) {
        let service = state.service.clone();
        return ws::accept(&mut parts, &state, move |socket| {
            stream_socket(service, socket, caller, params)
        })
        .await;
    }
    match ndjson(&state, caller, params).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// A subscription over a WebSocket, until it ends.
async fn stream_socket(
    service: Arc<Service>,
    socket: WebSocket,
    caller: Result<Principal, Error>,
    options: Result<StreamOptions, Error>,
) {
    let (framing, on_slow) = match &options {
        Ok(o) => (o.framing, o.on_slow),
        Err(_) => (Framing::JsonPages, OnSlow::CatchUp),
    };
    let (mut out, mut inbox) = ws::split(socket, framing, on_slow);
    let opened = match (caller, options) {
        (Ok(caller), Ok(options)) => service
            .subscribe(&caller, options.request)
            .await
            .map(|s| (s, options.heartbeat)),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    let (mut subscription, heartbeat) = match opened {
        Ok(o) => o,
        Err(e) => {
            out.fail(&e).await;
            return;
        }
    };
    loop {
        if let Some(reason) = out.too_far_behind(subscription.lag()) {
            out.close(ws::TOO_SLOW, &reason).await;
            return;
        }
        let next = tokio::select! {
            next = subscription.next(heartbeat) => next,
            message = inbox.recv() => match message {
                // This stream takes no messages: they are let pass.
                Some(_) => continue,
                None => return,
            },
        };
        let sent = match next {
            Ok(Some(batches)) => out.events(&batches, subscription.position(), None).await,
            Ok(None) => out.heartbeat(subscription.position(), None).await,
            Err(e) => Err(out.fail(&e).await),
        };
        if sent.is_err() {
            return;
        }
    }
}

/// The stream as one long-lived HTTP response of NDJSON frames.
async fn ndjson(
    state: &AppState,
    caller: Result<Principal, Error>,
    options: Result<StreamOptions, Error>,
) -> Result<Response, Error> {
    let caller = caller?;
    let options = options?;
    if options.framing != Framing::JsonPages || options.on_slow != OnSlow::CatchUp {
        return Err(Error::invalid(
            "format, batch and on_slow are for WebSocket streams; this one is NDJSON (one event per line)",
        ));
    }
    let heartbeat = options.heartbeat;
    let subscription = state.service.subscribe(&caller, options.request).await?;
    let frames = futures::stream::unfold(Some((subscription, heartbeat)), |state| async move {
        let (mut subscription, heartbeat) = state?;
        match subscription.next(heartbeat).await {
            Ok(Some(batches)) => {
                let frame = event_frames(&batches);
                Some((Ok(frame), Some((subscription, heartbeat))))
            }
            Ok(None) => {
                let frame = heartbeat_frame(&subscription);
                Some((Ok(frame), Some((subscription, heartbeat))))
            }
            Err(e) => Some((Ok::<_, std::io::Error>(error_frame(&e)), None)),
        }
    });
    let mut response = Response::new(Body::from_stream(frames));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

/// One `{"event": row}` line per row of `batches`.
pub(super) fn event_frames(batches: &[RecordBatch]) -> Bytes {
    let mut out = BytesMut::new();
    for batch in batches {
        let lines =
            Encoder::new(OutputFormat::Ndjson, &batch.schema()).and_then(|mut e| e.batch(batch));
        match lines {
            Ok(lines) => {
                for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    out.put_slice(b"{\"event\":");
                    out.put_slice(line);
                    out.put_slice(b"}\n");
                }
            }
            Err(e) => return error_frame(&Error::from(e)),
        }
    }
    out.freeze()
}

fn heartbeat_frame(subscription: &Subscription) -> Bytes {
    let frame = serde_json::json!({"heartbeat": {"position": subscription.position()}});
    Bytes::from(format!("{frame}\n"))
}

pub(super) fn error_frame(e: &Error) -> Bytes {
    let status = super::error::status(e.kind).as_u16();
    let frame = serde_json::json!({"error": e.message, "status": status});
    Bytes::from(format!("{frame}\n"))
}

/// The credentials (`token`, `tenant`) in the query string of a request
/// for `path`, when it is one of the stream routes, which take them from
/// there too; `None` for every other route.
pub(super) fn query_credentials(path: &str, query: Option<&str>) -> Option<Vec<(String, String)>> {
    let streaming = path == "/v1/stream"
        || path == "/v1/replay"
        || path
            .strip_prefix("/v1/subscriptions/")
            .is_some_and(|rest| rest.ends_with("/consume"));
    streaming.then(|| {
        url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .into_owned()
            .filter(|(k, _)| k == "token" || k == "tenant")
            .collect()
    })
}
