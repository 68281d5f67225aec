//! `trend('<query>', '<time column>', '<value column>' [, periods
//! [, method [, alpha, beta]]])`: the fitted trend of a series and a
//! forecast of the next `periods` periods.
//!
//! The period is the smallest gap between two consecutive times of the
//! series, counted in calendar months when every time starts a month
//! (midnight UTC on the 1st), as a monthly `date_trunc` gives. Rows with
//! a NULL time or value are left out; two rows with the same time are an
//! error. The result has one row per point, in time
//! order, then one per forecast period, with the columns
//! `<time>, <value>, fitted, is_forecast, slope, intercept, r2, alpha,
//! beta` (see docs/functions.md for their meaning under each method).

use crate::udtf::{Args, FoldTable, Gather, column_index, plan_inner, reserve_rows, rfc3339};
use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, TimeUnit,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::LogicalPlan;
use std::sync::Arc;

const NAME: &str = "trend";

/// Most forecast periods one call may ask for.
pub const MAX_PERIODS: u64 = 100_000;

/// Working memory per point while fitting: the (time, value) pairs and
/// the sort's buffer, the offsets, values and period numbers, Holt's
/// predictions, the value and time casts, and the nine output columns
/// with what they are built from.
const WORK_BYTES_PER_ROW: usize = 24 + 12 + 8 + 8 + 8 + 16 + 16 + 16 + 9 * 9 + 16 + 16;

/// The model fitted to the series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TrendMethod {
    /// Least squares on the period number.
    Linear,
    /// Holt's double exponential smoothing; `None` to fit α and β.
    Holt(Option<(f64, f64)>),
}

/// The table function.
#[derive(Debug, Default)]
pub struct Trend;

#[derive(Debug)]
struct Spec {
    time: usize,
    value: usize,
    periods: u64,
    method: TrendMethod,
    out: SchemaRef,
}

fn unit(name: &str, what: &str, x: f64, allow_zero: bool) -> Result<f64> {
    let ok = x <= 1.0 && (x > 0.0 || (allow_zero && x == 0.0));
    if !ok {
        let range = if allow_zero { "[0, 1]" } else { "(0, 1]" };
        return plan_err!("{name}: {what} must be in {range}, got {x}");
    }
    Ok(x)
}

impl TableFunctionImpl for Trend {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let a = Args {
            func: NAME,
            usage: "('<query>', '<time column>', '<value column>' [, periods [, 'linear' | 'holt' [, alpha, beta]]])",
            exprs: args.exprs(),
        };
        a.count(3, 7)?;
        let sql = a.string(0, "the query")?;
        let time_name = a.string(1, "the time column")?;
        let value_name = a.string(2, "the value column")?;
        let periods = if a.has(3) {
            a.count_arg(3, "the number of periods", MAX_PERIODS)?
        } else {
            0
        };
        let method = if a.has(4) {
            a.string(4, "the method")?
        } else {
            "linear".to_string()
        };
        let method = match method.trim().to_ascii_lowercase().as_str() {
            "linear" if a.has(5) => {
                return plan_err!("{NAME}: alpha and beta apply only to the 'holt' method");
            }
            "linear" => TrendMethod::Linear,
            "holt" => match (a.has(5), a.has(6)) {
                (false, _) => TrendMethod::Holt(None),
                (true, false) => {
                    return plan_err!("{NAME}: give both alpha and beta, or neither to fit them");
                }
                (true, true) => TrendMethod::Holt(Some((
                    unit(NAME, "alpha", a.number(5, "alpha")?, false)?,
                    unit(NAME, "beta", a.number(6, "beta")?, true)?,
                ))),
            },
            other => return plan_err!("{NAME}: unknown method {other:?}; use 'linear' or 'holt'"),
        };

        let plan = plan_inner(NAME, args.session(), &sql)?;
        trend_provider(plan, &time_name, &value_name, periods, method)
    }
}

