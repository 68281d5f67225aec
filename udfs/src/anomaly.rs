//! Anomaly scoring over a series: the three methods (`zscore`, `iqr`,
//! `mad`) as defined in docs/functions.md, and the window functions
//! `anomaly_score(x [, method]) OVER (...)` and
//! `is_anomaly(x [, method [, k]]) OVER (...)`.
//!
//! The statistics are taken over the window frame: with no ORDER BY that
//! is the whole partition; with a sliding frame such as
//! `ROWS BETWEEN 30 PRECEDING AND 1 PRECEDING` each row is judged against
//! the rows before it. The current row is scored whether or not the frame
//! contains it.

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{ScalarValue, exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::function::{
    PartitionEvaluatorArgs, WindowFunctionSimplification, WindowUDFFieldArgs,
};
use datafusion::logical_expr::{
    Expr, PartitionEvaluator, Signature, Volatility, WindowUDF, WindowUDFImpl,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Literal;
use std::ops::Range;
use std::sync::Arc;

/// How a value is compared with the rest of its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// (x − mean) / σ, σ the population standard deviation.
    ZScore,
    /// (x − median) / IQR; flagged outside [Q1 − k·IQR, Q3 + k·IQR].
    Iqr,
    /// 0.6745 · (x − median) / MAD, MAD = median(|x − median|).
    Mad,
}

impl Method {
    /// Parses a method name; `func` names the caller in the message.
    pub fn parse(func: &str, text: &str) -> Result<Method> {
        match text.trim().to_ascii_lowercase().as_str() {
            "zscore" | "z" => Ok(Method::ZScore),
            "iqr" => Ok(Method::Iqr),
            "mad" => Ok(Method::Mad),
            _ => plan_err!("{func}: unknown method {text:?}; use 'zscore', 'iqr' or 'mad'"),
        }
    }

    /// The threshold used when the caller gives none.
    pub fn default_k(self) -> f64 {
        match self {
            Method::ZScore => 3.0,
            Method::Iqr => 1.5,
            Method::Mad => 3.5,
        }
    }
}

/// Checks a threshold given by the user.
pub fn check_k(func: &str, k: f64) -> Result<f64> {
    if k.is_finite() && k > 0.0 {
        Ok(k)
    } else {
        plan_err!("{func}: the threshold k must be a positive number, got {k}")
    }
}

/// The value at fraction `p` of sorted `v` by linear interpolation between
/// the closest ranks (what `percentile_cont` and numpy's default do).
pub fn percentile_sorted(v: &[f64], p: f64) -> f64 {
    let pos = p * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// The statistics of one series under one method.
#[derive(Debug, Clone, Copy)]
pub struct Model {
    method: Method,
    center: f64,
    spread: f64,
    q1: f64,
    q3: f64,
}

impl Model {
    /// Fits `method` to `values` (NULLs already removed; reordered in
    /// place). `None` when there is nothing to score against: no values,
    /// or a spread of zero.
    pub fn fit(method: Method, values: &mut [f64]) -> Option<Model> {
        if values.is_empty() {
            return None;
        }
        let model = match method {
            Method::ZScore => {
                let n = values.len() as f64;
                let mean = values.iter().sum::<f64>() / n;
                let var = values.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
                Model {
                    method,
                    center: mean,
                    spread: var.sqrt(),
                    q1: 0.0,
                    q3: 0.0,
                }
            }
            Method::Iqr => {
                values.sort_by(f64::total_cmp);
                let q1 = percentile_sorted(values, 0.25);
                let q3 = percentile_sorted(values, 0.75);
                Model {
                    method,
                    center: percentile_sorted(values, 0.5),
                    spread: q3 - q1,
                    q1,
                    q3,
                }
            }
            Method::Mad => {
                values.sort_by(f64::total_cmp);
                let median = percentile_sorted(values, 0.5);
                for v in values.iter_mut() {
                    *v = (*v - median).abs();
                }
                values.sort_by(f64::total_cmp);
                Model {
                    method,
                    center: median,
                    spread: percentile_sorted(values, 0.5),
                    q1: 0.0,
                    q3: 0.0,
                }
            }
        };
        (model.spread > 0.0 && model.spread.is_finite()).then_some(model)
    }

    /// The score of `x`.
    pub fn score(&self, x: f64) -> f64 {
        let z = (x - self.center) / self.spread;
        match self.method {
            Method::Mad => 0.6745 * z,
            Method::ZScore | Method::Iqr => z,
        }
    }

    /// Whether `x` is an anomaly at threshold `k`.
    pub fn is_anomaly(&self, x: f64, k: f64) -> bool {
        match self.method {
            Method::Iqr => x < self.q1 - k * self.spread || x > self.q3 + k * self.spread,
            Method::ZScore | Method::Mad => self.score(x).abs() > k,
        }
    }
}

/// Scores and flags every value of `values` against the statistics of all
/// of them, fitted once. A NULL input gets a NULL score and flag; a series
/// with no spread gets NULL scores and no flag.
pub fn judge_series(
    values: &[Option<f64>],
    method: Method,
    k: f64,
) -> (Vec<Option<f64>>, Vec<Option<bool>>) {
    let mut present: Vec<f64> = values.iter().flatten().copied().collect();
    let model = Model::fit(method, &mut present);
    values
        .iter()
        .map(|v| match v {
            None => (None, None),
            Some(x) => (
                model.map(|m| m.score(*x)),
                Some(model.is_some_and(|m| m.is_anomaly(*x, k))),
            ),
        })
        .unzip()
}

/// What a window function returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Output {
    Score,
    Flag,
}

/// `anomaly_score` and `is_anomaly`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct AnomalyWindow {
    name: &'static str,
    output: Output,
    signature: Signature,
}

