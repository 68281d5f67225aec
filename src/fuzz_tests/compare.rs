//! Results as comparable rows, and errors as the status the server would
//! answer them with.

use crate::service::Error;
use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use datafusion::error::DataFusionError;
use datafusion::scalar::ScalarValue;
use std::cmp::Ordering;

/// Absolute difference two results near zero may have. A spread (stddev,
/// variance, covariance) of equal values is 0 with one partition, but
/// merging partial states from several brings the rounding of the inputs'
/// magnitude (epoch seconds: about 1e-7) into it.
const SPREAD_NOISE: f64 = 1e-6;

/// Relative difference two results may have. Partitions add floats in
/// another order, which alone moves the last digits; and a spread of
/// inputs of magnitude M that differ by S keeps only the digits of S
/// that M leaves: epoch seconds (1.8e9) a fraction of a second apart
/// keep about 7 of 16, and their covariance from one partition and from
/// four differed by 8e-7 of its value.
const RELATIVE_NOISE: f64 = 1e-5;

/// One value of a result. Floats compare with a tolerance: partitions add
/// them up in another order.
#[derive(Debug, Clone)]
pub(super) enum Cell {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Text(String),
    /// Anything else (times, lists, structs), as its display text.
    Other(String),
}

impl Cell {
    fn of(value: ScalarValue) -> Cell {
        use ScalarValue as S;
        if value.is_null() {
            return Cell::Null;
        }
        match value {
            S::Boolean(Some(b)) => Cell::Bool(b),
            S::Int8(Some(v)) => Cell::Int(v.into()),
            S::Int16(Some(v)) => Cell::Int(v.into()),
            S::Int32(Some(v)) => Cell::Int(v.into()),
            S::Int64(Some(v)) => Cell::Int(v.into()),
            S::UInt8(Some(v)) => Cell::Int(v.into()),
            S::UInt16(Some(v)) => Cell::Int(v.into()),
            S::UInt32(Some(v)) => Cell::Int(v.into()),
            S::UInt64(Some(v)) => Cell::Int(v.into()),
            S::Float32(Some(v)) => Cell::Float(v.into()),
            S::Float64(Some(v)) => Cell::Float(v),
            S::Utf8(Some(s)) | S::LargeUtf8(Some(s)) | S::Utf8View(Some(s)) => Cell::Text(s),
            other => Cell::Other(other.to_string()),
        }
    }

    /// A total order, for sorting rows before they are compared.
    fn order(&self, other: &Cell) -> Ordering {
        let rank = |c: &Cell| match c {
            Cell::Null => 0,
            Cell::Bool(_) => 1,
            Cell::Int(_) => 2,
            Cell::Float(_) => 3,
            Cell::Text(_) => 4,
            Cell::Other(_) => 5,
        };
        match (self, other) {
            (Cell::Bool(a), Cell::Bool(b)) => a.cmp(b),
            (Cell::Int(a), Cell::Int(b)) => a.cmp(b),
            (Cell::Float(a), Cell::Float(b)) => a.total_cmp(b),
            (Cell::Text(a), Cell::Text(b)) | (Cell::Other(a), Cell::Other(b)) => a.cmp(b),
            _ => rank(self).cmp(&rank(other)),
        }
    }

    fn matches(&self, other: &Cell) -> bool {
        match (self, other) {
            (Cell::Float(a), Cell::Float(b)) => {
                a == b
                    || (a.is_nan() && b.is_nan())
                    || (a - b).abs() <= RELATIVE_NOISE * a.abs().max(b.abs())
                    || (a - b).abs() <= SPREAD_NOISE
            }
            _ => self.order(other) == Ordering::Equal,
        }
    }
}

/// A query's result: its columns and rows.
#[derive(Debug)]
pub(super) struct Rows {
    pub(super) columns: Vec<(String, DataType)>,
    pub(super) rows: Vec<Vec<Cell>>,
}

