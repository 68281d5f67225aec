//! Sends `allsource import`'s chunks to the server over Arrow Flight: a
//! DoPut whose descriptor path names the table, answered with the counts
//! of stored and duplicate events.
//!
//! A refused chunk is not the end of the import. When the refusal names
//! the rows at fault (an invalid event, validation rules in `reject`
//! mode), those rows are set aside with the server's reason and the rest
//! is sent again; when it names none (an entity's expected version, a
//! size limit), the chunk is halved until the refusal falls on one row.
//! A server that asks to wait (`retry-after`) is waited for.

use super::chunk::Chunk;
use anyhow::{Context as _, bail};
use arrow::array::{RecordBatch, UInt32Array};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightClient, FlightDescriptor};
use futures::TryStreamExt;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use tonic::{Code, Status};

/// Waits for a busy server, per chunk, before the import gives up.
const MAX_WAITS: u32 = 120;

/// Rows of one chunk the server may refuse before the import stops: past
/// it the fault is likely the file's shape (a time format, a column type),
/// which is better fixed than reported row by row.
const MAX_REFUSED: usize = 100;

/// What the server did with a chunk.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub stored: u64,
    pub duplicates: u64,
    /// Rows of the chunk (by index) the server refused, and why.
    pub refused: Vec<(usize, String)>,
}

/// A connection to the server's Flight port for one table.
pub(crate) struct Uploader {
    client: FlightClient,
    table: String,
}

impl Uploader {
    pub(crate) async fn connect(
        url: &str,
        token: Option<&str>,
        tenant: Option<&str>,
        table: &str,
    ) -> anyhow::Result<Uploader> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_string())
            .with_context(|| format!("bad Flight URL {url:?}"))?
            .connect()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let mut client = FlightClient::new(channel);
        if let Some(token) = token {
            client.add_header("authorization", &format!("Bearer {token}"))?;
        }
        if let Some(tenant) = tenant {
            client.add_header("x-allsource-tenant", tenant)?;
        }
        Ok(Uploader {
            client,
            table: table.to_string(),
        })
    }

    /// Stores the chunk's rows, setting aside those the server refuses.
    pub(crate) async fn send(&mut self, chunk: &Chunk) -> anyhow::Result<Outcome> {
        let mut outcome = Outcome::default();
        let mut work: Vec<Vec<usize>> = vec![(0..chunk.batch.num_rows()).collect()];
        while let Some(rows) = work.pop() {
            if rows.is_empty() {
                continue;
            }
            let batch = take(&chunk.batch, &rows)?;
            let status = match self.put_waiting(batch).await? {
                Ok(reply) => {
                    outcome.stored += reply["accepted"].as_u64().unwrap_or(0);
                    outcome.duplicates += reply["duplicates"].as_u64().unwrap_or(0);
                    continue;
                }
                Err(status) => status,
            };
            let mut at_fault = faulty_rows(&status);
            // Rows it names that were not sent cannot be set aside; a
            // refusal naming none of the sent rows is halved like one
            // naming no row at all, so the loop always makes progress.
            at_fault.retain(|(index, _)| *index < rows.len());
            if !at_fault.is_empty() {
                let mut rest = Vec::with_capacity(rows.len());
                for (i, row) in rows.into_iter().enumerate() {
                    match at_fault.iter().find(|(index, _)| *index == i) {
                        Some((_, reason)) => outcome.refused.push((row, reason.clone())),
                        None => rest.push(row),
                    }
                }
                work.push(rest);
            } else if rows.len() > 1 {
                let half = rows.len() / 2;
                work.push(rows[half..].to_vec());
                work.push(rows[..half].to_vec());
            } else {
                outcome
                    .refused
                    .push((rows[0], status.message().to_string()));
            }
            if outcome.refused.len() > MAX_REFUSED {
                bail!(
                    "the server refused more than {MAX_REFUSED} rows of one batch, the first because: {}; fix the file (or its format) and run the import again",
                    outcome.refused[0].1
                );
            }
        }
        outcome.refused.sort_by_key(|(row, _)| *row);
        Ok(outcome)
    }

    /// One DoPut, waiting while the server asks to; `Err(status)` is a
    /// refusal of the batch, the outer error a failure of the import.
    async fn put_waiting(&mut self, batch: RecordBatch) -> anyhow::Result<Result<Value, Status>> {
        let mut waits = 0;
        loop {
            let status = match self.put(batch.clone()).await {
                Ok(reply) => return Ok(Ok(reply)),
                Err(FlightError::Tonic(status)) => *status,
                Err(other) => bail!("the upload failed: {other}"),
            };
            let wait = retry_after(&status);
            match status.code() {
                // A message over the server's size limit is refused by
                // gRPC as out of range: halved like any other.
                Code::InvalidArgument | Code::Aborted | Code::OutOfRange => return Ok(Err(status)),
                Code::ResourceExhausted if wait.is_none() => return Ok(Err(status)),
                Code::Unavailable | Code::ResourceExhausted if waits < MAX_WAITS => {
                    waits += 1;
                    tokio::time::sleep(wait.unwrap_or(Duration::from_secs(1))).await;
                }
                _ => bail!(
                    "the server refused the upload ({:?}): {}",
                    status.code(),
                    status.message()
                ),
            }
        }
    }

    async fn put(&mut self, batch: RecordBatch) -> Result<Value, FlightError> {
        let descriptor = FlightDescriptor::new_path(vec![self.table.clone()]);
        // One message per chunk, so a refusal's row numbers are the
        // chunk's and no part of it is stored before another is refused;
        // a chunk over the server's message limit is halved on refusal.
        let data = FlightDataEncoderBuilder::new()
            .with_max_flight_data_size(usize::MAX)
            .with_flight_descriptor(Some(descriptor))
            .build(futures::stream::iter([Ok(batch)]));
        let results: Vec<_> = self.client.do_put(data).await?.try_collect().await?;
        let reply = results
            .first()
            .and_then(|r| serde_json::from_slice(&r.app_metadata).ok())
            .unwrap_or(Value::Null);
        Ok(reply)
    }
}

