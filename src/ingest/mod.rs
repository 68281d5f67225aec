//! Ingest: request bodies → validated events → one Arrow batch.
//!
//! [`parse_body`] turns a JSON, JSON-array or NDJSON body into [`Events`],
//! all or nothing, naming the first bad event; each payload value goes
//! straight into its field's list of cells. ([`parse_events`] reads the
//! same bodies into one [`Event`] each, a JSON map per payload, for callers
//! that want single events.) [`build_batch`] lays them out as columns,
//! asking the table's [`schema::ColumnRegistry`] where each payload field
//! goes (its own typed column, or `_overflow`). The batch is what the WAL
//! logs and the buffer holds. [`budget`] bounds the memory all requests
//! in flight take on the way, and [`BatchEstimate`] is what a batch will
//! take, known before it is built.

pub mod budget;
mod build;
pub mod check;
mod columns;
pub mod from_arrow;
mod parse;
mod stream;

pub use build::{Built, build, build_batch};
pub use check::{BatchCheck, Checked, Facts};
pub use columns::{Cell, Events, Head, PayloadField};
pub(crate) use parse::json_kind;
pub use parse::{
    BodyFormat, Event, ExpectedVersion, parse_event, parse_events, parse_events_within,
};
pub use stream::parse_body;

use crate::schema;
use arrow::array::{
    ArrayRef, Date32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{Field, Schema};
use serde_json::{Map, Value};
use std::sync::Arc;

/// Why a request's events were refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid JSON at {location}: {message}")]
    Json { location: String, message: String },
    #[error("event {index}{}: {reason}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    InvalidEvent {
        index: usize,
        line: Option<usize>,
        reason: String,
    },
    #[error("column {column:?} {reason}")]
    InvalidColumn { column: String, reason: String },
    #[error("the request holds no events")]
    Empty,
    #[error("request too large: {0}")]
    TooLarge(String),
    #[error(
        "the request's events fall on {0} different days; at most {MAX_DAYS_PER_REQUEST} are accepted in one request"
    )]
    TooManyDays(usize),
    #[error("could not build the batch: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Budget(#[from] budget::BudgetError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Most distinct event days in one request: each is a partition the next
/// flush writes a file into.
pub const MAX_DAYS_PER_REQUEST: usize = 4096;

/// Most cells (rows × columns) one request may build: sparse payloads
/// (a key in one event becomes a column for all) must not explode memory.
const MAX_CELLS: usize = 100_000_000;

/// What a batch of events will take in memory, known from its rows and
/// columns before it is built. A lower bound of its size (and of its WAL
/// record's): every payload column holds 8 bytes per row (a double, or a
/// string's offset and a share of its text), whatever the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchEstimate {
    pub rows: usize,
    /// Payload columns: distinct payload fields, at most
    /// [`schema::MAX_PAYLOAD_COLUMNS`] (the rest go to `_overflow`).
    pub columns: usize,
    pub bytes: usize,
}

/// Bytes per row of the fixed columns, apart from their text: three
/// string offsets, two timestamps, a date and the `_overflow` offset.
const FIXED_ROW_BYTES: usize = 3 * 4 + 2 * 8 + 4 + 4;

/// Bytes per payload cell.
const CELL_BYTES: usize = 8;

impl BatchEstimate {
    /// A batch of `rows` rows with `fields` distinct payload fields and
    /// `text` bytes of fixed-column text (ids, types, entity ids).
    pub fn new(rows: usize, fields: usize, text: usize) -> Self {
        let columns = fields.min(schema::MAX_PAYLOAD_COLUMNS);
        let per_row = FIXED_ROW_BYTES.saturating_add(columns.saturating_mul(CELL_BYTES));
        BatchEstimate {
            rows,
            columns,
            bytes: rows.saturating_mul(per_row).saturating_add(text),
        }
    }

    /// The estimate for `events`.
    pub fn of(events: &Events) -> Self {
        let text = events.heads.iter().map(Head::fixed_text_len).sum();
        BatchEstimate::new(events.len(), events.field_count(), text)
    }

    /// Refuses a batch of more than `limit` bytes, naming `what` the limit
    /// is.
    pub fn check(&self, limit: usize, what: &str) -> Result<()> {
        if self.bytes > limit {
            return Err(Error::TooLarge(self.refusal(limit, what)));
        }
        Ok(())
    }

    /// Why a batch over `limit` bytes (`what`) is refused.
    pub fn refusal(&self, limit: usize, what: &str) -> String {
        format!(
            "{} events × {} payload columns would take at least {} bytes as a batch; {what} is {limit} bytes; send fewer events per request",
            self.rows, self.columns, self.bytes
        )
    }
}

