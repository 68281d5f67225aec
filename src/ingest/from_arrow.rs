//! Arrow record batches (Flight SQL bulk ingest) → event batches.
//!
//! An incoming batch is a flat table of events: `event_type` and
//! `entity_id` (strings, required), `timestamp`, `event_id` and
//! `expected_version` (optional), and any other column is a payload field. A struct column named
//! `payload` is unfolded into payload fields, so the JSON shape works too.
//! Payload columns go through the same [`ColumnRegistry`] as JSON fields:
//! numbers become `DOUBLE`, booleans `BOOLEAN`, strings, dates and times
//! `VARCHAR`, lists and structs their JSON text; a column whose type
//! conflicts with the table's goes to `_overflow`. The whole batch is
//! checked before anything is logged.

use super::parse::{ExpectedVersion, MAX_ID_LEN, in_range, parse_expected};
use super::{Error, Facts, MAX_CELLS, MICROS_PER_DAY, Result, check_days, event_batch};
use crate::schema::{self, ColumnKind, ColumnRegistry, Placement, RegistryMark};
use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray, StringBuilder,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit, UInt64Type};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::sync::Arc;

/// Columns set by the server: values sent for them are ignored, so that a
/// table read out of AllSource can be written back as it is.
const SERVER_COLUMNS: [&str; 4] = [
    schema::INGESTED_AT,
    schema::EVENT_DATE,
    schema::POSITION,
    schema::VERSION,
];

/// An incoming batch laid out as an event batch.
#[derive(Debug)]
pub struct Converted {
    /// Fixed columns, then payload columns, like `build_batch`'s output.
    pub batch: RecordBatch,
    /// Which rows carry the client's own `event_id` (to be deduplicated);
    /// `None` when the batch had no `event_id` column.
    pub client_ids: Option<Vec<bool>>,
    /// What each row requires of its entity's stream; empty when the
    /// batch had no `expected_version` column.
    pub expected: Vec<ExpectedVersion>,
    /// What the batch's columns no longer show.
    pub facts: Facts,
    /// The registry before and after the batch placed its columns.
    pub placed: (RegistryMark, RegistryMark),
}

/// The column of optimistic-concurrency requirements.
const EXPECTED_VERSION: &str = "expected_version";

/// The `expected_version` column's requirements, one per row: an integer
/// column (a version, 0 or more) or a string one (a version, `any` or
/// `no_stream`); null is `any`.
fn expected_versions(array: &ArrayRef, first_row: u64) -> Result<Vec<ExpectedVersion>> {
    let cell = |row: usize, value: Value| {
        parse_expected(value).map_err(|reason| row_error(first_row + row as u64, reason))
    };
    let data_type = array.data_type();
    if data_type.is_integer() {
        let values = cast(array, &DataType::Int64)?;
        let values = values.as_primitive::<Int64Type>();
        return (0..values.len())
            .map(|row| match values.is_valid(row) {
                true => cell(row, Value::from(values.value(row))),
                false => Ok(ExpectedVersion::Any),
            })
            .collect();
    }
    if is_string_type(data_type) {
        let values = as_utf8(EXPECTED_VERSION, array)?;
        return (0..values.len())
            .map(|row| match values.is_valid(row) {
                true => {
                    let text = values.value(row);
                    let value = match text.parse::<u64>() {
                        Ok(n) => Value::from(n),
                        Err(_) => Value::from(text),
                    };
                    cell(row, value)
                }
                false => Ok(ExpectedVersion::Any),
            })
            .collect();
    }
    Err(column_error(
        EXPECTED_VERSION,
        format!(
            "must be an integer column, or a string one (a version, \"any\" or \"no_stream\"); it is {data_type}"
        ),
    ))
}

/// The `schema_version` column: an integer one, each value from 1 (null:
/// the latest).
fn schema_versions(array: &ArrayRef, first_row: u64) -> Result<ArrayRef> {
    let name = schema::governed::SCHEMA_VERSION;
    if !array.data_type().is_integer() {
        return Err(column_error(
            name,
            format!("must be an integer column; it is {}", array.data_type()),
        ));
    }
    let values = cast(array, &DataType::Int64)?;
    let ints = values.as_primitive::<Int64Type>();
    for row in 0..ints.len() {
        if ints.is_valid(row) && !(1..=i64::from(u32::MAX)).contains(&ints.value(row)) {
            return Err(row_error(
                first_row + row as u64,
                format!(
                    "column {name:?} must hold versions from 1; found {}",
                    ints.value(row)
                ),
            ));
        }
    }
    Ok(values)
}

