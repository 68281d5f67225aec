//! Replay: a stored range of a table's events delivered again, in
//! position order or shared among parallel readers by entity (each
//! entity's events in order), as fast as possible or at a multiple of the
//! pace at which they were ingested.
//!
//! Each reader is a [`Subscription`] bounded above by the range's last
//! position; pages go through a small channel, so a replay holds at most a
//! few pages in memory whatever the range, and a slow receiver slows the
//! readers down rather than filling memory.

use super::subscribe::{Start, Subscribe, Subscription};
use super::{Error, Result, Service};
use crate::auth::{Principal, Role};
use crate::ids::TableName;
use crate::schema;
use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Most readers a parallel replay may have.
pub const MAX_PARALLELISM: u32 = 16;
/// The fastest pace one may ask for, as a multiple of the original.
pub const MAX_SPEED: f64 = 1_000_000.0;

/// Where a replay ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// At this position (included).
    Position(u64),
    /// Before the first event ingested at or after this time
    /// (microseconds since the epoch).
    Before(i64),
}

impl End {
    /// `position:N` or an RFC 3339 time.
    pub fn parse(text: &str) -> std::result::Result<End, String> {
        if let Some(n) = text.strip_prefix("position:") {
            return n
                .trim()
                .parse()
                .map(End::Position)
                .map_err(|_| format!("to: {n:?} is not a position (a whole number)"));
        }
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| End::Before(t.timestamp_micros()))
            .map_err(|e| format!("to: {text:?} is neither position:N nor an RFC 3339 time ({e})"))
    }
}

/// The order of delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// By position, one reader.
    Sequential,
    /// This many readers, each taking the entities of one part: each
    /// entity's events in order, the parts interleaved.
    Parallel(u32),
}

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    pub table: TableName,
    pub from: Start,
    /// `None`: up to the last event stored when the replay starts.
    pub to: Option<End>,
    pub filter: Option<String>,
    pub where_dsl: Option<serde_json::Value>,
    /// 0: as fast as possible; 1: the original pace; N: N times faster.
    pub speed: f64,
    pub order: Order,
}

/// A running replay: its pages as they are due.
#[derive(Debug)]
pub struct Replay {
    pages: mpsc::Receiver<Result<Vec<RecordBatch>>>,
    /// The range: after `after`, up to `end` (included).
    pub after: u64,
    pub end: u64,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Replay {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
    }
}

impl Replay {
    /// The next page; `None` once the whole range is delivered.
    pub async fn next(&mut self) -> Option<Result<Vec<RecordBatch>>> {
        self.pages.recv().await
    }
}