/// Refuses a request whose events fall on too many days (each one a
/// partition the next flush writes a file into).
fn check_days(timestamps: &[i64]) -> Result<()> {
    let days: std::collections::HashSet<i64, foldhash::fast::RandomState> = timestamps
        .iter()
        .map(|t| t.div_euclid(MICROS_PER_DAY))
        .collect();
    if days.len() > MAX_DAYS_PER_REQUEST {
        return Err(Error::TooManyDays(days.len()));
    }
    Ok(())
}

/// Puts an event batch together: `ids`, `types` and `entities` (the first
/// three fixed columns), event times in epoch microseconds, the ingest
/// time, each row's `_overflow` fields, then the payload columns whose
/// `fields` follow the fixed ones.
fn event_batch(
    [ids, types, entities]: [ArrayRef; 3],
    timestamps: Vec<i64>,
    now: i64,
    overflow: Vec<Option<Map<String, Value>>>,
    fields: Vec<Field>,
    payload_columns: Vec<ArrayRef>,
) -> Result<RecordBatch> {
    let rows = timestamps.len();
    let dates = Date32Array::from_iter_values(
        timestamps
            .iter()
            .map(|t| t.div_euclid(MICROS_PER_DAY) as i32),
    );
    let overflow: StringArray = overflow
        .into_iter()
        .map(|m| m.map(|m| Value::Object(m).to_string()))
        .collect();
    let mut columns: Vec<ArrayRef> = vec![
        ids,
        types,
        entities,
        Arc::new(TimestampMicrosecondArray::from(timestamps).with_timezone("UTC")),
        Arc::new(TimestampMicrosecondArray::from(vec![now; rows]).with_timezone("UTC")),
        Arc::new(dates),
        Arc::new(overflow),
        // Placeholders: the database stamps positions and versions when
        // it orders the batch into the WAL.
        Arc::new(Int64Array::from(vec![0; rows])),
        Arc::new(Int64Array::from(vec![0; rows])),
    ];
    columns.extend(payload_columns);
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ColumnRegistry;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Float64Type;

    fn events(body: &str) -> Events {
        parse_body(body.as_bytes(), BodyFormat::Ndjson, &mut |_| Ok(())).unwrap()
    }

    #[test]
    fn payload_becomes_typed_columns_and_conflicts_overflow() {
        let evs = events(concat!(
            r#"{"event_type":"buy","entity_id":"u1","timestamp":0,"payload":{"amount":5,"ok":true,"tags":["a"]}}"#,
            "\n",
            r#"{"event_type":"buy","entity_id":"u2","payload":{"amount":"lots","big":9007199254740993}}"#,
        ));
        let ids = vec!["a".to_string(), "b".to_string()];
        let reg = parking_lot::Mutex::new(ColumnRegistry::default());
        let batch = build_batch(&evs, &[true, true], &ids, &reg, 86_400_000_000 + 5).unwrap();
        assert_eq!(batch.num_rows(), 2);
        let amount = batch.column_by_name("amount").unwrap();
        let amount = amount.as_primitive::<Float64Type>();
        assert_eq!(amount.value(0), 5.0);
        assert!(amount.is_null(1));
        let tags = batch.column_by_name("tags").unwrap().as_string::<i32>();
        assert_eq!(tags.value(0), r#"["a"]"#);
        let overflow = batch
            .column_by_name("_overflow")
            .unwrap()
            .as_string::<i32>();
        assert!(overflow.is_null(0));
        let o: Value = serde_json::from_str(overflow.value(1)).unwrap();
        assert_eq!(o["amount"], "lots");
        assert_eq!(o["big"].to_string(), "9007199254740993");
        // event_date: first event at epoch 0, second at "now" (day 1)
        let dates = batch.column_by_name("event_date").unwrap();
        let dates = dates.as_primitive::<arrow::datatypes::Date32Type>();
        assert_eq!((dates.value(0), dates.value(1)), (0, 1));
        // "big" saw only an integer too large for a double: a Double column
        // exists but the value went to _overflow.
        assert!(batch.column_by_name("big").unwrap().is_null(0));
    }

    #[test]
    fn dropped_rows_are_skipped() {
        let evs = events(
            "{\"event_type\":\"a\",\"entity_id\":\"u1\"}\n{\"event_type\":\"b\",\"entity_id\":\"u2\"}",
        );
        let ids = vec!["x".to_string(), "y".to_string()];
        let reg = parking_lot::Mutex::new(ColumnRegistry::default());
        let batch = build_batch(&evs, &[false, true], &ids, &reg, 0).unwrap();
        assert_eq!(batch.num_rows(), 1);
        let t = batch
            .column_by_name("event_type")
            .unwrap()
            .as_string::<i32>();
        assert_eq!(t.value(0), "b");
    }
}
