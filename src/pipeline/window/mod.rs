//! The `window` operator: aggregates over event-time windows, tumbling or
//! sliding, per key, one output row per window and key when it closes.
//!
//! Events are taken one at a time in position order. The watermark is the
//! latest event time seen so far less the allowed lateness; a window
//! closes when the watermark reaches its end, and an event whose window
//! has closed already is late: it is counted (as dropped), never added.
//! Since both depend only on the events before, what a window holds and
//! the event that closes it do not depend on how the events were cut into
//! micro-batches. An output row carries the position of the event that
//! closed its window, so the sink's ids stay the same when a micro-batch
//! is run again.
//!
//! Each aggregate is one DataFusion aggregate function (any of the
//! session's, `FILTER` and `DISTINCT` included), kept as an accumulator per
//! open window; the accumulators' states, the watermark and the late
//! count are the operator's state, stored with the pipeline's progress.

use super::keys::Keys;
use super::{column_as, duration_micros};
use crate::schema;
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray,
    UInt64Array,
};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::row::RowConverter;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_plan::PhysicalExpr;
use datafusion::prelude::SessionContext;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

mod aggregates;
mod batch;
mod stored;

pub use batch::batch_spec;

use std::sync::Arc;

/// Most windows one window operator may hold open at once; past it the
/// pipeline stops with the reason (a key with too many values, or a
/// watermark that does not move).
pub const MAX_OPEN_WINDOWS: usize = 100_000;

/// How windows lie on the time line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// Back to back, `size` long, aligned to the Unix epoch.
    #[default]
    Tumbling,
    /// `size` long, one starting every `slide`: an event is in each that
    /// covers it.
    Sliding,
    /// Every `size` events of a key (in position order), whatever their
    /// times: `size` is a number of events.
    Count,
}

/// A window operator as defined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    #[serde(default)]
    pub kind: WindowKind,
    /// A duration: `1h`, `15m`.
    pub size: String,
    /// Sliding windows: how far apart they start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slide: Option<String>,
    /// How far behind the latest event time an event may come and still
    /// count (default none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lateness: Option<String>,
    /// Output field name to SQL expression: one window per value.
    #[serde(default)]
    pub key: IndexMap<String, String>,
    /// Output field name to one SQL aggregate call: `count(*)`,
    /// `sum(amount) FILTER (WHERE …)`, `count(DISTINCT entity_id)`.
    pub aggregates: IndexMap<String, String>,
    /// The output events' type (default `window`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
}

/// Names the output has of its own.
const OWN: [&str; 6] = [
    schema::EVENT_TYPE,
    schema::TIMESTAMP,
    schema::POSITION,
    "window_start",
    "window_end",
    schema::EVENT_ID,
];

/// One aggregate, planned.
#[derive(Debug)]
struct Aggregate {
    name: String,
    expr: Arc<AggregateFunctionExpr>,
    filter: Option<Arc<dyn PhysicalExpr>>,
}

/// A window operator planned for its input schema.
#[derive(Debug)]
pub struct WindowStage {
    /// Count windows: how many events each holds (`size`, `slide` and
    /// `lateness` then play no part).
    count: Option<u64>,
    size: i64,
    slide: i64,
    lateness: i64,
    event_type: String,
    /// Computes the key columns, row for row (`None`: one window per
    /// time span for all events).
    keys: Keys,
    /// Whether a key is named `entity_id` (it then is the events'
    /// entity); otherwise the keys' values joined by `/`, or `*`.
    entity_key: Option<usize>,
    aggregates: Vec<Aggregate>,
    output: SchemaRef,
}

/// What a window operator holds between micro-batches.
#[derive(Debug, Default)]
pub struct WindowState {
    /// The latest event time seen (microseconds).
    max_time: Option<i64>,
    /// Events that came after their window had closed.
    pub late: u64,
    /// Open windows by (end, start, key): the order they close in.
    open: BTreeMap<WindowId, Open>,
}

/// A window's identity: its end, start and key (as row bytes), in the
/// order windows close.
type WindowId = (i64, i64, Vec<u8>);

/// A window closed by the event at the position, with its accumulators.
type Closed = (u64, WindowId, Open);

#[derive(Debug)]
struct Open {
    accumulators: Vec<Box<dyn Accumulator>>,
    /// Events in it, and the earliest and latest of their times.
    events: u64,
    first: i64,
    last: i64,
}

impl Open {
    fn add(&mut self, t: i64) {
        self.first = if self.events == 0 {
            t
        } else {
            self.first.min(t)
        };
        self.last = if self.events == 0 {
            t
        } else {
            self.last.max(t)
        };
        self.events += 1;
    }
}

