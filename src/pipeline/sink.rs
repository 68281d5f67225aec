//! A pipeline's output rows as events for its sink table.
//!
//! Each row's `event_id` is made from the pipeline's id, the position of
//! the source event the row comes from and the row's place among that
//! event's outputs. Running the same source events again makes the same
//! ids, so a micro-batch written again after a crash (its outputs stored,
//! its progress not) is answered as duplicates, not stored twice.
//!
//! `event_type`, `entity_id` and `timestamp` come from their columns; the
//! other columns, but those the sink sets itself, are the payload, with
//! the fields of the source's `_overflow` object merged in. Nulls are
//! left out, as a JSON body would leave them.

use super::compile::RESERVED;
use crate::ingest::{Event, ExpectedVersion};
use crate::schema;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, TimeUnit};
use serde_json::{Map, Number, Value};

/// Events made from output rows, and the rows that could not be events.
#[derive(Debug, Default)]
pub struct Converted {
    pub events: Vec<Event>,
    /// Rows without an event type, entity or timestamp.
    pub invalid: u64,
    /// Why the first invalid row was.
    pub first_problem: Option<String>,
}

/// Numbers output rows within their source event, across the batches of
/// one micro-batch (a source event's rows are never split between
/// micro-batches: an operator's output for it comes whole).
#[derive(Debug, Default)]
pub struct Ordinals {
    last: Option<u64>,
    next: u64,
}

impl Ordinals {
    fn of(&mut self, position: u64) -> u64 {
        if self.last != Some(position) {
            self.last = Some(position);
            self.next = 0;
        }
        let n = self.next;
        self.next += 1;
        n
    }
}

/// The id of the `ordinal`th output of the source event at `position`.
pub fn output_id(pipeline: &uuid::Uuid, position: u64, ordinal: u64) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(pipeline.as_bytes());
    hasher.update(&position.to_le_bytes());
    hasher.update(&ordinal.to_le_bytes());
    let hash = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.as_bytes()[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// Turns `batch` into events (see the module's notes).
pub fn to_events(
    batch: &RecordBatch,
    pipeline: &uuid::Uuid,
    json_columns: &[String],
    ordinals: &mut Ordinals,
    out: &mut Converted,
) -> Result<(), String> {
    let schema = batch.schema();
    let column = |name: &str| batch.column_by_name(name);
    let position = column(schema::POSITION).ok_or("the output has no position")?;
    let position = arrow::compute::cast(position, &DataType::UInt64).map_err(|e| e.to_string())?;
    let position = position.as_primitive::<arrow::datatypes::UInt64Type>();
    let text = |name: &str| -> Result<Option<arrow::array::ArrayRef>, String> {
        column(name)
            .map(|c| arrow::compute::cast(c, &DataType::Utf8).map_err(|e| e.to_string()))
            .transpose()
    };
    let event_type = text(schema::EVENT_TYPE)?;
    let entity_id = text(schema::ENTITY_ID)?;
    let timestamp = column(schema::TIMESTAMP)
        .map(|c| {
            arrow::compute::cast(c, &DataType::Timestamp(TimeUnit::Microsecond, None))
                .map_err(|e| e.to_string())
        })
        .transpose()?;
    let overflow = text(schema::OVERFLOW)?;
    let payload: Vec<(usize, &str, bool)> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            let n = f.name().as_str();
            !RESERVED.contains(&n)
                && n != schema::EVENT_TYPE
                && n != schema::ENTITY_ID
                && n != schema::TIMESTAMP
        })
        .map(|(i, f)| {
            (
                i,
                f.name().as_str(),
                json_columns.iter().any(|c| c == f.name()),
            )
        })
        .collect();
    for row in 0..batch.num_rows() {
        if position.is_null(row) {
            return Err("an output row has no source position".into());
        }
        let at = position.value(row);
        let ordinal = ordinals.of(at);
        let string = |a: &Option<arrow::array::ArrayRef>| {
            a.as_ref()
                .filter(|a| a.is_valid(row))
                .map(|a| a.as_string::<i32>().value(row).to_string())
        };
        let ts = timestamp.as_ref().filter(|a| a.is_valid(row)).map(|a| {
            a.as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                .value(row)
        });
        let (Some(event_type), Some(entity_id), Some(ts)) =
            (string(&event_type), string(&entity_id), ts)
        else {
            out.invalid += 1;
            out.first_problem.get_or_insert_with(|| {
                format!(
                    "the output of source position {at} has no event_type, entity_id or timestamp"
                )
            });
            continue;
        };
        let mut fields = Map::new();
        if let Some(Value::Object(extra)) =
            string(&overflow).and_then(|t| serde_json::from_str::<Value>(&t).ok())
        {
            fields.extend(extra);
        }
        for (i, name, json) in &payload {
            let value = value_at(batch.column(*i).as_ref(), row, *json);
            if !value.is_null() {
                fields.insert((*name).to_string(), value);
            }
        }
        out.events.push(Event {
            event_id: Some(output_id(pipeline, at, ordinal)),
            event_type,
            entity_id,
            timestamp: Some(ts),
            payload: fields,
            expected_version: ExpectedVersion::Any,
            schema_version: None,
        });
    }
    Ok(())
}