/// `anomaly_score(x [, method]) OVER (...)`: the score of each row.
pub fn anomaly_score_udwf() -> WindowUDF {
    WindowUDF::new_from_impl(AnomalyWindow {
        name: "anomaly_score",
        output: Output::Score,
        signature: Signature::user_defined(Volatility::Immutable),
    })
}

/// `is_anomaly(x [, method [, k]]) OVER (...)`: whether each row is an
/// anomaly.
pub fn is_anomaly_udwf() -> WindowUDF {
    WindowUDF::new_from_impl(AnomalyWindow {
        name: "is_anomaly",
        output: Output::Flag,
        signature: Signature::user_defined(Volatility::Immutable),
    })
}

/// A constant argument, as the planner left it.
enum Const<'a> {
    Str(&'a str),
    Num(f64),
    Null,
    NotConstant,
}

fn scalar_const(v: &ScalarValue) -> Const<'_> {
    if v.is_null() {
        return Const::Null;
    }
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => Const::Str(s),
        other => match other.cast_to(&DataType::Float64) {
            Ok(ScalarValue::Float64(Some(x))) => Const::Num(x),
            _ => Const::NotConstant,
        },
    }
}

impl AnomalyWindow {
    fn max_args(&self) -> usize {
        match self.output {
            Output::Score => 2,
            Output::Flag => 3,
        }
    }

    fn usage(&self) -> &'static str {
        match self.output {
            Output::Score => "anomaly_score(x [, method]) OVER (...)",
            Output::Flag => "is_anomaly(x [, method [, k]]) OVER (...)",
        }
    }

    /// The method and threshold from the constant arguments.
    fn settings(&self, consts: &[Const<'_>]) -> Result<(Method, f64)> {
        let method = match consts.first() {
            None => Method::ZScore,
            Some(Const::Str(s)) => Method::parse(self.name, s)?,
            Some(_) => {
                return plan_err!(
                    "{}: the method (argument 2) must be a constant string: 'zscore', 'iqr' or 'mad'",
                    self.name
                );
            }
        };
        let k = match consts.get(1) {
            None => method.default_k(),
            Some(Const::Num(k)) => check_k(self.name, *k)?,
            Some(_) => {
                return plan_err!(
                    "{}: the threshold k (argument 3) must be a constant positive number",
                    self.name
                );
            }
        };
        Ok((method, k))
    }
}