impl WindowStage {
    /// Plans `spec` over `input` in `ctx` (a pipeline session with the
    /// input registered as `pipeline.input`).
    pub async fn plan(
        ctx: &SessionContext,
        input: &SchemaRef,
        spec: &WindowSpec,
    ) -> std::result::Result<WindowStage, String> {
        match input.field_with_name(schema::TIMESTAMP) {
            Ok(f) if matches!(f.data_type(), DataType::Timestamp(_, _)) => {}
            _ => return Err("a window needs its input's timestamp, as a timestamp".into()),
        }
        if input.field_with_name(schema::POSITION).is_err() {
            return Err("a window needs its input's position".into());
        }
        if spec.kind == WindowKind::Count {
            let count: u64 = spec.size.trim().parse().map_err(|_| {
                format!(
                    "size: {:?}: a count window's size is a number of events",
                    spec.size
                )
            })?;
            if count == 0 || count > 1_000_000 {
                return Err("size: a count window holds 1 to 1,000,000 events".into());
            }
            if spec.slide.is_some() || spec.lateness.is_some() {
                return Err("a count window has no slide or lateness".into());
            }
            return Self::planned(ctx, input, spec, Some(count), (1, 1, 0)).await;
        }
        let size = duration_micros("size", &spec.size)?;
        if size <= 0 {
            return Err("size: a window must last longer than nothing".into());
        }
        let slide = match (spec.kind, &spec.slide) {
            (WindowKind::Tumbling, None) => size,
            (WindowKind::Tumbling, Some(_)) => {
                return Err("slide: only sliding windows have one".into());
            }
            (WindowKind::Sliding, None) => {
                return Err("slide: a sliding window needs one".into());
            }
            (WindowKind::Sliding, Some(s)) => duration_micros("slide", s)?,
            (WindowKind::Count, _) => size,
        };
        if slide <= 0 || slide > size {
            return Err("slide: it must be above zero and at most the size".into());
        }
        if size / slide > 1_000 {
            return Err("slide: an event would be in more than 1,000 windows".into());
        }
        let lateness = match &spec.lateness {
            Some(l) => duration_micros("lateness", l)?,
            None => 0,
        };
        Self::planned(ctx, input, spec, None, (size, slide, lateness)).await
    }

    /// The rest of [`WindowStage::plan`]: keys, aggregates and output, for
    /// a count window or one of `(size, slide, lateness)`.
    async fn planned(
        ctx: &SessionContext,
        input: &SchemaRef,
        spec: &WindowSpec,
        count: Option<u64>,
        (size, slide, lateness): (i64, i64, i64),
    ) -> std::result::Result<WindowStage, String> {
        if spec.aggregates.is_empty() {
            return Err("aggregates: give at least one".into());
        }
        for name in spec.key.keys().chain(spec.aggregates.keys()) {
            if OWN.contains(&name.as_str()) || super::compile::RESERVED.contains(&name.as_str()) {
                return Err(format!(
                    "{name:?} is a field the window's output sets itself"
                ));
            }
        }
        if let Some(dup) = spec.key.keys().find(|k| spec.aggregates.contains_key(*k)) {
            return Err(format!("{dup:?} is both a key and an aggregate"));
        }
        let keys = Keys::plan(ctx, &spec.key).await?;
        let aggregates = aggregates::plan(ctx, input, &spec.aggregates).await?;
        let entity_key = spec.key.keys().position(|k| k == schema::ENTITY_ID);
        let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let mut fields = vec![
            Field::new(schema::EVENT_TYPE, DataType::Utf8, false),
            Field::new(schema::ENTITY_ID, DataType::Utf8, false),
            Field::new(schema::TIMESTAMP, ts(), false),
            Field::new("window_start", ts(), false),
            Field::new("window_end", ts(), false),
        ];
        for (i, f) in keys.fields.iter().enumerate() {
            if Some(i) != entity_key {
                fields.push(f.as_ref().clone().with_nullable(true));
            }
        }
        for a in &aggregates {
            fields.push(Field::new(
                &a.name,
                a.expr.field().data_type().clone(),
                true,
            ));
        }
        fields.push(Field::new(schema::POSITION, DataType::UInt64, false));
        Ok(WindowStage {
            count,
            size,
            slide,
            lateness,
            event_type: spec.event_type.clone().unwrap_or_else(|| "window".into()),
            keys,
            entity_key,
            aggregates,
            output: Arc::new(Schema::new(fields)),
        })
    }