impl Service {
    /// Starts a replay for `caller` (the reader role; each reader is one
    /// of the tenant's `--max-subscriptions`).
    pub async fn replay(
        self: &Arc<Self>,
        caller: &Principal,
        request: ReplayRequest,
    ) -> Result<Replay> {
        caller.require(Role::Reader, "replay")?;
        if !request.speed.is_finite() || !(0.0..=MAX_SPEED).contains(&request.speed) {
            return Err(Error::invalid(format!(
                "speed must be from 0 (as fast as possible) to {MAX_SPEED}; got {}",
                request.speed
            )));
        }
        let parts = match request.order {
            Order::Sequential => 1,
            Order::Parallel(n) if (1..=MAX_PARALLELISM).contains(&n) => n,
            Order::Parallel(n) => {
                return Err(Error::invalid(format!(
                    "parallelism must be from 1 to {MAX_PARALLELISM}; got {n}"
                )));
            }
        };
        let table = self.table_of(caller, &request.table)?;
        let after = self.start_position(caller, &table, request.from).await?;
        let highest = table.highest_position();
        let end = match request.to {
            None => highest,
            Some(End::Position(p)) => p.min(highest),
            Some(End::Before(t)) => self.position_before(caller, &table, t).await?,
        };
        let mut readers = Vec::new();
        for part in 0..parts {
            let mut r = Subscribe::new(request.table.clone(), Start::After(after));
            r.filter = request.filter.clone();
            r.where_dsl = request.where_dsl.clone();
            r.until = Some(end);
            if parts > 1 {
                r.part = Some((part, parts));
            }
            readers.push(self.subscribe(caller, r).await?);
        }
        // The pace is measured from the range's first matching event.
        let pace = if request.speed > 0.0 && end > after {
            let mut first = Subscribe::new(request.table.clone(), Start::After(after));
            first.filter = request.filter.clone();
            first.where_dsl = request.where_dsl.clone();
            first.until = Some(end);
            let conditions = self.conditions(caller, &first).await?;
            let sql = format!(
                "SELECT CAST(min({at}) AS BIGINT) FROM \"{table}\" WHERE {position} > {after}{conditions}",
                table = request.table.as_str(),
                position = schema::POSITION,
                at = schema::INGESTED_AT,
            );
            self.first_value(caller, &sql).await?.map(|origin| Pace {
                speed: request.speed,
                origin,
                started: Instant::now(),
            })
        } else {
            None
        };
        let (tx, pages) = mpsc::channel(2 * parts as usize);
        let readers = readers
            .into_iter()
            .map(|reader| tokio::spawn(read(reader, end, pace, tx.clone())))
            .collect();
        Ok(Replay {
            pages,
            after,
            end,
            readers,
        })
    }
}

/// When each event is due: `started` plus its ingest time after `origin`
/// divided by `speed`.
#[derive(Debug, Clone, Copy)]
struct Pace {
    speed: f64,
    /// The first event's ingest time, in microseconds.
    origin: i64,
    started: Instant,
}

impl Pace {
    fn due(&self, ingested_micros: i64) -> Instant {
        let late = (ingested_micros - self.origin).max(0) as f64 / self.speed;
        self.started + Duration::from_micros(late.min(1e15) as u64)
    }
}

/// One reader: its pages, each event when it is due, until `end`.
async fn read(
    mut reader: Subscription,
    end: u64,
    pace: Option<Pace>,
    out: mpsc::Sender<Result<Vec<RecordBatch>>>,
) {
    while reader.position() < end {
        let batches = match reader.next(Duration::from_millis(200)).await {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(e) => {
                let _ = out.send(Err(e)).await;
                return;
            }
        };
        let Some(pace) = pace else {
            if out.send(Ok(batches)).await.is_err() {
                return;
            }
            continue;
        };
        for batch in batches {
            for slice in due_slices(&batch, &pace) {
                let (due, rows) = slice;
                tokio::time::sleep_until(due).await;
                if out.send(Ok(vec![rows])).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// `batch` cut into runs of rows due at the same millisecond, with when
/// each is due.
fn due_slices(batch: &RecordBatch, pace: &Pace) -> Vec<(Instant, RecordBatch)> {
    let Some(at) = batch
        .column_by_name(schema::INGESTED_AT)
        .and_then(|c| arrow::compute::cast(c, &DataType::Int64).ok())
    else {
        return vec![(Instant::now(), batch.clone())];
    };
    let at = at.as_primitive::<Int64Type>();
    let mut out = Vec::new();
    let mut start = 0;
    while start < batch.num_rows() {
        let due = pace.due(at.value(start));
        let mut stop = start + 1;
        while stop < batch.num_rows() && pace.due(at.value(stop)) <= due + Duration::from_millis(1)
        {
            stop += 1;
        }
        out.push((due, batch.slice(start, stop - start)));
        start = stop;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_parse_or_name_the_problem() {
        assert_eq!(End::parse("position:12"), Ok(End::Position(12)));
        assert_eq!(
            End::parse("2026-01-01T00:00:00Z"),
            Ok(End::Before(1_767_225_600_000_000))
        );
        assert!(
            End::parse("position:x")
                .unwrap_err()
                .contains("not a position")
        );
        assert!(End::parse("later").unwrap_err().contains("position:N"));
    }
}
