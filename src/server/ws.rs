//! Live streams over WebSocket: the frames a subscription sends, the
//! messages a client may send back, and how a stream closes.
//!
//! Server to client:
//! - JSON (`format=json`, the default), one text message per page of
//!   events, `{"events": [row, ...], "position": N}`, or with `batch=false`
//!   one `{"event": row}` per event. N is the last position read (delivered
//!   or passed over as not matching): resume after it.
//! - Arrow (`format=arrow`): one binary message per page, a whole Arrow IPC
//!   stream (schema, batch, end).
//! - `{"heartbeat": {"position": N}}` (text) when nothing came for
//!   `heartbeat_ms`.
//!
//! A stream that ends on an error closes with code 4000 + the HTTP status
//! the same error gets over HTTP (4400 bad filter, 4401 no or bad token,
//! 4403 role, 4404 no such table, 4429 too many subscriptions, 4503 server
//! shutting down, ...) and the error's message as the reason; a consumer
//! that falls too far behind with `on_slow=drop` gets [`TOO_SLOW`].

use crate::query::output::{Encoder, OutputFormat};
use crate::service::Error;
use arrow::array::RecordBatch;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::{BufMut, Bytes, BytesMut};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::sync::mpsc;

/// Close code for a consumer dropped for falling behind (`on_slow=drop`).
pub(super) const TOO_SLOW: u16 = 4900;
/// Close code when the server shuts down.
const GOING_AWAY: u16 = 1001;
/// Largest message a client may send (acknowledgements are small).
pub(super) const MAX_CLIENT_MESSAGE: usize = 64 << 10;
/// How long one message may take to send when the client asked to be
/// dropped rather than fall behind.
const DROP_SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// How events are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// One JSON text message per page.
    JsonPages,
    /// One JSON text message per event.
    JsonEvents,
    /// One Arrow IPC stream (binary) per page.
    Arrow,
}

/// What a slow consumer gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnSlow {
    /// It reads on from storage at its own pace (the default).
    CatchUp,
    /// It is closed with [`TOO_SLOW`] once more than this many positions
    /// behind the table, or when a message stalls.
    Drop { max_lag: u64 },
}

/// The sending half of a client's socket.
#[derive(Debug)]
pub(super) struct Outbox {
    sink: SplitSink<WebSocket, Message>,
    framing: Framing,
    on_slow: OnSlow,
}

/// What the client sent.
#[derive(Debug)]
pub(super) enum Inbound {
    Text(String),
}

/// Upgrades the request of `parts` to a WebSocket that `serve` serves
/// (clients may send messages of up to [`MAX_CLIENT_MESSAGE`]); a request
/// that is no valid upgrade gets the rejection.
pub(super) async fn accept<F, Fut>(
    parts: &mut axum::http::request::Parts,
    state: &super::http::AppState,
    serve: F,
) -> axum::response::Response
where
    F: FnOnce(WebSocket) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use axum::extract::FromRequestParts;
    use axum::response::IntoResponse;
    match axum::extract::ws::WebSocketUpgrade::from_request_parts(parts, state).await {
        Ok(upgrade) => upgrade
            .max_message_size(MAX_CLIENT_MESSAGE)
            .on_upgrade(serve),
        Err(rejection) => rejection.into_response(),
    }
}

/// Splits `socket`: the sending half, and the client's text messages (the
/// receiver ends when the client closes or goes away). Pings are answered
/// by the socket itself while the reader runs.
pub(super) fn split(
    socket: WebSocket,
    framing: Framing,
    on_slow: OnSlow,
) -> (Outbox, mpsc::Receiver<Inbound>) {
    let (sink, stream) = socket.split();
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(read_client(stream, tx));
    (
        Outbox {
            sink,
            framing,
            on_slow,
        },
        rx,
    )
}

