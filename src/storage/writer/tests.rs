//! The flush writer's tests: splitting by date, shares, plain writes and
//! what a flush commits.

use super::*;
use arrow::array::ArrayRef;
use std::sync::Arc;

#[test]
fn rows_split_by_date_keep_their_order() {
    use arrow::array::{Date32Array, Int64Array};
    let batch = |dates: Vec<i32>| {
        let n = dates.len() as i64;
        RecordBatch::try_from_iter([
            (
                "row",
                Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef,
            ),
            (
                PARTITION_COLUMN,
                Arc::new(Date32Array::from(dates)) as ArrayRef,
            ),
        ])
        .unwrap()
    };
    let rows = |b: &RecordBatch| {
        b.column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .values()
            .to_vec()
    };
    let split = split_by_date(&batch(vec![7, 7, 3, 7, 3, 9])).unwrap();
    let got: Vec<(i32, Vec<i64>)> = split.iter().map(|(d, b)| (*d, rows(b))).collect();
    assert_eq!(got, vec![(7, vec![0, 1, 3]), (3, vec![2, 4]), (9, vec![5])]);
    // One date: the batch itself, not a copy.
    let one = batch(vec![4, 4, 4]);
    let split = split_by_date(&one).unwrap();
    assert_eq!(split.len(), 1);
    assert_eq!(split[0].0, 4);
    assert!(
        split[0]
            .1
            .column(0)
            .to_data()
            .ptr_eq(&one.column(0).to_data())
    );
    assert!(split_by_date(&batch(vec![])).unwrap().is_empty());
}

#[test]
fn only_plain_tables_take_appended_files() {
    use deltalake::kernel::{DataType, Protocol, StructField, StructType};
    let protocol = |json: &str| serde_json::from_str::<Protocol>(json).unwrap();
    let v2 = protocol(r#"{"minReaderVersion":1,"minWriterVersion":2}"#);
    let v4 = protocol(r#"{"minReaderVersion":1,"minWriterVersion":4}"#);
    let plain = StructType::try_new([StructField::new("x", DataType::DOUBLE, true)]).unwrap();
    let checked = StructType::try_new([StructField::new("x", DataType::DOUBLE, true)
        .with_metadata([(
            "delta.invariants",
            r#"{"expression": {"expression": "x > 2"}}"#,
        )])])
    .unwrap();
    assert!(plain_writes(&v2, &plain));
    assert!(!plain_writes(&v2, &checked));
    assert!(!plain_writes(&v4, &plain));
}

#[test]
fn large_dates_are_cut_into_shares() {
    use arrow::array::Int64Array;
    let batch = |first: i64, n: i64| {
        RecordBatch::try_from_iter([(
            "row",
            Arc::new(Int64Array::from_iter_values(first..first + n)) as ArrayRef,
        )])
        .unwrap()
    };
    let rows = |pieces: &Vec<Vec<RecordBatch>>| -> Vec<Vec<i64>> {
        pieces
            .iter()
            .map(|p| {
                p.iter()
                    .flat_map(|b| {
                        b.column(0)
                            .as_primitive::<arrow::datatypes::Int64Type>()
                            .values()
                            .to_vec()
                    })
                    .collect()
            })
            .collect()
    };
    // 10 rows in batches of 4, 1, 5, in shares of 4: cuts inside the
    // third batch, every row once and in order.
    let pieces = shares(vec![batch(0, 4), batch(4, 1), batch(5, 5)], 4);
    assert_eq!(
        rows(&pieces),
        vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]
    );
    // Small enough: one piece, batches passed on whole.
    let pieces = shares(vec![batch(0, 2), batch(2, 3)], 5);
    assert_eq!(pieces.len(), 1);
    assert_eq!(pieces[0].len(), 2);
    assert!(shares(Vec::new(), 3).is_empty());
}

#[tokio::test]
async fn flushes_commit_their_files_and_wal_sequence() {
    use crate::storage::test_util::{events, table_name, table_with, tenant};
    let tmp = tempfile::tempdir().unwrap();
    let (storage, fresh) = table_with(tmp.path(), Vec::new()).await;
    assert_eq!(fresh.version(), None);
    assert_eq!(
        storage.persisted_seq(&fresh, "acme.events").await.unwrap(),
        WalSeq(0)
    );
    assert!(storage.list_tables().await.unwrap().is_empty());
    // The first flush creates the table; the second, with the same
    // columns, takes the plain path. Two dates each, one new.
    let (storage, table) = table_with(
        tmp.path(),
        vec![
            (events(0, &[19_000, 19_000, 19_001]), 3),
            (events(3, &[19_001, 19_002]), 7),
        ],
    )
    .await;
    assert_eq!(table.version(), Some(1));
    let snapshot = table.snapshot().unwrap().snapshot().clone();
    assert!(plain_writes(snapshot.protocol(), &snapshot.schema()));
    assert!(
        conform(&snapshot.arrow_schema(), &[events(5, &[19_003])]).is_some(),
        "a flush without new columns writes its files itself"
    );
    let reopened = storage.open(&tenant(), &table_name()).await.unwrap();
    assert_eq!(reopened.version(), Some(1));
    assert_eq!(
        storage
            .persisted_seq(&reopened, "acme.events")
            .await
            .unwrap(),
        WalSeq(7)
    );
    let log = reopened.snapshot().unwrap().log_data();
    assert_eq!(log.num_files(), 4, "one file per date and flush");
    let rows: usize = log.iter().filter_map(|f| f.num_records()).sum();
    assert_eq!(rows, 5);
    let mut dirs: Vec<String> = log
        .iter()
        .map(|f| f.path().split('/').next().unwrap().to_string())
        .collect();
    dirs.sort();
    dirs.dedup();
    assert_eq!(
        dirs,
        [
            "event_date=2022-01-08",
            "event_date=2022-01-09",
            "event_date=2022-01-10"
        ]
    );
    assert_eq!(
        storage.list_tables().await.unwrap(),
        [(tenant(), table_name())]
    );
    // Syncing a commit again is harmless (a retried flush does).
    storage.make_durable(&reopened).await.unwrap();
}
