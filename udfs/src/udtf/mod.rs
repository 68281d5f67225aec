//! What the table functions share: reading their constant arguments,
//! planning the inner query in the caller's session, and a table whose
//! scan folds the inner query's rows into a result (`fold`).
//!
//! The inner query is planned with the session the outer query runs in,
//! so it sees the same tables (the same tenant), functions and settings,
//! and it is executed as a child of the outer plan under the same memory
//! pool and cancellation. It must be read-only: DDL, DML and `SET` are
//! refused whatever the outer session allows.
//!
//! What a fold holds (the gathered rows, or its running state) and the
//! working memory of its final step are reserved in the query's memory
//! pool, so a table function over too many rows fails with DataFusion's
//! "resources exhausted" under the query's budget instead of growing the
//! process.

mod fold;

pub(crate) use fold::{Fold, FoldTable, Gather, reserve_rows};

use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::catalog::Session;
use datafusion::common::{ScalarValue, plan_datafusion_err, plan_err};
use datafusion::error::Result;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::prelude::SQLOptions;
use futures::FutureExt;

/// The arguments of one table-function call, with the function's name and
/// usage for messages.
#[derive(Debug)]
pub(crate) struct Args<'a> {
    pub(crate) func: &'static str,
    pub(crate) usage: &'static str,
    pub(crate) exprs: &'a [Expr],
}

impl Args<'_> {
    /// Checks the number of arguments.
    pub(crate) fn count(&self, min: usize, max: usize) -> Result<()> {
        let n = self.exprs.len();
        if n < min || n > max {
            return plan_err!("{} expects {}, got {n} arguments", self.func, self.usage);
        }
        Ok(())
    }

    fn constant(&self, i: usize, what: &str) -> Result<&ScalarValue> {
        match self.exprs.get(i) {
            Some(Expr::Literal(v, _)) => Ok(v),
            Some(_) => plan_err!(
                "{}: {what} (argument {}) must be a constant",
                self.func,
                i + 1
            ),
            None => plan_err!("{}: {what} (argument {}) is missing", self.func, i + 1),
        }
    }

    /// Whether argument `i` was given.
    pub(crate) fn has(&self, i: usize) -> bool {
        i < self.exprs.len()
    }

    /// A string constant.
    pub(crate) fn string(&self, i: usize, what: &str) -> Result<String> {
        match self.constant(i, what)? {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)) => Ok(s.clone()),
            other => plan_err!(
                "{}: {what} (argument {}) must be a string, got {}",
                self.func,
                i + 1,
                describe(other)
            ),
        }
    }

    /// A number constant.
    pub(crate) fn number(&self, i: usize, what: &str) -> Result<f64> {
        let v = self.constant(i, what)?;
        let x = if v.data_type().is_numeric() && !v.is_null() {
            v.cast_to(&DataType::Float64).ok()
        } else {
            None
        };
        match x {
            Some(ScalarValue::Float64(Some(x))) => Ok(x),
            _ => plan_err!(
                "{}: {what} (argument {}) must be a number, got {}",
                self.func,
                i + 1,
                describe(v)
            ),
        }
    }

    /// A non-negative whole number.
    pub(crate) fn count_arg(&self, i: usize, what: &str, max: u64) -> Result<u64> {
        let x = self.number(i, what)?;
        if x < 0.0 || x.fract() != 0.0 || x > max as f64 {
            return plan_err!(
                "{}: {what} (argument {}) must be a whole number from 0 to {max}, got {x}",
                self.func,
                i + 1
            );
        }
        Ok(x as u64)
    }

    /// A point in time, as nanoseconds since the epoch (UTC): a timestamp
    /// or date, or a string such as '2026-01-01T00:00:00Z'.
    pub(crate) fn instant(&self, i: usize, what: &str) -> Result<i64> {
        let v = self.constant(i, what)?;
        let ns = if v.is_null() {
            None
        } else {
            v.cast_to(&DataType::Timestamp(TimeUnit::Nanosecond, None))
                .ok()
        };
        match ns {
            Some(ScalarValue::TimestampNanosecond(Some(ns), _)) => Ok(ns),
            _ => plan_err!(
                "{}: {what} (argument {}) must be a timestamp, got {}",
                self.func,
                i + 1,
                describe(v)
            ),
        }
    }

    /// A bucket width: a whole number of months, or a fixed duration
    /// (days count as 24 hours).
    pub(crate) fn step(&self, i: usize, what: &str) -> Result<Step> {
        let v = self.constant(i, what)?;
        let bad = || {
            plan_err!(
                "{}: {what} (argument {}) must be a positive INTERVAL of whole months or of a fixed length (days, hours, ...), got {}",
                self.func,
                i + 1,
                describe(v)
            )
        };
        const DAY: i64 = 86_400_000_000_000;
        let (months, nanos) = match v {
            ScalarValue::IntervalMonthDayNano(Some(x)) => (
                i64::from(x.months),
                i64::from(x.days)
                    .checked_mul(DAY)
                    .and_then(|d| d.checked_add(x.nanoseconds)),
            ),
            ScalarValue::IntervalYearMonth(Some(m)) => (i64::from(*m), Some(0)),
            ScalarValue::IntervalDayTime(Some(x)) => (
                0,
                Some(i64::from(x.days) * DAY + i64::from(x.milliseconds) * 1_000_000),
            ),
            _ => return bad(),
        };
        match (months, nanos) {
            (m, Some(0)) if m > 0 => Ok(Step::Months(m)),
            (0, Some(n)) if n > 0 => Ok(Step::Nanos(n)),
            _ => bad(),
        }
    }
}