impl Rows {
    pub(super) fn of(batches: &[RecordBatch]) -> Result<Rows, DataFusionError> {
        let columns = batches
            .first()
            .map(|b| {
                b.schema()
                    .fields()
                    .iter()
                    .map(|f| (f.name().clone(), f.data_type().clone()))
                    .collect()
            })
            .unwrap_or_default();
        let mut rows = Vec::new();
        for batch in batches {
            for row in 0..batch.num_rows() {
                let cells = batch
                    .columns()
                    .iter()
                    .map(|c| ScalarValue::try_from_array(c, row).map(Cell::of))
                    .collect::<Result<Vec<_>, _>>()?;
                rows.push(cells);
            }
        }
        Ok(Rows { columns, rows })
    }
}

fn rows_match(a: &[Cell], b: &[Cell]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.matches(y))
}

fn row_order(a: &[Cell], b: &[Cell]) -> Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.order(y))
        .find(|o| o.is_ne())
        .unwrap_or(a.len().cmp(&b.len()))
}

/// Why two results differ, if they do. `ordered`: the rows must come in
/// the same order; otherwise they are compared as multisets.
pub(super) fn difference(a: &Rows, b: &Rows, ordered: bool) -> Option<String> {
    // Empty results may not carry a schema (no batch at all).
    if !a.rows.is_empty() && !b.rows.is_empty() && a.columns != b.columns {
        return Some(format!("columns {:?} vs {:?}", a.columns, b.columns));
    }
    if a.rows.len() != b.rows.len() {
        return Some(format!("{} rows vs {}", a.rows.len(), b.rows.len()));
    }
    if ordered {
        return a
            .rows
            .iter()
            .zip(&b.rows)
            .position(|(x, y)| !rows_match(x, y))
            .map(|i| format!("row {i}: {:?} vs {:?}", a.rows[i], b.rows[i]));
    }
    let mut x: Vec<&Vec<Cell>> = a.rows.iter().collect();
    let mut y: Vec<&Vec<Cell>> = b.rows.iter().collect();
    x.sort_by(|p, q| row_order(p, q));
    y.sort_by(|p, q| row_order(p, q));
    if x.iter().zip(&y).all(|(p, q)| rows_match(p, q)) {
        return None;
    }
    // Floats within the tolerance may sort apart: match rows greedily.
    let mut unmatched: Vec<&Vec<Cell>> = y;
    for row in x {
        match unmatched.iter().position(|r| rows_match(row, r)) {
            Some(i) => {
                unmatched.swap_remove(i);
            }
            None => return Some(format!("row {row:?} only on one side")),
        }
    }
    None
}

/// How the server answers an engine error.
#[derive(Debug)]
pub(super) struct Refusal {
    /// The service's class of the error: a refusal of the caller's
    /// request, or the server's own fault.
    pub(super) class: crate::service::Kind,
    /// The error's variant, for the outcome counts.
    pub(super) kind: String,
    pub(super) message: String,
}

impl Refusal {
    /// Whether the server would answer a fault of its own (a 5xx) rather
    /// than refuse the request.
    pub(super) fn is_fault(&self) -> bool {
        !self.class.is_refusal()
    }
}

/// How the service classes an engine error, and a name for the kind of
/// refusal.
pub(super) fn refusal(e: DataFusionError) -> Refusal {
    let kind = kind(&e);
    let message = e.to_string();
    let class = Error::from(e).kind;
    // An internal error behind a refusal (wrapped in another kind) is
    // still one.
    let internal = message.contains("Internal error") || message.contains("likely caused by a bug");
    Refusal {
        class: if internal {
            crate::service::Kind::Internal
        } else {
            class
        },
        kind: kind.to_string(),
        message,
    }
}

/// The variant of an error, inside its wrappers.
fn kind(e: &DataFusionError) -> &'static str {
    match e {
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => kind(inner),
        DataFusionError::Shared(inner) => kind(inner),
        DataFusionError::ArrowError(..) => "arrow",
        DataFusionError::SQL(..) => "sql-syntax",
        DataFusionError::NotImplemented(_) => "not-implemented",
        DataFusionError::Plan(_) => "plan",
        DataFusionError::SchemaError(..) => "schema",
        DataFusionError::Execution(_) => "execution",
        DataFusionError::ResourcesExhausted(_) => "resources",
        DataFusionError::External(_) => "external",
        DataFusionError::Configuration(_) => "configuration",
        DataFusionError::Collection(_) => "collection",
        DataFusionError::Internal(_) => "internal",
        _ => "other",
    }
}