fn column_error(column: &str, reason: impl Into<String>) -> Error {
    Error::InvalidColumn {
        column: column.to_string(),
        reason: reason.into(),
    }
}

fn row_error(row: u64, reason: impl Into<String>) -> Error {
    Error::InvalidEvent {
        index: row as usize,
        line: None,
        reason: reason.into(),
    }
}

fn is_string_type(dt: &DataType) -> bool {
    match dt {
        DataType::Dictionary(_, v) => v.is_string(),
        other => other.is_string(),
    }
}

/// The nested types whose values are kept as their JSON text.
fn is_json_text(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..)
            | DataType::Struct(_)
            | DataType::Map(..)
    )
}

/// A string-like column as plain `Utf8`.
fn as_utf8(name: &str, array: &ArrayRef) -> Result<StringArray> {
    if !is_string_type(array.data_type()) {
        return Err(column_error(
            name,
            format!("must be a string column, found {}", array.data_type()),
        ));
    }
    let array = cast(array, &DataType::Utf8)?;
    Ok(array.as_string::<i32>().clone())
}

/// Checks an id-like string column: present where `required`, never
/// empty, at most [`MAX_ID_LEN`] bytes.
fn check_ids(name: &str, ids: &StringArray, first_row: u64, required: bool) -> Result<()> {
    let offsets = ids.value_offsets();
    for i in 0..ids.len() {
        if ids.is_null(i) {
            if required {
                return Err(row_error(
                    first_row + i as u64,
                    format!("column {name:?} is null; it is required (a non-empty string)"),
                ));
            }
            continue;
        }
        let len = (offsets[i + 1] - offsets[i]) as usize;
        if len == 0 {
            return Err(row_error(
                first_row + i as u64,
                format!("column {name:?} must not be empty"),
            ));
        }
        if len > MAX_ID_LEN {
            return Err(row_error(
                first_row + i as u64,
                format!("column {name:?} is {len} bytes long; the limit is {MAX_ID_LEN}"),
            ));
        }
    }
    Ok(())
}

/// Event times in epoch microseconds: Arrow timestamps (a zone-less one is
/// taken as UTC), dates, integer epoch milliseconds (as in JSON) or
/// RFC 3339 text. Nulls are `now`.
fn timestamps(array: Option<&ArrayRef>, rows: usize, first_row: u64, now: i64) -> Result<Vec<i64>> {
    let Some(array) = array else {
        return Ok(vec![now; rows]);
    };
    let name = schema::TIMESTAMP;
    let scaled = |factor: i64, divisor: i64| -> Result<Vec<i64>> {
        let values = cast(array, &DataType::Int64)?;
        let values = values.as_primitive::<Int64Type>();
        let mut out = Vec::with_capacity(rows);
        for i in 0..rows {
            if values.is_null(i) {
                out.push(now);
                continue;
            }
            let us = values
                .value(i)
                .checked_mul(factor)
                .map(|v| v.div_euclid(divisor))
                .unwrap_or(i64::MAX);
            let us = in_range(us)
                .map_err(|reason| row_error(first_row + i as u64, reason))?
                .unwrap_or(now);
            out.push(us);
        }
        Ok(out)
    };
    match array.data_type() {
        DataType::Timestamp(unit, _) => match unit {
            TimeUnit::Second => scaled(1_000_000, 1),
            TimeUnit::Millisecond => scaled(1_000, 1),
            TimeUnit::Microsecond => scaled(1, 1),
            TimeUnit::Nanosecond => scaled(1, 1_000),
        },
        DataType::Date32 => scaled(MICROS_PER_DAY, 1),
        DataType::Date64 => scaled(1_000, 1),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => scaled(1_000, 1),
        dt if is_string_type(dt) => {
            let text = as_utf8(name, array)?;
            let mut out = Vec::with_capacity(rows);
            for i in 0..rows {
                if text.is_null(i) {
                    out.push(now);
                    continue;
                }
                let s = text.value(i);
                let us = chrono::DateTime::parse_from_rfc3339(s)
                    .map_err(|e| {
                        row_error(
                            first_row + i as u64,
                            format!(
                                "column \"timestamp\": {:?} is not an RFC 3339 time ({e})",
                                s.chars().take(64).collect::<String>()
                            ),
                        )
                    })?
                    .timestamp_micros();
                let us = in_range(us).map_err(|reason| row_error(first_row + i as u64, reason))?;
                out.push(us.unwrap_or(now));
            }
            Ok(out)
        }
        other => Err(column_error(
            name,
            format!(
                "has type {other}; send an Arrow timestamp, a date, integer epoch milliseconds or RFC 3339 text"
            ),
        )),
    }
}

