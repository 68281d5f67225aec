//! The MCP (Model Context Protocol) endpoint, `/mcp` on the HTTP port
//! (streamable HTTP transport, `rmcp`). Requests pass the same
//! authentication as every other route, so each tool runs as the
//! caller's principal through the service: tenancy, roles, policies,
//! limits and audit apply as they do over HTTP. The tools only translate
//! arguments into service calls and results into a compact text table
//! with the same rows as structured content.

mod analysis;
mod args;
mod flows;
mod guide;
mod tools;

use crate::auth::Principal;
use crate::service::{Error, Service};
use arrow::array::RecordBatch;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};
use std::sync::Arc;

/// Rows a tool returns unless asked for fewer; at most [`MAX_ROWS`].
const DEFAULT_ROWS: usize = 100;
const MAX_ROWS: usize = 1000;
/// Characters of one cell in the text table.
const CELL_CHARS: usize = 60;

/// The `/mcp` service. Without auth the server listens on loopback only,
/// and the transport also refuses requests whose `Host` is not a loopback
/// name (a web page's DNS rebinding); with auth every request carries a
/// token, and any host is served.
pub(super) fn service(
    service: Arc<Service>,
    closing: tokio_util::sync::CancellationToken,
) -> StreamableHttpService<tools::Tools, LocalSessionManager> {
    let mut config = StreamableHttpServerConfig::default().with_cancellation_token(closing);
    if service.auth_enabled() {
        config = config.disable_allowed_hosts();
    }
    StreamableHttpService::new(
        move || Ok(tools::Tools::new(service.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}

/// The caller of a tool call: the principal the HTTP authentication put
/// in the request.
fn caller_of(parts: &axum::http::request::Parts) -> Result<Principal, Error> {
    parts
        .extensions
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Error::internal("an MCP request without a caller"))
}

/// A failure as a tool error: the HTTP status the same call would get,
/// and the message.
fn failed(e: Error) -> CallToolResult {
    let status = super::error::status(e.kind);
    let mut text = format!("{} {}: {}", status.as_u16(), e.kind.outcome(), e.message);
    if let Some(details) = &e.details {
        text.push_str(&format!("\n{details}"));
    }
    CallToolResult::error(vec![ContentBlock::text(text)])
}

/// A value as a tool result: its JSON as text and as structured content.
fn value(v: impl serde::Serialize, summary: &str) -> Result<CallToolResult, Error> {
    let v = serde_json::to_value(v).map_err(|e| Error::internal(e.to_string()))?;
    let text = match summary.is_empty() {
        true => v.to_string(),
        false => format!("{summary}\n{v}"),
    };
    let mut r = CallToolResult::structured(v);
    r.content = vec![ContentBlock::text(text)];
    Ok(r)
}

/// Record batches as JSON rows.
fn rows_of(batches: &[RecordBatch]) -> Result<Vec<Value>, Error> {
    let mut writer = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow::json::writer::JsonArray>(Vec::new());
    for b in batches {
        writer
            .write(b)
            .map_err(|e| Error::internal(e.to_string()))?;
    }
    writer
        .finish()
        .map_err(|e| Error::internal(e.to_string()))?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    match serde_json::from_slice(&bytes) {
        Ok(Value::Array(rows)) => Ok(rows),
        Ok(_) => Ok(Vec::new()),
        Err(e) => Err(Error::internal(e.to_string())),
    }
}

fn cell(v: &Value) -> String {
    let text = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match text.chars().count() > CELL_CHARS {
        true => format!("{}…", text.chars().take(CELL_CHARS - 1).collect::<String>()),
        false => text,
    }
}

/// Rows as a result: an aligned text table of at most `limit` rows, with
/// a note of how many were left out and how to narrow the question, and
/// `{columns, rows, row_count, truncated}` as structured content.
fn table<C: AsRef<str> + serde::Serialize>(
    columns: &[C],
    mut rows: Vec<Value>,
    limit: usize,
    narrow: &str,
) -> CallToolResult {
    let total = rows.len();
    rows.truncate(limit);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| cell(&r[c.as_ref()])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.as_ref().chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<&str>| {
        let padded: Vec<String> = values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        padded.join(" | ").trim_end().to_string()
    };
    let mut text = vec![line(columns.iter().map(AsRef::as_ref).collect())];
    text.extend(
        cells
            .iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    let left_out = total - rows.len();
    match left_out {
        0 => text.push(format!("({total} rows)")),
        n => text.push(format!(
            "({total} rows; the first {} shown, {n} left out: {narrow})",
            rows.len()
        )),
    }
    let structured = json!({"columns": columns, "rows": rows, "row_count": total,
                            "truncated": left_out > 0});
    let mut r = CallToolResult::structured(structured);
    r.content = vec![ContentBlock::text(text.join("\n"))];
    r
}

/// The column names of `batches` (of a result that may have no rows).
fn columns_of(schema: &arrow::datatypes::SchemaRef) -> Vec<String> {
    schema.fields().iter().map(|f| f.name().clone()).collect()
}

/// `limit` as asked, within [1, MAX_ROWS].
fn row_limit(asked: Option<u32>) -> usize {
    asked.map_or(DEFAULT_ROWS, |n| (n as usize).clamp(1, MAX_ROWS))
}