fn describe(v: &ScalarValue) -> String {
    if v.is_null() {
        "NULL".to_string()
    } else {
        format!("{} {v}", v.data_type())
    }
}

/// A bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Calendar months (UTC).
    Months(i64),
    /// A fixed number of nanoseconds.
    Nanos(i64),
}

impl Step {
    /// The start of bucket `k` of a series starting at `origin` (ns).
    pub fn nth(self, origin: i64, k: i64) -> Option<i64> {
        match self {
            Step::Nanos(n) => n.checked_mul(k).and_then(|d| origin.checked_add(d)),
            Step::Months(m) => {
                let t = chrono::DateTime::from_timestamp_nanos(origin);
                let months = m.checked_mul(k)?;
                let shifted = if months >= 0 {
                    t.checked_add_months(chrono::Months::new(u32::try_from(months).ok()?))
                } else {
                    t.checked_sub_months(chrono::Months::new(u32::try_from(-months).ok()?))
                }?;
                shifted.timestamp_nanos_opt()
            }
        }
    }

    /// The number of the bucket holding `t`, counted from `origin`.
    pub fn index(self, origin: i64, t: i64) -> Option<i64> {
        match self {
            Step::Nanos(n) => Some((i128::from(t) - i128::from(origin)).div_euclid(i128::from(n)))
                .and_then(|k| i64::try_from(k).ok()),
            Step::Months(m) => {
                let a = chrono::DateTime::from_timestamp_nanos(origin);
                let b = chrono::DateTime::from_timestamp_nanos(t);
                use chrono::Datelike;
                let diff = (i64::from(b.year()) - i64::from(a.year())) * 12 + i64::from(b.month0())
                    - i64::from(a.month0());
                // Guess from the calendar, then correct by the day and time
                // within the month.
                let mut k = diff.div_euclid(m);
                while self.nth(origin, k)? > t {
                    k -= 1;
                }
                while self.nth(origin, k + 1)? <= t {
                    k += 1;
                }
                Some(k)
            }
        }
    }
}

/// A nanosecond instant as RFC 3339, for messages.
pub(crate) fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339()
}

/// How an inner query's text becomes a statement, when the application
/// bounds what a query may be (its size, nesting depth, names): set on the
/// session as a config extension. Without it, DataFusion's parser.
pub struct InnerQueryParser(pub Box<ParseFn>);

/// Parses one statement in a session.
pub type ParseFn =
    dyn Fn(&SessionState, &str) -> Result<datafusion::sql::parser::Statement> + Send + Sync;

impl std::fmt::Debug for InnerQueryParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InnerQueryParser(..)")
    }
}

/// Plans `sql` in the caller's session, refusing anything but a query.
pub fn plan_inner(func: &str, session: &dyn Session, sql: &str) -> Result<LogicalPlan> {
    let Some(state) = session.as_any().downcast_ref::<SessionState>() else {
        return plan_err!("{func} can only be called from a DataFusion session");
    };
    let statement = match state.config().get_extension::<InnerQueryParser>() {
        Some(parser) => (parser.0)(state, sql),
        None => state.sql_to_statement(sql, &state.config().options().sql_parser.dialect),
    }
    .map_err(|e| e.context(format!("{func}: in the inner query")))?;
    let planned = state
        .statement_to_plan(statement)
        .now_or_never()
        .ok_or_else(|| {
            plan_datafusion_err!(
                "{func}: the inner query refers to a table that cannot be resolved while planning"
            )
        })?;
    let plan = planned.map_err(|e| e.context(format!("{func}: in the inner query")))?;
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(&plan)
        .map_err(|e| e.context(format!("{func}: the inner query must be a query")))?;
    Ok(plan)
}

/// The index of the column called `name` in `schema`, or an error listing
/// the columns there are.
pub(crate) fn column_index(func: &str, schema: &SchemaRef, name: &str) -> Result<usize> {
    schema.index_of(name).map_err(|_| {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        plan_datafusion_err!(
            "{func}: the inner query has no column {name:?}; its columns are {}",
            names.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000_000_000;

    fn ns(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap()
    }

    #[test]
    fn fixed_steps() {
        let s = Step::Nanos(DAY);
        assert_eq!(s.index(0, DAY * 3 + 5), Some(3));
        assert_eq!(s.index(0, -1), Some(-1));
        assert_eq!(s.nth(0, 3), Some(3 * DAY));
    }

    #[test]
    fn month_steps_follow_the_calendar() {
        let s = Step::Months(1);
        let o = ns("2026-01-31T00:00:00Z");
        assert_eq!(s.nth(o, 1), Some(ns("2026-02-28T00:00:00Z")));
        let jan = ns("2026-01-01T00:00:00Z");
        assert_eq!(s.index(jan, ns("2026-03-15T10:00:00Z")), Some(2));
        assert_eq!(s.index(jan, ns("2025-12-31T23:59:59Z")), Some(-1));
        let q = Step::Months(3);
        assert_eq!(q.index(jan, ns("2026-06-30T23:00:00Z")), Some(1));
        assert_eq!(q.index(jan, ns("2026-07-01T00:00:00Z")), Some(2));
    }
}