/// The kind of column a payload column's Arrow type makes, `None` for the
/// null type (which creates nothing, like JSON nulls).
fn kind_of_type(name: &str, dt: &DataType) -> Result<Option<ColumnKind>> {
    Ok(match dt {
        DataType::Null => None,
        DataType::Boolean => Some(ColumnKind::Boolean),
        dt if dt.is_numeric() => Some(ColumnKind::Double),
        dt if dt.is_string() || is_json_text(dt) => Some(ColumnKind::Text),
        DataType::Date32
        | DataType::Date64
        | DataType::Timestamp(..)
        | DataType::Time32(_)
        | DataType::Time64(_) => Some(ColumnKind::Text),
        DataType::Dictionary(_, value) => return kind_of_type(name, value),
        other => {
            return Err(column_error(
                name,
                format!(
                    "has type {other}, which an event table cannot hold; send numbers, booleans, strings, dates, times, lists or structs"
                ),
            ));
        }
    })
}

/// Each row's value as JSON (`None` for nulls), through arrow's JSON
/// writer. Used for nested values and for values bound for `_overflow`.
fn json_values(array: &ArrayRef) -> Result<Vec<Option<Value>>> {
    let field = Field::new("v", array.data_type().clone(), true);
    let batch = RecordBatch::try_new(Arc::new(Schema::new(vec![field])), vec![array.clone()])?;
    let mut writer = arrow::json::LineDelimitedWriter::new(Vec::new());
    writer.write(&batch)?;
    writer.finish()?;
    let text = writer.into_inner();
    let mut out = Vec::with_capacity(array.len());
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let mut object: Map<String, Value> = serde_json::from_slice(line)
            .map_err(|e| Error::Arrow(arrow::error::ArrowError::JsonError(e.to_string())))?;
        out.push(object.remove("v").filter(|v| !v.is_null()));
    }
    out.resize(array.len(), None);
    Ok(out)
}

/// Largest integer a double holds exactly, as for JSON numbers.
const EXACT_LIMIT: f64 = 9_007_199_254_740_992.0;

/// A numeric column as doubles. 64-bit integers a double cannot hold
/// exactly are left null and returned as JSON numbers for `_overflow`.
fn to_doubles(array: &ArrayRef) -> Result<(ArrayRef, Vec<(usize, Value)>)> {
    let mut inexact = Vec::new();
    match array.data_type() {
        DataType::Int64 => {
            for (i, v) in array.as_primitive::<Int64Type>().iter().enumerate() {
                if let Some(v) = v.filter(|v| (*v as f64).abs() >= EXACT_LIMIT) {
                    inexact.push((i, Value::from(v)));
                }
            }
        }
        DataType::UInt64 => {
            for (i, v) in array.as_primitive::<UInt64Type>().iter().enumerate() {
                if let Some(v) = v.filter(|v| *v as f64 >= EXACT_LIMIT) {
                    inexact.push((i, Value::from(v)));
                }
            }
        }
        _ => {}
    }
    let doubles = cast(array, &DataType::Float64)?;
    if inexact.is_empty() {
        return Ok((doubles, inexact));
    }
    let doubles = doubles.as_primitive::<arrow::datatypes::Float64Type>();
    let mut values: Vec<Option<f64>> = doubles.iter().collect();
    for (i, _) in &inexact {
        values[*i] = None;
    }
    Ok((Arc::new(Float64Array::from(values)), inexact))
}

/// A column's values in the representation of its kind.
fn to_kind(array: &ArrayRef, kind: ColumnKind) -> Result<(ArrayRef, Vec<(usize, Value)>)> {
    match kind {
        ColumnKind::Double => to_doubles(array),
        ColumnKind::Boolean => Ok((cast(array, &DataType::Boolean)?, Vec::new())),
        ColumnKind::Integer => Ok((cast(array, &DataType::Int64)?, Vec::new())),
        ColumnKind::Text => {
            if !is_json_text(array.data_type()) {
                return Ok((cast(array, &DataType::Utf8)?, Vec::new()));
            }
            let text: StringArray = json_values(array)?
                .into_iter()
                .map(|v| v.map(|v| v.to_string()))
                .collect();
            Ok((Arc::new(text), Vec::new()))
        }
    }
}