/// The table `trend` returns, over an already planned query.
pub fn trend_provider(
    plan: LogicalPlan,
    time_name: &str,
    value_name: &str,
    periods: u64,
    method: TrendMethod,
) -> Result<Arc<dyn TableProvider>> {
    let inner: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
    let time = column_index(NAME, &inner, time_name)?;
    let value = column_index(NAME, &inner, value_name)?;
    let time_field = inner.field(time);
    let tt = time_field.data_type();
    if !(matches!(
        tt,
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64
    ) || tt.is_numeric())
    {
        return plan_err!(
            "{NAME}: the time column {time_name:?} must be a timestamp, a date or a number, got {tt}"
        );
    }
    let vt = inner.field(value).data_type();
    if !vt.is_numeric() {
        return plan_err!("{NAME}: the value column {value_name:?} must be numeric, got {vt}");
    }
    let mut fields = vec![
        Field::new(time_field.name(), tt.clone(), true),
        Field::new(value_name, DataType::Float64, true),
    ];
    for name in [
        "fitted",
        "is_forecast",
        "slope",
        "intercept",
        "r2",
        "alpha",
        "beta",
    ] {
        if name == time_field.name() || name == value_name {
            return plan_err!(
                "{NAME}: the output already has a column named {name:?}; rename the inner column with AS"
            );
        }
        let dt = if name == "is_forecast" {
            DataType::Boolean
        } else {
            DataType::Float64
        };
        fields.push(Field::new(name, dt, name != "is_forecast"));
    }
    let out = Arc::new(Schema::new(fields));
    let spec = Arc::new(Spec {
        time,
        value,
        periods,
        method,
        out: Arc::clone(&out),
    });
    let make = move || {
        let spec = Arc::clone(&spec);
        Gather::boxed(Arc::clone(&inner), move |batch: RecordBatch, memory| {
            let points = batch.num_rows() + spec.periods as usize;
            reserve_rows(memory, points, WORK_BYTES_PER_ROW)?;
            run(&spec, &batch)
        })
    };
    Ok(FoldTable::provider(NAME, plan, out, Arc::new(make)))
}

/// Times as exact offsets from the first point, in the column's own
/// units (nanoseconds for timestamps and dates).
enum Times {
    Instants(Vec<i64>),
    Numbers(Vec<f64>),
}

/// What a fitted model reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fit {
    /// The model's value at each point (NULL where it has none).
    pub fitted: Vec<Option<f64>>,
    /// The forecast for each of the next periods.
    pub forecast: Vec<f64>,
    /// Slope: per period.
    pub slope: Option<f64>,
    /// Intercept (linear) or last level (Holt).
    pub intercept: Option<f64>,
    /// 1 − SSE/SST over the points with a fitted value.
    pub r2: Option<f64>,
    /// Holt's α.
    pub alpha: Option<f64>,
    /// Holt's β.
    pub beta: Option<f64>,
}

fn r_squared(ys: &[f64], fitted: &[Option<f64>]) -> Option<f64> {
    let pairs: Vec<(f64, f64)> = ys
        .iter()
        .zip(fitted)
        .filter_map(|(y, f)| f.map(|f| (*y, f)))
        .collect();
    if pairs.is_empty() {
        return None;
    }
    let mean = pairs.iter().map(|p| p.0).sum::<f64>() / pairs.len() as f64;
    let sst: f64 = pairs.iter().map(|p| (p.0 - mean).powi(2)).sum();
    let sse: f64 = pairs.iter().map(|p| (p.0 - p.1).powi(2)).sum();
    if sst == 0.0 {
        return Some(if sse == 0.0 { 1.0 } else { 0.0 });
    }
    Some(1.0 - sse / sst)
}

/// Least squares of `ys` on `xs` (period numbers), with a forecast at
/// `last + 1 ..= last + periods`.
pub fn fit_linear(xs: &[f64], ys: &[f64], periods: u64) -> Fit {
    let n = xs.len();
    if n < 2 {
        return Fit {
            fitted: vec![None; n],
            ..Fit::default()
        };
    }
    let mx = xs.iter().sum::<f64>() / n as f64;
    let my = ys.iter().sum::<f64>() / n as f64;
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let fitted: Vec<Option<f64>> = xs.iter().map(|x| Some(intercept + slope * x)).collect();
    let last = xs[n - 1];
    Fit {
        r2: r_squared(ys, &fitted),
        fitted,
        forecast: (1..=periods)
            .map(|h| intercept + slope * (last + h as f64))
            .collect(),
        slope: Some(slope),
        intercept: Some(intercept),
        alpha: None,
        beta: None,
    }
}

