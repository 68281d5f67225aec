//! `gapfill('<query>', '<time column>', interval, start, end [, fill
//! [, '<series columns>']])`: the inner query's rows placed on a regular
//! grid of buckets over [start, end), one row per bucket and series, with
//! the missing buckets filled.
//!
//! Buckets are aligned on the epoch as `date_bin`'s are by default (month
//! intervals on calendar months from 1970-01), and the grid holds every
//! bucket that overlaps [start, end). Each inner row goes to the bucket
//! holding its time; rows outside the grid or with a NULL time are left out, and two rows in the same bucket of
//! the same series are an error (aggregate them in the inner query).
//! Every column other than the time and the series columns is a value
//! column, filled in missing buckets as `fill` says:
//! - `null`: NULL;
//! - `zero`: 0 for numeric columns (NULL for others);
//! - `previous`: the series' last non-NULL value before the bucket;
//! - `linear`: for numeric columns (which become DOUBLE), the straight
//!   line between the nearest non-NULL values on each side, by time; NULL
//!   before the first and after the last. Other columns get NULL.

use crate::udtf::{Args, FoldTable, Gather, Step, column_index, plan_inner, reserve_rows, rfc3339};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Scalar, TimestampNanosecondArray,
    UInt32Array, new_null_array,
};
use datafusion::arrow::compute::kernels::zip::zip;
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{
    DataType, Field, Float64Type, Schema, SchemaRef, TimeUnit, TimestampNanosecondType,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{ScalarValue, exec_err, plan_err};
use datafusion::error::Result;
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::logical_expr::LogicalPlan;
use std::collections::BTreeMap;
use std::sync::Arc;

const NAME: &str = "gapfill";

/// Most buckets one call may produce per series.
pub const MAX_BUCKETS: i64 = 1_000_000;

/// Most rows one call may produce.
pub const MAX_ROWS: usize = 50_000_000;

/// How missing buckets are filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// NULL.
    Null,
    /// Zero.
    Zero,
    /// The last value seen.
    Previous,
    /// Linear interpolation.
    Linear,
}

impl Fill {
    pub fn parse(text: &str) -> Result<Fill> {
        match text.trim().to_ascii_lowercase().as_str() {
            "null" | "none" => Ok(Fill::Null),
            "zero" | "0" => Ok(Fill::Zero),
            "previous" | "locf" => Ok(Fill::Previous),
            "linear" | "interpolate" => Ok(Fill::Linear),
            _ => plan_err!(
                "{NAME}: unknown fill {text:?}; use 'null', 'zero', 'previous' or 'linear'"
            ),
        }
    }
}

fn is_time(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64
    )
}

/// The table function.
#[derive(Debug, Default)]
pub struct GapFill;

/// Everything the fold needs to know about one call.
#[derive(Debug)]
struct Spec {
    time: usize,
    keys: Vec<usize>,
    step: Step,
    /// The number of the first bucket, counted from the epoch.
    first: i64,
    buckets: i64,
    fill: Fill,
    out: SchemaRef,
}

impl TableFunctionImpl for GapFill {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let a = Args {
            func: NAME,
            usage: "('<query>', '<time column>', interval, start, end [, fill [, '<series columns>']])",
            exprs: args.exprs(),
        };
        a.count(5, 7)?;
        let sql = a.string(0, "the query")?;
        let time_name = a.string(1, "the time column")?;
        let step = a.step(2, "the interval")?;
        let start = a.instant(3, "start")?;
        let end = a.instant(4, "end")?;
        let fill = if a.has(5) {
            Fill::parse(&a.string(5, "the fill")?)?
        } else {
            Fill::Null
        };
        let key_names: Vec<String> = if a.has(6) {
            a.string(6, "the series columns")?
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        } else {
            Vec::new()
        };
        let plan = plan_inner(NAME, args.session(), &sql)?;
        gapfill_provider(plan, &time_name, step, start, end, fill, &key_names)
    }
}