/// The payload columns of `batch`: every column but the fixed ones, with
/// a struct `payload` column unfolded.
fn payload_columns(batch: &RecordBatch) -> Result<Vec<(String, ArrayRef)>> {
    let mut out = Vec::new();
    for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
        let name = field.name().as_str();
        if [
            schema::EVENT_ID,
            schema::EVENT_TYPE,
            schema::ENTITY_ID,
            schema::TIMESTAMP,
            schema::OVERFLOW,
            EXPECTED_VERSION,
            schema::governed::SCHEMA_VERSION,
        ]
        .contains(&name)
            || SERVER_COLUMNS.contains(&name)
        {
            continue;
        }
        if name == "payload"
            && let DataType::Struct(_) = array.data_type()
        {
            let parent = array.as_struct();
            for (child, values) in parent.fields().iter().zip(parent.columns()) {
                // A null payload row makes every field of that row null.
                let values = match parent.nulls() {
                    Some(nulls) if nulls.null_count() > 0 => {
                        let combined =
                            arrow::buffer::NullBuffer::union(Some(nulls), values.nulls());
                        arrow::array::make_array(
                            values.to_data().into_builder().nulls(combined).build()?,
                        )
                    }
                    _ => values.clone(),
                };
                out.push((child.name().clone(), values));
            }
            continue;
        }
        out.push((name.to_string(), array.clone()));
    }
    let mut seen = HashSet::new();
    for (name, _) in &out {
        if !seen.insert(name.as_str()) {
            return Err(column_error(name, "appears twice"));
        }
    }
    Ok(out)
}

/// The client's `_overflow` column: JSON objects as text, kept per row.
fn incoming_overflow(
    batch: &RecordBatch,
    first_row: u64,
) -> Result<Vec<Option<Map<String, Value>>>> {
    let rows = batch.num_rows();
    let Some(array) = batch.column_by_name(schema::OVERFLOW) else {
        return Ok(vec![None; rows]);
    };
    let text = as_utf8(schema::OVERFLOW, array)?;
    let mut out = Vec::with_capacity(rows);
    for i in 0..rows {
        if text.is_null(i) {
            out.push(None);
            continue;
        }
        match serde_json::from_str::<Value>(text.value(i)) {
            Ok(Value::Object(map)) => out.push(Some(map)),
            _ => {
                return Err(row_error(
                    first_row + i as u64,
                    "column \"_overflow\" must hold a JSON object as text",
                ));
            }
        }
    }
    Ok(out)
}

/// A fresh UUIDv7 per row where the client gave no id.
fn event_ids(given: Option<&StringArray>, rows: usize) -> StringArray {
    if let Some(given) = given
        && given.null_count() == 0
    {
        return given.clone();
    }
    let mut b = StringBuilder::with_capacity(rows, rows * 36);
    let mut buf = [0u8; 36];
    let mut fresh = crate::ids::EventIds::new();
    for i in 0..rows {
        match given {
            Some(g) if g.is_valid(i) => b.append_value(g.value(i)),
            _ => {
                let id = fresh.next_id();
                b.append_value(id.hyphenated().encode_lower(&mut buf));
            }
        }
    }
    b.finish()
}

