//! One compiled rule and how it runs over the rows of one event type and
//! version: each kind is one pass over one column, and a message is made
//! only for a row that breaks it.

use crate::schema::governed::{FieldType, Mode};
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Float64Type};
use datafusion::physical_expr::PhysicalExpr;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A rule of a version, ready to run.
#[derive(Debug)]
pub(super) struct Rule {
    pub(super) name: String,
    pub(super) mode: Mode,
    pub(super) kind: Kind,
}

#[derive(Debug)]
pub(super) enum Kind {
    Required(String),
    Type(String, FieldType),
    Min {
        field: String,
        bound: f64,
        exclusive: bool,
    },
    Max {
        field: String,
        bound: f64,
        exclusive: bool,
    },
    EnumText {
        field: String,
        values: HashSet<String>,
        shown: String,
    },
    EnumNumber {
        field: String,
        values: Vec<f64>,
        shown: String,
    },
    EnumBool {
        field: String,
        values: Vec<bool>,
        shown: String,
    },
    Pattern {
        field: String,
        regex: regex::Regex,
    },
    Length {
        field: String,
        min: Option<u32>,
        max: Option<u32>,
    },
    /// Payload fields the version does not declare.
    Additional,
    Sql {
        expr: Arc<dyn PhysicalExpr>,
        check: String,
        message: Option<String>,
        fields: Vec<String>,
    },
}

/// A row that broke a rule: where (a path below the event) and why.
#[derive(Debug)]
pub(super) struct Broken {
    /// The row in the rows the rule ran over.
    pub(super) row: usize,
    /// Below `$[i]`: `.payload.amount`.
    pub(super) at: String,
    pub(super) message: String,
    pub(super) fields: Vec<String>,
}

/// What a rule runs over: the rows of one event type and version, read
/// in place from the built batch.
pub(super) struct Rows<'a> {
    pub(super) batch: &'a RecordBatch,
    /// The rows, in the built batch.
    pub(super) members: &'a [u32],
    /// `members` as an index array, for taking the columns SQL rules read;
    /// `None` when they are every row of the batch, in order.
    pub(super) take: Option<&'a UInt32Array>,
    /// Per built-batch row, the fields that went to `_overflow`.
    pub(super) overflow: &'a HashMap<u32, Map<String, Value>>,
    /// Per column, the built-batch rows whose text is nested JSON.
    pub(super) nested: &'a HashMap<String, Vec<u32>>,
    /// Every field the version declares.
    pub(super) declared: &'a HashSet<String>,
    /// The version's name for messages: `purchase v2`.
    pub(super) label: &'a str,
    /// The input of SQL rules: its schema.
    pub(super) sql_input: &'a arrow::datatypes::SchemaRef,
    /// The columns the version's SQL rules read.
    pub(super) sql_reads: &'a [String],
    /// The input of SQL rules for these rows, taken once for all of them.
    pub(super) sql_batch: std::cell::OnceCell<Result<RecordBatch, String>>,
    /// Per number column, the least and greatest value of the whole
    /// batch (shared by every group of rows checked on it).
    pub(super) ranges: &'a std::cell::RefCell<HashMap<String, Option<(f64, f64)>>>,
}

impl Rows<'_> {
    fn column(&self, field: &str) -> Option<&ArrayRef> {
        self.batch.column_by_name(field)
    }

    /// The least and greatest value of number column `field` over the
    /// whole batch, computed once per batch.
    fn range(&self, field: &str, values: &arrow::array::Float64Array) -> Option<(f64, f64)> {
        if let Some(known) = self.ranges.borrow().get(field) {
            return *known;
        }
        let range = arrow::compute::min(values).zip(arrow::compute::max(values));
        self.ranges.borrow_mut().insert(field.to_string(), range);
        range
    }

    fn overflowed(&self, row: u32, field: &str) -> Option<&Value> {
        self.overflow.get(&row)?.get(field)
    }

    fn is_nested(&self, row: u32, field: &str) -> bool {
        self.nested
            .get(field)
            .is_some_and(|rows| rows.binary_search(&row).is_ok())
    }

    /// `(j, row)` for each member whose value in `array` is not null: `j`
    /// its place among the members, `row` its row in the batch.
    fn valid<'b>(&'b self, array: &'b dyn Array) -> impl Iterator<Item = (usize, u32)> + 'b {
        // Most columns have no nulls: no per-row look at the null mask.
        let all = array.null_count() == 0;
        self.members
            .iter()
            .enumerate()
            .filter(move |(_, r)| all || array.is_valid(**r as usize))
            .map(|(j, r)| (j, *r))
    }
}

