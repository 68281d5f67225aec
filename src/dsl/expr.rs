//! DSL expressions → DataFusion `Expr`s, built with the `Expr` builders and
//! the session's function registry. Values are always literals: nothing is
//! ever spliced into SQL text.

use super::{DslError, Path};
use crate::query::bounds::MAX_DEPTH;
use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::ExprSchemable;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{Expr, Operator, binary_expr, lit};
use serde_json::Value;
use std::cell::Cell;
use std::sync::Arc;

/// The aggregations the DSL knows by name, and the session function each
/// one calls.
pub(crate) const AGGREGATIONS: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "stddev",
    "variance",
    "percentile",
    "median",
    "count-distinct",
    "approx-count-distinct",
    "approx-percentile",
    "first",
    "last",
];

/// Operators and helpers, for "did you mean" suggestions.
const OPERATORS: &[&str] = &[
    "and",
    "or",
    "not",
    "=",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "in",
    "not-in",
    "between",
    "like",
    "ilike",
    "is-null",
    "not-null",
    "contains",
    "+",
    "-",
    "*",
    "/",
    "%",
    "as",
    "col",
    "lit",
    "payload",
    "fn",
    "now",
    "days-ago",
    "hours-ago",
    "minutes-ago",
    "since",
    "until",
];

/// Longest word a suggestion is looked for: comparing costs the product of
/// the lengths, and a word this long is no typo of a name.
const MAX_SUGGESTED_BYTES: usize = 128;

/// The closest of `candidates` to `word`, if it is close enough to be a
/// likely typo.
pub(crate) fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    if word.len() > MAX_SUGGESTED_BYTES {
        return String::new();
    }
    let best = candidates
        .into_iter()
        .map(|c| {
            (
                datafusion::common::utils::datafusion_strsim::levenshtein(word, c),
                c,
            )
        })
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, c)) if d <= (word.len() / 3).max(2) => format!(" (did you mean \"{c}\"?)"),
        _ => String::new(),
    }
}

/// What an expression is compiled against.
pub(crate) struct Cx<'a> {
    pub(crate) schema: &'a DFSchema,
    pub(crate) state: &'a SessionState,
    /// The document's "now", fixed once so that every time helper agrees.
    pub(crate) now: DateTime<Utc>,
    /// How deeply the expression being compiled nests, bounded by
    /// [`MAX_DEPTH`] like SQL's, before anything is built that deep.
    pub(crate) depth: Cell<usize>,
}

/// One operator's levels of nesting, given back when it is compiled.
struct Nesting<'a> {
    depth: &'a Cell<usize>,
    levels: usize,
}

impl Drop for Nesting<'_> {
    fn drop(&mut self) {
        self.depth.set(self.depth.get() - self.levels);
    }
}

fn err<T>(path: &Path, message: impl Into<String>) -> Result<T, DslError> {
    Err(DslError::new(path, message))
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON scalar as a literal.
fn literal(v: &Value, path: &Path) -> Result<Expr, DslError> {
    Ok(match v {
        Value::Null => lit(ScalarValue::Null),
        Value::Bool(b) => lit(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => lit(i),
            (None, Some(f)) => lit(f),
            _ => return err(path, format!("the number {n} is out of range")),
        },
        Value::String(s) => lit(s.clone()),
        Value::Array(_) | Value::Object(_) => {
            return err(path, format!("expected a value, got {}", describe(v)));
        }
    })
}

/// A timestamp literal (µs, UTC).
pub(crate) fn timestamp_lit(t: DateTime<Utc>) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(t.timestamp_micros()),
        Some(Arc::from("UTC")),
    ))
}

