//! `POST /v1/events`: reading, decompressing and parsing an ingest body
//! within the ingest memory budget, then handing the events to the
//! database.
//!
//! The request's [`Reservation`] grows before each step allocates: as the
//! body arrives, as decompressed bytes come out, per parsed event, and by
//! the batch's estimate (from its rows and columns) before it is built. So
//! a small body that would become a huge one — a gzip bomb, a sparse
//! payload whose keys each become a column — is refused (413, or 503
//! while other requests hold the budget) before it takes the memory.

use super::http::{AppState, body_too_large, mime};
use crate::auth::Principal;
use crate::ids::TableName;
use crate::ingest::budget::{BudgetError, Reservation};
use crate::ingest::{self, BatchEstimate, BodyFormat};
use crate::service::ingest::budget_refusal;
use crate::service::{Error, Kind};
use axum::body::Body;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;
use std::io::Read;

/// What a decoder holds besides its output: gzip's 32 KiB window and
/// state; zstd's window, which a frame may ask for up to
/// 2^[`ZSTD_WINDOW_LOG_MAX`] bytes of (larger ones are refused).
const GZIP_STATE_BYTES: usize = 64 << 10;
const ZSTD_WINDOW_LOG_MAX: u32 = 23;
const ZSTD_STATE_BYTES: usize = (1 << ZSTD_WINDOW_LOG_MAX) + (256 << 10);

/// Decompressed bytes read at a time.
const CHUNK: usize = 64 << 10;

/// Appends `chunk` to `out`, growing `reservation` before the vector
/// grows (to twice its capacity, or what is needed, and never more than
/// `limit`). While the vector moves, the old and the new buffer both
/// exist: both are reserved until the old one is freed.
fn append(
    out: &mut Vec<u8>,
    chunk: &[u8],
    limit: usize,
    reservation: &mut Reservation,
) -> Result<(), BudgetError> {
    let needed = out.len() + chunk.len();
    if needed > out.capacity() {
        let old = out.capacity();
        let capacity = needed.max((old * 2).clamp(CHUNK, limit.max(needed)));
        reservation.grow(capacity)?;
        out.reserve_exact(capacity - out.len());
        reservation.shrink(old);
    }
    out.extend_from_slice(chunk);
    Ok(())
}

/// Reads the body, at most `limit` bytes, within the reservation.
async fn read_body(
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
    reservation: &mut Reservation,
) -> Result<Bytes, Error> {
    let too_large = |e| budget_refusal(e, "the request body");
    // A declared length is reserved at once (and refused at once if over
    // the limit); otherwise the buffer grows as frames arrive.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut out = Vec::new();
    if let Some(n) = declared {
        if n > limit {
            return Err(body_too_large());
        }
        reservation.grow(n).map_err(too_large)?;
        out.reserve_exact(n);
    }
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| Error::invalid(format!("could not read the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(body_too_large());
            }
            append(&mut out, &data, limit, reservation).map_err(too_large)?;
        }
    }
    Ok(Bytes::from(out))
}

/// Reads and drops a body of up to `limit` bytes.
async fn drain(mut body: Body, limit: usize) {
    let mut read = 0;
    while let Some(Ok(frame)) = body.frame().await {
        read += frame.data_ref().map_or(0, |d| d.len());
        if read > limit {
            return;
        }
    }
}

