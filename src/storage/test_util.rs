//! Fixtures for the storage tests: event batches and tables written by
//! the flush writer into a temporary directory.

use super::Storage;
use crate::config::Config;
use crate::ids::{TableName, TenantId, WalSeq};
use arrow::array::TimestampMicrosecondArray;
use arrow::array::{ArrayRef, Date32Array, Float64Array, RecordBatch, StringArray};
use deltalake::DeltaTable;
use std::sync::Arc;

/// Microseconds in a day.
pub(super) const DAY_MICROS: i64 = 86_400_000_000;

/// A batch of one event per entry of `days` (days since the epoch): ids
/// `e{first}`, `e{first + 1}`, …, `x` = the row's number from `first`, and
/// a timestamp `row` microseconds into its day.
pub(super) fn events(first: usize, days: &[i32]) -> RecordBatch {
    let rows = first..first + days.len();
    let ids: ArrayRef = Arc::new(StringArray::from_iter_values(
        rows.clone().map(|i| format!("e{i}")),
    ));
    let timestamps: ArrayRef = Arc::new(
        TimestampMicrosecondArray::from_iter_values(
            rows.clone()
                .zip(days)
                .map(|(i, d)| i64::from(*d) * DAY_MICROS + i as i64),
        )
        .with_timezone("UTC"),
    );
    let x: ArrayRef = Arc::new(Float64Array::from_iter_values(rows.map(|i| i as f64)));
    let dates: ArrayRef = Arc::new(Date32Array::from(days.to_vec()));
    RecordBatch::try_from_iter([
        (crate::schema::EVENT_ID, ids),
        (crate::schema::TIMESTAMP, timestamps),
        ("x", x),
        (crate::schema::EVENT_DATE, dates),
    ])
    .unwrap()
}

/// A local storage root under `dir` and the table `acme.events` in it,
/// with one flush per entry of `flushes` (the batch and the WAL sequence
/// it covers).
pub(super) async fn table_with(
    dir: &std::path::Path,
    flushes: Vec<(RecordBatch, u64)>,
) -> (Storage, DeltaTable) {
    let storage = Storage::new(&Config::for_tests(dir)).unwrap();
    let mut table = storage.open(&tenant(), &table_name()).await.unwrap();
    for (batch, seq) in flushes {
        table = storage
            .append(table, "acme.events", vec![batch], WalSeq(seq), None)
            .await
            .unwrap()
            .0;
    }
    (storage, table)
}

/// [`table_with`] two flushes: three events on days 100 and 101 (WAL
/// sequence 3), then two on day 102 (sequence 5).
pub(super) async fn two_flushes(dir: &std::path::Path) -> (Storage, DeltaTable) {
    let flushes = vec![
        (events(0, &[100, 100, 101]), 3),
        (events(3, &[102, 102]), 5),
    ];
    table_with(dir, flushes).await
}

pub(super) fn tenant() -> TenantId {
    "acme".parse().unwrap()
}

pub(super) fn table_name() -> TableName {
    "events".parse().unwrap()
}