async fn read_client(mut stream: SplitStream<WebSocket>, tx: mpsc::Sender<Inbound>) {
    while let Some(message) = stream.next().await {
        match message {
            Ok(Message::Text(text)) => {
                if tx.send(Inbound::Text(text.to_string())).await.is_err() {
                    return;
                }
            }
            Ok(Message::Close(_)) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

impl Outbox {
    /// Whether a subscription `lag` positions behind must be dropped.
    pub(super) fn too_far_behind(&self, lag: u64) -> Option<String> {
        match self.on_slow {
            OnSlow::Drop { max_lag } if lag > max_lag => Some(format!(
                "consumer too slow: {lag} positions behind the table, more than max_lag {max_lag}"
            )),
            _ => None,
        }
    }

    /// Sends a page of events; `position` is the last position read.
    /// Consumers of a durable subscription also get the `generation`.
    pub(super) async fn events(
        &mut self,
        batches: &[RecordBatch],
        position: u64,
        generation: Option<u64>,
    ) -> Result<(), Closed> {
        match self.framing {
            Framing::JsonPages => {
                let rows = match json_rows(batches) {
                    Ok(rows) => rows,
                    Err(e) => return Err(self.fail(&e).await),
                };
                let mut out = BytesMut::from(&b"{\"events\":["[..]);
                for (i, row) in rows.iter().enumerate() {
                    if i > 0 {
                        out.put_u8(b',');
                    }
                    out.put_slice(row);
                }
                out.put_slice(format!("],\"position\":{position}").as_bytes());
                if let Some(g) = generation {
                    out.put_slice(format!(",\"generation\":{g}").as_bytes());
                }
                out.put_u8(b'}');
                self.send_text(out.freeze()).await
            }
            Framing::JsonEvents => {
                let rows = match json_rows(batches) {
                    Ok(rows) => rows,
                    Err(e) => return Err(self.fail(&e).await),
                };
                for row in rows {
                    let mut out = BytesMut::with_capacity(row.len() + 10);
                    out.put_slice(b"{\"event\":");
                    out.put_slice(&row);
                    out.put_u8(b'}');
                    self.send_text(out.freeze()).await?;
                }
                Ok(())
            }
            Framing::Arrow => match arrow_stream(batches) {
                Ok(Some(bytes)) => self.send(Message::Binary(bytes)).await,
                Ok(None) => Ok(()),
                Err(e) => Err(self.fail(&e).await),
            },
        }
    }

    /// `{"heartbeat": {"position": N}}` (and the `generation` for
    /// consumers of a durable subscription).
    pub(super) async fn heartbeat(
        &mut self,
        position: u64,
        generation: Option<u64>,
    ) -> Result<(), Closed> {
        let mut frame = serde_json::json!({"heartbeat": {"position": position}});
        if let Some(g) = generation {
            frame["heartbeat"]["generation"] = g.into();
        }
        self.send_text(Bytes::from(frame.to_string())).await
    }

    /// Any other JSON message.
    pub(super) async fn json(&mut self, value: serde_json::Value) -> Result<(), Closed> {
        self.send_text(Bytes::from(value.to_string())).await
    }

    /// Closes the stream for `e` (see the module's notes for the codes).
    pub(super) async fn fail(&mut self, e: &Error) -> Closed {
        let code = match e.kind {
            crate::service::Kind::Unavailable
                if e.message == crate::service::subscribe::shutting_down().message =>
            {
                GOING_AWAY
            }
            kind => 4000 + super::error::status(kind).as_u16(),
        };
        self.close(code, &e.message).await
    }

    /// Closes the stream with `code` and `reason` (cut to what a close
    /// frame holds).
    pub(super) async fn close(&mut self, code: u16, reason: &str) -> Closed {
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(&reason[..end]),
        };
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.sink.send(Message::Close(Some(frame))),
        )
        .await;
        Closed
    }

    async fn send_text(&mut self, bytes: Bytes) -> Result<(), Closed> {
        // Built from JSON text: valid UTF-8.
        match Utf8Bytes::try_from(bytes) {
            Ok(text) => self.send(Message::Text(text)).await,
            Err(_) => Err(self.close(1011, "a frame was not valid UTF-8").await),
        }
    }

    async fn send(&mut self, message: Message) -> Result<(), Closed> {
        match self.on_slow {
            OnSlow::CatchUp => self.sink.send(message).await.map_err(|_| Closed),
            OnSlow::Drop { .. } => {
                match tokio::time::timeout(DROP_SEND_TIMEOUT, self.sink.send(message)).await {
                    Ok(sent) => sent.map_err(|_| Closed),
                    Err(_) => {
                        let reason = format!(
                            "consumer too slow: a message waited more than {} s to be sent",
                            DROP_SEND_TIMEOUT.as_secs()
                        );
                        Err(self.close(TOO_SLOW, &reason).await)
                    }
                }
            }
        }
    }
}

/// The stream has ended: the client went away or was closed.
#[derive(Debug)]
pub(super) struct Closed;

/// Each row of `batches` as one JSON object.
fn json_rows(batches: &[RecordBatch]) -> Result<Vec<Bytes>, Error> {
    let mut rows = Vec::new();
    for batch in batches {
        let lines = Encoder::new(OutputFormat::Ndjson, &batch.schema())
            .and_then(|mut e| e.batch(batch))
            .map_err(Error::from)?;
        rows.extend(
            lines
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| lines.slice_ref(l)),
        );
    }
    Ok(rows)
}

/// `batches` as one Arrow IPC stream; `None` when there are none.
fn arrow_stream(batches: &[RecordBatch]) -> Result<Option<Bytes>, Error> {
    let Some(first) = batches.first() else {
        return Ok(None);
    };
    let schema = first.schema();
    let mut encoder = Encoder::new(OutputFormat::Arrow, &schema).map_err(Error::from)?;
    let mut out = BytesMut::new();
    out.put(encoder.start().map_err(Error::from)?);
    for batch in batches {
        out.put(encoder.batch(batch).map_err(Error::from)?);
    }
    out.put(encoder.finish(&schema).map_err(Error::from)?);
    Ok(Some(out.freeze()))
}
