//! Pipelines: operators run continuously over a table's events, in
//! position order, writing what they make into another table.
//!
//! [`compile`] plans the operators as SQL over each micro-batch; [`sink`]
//! turns the output into events with ids that make a rerun harmless;
//! [`store`] keeps each pipeline's definition and progress in a file of
//! its own, rewritten durably after each micro-batch's output is stored;
//! [`sql`] offers them as `system.pipelines`.

mod checks;
pub mod compile;
pub mod enrich;
pub mod keys;
pub mod limit;
pub mod partition;
mod run;
pub mod sink;
pub mod sql;
pub mod store;
pub mod window;

pub use compile::{Chain, Refusal};
pub use run::{ChainState, StageRun};
pub use store::{Pipeline, PipelineStore, Status};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// One step of a pipeline, configured with SQL expressions over the
/// fields of the event it is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Operator {
    /// Keeps the events for which `where` is true.
    Filter {
        #[serde(rename = "where")]
        condition: String,
    },
    /// Sets fields (new ones, or existing ones changed) from expressions,
    /// and drops others.
    Map {
        #[serde(default)]
        fields: IndexMap<String, String>,
        #[serde(default)]
        drop: Vec<String>,
    },
    /// One event per element of the JSON array `array` evaluates to, with
    /// the element in the field `as`. An event whose value is not an
    /// array, or is empty, makes none.
    FlatMap {
        array: String,
        #[serde(rename = "as")]
        name: String,
    },
    /// Aggregates per key over event-time windows, one event per window
    /// and key when the window closes ([`window`]).
    Window(window::WindowSpec),
    /// Groups every `size` events of a key, or those of each `every` of
    /// event time, into one event: `count` and `events`, the grouped
    /// events' fields as a JSON array (a count or tumbling window with
    /// `array_agg`).
    Batch {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        every: Option<String>,
        #[serde(default)]
        key: IndexMap<String, String>,
    },
    /// Adds fields from the row of a projection whose keys equal
    /// expressions over the event ([`enrich`]).
    Enrich(enrich::EnrichSpec),
    /// Keeps the first event per `key` in each bucket of event time
    /// `within` long ([`limit`]).
    Deduplicate {
        key: String,
        within: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lateness: Option<String>,
    },
    /// Keeps at most `rate` events per `key` (or in all) in each bucket of
    /// event time `per` long (a second by default) ([`limit`]).
    Throttle {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        rate: u64,
        #[serde(default = "one_second")]
        per: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lateness: Option<String>,
    },
    /// Routes each event by `key` to one of `workers` that run the
    /// operators after it in parallel, keeping each key's order
    /// ([`partition`]).
    Partition {
        key: String,
        #[serde(default = "four")]
        workers: u32,
    },
}

fn four() -> u32 {
    4
}

fn one_second() -> String {
    "1s".into()
}

impl Operator {
    /// The operator's name, as its `op` says.
    pub fn kind(&self) -> &'static str {
        match self {
            Operator::Filter { .. } => "filter",
            Operator::Map { .. } => "map",
            Operator::FlatMap { .. } => "flat_map",
            Operator::Window(_) => "window",
            Operator::Enrich(_) => "enrich",
            Operator::Batch { .. } => "batch",
            Operator::Deduplicate { .. } => "deduplicate",
            Operator::Throttle { .. } => "throttle",
            Operator::Partition { .. } => "partition",
        }
    }
}

/// Where a pipeline reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub table: String,
    /// `earliest`, `now`, `after:N` or an RFC 3339 time, as a
    /// subscription's start; `earliest` when not given (a new version
    /// continues where the one it replaces stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
}

impl Source {
    /// Where it starts.
    pub fn start(&self) -> &str {
        self.start.as_deref().unwrap_or("earliest")
    }
}

/// What a pipeline does when it cannot keep up with its source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Backpressure {
    /// It falls behind and catches up by reading storage; ingest never
    /// waits for it.
    #[default]
    Block,
    /// It reads ahead of its operators into memory, at most `max_events`
    /// events; when that is full it behaves like `block`.
    Buffer { max_events: u64 },
    /// When more than `max_lag` positions of its source are past its
    /// position, it skips the oldest of them so that `max_lag` are left,
    /// and counts the events it skipped.
    Drop { max_lag: u64 },
}

/// Most events a `buffer` pipeline may hold.
pub const MAX_BUFFERED_EVENTS: u64 = 1_000_000;

/// Most skipped ranges of positions a pipeline's progress lists (the
/// count of skipped events covers them all).
pub const MAX_SKIPPED_RANGES: usize = 100;

/// Where a pipeline writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sink {
    /// A table of the same tenant, created on the first write (the
    /// subscription's name when only that is given).
    #[serde(default)]
    pub table: String,
    /// A named subscription (a consumer group) on the sink table from its
    /// first position, made with the pipeline, or with the table when
    /// that does not exist yet: WebSocket consumers read every output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
}

