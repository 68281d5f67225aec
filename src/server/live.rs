//! `GET /v1/stream`: a table's events as they come, over one long-lived
//! HTTP response of newline-delimited JSON (a [`Subscription`] on the
//! wire).
//!
//! Each line is one frame:
//! - `{"event": {...}}`: an event, as a row of `/v1/sql` (every column,
//!   `position` included), in position order;
//! - `{"heartbeat": {"position": N}}`: nothing new for `heartbeat_ms`; N
//!   is the last position delivered or passed over (resume with
//!   `start=after:N`);
//! - `{"error": "...", "status": S}`: the stream ends on an error.

use super::http::AppState;
use crate::auth::Principal;
use crate::query::output::{Encoder, OutputFormat};
use crate::service::Error;
use crate::service::subscribe::{Start, Subscribe, Subscription};
use arrow::array::RecordBatch;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
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
    start: Option<String>,
    heartbeat_ms: Option<u64>,
}

/// `GET /v1/stream?table=&filter=&start=&heartbeat_ms=`.
pub(super) async fn subscribe(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    params: Result<Query<StreamParams>, QueryRejection>,
) -> Result<Response, Error> {
    let Query(params) = params.map_err(|e| Error::invalid(e.body_text()))?;
    let table = params
        .table
        .parse()
        .map_err(|e: crate::ids::InvalidName| Error::invalid(e.to_string()))?;
    let start = match &params.start {
        Some(s) => Start::parse(s).map_err(Error::invalid)?,
        None => Start::Now,
    };
    let heartbeat = params.heartbeat_ms.unwrap_or(DEFAULT_HEARTBEAT_MS);
    if !HEARTBEAT_MS.contains(&heartbeat) {
        return Err(Error::invalid(format!(
            "heartbeat_ms must be from {} to {}; got {heartbeat}",
            HEARTBEAT_MS.start(),
            HEARTBEAT_MS.end()
        )));
    }
    let request = Subscribe {
        table,
        filter: params.filter,
        start,
    };
    let subscription = state.service.subscribe(&caller, request).await?;
    let frames = futures::stream::unfold(
        Some((subscription, Duration::from_millis(heartbeat))),
        |state| async move {
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
        },
    );
    let mut response = Response::new(Body::from_stream(frames));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

/// One `{"event": row}` line per row of `batches`.
fn event_frames(batches: &[RecordBatch]) -> Bytes {
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

fn error_frame(e: &Error) -> Bytes {
    let status = super::error::status(e.kind).as_u16();
    let frame = serde_json::json!({"error": e.message, "status": status});
    Bytes::from(format!("{frame}\n"))
}
