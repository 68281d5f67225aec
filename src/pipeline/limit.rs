//! `deduplicate` and `throttle`: at most so many events per key in each
//! event-time bucket (one for `deduplicate`, `rate` for `throttle`), the
//! first ones in position order; the rest are dropped and counted.
//!
//! Buckets are tumbling, `within` (or `per`) long and aligned to the Unix
//! epoch, so the kept events are exactly those SQL numbers 1 to N with
//! `row_number() OVER (PARTITION BY key, date_bin(bucket, timestamp)
//! ORDER BY position)`. A bucket's count is kept until the watermark (the
//! latest event time seen less the allowed lateness) passes its end; an
//! event for a bucket already forgotten is late: dropped and counted, as
//! a window's late event is. The counts, the latest time and the late
//! count are the operator's state, stored with the pipeline's progress.

use super::keys::Keys;
use super::{StoredState, column_as, duration_micros};
use crate::schema;
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::prelude::SessionContext;
use indexmap::IndexMap;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Most (key, bucket) counts one operator may hold at once; past it the
/// pipeline stops with the reason.
pub const MAX_BUCKETS: usize = 1_000_000;

/// A bucket's identity: its end, start and key (as row bytes), in the
/// order buckets are forgotten.
type BucketId = (i64, i64, Vec<u8>);

/// A `deduplicate` or `throttle` operator, planned.
#[derive(Debug)]
pub struct LimitStage {
    /// Bucket length, microseconds.
    bucket: i64,
    lateness: i64,
    /// Events kept per key and bucket.
    most: u64,
    keys: Keys,
}

/// What the operator holds between micro-batches.
#[derive(Debug, Default)]
pub struct LimitState {
    max_time: Option<i64>,
    late: u64,
    counts: BTreeMap<BucketId, u64>,
}

/// What one run left out.
#[derive(Debug, Clone, Copy, Default)]
pub struct Left {
    /// Over the limit of their bucket.
    pub limited: u64,
    /// For a bucket already forgotten.
    pub late: u64,
}

impl LimitStage {
    /// Plans the operator over `input`: `most` events per `key` in each
    /// bucket of `bucket` (a duration), late after `lateness`.
    pub async fn plan(
        ctx: &SessionContext,
        input: &SchemaRef,
        key: &IndexMap<String, String>,
        most: u64,
        bucket: (&str, &str),
        lateness: Option<&str>,
    ) -> std::result::Result<LimitStage, String> {
        match input.field_with_name(schema::TIMESTAMP) {
            Ok(f) if matches!(f.data_type(), DataType::Timestamp(_, _)) => {}
            _ => return Err("it needs its input's timestamp, as a timestamp".into()),
        }
        if most == 0 {
            return Err("rate: at least one event must pass".into());
        }
        let (what, bucket) = bucket;
        let bucket = duration_micros(what, bucket)?;
        if bucket == 0 {
            return Err(format!("{what}: it must last longer than nothing"));
        }
        let lateness = match lateness {
            Some(l) => duration_micros("lateness", l)?,
            None => 0,
        };
        let keys = Keys::plan(ctx, key).await?;
        Ok(LimitStage {
            bucket,
            lateness,
            most,
            keys,
        })
    }

