//! The entity copy: maintenance keeps a second copy of each table's stored
//! events bucketed by entity, and a read of one entity's events takes what
//! the copy covers from it. These tests check that such reads return the
//! same rows as a read of the table's own files, through restarts, more
//! flushes, bucket merges, retention and a table replaced beneath its copy.

use crate::compaction::compact;
use crate::support::{TestServer, wait_until};
use serde_json::{Value, json};
use std::time::Duration;

const ENTITIES: [&str; 5] = ["u1", "u2", "order 7/x", "u4242", "ü-ñ"];

/// `n` events per entity, over `days` days from 2026-03-01, with ids
/// `{prefix}-{entity}-{i}` and a payload field of a new name per prefix.
fn batch(prefix: &str, n: usize, days: usize) -> Value {
    let mut out = Vec::new();
    for (k, entity) in ENTITIES.iter().enumerate() {
        for i in 0..n {
            out.push(json!({
                "event_id": format!("{prefix}-{entity}-{i}"),
                "event_type": if i % 2 == 0 { "a" } else { "b" },
                "entity_id": entity,
                "timestamp": format!("2026-03-{:02}T{:02}:00:00Z", 1 + (i + k) % days, i % 24),
                "payload": {"i": i, format!("f_{prefix}"): k},
            }));
        }
    }
    Value::Array(out)
}

/// For every entity: its events read by `entity_id = '…'` (the copy's
/// path when there is a copy), read the way no copy serves, and the
/// stream route's versions, which must be 1..=n.
fn check_reads(s: &TestServer, expect_rows: usize) {
    for entity in ENTITIES {
        let quoted = entity.replace('\'', "''");
        let cols = "event_id, event_type, entity_id, timestamp, position, version, i";
        let fast = s.sql(&format!(
            "SELECT {cols} FROM events WHERE entity_id = '{quoted}' ORDER BY position"
        ));
        let slow = s.sql(&format!(
            "SELECT {cols} FROM events WHERE concat(entity_id, '') = '{quoted}' ORDER BY position"
        ));
        assert_eq!(fast.len(), expect_rows, "{entity}: {fast:?}");
        assert_eq!(fast, slow, "{entity}");
        let all = s.sql(&format!(
            "SELECT * FROM events WHERE entity_id = '{quoted}' ORDER BY position"
        ));
        let all_slow = s.sql(&format!(
            "SELECT * FROM events WHERE concat(entity_id, '') = '{quoted}' ORDER BY position"
        ));
        assert_eq!(all, all_slow, "{entity}: every column");
        let path = format!(
            "/v1/streams/events/{}?limit=10000",
            entity
                .replace('%', "%25")
                .replace('/', "%2F")
                .replace(' ', "%20")
        );
        let stream = s.get(&path);
        assert_eq!(stream.status, 200, "{}", stream.text());
        let versions: Vec<u64> = stream
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["version"].as_u64().unwrap())
            .collect();
        assert_eq!(
            versions,
            (1..=expect_rows.min(10_000) as u64).collect::<Vec<_>>(),
            "{entity}"
        );
    }
}

fn reads_the_copy(s: &TestServer) -> bool {
    s.physical_plan("SELECT * FROM events WHERE entity_id = 'u1'")
        .contains("_allsource/entities")
}