/// Runs Holt's recursions; returns the one-step-ahead predictions, the
/// final level and trend.
fn holt_pass(ys: &[f64], alpha: f64, beta: f64) -> (Vec<Option<f64>>, f64, f64) {
    let mut fitted = vec![None; ys.len()];
    let mut level = ys[0];
    let mut trend = ys[1] - ys[0];
    for (i, y) in ys.iter().enumerate().skip(1) {
        fitted[i] = Some(level + trend);
        let next = alpha * y + (1.0 - alpha) * (level + trend);
        trend = beta * (next - level) + (1.0 - beta) * trend;
        level = next;
    }
    (fitted, level, trend)
}

fn holt_sse(ys: &[f64], alpha: f64, beta: f64) -> f64 {
    let (fitted, _, _) = holt_pass(ys, alpha, beta);
    ys.iter()
        .zip(&fitted)
        .skip(2)
        .filter_map(|(y, f)| f.map(|f| (y - f).powi(2)))
        .sum()
}

/// α and β minimising the squared one-step-ahead errors: a grid search,
/// narrowed twice around the best point.
pub fn fit_holt_params(ys: &[f64]) -> (f64, f64) {
    let mut best = (0.5, 0.5);
    let mut best_sse = f64::INFINITY;
    let (mut lo_a, mut hi_a, mut lo_b, mut hi_b) = (0.02, 0.98, 0.02, 0.98);
    for step in [0.04, 0.004, 0.0004] {
        let mut a = lo_a;
        while a <= hi_a + 1e-12 {
            let mut b = lo_b;
            while b <= hi_b + 1e-12 {
                let sse = holt_sse(ys, a, b);
                if sse < best_sse {
                    best_sse = sse;
                    best = (a, b);
                }
                b += step;
            }
            a += step;
        }
        lo_a = (best.0 - step).max(step / 10.0);
        hi_a = (best.0 + step).min(1.0);
        lo_b = (best.1 - step).max(0.0);
        hi_b = (best.1 + step).min(1.0);
    }
    best
}

/// Holt's method over `ys` (one value per period).
pub fn fit_holt(ys: &[f64], params: Option<(f64, f64)>, periods: u64) -> Fit {
    let n = ys.len();
    let fit_needs = if params.is_some() { 2 } else { 3 };
    if n < fit_needs {
        return Fit {
            fitted: vec![None; n],
            ..Fit::default()
        };
    }
    let (alpha, beta) = params.unwrap_or_else(|| fit_holt_params(ys));
    let (fitted, level, trend) = holt_pass(ys, alpha, beta);
    Fit {
        r2: r_squared(ys, &fitted),
        fitted,
        forecast: (1..=periods).map(|h| level + h as f64 * trend).collect(),
        slope: Some(trend),
        intercept: Some(level),
        alpha: Some(alpha),
        beta: Some(beta),
    }
}

/// The period of a series.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// A fixed span of time, in nanoseconds.
    Nanos(i64),
    /// Calendar months: every point starts a month.
    Months(i64),
    /// A span of a numeric time column.
    Number(f64),
}

impl Step {
    /// The instant `h` periods after `last` (nanoseconds), if in range.
    fn after(self, last: i64, h: i64) -> Option<i64> {
        match self {
            Step::Nanos(step) => step.checked_mul(h).and_then(|d| last.checked_add(d)),
            Step::Months(step) => {
                let months = u32::try_from(step.checked_mul(h)?).ok()?;
                let start = chrono::DateTime::from_timestamp_nanos(last).naive_utc();
                start
                    .checked_add_months(chrono::Months::new(months))?
                    .and_utc()
                    .timestamp_nanos_opt()
            }
            Step::Number(_) => None,
        }
    }
}