/// A value for a message: JSON, cut to 64 characters.
pub(super) fn shown(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// A double as a person writes it: `12000`, `2.5`.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    shown(&Value::from(v))
}

fn field_at(field: &str) -> String {
    format!(".payload.{field}")
}

impl Rule {
    /// The rows that break the rule.
    pub(super) fn run(&self, rows: &Rows<'_>) -> Vec<Broken> {
        let mut out = Vec::new();
        let mut broke = |row: usize, at: String, message: String| {
            out.push(Broken {
                row,
                at,
                message,
                fields: Vec::new(),
            })
        };
        let n = rows.members.len();
        match &self.kind {
            Kind::Required(field) => {
                let column = rows.column(field);
                if column.is_some_and(|c| c.null_count() == 0) {
                    return out;
                }
                for (j, &row) in rows.members.iter().enumerate() {
                    let present = column.is_some_and(|c| c.is_valid(row as usize))
                        || rows.overflowed(row, field).is_some();
                    if !present {
                        broke(j, field_at(field), "required field is missing".into());
                    }
                }
            }
            Kind::Type(field, ty) => {
                // Values of the wrong kind were kept in `_overflow`.
                let members = match rows.overflow.is_empty() {
                    true => &[][..],
                    false => rows.members,
                };
                for (j, &row) in members.iter().enumerate() {
                    if let Some(v) = rows.overflowed(row, field) {
                        let found = crate::ingest::json_kind(v);
                        let message = match v.is_number()
                            && ty.column_kind() == Some(crate::schema::ColumnKind::Double)
                        {
                            true => format!("{} cannot be stored exactly as a number", shown(v)),
                            false => {
                                format!("expected {}, found {found} ({})", ty.described(), shown(v))
                            }
                        };
                        broke(j, field_at(field), message);
                    }
                }
                let Some(column) = rows.column(field) else {
                    return out;
                };
                match ty {
                    FieldType::Integer if column.data_type() == &DataType::Float64 => {
                        let values = column.as_primitive::<Float64Type>();
                        for (j, row) in rows.valid(values) {
                            let v = values.value(row as usize);
                            if v.fract() != 0.0 || !v.is_finite() {
                                broke(
                                    j,
                                    field_at(field),
                                    format!("expected an integer, found {}", number(v)),
                                );
                            }
                        }
                    }
                    FieldType::String | FieldType::Object | FieldType::Array
                        if column.data_type() == &DataType::Utf8 =>
                    {
                        let values = column.as_string::<i32>();
                        let nested = rows.nested.contains_key(field.as_str());
                        for (j, row) in rows.valid(values) {
                            // Most text columns hold only strings.
                            if !nested && *ty == FieldType::String {
                                break;
                            }
                            let text = values.value(row as usize);
                            let found = match rows.is_nested(row, field) {
                                false => FieldType::String,
                                true if text.starts_with('[') => FieldType::Array,
                                true => FieldType::Object,
                            };
                            if found != *ty {
                                let value = match found {
                                    FieldType::String => {
                                        format!(" ({})", shown(&Value::from(text)))
                                    }
                                    _ => String::new(),
                                };
                                broke(
                                    j,
                                    field_at(field),
                                    format!(
                                        "expected {}, found {}{value}",
                                        ty.described(),
                                        found.described()
                                    ),
                                );
                            }
                        }
                    }
                    _ => {}
                }
            }
            Kind::Min {
                field,
                bound,
                exclusive,
            }
            | Kind::Max {
                field,
                bound,
                exclusive,
            } => {
                let Some(values) = rows
                    .column(field)
                    .and_then(|c| c.as_primitive_opt::<Float64Type>())
                else {
                    return out;
                };
                let is_min = matches!(self.kind, Kind::Min { .. });
                // The whole column within the bound (the usual case): no
                // member breaks it.
                let within =
                    rows.range(field, values)
                        .is_none_or(|(lo, hi)| match (is_min, *exclusive) {
                            (true, false) => lo >= *bound,
                            (true, true) => lo > *bound,
                            (false, false) => hi <= *bound,
                            (false, true) => hi < *bound,
                        });
                if within {
                    return out;
                }
                for (j, row) in rows.valid(values) {
                    let v = values.value(row as usize);
                    let message = match (is_min, exclusive) {
                        (true, false) if v < *bound => {
                            format!("{} is below the minimum {}", number(v), number(*bound))
                        }
                        (true, true) if v <= *bound => {
                            format!("{} is not above {}", number(v), number(*bound))
                        }
                        (false, false) if v > *bound => {
                            format!("{} is above the maximum {}", number(v), number(*bound))
                        }
                        (false, true) if v >= *bound => {
                            format!("{} is not below {}", number(v), number(*bound))
                        }
                        _ => continue,
                    };
                    broke(j, field_at(field), message);
                }
            }
            Kind::EnumText {
                field,
                values,
                shown: listed,
            } => {
                let Some(column) = rows.column(field).and_then(|c| c.as_string_opt::<i32>()) else {
                    return out;
                };
                for (j, row) in rows.valid(column) {
                    let v = column.value(row as usize);
                    if !values.contains(v) && !rows.is_nested(row, field) {
                        broke(
                            j,
                            field_at(field),
                            format!("{} is not one of {listed}", shown(&Value::from(v))),
                        );
                    }
                }
            }
            Kind::EnumNumber {
                field,
                values,
                shown: listed,
            } => {
                let Some(column) = rows
                    .column(field)
                    .and_then(|c| c.as_primitive_opt::<Float64Type>())
                else {
                    return out;
                };
                for (j, row) in rows.valid(column) {
                    let v = column.value(row as usize);
                    if !values.contains(&v) {
                        broke(
                            j,
                            field_at(field),
                            format!("{} is not one of {listed}", number(v)),
                        );
                    }
                }
            }
            Kind::EnumBool {
                field,
                values,
                shown: listed,
            } => {
                let Some(column) = rows.column(field).and_then(|c| c.as_boolean_opt()) else {
                    return out;
                };
                for (j, row) in rows.valid(column) {
                    let v = column.value(row as usize);
                    if !values.contains(&v) {
                        broke(j, field_at(field), format!("{v} is not one of {listed}"));
                    }
                }
            }
            Kind::Pattern { field, regex } => {
                let Some(column) = rows.column(field).and_then(|c| c.as_string_opt::<i32>()) else {
                    return out;
                };
                for (j, row) in rows.valid(column) {
                    let v = column.value(row as usize);
                    if !regex.is_match(v) && !rows.is_nested(row, field) {
                        broke(
                            j,
                            field_at(field),
                            format!(
                                "{} does not match {}",
                                shown(&Value::from(v)),
                                regex.as_str()
                            ),
                        );
                    }
                }
            }
            Kind::Length { field, min, max } => {
                let Some(column) = rows.column(field).and_then(|c| c.as_string_opt::<i32>()) else {
                    return out;
                };
                for (j, row) in rows.valid(column) {
                    let v = column.value(row as usize);
                    // Bytes bound characters from above: most values need
                    // no count.
                    let long = max.is_some_and(|m| v.len() > m as usize);
                    let short = min.is_some_and(|m| v.len() < 4 * m as usize);
                    if (!long && !short) || rows.is_nested(row, field) {
                        continue;
                    }
                    let chars = v.chars().count() as u64;
                    let message = match (min, max) {
                        (_, Some(m)) if chars > u64::from(*m) => {
                            format!("is {chars} characters long; the most is {m}")
                        }
                        (Some(m), _) if chars < u64::from(*m) => {
                            format!("is {chars} characters long; the least is {m}")
                        }
                        _ => continue,
                    };
                    broke(j, field_at(field), message);
                }
            }
            Kind::Additional => {
                let schema = rows.batch.schema();
                for (field, column) in schema.fields().iter().zip(rows.batch.columns()) {
                    let name = field.name();
                    if crate::schema::FIXED_COLUMNS.contains(&name.as_str())
                        || crate::schema::governed::RESERVED_COLUMNS.contains(&name.as_str())
                        || rows.declared.contains(name)
                        || column.null_count() == column.len()
                    {
                        continue;
                    }
                    for (j, _) in rows.valid(column) {
                        let message = format!("field {name:?} is not declared in {}", rows.label);
                        broke(j, field_at(name), message);
                    }
                }
                let members = match rows.overflow.is_empty() {
                    true => &[][..],
                    false => rows.members,
                };
                for (j, row) in members.iter().enumerate() {
                    let Some(extra) = rows.overflow.get(row) else {
                        continue;
                    };
                    for name in extra.keys().filter(|k| !rows.declared.contains(*k)) {
                        let message = format!("field {name:?} is not declared in {}", rows.label);
                        broke(j, field_at(name), message);
                    }
                }
            }
            Kind::Sql {
                expr,
                check,
                message,
                fields,
            } => {
                let message = message
                    .clone()
                    .unwrap_or_else(|| format!("check failed: {check}"));
                let input = rows
                    .sql_batch
                    .get_or_init(|| sql_input(rows).map_err(|e| e.to_string()));
                let evaluated = match input {
                    Ok(input) => expr
                        .evaluate(input)
                        .and_then(|v| v.into_array(input.num_rows()))
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.clone()),
                };
                let failed = match evaluated {
                    Ok(result) => match result.as_boolean_opt() {
                        Some(ok) => failing(ok),
                        None => (0..n)
                            .map(|r| (r, "the check is not a boolean".to_string()))
                            .collect(),
                    },
                    Err(e) => (0..n)
                        .map(|r| (r, format!("the check could not be evaluated: {e}")))
                        .collect(),
                };
                for (row, why) in failed {
                    out.push(Broken {
                        row,
                        at: ".payload".into(),
                        message: if why.is_empty() { message.clone() } else { why },
                        fields: fields.clone(),
                    });
                }
            }
        }
        out
    }
}

