//! The funnel engine shared by `window_funnel` and `funnel_steps`: argument
//! checks, the per-group event lists, ClickHouse's `windowFunnel`
//! algorithm, and the accumulators (one `GroupsAccumulator` for both
//! functions; they differ only in what they report per group).

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, ListArray, UInt8Array,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type, TimeUnit, UInt8Type};
use datafusion::common::{ScalarValue, exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::logical_expr::{Accumulator, EmitTo, GroupsAccumulator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Literal;
use std::sync::Arc;

mod accumulate;

pub(crate) use accumulate::{
    FunnelAccumulator, FunnelGroups, FunnelOutput, condition_masks, passes_filter, take_groups,
};

/// Most steps a funnel may have (as in ClickHouse).
pub const MAX_STEPS: usize = 32;

fn is_timestamp_like(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Timestamp(_, _)
            | DataType::Date32
            | DataType::Date64
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
    )
}

/// Checks the argument list shape shared by the funnel functions and
/// returns the coerced types. `name` is used in messages.
pub(crate) fn coerce_funnel_args(name: &str, args: &[DataType]) -> Result<Vec<DataType>> {
    let has_mode = args.len() > 1 && args[1].is_string();
    let ts = if has_mode { 2 } else { 1 };
    if args.len() < ts + 2 {
        return plan_err!(
            "{name} expects (window, [mode,] timestamp, cond1, ...) with at least one condition, got {} arguments",
            args.len()
        );
    }
    let steps = args.len() - ts - 1;
    if steps > MAX_STEPS {
        return plan_err!("{name} supports at most {MAX_STEPS} steps, got {steps}");
    }
    match &args[0] {
        DataType::Interval(_) | DataType::Duration(_) => {}
        dt if dt.is_integer() => {}
        DataType::Null => return plan_err!("{name}: the window must not be NULL"),
        other => {
            return plan_err!(
                "{name}: the window must be an INTERVAL or an integer number of seconds, got {other}"
            );
        }
    }
    if !is_timestamp_like(&args[ts]) {
        return plan_err!(
            "{name}: argument {} must be a timestamp, a date or an integer, got {}",
            ts + 1,
            args[ts]
        );
    }
    let mut out = args.to_vec();
    for (i, dt) in args.iter().enumerate().skip(ts + 1) {
        match dt {
            DataType::Boolean => {}
            DataType::Null => out[i] = DataType::Boolean,
            other => {
                return plan_err!(
                    "{name}: step {} (argument {}) must be a boolean condition, got {other}",
                    i - ts,
                    i + 1
                );
            }
        }
    }
    Ok(out)
}

/// The modes, as ClickHouse names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Mode {
    pub(crate) strict_order: bool,
    pub(crate) strict_deduplication: bool,
    pub(crate) strict_increase: bool,
}

impl Mode {
    pub(crate) fn parse(name: &str, text: &str) -> Result<Mode> {
        let mut mode = Mode::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "strict_order" => mode.strict_order = true,
                "strict_deduplication" => mode.strict_deduplication = true,
                "strict_increase" => mode.strict_increase = true,
                other => {
                    return plan_err!(
                        "{name}: unknown mode {other:?}; use strict_order, strict_deduplication and/or strict_increase, comma-separated"
                    );
                }
            }
        }
        Ok(mode)
    }
}

/// What a funnel call fixed at planning: the window in timestamp units,
/// the mode, where the timestamp is, how many steps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FunnelSpec {
    pub(crate) window: i64,
    pub(crate) mode: Mode,
    pub(crate) ts_index: usize,
    pub(crate) steps: usize,
}

fn literal(expr: &Arc<dyn PhysicalExpr>) -> Option<&ScalarValue> {
    expr.as_ref().downcast_ref::<Literal>().map(|l| l.value())
}

/// Timestamps are compared in microseconds when they are times or dates,
/// in their own unit when they are integers.
fn timestamp_is_time(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64
    )
}