/// Undoes `Content-Encoding` within the reservation, refusing more than
/// `limit` bytes of output. The compressed body's share of the
/// reservation is given back once it is decoded.
fn decode_body(
    headers: &HeaderMap,
    body: Bytes,
    limit: usize,
    reservation: &mut Reservation,
) -> Result<Bytes, Error> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    let (name, state_bytes) = match encoding.as_deref() {
        None | Some("identity") | Some("") => return Ok(body),
        Some("gzip") | Some("x-gzip") => ("gzip", GZIP_STATE_BYTES),
        Some("zstd") => ("zstd", ZSTD_STATE_BYTES),
        Some(other) => {
            return Err(Error::new(
                Kind::UnsupportedMediaType,
                format!("unsupported Content-Encoding {other:?}: use gzip, zstd or none"),
            ));
        }
    };
    let invalid = |e: std::io::Error| Error::invalid(format!("invalid {name} body: {e}"));
    let budget = |e| budget_refusal(e, "the decompressed request body");
    reservation.grow(state_bytes).map_err(budget)?;
    let mut decoder: Box<dyn Read + '_> = if name == "zstd" {
        let mut d = zstd::stream::read::Decoder::new(&body[..]).map_err(invalid)?;
        d.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(invalid)?;
        Box::new(d)
    } else {
        Box::new(flate2::read::MultiGzDecoder::new(&body[..]))
    };
    // Sized at once when the body says what it decompresses to: a buffer
    // that grows by moving leaves the old copies with the allocator.
    let mut out = Vec::new();
    if let Some(size) = decompressed_size_hint(name, &body) {
        let capacity = size.min(limit);
        reservation.grow(capacity).map_err(budget)?;
        out.reserve_exact(capacity);
    }
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = match decoder.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(invalid(e)),
        };
        if out.len() + n > limit {
            return Err(Error::new(
                Kind::TooLarge,
                format!("request body larger than {limit} bytes after decompression"),
            ));
        }
        append(&mut out, &chunk[..n], limit, reservation).map_err(budget)?;
    }
    drop(decoder);
    reservation.shrink(state_bytes + body.len());
    Ok(Bytes::from(out))
}

/// The decompressed size a body declares, if it does: gzip's trailer (of
/// its last member, modulo 2^32) or zstd's frame header. A hint for the
/// buffer's first size only; the limit is checked on what comes out.
fn decompressed_size_hint(encoding: &str, body: &[u8]) -> Option<usize> {
    let size = match encoding {
        "gzip" if body.len() >= 18 => {
            let trailer: [u8; 4] = body[body.len() - 4..].try_into().ok()?;
            u64::from(u32::from_le_bytes(trailer))
        }
        "zstd" => zstd::zstd_safe::get_frame_content_size(body).ok()??,
        _ => return None,
    };
    usize::try_from(size).ok()
}

#[derive(Debug, Deserialize)]
pub(super) struct IngestParams {
    table: Option<String>,
    /// What the reply lists; every event's position and version unless
    /// `counts` is asked for.
    #[serde(default)]
    reply: ReplyShape,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ReplyShape {
    #[default]
    Events,
    Counts,
}

/// Reads, decodes and parses an ingest body (JSON or NDJSON, by its
/// content type) within the ingest budget: the events, and the budget
/// they and their batch hold until they are stored.
pub(super) async fn read_events(
    state: &AppState,
    caller: &Principal,
    headers: HeaderMap,
    body: Body,
) -> Result<(ingest::Events, Reservation), Error> {
    let format = match mime(&headers).as_deref() {
        Some("application/json") => BodyFormat::Json,
        Some("application/x-ndjson" | "application/jsonl" | "application/x-jsonlines") => {
            BodyFormat::Ndjson
        }
        other => {
            return Err(Error::new(
                Kind::UnsupportedMediaType,
                format!(
                    "unsupported Content-Type {}: send application/json (an object or an array of objects) or application/x-ndjson",
                    other.map(|m| format!("{m:?}")).unwrap_or("(none)".into())
                ),
            ));
        }
    };
    // Read only now: a refused request (role, rate, type) costs no body.
    let mut reservation = state.service.ingest_budget().reserve();
    let limit = state.max_body_bytes;
    let body = read_body(&headers, body, limit, &mut reservation).await?;
    crate::metrics::get()
        .ingest_bytes
        .with_label_values(&[caller.tenant.as_str()])
        .inc_by(body.len() as u64);
    let internal = |e: tokio::task::JoinError| Error::internal(e.to_string());
    // Decompression and parsing are CPU work: keep them off the I/O threads.
    let (events, reservation) = tokio::task::spawn_blocking(move || {
        let text = decode_body(&headers, body, limit, &mut reservation)?;
        let text_reserved = reservation.bytes();
        let events = ingest::parse_body(&text, format, &mut |n| reservation.grow(n)).map_err(
            |e| match e {
                ingest::Error::Budget(e) => budget_refusal(e, "parsing the request's events"),
                e => Error::invalid_ingest(e),
            },
        )?;
        drop(text);
        reservation.shrink(text_reserved);
        // What the events will become: the batch and its encoded WAL
        // record live at once, each the estimate plus the payload's
        // strings (at most the text they were parsed from).
        let estimate = BatchEstimate::of(&events);
        let limit = reservation.limit();
        if estimate.bytes > limit {
            return Err(Error::new(
                Kind::TooLarge,
                estimate.refusal(
                    limit,
                    "what one ingest request may take (--max-ingest-request-bytes)",
                ),
            ));
        }
        let batch_bytes = estimate
            .bytes
            .saturating_add(text_reserved)
            .saturating_mul(2);
        reservation
            .grow(batch_bytes)
            .map_err(|e| budget_refusal(e, "the request's events and their batch"))?;
        Ok::<_, Error>((events, reservation))
    })
    .await
    .map_err(internal)??;
    Ok((events, reservation))
}

#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    params(("table" = Option<String>, Query, description = "The table (default events); created on first use", pattern = "^[a-z][a-z0-9_]{0,63}$"), ("reply" = Option<String>, Query, description = "events (the default): each event's position and version; counts: the counts only", pattern = "^(events|counts)$")),
    request_body(description = "One event, a JSON array of events, or NDJSON (one event per line); gzip or zstd with Content-Encoding", content((ref("#/components/schemas/Event") = "application/json"), ("application/x-ndjson"))),
    responses((status = 200, description = "Stored (acknowledged after the write-ahead log is on disk)", body = ref("#/components/schemas/IngestReply"), content_type = "application/json"))
)]
pub(super) async fn ingest_events(
    state: State<AppState>,
    Extension(caller): Extension<Principal>,
    params: Query<IngestParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let started = std::time::Instant::now();
    let service = state.service.clone();
    let result = ingest_events_inner(state, &caller, params, headers, body).await;
    service.observe_ingest(&caller, started, &result);
    result
}