/// Lays out `batch` as an event batch, registering new payload columns
/// with `registry`. `first_row` numbers rows in errors (the row's position
/// in the whole upload); `now` is the ingest time in epoch microseconds.
pub fn convert(
    batch: &RecordBatch,
    registry: &parking_lot::Mutex<ColumnRegistry>,
    now: i64,
    first_row: u64,
) -> Result<Converted> {
    let rows = batch.num_rows();
    if rows == 0 {
        return Err(Error::Empty);
    }
    let required = |name: &str| -> Result<StringArray> {
        let array = batch.column_by_name(name).ok_or_else(|| {
            column_error(
                name,
                format!(
                    "is required (a string column); the batch has {}",
                    batch
                        .schema()
                        .fields()
                        .iter()
                        .map(|f| format!("{:?}", f.name()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        let ids = as_utf8(name, array)?;
        check_ids(name, &ids, first_row, true)?;
        Ok(ids)
    };
    let event_type = required(schema::EVENT_TYPE)?;
    let entity_id = required(schema::ENTITY_ID)?;
    let given_ids = match batch.column_by_name(schema::EVENT_ID) {
        Some(array) => {
            let ids = as_utf8(schema::EVENT_ID, array)?;
            check_ids(schema::EVENT_ID, &ids, first_row, false)?;
            Some(ids)
        }
        None => None,
    };
    let times = timestamps(
        batch.column_by_name(schema::TIMESTAMP),
        rows,
        first_row,
        now,
    )?;
    check_days(&times)?;
    let expected = match batch.column_by_name(EXPECTED_VERSION) {
        Some(array) => expected_versions(array, first_row)?,
        None => Vec::new(),
    };
    let declared = match batch.column_by_name(schema::governed::SCHEMA_VERSION) {
        Some(array) => Some(schema_versions(array, first_row)?),
        None => None,
    };
    let payload = payload_columns(batch)?;
    let cells = rows.saturating_mul(payload.len() + schema::FIXED_COLUMNS.len());
    if cells > MAX_CELLS {
        return Err(Error::TooLarge(format!(
            "{rows} rows × {} payload columns is more than {MAX_CELLS} values; send smaller batches",
            payload.len()
        )));
    }
    let kinds = payload
        .iter()
        .map(|(name, array)| kind_of_type(name, array.data_type()))
        .collect::<Result<Vec<_>>>()?;
    let (placements, placed, governed) = {
        let mut reg = registry.lock();
        let before = reg.mark();
        let placements: Vec<Placement> = payload
            .iter()
            .zip(&kinds)
            .map(|((name, _), kind)| reg.place(name, *kind))
            .collect();
        (placements, (before, reg.mark()), reg.governed())
    };
    let mut facts = Facts::default();

    let mut overflow = incoming_overflow(batch, first_row)?;
    let mut fields = schema::fixed_fields();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (((name, array), kind), placement) in payload.iter().zip(&kinds).zip(&placements) {
        let mut to_overflow = |row: usize, v: Value| {
            overflow[row]
                .get_or_insert_with(Map::new)
                .insert(name.clone(), v);
        };
        match placement {
            Placement::Column(column) if Some(*column) == *kind => {
                if is_json_text(array.data_type()) {
                    let rows = (0..rows).filter(|r| array.is_valid(*r)).map(|r| r as u32);
                    facts.nested.insert(name.clone(), rows.collect());
                }
                let (values, inexact) = to_kind(array, *column)?;
                for (row, v) in inexact {
                    to_overflow(row, v);
                }
                fields.push(Field::new(name, column.data_type(), true));
                columns.push(values);
            }
            Placement::Column(column) => {
                // The table already has this column with another type:
                // the values go to `_overflow`, as JSON values would.
                for (row, v) in json_values(array)?.into_iter().enumerate() {
                    if let Some(v) = v {
                        to_overflow(row, v);
                    }
                }
                fields.push(Field::new(name, column.data_type(), true));
                columns.push(arrow::array::new_null_array(&column.data_type(), rows));
            }
            Placement::Overflow => {
                for (row, v) in json_values(array)?.into_iter().enumerate() {
                    if let Some(v) = v {
                        to_overflow(row, v);
                    }
                }
            }
        }
    }

    // A governed table keeps the schema version each row was written
    // with: the writer's, here; its rules' check fills in the rest.
    if governed {
        fields.push(Field::new(
            schema::governed::SCHEMA_VERSION,
            DataType::Int64,
            true,
        ));
        columns.push(match declared {
            Some(d) => d,
            None => arrow::array::new_null_array(&DataType::Int64, rows),
        });
    }
    let client_ids = given_ids
        .as_ref()
        .map(|ids| (0..rows).map(|i| ids.is_valid(i)).collect::<Vec<bool>>());
    let batch = event_batch(
        [
            Arc::new(event_ids(given_ids.as_ref(), rows)),
            Arc::new(event_type),
            Arc::new(entity_id),
        ],
        times,
        now,
        overflow,
        fields,
        columns,
    )?;
    Ok(Converted {
        batch,
        client_ids,
        expected,
        facts,
        placed,
    })
}

#[cfg(test)]
#[path = "from_arrow_tests.rs"]
mod tests;