impl FunnelSpec {
    pub(crate) fn from_args(name: &str, args: &AccumulatorArgs) -> Result<FunnelSpec> {
        let types: Vec<DataType> = args
            .expr_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let has_mode = types.len() > 1 && types[1].is_string();
        let ts_index = if has_mode { 2 } else { 1 };
        let steps = types.len() - ts_index - 1;
        let as_time = timestamp_is_time(&types[ts_index]);
        let window = match literal(&args.exprs[0]) {
            Some(ScalarValue::IntervalMonthDayNano(Some(v))) => {
                if v.months != 0 {
                    return plan_err!(
                        "{name}: the window cannot be in months (their length varies); use days"
                    );
                }
                if !as_time {
                    return plan_err!(
                        "{name}: an INTERVAL window needs a timestamp or date, not an integer timestamp"
                    );
                }
                v.days as i64 * 86_400_000_000 + v.nanoseconds / 1000
            }
            Some(ScalarValue::IntervalDayTime(Some(v))) => {
                v.days as i64 * 86_400_000_000 + v.milliseconds as i64 * 1000
            }
            Some(ScalarValue::DurationSecond(Some(s))) => s * 1_000_000,
            Some(ScalarValue::DurationMillisecond(Some(s))) => s * 1000,
            Some(ScalarValue::DurationMicrosecond(Some(s))) => *s,
            Some(ScalarValue::DurationNanosecond(Some(s))) => s / 1000,
            Some(v) if v.data_type().is_integer() && !v.is_null() => {
                let n = match v.cast_to(&DataType::Int64)? {
                    ScalarValue::Int64(Some(n)) => n,
                    _ => return plan_err!("{name}: the window is not a valid integer"),
                };
                if as_time {
                    n.saturating_mul(1_000_000)
                } else {
                    n
                }
            }
            Some(v) if v.is_null() => return plan_err!("{name}: the window must not be NULL"),
            _ => return plan_err!("{name}: the window must be a constant"),
        };
        if window < 0 {
            return plan_err!("{name}: the window must not be negative");
        }
        let mode = if has_mode {
            match literal(&args.exprs[1]) {
                Some(
                    ScalarValue::Utf8(Some(s))
                    | ScalarValue::Utf8View(Some(s))
                    | ScalarValue::LargeUtf8(Some(s)),
                ) => Mode::parse(name, s)?,
                _ => return plan_err!("{name}: the mode must be a constant string"),
            }
        } else {
            Mode::default()
        };
        Ok(FunnelSpec {
            window,
            mode,
            ts_index,
            steps,
        })
    }