impl WindowUDFImpl for AnomalyWindow {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.name;
        if arg_types.is_empty() || arg_types.len() > self.max_args() {
            return plan_err!(
                "{name} expects {}, got {} arguments",
                self.usage(),
                arg_types.len()
            );
        }
        let mut out = vec![DataType::Float64];
        match &arg_types[0] {
            dt if dt.is_numeric() || dt.is_null() => {}
            other => return plan_err!("{name}: x (argument 1) must be numeric, got {other}"),
        }
        if let Some(dt) = arg_types.get(1) {
            if !dt.is_string() {
                return plan_err!(
                    "{name}: the method (argument 2) must be a string: 'zscore', 'iqr' or 'mad', got {dt}"
                );
            }
            out.push(DataType::Utf8);
        }
        if let Some(dt) = arg_types.get(2) {
            if !dt.is_numeric() {
                return plan_err!(
                    "{name}: the threshold k (argument 3) must be a positive number, got {dt}"
                );
            }
            out.push(DataType::Float64);
        }
        Ok(out)
    }

    fn simplify(&self) -> Option<WindowFunctionSimplification> {
        // Used only to check the constant arguments while the query is
        // planned, so that a bad method fails even on empty input.
        let name = self.name;
        let output = self.output;
        Some(Box::new(move |wf: WindowFunction, _info| {
            let check = AnomalyWindow {
                name,
                output,
                signature: Signature::user_defined(Volatility::Immutable),
            };
            let consts: Vec<Const<'_>> = wf
                .params
                .args
                .iter()
                .skip(1)
                .map(|e| match e {
                    Expr::Literal(v, _) => scalar_const(v),
                    _ => Const::NotConstant,
                })
                .collect();
            check.settings(&consts)?;
            Ok(Expr::from(wf))
        }))
    }

    fn partition_evaluator(
        &self,
        args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        let consts: Vec<Const<'_>> = args
            .input_exprs()
            .iter()
            .skip(1)
            .map(
                |e: &Arc<dyn PhysicalExpr>| match e.as_ref().downcast_ref::<Literal>() {
                    Some(l) => scalar_const(l.value()),
                    None => Const::NotConstant,
                },
            )
            .collect();
        let (method, k) = self.settings(&consts)?;
        Ok(Box::new(AnomalyEvaluator {
            method,
            k,
            output: self.output,
            row: 0,
            cached: None,
        }))
    }

    fn field(&self, field_args: WindowUDFFieldArgs) -> Result<FieldRef> {
        let dt = match self.output {
            Output::Score => DataType::Float64,
            Output::Flag => DataType::Boolean,
        };
        Ok(Arc::new(Field::new(field_args.name(), dt, true)))
    }
}

#[derive(Debug)]
struct AnomalyEvaluator {
    method: Method,
    k: f64,
    output: Output,
    /// The row being evaluated: DataFusion calls `evaluate` once per row
    /// of the partition, in order, each with that row's frame.
    row: usize,
    /// The model of the last frame, reused while the frame is unchanged
    /// (always, when the frame is the whole partition).
    cached: Option<(Range<usize>, Option<Model>)>,
}

impl PartitionEvaluator for AnomalyEvaluator {
    fn uses_window_frame(&self) -> bool {
        true
    }

    fn evaluate(&mut self, values: &[ArrayRef], range: &Range<usize>) -> Result<ScalarValue> {
        let Some(x) = values.first() else {
            return exec_err!("anomaly functions need an argument");
        };
        let x = cast(x, &DataType::Float64)?;
        let x = x.as_primitive::<Float64Type>();
        let row = self.row;
        self.row += 1;
        if row >= x.len() {
            return exec_err!(
                "anomaly window: row {row} outside a partition of {}",
                x.len()
            );
        }
        let model = match &self.cached {
            Some((r, m)) if r == range => *m,
            _ => {
                let mut frame: Vec<f64> = x
                    .slice(range.start, range.end - range.start)
                    .iter()
                    .flatten()
                    .collect();
                let m = Model::fit(self.method, &mut frame);
                self.cached = Some((range.clone(), m));
                m
            }
        };
        let value = x.is_valid(row).then(|| x.value(row));
        Ok(match self.output {
            Output::Score => ScalarValue::Float64(value.and_then(|v| model.map(|m| m.score(v)))),
            Output::Flag => {
                ScalarValue::Boolean(value.map(|v| model.is_some_and(|m| m.is_anomaly(v, self.k))))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_on_a_small_series() {
        let xs = [1.0, 2.0, 3.0, 4.0, 100.0];
        let mut v = xs.to_vec();
        let z = Model::fit(Method::ZScore, &mut v).unwrap();
        let mean = 22.0;
        let sd = (xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / 5.0).sqrt();
        assert!((z.score(100.0) - (100.0 - mean) / sd).abs() < 1e-12);

        let mut v = xs.to_vec();
        let iqr = Model::fit(Method::Iqr, &mut v).unwrap();
        // Q1 = 2, Q3 = 4, median 3.
        assert_eq!(iqr.score(100.0), 97.0 / 2.0);
        assert!(iqr.is_anomaly(100.0, 1.5));
        assert!(!iqr.is_anomaly(7.0, 1.5));
        assert!(iqr.is_anomaly(7.1, 1.5));

        let mut v = xs.to_vec();
        let mad = Model::fit(Method::Mad, &mut v).unwrap();
        // |x - 3| = 2,1,0,1,97 → MAD 1.
        assert!((mad.score(100.0) - 0.6745 * 97.0).abs() < 1e-12);
    }

    #[test]
    fn no_spread_scores_nothing() {
        let (s, _) = judge_series(&[Some(5.0), Some(5.0), None], Method::ZScore, 3.0);
        assert_eq!(s, vec![None, None, None]);
        let (_, f) = judge_series(&[Some(5.0), Some(5.0), None], Method::Mad, 3.5);
        assert_eq!(f, vec![Some(false), Some(false), None]);
    }
}