impl Cx<'_> {
    /// The column called `name`, or an error naming the closest one.
    pub(crate) fn column(&self, name: &str, path: &Path) -> Result<Expr, DslError> {
        if self.schema.has_column_with_unqualified_name(name) {
            return Ok(Expr::Column(Column::from_name(name)));
        }
        // "payload.amount" and nested "payload.device.os" / "device.os"
        let rest = name.strip_prefix("payload.").unwrap_or(name);
        let parts: Vec<&str> = rest.split('.').collect();
        if rest != name || parts.len() > 1 {
            return self.payload(&parts, path);
        }
        let names: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        err(
            path,
            format!("unknown column \"{name}\"{}", suggest(name, names)),
        )
    }

    /// A payload path: the first part is a column, the others keys inside
    /// its JSON text.
    fn payload(&self, parts: &[&str], path: &Path) -> Result<Expr, DslError> {
        let Some((first, keys)) = parts.split_first() else {
            return err(path, "an empty payload path");
        };
        if !self.schema.has_column_with_unqualified_name(first) {
            let names: Vec<&str> = self
                .schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            return err(
                path,
                format!("unknown payload field \"{first}\"{}", suggest(first, names)),
            );
        }
        let column = Expr::Column(Column::from_name(*first));
        if keys.is_empty() {
            return Ok(column);
        }
        let mut args = vec![column];
        args.extend(keys.iter().map(|k| lit(k.to_string())));
        self.call_scalar("json_get_str", args, path)
    }

    fn call_scalar(&self, name: &str, args: Vec<Expr>, path: &Path) -> Result<Expr, DslError> {
        match self.state.udf(name) {
            Ok(f) => Ok(f.call(args)),
            Err(_) => err(path, format!("unknown function \"{name}\"")),
        }
    }

    fn call_aggregate(
        &self,
        name: &str,
        args: Vec<Expr>,
        distinct: bool,
        order_by_time: bool,
        path: &Path,
    ) -> Result<Expr, DslError> {
        let Ok(f) = self.state.udaf(name) else {
            return err(path, format!("unknown aggregate function \"{name}\""));
        };
        if !distinct && !order_by_time {
            return Ok(Expr::AggregateFunction(AggregateFunction::new_udf(
                f,
                args,
                false,
                None,
                vec![],
                None,
            )));
        }
        let order_by = if order_by_time {
            vec![self.column("timestamp", path)?.sort(true, false)]
        } else {
            vec![]
        };
        Ok(Expr::AggregateFunction(AggregateFunction::new_udf(
            f, args, distinct, None, order_by, None,
        )))
    }

    /// An expression: a string names a column; numbers, booleans and null
    /// are literals; an array is `[operator, ...]`.
    pub(crate) fn expr(&self, v: &Value, path: &Path) -> Result<Expr, DslError> {
        match v {
            Value::String(name) => self.column(name, path),
            Value::Array(items) => self.op(items, path),
            Value::Object(_) => err(
                path,
                "expected a column name, a value or an [operator, ...] array, got an object",
            ),
            other => literal(other, path),
        }
    }

    /// A value: like an expression, but a string is a string literal (use
    /// `["col", name]` for a column).
    pub(crate) fn value(&self, v: &Value, path: &Path) -> Result<Expr, DslError> {
        match v {
            Value::String(s) => Ok(lit(s.clone())),
            _ => self.expr(v, path),
        }
    }

    /// A function argument: a string that names a column is that column,
    /// any other string is a literal.
    fn fn_arg(&self, v: &Value, path: &Path) -> Result<Expr, DslError> {
        match v {
            Value::String(s) if self.schema.has_column_with_unqualified_name(s) => {
                Ok(Expr::Column(Column::from_name(s)))
            }
            Value::String(s) => Ok(lit(s.clone())),
            _ => self.expr(v, path),
        }
    }

    fn count(
        items: &[Value],
        min: usize,
        max: usize,
        op: &str,
        usage: &str,
        path: &Path,
    ) -> Result<(), DslError> {
        let n = items.len() - 1;
        if n < min || n > max {
            return err(
                path,
                format!(
                    "\"{op}\" takes {usage}, got {n} argument{}",
                    if n == 1 { "" } else { "s" }
                ),
            );
        }
        Ok(())
    }

    /// The document's now minus `n` of `unit` (seconds).
    fn ago(&self, items: &[Value], seconds: i64, path: &Path) -> Result<Expr, DslError> {
        Ok(timestamp_lit(self.before_now(items, seconds, path)?))
    }

    /// The instant `items[1]` units of `seconds` before the document's now.
    fn before_now(
        &self,
        items: &[Value],
        seconds: i64,
        path: &Path,
    ) -> Result<chrono::DateTime<chrono::Utc>, DslError> {
        let n = match items.get(1).and_then(Value::as_f64) {
            Some(n) if n >= 0.0 && n.is_finite() => n,
            _ => return err(&path.index(1), "expected a non-negative number"),
        };
        // A fixed bound, so whether a span is accepted does not depend on
        // today's date: 100,000 years back is a valid timestamp from any
        // "now" before the year 190,000.
        const MAX_SECONDS: f64 = 100_000.0 * 365.25 * 86_400.0;
        let span = n * seconds as f64;
        if span > MAX_SECONDS {
            return err(
                &path.index(1),
                format!("{n} is too far in the past (at most 100000 years)"),
            );
        }
        self.now
            .checked_sub_signed(chrono::Duration::microseconds((span * 1e6) as i64))
            .ok_or_else(|| DslError::new(&path.index(1), format!("{n} is too far in the past")))
    }

    /// An instant given as an RFC 3339 string, a date, or a time helper:
    /// its value, for start and end bounds.
    pub(crate) fn instant(&self, v: &Value, path: &Path) -> Result<DateTime<Utc>, DslError> {
        match v {
            Value::String(s) => parse_instant(s).ok_or_else(|| {
                DslError::new(
                    path,
                    format!(
                        "\"{s}\" is not an RFC 3339 time (like 2026-01-31T12:00:00Z) or a date"
                    ),
                )
            }),
            Value::Array(items) => {
                let op = items.first().and_then(Value::as_str).unwrap_or_default();
                let secs = match op {
                    "now" => return Ok(self.now),
                    "days-ago" => 86_400,
                    "hours-ago" => 3_600,
                    "minutes-ago" => 60,
                    _ => {
                        return err(
                            path,
                            "expected a time: an RFC 3339 string, [\"now\"] or [\"days-ago\", n]",
                        );
                    }
                };
                self.before_now(items, secs, path)
            }
            other => err(
                path,
                format!(
                    "expected a time: an RFC 3339 string or a time helper, got {}",
                    describe(other)
                ),
            ),
        }
    }

    /// `[operator, args...]`.
    fn op(&self, items: &[Value], path: &Path) -> Result<Expr, DslError> {
        let Some(first) = items.first() else {
            return err(path, "an empty array; expected [operator, ...]");
        };
        let Some(op) = first.as_str() else {
            return err(
                &path.index(0),
                format!("expected an operator name, got {}", describe(first)),
            );
        };
        let _nesting = self.nest(op, items.len() - 1, path)?;
        let arg = |i: usize| path.index(i);
        let binary = |o: Operator| -> Result<Expr, DslError> {
            Self::count(items, 2, 2, op, "2 arguments", path)?;
            let left = self.expr(&items[1], &arg(1))?;
            let right = self.value(&items[2], &arg(2))?;
            self.check_value(&left, &items[2], &arg(2))?;
            Ok(binary_expr(left, o, right))
        };
        let arithmetic = |o: Operator| -> Result<Expr, DslError> {
            Self::count(items, 2, 2, op, "2 arguments", path)?;
            Ok(binary_expr(
                self.expr(&items[1], &arg(1))?,
                o,
                self.expr(&items[2], &arg(2))?,
            ))
        };
        match op {
            "and" | "or" => {
                Self::count(items, 1, usize::MAX, op, "at least 1 argument", path)?;
                let mut out: Option<Expr> = None;
                for (i, item) in items.iter().enumerate().skip(1) {
                    let e = self.expr(item, &arg(i))?;
                    out = Some(match out {
                        None => e,
                        Some(acc) if op == "and" => acc.and(e),
                        Some(acc) => acc.or(e),
                    });
                }
                Ok(out.unwrap_or_else(|| lit(true)))
            }
            "not" => {
                Self::count(items, 1, 1, op, "1 argument", path)?;
                Ok(!self.expr(&items[1], &arg(1))?)
            }
            "=" => binary(Operator::Eq),
            "!=" => binary(Operator::NotEq),
            "<" => binary(Operator::Lt),
            "<=" => binary(Operator::LtEq),
            ">" => binary(Operator::Gt),
            ">=" => binary(Operator::GtEq),
            "like" | "ilike" => {
                Self::count(items, 2, 2, op, "2 arguments", path)?;
                let e = self.expr(&items[1], &arg(1))?;
                let pattern = self.value(&items[2], &arg(2))?;
                Ok(if op == "like" {
                    e.like(pattern)
                } else {
                    e.ilike(pattern)
                })
            }
            "in" | "not-in" => {
                Self::count(
                    items,
                    2,
                    2,
                    op,
                    "a value and a list: [\"in\", column, [v1, v2, ...]]",
                    path,
                )?;
                let e = self.expr(&items[1], &arg(1))?;
                let Value::Array(list) = &items[2] else {
                    return err(&arg(2), "expected a list of values");
                };
                let list = list
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        self.check_value(&e, v, &arg(2).index(i))?;
                        self.value(v, &arg(2).index(i))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(e.in_list(list, op == "not-in"))
            }
            "between" => {
                Self::count(
                    items,
                    3,
                    3,
                    op,
                    "3 arguments: [\"between\", column, low, high]",
                    path,
                )?;
                Ok(self.expr(&items[1], &arg(1))?.between(
                    self.value(&items[2], &arg(2))?,
                    self.value(&items[3], &arg(3))?,
                ))
            }
            "is-null" => {
                Self::count(items, 1, 1, op, "1 argument", path)?;
                Ok(self.expr(&items[1], &arg(1))?.is_null())
            }
            "not-null" => {
                Self::count(items, 1, 1, op, "1 argument", path)?;
                Ok(self.expr(&items[1], &arg(1))?.is_not_null())
            }
            "contains" => {
                Self::count(items, 2, 2, op, "2 arguments", path)?;
                let e = self.expr(&items[1], &arg(1))?;
                let needle = self.value(&items[2], &arg(2))?;
                self.call_scalar("contains", vec![e, needle], path)
            }
            "+" => arithmetic(Operator::Plus),
            "-" => arithmetic(Operator::Minus),
            "*" => arithmetic(Operator::Multiply),
            "/" => arithmetic(Operator::Divide),
            "%" => arithmetic(Operator::Modulo),
            "as" => {
                Self::count(
                    items,
                    2,
                    2,
                    op,
                    "2 arguments: [\"as\", expression, \"name\"]",
                    path,
                )?;
                let Some(name) = items[2].as_str().filter(|n| !n.is_empty()) else {
                    return err(&arg(2), "expected the new name as a non-empty string");
                };
                Ok(self.expr(&items[1], &arg(1))?.alias(name))
            }
            "col" => {
                Self::count(items, 1, 1, op, "1 argument", path)?;
                match &items[1] {
                    Value::String(name) => self.column(name, &arg(1)),
                    other => err(
                        &arg(1),
                        format!("expected a column name, got {}", describe(other)),
                    ),
                }
            }
            "lit" => {
                Self::count(items, 1, 1, op, "1 argument", path)?;
                literal(&items[1], &arg(1))
            }
            "payload" => {
                Self::count(items, 1, usize::MAX, op, "at least 1 field name", path)?;
                let mut parts = Vec::new();
                for (i, v) in items.iter().enumerate().skip(1) {
                    match v.as_str() {
                        Some(s) => parts.push(s),
                        None => return err(&arg(i), "expected a field name"),
                    }
                }
                self.payload(&parts, path)
            }
            "fn" => {
                Self::count(
                    items,
                    1,
                    usize::MAX,
                    op,
                    "a function name and its arguments",
                    path,
                )?;
                let Some(name) = items[1].as_str() else {
                    return err(&arg(1), "expected a function name");
                };
                let args = items[2..]
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.fn_arg(v, &arg(i + 2)))
                    .collect::<Result<Vec<_>, _>>()?;
                if self.state.udf(name).is_ok() {
                    self.call_scalar(name, args, &arg(1))
                } else if self.state.udaf(name).is_ok() {
                    self.call_aggregate(name, args, false, false, &arg(1))
                } else {
                    let mut names: Vec<&str> = self
                        .state
                        .scalar_functions()
                        .keys()
                        .map(String::as_str)
                        .collect();
                    names.extend(self.state.aggregate_functions().keys().map(String::as_str));
                    err(
                        &arg(1),
                        format!("unknown function \"{name}\"{}", suggest(name, names)),
                    )
                }
            }
            "now" => {
                Self::count(items, 0, 0, op, "no arguments", path)?;
                Ok(timestamp_lit(self.now))
            }
            "days-ago" => {
                Self::count(items, 1, 1, op, "1 argument", path)?;
                self.ago(items, 86_400, path)
            }
            "hours-ago" => {
                Self::count(items, 1, 1, op, "1 argument", path)?;
                self.ago(items, 3_600, path)
            }
            "minutes-ago" => {
                Self::count(items, 1, 1, op, "1 argument", path)?;
                self.ago(items, 60, path)
            }
            "since" | "until" => {
                Self::count(items, 1, 1, op, "1 argument: a time", path)?;
                let t = timestamp_lit(self.instant(&items[1], &arg(1))?);
                let ts = self.column("timestamp", path)?;
                Ok(if op == "since" { ts.gt_eq(t) } else { ts.lt(t) })
            }
            name if AGGREGATIONS.contains(&name) => self.aggregation(name, items, path),
            other => {
                let all = OPERATORS.iter().chain(AGGREGATIONS.iter()).copied();
                err(
                    &path.index(0),
                    format!("unknown operator \"{other}\"{}", suggest(other, all)),
                )
            }
        }
    }

    /// Enters operator `op` with `args` arguments: one level of nesting, or
    /// `args - 1` for `and` and `or`, whose terms are chained.
    fn nest(&self, op: &str, args: usize, path: &Path) -> Result<Nesting<'_>, DslError> {
        let levels = match op {
            "and" | "or" => args.saturating_sub(1).max(1),
            _ => 1,
        };
        let depth = self.depth.get() + levels;
        if depth > MAX_DEPTH {
            return err(
                path,
                format!(
                    "the expression nests more than {MAX_DEPTH} levels deep (an \"and\" or \"or\" of n terms counts n - 1): use [\"in\", column, [...]] for a long list of alternatives"
                ),
            );
        }
        self.depth.set(depth);
        Ok(Nesting {
            depth: &self.depth,
            levels,
        })
    }

    /// A string compared with a number or a time must read as one: the
    /// engine would only find out while running, without the path.
    fn check_value(&self, left: &Expr, v: &Value, path: &Path) -> Result<(), DslError> {
        let Value::String(text) = v else {
            return Ok(());
        };
        let Ok(dt) = left.get_type(self.schema) else {
            return Ok(());
        };
        if dt.is_numeric() && text.trim().parse::<f64>().is_err() {
            return err(
                path,
                format!("\"{text}\" is not a number, and the other side is {dt}"),
            );
        }
        if matches!(
            dt,
            DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64
        ) && parse_instant(text).is_none()
        {
            return err(
                path,
                format!("\"{text}\" is not an RFC 3339 time (like 2026-01-31T12:00:00Z) or a date"),
            );
        }
        Ok(())
    }

    /// One of the named aggregations.
    fn aggregation(&self, name: &str, items: &[Value], path: &Path) -> Result<Expr, DslError> {
        let arg = |i: usize| path.index(i);
        let one = |this: &Self| -> Result<Expr, DslError> {
            Self::count(items, 1, 1, name, "1 argument", path)?;
            this.expr(&items[1], &arg(1))
        };
        match name {
            "count" => {
                Self::count(items, 0, 1, name, "0 or 1 argument", path)?;
                let arg = if items.len() == 1 {
                    lit(1i64)
                } else {
                    self.expr(&items[1], &arg(1))?
                };
                self.call_aggregate("count", vec![arg], false, false, path)
            }
            "sum" | "avg" | "min" | "max" | "stddev" | "median" => {
                let e = one(self)?;
                self.call_aggregate(name, vec![e], false, false, path)
            }
            "variance" => {
                let e = one(self)?;
                self.call_aggregate("var_samp", vec![e], false, false, path)
            }
            "count-distinct" => {
                let e = one(self)?;
                self.call_aggregate("count", vec![e], true, false, path)
            }
            "approx-count-distinct" => {
                let e = one(self)?;
                self.call_aggregate("approx_distinct", vec![e], false, false, path)
            }
            "first" | "last" => {
                let e = one(self)?;
                let f = if name == "first" {
                    "first_value"
                } else {
                    "last_value"
                };
                self.call_aggregate(f, vec![e], false, true, path)
            }
            "percentile" | "approx-percentile" => {
                Self::count(
                    items,
                    2,
                    2,
                    name,
                    "2 arguments: [\"percentile\", column, p]",
                    path,
                )?;
                let e = self.expr(&items[1], &arg(1))?;
                let p = match items[2].as_f64() {
                    Some(p) if (0.0..=1.0).contains(&p) => p,
                    _ => return err(&arg(2), "expected a fraction from 0 to 1"),
                };
                let f = if name == "percentile" {
                    "percentile_cont"
                } else {
                    "approx_percentile_cont"
                };
                self.call_aggregate(f, vec![e, lit(p)], false, false, path)
            }
            _ => err(path, format!("unknown aggregation \"{name}\"")),
        }
    }
}

/// The column name of an unnamed aggregation: `["sum", "amount"]` →
/// `sum_amount`, `["count"]` → `count`, `["percentile", "x", 0.9]` →
/// `percentile_x_0_9`.
pub(crate) fn default_name(v: &Value) -> String {
    let items = v.as_array().map(Vec::as_slice).unwrap_or_default();
    let mut parts: Vec<String> = Vec::new();
    for item in items {
        match item {
            Value::String(s) => parts.push(s.replace(['-', '.'], "_")),
            Value::Number(n) => parts.push(n.to_string().replace('.', "_")),
            _ => {}
        }
    }
    parts.join("_")
}

/// Whether `v` is `[aggregation, ...]` with no alias around it.
pub(crate) fn is_bare_aggregation(v: &Value) -> bool {
    v.as_array()
        .and_then(|items| items.first())
        .and_then(Value::as_str)
        .is_some_and(|op| AGGREGATIONS.contains(&op))
}

/// An RFC 3339 time or a plain date (midnight UTC).
pub(crate) fn parse_instant(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}