async fn ingest_events_inner(
    State(state): State<AppState>,
    caller: &Principal,
    Query(params): Query<IngestParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    // A caller without the role, or a tenant already over its rate, is
    // refused before any reading or parsing, so a flood costs little.
    state.service.admit_ingest(caller)?;
    if let Err(e) = state.service.check_ingest_room() {
        // Read the body unparsed first: a client still sending it gets
        // the answer to retry, not a broken connection.
        drain(body, state.max_body_bytes).await;
        return Err(e);
    }
    let table = match params.table.as_deref() {
        None => TableName::default_table(),
        Some(name) => name
            .parse::<TableName>()
            .map_err(|e| Error::invalid(format!("query parameter table: {e}")))?,
    };
    let (events, reservation) = read_events(&state, caller, headers, body).await?;
    let outcome = state
        .service
        .ingest(caller, table, events, reservation)
        .await?;
    // Written directly: a bulk request's reply lists one entry per event,
    // and building a JSON value per entry cost more than the rest of the
    // reply.
    use std::fmt::Write as _;
    let mut reply = String::with_capacity(96 + outcome.stamps.len() * 36);
    let _ = write!(
        reply,
        "{{\"accepted\":{},\"duplicates\":{}",
        outcome.accepted, outcome.duplicates
    );
    if let Some((first, last)) = outcome.positions() {
        let _ = write!(
            reply,
            ",\"first_position\":{first},\"last_position\":{last}"
        );
    }
    if params.reply == ReplyShape::Events {
        reply.push_str(",\"events\":[");
        for (i, stamp) in outcome.stamps.iter().enumerate() {
            if i > 0 {
                reply.push(',');
            }
            match stamp {
                Some((p, v)) => {
                    let _ = write!(reply, "{{\"position\":{p},\"version\":{v}}}");
                }
                None => reply.push_str("null"),
            }
        }
        reply.push(']');
    }
    if let Some(w) = &outcome.warnings {
        let _ = write!(
            reply,
            ",\"warnings\":{}",
            serde_json::to_string(&w.warnings()).unwrap_or_default()
        );
    }
    reply.push('}');
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        reply,
    )
        .into_response())
}