/// The rows where `ok` is false (null passes), with no reason of their
/// own.
fn failing(ok: &BooleanArray) -> Vec<(usize, String)> {
    if ok.true_count() + ok.null_count() == ok.len() {
        return Vec::new();
    }
    (0..ok.len())
        .filter(|r| ok.is_valid(*r) && !ok.value(*r))
        .map(|r| (r, String::new()))
        .collect()
}

/// The columns SQL rules may read, for the rows: fixed ones, then the
/// declared fields (null where the batch has none of the declared kind).
/// Only the columns the rules read are taken; the others are null.
fn sql_input(rows: &Rows<'_>) -> datafusion::error::Result<RecordBatch> {
    let reads = rows.sql_reads;
    let n = rows.members.len();
    let columns = rows
        .sql_input
        .fields()
        .iter()
        .map(|f| match rows.batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() && reads.contains(f.name()) => {
                match rows.take {
                    None => Ok(c.clone()),
                    Some(take) => arrow::compute::take(c, take, None),
                }
            }
            _ => Ok(arrow::array::new_null_array(f.data_type(), n)),
        })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    Ok(RecordBatch::try_new(rows.sql_input.clone(), columns)?)
}

/// The `_overflow` objects of a built batch, by row (only rows that have
/// one).
pub(super) fn overflow_of(batch: &RecordBatch) -> HashMap<u32, Map<String, Value>> {
    let Some(column) = batch
        .column_by_name(crate::schema::OVERFLOW)
        .and_then(|c| c.as_string_opt::<i32>())
    else {
        return HashMap::new();
    };
    if column.null_count() == column.len() {
        return HashMap::new();
    }
    let column: &StringArray = column;
    (0..column.len())
        .filter(|r| column.is_valid(*r))
        .filter_map(|r| match serde_json::from_str(column.value(r)) {
            Ok(Value::Object(map)) => Some((r as u32, map)),
            _ => None,
        })
        .collect()
}