/// The JSON value of `array[row]`: numbers, booleans and text as such
/// (text as the JSON it holds when `json`), lists as arrays, structs as
/// objects, anything else as its display text. A float that JSON cannot
/// hold (NaN, an infinity) is null.
fn value_at(array: &dyn Array, row: usize, json: bool) -> Value {
    use arrow::datatypes as t;
    if array.is_null(row) {
        return Value::Null;
    }
    let float = |v: f64| Number::from_f64(v).map_or(Value::Null, Value::Number);
    match array.data_type() {
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int8 => array.as_primitive::<t::Int8Type>().value(row).into(),
        DataType::Int16 => array.as_primitive::<t::Int16Type>().value(row).into(),
        DataType::Int32 => array.as_primitive::<t::Int32Type>().value(row).into(),
        DataType::Int64 => array.as_primitive::<t::Int64Type>().value(row).into(),
        DataType::UInt8 => array.as_primitive::<t::UInt8Type>().value(row).into(),
        DataType::UInt16 => array.as_primitive::<t::UInt16Type>().value(row).into(),
        DataType::UInt32 => array.as_primitive::<t::UInt32Type>().value(row).into(),
        DataType::UInt64 => array.as_primitive::<t::UInt64Type>().value(row).into(),
        DataType::Float32 => float(array.as_primitive::<t::Float32Type>().value(row) as f64),
        DataType::Float64 => float(array.as_primitive::<t::Float64Type>().value(row)),
        DataType::Utf8 => text_value(array.as_string::<i32>().value(row), json),
        DataType::LargeUtf8 => text_value(array.as_string::<i64>().value(row), json),
        DataType::Utf8View => text_value(array.as_string_view().value(row), json),
        DataType::List(_) => {
            let items = array.as_list::<i32>().value(row);
            Value::Array(
                (0..items.len())
                    .map(|i| value_at(items.as_ref(), i, false))
                    .collect(),
            )
        }
        DataType::LargeList(_) => {
            let items = array.as_list::<i64>().value(row);
            Value::Array(
                (0..items.len())
                    .map(|i| value_at(items.as_ref(), i, false))
                    .collect(),
            )
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            Value::Object(
                fields
                    .iter()
                    .zip(s.columns())
                    .map(|(f, c)| (f.name().clone(), value_at(c.as_ref(), row, false)))
                    .collect(),
            )
        }
        _ => {
            let options = arrow::util::display::FormatOptions::default();
            match arrow::util::display::ArrayFormatter::try_new(array, &options) {
                Ok(f) => Value::String(f.value(row).to_string()),
                Err(_) => Value::Null,
            }
        }
    }
}

fn text_value(text: &str, json: bool) -> Value {
    match json {
        true => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string())),
        false => Value::String(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_depend_on_pipeline_position_and_ordinal_only() {
        let a = uuid::Uuid::now_v7();
        let b = uuid::Uuid::now_v7();
        assert_eq!(output_id(&a, 7, 0), output_id(&a, 7, 0));
        assert_ne!(output_id(&a, 7, 0), output_id(&a, 7, 1));
        assert_ne!(output_id(&a, 7, 0), output_id(&a, 8, 0));
        assert_ne!(output_id(&a, 7, 0), output_id(&b, 7, 0));
        assert!(output_id(&a, 7, 0).parse::<uuid::Uuid>().is_ok());
    }

    #[test]
    fn ordinals_restart_at_each_source_event() {
        let mut o = Ordinals::default();
        let got: Vec<u64> = [3, 3, 3, 5, 6, 6].iter().map(|p| o.of(*p)).collect();
        assert_eq!(got, vec![0, 1, 2, 0, 0, 1]);
    }
}