/// A pipeline's definition, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    pub name: String,
    pub version: u32,
    /// Made when the pipeline is defined; the outputs' ids derive from it.
    pub id: uuid::Uuid,
    pub created_ms: i64,
    pub source: Source,
    pub operators: Vec<Operator>,
    pub sink: Sink,
    #[serde(default)]
    pub backpressure: Backpressure,
    /// Whom its source (and the tables and projections it enriches from)
    /// is read as; the server, unrestricted, for definitions made before
    /// definers were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definer: Option<crate::auth::Definer>,
}

/// A stateful operator's state as the progress stores it: its rows (an
/// Arrow IPC stream, base64), the latest event time it has seen and how
/// many events it found late.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredState {
    pub max_time: Option<i64>,
    pub late: u64,
    pub rows: String,
}

impl StoredState {
    /// `batch` (the operator's rows) stored with its latest event time
    /// and late count.
    pub fn encode(
        max_time: Option<i64>,
        late: u64,
        batch: &arrow::array::RecordBatch,
    ) -> datafusion::error::Result<StoredState> {
        use base64::Engine;
        let mut bytes = Vec::new();
        {
            let mut writer =
                arrow::ipc::writer::StreamWriter::try_new(&mut bytes, &batch.schema())?;
            writer.write(batch)?;
            writer.finish()?;
        }
        Ok(StoredState {
            max_time,
            late,
            rows: base64::engine::general_purpose::STANDARD.encode(bytes),
        })
    }

    /// The rows [`StoredState::encode`] stored.
    pub fn batches(&self) -> datafusion::error::Result<Vec<arrow::array::RecordBatch>> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.rows)
            .map_err(|e| {
                datafusion::error::DataFusionError::Execution(format!("an operator's state: {e}"))
            })?;
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
        Ok(reader.collect::<Result<Vec<_>, _>>()?)
    }
}

/// A duration given as text (`1h`, `15m`, `0`), in microseconds; `what`
/// names the field in the refusal.
pub(crate) fn duration_micros(what: &str, text: &str) -> Result<i64, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{what}: {text:?}: {e}"))?;
    i64::try_from(d.as_micros()).map_err(|_| format!("{what}: {text:?} is too long"))
}

/// `batch`'s column `name` cast to `to` (an operator's input always has
/// its timestamp and position).
pub(crate) fn column_as(
    batch: &arrow::array::RecordBatch,
    name: &str,
    to: &arrow::datatypes::DataType,
) -> datafusion::error::Result<arrow::array::ArrayRef> {
    let column = batch.column_by_name(name).ok_or_else(|| {
        datafusion::error::DataFusionError::Execution(format!("the input has no {name}"))
    })?;
    Ok(arrow::compute::cast(column, to)?)
}

/// How many rows `batches` hold.
pub fn rows_of(batches: &[arrow::array::RecordBatch]) -> u64 {
    batches.iter().map(|b| b.num_rows() as u64).sum()
}

/// Most operators one pipeline may have.
pub const MAX_OPERATORS: usize = 32;

/// What one operator has done, over the pipeline's life.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorCounters {
    pub op: String,
    pub events_in: u64,
    pub events_out: u64,
    /// Events left out: late ones, for a window.
    #[serde(default)]
    pub dropped: u64,
    /// Time spent running it, in microseconds.
    pub micros: u64,
}

/// How far a pipeline has gone, stored with its definition after each
/// micro-batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Every source event up to here has been run and its output stored.
    /// `None` until the first micro-batch of a pipeline that starts at a
    /// time.
    pub position: Option<u64>,
    pub paused: bool,
    /// Source events read.
    pub events_read: u64,
    pub operators: Vec<OperatorCounters>,
    /// Outputs the sink holds (each once, however often it was run).
    pub events_written: u64,
    /// Of those, the ones a rerun after a crash found already stored.
    pub duplicates: u64,
    /// Output rows without an event type, entity or timestamp, not stored.
    pub invalid: u64,
    /// Source events skipped unread by `drop` backpressure.
    #[serde(default)]
    pub skipped: u64,
    /// The latest ranges of positions skipped, first and last of each
    /// (at most [`MAX_SKIPPED_RANGES`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_ranges: Vec<[u64; 2]>,
    pub updated_ms: i64,
    /// The state of each stateful operator (window, deduplicate,
    /// throttle), by operator index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operator_state: Vec<Option<StoredState>>,
    /// After a partition, each worker's state of each stateful operator,
    /// by worker and then operator index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worker_state: Vec<Vec<Option<StoredState>>>,
}

impl Progress {
    /// Adds one micro-batch's work.
    pub fn add(&mut self, read: u64, runs: &[StageRun]) {
        self.events_read += read;
        for (c, r) in self.operators.iter_mut().zip(runs) {
            c.events_in += r.rows_in;
            c.events_out += r.rows_out;
            c.dropped += r.dropped;
            c.micros += r.nanos / 1_000;
        }
    }
}