/// The table `gapfill` returns, over an already planned query (`start`
/// and `end` in nanoseconds since the epoch).
pub fn gapfill_provider(
    plan: LogicalPlan,
    time_name: &str,
    step: Step,
    start: i64,
    end: i64,
    fill: Fill,
    key_names: &[String],
) -> Result<Arc<dyn TableProvider>> {
    if end <= start {
        return plan_err!("{NAME}: end must be after start");
    }
    // Buckets are aligned on the epoch, as date_bin's are by default.
    let first = step.index(0, start);
    let last = step.index(0, end - 1);
    let (first, buckets) = match (first, last) {
        (Some(first), Some(last)) if last - first < MAX_BUCKETS => (first, last - first + 1),
        _ => {
            return plan_err!(
                "{NAME}: the range holds more than {MAX_BUCKETS} buckets; use a wider interval or a shorter range"
            );
        }
    };

    let inner: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
    let time = column_index(NAME, &inner, time_name)?;
    let time_type = inner.field(time).data_type();
    if !is_time(time_type) {
        return plan_err!(
            "{NAME}: the time column {time_name:?} must be a timestamp or a date, got {time_type}"
        );
    }
    let mut keys = Vec::new();
    for name in key_names {
        let i = column_index(NAME, &inner, name)?;
        if i == time {
            return plan_err!("{NAME}: {name:?} is the time column; it cannot be a series column");
        }
        if !keys.contains(&i) {
            keys.push(i);
        }
    }
    let fields: Vec<Field> = inner
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if i == time || keys.contains(&i) {
                f.as_ref().clone()
            } else if fill == Fill::Linear && f.data_type().is_numeric() {
                Field::new(f.name(), DataType::Float64, true)
            } else {
                f.as_ref().clone().with_nullable(true)
            }
        })
        .collect();
    let out = Arc::new(Schema::new(fields));
    let spec = Arc::new(Spec {
        time,
        keys,
        step,
        first,
        buckets,
        fill,
        out: Arc::clone(&out),
    });
    let make = move || {
        let spec = Arc::clone(&spec);
        Gather::boxed(Arc::clone(&inner), move |batch: RecordBatch, memory| {
            fill_gaps(&spec, &batch, memory)
        })
    };
    Ok(FoldTable::provider(NAME, plan, out, Arc::new(make)))
}

/// The output rows of one series: for each bucket, the inner row in it.
struct Series {
    first_row: u32,
    slots: Vec<Option<u32>>,
}

/// Working memory per input row while grouping: the time cast, the row
/// number in its group (with the vector's slack) and the series key.
const GROUP_BYTES_PER_ROW: usize = 16 + 8 + 16;

/// Working memory per output row besides the columns: the slot, the
/// present/first/time vectors with their index arrays, and the time
/// column with its cast.
const GRID_BYTES_PER_ROW: usize = 8 + 8 + 4 + 8 + 8 + 5 + 4 + 16;

/// The most bytes the output column made from `col` can take over
/// `total` rows when filled with `fill` (series columns repeat their
/// first value, as `Previous` may), with the fill's working memory.
fn column_bytes(fill: Fill, col: &ArrayRef, total: usize) -> usize {
    let width = |dt: &DataType| dt.primitive_width().map(|w| w + 1);
    let rows = col.len().max(1);
    let (offset, longest) = match col.data_type() {
        DataType::Utf8 | DataType::Binary => (4, max_value_len(col)),
        DataType::LargeUtf8 | DataType::LargeBinary => (8, max_value_len(col)),
        DataType::Utf8View | DataType::BinaryView => (16, max_value_len(col)),
        dt => match width(dt) {
            Some(w) => (w, 0),
            // Nested values: twice the average row, as a guess.
            None => (2 * col.get_array_memory_size() / rows + 16, 0),
        },
    };
    let per_row = match fill {
        // Each inner row is taken at most once: its bytes plus offsets
        // (zero fills also build a mask and a second column).
        Fill::Null | Fill::Zero => {
            let extra = if fill == Fill::Zero { offset + 1 } else { 0 };
            return col
                .get_array_memory_size()
                .saturating_add(total.saturating_mul(offset + 2 + extra));
        }
        // A value may be repeated into every later bucket.
        Fill::Previous => offset + longest + 13,
        Fill::Linear => offset + longest + 16 + 16 + 9,
    };
    total.saturating_mul(per_row)
}

