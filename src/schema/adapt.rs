//! The types columns have in queries, and batches reshaped to a schema.
//!
//! Stored and buffered batches keep strings as `Utf8`; queries read them
//! as `Utf8View`, which is what DataFusion's Parquet reader produces and is
//! fastest with. A table's batches may also predate some of its columns.
//! [`adapt_batch`] bridges both: the flush uses it to bring buffered
//! batches to the table's current schema, and the query layer to bring them
//! to the query schema.

use arrow::array::{RecordBatch, RecordBatchOptions, new_null_array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
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
