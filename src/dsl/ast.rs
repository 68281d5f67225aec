//! The typed document: what [`parse`](super::parse) reads from the JSON and
//! [`compile`](mod@super::compile) turns into a plan. A node that can still be
//! wrong against the tenant's schema (a name, an expression) keeps the JSON
//! path it was read from, so that the compiler's errors name it too.

use super::Path;
use super::keywords::Aggregation;
use arrow::datatypes::IntervalMonthDayNano;
use chrono::{DateTime, Utc};
use udfs::anomaly::Method;
use udfs::cohorts::Period;
use udfs::gapfill::Fill;
use udfs::trend::TrendMethod;

/// A value read at `path`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node<T> {
    pub(crate) path: Path,
    pub(crate) item: T,
}

impl<T> Node<T> {
    pub(crate) fn new(path: &Path, item: T) -> Self {
        Node {
            path: path.clone(),
            item,
        }
    }
}

/// A whole document.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Query {
    /// The table, at `from`.
    pub(crate) from: String,
    /// `where`.
    pub(crate) filter: Option<Expr>,
    /// A selection or an analytics form.
    pub(crate) body: Body,
    pub(crate) order_by: Vec<SortItem>,
    pub(crate) limit: Option<usize>,
    pub(crate) offset: usize,
    pub(crate) explain: bool,
    /// `as-of`: the table read as of a position or an ingest time.
    pub(crate) as_of: Option<crate::query::pin::Pin>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Body {
    Select(Select),
    Form(Form),
}

/// `select`, `group-by` and `having`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Select {
    pub(crate) group_by: Vec<Expr>,
    /// Every input column first (`"*"`, or no `select` at all).
    pub(crate) star: bool,
    pub(crate) items: Vec<SelectItem>,
    pub(crate) having: Option<Expr>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SelectItem {
    /// A bare string: an input column, else a `group-by` alias, else a
    /// payload path that keeps the name it was written with.
    Name(Node<String>),
    /// An expression, and the name a bare aggregation gets from its form.
    Expr { expr: Expr, name: Option<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SortItem {
    pub(crate) ascending: bool,
    pub(crate) key: SortKey,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SortKey {
    /// An expression; a bare name is first looked up among the result's
    /// columns. After a form only such names can be sorted by.
    Expr(Expr),
    /// After a form: something that is not a name, at this path.
    NotAName(Path),
}

/// An expression and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Expr {
    pub(crate) path: Path,
    pub(crate) kind: ExprKind,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ExprKind {
    /// A string in expression position: a column, or a payload path.
    Name(String),
    /// `["col", name]`: the same, but never an output column's name; its
    /// problems are at the path's `[1]`.
    Column(String),
    /// A string in value position: a string literal, which must read as a
    /// number or a time when compared with one.
    Text(String),
    /// A function argument string: the column of that name if there is
    /// one, else a string literal.
    NameOrText(String),
    Literal(Literal),
    /// `and` (`all`) or `or` of the terms, chained left to right.
    Logic {
        all: bool,
        terms: Vec<Expr>,
    },
    Not(Box<Expr>),
    /// A comparison; the right side is a value.
    Compare {
        op: Comparison,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    Arithmetic {
        op: Arithmetic,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    Like {
        case_insensitive: bool,
        expr: Box<Expr>,
        pattern: Box<Expr>,
    },
    InList {
        negated: bool,
        expr: Box<Expr>,
        list: Vec<Expr>,
    },
    Between {
        expr: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
    },
    IsNull {
        negated: bool,
        expr: Box<Expr>,
    },
    Contains {
        expr: Box<Expr>,
        needle: Box<Expr>,
    },
    Alias {
        expr: Box<Expr>,
        name: String,
    },
    /// `["payload", field, key...]`.
    Payload(Vec<String>),
    /// `["fn", name, args...]`: a session function by name (at the path's
    /// `[1]`).
    Call {
        name: String,
        args: Vec<Expr>,
    },
    /// `["now"]` and the `*-ago` helpers.
    Time(Instant),
    /// `["since", t]` (`until: false`) or `["until", t]`.
    TimeBound {
        until: bool,
        at: Instant,
    },
    Aggregate(Aggregate),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Comparison {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arithmetic {
    Plus,
    Minus,
    Multiply,
    Divide,
    Modulo,
}

/// A named aggregation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Aggregate {
    pub(crate) func: Aggregation,
    /// `None` only for `["count"]`.
    pub(crate) arg: Option<Box<Expr>>,
    /// The fraction of a percentile, from 0 to 1.
    pub(crate) fraction: Option<f64>,
}

/// A point in time, fixed once the document's "now" is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Instant {
    /// Where it was written; a span's problem is at its `[1]`.
    pub(crate) path: Path,
    pub(crate) kind: InstantKind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum InstantKind {
    At(DateTime<Utc>),
    Now,
    /// `amount` units of `seconds` before now; `amount` is non-negative
    /// and bounded.
    Ago {
        amount: f64,
        seconds: i64,
    },
}

/// An analytics form, at `path` (its key).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Form {
    pub(crate) path: Path,
    pub(crate) kind: FormKind,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FormKind {
    TimeSeries(TimeSeries),
    Funnel(Funnel),
    Retention(Retention),
    Anomalies(Anomalies),
    Trend(Trend),
}

/// An aggregation of a form and the name of its column.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Metric {
    pub(crate) expr: Expr,
    pub(crate) name: String,
}

/// A breakdown column and the name of its output column.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Breakdown {
    pub(crate) column: Node<String>,
    pub(crate) name: String,
}

/// A metric over time buckets: what `time-series`, `anomalies` and `trend`
/// share.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    /// Positive: whole months (1, 3 or 12), or days and nanoseconds.
    pub(crate) interval: IntervalMonthDayNano,
    pub(crate) time_column: Node<String>,
    /// [start, end), gap-filled with `fill`.
    pub(crate) range: Option<(Instant, Instant)>,
    pub(crate) fill: Fill,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TimeSeries {
    pub(crate) aggregations: Vec<Metric>,
    pub(crate) by: Vec<Breakdown>,
    pub(crate) series: Series,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Anomalies {
    pub(crate) metric: Metric,
    pub(crate) method: Method,
    pub(crate) sensitivity: f64,
    pub(crate) series: Series,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Trend {
    pub(crate) metric: Metric,
    pub(crate) periods: u64,
    pub(crate) method: TrendMethod,
    pub(crate) series: Series,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Retention {
    pub(crate) cohort_event: Expr,
    pub(crate) return_event: Expr,
    pub(crate) period: Period,
    pub(crate) periods: u64,
    pub(crate) entity: Node<String>,
    pub(crate) time_column: Node<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Funnel {
    pub(crate) steps: Vec<Expr>,
    /// Days and nanoseconds, no months.
    pub(crate) window: IntervalMonthDayNano,
    pub(crate) entity: Node<String>,
    pub(crate) time_column: Node<String>,
    pub(crate) breakdown: Option<Breakdown>,
    /// A checked mode string, passed on as written.
    pub(crate) mode: Option<String>,
}
