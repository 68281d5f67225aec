//! The types columns have in queries, and batches reshaped to a schema.
//!
//! Stored and buffered batches keep strings as `Utf8`; queries read them
//! as `Utf8View`, which is what DataFusion's Parquet reader produces and is
//! fastest with. A table's batches may also predate some of its columns.
//! [`adapt_batch`] bridges both: the flush uses it to bring buffered
//! batches to the table's current schema, and the query layer to bring them
//! to the query schema.

use super::{ColumnKind, FIXED_COLUMNS, OVERFLOW};
use arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions, StringBuilder, new_null_array,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use arrow::error::ArrowError;
use serde_json::{Map, Value};
use std::sync::Arc;

/// The type a column has in queries. Strings are `Utf8View`, which is what
/// the Delta scan reads Parquet strings as, and what DataFusion is fastest
/// with.
pub fn query_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Utf8 | DataType::LargeUtf8 => DataType::Utf8View,
        other => other.clone(),
    }
}

/// The query schema for a stored schema.
pub fn query_schema(stored: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        stored
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), query_type(f.data_type()), f.is_nullable()))
            .collect::<Vec<_>>(),
    ))
}

/// Reshapes `batch` to `target`: columns by name, cast where the type
/// differs, all-null where the batch lacks the column (it predates it).
pub fn adapt_batch(batch: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let columns = target
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(col) if col.data_type() == field.data_type() => Ok(col.clone()),
            Some(col) => cast(col, field.data_type()),
            None => Ok(new_null_array(field.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new_with_options(
        target.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
}

/// Moves the payload columns of `batch` that `target` does not have with
/// the same kind (a column the store gave another type, or another case,
/// when several writers placed the same new field at once) into each
/// row's `_overflow` object, where values that fit no column go. Returns
/// the batch itself when every column fits.
pub fn overflow_misfits(
    batch: &RecordBatch,
    target: &SchemaRef,
) -> Result<RecordBatch, ArrowError> {
    let fits = |field: &Field| {
        FIXED_COLUMNS.contains(&field.name().as_str())
            || target.field_with_name(field.name()).is_ok_and(|t| {
                ColumnKind::from_data_type(t.data_type())
                    == ColumnKind::from_data_type(field.data_type())
            })
    };
    let schema = batch.schema();
    let misfits: Vec<usize> = (0..schema.fields().len())
        .filter(|&i| !fits(schema.field(i)))
        .collect();
    if misfits.is_empty() {
        return Ok(batch.clone());
    }
    let overflow_at = schema.index_of(OVERFLOW)?;
    let existing = cast(batch.column(overflow_at), &DataType::Utf8)?;
    let existing = existing.as_string::<i32>();
    let mut objects = StringBuilder::new();
    for row in 0..batch.num_rows() {
        let mut object = match existing.is_valid(row) {
            true => match serde_json::from_str::<Value>(existing.value(row)) {
                Ok(Value::Object(map)) => map,
                _ => Map::new(),
            },
            false => Map::new(),
        };
        for &i in &misfits {
            let value = json_value(batch.column(i), row);
            if !value.is_null() {
                object.insert(schema.field(i).name().clone(), value);
            }
        }
        match object.is_empty() {
            true => objects.append_null(),
            false => objects.append_value(Value::Object(object).to_string()),
        }
    }
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (i, field) in schema.fields().iter().enumerate() {
        if misfits.contains(&i) {
            continue;
        }
        if i == overflow_at {
            fields.push(Arc::new(Field::new(OVERFLOW, DataType::Utf8, true)));
            columns.push(Arc::new(objects.finish()) as ArrayRef);
            continue;
        }
        fields.push(field.clone());
        columns.push(batch.column(i).clone());
    }
    RecordBatch::try_new_with_options(
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
}

/// The JSON value of one cell of a payload column.
fn json_value(column: &ArrayRef, row: usize) -> Value {
    if column.is_null(row) {
        return Value::Null;
    }
    if let Some(a) = column.as_primitive_opt::<Float64Type>() {
        return serde_json::Number::from_f64(a.value(row)).map_or(Value::Null, Value::Number);
    }
    if let Some(a) = column.as_primitive_opt::<Int64Type>() {
        return Value::from(a.value(row));
    }
    if let Some(a) = column.as_boolean_opt() {
        return Value::Bool(a.value(row));
    }
    match cast(&column.slice(row, 1), &DataType::Utf8) {
        Ok(text) => Value::String(text.as_string::<i32>().value(0).to_string()),
        Err(_) => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, ArrayRef, AsArray, Float64Array, StringArray};

    #[test]
    fn query_types_view_strings_and_keep_the_rest() {
        let stored = Schema::new(vec![
            Field::new("s", DataType::Utf8, false),
            Field::new("l", DataType::LargeUtf8, true),
            Field::new("x", DataType::Float64, true),
            Field::new("d", DataType::Date32, false),
        ]);
        let query = query_schema(&stored);
        let types: Vec<_> = query
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        assert_eq!(
            types,
            [
                DataType::Utf8View,
                DataType::Utf8View,
                DataType::Float64,
                DataType::Date32
            ]
        );
        assert!(!query.field(0).is_nullable());
        assert!(query.field(1).is_nullable());
    }

    #[test]
    fn misfit_columns_move_to_overflow() {
        let batch = RecordBatch::try_from_iter([
            (
                "event_id",
                Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef,
            ),
            (
                OVERFLOW,
                Arc::new(StringArray::from(vec![Some(r#"{"k":1}"#), None, None])),
            ),
            (
                "size",
                Arc::new(StringArray::from(vec![Some("large"), None, Some("s")])),
            ),
            ("ok", Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0]))),
            (
                "Case",
                Arc::new(Float64Array::from(vec![Some(4.5), None, None])),
            ),
        ])
        .unwrap();
        let target = Arc::new(Schema::new(vec![
            Field::new("event_id", DataType::Utf8, false),
            Field::new(OVERFLOW, DataType::Utf8, true),
            Field::new("size", DataType::Float64, true),
            Field::new("ok", DataType::Float64, true),
            Field::new("case", DataType::Float64, true),
        ]));
        let moved = overflow_misfits(&batch, &target).unwrap();
        let names: Vec<_> = moved
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["event_id", OVERFLOW, "ok"]);
        let overflow = moved.column(1).as_string::<i32>();
        assert_eq!(overflow.value(0), r#"{"Case":4.5,"k":1,"size":"large"}"#);
        assert!(overflow.is_null(1));
        assert_eq!(overflow.value(2), r#"{"size":"s"}"#);
        // A batch whose columns all fit is returned as it is.
        let fits = adapt_batch(&moved, &target).unwrap();
        let same = overflow_misfits(&fits, &target).unwrap();
        assert_eq!(same, fits);
    }

    #[test]
    fn batches_are_adapted_by_name() {
        let batch = RecordBatch::try_from_iter([
            (
                "x",
                Arc::new(Float64Array::from(vec![1.0, 2.0])) as ArrayRef,
            ),
            ("s", Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef),
        ])
        .unwrap();
        let target = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8View, false),
            Field::new("new", DataType::Boolean, true),
            Field::new("x", DataType::Float64, true),
        ]));
        let adapted = adapt_batch(&batch, &target).unwrap();
        assert_eq!(adapted.schema(), target);
        let s = adapted.column(0).as_string_view();
        assert_eq!((s.value(0), s.value(1)), ("a", "b"));
        assert_eq!(
            adapted.column(1).null_count(),
            2,
            "a column the batch predates"
        );
        assert!(
            adapted
                .column(2)
                .to_data()
                .ptr_eq(&batch.column(0).to_data())
        );
        // No columns at all still keeps the row count.
        let empty = adapt_batch(&batch, &Arc::new(Schema::empty())).unwrap();
        assert_eq!(empty.num_rows(), 2);
    }
}
