//! The scan's file groups, statistics and pruning.

use super::*;

fn file(day: i32, size: u64) -> PartitionedFile {
    PartitionedFile::new(format!("event_date={day}/f.parquet"), size)
        .with_partition_values(vec![ScalarValue::Date32(Some(day))])
}

/// (day, range start, range end) of each piece, per group.
fn layout(groups: &[FileGroup]) -> Vec<Vec<(i32, i64, i64)>> {
    groups
        .iter()
        .map(|g| {
            g.iter()
                .map(|f| {
                    let ScalarValue::Date32(Some(day)) = f.partition_values[0] else {
                        panic!("no day")
                    };
                    let (start, end) = f
                        .range
                        .as_ref()
                        .map_or((0, f.object_meta.size as i64), |r| (r.start, r.end));
                    (day, start, end)
                })
                .collect()
        })
        .collect()
}

#[test]
fn the_newest_file_is_split_across_every_partition() {
    let files = vec![file(30, 100), file(29, 90), file(28, 80), file(27, 70)];
    let groups = scan_groups(files, 2, 10);
    assert_eq!(
        layout(&groups),
        vec![
            vec![(30, 0, 50), (29, 0, 90)],
            vec![(30, 50, 100), (28, 0, 80), (27, 0, 70)],
        ]
    );
}

#[test]
fn small_newest_files_stay_whole_and_big_ones_are_split() {
    // below the split minimum: whole, balanced by bytes
    let groups = scan_groups(vec![file(2, 5), file(1, 5)], 2, 10);
    assert_eq!(layout(&groups), vec![vec![(2, 0, 5)], vec![(1, 0, 5)]]);
    // an old file larger than an even share is split too
    let groups = scan_groups(vec![file(2, 20), file(1, 300)], 2, 10);
    assert_eq!(
        layout(&groups),
        vec![
            vec![(2, 0, 10), (1, 0, 150)],
            vec![(2, 10, 20), (1, 150, 300)]
        ]
    );
    // one partition, or nothing to read: one group as given
    assert_eq!(
        layout(&scan_groups(vec![file(1, 50)], 1, 10)),
        vec![vec![(1, 0, 50)]]
    );
    assert_eq!(scan_groups(Vec::new(), 4, 10).len(), 1);
}

#[tokio::test]
async fn a_written_table_scans_with_its_files_and_bounds() {
    use crate::storage::test_util::{DAY_MICROS, two_flushes};
    use datafusion::prelude::{SessionContext, col, lit};
    let tmp = tempfile::tempdir().unwrap();
    let (_, table) = two_flushes(tmp.path()).await;
    let scan = DeltaFiles::try_new(&table).unwrap().expect("a plain table");
    // Query types, the partition column last; exact row counts.
    let names: Vec<_> = scan
        .schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["event_id", "timestamp", "x", "event_date"]);
    assert_eq!(scan.schema.field(0).data_type(), &DataType::Utf8View);
    assert_eq!(scan.statistics.num_rows, Precision::Exact(5));
    // Newest partition first.
    let days: Vec<_> = scan
        .files
        .iter()
        .map(|f| f.partition_values[0].clone())
        .collect();
    assert_eq!(days[0], ScalarValue::Date32(Some(102)));
    assert_eq!(days.last(), Some(&ScalarValue::Date32(Some(100))));

    // Files are chosen by partition value and by timestamp bounds.
    let ctx = SessionContext::new();
    let state = ctx.state();
    let on_day = |d: i32| col("event_date").eq(lit(ScalarValue::Date32(Some(d))));
    assert_eq!(scan.files_for(&state, &[on_day(101)]).unwrap().len(), 1);
    let since = |micros: i64| {
        col("timestamp").gt_eq(lit(ScalarValue::TimestampMicrosecond(
            Some(micros),
            Some("UTC".into()),
        )))
    };
    assert_eq!(
        scan.files_for(&state, &[since(102 * DAY_MICROS)])
            .unwrap()
            .len(),
        1
    );
    assert_eq!(scan.files_for(&state, &[]).unwrap().len(), 3);

    // And the scan reads them.
    ctx.register_table("t", Arc::new(scan)).unwrap();
    let sql = "SELECT count(*) AS n, sum(x) AS s FROM t WHERE event_date >= DATE '1970-04-12'";
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let row = &batches[0];
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, Int64Type};
    assert_eq!(row.column(0).as_primitive::<Int64Type>().value(0), 3);
    assert_eq!(row.column(1).as_primitive::<Float64Type>().value(0), 9.0);
}