/// The rows `rows` of `batch`, in order.
fn take(batch: &RecordBatch, rows: &[usize]) -> anyhow::Result<RecordBatch> {
    if rows.len() == batch.num_rows() {
        return Ok(batch.clone());
    }
    let indices = UInt32Array::from_iter_values(rows.iter().map(|&r| r as u32));
    Ok(arrow::compute::take_record_batch(batch, &indices)?)
}

/// The `retry-after` a refusal carries.
fn retry_after(status: &Status) -> Option<Duration> {
    let secs = status.metadata().get("retry-after")?.to_str().ok()?;
    Some(Duration::from_secs(secs.parse::<u64>().ok()?.clamp(1, 60)))
}

/// The rows of the sent batch a refusal names (its details: one invalid
/// `event`, or validation `violations` that refuse), each with a reason.
fn faulty_rows(status: &Status) -> Vec<(usize, String)> {
    let Ok(details) = serde_json::from_slice::<Value>(status.details()) else {
        return Vec::new();
    };
    if let Some(event) = details["event"].as_u64() {
        return vec![(event as usize, status.message().to_string())];
    }
    // Each row's reasons, joined, in row order.
    let mut found: BTreeMap<usize, String> = BTreeMap::new();
    for v in details["violations"].as_array().into_iter().flatten() {
        let (Some(index), Some("reject")) = (v["index"].as_u64(), v["mode"].as_str()) else {
            continue;
        };
        let reason = format!(
            "rule {} at {}: {}",
            v["rule"].as_str().unwrap_or("?"),
            v["path"].as_str().unwrap_or("?"),
            v["message"].as_str().unwrap_or("")
        );
        found
            .entry(index as usize)
            .and_modify(|r| {
                r.push_str("; ");
                r.push_str(&reason);
            })
            .or_insert(reason);
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_their_rows() {
        let event = Status::with_details(
            Code::InvalidArgument,
            "event 3: bad time",
            br#"{"event":3}"#.to_vec().into(),
        );
        assert_eq!(faulty_rows(&event), [(3, "event 3: bad time".to_string())]);
        let rules = Status::with_details(
            Code::InvalidArgument,
            "refused",
            br#"{"violations":[
                {"index":1,"mode":"reject","rule":"r1","path":"$[1].payload.a","message":"m1"},
                {"index":1,"mode":"reject","rule":"r2","path":"$[1].payload.b","message":"m2"},
                {"index":2,"mode":"warn","rule":"r3","path":"$[2]","message":"m3"}]}"#
                .to_vec()
                .into(),
        );
        let rows = faulty_rows(&rules);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, 1);
        assert!(
            rows[0].1.contains("r1") && rows[0].1.contains("r2"),
            "{rows:?}"
        );
        assert!(faulty_rows(&Status::invalid_argument("no details")).is_empty());
    }
}