/// The longest value of a string or binary column, in bytes.
fn max_value_len(col: &ArrayRef) -> usize {
    use datafusion::arrow::array::AsArray;
    match col.data_type() {
        DataType::Utf8 => col.as_string::<i32>().iter().flatten().map(str::len).max(),
        DataType::LargeUtf8 => col.as_string::<i64>().iter().flatten().map(str::len).max(),
        DataType::Utf8View => col.as_string_view().iter().flatten().map(str::len).max(),
        DataType::Binary => col
            .as_binary::<i32>()
            .iter()
            .flatten()
            .map(<[u8]>::len)
            .max(),
        DataType::LargeBinary => col
            .as_binary::<i64>()
            .iter()
            .flatten()
            .map(<[u8]>::len)
            .max(),
        DataType::BinaryView => col.as_binary_view().iter().flatten().map(<[u8]>::len).max(),
        _ => None,
    }
    .unwrap_or(0)
}

fn fill_gaps(
    spec: &Spec,
    batch: &RecordBatch,
    memory: &mut MemoryReservation,
) -> Result<RecordBatch> {
    let n = batch.num_rows();
    if n > u32::MAX as usize {
        return exec_err!("{NAME}: the inner query returned too many rows");
    }
    let key_bytes: usize = spec
        .keys
        .iter()
        .map(|&i| batch.column(i).get_array_memory_size())
        .sum();
    memory.try_grow(key_bytes)?;
    reserve_rows(memory, n, GROUP_BYTES_PER_ROW)?;
    let time_col = batch.column(spec.time);
    let tz = match time_col.data_type() {
        DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    };
    let times = cast(time_col, &DataType::Timestamp(TimeUnit::Nanosecond, None))?;
    let times = times.as_primitive::<TimestampNanosecondType>();

    // Group the rows by series, in the order of the series' keys.
    let mut groups: BTreeMap<Vec<u8>, Vec<u32>> = BTreeMap::new();
    if spec.keys.is_empty() {
        if n > 0 {
            groups.insert(Vec::new(), (0..n as u32).collect());
        }
    } else {
        let fields = spec
            .keys
            .iter()
            .map(|&i| SortField::new(batch.column(i).data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields)?;
        let cols: Vec<ArrayRef> = spec
            .keys
            .iter()
            .map(|&i| Arc::clone(batch.column(i)))
            .collect();
        let rows = converter.convert_columns(&cols)?;
        for (r, row) in rows.iter().enumerate() {
            groups
                .entry(row.as_ref().to_vec())
                .or_default()
                .push(r as u32);
        }
    }

    let buckets = spec.buckets as usize;
    if groups.len().saturating_mul(buckets) > MAX_ROWS {
        return exec_err!(
            "{NAME}: {} series of {buckets} buckets is more than {MAX_ROWS} rows; narrow the range or the series",
            groups.len()
        );
    }
    let total = groups.len().max(1) * buckets;
    reserve_rows(memory, total, GRID_BYTES_PER_ROW)?;
    for (i, col) in batch.columns().iter().enumerate() {
        if i != spec.time {
            let fill = if spec.keys.contains(&i) {
                Fill::Previous
            } else {
                spec.fill
            };
            memory.try_grow(column_bytes(fill, col, total))?;
        }
    }
    let mut series = Vec::with_capacity(groups.len());
    for rows in groups.into_values() {
        let mut slots = vec![None; buckets];
        for &r in &rows {
            if times.is_null(r as usize) {
                continue;
            }
            let t = times.value(r as usize);
            let Some(k) = spec.step.index(0, t).map(|k| k - spec.first) else {
                continue;
            };
            if k < 0 || k >= spec.buckets {
                continue;
            }
            let slot = &mut slots[k as usize];
            if slot.is_some() {
                let at = spec
                    .step
                    .nth(0, spec.first + k)
                    .map(rfc3339)
                    .unwrap_or_default();
                return exec_err!(
                    "{NAME}: two rows of the inner query fall in the bucket starting {at} of the same series; aggregate them in the inner query (GROUP BY the bucket) or name the series columns"
                );
            }
            *slot = Some(r);
        }
        series.push(Series {
            first_row: rows[0],
            slots,
        });
    }
    if series.is_empty() && spec.keys.is_empty() {
        series.push(Series {
            first_row: 0,
            slots: vec![None; buckets],
        });
    }

    let mut bucket_times = Vec::with_capacity(buckets);
    for k in 0..spec.buckets {
        match spec.step.nth(0, spec.first + k) {
            Some(t) => bucket_times.push(t),
            None => return exec_err!("{NAME}: bucket {k} is out of the timestamp range"),
        }
    }
    let total = series.len() * buckets;
    let mut present: Vec<Option<u32>> = Vec::with_capacity(total);
    let mut firsts: Vec<u32> = Vec::with_capacity(total);
    let mut out_times: Vec<i64> = Vec::with_capacity(total);
    for s in &series {
        present.extend_from_slice(&s.slots);
        firsts.extend(std::iter::repeat_n(s.first_row, buckets));
        out_times.extend_from_slice(&bucket_times);
    }
    let present_idx = UInt32Array::from(present.clone());
    let first_idx = UInt32Array::from(firsts);

    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (i, field) in spec.out.fields().iter().enumerate() {
        let col = batch.column(i);
        let out: ArrayRef = if i == spec.time {
            let t = TimestampNanosecondArray::from(out_times.clone()).with_timezone_opt(tz.clone());
            cast(&t, field.data_type())?
        } else if spec.keys.contains(&i) {
            take_or_null(col, &first_idx)?
        } else {
            fill_column(
                spec.fill,
                col,
                &series,
                &present,
                &present_idx,
                &bucket_times,
                field,
            )?
        };
        columns.push(out);
    }
    Ok(RecordBatch::try_new(Arc::clone(&spec.out), columns)?)
}

/// `take`, but all NULL when there are no rows to take from (every index
/// is then NULL).
fn take_or_null(col: &ArrayRef, idx: &UInt32Array) -> Result<ArrayRef> {
    if col.is_empty() {
        Ok(new_null_array(col.data_type(), idx.len()))
    } else {
        Ok(take(col, idx, None)?)
    }
}

fn fill_column(
    fill: Fill,
    col: &ArrayRef,
    series: &[Series],
    present: &[Option<u32>],
    present_idx: &UInt32Array,
    bucket_times: &[i64],
    field: &Field,
) -> Result<ArrayRef> {
    let numeric = col.data_type().is_numeric();
    match fill {
        Fill::Null => take_or_null(col, present_idx),
        Fill::Zero if numeric => {
            let taken = take_or_null(col, present_idx)?;
            let mask: BooleanArray = present.iter().map(|p| Some(p.is_some())).collect();
            let zero = ScalarValue::Int64(Some(0))
                .cast_to(col.data_type())?
                .to_array_of_size(1)?;
            Ok(zip(&mask, &taken, &Scalar::new(zero))?)
        }
        Fill::Zero => take_or_null(col, present_idx),
        Fill::Previous => {
            let mut idx: Vec<Option<u32>> = Vec::with_capacity(present.len());
            for s in series {
                let mut last = None;
                for slot in &s.slots {
                    match slot {
                        Some(r) => {
                            if col.is_valid(*r as usize) {
                                last = Some(*r);
                            }
                            idx.push(Some(*r));
                        }
                        None => idx.push(last),
                    }
                }
            }
            take_or_null(col, &UInt32Array::from(idx))
        }
        Fill::Linear if numeric => {
            let x = cast(col, &DataType::Float64)?;
            let x = x.as_primitive::<Float64Type>();
            let mut out: Vec<Option<f64>> = Vec::with_capacity(present.len());
            for s in series {
                let known: Vec<(usize, f64)> = s
                    .slots
                    .iter()
                    .enumerate()
                    .filter_map(|(k, slot)| {
                        slot.filter(|r| x.is_valid(*r as usize))
                            .map(|r| (k, x.value(r as usize)))
                    })
                    .collect();
                let mut next = 0; // first known point at or after k
                for (k, slot) in s.slots.iter().enumerate() {
                    if let Some(r) = slot {
                        let r = *r as usize;
                        out.push(x.is_valid(r).then(|| x.value(r)));
                        continue;
                    }
                    while next < known.len() && known[next].0 < k {
                        next += 1;
                    }
                    let value = match (next.checked_sub(1).map(|p| known[p]), known.get(next)) {
                        (Some((k0, v0)), Some(&(k1, v1))) => {
                            let (t0, t1, t) = (bucket_times[k0], bucket_times[k1], bucket_times[k]);
                            Some(v0 + (v1 - v0) * ((t - t0) as f64 / (t1 - t0) as f64))
                        }
                        _ => None,
                    };
                    out.push(value);
                }
            }
            Ok(Arc::new(Float64Array::from(out)))
        }
        Fill::Linear => {
            let taken = take_or_null(col, present_idx)?;
            Ok(cast(&taken, field.data_type())?)
        }
    }
}