    pub fn output(&self) -> &SchemaRef {
        &self.output
    }

    fn converter(&self) -> Result<RowConverter> {
        self.keys.converter()
    }

    fn accumulators(&self) -> Result<Vec<Box<dyn Accumulator>>> {
        self.aggregates
            .iter()
            .map(|a| a.expr.create_accumulator())
            .collect()
    }

    /// The windows an event at `t` falls in, by start.
    fn starts(&self, t: i64) -> impl Iterator<Item = i64> + '_ {
        let last = t.div_euclid(self.slide) * self.slide;
        (0..)
            .map(move |i| last - i * self.slide)
            .take_while(move |s| s + self.size > t)
    }

    /// Takes `batches` (in the input schema, position order) into `state`
    /// and returns the rows of the windows they closed, with how many
    /// events were late.
    pub async fn run(
        &self,
        batches: Vec<RecordBatch>,
        state: &mut WindowState,
        task: Arc<datafusion::execution::TaskContext>,
        input: &SchemaRef,
    ) -> Result<(Vec<RecordBatch>, u64)> {
        let converter = self.converter()?;
        let late_before = state.late;
        let mut closed: Vec<Closed> = Vec::new();
        for batch in batches {
            let n = batch.num_rows();
            if n == 0 {
                continue;
            }
            let keys = self
                .keys
                .rows(&converter, &batch, input, task.clone())
                .await?;
            let times = column_as(
                &batch,
                schema::TIMESTAMP,
                &DataType::Timestamp(TimeUnit::Microsecond, None),
            )?;
            let times = times.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            let positions = column_as(&batch, schema::POSITION, &DataType::UInt64)?;
            let positions = positions.as_primitive::<arrow::datatypes::UInt64Type>();
            let args = self.arguments(&batch)?;
            // Rows of this batch for each window, applied when it closes
            // or at the end of the batch.
            let mut pending: HashMap<WindowId, Vec<u32>> = HashMap::new();
            for row in 0..n {
                if times.is_null(row) {
                    continue;
                }
                let t = times.value(row);
                let key_bytes = keys
                    .as_ref()
                    .map_or_else(Vec::new, |k| k.row(row).as_ref().to_vec());
                if let Some(count) = self.count {
                    // One open window per key; it closes at its last event.
                    let id = (i64::MAX, 0, key_bytes);
                    let full = {
                        let open = self.open_window(state, &id)?;
                        open.add(t);
                        open.events >= count
                    };
                    pending.entry(id.clone()).or_default().push(row as u32);
                    if full && let Some(mut open) = state.open.remove(&id) {
                        if let Some(rows) = pending.remove(&id) {
                            self.update(&mut open, &args, &rows)?;
                        }
                        closed.push((positions.value(row), id, open));
                    }
                    continue;
                }
                let watermark = state.max_time.map(|m| m.saturating_sub(self.lateness));
                let mut was_late = false;
                for start in self.starts(t) {
                    let end = start.saturating_add(self.size);
                    if watermark.is_some_and(|w| end <= w) {
                        was_late = true;
                        continue;
                    }
                    let id = (end, start, key_bytes.clone());
                    self.open_window(state, &id)?.add(t);
                    pending.entry(id).or_default().push(row as u32);
                }
                if was_late {
                    state.late += 1;
                }
                state.max_time = Some(state.max_time.map_or(t, |m| m.max(t)));
                let watermark = state.max_time.unwrap_or(t).saturating_sub(self.lateness);
                while let Some(entry) = state.open.first_entry() {
                    if entry.key().0 > watermark {
                        break;
                    }
                    let (id, mut open) = entry.remove_entry();
                    if let Some(rows) = pending.remove(&id) {
                        self.update(&mut open, &args, &rows)?;
                    }
                    closed.push((positions.value(row), id, open));
                }
            }
            for (id, rows) in pending {
                if let Some(open) = state.open.get_mut(&id) {
                    self.update(open, &args, &rows)?;
                }
            }
        }
        let out = self.emit(&converter, closed)?;
        Ok((out.into_iter().collect(), state.late - late_before))
    }

    /// The open window `id`, opened now if it is not.
    fn open_window<'a>(&self, state: &'a mut WindowState, id: &WindowId) -> Result<&'a mut Open> {
        if !state.open.contains_key(id) && state.open.len() >= MAX_OPEN_WINDOWS {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "a window operator holds {MAX_OPEN_WINDOWS} open windows, the most it may"
            )));
        }
        match state.open.entry(id.clone()) {
            std::collections::btree_map::Entry::Occupied(o) => Ok(o.into_mut()),
            std::collections::btree_map::Entry::Vacant(v) => Ok(v.insert(Open {
                accumulators: self.accumulators()?,
                events: 0,
                first: 0,
                last: 0,
            })),
        }
    }

    /// Each aggregate's argument columns over `batch`, with its `FILTER`
    /// applied as nulls-out rows: the rows that fail it are left out when
    /// the rows are taken.
    fn arguments(&self, batch: &RecordBatch) -> Result<Vec<(Vec<ArrayRef>, Option<BooleanArray>)>> {
        self.aggregates
            .iter()
            .map(|a| {
                let values = a
                    .expr
                    .expressions()
                    .iter()
                    .map(|e| e.evaluate(batch)?.into_array(batch.num_rows()))
                    .collect::<Result<Vec<_>>>()?;
                let mask = match &a.filter {
                    Some(f) => {
                        let m = f.evaluate(batch)?.into_array(batch.num_rows())?;
                        Some(m.as_boolean().clone())
                    }
                    None => None,
                };
                Ok((values, mask))
            })
            .collect()
    }

    fn update(
        &self,
        open: &mut Open,
        args: &[(Vec<ArrayRef>, Option<BooleanArray>)],
        rows: &[u32],
    ) -> Result<()> {
        for (acc, (values, mask)) in open.accumulators.iter_mut().zip(args) {
            let picked: Vec<u32> = match mask {
                Some(m) => rows
                    .iter()
                    .copied()
                    .filter(|r| m.is_valid(*r as usize) && m.value(*r as usize))
                    .collect(),
                None => rows.to_vec(),
            };
            if picked.is_empty() {
                continue;
            }
            let indices = arrow::array::UInt32Array::from(picked);
            let taken = values
                .iter()
                .map(|v| take(v.as_ref(), &indices, None))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            acc.update_batch(&taken)?;
        }
        Ok(())
    }

    /// The output rows of the closed windows, in the order they closed.
    fn emit(&self, converter: &RowConverter, closed: Vec<Closed>) -> Result<Option<RecordBatch>> {
        if closed.is_empty() {
            return Ok(None);
        }
        let n = closed.len();
        let keys: Option<Vec<ArrayRef>> = match self.keys.is_empty() {
            true => None,
            false => Some(self.keys.columns(
                converter,
                closed.iter().map(|(_, (_, _, k), _)| k.as_slice()),
            )?),
        };
        let key_text: Vec<ArrayRef> = keys
            .iter()
            .flatten()
            .map(|k| cast(k, &DataType::Utf8))
            .collect::<std::result::Result<_, _>>()?;
        let entity: Vec<String> = (0..n)
            .map(|i| match self.entity_key {
                Some(k) => value_text(&key_text[k], i),
                None if key_text.is_empty() => "*".to_string(),
                None => key_text
                    .iter()
                    .map(|k| value_text(k, i))
                    .collect::<Vec<_>>()
                    .join("/"),
            })
            .collect();
        let ts = |v: Vec<i64>| -> ArrayRef {
            Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC"))
        };
        // A count window spans its events' times; a time window its own.
        let (starts, ends): (Vec<i64>, Vec<i64>) = closed
            .iter()
            .map(|(_, (e, s, _), o)| match self.count {
                Some(_) => (o.first, o.last),
                None => (*s, *e),
            })
            .unzip();
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![self.event_type.as_str(); n])),
            Arc::new(StringArray::from(entity)),
            ts(starts.clone()),
            ts(starts),
            ts(ends),
        ];
        if let Some(keys) = keys {
            for (i, k) in keys.into_iter().enumerate() {
                if Some(i) != self.entity_key {
                    columns.push(k);
                }
            }
        }
        let mut closed = closed;
        for (j, a) in self.aggregates.iter().enumerate() {
            let values = closed
                .iter_mut()
                .map(|(_, _, o)| o.accumulators[j].evaluate())
                .collect::<Result<Vec<_>>>()?;
            let array = ScalarValue::iter_to_array(values)?;
            let array = match array.data_type() == a.expr.field().data_type() {
                true => array,
                false => cast(&array, a.expr.field().data_type())?,
            };
            columns.push(array);
        }
        columns.push(Arc::new(UInt64Array::from(
            closed.iter().map(|(p, _, _)| *p).collect::<Vec<_>>(),
        )));
        Ok(Some(RecordBatch::try_new(self.output.clone(), columns)?))
    }
}

fn value_text(a: &ArrayRef, i: usize) -> String {
    match a.is_valid(i) {
        true => a.as_string::<i32>().value(i).to_string(),
        false => String::new(),
    }
}