    /// The timestamp column as i64 (µs for times and dates).
    pub(crate) fn timestamps(&self, values: &[ArrayRef]) -> Result<Int64Array> {
        let ts = &values[self.ts_index];
        let as_i64 = if timestamp_is_time(ts.data_type()) {
            let micros = cast(ts, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
            cast(&micros, &DataType::Int64)?
        } else {
            cast(ts, &DataType::Int64)?
        };
        Ok(as_i64.as_primitive::<Int64Type>().clone())
    }

    /// Calls `f(row, time, step)` for each event of the batch: one per
    /// condition a row meets, or a "no step" marker (step 0) in
    /// strict_order mode for a row that meets none. Rows with a NULL
    /// timestamp or condition, and rows `filter` drops, give none.
    ///
    /// The conditions are read a column at a time into one bitmask per row
    /// (bit s for step s + 1), so the per-row work is a few bit operations.
    pub(crate) fn for_each_event(
        &self,
        values: &[ArrayRef],
        filter: Option<&BooleanArray>,
        mut f: impl FnMut(usize, i64, u8),
    ) -> Result<()> {
        let ts = self.timestamps(values)?;
        let conds = conditions(self, values);
        let (masks, valid) = condition_masks(&conds, ts.len());
        let valid = NullBuffer::union(valid.as_ref(), ts.nulls());
        let times = ts.values();
        for (row, &mask) in masks.iter().enumerate() {
            if valid.as_ref().is_some_and(|v| v.is_null(row)) || !passes_filter(filter, row) {
                continue;
            }
            let t = times[row];
            if mask == 0 {
                if self.mode.strict_order {
                    f(row, t, 0);
                }
                continue;
            }
            let mut m = mask;
            while m != 0 {
                f(row, t, m.trailing_zeros() as u8 + 1);
                m &= m - 1;
            }
        }
        Ok(())
    }

    /// The level reached by a group's events (sorted here).
    pub(crate) fn level(&self, events: &mut [(i64, u8)]) -> u8 {
        self.walk(events, false).0
    }

    /// Runs the funnel over `events` (sorted here by time, then step, as
    /// ClickHouse does). Returns the level and, when `with_times`, the
    /// time of each step of the chain that reached it.
    pub(crate) fn walk(&self, events: &mut [(i64, u8)], with_times: bool) -> (u8, Vec<i64>) {
        let n = self.steps;
        // Per step: (first step's time, this step's time) of the latest
        // chain that reached it, and that chain's step times.
        let mut reached: Vec<Option<(i64, i64)>> = vec![None; n];
        let mut paths: Vec<Vec<i64>> = vec![Vec::new(); if with_times { n } else { 0 }];
        let done = |paths: &mut Vec<Vec<i64>>, level: usize| {
            let times = if with_times && level > 0 {
                std::mem::take(&mut paths[level - 1])
            } else {
                Vec::new()
            };
            (level as u8, times)
        };
        let highest = |reached: &[Option<(i64, i64)>]| {
            reached
                .iter()
                .rposition(Option::is_some)
                .map_or(0, |i| i + 1)
        };
        if events.is_empty() {
            return (0, Vec::new());
        }
        if !self.mode.strict_order && n == 1 {
            let first = events.iter().map(|e| e.0).min().unwrap_or_default();
            return (1, if with_times { vec![first] } else { Vec::new() });
        }
        events.sort_unstable();
        let mut first_event = false;
        for &(t, ev) in events.iter() {
            if ev == 0 {
                // strict_order: a row that is no step
                if first_event {
                    break;
                }
                continue;
            }
            let idx = ev as usize - 1;
            if idx == 0 {
                reached[0] = Some((t, t));
                if with_times {
                    paths[0] = vec![t];
                }
                first_event = true;
            } else if self.mode.strict_deduplication && reached[idx].is_some() {
                let level = highest(&reached);
                return done(&mut paths, level);
            } else if self.mode.strict_order && first_event && reached[idx - 1].is_none() {
                let level = reached.iter().position(Option::is_none).unwrap_or(n);
                return done(&mut paths, level);
            } else if let Some((first, prev)) = reached[idx - 1] {
                let mut ok = t <= first.saturating_add(self.window);
                if self.mode.strict_increase {
                    ok = ok && prev < t;
                }
                if ok {
                    reached[idx] = Some((first, t));
                    if with_times {
                        let mut path = paths[idx - 1].clone();
                        path.push(t);
                        paths[idx] = path;
                    }
                    if idx + 1 == n {
                        return done(&mut paths, n);
                    }
                }
            }
        }
        let level = highest(&reached);
        done(&mut paths, level)
    }
}

/// State fields shared by the funnel functions: the events as two lists.
pub(crate) fn funnel_state_fields(name: &str) -> Vec<FieldRef> {
    vec![
        Arc::new(Field::new(
            format!("{name}_ts"),
            DataType::List(Arc::new(Field::new_list_field(DataType::Int64, false))),
            true,
        )),
        Arc::new(Field::new(
            format!("{name}_ev"),
            DataType::List(Arc::new(Field::new_list_field(DataType::UInt8, false))),
            true,
        )),
    ]
}

/// Encodes groups' events as the two state lists: group `g` holds
/// `events[offsets[g]..offsets[g + 1]]`.
pub(crate) fn events_to_state(offsets: &[usize], events: &[(i64, u8)]) -> Result<Vec<ArrayRef>> {
    let Ok(offsets) = offsets
        .iter()
        .map(|&o| i32::try_from(o))
        .collect::<std::result::Result<Vec<i32>, _>>()
    else {
        return exec_err!("window_funnel: more than 2^31 events in one state batch");
    };
    let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
    let ts: Int64Array = events.iter().map(|e| e.0).collect();
    let ev: UInt8Array = events.iter().map(|e| e.1).collect();
    Ok(vec![
        Arc::new(ListArray::new(
            Arc::new(Field::new_list_field(DataType::Int64, false)),
            offsets.clone(),
            Arc::new(ts),
            None,
        )),
        Arc::new(ListArray::new(
            Arc::new(Field::new_list_field(DataType::UInt8, false)),
            offsets,
            Arc::new(ev),
            None,
        )),
    ])
}

/// Calls `f(row, events)` for each row of two state lists.
pub(crate) fn for_each_state(
    states: &[ArrayRef],
    mut f: impl FnMut(usize, &mut dyn Iterator<Item = (i64, u8)>),
) -> Result<()> {
    let ts = states[0].as_list::<i32>();
    let ev = states[1].as_list::<i32>();
    for row in 0..ts.len() {
        if ts.is_null(row) {
            continue;
        }
        let t = ts.value(row);
        let e = ev.value(row);
        let t = t.as_primitive::<Int64Type>();
        let e = e.as_primitive::<UInt8Type>();
        if t.len() != e.len() {
            return exec_err!("window_funnel: corrupt state (list lengths differ)");
        }
        let mut it = t.values().iter().copied().zip(e.values().iter().copied());
        f(row, &mut it);
    }
    Ok(())
}

pub(crate) fn conditions<'a>(spec: &FunnelSpec, values: &'a [ArrayRef]) -> Vec<&'a BooleanArray> {
    values[spec.ts_index + 1..]
        .iter()
        .map(|v| v.as_boolean())
        .collect()
}