#[test]
fn one_entitys_events_are_read_from_the_copy_and_agree_with_the_table() {
    let mut s = TestServer::start(&["--maintenance-interval", "0", "--vacuum-retention", "0s"]);
    s.ingest(&batch("p1", 30, 10));
    s.stop();
    s.restart();
    // Before any maintenance there is no copy.
    assert!(!reads_the_copy(&s));
    check_reads(&s, 30);

    let built = compact(&s, "");
    // The report says how long of the run went into the copy.
    let report = &built["reports"][0];
    let (copy_ms, run_ms) = (
        report["entity_copy_ms"].as_u64().unwrap(),
        report["duration_ms"].as_u64().unwrap(),
    );
    assert!(copy_ms > 0 && copy_ms <= run_ms, "{built}");
    let copy_dir = s.data_dir.join("tables/_allsource/entities/default/events");
    assert!(copy_dir.join("_delta_log").is_dir(), "no copy");
    assert!(
        reads_the_copy(&s),
        "{}",
        s.physical_plan("SELECT * FROM events WHERE entity_id = 'u1'")
    );
    // Other queries do not read it.
    assert!(
        !s.physical_plan("SELECT count(*) FROM events")
            .contains("_allsource")
    );
    // The copy holds everything stored: the table's files are not part of
    // the plan at all, the copy's scan is its only Parquet scan.
    let plan = s.physical_plan("SELECT * FROM events WHERE entity_id = 'u1'");
    assert_eq!(plan.matches("file_type=parquet").count(), 1, "{plan}");
    check_reads(&s, 30);

    // Stored above the copy (a new column among them), then buffered.
    s.ingest(&batch("p2", 10, 10));
    s.stop();
    s.restart();
    s.ingest(&batch("p3", 5, 10));
    check_reads(&s, 45);
    assert_eq!(
        s.scalar("SELECT count(*) FROM events WHERE entity_id = 'u2' AND f_p2 IS NOT NULL"),
        json!(10)
    );

    // Killed and restarted: the copy is found again, and more runs extend
    // it and merge each bucket's small files.
    s.kill9();
    s.restart();
    check_reads(&s, 45);
    for round in 0..5 {
        s.ingest(&batch(&format!("r{round}"), 3, 10));
        s.stop();
        s.restart();
        compact(&s, "");
        assert!(reads_the_copy(&s));
    }
    check_reads(&s, 60);
    // Every file of the copy, merged ones included, is sorted by entity
    // and then position, and the files in use hold every event once.
    let mut rows = 0;
    for path in parquet_under(&copy_dir) {
        rows += assert_sorted_by_entity(&path);
    }
    assert!(rows >= 60, "{rows} rows in the copy's files");
    // Each bucket's small files were merged: a bucket holds fewer files
    // than it had runs.
    let plan = s.physical_plan("SELECT * FROM events WHERE entity_id = 'u1'");
    let copy_files = plan.matches("_allsource/entities").count();
    assert!(
        (1..4).contains(&copy_files),
        "{copy_files} files read: {plan}"
    );
    assert_eq!(
        s.scalar(
            "SELECT count(*) FROM events WHERE entity_id = 'u4242' AND version BETWEEN 10 AND 19"
        ),
        json!(10)
    );
}

#[test]
fn events_retention_deletes_are_not_read_from_the_copy() {
    let mut s = TestServer::start(&["--maintenance-interval", "0"]);
    let now = chrono::Utc::now();
    let at = |days: i64| (now - chrono::Duration::days(days)).to_rfc3339();
    let events: Vec<Value> = [("old-1", 45), ("old-2", 40), ("new-1", 3), ("new-2", 1)]
        .iter()
        .map(|(id, days)| json!({"event_id": id, "event_type": "t", "entity_id": "u", "timestamp": at(*days)}))
        .collect();
    s.ingest(&Value::Array(events));
    s.stop();
    s.restart();
    compact(&s, "");
    assert!(
        s.physical_plan("SELECT * FROM events WHERE entity_id = 'u'")
            .contains("_allsource/entities")
    );
    let ids = |s: &TestServer| -> Vec<Value> {
        s.sql("SELECT event_id FROM events WHERE entity_id = 'u' ORDER BY event_id")
    };
    assert_eq!(ids(&s).len(), 4);

    let (status, reply) = s.client_put(
        "/v1/admin/tables/events/settings",
        r#"{"retention": "30days"}"#,
    );
    assert_eq!(status, 200, "{reply}");
    compact(&s, "");
    let left = vec![json!({"event_id": "new-1"}), json!({"event_id": "new-2"})];
    assert_eq!(ids(&s), left);
    assert_eq!(
        s.sql("SELECT event_id FROM events WHERE concat(entity_id, '') = 'u' ORDER BY event_id"),
        left
    );
    // The cutoff is in the copy's log: it holds after kill -9.
    s.kill9();
    s.restart();
    assert_eq!(ids(&s), left);
    assert!(
        s.physical_plan("SELECT * FROM events WHERE entity_id = 'u'")
            .contains("_allsource/entities")
    );
}