    /// The events of `batches` (in the input schema, position order) that
    /// pass, in order, with what was left out.
    pub async fn run(
        &self,
        batches: Vec<RecordBatch>,
        state: &mut LimitState,
        task: Arc<TaskContext>,
        input: &SchemaRef,
    ) -> Result<(Vec<RecordBatch>, Left)> {
        let converter = self.keys.converter()?;
        let mut left = Left::default();
        let mut out = Vec::with_capacity(batches.len());
        for batch in batches {
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
            let mut kept: Vec<u32> = Vec::with_capacity(batch.num_rows());
            for row in 0..batch.num_rows() {
                if times.is_null(row) {
                    continue;
                }
                let t = times.value(row);
                let start = t.div_euclid(self.bucket) * self.bucket;
                let end = start.saturating_add(self.bucket);
                let watermark = state.max_time.map(|m| m.saturating_sub(self.lateness));
                if watermark.is_some_and(|w| end <= w) {
                    left.late += 1;
                    state.late += 1;
                } else {
                    let key = keys
                        .as_ref()
                        .map_or_else(Vec::new, |k| k.row(row).as_ref().to_vec());
                    let id = (end, start, key);
                    if !state.counts.contains_key(&id) && state.counts.len() >= MAX_BUCKETS {
                        return Err(DataFusionError::ResourcesExhausted(format!(
                            "the operator counts {MAX_BUCKETS} keys and buckets, the most it may"
                        )));
                    }
                    let count = state.counts.entry(id).or_insert(0);
                    match *count < self.most {
                        true => {
                            *count += 1;
                            kept.push(row as u32);
                        }
                        false => left.limited += 1,
                    }
                }
                state.max_time = Some(state.max_time.map_or(t, |m| m.max(t)));
                let watermark = state.max_time.unwrap_or(t).saturating_sub(self.lateness);
                while let Some(entry) = state.counts.first_entry() {
                    if entry.key().0 > watermark {
                        break;
                    }
                    entry.remove();
                }
            }
            if kept.len() == batch.num_rows() {
                out.push(batch);
            } else if !kept.is_empty() {
                let indices = UInt32Array::from(kept);
                out.push(arrow::compute::take_record_batch(&batch, &indices)?);
            }
        }
        Ok((out, left))
    }

    /// `state` as the pipeline's progress stores it.
    pub fn store(&self, state: &LimitState) -> Result<StoredState> {
        let converter = self.keys.converter()?;
        let mut fields = vec![
            Field::new("end", DataType::Int64, false),
            Field::new("start", DataType::Int64, false),
            Field::new("count", DataType::UInt64, false),
        ];
        for (i, f) in self.keys.fields.iter().enumerate() {
            fields.push(Field::new(format!("k{i}"), f.data_type().clone(), true));
        }
        let schema = Arc::new(Schema::new(fields));
        let ids = state.counts.keys();
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(arrow::array::Int64Array::from_iter_values(
                ids.clone().map(|(e, _, _)| *e),
            )),
            Arc::new(arrow::array::Int64Array::from_iter_values(
                ids.clone().map(|(_, s, _)| *s),
            )),
            Arc::new(UInt64Array::from_iter_values(
                state.counts.values().copied(),
            )),
        ];
        columns.extend(
            self.keys
                .columns(&converter, ids.map(|(_, _, k)| k.as_slice()))?,
        );
        let batch = RecordBatch::try_new(schema, columns)?;
        StoredState::encode(state.max_time, state.late, &batch)
    }

    /// The state `stored` describes.
    pub fn restore(&self, stored: &StoredState) -> Result<LimitState> {
        let converter = self.keys.converter()?;
        let mut state = LimitState {
            max_time: stored.max_time,
            late: stored.late,
            counts: BTreeMap::new(),
        };
        let width = self.keys.fields.len();
        for batch in stored.batches()? {
            let ends = batch
                .column(0)
                .as_primitive::<arrow::datatypes::Int64Type>();
            let starts = batch
                .column(1)
                .as_primitive::<arrow::datatypes::Int64Type>();
            let counts = batch
                .column(2)
                .as_primitive::<arrow::datatypes::UInt64Type>();
            let rows = match width {
                0 => None,
                _ => Some(converter.convert_columns(&batch.columns()[3..3 + width])?),
            };
            for i in 0..batch.num_rows() {
                let key = rows
                    .as_ref()
                    .map_or_else(Vec::new, |r| r.row(i).as_ref().to_vec());
                state
                    .counts
                    .insert((ends.value(i), starts.value(i), key), counts.value(i));
            }
        }
        Ok(state)
    }
}
