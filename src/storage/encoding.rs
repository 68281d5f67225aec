//! Parquet settings of the files a flush writes.

use arrow::array::{Array, RecordBatch};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

/// Parquet settings of flushed files: LZ4 (like compacted files), chunk
/// statistics, and a dictionary only for the columns whose values repeat.
///
/// LZ4 encodes faster than snappy (deltalake's default) and decodes
/// faster too; the files are about 3% larger.
///
/// Dictionary encoding hashes every value of a column chunk. On a column
/// of (nearly) distinct values, such as ids or prices, that was the
/// largest single cost of a flush, and it buys nothing: LZ4 compresses
/// what repetition there is, and flushed files are rewritten by
/// compaction anyway. `event_id` and `timestamp` never get one; every
/// other column is judged by a sample of the flush's rows.
pub(super) fn flush_writer_properties(batches: &[RecordBatch]) -> WriterProperties {
    let mut b = WriterProperties::builder().set_compression(parquet::basic::Compression::LZ4_RAW);
    let Some(schema) = batches.first().map(RecordBatch::schema) else {
        return b.build();
    };
    for (i, field) in schema.fields().iter().enumerate() {
        let name = field.name().as_str();
        let known_distinct = name == crate::schema::EVENT_ID || name == crate::schema::TIMESTAMP;
        if known_distinct || !values_repeat(batches, i) {
            b = b.set_column_dictionary_enabled(ColumnPath::from(name), false);
        }
    }
    b.build()
}

/// Whether column `column` of `batches` looks worth a dictionary: in up
/// to 2,048 rows spread evenly over the batches, the non-null values are
/// at most half distinct (a column of 1,000 equally common values passes,
/// one of 2,000 does not). All-null columns pass: they have no values to
/// hash.
fn values_repeat(batches: &[RecordBatch], column: usize) -> bool {
    const SAMPLE: usize = 2048;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let step = rows.div_ceil(SAMPLE).max(1);
    let mut seen = std::collections::HashSet::new();
    let mut sampled = 0usize;
    let mut next = 0usize; // the next sampled row, counted over all batches
    let mut offset = 0usize; // rows in the batches before this one
    for batch in batches {
        let array = batch.column(column);
        while next < offset + batch.num_rows() {
            let row = next - offset;
            next += step;
            if array.is_null(row) {
                continue;
            }
            match datafusion::common::ScalarValue::try_from_array(array, row) {
                Ok(value) => {
                    seen.insert(value);
                    sampled += 1;
                }
                // A type without scalars: leave the writer's default.
                Err(_) => return true,
            }
        }
        offset += batch.num_rows();
    }
    seen.len() * 2 <= sampled
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Float64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn dictionaries_only_for_repeating_columns() {
        let batch = |first: usize, n: usize| {
            let kinds: ArrayRef = Arc::new(StringArray::from_iter_values(
                (first..first + n).map(|i| ["a", "b", "c"][i % 3]),
            ));
            let ids: ArrayRef = Arc::new(StringArray::from_iter_values(
                (first..first + n).map(|i| format!("u{i}")),
            ));
            let amounts: ArrayRef = Arc::new(Float64Array::from_iter(
                (first..first + n).map(|i| (i % 2 == 0).then_some(i as f64)),
            ));
            let nothing: ArrayRef = Arc::new(StringArray::from(vec![None::<&str>; n]));
            RecordBatch::try_from_iter([
                ("event_type", kinds),
                ("entity_id", ids),
                ("amount", amounts),
                ("missing", nothing),
                (
                    crate::schema::EVENT_ID,
                    Arc::new(StringArray::from(vec!["x"; n])) as ArrayRef,
                ),
            ])
            .unwrap()
        };
        let batches = vec![batch(0, 3000), batch(3000, 7), batch(3007, 5000)];
        let props = flush_writer_properties(&batches);
        let dict = |c: &str| props.dictionary_enabled(&ColumnPath::from(c));
        assert!(dict("event_type"));
        assert_eq!(
            props.compression(&ColumnPath::from("event_type")),
            parquet::basic::Compression::LZ4_RAW
        );
        assert!(!dict("entity_id"));
        assert!(!dict("amount"), "distinct among the non-null values");
        assert!(dict("missing"));
        assert!(!dict(crate::schema::EVENT_ID), "never, whatever its values");
        // Small flushes are sampled whole.
        assert!(!values_repeat(&[batch(0, 10)], 1));
        assert!(values_repeat(&[batch(0, 10)], 0));
        assert!(flush_writer_properties(&[]).dictionary_enabled(&ColumnPath::from("event_type")));
    }
}