/// When every point starts a calendar month (midnight UTC on the 1st) and
/// the points are at least 28 days apart (`min_gap`, in nanoseconds), the
/// series is monthly (or quarterly, yearly): each point's month number
/// and the smallest step in months. Months differ in length, so counting
/// nanoseconds would put such a series' points off the period grid.
fn calendar_months(points: &[(i64, f64, f64)], min_gap: i64) -> Option<(Vec<i64>, i64)> {
    use chrono::{Datelike, Timelike};
    const DAY: i64 = 86_400_000_000_000;
    if points.len() < 2 || min_gap < 28 * DAY {
        return None;
    }
    let months = points
        .iter()
        .map(|p| {
            let t = chrono::DateTime::from_timestamp_nanos(p.0);
            let start = t.day() == 1 && t.num_seconds_from_midnight() == 0 && t.nanosecond() == 0;
            start.then(|| i64::from(t.year()) * 12 + i64::from(t.month0()))
        })
        .collect::<Option<Vec<i64>>>()?;
    let step = months.windows(2).map(|w| w[1] - w[0]).min()?;
    Some((months, step))
}

fn run(spec: &Spec, batch: &RecordBatch) -> Result<RecordBatch> {
    let time_col = batch.column(spec.time);
    let time_type = spec.out.field(0).data_type().clone();
    let is_instant = matches!(
        time_type,
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64
    );
    let tz = match &time_type {
        DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    };
    let values = cast(batch.column(spec.value), &DataType::Float64)?;
    let values = values.as_primitive::<Float64Type>();

    // (time, value) of the usable rows, in time order.
    let mut points: Vec<(i64, f64, f64)> = Vec::new(); // (ns, number, value)
    if is_instant {
        let t = cast(time_col, &DataType::Timestamp(TimeUnit::Nanosecond, None))?;
        let t = cast(&t, &DataType::Int64)?;
        for (t, v) in t.as_primitive::<Int64Type>().iter().zip(values.iter()) {
            if let (Some(t), Some(v)) = (t, v) {
                points.push((t, 0.0, v));
            }
        }
        points.sort_by_key(|p| p.0);
    } else {
        let t = cast(time_col, &DataType::Float64)?;
        for (t, v) in t.as_primitive::<Float64Type>().iter().zip(values.iter()) {
            if let (Some(t), Some(v)) = (t, v)
                && t.is_finite()
            {
                points.push((0, t, v));
            }
        }
        points.sort_by(|a, b| a.1.total_cmp(&b.1));
    }
    let times = if is_instant {
        Times::Instants(points.iter().map(|p| p.0 - points[0].0).collect())
    } else {
        Times::Numbers(points.iter().map(|p| p.1 - points[0].1).collect())
    };
    let ys: Vec<f64> = points.iter().map(|p| p.2).collect();

    // The period, and each point's period number.
    let (xs, step): (Vec<f64>, Step) = match &times {
        Times::Instants(t) => {
            if let Some(w) = t.windows(2).find(|w| w[0] == w[1]) {
                let at = rfc3339(w[0] + points[0].0);
                return exec_err!("{NAME}: two rows have the time {at}; aggregate them first");
            }
            let step = t.windows(2).map(|w| w[1] - w[0]).min().unwrap_or(1);
            match calendar_months(&points, step) {
                Some((months, step)) => (
                    months
                        .iter()
                        .map(|m| (m - months[0]) as f64 / step as f64)
                        .collect(),
                    Step::Months(step),
                ),
                None => (
                    t.iter().map(|x| *x as f64 / step as f64).collect(),
                    Step::Nanos(step),
                ),
            }
        }
        Times::Numbers(t) => {
            if let Some(w) = t.windows(2).find(|w| w[0] == w[1]) {
                return exec_err!(
                    "{NAME}: two rows have the time {}; aggregate them first",
                    w[0] + points[0].1
                );
            }
            let step = t
                .windows(2)
                .map(|w| w[1] - w[0])
                .min_by(f64::total_cmp)
                .unwrap_or(1.0);
            (t.iter().map(|x| x / step).collect(), Step::Number(step))
        }
    };
    let fit = match spec.method {
        TrendMethod::Linear => fit_linear(&xs, &ys, spec.periods),
        TrendMethod::Holt(params) => {
            if let Some((i, _)) = xs
                .windows(2)
                .enumerate()
                .find(|(_, w)| ((w[1] - w[0]) - 1.0).abs() > 1e-9)
            {
                return exec_err!(
                    "{NAME}: 'holt' needs one value per period, but the series skips from point {} to point {} (period number {} to {}); fill the gaps with gapfill(...) first",
                    i + 1,
                    i + 2,
                    xs[i],
                    xs[i + 1]
                );
            }
            fit_holt(&ys, params, spec.periods)
        }
    };

    let n = ys.len();
    let forecasts = if n == 0 { 0 } else { fit.forecast.len() };
    let total = n + forecasts;
    let time_out: ArrayRef = if is_instant {
        let mut t: Vec<i64> = points.iter().map(|p| p.0).collect();
        let last = points.last().map(|p| p.0).unwrap_or(0);
        for h in 1..=forecasts as i64 {
            match step.after(last, h) {
                Some(x) => t.push(x),
                None => return exec_err!("{NAME}: the forecast runs past the timestamp range"),
            }
        }
        let t = Int64Array::from(t);
        let t = cast(&t, &DataType::Timestamp(TimeUnit::Nanosecond, tz))?;
        cast(&t, &time_type)?
    } else {
        let mut t: Vec<f64> = points.iter().map(|p| p.1).collect();
        let last = points.last().map(|p| p.1).unwrap_or(0.0);
        if let Step::Number(step) = step {
            t.extend((1..=forecasts).map(|h| last + h as f64 * step));
        }
        cast(&Float64Array::from(t), &time_type)?
    };
    let value_out: Float64Array = ys
        .iter()
        .map(|y| Some(*y))
        .chain(std::iter::repeat_n(None, forecasts))
        .collect();
    let fitted: Float64Array = fit
        .fitted
        .iter()
        .copied()
        .chain(fit.forecast.iter().take(forecasts).map(|f| Some(*f)))
        .collect();
    let is_forecast: BooleanArray = (0..total).map(|i| Some(i >= n)).collect();
    let constant = |v: Option<f64>| -> ArrayRef { Arc::new(Float64Array::from(vec![v; total])) };
    let columns: Vec<ArrayRef> = vec![
        time_out,
        Arc::new(value_out),
        Arc::new(fitted),
        Arc::new(is_forecast),
        constant(fit.slope),
        constant(fit.intercept),
        constant(fit.r2),
        constant(fit.alpha),
        constant(fit.beta),
    ];
    Ok(RecordBatch::try_new(Arc::clone(&spec.out), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_recovers_a_line() {
        let xs = [0.0, 1.0, 2.0, 3.0];
        let ys = [1.0, 3.0, 5.0, 7.0];
        let f = fit_linear(&xs, &ys, 2);
        assert_eq!(f.slope, Some(2.0));
        assert_eq!(f.intercept, Some(1.0));
        assert_eq!(f.r2, Some(1.0));
        assert_eq!(f.forecast, vec![9.0, 11.0]);
    }

    #[test]
    fn holt_by_hand() {
        // α = 0.5, β = 0.5 on 10, 12, 15:
        // l0 = 10, b0 = 2; ŷ1 = 12; l1 = 12, b1 = 2; ŷ2 = 14;
        // l2 = 0.5·15 + 0.5·14 = 14.5, b2 = 0.5·2.5 + 0.5·2 = 2.25.
        let f = fit_holt(&[10.0, 12.0, 15.0], Some((0.5, 0.5)), 2);
        assert_eq!(f.fitted, vec![None, Some(12.0), Some(14.0)]);
        assert_eq!(f.intercept, Some(14.5));
        assert_eq!(f.slope, Some(2.25));
        assert_eq!(f.forecast, vec![16.75, 19.0]);
    }

    #[test]
    fn fitted_holt_follows_a_line_exactly() {
        let ys: Vec<f64> = (0..20).map(|i| 5.0 + 3.0 * f64::from(i)).collect();
        let f = fit_holt(&ys, None, 1);
        assert!((f.forecast[0] - 65.0).abs() < 1e-9, "{:?}", f.forecast);
        assert_eq!(f.r2, Some(1.0));
    }
}