#[test]
fn a_copy_ahead_of_its_table_is_not_read_and_is_rebuilt() {
    let mut s = TestServer::start(&["--maintenance-interval", "0"]);
    s.ingest(&batch("p1", 20, 5));
    s.stop();
    s.restart();
    compact(&s, "");
    assert!(reads_the_copy(&s));
    // The table is replaced beneath its copy (say, restored from an
    // older backup): the copy covers positions the table does not hold.
    s.stop();
    std::fs::remove_dir_all(s.data_dir.join("tables/default/events")).unwrap();
    std::fs::remove_dir_all(s.data_dir.join("wal")).ok();
    s.restart();
    s.ingest(&batch("q", 4, 5));
    s.stop();
    s.restart();
    assert!(!reads_the_copy(&s), "the copy covers more than the table");
    check_reads(&s, 4);
    compact(&s, "");
    wait_until("the rebuilt copy is read", Duration::from_secs(30), || {
        reads_the_copy(&s)
    });
    check_reads(&s, 4);
    assert_eq!(
        s.scalar("SELECT count(*) FROM events WHERE entity_id = 'u1'"),
        json!(4)
    );
}

#[test]
fn the_copy_can_be_turned_off() {
    let mut s = TestServer::start(&["--maintenance-interval", "0", "--entity-copy", "false"]);
    s.ingest(&batch("p1", 6, 3));
    s.stop();
    s.restart();
    let run = compact(&s, "");
    assert_eq!(run["reports"][0]["entity_copy_ms"], json!(0), "{run}");
    assert!(
        !s.data_dir.join("tables/_allsource/entities").exists(),
        "a copy was made"
    );
    assert!(!reads_the_copy(&s));
    check_reads(&s, 6);
    let bad = std::process::Command::new(crate::support::server_bin())
        .args(["serve", "--entity-copy", "maybe"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--entity-copy"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn a_copy_far_behind_is_built_from_groups_of_files() {
    // Files of about 1 MiB are grouped by the 1 MiB target: the first
    // build sorts several groups apart and commits them together.
    let mut s = TestServer::start(&[
        "--maintenance-interval",
        "0",
        "--compaction-target-bytes",
        "1048576",
    ]);
    let per_round = 3_000;
    for round in 0..4 {
        let body: Vec<Value> = (0..per_round)
            .flat_map(|i| {
                ENTITIES.iter().map(move |entity| {
                    let noise: String = (0..40)
                        .map(|k| format!("{:x}", (i * 7919 + k * 104_729 + round * 31) % 65_521))
                        .collect();
                    json!({
                        "event_type": "a",
                        "entity_id": entity,
                        "timestamp": format!("2026-03-{:02}T00:00:00Z", 1 + i % 3),
                        "payload": {"i": i, "noise": noise},
                    })
                })
            })
            .collect();
        s.ingest(&Value::Array(body));
        s.stop();
        s.restart();
    }
    compact(&s, "");
    assert!(reads_the_copy(&s));
    let copy_files = walk(&s.data_dir.join("tables/_allsource/entities"));
    assert!(
        copy_files > ENTITIES.len(),
        "{copy_files} files: the build was not split into groups ({} table files)",
        walk(&s.data_dir.join("tables/default/events"))
    );
    check_reads(&s, 4 * per_round);
}

/// Parquet files under `dir`.
fn parquet_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(parquet_under(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    out
}

fn walk(dir: &std::path::Path) -> usize {
    parquet_under(dir).len()
}

/// Checks that the file's rows are in `(entity_id, position)` order and
/// returns how many there are.
fn assert_sorted_by_entity(path: &std::path::Path) -> usize {
    use arrow::array::AsArray;
    use arrow::datatypes::{DataType, Int64Type};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file = std::fs::File::open(path).unwrap();
    let mut keys: Vec<(String, i64)> = Vec::new();
    for batch in ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
    {
        let batch = batch.unwrap();
        let column = |name: &str, to: &DataType| {
            arrow::compute::cast(batch.column_by_name(name).unwrap(), to).unwrap()
        };
        let entities = column("entity_id", &DataType::Utf8);
        let positions = column("position", &DataType::Int64);
        let entities = entities.as_string::<i32>();
        let positions = positions.as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            keys.push((entities.value(i).to_string(), positions.value(i)));
        }
    }
    assert!(
        keys.is_sorted(),
        "{} is not sorted by entity and position: {keys:?}",
        path.display()
    );
    keys.len()
}

/// Until the copy covers them, flushed files carry in-memory filters of
/// the entities they hold: a read of one entity leaves out the flushed
/// files it is not in, and returns what a read that prunes nothing
/// returns. The filters are not kept over a restart: every file is read
/// again.
#[test]
fn a_read_of_one_entity_skips_the_flushed_files_it_is_not_in() {
    let mut s = TestServer::start(&["--maintenance-interval", "0", "--flush-age", "20ms"]);
    let flushed = |s: &TestServer| {
        s.scalar("SELECT buffered_rows FROM system.tables WHERE table_name = 'events'") == json!(0)
    };
    // The table's first flush creates it, through a commit that keeps
    // no filters; then three flushes, each of two entities of its own over
    // two days.
    s.ingest(&json!([{"event_type": "seen", "entity_id": "first",
        "timestamp": "2026-03-01T09:00:00Z", "payload": {"i": 0}}]));
    wait_until("the flush", Duration::from_secs(20), || flushed(&s));
    for group in ["a", "b", "c"] {
        let events: Vec<Value> = (0..2)
            .flat_map(|e| {
                (0..4).map(move |i| {
                    json!({
                        "event_id": format!("{group}{e}-{i}"),
                        "event_type": "seen",
                        "entity_id": format!("{group}{e}"),
                        "timestamp": format!("2026-03-0{}T10:00:00Z", 1 + i % 2),
                        "payload": {"i": i},
                    })
                })
            })
            .collect();
        s.ingest(&Value::Array(events));
        wait_until("the flush", Duration::from_secs(20), || flushed(&s));
    }
    let files = |s: &TestServer, entity: &str| {
        s.physical_plan(&format!(
            "SELECT * FROM events WHERE entity_id = '{entity}'"
        ))
        .matches(".parquet")
        .count()
    };
    let same_rows = |s: &TestServer, entity: &str| {
        let read = |filter: &str| {
            s.sql(&format!(
                "SELECT event_id, entity_id, timestamp, position, version, i FROM events \
                 WHERE {filter} ORDER BY position"
            ))
        };
        let fast = read(&format!("entity_id = '{entity}'"));
        assert_eq!(fast.len(), 4, "{entity}: {fast:?}");
        assert_eq!(fast, read(&format!("concat(entity_id, '') = '{entity}'")));
    };
    assert_eq!(
        s.physical_plan("SELECT * FROM events")
            .matches(".parquet")
            .count(),
        7
    );
    for entity in ["a0", "b1", "c0"] {
        assert_eq!(
            files(&s, entity),
            3,
            "{entity}: its flush's two files and the first one"
        );
        same_rows(&s, entity);
    }
    assert_eq!(files(&s, "nobody"), 1);
    s.stop();
    s.restart();
    assert_eq!(files(&s, "b1"), 7, "no filters after a restart");
    same_rows(&s, "b1");
}

/// Between maintenance runs the copy follows the flushes on its own, once
/// `--entity-copy-follow-files` of the table's files lie above it: reads
/// of one entity then take everything from the copy, while the table's
/// files stay as flushed (no compaction ran).
#[test]
fn the_copy_follows_the_flushes_between_maintenance_runs() {
    let s = TestServer::start(&["--flush-age", "20ms", "--entity-copy-follow-files", "4"]);
    let flushed = |s: &TestServer| {
        s.scalar("SELECT buffered_rows FROM system.tables WHERE table_name = 'events'") == json!(0)
    };
    for round in 0..3 {
        s.ingest(&batch(&format!("r{round}"), 2, 2));
        wait_until("the flush", Duration::from_secs(20), || flushed(&s));
    }
    wait_until(
        "the copy to cover every flush",
        Duration::from_secs(60),
        || {
            let plan = s.physical_plan("SELECT * FROM events WHERE entity_id = 'u1'");
            plan.contains("_allsource/entities") && plan.matches("file_type=parquet").count() == 1
        },
    );
    assert_eq!(
        s.scalar("SELECT files FROM system.tables WHERE table_name = 'events'"),
        json!(6),
        "two dates in each of three flushes, not compacted"
    );
    check_reads(&s, 6);
}
