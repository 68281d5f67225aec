//! Tests of the copying merge.

use super::*;
use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use deltalake::datafile::writer::{DeltaWriter, WriterConfig};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::EnabledStatistics;

/// Rows `first..first + n`: some nulls, a NaN, sub-millisecond times,
/// and a text column that is null throughout when `blank`.
fn rows(first: i64, n: i64, blank: bool) -> RecordBatch {
    let range = first..first + n;
    let col = |a: ArrayRef| a;
    RecordBatch::try_from_iter_with_nullable([
        (
            "event_id",
            col(Arc::new(StringArray::from_iter_values(
                range.clone().map(|i| format!("e{i:04}")),
            ))),
            false,
        ),
        (
            "n",
            col(Arc::new(Int64Array::from_iter(
                range.clone().map(|i| (i % 3 != 0).then_some(i * 7 - 50)),
            ))),
            true,
        ),
        (
            "x",
            col(Arc::new(Float64Array::from_iter_values(range.clone().map(
                |i| {
                    if i == first + 1 {
                        f64::NAN
                    } else {
                        i as f64 / 4.0
                    }
                },
            )))),
            true,
        ),
        (
            "b",
            col(Arc::new(BooleanArray::from_iter(
                range.clone().map(|i| Some(i % 2 == 0)),
            ))),
            true,
        ),
        (
            "timestamp",
            col(Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    range.clone().map(|i| 1_780_000_000_000_000 + i * 1_234_567),
                )
                .with_timezone("UTC"),
            )),
            true,
        ),
        (
            "s",
            col(Arc::new(StringArray::from_iter(
                range.map(|i| (!blank).then(|| format!("s{}", 100 - i))),
            ))),
            true,
        ),
    ])
    .unwrap()
}

fn write_file(path: &Path, batch: &RecordBatch, row_group: usize) {
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(row_group))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_column_bloom_filter_enabled("event_id".into(), true)
        .build();
    let mut w =
        ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

/// Timestamps as instants, so `…:05Z` and `…:05.000Z` compare equal.
fn normalised(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), normalised(v))).collect())
        }
        Value::String(s) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => Value::from(t.timestamp_micros()),
            Err(_) => v.clone(),
        },
        _ => v.clone(),
    }
}

#[tokio::test]
async fn copied_files_hold_the_rows_and_the_statistics_deltalake_writes() {
    let dir = tempfile::tempdir().unwrap();
    let batches = [rows(0, 40, false), rows(40, 25, true), rows(65, 30, false)];
    let inputs: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("in{i}.parquet")))
        .collect();
    for (path, batch) in inputs.iter().zip(&batches) {
        write_file(path, batch, 16);
    }
    let config = WriterStatsConfig::new(DataSkippingNumIndexedCols::AllColumns, None);
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let written = copy_files(&inputs, dir.path(), "out", u64::MAX, &config)
        .unwrap()
        .unwrap();
    assert_eq!(written.len(), 1);
    let out = &written[0];

    // Every row, in order, in the inputs' row groups (16 rows each).
    let file = File::open(dir.path().join(&out.path)).unwrap();
    assert_eq!(file.metadata().unwrap().len(), out.size);
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let groups: Vec<i64> = reader
        .metadata()
        .row_groups()
        .iter()
        .map(|g| g.num_rows())
        .collect();
    assert_eq!(groups, [16, 16, 8, 16, 9, 16, 14]);
    let meta = reader.metadata().clone();
    let read: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
    let expected = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let got = arrow::compute::concat_batches(&read[0].schema(), &read).unwrap();
    assert_eq!(got, expected);
    assert!(
        meta.row_groups()[3]
            .column(0)
            .bloom_filter_offset()
            .is_some()
    );

    // The statistics deltalake's own writer gives the same rows.
    let object_store =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let mut writer = DeltaWriter::new(
        object_store,
        WriterConfig::new(
            batches[0].schema(),
            vec![],
            None,
            None,
            None,
            DataSkippingNumIndexedCols::AllColumns,
            None,
        ),
    );
    writer.write(&expected).await.unwrap();
    let theirs = writer.close().await.unwrap();
    let theirs: Value = serde_json::from_str(theirs[0].stats.as_deref().unwrap()).unwrap();
    let ours: Value = serde_json::from_str(&out.stats).unwrap();
    assert_eq!(
        normalised(&ours),
        normalised(&theirs),
        "ours {ours}\ntheirs {theirs}"
    );
    assert_eq!(ours["numRecords"], 95);
    assert_eq!(ours["nullCount"]["s"], 25);
}

#[test]
fn files_that_differ_in_schema_are_not_copied() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.parquet");
    let b = dir.path().join("b.parquet");
    write_file(&a, &rows(0, 10, false), 100);
    write_file(&b, &rows(10, 10, false).project(&[0, 1, 2]).unwrap(), 100);
    let config = WriterStatsConfig::new(DataSkippingNumIndexedCols::NumColumns(32), None);
    let copied = copy_files(&[a, b], dir.path(), "", u64::MAX, &config).unwrap();
    assert!(copied.is_none());
}

#[test]
fn a_new_file_begins_at_an_input_boundary_past_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let inputs: Vec<PathBuf> = (0..5)
        .map(|i| {
            let p = dir.path().join(format!("{i}.parquet"));
            write_file(&p, &rows(i * 100, 100, false), 1000);
            p
        })
        .collect();
    let one = std::fs::metadata(&inputs[0]).unwrap().len();
    let config = WriterStatsConfig::new(DataSkippingNumIndexedCols::NumColumns(2), None);
    let written = copy_files(&inputs, dir.path(), "", one, &config)
        .unwrap()
        .unwrap();
    // Two inputs' row groups pass the target (one input's footer-less
    // bytes do not); the fifth is a file of its own.
    let records: Vec<Value> = written
        .iter()
        .map(|w| serde_json::from_str::<Value>(&w.stats).unwrap()["numRecords"].clone())
        .collect();
    assert_eq!(records, [200, 200, 100]);
    // Only the first two columns have statistics.
    let stats: Value = serde_json::from_str(&written[0].stats).unwrap();
    let keys: Vec<&String> = stats["minValues"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["event_id", "n"]);
}

#[test]
fn a_column_with_an_infinite_value_gets_no_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.parquet");
    let b = dir.path().join("b.parquet");
    write_file(&a, &rows(0, 10, false), 100);
    let with_inf = rows(10, 10, false);
    let mut columns = with_inf.columns().to_vec();
    columns[2] = Arc::new(Float64Array::from_iter_values(
        (0..10).map(|i| if i == 3 { f64::INFINITY } else { i as f64 }),
    ));
    let with_inf = RecordBatch::try_new(with_inf.schema(), columns).unwrap();
    write_file(&b, &with_inf, 100);
    let config = WriterStatsConfig::new(DataSkippingNumIndexedCols::AllColumns, None);
    let written = copy_files(&[a, b], dir.path(), "", u64::MAX, &config)
        .unwrap()
        .unwrap();
    let stats: Value = serde_json::from_str(&written[0].stats).unwrap();
    assert!(stats["minValues"].get("x").is_none(), "{stats}");
    assert!(stats["maxValues"].get("x").is_none(), "{stats}");
    assert_eq!(stats["nullCount"]["x"], 0);
    assert!(stats["maxValues"].get("n").is_some(), "{stats}");
}
